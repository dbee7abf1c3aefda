//! Placement through the engine on a real database: agents' hellos, reports and closes as
//! the cluster's object passes them to its writer, the orders the batches decide for the
//! agents, and what the API then shows. (The sockets themselves are tested end to end.)

use axum::http::{Method, StatusCode};
use berth::domain::agent::protocol::{AgentInfo, Exit, ObjectMessage};
use berth::domain::agent::Report;
use berth::domain::ids::{AgentId, ClusterId, DeploymentId};
use berth::domain::resources::Resources;
use berth::engine::{Command, Order, Outcome};
use berth::http::Platform;
use chrono::Duration;
use serde_json::{json, Value};

use crate::support::TestApp;

/// An organization with one cluster (`c`) and its admin, driven through the engine as the
/// cluster's object drives it (also by `counters.rs`).
pub struct Fixture {
    pub app: TestApp,
    pub admin: String,
    pub org: String,
    pub cluster: ClusterId,
}

/// An order as a test reads it: (agent name, message type, deployment).
type Said = (String, &'static str, Option<DeploymentId>);

impl Fixture {
    pub async fn new(cpu: i64, preemption: bool) -> Self {
        let app = TestApp::spawn().await;
        let (admin, _) = app.user_as("admin@example.com").await;
        let org = app.org_id(&admin, "Acme").await;
        let body = json!({"name": "c", "preemption": preemption,
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

    pub async fn command(&self, cmd: Command) -> Outcome {
        self.app
            .platform
            .cluster_command(self.cluster, cmd)
            .await
            .expect("command")
            .outcome
    }

    /// The agent `name` says hello with `cpu` and what it runs; answers its id.
    pub async fn hello(&self, name: &str, cpu: i64, running: &[DeploymentId]) -> AgentId {
        let hello = Command::AgentHello {
            token: None,
            info: AgentInfo {
                name: name.into(),
                version: "test".into(),
            },
            capacity: Resources::new(cpu, 1024, 0),
            running: running.to_vec(),
            exited: vec![],
        };
        match self.command(hello).await {
            Outcome::Agent { agent } => agent.id,
            other => panic!("not an agent: {other:?}"),
        }
    }

    async fn report(&self, agent: AgentId, report: Report) {
        self.command(Command::AgentReport { agent, report }).await;
    }

    async fn started(&self, agent: AgentId, d: DeploymentId) {
        let report = Report::Started { deployment_id: d };
        self.report(agent, report).await;
    }

    async fn exited(&self, agent: AgentId, d: DeploymentId, code: Option<i32>, output: &str) {
        let exit = Exit {
            deployment_id: d,
            exit_code: code,
            output: output.into(),
            abandoned: false,
        };
        self.report(agent, Report::Exited(exit)).await;
    }

    pub async fn submit(&self, name: &str, cpu: i64, priority: i64) -> DeploymentId {
        let body = json!({"name": name, "image": "busybox:1", "priority": priority,
            "command": ["sh", "-c", "exit 0"],
            "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}});
        self.submit_body(body).await
    }

    /// Submits `body` (as the API takes it), which must be accepted.
    pub async fn submit_body(&self, body: Value) -> DeploymentId {
        let r = self
            .app
            .deploy(&self.admin, &self.cluster.to_string(), body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        DeploymentId::parse(r.body["id"].as_str().expect("id")).expect("uuid")
    }

    /// `method path` as the admin, without a body.
    pub async fn call(&self, method: Method, path: &str) -> crate::support::Reply {
        self.app.call(method, path, Some(&self.admin), None).await
    }

    pub async fn get(&self, d: DeploymentId) -> Value {
        let r = self
            .call(Method::GET, &format!("/v1/deployments/{d}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// The orders decided since the last call.
    fn said(&self) -> Vec<Said> {
        self.app
            .platform
            .orders(self.cluster)
            .into_iter()
            .map(|o| match o {
                Order::Send { name, message, .. } => {
                    let (kind, d) = match message {
                        ObjectMessage::Welcome { .. } => ("welcome", None),
                        ObjectMessage::Run { deployment, .. } => {
                            ("run", Some(deployment.deployment_id))
                        }
                        ObjectMessage::Stop { deployment_id, .. } => ("stop", Some(deployment_id)),
                        ObjectMessage::Forget { deployment_id, .. } => {
                            ("forget", Some(deployment_id))
                        }
                        ObjectMessage::Pong => ("pong", None),
                    };
                    (name, kind, d)
                }
                Order::Close { name, .. } => (name, "close", None),
            })
            .collect()
    }

    async fn kinds(&self, d: DeploymentId) -> Vec<String> {
        crate::common::kinds(&self.get(d).await)
    }

    /// When the cluster's first agent connected (its socket's, as `AgentGone` names it).
    pub async fn connected_at(&self) -> chrono::DateTime<chrono::Utc> {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/clusters/{}/agents", self.cluster),
            )
            .await;
        r.body["items"][0]["connected_at"]
            .as_str()
            .expect("an agent")
            .parse()
            .expect("time")
    }

    pub async fn tick(&self) {
        self.command(Command::Tick { seen: None }).await;
    }
}

fn said(name: &str, kind: &'static str, d: Option<DeploymentId>) -> Said {
    (name.to_string(), kind, d)
}

#[tokio::test]
async fn admitted_deployments_run_on_agents_with_room_and_end_with_their_exit() {
    let f = Fixture::new(4000, false).await;
    // Before any agent: admitted, awaiting one.
    let d1 = f.submit("d1", 1000, 0).await;
    assert_eq!(f.get(d1).await["placement"], "awaiting_agent");
    let a = f.hello("rack-1", 2000, &[]).await;
    let d2 = f.submit("d2", 1000, 0).await;
    let d3 = f.submit("d3", 1000, 0).await;
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "welcome", None),
            said("rack-1", "run", Some(d1)),
            said("rack-1", "run", Some(d2)),
        ]
    );
    // The quota admits d3; the machine has no room for it.
    let g3 = f.get(d3).await;
    assert_eq!(
        (g3["status"].clone(), g3["placement"].clone()),
        (json!("running"), json!("awaiting_agent"))
    );
    let g1 = f.get(d1).await;
    assert_eq!(g1["placement"], "assigned");
    assert_eq!(g1["agent"]["name"], "rack-1");
    assert_eq!(g1["agent"]["id"], a.to_string());

    f.started(a, d1).await;
    f.started(a, d1).await; // said twice: nothing more
    let g1 = f.get(d1).await;
    assert_eq!(g1["placement"], "started");
    assert!(g1["started_at"].is_string());
    assert!(f.said().is_empty());

    f.exited(a, d1, Some(0), "all good\n").await;
    let g1 = f.get(d1).await;
    assert_eq!(g1["status"], "succeeded");
    assert_eq!(g1["exit_code"], 0);
    assert_eq!(g1["agent"]["name"], "rack-1", "the agent stays named");
    assert!(g1.get("placement").is_none());
    assert_eq!(
        f.kinds(d1).await,
        [
            "created",
            "admitted",
            "assigned",
            "started",
            "exited",
            "succeeded"
        ]
    );
    // Its room goes to d3; the agent forgets d1.
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "forget", Some(d1)),
            said("rack-1", "run", Some(d3))
        ]
    );

    f.started(a, d2).await;
    f.exited(a, d2, Some(3), "step 2 failed\n").await;
    let g2 = f.get(d2).await;
    assert_eq!(
        (g2["status"].clone(), g2["exit_code"].clone()),
        (json!("failed"), json!(3))
    );
    assert_eq!(g2["message"], "step 2 failed\n");
    let exited = &g2["events"].as_array().expect("events")[4];
    assert_eq!(
        (exited["kind"].clone(), exited["reason"].clone()),
        (json!("exited"), json!("exit code 3"))
    );

    // A report from an agent that does not run it changes nothing.
    let b = f.hello("rack-2", 1000, &[]).await;
    f.said();
    f.exited(b, d3, Some(0), "").await;
    assert_eq!(f.get(d3).await["status"], "running");
    assert_eq!(f.said(), vec![said("rack-2", "forget", Some(d3))]);
    // A run that never started (its image could not be pulled) fails with why.
    f.exited(a, d3, None, "pulling busybox:1: no such image\n")
        .await;
    let g3 = f.get(d3).await;
    assert_eq!(g3["status"], "failed");
    assert!(g3["exit_code"].is_null());
    let events = g3["events"].as_array().expect("events");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        ["created", "admitted", "assigned", "exited", "failed"]
    );
    assert_eq!(
        events[3]["reason"],
        "did not run: pulling busybox:1: no such image"
    );

    let agents = f
        .call(Method::GET, &format!("/v1/clusters/{}/agents", f.cluster))
        .await;
    let items = agents.body["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 2);
    let usage = f
        .call(Method::GET, &format!("/v1/clusters/{}", f.cluster))
        .await
        .body["usage"]
        .clone();
    assert_eq!(usage["agents_connected"], 2);
    assert_eq!(usage["agent_capacity"]["cpu_millis"], 3000);
}

#[tokio::test]
async fn a_stopped_container_holds_its_room_until_it_exits() {
    let f = Fixture::new(4000, false).await;
    let a = f.hello("rack-1", 2000, &[]).await;
    let d1 = f.submit("d1", 1000, 0).await;
    f.started(a, d1).await;
    f.said();
    let r = f
        .call(Method::POST, &format!("/v1/deployments/{d1}/stop"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(f.said(), vec![said("rack-1", "stop", Some(d1))]);
    // d2 fits the quota, not the machine while d1's container stops.
    let d2 = f.submit("d2", 2000, 0).await;
    assert_eq!(f.get(d2).await["placement"], "awaiting_agent");
    assert!(f.said().is_empty());
    f.exited(a, d1, Some(143), "").await;
    let g1 = f.get(d1).await;
    assert_eq!(
        g1["status"], "stopped",
        "a stopped deployment stays stopped"
    );
    assert_eq!(g1["exit_code"], 143);
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "forget", Some(d1)),
            said("rack-1", "run", Some(d2))
        ]
    );
    // Without an exit, the stop's grace and margin free the room.
    f.started(a, d2).await;
    let r = f
        .call(Method::POST, &format!("/v1/deployments/{d2}/stop"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let d3 = f.submit("d3", 2000, 0).await;
    f.said();
    f.app.advance(Duration::seconds(14));
    f.tick().await;
    assert_eq!(f.get(d3).await["placement"], "awaiting_agent");
    f.app.advance(Duration::seconds(2));
    f.tick().await;
    assert_eq!(f.get(d3).await["placement"], "assigned");
    assert_eq!(f.said(), vec![said("rack-1", "run", Some(d3))]);
}

#[tokio::test]
async fn a_preemptor_starts_only_after_its_victim_s_container_stopped() {
    let f = Fixture::new(1000, true).await;
    let a = f.hello("rack-1", 1000, &[]).await;
    let low = f.submit("low", 1000, 0).await;
    f.started(a, low).await;
    f.said();
    let high = f.submit("high", 1000, 100).await;
    let gh = f.get(high).await;
    assert_eq!(
        (gh["status"].clone(), gh["placement"].clone()),
        (json!("running"), json!("awaiting_agent"))
    );
    assert_eq!(f.get(low).await["status"], "queued");
    assert_eq!(f.said(), vec![said("rack-1", "stop", Some(low))]);
    f.exited(a, low, Some(137), "").await;
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "forget", Some(low)),
            said("rack-1", "run", Some(high))
        ]
    );
    let gl = f.get(low).await;
    assert_eq!(
        (gl["status"].clone(), gl["exit_code"].clone()),
        (json!("queued"), json!(137))
    );
}

#[tokio::test]
async fn an_agent_away_past_the_grace_loses_its_deployments_to_another() {
    let f = Fixture::new(4000, false).await;
    let a = f.hello("rack-1", 2000, &[]).await;
    let d = f.submit("d", 1000, 0).await;
    f.started(a, d).await;
    let since = f.connected_at().await;
    f.command(Command::AgentGone { agent: a, since }).await;
    f.said();
    f.app.advance(Duration::seconds(59));
    f.tick().await;
    assert_eq!(f.get(d).await["placement"], "started", "within the grace");
    f.app.advance(Duration::seconds(2));
    f.tick().await;
    let g = f.get(d).await;
    // Lost, requeued and admitted again: it waits for an agent.
    assert_eq!(
        (g["status"].clone(), g["placement"].clone()),
        (json!("running"), json!("awaiting_agent"))
    );
    assert!(g["agent"].is_null());
    let kinds = f.kinds(d).await;
    assert_eq!(&kinds[4..], ["lost", "requeued", "admitted"], "{kinds:?}");
    let b = f.hello("rack-2", 2000, &[]).await;
    assert_eq!(
        f.said(),
        vec![
            said("rack-2", "welcome", None),
            said("rack-2", "run", Some(d))
        ]
    );
    // rack-1 comes back running the old copy: it is told to stop it.
    let a2 = f.hello("rack-1", 2000, &[d]).await;
    assert_eq!(a2, a, "the same agent by its name");
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "welcome", None),
            said("rack-1", "stop", Some(d))
        ]
    );
    assert_eq!(f.get(d).await["agent"]["id"], b.to_string());
}

