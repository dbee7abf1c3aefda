//! Deployment dependencies (`depends_on`) through the router and the engine, on a real
//! database: waiting, release on success, cancel naming the dependency on failure, stop,
//! cancel and expiry, the cascade, across clusters (the in-process platform wakes the other
//! cluster as the object does), the sweep catching a lost wake-up, and the 422s.

use std::sync::atomic::Ordering;

use axum::http::{Method, StatusCode};
use berth::db::clusters;
use berth::domain::ids::ClusterId;
use berth::engine::Command;
use berth::http::Platform;
use chrono::Duration;
use serde_json::{json, Value};

use crate::common::kinds;
use crate::scheduling::{cpu_cluster, id, Fixture};

/// What these tests add to the scheduling tests' fixture.
impl Fixture {
    /// Submits `name` asking for `cpu`, depending on `after`.
    async fn submit_after(&self, cluster: &str, name: &str, cpu: i64, after: &[&Value]) -> Value {
        self.submit_after_with(cluster, name, cpu, after, json!({}))
            .await
    }

    /// The same with `extra` fields.
    async fn submit_after_with(
        &self,
        cluster: &str,
        name: &str,
        cpu: i64,
        after: &[&Value],
        extra: Value,
    ) -> Value {
        let mut body = json!({"name": name, "image": "ghcr.io/acme/job:1",
            "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0},
            "depends_on": after.iter().map(|d| id(d)).collect::<Vec<_>>()});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = self.submit_raw(cluster, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    async fn cpu(&self, cpu: i64, queueing: &str) -> String {
        self.cluster(cpu_cluster(cpu, queueing, false)).await
    }

    /// Ends a running deployment as succeeded or failed.
    async fn finish(&self, d: &Value, outcome: &str) {
        let path = format!("/v1/deployments/{}/finish", id(d));
        let r = self.post(&path, Some(json!({"outcome": outcome}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// The queue of `cluster`, as (name, position, reason).
    async fn queue(&self, cluster: &str) -> Vec<(String, u64, String)> {
        let q = self.get(&format!("/v1/clusters/{cluster}/queue")).await;
        q["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().expect("name").to_string(),
                    e["position"].as_u64().expect("position"),
                    e["reason"].as_str().expect("reason").to_string(),
                )
            })
            .collect()
    }

    /// The last event of a deployment: (kind, reason, by_deployment).
    async fn last_event(&self, d: &Value) -> (String, Value, Value) {
        let d = self.deployment(d).await;
        let e = d["events"]
            .as_array()
            .expect("events")
            .last()
            .expect("one")
            .clone();
        (
            e["kind"].as_str().expect("kind").to_string(),
            e["reason"].clone(),
            e["by_deployment"].clone(),
        )
    }

    async fn tick(&self, cluster: &str) {
        let c = ClusterId::parse(cluster).expect("id");
        self.app
            .platform
            .cluster_command(c, Command::TICK)
            .await
            .expect("tick");
    }
}

#[tokio::test]
async fn a_dependent_waits_behind_the_queue_and_runs_once_its_dependency_succeeds() {
    let f = Fixture::new().await;
    let c = f.cpu(1000, "strict").await;
    let a = f.submit_after(&c, "a", 400, &[]).await;
    assert_eq!(a["status"], "running");
    // It would fit and outranks everything: held, it is no candidate, and it does not
    // block the strict queue's head either.
    let b = f
        .submit_after_with(&c, "b", 100, &[&a], json!({"priority": 1000}))
        .await;
    assert_eq!(
        (b["status"].as_str(), b["position"].as_u64()),
        (Some("queued"), Some(1))
    );
    assert_eq!(b["depends_on"], json!([id(&a)]));
    let big = f.submit_after(&c, "big", 900, &[]).await;
    let small = f.submit_after(&c, "small", 100, &[]).await;
    assert_eq!(small["status"], "queued", "strict: behind the head");
    assert_eq!(
        f.queue(&c).await,
        vec![
            ("big".into(), 1, "waiting_for_capacity".into()),
            ("small".into(), 2, "blocked_behind_head".into()),
            ("b".into(), 3, "waiting_for_dependencies".into()),
        ]
    );
    let got = f.deployment(&b).await;
    assert_eq!(got["awaiting"], json!([id(&a)]));
    assert_eq!(got["position"], 3);
    let usage = &f.get(&format!("/v1/clusters/{c}")).await["usage"];
    assert_eq!(usage["queued"], 3, "held deployments are queued");

    // A dry run of another dependent says what it would meet.
    let dry = f
        .post(
            &format!("/v1/clusters/{c}/deployments?dry_run=true"),
            Some(json!({"name": "c", "image": "ghcr.io/acme/job:1",
                "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0},
                "depends_on": [id(&a)]})),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!(dry.body["outcome"], "queued");
    assert_eq!(dry.body["reason"], "waiting_for_dependencies");
    assert_eq!(dry.body["position"], 4);

    // a succeeds: b joins the queue from now, at its priority ahead of the rest, and runs.
    f.finish(&a, "succeeded").await;
    let b = f.deployment(&b).await;
    assert_eq!(b["status"], "running");
    assert_eq!(kinds(&b), ["created", "released", "admitted"]);
    let time = |v: &Value| -> chrono::DateTime<chrono::Utc> {
        v.as_str().expect("a time").parse().expect("a time")
    };
    assert!(time(&b["enqueued_at"]) > time(&b["created_at"]));
    assert_eq!(b["awaiting"], Value::Null, "no longer waits");
    // Then the strict head, in the room b leaves; small waits for what is left.
    assert_eq!(f.status(&big).await, "running");
    assert_eq!(
        f.queue(&c).await,
        vec![("small".into(), 1, "waiting_for_capacity".into())]
    );
}

#[tokio::test]
async fn a_dependent_is_cancelled_naming_its_dependency_when_it_fails_is_stopped_cancelled_or_expires(
) {
    let f = Fixture::new().await;
    let c = f.cpu(1000, "best_effort").await;
    for ending in ["failed", "stopped", "cancelled", "expired"] {
        let dep = match ending {
            // Queued behind a deployment that takes the whole cluster.
            "cancelled" => {
                let _hog = f.submit_after(&c, "hog", 1000, &[]).await;
                f.submit_after(&c, "dep", 1000, &[]).await
            }
            "expired" => {
                f.submit_after_with(&c, "dep", 100, &[], json!({"max_runtime_seconds": 60}))
                    .await
            }
            _ => f.submit_after(&c, "dep", 100, &[]).await,
        };
        let waiting = f.submit_after(&c, "waiting", 100, &[&dep]).await;
        assert_eq!(waiting["status"], "queued");
        match ending {
            "failed" => f.finish(&dep, "failed").await,
            "stopped" | "cancelled" => {
                let verb = if ending == "stopped" {
                    "stop"
                } else {
                    "cancel"
                };
                let r = f
                    .post(&format!("/v1/deployments/{}/{verb}", id(&dep)), None)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            }
            _ => {
                f.app.advance(Duration::seconds(61));
                f.tick(&c).await;
            }
        }
        let words = match ending {
            "stopped" => "was stopped",
            "cancelled" => "was cancelled",
            _ => "failed",
        };
        let d = f.deployment(&waiting).await;
        assert_eq!(d["status"], "cancelled", "{ending}");
        let reason = format!("dependency {} {words}", id(&dep));
        assert_eq!(d["message"], reason.as_str());
        assert_eq!(
            f.last_event(&waiting).await,
            ("cancelled".into(), json!(reason), json!(id(&dep)))
        );
        // Nothing of this round is left in the cluster.
        for r in f
            .get(&format!("/v1/clusters/{c}/deployments?status=running"))
            .await["items"]
            .as_array()
            .expect("items")
        {
            let path = format!("/v1/deployments/{}/stop", id(r));
            assert_eq!(f.post(&path, None).await.status, StatusCode::OK);
        }
    }
}

#[tokio::test]
async fn a_chain_across_clusters_runs_in_order_and_a_failure_cancels_down_the_chain() {
    let f = Fixture::new().await;
    let one = f.cpu(1000, "best_effort").await;
    let two = f.cpu(1000, "best_effort").await;
    // a (one) ← b (two) ← c (one): each cluster is woken by the other's batch.
    let a = f.submit_after(&one, "a", 500, &[]).await;
    let b = f.submit_after(&two, "b", 500, &[&a]).await;
    let c = f.submit_after(&one, "c", 500, &[&b]).await;
    assert_eq!(
        (b["status"].as_str(), c["status"].as_str()),
        (Some("queued"), Some("queued"))
    );
    f.finish(&a, "succeeded").await;
    assert_eq!(f.status(&b).await, "running", "cluster two was woken");
    assert_eq!(f.status(&c).await, "queued", "still waits for b");
    f.finish(&b, "succeeded").await;
    assert_eq!(f.status(&c).await, "running", "cluster one was woken");

    // x (one) ← y (two) ← z (one), and w (two) waits for both x and a (succeeded).
    let x = f.submit_after(&one, "x", 100, &[]).await;
    let y = f.submit_after(&two, "y", 100, &[&x]).await;
    let z = f.submit_after(&one, "z", 100, &[&y]).await;
    let w = f.submit_after(&two, "w", 100, &[&a, &x]).await;
    assert_eq!(f.deployment(&w).await["awaiting"], json!([id(&x)]));
    f.finish(&x, "failed").await;
    for (d, because, words) in [
        (&y, &x, "failed"),
        (&z, &y, "was cancelled"),
        (&w, &x, "failed"),
    ] {
        let got = f.deployment(d).await;
        assert_eq!(got["status"], "cancelled", "{}", got["name"]);
        assert_eq!(
            got["message"],
            format!("dependency {} {words}", id(because))
        );
    }
}

#[tokio::test]
async fn a_lost_wake_up_is_caught_by_the_sweep() {
    let f = Fixture::new().await;
    let one = f.cpu(1000, "best_effort").await;
    let two = f.cpu(1000, "best_effort").await;
    let a = f.submit_after(&one, "a", 500, &[]).await;
    let b = f.submit_after(&two, "b", 500, &[&a]).await;
    let failing = f.submit_after(&one, "failing", 100, &[]).await;
    let doomed = f.submit_after(&two, "doomed", 100, &[&failing]).await;
    f.app.platform.wakes_lost.store(true, Ordering::SeqCst);
    f.finish(&a, "succeeded").await;
    f.finish(&failing, "failed").await;
    assert_eq!(f.status(&b).await, "queued", "cluster two was not woken");
    assert_eq!(f.status(&doomed).await, "queued");

    // The sweep ticks every cluster with queued deployments: cluster two among them.
    let db = f.app.platform.connect().await.expect("db");
    let swept = clusters::needing_attention(&db, f.app.platform.now())
        .await
        .expect("sweep");
    let two_id = ClusterId::parse(&two).expect("id");
    assert!(swept.contains(&two_id));
    for cluster in swept {
        f.tick(&cluster.to_string()).await;
    }
    assert_eq!(f.status(&b).await, "running");
    let d = f.deployment(&doomed).await;
    assert_eq!(d["status"], "cancelled");
    assert_eq!(d["message"], format!("dependency {} failed", id(&failing)));
}

#[tokio::test]
async fn dependencies_that_can_never_be_met_are_422_every_one_listed_and_create_nothing() {
    let f = Fixture::new().await;
    let c = f.cpu(1000, "best_effort").await;
    let failed = f.submit_after(&c, "failed", 100, &[]).await;
    f.finish(&failed, "failed").await;
    let stopped = f.submit_after(&c, "stopped", 100, &[]).await;
    let r = f
        .post(&format!("/v1/deployments/{}/stop", id(&stopped)), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let succeeded = f.submit_after(&c, "ok", 100, &[]).await;
    f.finish(&succeeded, "succeeded").await;
    // Another organization's deployment reads as unknown.
    let (other, _) = f.app.user_as("other@example.com").await;
    let other_org = f.app.org_id(&other, "Other").await;
    let body =
        json!({"name": "theirs", "capacity": {"cpu_millis": 1000, "memory_mib": 0, "gpus": 0}});
    let theirs_cluster = f.app.cluster(&other, &other_org, body).await;
    let theirs = f
        .app
        .deploy(
            &other,
            &theirs_cluster,
            json!({"name": "t", "image": "nginx", "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}}),
        )
        .await
        .body;
    let unknown = uuid::Uuid::now_v7().to_string();
    let before = f.get(&format!("/v1/clusters/{c}/deployments")).await["items"]
        .as_array()
        .expect("items")
        .len();

    let r = f
        .submit_raw(
            &c,
            json!({"name": "x", "image": "nginx",
                "resources": {"cpu_millis": 5000, "memory_mib": 0, "gpus": 0},
                "depends_on": [id(&succeeded), unknown, id(&failed), id(&theirs), id(&stopped)]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let errors: Vec<(String, String)> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["field"].as_str().expect("field").to_string(),
                e["message"].as_str().expect("message").to_string(),
            )
        })
        .collect();
    let not_ours = "is not a deployment of this organization";
    assert_eq!(
        errors,
        vec![
            (
                "resources.cpu_millis".into(),
                "asks for 5000, more than the cluster's total of 1000: it could never run".into()
            ),
            ("depends_on".into(), format!("{unknown} {not_ours}")),
            (
                "depends_on".into(),
                format!("{} failed: it can never succeed", id(&failed))
            ),
            ("depends_on".into(), format!("{} {not_ours}", id(&theirs))),
            (
                "depends_on".into(),
                format!("{} was stopped: it can never succeed", id(&stopped))
            ),
        ]
    );
    // The same refusal for a dry run.
    let dry = f
        .post(
            &format!("/v1/clusters/{c}/deployments?dry_run=true"),
            Some(json!({"name": "x", "image": "nginx",
                "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0},
                "depends_on": [id(&failed)]})),
        )
        .await;
    assert_eq!(dry.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", dry.body);
    // Malformed: not ids, too many.
    let r = f
        .submit_raw(
            &c,
            json!({"name": "x", "image": "nginx",
                "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0},
                "depends_on": [id(&succeeded), "nope", 7]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["depends_on.1", "depends_on.2"]);
    let many: Vec<String> = (0..33).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let r = f
        .submit_raw(
            &c,
            json!({"name": "x", "image": "nginx",
                "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}, "depends_on": many}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["field"], "depends_on");
    let after = f.get(&format!("/v1/clusters/{c}/deployments")).await["items"]
        .as_array()
        .expect("items")
        .len();
    assert_eq!(after, before, "nothing was created");

    // Depending on one that succeeded (named twice) is no wait at all.
    let d = f
        .submit_after(&c, "after-ok", 100, &[&succeeded, &succeeded])
        .await;
    assert_eq!(d["status"], "running");
    assert_eq!(d["depends_on"], json!([id(&succeeded)]));
}

#[tokio::test]
async fn a_held_deployment_can_be_cancelled_or_reprioritised_and_a_replay_must_name_the_same_dependencies(
) {
    let f = Fixture::new().await;
    let c = f.cpu(1000, "best_effort").await;
    let a = f.submit_after(&c, "a", 1000, &[]).await;
    let h1 = f.submit_after(&c, "h1", 100, &[&a]).await;
    let h2 = f.submit_after(&c, "h2", 100, &[&a]).await;
    let queued = f.submit_after(&c, "q", 100, &[]).await;
    assert_eq!(
        f.queue(&c).await,
        vec![
            ("q".into(), 1, "waiting_for_capacity".into()),
            ("h1".into(), 2, "waiting_for_dependencies".into()),
            ("h2".into(), 3, "waiting_for_dependencies".into()),
        ]
    );
    let r = f
        .app
        .call(
            Method::PATCH,
            &format!("/v1/deployments/{}", id(&h2)),
            Some(&f.admin),
            Some(json!({"priority": 900})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["position"], 2, "held ones are ordered by priority");
    let r = f
        .post(&format!("/v1/deployments/{}/cancel", id(&h1)), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(f.last_event(&h1).await.1, "cancelled by a user");

    // A replay with the same key must name the same dependencies.
    let body = json!({"name": "k", "image": "nginx",
        "resources": {"cpu_millis": 100, "memory_mib": 0, "gpus": 0}, "depends_on": [id(&a)]});
    let first = f
        .post_with_key(
            &format!("/v1/clusters/{c}/deployments"),
            body.clone(),
            "key-1",
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = f
        .post_with_key(
            &format!("/v1/clusters/{c}/deployments"),
            body.clone(),
            "key-1",
        )
        .await;
    assert_eq!(
        (again.status, id(&again.body)),
        (StatusCode::CREATED, id(&first.body))
    );
    let mut other = body;
    other["depends_on"] = json!([]);
    let conflict = f
        .post_with_key(&format!("/v1/clusters/{c}/deployments"), other, "key-1")
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);

    f.finish(&a, "succeeded").await;
    assert_eq!(f.status(&h2).await, "running");
    assert_eq!(f.status(&queued).await, "running");
    assert_eq!(f.status(&first.body).await, "running");
}

#[tokio::test]
async fn a_cluster_whose_deployments_are_awaited_elsewhere_cannot_be_deleted() {
    let f = Fixture::new().await;
    let one = f.cpu(1000, "best_effort").await;
    let two = f.cpu(1000, "best_effort").await;
    let a = f.submit_after(&one, "a", 100, &[]).await;
    let x = f.submit_after(&two, "x", 100, &[]).await;
    let w = f.submit_after(&two, "w", 100, &[&a, &x]).await;
    f.finish(&a, "succeeded").await;
    // Nothing is queued or running on one, but w still names a: deleting one would make a
    // look gone and cancel w.
    let delete = |cluster: String| {
        let f = &f;
        async move {
            f.app
                .call(
                    Method::DELETE,
                    &format!("/v1/clusters/{cluster}"),
                    Some(&f.admin),
                    None,
                )
                .await
        }
    };
    let r = delete(one.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body["detail"]
        .as_str()
        .expect("detail")
        .contains("waiting for"));
    f.finish(&x, "succeeded").await;
    assert_eq!(f.status(&w).await, "running");
    assert_eq!(delete(one).await.status, StatusCode::NO_CONTENT);
}
