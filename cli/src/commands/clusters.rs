//! Clusters, their queues and their agents' tokens.

use berth::http::wire::{
    AgentToken, Cluster, CreateAgentTokenRequest, CreateClusterRequest, CreatedAgentToken,
    QueueEntry, Queueing, Resources, UpdateClusterRequest,
};

use super::{wire, Ctx, Result};
use crate::args::{AgentTokenCommand, ClusterCommand};
use crate::output::{self, wire_name};

/// The API's capacity fields as the flags that set them.
const CAPACITY_FLAGS: &[(&str, &str)] = &[
    ("name", "NAME"),
    ("capacity", "--cpu/--memory/--gpus"),
    ("capacity.cpu_millis", "--cpu"),
    ("capacity.memory_mib", "--memory"),
    ("capacity.gpus", "--gpus"),
];

pub async fn cluster(ctx: &Ctx, c: ClusterCommand) -> Result {
    match c {
        ClusterCommand::Create {
            name,
            capacity,
            strict,
            preemption,
            agent_grace,
        } => {
            let org = ctx.org_id().await?;
            let body = CreateClusterRequest {
                name,
                capacity: Resources::new(capacity.cpu, capacity.memory, capacity.gpus),
                queueing: Some(if strict {
                    Queueing::Strict
                } else {
                    Queueing::BestEffort
                }),
                preemption: Some(preemption),
                agent_grace_seconds: agent_grace,
            };
            let reply = ctx
                .client
                .post(&format!("/v1/orgs/{org}/clusters"), &body)
                .await
                .map_err(|e| e.with_flags(CAPACITY_FLAGS))?;
            ctx.print(&reply, |c: Cluster| {
                anstream::println!(
                    "Created cluster {} ({}) with {}.",
                    output::bold(&c.name),
                    c.id,
                    output::resources(&c.capacity)
                )
            })
        }
        ClusterCommand::List => {
            let org = ctx.org_id().await?;
            let (clusters, raw) = ctx
                .client
                .list::<Cluster>(&format!("/v1/orgs/{org}/clusters"))
                .await?;
            let rows = clusters
                .into_iter()
                .map(|c| {
                    crate::row![
                        c.name,
                        output::cpu(c.capacity.cpu_millis),
                        output::memory(c.capacity.memory_mib),
                        c.capacity.gpus.to_string(),
                        wire_name(&c.queueing),
                        c.preemption.to_string(),
                        output::age(c.created_at),
                        c.id.to_string(),
                    ]
                })
                .collect();
            output::list(
                ctx.out,
                raw,
                &[
                    "NAME",
                    "CPU",
                    "MEMORY",
                    "GPUS",
                    "QUEUEING",
                    "PREEMPTION",
                    "AGE",
                    "+ID",
                ],
                rows,
            );
            Ok(())
        }
        ClusterCommand::Get { cluster } => {
            let id = ctx.cluster(&cluster).await?.id;
            ctx.show(&format!("/v1/clusters/{id}"), show_cluster).await
        }
        ClusterCommand::Resize {
            cluster,
            cpu,
            memory,
            gpus,
        } => {
            let c = ctx.cluster(&cluster).await?;
            let capacity = Resources::new(
                cpu.unwrap_or(c.capacity.cpu_millis),
                memory.unwrap_or(c.capacity.memory_mib),
                gpus.unwrap_or(c.capacity.gpus),
            );
            update(
                ctx,
                &c,
                UpdateClusterRequest {
                    name: None,
                    capacity: Some(capacity),
                    queueing: None,
                    preemption: None,
                    agent_grace_seconds: None,
                },
            )
            .await
        }
        ClusterCommand::Update {
            cluster,
            name,
            queueing,
            preemption,
            agent_grace,
        } => {
            let c = ctx.cluster(&cluster).await?;
            let body = UpdateClusterRequest {
                name,
                capacity: None,
                queueing: queueing.map(wire),
                preemption,
                agent_grace_seconds: agent_grace,
            };
            update(ctx, &c, body).await
        }
        ClusterCommand::Delete { cluster } => {
            let c = ctx.cluster(&cluster).await?;
            ctx.client.delete(&format!("/v1/clusters/{}", c.id)).await?;
            ctx.say(format!("Deleted cluster {}.", c.name));
            Ok(())
        }
    }
}

async fn update(ctx: &Ctx, c: &Cluster, body: UpdateClusterRequest) -> Result {
    let reply = ctx
        .client
        .patch(&format!("/v1/clusters/{}", c.id), &body)
        .await
        .map_err(|e| e.with_flags(CAPACITY_FLAGS))?;
    ctx.print(&reply, |c: Cluster| {
        anstream::println!(
            "Updated cluster {}: {}, {} queueing, preemption {}.",
            output::bold(&c.name),
            output::resources(&c.capacity),
            wire_name(&c.queueing),
            if c.preemption { "on" } else { "off" }
        )
    })
}

