//! Deployments really run: the real `berth agent` binary, its Docker driver on a real Docker
//! daemon (`scripts/docker.sh`, no network, a local busybox image), against the real Worker
//! and its cluster objects. Containers start with their limits, report their exits, stop on
//! request, at `max_runtime_seconds` and for a preemptor; an agent killed with SIGKILL comes
//! back to the containers it left, and one that stays away loses its deployments to another.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::agent_cli::Agent;
use crate::common::kinds;
use crate::scheduling::Team;

/// The image `scripts/docker.sh` imports (made from the host's busybox, nothing pulled).
const IMAGE: &str = "berth-test/busybox:1";

fn docker_host() -> String {
    match std::env::var("BERTH_E2E_DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => panic!(
            "BERTH_E2E_DOCKER_HOST is not set: these tests need a Docker daemon (`make test` \
             starts one with scripts/docker.sh)"
        ),
    }
}

/// `docker ARGS…` against the test daemon: its stdout.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("/usr/bin/docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .expect("the docker client");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The states of the deployment's containers on the daemon (`running`, `exited`, …).
fn containers(deployment: &str) -> Vec<String> {
    let filter = format!("label=berth.deployment={deployment}");
    let out = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.State}}"]);
    out.lines().map(str::to_string).collect()
}

fn docker_agent(cluster: &str, token: &str, name: &str) -> Agent {
    let host = docker_host();
    let args = [
        "--driver", "docker", "--cpu", "2", "--memory", "1Gi", "--name", name,
    ];
    Agent::spawn(cluster, token, &args, &[("DOCKER_HOST", host.as_str())])
}

fn exec_agent(cluster: &str, token: &str, name: &str) -> Agent {
    let args = [
        "--driver", "exec", "--cpu", "2", "--memory", "1Gi", "--name", name,
    ];
    Agent::spawn(cluster, token, &args, &[])
}

