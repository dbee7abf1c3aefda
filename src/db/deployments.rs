//! Deployments and their event history. Status changes are written in bulk (one statement
//! per kind of change), so a scheduling pass costs a fixed number of round trips.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::clusters::resources;
use super::{DbError, DbResult, Page};
use crate::domain::deployment::{EventKind, Process, Status};
use crate::domain::ids::{AgentId, ClusterId, DeploymentId, OrgId, UserId};
use crate::domain::resources::Resources;
use crate::domain::scheduling::placement::{Placed, Stage};

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
    /// The agent it was placed on (kept after it ends; cleared when it is lost).
    pub agent: Option<AgentRef>,
    /// Where its container is, when one is expected.
    pub placement: Option<Stage>,
    /// When its agent said it started.
    pub started_at: Option<DateTime<Utc>>,
    /// What its agent reported at its exit.
    pub exit_code: Option<i32>,
    /// The deployments it waits for (`depends_on`), as submitted.
    #[serde(default)]
    pub depends_on: Vec<DeploymentId>,
}

/// An agent as a deployment names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentRef {
    pub id: AgentId,
    pub name: String,
}

/// Columns in the order `TryFrom<&Row>` reads them.
pub const COLUMNS: &str = "id, cluster_id, org_id, name, image, cpu_millis, memory_mib, gpus, \
    priority, max_runtime_seconds, status, enqueued_at, admitted_at, deadline_at, finished_at, \
    preemptions, preempted_by, message, idempotency_key, created_at, updated_at, agent_id, \
    agent_name, placement, started_at, exit_code, depends_on";

/// A stored status.
pub(super) fn stored_status(s: &str) -> DbResult<Status> {
    Status::parse(s).ok_or_else(|| DbError::Other(format!("unknown status {s} stored")))
}

/// The stored placement stage.
fn stage(r: &Row) -> DbResult<Option<Stage>> {
    let stage: Option<String> = r.try_get("placement")?;
    stage
        .map(|s| {
            Stage::parse(&s).ok_or_else(|| DbError::Other(format!("unknown placement {s} stored")))
        })
        .transpose()
}

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
            status: stored_status(&status)?,
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
            agent: match (
                r.try_get::<_, Option<Uuid>>("agent_id")?,
                r.try_get::<_, Option<String>>("agent_name")?,
            ) {
                (Some(id), Some(name)) => Some(AgentRef {
                    id: AgentId(id),
                    name,
                }),
                _ => None,
            },
            placement: stage(r)?,
            started_at: r.try_get("started_at")?,
            exit_code: r.try_get("exit_code")?,
            depends_on: r
                .try_get::<_, Vec<Uuid>>("depends_on")?
                .into_iter()
                .map(DeploymentId)
                .collect(),
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
    /// What it must wait for (no duplicates; the engine checks them in its batch).
    #[serde(default)]
    pub depends_on: Vec<DeploymentId>,
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
            agent: None,
            placement: None,
            started_at: None,
            exit_code: None,
            depends_on: new.depends_on.clone(),
        }
    }
}

