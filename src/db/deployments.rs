//! Deployments and their event history. Status changes are written in bulk (one statement
//! per kind of change), so a scheduling pass costs a fixed number of round trips.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::clusters::resources;
use super::{DbError, DbResult, Page};
use crate::domain::deployment::{EventKind, Process, Status};
use crate::domain::ids::{ClusterId, DeploymentId, OrgId, UserId};
use crate::domain::resources::Resources;

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeploymentRow {
    pub id: DeploymentId,
    pub cluster_id: ClusterId,
    pub org_id: OrgId,
    pub name: String,
    pub image: String,
    pub resources: Resources,
    pub priority: i32,
    pub max_runtime_seconds: Option<i32>,
    pub status: Status,
    pub enqueued_at: DateTime<Utc>,
    pub admitted_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub preemptions: i32,
    pub preempted_by: Option<DeploymentId>,
    pub message: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Columns in the order `TryFrom<&Row>` reads them.
pub const COLUMNS: &str = "id, cluster_id, org_id, name, image, cpu_millis, memory_mib, gpus, \
    priority, max_runtime_seconds, status, enqueued_at, admitted_at, deadline_at, finished_at, \
    preemptions, preempted_by, message, idempotency_key, created_at, updated_at";

impl TryFrom<&Row> for DeploymentRow {
    type Error = DbError;
    fn try_from(r: &Row) -> Result<Self, DbError> {
        let status: String = r.try_get("status")?;
        Ok(Self {
            id: DeploymentId(r.try_get("id")?),
            cluster_id: ClusterId(r.try_get("cluster_id")?),
            org_id: OrgId(r.try_get("org_id")?),
            name: r.try_get("name")?,
            image: r.try_get("image")?,
            resources: resources(r)?,
            priority: r.try_get("priority")?,
            max_runtime_seconds: r.try_get("max_runtime_seconds")?,
            status: Status::parse(&status)
                .ok_or_else(|| DbError::Other(format!("unknown status {status} stored")))?,
            enqueued_at: r.try_get("enqueued_at")?,
            admitted_at: r.try_get("admitted_at")?,
            deadline_at: r.try_get("deadline_at")?,
            finished_at: r.try_get("finished_at")?,
            preemptions: r.try_get("preemptions")?,
            preempted_by: r
                .try_get::<_, Option<Uuid>>("preempted_by")?
                .map(DeploymentId),
            message: r.try_get("message")?,
            idempotency_key: r.try_get("idempotency_key")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

fn rows(rows: Vec<Row>) -> DbResult<Vec<DeploymentRow>> {
    rows.iter().map(DeploymentRow::try_from).collect()
}

/// What a submission stores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewDeployment {
    pub name: String,
    pub image: String,
    pub resources: Resources,
    pub priority: i32,
    pub max_runtime_seconds: Option<i32>,
    pub idempotency_key: Option<String>,
    pub created_by: Option<UserId>,
    /// Not kept in the deployment's row (nor in the cluster object's cache): see [`process`].
    pub process: Process,
}

impl DeploymentRow {
    /// The row [`insert_many`] stores for a new submission at `now` (microseconds, as
    /// Postgres keeps them), so a writer can know it without reading it back.
    pub fn queued(
        id: DeploymentId,
        cluster: ClusterId,
        org: OrgId,
        new: &NewDeployment,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            cluster_id: cluster,
            org_id: org,
            name: new.name.clone(),
            image: new.image.clone(),
            resources: new.resources,
            priority: new.priority,
            max_runtime_seconds: new.max_runtime_seconds,
            status: Status::Queued,
            enqueued_at: now,
            admitted_at: None,
            deadline_at: None,
            finished_at: None,
            preemptions: 0,
            preempted_by: None,
            message: None,
            idempotency_key: new.idempotency_key.clone(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Stores new queued deployments of one cluster in one statement, in order; each row is
/// [`DeploymentRow::queued`].
pub async fn insert_many(
    db: &impl GenericClient,
    cluster: ClusterId,
    org: OrgId,
    new: &[(DeploymentId, NewDeployment)],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if new.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewDeployment) -> i64| new.iter().map(|(_, d)| f(d)).collect::<Vec<i64>>();
    let ids: Vec<Uuid> = new.iter().map(|(id, _)| id.0).collect();
    let names: Vec<&str> = new.iter().map(|(_, d)| d.name.as_str()).collect();
    let images: Vec<&str> = new.iter().map(|(_, d)| d.image.as_str()).collect();
    let (cpu, mem, gpus) = (
        col(|d| d.resources.cpu_millis),
        col(|d| d.resources.memory_mib),
        col(|d| d.resources.gpus),
    );
    let priorities: Vec<i32> = new.iter().map(|(_, d)| d.priority).collect();
    let runtimes: Vec<Option<i32>> = new.iter().map(|(_, d)| d.max_runtime_seconds).collect();
    let keys: Vec<Option<&str>> = new
        .iter()
        .map(|(_, d)| d.idempotency_key.as_deref())
        .collect();
    let creators: Vec<Option<Uuid>> = new.iter().map(|(_, d)| d.created_by.map(|u| u.0)).collect();
    let json = |v: Option<serde_json::Value>| v.filter(|v| !v.is_null());
    let commands: Vec<Option<serde_json::Value>> = new
        .iter()
        .map(|(_, d)| json(d.process.command.as_ref().map(|c| serde_json::json!(c))))
        .collect();
    let envs: Vec<Option<serde_json::Value>> = new
        .iter()
        .map(|(_, d)| json(d.process.env.as_ref().map(|e| serde_json::json!(e))))
        .collect();
    let sql = "insert into deployments (id, cluster_id, org_id, name, image, cpu_millis, memory_mib, gpus, \
           priority, max_runtime_seconds, status, enqueued_at, idempotency_key, created_by, \
           created_at, updated_at, command, env) \
         select i, $1, $2, n, im, c, m, g, p, rt, 'queued', $3, k, cb, $3, $3, cmd, ev \
         from unnest($4::uuid[], $5::text[], $6::text[], $7::int8[], $8::int8[], $9::int8[], \
                     $10::int4[], $11::int4[], $12::text[], $13::uuid[], $14::jsonb[], $15::jsonb[]) \
              as x(i, n, im, c, m, g, p, rt, k, cb, cmd, ev)";
    db.execute_typed(
        sql,
        &[
            (&cluster.0, Type::UUID),
            (&org.0, Type::UUID),
            (&now, Type::TIMESTAMPTZ),
            (&ids, Type::UUID_ARRAY),
            (&names, Type::TEXT_ARRAY),
            (&images, Type::TEXT_ARRAY),
            (&cpu, Type::INT8_ARRAY),
            (&mem, Type::INT8_ARRAY),
            (&gpus, Type::INT8_ARRAY),
            (&priorities, Type::INT4_ARRAY),
            (&runtimes, Type::INT4_ARRAY),
            (&keys, Type::TEXT_ARRAY),
            (&creators, Type::UUID_ARRAY),
            (&commands, Type::JSONB_ARRAY),
            (&envs, Type::JSONB_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// The process of a deployment (its `command` and `env`), kept apart from its row: only a
/// single deployment's answer shows it and only an agent's order needs it, so neither the
/// rows the scheduler reads nor the cluster object's cache carry it.
pub async fn process(db: &impl GenericClient, id: DeploymentId) -> DbResult<Process> {
    let row = db
        .query_typed_opt(
            "select command, env from deployments where id = $1",
            &[(&id.0, Type::UUID)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Process::default());
    };
    fn decode<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> DbResult<Option<T>> {
        let v: Option<serde_json::Value> = row.try_get(name)?;
        v.map(serde_json::from_value)
            .transpose()
            .map_err(|e| DbError::Other(format!("stored {name} is not valid: {e}")))
    }
    Ok(Process {
        command: decode(&row, "command")?,
        env: decode(&row, "env")?,
    })
}

/// One deployment.
pub async fn get(db: &impl GenericClient, id: DeploymentId) -> DbResult<Option<DeploymentRow>> {
    let sql = format!("select {COLUMNS} from deployments where id = $1");
    let row = db.query_typed_opt(&sql, &[(&id.0, Type::UUID)]).await?;
    row.as_ref().map(DeploymentRow::try_from).transpose()
}

/// One deployment and `user`'s role in its organization, in one round trip.
pub async fn get_with_role(
    db: &impl GenericClient,
    id: DeploymentId,
    user: Option<UserId>,
) -> DbResult<Option<(DeploymentRow, Option<crate::domain::policy::Role>)>> {
    let sql = format!(
        "select d.*, m.role as member_role from (select {COLUMNS} from deployments where id = $1) d \
         left join memberships m on m.org_id = d.org_id and m.user_id = $2"
    );
    let row = db
        .query_typed_opt(
            &sql,
            &[(&id.0, Type::UUID), (&user.map(|u| u.0), Type::UUID)],
        )
        .await?;
    row.map(|r| {
        Ok((
            DeploymentRow::try_from(&r)?,
            super::clusters::member_role(&r)?,
        ))
    })
    .transpose()
}

/// The deployment a cluster already stored under an idempotency key.
pub async fn by_idempotency_key(
    db: &impl GenericClient,
    cluster: ClusterId,
    key: &str,
) -> DbResult<Option<DeploymentRow>> {
    let sql =
        format!("select {COLUMNS} from deployments where cluster_id = $1 and idempotency_key = $2");
    let row = db
        .query_typed_opt(&sql, &[(&cluster.0, Type::UUID), (&key, Type::TEXT)])
        .await?;
    row.as_ref().map(DeploymentRow::try_from).transpose()
}

/// Every queued or running deployment of a cluster: the scheduler's input.
pub async fn live(db: &impl GenericClient, cluster: ClusterId) -> DbResult<Vec<DeploymentRow>> {
    let sql = format!(
        "select {COLUMNS} from deployments where cluster_id = $1 and status in ('queued', 'running')"
    );
    rows(db.query_typed(&sql, &[(&cluster.0, Type::UUID)]).await?)
}

/// A cluster's deployments, by id, optionally of one status.
pub async fn list(
    db: &impl GenericClient,
    cluster: ClusterId,
    status: Option<Status>,
    page: &Page,
) -> DbResult<Vec<DeploymentRow>> {
    let sql = format!(
        "select {COLUMNS} from deployments where cluster_id = $1 \
         and ($2::text is null or status = $2) and ($3::uuid is null or id > $3) \
         order by id limit $4"
    );
    let status = status.map(Status::as_str);
    rows(
        db.query_typed(
            &sql,
            &[
                (&cluster.0, Type::UUID),
                (&status, Type::TEXT),
                (&page.after, Type::UUID),
                (&page.fetch(), Type::INT8),
            ],
        )
        .await?,
    )
}

/// Admits queued deployments: running from `now`, with their deadline.
pub async fn admit(
    db: &impl GenericClient,
    ids: &[DeploymentId],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    db.query_typed(
        "update deployments set status = 'running', admitted_at = $2, updated_at = $2, \
           deadline_at = $2 + make_interval(secs => max_runtime_seconds) \
         where id = any($1) and status = 'queued'",
        &[(&ids, Type::UUID_ARRAY), (&now, Type::TIMESTAMPTZ)],
    )
    .await?;
    Ok(())
}

/// Sends preempted deployments back to the queue, each (victim, preemptor) with its
/// preemptor. They keep their original `enqueued_at`, so they return to their old place
/// among equal priorities.
pub async fn requeue_preempted(
    db: &impl GenericClient,
    preempted: &[(DeploymentId, DeploymentId)],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if preempted.is_empty() {
        return Ok(());
    }
    let victims: Vec<Uuid> = preempted.iter().map(|(v, _)| v.0).collect();
    let by: Vec<Uuid> = preempted.iter().map(|(_, b)| b.0).collect();
    db.query_typed(
        "update deployments d set status = 'queued', admitted_at = null, deadline_at = null, \
           preemptions = d.preemptions + 1, preempted_by = v.by, updated_at = $3 \
         from unnest($1::uuid[], $2::uuid[]) as v(id, by) \
         where d.id = v.id and d.status = 'running'",
        &[
            (&victims, Type::UUID_ARRAY),
            (&by, Type::UUID_ARRAY),
            (&now, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// A move of one live deployment out of `from` into a final `to` status.
#[derive(Debug, Clone, PartialEq)]
pub struct Finishing {
    pub id: DeploymentId,
    pub from: Status,
    pub to: Status,
    /// Replaces the stored message when given.
    pub message: Option<String>,
}

/// Applies every move in one statement (each only if the row is still in its `from`).
pub async fn finish(
    db: &impl GenericClient,
    moves: &[Finishing],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if moves.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = moves.iter().map(|m| m.id.0).collect();
    let from: Vec<&str> = moves.iter().map(|m| m.from.as_str()).collect();
    let to: Vec<&str> = moves.iter().map(|m| m.to.as_str()).collect();
    let messages: Vec<Option<&str>> = moves.iter().map(|m| m.message.as_deref()).collect();
    db.execute_typed(
        "update deployments d set status = x.t, finished_at = $5, updated_at = $5, \
           deadline_at = null, message = coalesce(x.m, d.message) \
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) as x(i, f, t, m) \
         where d.id = x.i and d.status = x.f",
        &[
            (&ids, Type::UUID_ARRAY),
            (&from, Type::TEXT_ARRAY),
            (&to, Type::TEXT_ARRAY),
            (&messages, Type::TEXT_ARRAY),
            (&now, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// Changes live deployments' priorities, in one statement.
pub async fn set_priorities(
    db: &impl GenericClient,
    changes: &[(DeploymentId, i32)],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = changes.iter().map(|(id, _)| id.0).collect();
    let priorities: Vec<i32> = changes.iter().map(|(_, p)| *p).collect();
    db.execute_typed(
        "update deployments d set priority = x.p, updated_at = $3 \
         from unnest($1::uuid[], $2::int4[]) as x(i, p) where d.id = x.i",
        &[
            (&ids, Type::UUID_ARRAY),
            (&priorities, Type::INT4_ARRAY),
            (&now, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// One line of a deployment's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub deployment_id: DeploymentId,
    pub kind: EventKind,
    pub reason: Option<String>,
    pub by_deployment: Option<DeploymentId>,
}

/// Appends events, all at `now`, in one statement.
pub async fn record(db: &impl GenericClient, events: &[Event], now: DateTime<Utc>) -> DbResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.deployment_id.0).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let reasons: Vec<Option<&str>> = events.iter().map(|e| e.reason.as_deref()).collect();
    let by: Vec<Option<Uuid>> = events
        .iter()
        .map(|e| e.by_deployment.map(|b| b.0))
        .collect();
    db.query_typed(
        "insert into deployment_events (deployment_id, kind, reason, by_deployment, at) \
         select d, k, r, b, $5 from unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[]) as e(d, k, r, b)",
        &[
            (&ids, Type::UUID_ARRAY),
            (&kinds, Type::TEXT_ARRAY),
            (&reasons, Type::TEXT_ARRAY),
            (&by, Type::UUID_ARRAY),
            (&now, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// A stored event with its time.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub reason: Option<String>,
    pub by_deployment: Option<DeploymentId>,
}

/// A deployment's history, oldest first.
pub async fn events(db: &impl GenericClient, id: DeploymentId) -> DbResult<Vec<EventRow>> {
    let rows = db
        .query_typed(
            "select at, kind, reason, by_deployment from deployment_events \
             where deployment_id = $1 order by id",
            &[(&id.0, Type::UUID)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get(1)?;
            let by: Option<Uuid> = r.try_get(3)?;
            Ok(EventRow {
                at: r.try_get(0)?,
                kind: EventKind::parse(&kind)
                    .ok_or_else(|| DbError::Other(format!("unknown event kind {kind} stored")))?,
                reason: r.try_get(2)?,
                by_deployment: by.map(DeploymentId),
            })
        })
        .collect()
}
