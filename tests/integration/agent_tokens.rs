//! Agent tokens: created, listed and revoked by a cluster's admins, shown once and stored
//! hashed, refused as a bearer by every route, and authenticated by
//! `db::agent_tokens::authenticate` (what the agent's connect route will call).

use axum::http::{Method, StatusCode};
use berth::db::agent_tokens;
use berth::domain::policy::Role;
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{Reply, TestApp};

/// An organization with an admin and one cluster.
struct Fixture {
    app: TestApp,
    admin: String,
    org: String,
    cluster: String,
}

impl Fixture {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let (admin, _) = app.user_as("admin@example.com").await;
        let org = app.org_id(&admin, "Acme").await;
        let cluster = cluster(&app, &admin, &org, "gpu").await;
        Self {
            app,
            admin,
            org,
            cluster,
        }
    }

    fn path(&self, cluster: &str) -> String {
        format!("/v1/clusters/{cluster}/agent-tokens")
    }

    async fn create(&self, cluster: &str, name: &str) -> Value {
        self.app
            .create(&self.admin, &self.path(cluster), json!({"name": name}))
            .await
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        self.app.call(method, path, Some(token), body).await
    }

    async fn list(&self, cluster: &str) -> Vec<Value> {
        let r = self
            .call(Method::GET, &self.path(cluster), &self.admin, None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["items"].as_array().expect("items").clone()
    }

    async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.app.db_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(conn);
        client
    }
}

async fn cluster(app: &TestApp, admin: &str, org: &str, name: &str) -> String {
    let body = json!({"name": name, "capacity": {"cpu_millis": 1000, "memory_mib": 0, "gpus": 0}});
    app.cluster(admin, org, body).await
}

fn field(v: &Value, name: &str) -> String {
    v[name].as_str().expect(name).to_string()
}

