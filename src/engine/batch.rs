//! A batch of commands, one transaction: lock, authorize, apply each command, expire and
//! schedule, write everything, commit, and answer every command.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use tokio_postgres::Client;

use super::authorize::Callers;
use super::commands::apply;
use super::live::Live;
use super::{Changed, Command, EngineError, Executed, Order, Outcome};
use crate::db::agents::{self as agents_db, AgentRow};
use crate::db::clusters::{self, ClusterRow, Usage};
use crate::db::counters;
use crate::db::dependencies;
use crate::db::deployments::{
    self, DeploymentRow, Event, Finishing, NewDeployment, PlacementWrite,
};
use crate::domain::agent::protocol::{ObjectMessage, VERSION};
use crate::domain::counters::Counters;
use crate::domain::deployment::{EventKind, Status};
use crate::domain::ids::{AgentId, ClusterId, DeploymentId, OrgId};
use crate::domain::scheduling::dependencies::Found;
use crate::domain::scheduling::lifecycle::Settled;

/// What one command of a batch is about, once applied.
pub(super) enum Subject {
    Deployment {
        id: DeploymentId,
        replayed: bool,
    },
    Cluster,
    Deleted,
    Tick,
    Agent(Box<AgentRow>),
    Noted,
    /// A dry run of this submission (true: it would wait for dependencies).
    Plan(Box<NewDeployment>, bool),
}

/// What a committed batch leaves: its commands' answers, the orders for the cluster's agents,
/// what it decided, its changes for watchers (each with the cluster's latest event id
/// then; none unless asked for), and the other clusters to wake (they hold deployments that
/// wait for ones this batch ended).
pub struct Committed {
    pub answers: Vec<Result<Executed, EngineError>>,
    pub orders: Vec<Order>,
    pub decided: Decided,
    pub changes: Vec<(i64, Changed)>,
    pub wake: Vec<ClusterId>,
}

/// What one committed batch decided: its log line's figures (and a `Tick`'s answer).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Decided {
    pub admitted: usize,
    pub preempted: usize,
    pub expired: usize,
    /// Requeued because their agent lost them.
    pub lost: usize,
    /// Orders sent to agents (welcome, run, stop, forget, close).
    pub orders: usize,
}

