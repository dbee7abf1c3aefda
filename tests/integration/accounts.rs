//! Accounts and tokens through the router and a real database.

use axum::http::{Method, StatusCode};
use chrono::Duration;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn register_then_login_then_me() {
    let app = TestApp::spawn().await;
    let r = app.register("Ada@Example.com").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["user"]["email"], "Ada@Example.com");
    assert!(r.body["user"].get("password_hash").is_none());

    let login = app.login("ada@example.com", "correct horse battery").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    let token = login.body["access_token"].as_str().expect("token");

    let me = app.call(Method::GET, "/v1/me", Some(token), None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["email"], "Ada@Example.com");
    assert_eq!(me.body["memberships"], json!([]));
}

#[tokio::test]
async fn duplicate_email_in_another_letter_case_is_a_conflict() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.register("grace@example.com").await.status,
        StatusCode::CREATED
    );
    let r = app.register("GRACE@Example.COM").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}

#[tokio::test]
async fn registration_lists_every_invalid_field_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let r = app
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "nope", "password": "short", "name": 7})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<_> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect();
    assert_eq!(fields, ["email", "password", "name"]);
    assert_eq!(
        app.login("nope", "short").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn wrong_password_is_401_and_five_failures_throttle_with_retry_after() {
    let app = TestApp::spawn().await;
    app.user_as("lin@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            app.login("lin@example.com", "wrong password!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = app.login("lin@example.com", "correct horse battery").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry = r.retry_after();
    assert!((1..=900).contains(&retry), "{retry}");
    // The window slides: 15 minutes later the right password works again.
    app.advance(Duration::minutes(16));
    assert_eq!(
        app.login("lin@example.com", "correct horse battery")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_emails_are_throttled_too() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        assert_eq!(
            app.login("ghost@example.com", "whatever it is")
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.login("ghost@example.com", "whatever it is")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let (_, first) = app.user_as("kim@example.com").await;
    let r = app.refresh(&first).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let second = r.body["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert_ne!(second, first);

    // Presenting the spent token again: 401, and the live one of its family dies with it.
    let reuse = app.refresh(&first).await;
    assert_eq!(reuse.status, StatusCode::UNAUTHORIZED);
    assert!(reuse.body["detail"]
        .as_str()
        .expect("detail")
        .contains("reuse"));
    let after = app.refresh(&second).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_yield_exactly_one_pair() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user_as("par@example.com").await;
    let calls = (0..8).map(|_| {
        app.call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": token.clone()})),
        )
    });
    let replies = futures::future::join_all(calls).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "exactly one rotation wins");
}

#[tokio::test]
async fn refresh_tokens_expire_after_thirty_days() {
    let app = TestApp::spawn().await;
    let (_, token) = app.user_as("old@example.com").await;
    app.advance(Duration::days(31));
    let r = app.refresh(&token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let app = TestApp::spawn().await;
    let (access, refresh) = app.user_as("bye@example.com").await;
    let r = app
        .call(
            Method::POST,
            "/v1/auth/logout",
            Some(&access),
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.refresh(&refresh).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn access_tokens_expire_after_fifteen_minutes() {
    let app = TestApp::spawn().await;
    let (access, _) = app.user_as("tick@example.com").await;
    app.advance(Duration::minutes(16));
    let r = app.call(Method::GET, "/v1/me", Some(&access), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body["detail"]
        .as_str()
        .expect("detail")
        .contains("expired"));
}

#[tokio::test]
async fn a_rehash_happens_when_stored_parameters_are_weaker() {
    let app = TestApp::spawn().await;
    app.user_as("weak@example.com").await;
    let (db, conn) = tokio_postgres::connect(&app.db_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    let weak = "$argon2id$v=19$m=8192,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$";
    // A hash of "correct horse battery" with weaker parameters, made here with the library.
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(8192, 1, 1, None).expect("params");
    let h = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(b"correct horse battery", b"0123456789abcdef")
        .expect("hash")
        .to_string();
    assert!(h.starts_with(weak));
    db.execute("update users set password_hash = $1", &[&h])
        .await
        .expect("update");
    assert_eq!(
        app.login("weak@example.com", "correct horse battery")
            .await
            .status,
        StatusCode::OK
    );
    let stored: String = db
        .query_one("select password_hash from users", &[])
        .await
        .expect("row")
        .get(0);
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
}
