//! The cluster counters on a real database: what each committed batch adds to
//! `cluster_counters` (admissions, preemptions, expirations, lost deployments, the queue
//! waits), that a batch deciding nothing writes nothing, that the migration's backfill
//! counts the history exactly as the batches do, and the scrape that exposes them.

use axum::http::{Method, StatusCode};
use berth::domain::agent::protocol::AgentInfo;
use berth::domain::ids::{AgentId, ClusterId};
use berth::domain::policy::Role;
use berth::domain::resources::Resources;
use berth::engine::{Command, Outcome};
use berth::http::Platform;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::common::sample;
use crate::support::TestApp;

struct Fixture {
    app: TestApp,
    admin: String,
    org: String,
    cluster: ClusterId,
}

/// A cluster's counters row as stored: (admissions, preemptions, expirations, lost,
/// wait_buckets, wait_sum_micros).
type Row = (i64, i64, i64, i64, Vec<i64>, i64);

impl Fixture {
    async fn new(cpu: i64) -> Self {
        let app = TestApp::spawn().await;
        let (admin, _) = app.user_as("admin@example.com").await;
        let org = app.org_id(&admin, "Acme").await;
        let body = json!({"name": "gpu-east", "preemption": true,
            "capacity": {"cpu_millis": cpu, "memory_mib": 1024, "gpus": 0}});
        let cluster = app.cluster(&admin, &org, body).await;
        let cluster = ClusterId::parse(&cluster).expect("id");
        Self {
            app,
            admin,
            org,
            cluster,
        }
    }

    async fn command(&self, cmd: Command) -> Outcome {
        self.app
            .platform
            .cluster_command(self.cluster, cmd)
            .await
            .expect("command")
            .outcome
    }

    async fn submit(&self, name: &str, cpu: i64, priority: i64, max_runtime: Option<i64>) -> Value {
        let mut body = json!({"name": name, "image": "busybox:1", "priority": priority,
            "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}});
        if let Some(s) = max_runtime {
            body["max_runtime_seconds"] = json!(s);
        }
        let r = self
            .app
            .deploy(&self.admin, &self.cluster.to_string(), body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    async fn hello(&self, name: &str, cpu: i64) -> AgentId {
        let hello = Command::AgentHello {
            token: None,
            info: AgentInfo {
                name: name.into(),
                version: "test".into(),
            },
            capacity: Resources::new(cpu, 1024, 0),
            running: vec![],
            exited: vec![],
        };
        match self.command(hello).await {
            Outcome::Agent { agent } => agent.id,
            other => panic!("not an agent: {other:?}"),
        }
    }

    async fn db(&self) -> tokio_postgres::Client {
        self.app.platform.connect().await.expect("connect")
    }

    /// The cluster's counters row, if it has one.
    async fn row(&self) -> Option<Row> {
        self.db()
            .await
            .query_opt(
                "select admissions, preemptions, expirations, lost, wait_buckets, wait_sum_micros \
                 from cluster_counters where cluster_id = $1",
                &[&self.cluster.0],
            )
            .await
            .expect("counters")
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    }

    async fn status(&self, d: &Value) -> String {
        let r = self
            .app
            .call(
                Method::GET,
                &format!("/v1/deployments/{}", d["id"].as_str().expect("id")),
                Some(&self.admin),
                None,
            )
            .await;
        r.body["status"].as_str().expect("status").to_string()
    }

    /// Admissions at once, a preemption, an expiry that admits the victim again, and an agent
    /// lost with what it ran (requeued and admitted again at once: the quota has room).
    async fn history(&self) {
        let rack = self.hello("rack-1", 4000).await;
        let low = self.submit("low", 1000, 100, None).await;
        let short = self.submit("short", 1000, 200, Some(60)).await;
        let high = self.submit("high", 1000, 900, None).await;
        assert_eq!(self.status(&low).await, "queued", "preempted by high");
        assert_eq!(self.status(&short).await, "running");
        assert_eq!(self.status(&high).await, "running");
        self.app.advance(Duration::seconds(61));
        self.command(Command::TICK).await;
        assert_eq!(self.status(&short).await, "failed", "expired");
        assert_eq!(self.status(&low).await, "running", "admitted again");
        let since = self.connected_at().await;
        self.command(Command::AgentGone { agent: rack, since })
            .await;
        self.app.advance(Duration::seconds(61));
        self.command(Command::TICK).await;
        let db = self.db().await;
        let lost: i64 = db
            .query_one(
                "select count(*) from deployment_events where cluster_id = $1 and kind = 'lost'",
                &[&self.cluster.0],
            )
            .await
            .expect("lost")
            .get(0);
        assert_eq!(lost, 2, "high and low were lost with their agent");
    }

    async fn connected_at(&self) -> DateTime<Utc> {
        let r = self
            .app
            .call(
                Method::GET,
                &format!("/v1/clusters/{}/agents", self.cluster),
                Some(&self.admin),
                None,
            )
            .await;
        r.body["items"][0]["connected_at"]
            .as_str()
            .expect("an agent")
            .parse()
            .expect("time")
    }
}

#[tokio::test]
async fn every_batch_adds_what_it_decided_and_each_admission_s_wait() {
    let f = Fixture::new(2000).await;
    f.history().await;
    let (admissions, preemptions, expirations, lost, buckets, sum) = f.row().await.expect("row");
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
    let f = Fixture::new(1000).await;
    let first = f.submit("first", 1000, 500, None).await;
    assert_eq!(f.row().await.expect("row").0, 1);
    let version = || async {
        let row = f
            .db()
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
    let waiting = f.submit("waiting", 1000, 500, None).await;
    f.command(Command::TICK).await;
    let r = f
        .app
        .call(
            Method::GET,
            &format!("/v1/clusters/{}", f.cluster),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(r.body["usage"]["queued"], 1, "{}", r.body);
    assert_eq!(version().await, before, "the row was not written again");

    // The counters go with their cluster.
    for (d, verb) in [(&waiting, "cancel"), (&first, "stop")] {
        let path = format!("/v1/deployments/{}/{verb}", d["id"].as_str().expect("id"));
        let r = f.app.call(Method::POST, &path, Some(&f.admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = f
        .app
        .call(
            Method::DELETE,
            &format!("/v1/clusters/{}", f.cluster),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(f.row().await, None);
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
    let f = Fixture::new(2000).await;
    f.history().await;
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
    let db = f.db().await;
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
    let f = Fixture::new(2000).await;
    f.history().await;
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
    let usage = f
        .app
        .call(
            Method::GET,
            &format!("/v1/clusters/{c}"),
            Some(&f.admin),
            None,
        )
        .await
        .body["usage"]
        .clone();
    let labels = |resource: &str| {
        format!(r#"{{cluster_id="{c}",cluster="gpu-east",resource="{resource}"}}"#)
    };
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
