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
#[derive(Debug, Clone, PartialEq)]
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

/// A page of the cluster's agents, in id order.
pub async fn list(
    db: &impl GenericClient,
    cluster: ClusterId,
    page: &Page,
) -> DbResult<Vec<AgentRow>> {
    let rows = super::page_of_cluster(db, "agents", COLUMNS, cluster, page).await?;
    rows.iter().map(AgentRow::try_from).collect()
}
