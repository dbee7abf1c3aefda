//! A batch of commands, one transaction.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

use super::authorize::Callers;
use super::{Command, EngineError, Executed, Outcome};
use crate::db::clusters::{self, ClusterRow};
use crate::db::deployments::{self, DeploymentRow, Event, Finishing, NewDeployment};
use crate::domain::deployment::Status;
use crate::domain::ids::{ClusterId, OrgId};
use crate::domain::resources::Resources;
use crate::domain::scheduler::{self, Book, BookEntry, Decision, QueueEntry};
use crate::domain::validation::FieldError;

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
    let mut batch = Batch {
        events: Vec::new(),
        inserts: Vec::new(),
        finishes: Vec::new(),
        priorities: Vec::new(),
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
        batch
            .write(tx, cluster, c.org_id, &Decided::default(), now, false)
            .await?;
        clusters::delete(tx, cluster).await?;
        tx.batch_execute("commit").await?;
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

    for (id, new) in &batch.inserts {
        batch.events.push(event(*id, "created", None, None));
        live.insert(DeploymentRow::queued(*id, cluster, c.org_id, new, now));
    }
    let overdue = live.expire(now, &mut batch.events);
    let expired = overdue.len();
    batch.finishes.extend(overdue);
    let decided = live.schedule(&c, now, &mut batch.events);
    batch
        .write(tx, cluster, c.org_id, &decided, now, true)
        .await?;
    let (admitted, preempted) = (decided.admitted.len(), decided.victims.len());

    let next_deadline = live.next_deadline();
    let positions = live.positions(&subjects);
    let mut out = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let outcome = match subject {
            Err(e) => Err(e),
            Ok(Subject::Deployment { id, replayed }) => {
                // Committed by now: a failed read here fails this answer, not the batch.
                let deployment = match live.rows.get(&id).or_else(|| live.done.get(&id)) {
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

/// Writes collected while a batch is applied; they go out together before the commit.
struct Batch {
    events: Vec<Event>,
    inserts: Vec<(Uuid, NewDeployment)>,
    finishes: Vec<Finishing>,
    priorities: Vec<(Uuid, i32)>,
    deleted: bool,
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
        decided: &Decided,
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
            deployments::requeue_preempted(tx, &decided.victims, &decided.preemptors, now),
            deployments::admit(tx, &decided.admitted, now),
            deployments::record(tx, &self.events, now),
            end,
        )?;
        Ok(())
    }
}

/// What one scheduling call changed, net.
#[derive(Default)]
struct Decided {
    admitted: Vec<Uuid>,
    victims: Vec<Uuid>,
    preemptors: Vec<Uuid>,
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
            // Every check before any change: a refused update must leave `c` as it was
            // (the rest of the batch schedules against it).
            if let Some(cap) = capacity {
                let allocated = live.allocated();
                if !allocated.fits_within(&cap) {
                    return Ok(Err(EngineError::Conflict(format!(
                        "cannot shrink below what is allocated ({} mCPU, {} MiB, {} GPUs)",
                        allocated.cpu_millis, allocated.memory_mib, allocated.gpus
                    ))));
                }
            }
            if let Some(name) = &name {
                if *name != c.name && clusters::name_taken(tx, c.org_id, name).await? {
                    return Ok(Err(EngineError::Conflict(
                        "a cluster with this name already exists".into(),
                    )));
                }
            }
            c.capacity = capacity.unwrap_or(c.capacity);
            c.name = name.unwrap_or_else(|| c.name.clone());
            c.policy.queueing = queueing.unwrap_or(c.policy.queueing);
            c.policy.preemption = preemption.unwrap_or(c.policy.preemption);
            *c = clusters::update(tx, c, now).await?;
            live.follow(c);
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
            let user = Some("cancelled by a user".to_string());
            let ending = Ending::new(id, Status::Queued, Status::Cancelled, "cancel", user, None);
            return ending.apply(tx, c.id, live, batch, now).await;
        }
        Command::Stop { id } => {
            let user = Some("stopped by a user".to_string());
            let ending = Ending::new(id, Status::Running, Status::Stopped, "stop", user, None);
            return ending.apply(tx, c.id, live, batch, now).await;
        }
        Command::Finish {
            id,
            succeeded,
            message,
        } => {
            let to = if succeeded {
                Status::Succeeded
            } else {
                Status::Failed
            };
            let ending = Ending::new(id, Status::Running, to, "finish", message.clone(), message);
            return ending.apply(tx, c.id, live, batch, now).await;
        }
        Command::SetPriority { id, priority } => {
            let Some(old) = live.rows.get(&id).map(|r| r.priority) else {
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
            batch.priorities.push((id, priority));
            let change = format!("{old} → {priority}");
            batch
                .events
                .push(event(id, "priority_changed", Some(&change), None));
            live.set_priority(id, priority, now);
            Subject::Deployment {
                id,
                replayed: false,
            }
        }
    }))
}

