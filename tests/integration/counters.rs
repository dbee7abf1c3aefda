//! The cluster counters on a real database: what each committed batch adds to
//! `cluster_counters` (admissions, preemptions, expirations, lost deployments, the queue
//! waits), that a batch deciding nothing writes nothing, that the migration's backfill
//! counts the history exactly as the batches do, and the scrape that exposes them.

use axum::http::{Method, StatusCode};
use berth::domain::ids::DeploymentId;
use berth::domain::policy::Role;
use berth::engine::Command;
use berth::http::Platform;
use chrono::Duration;
use serde_json::json;

use crate::common::sample;
use crate::placement::Fixture;

/// A cluster's counters row as stored: (admissions, preemptions, expirations, lost,
/// wait_buckets, wait_sum_micros).
type Row = (i64, i64, i64, i64, Vec<i64>, i64);

/// A cluster (`c`, preemption on) as the cluster's object drives it.
async fn fixture(cpu: i64) -> Fixture {
    Fixture::new(cpu, true).await
}

async fn db(f: &Fixture) -> tokio_postgres::Client {
    f.app.platform.connect().await.expect("connect")
}

/// The cluster's counters row, if it has one.
async fn row(f: &Fixture) -> Option<Row> {
    db(f)
        .await
        .query_opt(
            "select admissions, preemptions, expirations, lost, wait_buckets, wait_sum_micros \
             from cluster_counters where cluster_id = $1",
            &[&f.cluster.0],
        )
        .await
        .expect("counters")
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
}

async fn status(f: &Fixture, d: DeploymentId) -> String {
    f.get(d).await["status"]
        .as_str()
        .expect("status")
        .to_string()
}

/// Admissions at once, a preemption, an expiry that admits the victim again, and an agent
/// lost with what it ran (requeued and admitted again at once: the quota has room).
async fn history(f: &Fixture) {
    let rack = f.hello("rack-1", 4000, &[]).await;
    let low = f.submit("low", 1000, 100).await;
    let short = f
        .submit_body(
            json!({"name": "short", "image": "busybox:1", "priority": 200,
            "max_runtime_seconds": 60,
            "resources": {"cpu_millis": 1000, "memory_mib": 0, "gpus": 0}}),
        )
        .await;
    let high = f.submit("high", 1000, 900).await;
    assert_eq!(status(f, low).await, "queued", "preempted by high");
    assert_eq!(status(f, short).await, "running");
    assert_eq!(status(f, high).await, "running");
    f.app.advance(Duration::seconds(61));
    f.tick().await;
    assert_eq!(status(f, short).await, "failed", "expired");
    assert_eq!(status(f, low).await, "running", "admitted again");
    let since = f.connected_at().await;
    f.command(Command::AgentGone { agent: rack, since }).await;
    f.app.advance(Duration::seconds(61));
    f.tick().await;
    let lost: i64 = db(f)
        .await
        .query_one(
            "select count(*) from deployment_events where cluster_id = $1 and kind = 'lost'",
            &[&f.cluster.0],
        )
        .await
        .expect("lost")
        .get(0);
    assert_eq!(lost, 2, "high and low were lost with their agent");
}

#[tokio::test]
async fn every_batch_adds_what_it_decided_and_each_admission_s_wait() {
    let f = fixture(2000).await;
    history(&f).await;
    let (admissions, preemptions, expirations, lost, buckets, sum) = row(&f).await.expect("row");
    // low, short and high at once; low again after the expiry; high and low after the loss.
    assert_eq!((admissions, preemptions, expirations, lost), (6, 1, 1, 2));
    // Three waited nothing (admitted in their submission's batch); low waited 61 s from its
    // submission (a requeued deployment counts from there), then 122 s, and high 122 s:
    // all within (60 s, 300 s].
    assert_eq!(buckets, [3, 0, 0, 0, 0, 0, 3, 0, 0, 0]);
    let (min, max) = (61 + 122 + 122, 61 + 122 + 122 + 3);
    assert!(
        (min * 1_000_000..max * 1_000_000).contains(&sum),
        "{sum} µs of waits"
    );
}

