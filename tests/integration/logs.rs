//! One structured line per request: its id (the edge's `cf-ray`, or a generated one, echoed
//! as `x-request-id`), method, route template, status, duration and kind of caller.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{request, TestApp};

fn lines(app: &TestApp) -> Vec<Value> {
    app.platform
        .logs
        .lock()
        .expect("lock")
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// An app with an admin (its token) and a cluster of theirs (its id), its log cleared.
async fn with_a_cluster() -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("ada@example.com").await;
    let org = app.org_id(&admin, "Acme").await;
    let body = json!({"name": "c", "capacity": {"cpu_millis": 1000, "memory_mib": 0, "gpus": 0}});
    let cluster = app.cluster(&admin, &org, body).await;
    app.platform.logs.lock().expect("lock").clear();
    (app, admin, cluster)
}

#[tokio::test]
async fn every_request_is_one_json_line_with_its_id_route_status_and_caller() {
    let (app, admin, cluster) = with_a_cluster().await;

    let mut req = request(
        Method::GET,
        &format!("/v1/clusters/{cluster}"),
        Some(&admin),
        None,
        vec![],
    );
    req.headers_mut()
        .insert("cf-ray", "8f1c2a3b4c5d6e7f-AMS".parse().expect("header"));
    let r = app.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-request-id"], "8f1c2a3b4c5d6e7f-AMS");
    let r = app.call(Method::GET, "/v1/nowhere", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let generated = r.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    let logged: Vec<Value> = lines(&app)
        .into_iter()
        .filter(|l| l["kind"] == "request")
        .collect();
    assert_eq!(logged.len(), 2, "{logged:#?}");
    let one = &logged[0];
    assert_eq!(
        (
            &one["kind"],
            &one["request_id"],
            &one["method"],
            &one["route"],
            &one["status"],
            &one["caller"]
        ),
        (
            &json!("request"),
            &json!("8f1c2a3b4c5d6e7f-AMS"),
            &json!("GET"),
            &json!("/v1/clusters/{cluster_id}"),
            &json!(200),
            &json!("user")
        )
    );
    assert!(one["duration_ms"].as_f64().expect("a duration") >= 0.0);
    let two = &logged[1];
    assert_eq!(
        (
            &two["request_id"],
            &two["route"],
            &two["status"],
            &two["caller"]
        ),
        (
            &json!(generated),
            &Value::Null,
            &json!(404),
            &json!("anonymous")
        )
    );
}

#[tokio::test]
async fn every_batch_is_one_json_line_with_what_it_decided() {
    let (app, admin, cluster) = with_a_cluster().await;
    let job = json!({"name": "j", "image": "busybox:1",
        "resources": {"cpu_millis": 1000, "memory_mib": 0, "gpus": 0}});
    let r = app.deploy(&admin, &cluster, job).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let batches: Vec<Value> = lines(&app)
        .into_iter()
        .filter(|l| l["kind"] == "batch")
        .collect();
    assert_eq!(batches.len(), 1, "{batches:#?}");
    let b = &batches[0];
    assert_eq!(
        (
            &b["cluster"],
            &b["commands"],
            &b["committed"],
            &b["admitted"],
            &b["preempted"]
        ),
        (
            &json!(cluster),
            &json!(1),
            &json!(true),
            &json!(1),
            &json!(0)
        )
    );
    assert!(b["duration_ms"].as_f64().expect("a duration") >= 0.0);
}
