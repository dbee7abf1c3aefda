//! A number too large for a double (`1e999`) is valid JSON: in any numeric field of any
//! body it is an invalid value like any other, 422 naming the field, never 400.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::Client;

/// Stands for the huge number in a body built with `json!`, replaced in its text.
const HUGE: &str = "@HUGE@";

struct Setup {
    c: Client,
    admin: String,
    org: String,
    cluster: String,
    deployment: String,
}

fn id(r: &crate::support::Reply) -> String {
    r.body["id"].as_str().expect("id").to_string()
}

async fn setup() -> Setup {
    let c = Client::new();
    let (_, admin, _) = c.user().await;
    let org = c.org(&admin, "Numbers").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let capacity = json!({"cpu_millis": 1000, "memory_mib": 1024, "gpus": 0});
    let cluster = c
        .cluster(&admin, &org, json!({"name": "n", "capacity": capacity}))
        .await;
    let r = c.deploy(&admin, &cluster, deployment()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let deployment = id(&r);
    Setup {
        c,
        admin,
        org,
        cluster,
        deployment,
    }
}

fn deployment() -> Value {
    json!({
        "name": "n", "image": "ghcr.io/acme/n:1",
        "resources": {"cpu_millis": 100, "memory_mib": 64, "gpus": 0},
        "priority": 10, "max_runtime_seconds": 3600,
    })
}

/// `body` with the field at the dotted `path` set to [`HUGE`].
fn with_huge(mut body: Value, path: &str) -> Value {
    let mut at = &mut body;
    for part in path.split('.') {
        at = &mut at[part];
    }
    *at = Value::String(HUGE.into());
    body
}

/// Sends `body` with every [`HUGE`] written as `number`.
async fn send(
    s: &Setup,
    method: Method,
    path: &str,
    body: &Value,
    number: &str,
) -> (StatusCode, Vec<String>) {
    let text = body.to_string().replace(&format!("\"{HUGE}\""), number);
    let r =
        s.c.raw(
            method,
            path,
            Some(&s.admin),
            Some("application/json"),
            text.into_bytes(),
        )
        .await;
    let fields = r.body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().expect("field").to_string())
                .collect()
        })
        .unwrap_or_default();
    (r.status, fields)
}

#[tokio::test]
async fn every_numeric_field_of_every_body_names_a_huge_number_in_a_422() {
    let s = setup().await;
    let (org, cluster, dep) = (&s.org, &s.cluster, &s.deployment);
    let capacity = json!({"name": "m", "capacity": {"cpu_millis": 1, "memory_mib": 1, "gpus": 0}});
    let cases: Vec<(Method, String, Value, &[&str])> = vec![
        (
            Method::POST,
            format!("/v1/orgs/{org}/clusters"),
            capacity.clone(),
            &[
                "capacity.cpu_millis",
                "capacity.memory_mib",
                "capacity.gpus",
            ],
        ),
        (
            Method::PATCH,
            format!("/v1/clusters/{cluster}"),
            capacity,
            &[
                "capacity.cpu_millis",
                "capacity.memory_mib",
                "capacity.gpus",
            ],
        ),
        (
            Method::POST,
            format!("/v1/clusters/{cluster}/deployments"),
            deployment(),
            &[
                "resources.cpu_millis",
                "resources.memory_mib",
                "resources.gpus",
                "priority",
                "max_runtime_seconds",
            ],
        ),
        (
            Method::PATCH,
            format!("/v1/deployments/{dep}"),
            json!({"priority": 5}),
            &["priority"],
        ),
        (
            Method::POST,
            format!("/v1/orgs/{org}/invites"),
            json!({"role": "developer", "expires_in_seconds": 3600, "max_uses": 2}),
            &["expires_in_seconds", "max_uses"],
        ),
    ];
    for (method, path, body, fields) in &cases {
        for field in *fields {
            for number in ["1e999", "-1e999", "1E+400"] {
                let got = send(
                    &s,
                    method.clone(),
                    path,
                    &with_huge(body.clone(), field),
                    number,
                )
                .await;
                assert_eq!(
                    got,
                    (StatusCode::UNPROCESSABLE_ENTITY, vec![field.to_string()]),
                    "{method} {path} with {field} = {number}"
                );
            }
        }
        // Several at once: every one of them listed, as for any other invalid values.
        let mut all = body.clone();
        for field in *fields {
            all = with_huge(all, field);
        }
        let (status, mut got) = send(&s, method.clone(), path, &all, "1e999").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path}");
        got.sort();
        let mut want: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{method} {path}");
    }
    // Nothing changed: the cluster keeps its capacity, the deployment its priority.
    let r =
        s.c.call(
            Method::GET,
            &format!("/v1/clusters/{cluster}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(r.body["capacity"]["cpu_millis"], 1000, "{}", r.body);
    let r =
        s.c.call(
            Method::GET,
            &format!("/v1/deployments/{dep}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(r.body["priority"], 10, "{}", r.body);
}

#[tokio::test]
async fn malformed_json_beside_a_huge_number_is_still_400_naming_the_fault() {
    let s = setup().await;
    let path = format!("/v1/clusters/{}/deployments", s.cluster);
    let r =
        s.c.raw(
            Method::POST,
            &path,
            Some(&s.admin),
            Some("application/json"),
            br#"{"priority": 1e999,}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // The fault named is the comma (column 20), not the number.
    let detail = r.body["detail"].as_str().expect("detail");
    assert!(detail.ends_with("line 1 column 20"), "{detail}");
    assert!(!detail.contains("out of range"), "{detail}");
}
