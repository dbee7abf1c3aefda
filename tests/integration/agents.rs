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
    let org = app.org(&admin, "Agents").await["id"]
        .as_str()
        .expect("org")
        .to_string();
    let body =
        json!({"name": "c1", "capacity": {"cpu_millis": 1000, "memory_mib": 1024, "gpus": 0}});
    let cluster = app.cluster(&admin, &org, body).await;
    let st = &app.state;
    let status = |r: Result<_, berth::http::ApiError>| r.map(|_| ()).map_err(|e| e.status());

    let ok = admit(st, &Method::GET, &cluster, &headers(Some("bat_x"), true))
        .await
        .expect("admitted");
    assert_eq!(ok.cluster.to_string(), cluster);
    // The same secret is the same credential (its sockets share a tag).
    let again = admit(st, &Method::GET, &cluster, &headers(Some("bat_x"), true))
        .await
        .expect("admitted");
    assert_eq!(ok.token, again.token);

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
            headers(Some("bat_x"), false),
            StatusCode::UPGRADE_REQUIRED,
        ),
        (
            Method::GET,
            &unknown,
            headers(Some("bat_x"), true),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "nope",
            headers(Some("bat_x"), true),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            &cluster,
            headers(Some("bat_x"), true),
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
