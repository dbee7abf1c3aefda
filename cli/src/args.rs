//! The command line: every command, flag and example `--help` shows. What each command does
//! is in `commands/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::units;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: share clusters fairly. Deploy, queue and watch from the terminal.",
    long_about = "Berth admits container deployments to clusters by priority the moment \
capacity allows, queues them when it does not, and never overcommits a cluster.\n\n\
The server is --server, else BERTH_URL, else the one you logged in to, else \
http://127.0.0.1:8787 (`make dev`). BERTH_TOKEN (an API key or an access token) overrides \
the stored login. The config file is $BERTH_CONFIG, else $XDG_CONFIG_HOME/berth/config.toml, \
else ~/.config/berth/config.toml.",
    after_help = "Examples:
  berth register --email ada@example.com --name Ada
  berth login --email ada@example.com
  berth org create 'Acme Research'
  berth cluster create gpu-east --cpu 64 --memory 256Gi --gpus 8
  berth deploy trainer --cluster gpu-east --image ghcr.io/acme/trainer:1.4 \\
      --cpu 8 --memory 32Gi --gpus 2 --wait
  berth queue gpu-east
  berth ps -o json | jq '.[].status'

Exit codes: 0 success, 1 error, 2 usage error, 3 `deploy --wait` on a deployment
that ended other than running or succeeded."
)]
#[command(subcommand_required = true, arg_required_else_help = false)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The Berth server, e.g. https://berth.example.com.
    #[arg(long, global = true, env = "BERTH_URL", value_name = "URL")]
    pub server: Option<String>,
    /// The organization (name or id); default: the one `berth org use` chose.
    #[arg(long, global = true, env = "BERTH_ORG", value_name = "ORG")]
    pub org: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// More columns.
    Wide,
    /// The API's JSON: one object, or an array for lists.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account.
    #[command(after_help = "Examples:
  berth register --email ada@example.com --name 'Ada Lovelace'
  printf '%s' \"$PASSWORD\" | berth register --email ci@example.com --name CI \\
      --password-stdin")]
    Register {
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Read the password from standard input instead of a hidden prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log in; the login is kept in the config file (never the password).
    #[command(after_help = "Examples:
  berth login --email ada@example.com
  berth login --email ada@example.com --server https://berth.example.com
  printf '%s' \"$PASSWORD\" | berth login --email ci@example.com --password-stdin")]
    Login {
        #[arg(long)]
        email: String,
        /// Read the password from standard input instead of a hidden prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log out: the server revokes the stored refresh token and the file forgets it.
    #[command(after_help = "Example:\n  berth logout")]
    Logout,
    /// Who you are logged in as, and your organizations.
    #[command(after_help = "Examples:\n  berth whoami\n  berth whoami -o json")]
    Whoami,
    /// Organizations: create, list, choose the default.
    #[command(
        subcommand,
        subcommand_required = true,
        arg_required_else_help = false,
        after_help = "Examples:\n  berth org create 'Acme Research'\n  berth org use 'Acme Research'"
    )]
    Org(OrgCommand),
    /// The members of the organization; change a role or remove someone.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:
  berth members
  berth members set-role grace@example.com admin
  berth members remove grace@example.com"
    )]
    Members {
        #[command(subcommand)]
        command: Option<MembersCommand>,
    },
    /// Invite codes: create (the code is printed once), list, revoke.
    #[command(
        subcommand,
        subcommand_required = true,
        arg_required_else_help = false,
        after_help = "Examples:\n  berth invite create --role developer\n  berth invite list"
    )]
    Invite(InviteCommand),
    /// Join an organization with an invite code.
    #[command(after_help = "Example:\n  berth join bic_3q2…")]
    Join { code: String },
    /// The organization's metrics as Prometheus scrapes them (its text format): every
    /// cluster's capacity, allocation, queue, counters, queue waits and agents.
    #[command(after_help = "Examples:
  berth metrics
  berth metrics --org acme | grep '^berth_queue_wait_seconds_count'")]
    Metrics,
    /// API keys for scripts and CI: create (the key is printed once), list, revoke.
    #[command(
        subcommand,
        subcommand_required = true,
        arg_required_else_help = false,
        name = "api-key",
        after_help = "Examples:
  berth api-key create ci-deployer --role developer
  BERTH_TOKEN=bak_… berth ps"
    )]
    ApiKey(ApiKeyCommand),
    /// Clusters and their capacity.
    #[command(
        subcommand,
        subcommand_required = true,
        arg_required_else_help = false,
        after_help = "Examples:\n  berth cluster create gpu-east --cpu 64 --memory 256Gi --gpus 8\n  berth cluster get gpu-east"
    )]
    Cluster(ClusterCommand),
    /// Tokens a cluster's agent connects with: create (printed once), list, revoke.
    #[command(
        subcommand,
        name = "agent-token",
        after_help = "Examples:
  berth agent-token create gpu-east rack-7
  berth agent-token list gpu-east"
    )]
    AgentToken(AgentTokenCommand),
    /// Run this machine as an agent of a cluster: connect, stay connected, reconnect.
    ///
    /// The agent connects to the cluster with an agent token (from `berth agent-token
    /// create`, best passed in BERTH_AGENT_TOKEN so that it stays out of `ps`), announces
    /// its capacity (by default the machine's CPUs and memory, no GPUs), and reconnects
    /// after every drop, waiting 1 s doubling to 60 s (jittered). A refused or revoked token
    /// and a cluster that is not the token's end it with exit code 1. Ctrl-C or SIGTERM
    /// closes the connection and exits 0. It logs one line per change to stderr.
    #[command(after_help = "Examples:
  BERTH_AGENT_TOKEN=bat_… berth agent --cluster 0194…
  berth agent --cluster 0194… --token bat_… --driver exec --name rack-7
  berth agent --cluster 0194… --cpu 4 --memory 8Gi --gpus 0 \\
      --server https://berth.example.com")]
    Agent(AgentArgs),
    /// The machines that have connected as a cluster's agents, and whether they are now.
    #[command(after_help = "Examples:\n  berth agents gpu-east\n  berth agents gpu-east -o json")]
    Agents {
        /// Cluster name or id.
        cluster: String,
    },
    /// Watch a cluster live: every change as it is committed, until Ctrl-C.
    #[command(after_help = "Examples:
  berth watch gpu-east
  berth watch gpu-east -o json | jq -c 'select(.event == \"deployment\")'

