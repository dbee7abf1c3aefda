//! The single writer of one cluster, with group commit: commands that arrive while a batch
//! is running wait, and the next batch runs all of them in one transaction. The writer keeps
//! one Postgres connection and the cluster's live deployments between batches; it drops
//! both on any failure and rebuilds them from Postgres. Reads (views) are authorized on a
//! second kept connection and answered from the live deployments.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::authorize::{authorize_reader, keys_presented};
use super::batch::{execute_batch, Committed, Decided};
use super::live::Live;
use super::{
    BatchStats, Change, Changed, Command, EngineError, Executed, Opening, Order, Shown, View,
    Viewed, READ_CLUSTER_ACTION, REPLAY_LIMIT, SNAPSHOT_QUEUE,
};
use crate::auth::Caller;
use crate::db::agents::AgentRow;
use crate::db::clusters::ClusterRow;
use crate::db::{agents as agents_db, api_keys, deployments, DbError};
use crate::domain::ids::ClusterId;
use crate::domain::resources::Resources;

type Reply = oneshot::Sender<Result<Executed, EngineError>>;

/// One cluster's writer (a Durable Object holds one; native tests hold one per cluster).
#[derive(Default)]
pub struct ClusterWriter {
    pending: Mutex<Vec<(Command, Reply)>>,
    state: tokio::sync::Mutex<State>,
    /// The connection reads are authorized on (batches keep theirs inside `state`).
    reader: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
    /// Orders for the cluster's agents that committed batches decided, until taken.
    orders: Mutex<Vec<Order>>,
    /// Other clusters that committed batches ended dependencies of, until taken
    /// ([`ClusterWriter::take_wakes`]).
    wakes: Mutex<Vec<ClusterId>>,
    /// One JSON line per batch run, until taken ([`ClusterWriter::take_logs`]).
    logs: Mutex<Vec<String>>,
    /// Whether batches describe their changes for watchers.
    watched: AtomicBool,
    /// Changes committed batches made, until taken ([`ClusterWriter::take_changes`]).
    changes: Mutex<Vec<Change>>,
    /// The platform's timer, for the deadline of every database exchange (none: no deadline).
    sleep: Option<Sleep>,
    /// Until when the cluster is known not to exist (so that a request for it costs no
    /// connection).
    unknown_until: Mutex<Option<DateTime<Utc>>>,
}

