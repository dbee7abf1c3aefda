//! A batch of commands, one transaction.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

use super::authorize::Callers;
use super::{Command, EngineError, Executed, Outcome};
use crate::db::clusters::{self, ClusterRow};
use crate::db::deployments::{self, DeploymentRow, Event, NewDeployment};
use crate::domain::deployment::Status;
use crate::domain::ids::ClusterId;
use crate::domain::resources::Resources;
use crate::domain::scheduler::{self, ClusterState, Decision};
use crate::domain::validation::FieldError;

/// Scheduling passes per batch at most: a pass may preempt, and victims requeued by one
/// pass are considered by the next; preemption chains strictly lower the priority, so a few
/// passes always settle.
const MAX_PASSES: usize = 8;

/// What one command of a batch is about, once applied.
enum Subject {
    Deployment { id: Uuid, replayed: bool },
    Cluster,
    Deleted,
    Tick,
}

/// Runs `cmds` against `cluster` in one transaction, in order, each with its own result,
/// and commits (or rolls back when the batch as a whole fails).
///
/// `cache` holds the cluster's live deployments as of the last commit: the engine is the
/// only writer of them, so it need not read them back. It is rebuilt from Postgres when
/// empty and on every `Tick` (the sweep is also the safety net for anything written
/// elsewhere). Whatever goes wrong, the caller drops the cache: Postgres is the record.
pub async fn execute_batch(
    db: &Client,
    cluster: ClusterId,
    cache: &mut Option<Live>,
    cmds: Vec<Command>,
    now: DateTime<Utc>,
) -> Result<Vec<Result<Executed, EngineError>>, EngineError> {
    match in_transaction(db, cluster, cache, cmds, now).await {
        Ok(results) => {
            db.batch_execute("commit").await?;
            Ok(results)
        }
        Err(e) => {
            // A failed rollback means a lost connection, which the caller replaces anyway.
            let _ = db.batch_execute("rollback").await;
            Err(e)
        }
    }
}