The first lines show the cluster now (usage, queue head, agents), then one line
per deployment event, usage change or agent coming and going. With -o json, one
object per line: {\"event\": …, \"id\": …, \"data\": …}, data as the API's watch
stream has it. A broken stream is resumed where it stopped.")]
    Watch {
        /// Cluster name or id.
        cluster: String,
    },
    /// A cluster's queue in scheduling order, with positions and why each waits.
    #[command(after_help = "Examples:\n  berth queue gpu-east\n  berth queue gpu-east -o json")]
    Queue {
        /// Cluster name or id.
        cluster: String,
    },
    /// Submit a deployment to a cluster.
    #[command(after_help = "Examples:
  berth deploy trainer --cluster gpu-east --image ghcr.io/acme/trainer:1.4 \\
      --cpu 8 --memory 32Gi --gpus 2
  berth deploy batch --cluster cpu --image alpine:3.20 --cpu 500m \\
      --memory 512Mi --priority 700 --max-runtime 2h
  berth deploy api --cluster cpu --image nginx:1.27 --cpu 1 --memory 1Gi --wait
  berth deploy job --cluster cpu --image alpine:3.20 --cpu 1 --memory 256Mi \\
      --env MODE=fast -- sh -c 'echo hello'
  berth deploy big --cluster gpu-east --image ghcr.io/acme/trainer:1.4 \\
      --cpu 32 --gpus 8 --priority 900 --dry-run
  berth deploy eval --cluster gpu-west --image ghcr.io/acme/eval:0.9 \\
      --cpu 4 --memory 16Gi --after trainer --after 0194…")]
    Deploy(DeployArgs),
    /// List deployments (every cluster of the organization, or one).
    #[command(after_help = "Examples:
  berth ps
  berth ps --cluster gpu-east --status queued
  berth ps -o wide")]
    Ps {
        /// Only this cluster (name or id).
        #[arg(long)]
        cluster: Option<String>,
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
    },
    /// Show one deployment with its events.
    #[command(
        after_help = "Examples:\n  berth get 0194…\n  berth get trainer --cluster gpu-east -o json"
    )]
    Get(DeploymentRef),
    /// A deployment's history.
    #[command(after_help = "Example:\n  berth events 0194…")]
    Events(DeploymentRef),
    /// Cancel a queued deployment.
    #[command(after_help = "Example:\n  berth cancel 0194…")]
    Cancel(DeploymentRef),
    /// Stop a running deployment; what fits in the freed room is admitted.
    #[command(after_help = "Example:\n  berth stop trainer --cluster gpu-east")]
    Stop(DeploymentRef),
    /// Report how a running deployment ended (what a cluster's agent does).
    #[command(after_help = "Examples:
  berth finish 0194… --outcome succeeded
  berth finish 0194… --outcome failed --message 'exit code 137'")]
    Finish {
        #[command(flatten)]
        deployment: DeploymentRef,
        #[arg(long, value_enum)]
        outcome: OutcomeArg,
        /// Why it ended (at most 1000 characters).
        #[arg(long)]
        message: Option<String>,
    },
    /// Change the priority of a queued or running deployment (0–1000; may admit or preempt).
    #[command(after_help = "Example:\n  berth set-priority 0194… 900")]
    SetPriority {
        #[command(flatten)]
        deployment: DeploymentRef,
        #[arg(value_parser = clap::value_parser!(i32).range(0..=1000))]
        priority: i32,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  berth completions bash > ~/.local/share/bash-completion/completions/berth
  berth completions zsh > \"${fpath[1]}/_berth\"
  berth completions fish > ~/.config/fish/completions/berth.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization; you become its admin (and it becomes your default if you
    /// had none).
    #[command(after_help = "Example:\n  berth org create 'Acme Research'")]
    Create { name: String },
    /// Your organizations and your role in each.
    #[command(after_help = "Example:\n  berth org list")]
    List,
    /// Choose the organization later commands use (`--org` overrides it).
    #[command(after_help = "Examples:\n  berth org use 'Acme Research'\n  berth org use 0194…")]
    Use { org: String },
    /// Show an organization (default: the current one).
    #[command(alias = "show", after_help = "Example:\n  berth org get")]
    Get { org: Option<String> },
    /// Leave an organization (default: the current one).
    #[command(after_help = "Example:\n  berth org leave 'Acme Research'")]
    Leave { org: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// List the members (the default).
    #[command(after_help = "Examples:\n  berth members list\n  berth members -o json")]
    List,
    /// Change a member's role (admin only).
    #[command(after_help = "Example:\n  berth members set-role grace@example.com admin")]
    SetRole {
        /// E-mail or user id.
        member: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Remove a member (admin only; to leave yourself, `berth org leave`).
    #[command(after_help = "Example:\n  berth members remove grace@example.com")]
    Remove {
        /// E-mail or user id.
        member: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create an invite; the code is printed once, alone on the last line.
    #[command(after_help = "Examples:
  berth invite create --role developer
  berth invite create --role viewer --expires 30d --max-uses 20")]
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// How long the code works (60s to 30d; default 7d).
        #[arg(long, value_parser = invite_lifetime, allow_hyphen_values = true)]
        expires: Option<i64>,
        /// How many people may use it (1–1000; default 1).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1000))]
        max_uses: Option<i64>,
    },
    /// The organization's invites (without their codes).
    #[command(after_help = "Example:\n  berth invite list")]
    List,
    /// Revoke an invite.
    #[command(after_help = "Example:\n  berth invite revoke 0194…")]
    Revoke { id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; the key is printed once, alone on the last line.
    #[command(after_help = "Example:\n  berth api-key create ci-deployer --role developer")]
    Create {
        name: String,
        /// At most your own role.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// The organization's API keys (without their secrets).
    #[command(after_help = "Example:\n  berth api-key list")]
    List,
    /// Revoke an API key.
    #[command(after_help = "Example:\n  berth api-key revoke 0194…")]
    Revoke { id: Uuid },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster with a capacity.
    #[command(after_help = "Examples:
  berth cluster create gpu-east --cpu 64 --memory 256Gi --gpus 8
  berth cluster create cpu --cpu 16 --memory 64Gi --strict --preemption
  berth cluster create batch --cpu 32 --memory 128Gi --agent-grace 5m")]
    Create {
        name: String,
        #[command(flatten)]
        capacity: Capacity,
        /// Strict queueing: nothing passes the head of the queue (default: best effort).
        #[arg(long)]
        strict: bool,
        /// Let higher priorities preempt lower ones.
        #[arg(long)]
        preemption: bool,
        /// How long an agent may stay away before what it ran is lost and requeued
        /// (5s to 1h; default 60s).
        #[arg(long, value_parser = agent_grace, value_name = "DURATION")]
        agent_grace: Option<i32>,
    },
    /// The organization's clusters.
    #[command(after_help = "Examples:\n  berth cluster list\n  berth cluster list -o wide")]
    List,
    /// A cluster with a usage bar per resource.
    #[command(alias = "show", after_help = "Example:\n  berth cluster get gpu-east")]
    Get { cluster: String },
    /// Change a cluster's capacity (dimensions not given stay as they are).
    #[command(after_help = "Example:\n  berth cluster resize gpu-east --gpus 16")]
    Resize {
        cluster: String,
        #[arg(long, value_parser = units::cpu, allow_hyphen_values = true)]
        cpu: Option<i64>,
        #[arg(long, value_parser = units::memory, allow_hyphen_values = true)]
        memory: Option<i64>,
        #[arg(long, value_parser = units::gpus, allow_hyphen_values = true)]
        gpus: Option<i64>,
    },
    /// Rename a cluster or change its policies.
    #[command(after_help = "Examples:
  berth cluster update gpu-east --name gpu-west
  berth cluster update gpu-east --queueing strict --preemption true
  berth cluster update gpu-east --agent-grace 2m")]
    Update {
        cluster: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum)]
        queueing: Option<QueueingArg>,
        #[arg(long)]
        preemption: Option<bool>,
        /// How long an agent may stay away before what it ran is lost (5s to 1h).
        #[arg(long, value_parser = agent_grace, value_name = "DURATION")]
        agent_grace: Option<i32>,
    },
    /// Delete a cluster (refused while deployments are queued or running).
    #[command(after_help = "Example:\n  berth cluster delete gpu-east")]
    Delete { cluster: String },
}

#[derive(Debug, Subcommand)]
pub enum AgentTokenCommand {
    /// Create a token for a cluster's agent (admin); printed once, alone on the last line.
    ///
    /// The token only connects that cluster's agent: no command and no API route accepts it.
    #[command(after_help = "Examples:
  berth agent-token create gpu-east rack-7
  berth agent-token create gpu-east rack-7 -o json | jq -r .token")]
    Create {
        /// Cluster name or id.
        cluster: String,
        /// A label for the token, e.g. the machine the agent runs on.
        name: String,
    },
    /// The cluster's agent tokens, without their secrets (admin).
    #[command(
        after_help = "Examples:\n  berth agent-token list gpu-east\n  berth agent-token list gpu-east -o json"
    )]
    List {
        /// Cluster name or id.
        cluster: String,
    },
    /// Revoke an agent token (admin); its agent can no longer connect.
    #[command(after_help = "Example:\n  berth agent-token revoke gpu-east 0194…")]
    Revoke {
        /// Cluster name or id.
        cluster: String,
        /// The token's id (`berth agent-token list`).
        id: Uuid,
    },
}

#[derive(Debug, Args)]
pub struct Capacity {
    /// CPU: cores (64, 1.5) or millicores (1500m).
    #[arg(long, value_parser = units::cpu, default_value = "0", allow_hyphen_values = true)]
    pub cpu: i64,
    /// Memory: 512Mi, 4Gi, 1Ti.
    #[arg(long, value_parser = units::memory, default_value = "0Mi", allow_hyphen_values = true)]
    pub memory: i64,
    /// Whole GPUs.
    #[arg(long, value_parser = units::gpus, default_value = "0", allow_hyphen_values = true)]
    pub gpus: i64,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The cluster's id (an agent token cannot look a cluster up by its name).
    #[arg(long, value_name = "CLUSTER_ID")]
    pub cluster: Uuid,
    /// The agent token (`bat_…`); prefer BERTH_AGENT_TOKEN, which `ps` does not show.
    #[arg(
        long,
        env = "BERTH_AGENT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// What runs the deployments: Docker containers, or plain processes (no isolation).
    #[arg(long, value_enum, default_value_t = DriverArg::Docker)]
    pub driver: DriverArg,
    /// The agent's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// CPU offered: cores (4, 1.5) or millicores (1500m); default: the machine's CPUs.
    #[arg(long, value_parser = units::cpu, allow_hyphen_values = true)]
    pub cpu: Option<i64>,
    /// Memory offered: 512Mi, 8Gi; default: the machine's memory.
    #[arg(long, value_parser = units::memory, allow_hyphen_values = true)]
    pub memory: Option<i64>,
    /// Whole GPUs offered (default 0).
    #[arg(long, value_parser = units::gpus, allow_hyphen_values = true)]
    pub gpus: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverArg {
    /// Docker containers with CPU and memory limits (DOCKER_HOST, else
    /// /var/run/docker.sock).
    Docker,
    /// Plain child processes of the agent, without isolation or limits.
    Exec,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The deployment's name.
    pub name: String,
    /// Cluster name or id.
    #[arg(long)]
    pub cluster: String,
    /// OCI image reference, e.g. ghcr.io/acme/trainer:1.4.
    #[arg(long)]
    pub image: String,
    #[command(flatten)]
    pub resources: Capacity,
    /// 0–1000 (default 500); higher runs first.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=1000))]
    pub priority: Option<i32>,
    /// Fail it when it runs longer: 90s, 2h, 7d (at most 365d).
    #[arg(long, value_parser = max_runtime, allow_hyphen_values = true)]
    pub max_runtime: Option<i64>,
    /// Wait until it runs (or ends), showing its place in the queue.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// Submit nothing: say what it would meet now (admitted, queued at a position and why,
    /// preempting which deployments, or never fitting).
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until this deployment (id, or a name unique in the organization) has
    /// succeeded; cancelled if it fails, is stopped or cancelled (repeatable, any cluster).
    #[arg(long = "after", value_name = "ID|NAME")]
    pub after: Vec<String>,
    /// Makes a retried submission safe: the same key returns the first one's deployment.
    #[arg(long, value_name = "KEY", value_parser = idempotency_key)]
    pub idempotency_key: Option<String>,
    /// An environment variable of the process (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = env_var)]
    pub env: Vec<(String, String)>,
    /// After `--`: the program and its arguments, replacing the image's command.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn max_runtime(s: &str) -> Result<i64, String> {
    let secs = units::seconds(s)?;
    if secs > berth::domain::deployment::MAX_RUNTIME_SECONDS {
        return Err(format!("'{s}' is longer than 365d"));
    }
    Ok(secs)
}

fn agent_grace(s: &str) -> Result<i32, String> {
    let secs = units::seconds(s)?;
    let (min, max, _) = berth::http::wire::AGENT_GRACE_SECONDS;
    if !(min..=max).contains(&secs) {
        return Err(format!("'{s}' must be between 5s and 1h"));
    }
    i32::try_from(secs).map_err(|_| format!("'{s}' is too long"))
}

fn invite_lifetime(s: &str) -> Result<i64, String> {
    let secs = units::seconds(s)?;
    if !(60..=30 * 86_400).contains(&secs) {
        return Err(format!("'{s}' must be between 60s and 30d"));
    }
    Ok(secs)
}

/// 1 to 255 visible ASCII characters (spaces inside allowed), as the server takes it.
fn idempotency_key(s: &str) -> Result<String, String> {
    let ok = !s.trim().is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be 1 to 255 visible ASCII characters".into())
    }
}

/// `NAME=VALUE` (the value may be empty or contain `=`).
fn env_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("'{s}' is not NAME=VALUE")),
    }
}

/// A deployment: its id, or its name when that is unique (in `--cluster`, else in every
/// cluster of the organization).
#[derive(Debug, Args)]
pub struct DeploymentRef {
    /// Deployment id, or a name unique in the cluster.
    pub deployment: String,
    /// Look the name up in this cluster only.
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Developer,
    Admin,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Stopped,
    Cancelled,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutcomeArg {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum QueueingArg {
    BestEffort,
    Strict,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `--help` of every command, at every level, ends with examples.
    #[test]
    fn every_command_has_examples() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", c.get_name());
            if c.get_name() != "help" {
                let help = c
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.contains("Example") {
                    missing.push(path.clone());
                }
                // Examples are copied into a shell: none may wrap on an 80-column terminal.
                for line in help.lines().filter(|l| l.chars().count() > 80) {
                    missing.push(format!("{path}: too long for 80 columns: {line}"));
                }
            }
            for sub in c.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = vec![];
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no examples: {missing:?}");
    }

    #[test]
    fn completions_for_every_shell() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut out);
            let text = String::from_utf8(out).expect("utf-8");
            assert!(
                text.contains("set-priority")
                    && text.contains("api-key")
                    && text.contains("agent-token"),
                "{shell}"
            );
        }
    }
}
