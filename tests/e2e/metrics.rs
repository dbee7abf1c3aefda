//! An organization's Prometheus metrics through the real Worker: what a viewer and an API
//! key scrape (checked by `promtool check metrics`), the gauges against the API's usage of
//! each cluster, the counters and the wait histogram moving with admissions and preemptions
//! and surviving a restart, and who may not scrape.

use berth::domain::policy::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::sample;
use crate::scheduling::Team;

/// The gauges of `cluster` in `text` against its usage as `GET /v1/clusters/{id}` answers it
/// now: capacity, allocated and queued demand per resource, running and queued deployments,
/// agents connected.
async fn matches_usage(t: &Team, text: &str, cluster: &str) {
    let c = t.get(&format!("/v1/clusters/{cluster}")).await;
    let (name, usage) = (c["name"].as_str().expect("name"), &c["usage"]);
    for resource in ["cpu_millis", "memory_mib", "gpus"] {
        for (family, field) in [
            ("berth_cluster_capacity", "capacity"),
            ("berth_cluster_allocated", "allocated"),
            ("berth_cluster_queued_demand", "queued_demand"),
        ] {
            let series = format!(
                r#"{family}{{cluster_id="{cluster}",cluster="{name}",resource="{resource}"}}"#
            );
            assert_eq!(
                Some(sample(text, &series) as i64),
                usage[field][resource].as_i64(),
                "{series}"
            );
        }
    }
    for status in ["running", "queued"] {
        let series = format!(r#"berth_deployments{{cluster_id="{cluster}",status="{status}"}}"#);
        assert_eq!(
            Some(sample(text, &series) as i64),
            usage[status].as_i64(),
            "{series}"
        );
    }
    let series = format!(r#"berth_agents_connected{{cluster_id="{cluster}"}}"#);
    assert_eq!(
        Some(sample(text, &series) as i64),
        usage["agents_connected"].as_i64()
    );
}

/// The counters of `cluster` in `text`: (admissions, preemptions, expirations, lost, the
/// wait histogram's count).
fn counters(text: &str, cluster: &str) -> [i64; 5] {
    [
        "berth_admissions_total",
        "berth_preemptions_total",
        "berth_expirations_total",
        "berth_lost_total",
        "berth_queue_wait_seconds_count",
    ]
    .map(|family| sample(text, &format!(r#"{family}{{cluster_id="{cluster}"}}"#)) as i64)
}

async fn stop(t: &Team, d: &Value) {
    let path = format!("/v1/deployments/{}/stop", d["id"].as_str().expect("id"));
    let r = t.c.call(Method::POST, &path, Some(&t.admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn viewers_and_api_keys_scrape_every_cluster_s_gauges_counters_and_waits() {
    let t = Team::new().await;
    let (_, viewer, _) = t.c.user().await;
    t.c.join(&t.admin, &t.org, &viewer, Role::Viewer).await;
    let key =
        t.c.api_key(&t.admin, &t.org, "prometheus", Role::Viewer)
            .await;
    let key = key["secret"].as_str().expect("secret").to_string();
    let gpu = t.cluster(2000, 8192, 2, true).await;
    let small = t.cluster(10, 0, 0, false).await;

    let text = t.c.metrics(&viewer, &t.org).await;
    assert_eq!(counters(&text, &gpu), [0; 5], "nothing decided yet");
    let cancelled = format!(r#"berth_deployments{{cluster_id="{gpu}",status="cancelled"}}"#);
    assert_eq!(sample(&text, &cancelled), 0.0, "every status, 0 included");
    matches_usage(&t, &text, &gpu).await;

    let low = t.cpu_job(&gpu, "low", 1000, 100).await;
    t.cpu_job(&gpu, "mid", 1000, 200).await;
    t.cpu_job(&small, "fits", 10, 500).await;
    t.cpu_job(&small, "waits", 10, 500).await;
    let text = t.c.metrics(&key, &t.org).await;
    assert_eq!(counters(&text, &gpu), [2, 0, 0, 0, 2]);
    assert_eq!(counters(&text, &small), [1, 0, 0, 0, 1]);

    // A higher priority evicts `low`, which waits again.
    let high = t.cpu_job(&gpu, "high", 1000, 900).await;
    assert_eq!(t.status(&low["id"]).await, "queued");
    let text = t.c.metrics(&viewer, &t.org).await;
    assert_eq!(counters(&text, &gpu), [3, 1, 0, 0, 3]);
    // Admitted in their submission's batch: none waited.
    let quick = format!(r#"berth_queue_wait_seconds_bucket{{cluster_id="{gpu}",le="0.1"}}"#);
    assert_eq!(sample(&text, &quick), 3.0);
    for cluster in [&gpu, &small] {
        matches_usage(&t, &text, cluster).await;
    }

    // Room again: `low` is admitted a second time, its wait counted from its submission.
    stop(&t, &high).await;
    assert_eq!(t.status(&low["id"]).await, "running");
    let text = t.c.metrics(&key, &t.org).await;
    assert_eq!(counters(&text, &gpu), [4, 1, 0, 0, 4]);
    let sum = sample(
        &text,
        &format!(r#"berth_queue_wait_seconds_sum{{cluster_id="{gpu}"}}"#),
    );
    assert!(sum > 0.0, "low waited since its submission: {sum} s");
    matches_usage(&t, &text, &gpu).await;
    let stopped = format!(r#"berth_deployments{{cluster_id="{gpu}",status="stopped"}}"#);
    assert_eq!(sample(&text, &stopped), 1.0);
}

#[tokio::test]
async fn outsiders_find_no_metrics_and_a_scrape_needs_a_credential() {
    let t = Team::new().await;
    t.cluster(10, 0, 0, false).await;
    let (_, outsider, _) = t.c.user().await;
    let other = t.c.org_id(&outsider, "Elsewhere").await;
    let key = t.c.api_key(&outsider, &other, "theirs", Role::Admin).await;
    let path = format!("/v1/orgs/{}/metrics", t.org);
    for token in [outsider.as_str(), key["secret"].as_str().expect("secret")] {
        let r = t.c.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    }
    let r = t.c.call(Method::GET, &path, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    // An organization without clusters has no samples, which promtool accepts too.
    assert_eq!(t.c.metrics(&outsider, &other).await, "");
}

#[tokio::test]
async fn metrics_counters_survive_a_restart_of_the_server() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, true).await;
    t.cpu_job(&cluster, "low", 1000, 100).await;
    t.cpu_job(&cluster, "high", 1000, 900).await;
    let before = t.c.metrics(&t.admin, &t.org).await;
    assert_eq!(counters(&before, &cluster), [2, 1, 0, 0, 2]);
    crate::support::restart_server().await;
    let after = t.c.metrics(&t.admin, &t.org).await;
    assert_eq!(after, before, "the same scrape from a new object");
    t.cpu_job(&cluster, "higher", 1000, 1000).await;
    let text = t.c.metrics(&t.admin, &t.org).await;
    assert_eq!(counters(&text, &cluster), [3, 2, 0, 0, 3]);
}