/// Stores new queued deployments of one cluster in one statement, in order; each row is
/// [`DeploymentRow::queued`], and those in `held` wait for their dependencies.
pub async fn insert_many(
    db: &impl GenericClient,
    cluster: ClusterId,
    org: OrgId,
    new: &[(DeploymentId, NewDeployment)],
    held: &[DeploymentId],
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
    // Arrays of arrays do not unnest row by row: each `depends_on` goes as its text form.
    let depends_on: Vec<String> = new
        .iter()
        .map(|(_, d)| {
            let ids: Vec<String> = d.depends_on.iter().map(ToString::to_string).collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    let held: Vec<Uuid> = held.iter().map(|id| id.0).collect();
    let sql = "insert into deployments (id, cluster_id, org_id, name, image, cpu_millis, memory_mib, gpus, \
           priority, max_runtime_seconds, status, enqueued_at, idempotency_key, created_by, \
           created_at, updated_at, command, env, depends_on, held) \
         select i, $1, $2, n, im, c, m, g, p, rt, 'queued', $3, k, cb, $3, $3, cmd, ev, \
                dep::uuid[], i = any($17) \
         from unnest($4::uuid[], $5::text[], $6::text[], $7::int8[], $8::int8[], $9::int8[], \
                     $10::int4[], $11::int4[], $12::text[], $13::uuid[], $14::jsonb[], $15::jsonb[], \
                     $16::text[]) \
              as x(i, n, im, c, m, g, p, rt, k, cb, cmd, ev, dep)";
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
            (&depends_on, Type::TEXT_ARRAY),
            (&held, Type::UUID_ARRAY),
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
    row.as_ref().map_or(Ok(Process::default()), process_of)
}

/// The `command` and `env` columns of a row.
fn process_of(row: &Row) -> DbResult<Process> {
    fn decode<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> DbResult<Option<T>> {
        let v: Option<serde_json::Value> = row.try_get(name)?;
        v.map(serde_json::from_value)
            .transpose()
            .map_err(|e| DbError::Other(format!("stored {name} is not valid: {e}")))
    }
    Ok(Process {
        command: decode(row, "command")?,
        env: decode(row, "env")?,
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

/// What an organization's clusters hold in one status: how many deployments, and what they
/// hold or ask for together (zero for the final statuses, which hold nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub cluster: ClusterId,
    pub status: Status,
    pub count: i64,
    pub resources: Resources,
}

/// Every (cluster, status) of an organization that has deployments, with its [`Tally`]: two
/// statements, pipelined. The counts walk the (cluster, status) index only; the sums read
/// the live rows alone (the live index), never the finished history.
pub async fn tally_of_org(db: &impl GenericClient, org: OrgId) -> DbResult<Vec<Tally>> {
    let params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)] = &[(&org.0, Type::UUID)];
    let (counts, held) = tokio::try_join!(
        db.query_typed(
            "select d.cluster_id, d.status, count(*) as n \
             from clusters c join deployments d on d.cluster_id = c.id \
             where c.org_id = $1 group by d.cluster_id, d.status",
            params,
        ),
        db.query_typed(
            "select d.cluster_id, d.status, sum(d.cpu_millis)::int8 as cpu_millis, \
               sum(d.memory_mib)::int8 as memory_mib, sum(d.gpus)::int8 as gpus \
             from clusters c join deployments d on d.cluster_id = c.id \
             where c.org_id = $1 and d.status in ('queued', 'running') \
             group by d.cluster_id, d.status",
            params,
        ),
    )?;
    let key = |r: &Row| -> DbResult<(ClusterId, Status)> {
        let status: String = r.try_get("status")?;
        let status = stored_status(&status)?;
        Ok((ClusterId(r.try_get("cluster_id")?), status))
    };
    let mut sums = std::collections::HashMap::new();
    for r in &held {
        sums.insert(key(r)?, resources(r)?);
    }
    counts
        .iter()
        .map(|r| {
            let (cluster, status) = key(r)?;
            Ok(Tally {
                cluster,
                status,
                count: r.try_get("n")?,
                resources: sums.get(&(cluster, status)).copied().unwrap_or_default(),
            })
        })
        .collect()
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
           deadline_at = null, held = false, message = coalesce(x.m, d.message) \
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

/// The placed containers of a cluster (deployments with a placement, whatever their status).
pub async fn placements(
    db: &impl GenericClient,
    cluster: ClusterId,
) -> DbResult<Vec<(DeploymentId, Placed)>> {
    let rows = db
        .query_typed(
            "select id, agent_id, cpu_millis, memory_mib, gpus, placement, stop_until \
             from deployments where cluster_id = $1 and placement is not null",
            &[(&cluster.0, Type::UUID)],
        )
        .await?;
    rows.iter()
        .filter_map(|r| {
            let agent: Option<Uuid> = match r.try_get("agent_id") {
                Ok(a) => a,
                Err(e) => return Some(Err(e.into())),
            };
            // A placement whose agent record is gone (deleted cluster agents) holds nothing.
            let agent = agent?;
            Some((|| {
                Ok((
                    DeploymentId(r.try_get("id")?),
                    Placed {
                        agent: AgentId(agent),
                        resources: resources(r)?,
                        stage: stage(r)?
                            .ok_or_else(|| DbError::Other("placement missing".into()))?,
                        stop_until: r.try_get("stop_until")?,
                    },
                ))
            })())
        })
        .collect()
}

/// A deployment's placement as it is to be stored: its stage (none: no container expected)
/// and until when a stopping container counts; and, when given, its agent (`Some(None)`:
/// none any more), start time and exit code (absent ones keep theirs).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementWrite {
    pub id: DeploymentId,
    pub agent: Option<Option<AgentRef>>,
    pub stage: Option<Stage>,
    pub stop_until: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
}

/// Writes placements in one statement.
pub async fn set_placements(
    db: &impl GenericClient,
    writes: &[PlacementWrite],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = writes.iter().map(|w| w.id.0).collect();
    let set_agent: Vec<bool> = writes.iter().map(|w| w.agent.is_some()).collect();
    fn agent(w: &PlacementWrite) -> Option<&AgentRef> {
        w.agent.as_ref().and_then(Option::as_ref)
    }
    let agents: Vec<Option<Uuid>> = writes.iter().map(|w| agent(w).map(|a| a.id.0)).collect();
    let names: Vec<Option<&str>> = writes
        .iter()
        .map(|w| agent(w).map(|a| a.name.as_str()))
        .collect();
    let stages: Vec<Option<&str>> = writes.iter().map(|w| w.stage.map(Stage::as_str)).collect();
    let until: Vec<Option<DateTime<Utc>>> = writes.iter().map(|w| w.stop_until).collect();
    let started: Vec<Option<DateTime<Utc>>> = writes.iter().map(|w| w.started_at).collect();
    let codes: Vec<Option<i32>> = writes.iter().map(|w| w.exit_code).collect();
    db.execute_typed(
        "update deployments d set \
           agent_id = case when x.sa then x.a else d.agent_id end, \
           agent_name = case when x.sa then x.n else d.agent_name end, \
           placement = x.p, stop_until = x.u, started_at = coalesce(x.s, d.started_at), \
           exit_code = coalesce(x.e, d.exit_code), updated_at = $8 \
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], \
                     $6::timestamptz[], $7::int4[], $9::bool[]) as x(i, a, n, p, u, s, e, sa) \
         where d.id = x.i",
        &[
            (&ids, Type::UUID_ARRAY),
            (&agents, Type::UUID_ARRAY),
            (&names, Type::TEXT_ARRAY),
            (&stages, Type::TEXT_ARRAY),
            (&until, Type::TIMESTAMPTZ_ARRAY),
            (&started, Type::TIMESTAMPTZ_ARRAY),
            (&codes, Type::INT4_ARRAY),
            (&now, Type::TIMESTAMPTZ),
            (&set_agent, Type::BOOL_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Sends deployments whose agent was lost back to the queue, at their old place (their
/// `enqueued_at` kept), as a preemption does but without counting one.
pub async fn requeue_lost(
    db: &impl GenericClient,
    ids: &[DeploymentId],
    now: DateTime<Utc>,
) -> DbResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    db.execute_typed(
        "update deployments set status = 'queued', admitted_at = null, deadline_at = null, \
           updated_at = $2 where id = any($1) and status = 'running'",
        &[(&ids, Type::UUID_ARRAY), (&now, Type::TIMESTAMPTZ)],
    )
    .await?;
    Ok(())
}

/// The processes (`command`, `env`) of several deployments, for their run orders.
pub async fn processes(
    db: &impl GenericClient,
    ids: &[DeploymentId],
) -> DbResult<Vec<(DeploymentId, Process)>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = db
        .query_typed(
            "select id, command, env from deployments where id = any($1)",
            &[(&ids, Type::UUID_ARRAY)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((DeploymentId(r.try_get("id")?), process_of(r)?)))
        .collect()
}

/// One line of a deployment's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub deployment_id: DeploymentId,
    pub kind: EventKind,
    pub reason: Option<String>,
    pub by_deployment: Option<DeploymentId>,
}

/// Appends events of `cluster`'s deployments, all at `now`, in one statement, and answers
/// their ids in the order of `events` (the identity is drawn in the order the rows are
/// produced, which `ordinality` fixes).
pub async fn record(
    db: &impl GenericClient,
    cluster: ClusterId,
    events: &[Event],
    now: DateTime<Utc>,
) -> DbResult<Vec<i64>> {
    if events.is_empty() {
        return Ok(vec![]);
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.deployment_id.0).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let reasons: Vec<Option<&str>> = events.iter().map(|e| e.reason.as_deref()).collect();
    let by: Vec<Option<Uuid>> = events
        .iter()
        .map(|e| e.by_deployment.map(|b| b.0))
        .collect();
    let rows = db
        .query_typed(
            "insert into deployment_events (deployment_id, cluster_id, kind, reason, by_deployment, at) \
             select d, $6, k, r, b, $5 \
             from unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[]) with ordinality as e(d, k, r, b, n) \
             order by n returning id",
            &[
                (&ids, Type::UUID_ARRAY),
                (&kinds, Type::TEXT_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
                (&by, Type::UUID_ARRAY),
                (&now, Type::TIMESTAMPTZ),
                (&cluster.0, Type::UUID),
            ],
        )
        .await?;
    let mut out = rows
        .iter()
        .map(|r| r.try_get::<_, i64>(0))
        .collect::<Result<Vec<_>, _>>()?;
    // Drawn in row order; RETURNING's own order is not promised.
    out.sort_unstable();
    Ok(out)
}

/// The id of `cluster`'s latest event (0 when it has none).
pub async fn last_event(db: &impl GenericClient, cluster: ClusterId) -> DbResult<i64> {
    let row = db
        .query_typed_one(
            "select coalesce(max(id), 0)::int8 from deployment_events where cluster_id = $1",
            &[(&cluster.0, Type::UUID)],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// An event of a cluster's with the deployment it is about, as the deployment is now.
#[derive(Debug, Clone)]
pub struct ClusterEvent {
    pub id: i64,
    pub kind: EventKind,
    pub deployment: DeploymentRow,
}

/// `cluster`'s events after the event `after`, oldest first, at most `limit`, each with its
/// deployment as it is now; `None` when `after` is none of the cluster's events.
pub async fn events_after(
    db: &impl GenericClient,
    cluster: ClusterId,
    after: i64,
    limit: i64,
) -> DbResult<Option<Vec<ClusterEvent>>> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("d.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "select e.id as event_id, e.kind as event_kind, {cols} from deployment_events e \
         join deployments d on d.id = e.deployment_id \
         where e.cluster_id = $1 and e.id > $2 order by e.id limit $3"
    );
    let known_params = [
        (
            &cluster.0 as &(dyn tokio_postgres::types::ToSql + Sync),
            Type::UUID,
        ),
        (&after, Type::INT8),
    ];
    let params = [
        (
            &cluster.0 as &(dyn tokio_postgres::types::ToSql + Sync),
            Type::UUID,
        ),
        (&after, Type::INT8),
        (&limit, Type::INT8),
    ];
    let (known, rows) = tokio::try_join!(
        db.query_typed_opt(
            "select 1 from deployment_events where cluster_id = $1 and id = $2",
            &known_params,
        ),
        db.query_typed(&sql, &params),
    )?;
    if known.is_none() {
        return Ok(None);
    }
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get("event_kind")?;
            Ok(ClusterEvent {
                id: r.try_get("event_id")?,
                kind: EventKind::parse(&kind)
                    .ok_or_else(|| DbError::Other(format!("unknown event kind {kind}")))?,
                deployment: DeploymentRow::try_from(r)?,
            })
        })
        .collect::<DbResult<Vec<_>>>()
        .map(Some)
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
