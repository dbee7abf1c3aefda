//! Real `berth agent --driver exec` processes for the benchmark programs (`dispatch`,
//! `crash`): the release binary (BERTH_BIN, else target/release/berth), each agent's stderr
//! in a log file of its own (BENCH_LOG_DIR, else the temporary folder), SIGKILL and restart
//! by index. Every process is killed when the set is dropped or [`Agents::kill_all`] runs.

// Each program uses what it needs of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

pub struct Agents {
    bin: PathBuf,
    url: String,
    cluster: String,
    token: String,
    /// `--cpu` and `--memory` as the agent takes them (`4`, `4Gi`).
    cpu: String,
    memory: String,
    prefix: String,
    logs: PathBuf,
    children: Vec<Option<Child>>,
    /// Starts of each agent so far (its log is appended to).
    pub starts: Vec<usize>,
}

impl Agents {
    /// `n` agents named `{prefix}-{i}` of `cluster`, each offering `cpu` and `memory`.
    pub fn spawn(
        n: usize,
        prefix: &str,
        (url, cluster, token): (&str, &str, &str),
        cpu: &str,
        memory: &str,
    ) -> Self {
        let bin = std::env::var_os("BERTH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/berth"));
        assert!(
            bin.is_file(),
            "{} is missing: build it with `cargo build --release -p berth-cli` (or set BERTH_BIN)",
            bin.display()
        );
        let logs = std::env::var_os("BENCH_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&logs).expect("the agents' log folder");
        let mut agents = Agents {
            bin,
            url: url.into(),
            cluster: cluster.into(),
            token: token.into(),
            cpu: cpu.into(),
            memory: memory.into(),
            prefix: prefix.into(),
            logs,
            children: (0..n).map(|_| None).collect(),
            starts: vec![0; n],
        };
        for i in 0..n {
            agents.start(i);
        }
        agents
    }

    pub fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// Starts agent `i` (again).
    pub fn start(&mut self, i: usize) {
        let name = self.name(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("agent-{name}.log")))
            .expect("an agent's log file");
        let child = Command::new(&self.bin)
            .args(["agent", "--cluster", &self.cluster, "--driver", "exec"])
            .args([
                "--name",
                &name,
                "--cpu",
                &self.cpu,
                "--memory",
                &self.memory,
            ])
            .env("BERTH_URL", &self.url)
            // The token in the environment, where `ps` does not show it.
            .env("BERTH_AGENT_TOKEN", &self.token)
            .env("BERTH_CONFIG", self.logs.join("berth-agent-none.toml"))
            .env_remove("BERTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start berth agent");
        self.children[i] = Some(child);
        self.starts[i] += 1;
    }

    /// SIGKILLs agent `i` and reaps it (the exec driver's children die with it:
    /// PR_SET_PDEATHSIG).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    pub async fn kill_all(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i).await;
        }
    }
}

/// The cluster's agents as `GET /v1/clusters/{id}/agents` lists them (none on an error).
pub async fn list(http: &reqwest::Client, base: &str, token: &str, cluster: &str) -> Vec<Value> {
    let Ok(r) = http
        .get(format!("{base}/v1/clusters/{cluster}/agents"))
        .bearer_auth(token)
        .send()
        .await
    else {
        return vec![];
    };
    if !r.status().is_success() {
        return vec![];
    }
    let body: Value = r.json().await.unwrap_or(Value::Null);
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until `n` of the cluster's agents are connected, within `within`; answers whether.
pub async fn connected(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    cluster: &str,
    n: usize,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let up = list(http, base, token, cluster)
            .await
            .iter()
            .filter(|a| a["status"] == "connected")
            .count();
        if up >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
