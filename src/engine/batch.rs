//! A batch of commands, one transaction: lock, authorize, apply each command, expire and
//! schedule, write everything, commit, and answer every command.

use chrono::{DateTime, SubsecRound, Utc};
use tokio_postgres::Client;

use super::authorize::Callers;
use super::commands::apply;
use super::live::Live;
use super::{Command, EngineError, Executed, Outcome};
use crate::db::clusters::{self, ClusterRow};
use crate::db::deployments::{self, DeploymentRow, Event, Finishing, NewDeployment};
use crate::domain::deployment::EventKind;
use crate::domain::ids::{ClusterId, DeploymentId, OrgId};
use crate::domain::scheduling::lifecycle::Settled;

/// What one command of a batch is about, once applied.
pub(super) enum Subject {
    Deployment { id: DeploymentId, replayed: bool },
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
        Ok(results) => Ok(results),
        Err(e) => {
            // A failed rollback means a lost connection, which the caller replaces anyway.
            let _ = db.batch_execute("rollback").await;
            Err(e)
        }
    }
}

/// The batch from BEGIN to COMMIT, in three round trips however many commands it holds:
/// BEGIN, the cluster's lock and the callers' roles go out together (pipelined); the commands
/// are applied and scheduled in memory; then every write and the COMMIT go out together.
/// (Commands that must read something, such as an Idempotency-Key or a deployment that is
/// not live, add a round trip each.)
async fn in_transaction(
    tx: &Client,
    cluster: ClusterId,
    cache: &mut Option<Live>,
    cmds: Vec<Command>,
    now: DateTime<Utc>,
) -> Result<Vec<Result<Executed, EngineError>>, EngineError> {
    // Postgres keeps microseconds: rows built here must equal the rows read back.
    let now = now.trunc_subsecs(6);
    let (_, locked, callers) = tokio::try_join!(
        async { tx.batch_execute("begin").await.map_err(EngineError::from) },
        async { clusters::lock(tx, cluster).await.map_err(EngineError::from) },
        Callers::resolve(tx, cluster, &cmds),
    )?;
    let mut c = locked.ok_or_else(|| EngineError::NotFound("cluster".into()))?;
    if cache.is_none() || cmds.iter().any(|c| matches!(c, Command::Tick)) {
        *cache = Some(Live::new(deployments::live(tx, cluster).await?, &c, now));
    }
    let Some(live) = cache.as_mut() else {
        return Err(EngineError::Internal("cache missing".into()));
    };
    let mut batch = Batch::default();
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

    let ticked = if batch.deleted {
        // Only an empty cluster is deleted: whatever else this batch did before the delete
        // finished deployments (answered from `done`) or was refused.
        batch
            .write(tx, cluster, c.org_id, &Settled::default(), now, false)
            .await?;
        clusters::delete(tx, cluster).await?;
        tx.batch_execute("commit").await?;
        Ticked::default()
    } else {
        for (id, new) in &batch.inserts {
            batch
                .events
                .push(event(*id, EventKind::Created, None, None));
            live.insert(DeploymentRow::queued(*id, cluster, c.org_id, new, now));
        }
        let overdue = live.expire(now, &mut batch.events);
        let expired = overdue.len();
        batch.finishes.extend(overdue);
        let settled = live.schedule(&c, now, &mut batch.events);
        batch
            .write(tx, cluster, c.org_id, &settled, now, true)
            .await?;
        Ticked {
            admitted: settled.admitted.len(),
            preempted: settled.preempted.len(),
            expired,
        }
    };
    let out = answers(tx, &c, live, subjects, ticked).await;
    live.clear_done();
    if batch.deleted {
        *cache = None;
    }
    Ok(out)
}

/// What the batch's scheduling did, for a `Tick`'s answer.
#[derive(Default)]
struct Ticked {
    admitted: usize,
    preempted: usize,
    expired: usize,
}

/// Every command's answer, after the commit: the one place outcomes are built.
async fn answers(
    tx: &Client,
    c: &ClusterRow,
    live: &Live,
    subjects: Vec<Result<Subject, EngineError>>,
    ticked: Ticked,
) -> Vec<Result<Executed, EngineError>> {
    let next_deadline = live.next_deadline();
    let positions = live.positions(&subjects);
    let mut out = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let outcome = match subject {
            Err(e) => Err(e),
            Ok(Subject::Deployment { id, replayed }) => {
                // Committed by now: a failed read here fails this answer, not the batch.
                let deployment = match live.row(&id) {
                    Some(row) => Ok(row.clone()),
                    None => match deployments::get(tx, id).await {
                        Ok(Some(row)) => Ok(row),
                        Ok(None) => Err(EngineError::NotFound("deployment".into())),
                        Err(e) => Err(e.into()),
                    },
                };
                deployment.map(|d| Outcome::Deployment {
                    deployment: Box::new(d),
                    position: positions.get(&id).copied(),
                    replayed,
                })
            }
            Ok(Subject::Cluster) => Ok(Outcome::Cluster {
                usage: live.usage(),
                cluster: Box::new(c.clone()),
            }),
            Ok(Subject::Deleted) => Ok(Outcome::Deleted),
            Ok(Subject::Tick) => Ok(Outcome::Ticked {
                admitted: ticked.admitted,
                preempted: ticked.preempted,
                expired: ticked.expired,
            }),
        };
        out.push(outcome.map(|outcome| Executed {
            outcome,
            next_deadline,
            batch: None,
        }));
    }
    out
}

/// Writes collected while a batch is applied; they go out together before the commit.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) events: Vec<Event>,
    pub(super) inserts: Vec<(DeploymentId, NewDeployment)>,
    pub(super) finishes: Vec<Finishing>,
    pub(super) priorities: Vec<(DeploymentId, i32)>,
    pub(super) deleted: bool,
}

impl Batch {
    /// Every write of the batch in one round trip (pipelined), in this order: events after
    /// the rows they refer to, and the COMMIT last when `commit` (Postgres answers a COMMIT
    /// after a failed statement with a rollback, and the failure is returned here).
    async fn write(
        &self,
        tx: &Client,
        cluster: ClusterId,
        org: OrgId,
        settled: &Settled,
        now: DateTime<Utc>,
        commit: bool,
    ) -> Result<(), EngineError> {
        let end = async {
            if commit {
                tx.batch_execute("commit").await?;
            }
            Ok::<(), crate::db::DbError>(())
        };
        tokio::try_join!(
            deployments::insert_many(tx, cluster, org, &self.inserts, now),
            deployments::finish(tx, &self.finishes, now),
            deployments::set_priorities(tx, &self.priorities, now),
            deployments::requeue_preempted(tx, &settled.preempted, now),
            deployments::admit(tx, &settled.admitted, now),
            deployments::record(tx, &self.events, now),
            end,
        )?;
        Ok(())
    }
}

/// One line of a deployment's history, to be recorded with the batch.
pub(super) fn event(
    id: DeploymentId,
    kind: EventKind,
    reason: Option<&str>,
    by: Option<DeploymentId>,
) -> Event {
    Event {
        deployment_id: id,
        kind,
        reason: reason.map(str::to_string),
        by_deployment: by,
    }
}
