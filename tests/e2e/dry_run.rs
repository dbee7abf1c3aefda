//! Dry runs (`POST …/deployments?dry_run=true`) through the real Worker and the cluster's
//! Durable Object: each answer is what the real submission then does, and nothing is written.

use berth::domain::policy::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduling::Team;
use crate::support::{database, request};

fn job(name: &str, cpu: i64, priority: i64) -> Value {
    json!({"name": name, "image": "ghcr.io/acme/job:1", "priority": priority,
        "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}})
}

/// Deployments, events and idempotency keys the cluster has, as stored.
async fn written(cluster: &str) -> (i64, i64, i64) {
    let db = database().await;
    let id: uuid::Uuid = cluster.parse().expect("uuid");
    let r = db
        .query_one(
            "select (select count(*) from deployments where cluster_id = $1), \
               (select count(*) from deployment_events where cluster_id = $1), \
               (select count(*) from deployments where cluster_id = $1 and idempotency_key is not null)",
            &[&id],
        )
        .await
        .expect("counts");
    (r.get(0), r.get(1), r.get(2))
}

async fn dry(t: &Team, token: &str, cluster: &str, body: Value) -> crate::support::Reply {
    t.c.call(
        Method::POST,
        &format!("/v1/clusters/{cluster}/deployments?dry_run=true"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_dry_run_answers_what_the_submission_then_does_and_writes_nothing() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, true).await;

    // Room enough: admitted, evicting nothing.
    let before = written(&cluster).await;
    let r = dry(&t, &t.admin, &cluster, job("a", 600, 100)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"outcome": "admitted", "preempts": []}));
    assert_eq!(written(&cluster).await, before, "nothing written");
    let a = t.submit(&cluster, job("a", 600, 100)).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["status"], "running");
    let a = a.body["id"].as_str().expect("id").to_string();

    // No room, no preemption (same priority): queued first, waiting for capacity.
    let r = dry(&t, &t.admin, &cluster, job("b", 600, 100)).await;
    assert_eq!(
        r.body,
        json!({"outcome": "queued", "position": 1, "reason": "waiting_for_capacity", "preempts": []})
    );
    let b = t.submit(&cluster, job("b", 600, 100)).await;
    assert_eq!(
        (b.body["status"].as_str(), b.body["position"].as_u64()),
        (Some("queued"), Some(1))
    );

    // A higher priority would evict `a`, and then does.
    let before = written(&cluster).await;
    let r = dry(&t, &t.admin, &cluster, job("c", 500, 900)).await;
    assert_eq!(r.body, json!({"outcome": "admitted", "preempts": [a]}));
    assert_eq!(written(&cluster).await, before, "nothing written");
    let c = t.submit(&cluster, job("c", 500, 900)).await;
    assert_eq!(c.body["status"], "running");
    assert_eq!(t.status(&json!(a)).await, "queued", "preempted as foretold");

    // Larger than the cluster: never fits, and the submission is refused.
    let r = dry(&t, &t.admin, &cluster, job("huge", 2000, 500)).await;
    assert_eq!(r.body, json!({"outcome": "never_fits", "preempts": []}));
    assert_eq!(
        t.submit(&cluster, job("huge", 2000, 500)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // An Idempotency-Key on a dry run records nothing: the key is still free afterwards.
    let before = written(&cluster).await;
    let keyed = |path: String, body: Value| {
        let mut req = request(
            Method::POST,
            &path,
            Some(&t.admin),
            Some("application/json"),
            body.to_string().into_bytes(),
        );
        req.headers_mut().insert(
            "idempotency-key",
            reqwest::header::HeaderValue::from_static("dry-key"),
        );
        t.c.send(req)
    };
    let r = keyed(
        format!("/v1/clusters/{cluster}/deployments?dry_run=true"),
        job("k", 10, 500),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(written(&cluster).await, before);
    let r = keyed(
        format!("/v1/clusters/{cluster}/deployments"),
        job("other", 20, 500),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the key was not taken: {}",
        r.body
    );
}

#[tokio::test]
async fn a_dry_run_is_validated_and_authorized_like_a_submission() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let (_, viewer, _) = t.c.user().await;
    t.c.join(&t.admin, &t.org, &viewer, Role::Viewer).await;
    let (_, outsider, _) = t.c.user().await;
    let key = t.c.api_key(&t.admin, &t.org, "ci", Role::Developer).await;
    let key = key["secret"].as_str().expect("secret");
    let before = written(&cluster).await;

    assert_eq!(
        dry(&t, &viewer, &cluster, job("v", 10, 500)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        dry(&t, &outsider, &cluster, job("o", 10, 500)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        dry(&t, key, &cluster, job("k", 10, 500)).await.status,
        StatusCode::OK
    );
    let bad = dry(
        &t,
        &t.admin,
        &cluster,
        json!({"name": "", "image": "", "resources": {}}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let r =
        t.c.call(
            Method::POST,
            &format!("/v1/clusters/{cluster}/deployments?dry_run=maybe"),
            Some(&t.admin),
            Some(job("m", 10, 500)),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["field"], "dry_run");
    assert_eq!(
        written(&cluster).await,
        before,
        "nothing written by any of them"
    );
}