/// Cancel, stop and finish alike: a live deployment in `from` moves to the final status `to`.
struct Ending {
    id: Uuid,
    from: Status,
    to: Status,
    /// For the refusal: "cannot <verb> a deployment that is …".
    verb: &'static str,
    /// The event's reason (its kind is the status).
    reason: Option<String>,
    /// Replaces the deployment's stored message when given.
    message: Option<String>,
}

impl Ending {
    fn new(
        id: Uuid,
        from: Status,
        to: Status,
        verb: &'static str,
        reason: Option<String>,
        message: Option<String>,
    ) -> Self {
        Self {
            id,
            from,
            to,
            verb,
            reason,
            message,
        }
    }

    /// Checks the state, then moves the row in memory and adds the event and the write.
    async fn apply(
        self,
        tx: &Client,
        cluster: ClusterId,
        live: &mut Live,
        batch: &mut Batch,
        now: DateTime<Utc>,
    ) -> Result<Result<Subject, EngineError>, EngineError> {
        let id = self.id;
        if let Err(e) = live.expect(tx, cluster, id, self.from, self.verb).await? {
            return Ok(Err(e));
        }
        let kind = self.to.as_str();
        batch
            .events
            .push(event(id, kind, self.reason.as_deref(), None));
        batch
            .finishes
            .extend(live.finish(id, self.to, self.message, now));
        Ok(Ok(Subject::Deployment {
            id,
            replayed: false,
        }))
    }
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
///
/// Beside the rows it keeps the scheduler's [`Book`] of the same deployments (so scheduling,
/// usage and queue positions never walk them all) and the running deployments' deadlines in
/// order. Every change to `rows` goes through a method that changes the other two alike.
#[derive(Debug)]
pub struct Live {
    rows: HashMap<Uuid, DeploymentRow>,
    done: HashMap<Uuid, DeploymentRow>,
    book: Book,
    /// (deadline, id) of every running deployment that has one.
    deadlines: BTreeSet<(DateTime<Utc>, Uuid)>,
}

/// One page of a cluster's queue, in scheduling order: the position, effective priority
/// and reason of each entry, with what the page shows of its row.
pub type QueuePage = Vec<(QueueEntry, QueuedRow)>;

/// What a queue page shows of a queued deployment's row (a page crosses from the cluster's
/// object to the Worker as JSON: the rest of the row would only be encoded and decoded).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueuedRow {
    pub name: String,
    pub priority: i32,
    pub resources: Resources,
    pub enqueued_at: DateTime<Utc>,
}

impl From<&DeploymentRow> for QueuedRow {
    fn from(r: &DeploymentRow) -> Self {
        Self {
            name: r.name.clone(),
            priority: r.priority,
            resources: r.resources,
            enqueued_at: r.enqueued_at,
        }
    }
}

/// What the book keeps of a live row (`None` for rows in a final state).
fn book_entry(r: &DeploymentRow) -> Option<BookEntry> {
    let admitted_at = match r.status {
        // As `cluster_state` has it: a running row without an admission time (never written
        // by the engine) counts as admitted when it was enqueued.
        Status::Running => Some(r.admitted_at.unwrap_or(r.enqueued_at)),
        Status::Queued => None,
        _ => return None,
    };
    Some(BookEntry {
        id: r.id,
        priority: r.priority,
        resources: r.resources,
        enqueued_at: r.enqueued_at,
        admitted_at,
    })
}

fn deadline(r: &DeploymentRow) -> Option<(DateTime<Utc>, Uuid)> {
    (r.status == Status::Running)
        .then_some(r.deadline_at)
        .flatten()
        .map(|d| (d, r.id))
}

impl Live {
    fn new(rows: Vec<DeploymentRow>, c: &ClusterRow, now: DateTime<Utc>) -> Self {
        let book = Book::new(
            c.capacity,
            c.policy,
            rows.iter().filter_map(book_entry),
            now,
        );
        let deadlines = rows.iter().filter_map(deadline).collect();
        Self {
            rows: rows.into_iter().map(|r| (r.id, r)).collect(),
            done: HashMap::new(),
            book,
            deadlines,
        }
    }

