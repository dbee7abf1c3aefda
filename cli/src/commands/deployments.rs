//! Deployments: submit (and wait), list, show, change, end.

use std::time::Duration;

use berth::http::wire::{
    Cluster, CreateDeploymentRequest, Deployment, DryRun, FinishRequest, ImageRef, Resources,
    Status, UpdateDeploymentRequest,
};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use super::{wire, Ctx, Result};
use crate::args::{DeployArgs, DeploymentRef, OutcomeArg, Output, StatusArg};
use crate::error::CliError;
use crate::output::{self, wire_name};

/// The API's submission fields as the flags that set them.
const DEPLOY_FLAGS: &[(&str, &str)] = &[
    ("name", "NAME"),
    ("image", "--image"),
    ("resources", "--cpu/--memory/--gpus"),
    ("resources.cpu_millis", "--cpu"),
    ("resources.memory_mib", "--memory"),
    ("resources.gpus", "--gpus"),
    ("priority", "--priority"),
    ("max_runtime_seconds", "--max-runtime"),
    ("command", "COMMAND"),
    ("env", "--env"),
    ("depends_on", "--after"),
];

/// `--wait` asks the server at most this often.
const POLL: Duration = Duration::from_secs(1);

pub async fn deploy(ctx: &Ctx, a: DeployArgs) -> Result {
    let image = ImageRef::parse(&a.image)
        .map_err(|m| CliError::Usage(format!("--image: '{}' {m}", a.image)))?;
    // In range already (at most 365d, checked by the flag's parser).
    let max_runtime_seconds = a.max_runtime.and_then(|s| i32::try_from(s).ok());
    let cluster = ctx.cluster(&a.cluster).await?;
    let mut depends_on = Vec::with_capacity(a.after.len());
    for after in &a.after {
        // A name is looked for in every cluster of the organization.
        depends_on.push(ctx.deployment_id(after, None).await?);
    }
    let body = CreateDeploymentRequest {
        name: a.name,
        image,
        resources: Resources::new(a.resources.cpu, a.resources.memory, a.resources.gpus),
        priority: a.priority,
        max_runtime_seconds,
        command: (!a.command.is_empty()).then_some(a.command),
        env: (!a.env.is_empty()).then(|| a.env.into_iter().collect()),
        depends_on,
    };
    if a.dry_run {
        return dry_run(ctx, &cluster, &body).await;
    }
    // Always a key, so that the one retry after a 503 cannot submit twice.
    let key = a
        .idempotency_key
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let reply = ctx
        .client
        .send(
            Method::POST,
            &format!("/v1/clusters/{}/deployments", cluster.id),
            Some(&body),
            Some(&key),
        )
        .await
        .map_err(|e| e.with_flags(DEPLOY_FLAGS))?;
    let d: Deployment = reply.parse()?;
    if !a.wait {
        return ctx.print(&reply, |d: Deployment| say_where(&d, &cluster.name));
    }
    if ctx.out != Output::Json {
        say_where(&d, &cluster.name);
    }
    let (d, raw) = wait(ctx, d, reply.body).await?;
    if ctx.out == Output::Json {
        output::json(&raw);
    }
    match d.status {
        Status::Running | Status::Succeeded => {
            ctx.say(format!("{} is {}.", d.name, output::status(d.status)));
            Ok(())
        }
        other => Err(CliError::Ended(format!(
            "deployment {} ended {}{}",
            d.name,
            wire_name(&other),
            d.message
                .map(|m| format!(": {}", output::clean(&m)))
                .unwrap_or_default()
        ))),
    }
}

/// `deploy --dry-run`: what the submission would meet now, with the preempted deployments
/// named.
async fn dry_run(ctx: &Ctx, cluster: &Cluster, body: &CreateDeploymentRequest) -> Result {
    let path = format!("/v1/clusters/{}/deployments?dry_run=true", cluster.id);
    let reply = ctx
        .client
        .send(Method::POST, &path, Some(body), None)
        .await
        .map_err(|e| e.with_flags(DEPLOY_FLAGS))?;
    let plan: DryRun = reply.parse()?;
    if ctx.out == Output::Json {
        output::json(&reply.body);
        return Ok(());
    }
    let name = output::bold(&body.name);
    match plan.outcome.as_str() {
        "admitted" if plan.preempts.is_empty() => {
            anstream::println!("{name} would be admitted on {} now.", cluster.name)
        }
        "admitted" => {
            anstream::println!(
                "{name} would be admitted on {} now, preempting {}:",
                cluster.name,
                plan.preempts.len()
            );
            for id in &plan.preempts {
                let shown = match ctx.client.get(&format!("/v1/deployments/{id}")).await {
                    Ok(r) => r
                        .parse::<Deployment>()
                        .map(|d| {
                            format!("{} ({id}, priority {})", output::clean(&d.name), d.priority)
                        })
                        .unwrap_or_else(|_| id.to_string()),
                    Err(_) => id.to_string(),
                };
                anstream::println!("  {shown}");
            }
        }
        "queued" => anstream::println!(
            "{name} would wait on {} at position {}: {}.",
            cluster.name,
            plan.position.unwrap_or(1),
            plan.reason.map_or("waiting".to_string(), |r| wire_name(&r))
        ),
        _ => anstream::println!(
            "{name} would never fit {}: it asks for more than the cluster has.",
            cluster.name
        ),
    }
    ctx.say("Nothing was submitted (--dry-run).");
    Ok(())
}