#[tokio::test]
async fn a_batch_that_decides_nothing_writes_no_counters() {
    let f = fixture(1000).await;
    let first = f.submit("first", 1000, 500).await;
    assert_eq!(row(&f).await.expect("row").0, 1);
    let version = || async {
        let row = db(&f)
            .await
            .query_one(
                "select xmin::text from cluster_counters where cluster_id = $1",
                &[&f.cluster.0],
            )
            .await
            .expect("xmin");
        row.get::<_, String>(0)
    };
    let before = version().await;
    let waiting = f.submit("waiting", 1000, 500).await;
    f.tick().await;
    let r = f
        .call(Method::GET, &format!("/v1/clusters/{}", f.cluster))
        .await;
    assert_eq!(r.body["usage"]["queued"], 1, "{}", r.body);
    assert_eq!(version().await, before, "the row was not written again");

    // The counters go with their cluster.
    for (d, verb) in [(waiting, "cancel"), (first, "stop")] {
        let r = f
            .call(Method::POST, &format!("/v1/deployments/{d}/{verb}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = f
        .call(Method::DELETE, &format!("/v1/clusters/{}", f.cluster))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(row(&f).await, None);
}

/// The migration's backfill, as it stands in the migration (its one statement after the
/// table).
fn backfill() -> &'static str {
    let migration = include_str!("../../migrations/20261202000010_cluster_counters.sql");
    let up = migration
        .split("-- migrate:down")
        .next()
        .expect("an up section");
    let start = up.find("with waits as").expect("the backfill statement");
    up[start..].trim()
}

#[tokio::test]
async fn the_migration_s_backfill_counts_the_history_as_the_batches_did() {
    let f = fixture(2000).await;
    history(&f).await;
    // A second cluster of another history, and one with none.
    let other = f
        .app
        .cluster(
            &f.admin,
            &f.org,
            json!({"name": "other", "capacity": {"cpu_millis": 10, "memory_mib": 0, "gpus": 0}}),
        )
        .await;
    f.app
        .cluster(
            &f.admin,
            &f.org,
            json!({"name": "empty", "capacity": {"cpu_millis": 10, "memory_mib": 0, "gpus": 0}}),
        )
        .await;
    let body = json!({"name": "x", "image": "busybox:1",
        "resources": {"cpu_millis": 10, "memory_mib": 0, "gpus": 0}});
    f.app.deploy(&f.admin, &other, body.clone()).await;
    f.app.deploy(&f.admin, &other, body).await;
    let db = db(&f).await;
    let all = "select cluster_id, admissions, preemptions, expirations, lost, wait_buckets, \
               wait_sum_micros from cluster_counters order by cluster_id";
    let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<(uuid::Uuid, Row)> {
        rows.iter()
            .map(|r| {
                (
                    r.get(0),
                    (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
                )
            })
            .collect()
    };
    let counted = rows(db.query(all, &[]).await.expect("counters"));
    assert_eq!(counted.len(), 2, "the empty cluster has no row");
    db.batch_execute("delete from cluster_counters")
        .await
        .expect("delete");
    db.batch_execute(backfill()).await.expect("backfill");
    let backfilled = rows(db.query(all, &[]).await.expect("counters"));
    assert_eq!(backfilled, counted);
}

#[tokio::test]
async fn the_scrape_shows_every_cluster_s_figures_to_every_member_and_key() {
    let f = fixture(2000).await;
    history(&f).await;
    let (viewer, _) = f.app.user_as("viewer@example.com").await;
    f.app.join(&f.admin, &f.org, &viewer, Role::Viewer).await;
    let key = f
        .app
        .api_key(&f.admin, &f.org, "prometheus", Role::Viewer)
        .await;
    let key = key["secret"].as_str().expect("secret");
    let text = f.app.metrics(&viewer, &f.org).await;
    assert_eq!(f.app.metrics(key, &f.org).await, text);

    let c = f.cluster;
    let usage = f.call(Method::GET, &format!("/v1/clusters/{c}")).await.body["usage"].clone();
    let labels =
        |resource: &str| format!(r#"{{cluster_id="{c}",cluster="c",resource="{resource}"}}"#);
    for resource in ["cpu_millis", "memory_mib", "gpus"] {
        for (family, field) in [
            ("berth_cluster_capacity", "capacity"),
            ("berth_cluster_allocated", "allocated"),
            ("berth_cluster_queued_demand", "queued_demand"),
        ] {
            let value = sample(&text, &format!("{family}{}", labels(resource)));
            assert_eq!(
                Some(value as i64),
                usage[field][resource].as_i64(),
                "{family} {resource}"
            );
        }
    }
    let id = format!(r#"{{cluster_id="{c}"}}"#);
    for (family, value) in [
        ("berth_admissions_total", 6.0),
        ("berth_preemptions_total", 1.0),
        ("berth_expirations_total", 1.0),
        ("berth_lost_total", 2.0),
        ("berth_queue_wait_seconds_count", 6.0),
        ("berth_agents_connected", 0.0),
    ] {
        assert_eq!(sample(&text, &format!("{family}{id}")), value, "{family}");
    }
    let status = |s: &str| {
        sample(
            &text,
            &format!(r#"berth_deployments{{cluster_id="{c}",status="{s}"}}"#),
        )
    };
    assert_eq!(status("running"), 2.0);
    assert_eq!(status("failed"), 1.0);
    assert_eq!(status("cancelled"), 0.0, "every status, 0 included");
    assert_eq!(
        sample(
            &text,
            &format!(r#"berth_queue_wait_seconds_bucket{{cluster_id="{c}",le="0.1"}}"#)
        ),
        3.0
    );

    // An outsider sees nothing; no credential, 401.
    let (outsider, _) = f.app.user_as("outsider@example.com").await;
    let path = format!("/v1/orgs/{}/metrics", f.org);
    let r = f.app.call(Method::GET, &path, Some(&outsider), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = f.app.call(Method::GET, &path, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
}
