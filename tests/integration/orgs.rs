//! Organizations, members, invites and API keys, natively against a real database.

use axum::http::{Method, StatusCode};
use berth::domain::policy::Role;
use chrono::Duration;
use serde_json::{json, Value};

use crate::support::TestApp;

async fn org(app: &TestApp, admin: &str) -> String {
    let org = app.org(admin, "  Acme  ").await;
    assert_eq!(org["name"], "Acme");
    assert_eq!(org["role"], "admin");
    org["id"].as_str().expect("id").to_string()
}

fn user_id(me: &Value) -> String {
    me["user"]["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn the_team_flow_create_invite_accept_list() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("admin@example.com").await;
    let (dev, _) = app.user_as("dev@example.com").await;
    let org = org(&app, &admin).await;
    let inv = app.invite(&admin, &org, json!({"role": "developer"})).await;
    assert_eq!(inv["max_uses"], 1);
    let code = inv["code"].as_str().expect("code");
    assert!(code.starts_with("bic_"));
    let r = app.accept(&dev, code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"org_id": org, "role": "developer"}));

    let members = app
        .call(
            Method::GET,
            &format!("/v1/orgs/{org}/members"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(members.status, StatusCode::OK);
    let roles: Vec<_> = members.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["admin", "developer"]);
    assert_eq!(app.me(&dev).await["memberships"][0]["role"], "developer");

    // The code is single-use, and listing never shows codes.
    let (late, _) = app.user_as("late@example.com").await;
    let r = app.accept(&late, code).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert_eq!(r.body["title"], "Invite used up");
    let list = app
        .call(
            Method::GET,
            &format!("/v1/orgs/{org}/invites"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(list.body["items"][0]["status"], "used_up");
    assert!(list.body["items"][0].get("code").is_none());
}

#[tokio::test]
async fn a_single_use_code_accepted_concurrently_admits_exactly_one() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("a@example.com").await;
    let org = org(&app, &admin).await;
    let code = app.invite(&admin, &org, json!({"role": "viewer"})).await["code"]
        .as_str()
        .expect("code")
        .to_string();
    let mut tokens = Vec::new();
    for i in 0..6 {
        tokens.push(app.user_as(&format!("racer{i}@example.com")).await.0);
    }
    let replies = futures::future::join_all(tokens.iter().map(|t| app.accept(t, &code))).await;
    let joined = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(
        joined,
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(replies
        .iter()
        .all(|r| r.status == StatusCode::OK || r.status == StatusCode::GONE));
    let members = app
        .call(
            Method::GET,
            &format!("/v1/orgs/{org}/members"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(members.body["items"].as_array().expect("items").len(), 2);
}

#[tokio::test]
async fn expired_revoked_unknown_and_duplicate_acceptances_change_nothing() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("a@example.com").await;
    let (bob, _) = app.user_as("bob@example.com").await;
    let org = org(&app, &admin).await;

    let short = app
        .invite(
            &admin,
            &org,
            json!({"role": "viewer", "expires_in_seconds": 60}),
        )
        .await;
    app.advance(Duration::seconds(61));
    let r = app
        .accept(&bob, short["code"].as_str().expect("code"))
        .await;
    assert_eq!(
        (r.status, r.body["title"].as_str()),
        (StatusCode::GONE, Some("Invite expired"))
    );

    let revoked = app.invite(&admin, &org, json!({"role": "viewer"})).await;
    let id = revoked["id"].as_str().expect("id");
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/orgs/{org}/invites/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app
        .accept(&bob, revoked["code"].as_str().expect("code"))
        .await;
    assert_eq!(
        (r.status, r.body["title"].as_str()),
        (StatusCode::GONE, Some("Invite revoked"))
    );

    let r = app
        .accept(&bob, "bic_0000000000000000000000000000000000000000000")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.accept(&bob, "nonsense").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Already a member: 409, and the multi-use code keeps its remaining use.
    let multi = app
        .invite(&admin, &org, json!({"role": "developer", "max_uses": 2}))
        .await;
    let code = multi["code"].as_str().expect("code");
    let r = app.accept(&admin, code).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let list = app
        .call(
            Method::GET,
            &format!("/v1/orgs/{org}/invites?limit=200"),
            Some(&admin),
            None,
        )
        .await;
    let item = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == multi["id"])
        .expect("listed")
        .clone();
    assert_eq!(item["uses"], 0);
    assert!(
        app.me(&bob).await["memberships"]
            .as_array()
            .expect("m")
            .is_empty(),
        "bob joined nothing"
    );
}

#[tokio::test]
async fn invite_fields_are_validated_together() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("a@example.com").await;
    let org = org(&app, &admin).await;
    let r = app
        .call(
            Method::POST,
            &format!("/v1/orgs/{org}/invites"),
            Some(&admin),
            Some(json!({"role": "owner", "expires_in_seconds": 31 * 86400, "max_uses": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"].as_array().expect("errors").len(), 3);
}

#[tokio::test]
async fn guessing_invite_codes_is_throttled() {
    let app = TestApp::spawn().await;
    let (bob, _) = app.user_as("bob@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            app.accept(&bob, "bic_guess").await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        app.accept(&bob, "bic_guess").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_last_admin_can_neither_be_demoted_nor_removed_nor_leave() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("a@example.com").await;
    let org = org(&app, &admin).await;
    let admin_id = user_id(&app.me(&admin).await);
    let path = format!("/v1/orgs/{org}/members/{admin_id}");
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&admin), None)
            .await
            .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    for round in 0..3 {
        let app = TestApp::spawn().await;
        let (a, _) = app.user_as(&format!("a{round}@example.com")).await;
        let (b, _) = app.user_as(&format!("b{round}@example.com")).await;
        let org = org(&app, &a).await;
        let code = app.invite(&a, &org, json!({"role": "admin"})).await["code"]
            .as_str()
            .expect("c")
            .to_string();
        assert_eq!(app.accept(&b, &code).await.status, StatusCode::OK);
        let (a_id, b_id) = (user_id(&app.me(&a).await), user_id(&app.me(&b).await));
        let (path_a, path_b) = (
            format!("/v1/orgs/{org}/members/{a_id}"),
            format!("/v1/orgs/{org}/members/{b_id}"),
        );
        let demote_b = app.call(
            Method::PATCH,
            &path_b,
            Some(&a),
            Some(json!({"role": "viewer"})),
        );
        let demote_a = app.call(
            Method::PATCH,
            &path_a,
            Some(&b),
            Some(json!({"role": "viewer"})),
        );
        let (x, y) = futures::join!(demote_b, demote_a);
        let statuses = [x.status, y.status];
        assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
        let members = app
            .call(
                Method::GET,
                &format!("/v1/orgs/{org}/members"),
                Some(&a),
                None,
            )
            .await;
        let admins = members.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|m| m["role"] == "admin")
            .count();
        assert_eq!(admins, 1, "{statuses:?}");
    }
}

#[tokio::test]
async fn outsiders_get_404_and_low_roles_get_403() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("a@example.com").await;
    let (viewer, _) = app.user_as("v@example.com").await;
    let (outsider, _) = app.user_as("o@example.com").await;
    let org = org(&app, &admin).await;
    let code = app.invite(&admin, &org, json!({"role": "viewer"})).await["code"]
        .as_str()
        .expect("c")
        .to_string();
    app.accept(&viewer, &code).await;
    let path = format!("/v1/orgs/{org}/invites");
    assert_eq!(
        app.call(Method::GET, &path, Some(&viewer), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(Method::GET, &path, Some(&outsider), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/orgs/{org}"),
            Some(&outsider),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::GET, "/v1/orgs/not-a-uuid", Some(&admin), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A member leaves on their own.
    let vid = user_id(&app.me(&viewer).await);
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/orgs/{org}/members/{vid}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn api_keys_act_in_their_organization_with_their_role_until_revoked() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("a@example.com").await;
    let org_a = org(&app, &admin).await;
    let org_b = org(&app, &admin).await;
    let key = app.api_key(&admin, &org_a, "ci", Role::Viewer).await;
    let secret = key["secret"].as_str().expect("secret").to_string();
    let key_id = key["id"].as_str().expect("id").to_string();
    assert!(
        secret.starts_with("bak_") && secret.starts_with(key["prefix"].as_str().expect("prefix"))
    );

    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/orgs/{org_a}"),
            Some(&secret),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/orgs/{org_a}/invites"),
            Some(&secret),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/orgs/{org_b}"),
            Some(&secret),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::GET, "/v1/me", Some(&secret), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let list = app
        .call(
            Method::GET,
            &format!("/v1/orgs/{org_a}/api-keys"),
            Some(&admin),
            None,
        )
        .await;
    assert!(list.body["items"][0]["last_used_at"].is_string());
    assert!(list.body["items"][0].get("secret").is_none());

    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/orgs/{org_a}/api-keys/{key_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/v1/orgs/{org_a}"),
            Some(&secret),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn lists_paginate_with_an_opaque_cursor() {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("a@example.com").await;
    let org = org(&app, &admin).await;
    for _ in 0..5 {
        app.invite(&admin, &org, json!({"role": "viewer"})).await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .call(
                Method::GET,
                &format!("/v1/orgs/{org}/invites?limit=2&cursor={cursor}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        seen.extend(
            r.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["id"].clone()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let r = app
        .call(
            Method::GET,
            &format!("/v1/orgs/{org}/invites?limit=0&cursor=zz"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"].as_array().expect("errors").len(), 2);
}