fn show_cluster(c: Cluster) {
    output::fields(&[
        ("Name", output::bold(&c.name)),
        ("Id", c.id.to_string()),
        ("Queueing", wire_name(&c.queueing)),
        ("Preemption", if c.preemption { "on" } else { "off" }.into()),
        ("Agent grace", format!("{}s", c.agent_grace_seconds)),
        ("Created", output::time(Some(c.created_at))),
    ]);
    let Some(u) = c.usage else { return };
    let agents = match u.agents_connected {
        0 => "no agent connected".to_string(),
        1 => format!(
            "1 agent connected with {}",
            output::resources(&u.agent_capacity)
        ),
        n => format!(
            "{n} agents connected with {}",
            output::resources(&u.agent_capacity)
        ),
    };
    anstream::println!("\n{} running, {} queued; {agents}\n", u.running, u.queued);
    let rows = [
        (
            "CPU",
            u.allocated.cpu_millis,
            u.capacity.cpu_millis,
            u.queued_demand.cpu_millis,
            output::cpu as fn(i64) -> String,
        ),
        (
            "MEMORY",
            u.allocated.memory_mib,
            u.capacity.memory_mib,
            u.queued_demand.memory_mib,
            output::memory,
        ),
        (
            "GPUS",
            u.allocated.gpus,
            u.capacity.gpus,
            u.queued_demand.gpus,
            |g: i64| g.to_string(),
        ),
    ];
    for (name, used, total, queued, unit) in rows {
        anstream::println!(
            "{name:<7} {}  {} / {} allocated, {} queued",
            output::bar(used, total),
            unit(used),
            unit(total),
            unit(queued)
        );
    }
}

pub async fn queue(ctx: &Ctx, cluster: &str) -> Result {
    let c = ctx.cluster(cluster).await?;
    let (entries, raw) = ctx
        .client
        .list::<QueueEntry>(&format!("/v1/clusters/{}/queue", c.id))
        .await?;
    if entries.is_empty() && ctx.out != crate::args::Output::Json {
        anstream::println!("The queue of {} is empty.", c.name);
        return Ok(());
    }
    let rows = entries
        .into_iter()
        .map(|e| {
            crate::row![
                e.position.to_string(),
                e.name,
                e.priority.to_string(),
                e.effective_priority.to_string(),
                output::cpu(e.resources.cpu_millis),
                output::memory(e.resources.memory_mib),
                e.resources.gpus.to_string(),
                output::age(e.enqueued_at),
                wire_name(&e.reason),
                e.deployment_id.to_string(),
            ]
        })
        .collect();
    output::list(
        ctx.out,
        raw,
        &[
            "POS",
            "NAME",
            "PRIORITY",
            "EFFECTIVE",
            "CPU",
            "MEMORY",
            "GPUS",
            "WAITING",
            "REASON",
            "ID",
        ],
        rows,
    );
    Ok(())
}

pub async fn agents(ctx: &Ctx, cluster: &str) -> Result {
    let c = ctx.cluster(cluster).await?;
    let (agents, raw) = ctx
        .client
        .list::<berth::http::wire::Agent>(&format!("/v1/clusters/{}/agents", c.id))
        .await?;
    if agents.is_empty() && ctx.out != crate::args::Output::Json {
        anstream::println!(
            "No agent has connected to {} yet: berth agent-token create {} NAME, then berth agent.",
            c.name,
            c.name
        );
        return Ok(());
    }
    let rows = agents
        .into_iter()
        .map(|a| {
            let seen = if a.status == "connected" {
                "now".to_string()
            } else {
                output::age(a.last_seen_at)
            };
            let (p, c) = (a.placed, a.capacity);
            crate::row![
                a.name,
                a.status,
                a.running.to_string(),
                format!(
                    "{}/{}",
                    output::cpu(p.cpu_millis),
                    output::cpu(c.cpu_millis)
                ),
                format!(
                    "{}/{}",
                    output::memory(p.memory_mib),
                    output::memory(c.memory_mib)
                ),
                format!("{}/{}", p.gpus, c.gpus),
                seen,
                a.version,
                a.id.to_string(),
            ]
        })
        .collect();
    output::list(
        ctx.out,
        raw,
        &[
            "NAME", "STATUS", "RUNNING", "CPU", "MEMORY", "GPUS", "SEEN", "VERSION", "+ID",
        ],
        rows,
    );
    Ok(())
}

pub async fn agent_token(ctx: &Ctx, c: AgentTokenCommand) -> Result {
    match c {
        AgentTokenCommand::Create { cluster, name } => {
            let cluster = ctx.cluster(&cluster).await?;
            let reply = ctx
                .client
                .post(
                    &format!("/v1/clusters/{}/agent-tokens", cluster.id),
                    &CreateAgentTokenRequest { name },
                )
                .await
                .map_err(|e| e.with_flags(&[("name", "NAME")]))?;
            ctx.print(&reply, |t: CreatedAgentToken| {
                anstream::println!(
                    "Agent token {} ({}) for cluster {}. Give it to the cluster's agent; it is \
                     shown only once:",
                    t.name,
                    t.id,
                    output::bold(&cluster.name),
                );
                anstream::println!("{}", t.token);
            })
        }
        AgentTokenCommand::List { cluster } => {
            let cluster = ctx.cluster(&cluster).await?;
            let (tokens, raw) = ctx
                .client
                .list::<AgentToken>(&format!("/v1/clusters/{}/agent-tokens", cluster.id))
                .await?;
            let rows = tokens
                .into_iter()
                .map(|t| {
                    crate::row![
                        t.id.to_string(),
                        t.name,
                        t.prefix,
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        },
                        t.last_used_at
                            .map(output::age)
                            .unwrap_or_else(|| "never".into()),
                        output::age(t.created_at),
                    ]
                })
                .collect();
            output::list(
                ctx.out,
                raw,
                &["ID", "NAME", "PREFIX", "STATUS", "LAST USED", "AGE"],
                rows,
            );
            Ok(())
        }
        AgentTokenCommand::Revoke { cluster, id } => {
            let cluster = ctx.cluster(&cluster).await?;
            ctx.client
                .delete(&format!("/v1/clusters/{}/agent-tokens/{id}", cluster.id))
                .await?;
            ctx.say(format!(
                "Revoked agent token {id} of cluster {}.",
                cluster.name
            ));
            Ok(())
        }
    }
}
