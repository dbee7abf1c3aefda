//! Throttling through the real Worker: one caller's failures cost that caller, not everyone
//! behind the same client address (an office NAT, a shared CI runner).

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{unique_email, Client};

const PASSWORD: &str = "correct horse battery";

async fn accept(c: &Client, token: &str, code: &str) -> StatusCode {
    c.accept(token, code).await.status
}

#[tokio::test]
async fn one_users_failures_leave_the_others_at_the_same_address_alone() {
    // One client: every request below comes from the same address.
    let c = Client::new();
    let (_, admin, _) = c.user().await;
    let org = c.org(&admin, "Office").await["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Mallory mistypes her password and invite codes until her own limits bite.
    let (mallory_email, mallory, _) = c.user().await;
    for _ in 0..5 {
        let r = c.login(&mallory_email, "wrong password!!").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    for code in [
        "bic_mistyped",
        "not a code at all",
        "bic_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "x",
        "y",
    ] {
        assert_eq!(accept(&c, &mallory, code).await, StatusCode::NOT_FOUND);
    }
    let r = c.login(&mallory_email, PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let r = c.accept(&mallory, "z").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));

    // Bob, behind the same address, registers, logs in and joins with a valid invite.
    let (_, bob, _) = c.user().await;
    let invite = c.invite(&admin, &org, json!({"role": "developer"})).await;
    let code = invite["code"].as_str().expect("code");
    assert_eq!(accept(&c, &bob, code).await, StatusCode::OK);

    // Mallory's invite limit is hers wherever she calls from.
    let elsewhere = Client::new();
    assert_eq!(
        accept(&elsewhere, &mallory, code).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn an_address_is_refused_after_a_hundred_failed_logins() {
    let c = Client::new();
    let (email, _, _) = c.user().await;
    // A spray over 99 accounts (none exists; each fails once, far from its own limit)...
    for _ in 0..99 {
        let r = c.login(&unique_email(), "wrong password!!").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    // ...leaves the address open; a success does not clear the address's failures.
    assert_eq!(c.login(&email, PASSWORD).await.status, StatusCode::OK);
    let r = c.login(&unique_email(), "wrong password!!").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The hundredth failure closes it, for every account.
    let r = c.login(&email, PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let retry = r.retry_after();
    assert!((1..=900).contains(&retry), "{retry}");
    // The same account from another address is fine.
    assert_eq!(
        Client::new().login(&email, PASSWORD).await.status,
        StatusCode::OK
    );
}