fn say_where(d: &Deployment, cluster: &str) {
    let place = match (d.status, d.position) {
        (Status::Queued, Some(p)) => format!("queued at position {p}"),
        (s, _) => wire_name(&s),
    };
    anstream::println!(
        "Deployment {} ({}) on {cluster}: {}.",
        output::bold(&d.name),
        d.id,
        place
    );
}

/// Polls (once a second) until the deployment is no longer queued, with a spinner on a
/// terminal showing its place in the queue.
async fn wait(ctx: &Ctx, mut d: Deployment, mut raw: Value) -> Result<(Deployment, Value)> {
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        spinner.set_style(style);
    }
    spinner.enable_steady_tick(Duration::from_millis(120));
    while d.status == Status::Queued {
        spinner.set_message(match d.position {
            Some(p) => format!("{} is queued at position {p}", d.name),
            None => format!("{} is queued", d.name),
        });
        tokio::time::sleep(POLL).await;
        let reply = ctx.client.get(&format!("/v1/deployments/{}", d.id)).await?;
        d = reply.parse()?;
        raw = reply.body;
    }
    spinner.finish_and_clear();
    Ok((d, raw))
}

pub async fn ps(ctx: &Ctx, cluster: Option<String>, status: Option<StatusArg>) -> Result {
    let clusters = match cluster {
        Some(c) => vec![ctx.cluster(&c).await?],
        None => ctx.clusters(ctx.org_id().await?).await?,
    };
    let query = status
        .map(|s| format!("?status={}", wire_name(&wire::<_, Status>(s))))
        .unwrap_or_default();
    let (mut rows, mut raws) = (Vec::new(), Vec::new());
    for c in &clusters {
        let (ds, raw) = ctx
            .client
            .list::<Deployment>(&format!("/v1/clusters/{}/deployments{query}", c.id))
            .await?;
        raws.extend(raw);
        rows.extend(ds.into_iter().map(|d| {
            crate::row![
                d.name,
                output::status_cell(d.status),
                c.name.clone(),
                d.agent
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |a| output::clean(&a.name)),
                d.priority.to_string(),
                output::cpu(d.resources.cpu_millis),
                output::memory(d.resources.memory_mib),
                d.resources.gpus.to_string(),
                output::age(d.created_at),
                d.id.to_string(),
                d.image,
                output::clean(d.message.unwrap_or_default().trim_end()),
            ]
        }));
    }
    output::list(
        ctx.out,
        raws,
        &[
            "NAME", "STATUS", "CLUSTER", "AGENT", "PRIORITY", "CPU", "MEMORY", "GPUS", "AGE", "ID",
            "+IMAGE", "+MESSAGE",
        ],
        rows,
    );
    Ok(())
}

pub async fn get(ctx: &Ctx, r: DeploymentRef) -> Result {
    let id = ctx
        .deployment_id(&r.deployment, r.cluster.as_deref())
        .await?;
    let reply = ctx.client.get(&format!("/v1/deployments/{id}")).await?;
    let cluster = match (ctx.out, reply.parse::<Deployment>()) {
        (Output::Json, _) | (_, Err(_)) => String::new(),
        (_, Ok(d)) => match ctx
            .client
            .get(&format!("/v1/clusters/{}", d.cluster_id))
            .await
        {
            Ok(c) => c
                .parse::<berth::http::wire::Cluster>()
                .map(|c| format!("{} ({})", c.name, c.id))
                .unwrap_or_else(|_| d.cluster_id.to_string()),
            Err(_) => d.cluster_id.to_string(),
        },
    };
    ctx.print(&reply, |d: Deployment| {
        let position = d
            .position
            .map(|p| format!(" (position {p})"))
            .unwrap_or_default();
        output::fields(&[
            ("Name", output::bold(&d.name)),
            ("Id", d.id.to_string()),
            ("Status", format!("{}{position}", output::status(d.status))),
            (
                "Placement",
                d.placement
                    .map(|p| wire_name(&p).replace('_', " "))
                    .unwrap_or_else(|| "-".into()),
            ),
            (
                "Agent",
                d.agent
                    .as_ref()
                    .map(|a| format!("{} ({})", output::clean(&a.name), a.id))
                    .unwrap_or_else(|| "-".into()),
            ),
            ("Image", d.image.clone()),
            ("Resources", output::resources(&d.resources)),
            ("Priority", d.priority.to_string()),
            (
                "Max runtime",
                d.max_runtime_seconds
                    .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string())
                    .unwrap_or_else(|| "-".into()),
            ),
            ("Cluster", cluster.clone()),
            ("Depends on", ids(&d.depends_on)),
            (
                "Awaiting",
                d.awaiting.as_deref().map_or_else(|| "-".into(), ids),
            ),
            ("Preemptions", d.preemptions.to_string()),
            (
                "Message",
                // An exit's message is its output's last lines: without the final newline.
                d.message
                    .as_deref()
                    .map(|m| output::clean(m.trim_end()))
                    .unwrap_or_else(|| "-".into()),
            ),
            ("Created", output::time(Some(d.created_at))),
            ("Admitted", output::time(d.admitted_at)),
            ("Started", output::time(d.started_at)),
            ("Deadline", output::time(d.deadline_at)),
            ("Finished", output::time(d.finished_at)),
            (
                "Exit code",
                d.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            ),
        ]);
        anstream::println!("\nEvents:");
        print_events(ctx.out, &d, Value::Null);
    })
}