/// The batch between BEGIN and COMMIT. BEGIN, the cluster's lock and the callers' roles go
/// out together (pipelined): one round trip where there were three.
async fn in_transaction(
    tx: &Client,
    cluster: ClusterId,
    cache: &mut Option<Live>,
    cmds: Vec<Command>,
    now: DateTime<Utc>,
) -> Result<Vec<Result<Executed, EngineError>>, EngineError> {
    let (_, locked, callers) = tokio::try_join!(
        async { tx.batch_execute("begin").await.map_err(EngineError::from) },
        async { clusters::lock(tx, cluster).await.map_err(EngineError::from) },
        Callers::resolve(tx, cluster, &cmds),
    )?;
    let mut c = locked.ok_or_else(|| EngineError::NotFound("cluster".into()))?;
    if cache.is_none() || cmds.iter().any(|c| matches!(c, Command::Tick)) {
        *cache = Some(Live::new(deployments::live(tx, cluster).await?));
    }
    let Some(live) = cache.as_mut() else {
        return Err(EngineError::Internal("cache missing".into()));
    };
    let mut batch = Batch {
        events: Vec::new(),
        inserts: Vec::new(),
        deleted: false,
    };
    let mut subjects = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        let subject = if batch.deleted {
            Err(EngineError::NotFound("cluster".into()))
        } else if let Err(refused) = callers.permit(c.org_id, &cmd) {
            Err(refused)
        } else {
            apply(tx, &mut c, live, &mut batch, cmd, now).await?
        };
        subjects.push(subject);
    }
    if batch.deleted {
        // Only an empty cluster is deleted: whatever else this batch did before the delete
        // finished deployments (answered from `done`) or was refused.
        clusters::delete(tx, cluster).await?;
        let outcomes = subjects
            .into_iter()
            .map(|s| {
                let outcome = match s? {
                    Subject::Deployment { id, replayed } => match live.done.get(&id) {
                        Some(row) => Outcome::Deployment {
                            deployment: Box::new(row.clone()),
                            position: None,
                            replayed,
                        },
                        None => return Err(EngineError::NotFound("deployment".into())),
                    },
                    Subject::Cluster => Outcome::Cluster {
                        usage: live.usage(),
                        cluster: Box::new(c.clone()),
                    },
                    Subject::Deleted => Outcome::Deleted,
                    Subject::Tick => Outcome::Ticked {
                        admitted: 0,
                        preempted: 0,
                        expired: 0,
                    },
                };
                Ok(Executed {
                    outcome,
                    next_deadline: None,
                    batch: None,
                })
            })
            .collect();
        *cache = None;
        return Ok(outcomes);
    }

    for row in deployments::insert_many(tx, cluster, c.org_id, &batch.inserts, now).await? {
        batch.events.push(event(row.id, "created", None, None));
        live.rows.insert(row.id, row);
    }
    let expired = live.expire(tx, now, &mut batch.events).await?;
    let (admitted, preempted) = live.schedule(tx, &c, now, &mut batch.events).await?;
    deployments::record(tx, &batch.events, now).await?;

    let next_deadline = live.next_deadline();
    let positions = live.positions(&c, now, &subjects);
    let mut out = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let outcome = match subject {
            Err(e) => Err(e),
            Ok(Subject::Deployment { id, replayed }) => {
                let deployment = match live.rows.get(&id).or_else(|| live.done.get(&id)) {
                    Some(row) => row.clone(),
                    None => deployments::get(tx, id)
                        .await?
                        .ok_or_else(|| EngineError::NotFound("deployment".into()))?,
                };
                let position = positions.get(&id).copied();
                Ok(Outcome::Deployment {
                    deployment: Box::new(deployment),
                    position,
                    replayed,
                })
            }
            Ok(Subject::Cluster) => Ok(Outcome::Cluster {
                usage: live.usage(),
                cluster: Box::new(c.clone()),
            }),
            Ok(Subject::Deleted) => Ok(Outcome::Deleted),
            Ok(Subject::Tick) => Ok(Outcome::Ticked {
                admitted,
                preempted,
                expired,
            }),
        };
        out.push(outcome.map(|outcome| Executed {
            outcome,
            next_deadline,
            batch: None,
        }));
    }
    live.done.clear();
    Ok(out)
}

/// Writes collected while a batch is applied.
struct Batch {
    events: Vec<Event>,
    inserts: Vec<(Uuid, NewDeployment)>,
    deleted: bool,
}

