//! Every caller's request budget through the real Worker. The test restarts the Worker with a
//! budget of 30 a minute (its name matches `restart`: it runs alone), and back.

use std::time::Duration;

use berth::domain::policy::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::Reply;
use crate::support::{restart_server_with, Client, RestartWhenDone};

const BUDGET: u32 = 30;

fn header(r: &Reply, name: &str) -> u64 {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} on {} {}", r.status, r.body))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("an integer")
}

/// (limit, remaining, reset) of an answer.
fn budget(r: &Reply) -> (u64, u64, u64) {
    (
        header(r, "ratelimit-limit"),
        header(r, "ratelimit-remaining"),
        header(r, "ratelimit-reset"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_with_a_small_budget_a_caller_over_it_gets_429_and_others_do_not() {
    let _restore = RestartWhenDone;
    restart_server_with(&[("BERTH_E2E_RATE_LIMIT", &BUDGET.to_string())]).await;
    let c = Client::new();
    let limit = u64::from(BUDGET);

    // Sign-up and login are anonymous: they spend nothing.
    let (_, alice, _) = c.user().await;
    let (_, bob, _) = c.user().await;
    let me = c.call(Method::GET, "/v1/me", Some(&alice), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(budget(&me), (limit, limit - 1, 2));

    // A write costs 5: creating the organization and a key.
    let org = c.org_id(&alice, "rate").await;
    let key = c.api_key(&alice, &org, "ci", Role::Developer).await;
    let key = key["secret"].as_str().expect("secret").to_string();
    let r = c.call(Method::GET, "/v1/orgs", Some(&alice), None).await;
    assert_eq!(budget(&r).1, limit - 1 - 5 - 5 - 1);

    // Requests for clusters that do not exist count too, each one read.
    let mut remaining = budget(&r).1;
    let unknown = format!("/v1/clusters/{}", uuid::Uuid::now_v7());
    while remaining > 0 {
        let r = c.call(Method::GET, &unknown, Some(&alice), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
        let (l, left, _) = budget(&r);
        assert_eq!((l, left), (limit, remaining - 1));
        remaining = left;
    }

    // Over it: 429 with when to retry, for reads, writes and the watch stream alike.
    let over = c.call(Method::GET, "/v1/orgs", Some(&alice), None).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.body);
    assert_eq!(over.body["type"], "https://berth.dev/problems/rate-limited");
    assert_eq!(budget(&over), (limit, 0, 60));
    let retry = over.retry_after();
    assert!((1..=60).contains(&retry), "{retry}");
    let write = c
        .call(
            Method::POST,
            "/v1/orgs",
            Some(&alice),
            Some(serde_json::json!({"name": "more"})),
        )
        .await;
    assert_eq!(write.status, StatusCode::TOO_MANY_REQUESTS);
    let watch = tokio::time::timeout(
        Duration::from_secs(10),
        c.call(Method::GET, &format!("{unknown}/watch"), Some(&alice), None),
    )
    .await
    .expect("a 429 is not a stream");
    assert_eq!(watch.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&watch, "ratelimit-remaining"), 0);

    // Others are served (the refused write's absence is checked at the end).
    let orgs = c.call(Method::GET, "/v1/orgs", Some(&bob), None).await;
    assert_eq!(orgs.status, StatusCode::OK);

    // Unaffected: another user, and the organization's API key (its own caller).
    assert_eq!(budget(&orgs), (limit, limit - 1, 2));
    let by_key = c
        .call(Method::GET, &format!("/v1/orgs/{org}"), Some(&key), None)
        .await;
    assert_eq!(by_key.status, StatusCode::OK, "{}", by_key.body);
    assert_eq!(budget(&by_key).1, limit - 1);

    // A credential that is not valid is 401, as before, and spends nobody's budget.
    let bad = c
        .call(Method::GET, "/v1/orgs", Some("not-a-token"), None)
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.get("ratelimit-limit").is_none());

    // The CLI waits out a short retry-after once, and is served. (Whatever came back to alice
    // meanwhile is spent first: a read comes back every 2 s.)
    while c
        .call(Method::GET, "/v1/orgs", Some(&alice), None)
        .await
        .status
        == StatusCode::OK
    {}
    let started = std::time::Instant::now();
    let cli = tokio::process::Command::new(crate::cli::binary())
        .args(["org", "list", "-o", "json"])
        .env(
            "BERTH_URL",
            std::env::var("BERTH_E2E_URL").expect("BERTH_E2E_URL"),
        )
        .env("BERTH_TOKEN", &alice)
        .env(
            "BERTH_CONFIG",
            std::env::temp_dir().join(format!("berth-rate-{}.toml", uuid::Uuid::now_v7())),
        )
        .output()
        .await
        .expect("run berth");
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(stdout.contains("\"rate\""), "{stdout}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for its budget"
    );

    // And so is any caller after retry-after (the CLI spent what had come back).
    let mut again = c.call(Method::GET, "/v1/orgs", Some(&alice), None).await;
    if again.status == StatusCode::TOO_MANY_REQUESTS {
        tokio::time::sleep(Duration::from_secs(again.retry_after())).await;
        again = c.call(Method::GET, "/v1/orgs", Some(&alice), None).await;
    }
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let names: Vec<&Value> = again.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| &o["name"])
        .collect();
    assert_eq!(names, ["rate"], "the refused write created nothing");
}
