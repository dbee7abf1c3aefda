//! Accounts and tokens through the real Worker.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth::auth::access::TokenKeys;
use berth::domain::ids::UserId;
use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{unique_email, Client};

#[tokio::test]
async fn register_login_me_refresh_logout() {
    let c = Client::new();
    let email = unique_email();
    let r = c.register(&email).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let login = c
        .login(&email.to_uppercase(), "correct horse battery")
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let access = login.body["access_token"].as_str().expect("access");
    let me = c.call(Method::GET, "/v1/me", Some(access), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["email"], email.as_str());

    let refresh = login.body["refresh_token"].as_str().expect("refresh");
    let r = c.refresh(refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let next = r.body["refresh_token"].as_str().expect("next");
    let new_access = r.body["access_token"].as_str().expect("access");
    let r = c
        .call(
            Method::POST,
            "/v1/auth/logout",
            Some(new_access),
            Some(json!({"refresh_token": next})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = c.refresh(next).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn duplicate_email_in_another_letter_case_is_409() {
    let c = Client::new();
    let email = unique_email();
    assert_eq!(c.register(&email).await.status, StatusCode::CREATED);
    assert_eq!(
        c.register(&email.to_uppercase()).await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn five_failures_throttle_logins_with_retry_after() {
    let c = Client::new();
    let (email, _, _) = c.user().await;
    for _ in 0..5 {
        assert_eq!(
            c.login(&email, "wrong password!!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = c.login(&email, "correct horse battery").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // The account key holds from another client address too (the Durable Object is shared).
    let other = Client::new();
    assert_eq!(
        other.login(&email, "correct horse battery").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_family() {
    let c = Client::new();
    let (_, _, first) = c.user().await;
    let r = c.refresh(&first).await;
    assert_eq!(r.status, StatusCode::OK);
    let second = r.body["refresh_token"]
        .as_str()
        .expect("second")
        .to_string();
    let reuse = c.refresh(&first).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    let r = c.refresh(&second).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the family is revoked");
}

async fn me_status(c: &Client, token: &str) -> StatusCode {
    c.call(Method::GET, "/v1/me", Some(token), None)
        .await
        .status
}

#[tokio::test]
async fn expired_foreign_unsigned_and_misaddressed_tokens_are_401() {
    let c = Client::new();
    c.user().await;
    let keys = c.keys();
    let user = UserId::new();
    let valid_shape = keys.issue(user, Utc::now());
    assert_eq!(
        me_status(&c, &valid_shape).await,
        StatusCode::UNAUTHORIZED,
        "unknown user"
    );

    let (_, access, _) = c.user().await;
    assert_eq!(me_status(&c, &access).await, StatusCode::OK);
    let sub = {
        let payload = access.split('.').nth(1).expect("payload");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        UserId(claims["sub"].as_str().expect("sub").parse().expect("uuid"))
    };

    let expired = keys.issue(sub, Utc::now() - Duration::minutes(16));
    assert_eq!(
        me_status(&c, &expired).await,
        StatusCode::UNAUTHORIZED,
        "expired"
    );

    let stranger = TokenKeys::from_config(
        &TokenKeys::generate_config(),
        None,
        "https://berth.dev",
        "berth-api",
    )
    .expect("keys");
    assert_eq!(
        me_status(&c, &stranger.issue(sub, Utc::now())).await,
        StatusCode::UNAUTHORIZED,
        "other key"
    );

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(
            json!({"sub": sub, "iss": "https://berth.dev", "aud": "berth-api",
            "exp": Utc::now().timestamp() + 600})
            .to_string()
        )
    );
    assert_eq!(
        me_status(&c, &none).await,
        StatusCode::UNAUTHORIZED,
        "alg none"
    );

    let config = std::env::var("BERTH_E2E_SIGNING_KEY").expect("key");
    let wrong_aud =
        TokenKeys::from_config(&config, None, "https://berth.dev", "someone-else").expect("keys");
    assert_eq!(
        me_status(&c, &wrong_aud.issue(sub, Utc::now())).await,
        StatusCode::UNAUTHORIZED,
        "audience"
    );
}

#[tokio::test]
async fn malformed_json_is_400_and_oversized_bodies_are_413() {
    let c = Client::new();
    let r = c
        .raw(
            Method::POST,
            "/v1/auth/register",
            None,
            Some("application/json"),
            b"{\"email\":".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let big = format!("{{\"email\": \"{}\"}}", "a".repeat(70 * 1024)).into_bytes();
    let r = c
        .raw(
            Method::POST,
            "/v1/auth/register",
            None,
            Some("application/json"),
            big,
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = c
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"].as_array().expect("errors").len(), 3);
}

/// Bodies without a declared length (chunked) take the streaming path into the Worker; a
/// declared one is read in one piece. Both parse alike, and both stop at the limit.
#[tokio::test]
async fn bodies_without_a_declared_length_parse_and_stop_at_the_limit() {
    let c = Client::new();
    let chunked = |chunks: Vec<Vec<u8>>| {
        let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        reqwest::Client::new()
            .post(format!("{}/v1/auth/register", c.base))
            .header("content-type", "application/json")
            .header("cf-connecting-ip", &c.ip)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
    };
    let email = unique_email();
    let body = json!({"email": email, "password": "correct horse battery", "name": "Chunked"})
        .to_string()
        .into_bytes();
    let (head, tail) = body.split_at(body.len() / 2);
    let r = chunked(vec![head.to_vec(), tail.to_vec()])
        .await
        .expect("the Worker answers");
    assert!(r.headers().get("content-length").is_some());
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: serde_json::Value = r.json().await.expect("json");
    assert_eq!(created["user"]["email"], email.as_str());

    let big = vec![b' '; 16 * 1024];
    let r = chunked(vec![big; 5]).await.expect("the Worker answers");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    // An answer without a body keeps none (204).
    let login = c.login(&email, "correct horse battery").await;
    let access = login.body["access_token"].as_str().expect("access");
    let refresh = login.body["refresh_token"].as_str().expect("refresh");
    let r = c
        .call(
            Method::POST,
            "/v1/auth/logout",
            Some(access),
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, serde_json::Value::String(String::new()));
}