/// Deployment ids, comma-separated (`-` for none).
fn ids(ids: &[uuid::Uuid]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn events(ctx: &Ctx, r: DeploymentRef) -> Result {
    let id = ctx
        .deployment_id(&r.deployment, r.cluster.as_deref())
        .await?;
    let reply = ctx.client.get(&format!("/v1/deployments/{id}")).await?;
    let d: Deployment = reply.parse()?;
    let raw = reply.body.get("events").cloned().unwrap_or(Value::Null);
    print_events(ctx.out, &d, raw);
    Ok(())
}

fn print_events(out: Output, d: &Deployment, raw: Value) {
    let raw = match raw {
        Value::Array(items) => items,
        _ => vec![],
    };
    let rows = d
        .events
        .iter()
        .flatten()
        .map(|e| {
            crate::row![
                output::time(Some(e.at)),
                wire_name(&e.kind),
                output::clean(e.reason.as_deref().unwrap_or_default()),
                e.by_deployment.map(|b| b.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    output::list(out, raw, &["TIME", "EVENT", "REASON", "BY"], rows);
}

/// `cancel` or `stop`.
pub async fn act(ctx: &Ctx, r: DeploymentRef, verb: &str) -> Result {
    let id = ctx
        .deployment_id(&r.deployment, r.cluster.as_deref())
        .await?;
    let reply = ctx
        .client
        .send(
            Method::POST,
            &format!("/v1/deployments/{id}/{verb}"),
            None::<&()>,
            None,
        )
        .await?;
    changed(ctx, &reply)
}

pub async fn finish(
    ctx: &Ctx,
    r: DeploymentRef,
    outcome: OutcomeArg,
    message: Option<String>,
) -> Result {
    let id = ctx
        .deployment_id(&r.deployment, r.cluster.as_deref())
        .await?;
    let body = FinishRequest {
        outcome: wire(outcome),
        message,
    };
    let reply = ctx
        .client
        .post(&format!("/v1/deployments/{id}/finish"), &body)
        .await
        .map_err(|e| e.with_flags(&[("outcome", "--outcome"), ("message", "--message")]))?;
    changed(ctx, &reply)
}

pub async fn set_priority(ctx: &Ctx, r: DeploymentRef, priority: i32) -> Result {
    let id = ctx
        .deployment_id(&r.deployment, r.cluster.as_deref())
        .await?;
    let reply = ctx
        .client
        .patch(
            &format!("/v1/deployments/{id}"),
            &UpdateDeploymentRequest { priority },
        )
        .await
        .map_err(|e| e.with_flags(&[("priority", "PRIORITY")]))?;
    changed(ctx, &reply)
}

/// What a change left: `trainer (…) stopped.`, or after a new priority, where it stands.
fn changed(ctx: &Ctx, reply: &crate::client::Reply) -> Result {
    ctx.print(reply, |d: Deployment| {
        let name = output::bold(&d.name);
        match (d.status, d.position) {
            (Status::Queued, Some(p)) => anstream::println!(
                "{name} ({}) has priority {} and is queued at position {p}.",
                d.id,
                d.priority
            ),
            (Status::Queued | Status::Running, _) => anstream::println!(
                "{name} ({}) has priority {} and is {}.",
                d.id,
                d.priority,
                output::status(d.status)
            ),
            (ended, _) => anstream::println!("{name} ({}) {}.", d.id, output::status(ended)),
        }
    })
}
