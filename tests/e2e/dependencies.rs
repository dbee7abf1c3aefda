//! Deployment dependencies through the real Worker and its Durable Objects: a chain across
//! two clusters runs in order, the second cluster's object woken by the first's as soon as
//! the dependency ends (no cron minute involved: `wrangler dev` fires the cron only when a
//! test asks), and a failed dependency cancels its dependents in the other cluster too,
//! both seen on the waiting cluster's watch stream.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduling::Team;
use crate::watch::watch;

fn job(name: &str, cpu: i64, after: &[&str]) -> Value {
    json!({"name": name, "image": "ghcr.io/acme/job:1",
        "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}, "depends_on": after})
}

async fn submit(t: &Team, cluster: &str, body: Value) -> Value {
    let r = t.submit(cluster, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

fn id(d: &Value) -> &str {
    d["id"].as_str().expect("id")
}

async fn finish(t: &Team, d: &str, outcome: &str) {
    let r =
        t.c.call(
            Method::POST,
            &format!("/v1/deployments/{d}/finish"),
            Some(&t.admin),
            Some(json!({"outcome": outcome})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// Polls the deployment until its status is no longer `from`, for at most `within`.
async fn moved(t: &Team, d: &str, from: &str, within: Duration) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let got = t.get(&format!("/v1/deployments/{d}")).await;
        if got["status"] != from || started.elapsed() > within {
            return (got, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const PROMPTLY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_chain_across_two_clusters_runs_in_order() {
    let t = Team::new().await;
    let one = t.cluster(1000, 0, 0, false).await;
    let two = t.cluster(1000, 0, 0, false).await;
    let a = submit(&t, &one, job("a", 1000, &[])).await;
    assert_eq!(a["status"], "running");
    let b = submit(&t, &two, job("b", 1000, &[id(&a)])).await;
    assert_eq!(b["status"], "queued");
    assert_eq!(b["depends_on"], json!([id(&a)]));
    let queue = t.get(&format!("/v1/clusters/{two}/queue")).await;
    assert_eq!(queue["items"][0]["reason"], "waiting_for_dependencies");
    let mut w = watch(&t.c, &t.admin, &two).await;
    let (kind, _) = w.next(PROMPTLY).await.expect("snapshot");
    assert_eq!(kind, "snapshot");
    // Nothing moves b while a runs, not even a tick of its own cluster.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.status(&b["id"]).await, "queued");

    finish(&t, id(&a), "succeeded").await;
    let (b_now, took) = moved(&t, id(&b), "queued", PROMPTLY).await;
    assert_eq!(b_now["status"], "running", "{b_now}");
    assert!(took < PROMPTLY, "admitted after {took:?}");
    // Each frame shows the deployment as its batch left it: released and admitted at once.
    let released = w.deployment(id(&b), "released", PROMPTLY).await;
    assert_eq!(released["depends_on"], json!([id(&a)]));
    let admitted = w.deployment(id(&b), "admitted", PROMPTLY).await;
    assert_eq!(admitted["status"], "running");
    assert_eq!(
        crate::common::kinds(&b_now),
        ["created", "released", "admitted"]
    );
    assert!(time(&b_now["admitted_at"]) >= a_finished(&t, id(&a)).await);
}

/// A timestamp of an answer (compared as times: their text has 0 to 9 fractional digits).
fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("a time, not {v}"))
        .parse()
        .expect("a time")
}

async fn a_finished(t: &Team, d: &str) -> chrono::DateTime<chrono::Utc> {
    time(&t.get(&format!("/v1/deployments/{d}")).await["finished_at"])
}

#[tokio::test]
async fn a_failed_dependency_cancels_its_dependents_in_the_other_cluster_too() {
    let t = Team::new().await;
    let one = t.cluster(1000, 0, 0, false).await;
    let two = t.cluster(1000, 0, 0, false).await;
    // a (one) ← b (two) ← c (one): the failure crosses to two and back.
    let a = submit(&t, &one, job("a", 500, &[])).await;
    let b = submit(&t, &two, job("b", 500, &[id(&a)])).await;
    let c = submit(&t, &one, job("c", 500, &[id(&b)])).await;
    assert_eq!(c["status"], "queued", "c waits though it fits");
    let mut w = watch(&t.c, &t.admin, &two).await;
    assert_eq!(w.next(PROMPTLY).await.expect("snapshot").0, "snapshot");

    finish(&t, id(&a), "failed").await;
    let cancelled = w.deployment(id(&b), "cancelled", PROMPTLY).await;
    assert_eq!(cancelled["status"], "cancelled");
    let reason = format!("dependency {} failed", id(&a));
    assert_eq!(cancelled["message"], reason.as_str());
    let (c_now, took) = moved(&t, id(&c), "queued", PROMPTLY).await;
    assert_eq!(c_now["status"], "cancelled", "{c_now}");
    assert!(took < PROMPTLY);
    assert_eq!(
        c_now["message"],
        format!("dependency {} was cancelled", id(&b))
    );
    let last = c_now["events"].as_array().expect("events").last().cloned();
    let last = last.expect("an event");
    assert_eq!(
        (last["kind"].as_str(), last["by_deployment"].as_str()),
        (Some("cancelled"), Some(id(&b)))
    );
    // Both clusters are empty again.
    for cluster in [&one, &two] {
        let usage = &t.get(&format!("/v1/clusters/{cluster}")).await["usage"];
        assert_eq!(
            (usage["running"].as_i64(), usage["queued"].as_i64()),
            (Some(0), Some(0))
        );
    }
}
