//! The scheduler through the real Worker, its per-cluster Durable Object, the cron trigger
//! and a real PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{database, request, Client};

pub struct Team {
    pub c: Client,
    pub admin: String,
    pub org: String,
}

impl Team {
    pub async fn new() -> Self {
        let c = Client::new();
        let (_, admin, _) = c.user().await;
        let org = c.org_id(&admin, "E2E").await;
        Self { c, admin, org }
    }

    pub async fn cluster(&self, cpu: i64, mem: i64, gpus: i64, preemption: bool) -> String {
        let body = json!({"name": format!("c-{}", uuid::Uuid::new_v4().simple()),
            "capacity": {"cpu_millis": cpu, "memory_mib": mem, "gpus": gpus}, "preemption": preemption});
        self.c.cluster(&self.admin, &self.org, body).await
    }

    pub async fn submit(&self, cluster: &str, body: Value) -> crate::support::Reply {
        self.c.deploy(&self.admin, cluster, body).await
    }

    pub async fn cpu_job(&self, cluster: &str, name: &str, cpu: i64, priority: i64) -> Value {
        let r = self
            .submit(
                cluster,
                json!({"name": name, "image": "ghcr.io/acme/job:1", "priority": priority,
            "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    pub async fn status(&self, id: &Value) -> String {
        let r = self
            .c
            .call(
                Method::GET,
                &format!("/v1/deployments/{}", id.as_str().expect("id")),
                Some(&self.admin),
                None,
            )
            .await;
        r.body["status"].as_str().expect("status").to_string()
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .c
            .call(Method::GET, path, Some(&self.admin), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        r.body
    }
}

/// Checks usage against the records: allocated = sum over running ≤ capacity.
async fn assert_exact_usage(t: &Team, cluster: &str) {
    let usage = t.get(&format!("/v1/clusters/{cluster}")).await["usage"].clone();
    let db = database().await;
    let id: uuid::Uuid = cluster.parse().expect("uuid");
    let row = db.query_one(
        "select coalesce(sum(cpu_millis), 0)::int8, coalesce(sum(memory_mib), 0)::int8, coalesce(sum(gpus), 0)::int8 \
         from deployments where cluster_id = $1 and status = 'running'", &[&id]).await.expect("sum");
    for (i, k) in ["cpu_millis", "memory_mib", "gpus"].iter().enumerate() {
        let sum: i64 = row.get(i);
        assert_eq!(
            usage["allocated"][k].as_i64(),
            Some(sum),
            "{k}: allocated = sum over running"
        );
        assert!(
            sum <= usage["capacity"][k].as_i64().expect("cap"),
            "{k}: overcommitted"
        );
    }
}

#[tokio::test]
async fn two_hundred_concurrent_submissions_never_overcommit_and_all_are_stored() {
    let t = Team::new().await;
    let cluster = t.cluster(16_000, 65_536, 8, false).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let bodies: Vec<Value> = (0..200)
        .map(|i| {
            json!({"name": format!("job-{i}"), "image": "nginx:1.27",
        "priority": next(1001),
        "resources": {"cpu_millis": 100 + next(3900), "memory_mib": next(16_384), "gpus": next(3)}})
        })
        .collect();
    let replies =
        futures::future::join_all(bodies.into_iter().map(|b| t.submit(&cluster, b))).await;
    let mut ids = HashSet::new();
    for r in &replies {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ids.insert(r.body["id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids.len(), 200);
    let db = database().await;
    let id: uuid::Uuid = cluster.parse().expect("uuid");
    let stored: Vec<String> = db
        .query(
            "select id::text from deployments where cluster_id = $1",
            &[&id],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        stored.into_iter().collect::<HashSet<_>>(),
        ids,
        "every 201 is stored, nothing else"
    );
    assert_exact_usage(&t, &cluster).await;

    // Stopping running work admits the next by priority (and usage stays exact). Under
    // best_effort a smaller later deployment may take freed room the head cannot use yet;
    // strict queueing makes "the head goes first" exact.
    let r =
        t.c.call(
            Method::PATCH,
            &format!("/v1/clusters/{cluster}"),
            Some(&t.admin),
            Some(json!({"queueing": "strict"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let running = t
        .get(&format!(
            "/v1/clusters/{cluster}/deployments?status=running&limit=200"
        ))
        .await;
    let head = t
        .get(&format!("/v1/clusters/{cluster}/queue?limit=1"))
        .await["items"][0]
        .clone();
    for d in running["items"].as_array().expect("items") {
        let r =
            t.c.call(
                Method::POST,
                &format!("/v1/deployments/{}/stop", d["id"].as_str().expect("id")),
                Some(&t.admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(
        t.status(&head["deployment_id"]).await,
        "running",
        "the head of the queue is admitted first"
    );
    assert_exact_usage(&t, &cluster).await;
}

#[tokio::test]
async fn preemption_evicts_exactly_the_minimal_set_and_requeues_it() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, true).await;
    let a = t.cpu_job(&cluster, "a-100", 400, 100).await;
    let b = t.cpu_job(&cluster, "b-200", 300, 200).await;
    let c = t.cpu_job(&cluster, "c-300", 300, 300).await;
    // Needs 600: lowest priorities first would take a (400) and b (300) = 700; both needed.
    let hi = t.cpu_job(&cluster, "hi", 600, 900).await;
    assert_eq!(hi["status"], "running", "{hi}");
    assert_eq!(t.status(&a["id"]).await, "queued");
    assert_eq!(t.status(&b["id"]).await, "queued");
    assert_eq!(
        t.status(&c["id"]).await,
        "running",
        "not evicted needlessly"
    );
    let d = t
        .get(&format!(
            "/v1/deployments/{}",
            a["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(d["preemptions"], 1);
    assert_eq!(d["preempted_by"], hi["id"]);
    assert!(d["events"]
        .as_array()
        .expect("e")
        .iter()
        .any(|e| e["kind"] == "preempted" && e["by_deployment"] == hi["id"]));
    assert_exact_usage(&t, &cluster).await;
}

#[tokio::test]
async fn an_idempotency_key_replay_returns_the_same_deployment() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let body = json!({"name": "once", "image": "nginx", "resources": {"cpu_millis": 10, "memory_mib": 0, "gpus": 0}}).to_string();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut req = request(
            Method::POST,
            &format!("/v1/clusters/{cluster}/deployments"),
            Some(&t.admin),
            Some("application/json"),
            body.clone().into_bytes(),
        );
        let key = reqwest::header::HeaderValue::from_static("k-1");
        req.headers_mut().insert("idempotency-key", key);
        let r = t.c.send(req).await;
        assert_eq!(r.status, StatusCode::CREATED);
        ids.push(r.body["id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[tokio::test]
async fn max_runtime_expiry_is_observed_through_the_cron_trigger() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let r = t
        .submit(
            &cluster,
            json!({"name": "bounded", "image": "nginx", "max_runtime_seconds": 3600,
        "resources": {"cpu_millis": 1000, "memory_mib": 0, "gpus": 0}}),
        )
        .await;
    let bounded = r.body;
    assert_eq!(bounded["status"], "running");
    let next = t.cpu_job(&cluster, "next", 1000, 500).await;
    assert_eq!(next["status"], "queued");
    // Make it overdue in the records only: no alarm is set for that moment, so only the
    // cron sweep can notice.
    let db = database().await;
    let id: uuid::Uuid = bounded["id"].as_str().expect("id").parse().expect("uuid");
    db.execute(
        "update deployments set deadline_at = now() - interval '1 second' where id = $1",
        &[&id],
    )
    .await
    .expect("update");
    let r =
        t.c.raw(
            Method::GET,
            "/__scheduled?cron=*+*+*+*+*",
            None,
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(t.status(&bounded["id"]).await, "failed");
    assert_eq!(t.status(&next["id"]).await, "running");
    let d = t.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(
        d["events"].as_array().expect("e").last().expect("last")["kind"],
        "expired"
    );
}

#[tokio::test]
async fn the_durable_object_alarm_expires_deployments_on_time() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let r = t
        .submit(
            &cluster,
            json!({"name": "two-seconds", "image": "nginx", "max_runtime_seconds": 2,
        "resources": {"cpu_millis": 500, "memory_mib": 0, "gpus": 0}}),
        )
        .await;
    assert_eq!(r.body["status"], "running");
    let mut status = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = t.status(&r.body["id"]).await;
        if status == "failed" {
            break;
        }
    }
    assert_eq!(
        status, "failed",
        "the alarm fired without any request or cron"
    );
}

#[tokio::test]
async fn restart_of_the_dev_server_mid_way_loses_nothing_and_the_queue_resumes() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(t.cpu_job(&cluster, &format!("r{i}"), 400, 100 * i).await["id"].clone());
    }
    crate::support::restart_server().await;
    let mut running = Vec::new();
    for id in &ids {
        let s = t.status(id).await;
        assert!(s == "running" || s == "queued", "{s}");
        if s == "running" {
            running.push(id.clone());
        }
    }
    assert_eq!(running.len(), 2);
    for id in &running {
        let r =
            t.c.call(
                Method::POST,
                &format!("/v1/deployments/{}/stop", id.as_str().expect("id")),
                Some(&t.admin),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // The two highest priorities still waiting are admitted after the restart.
    assert_eq!(t.status(&ids[5]).await, "running");
    assert_eq!(t.status(&ids[4]).await, "running");
    assert_eq!(t.status(&ids[3]).await, "queued");
    assert_exact_usage(&t, &cluster).await;
}