/// Applies one command. `Ok(Err(_))` refuses this command alone (nothing was written for
/// it); `Err(_)` is a database failure that aborts the batch.
async fn apply(
    tx: &Client,
    c: &mut ClusterRow,
    live: &mut Live,
    batch: &mut Batch,
    cmd: Command,
    now: DateTime<Utc>,
) -> Result<Result<Subject, EngineError>, EngineError> {
    Ok(Ok(match cmd {
        Command::Tick => Subject::Tick,
        Command::DeleteCluster => {
            if !live.rows.is_empty() || !batch.inserts.is_empty() {
                return Ok(Err(EngineError::Conflict(
                    "the cluster still has queued or running deployments".into(),
                )));
            }
            batch.deleted = true;
            Subject::Deleted
        }
        Command::UpdateCluster {
            name,
            capacity,
            queueing,
            preemption,
        } => {
            if let Some(cap) = capacity {
                let allocated = live.allocated();
                if !allocated.fits_within(&cap) {
                    return Ok(Err(EngineError::Conflict(format!(
                        "cannot shrink below what is allocated ({} mCPU, {} MiB, {} GPUs)",
                        allocated.cpu_millis, allocated.memory_mib, allocated.gpus
                    ))));
                }
                c.capacity = cap;
            }
            if let Some(name) = name {
                if name != c.name && clusters::name_taken(tx, c.org_id, &name).await? {
                    return Ok(Err(EngineError::Conflict(
                        "a cluster with this name already exists".into(),
                    )));
                }
                c.name = name;
            }
            c.policy.queueing = queueing.unwrap_or(c.policy.queueing);
            c.policy.preemption = preemption.unwrap_or(c.policy.preemption);
            *c = clusters::update(tx, c, now).await?;
            Subject::Cluster
        }
        Command::Submit {
            deployment: mut new,
            by,
        } => {
            new.created_by = by.user_id();
            if let Some(key) = &new.idempotency_key {
                let earlier = match batch
                    .inserts
                    .iter()
                    .find(|(_, d)| d.idempotency_key.as_ref() == Some(key))
                {
                    Some((id, d)) => Some((*id, d.clone())),
                    None => deployments::by_idempotency_key(tx, c.id, key)
                        .await?
                        .map(|r| {
                            let d = NewDeployment {
                                name: r.name,
                                image: r.image,
                                resources: r.resources,
                                priority: r.priority,
                                max_runtime_seconds: r.max_runtime_seconds,
                                idempotency_key: r.idempotency_key,
                                created_by: None,
                            };
                            (r.id, d)
                        }),
                };
                if let Some((id, d)) = earlier {
                    // Priority may have been changed since; what was asked for may not.
                    let same = d.name == new.name
                        && d.image == new.image
                        && d.resources == new.resources
                        && d.max_runtime_seconds == new.max_runtime_seconds;
                    if !same {
                        return Ok(Err(EngineError::Conflict(
                            "this Idempotency-Key was used for a different request".into(),
                        )));
                    }
                    return Ok(Ok(Subject::Deployment { id, replayed: true }));
                }
            }
            if !scheduler::can_ever_fit(&c.capacity, &new.resources) {
                return Ok(Err(EngineError::Validation(vec![FieldError::new(
                    "resources",
                    "exceeds the cluster's total capacity on some dimension: it could never run",
                )])));
            }
            let id = Uuid::now_v7();
            batch.inserts.push((id, new));
            Subject::Deployment {
                id,
                replayed: false,
            }
        }
        Command::Cancel { id } => {
            if let Err(e) = live.expect(tx, c.id, id, Status::Queued, "cancel").await? {
                return Ok(Err(e));
            }
            deployments::finish(tx, &[id], Status::Queued, Status::Cancelled, None, now).await?;
            batch
                .events
                .push(event(id, "cancelled", Some("cancelled by a user"), None));
            live.finish(id, Status::Cancelled, None, now);
            Subject::Deployment {
                id,
                replayed: false,
            }
        }
        Command::Stop { id } => {
            if let Err(e) = live.expect(tx, c.id, id, Status::Running, "stop").await? {
                return Ok(Err(e));
            }
            deployments::finish(tx, &[id], Status::Running, Status::Stopped, None, now).await?;
            batch
                .events
                .push(event(id, "stopped", Some("stopped by a user"), None));
            live.finish(id, Status::Stopped, None, now);
            Subject::Deployment {
                id,
                replayed: false,
            }
        }
        Command::Finish {
            id,
            succeeded,
            message,
        } => {
            if let Err(e) = live.expect(tx, c.id, id, Status::Running, "finish").await? {
                return Ok(Err(e));
            }
            let to = if succeeded {
                Status::Succeeded
            } else {
                Status::Failed
            };
            deployments::finish(tx, &[id], Status::Running, to, message.as_deref(), now).await?;
            batch
                .events
                .push(event(id, to.as_str(), message.as_deref(), None));
            live.finish(id, to, message, now);
            Subject::Deployment {
                id,
                replayed: false,
            }
        }
        Command::SetPriority { id, priority } => {
            let Some(row) = live.rows.get_mut(&id) else {
                let refusal = match live
                    .expect(tx, c.id, id, Status::Queued, "change the priority of")
                    .await?
                {
                    Err(e) => e,
                    Ok(()) => {
                        EngineError::Internal("a live deployment missing from the cache".into())
                    }
                };
                return Ok(Err(refusal));
            };
            deployments::set_priority(tx, id, priority, now).await?;
            let change = format!("{} → {priority}", row.priority);
            batch
                .events
                .push(event(id, "priority_changed", Some(&change), None));
            row.priority = priority;
            row.updated_at = now;
            Subject::Deployment {
                id,
                replayed: false,
            }
        }
    }))
}