/// Runs `cmds` against `cluster` in one transaction, in order, each with its own result,
/// and commits (or rolls back when the batch as a whole fails).
///
/// `cache` holds the cluster's live deployments as of the last commit: the engine is the
/// only writer of them, so it need not read them back. It is rebuilt from Postgres when
/// empty and on every `Tick` (the sweep is also the safety net for anything written
/// elsewhere). Whatever goes wrong, the caller drops the cache: Postgres is the record.
/// `watched`: whether to describe the committed changes for watchers.
pub async fn execute_batch(
    db: &Client,
    cluster: ClusterId,
    cache: &mut Option<Live>,
    cmds: Vec<Command>,
    now: DateTime<Utc>,
    watched: bool,
) -> Result<Committed, EngineError> {
    match in_transaction(db, cluster, cache, cmds, now, watched).await {
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
    watched: bool,
) -> Result<Committed, EngineError> {
    // Postgres keeps microseconds: rows built here must equal the rows read back.
    let now = now.trunc_subsecs(6);
    let named = named_dependencies(&cmds);
    let (_, locked, callers, found) = tokio::try_join!(
        async { tx.batch_execute("begin").await.map_err(EngineError::from) },
        async { clusters::lock(tx, cluster).await.map_err(EngineError::from) },
        Callers::resolve(tx, cluster, &cmds),
        async {
            dependencies::found(tx, &named)
                .await
                .map_err(EngineError::from)
        },
    )?;
    let mut c = locked.ok_or_else(|| EngineError::NotFound("cluster".into()))?;
    if cache.is_none() || cmds.iter().any(|c| matches!(c, Command::Tick { .. })) {
        *cache = Some(Live::read(tx, &c, now).await?);
    }
    let Some(live) = cache.as_mut() else {
        return Err(EngineError::Internal("cache missing".into()));
    };
    let usage_before = watched.then(|| (c.capacity, live.usage()));
    let mut batch = Batch {
        found: found.into_iter().collect(),
        ..Batch::default()
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

    let (ticked, (processes, event_ids, wake)) = if batch.deleted {
        // Only an empty cluster is deleted: whatever else this batch did before the delete
        // finished deployments (answered from `done`) or was refused.
        let written = batch
            .write(tx, cluster, c.org_id, &Settled::default(), now, false)
            .await?;
        clusters::delete(tx, cluster).await?;
        tx.batch_execute("commit").await?;
        (Decided::default(), written)
    } else {
        for (id, new) in &batch.inserts {
            batch
                .events
                .push(event(*id, EventKind::Created, None, None));
            let row = DeploymentRow::queued(*id, cluster, c.org_id, new, now);
            live.insert_submitted(row, batch.awaiting.get(id).cloned());
        }
        let heard = batch.heard;
        live.lose_agents(&mut batch, &c, heard, now);
        let overdue = live.expire(now, &mut batch.events);
        let expired = overdue.len();
        batch.finishes.extend(overdue);
        live.resolve_dependencies(&mut batch, now);
        let settled = live.schedule(&c, now, &mut batch.events);
        live.stop_unwanted(&mut batch, &settled, now);
        live.place(&mut batch);
        let decided = Decided {
            admitted: settled.admitted.len(),
            preempted: settled.preempted.len(),
            expired,
            lost: batch.lost.len(),
            orders: 0,
        };
        batch.counted = counted(&decided, &settled, live, now);
        let written = batch
            .write(tx, cluster, c.org_id, &settled, now, true)
            .await?;
        (decided, written)
    };
    let orders = batch.orders(live, processes);
    let decided = Decided {
        orders: orders.len(),
        ..ticked
    };
    let changes = match usage_before {
        Some(before) => changes(tx, &c, live, &batch, &subjects, &event_ids, before).await,
        None => vec![],
    };
    let out = answers(tx, &c, live, subjects, decided, now).await;
    live.clear_done();
    if batch.deleted {
        *cache = None;
    }
    Ok(Committed {
        answers: out,
        orders,
        decided,
        changes,
        wake,
    })
}

/// What the batch adds to its cluster's counters: what it decided, and each admission's
/// queue wait (from the deployment's `enqueued_at`, which it keeps through preemptions and
/// lost agents, to `now`).
fn counted(decided: &Decided, settled: &Settled, live: &Live, now: DateTime<Utc>) -> Counters {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let mut counted = Counters {
        admissions: count(decided.admitted),
        preemptions: count(decided.preempted),
        expirations: count(decided.expired),
        lost: count(decided.lost),
        ..Counters::default()
    };
    for row in settled.admitted.iter().filter_map(|id| live.row(id)) {
        let wait = (now - row.enqueued_at)
            .num_microseconds()
            .unwrap_or(i64::MAX);
        counted.observe_wait(wait);
    }
    counted
}

/// Every deployment the batch's submissions and dry runs name as a dependency.
fn named_dependencies(cmds: &[Command]) -> Vec<DeploymentId> {
    let mut ids: Vec<DeploymentId> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Submit { deployment, .. } | Command::Plan { deployment, .. } => {
                Some(deployment.depends_on.iter().copied())
            }
            _ => None,
        })
        .flatten()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The committed batch's changes, for watchers, in commit order: each event with its
/// deployment as the batch left it, then the usage if it changed, then the agents that
/// connected or left. A failed read of the agents (after the commit) leaves them out: the
/// watcher sees them at its next snapshot.
async fn changes(
    tx: &Client,
    c: &ClusterRow,
    live: &Live,
    batch: &Batch,
    subjects: &[Result<Subject, EngineError>],
    event_ids: &[i64],
    (capacity_before, usage_before): (crate::domain::resources::Resources, Usage),
) -> Vec<(i64, Changed)> {
    let mut out = Vec::new();
    let mut last = 0;
    for (e, &id) in batch.events.iter().zip(event_ids) {
        last = id;
        let Some(row) = live.row(&e.deployment_id) else {
            continue;
        };
        let position = (row.status == Status::Queued)
            .then(|| live.position(&row.id))
            .flatten();
        out.push((
            id,
            Changed::Deployment {
                kind: e.kind,
                deployment: Box::new(row.clone()),
                position,
            },
        ));
    }
    if batch.deleted {
        out.push((last, Changed::Deleted));
        return out;
    }
    // Usage and agents carry the latest event id: a watcher resuming from them has seen
    // every event up to it. A batch without events names none (0: resume means snapshot).
    let usage = live.usage();
    if (c.capacity, usage) != (capacity_before, usage_before) {
        out.push((
            last,
            Changed::Usage {
                capacity: c.capacity,
                usage,
            },
        ));
    }
    let mut agents: Vec<AgentId> = subjects
        .iter()
        .filter_map(|s| match s {
            Ok(Subject::Agent(a)) => Some(a.id),
            _ => None,
        })
        .chain(batch.gone.iter().map(|(a, _)| *a))
        .chain(batch.away.iter().copied())
        .collect();
    agents.sort_unstable();
    agents.dedup();
    if !agents.is_empty() {
        if let Ok((rows, placed)) = tokio::try_join!(
            agents_db::by_ids(tx, &agents),
            agents_db::placed_on(tx, c.id)
        ) {
            for agent in rows {
                let (placed, running) = placed
                    .iter()
                    .find(|(a, _, _)| *a == agent.id)
                    .map_or((Default::default(), 0), |(_, p, n)| (*p, *n));
                out.push((
                    last,
                    Changed::Agent {
                        agent: Box::new(agent),
                        placed,
                        running,
                    },
                ));
            }
        }
    }
    out
}

/// Every command's answer, after the commit: the one place outcomes are built.
async fn answers(
    tx: &Client,
    c: &ClusterRow,
    live: &Live,
    subjects: Vec<Result<Subject, EngineError>>,
    ticked: Decided,
    now: DateTime<Utc>,
) -> Vec<Result<Executed, EngineError>> {
    let next_deadline = live.next_wake(c);
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
            Ok(Subject::Agent(agent)) => Ok(Outcome::Agent { agent }),
            Ok(Subject::Noted) => Ok(Outcome::Noted),
            Ok(Subject::Plan(new, held)) => Ok(Outcome::Planned {
                plan: live.plan(&new, held, now),
            }),
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

/// An order for an agent, as a batch collects it: a run order's process is read with the
/// batch's writes.
pub(in crate::engine) enum Outgoing {
    Ready(Order),
    /// Run the deployment on the agent (id, name).
    Run(AgentId, String, DeploymentId),
}

/// Writes collected while a batch is applied; they go out together before the commit.
#[derive(Default)]
pub(in crate::engine) struct Batch {
    pub(super) events: Vec<Event>,
    pub(super) inserts: Vec<(DeploymentId, NewDeployment)>,
    /// The new submissions held for their dependencies: those not succeeded yet, each with
    /// its status as the batch found it.
    pub(super) awaiting: HashMap<DeploymentId, Vec<(DeploymentId, Status)>>,
    /// The dependencies the batch's submissions name, as read (locked) at its start.
    pub(super) found: HashMap<DeploymentId, Found>,
    /// Held deployments whose dependencies all succeeded: queued from now.
    pub(super) released: Vec<DeploymentId>,
    pub(super) finishes: Vec<Finishing>,
    pub(super) priorities: Vec<(DeploymentId, i32)>,
    pub(super) deleted: bool,
    /// Placement changes, one per deployment (merged as they come), in first-change order.
    placements: Vec<PlacementWrite>,
    /// Where each deployment's change is in `placements`.
    placement_of: HashMap<DeploymentId, usize>,
    /// Running deployments requeued because their agent lost them.
    pub(super) lost: Vec<DeploymentId>,
    /// Orders for the agents, in the order they were decided.
    pub(super) orders: Vec<Outgoing>,
    /// Whether a tick read the agents' signs of life (so silence can be judged).
    pub(super) heard: bool,
    /// When connected agents were last heard of.
    pub(super) seen: Vec<(AgentId, chrono::DateTime<Utc>)>,
    /// Agents gone whatever their socket (none found, or silent past the grace).
    pub(super) away: Vec<AgentId>,
    /// Agents whose socket (of the connection begun then) closed.
    pub(super) gone: Vec<(AgentId, chrono::DateTime<Utc>)>,
    /// What the batch adds to its cluster's counters, once scheduled.
    counted: Counters,
}

impl Batch {
    /// Adds a placement change, merged with one already made to the same deployment (the
    /// later wins; a start time, exit code or agent given earlier stays unless replaced).
    pub(super) fn place(&mut self, w: PlacementWrite) {
        match self
            .placement_of
            .get(&w.id)
            .and_then(|&i| self.placements.get_mut(i))
        {
            Some(p) => {
                p.agent = w.agent.or(p.agent.take());
                p.stage = w.stage;
                p.stop_until = w.stop_until;
                p.started_at = w.started_at.or(p.started_at);
                p.exit_code = w.exit_code.or(p.exit_code);
            }
            None => {
                self.placement_of.insert(w.id, self.placements.len());
                self.placements.push(w);
            }
        }
    }

    /// Every write of the batch in one round trip (pipelined), in this order: events after
    /// the rows they refer to, the cluster's counters (one upsert, only when the batch
    /// counted something), and the COMMIT last when `commit` (Postgres answers a COMMIT after
    /// a failed statement with a rollback, and the failure is returned here). The processes of
    /// the deployments to run are read in the same round trip, and so are the other clusters
    /// waiting for what ended (after the endings are written: see `db::dependencies`).
    async fn write(
        &self,
        tx: &Client,
        cluster: ClusterId,
        org: OrgId,
        settled: &Settled,
        now: DateTime<Utc>,
        commit: bool,
    ) -> Result<
        (
            Vec<(DeploymentId, crate::domain::deployment::Process)>,
            Vec<i64>,
            Vec<ClusterId>,
        ),
        EngineError,
    > {
        let end = async {
            if commit {
                tx.batch_execute("commit").await?;
            }
            Ok::<(), crate::db::DbError>(())
        };
        let to_run: Vec<DeploymentId> = self
            .orders
            .iter()
            .filter_map(|o| match o {
                Outgoing::Run(_, _, d) => Some(*d),
                Outgoing::Ready(_) => None,
            })
            .collect();
        let gone = async {
            for (agent, since) in &self.gone {
                agents_db::disconnected(tx, *agent, *since, now).await?;
            }
            Ok::<(), crate::db::DbError>(())
        };
        let held: Vec<DeploymentId> = self.awaiting.keys().copied().collect();
        let ended: Vec<DeploymentId> = self.finishes.iter().map(|f| f.id).collect();
        let (_, _, _, wake, _, _, _, _, _, event_ids, _, _, _, _, processes, _) = tokio::try_join!(
            deployments::insert_many(tx, cluster, org, &self.inserts, &held, now),
            deployments::finish(tx, &self.finishes, now),
            dependencies::release(tx, &self.released, now),
            dependencies::waiting_clusters(tx, &ended, cluster),
            deployments::set_priorities(tx, &self.priorities, now),
            deployments::requeue_preempted(tx, &settled.preempted, now),
            deployments::requeue_lost(tx, &self.lost, now),
            deployments::admit(tx, &settled.admitted, now),
            deployments::set_placements(tx, &self.placements, now),
            deployments::record(tx, cluster, &self.events, now),
            counters::add(tx, cluster, &self.counted),
            agents_db::seen(tx, &self.seen),
            agents_db::away(tx, &self.away),
            gone,
            deployments::processes(tx, &to_run),
            end,
        )?;
        Ok((processes, event_ids, wake))
    }

    /// The batch's orders, once committed, with the run orders' processes.
    fn orders(
        &mut self,
        live: &Live,
        processes: Vec<(DeploymentId, crate::domain::deployment::Process)>,
    ) -> Vec<Order> {
        let processes: HashMap<DeploymentId, crate::domain::deployment::Process> =
            processes.into_iter().collect();
        std::mem::take(&mut self.orders)
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::Ready(order) => Some(order),
                Outgoing::Run(agent, name, d) => {
                    let process = processes.get(&d)?.clone();
                    let deployment = live.run_spec(d, process)?;
                    Some(Order::Send {
                        agent,
                        name,
                        message: ObjectMessage::Run {
                            v: VERSION,
                            deployment,
                        },
                    })
                }
            })
            .collect()
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
