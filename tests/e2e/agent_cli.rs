//! `berth agent` as a process against the real Worker: it connects with an agent token,
//! says hello and is welcomed (its log names the agent id), reconnects after the server
//! restarts, ends with exit code 1 and one clear line when its token is revoked (while it is
//! connected), forged or of another cluster, and closes cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::cli::binary;
use crate::scheduling::Team;

/// A running `berth agent` and the lines of its stderr so far.
pub struct Agent {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Agent {
    fn start(cluster: &str, token: &str) -> Self {
        let args = [
            "--driver",
            "exec",
            "--cpu",
            "2",
            "--memory",
            "1Gi",
            "--name",
            "e2e-agent",
        ];
        Self::spawn(cluster, token, &args, &[])
    }

    /// `berth agent --cluster CLUSTER ARGS…` with the token in its environment (and `env`).
    pub fn spawn(cluster: &str, token: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary())
            .args(["agent", "--cluster", cluster])
            .args(args)
            .envs(env.iter().copied())
            .env(
                "BERTH_URL",
                std::env::var("BERTH_E2E_URL").expect("BERTH_E2E_URL"),
            )
            // The token in the environment, where `ps` does not show it.
            .env("BERTH_AGENT_TOKEN", token)
            .env(
                "BERTH_CONFIG",
                std::env::temp_dir().join("berth-agent-e2e-none.toml"),
            )
            .env_remove("BERTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start berth agent");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent {
            child,
            lines,
            seen: vec![],
        }
    }

    /// The first line (from now on) containing `needle`, within `within`.
    pub async fn line(&mut self, needle: &str, within: Duration) -> String {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(within, wait).await {
            Ok(Some(line)) => line,
            _ => panic!(
                "no line with {needle:?} within {within:?}; the agent said: {:#?}",
                self.seen
            ),
        }
    }

    /// Every line it wrote so far (for a failure's message).
    pub fn said(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// The exit code within `within`, and every line it wrote.
    pub async fn exit(mut self, within: Duration) -> (i32, Vec<String>) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {within:?}: {:#?}", self.seen))
            .expect("wait");
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.lines.recv()).await
        {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.seen)
    }
}

impl Team {
    /// A new agent token of `cluster`: (its id, its secret).
    pub async fn agent_token(&self, cluster: &str) -> (String, String) {
        let t = self.c.agent_token(&self.admin, cluster, "e2e-agent").await;
        let field = |k: &str| t[k].as_str().expect(k).to_string();
        (field("id"), field("token"))
    }

    async fn revoke_agent_token(&self, cluster: &str, id: &str) {
        let path = format!("/v1/clusters/{cluster}/agent-tokens/{id}");
        let r = self
            .c
            .call(Method::DELETE, &path, Some(&self.admin), None)
            .await;
        assert_eq!(r.status.as_u16(), 204);
    }
}

/// The one `error: ` line of an agent that ended, and no backtrace.
fn error_line(lines: &[String]) -> String {
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("panicked") || l.contains("RUST_BACKTRACE")),
        "{lines:#?}"
    );
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    errors[0].clone()
}

/// Named for the restart group: `make test` runs it alone, after the others.
#[tokio::test]
async fn an_agent_connects_reconnects_after_a_restart_and_ends_when_its_token_is_revoked() {
    let team = Team::new().await;
    let cluster = team.cluster(16000, 65536, 0, false).await;
    let (id, secret) = team.agent_token(&cluster).await;
    let mut agent = Agent::start(&cluster, &secret);
    let connected = agent
        .line("connected as agent", Duration::from_secs(10))
        .await;
    // `… connected as agent <uuid> (e2e-agent, 2 cpu, 1Gi)`
    let agent_id = connected
        .split("connected as agent ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("an agent id");
    assert!(uuid::Uuid::parse_str(agent_id).is_ok(), "{connected}");
    assert!(
        connected.ends_with("(e2e-agent, 2 cpu, 1Gi)"),
        "{connected}"
    );

    // The server goes away and comes back: the agent notices, waits, and is welcomed again.
    crate::support::restart_server().await;
    let lost = agent
        .line("connection lost: ", Duration::from_secs(10))
        .await;
    assert!(lost.contains("; retrying in "), "{lost}");
    agent
        .line("connected as agent", Duration::from_secs(90))
        .await;

    // Revoked: the server closes the agent's socket (1008 "agent token revoked"), and the
    // agent ends at once rather than trying again with a token that will not come back.
    team.revoke_agent_token(&cluster, &id).await;
    let (code, lines) = agent.exit(Duration::from_secs(10)).await;
    assert_eq!(code, 1, "{lines:#?}");
    let error = error_line(&lines);
    assert!(error.contains("revoked"), "{error}");
}

#[tokio::test]
async fn an_agent_with_a_forged_token_or_another_cluster_ends_at_once() {
    let team = Team::new().await;
    let cluster = team.cluster(16000, 65536, 0, false).await;

    let forged = Agent::start(&cluster, "bat_forged0000000000000000000000");
    let (code, lines) = forged.exit(Duration::from_secs(10)).await;
    assert_eq!(code, 1, "{lines:#?}");
    let error = error_line(&lines);
    assert!(
        error.contains("401") && error.contains("invalid or revoked agent token"),
        "{error}"
    );
    assert!(
        lines.iter().any(|l| l.contains("connecting to ws://")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("retrying")), "{lines:#?}");

    // A real token, of another cluster: the server's 404 and what to check.
    let other = team.cluster(1000, 1024, 0, false).await;
    let (_, secret) = team.agent_token(&other).await;
    let wrong = Agent::start(&cluster, &secret);
    let (code, lines) = wrong.exit(Duration::from_secs(10)).await;
    assert_eq!(code, 1, "{lines:#?}");
    let error = error_line(&lines);
    assert!(
        error.contains("404") && error.contains("no such cluster"),
        "{error}"
    );
    assert!(error.contains("--cluster"), "{error}");
}

#[tokio::test]
async fn an_agent_closes_its_connection_and_exits_0_on_sigterm() {
    let team = Team::new().await;
    let cluster = team.cluster(16000, 65536, 0, false).await;
    let (_, secret) = team.agent_token(&cluster).await;
    let mut agent = Agent::start(&cluster, &secret);
    agent
        .line("connected as agent", Duration::from_secs(10))
        .await;
    let pid = agent.child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success());
    let (code, lines) = agent.exit(Duration::from_secs(5)).await;
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("SIGTERM: closing the connection")),
        "{lines:#?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.ends_with(" stopped")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("error: ")),
        "{lines:#?}"
    );
}