fn event(id: Uuid, kind: &str, reason: Option<&str>, by: Option<Uuid>) -> Event {
    Event {
        deployment_id: id,
        kind: kind.to_string(),
        reason: reason.map(str::to_string),
        by_deployment: by,
    }
}

/// A cluster's queued and running deployments, kept current by the engine between
/// commits, plus the ones a batch has just finished (for its answers).
#[derive(Debug, Default)]
pub struct Live {
    rows: HashMap<Uuid, DeploymentRow>,
    done: HashMap<Uuid, DeploymentRow>,
}

impl Live {
    fn new(rows: Vec<DeploymentRow>) -> Self {
        Self {
            rows: rows.into_iter().map(|r| (r.id, r)).collect(),
            done: HashMap::new(),
        }
    }

    fn allocated(&self) -> Resources {
        Resources::sum(
            self.rows
                .values()
                .filter(|r| r.status == Status::Running)
                .map(|r| &r.resources),
        )
    }

    fn usage(&self) -> clusters::Usage {
        let of = |s: Status| self.rows.values().filter(move |r| r.status == s);
        clusters::Usage {
            allocated: Resources::sum(of(Status::Running).map(|r| &r.resources)),
            queued_demand: Resources::sum(of(Status::Queued).map(|r| &r.resources)),
            running: of(Status::Running).count() as i64,
            queued: of(Status::Queued).count() as i64,
        }
    }

    /// Whether `id` is a deployment of this cluster in `status`; if not, why (unknown, of
    /// another cluster, or in another state).
    async fn expect(
        &self,
        tx: &Client,
        cluster: ClusterId,
        id: Uuid,
        status: Status,
        verb: &str,
    ) -> Result<Result<(), EngineError>, EngineError> {
        let current = match self.rows.get(&id) {
            Some(r) => r.status,
            None => match deployments::get(tx, id).await? {
                Some(r) if r.cluster_id == cluster => r.status,
                _ => return Ok(Err(EngineError::NotFound("deployment".into()))),
            },
        };
        Ok(if current == status {
            Ok(())
        } else {
            Err(EngineError::Conflict(format!(
                "cannot {verb} a deployment that is {}; it must be {}",
                current.as_str(),
                status.as_str()
            )))
        })
    }

    /// Moves a live deployment to a final status in memory (already written to Postgres).
    fn finish(&mut self, id: Uuid, to: Status, message: Option<String>, now: DateTime<Utc>) {
        if let Some(mut row) = self.rows.remove(&id) {
            row.status = to;
            row.finished_at = Some(now);
            row.updated_at = now;
            row.deadline_at = None;
            if message.is_some() {
                row.message = message;
            }
            self.done.insert(id, row);
        }
    }

