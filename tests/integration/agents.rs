//! The agent socket's admission (`http::agents::admit`), natively on a real database: the
//! Worker runs it before forwarding an upgrade to the cluster's object (the socket itself is
//! tested end to end, tests/e2e/agents.rs).

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use berth::http::agents::{admit, connect_path};
use serde_json::json;

use crate::support::TestApp;

fn headers(bearer: Option<&str>, upgrade: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(b) = bearer {
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {b}")).expect("header"),
        );
    }
    if upgrade {
        h.insert("upgrade", HeaderValue::from_static("websocket"));
    }
    h
}

#[tokio::test]
async fn an_agent_token_on_an_existing_cluster_is_admitted_and_nothing_else_is() {
    let app = TestApp::spawn().await;
    let (_, admin, _) = app.user().await;
    let org = app.org_id(&admin, "Agents").await;
    let body =
        json!({"name": "c1", "capacity": {"cpu_millis": 1000, "memory_mib": 1024, "gpus": 0}});
    let cluster = app.cluster(&admin, &org, body).await;
    let st = &app.state;
    let status = |r: Result<_, berth::http::ApiError>| r.map(|_| ()).map_err(|e| e.status());
    let minted = app.agent_token(&admin, &cluster, "node").await;
    let secret = minted["token"].as_str().expect("secret").to_string();

    let ok = admit(st, &Method::GET, &cluster, &headers(Some(&secret), true))
        .await
        .expect("admitted");
    assert_eq!(ok.cluster.to_string(), cluster);
    // The credential's key is the token's id (its sockets share that tag).
    assert_eq!(ok.token, minted["id"].as_str().expect("id"));
    let other = app
        .cluster(
            &admin,
            &org,
            json!({"name": "c2", "capacity": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}}),
        )
        .await;

    let unknown = uuid::Uuid::now_v7().to_string();
    for (method, segment, h, want) in [
        (
            Method::GET,
            cluster.as_str(),
            headers(None, true),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            &cluster,
            headers(Some(&admin), true),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            &cluster,
            headers(Some("bak_x"), true),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            &cluster,
            headers(Some(&secret), false),
            StatusCode::UPGRADE_REQUIRED,
        ),
        (
            Method::GET,
            &other,
            headers(Some(&secret), true),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            &cluster,
            headers(Some("bat_forged"), true),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            &unknown,
            headers(Some(&secret), true),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "nope",
            headers(Some(&secret), true),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            &cluster,
            headers(Some(&secret), true),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        assert_eq!(
            status(admit(st, &method, segment, &h).await),
            Err(want),
            "{method} {segment} {h:?}"
        );
    }
}

/// The agents' record: an agent is its name in the cluster, reconnecting keeps its id, and
/// only the socket it last connected on marks it gone.
#[tokio::test]
async fn agents_are_recorded_by_name_and_listed() {
    use berth::db::agents::{self, Connecting};
    use berth::db::Page;
    use berth::domain::ids::ClusterId;
    use berth::domain::resources::Resources;
    use chrono::{Duration, Utc};

    let app = TestApp::spawn().await;
    let (_, admin, _) = app.user().await;
    let org = app.org_id(&admin, "Agents").await;
    let body =
        json!({"name": "c1", "capacity": {"cpu_millis": 1000, "memory_mib": 1024, "gpus": 0}});
    let cluster = ClusterId(app.cluster(&admin, &org, body).await.parse().expect("id"));
    let (db, conn) = tokio_postgres::connect(&app.db_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);

    let first = Utc::now() - Duration::seconds(10);
    let hello = |name: &'static str, cpu: i64| Connecting {
        cluster,
        token: None,
        name,
        version: "0.1.0",
        capacity: Resources::new(cpu, 1024, 0),
    };
    let a = agents::connected(&db, &hello("rack-1", 4000), first)
        .await
        .expect("a");
    assert_eq!(a.status, "connected");
    // The same name again (a restart, bigger now): the same agent, refreshed.
    let again = first + Duration::seconds(5);
    let a2 = agents::connected(&db, &hello("rack-1", 8000), again)
        .await
        .expect("a2");
    assert_eq!(a2.id, a.id);
    assert_eq!(a2.capacity.cpu_millis, 8000);
    // The old socket's close does not mark the reconnected agent gone; the new one's does.
    agents::disconnected(&db, a.id, a.connected_at, Utc::now())
        .await
        .expect("old");
    let page = Page {
        after: None,
        limit: 50,
    };
    let listed = agents::list(&db, cluster, &page).await.expect("list");
    assert_eq!(listed[0].status, "connected");
    agents::disconnected(&db, a.id, a2.connected_at, Utc::now())
        .await
        .expect("new");
    let b = agents::connected(&db, &hello("rack-2", 1000), Utc::now())
        .await
        .expect("b");
    let listed = agents::list(&db, cluster, &page).await.expect("list");
    let got: Vec<_> = listed
        .iter()
        .map(|r| (r.name.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(got, [("rack-1", "disconnected"), ("rack-2", "connected")]);
    assert!(listed[0].last_seen_at > a2.connected_at);

    // Through the API: a viewer of the organization sees them; an outsider gets 404.
    let path = format!("/v1/clusters/{cluster}/agents");
    let r = app.call(Method::GET, &path, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let items = r.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["id"], b.id.to_string());
    assert_eq!(items[1]["capacity"]["cpu_millis"], 1000);
    let (_, outsider, _) = app.user().await;
    let r = app.call(Method::GET, &path, Some(&outsider), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[test]
fn the_connect_path_is_recognized_and_nothing_near_it() {
    assert_eq!(connect_path("/v1/clusters/abc/agent/connect"), Some("abc"));
    for other in [
        "/v1/clusters//agent/connect",
        "/v1/clusters/a/b/agent/connect",
        "/v1/clusters/abc/agent/connect/",
        "/v1/clusters/abc/agent",
        "/v1/clusters/abc",
    ] {
        assert_eq!(connect_path(other), None, "{other}");
    }
}
