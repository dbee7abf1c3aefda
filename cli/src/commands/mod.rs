//! What each command does: one file per area (accounts, organizations, clusters,
//! deployments), and here what they share: the context and turning names into ids.

mod accounts;
mod agent;
mod clusters;
mod deployments;
mod orgs;
mod watch;

use berth::http::wire::{Cluster, Deployment, Org};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::args::{Command, Global, Output};
use crate::client::Client;
use crate::config;
use crate::error::CliError;

pub type Result<T = ()> = std::result::Result<T, CliError>;

/// What every command has at hand.
pub struct Ctx {
    pub client: Client,
    pub out: Output,
    org: Option<String>,
}

pub async fn run(global: Global, command: Command) -> Result {
    if let Command::Completions { shell } = command {
        use clap::CommandFactory;
        let mut cli = crate::args::Cli::command();
        clap_complete::generate(shell, &mut cli, "berth", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Agent(args) = command {
        return agent::agent(global, args).await;
    }
    let config_path = config::path()?;
    let ctx = Ctx {
        client: Client::new(global.server, config_path)?,
        out: global.output,
        org: global.org.filter(|o| !o.trim().is_empty()),
    };
    match command {
        Command::Register {
            email,
            name,
            password_stdin,
        } => accounts::register(&ctx, email, name, password_stdin).await,
        Command::Login {
            email,
            password_stdin,
        } => accounts::login(&ctx, email, password_stdin).await,
        Command::Logout => accounts::logout(&ctx).await,
        Command::Whoami => accounts::whoami(&ctx).await,
        Command::Org(c) => orgs::org(&ctx, c).await,
        Command::Members { command } => orgs::members(&ctx, command).await,
        Command::Invite(c) => orgs::invite(&ctx, c).await,
        Command::Join { code } => orgs::join(&ctx, code).await,
        Command::Metrics => orgs::metrics(&ctx).await,
        Command::ApiKey(c) => orgs::api_key(&ctx, c).await,
        Command::Cluster(c) => clusters::cluster(&ctx, c).await,
        Command::AgentToken(c) => clusters::agent_token(&ctx, c).await,
        Command::Agents { cluster } => clusters::agents(&ctx, &cluster).await,
        Command::Queue { cluster } => clusters::queue(&ctx, &cluster).await,
        Command::Watch { cluster } => watch::watch(&ctx, &cluster).await,
        Command::Deploy(a) => deployments::deploy(&ctx, a).await,
        Command::Ps { cluster, status } => deployments::ps(&ctx, cluster, status).await,
        Command::Get(d) => deployments::get(&ctx, d).await,
        Command::Events(d) => deployments::events(&ctx, d).await,
        Command::Cancel(d) => deployments::act(&ctx, d, "cancel").await,
        Command::Stop(d) => deployments::act(&ctx, d, "stop").await,
        Command::Finish {
            deployment,
            outcome,
            message,
        } => deployments::finish(&ctx, deployment, outcome, message).await,
        Command::SetPriority {
            deployment,
            priority,
        } => deployments::set_priority(&ctx, deployment, priority).await,
        Command::Completions { .. } | Command::Agent(_) => Ok(()),
    }
}

impl Ctx {
    /// The organization: `--org` (name or id), else the stored default.
    pub async fn org_id(&self) -> Result<Uuid> {
        if let Some(o) = &self.org {
            return self.resolve_org(o).await.map(|o| o.0);
        }
        config::load(&self.client.config_path)?
            .org
            .map(|o| o.id)
            .ok_or_else(|| {
                CliError::Usage(
                    "no organization chosen: pass --org ORG or run berth org use ORG".into(),
                )
            })
    }

    /// An organization by id or by name among yours: (id, name).
    pub async fn resolve_org(&self, o: &str) -> Result<(Uuid, String)> {
        let Some(id) = as_id(o) else {
            return self.org_by_name(o).await;
        };
        match self.client.get(&format!("/v1/orgs/{id}")).await {
            Ok(reply) => {
                let org: Org = reply.parse()?;
                Ok((org.id, org.name))
            }
            // A name may look like an id: tried as a name before the 404 stands.
            Err(e) if e.is_not_found() => self.org_by_name(o).await.map_err(|_| e),
            Err(e) => Err(e),
        }
    }

    async fn org_by_name(&self, o: &str) -> Result<(Uuid, String)> {
        let (orgs, _) = match self.client.list::<Org>("/v1/orgs").await {
            Err(CliError::Api { problem, .. })
                if problem.status == 403 && self.client.uses_env_token() =>
            {
                return Err(CliError::Usage(format!(
                    "an API key cannot look up an organization by its name ('{o}'): give --org \
                     the organization's id"
                )))
            }
            other => other?,
        };
        unique(orgs, |x| &x.name, o, "organization", "your organizations")
            .map(|org| (org.id, org.name))
    }

    /// A cluster by id, or by name in the organization.
    pub async fn cluster(&self, c: &str) -> Result<Cluster> {
        let Some(id) = as_id(c) else {
            return self.cluster_by_name(c).await;
        };
        match self.client.get(&format!("/v1/clusters/{id}")).await {
            Ok(reply) => reply.parse(),
            Err(e) if e.is_not_found() => self.cluster_by_name(c).await.map_err(|_| e),
            Err(e) => Err(e),
        }
    }

    async fn cluster_by_name(&self, c: &str) -> Result<Cluster> {
        let org = self.org_id().await?;
        let clusters = self.clusters(org).await?;
        let found = unique(clusters, |x| &x.name, c, "cluster", "the organization")?;
        self.client
            .get(&format!("/v1/clusters/{}", found.id))
            .await?
            .parse()
    }

    pub async fn clusters(&self, org: Uuid) -> Result<Vec<Cluster>> {
        Ok(self
            .client
            .list::<Cluster>(&format!("/v1/orgs/{org}/clusters"))
            .await?
            .0)
    }

    /// A deployment's id: an id as it is, or a name unique in the cluster (or the org).
    pub async fn deployment_id(&self, name: &str, cluster: Option<&str>) -> Result<Uuid> {
        if let Some(id) = as_id(name) {
            return Ok(id);
        }
        let clusters = match cluster {
            Some(c) => vec![self.cluster(c).await?],
            None => self.clusters(self.org_id().await?).await?,
        };
        let mut found: Vec<Deployment> = Vec::new();
        for c in &clusters {
            let path = format!("/v1/clusters/{}/deployments", c.id);
            let (ds, _) = self.client.list::<Deployment>(&path).await?;
            found.extend(ds.into_iter().filter(|d| d.name == name));
        }
        let place = match cluster {
            Some(c) => format!("cluster {c}"),
            None => "the organization".to_string(),
        };
        unique(found, |d| &d.name, name, "deployment", &place).map(|d| d.id)
    }

    /// Fetches `path` and prints it as JSON, or hands the typed value to `show`.
    pub async fn show<T: DeserializeOwned>(&self, path: &str, show: impl Fn(T)) -> Result {
        let reply = self.client.get(path).await?;
        self.print(&reply, show)
    }

    /// Prints an answer: the API's JSON with `-o json`, else through `show`.
    pub fn print<T: DeserializeOwned>(
        &self,
        reply: &crate::client::Reply,
        show: impl Fn(T),
    ) -> Result {
        // Parsed either way: an answer that is not the API's is an error, not output.
        let value: T = reply.parse()?;
        if self.out == Output::Json {
            crate::output::json(&reply.body);
        } else {
            show(value);
        }
        Ok(())
    }

    /// Says what a command did (not with `-o json`, whose output is only the API's JSON).
    pub fn say(&self, line: impl std::fmt::Display) {
        if self.out != Output::Json {
            anstream::println!("{line}");
        }
    }
}

/// `s` as an id when it is written as one (the hyphenated form the API prints).
fn as_id(s: &str) -> Option<Uuid> {
    (s.len() == 36).then(|| Uuid::parse_str(s).ok()).flatten()
}

/// The one item named `name`: none or several are errors that say so.
fn unique<T>(
    items: Vec<T>,
    name_of: impl Fn(&T) -> &String,
    name: &str,
    what: &str,
    place: &str,
) -> Result<T> {
    let mut matching: Vec<T> = items.into_iter().filter(|i| name_of(i) == name).collect();
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(CliError::Other(format!(
            "no {what} named '{name}' in {place}"
        ))),
        n => Err(CliError::Other(format!(
            "{n} {what}s are named '{name}' in {place}: use an id"
        ))),
    }
}

/// An argument enum as the API's value (its clap name is the wire name, `-` for `_`).
pub fn wire<A: clap::ValueEnum, T: DeserializeOwned>(arg: A) -> T {
    let name = arg
        .to_possible_value()
        .map(|v| v.get_name().replace('-', "_"))
        .unwrap_or_default();
    match serde_json::from_value(serde_json::Value::String(name)) {
        Ok(v) => v,
        Err(e) => panic!("argument value without an API value: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{OutcomeArg, QueueingArg, RoleArg, StatusArg};
    use berth::http::wire::{FinishOutcome, Queueing, Role, Status};
    use clap::ValueEnum;

    /// Every choice a flag offers is a value of the API's own type.
    #[test]
    fn every_argument_choice_is_an_api_value() {
        for r in RoleArg::value_variants() {
            let _: Role = wire(*r);
        }
        for s in StatusArg::value_variants() {
            let _: Status = wire(*s);
        }
        for o in OutcomeArg::value_variants() {
            let _: FinishOutcome = wire(*o);
        }
        for q in QueueingArg::value_variants() {
            let _: Queueing = wire(*q);
        }
        assert_eq!(Role::Admin, wire(RoleArg::Admin));
        assert_eq!(Queueing::BestEffort, wire(QueueingArg::BestEffort));
    }

    #[test]
    fn names_resolve_only_when_unique() {
        let names = || vec!["a".to_string(), "b".to_string(), "b".to_string()];
        assert_eq!(unique(names(), |s| s, "a", "x", "y").unwrap(), "a");
        let none = unique(names(), |s| s, "c", "cluster", "the organization").unwrap_err();
        assert_eq!(none.to_string(), "no cluster named 'c' in the organization");
        let two = unique(names(), |s| s, "b", "cluster", "the organization").unwrap_err();
        assert!(two.to_string().contains("2 clusters are named 'b'"));
    }
}
