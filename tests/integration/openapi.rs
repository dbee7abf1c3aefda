//! The OpenAPI document: every route, the policy each declares, schemas that say what
//! validation enforces.

use axum::http::{Method, StatusCode};
use berth::domain::policy::Role;
use serde_json::{json, Value};

use crate::support::TestApp;

/// The document as the app serves it (no database needed).
async fn document() -> serde_json::Value {
    let app = TestApp::on_database("postgres://unused:x@127.0.0.1:1/none");
    let r = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    r.body
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops
}

/// The router and the document are built from the same registrations (`router.rs`), so the
/// list of routes is the document's: each documented operation must be served (not the 404
/// fallback), and the contract's routes are all there.
#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_operation_is_routed() {
    let app = TestApp::on_database("postgres://unused:x@127.0.0.1:1/none");
    let doc = document().await;
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    let ops = operations(&doc);
    assert!(ops.len() >= 34, "{} operations", ops.len());
    for (method, path, _) in &ops {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let r = app.call(m, path, None, None).await;
        assert_ne!(
            r.body["detail"], "no such route",
            "{method} {path} is documented but not routed"
        );
    }
}

/// The checklist of a new endpoint, enforced: an operation on an organization's resources
/// (its path names an organization, a cluster or a deployment) declares its `Action` beside
/// its route, which the document publishes with the least role; no other operation does.
#[tokio::test]
async fn every_organization_operation_declares_its_action() {
    let doc = document().await;
    let mut declared = 0;
    for (method, path, op) in operations(&doc) {
        let inside = ["{org_id}", "{cluster_id}", "{deployment_id}"]
            .iter()
            .any(|p| path.contains(p));
        let role = op["x-berth-role"].as_str();
        assert_eq!(
            role.is_some(),
            inside,
            "{method} {path}: x-berth-role {role:?}"
        );
        if let Some(role) = role {
            assert!(Role::parse(role).is_some(), "{method} {path}: {role}");
            assert!(op["x-berth-action"].is_string(), "{method} {path}");
            assert!(op["x-berth-user-only"].is_boolean(), "{method} {path}");
            declared += 1;
        }
    }
    assert_eq!(declared, 29);
}

/// A list's items are the resource's own schema, referenced: a generated client gets one
/// model per resource (not `Cluster` and an inlined `PagedClusterItemsItem`).
#[tokio::test]
async fn list_items_reference_their_schema() {
    let doc = document().await;
    let mut lists = 0;
    for (method, path, op) in operations(&doc) {
        let Some(schema) = op["responses"]["200"]["content"]["application/json"].get("schema")
        else {
            continue;
        };
        let schema = resolve(&doc, schema);
        let Some(items) = schema["properties"].get("items") else {
            continue;
        };
        let item = &items["items"];
        assert!(
            item["$ref"].is_string(),
            "{method} {path}: list items are inlined: {item}"
        );
        lists += 1;
    }
    assert_eq!(lists, 9);
}

/// The JWKS answer is described: a set of Ed25519 keys.
#[tokio::test]
async fn the_jwks_answer_has_a_schema() {
    let doc = document().await;
    let schema = &doc["paths"]["/.well-known/jwks.json"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let schema = resolve(&doc, schema);
    assert_eq!(schema["required"], json!(["keys"]), "{schema}");
    let key = resolve(&doc, &schema["properties"]["keys"]["items"]);
    for field in ["kty", "crv", "x", "kid"] {
        assert!(key["properties"].get(field).is_some(), "{field}: {key}");
    }
}

/// A schema, or the component it references.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// What every route shares is documented on every route (scripts/fuzz.sh checks the
/// answers against it): problem bodies as application/problem+json, 401 where a token is
/// needed, 400/413/415/422 where a JSON body is read.
#[tokio::test]
async fn every_operation_documents_the_shared_problems() {
    let doc = document().await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
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
