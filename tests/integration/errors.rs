//! Malformed input and failures: always a problem document, never a 5xx (but 503).

use axum::http::{Method, StatusCode};

use crate::support::TestApp;

async fn post(app: &TestApp, path: &str, content_type: &str, body: &str) -> crate::support::Reply {
    app.raw(Method::POST, path, None, Some(content_type), body.into())
        .await
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    let r = post(
        &app,
        "/v1/auth/register",
        "application/json",
        "{\"email\": ",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(&app, "/v1/auth/register", "application/json", "[1,2]").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let app = TestApp::spawn().await;
    let big = format!("{{\"email\": \"{}\"}}", "a".repeat(70 * 1024));
    let r = post(&app, "/v1/auth/register", "application/json", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn other_content_types_are_415() {
    let app = TestApp::spawn().await;
    let r = post(&app, "/v1/auth/login", "text/plain", "{}").await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.call(Method::GET, "/v1/nothing", None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::DELETE, "/v1/me", None, None).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn missing_or_garbage_tokens_are_401() {
    let app = TestApp::spawn().await;
    for auth in [None, Some("garbage"), Some("")] {
        let r = app.call(Method::GET, "/v1/me", auth, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn health_is_shallow_by_default_and_deep_on_request() {
    let app = TestApp::spawn().await;
    let r = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.body, serde_json::json!({"status": "ok"}));
    let r = app.call(Method::GET, "/health?deep=1", None, None).await;
    assert_eq!(r.body["database"], "ok");
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after() {
    // Nothing listens on port 1.
    let app = TestApp::on_database("postgres://postgres:x@127.0.0.1:1/none");
    assert_eq!(
        app.call(Method::GET, "/health", None, None).await.status,
        StatusCode::OK
    );
    let r = app.call(Method::GET, "/health?deep=1", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));
    let r = app.register("x@example.com").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}