#[tokio::test]
async fn admins_create_list_and_revoke_a_cluster_s_tokens_shown_once_and_stored_hashed() {
    let f = Fixture::new().await;
    let created = f.create(&f.cluster, "  rack-7  ").await;
    let mut keys: Vec<_> = created
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["cluster_id", "created_at", "id", "name", "prefix", "token"]
    );
    assert_eq!(created["name"], "rack-7");
    assert_eq!(created["cluster_id"], f.cluster.as_str());
    let token = field(&created, "token");
    let id = field(&created, "id");
    let prefix = field(&created, "prefix");
    assert!(token.starts_with("bat_") && token.len() == 47, "{token}");
    assert!(token.starts_with(&prefix) && prefix.len() == 12, "{prefix}");

    // Only its SHA-256 is stored, and nothing of the row holds the secret.
    let db = f.db().await;
    let row = db
        .query_one(
            "select token_hash, row_to_json(t)::text as whole from agent_tokens t where id = $1",
            &[&uuid::Uuid::parse_str(&id).expect("uuid")],
        )
        .await
        .expect("the row");
    let hash: Vec<u8> = row.get("token_hash");
    assert_eq!(hash, Sha256::digest(token.as_bytes()).to_vec());
    let whole: String = row.get("whole");
    assert!(!whole.contains(&token[4..]), "{whole}");

    // Listed without the secret, with its use and revocation.
    let other = f.create(&f.cluster, "rack-8").await;
    let items = f.list(&f.cluster).await;
    assert_eq!(items.len(), 2);
    let mut keys: Vec<_> = items[0]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cluster_id",
            "created_at",
            "id",
            "last_used_at",
            "name",
            "prefix",
            "revoked_at"
        ]
    );
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["prefix"], prefix.as_str());
    assert!(items[0]["last_used_at"].is_null() && items[0]["revoked_at"].is_null());
    assert!(!items.iter().any(|i| i.to_string().contains(&token[4..])));

    // Paginated like every list.
    let r = f
        .call(
            Method::GET,
            &format!("{}?limit=1", f.path(&f.cluster)),
            &f.admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 1);
    let cursor = field(&r.body, "next_cursor");
    let r = f
        .call(
            Method::GET,
            &format!("{}?limit=1&cursor={cursor}", f.path(&f.cluster)),
            &f.admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"][0]["id"], other["id"]);
    assert!(r.body["next_cursor"].is_null());

    // Revoked: 204, again 204; the list says when.
    let one = format!("{}/{id}", f.path(&f.cluster));
    for _ in 0..2 {
        let r = f.call(Method::DELETE, &one, &f.admin, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }
    let items = f.list(&f.cluster).await;
    assert!(items[0]["revoked_at"].is_string());
    assert!(items[1]["revoked_at"].is_null());

    // Another cluster's token, an unknown id or a malformed one: 404.
    let elsewhere = cluster(&f.app, &f.admin, &f.org, "cpu").await;
    let foreign = f.create(&elsewhere, "rack-9").await;
    assert!(f.list(&elsewhere).await.len() == 1);
    for path in [
        format!("{}/{}", f.path(&f.cluster), field(&foreign, "id")),
        format!("{}/{}", f.path(&f.cluster), uuid::Uuid::now_v7()),
        format!("{}/not-an-id", f.path(&f.cluster)),
        format!("{}/{id}", f.path(&uuid::Uuid::now_v7().to_string())),
    ] {
        let r = f.call(Method::DELETE, &path, &f.admin, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.body);
    }
    assert!(f.list(&elsewhere).await[0]["revoked_at"].is_null());

    // The name is validated like every display name.
    let r = f
        .call(
            Method::POST,
            &f.path(&f.cluster),
            &f.admin,
            Some(json!({"name": " "})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "name");
}

#[tokio::test]
async fn only_admins_who_are_users_manage_tokens_and_outsiders_see_404() {
    let f = Fixture::new().await;
    let token = f.create(&f.cluster, "rack-7").await;
    let one = format!("{}/{}", f.path(&f.cluster), field(&token, "id"));
    let mut members = vec![];
    for role in [Role::Viewer, Role::Developer] {
        let (t, _) = f.app.user_as(&format!("{role:?}@example.com")).await;
        f.app.join(&f.admin, &f.org, &t, role).await;
        members.push(t);
    }
    let (outsider, _) = f.app.user_as("outsider@example.com").await;
    f.app.org(&outsider, "Elsewhere").await;
    let key = f.app.api_key(&f.admin, &f.org, "ci", Role::Admin).await;
    let key = field(&key, "secret");

    let create = |who: &str| {
        let (f, who) = (&f, who.to_string());
        async move {
            f.call(
                Method::POST,
                &f.path(&f.cluster),
                &who,
                Some(json!({"name": "x"})),
            )
            .await
            .status
        }
    };
    let list = |who: &str| {
        let (f, who) = (&f, who.to_string());
        async move {
            f.call(Method::GET, &f.path(&f.cluster), &who, None)
                .await
                .status
        }
    };
    let revoke = |who: &str| {
        let (f, who, one) = (&f, who.to_string(), one.clone());
        async move { f.call(Method::DELETE, &one, &who, None).await.status }
    };
    for member in &members {
        assert_eq!(create(member).await, StatusCode::FORBIDDEN);
        assert_eq!(list(member).await, StatusCode::FORBIDDEN);
        assert_eq!(revoke(member).await, StatusCode::FORBIDDEN);
    }
    assert_eq!(create(&outsider).await, StatusCode::NOT_FOUND);
    assert_eq!(list(&outsider).await, StatusCode::NOT_FOUND);
    assert_eq!(revoke(&outsider).await, StatusCode::NOT_FOUND);
    // An admin API key may list and revoke, but never mint a token.
    let r = f
        .call(
            Method::POST,
            &f.path(&f.cluster),
            &key,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body["detail"]
            .as_str()
            .expect("detail")
            .contains("agent tokens"),
        "{}",
        r.body
    );
    assert_eq!(list(&key).await, StatusCode::OK);
    assert_eq!(revoke(&key).await, StatusCode::NO_CONTENT);
    // Nothing was created by the refused calls.
    assert_eq!(f.list(&f.cluster).await.len(), 1);
}

#[tokio::test]
async fn an_agent_token_is_refused_as_a_bearer_by_every_route() {
    let f = Fixture::new().await;
    let token = field(&f.create(&f.cluster, "rack-7").await, "token");
    let c = &f.cluster;
    let submit = json!({"name": "x", "image": "nginx", "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}});
    for (method, path, body) in [
        (Method::GET, "/v1/me".to_string(), None),
        (Method::GET, "/v1/orgs".to_string(), None),
        (Method::GET, format!("/v1/orgs/{}", f.org), None),
        (Method::GET, format!("/v1/orgs/{}/clusters", f.org), None),
        (Method::GET, format!("/v1/clusters/{c}"), None),
        (Method::GET, format!("/v1/clusters/{c}/queue"), None),
        (Method::GET, format!("/v1/clusters/{c}/deployments"), None),
        (
            Method::POST,
            format!("/v1/clusters/{c}/deployments"),
            Some(submit),
        ),
        (Method::GET, f.path(c), None),
        (Method::POST, f.path(c), Some(json!({"name": "more"}))),
        (
            Method::POST,
            "/v1/auth/logout".to_string(),
            Some(json!({"refresh_token": "brt_x"})),
        ),
    ] {
        let r = f.call(method.clone(), &path, &token, body).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            r.body
        );
        assert!(
            r.body["detail"]
                .as_str()
                .expect("detail")
                .contains("agent token"),
            "{path}: {}",
            r.body
        );
    }
    // Refused before anything was done with it: never used, nothing deployed or minted.
    let items = f.list(&f.cluster).await;
    assert_eq!(items.len(), 1);
    assert!(items[0]["last_used_at"].is_null());
    let r = f
        .call(
            Method::GET,
            &format!("/v1/clusters/{c}/deployments"),
            &f.admin,
            None,
        )
        .await;
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn authenticate_finds_a_live_token_and_records_its_use() {
    let f = Fixture::new().await;
    let created = f.create(&f.cluster, "rack-7").await;
    let token = field(&created, "token");
    let db = f.db().await;
    // PostgreSQL keeps microseconds.
    let now = Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .expect("truncated");

    let row = agent_tokens::authenticate(&db, &token, now)
        .await
        .expect("query")
        .expect("a live token");
    assert_eq!(row.id.0.to_string(), field(&created, "id"));
    assert_eq!(row.cluster_id.0.to_string(), f.cluster);
    assert_eq!(row.name, "rack-7");
    assert_eq!(row.last_used_at, Some(now));
    assert_eq!(row.revoked_at, None);
    assert_eq!(f.list(&f.cluster).await[0]["last_used_at"], json!(now));

    // What is not a live agent token: an API key, a malformed or unknown bat_, a revoked one.
    let key = f.app.api_key(&f.admin, &f.org, "ci", Role::Admin).await;
    let unknown = format!("bat_{}", "A".repeat(43));
    let tampered = format!(
        "{}{}",
        &token[..token.len() - 1],
        if token.ends_with('A') { 'B' } else { 'A' }
    );
    for secret in [
        field(&key, "secret"),
        unknown,
        tampered,
        "bat_short".to_string(),
        format!("{token} "),
        String::new(),
    ] {
        let found = agent_tokens::authenticate(&db, &secret, now)
            .await
            .expect("query");
        assert!(found.is_none(), "{secret:?} authenticated");
    }
    let path = format!("{}/{}", f.path(&f.cluster), field(&created, "id"));
    let r = f.call(Method::DELETE, &path, &f.admin, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let later = now + TimeDelta::seconds(5);
    assert!(agent_tokens::authenticate(&db, &token, later)
        .await
        .expect("query")
        .is_none());
    // A revoked token's last use stays what it was.
    assert_eq!(f.list(&f.cluster).await[0]["last_used_at"], json!(now));

    // A token goes with its cluster.
    let other = f.create(&f.cluster, "rack-8").await;
    let r = f
        .call(
            Method::DELETE,
            &format!("/v1/clusters/{}", f.cluster),
            &f.admin,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(
        agent_tokens::authenticate(&db, &field(&other, "token"), later)
            .await
            .expect("query")
            .is_none()
    );
}
