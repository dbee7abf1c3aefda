//! The live cache: a cluster's queued and running deployments between batches, with the
//! scheduler's book of them and their deadlines.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

mod dependencies;
mod placing;

use dependencies::Held;

use super::batch::{event, Subject};
use super::EngineError;
use crate::db::agents::{self as agents_db, AgentRow};
use crate::db::clusters::{self, ClusterRow};
use crate::db::deployments::{self, DeploymentRow, Event, Finishing, NewDeployment};
use crate::domain::deployment::{EventKind, Status};
use crate::domain::ids::{ClusterId, DeploymentId};
use crate::domain::resources::Resources;
use crate::domain::scheduling::lifecycle::{
    self, Progress, Settled, EXPIRED_REASON, PREEMPTED_REASON, REQUEUED_REASON,
};
use crate::domain::scheduling::placement::{Agent, Fleet, Presence, Stage};
use crate::domain::scheduling::plan::{self, Plan};
use crate::domain::scheduling::{Book, BookEntry, QueueEntry};

/// A cluster's queued and running deployments, kept current by the engine between
/// commits, plus the ones a batch has just finished (for its answers).
///
/// Beside the rows it keeps the scheduler's [`Book`] of the same deployments (so scheduling,
/// usage and queue positions never walk them all) and the running deployments' deadlines in
/// order. Every change to `rows` goes through a method that changes the other two alike.
///
/// It also keeps the cluster's placement state (the agents and their containers: `fleet`)
/// and the running deployments that no agent runs yet (`awaiting`, in admission order);
/// the placement transitions are in `placing.rs`.
#[derive(Debug)]
pub struct Live {
    rows: HashMap<DeploymentId, DeploymentRow>,
    done: HashMap<DeploymentId, DeploymentRow>,
    book: Book,
    /// (deadline, id) of every running deployment that has one.
    deadlines: BTreeSet<(DateTime<Utc>, DeploymentId)>,
    fleet: Fleet,
    /// (admitted at, id) of every running deployment without a container to run it.
    awaiting: BTreeSet<(DateTime<Utc>, DeploymentId)>,
    /// Whether placement may have something new to do since it last ran (an admission, an
    /// agent joined, room freed).
    unplaced: bool,
    /// The queued deployments held for their dependencies (`dependencies.rs`); the book
    /// holds them apart from its queue.
    held: Held,
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

/// The key of a running row that no container runs (none is assigned or started).
fn awaiting_key(r: &DeploymentRow) -> Option<(DateTime<Utc>, DeploymentId)> {
    let placed = matches!(r.placement, Some(Stage::Assigned | Stage::Started));
    (r.status == Status::Running && !placed).then(|| (r.admitted_at.unwrap_or(r.enqueued_at), r.id))
}

/// What placement knows of an agent from its record.
fn fleet_agent(a: &AgentRow) -> (crate::domain::ids::AgentId, Agent) {
    let presence = if a.status == "connected" {
        Presence::Connected {
            seen: a.last_seen_at,
        }
    } else {
        Presence::Away {
            since: a.last_seen_at,
        }
    };
    let agent = Agent {
        name: a.name.clone(),
        capacity: a.capacity,
        presence,
        since: a.connected_at,
    };
    (a.id, agent)
}

/// The key of a running row in the deadline index.
fn deadline_key(r: &DeploymentRow) -> Option<(DateTime<Utc>, DeploymentId)> {
    (r.status == Status::Running)
        .then_some(r.deadline_at)
        .flatten()
        .map(|d| (d, r.id))
}

impl Live {
    /// Whether any deployment is queued or running.
    pub(super) fn has_rows(&self) -> bool {
        !self.rows.is_empty()
    }

    /// The base priority of a live deployment.
    pub(super) fn priority_of(&self, id: &DeploymentId) -> Option<i32> {
        self.rows.get(id).map(|r| r.priority)
    }

