//! The role matrix, generated from the policy table as the OpenAPI document publishes it
//! (each organization operation's `x-berth-role` and `x-berth-user-only`, declared beside its
//! route): for every such operation × every kind of caller (viewer, developer, admin,
//! outsider, and an API key of each role), the status the policy predicts. Which operations
//! must declare one is checked by tests/integration/openapi.rs.

use berth::domain::policy::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduling::Team;
use crate::support::Client;

#[derive(Clone, Copy, Debug)]
enum Who {
    Member(Role),
    Key(Role),
    Outsider,
}

struct World {
    t: Team,
    tokens: Vec<(Who, String)>,
    big: String,
    full: String,
    queued: String,
    viewer_member: String,
}

impl World {
    async fn new() -> Self {
        let t = Team::new().await;
        let mut tokens = vec![(Who::Member(Role::Admin), t.admin.clone())];
        for role in [Role::Viewer, Role::Developer] {
            let (_, token, _) = t.c.user().await;
            join(&t, &token, role).await;
            tokens.push((Who::Member(role), token));
        }
        let (_, outsider, _) = t.c.user().await;
        tokens.push((Who::Outsider, outsider));
        for role in Role::ALL {
            let r =
                t.c.call(
                    Method::POST,
                    &format!("/v1/orgs/{}/api-keys", t.org),
                    Some(&t.admin),
                    Some(json!({"name": format!("{role:?}"), "role": role.as_str()})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            tokens.push((
                Who::Key(role),
                r.body["secret"].as_str().expect("secret").to_string(),
            ));
        }
        let big = t.cluster(1_000_000, 1_000_000, 1000, false).await;
        let full = t.cluster(1000, 0, 0, false).await;
        t.cpu_job(&full, "hog", 1000, 1000).await;
        let queued = t.cpu_job(&full, "waiting", 10, 0).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let (_, member, _) = t.c.user().await;
        let viewer_member = join(&t, &member, Role::Viewer).await;
        Self {
            t,
            tokens,
            big,
            full,
            queued,
            viewer_member,
        }
    }

    /// Fills the path's parameters, creating a fresh target where the call destroys it.
    async fn path(&self, op: &str, template: &str) -> String {
        let t = &self.t;
        let fresh_job = |cluster: String| async move {
            t.cpu_job(&cluster, "target", 10, 0).await["id"]
                .as_str()
                .expect("id")
                .to_string()
        };
        let deployment = match op {
            "cancel_deployment" => fresh_job(self.full.clone()).await,
            "stop_deployment" | "finish_deployment" => fresh_job(self.big.clone()).await,
            _ => self.queued.clone(),
        };
        let cluster = match op {
            "delete_cluster" => t.cluster(10, 0, 0, false).await,
            _ => self.big.clone(),
        };
        let user = match op {
            "delete_member" => {
                let (_, token, _) = t.c.user().await;
                join(t, &token, Role::Viewer).await
            }
            _ => self.viewer_member.clone(),
        };
        let mut path = template
            .replace("{org_id}", &t.org)
            .replace("{cluster_id}", &cluster)
            .replace("{deployment_id}", &deployment)
            .replace("{user_id}", &user);
        if path.contains("{invite_id}") {
            let r =
                t.c.call(
                    Method::POST,
                    &format!("/v1/orgs/{}/invites", t.org),
                    Some(&t.admin),
                    Some(json!({"role": "viewer"})),
                )
                .await;
            path = path.replace("{invite_id}", r.body["id"].as_str().expect("invite"));
        }
        if path.contains("{key_id}") {
            let r =
                t.c.call(
                    Method::POST,
                    &format!("/v1/orgs/{}/api-keys", t.org),
                    Some(&t.admin),
                    Some(json!({"name": "x", "role": "viewer"})),
                )
                .await;
            path = path.replace("{key_id}", r.body["id"].as_str().expect("key"));
        }
        if path.contains("{token_id}") {
            let r =
                t.c.call(
                    Method::POST,
                    &format!("/v1/clusters/{cluster}/agent-tokens"),
                    Some(&t.admin),
                    Some(json!({"name": "x"})),
                )
                .await;
            path = path.replace("{token_id}", r.body["id"].as_str().expect("token"));
        }
        path
    }
}

/// Joins `token`'s user to the team's organization with `role`; returns the user id.
async fn join(t: &Team, token: &str, role: Role) -> String {
    t.c.join(&t.admin, &t.org, token, role).await
}

/// A valid body for each operation that takes one.
fn body(op: &str) -> Option<Value> {
    Some(match op {
        "update_member" => json!({"role": "viewer"}),
        "create_invite" => json!({"role": "viewer"}),
        "create_api_key" => json!({"name": "matrix", "role": "viewer"}),
        "create_cluster" => json!({"name": format!("m-{}", uuid::Uuid::new_v4().simple()),
                                   "capacity": {"cpu_millis": 10, "memory_mib": 0, "gpus": 0}}),
        "update_cluster" => json!({"preemption": false}),
        "create_agent_token" => json!({"name": "matrix"}),
        "create_deployment" => {
            json!({"name": "m", "image": "nginx", "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}})
        }
        "update_deployment" => json!({"priority": 0}),
        "finish_deployment" => json!({"outcome": "succeeded"}),
        _ => return None,
    })
}

#[tokio::test]
async fn every_operation_answers_every_kind_of_caller_as_the_policy_table_says() {
    let w = World::new().await;
    let doc = Client::new()
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let op_id = op["operationId"].as_str().expect("operationId");
            let Some(role) = op["x-berth-role"].as_str() else {
                continue; // outside any organization
            };
            let min_role = Role::parse(role).expect("x-berth-role is a role");
            let user_only = op["x-berth-user-only"]
                .as_bool()
                .expect("x-berth-user-only");
            for (who, token) in &w.tokens {
                let path = w.path(op_id, template).await;
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let r = if op_id == "watch_cluster" {
                    // A stream that does not end: its status is the answer.
                    crate::watch::status(&w.t.c, token, &path).await
                } else {
                    w.t.c.call(m, &path, Some(token), body(op_id)).await
                };
                let expected_ok = match who {
                    Who::Member(role) => *role >= min_role,
                    Who::Key(role) => *role >= min_role && !user_only,
                    Who::Outsider => false,
                };
                match (who, expected_ok) {
                    (_, true) => assert!(
                        r.status.is_success(),
                        "{who:?} {method} {path} ({op_id}): {} {}",
                        r.status,
                        r.body
                    ),
                    (Who::Outsider, false) => assert_eq!(
                        r.status,
                        StatusCode::NOT_FOUND,
                        "{who:?} {op_id}: {}",
                        r.body
                    ),
                    (_, false) => assert_eq!(
                        r.status,
                        StatusCode::FORBIDDEN,
                        "{who:?} {op_id}: {}",
                        r.body
                    ),
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 29 * 7, "{checked} cases");
}

#[tokio::test]
async fn api_keys_cannot_act_as_users() {
    let w = World::new().await;
    let key = &w
        .tokens
        .iter()
        .find(|(who, _)| matches!(who, Who::Key(Role::Admin)))
        .expect("key")
        .1;
    for (method, path, body) in [
        (Method::GET, "/v1/me", None),
        (Method::GET, "/v1/orgs", None),
        (Method::POST, "/v1/orgs", Some(json!({"name": "x"}))),
        (
            Method::POST,
            "/v1/invites/accept",
            Some(json!({"code": "bic_x"})),
        ),
    ] {
        let r = w.t.c.call(method, path, Some(key), body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
}
