//! The `berth` binary, run as a subprocess against the running Worker: a whole team's work
//! through it, its login kept and refreshed across processes, and every class of error with
//! its exit code. `make test` builds the binary first (`BERTH_E2E_CLI` names another one).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use berth::domain::ids::UserId;
use chrono::Utc;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::common::{unique_email, PASSWORD};
use crate::support::Client;

/// What one run of `berth` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "berth failed: {self:?}");
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("-o json printed no JSON ({e}): {}", self.stdout))
    }

    /// The last line of stdout (where secrets are printed).
    fn last_line(&self) -> String {
        self.stdout.lines().last().unwrap_or("").trim().to_string()
    }

    /// An error: the exit code, `error: ` first, one line per problem, never a backtrace.
    #[track_caller]
    fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "{self:?}"
        );
        &self.stderr
    }
}

/// One person at a terminal: their own config file.
struct Person {
    config: PathBuf,
    email: String,
    env: Vec<(String, String)>,
}

pub fn binary() -> PathBuf {
    let path = std::env::var_os("BERTH_E2E_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/berth"));
    assert!(
        path.exists(),
        "the berth binary {} is missing: `make test` builds it (cargo build -p berth-cli)",
        path.display()
    );
    path
}

impl Person {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("berth-cli-e2e-{}", Uuid::new_v4()));
        Self {
            config: dir.join("berth").join("config.toml"),
            email: unique_email(),
            env: vec![],
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None).await
    }

    async fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = tokio::process::Command::new(binary());
        cmd.args(args)
            .env("BERTH_CONFIG", &self.config)
            .env(
                "BERTH_URL",
                std::env::var("BERTH_E2E_URL").expect("BERTH_E2E_URL"),
            )
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_ORG")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run berth");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.unwrap_or("").as_bytes())
            .await
            .expect("write stdin");
        drop(pipe);
        let out = child.wait_with_output().await.expect("berth ran");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `berth ARGS` on a pseudo-terminal (util-linux `script`): what a person sees.
    async fn run_in_terminal(&self, args: &str, no_color: bool) -> String {
        let mut cmd = tokio::process::Command::new("script");
        cmd.args([
            "-qec",
            &format!("{} {args}", binary().display()),
            "/dev/null",
        ])
        .env("BERTH_CONFIG", &self.config)
        .env(
            "BERTH_URL",
            std::env::var("BERTH_E2E_URL").expect("BERTH_E2E_URL"),
        )
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().await.expect("script (util-linux) runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn register_and_login(&self) {
        let stdin = format!("{PASSWORD}\n");
        let email = self.email.as_str();
        self.run_with(
            &[
                "register",
                "--email",
                email,
                "--name",
                "Test User",
                "--password-stdin",
            ],
            Some(&stdin),
        )
        .await
        .ok();
        self.run_with(
            &["login", "--email", email, "--password-stdin"],
            Some(&stdin),
        )
        .await
        .ok();
    }

    fn config(&self) -> toml::Table {
        let text = std::fs::read_to_string(&self.config).expect("config file");
        text.parse().expect("config is TOML")
    }

    fn session(&self, key: &str) -> String {
        self.config()["session"][key]
            .as_str()
            .expect("session field")
            .to_string()
    }

    /// Rewrites the stored login's access token (and when it is believed to expire).
    fn set_access(&self, token: &str, expires_at: chrono::DateTime<Utc>) {
        let mut c = self.config();
        let session = c["session"].as_table_mut().expect("session");
        session.insert("access_token".into(), token.into());
        session.insert(
            "access_expires_at".into(),
            toml::Value::String(expires_at.to_rfc3339()),
        );
        std::fs::write(&self.config, toml::to_string(&c).expect("toml")).expect("write");
    }

    /// The stored user's id.
    async fn user_id(&self) -> UserId {
        let me = self.run(&["whoami", "-o", "json"]).await.ok().json();
        UserId(
            me["user"]["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
        )
    }
}

impl Drop for Person {
    fn drop(&mut self) {
        if let Some(dir) = self.config.parent().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn statuses(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("name").to_string(),
                d["status"].as_str().expect("status").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_team_works_through_the_cli() {
    let (ada, grace) = (Person::new(), Person::new());
    ada.register_and_login().await;
    grace.register_and_login().await;

    // The config is private to its owner and holds no password.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ada.config)
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&ada.config)
        .expect("read")
        .contains(PASSWORD));

    let org_name = format!("Acme {}", Uuid::new_v4());
    let created = ada.run(&["org", "create", &org_name]).await.ok();
    assert!(
        created.stdout.contains("now your default organization"),
        "{created:?}"
    );
    let invite = ada
        .run(&["invite", "create", "--role", "developer", "--expires", "2d"])
        .await
        .ok();
    let code = invite.last_line();
    assert!(
        code.starts_with("bic_"),
        "the code alone on the last line: {invite:?}"
    );
    let joined = grace.run(&["join", &code]).await.ok();
    assert!(joined.stdout.contains("as developer"), "{joined:?}");

    let members = ada.run(&["members", "-o", "json"]).await.ok().json();
    let roles: Vec<_> = members
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["email"].as_str().expect("e").to_string(),
                m["role"].clone(),
            )
        })
        .collect();
    assert!(
        roles.contains(&(ada.email.clone(), json!("admin"))),
        "{roles:?}"
    );
    assert!(
        roles.contains(&(grace.email.clone(), json!("developer"))),
        "{roles:?}"
    );

    ada.run(&[
        "cluster", "create", "gpu", "--cpu", "2", "--memory", "4Gi", "--gpus", "1",
    ])
    .await
    .ok();
    let cluster = ada
        .run(&["cluster", "get", "gpu", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        cluster["capacity"],
        json!({"cpu_millis": 2000, "memory_mib": 4096, "gpus": 1})
    );

    // Grace fills the cluster by name, and then two more wait.
    for (name, cpu) in [("a", "1"), ("b", "1000m"), ("c", "1.0"), ("d", "1.5")] {
        let r = grace
            .run(&[
                "deploy",
                name,
                "--cluster",
                "gpu",
                "--image",
                "alpine:3.20",
                "--cpu",
                cpu,
                "--memory",
                "1Gi",
            ])
            .await
            .ok();
        assert!(r.stdout.contains(&format!("Deployment {name} (")), "{r:?}");
    }
    let queue = grace.run(&["queue", "gpu", "-o", "json"]).await.ok().json();
    let waiting: Vec<_> = queue
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["name"].clone(),
                e["position"].clone(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        waiting,
        vec![
            (json!("c"), json!(1), json!("waiting_for_capacity")),
            (json!("d"), json!(2), json!("waiting_for_capacity")),
        ]
    );
    let table = grace.run(&["queue", "gpu"]).await.ok();
    let header = table.stdout.lines().next().expect("header");
    assert!(
        header.starts_with("POS") && header.contains("REASON"),
        "{table:?}"
    );

    // Stopping one admits the head (and what fits behind it) at once.
    grace.run(&["stop", "a", "--cluster", "gpu"]).await.ok();
    let all = grace.run(&["ps", "-o", "json"]).await.ok().json();
    let mut got = statuses(&all);
    got.sort();
    assert_eq!(
        got,
        [
            ("a", "stopped"),
            ("b", "running"),
            ("c", "running"),
            ("d", "queued")
        ]
        .map(|(n, s)| (n.to_string(), s.to_string()))
    );
    let shown = grace.run(&["get", "c", "-o", "json"]).await.ok().json();
    let kinds: Vec<_> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect();
    assert_eq!(kinds, ["created", "admitted"]);
    let events = grace.run(&["events", "c"]).await.ok();
    assert!(events.stdout.contains("admitted"), "{events:?}");
    let running = grace
        .run(&[
            "ps",
            "--cluster",
            "gpu",
            "--status",
            "running",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(statuses(&running).len(), 2);

    // The usage bars.
    let shown = ada.run(&["cluster", "get", "gpu"]).await.ok();
    assert!(
        shown.stdout.contains("2 / 2 allocated, 1.5 queued"),
        "{shown:?}"
    );
    assert!(shown.stdout.contains("100%"), "{shown:?}");

    // Priority, cancel, finish.
    let d = grace
        .run(&["set-priority", "d", "900", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(d["priority"], 900);
    grace.run(&["cancel", "d"]).await.ok();
    let done = grace
        .run(&[
            "finish",
            "b",
            "--outcome",
            "succeeded",
            "--message",
            "done",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(done["status"], "succeeded");

    // A command after `--` and environment variables, kept on the deployment.
    grace
        .run(&[
            "deploy",
            "job",
            "--cluster",
            "gpu",
            "--image",
            "alpine:3.20",
            "--cpu",
            "100m",
            "--env",
            "GREETING=hi",
            "-e",
            "EMPTY=",
            "--",
            "sh",
            "-c",
            "echo $GREETING",
        ])
        .await
        .ok();
    let job = grace.run(&["get", "job", "-o", "json"]).await.ok().json();
    assert_eq!(job["command"], json!(["sh", "-c", "echo $GREETING"]));
    assert_eq!(job["env"], json!({"EMPTY": "", "GREETING": "hi"}));
    let r = grace
        .run(&[
            "deploy",
            "bad",
            "--cluster",
            "gpu",
            "--image",
            "alpine",
            "--cpu",
            "1",
            "--env",
            "NOT-A-NAME=x",
        ])
        .await;
    assert!(
        r.failed(1)
            .contains("\n  --env NOT-A-NAME: is not a variable name"),
        "{r:?}"
    );
    let r = grace
        .run(&[
            "deploy",
            "bad",
            "--cluster",
            "gpu",
            "--image",
            "alpine",
            "--env",
            "=x",
        ])
        .await;
    r.failed(2);

    // An API key works through BERTH_TOKEN, with the organization given by its id.
    let key = ada
        .run(&["api-key", "create", "ci", "--role", "viewer"])
        .await
        .ok()
        .last_line();
    assert!(key.starts_with("bak_"), "{key}");
    let mut ci = Person::new();
    ci.env = vec![
        ("BERTH_TOKEN".into(), key),
        (
            "BERTH_ORG".into(),
            cluster["org_id"].as_str().expect("org").into(),
        ),
    ];
    let listed = ci
        .run(&["ps", "--cluster", "gpu", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(statuses(&listed).len(), 5);

    // Logging out revokes the login on the server, not only in the file.
    let refresh = grace.session("refresh_token");
    grace.run(&["logout"]).await.ok();
    let c = Client::new();
    let r = c.refresh(&refresh).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let after = grace.run(&["whoami"]).await;
    assert!(after.failed(1).contains("run berth login"), "{after:?}");
}

#[tokio::test]
async fn agent_tokens_are_created_listed_and_revoked_through_the_cli() {
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", &format!("Agents {}", Uuid::new_v4())])
        .await
        .ok();
    ada.run(&["cluster", "create", "gpu", "--cpu", "2", "--memory", "4Gi"])
        .await
        .ok();

    // The token alone on the last line, shown once; -o json is the API's answer.
    let created = ada
        .run(&["agent-token", "create", "gpu", "rack-7"])
        .await
        .ok();
    let token = created.last_line();
    assert!(token.starts_with("bat_"), "{created:?}");
    assert!(created.stdout.contains("rack-7 ("), "{created:?}");
    let second = ada
        .run(&["agent-token", "create", "gpu", "rack-8", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(second["token"].as_str().expect("token").starts_with("bat_"));
    assert_eq!(second["name"], "rack-8");

    let listed = ada
        .run(&["agent-token", "list", "gpu", "-o", "json"])
        .await
        .ok();
    assert!(!listed.stdout.contains(&token[4..]), "{listed:?}");
    let items = listed.json();
    let items = items.as_array().expect("array");
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(token.starts_with(items[0]["prefix"].as_str().expect("prefix")));
    let id = items[0]["id"].as_str().expect("id").to_string();
    let table = ada.run(&["agent-token", "list", "gpu"]).await.ok();
    let header = table.stdout.lines().next().expect("header");
    assert!(
        header.starts_with("ID") && header.contains("PREFIX") && header.contains("LAST USED"),
        "{table:?}"
    );
    assert!(table.stdout.contains("rack-7") && table.stdout.contains("active"));

    // The token is no credential for any command.
    let mut agent = Person::new();
    agent.env = vec![("BERTH_TOKEN".into(), token.clone())];
    let cluster_id = second["cluster_id"].as_str().expect("cluster_id");
    let r = agent.run(&["cluster", "get", cluster_id]).await;
    assert!(r.failed(1).contains("agent token"), "{r:?}");

    let revoked = ada.run(&["agent-token", "revoke", "gpu", &id]).await.ok();
    assert!(
        revoked
            .stdout
            .contains(&format!("Revoked agent token {id}")),
        "{revoked:?}"
    );
    let items = ada
        .run(&["agent-token", "list", "gpu", "-o", "json"])
        .await
        .ok()
        .json();
    assert!(items[0]["revoked_at"].is_string(), "{items}");
    assert!(items[1]["revoked_at"].is_null(), "{items}");
    let table = ada.run(&["agent-token", "list", "gpu"]).await.ok();
    assert!(table.stdout.contains("revoked"), "{table:?}");
    // Revoking an id the cluster does not have: one line, exit 1.
    let r = ada
        .run(&["agent-token", "revoke", "gpu", &Uuid::now_v7().to_string()])
        .await;
    assert!(r.failed(1).contains("agent token"), "{r:?}");
}

#[tokio::test]
async fn colour_only_on_a_terminal_and_never_with_no_color() {
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", "Colours"]).await.ok();
    ada.run(&["cluster", "create", "c", "--cpu", "1", "--memory", "1Gi"])
        .await
        .ok();
    ada.run(&[
        "deploy",
        "x",
        "--cluster",
        "c",
        "--image",
        "alpine",
        "--cpu",
        "1",
    ])
    .await
    .ok();
    let esc = '\u{1b}';
    let terminal = ada.run_in_terminal("ps", false).await;
    assert!(
        terminal.contains(esc) && terminal.contains("running"),
        "{terminal:?}"
    );
    let plain = ada.run_in_terminal("ps", true).await;
    assert!(
        !plain.contains(esc) && plain.contains("running"),
        "{plain:?}"
    );
    let mut piped = Person::new();
    piped.config = ada.config.clone();
    piped.env = vec![("CLICOLOR".into(), "1".into())];
    let r = piped.run(&["cluster", "get", "c"]).await;
    std::mem::forget(piped); // shares ada's folder, which ada removes
    let r = r.ok();
    assert!(
        !r.stdout.contains(esc) && r.stdout.contains("100%"),
        "{r:?}"
    );
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_and_the_new_refresh_token_kept() {
    let ada = Person::new();
    ada.register_and_login().await;
    let user = ada.user_id().await;
    let keys = Client::new().keys();

    // The server refuses the stored token (it expired an hour ago, though the file thinks
    // otherwise): the CLI refreshes and retries.
    let expired = keys.issue(user, Utc::now() - chrono::Duration::hours(1));
    ada.set_access(&expired, Utc::now() + chrono::Duration::minutes(10));
    let before = ada.session("refresh_token");
    ada.run(&["whoami"]).await.ok();
    let after = ada.session("refresh_token");
    assert_ne!(before, after, "rotated");
    assert_ne!(ada.session("access_token"), expired);

    // The file knows it expired: refreshed before it is sent.
    ada.set_access(&expired, Utc::now() - chrono::Duration::minutes(1));
    ada.run(&["org", "list"]).await.ok();
    assert_ne!(ada.session("refresh_token"), after);
}

#[tokio::test]
async fn concurrent_commands_after_the_access_token_expired_keep_the_login() {
    let ada = Person::new();
    ada.register_and_login().await;
    for round in 0..3 {
        ada.set_access("expired", Utc::now() - chrono::Duration::minutes(1));
        let runs =
            futures::future::join_all((0..4).map(|_| ada.run(&["whoami", "-o", "json"]))).await;
        for r in runs {
            let r = r.ok();
            assert_eq!(
                r.json()["user"]["email"],
                ada.email.as_str(),
                "round {round}"
            );
        }
    }
    // The family was never revoked: the stored refresh token still works.
    let r = Client::new().refresh(&ada.session("refresh_token")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn every_error_class_has_one_clear_line_and_its_exit_code() {
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", "Errors"]).await.ok();
    ada.run(&[
        "cluster", "create", "small", "--cpu", "1", "--memory", "1Gi",
    ])
    .await
    .ok();
    let deploy = |extra: &'static [&'static str]| {
        let mut args = vec!["deploy", "x", "--cluster", "small", "--image", "alpine"];
        args.extend_from_slice(extra);
        args
    };

    // Usage errors: 2, before anything is sent.
    for bad in [
        &["--cpu", "1.5.5", "--memory", "1Gi"][..],
        &["--cpu", "-1", "--memory", "1Gi"],
        &["--cpu", "1", "--memory", "10Qi"],
        &["--cpu", "1", "--memory", "512"],
        &["--cpu", "99999999999999", "--memory", "1Gi"],
        &["--cpu", "1", "--memory", "1Gi", "--max-runtime", "soon"],
        &["--cpu", "1", "--memory", "1Gi", "--max-runtime", "400d"],
        &["--cpu", "1", "--memory", "1Gi", "--priority", "5000"],
    ] {
        let mut args = deploy(&[]);
        args.extend_from_slice(bad);
        let r = ada.run(&args).await;
        r.failed(2);
        assert_eq!(
            r.stderr.lines().next().map(|l| l.contains("--")),
            Some(true),
            "{r:?}"
        );
    }
    ada.run(&["frobnicate"]).await.failed(2);
    ada.run(&["deploy", "x", "--cpu", "1"]).await.failed(2);
    let r = ada
        .run(&[
            "deploy",
            "x",
            "--cluster",
            "small",
            "--image",
            "Not An Image",
            "--cpu",
            "1",
            "--memory",
            "1Gi",
        ])
        .await;
    assert!(r.failed(2).starts_with("error: --image: "), "{r:?}");
    let r = ada
        .run(&deploy(&["--cpu", "1", "--memory", "1Gi", "-o", "yaml"]))
        .await;
    r.failed(2);

    // A problem document: its title and detail, then each field as its flag.
    let r = ada.run(&deploy(&["--cpu", "2", "--memory", "1Gi"])).await;
    let err = r.failed(1);
    assert!(
        err.contains(
            "\n  --cpu: asks for 2000, more than the cluster's total of 1000: it could never run"
        ),
        "{r:?}"
    );
    let r = ada.run(&deploy(&["--env", "1BAD=x"])).await;
    let err = r.failed(1);
    assert!(
        err.lines()
            .any(|l| l.starts_with("  --env 1BAD: is not a variable name")),
        "{r:?}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("  --cpu/--memory/--gpus: ")),
        "{r:?}"
    );
    assert!(!err.contains('{'), "no raw JSON: {r:?}");
    let r = ada.run(&["get", &Uuid::now_v7().to_string()]).await;
    assert!(r.failed(1).starts_with("error: Not found"), "{r:?}");
    ada.run(&["cluster", "get", "nowhere"]).await.failed(1);

    // `deploy --wait` on one that ends badly: 3.
    ada.run(&deploy(&["--cpu", "1", "--memory", "1Gi"]))
        .await
        .ok();
    let waiting = ada.run(&[
        "deploy",
        "w",
        "--cluster",
        "small",
        "--image",
        "alpine",
        "--cpu",
        "1",
        "--memory",
        "1Gi",
        "--wait",
        "-o",
        "json",
    ]);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        ada.run(&["cancel", "w", "--cluster", "small"]).await.ok();
    };
    let started = Instant::now();
    let (r, ()) = tokio::join!(waiting, cancel);
    assert!(r.failed(3).contains("ended cancelled"), "{r:?}");
    assert_eq!(r.json()["status"], "cancelled", "the final state, as JSON");
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // A wrong password is the server's own problem, not advice to log in.
    let r = ada
        .run_with(
            &["login", "--email", &ada.email, "--password-stdin"],
            Some("wrong password!"),
        )
        .await;
    let err = r.failed(1);
    assert!(
        err.contains("wrong e-mail or password") && !err.contains("run berth login"),
        "{r:?}"
    );
    // Without a terminal and without --password-stdin, nothing is read.
    let r = ada.run(&["login", "--email", &ada.email]).await;
    assert!(r.failed(2).contains("--password-stdin"), "{r:?}");

    // Values no request can carry are usage errors, not network failures.
    let mut odd = Person::new();
    odd.config = ada.config.clone();
    odd.env = vec![("BERTH_TOKEN".into(), "bak_\u{1}x".into())];
    let r = odd.run(&["ps"]).await;
    assert!(r.failed(2).contains("BERTH_TOKEN"), "{r:?}");
    odd.env = vec![];
    let r = odd
        .run(&[
            "deploy",
            "k",
            "--cluster",
            "small",
            "--image",
            "alpine",
            "--cpu",
            "1",
            "--idempotency-key",
            "a\nb",
        ])
        .await;
    r.failed(2);
    let r = odd
        .run(&["--server", "http://127.0.0.1:8788/?x=1", "ps"])
        .await;
    assert!(r.failed(2).contains("query"), "{r:?}");
    // Logging out of another server than the login's refuses, and keeps the login.
    let r = odd.run(&["--server", "http://127.0.0.1:9", "logout"]).await;
    assert!(r.failed(2).contains("you are logged in to"), "{r:?}");
    std::mem::forget(odd); // shares ada's folder, which ada removes
    ada.run(&["whoami"]).await.ok();
    // A login made while BERTH_TOKEN is set is checked with its own token.
    let mut ci = Person::new();
    ci.env = vec![("BERTH_TOKEN".into(), "bak_not_a_key".into())];
    let r = ci
        .run_with(
            &["login", "--email", &ada.email, "--password-stdin"],
            Some(PASSWORD),
        )
        .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&ada.email) && r.stderr.contains("BERTH_TOKEN is set"),
        "{r:?}"
    );

    // The server cannot be reached.
    let mut away = Person::new();
    away.env = vec![
        ("BERTH_URL".into(), "http://127.0.0.1:9".into()),
        ("BERTH_TOKEN".into(), "bak_x".into()),
    ];
    let r = away.run(&["org", "list"]).await;
    assert!(
        r.failed(1)
            .contains("cannot reach the Berth server at http://127.0.0.1:9"),
        "{r:?}"
    );
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");

    // The login has ended on the server (revoked family): one line saying what to do.
    let refresh = ada.session("refresh_token");
    let r = Client::new().refresh(&refresh).await;
    assert_eq!(r.status, StatusCode::OK);
    let again = Client::new().refresh(&refresh).await;
    assert_eq!(
        again.status,
        StatusCode::UNAUTHORIZED,
        "reuse revokes the family"
    );
    ada.set_access("expired", Utc::now() - chrono::Duration::minutes(1));
    let r = ada.run(&["ps"]).await;
    assert_eq!(
        r.failed(1).trim(),
        "error: your login has expired: run berth login"
    );
}

/// Runs after the others (its name matches `outage`): PostgreSQL is stopped under the
/// Worker, which answers 503 with `retry-after`; the CLI waits that long once and tries again.
#[tokio::test]
async fn outage_a_503_is_retried_once_after_its_retry_after() {
    let stop = std::env::var("BERTH_E2E_PG_STOP").expect("BERTH_E2E_PG_STOP (set by make test)");
    let start = std::env::var("BERTH_E2E_PG_START").expect("BERTH_E2E_PG_START (set by make test)");
    let sh = |cmd: &str| {
        let ok = std::process::Command::new("bash")
            .arg("-c")
            .arg(cmd)
            .stdout(Stdio::null())
            .status()
            .expect("run");
        assert!(ok.success(), "{cmd}");
    };
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", "Outage"]).await.ok();

    // Still down at the retry: one line, after one wait.
    sh(&stop);
    let started = Instant::now();
    let r = ada.run(&["org", "list"]).await;
    let waited = started.elapsed();
    sh(&start);
    let err = r.failed(1);
    assert_eq!(err.lines().count(), 1, "{r:?}");
    assert!(err.to_lowercase().contains("unavailable"), "{r:?}");
    assert!(
        waited >= Duration::from_secs(5),
        "honoured retry-after: {waited:?}"
    );
    assert!(waited < Duration::from_secs(25), "retried once: {waited:?}");

    // Back before the retry: the command succeeds.
    wait_for_database(&ada).await;
    sh(&stop);
    let run = ada.run(&["org", "list", "-o", "json"]);
    let heal = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sh(&start);
    };
    let (r, ()) = tokio::join!(run, heal);
    let r = r.ok();
    assert_eq!(r.json().as_array().map(Vec::len), Some(1), "{r:?}");
}

async fn wait_for_database(p: &Person) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.run(&["org", "list"]).await.code != 0 {
        assert!(
            Instant::now() < deadline,
            "the Worker reaches PostgreSQL again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `berth watch` as it runs: spawned, its lines read as they come.
struct Watching {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Watching {
    async fn spawn(p: &Person, args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(binary())
            .args(args)
            .env("BERTH_CONFIG", &p.config)
            .env(
                "BERTH_URL",
                std::env::var("BERTH_E2E_URL").expect("BERTH_E2E_URL"),
            )
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_ORG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("run berth watch");
        let stdout = child.stdout.take().expect("stdout");
        Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// The next line that satisfies `want`, within 10 s; the lines skipped on the way.
    async fn until(&mut self, want: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let mut skipped = vec![];
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no such line in time; saw {skipped:?}"))
                .expect("read")
                .unwrap_or_else(|| panic!("berth watch ended; saw {skipped:?}"));
            if want(&line) {
                return (line, skipped);
            }
            skipped.push(line);
        }
    }
}

#[tokio::test]
async fn watch_follows_a_cluster_live_and_resumes_across_an_expired_token() {
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", "Watchers"]).await.ok();
    ada.run(&["cluster", "create", "w", "--cpu", "1", "--memory", "1Gi"])
        .await
        .ok();
    let deploy = |name: &'static str| {
        let ada = &ada;
        async move {
            let args = [
                "deploy",
                name,
                "--cluster",
                "w",
                "--image",
                "alpine:3.20",
                "--cpu",
                "0.5",
                "--memory",
                "64Mi",
                "-o",
                "json",
            ];
            ada.run(&args).await.ok().json()["id"]
                .as_str()
                .expect("id")
                .to_string()
        }
    };

    // What a person sees: the cluster now, then a line per change.
    let mut human = Watching::spawn(&ada, &["watch", "w"]).await;
    human.until(|l| l.starts_with("Watching w")).await;
    let first = deploy("first").await;
    let (line, _) = human.until(|l| l.contains("admitted")).await;
    assert!(
        line.contains("first running") && line.contains(&first),
        "{line}"
    );
    human
        .until(|l| l.contains("usage") && l.contains("cpu 0.5/1"))
        .await;

    // A token the file believes good for 10 minutes, which the server holds expired in
    // 4 s: the server ends the stream then, and berth resumes it with a fresh token.
    let user = ada.user_id().await;
    let short = Client::new()
        .keys()
        .issue(user, Utc::now() - chrono::Duration::seconds(15 * 60 - 4));
    ada.set_access(&short, Utc::now() + chrono::Duration::minutes(10));
    let mut json = Watching::spawn(&ada, &["watch", "w", "-o", "json"]).await;
    let (line, _) = json.until(|_| true).await;
    let snapshot: Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(snapshot["data"]["usage"]["allocated"]["cpu_millis"], 500);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = deploy("second").await;
    let (line, skipped) = json
        .until(|l| l.contains(&second) && l.contains("\"admitted\""))
        .await;
    let event: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(event["event"], "deployment");
    assert_eq!(event["data"]["status"], "running");
    assert!(
        skipped.iter().all(|l| !l.contains("\"snapshot\"")),
        "resumed, not started over: {skipped:?}"
    );
    assert_ne!(ada.session("access_token"), short, "refreshed");
    human.until(|l| l.contains(&second)).await;
    let _ = human.child.start_kill();
    let _ = json.child.start_kill();

    // A cluster that does not exist is one clear line.
    let run = ada.run(&["watch", "nope"]).await;
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
}

#[tokio::test]
async fn deploy_dry_run_says_what_would_happen_and_submits_nothing() {
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", "Planners"]).await.ok();
    ada.run(&["cluster", "create", "p", "--cpu", "1", "--preemption"])
        .await
        .ok();
    let deploy = |name: &'static str, priority: &'static str, dry: bool| {
        let ada = &ada;
        async move {
            let mut args = vec![
                "deploy",
                name,
                "--cluster",
                "p",
                "--image",
                "alpine:3.20",
                "--cpu",
                "1",
                "--priority",
                priority,
            ];
            if dry {
                args.push("--dry-run");
            }
            ada.run(&args).await.ok()
        }
    };
    let run = deploy("first", "100", true).await;
    assert!(
        run.stdout.contains("first would be admitted on p now."),
        "{run:?}"
    );
    assert!(run.stdout.contains("Nothing was submitted"), "{run:?}");
    deploy("first", "100", false).await;
    let run = deploy("second", "100", true).await;
    assert!(
        run.stdout
            .contains("second would wait on p at position 1: waiting_for_capacity."),
        "{run:?}"
    );
    let run = deploy("urgent", "900", true).await;
    assert!(run.stdout.contains("preempting 1:"), "{run:?}");
    assert!(
        run.stdout.contains("first ("),
        "the victim by name: {run:?}"
    );
    let json = ada
        .run(&[
            "deploy",
            "urgent",
            "--cluster",
            "p",
            "--image",
            "alpine:3.20",
            "--cpu",
            "1",
            "--priority",
            "900",
            "--dry-run",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(json["outcome"], "admitted");
    assert_eq!(json["preempts"].as_array().map(Vec::len), Some(1));
    let ps = ada.run(&["ps", "-o", "json"]).await.ok().json();
    assert_eq!(
        ps.as_array().map(Vec::len),
        Some(1),
        "only the real one: {ps}"
    );
}

#[tokio::test]
async fn deploy_after_waits_for_its_dependencies_by_name_or_id_in_any_cluster() {
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", "Pipelines"]).await.ok();
    for c in ["prep", "train"] {
        ada.run(&["cluster", "create", c, "--cpu", "2"]).await.ok();
    }
    let deploy = |name: &'static str, cluster: &'static str, after: Vec<String>| {
        let ada = &ada;
        async move {
            let mut args: Vec<String> = ["deploy", name, "--cluster", cluster, "--image"]
                .iter()
                .map(|s| s.to_string())
                .chain(["alpine:3.20", "--cpu", "1"].map(String::from))
                .collect();
            for a in after {
                args.extend(["--after".to_string(), a]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ada.run(&args).await
        }
    };
    let fetch = deploy("fetch", "prep", vec![]).await.ok();
    assert!(fetch.stdout.contains("on prep: running."), "{fetch:?}");
    let clean = deploy("clean", "prep", vec![]).await.ok();
    let clean_id = ada.run(&["get", "clean", "-o", "json"]).await.ok().json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    // By name (found in the organization's clusters) and by id, in another cluster.
    let train = deploy("train", "train", vec!["fetch".into(), clean_id.clone()])
        .await
        .ok();
    assert!(
        train.stdout.contains("on train: queued at position 1."),
        "{train:?}"
    );
    let queue = ada.run(&["queue", "train"]).await.ok();
    assert!(
        queue.stdout.contains("waiting_for_dependencies"),
        "{queue:?}"
    );
    let got = ada.run(&["get", "train"]).await.ok();
    assert!(got.stdout.contains("Depends on:"), "{got:?}");
    assert!(got.stdout.contains(&clean_id), "{got:?}");
    let _ = clean;

    ada.run(&["finish", "fetch", "--outcome", "succeeded"])
        .await
        .ok();
    ada.run(&["stop", "clean"]).await.ok();
    let got = ada.run(&["get", "train", "-o", "json"]).await.ok().json();
    assert_eq!(got["status"], "cancelled", "{got}");
    assert_eq!(
        got["message"],
        format!("dependency {clean_id} was stopped").as_str()
    );
    let events = ada.run(&["events", "train"]).await.ok();
    assert!(events.stdout.contains("cancelled"), "{events:?}");

    // A dependency that can never succeed is refused, named by the flag.
    let run = deploy("eval", "train", vec![clean_id.clone()]).await;
    let stderr = run.failed(1);
    assert!(
        stderr.contains(&format!(
            "--after: {clean_id} was stopped: it can never succeed"
        )),
        "{stderr}"
    );
    let run = deploy("eval", "train", vec!["nope".into()]).await;
    run.failed(1);
}

#[tokio::test]
async fn metrics_prints_the_organization_s_scrape_as_prometheus_reads_it() {
    let ada = Person::new();
    ada.register_and_login().await;
    ada.run(&["org", "create", "Watchers"]).await.ok();
    ada.run(&["cluster", "create", "m", "--cpu", "2"])
        .await
        .ok();
    ada.run(&[
        "deploy",
        "job",
        "--cluster",
        "m",
        "--image",
        "alpine:3.20",
        "--cpu",
        "1",
    ])
    .await
    .ok();
    let cluster = ada
        .run(&["cluster", "get", "m", "-o", "json"])
        .await
        .ok()
        .json();
    let id = cluster["id"].as_str().expect("id");
    let run = ada.run(&["metrics"]).await.ok();
    crate::common::promtool_check(&run.stdout);
    let admissions = format!(r#"berth_admissions_total{{cluster_id="{id}"}}"#);
    assert_eq!(crate::common::sample(&run.stdout, &admissions), 1.0);
    let cpu = format!(
        r#"berth_cluster_allocated{{cluster_id="{id}",cluster="m",resource="cpu_millis"}}"#
    );
    assert_eq!(crate::common::sample(&run.stdout, &cpu), 1000.0);
    let json = ada.run(&["metrics", "-o", "json"]).await.ok();
    assert_eq!(json.stdout, run.stdout, "the API's own answer either way");
}
