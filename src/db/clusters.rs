//! Clusters: capacity and policy. Allocation is never stored; `usage` derives it.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::{DbError, DbResult, Page};
use crate::domain::ids::{ClusterId, OrgId, UserId};
use crate::domain::policy::Role;
use crate::domain::resources::Resources;
use crate::domain::scheduling::{Policy, Queueing};

/// A cluster as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterRow {
    /// Id.
    pub id: ClusterId,
    /// Owning organization.
    pub org_id: OrgId,
    /// Name, unique in the organization.
    pub name: String,
    /// Total capacity.
    pub capacity: Resources,
    /// Scheduling policy.
    pub policy: Policy,
    /// How long an agent may stay away before what it ran is lost (5 to 3600).
    pub agent_grace_seconds: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, org_id, name, cpu_millis, memory_mib, gpus, queueing, preemption, agent_grace_seconds, \
     created_at, updated_at";

/// Reads the three resource columns.
pub fn resources(r: &Row) -> Result<Resources, tokio_postgres::Error> {
    Ok(Resources::new(
        r.try_get("cpu_millis")?,
        r.try_get("memory_mib")?,
        r.try_get("gpus")?,
    ))
}

impl TryFrom<&Row> for ClusterRow {
    type Error = DbError;
    fn try_from(r: &Row) -> Result<Self, DbError> {
        let queueing: String = r.try_get("queueing")?;
        Ok(Self {
            id: ClusterId(r.try_get("id")?),
            org_id: OrgId(r.try_get("org_id")?),
            name: r.try_get("name")?,
            capacity: resources(r)?,
            policy: Policy {
                queueing: queueing_of(&queueing)?,
                preemption: r.try_get("preemption")?,
            },
            agent_grace_seconds: r.try_get("agent_grace_seconds")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

fn queueing_of(s: &str) -> DbResult<Queueing> {
    match s {
        "best_effort" => Ok(Queueing::BestEffort),
        "strict" => Ok(Queueing::Strict),
        other => Err(DbError::Other(format!("unknown queueing {other} stored"))),
    }
}

/// The stored name of a queueing discipline.
pub fn queueing_name(q: Queueing) -> &'static str {
    match q {
        Queueing::BestEffort => "best_effort",
        Queueing::Strict => "strict",
    }
}

/// Stores a new cluster; a taken name is `DbError::Unique("clusters_org_name_key")`.
pub async fn insert(db: &impl GenericClient, c: &ClusterRow) -> DbResult<ClusterRow> {
    let sql = format!(
        "insert into clusters (id, org_id, name, cpu_millis, memory_mib, gpus, queueing, preemption, \
           agent_grace_seconds) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    );
    let row = db
        .query_typed_one(
            &sql,
            &[
                (&c.id.0, Type::UUID),
                (&c.org_id.0, Type::UUID),
                (&c.name, Type::TEXT),
                (&c.capacity.cpu_millis, Type::INT8),
                (&c.capacity.memory_mib, Type::INT8),
                (&c.capacity.gpus, Type::INT8),
                (&queueing_name(c.policy.queueing), Type::TEXT),
                (&c.policy.preemption, Type::BOOL),
                (&c.agent_grace_seconds, Type::INT4),
            ],
        )
        .await?;
    ClusterRow::try_from(&row)
}

/// One cluster and `user`'s role in its organization (none for a non-member or no user), in
/// one round trip.
pub async fn get_with_role(
    db: &impl GenericClient,
    id: ClusterId,
    user: Option<UserId>,
) -> DbResult<Option<(ClusterRow, Option<Role>)>> {
    let row = db
        .query_typed_opt(
            "select c.id, c.org_id, c.name, c.cpu_millis, c.memory_mib, c.gpus, c.queueing, \
               c.preemption, c.agent_grace_seconds, c.created_at, c.updated_at, m.role as member_role \
             from clusters c left join memberships m on m.org_id = c.org_id and m.user_id = $2 \
             where c.id = $1",
            &[(&id.0, Type::UUID), (&user.map(|u| u.0), Type::UUID)],
        )
        .await?;
    row.map(|r| Ok((ClusterRow::try_from(&r)?, member_role(&r)?)))
        .transpose()
}

/// Reads the optional `member_role` column of a joined membership.
pub fn member_role(r: &Row) -> DbResult<Option<Role>> {
    let role: Option<String> = r.try_get("member_role")?;
    role.map(|name| {
        Role::parse(&name).ok_or_else(|| DbError::Other(format!("unknown role {name} stored")))
    })
    .transpose()
}

/// One cluster, locked for the rest of the transaction: the second guard (after the
/// Durable Object's own serialization) that one cluster's commands run one at a time.
pub async fn lock(db: &impl GenericClient, id: ClusterId) -> DbResult<Option<ClusterRow>> {
    let sql = format!("select {COLUMNS} from clusters where id = $1 for update");
    let row = db.query_typed_opt(&sql, &[(&id.0, Type::UUID)]).await?;
    row.as_ref().map(ClusterRow::try_from).transpose()
}

/// The ids of every cluster of an organization.
pub async fn ids_of(db: &impl GenericClient, org: OrgId) -> DbResult<Vec<ClusterId>> {
    let rows = db
        .query_typed(
            "select id from clusters where org_id = $1",
            &[(&org.0, Type::UUID)],
        )
        .await?;
    rows.iter().map(|r| Ok(ClusterId(r.try_get(0)?))).collect()
}

/// An organization's clusters, by id.
pub async fn list(db: &impl GenericClient, org: OrgId, page: &Page) -> DbResult<Vec<ClusterRow>> {
    let rows = super::page_of_org(db, "clusters", COLUMNS, org, page).await?;
    rows.iter().map(ClusterRow::try_from).collect()
}

/// Writes name, capacity and policy.
pub async fn update(
    db: &impl GenericClient,
    c: &ClusterRow,
    now: DateTime<Utc>,
) -> DbResult<ClusterRow> {
    let sql = format!(
        "update clusters set name = $2, cpu_millis = $3, memory_mib = $4, gpus = $5, \
         queueing = $6, preemption = $7, updated_at = $8, agent_grace_seconds = $9 where id = $1 \
         returning {COLUMNS}"
    );
    let row = db
        .query_typed_one(
            &sql,
            &[
                (&c.id.0, Type::UUID),
                (&c.name, Type::TEXT),
                (&c.capacity.cpu_millis, Type::INT8),
                (&c.capacity.memory_mib, Type::INT8),
                (&c.capacity.gpus, Type::INT8),
                (&queueing_name(c.policy.queueing), Type::TEXT),
                (&c.policy.preemption, Type::BOOL),
                (&now, Type::TIMESTAMPTZ),
                (&c.agent_grace_seconds, Type::INT4),
            ],
        )
        .await?;
    ClusterRow::try_from(&row)
}

/// Whether another cluster of the organization has this name.
pub async fn name_taken(db: &impl GenericClient, org: OrgId, name: &str) -> DbResult<bool> {
    let row = db
        .query_typed_opt(
            "select 1 from clusters where org_id = $1 and name = $2",
            &[(&org.0, Type::UUID), (&name, Type::TEXT)],
        )
        .await?;
    Ok(row.is_some())
}

/// Deletes a cluster and its finished history.
pub async fn delete(db: &impl GenericClient, id: ClusterId) -> DbResult<()> {
    db.query_typed("delete from clusters where id = $1", &[(&id.0, Type::UUID)])
        .await?;
    Ok(())
}

/// What a cluster uses, derived from its deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Sum over running deployments.
    pub allocated: Resources,
    /// Sum over queued deployments.
    pub queued_demand: Resources,
    /// Running deployments.
    pub running: i64,
    /// Queued deployments.
    pub queued: i64,
    /// What the connected agents offer together.
    #[serde(default)]
    pub agent_capacity: Resources,
    /// Agents connected.
    #[serde(default)]
    pub agents_connected: i64,
}

/// Clusters the sweep must wake: queued work, running work past its deadline, or placed
/// containers (their agents' liveness is checked by the tick).
pub async fn needing_attention(
    db: &impl GenericClient,
    now: DateTime<Utc>,
) -> DbResult<Vec<ClusterId>> {
    let rows = db
        .query_typed(
            "select distinct cluster_id from deployments \
             where status = 'queued' or (status = 'running' and deadline_at <= $1) \
                or placement is not null",
            &[(&now, Type::TIMESTAMPTZ)],
        )
        .await?;
    rows.iter().map(|r| Ok(ClusterId(r.try_get(0)?))).collect()
}
