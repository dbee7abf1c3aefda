//! Health, documentation and the cron trigger through the real Worker.

use reqwest::{Method, StatusCode};

use crate::support::{database, Client};

#[tokio::test]
async fn health_deep_health_and_jwks() {
    let c = Client::new();
    let r = c.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.body, serde_json::json!({"status": "ok"}));
    let r = c.call(Method::GET, "/health?deep=1", None, None).await;
    assert_eq!(r.body["database"], "ok");
    let r = c
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let kid = std::env::var("BERTH_E2E_SIGNING_KEY").expect("key");
    let kid = kid.split(':').next().expect("kid");
    assert_eq!(r.body["keys"][0]["kid"], kid);
    assert_eq!(r.body["keys"][0]["crv"], "Ed25519");
}

#[tokio::test]
async fn docs_pages_and_their_assets_are_served_without_a_cdn() {
    let c = Client::new();
    let r = c.call(Method::GET, "/openapi.json", None, None).await;
    assert!(r.body["openapi"]
        .as_str()
        .expect("openapi")
        .starts_with("3.1"));
    for (page, marker) in [("/docs", "swagger-ui"), ("/redoc", "redoc")] {
        let r = c.call(Method::GET, page, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        let html = r.body.as_str().expect("html");
        assert!(html.contains(marker) && !html.contains("cdn"), "{page}");
    }
    for asset in [
        "/vendor/swagger-ui/swagger-ui-bundle.js",
        "/vendor/swagger-ui/swagger-ui.css",
        "/vendor/redoc/redoc.standalone.js",
        "/docs-init.js",
    ] {
        assert_eq!(
            c.call(Method::GET, asset, None, None).await.status,
            StatusCode::OK,
            "{asset}"
        );
    }
}

#[tokio::test]
async fn the_cron_trigger_purges_expired_refresh_tokens() {
    let c = Client::new();
    let (email, _, _) = c.user().await;
    let db = database().await;
    let expired = uuid::Uuid::now_v7();
    db.execute(
        "insert into refresh_tokens (id, family_id, user_id, token_hash, expires_at) \
         select $1, $1, id, $2, now() - interval '1 day' from users where email = $3",
        &[&expired, &expired.as_bytes().to_vec(), &email],
    )
    .await
    .expect("insert an expired token");
    let r = c
        .raw(
            Method::GET,
            "/__scheduled?cron=*+*+*+*+*",
            None,
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let left: i64 = db
        .query_one(
            "select count(*) from refresh_tokens where id = $1",
            &[&expired],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the scheduled handler deleted the expired token");
    let live: i64 = db.query_one(
        "select count(*) from refresh_tokens t join users u on u.id = t.user_id where u.email = $1",
        &[&email]).await.expect("count").get(0);
    assert_eq!(live, 1, "live tokens stay");
}

/// The Worker's log (where `scripts/e2e-server.sh` writes it).
fn worker_log() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("logs/test/wrangler.txt");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn each_request_is_logged_as_one_json_line_with_the_id_it_answers() {
    let c = Client::new();
    let r = c.call(Method::GET, "/health", None, None).await;
    let id = r.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(!id.is_empty());
    let started = std::time::Instant::now();
    let line = loop {
        let log = worker_log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(&id) && l.contains("\"kind\""))
        {
            break line.to_string();
        }
        assert!(started.elapsed().as_secs() < 5, "no log line for {id}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let start = line.find('{').expect("a JSON object");
    let json: serde_json::Value = serde_json::from_str(&line[start..]).expect("JSON");
    assert_eq!(json["kind"], "request");
    assert_eq!(json["route"], "/health");
    assert_eq!(json["status"], 200);
    assert_eq!(json["caller"], "anonymous");
}