#[tokio::test]
async fn a_returning_agent_is_reconciled_with_what_it_runs() {
    let f = Fixture::new(4000, false).await;
    let a = f.hello("rack-1", 4000, &[]).await;
    let started = f.submit("started", 1000, 0).await;
    let assigned = f.submit("assigned", 1000, 0).await;
    let vanished = f.submit("vanished", 1000, 0).await;
    f.started(a, started).await;
    f.started(a, vanished).await;
    f.said();
    // It comes back (after a restart) running `started` and `assigned`, and not `vanished`,
    // and a container nobody asked for.
    let stray = DeploymentId::new();
    f.hello("rack-1", 4000, &[started, assigned, stray]).await;
    let mut orders = f.said();
    orders.sort_by_key(|(_, kind, d)| (*kind, d.map(|d| d.0)));
    assert_eq!(
        orders,
        vec![
            said("rack-1", "run", Some(vanished)),
            said("rack-1", "stop", Some(stray)),
            said("rack-1", "welcome", None)
        ]
    );
    assert_eq!(f.get(assigned).await["placement"], "started");
    assert_eq!(f.get(started).await["placement"], "started");
    let kinds = f.kinds(vanished).await;
    // `vanished` was lost, requeued, admitted and assigned again to the same agent.
    assert_eq!(
        &kinds[4..],
        ["lost", "requeued", "admitted", "assigned"],
        "{kinds:?}"
    );
}