impl Team {
    /// A cluster of 2 CPUs and 1 GiB whose agents have `grace` seconds to come back.
    async fn agents_cluster(&self, preemption: bool, grace: i64) -> String {
        let cluster = self.cluster(2000, 1024, 0, preemption).await;
        let r = self
            .c
            .call(
                Method::PATCH,
                &format!("/v1/clusters/{cluster}"),
                Some(&self.admin),
                Some(json!({"agent_grace_seconds": grace})),
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
        cluster
    }

    /// Submits `sh -c SCRIPT` with `cpu` mCPU and 64 MiB; answers its id.
    async fn sh(&self, cluster: &str, name: &str, script: &str, extra: Value) -> String {
        let mut body = json!({"name": name, "image": IMAGE, "command": ["sh", "-c", script],
            "resources": {"cpu_millis": 500, "memory_mib": 64, "gpus": 0}});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = self.submit(cluster, body).await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }

    async fn deployment(&self, id: &str) -> Value {
        let r = self
            .c
            .call(
                Method::GET,
                &format!("/v1/deployments/{id}"),
                Some(&self.admin),
                None,
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
        r.body
    }

    /// The deployment once `until` holds of it, within `within` (polled).
    async fn until(
        &self,
        id: &str,
        within: Duration,
        agent: &mut Agent,
        what: &str,
        until: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let d = self.deployment(id).await;
            if until(&d) {
                return d;
            }
            if started.elapsed() > within {
                panic!(
                    "{id} not {what} within {within:?}: {d:#}\nthe agent said: {:#?}",
                    agent.said()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(&self, id: &str) {
        let r = self
            .c
            .call(
                Method::POST,
                &format!("/v1/deployments/{id}/stop"),
                Some(&self.admin),
                None,
            )
            .await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    }
}

/// When the deployment's first event of `kind` happened.
fn at(d: &Value, kind: &str) -> chrono::DateTime<chrono::Utc> {
    let e = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event: {d:#}"));
    e["at"].as_str().expect("at").parse().expect("a time")
}

/// Polls `check` until it holds, within `within`.
async fn eventually(within: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "not {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn containers_run_with_their_limits_report_their_exit_and_stop_when_told() {
    let team = Team::new().await;
    let cluster = team.agents_cluster(true, 60).await;
    let (_, token) = team.agent_token(&cluster).await;
    let mut agent = docker_agent(&cluster, &token, "e2e-docker-1");
    agent.line("connected as agent", LONG).await;

    // Exit 0, with its env and its output kept.
    let env = json!({"env": {"GREETING": "berth"}});
    let ok = team
        .sh(&cluster, "ok", "echo hello from $GREETING", env)
        .await;
    let d = team
        .until(&ok, LONG, &mut agent, "succeeded", |d| {
            d["status"] == "succeeded"
        })
        .await;
    assert_eq!(d["exit_code"], 0);
    assert_eq!(d["message"], "hello from berth\n");
    assert_eq!(d["agent"]["name"], "e2e-docker-1");
    assert!(d["started_at"].is_string(), "{d:#}");
    let k = kinds(&d);
    assert_eq!(
        k,
        [
            "created",
            "admitted",
            "assigned",
            "started",
            "exited",
            "succeeded"
        ],
        "{d:#}"
    );
    // Forgotten once reported: the container is removed.
    eventually(LONG, "removed", || containers(&ok).is_empty()).await;

    // Exit 3: failed, with the code.
    let bad = team
        .sh(&cluster, "bad", "echo boom >&2; exit 3", json!({}))
        .await;
    let d = team
        .until(&bad, LONG, &mut agent, "failed", |d| {
            d["status"] == "failed"
        })
        .await;
    assert_eq!(
        (d["exit_code"].clone(), d["message"].clone()),
        (json!(3), json!("boom\n"))
    );

    // An image that cannot be pulled (its registry, a refusing loopback port): failed, with why.
    let body = json!({"name": "nowhere", "image": "127.0.0.1:9/missing:1",
        "resources": {"cpu_millis": 100, "memory_mib": 16, "gpus": 0}});
    let r = team.submit(&cluster, body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let nowhere = r.body["id"].as_str().expect("id").to_string();
    let d = team
        .until(&nowhere, LONG, &mut agent, "failed", |d| {
            d["status"] == "failed"
        })
        .await;
    assert!(d["exit_code"].is_null(), "{d:#}");
    let exited = &d["events"].as_array().expect("events")[3];
    assert_eq!(exited["kind"], "exited");
    assert!(
        exited["reason"]
            .as_str()
            .expect("reason")
            .starts_with("did not run: "),
        "{d:#}"
    );

    // A long one runs with its limits, and no network.
    let long = team.sh(&cluster, "long", "sleep 600", json!({})).await;
    team.until(&long, LONG, &mut agent, "started", |d| {
        d["placement"] == "started"
    })
    .await;
    let name = format!("berth-{long}");
    let limits = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}} {{index .Config.Labels \"berth.agent\"}}",
        &name,
    ]);
    assert_eq!(limits, "67108864 500000000 none e2e-docker-1");
    // Stopped through the API: SIGTERM (ignored by `sleep` as PID 1), SIGKILL after the grace.
    team.stop(&long).await;
    let d = team
        .until(&long, LONG, &mut agent, "exited", |d| {
            !d["exit_code"].is_null()
        })
        .await;
    assert_eq!(
        (d["status"].clone(), d["exit_code"].clone()),
        (json!("stopped"), json!(137))
    );
    eventually(LONG, "removed", || containers(&long).is_empty()).await;

    // Past max_runtime_seconds: failed as expired, and its container is stopped.
    let runtime = json!({"max_runtime_seconds": 2});
    let late = team.sh(&cluster, "late", "sleep 600", runtime).await;
    let d = team
        .until(&late, LONG, &mut agent, "expired and exited", |d| {
            d["status"] == "failed" && !d["exit_code"].is_null()
        })
        .await;
    assert!(kinds(&d).contains(&"expired".to_string()), "{d:#}");
    assert_eq!(d["message"], "ran longer than max_runtime_seconds");

    // Preemption: the preemptor starts only once its victim's container has stopped.
    let trap = "trap 'sleep 2; exit 0' TERM; sleep 600 & wait";
    let whole = json!({"resources": {"cpu_millis": 2000, "memory_mib": 64, "gpus": 0}});
    let low = team.sh(&cluster, "low", trap, whole.clone()).await;
    team.until(&low, LONG, &mut agent, "started", |d| {
        d["placement"] == "started"
    })
    .await;
    let mut high_body = whole.clone();
    high_body["priority"] = json!(900);
    let high = team.sh(&cluster, "high", "sleep 600", high_body).await;
    let h = team
        .until(&high, LONG, &mut agent, "started", |d| {
            d["placement"] == "started"
        })
        .await;
    let l = team.deployment(&low).await;
    assert_eq!(
        (l["status"].clone(), l["exit_code"].clone()),
        (json!("queued"), json!(0)),
        "{l:#}"
    );
    assert!(at(&h, "assigned") >= at(&l, "exited"), "{h:#}\n{l:#}");
    team.stop(&high).await;
    team.until(&high, LONG, &mut agent, "exited", |d| {
        !d["exit_code"].is_null()
    })
    .await;
    // The victim runs again once there is room.
    team.until(&low, LONG, &mut agent, "started again", |d| {
        d["placement"] == "started"
    })
    .await;
    team.stop(&low).await;
    team.until(&low, LONG, &mut agent, "stopped", |d| {
        d["status"] == "stopped"
    })
    .await;
}

#[tokio::test]
async fn a_killed_agent_finds_its_containers_again_and_one_away_too_long_loses_them() {
    let team = Team::new().await;
    let cluster = team.agents_cluster(false, 5).await;
    let (_, token) = team.agent_token(&cluster).await;
    let mut agent = docker_agent(&cluster, &token, "e2e-docker-2");
    agent.line("connected as agent", LONG).await;
    let long = team.sh(&cluster, "long", "sleep 600", json!({})).await;
    team.until(&long, LONG, &mut agent, "started", |d| {
        d["placement"] == "started"
    })
    .await;

    // SIGKILL, then back at once: it reports the container it left, which keeps running;
    // no second copy is started and nothing is lost.
    agent.child.start_kill().expect("kill");
    let _ = agent.child.wait().await;
    let mut agent = docker_agent(&cluster, &token, "e2e-docker-2");
    agent.line("connected as agent", LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(containers(&long), ["running"]);
    let d = team.deployment(&long).await;
    assert_eq!(d["placement"], "started", "{d:#}");
    assert!(!kinds(&d).contains(&"lost".to_string()), "{d:#}");
    assert_eq!(
        kinds(&d).iter().filter(|k| *k == "assigned").count(),
        1,
        "{d:#}"
    );

    // Killed again and away past the 5 s grace: lost, requeued, admitted again, and run by
    // another agent (the exec driver, as a plain process).
    agent.child.start_kill().expect("kill");
    let _ = agent.child.wait().await;
    let d = team
        .until(&long, LONG, &mut agent, "lost", |d| {
            kinds(d).contains(&"lost".to_string())
        })
        .await;
    assert_eq!(d["placement"], "awaiting_agent", "{d:#}");
    let mut other = exec_agent(&cluster, &token, "e2e-exec");
    other.line("connected as agent", LONG).await;
    let d = team
        .until(&long, LONG, &mut other, "started elsewhere", |d| {
            d["placement"] == "started" && d["agent"]["name"] == "e2e-exec"
        })
        .await;
    let k = kinds(&d);
    assert_eq!(
        &k[k.len() - 5..],
        ["lost", "requeued", "admitted", "assigned", "started"],
        "{d:#}"
    );

    // The first agent comes back with the old copy still running: it is told to stop it.
    let mut back = docker_agent(&cluster, &token, "e2e-docker-2");
    back.line("connected as agent", LONG).await;
    eventually(LONG, "the old copy stopped", || {
        containers(&long).iter().all(|s| s != "running")
    })
    .await;
    let d = team.deployment(&long).await;
    assert_eq!(
        (d["placement"].clone(), d["agent"]["name"].clone()),
        (json!("started"), json!("e2e-exec"))
    );

    team.stop(&long).await;
    let d = team
        .until(&long, LONG, &mut other, "exited", |d| {
            !d["exit_code"].is_null()
        })
        .await;
    assert_eq!(d["status"], "stopped");
    let agents = team
        .c
        .call(
            Method::GET,
            &format!("/v1/clusters/{cluster}/agents"),
            Some(&team.admin),
            None,
        )
        .await;
    let items = agents.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{:#}", agents.body);
    assert!(
        items.iter().all(|a| a["status"] == "connected"),
        "{:#}",
        agents.body
    );
}

/// Named for the restart group: `make test` runs it alone, after the others. The server goes
/// away for longer than the cluster's grace: the agent stops what it runs before the server
/// gives it to another agent (so nothing runs twice), reports the exit when it is back, and
/// the deployment, lost and requeued, runs again.
#[tokio::test]
async fn an_agent_away_past_the_grace_during_a_restart_stops_what_it_runs() {
    let team = Team::new().await;
    let cluster = team.agents_cluster(false, 5).await;
    let (_, token) = team.agent_token(&cluster).await;
    let mut agent = exec_agent(&cluster, &token, "e2e-away");
    agent.line("connected as agent", LONG).await;
    let long = team.sh(&cluster, "long", "sleep 600", json!({})).await;
    team.until(&long, LONG, &mut agent, "started", |d| {
        d["placement"] == "started"
    })
    .await;

    crate::support::restart_server().await;
    agent.line("away from the server too long", LONG).await;
    agent.line(&format!("exited {long}"), LONG).await;
    agent
        .line("connected as agent", Duration::from_secs(90))
        .await;
    let d = team
        .until(&long, LONG, &mut agent, "lost and started again", |d| {
            d["placement"] == "started" && kinds(d).contains(&"lost".to_string())
        })
        .await;
    let k = kinds(&d);
    assert_eq!(k.iter().filter(|k| *k == "started").count(), 2, "{d:#}");
    team.stop(&long).await;
    team.until(&long, LONG, &mut agent, "stopped", |d| {
        !d["exit_code"].is_null()
    })
    .await;
}

/// Whether a process whose command line holds `needle` runs on this machine.
fn process_with(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
        })
}

#[tokio::test]
async fn an_exec_agent_killed_takes_its_processes_with_it() {
    let team = Team::new().await;
    let cluster = team.agents_cluster(false, 60).await;
    let (_, token) = team.agent_token(&cluster).await;
    let mut agent = exec_agent(&cluster, &token, "e2e-exec-kill");
    agent.line("connected as agent", LONG).await;
    // A sleep whose command line is this test's own.
    let seconds = format!("600.{}", std::process::id());
    let body = json!({"name": "sleeper", "image": IMAGE, "command": ["sleep", seconds],
        "resources": {"cpu_millis": 100, "memory_mib": 16, "gpus": 0}});
    let r = team.submit(&cluster, body).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_string();
    team.until(&id, LONG, &mut agent, "started", |d| {
        d["placement"] == "started"
    })
    .await;
    assert!(process_with(&format!("sleep {seconds}")));
    agent.child.start_kill().expect("kill");
    let _ = agent.child.wait().await;
    eventually(LONG, "its process gone", || {
        !process_with(&format!("sleep {seconds}"))
    })
    .await;
}