/// The platform's timer: a future that is ready after the given time (tokio's natively, the
/// runtime's on Workers).
pub type Sleep = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How long a batch, or the reading for a view, may wait on the database (connecting
/// included) before it is abandoned: its connection is dropped, its callers get 503, and the
/// next command connects again. A stalled connection never holds the cluster.
pub const DATABASE_DEADLINE: Duration = Duration::from_secs(3);

/// How long a cluster found not to exist is remembered as such.
pub const UNKNOWN_SECONDS: i64 = 30;

fn timed_out() -> EngineError {
    EngineError::Unavailable("the database did not answer in time".into())
}

#[derive(Default)]
struct State {
    db: Option<tokio_postgres::Client>,
    cache: Option<Live>,
    /// The last change's [`Change::seq`].
    seq: u64,
}

impl ClusterWriter {
    /// A writer with no connection yet, and no deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose database exchanges wait at most [`DATABASE_DEADLINE`] on `sleep`.
    pub fn with_deadline(sleep: Sleep) -> Self {
        Self {
            sleep: Some(sleep),
            ..Self::default()
        }
    }

    /// `fut`, or `None` once [`DATABASE_DEADLINE`] passed first (`fut` is then dropped).
    async fn within<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        let Some(sleep) = &self.sleep else {
            return Some(fut.await);
        };
        let deadline = sleep(DATABASE_DEADLINE);
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = deadline => None,
        }
    }

    /// Whether the cluster is known not to exist at `now`.
    fn known_unknown(&self, now: DateTime<Utc>) -> bool {
        self.unknown_until
            .lock()
            .map(|u| u.is_some_and(|until| now < until))
            .unwrap_or(false)
    }

    /// Remembers that the cluster does not exist (for [`UNKNOWN_SECONDS`] from `now`).
    fn remember_unknown(&self, now: DateTime<Utc>) {
        if let Ok(mut u) = self.unknown_until.lock() {
            *u = Some(now + chrono::Duration::seconds(UNKNOWN_SECONDS));
        }
    }

    /// Drops both connections and the view after an abandoned exchange: whatever they were
    /// doing is unknown.
    async fn abandon(&self) {
        *self.reader.lock().await = None;
        let mut state = self.state.lock().await;
        state.db = None;
        state.cache = None;
    }

    /// Runs `cmd`, batched with whatever else is waiting, and returns its own result.
    pub async fn run<C, F>(
        &self,
        cluster: ClusterId,
        cmd: Command,
        connect: C,
        clock: impl Fn() -> DateTime<Utc>,
    ) -> Result<Executed, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        if self.known_unknown(clock()) {
            return Err(EngineError::NotFound("cluster".into()));
        }
        let (reply, mut answer) = oneshot::channel();
        self.lock_pending().push((cmd, reply));
        // Whoever holds the state runs everything pending as one batch, then returns as soon
        // as its own answer is in: commands that arrived meanwhile belong to callers queued
        // on the lock, who run them next. (Draining until empty would keep a holder busy for
        // as long as traffic never pauses.)
        let mut state = self.state.lock().await;
        loop {
            match answer.try_recv() {
                Ok(result) => return result,
                // The holder running our batch was cancelled: whether it committed is unknown,
                // so this is a retryable unavailability (Idempotency-Key makes retries safe).
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(EngineError::Unavailable("the batch was interrupted".into()))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = std::mem::take(&mut *self.lock_pending());
            if batch.is_empty() {
                // Unreachable: our command is pending until some holder answers it.
                return Err(EngineError::Internal("a command went missing".into()));
            }
            let (cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let started = clock();
            let watched = self.watched.load(Ordering::Relaxed);
            let n = cmds.len();
            // Abandoned past the deadline: the batch's connection and view go with it (they
            // are taken out of the state while it runs), and whether it committed is unknown:
            // a 503, after which an Idempotency-Key makes a retry safe.
            let (mut results, orders, changes, wake, decided) = self
                .within(state.run(cluster, cmds, &connect, started, watched))
                .await
                .unwrap_or_else(|| (vec![Err(timed_out()); n], vec![], vec![], vec![], None));
            if results
                .first()
                .is_some_and(|r| matches!(r, Err(EngineError::NotFound(what)) if what == "cluster"))
                && decided.is_none()
            {
                self.remember_unknown(clock());
            }
            if !orders.is_empty() {
                self.lock_orders().extend(orders);
            }
            if !wake.is_empty() {
                let mut wakes = self.lock_wakes();
                for other in wake {
                    if !wakes.contains(&other) {
                        wakes.push(other);
                    }
                }
            }
            if !changes.is_empty() {
                let mut taken = self.lock_changes();
                for (event, what) in changes {
                    state.seq += 1;
                    taken.push(Change {
                        seq: state.seq,
                        event,
                        what,
                    });
                }
            }
            let stats = BatchStats {
                commands: u32::try_from(results.len()).unwrap_or(u32::MAX),
                micros: u64::try_from((clock() - started).num_microseconds().unwrap_or(0))
                    .unwrap_or(0),
            };
            self.log_batch(cluster, stats, decided);
            for executed in results.iter_mut().flatten() {
                executed.batch = Some(stats);
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
    }

    /// Answers a read from the writer's own view, after the batch in progress (if any) has
    /// committed. The caller is authorized (and the cluster's row read) in one round trip on
    /// the writer's reading connection, apart from the batches' connection: reads that arrive
    /// together go out pipelined, and none waits for a batch's round trips to authorize.
    pub async fn view<C, F>(
        &self,
        cluster: ClusterId,
        view: View,
        by: &Caller,
        connect: C,
        now: DateTime<Utc>,
    ) -> Result<Viewed, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        self.read(now, async {
            let row = self
                .authorized(cluster, by, view.action(), &connect, now)
                .await?;
            let mut state = self.state.lock().await;
            let live = state.loaded(&row, &connect, now).await?;
            Ok(match view {
                View::Cluster => Viewed::Cluster {
                    usage: live.usage(),
                    cluster: Box::new(row),
                },
                View::Queue { after, limit } => Viewed::Queue {
                    entries: live.queue_page(now, after, limit),
                },
                View::Position { id } => Viewed::Position {
                    position: live.position(&id),
                },
            })
        })
        .await
    }

    /// A read of the cluster (`read`, not yet polled): refused at once for a cluster known
    /// not to exist, abandoned past the deadline (both connections and the view dropped).
    async fn read<T>(
        &self,
        now: DateTime<Utc>,
        read: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        if self.known_unknown(now) {
            return Err(EngineError::NotFound("cluster".into()));
        }
        match self.within(read).await {
            Some(done) => done,
            None => {
                self.abandon().await;
                Err(timed_out())
            }
        }
    }

    /// The cluster's row once `by` is authorized for `action` on the reading connection.
    /// An object whose cluster does not exist keeps no connection open, and remembers it
    /// for a while.
    async fn authorized<C, F>(
        &self,
        cluster: ClusterId,
        by: &Caller,
        action: crate::domain::policy::Action,
        connect: &C,
        now: DateTime<Utc>,
    ) -> Result<ClusterRow, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        let reader = self.reader(connect).await?;
        match authorize_reader(&reader, cluster, by, action, now).await {
            Ok(Some(row)) => Ok(row),
            Ok(None) => {
                self.forget_reader(&reader).await;
                self.remember_unknown(now);
                Err(EngineError::NotFound("cluster".into()))
            }
            Err(e) => {
                if matches!(e, EngineError::Unavailable(_)) {
                    self.forget_reader(&reader).await;
                }
                Err(e)
            }
        }
    }

    /// What a new watcher of the cluster is shown first, once `by` is authorized to read it
    /// (as [`ClusterWriter::view`] authorizes): the events since `after` if it names one of
    /// the cluster's at most [`REPLAY_LIMIT`] events back, else a snapshot. Read while no
    /// batch runs, so that the opening and the changes after its `seq` together miss nothing
    /// and repeat nothing.
    pub async fn open_watch<C, F>(
        &self,
        cluster: ClusterId,
        by: &Caller,
        after: Option<i64>,
        connect: C,
        now: DateTime<Utc>,
    ) -> Result<Opening, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        self.read(now, async {
            let row = self
                .authorized(cluster, by, READ_CLUSTER_ACTION, &connect, now)
                .await?;
            let mut state = self.state.lock().await;
            let result = state.open_watch(&row, after, &connect, now).await;
            if matches!(result, Err(EngineError::Unavailable(_))) {
                state.db = None;
                state.cache = None;
            }
            result
        })
        .await
    }

    /// Whether batches describe their changes for watchers (the object says so while any
    /// watcher is open: nobody pays for them otherwise).
    pub fn set_watched(&self, watched: bool) {
        self.watched.store(watched, Ordering::Relaxed);
    }

    /// Takes the changes committed batches made since last taken, in commit order (whoever
    /// ran a command takes them after it, as with orders).
    pub fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.lock_changes())
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, Vec<Change>> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reading connection, opened on first use and again after it closed.
    async fn reader<C, F>(&self, connect: &C) -> Result<Arc<tokio_postgres::Client>, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        let mut reader = self.reader.lock().await;
        match reader.as_ref() {
            Some(client) if !client.is_closed() => Ok(client.clone()),
            _ => {
                let client = Arc::new(connect().await?);
                *reader = Some(client.clone());
                Ok(client)
            }
        }
    }

    /// Forgets the reading connection `failed` (not one opened since by another read).
    async fn forget_reader(&self, failed: &Arc<tokio_postgres::Client>) {
        let mut reader = self.reader.lock().await;
        if reader.as_ref().is_some_and(|r| Arc::ptr_eq(r, failed)) {
            *reader = None;
        }
    }

    /// Closes the writer's connections unless a batch or a read is using them (the next
    /// command or read opens them again); the live view is kept. An object whose sockets are
    /// all closed may leave memory while its agents stay connected.
    pub fn release(&self) -> bool {
        let Ok(mut state) = self.state.try_lock() else {
            return false;
        };
        let Ok(mut reader) = self.reader.try_lock() else {
            return false;
        };
        let held = state.db.is_some() || reader.is_some();
        state.db = None;
        *reader = None;
        held
    }

    /// Records a batch's log line: committed (with what it decided) or not.
    fn log_batch(&self, cluster: ClusterId, stats: BatchStats, decided: Option<Decided>) {
        #[derive(serde::Serialize)]
        struct Line {
            kind: &'static str,
            cluster: ClusterId,
            commands: u32,
            duration_ms: f64,
            committed: bool,
            #[serde(flatten)]
            decided: Option<Decided>,
        }
        let line = Line {
            kind: "batch",
            cluster,
            commands: stats.commands,
            duration_ms: stats.micros as f64 / 1000.0,
            committed: decided.is_some(),
            decided,
        };
        if let Ok(text) = serde_json::to_string(&line) {
            self.lock_logs().push(text);
        }
    }

    /// Takes the log lines of the batches run since last taken (one JSON line per batch),
    /// for the platform's log.
    pub fn take_logs(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock_logs())
    }

    fn lock_logs(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the orders committed batches decided for the cluster's agents, in order. Whoever
    /// ran a command takes them after it (so each is delivered once).
    pub fn take_orders(&self) -> Vec<Order> {
        std::mem::take(&mut *self.lock_orders())
    }

    /// Takes the other clusters that committed batches ended dependencies of (they hold
    /// deployments waiting for them): whoever ran a command ticks them after it, once the
    /// batch has committed.
    pub fn take_wakes(&self) -> Vec<ClusterId> {
        std::mem::take(&mut *self.lock_wakes())
    }

    fn lock_wakes(&self) -> std::sync::MutexGuard<'_, Vec<ClusterId>> {
        self.wakes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_orders(&self) -> std::sync::MutexGuard<'_, Vec<Order>> {
        self.orders.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<(Command, Reply)>> {
        // A poisoned lock only means another thread panicked mid-push; the queue is intact.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    async fn run<C, F>(
        &mut self,
        cluster: ClusterId,
        cmds: Vec<Command>,
        connect: &C,
        now: DateTime<Utc>,
        watched: bool,
    ) -> (
        Vec<Result<Executed, EngineError>>,
        Vec<Order>,
        Vec<(i64, Changed)>,
        Vec<ClusterId>,
        Option<Decided>,
    )
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        let n = cmds.len();
        // The cache is taken out for the batch and put back only after the commit: if this
        // future is dropped half-way (or anything fails), the next batch rebuilds it from
        // Postgres instead of trusting half-applied changes.
        let mut cache = self.cache.take();
        // The connection too is taken out for the batch: if this future is dropped between
        // BEGIN and COMMIT, the connection goes with it (Postgres rolls back) instead of
        // staying inside an open transaction for the next batch.
        let mut db = self.db.take();
        let result = async {
            if db.as_ref().is_none_or(|c| c.is_closed()) {
                cache = None;
                db = Some(connect().await?);
            }
            let client = db
                .as_ref()
                .ok_or_else(|| EngineError::Unavailable("no connection".into()))?;
            let keys = keys_presented(&cmds);
            let results = execute_batch(client, cluster, &mut cache, cmds, now, watched).await?;
            if !keys.is_empty() {
                // Outside the batch's transaction (keys' rows are shared by every cluster),
                // and best effort: the batch is committed whatever happens to this.
                let _ = api_keys::touch(client, &keys, now).await;
            }
            Ok::<_, EngineError>(results)
        }
        .await;
        match result {
            Ok(Committed {
                answers,
                orders,
                decided,
                changes,
                wake,
            }) => {
                self.db = db;
                self.cache = cache;
                (answers, orders, changes, wake, Some(decided))
            }
            Err(e) => {
                // A lost connection is reopened; an unknown cluster keeps none open (its
                // object may never be called again); otherwise the batch rolled back.
                if !matches!(e, EngineError::Unavailable(_) | EngineError::NotFound(_)) {
                    self.db = db;
                }
                (vec![Err(e); n], vec![], vec![], vec![], None)
            }
        }
    }

    /// The batches' connection, opened if need be.
    async fn connected<C, F>(&mut self, connect: &C) -> Result<&tokio_postgres::Client, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        if self.db.as_ref().is_none_or(|c| c.is_closed()) {
            self.db = Some(connect().await?);
        }
        self.db
            .as_ref()
            .ok_or_else(|| EngineError::Unavailable("no connection".into()))
    }

    /// The view, read from PostgreSQL (on the batches' connection) when there is none.
    async fn loaded<C, F>(
        &mut self,
        row: &ClusterRow,
        connect: &C,
        now: DateTime<Utc>,
    ) -> Result<&mut Live, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        if self.cache.is_none() {
            let loaded = Live::load(self.connected(connect).await?, row, now).await;
            if matches!(loaded, Err(EngineError::Unavailable(_))) {
                self.db = None;
            }
            self.cache = Some(loaded?);
        }
        self.cache
            .as_mut()
            .ok_or_else(|| EngineError::Internal("cache missing".into()))
    }

    /// [`ClusterWriter::open_watch`] once authorized, holding the state: the view is loaded
    /// if need be, and read on the batches' connection (no batch can use it meanwhile).
    async fn open_watch<C, F>(
        &mut self,
        row: &ClusterRow,
        after: Option<i64>,
        connect: &C,
        now: DateTime<Utc>,
    ) -> Result<Opening, EngineError>
    where
        C: Fn() -> F,
        F: Future<Output = Result<tokio_postgres::Client, DbError>>,
    {
        self.loaded(row, connect, now).await?;
        self.connected(connect).await?;
        let (Some(db), Some(live)) = (self.db.as_ref(), self.cache.as_mut()) else {
            return Err(EngineError::Internal("connection or view missing".into()));
        };
        let cluster = row.id;
        let missed = match after {
            Some(after) => deployments::events_after(db, cluster, after, REPLAY_LIMIT + 1)
                .await?
                .filter(|events| events.len() <= REPLAY_LIMIT as usize),
            None => None,
        };
        let (agents, placed) = tokio::try_join!(
            agents_db::of_cluster(db, cluster),
            agents_db::placed_on(db, cluster)
        )?;
        let agents: Vec<(AgentRow, Resources, i64)> = agents
            .into_iter()
            .map(|a| {
                let (p, n) = placed
                    .iter()
                    .find(|(id, _, _)| *id == a.id)
                    .map_or((Resources::ZERO, 0), |(_, p, n)| (*p, *n));
                (a, p, n)
            })
            .collect();
        let usage = live.usage();
        let shown = match (missed, after) {
            (Some(events), Some(after)) => {
                let last = events.last().map_or(after, |e| e.id);
                let mut changes: Vec<Change> = events
                    .into_iter()
                    .map(|e| {
                        let position = live.position(&e.deployment.id);
                        Change {
                            seq: 0,
                            event: e.id,
                            what: Changed::Deployment {
                                kind: e.kind,
                                deployment: Box::new(e.deployment),
                                position,
                            },
                        }
                    })
                    .collect();
                changes.push(Change {
                    seq: 0,
                    event: last,
                    what: Changed::Usage {
                        capacity: row.capacity,
                        usage,
                    },
                });
                changes.extend(agents.into_iter().map(|(a, placed, running)| Change {
                    seq: 0,
                    event: last,
                    what: Changed::Agent {
                        agent: Box::new(a),
                        placed,
                        running,
                    },
                }));
                Shown::Missed(changes)
            }
            _ => Shown::Snapshot {
                event: deployments::last_event(db, cluster).await?,
                cluster: Box::new(row.clone()),
                usage,
                queue: live.queue_page(now, None, SNAPSHOT_QUEUE),
                agents,
            },
        };
        Ok(Opening {
            seq: self.seq,
            shown,
        })
    }
}
