//! Clusters and deployments through the router and the engine, on a real database.

use axum::http::{Method, StatusCode};
use berth::domain::ids::ClusterId;
use berth::domain::policy::Role;
use berth::engine::Command;
use berth::http::Platform;
use chrono::Duration;
use serde_json::{json, Value};

use crate::support::{request, TestApp};

/// An organization's admin on the in-process app (shared with `dependencies.rs`).
pub(crate) struct Fixture {
    pub(crate) app: TestApp,
    pub(crate) admin: String,
    pub(crate) org: String,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        let app = TestApp::spawn().await;
        let (admin, _) = app.user_as("admin@example.com").await;
        let org = app.org_id(&admin, "Acme").await;
        Self { app, admin, org }
    }

    pub(crate) async fn cluster(&self, body: Value) -> String {
        self.app.cluster(&self.admin, &self.org, body).await
    }

    async fn submit(&self, cluster: &str, name: &str, cpu: i64, priority: i64) -> Value {
        let r = self
            .submit_raw(
                cluster,
                json!({"name": name, "image": "ghcr.io/acme/job:1",
            "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}, "priority": priority}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    pub(crate) async fn submit_raw(&self, cluster: &str, body: Value) -> crate::support::Reply {
        self.app.deploy(&self.admin, cluster, body).await
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let r = self
            .app
            .call(Method::GET, path, Some(&self.admin), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        r.body
    }

    /// A deployment (from a submission's answer) as it is now.
    pub(crate) async fn deployment(&self, d: &Value) -> Value {
        self.get(&format!("/v1/deployments/{}", id(d))).await
    }

    /// Its status now.
    pub(crate) async fn status(&self, d: &Value) -> Value {
        self.deployment(d).await["status"].clone()
    }

    pub(crate) async fn post(&self, path: &str, body: Option<Value>) -> crate::support::Reply {
        self.app
            .call(Method::POST, path, Some(&self.admin), body)
            .await
    }

    /// POSTs `body` with an `Idempotency-Key`.
    pub(crate) async fn post_with_key(
        &self,
        path: &str,
        body: Value,
        key: &str,
    ) -> crate::support::Reply {
        let mut req = request(
            Method::POST,
            path,
            Some(&self.admin),
            Some("application/json"),
            body.to_string().into_bytes(),
        );
        let key = axum::http::HeaderValue::from_str(key).expect("key");
        req.headers_mut().insert("idempotency-key", key);
        self.app.send(req).await
    }
}

pub(crate) fn cpu_cluster(cpu: i64, queueing: &str, preemption: bool) -> Value {
    json!({"name": format!("c-{}", uuid::Uuid::new_v4().simple()), "capacity": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0},
           "queueing": queueing, "preemption": preemption})
}

pub(crate) fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn admits_what_fits_queues_the_rest_and_stopping_admits_by_priority() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let a = f.submit(&c, "a", 600, 500).await;
    assert_eq!(a["status"], "running");
    let low = f.submit(&c, "low", 600, 100).await;
    let high = f.submit(&c, "high", 600, 900).await;
    assert_eq!(
        (low["status"].as_str(), low["position"].as_u64()),
        (Some("queued"), Some(1))
    );
    assert_eq!(
        (high["status"].as_str(), high["position"].as_u64()),
        (Some("queued"), Some(1))
    );

    let usage = &f.get(&format!("/v1/clusters/{c}")).await["usage"];
    assert_eq!(usage["allocated"]["cpu_millis"], 600);
    assert_eq!(usage["available"]["cpu_millis"], 400);
    assert_eq!(usage["queued_demand"]["cpu_millis"], 1200);
    assert_eq!(
        (usage["running"].as_i64(), usage["queued"].as_i64()),
        (Some(1), Some(2))
    );

    let r = f
        .post(&format!("/v1/deployments/{}/stop", id(&a)), None)
        .await;
    assert_eq!(r.body["status"], "stopped");
    assert_eq!(f.status(&high).await, "running");
    assert_eq!(f.status(&low).await, "queued");
    let events: Vec<_> = f.deployment(&high).await["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect();
    assert_eq!(events, ["created", "admitted"]);
}

#[tokio::test]
async fn what_can_never_fit_is_422_and_bad_input_lists_every_field_and_creates_nothing() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let r = f.submit_raw(&c, json!({"name": "big", "image": "nginx", "resources": {"cpu_millis": 1001, "memory_mib": 0, "gpus": 0}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["errors"][0]["field"], "resources.cpu_millis");
    assert_eq!(
        r.body["errors"][0]["message"],
        "asks for 1001, more than the cluster's total of 1000: it could never run"
    );

    let r = f
        .submit_raw(
            &c,
            json!({"name": "", "image": "Not An Image", "priority": 1001, "max_runtime_seconds": 0,
        "resources": {"cpu_millis": -1, "memory_mib": 0.5, "gpus": "2"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut fields: Vec<_> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "image",
            "max_runtime_seconds",
            "name",
            "priority",
            "resources.cpu_millis",
            "resources.gpus",
            "resources.memory_mib"
        ]
    );
    let r = f.submit_raw(&c, json!({"name": "zero", "image": "nginx", "resources": {"cpu_millis": 0, "memory_mib": 0, "gpus": 0}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = f.submit_raw(&c, json!({"name": "huge", "image": "nginx", "resources": {"cpu_millis": 1_u64 << 40, "memory_mib": 0, "gpus": 0}})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let list = f.get(&format!("/v1/clusters/{c}/deployments")).await;
    assert_eq!(list["items"], json!([]));
    let r = f.app.call(Method::POST, "/v1/clusters/not-a-uuid/deployments", Some(&f.admin),
        Some(json!({"name": "x", "image": "nginx", "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn preemption_evicts_exactly_the_minimal_set_and_requeues_the_victims() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", true)).await;
    // Running: 400 @ p100, 300 @ p200, 300 @ p300 (full). A 400 @ p900 needs 400 freed.
    let v400 = f.submit(&c, "v400", 400, 100).await;
    let v300a = f.submit(&c, "v300a", 300, 200).await;
    let v300b = f.submit(&c, "v300b", 300, 300).await;
    for v in [&v400, &v300a, &v300b] {
        assert_eq!(v["status"], "running");
    }
    let hi = f.submit(&c, "hi", 400, 900).await;
    assert_eq!(hi["status"], "running", "{hi}");
    // Lowest priority first: v400 alone frees enough; v300a/v300b stay.
    let d = f.deployment(&v400).await;
    assert_eq!(d["status"], "queued");
    assert_eq!(d["preemptions"], 1);
    assert_eq!(d["preempted_by"], hi["id"]);
    let kinds: Vec<_> = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("k"))
        .collect();
    assert_eq!(kinds, ["created", "admitted", "preempted", "requeued"]);
    for v in [&v300a, &v300b] {
        assert_eq!(f.status(v).await, "running");
    }
    // Never a higher or equal priority victim.
    let peer = f.submit(&c, "peer", 400, 900).await;
    assert_eq!(
        peer["status"], "running",
        "evicts v300a (200) and v300b (300)? only lower ones: {peer}"
    );
    let statuses: Vec<_> =
        futures::future::join_all([&hi, &peer].iter().map(|d| f.get_owned(id(d)))).await;
    assert!(statuses.iter().all(|s| s == "running"));
}

impl Fixture {
    async fn get_owned(&self, id: String) -> String {
        self.get(&format!("/v1/deployments/{id}")).await["status"]
            .as_str()
            .expect("status")
            .to_string()
    }
}

#[tokio::test]
async fn max_runtime_expiry_fails_the_deployment_and_admits_the_next() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let r = f
        .submit_raw(
            &c,
            json!({"name": "short", "image": "nginx", "max_runtime_seconds": 60,
        "resources": {"cpu_millis": 1000, "memory_mib": 0, "gpus": 0}}),
        )
        .await;
    let short = r.body;
    assert_eq!(short["status"], "running");
    assert!(short["deadline_at"].is_string());
    let next = f.submit(&c, "next", 1000, 500).await;
    assert_eq!(next["status"], "queued");

    let cluster = ClusterId::parse(&c).expect("id");
    f.app
        .platform
        .cluster_command(cluster, Command::TICK)
        .await
        .expect("tick");
    assert_eq!(f.status(&short).await, "running", "not yet due");
    f.app.advance(Duration::seconds(61));
    f.app
        .platform
        .cluster_command(cluster, Command::TICK)
        .await
        .expect("tick");
    let d = f.deployment(&short).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(
        d["events"].as_array().expect("e").last().expect("last")["kind"],
        "expired"
    );
    assert_eq!(f.status(&next).await, "running");
}

#[tokio::test]
async fn an_idempotency_key_replay_returns_the_same_deployment() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let body = json!({"name": "once", "image": "nginx", "resources": {"cpu_millis": 100, "memory_mib": 0, "gpus": 0}});
    let path = format!("/v1/clusters/{c}/deployments");
    let send = |b: Value| f.post_with_key(&path, b, "abc-123");
    let first = send(body.clone()).await;
    let again = send(body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(first.body["id"], again.body["id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let mut other = body;
    other["name"] = json!("different");
    assert_eq!(send(other).await.status, StatusCode::CONFLICT);
    assert_eq!(
        f.get(&format!("/v1/clusters/{c}/deployments")).await["items"]
            .as_array()
            .expect("i")
            .len(),
        1
    );
}

#[tokio::test]
async fn concurrent_submissions_never_overcommit_and_allocation_equals_the_sum_over_running() {
    let f = Fixture::new().await;
    let c = f.cluster(json!({"name": "busy", "capacity": {"cpu_millis": 4000, "memory_mib": 8192, "gpus": 4}})).await;
    let bodies: Vec<Value> = (0..60).map(|i| json!({"name": format!("d{i}"), "image": "nginx",
        "priority": (i * 37) % 1001,
        "resources": {"cpu_millis": 100 + (i * 131) % 900, "memory_mib": (i * 257) % 2048, "gpus": i % 3}})).collect();
    let replies = futures::future::join_all(bodies.into_iter().map(|b| f.submit_raw(&c, b))).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let usage = f.get(&format!("/v1/clusters/{c}")).await["usage"].clone();
    let mut running = [0i64; 3];
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let page = f
            .get(&format!(
                "/v1/clusters/{c}/deployments?limit=200&cursor={cursor}"
            ))
            .await;
        for d in page["items"].as_array().expect("items") {
            count += 1;
            if d["status"] == "running" {
                for (i, k) in ["cpu_millis", "memory_mib", "gpus"].iter().enumerate() {
                    running[i] += d["resources"][k].as_i64().expect("n");
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(n) => cursor = n.to_string(),
            None => break,
        }
    }
    assert_eq!(count, 60, "every 201 is stored");
    for (i, k) in ["cpu_millis", "memory_mib", "gpus"].iter().enumerate() {
        assert_eq!(usage["allocated"][k].as_i64(), Some(running[i]), "{k}");
        assert!(
            running[i] <= usage["capacity"][k].as_i64().expect("cap"),
            "{k} overcommitted"
        );
    }
}

#[tokio::test]
async fn a_deployment_keeps_its_command_and_env_and_a_replay_must_match_them() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let body = json!({"name": "job", "image": "alpine:3.20",
        "resources": {"cpu_millis": 100, "memory_mib": 0, "gpus": 0},
        "command": ["sh", "-c", "echo $GREETING"], "env": {"GREETING": "hello", "EMPTY": ""}});
    let path = format!("/v1/clusters/{c}/deployments");
    let first = f.post_with_key(&path, body.clone(), "job-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["command"], body["command"]);
    assert_eq!(first.body["env"], body["env"]);
    let shown = f.deployment(&first.body).await;
    assert_eq!(
        (&shown["command"], &shown["env"]),
        (&body["command"], &body["env"])
    );
    // Lists stay lean: the process is shown on a deployment's own answer.
    let listed = f.get(&path).await;
    assert!(listed["items"][0].get("command").is_none(), "{listed}");
    // The same key and the same request: the first deployment; another command: refused.
    let again = f.post_with_key(&path, body.clone(), "job-1").await;
    assert_eq!(
        (again.status, &again.body["id"]),
        (StatusCode::CREATED, &first.body["id"])
    );
    let mut other = body.clone();
    other["command"] = json!(["true"]);
    let conflict = f.post_with_key(&path, other, "job-1").await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    // Without them, neither is shown.
    let plain = f.submit(&c, "plain", 100, 500).await;
    assert!(f.deployment(&plain).await.get("env").is_none());
    // Every bad part is named.
    let bad = json!({"name": "x", "image": "alpine", "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0},
        "command": ["ok", 7], "env": {"NOT-A-NAME": "x", "N": 1}});
    let r = f.submit_raw(&c, bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut fields: Vec<_> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_string())
        .collect();
    fields.sort();
    assert_eq!(fields, ["command.1", "env.N", "env.NOT-A-NAME"]);
}

#[tokio::test]
async fn the_queue_view_under_strict_shows_the_head_and_who_is_blocked() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "strict", false)).await;
    f.submit(&c, "run", 800, 500).await;
    let head = f.submit(&c, "head", 500, 600).await;
    let small = f.submit(&c, "small", 100, 100).await;
    assert_eq!(small["status"], "queued", "strict: may not pass the head");
    let q = f.get(&format!("/v1/clusters/{c}/queue")).await;
    let items = q["items"].as_array().expect("items");
    assert_eq!(items[0]["deployment_id"], head["id"]);
    assert_eq!(items[0]["reason"], "waiting_for_capacity");
    assert_eq!(items[1]["reason"], "blocked_behind_head");
    assert_eq!(
        (items[0]["position"].as_u64(), items[1]["position"].as_u64()),
        (Some(1), Some(2))
    );
    // Page by page, from the cluster object's ordered view.
    let first = f.get(&format!("/v1/clusters/{c}/queue?limit=1")).await;
    assert_eq!(first["items"][0]["deployment_id"], head["id"]);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = f
        .get(&format!("/v1/clusters/{c}/queue?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(second["items"][0]["deployment_id"], small["id"]);
    assert_eq!(second["items"][0]["position"], 2);
    assert_eq!(second["items"][0]["name"], "small");
    assert!(second["next_cursor"].is_null(), "{second}");
    // A queued deployment read on its own knows its place too; a running one has none.
    assert_eq!(f.deployment(&small).await["position"], 2);
    assert_eq!(f.deployment(&head).await["position"], 1);
    let running = f
        .get(&format!("/v1/clusters/{c}/deployments?status=running"))
        .await;
    let running = f.deployment(&running["items"][0]).await;
    assert!(running.get("position").is_none(), "{running}");
    // A cluster whose object has not run anything yet builds its view from Postgres.
    let idle = f.cluster(cpu_cluster(1000, "strict", false)).await;
    let empty = f.get(&format!("/v1/clusters/{idle}/queue")).await;
    assert_eq!(empty["items"], json!([]));
    // Switching to best_effort lets the small one through.
    let r = f
        .app
        .call(
            Method::PATCH,
            &format!("/v1/clusters/{c}"),
            Some(&f.admin),
            Some(json!({"queueing": "best_effort"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.status(&small).await, "running");
}

#[tokio::test]
async fn cluster_shrink_delete_and_lifecycle_conflicts() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let run = f.submit(&c, "run", 700, 500).await;
    let wait = f.submit(&c, "wait", 700, 500).await;
    let path = format!("/v1/clusters/{c}");
    let r = f
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&f.admin),
            Some(json!({"capacity": {"cpu_millis": 600, "memory_mib": 0, "gpus": 0}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        f.app
            .call(Method::DELETE, &path, Some(&f.admin), None)
            .await
            .status,
        StatusCode::CONFLICT
    );

    assert_eq!(
        f.post(&format!("/v1/deployments/{}/cancel", id(&run)), None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        f.post(&format!("/v1/deployments/{}/stop", id(&wait)), None)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let r = f
        .post(&format!("/v1/deployments/{}/cancel", id(&wait)), None)
        .await;
    assert_eq!(r.body["status"], "cancelled");
    let r = f
        .post(
            &format!("/v1/deployments/{}/finish", id(&run)),
            Some(json!({"outcome": "succeeded", "message": "ok"})),
        )
        .await;
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(
        f.post(
            &format!("/v1/deployments/{}/finish", id(&run)),
            Some(json!({"outcome": "failed"}))
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    let r = f
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&f.admin),
            Some(
                json!({"capacity": {"cpu_millis": 10, "memory_mib": 0, "gpus": 0}, "name": "tiny"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "tiny");
    assert_eq!(
        f.app
            .call(Method::DELETE, &path, Some(&f.admin), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.app
            .call(Method::GET, &path, Some(&f.admin), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn raising_a_priority_can_preempt_and_viewers_cannot_deploy() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", true)).await;
    let low = f.submit(&c, "low", 1000, 100).await;
    let waiting = f.submit(&c, "waiting", 1000, 50).await;
    assert_eq!(waiting["status"], "queued");
    let r = f
        .app
        .call(
            Method::PATCH,
            &format!("/v1/deployments/{}", id(&waiting)),
            Some(&f.admin),
            Some(json!({"priority": 800})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "running");
    assert_eq!(f.status(&low).await, "queued");

    let (viewer, _) = f.app.user_as("viewer@example.com").await;
    f.app.join(&f.admin, &f.org, &viewer, Role::Viewer).await;
    let r = f.app.call(Method::POST, &format!("/v1/clusters/{c}/deployments"), Some(&viewer),
        Some(json!({"name": "x", "image": "nginx", "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        f.app
            .call(
                Method::GET,
                &format!("/v1/clusters/{c}/queue"),
                Some(&viewer),
                None
            )
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn commands_committed_in_one_batch_keep_their_own_results() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let running = f.submit(&c, "running", 500, 500).await;
    let ok = json!({"name": "ok", "image": "nginx", "resources": {"cpu_millis": 100, "memory_mib": 0, "gpus": 0}});
    let too_big = json!({"name": "big", "image": "nginx", "resources": {"cpu_millis": 5000, "memory_mib": 0, "gpus": 0}});
    let cancel_path = format!("/v1/deployments/{}/cancel", id(&running));
    // Arrive together, so the cluster's writer commits them in one batch.
    let (a, b, x) = futures::join!(
        f.submit_raw(&c, ok.clone()),
        f.submit_raw(&c, too_big),
        f.post(&cancel_path, None)
    );
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(b.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        x.status,
        StatusCode::CONFLICT,
        "cancelling a running deployment"
    );
    let usage = f.get(&format!("/v1/clusters/{c}")).await["usage"].clone();
    assert_eq!(
        (
            usage["running"].as_i64(),
            usage["allocated"]["cpu_millis"].as_i64()
        ),
        (Some(2), Some(600))
    );
}

#[tokio::test]
async fn nul_characters_unreadable_paths_and_key_minting_keys_are_refused_cleanly() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let run = f.submit(&c, "run", 100, 500).await;
    let r = f
        .post(
            &format!("/v1/deployments/{}/finish", id(&run)),
            Some(json!({"outcome": "failed", "message": "a\u{0}b"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = f
        .app
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "x\u{0}@example.com", "password": "p"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = f
        .app
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "x".repeat(300), "password": "p"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(
        f.app
            .call(Method::GET, "/v1/clusters/%FF", Some(&f.admin), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let key = f.app.api_key(&f.admin, &f.org, "ci", Role::Admin).await;
    let secret = key["secret"].as_str().expect("secret").to_string();
    for (path, body) in [
        ("api-keys", json!({"name": "child", "role": "viewer"})),
        ("invites", json!({"role": "admin"})),
    ] {
        let r = f
            .app
            .call(
                Method::POST,
                &format!("/v1/orgs/{}/{path}", f.org),
                Some(&secret),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    // The admin key still manages clusters.
    let r = f
        .app
        .call(
            Method::PATCH,
            &format!("/v1/clusters/{c}"),
            Some(&secret),
            Some(json!({"preemption": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn concurrent_patches_of_different_fields_both_stick() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let path = format!("/v1/clusters/{c}");
    let (a, b) = futures::join!(
        f.app.call(
            Method::PATCH,
            &path,
            Some(&f.admin),
            Some(json!({"queueing": "strict"}))
        ),
        f.app.call(
            Method::PATCH,
            &path,
            Some(&f.admin),
            Some(json!({"preemption": true}))
        ),
    );
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    let now = f.get(&path).await;
    assert_eq!(
        (now["queueing"].as_str(), now["preemption"].as_bool()),
        (Some("strict"), Some(true))
    );
    // A rename to a taken name is refused alone.
    let other = f.cluster(cpu_cluster(10, "best_effort", false)).await;
    let taken = f.get(&format!("/v1/clusters/{other}")).await["name"].clone();
    let r = f
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&f.admin),
            Some(json!({"name": taken})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

/// Submissions are authorized by the cluster's writer inside its batch (the Worker opens no
/// connection for them): every caller gets exactly the answer the guard gives elsewhere,
/// concurrently and mixed in one batch, and refused submissions store nothing.
#[tokio::test]
async fn submissions_and_reads_are_authorized_by_the_object_for_every_kind_of_caller() {
    let f = Fixture::new().await;
    let c = f
        .cluster(cpu_cluster(1_000_000, "best_effort", false))
        .await;
    let key = |org: String, role: Role| {
        let f = &f;
        async move {
            let key = f.app.api_key(&f.admin, &org, "ci", role).await;
            (
                key["secret"].as_str().expect("secret").to_string(),
                key["id"].as_str().expect("id").to_string(),
            )
        }
    };
    let revoke = |id: String| {
        let f = &f;
        async move {
            let path = format!("/v1/orgs/{}/api-keys/{id}", f.org);
            let r = f
                .app
                .call(Method::DELETE, &path, Some(&f.admin), None)
                .await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        }
    };
    let (developer_key, _) = key(f.org.clone(), Role::Developer).await;
    let (viewer_key, _) = key(f.org.clone(), Role::Viewer).await;
    let (revoked_key, revoked_id) = key(f.org.clone(), Role::Admin).await;
    revoke(revoked_id).await;
    let other_org = f.app.org(&f.admin, "Other").await["id"]
        .as_str()
        .expect("org")
        .to_string();
    let (foreign_key, _) = key(other_org, Role::Admin).await;
    let (outsider, _) = f.app.user_as("outsider@example.com").await;

    let body = json!({"name": "x", "image": "nginx",
        "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}});
    let cases = [
        (f.admin.clone(), c.clone(), StatusCode::CREATED),
        (developer_key.clone(), c.clone(), StatusCode::CREATED),
        (viewer_key.clone(), c.clone(), StatusCode::FORBIDDEN),
        (revoked_key, c.clone(), StatusCode::UNAUTHORIZED),
        (foreign_key, c.clone(), StatusCode::NOT_FOUND),
        (outsider, c.clone(), StatusCode::NOT_FOUND),
        (
            f.admin.clone(),
            uuid::Uuid::new_v4().to_string(),
            StatusCode::NOT_FOUND,
        ),
    ];
    // All at once, several times each, so that they share batches.
    let calls = cases
        .iter()
        .cycle()
        .take(cases.len() * 4)
        .map(|(who, cl, _)| {
            let (path, body, app) = (
                format!("/v1/clusters/{cl}/deployments"),
                body.clone(),
                &f.app,
            );
            async move { app.call(Method::POST, &path, Some(who), Some(body)).await }
        });
    let replies = futures::future::join_all(calls).await;
    for (reply, (_, _, expected)) in replies.iter().zip(cases.iter().cycle()) {
        assert_eq!(reply.status, *expected, "{}", reply.body);
        if !expected.is_success() {
            assert_eq!(
                reply.headers["content-type"], "application/problem+json",
                "{}",
                reply.body
            );
        }
    }
    let usage = &f.get(&format!("/v1/clusters/{c}")).await["usage"];
    assert_eq!(
        usage["running"], 8,
        "exactly the 8 permitted submissions: {usage}"
    );

    // The developer key's use was recorded (after the batch, outside its transaction).
    let keys = f.get(&format!("/v1/orgs/{}/api-keys", f.org)).await;
    let used = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|k| k["role"] == "developer")
        .all(|k| k["last_used_at"].is_string());
    assert!(used, "{keys}");

    // Reads of the cluster and its queue, authorized by the object too (a viewer may read).
    let read = |who: &String, path: String| {
        let (who, app) = (who.clone(), &f.app);
        async move { app.call(Method::GET, &path, Some(&who), None).await }
    };
    for (who, cl, expected) in &cases {
        let expected = match *expected {
            StatusCode::CREATED | StatusCode::FORBIDDEN => StatusCode::OK,
            other => other,
        };
        let paths = [
            format!("/v1/clusters/{cl}"),
            format!("/v1/clusters/{cl}/queue"),
        ];
        let replies = futures::future::join_all(paths.map(|p| read(who, p))).await;
        for r in replies {
            assert_eq!(r.status, expected, "{}", r.body);
        }
    }
    let (reader_key, reader_id) = key(f.org.clone(), Role::Viewer).await;
    let cluster = read(&reader_key, format!("/v1/clusters/{c}")).await;
    assert_eq!(cluster.body["id"], c.as_str());
    assert_eq!(cluster.body["usage"]["running"], 8);
    let keys = f.get(&format!("/v1/orgs/{}/api-keys", f.org)).await;
    let used = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .any(|k| k["id"] == reader_id.as_str() && k["last_used_at"].is_string());
    assert!(used, "a read records the key's use: {keys}");
    // Revoked after a read it was allowed: the next read is refused at once.
    revoke(reader_id).await;
    for path in [
        format!("/v1/clusters/{c}"),
        format!("/v1/clusters/{c}/queue"),
    ] {
        let r = read(&reader_key, path).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
}

/// The writer answers from rows it builds itself (its writes go out pipelined, unread): what
/// a submission answers must be exactly what is stored, to the microsecond; and commands of
/// one batch see each other's pending writes.
#[tokio::test]
async fn answers_are_what_is_stored_and_a_batch_sees_its_own_pending_writes() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let running = f.submit(&c, "runs", 600, 500).await;
    let queued = f.submit(&c, "waits", 600, 400).await;
    for d in [&running, &queued] {
        let mut stored = f.deployment(d).await;
        stored.as_object_mut().expect("object").remove("events");
        assert_eq!(d, &stored);
    }
    // Two stops of the same deployment in one batch: the second sees the first.
    let stop = format!("/v1/deployments/{}/stop", id(&running));
    let (a, b) = tokio::join!(f.post(&stop, None), f.post(&stop, None));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", a.body, b.body);
    // The stop admitted the waiting one, and both writes are stored.
    assert_eq!(f.status(&queued).await, "running");
    assert_eq!(f.status(&running).await, "stopped");
}

/// A refused update changes nothing, not even for the rest of its batch: a larger capacity
/// with a taken name must not let the batch's scheduling admit beyond the stored capacity.
#[tokio::test]
async fn a_refused_resize_admits_nothing_beyond_the_stored_capacity() {
    let f = Fixture::new().await;
    let c = f.cluster(cpu_cluster(1000, "best_effort", false)).await;
    let mut other = cpu_cluster(1000, "best_effort", false);
    other["name"] = json!("taken");
    f.cluster(other).await;
    f.submit(&c, "runs", 1000, 500).await;
    let waits = f.submit(&c, "waits", 1000, 500).await;
    assert_eq!(waits["status"], "queued");
    let r = f
        .app
        .call(
            Method::PATCH,
            &format!("/v1/clusters/{c}"),
            Some(&f.admin),
            Some(json!({"name": "taken", "capacity": {"cpu_millis": 5000, "memory_mib": 0, "gpus": 0}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let cluster = f.get(&format!("/v1/clusters/{c}")).await;
    assert_eq!(cluster["capacity"]["cpu_millis"], 1000, "{cluster}");
    assert_eq!(cluster["usage"]["running"], 1, "{cluster}");
    assert_eq!(f.status(&waits).await, "queued");
}

/// A cluster id that is well formed but unknown costs its object one connection, not one per
/// request: the object remembers for a while that the cluster does not exist.
#[tokio::test]
async fn an_unknown_cluster_is_remembered_and_costs_no_connection_per_request() {
    use std::sync::atomic::Ordering;
    let app = TestApp::spawn().await;
    let (admin, _) = app.user_as("admin@example.com").await;
    let unknown = uuid::Uuid::now_v7();
    let submit = json!({"name": "x", "image": "nginx", "resources": {"cpu_millis": 1, "memory_mib": 0, "gpus": 0}});
    let (app, admin) = (&app, admin.as_str());
    let get = || async move {
        let path = format!("/v1/clusters/{unknown}");
        app.call(Method::GET, &path, Some(admin), None).await.status
    };
    let connections = || app.platform.connections.load(Ordering::SeqCst);
    assert_eq!(get().await, StatusCode::NOT_FOUND);
    let opened = connections();
    for _ in 0..5 {
        assert_eq!(get().await, StatusCode::NOT_FOUND);
        let path = format!("/v1/clusters/{unknown}/deployments");
        let r = app
            .call(Method::POST, &path, Some(admin), Some(submit.clone()))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(connections(), opened, "no connection after the first");
    // Past the memory, it looks again.
    app.advance(chrono::Duration::seconds(
        berth::engine::UNKNOWN_SECONDS + 1,
    ));
    assert_eq!(get().await, StatusCode::NOT_FOUND);
    assert!(connections() > opened);
}