    /// A live deployment, or one the batch in progress has just finished.
    pub(super) fn row(&self, id: &DeploymentId) -> Option<&DeploymentRow> {
        self.rows.get(id).or_else(|| self.done.get(id))
    }

    /// Forgets the deployments the batch finished (once it has answered).
    pub(super) fn clear_done(&mut self) {
        self.done.clear();
    }

    pub(super) fn new(
        rows: Vec<DeploymentRow>,
        c: &ClusterRow,
        now: DateTime<Utc>,
        fleet: Fleet,
        held: Held,
    ) -> Self {
        let mut book = Book::new(
            c.capacity,
            c.policy,
            rows.iter()
                .filter(|r| !held.holds(&r.id))
                .filter_map(book_entry),
            now,
        );
        for entry in rows
            .iter()
            .filter(|r| held.holds(&r.id))
            .filter_map(book_entry)
        {
            book.hold(entry);
        }
        let deadlines = rows.iter().filter_map(deadline_key).collect();
        let awaiting = rows.iter().filter_map(awaiting_key).collect();
        Self {
            rows: rows.into_iter().map(|r| (r.id, r)).collect(),
            done: HashMap::new(),
            book,
            deadlines,
            fleet,
            awaiting,
            unplaced: true,
            held,
        }
    }

    /// Reads the cluster's live deployments, its placed containers, its agents and its held
    /// deployments' dependencies (four statements, pipelined).
    pub(super) async fn read(
        db: &Client,
        c: &ClusterRow,
        now: DateTime<Utc>,
    ) -> Result<Self, EngineError> {
        let (rows, placed, agents, held) = tokio::try_join!(
            deployments::live(db, c.id),
            deployments::placements(db, c.id),
            agents_db::of_cluster(db, c.id),
            crate::db::dependencies::held(db, c.id),
        )?;
        let fleet = Fleet::new(agents.iter().map(fleet_agent), placed);
        Ok(Self::new(rows, c, now, fleet, Held::read(held)))
    }

    /// Adds a row just written (a new submission): into the book's queue, or among its held
    /// deployments when its dependencies hold it.
    pub(super) fn insert(&mut self, row: DeploymentRow) {
        if let Some(old) = self.rows.get(&row.id) {
            if let Some(d) = deadline_key(old) {
                self.deadlines.remove(&d);
            }
            if let Some(a) = awaiting_key(old) {
                self.awaiting.remove(&a);
            }
        }
        match book_entry(&row) {
            Some(entry) if self.held.holds(&row.id) => self.book.hold(entry),
            Some(entry) => self.book.insert(entry),
            None => {
                self.book.remove(&row.id);
            }
        }
        self.deadlines.extend(deadline_key(&row));
        self.awaiting.extend(awaiting_key(&row));
        self.rows.insert(row.id, row);
    }

    /// Takes the cluster's capacity and policy (after an update).
    pub(super) fn follow(&mut self, c: &ClusterRow) {
        self.book.set_capacity(c.capacity);
        self.book.set_policy(c.policy);
    }

    /// What `new` would meet if it were submitted at `now` (a dry run: nothing changes);
    /// `held` when it would wait for dependencies.
    pub(super) fn plan(&self, new: &NewDeployment, held: bool, now: DateTime<Utc>) -> Plan {
        let entry = BookEntry {
            id: DeploymentId::new(),
            priority: new.priority,
            resources: new.resources,
            enqueued_at: now,
            admitted_at: None,
        };
        let rows = &self.rows;
        plan::plan(&self.book, entry, held, now, |id| {
            rows.get(id).map(|r| r.status)
        })
    }

    /// A new base priority for a live deployment (already written to Postgres).
    pub(super) fn set_priority(&mut self, id: DeploymentId, priority: i32, now: DateTime<Utc>) {
        if let Some(row) = self.rows.get_mut(&id) {
            row.priority = priority;
            row.updated_at = now;
            self.book.set_priority(&id, priority);
        }
    }