    /// Adds a row just written (a new submission).
    fn insert(&mut self, row: DeploymentRow) {
        if let Some(old) = self.rows.get(&row.id).and_then(deadline) {
            self.deadlines.remove(&old);
        }
        match book_entry(&row) {
            Some(entry) => self.book.insert(entry),
            None => {
                self.book.remove(&row.id);
            }
        }
        self.deadlines.extend(deadline(&row));
        self.rows.insert(row.id, row);
    }

    /// Takes the cluster's capacity and policy (after an update).
    fn follow(&mut self, c: &ClusterRow) {
        self.book.set_capacity(c.capacity);
        self.book.set_policy(c.policy);
    }

    /// A new base priority for a live deployment (already written to Postgres).
    fn set_priority(&mut self, id: Uuid, priority: i32, now: DateTime<Utc>) {
        if let Some(row) = self.rows.get_mut(&id) {
            row.priority = priority;
            row.updated_at = now;
            self.book.set_priority(&id, priority);
        }
    }

    fn allocated(&self) -> Resources {
        self.book.totals().allocated
    }

    pub(super) fn usage(&self) -> clusters::Usage {
        let t = self.book.totals();
        clusters::Usage {
            allocated: t.allocated,
            queued_demand: t.queued_demand,
            running: i64::try_from(t.running).unwrap_or(i64::MAX),
            queued: i64::try_from(t.queued).unwrap_or(i64::MAX),
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
        // A deployment finished earlier in this batch is in `done` (its write still pending).
        let current = match self.rows.get(&id).or_else(|| self.done.get(&id)) {
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

    /// Moves a live deployment to a final status in memory; returns the write to make.
    fn finish(
        &mut self,
        id: Uuid,
        to: Status,
        message: Option<String>,
        now: DateTime<Utc>,
    ) -> Option<Finishing> {
        let mut row = self.rows.remove(&id)?;
        let write = Finishing {
            id,
            from: row.status,
            to,
            message: message.clone(),
        };
        if let Some(d) = deadline(&row) {
            self.deadlines.remove(&d);
        }
        self.book.remove(&id);
        row.status = to;
        row.finished_at = Some(now);
        row.updated_at = now;
        row.deadline_at = None;
        if message.is_some() {
            row.message = message;
        }
        self.done.insert(id, row);
        Some(write)
    }

    /// Fails running deployments past their `max_runtime_seconds` (in memory); returns the
    /// writes to make.
    fn expire(&mut self, now: DateTime<Utc>, events: &mut Vec<Event>) -> Vec<Finishing> {
        // Deadlines are in order: the overdue ones are a prefix.
        let overdue: Vec<Uuid> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        let reason = "ran longer than max_runtime_seconds";
        overdue
            .into_iter()
            .filter_map(|id| {
                events.push(event(id, "expired", Some(reason), None));
                self.finish(id, Status::Failed, Some(reason.into()), now)
            })
            .collect()
    }

    /// Lets the book schedule (it settles in one call and applies its own decisions), then
    /// brings the rows level with it; returns the net changes for the batch to write.
    ///
    /// Within one call a deployment may be admitted and later preempted, or preempted and
    /// later admitted again: only its state before and after counts. One that ends where it
    /// began is left exactly as stored (the book keeps its original admission time too); a
    /// victim's preemptor is the last one that evicted it.
    fn schedule(&mut self, c: &ClusterRow, now: DateTime<Utc>, events: &mut Vec<Event>) -> Decided {
        self.follow(c);
        let decisions = self.book.schedule(now);
        // Each deployment's last decision, in the order of those last decisions: an `Admit`
        // leaves it running, a `Preempt` (with its preemptor) queued.
        let mut last: HashMap<Uuid, (usize, Option<Uuid>)> = HashMap::new();
        for (i, d) in decisions.iter().enumerate() {
            match *d {
                Decision::Admit { id } => last.insert(id, (i, None)),
                Decision::Preempt { victim, by } => last.insert(victim, (i, Some(by))),
            };
        }
        let mut last: Vec<(usize, Uuid, Option<Uuid>)> =
            last.into_iter().map(|(id, (i, by))| (i, id, by)).collect();
        last.sort_unstable_by_key(|(i, _, _)| *i);
        let (mut admitted, mut victims, mut preemptors) = (Vec::new(), Vec::new(), Vec::new());
        for (_, id, by) in last {
            let Some(r) = self.rows.get_mut(&id) else {
                continue;
            };
            match (r.status, by) {
                (Status::Queued, None) => {
                    r.status = Status::Running;
                    r.admitted_at = Some(now);
                    r.updated_at = now;
                    r.deadline_at = r
                        .max_runtime_seconds
                        .map(|s| now + Duration::seconds(i64::from(s)));
                    self.deadlines.extend(deadline(r));
                    admitted.push(id);
                }
                (Status::Running, Some(by)) => {
                    if let Some(d) = deadline(r) {
                        self.deadlines.remove(&d);
                    }
                    r.status = Status::Queued;
                    r.admitted_at = None;
                    r.deadline_at = None;
                    r.updated_at = now;
                    r.preemptions += 1;
                    r.preempted_by = Some(by);
                    victims.push(id);
                    preemptors.push(by);
                }
                // Back where it began.
                _ => {}
            }
        }
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
        Decided {
            admitted,
            victims,
            preemptors,
        }
    }

    /// The earliest deadline among running deployments.
    fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Queue positions of the batch's queued subjects, as of the last schedule.
    fn positions(&self, subjects: &[Result<Subject, EngineError>]) -> HashMap<Uuid, u32> {
        subjects
            .iter()
            .filter_map(|s| match s {
                Ok(Subject::Deployment { id, .. }) => self.book.position(id).map(|p| (*id, p)),
                _ => None,
            })
            .collect()
    }

    /// Builds the view of the cluster `c` from Postgres outside any batch (for a read
    /// arriving at a writer that has none yet).
    pub async fn load(
        db: &Client,
        c: &ClusterRow,
        now: DateTime<Utc>,
    ) -> Result<Self, EngineError> {
        Ok(Self::new(deployments::live(db, c.id).await?, c, now))
    }

    /// Entries after the deployment `after` (from the head when `None`), at most `limit`,
    /// of the cluster's queue as of `now`, each with the position, effective priority and
    /// reason [`scheduler::queue_view`] would give it. O(log n + limit). A cursor that is no
    /// longer queued ends the listing.
    pub fn queue_page(
        &mut self,
        now: DateTime<Utc>,
        after: Option<Uuid>,
        limit: usize,
    ) -> QueuePage {
        self.book.advance(now);
        let offset = match after {
            None => 0,
            Some(id) => self.book.position(&id).map_or(usize::MAX, |p| p as usize),
        };
        self.book
            .queue_page(offset, limit)
            .into_iter()
            .filter_map(|e| self.rows.get(&e.id).map(|r| (e, QueuedRow::from(r))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scheduler::{ClusterState, Queued, Running};

    /// The pure scheduler's view of a cluster and its live deployments (the reference the
    /// engine's book is checked against).
    fn cluster_state<'a>(
        c: &ClusterRow,
        live: impl Iterator<Item = &'a DeploymentRow>,
    ) -> ClusterState {
        let mut state = ClusterState {
            capacity: c.capacity,
            policy: c.policy,
            running: vec![],
            queued: vec![],
        };
        for r in live {
            match r.status {
                Status::Running => state.running.push(Running {
                    id: r.id,
                    priority: r.priority,
                    resources: r.resources,
                    admitted_at: r.admitted_at.unwrap_or(r.enqueued_at),
                }),
                Status::Queued => state.queued.push(Queued {
                    id: r.id,
                    priority: r.priority,
                    resources: r.resources,
                    enqueued_at: r.enqueued_at,
                }),
                _ => {}
            }
        }
        state
    }

    use crate::domain::ids::OrgId;
    use crate::domain::scheduler::{Policy, Queueing};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid timestamp")
    }

    fn cluster(cpu: i64, queueing: Queueing) -> ClusterRow {
        ClusterRow {
            id: ClusterId(Uuid::from_u128(1)),
            org_id: OrgId(Uuid::from_u128(2)),
            name: "c".into(),
            capacity: Resources::new(cpu, 1 << 20, 0),
            policy: Policy {
                queueing,
                preemption: false,
            },
            created_at: t(0),
            updated_at: t(0),
        }
    }

    fn row(n: u128, status: Status, priority: i32, cpu: i64, enqueued: i64) -> DeploymentRow {
        let running = status == Status::Running;
        DeploymentRow {
            id: Uuid::from_u128(n),
            cluster_id: ClusterId(Uuid::from_u128(1)),
            org_id: OrgId(Uuid::from_u128(2)),
            name: format!("d{n}"),
            image: "img".into(),
            resources: Resources::new(cpu, 0, 0),
            priority,
            max_runtime_seconds: running.then_some(100),
            status,
            enqueued_at: t(enqueued),
            admitted_at: running.then(|| t(enqueued + 1)),
            deadline_at: running.then(|| t(enqueued + 101)),
            finished_at: None,
            preemptions: 0,
            preempted_by: None,
            message: None,
            idempotency_key: None,
            created_at: t(enqueued),
            updated_at: t(enqueued),
        }
    }

    /// The book's answers against the reference `queue_view` over the same rows.
    fn same_as_reference(live: &mut Live, c: &ClusterRow, now: DateTime<Utc>) {
        let state = cluster_state(c, live.rows.values());
        let view = scheduler::queue_view(&state, now);
        live.follow(c);
        let page = live.queue_page(now, None, usize::MAX);
        assert_eq!(live.book.totals().queued, view.len());
        let entries: Vec<QueueEntry> = page.iter().map(|(e, _)| *e).collect();
        assert_eq!(entries, view);
        for (e, r) in &page {
            assert_eq!(*r, QueuedRow::from(&live.rows[&e.id]));
        }
        for (i, after) in view.iter().enumerate() {
            let page = live.queue_page(now, Some(after.id), 2);
            let entries: Vec<QueueEntry> = page.iter().map(|(e, _)| *e).collect();
            assert_eq!(
                entries,
                view.iter().skip(i + 1).take(2).copied().collect::<Vec<_>>()
            );
        }
        let gone = live.queue_page(now, Some(Uuid::from_u128(u128::MAX)), 2);
        assert!(
            gone.is_empty(),
            "a cursor no longer queued ends the listing"
        );
        let subjects: Vec<Result<Subject, EngineError>> = live
            .rows
            .keys()
            .map(|&id| {
                Ok(Subject::Deployment {
                    id,
                    replayed: false,
                })
            })
            .collect();
        let positions = live.positions(&subjects);
        let expected: HashMap<Uuid, u32> = view.iter().map(|e| (e.id, e.position)).collect();
        assert_eq!(positions, expected);
        let of = |s: Status| live.rows.values().filter(move |r| r.status == s);
        let usage = live.usage();
        assert_eq!(
            usage.allocated,
            Resources::sum(of(Status::Running).map(|r| &r.resources))
        );
        assert_eq!(
            usage.queued_demand,
            Resources::sum(of(Status::Queued).map(|r| &r.resources))
        );
        assert_eq!(usage.running, of(Status::Running).count() as i64);
        assert_eq!(usage.queued, of(Status::Queued).count() as i64);
        assert_eq!(live.allocated(), usage.allocated);
        assert_eq!(
            live.next_deadline(),
            of(Status::Running).filter_map(|r| r.deadline_at).min()
        );
    }

    #[test]
    fn book_follows_the_rows() {
        let mut c = cluster(1000, Queueing::Strict);
        let rows = vec![
            row(1, Status::Running, 5, 600, 0),
            row(2, Status::Running, 1, 300, 10),
            row(3, Status::Queued, 10, 500, 20),
            row(4, Status::Queued, 2, 50, 30),
            row(5, Status::Queued, 7, 5000, 40),
            row(6, Status::Succeeded, 7, 50, 40),
        ];
        let mut live = Live::new(rows, &c, t(100));
        same_as_reference(&mut live, &c, t(100));

        live.insert(row(7, Status::Queued, 3, 20, 100));
        live.set_priority(Uuid::from_u128(4), 9, t(100));
        same_as_reference(&mut live, &c, t(130));

        live.finish(Uuid::from_u128(1), Status::Stopped, None, t(130));
        live.finish(Uuid::from_u128(3), Status::Cancelled, None, t(130));
        assert!(live.done.contains_key(&Uuid::from_u128(1)));
        same_as_reference(&mut live, &c, t(200));

        c.capacity = Resources::new(400, 1 << 20, 0);
        c.policy.queueing = Queueing::BestEffort;
        live.follow(&c);
        // Aging past several steps reorders the queue.
        same_as_reference(&mut live, &c, t(1000));
    }
}
