//! Agents: the machines that have connected as a cluster's agents, known by their name in the
//! cluster, with what they said of themselves and whether their socket is open.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::clusters::resources;
use super::{DbResult, Page};
use crate::domain::ids::{AgentId, AgentTokenId, ClusterId};
use crate::domain::resources::Resources;

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentRow {
    pub id: AgentId,
    pub cluster_id: ClusterId,
    pub token_id: Option<AgentTokenId>,
    pub name: String,
    pub version: String,
    pub capacity: Resources,
    /// `connected` or `disconnected`.
    pub status: String,
    pub connected_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<&Row> for AgentRow {
    type Error = super::DbError;
    fn try_from(r: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: AgentId(r.try_get("id")?),
            cluster_id: ClusterId(r.try_get("cluster_id")?),
            token_id: r
                .try_get::<_, Option<uuid::Uuid>>("token_id")?
                .map(AgentTokenId),
            name: r.try_get("name")?,
            version: r.try_get("version")?,
            capacity: resources(r)?,
            status: r.try_get("status")?,
            connected_at: r.try_get("connected_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

const COLUMNS: &str = "id, cluster_id, token_id, name, version, cpu_millis, memory_mib, gpus, \
    status, connected_at, last_seen_at, created_at";

/// What an agent says of itself in its hello.
#[derive(Debug, Clone)]
pub struct Connecting<'a> {
    pub cluster: ClusterId,
    pub token: Option<AgentTokenId>,
    pub name: &'a str,
    pub version: &'a str,
    pub capacity: Resources,
}

/// Records that the agent named `c.name` connected at `now`: a new agent, or the same one
/// again (its id kept, what it says of itself refreshed).
pub async fn connected(
    db: &impl GenericClient,
    c: &Connecting<'_>,
    now: DateTime<Utc>,
) -> DbResult<AgentRow> {
    let sql = format!(
        "insert into agents (id, cluster_id, token_id, name, version, cpu_millis, memory_mib, \
             gpus, status, connected_at, last_seen_at, created_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, 'connected', $9, $9, $9) \
         on conflict (cluster_id, name) do update set token_id = excluded.token_id, \
             version = excluded.version, cpu_millis = excluded.cpu_millis, \
             memory_mib = excluded.memory_mib, gpus = excluded.gpus, status = 'connected', \
             connected_at = excluded.connected_at, last_seen_at = excluded.last_seen_at \
         returning {COLUMNS}"
    );
    let row = db
        .query_typed_one(
            &sql,
            &[
                (&AgentId::new().0, Type::UUID),
                (&c.cluster.0, Type::UUID),
                (&c.token.map(|t| t.0), Type::UUID),
                (&c.name, Type::TEXT),
                (&c.version, Type::TEXT),
                (&c.capacity.cpu_millis, Type::INT8),
                (&c.capacity.memory_mib, Type::INT8),
                (&c.capacity.gpus, Type::INT8),
                (&now, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    AgentRow::try_from(&row)
}

/// Records that the agent's socket closed at `now` (an agent already seen to leave, or one
/// that connected again since on another socket, stays as it is).
pub async fn disconnected(
    db: &impl GenericClient,
    agent: AgentId,
    connected_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<()> {
    db.execute_typed(
        "update agents set status = 'disconnected', last_seen_at = $3 \
         where id = $1 and connected_at = $2 and status = 'connected'",
        &[
            (&agent.0, Type::UUID),
            (&connected_at, Type::TIMESTAMPTZ),
            (&now, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// Every agent of the cluster that is connected or holds a placed container (the object's
/// placement state starts from these).
pub async fn of_cluster(db: &impl GenericClient, cluster: ClusterId) -> DbResult<Vec<AgentRow>> {
    let sql = format!(
        "select {COLUMNS} from agents a where cluster_id = $1 and (status = 'connected' or \
           exists (select 1 from deployments d where d.cluster_id = a.cluster_id \
             and d.agent_id = a.id and d.placement is not null))"
    );
    let rows = db.query_typed(&sql, &[(&cluster.0, Type::UUID)]).await?;
    rows.iter().map(AgentRow::try_from).collect()
}

/// The agents among `ids`.
pub async fn by_ids(db: &impl GenericClient, ids: &[AgentId]) -> DbResult<Vec<AgentRow>> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|a| a.0).collect();
    let sql = format!("select {COLUMNS} from agents where id = any($1) order by name");
    let rows = db.query_typed(&sql, &[(&ids, Type::UUID_ARRAY)]).await?;
    rows.iter().map(AgentRow::try_from).collect()
}

/// Records when connected agents were last heard of, in one statement.
pub async fn seen(db: &impl GenericClient, seen: &[(AgentId, DateTime<Utc>)]) -> DbResult<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = seen.iter().map(|(a, _)| a.0).collect();
    let at: Vec<DateTime<Utc>> = seen.iter().map(|(_, t)| *t).collect();
    db.execute_typed(
        "update agents a set last_seen_at = greatest(a.last_seen_at, x.t) \
         from unnest($1::uuid[], $2::timestamptz[]) as x(i, t) \
         where a.id = x.i and a.status = 'connected'",
        &[(&ids, Type::UUID_ARRAY), (&at, Type::TIMESTAMPTZ_ARRAY)],
    )
    .await?;
    Ok(())
}

/// Records agents as gone whatever socket they were on (their object found no socket for
/// them, or they were silent past the grace); `last_seen_at` stays their last sign of life.
pub async fn away(db: &impl GenericClient, agents: &[AgentId]) -> DbResult<()> {
    if agents.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = agents.iter().map(|a| a.0).collect();
    db.execute_typed(
        "update agents set status = 'disconnected' where id = any($1) and status = 'connected'",
        &[(&ids, Type::UUID_ARRAY)],
    )
    .await?;
    Ok(())
}

/// A page of the cluster's agents, in id order.
pub async fn list(
    db: &impl GenericClient,
    cluster: ClusterId,
    page: &Page,
) -> DbResult<Vec<AgentRow>> {
    let rows = super::page_of_cluster(db, "agents", COLUMNS, cluster, page).await?;
    rows.iter().map(AgentRow::try_from).collect()
}

/// How many agents each of an organization's clusters has connected now (clusters with
/// none are left out).
pub async fn connected_of_org(
    db: &impl GenericClient,
    org: crate::domain::ids::OrgId,
) -> DbResult<Vec<(ClusterId, i64)>> {
    let rows = db
        .query_typed(
            "select a.cluster_id, count(*) as n from clusters c \
             join agents a on a.cluster_id = c.id \
             where c.org_id = $1 and a.status = 'connected' group by a.cluster_id",
            &[(&org.0, Type::UUID)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((ClusterId(r.try_get("cluster_id")?), r.try_get("n")?)))
        .collect()
}

/// What is placed on each of the cluster's agents now: the resources of the containers that
/// occupy it (assigned, started or stopping) and how many of them are started.
pub async fn placed_on(
    db: &impl GenericClient,
    cluster: ClusterId,
) -> DbResult<Vec<(AgentId, Resources, i64)>> {
    let rows = db
        .query_typed(
            "select agent_id, sum(cpu_millis)::int8 as cpu_millis, \
               sum(memory_mib)::int8 as memory_mib, sum(gpus)::int8 as gpus, \
               count(*) filter (where placement = 'started') as running \
             from deployments where cluster_id = $1 and placement is not null \
               and agent_id is not null group by agent_id",
            &[(&cluster.0, Type::UUID)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                AgentId(r.try_get("agent_id")?),
                resources(r)?,
                r.try_get("running")?,
            ))
        })
        .collect()
}
