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
