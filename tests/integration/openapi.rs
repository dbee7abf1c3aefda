//! The OpenAPI document covers every route of the contract.

use axum::http::{Method, StatusCode};

use crate::support::TestApp;

/// Every (method, path) of the API (docs/api.md); a route missing from the document
/// (or a document entry without a route) fails here.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("get", "/v1/me"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("post", "/v1/orgs"),
    ("get", "/v1/orgs"),
    ("get", "/v1/orgs/{org_id}"),
    ("get", "/v1/orgs/{org_id}/members"),
    ("patch", "/v1/orgs/{org_id}/members/{user_id}"),
    ("delete", "/v1/orgs/{org_id}/members/{user_id}"),
    ("post", "/v1/orgs/{org_id}/invites"),
    ("get", "/v1/orgs/{org_id}/invites"),
    ("delete", "/v1/orgs/{org_id}/invites/{invite_id}"),
    ("post", "/v1/invites/accept"),
    ("post", "/v1/orgs/{org_id}/api-keys"),
    ("get", "/v1/orgs/{org_id}/api-keys"),
    ("delete", "/v1/orgs/{org_id}/api-keys/{key_id}"),
    ("post", "/v1/orgs/{org_id}/clusters"),
    ("get", "/v1/orgs/{org_id}/clusters"),
    ("get", "/v1/clusters/{cluster_id}"),
    ("patch", "/v1/clusters/{cluster_id}"),
    ("delete", "/v1/clusters/{cluster_id}"),
    ("get", "/v1/clusters/{cluster_id}/queue"),
    ("post", "/v1/clusters/{cluster_id}/deployments"),
    ("get", "/v1/clusters/{cluster_id}/deployments"),
    ("get", "/v1/deployments/{deployment_id}"),
    ("patch", "/v1/deployments/{deployment_id}"),
    ("post", "/v1/deployments/{deployment_id}/cancel"),
    ("post", "/v1/deployments/{deployment_id}/stop"),
    ("post", "/v1/deployments/{deployment_id}/finish"),
];

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_routes() {
    let app = TestApp::on_database("postgres://unused:x@127.0.0.1:1/none");
    let r = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"]
        .as_str()
        .expect("version")
        .starts_with("3.1"));
    let mut documented = Vec::new();
    for (path, item) in r.body["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut expected: Vec<_> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected);
    // And every documented route is served (not the 404 fallback).
    for (method, path) in ROUTES {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let r = app.call(m, path, None, None).await;
        assert_ne!(
            r.status,
            StatusCode::NOT_FOUND,
            "{method} {path} is documented but not routed"
        );
    }
}

/// What every route shares is documented on every route (scripts/fuzz.sh checks the
/// answers against it): problem bodies as application/problem+json, 401 where a token is
/// needed, 400/413/415/422 where a JSON body is read.
#[tokio::test]
async fn every_operation_documents_the_shared_problems() {
    let app = TestApp::on_database("postgres://unused:x@127.0.0.1:1/none");
    let r = app.call(Method::GET, "/openapi.json", None, None).await;
    for (path, item) in r.body["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let responses = op["responses"].as_object().expect("responses");
            let has = |s: &str| responses.contains_key(s);
            let at = format!("{method} {path}");
            for (status, response) in responses {
                let Some(content) = response["content"].as_object() else {
                    continue;
                };
                let problem = content
                    .values()
                    .any(|c| c["schema"]["$ref"] == "#/components/schemas/Problem");
                if problem {
                    let media: Vec<_> = content.keys().collect();
                    assert_eq!(media, ["application/problem+json"], "{at} {status}");
                }
            }
            if op.get("security").is_some() {
                assert!(has("401"), "{at}: no 401");
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415", "422"] {
                    assert!(has(s), "{at}: no {s}");
                }
            }
        }
    }
}
