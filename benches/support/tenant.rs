//! A bench program's own tenant: a new user, logged in, with an organization and one cluster
//! large enough that everything submitted to it is admitted.

// Each bench program compiles this file on its own and uses a part of it.
#![allow(dead_code)]

use serde_json::{json, Value};

/// The largest capacity the API takes on a dimension (below 2^40).
const HUGE: i64 = (1 << 40) - 1;

pub struct Tenant {
    pub token: String,
    pub org: String,
    pub cluster: String,
}

/// POSTs `body` to `path` (as `token` when given) and answers the JSON; panics unless 2xx.
pub async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut req = http.post(format!("{base}{path}")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("setup request");
    let status = r.status();
    let v: Value = r.json().await.expect("json");
    assert!(status.is_success(), "{status} {v}");
    v
}

/// A new tenant named after `label`.
pub async fn tenant(http: &reqwest::Client, base: &str, label: &str) -> Tenant {
    let email = format!("{label}-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery";
    let id = |v: Value, key: &str| v[key].as_str().expect(key).to_string();
    post(
        http,
        base,
        "/v1/auth/register",
        None,
        json!({"email": email, "password": password, "name": label}),
    )
    .await;
    let login = json!({"email": email, "password": password});
    let token = id(
        post(http, base, "/v1/auth/login", None, login).await,
        "access_token",
    );
    let org = post(http, base, "/v1/orgs", Some(&token), json!({"name": label})).await;
    let org = id(org, "id");
    let cluster = cluster(http, base, &token, &org, label).await;
    Tenant {
        token,
        org,
        cluster,
    }
}

/// A new cluster of `org` named `name`, large enough that everything submitted to it is
/// admitted: its id.
pub async fn cluster(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    org: &str,
    name: &str,
) -> String {
    let cluster = post(
        http,
        base,
        &format!("/v1/orgs/{org}/clusters"),
        Some(token),
        json!({"name": name, "capacity": {"cpu_millis": HUGE, "memory_mib": HUGE, "gpus": 0}}),
    )
    .await;
    cluster["id"].as_str().expect("id").to_string()
}