#[tokio::test]
async fn an_exit_the_agent_abandoned_requeues_the_deployment() {
    let f = Fixture::new(4000, false).await;
    let a = f.hello("rack-1", 2000, &[]).await;
    let d = f.submit("d", 1000, 0).await;
    f.started(a, d).await;
    f.said();
    // Away from the server too long, the agent stopped it itself: lost, not failed.
    let exit = Exit {
        deployment_id: d,
        exit_code: Some(143),
        output: String::new(),
        abandoned: true,
    };
    f.report(a, Report::Exited(exit)).await;
    let g = f.get(d).await;
    assert_eq!(g["status"], "running", "{g:#}");
    assert!(g["exit_code"].is_null(), "{g:#}");
    let kinds = f.kinds(d).await;
    assert_eq!(
        &kinds[3..],
        ["started", "exited", "lost", "requeued", "admitted", "assigned"],
        "{kinds:?}"
    );
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "forget", Some(d)),
            said("rack-1", "run", Some(d))
        ]
    );
}

#[tokio::test]
async fn a_silent_agent_is_closed_and_loses_its_deployments() {
    let f = Fixture::new(4000, false).await;
    let a = f.hello("rack-1", 2000, &[]).await;
    let d = f.submit("d", 1000, 0).await;
    f.started(a, d).await;
    f.said();
    let now = f.app.platform.now();
    // Silent past the pings it may miss (45 s) and the grace (60 s): its socket is open, and
    // it was last heard of 106 s ago.
    f.app.advance(Duration::seconds(104));
    f.command(Command::Tick {
        seen: Some(vec![(a, now)]),
    })
    .await;
    assert!(f.said().is_empty(), "not yet");
    f.app.advance(Duration::seconds(2));
    f.command(Command::Tick {
        seen: Some(vec![(a, now)]),
    })
    .await;
    assert_eq!(f.said(), vec![said("rack-1", "close", None)]);
    assert_eq!(f.get(d).await["placement"], "awaiting_agent");
    let agents = f
        .call(Method::GET, &format!("/v1/clusters/{}/agents", f.cluster))
        .await;
    assert_eq!(agents.body["items"][0]["status"], "disconnected");

    // It wakes up and says hello with its old copy still running: that copy is stopped, and
    // the deployment is not placed there again before the copy's exit (which is not the new
    // run's).
    f.hello("rack-1", 2000, &[d]).await;
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "welcome", None),
            said("rack-1", "stop", Some(d))
        ]
    );
    f.exited(a, d, Some(143), "").await;
    let g = f.get(d).await;
    assert_eq!(g["status"], "running", "{g:#}");
    assert!(g["exit_code"].is_null(), "{g:#}");
    assert_eq!(
        f.said(),
        vec![
            said("rack-1", "forget", Some(d)),
            said("rack-1", "run", Some(d))
        ]
    );
}

#[tokio::test]
async fn the_grace_is_a_cluster_setting_within_bounds() {
    let f = Fixture::new(1000, false).await;
    let path = format!("/v1/clusters/{}", f.cluster);
    let get = f.app.call(Method::GET, &path, Some(&f.admin), None).await;
    assert_eq!(get.body["agent_grace_seconds"], 60);
    for bad in [json!(4), json!(3601), json!("60"), json!(1.5)] {
        let r = f
            .app
            .call(
                Method::PATCH,
                &path,
                Some(&f.admin),
                Some(json!({"agent_grace_seconds": bad})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.body
        );
    }
    let r = f
        .app
        .call(
            Method::PATCH,
            &path,
            Some(&f.admin),
            Some(json!({"agent_grace_seconds": 5})),
        )
        .await;
    assert_eq!(r.body["agent_grace_seconds"], 5);
}