    pub(super) fn allocated(&self) -> Resources {
        self.book.totals().allocated
    }

    pub(super) fn usage(&self) -> clusters::Usage {
        let t = self.book.totals();
        let rooms = self.fleet.rooms();
        clusters::Usage {
            allocated: t.allocated,
            queued_demand: t.queued_demand,
            running: i64::try_from(t.running).unwrap_or(i64::MAX),
            queued: i64::try_from(t.queued).unwrap_or(i64::MAX),
            agent_capacity: Resources::sum(rooms.iter().map(|r| &r.capacity)),
            agents_connected: i64::try_from(rooms.len()).unwrap_or(i64::MAX),
        }
    }

    /// Whether `id` is a deployment of this cluster in `status`; if not, why (unknown, of
    /// another cluster, or in another state).
    pub(super) async fn expect(
        &self,
        tx: &Client,
        cluster: ClusterId,
        id: DeploymentId,
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
    pub(super) fn finish(
        &mut self,
        id: DeploymentId,
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
        if let Some(d) = deadline_key(&row) {
            self.deadlines.remove(&d);
        }
        if let Some(a) = awaiting_key(&row) {
            self.awaiting.remove(&a);
        }
        self.book.remove(&id);
        self.held.ended(&id, to);
        progress(&mut row).finish(to, message, now);
        self.done.insert(id, row);
        Some(write)
    }

    /// Fails running deployments past their `max_runtime_seconds` (in memory); returns the
    /// writes to make.
    pub(super) fn expire(&mut self, now: DateTime<Utc>, events: &mut Vec<Event>) -> Vec<Finishing> {
        lifecycle::overdue(&self.deadlines, now)
            .into_iter()
            .filter_map(|id| {
                events.push(event(id, EventKind::Expired, Some(EXPIRED_REASON), None));
                self.finish(id, Status::Failed, Some(EXPIRED_REASON.into()), now)
            })
            .collect()
    }

    /// Lets the book schedule (it settles in one call and applies its own decisions), then
    /// brings the rows level with its net changes ([`lifecycle::settle`]), which it returns
    /// for the batch to write. One that ends where it began is left exactly as stored (the
    /// book keeps its original admission time too); a victim's preemptor is the last one
    /// that evicted it.
    pub(super) fn schedule(
        &mut self,
        c: &ClusterRow,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Settled {
        self.follow(c);
        let decisions = self.book.schedule(now);
        let settled = lifecycle::settle(&decisions, |id| self.rows.get(id).map(|r| r.status));
        for &(victim, by) in &settled.preempted {
            if let Some(r) = self.rows.get_mut(&victim) {
                if let Some(d) = deadline_key(r) {
                    self.deadlines.remove(&d);
                }
                if let Some(a) = awaiting_key(r) {
                    self.awaiting.remove(&a);
                }
                progress(r).preempt(by, now);
            }
        }
        for id in &settled.admitted {
            if let Some(r) = self.rows.get_mut(id) {
                progress(r).admit(now);
                self.deadlines.extend(deadline_key(r));
                self.awaiting.extend(awaiting_key(r));
                self.unplaced = true;
            }
        }
        for &(victim, by) in &settled.preempted {
            events.push(event(
                victim,
                EventKind::Preempted,
                Some(PREEMPTED_REASON),
                Some(by),
            ));
            events.push(event(
                victim,
                EventKind::Requeued,
                Some(REQUEUED_REASON),
                None,
            ));
        }
        for id in &settled.admitted {
            events.push(event(*id, EventKind::Admitted, None, None));
        }
        settled
    }

    /// The earliest deadline among running deployments.
    pub(super) fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// When the cluster must be looked at next: the earliest deadline, agent's grace or
    /// stopping container's time.
    pub(super) fn next_wake(&self, c: &ClusterRow) -> Option<DateTime<Utc>> {
        let grace = chrono::Duration::seconds(i64::from(c.agent_grace_seconds));
        [self.next_deadline(), self.fleet.next_due(grace)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The 1-based queue position of `id`, when it is queued.
    pub fn position(&self, id: &DeploymentId) -> Option<u32> {
        self.book.position(id)
    }

    /// Queue positions of the batch's queued subjects, as of the last schedule.
    pub(super) fn positions(
        &self,
        subjects: &[Result<Subject, EngineError>],
    ) -> HashMap<DeploymentId, u32> {
        subjects
            .iter()
            .filter_map(|s| match s {
                Ok(Subject::Deployment { id, .. }) => self.position(id).map(|p| (*id, p)),
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
        Self::read(db, c, now).await
    }

    /// Entries after the deployment `after` (from the head when `None`), at most `limit`,
    /// of the cluster's queue as of `now`, each with the position, effective priority and
    /// reason [`queue_view`](crate::domain::scheduling::queue_view) would give it. O(log n + limit). A cursor that is no
    /// longer queued ends the listing.
    pub fn queue_page(
        &mut self,
        now: DateTime<Utc>,
        after: Option<DeploymentId>,
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

/// What the lifecycle transitions change of a row.
fn progress(r: &mut DeploymentRow) -> Progress<'_> {
    Progress {
        status: &mut r.status,
        max_runtime_seconds: r.max_runtime_seconds,
        admitted_at: &mut r.admitted_at,
        deadline_at: &mut r.deadline_at,
        finished_at: &mut r.finished_at,
        preemptions: &mut r.preemptions,
        preempted_by: &mut r.preempted_by,
        message: &mut r.message,
        updated_at: &mut r.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scheduling::{self, ClusterState, Queued, Running, WaitReason};

    /// The pure scheduler's view of a cluster and its live deployments (the reference the
    /// engine's book is checked against).
    fn cluster_state<'a>(
        c: &ClusterRow,
        live: impl Iterator<Item = &'a DeploymentRow>,
        held: impl Fn(&DeploymentId) -> bool,
    ) -> ClusterState {
        let mut state = ClusterState {
            capacity: c.capacity,
            policy: c.policy,
            running: vec![],
            queued: vec![],
            held: vec![],
        };
        for r in live {
            match r.status {
                Status::Running => state.running.push(Running {
                    id: r.id,
                    priority: r.priority,
                    resources: r.resources,
                    admitted_at: r.admitted_at.unwrap_or(r.enqueued_at),
                }),
                Status::Queued => {
                    let q = Queued {
                        id: r.id,
                        priority: r.priority,
                        resources: r.resources,
                        enqueued_at: r.enqueued_at,
                    };
                    if held(&r.id) {
                        state.held.push(q);
                    } else {
                        state.queued.push(q);
                    }
                }
                _ => {}
            }
        }
        state
    }

    use crate::domain::ids::OrgId;
    use crate::domain::scheduling::{Policy, Queueing};
    use uuid::Uuid;

    fn uid(n: u128) -> DeploymentId {
        DeploymentId(Uuid::from_u128(n))
    }

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
            agent_grace_seconds: 60,
            created_at: t(0),
            updated_at: t(0),
        }
    }

    fn row(n: u128, status: Status, priority: i32, cpu: i64, enqueued: i64) -> DeploymentRow {
        let running = status == Status::Running;
        DeploymentRow {
            id: uid(n),
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
            agent: None,
            placement: None,
            started_at: None,
            exit_code: None,
            depends_on: vec![],
        }
    }

    /// The book's answers against the reference `queue_view` over the same rows.
    fn same_as_reference(live: &mut Live, c: &ClusterRow, now: DateTime<Utc>) {
        let state = cluster_state(c, live.rows.values(), |id| live.is_held(id));
        let view = scheduling::queue_view(&state, now);
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
        let gone = live.queue_page(now, Some(uid(u128::MAX)), 2);
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
        let expected: HashMap<DeploymentId, u32> =
            view.iter().map(|e| (e.id, e.position)).collect();
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
        let mut live = Live::new(rows, &c, t(100), Fleet::default(), Held::default());
        same_as_reference(&mut live, &c, t(100));

        live.insert(row(7, Status::Queued, 3, 20, 100));
        live.set_priority(uid(4), 9, t(100));
        same_as_reference(&mut live, &c, t(130));

        live.finish(uid(1), Status::Stopped, None, t(130));
        live.finish(uid(3), Status::Cancelled, None, t(130));
        assert!(live.done.contains_key(&uid(1)));
        same_as_reference(&mut live, &c, t(200));

        c.capacity = Resources::new(400, 1 << 20, 0);
        c.policy.queueing = Queueing::BestEffort;
        live.follow(&c);
        // Aging past several steps reorders the queue.
        same_as_reference(&mut live, &c, t(1000));
    }

    #[test]
    fn held_rows_wait_apart_and_are_resolved_within_the_batch() {
        use crate::engine::batch::Batch;
        let c = cluster(1000, Queueing::Strict);
        let (x, y) = (uid(100), uid(101));
        let rows = vec![
            row(1, Status::Running, 5, 600, 0),
            // Held, though it would fit and outranks the strict queue's head.
            row(8, Status::Queued, 900, 100, 10),
            row(9, Status::Queued, 1, 100, 11),
            row(10, Status::Queued, 1, 100, 12),
            row(11, Status::Queued, 1, 100, 13),
            row(12, Status::Queued, 3, 900, 14),
        ];
        let held = Held::read(vec![
            (uid(8), uid(1), Some(Status::Running)),
            (uid(9), x, Some(Status::Running)),
            (uid(10), uid(1), Some(Status::Running)),
            (uid(10), y, Some(Status::Succeeded)),
            (uid(11), uid(9), Some(Status::Queued)),
        ]);
        let mut live = Live::new(rows, &c, t(100), Fleet::default(), held);
        same_as_reference(&mut live, &c, t(100));
        let mut batch = Batch::default();
        live.resolve_dependencies(&mut batch, t(100));
        assert!(batch.released.is_empty() && batch.finishes.is_empty());
        let page = live.queue_page(t(100), None, 10);
        let reasons: Vec<(u128, WaitReason)> = page
            .iter()
            .map(|(e, _)| (e.id.0.as_u128(), e.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (12, WaitReason::WaitingForCapacity),
                (8, WaitReason::WaitingForDependencies),
                (9, WaitReason::WaitingForDependencies),
                (10, WaitReason::WaitingForDependencies),
                (11, WaitReason::WaitingForDependencies),
            ]
        );

        // 1 succeeds: 8 and 10 (whose other dependency succeeded already) are released, from
        // now; 9 still waits for x of another cluster.
        live.finish(uid(1), Status::Succeeded, None, t(130));
        live.resolve_dependencies(&mut batch, t(130));
        assert_eq!(batch.released, [uid(8), uid(10)]);
        assert!(live.is_held(&uid(9)) && !live.is_held(&uid(8)));
        assert_eq!(live.rows[&uid(8)].enqueued_at, t(130));
        same_as_reference(&mut live, &c, t(130));

        // 9 is cancelled (by a user): 11, which waits for it, is cancelled naming it.
        live.finish(uid(9), Status::Cancelled, None, t(140));
        live.resolve_dependencies(&mut batch, t(140));
        assert_eq!(
            batch.finishes.iter().map(|f| f.id).collect::<Vec<_>>(),
            [uid(11)]
        );
        let cancelled = batch.events.last().expect("an event");
        assert_eq!(cancelled.kind, EventKind::Cancelled);
        assert_eq!(cancelled.by_deployment, Some(uid(9)));
        assert_eq!(
            live.row(&uid(11)).and_then(|r| r.message.clone()),
            Some(format!("dependency {} was cancelled", uid(9)))
        );
        same_as_reference(&mut live, &c, t(140));
    }
}