    /// Fails running deployments past their `max_runtime_seconds`.
    async fn expire(
        &mut self,
        tx: &Client,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Result<usize, EngineError> {
        let overdue: Vec<Uuid> = self
            .rows
            .values()
            .filter(|r| r.status == Status::Running && r.deadline_at.is_some_and(|d| d <= now))
            .map(|r| r.id)
            .collect();
        if overdue.is_empty() {
            return Ok(0);
        }
        let reason = "ran longer than max_runtime_seconds";
        deployments::finish(
            tx,
            &overdue,
            Status::Running,
            Status::Failed,
            Some(reason),
            now,
        )
        .await?;
        for id in &overdue {
            events.push(event(*id, "expired", Some(reason), None));
            self.finish(*id, Status::Failed, Some(reason.into()), now);
        }
        Ok(overdue.len())
    }

    fn state(&self, c: &ClusterRow) -> ClusterState {
        super::cluster_state(c, self.rows.values())
    }

    /// Runs the pure scheduler until it settles and writes its decisions in bulk.
    async fn schedule(
        &mut self,
        tx: &Client,
        c: &ClusterRow,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Result<(usize, usize), EngineError> {
        let (mut admitted, mut victims, mut preemptors) = (Vec::new(), Vec::new(), Vec::new());
        // Rows as they were before this batch touched them: a preemption and an admission
        // of the same deployment that cancel out must leave it exactly as stored.
        let mut originals: HashMap<Uuid, DeploymentRow> = HashMap::new();
        for _ in 0..MAX_PASSES {
            let decisions = scheduler::schedule(&self.state(c), now);
            if decisions.is_empty() {
                break;
            }
            for d in decisions {
                match d {
                    Decision::Admit { id } => {
                        if let Some(r) = self.rows.get_mut(&id) {
                            originals.entry(id).or_insert_with(|| r.clone());
                            r.status = Status::Running;
                            r.admitted_at = Some(now);
                            r.updated_at = now;
                            r.deadline_at = r
                                .max_runtime_seconds
                                .map(|s| now + Duration::seconds(i64::from(s)));
                        }
                        // A victim re-admitted within the same batch was never really out.
                        if let Some(i) = victims.iter().position(|v| *v == id) {
                            victims.remove(i);
                            preemptors.remove(i);
                        } else {
                            admitted.push(id);
                        }
                    }
                    Decision::Preempt { victim, by } => {
                        if let Some(r) = self.rows.get_mut(&victim) {
                            originals.entry(victim).or_insert_with(|| r.clone());
                            r.status = Status::Queued;
                            r.admitted_at = None;
                            r.deadline_at = None;
                            r.updated_at = now;
                            r.preemptions += 1;
                            r.preempted_by = Some(by);
                        }
                        if let Some(i) = admitted.iter().position(|a| *a == victim) {
                            admitted.remove(i);
                        } else {
                            victims.push(victim);
                            preemptors.push(by);
                        }
                    }
                }
            }
        }
        for (id, original) in originals {
            if !admitted.contains(&id) && !victims.contains(&id) {
                self.rows.insert(id, original);
            }
        }
        deployments::requeue_preempted(tx, &victims, &preemptors, now).await?;
        deployments::admit(tx, &admitted, now).await?;
        for (v, by) in victims.iter().zip(&preemptors) {
            events.push(event(
                *v,
                "preempted",
                Some("evicted for a higher-priority deployment"),
                Some(*by),
            ));
            events.push(event(
                *v,
                "requeued",
                Some("back in the queue after preemption"),
                None,
            ));
        }
        for id in &admitted {
            events.push(event(*id, "admitted", None, None));
        }
        Ok((admitted.len(), victims.len()))
    }

    fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.rows
            .values()
            .filter(|r| r.status == Status::Running)
            .filter_map(|r| r.deadline_at)
            .min()
    }

    /// Queue positions of the batch's queued subjects (one queue view for the whole batch).
    fn positions(
        &self,
        c: &ClusterRow,
        now: DateTime<Utc>,
        subjects: &[Result<Subject, EngineError>],
    ) -> HashMap<Uuid, u32> {
        let queued_subject = subjects.iter().any(|s| {
            matches!(s, Ok(Subject::Deployment { id, .. })
                if self.rows.get(id).is_some_and(|r| r.status == Status::Queued))
        });
        if !queued_subject {
            return HashMap::new();
        }
        scheduler::queue_view(&self.state(c), now)
            .into_iter()
            .map(|e| (e.id, e.position))
            .collect()
    }
}
