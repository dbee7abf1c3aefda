//! The scheduler's state kept between calls: a [`Book`] holds one cluster's capacity, policy,
//! running set and queue in ordered, augmented structures, so that scheduling costs about
//! O(log n) per decision instead of a sort of the whole queue per call.
//!
//! It is as pure as [`schedule`](super::scheduler::schedule): no I/O, no clock (time is passed
//! in), no randomness, and it decides exactly what the engine's loop over `schedule` decides
//! on the equivalent [`ClusterState`] (the property tests at the end check that, operation by
//! operation, together with the totals, positions and queue pages).
//!
//! # Structures
//!
//! * The queue: a [`Treap`] keyed by scheduling order (effective priority descending,
//!   `enqueued_at` ascending, id ascending) with subtree sizes (for ranks), and per subtree
//!   the component-wise minimum request (invalid requests count as infinite) and the maximum
//!   base priority.
//! * The running set: a [`Treap`] keyed by preemption order (base priority ascending, most
//!   recently admitted first, id ascending) with subtree sizes and resource sums.
//! * Aging: queue keys hold the effective priority as of [`Book::as_of`], the latest `now`
//!   seen; a heap holds each queued entry's next aging step (the instant its boost goes up by
//!   one, until the cap). Moving the clock re-keys the entries whose step has passed: O(log n)
//!   each, at most [`AGING_MAX_BOOST`] times in an entry's life. Steady state: about n/60
//!   re-keys per second of clock for n queued entries younger than 100 minutes.
//! * Two id maps: every deployment's base priority and `enqueued_at` (all a key needs with
//!   `as_of`), touched only by inserts, removals, priority changes and aging; and the
//!   admission time of running ones. Scheduling touches only the second, which is as small as
//!   the running set.
//! * Totals (allocated, queued demand, counts) kept as things change, so usage is O(1).
//!
//! # Costs
//!
//! n queued, r running. Updates (insert, remove, priority change) are O(log n + log r)
//! expected; capacity and policy changes are O(1). [`Book::position`] is O(log n) and
//! [`Book::queue_page`] O(log n + page size).
//!
//! [`Book::schedule`] walks the queue tree once per pass in scheduling order, skipping every
//! subtree that cannot hold an entry to act on: one whose smallest request, component by
//! component, does not fit what is free (plus, with preemption, what every running deployment
//! of base priority below the subtree's highest could give back). Successive candidates are
//! found by continuing the same walk, not by descending from the root again. With one
//! resource dimension that bounds the walk by O(log n) per decision; with three, a subtree's
//! component-wise minimum can fit while no single entry in it does (one asks for much CPU,
//! another for much memory), so O(log n) per decision is typical rather than guaranteed: a
//! queue built to defeat it makes the walk enter such subtrees. A preemption costs
//! O((v + 1) log r) for its v victims (the greedy prefix and the minimisation are descents
//! over prefix sums), and with preemption on each subtree test may cost an O(log r) prefix
//! sum. Per call there are at most [`MAX_PASSES`] unsuccessful walks. Admitted entries leave
//! the queue in one bulk removal per pass. If some running deployment holds a negative
//! amount (the engine never stores one), victim selection falls back to the reference walk,
//! O(r) per preemption attempt.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::resources::Resources;
use super::scheduler::{
    add, aging_boost, can_ever_fit, fits, sub, wide, ClusterState, Decision, DeploymentId, Policy,
    QueueEntry, Queued, Queueing, Running, WaitReason, Wide, AGING_MAX_BOOST, AGING_STEP_SECONDS,
    MAX_PASSES, ZERO_WIDE,
};
use super::treap::{Measured, Summary, Treap, Walk};

/// A deployment as the book takes it in and gives it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookEntry {
    /// Deployment id (unique within a book).
    pub id: DeploymentId,
    /// Base priority.
    pub priority: i32,
    /// Resources requested (queued) or held (running).
    pub resources: Resources,
    /// When it entered the queue; a preempted deployment returns with this same time.
    pub enqueued_at: DateTime<Utc>,
    /// When it was admitted if it is running, `None` if it is queued.
    pub admitted_at: Option<DateTime<Utc>>,
}

/// A cluster's usage, maintained as the book changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sum of what running deployments hold.
    pub allocated: Resources,
    /// Sum of what queued deployments request.
    pub queued_demand: Resources,
    /// Number of running deployments.
    pub running: usize,
    /// Number of queued deployments.
    pub queued: usize,
}

/// The hasher of the book's id maps: a fixed multiply-and-fold (FxHash's) with a final mix,
/// so the book draws no random numbers, and fast on 16-byte ids. Deployment ids are made by
/// the engine (UUIDv7, random low bits), not chosen by callers, so a fixed function is not an
/// attack surface; and no result depends on the maps' iteration order.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply only carries low bits upwards; ids that differ in their high bytes
        // (sequential ones, big-endian) need a final mix (MurmurHash3's fmix64) to spread
        // into the low bits the table indexes by.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type Fixed = BuildHasherDefault<IdHasher>;

/// Position in scheduling order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueKey {
    /// As of the book's `as_of`.
    effective: i32,
    enqueued_at: DateTime<Utc>,
    id: DeploymentId,
}

impl Ord for QueueKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .effective
            .cmp(&self.effective)
            .then_with(|| self.enqueued_at.cmp(&other.enqueued_at))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for QueueKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What the queue tree stores beside the key.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    priority: i32,
    resources: Resources,
}

/// Queue subtree summary: what its smallest request could be, and its highest base priority.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Smallest {
    /// Component-wise minimum of the valid requests (`i64::MAX` standing for "none").
    request: [i64; 3],
    top_priority: i32,
}

impl Summary for Smallest {
    const EMPTY: Self = Smallest {
        request: [i64::MAX; 3],
        top_priority: i32::MIN,
    };
    fn join(&self, right: &Self) -> Self {
        let [a, b, c] = self.request;
        let [x, y, z] = right.request;
        Smallest {
            request: [a.min(x), b.min(y), c.min(z)],
            top_priority: self.top_priority.max(right.top_priority),
        }
    }
}

impl Measured for Waiting {
    type Summary = Smallest;
    fn measure(&self) -> Smallest {
        Smallest {
            // An invalid request never fits; it must not make a subtree look promising.
            request: if self.resources.is_valid() {
                self.resources.dims()
            } else {
                [i64::MAX; 3]
            },
            top_priority: self.priority,
        }
    }
}

/// Position in preemption order (the first is evicted first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunKey {
    priority: i32,
    admitted_at: DateTime<Utc>,
    id: DeploymentId,
}

impl Ord for RunKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.admitted_at.cmp(&self.admitted_at))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for RunKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What the running tree stores beside the key.
#[derive(Debug, Clone, Copy)]
struct Holding {
    resources: Resources,
    /// To return to the queue with, if preempted.
    enqueued_at: DateTime<Utc>,
}

/// Running subtree summary: the resources it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Held(Wide);

impl Summary for Held {
    const EMPTY: Self = Held(ZERO_WIDE);
    fn join(&self, right: &Self) -> Self {
        Held(add(self.0, right.0))
    }
}

impl Measured for Holding {
    type Summary = Held;
    fn measure(&self) -> Held {
        Held(wide(&self.resources))
    }
}

/// What the id map keeps of every deployment: with `as_of` (queued) or the admission time
/// (running), enough to rebuild its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    priority: i32,
    enqueued_at: DateTime<Utc>,
}

/// Heap weight of a deployment in both trees: a hash of its id (splitmix64's finaliser over
/// both halves), independent of scheduling order and the same on every machine.
fn weight(id: &DeploymentId) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let (hi, lo) = id.as_u64_pair();
    mix(hi ^ mix(lo))
}

/// The instant an entry whose boost is `boost` gains the next point, if it ever does.
fn next_step(enqueued_at: DateTime<Utc>, boost: i32) -> Option<DateTime<Utc>> {
    if boost >= AGING_MAX_BOOST {
        return None;
    }
    // The boost is floor(whole seconds waited / step), so the next point comes exactly
    // (boost + 1) steps after enqueueing; an instant beyond the calendar never comes.
    let wait = TimeDelta::try_seconds(AGING_STEP_SECONDS * i64::from(boost + 1))?;
    enqueued_at.checked_add_signed(wait)
}

/// Clamps a wide sum back into a resource value (sums of valid values never need it).
fn narrow(w: Wide) -> Resources {
    let clamp = |x: i128| i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX });
    Resources::new(clamp(w[0]), clamp(w[1]), clamp(w[2]))
}

fn widen(dims: [i64; 3]) -> Wide {
    dims.map(i128::from)
}

fn negative(r: &Resources) -> bool {
    r.dims().iter().any(|&x| x < 0)
}

/// Deployments that were running when a [`Book::schedule`] call started and were preempted
/// during it, with their key then (to restore the admission time of those running again at
/// the end).
///
/// A victim whose admission time is not the call's `now` was running when the call started
/// (the call admits at `now`), and only its first preemption can find it so; one admitted at
/// `now` needs no restoring either way.
type Originals = Vec<RunKey>;

/// One cluster's scheduling state, kept up to date between calls; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct Book {
    capacity: Resources,
    policy: Policy,
    /// The instant the queue's keys (effective priorities) are computed at.
    as_of: DateTime<Utc>,
    queue: Treap<QueueKey, Waiting>,
    running: Treap<RunKey, Holding>,
    /// Every deployment in the book.
    known: HashMap<DeploymentId, Known, Fixed>,
    /// Admission time of every running deployment.
    admitted: HashMap<DeploymentId, DateTime<Utc>, Fixed>,
    /// (next aging step, id) of every queued entry still below the cap, earliest first, plus
    /// `stale` records of entries that left the queue since (deleted lazily: a record counts
    /// only if its entry is queued and waiting for that very step).
    steps: BinaryHeap<Reverse<(DateTime<Utc>, DeploymentId)>>,
    stale: usize,
    allocated: Wide,
    queued_demand: Wide,
    /// Running entries holding a negative amount on some dimension (never, from the engine):
    /// while there are any, prefix sums are not monotone and victim selection walks.
    negative_running: usize,
}

impl Book {
    /// A book of `entries` (running when `admitted_at` is set), with the queue ordered as of
    /// `now`. Ids are unique: a later entry with the same id replaces an earlier one.
    /// O(n log n), dominated by sorting.
    pub fn new(
        capacity: Resources,
        policy: Policy,
        entries: impl IntoIterator<Item = BookEntry>,
        now: DateTime<Utc>,
    ) -> Book {
        let mut latest: HashMap<DeploymentId, BookEntry, Fixed> = HashMap::default();
        for entry in entries {
            latest.insert(entry.id, entry);
        }
        let mut book = Book {
            capacity,
            policy,
            as_of: now,
            queue: Treap::new(),
            running: Treap::new(),
            known: HashMap::with_capacity_and_hasher(latest.len(), Fixed::default()),
            admitted: HashMap::default(),
            steps: BinaryHeap::new(),
            stale: 0,
            allocated: ZERO_WIDE,
            queued_demand: ZERO_WIDE,
            negative_running: 0,
        };
        let mut queued = Vec::new();
        let mut running = Vec::new();
        let mut steps = Vec::new();
        for e in latest.into_values() {
            book.known.insert(
                e.id,
                Known {
                    priority: e.priority,
                    enqueued_at: e.enqueued_at,
                },
            );
            match e.admitted_at {
                None => {
                    let boost = aging_boost(e.enqueued_at, now);
                    let key = QueueKey {
                        effective: e.priority.saturating_add(boost),
                        enqueued_at: e.enqueued_at,
                        id: e.id,
                    };
                    let w = Waiting {
                        priority: e.priority,
                        resources: e.resources,
                    };
                    queued.push((key, w, weight(&e.id)));
                    steps.extend(next_step(e.enqueued_at, boost).map(|at| Reverse((at, e.id))));
                    book.queued_demand = add(book.queued_demand, wide(&e.resources));
                }
                Some(at) => {
                    let key = RunKey {
                        priority: e.priority,
                        admitted_at: at,
                        id: e.id,
                    };
                    let h = Holding {
                        resources: e.resources,
                        enqueued_at: e.enqueued_at,
                    };
                    running.push((key, h, weight(&e.id)));
                    book.admitted.insert(e.id, at);
                    book.allocated = add(book.allocated, wide(&e.resources));
                    book.negative_running += usize::from(negative(&e.resources));
                }
            }
        }
        queued.sort_unstable_by_key(|e| e.0);
        running.sort_unstable_by_key(|e| e.0);
        book.queue = Treap::from_sorted(queued);
        book.running = Treap::from_sorted(running);
        book.steps = BinaryHeap::from(steps);
        book
    }

    /// The book of a [`ClusterState`] as of `now`. A `Running` does not say when it was
    /// enqueued; its admission time stands in (it only matters if it is preempted).
    pub fn from_state(state: &ClusterState, now: DateTime<Utc>) -> Book {
        let running = state.running.iter().map(|r| BookEntry {
            id: r.id,
            priority: r.priority,
            resources: r.resources,
            enqueued_at: r.admitted_at,
            admitted_at: Some(r.admitted_at),
        });
        let queued = state.queued.iter().map(|q| BookEntry {
            id: q.id,
            priority: q.priority,
            resources: q.resources,
            enqueued_at: q.enqueued_at,
            admitted_at: None,
        });
        Book::new(state.capacity, state.policy, running.chain(queued), now)
    }

    /// Total allocatable resources.
    pub fn capacity(&self) -> Resources {
        self.capacity
    }

    /// Changes the capacity (it may drop below what is allocated). O(1).
    pub fn set_capacity(&mut self, capacity: Resources) {
        self.capacity = capacity;
    }

    /// Scheduling policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Changes the policy. O(1).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The instant the queue order is computed at: the latest `now` seen.
    pub fn as_of(&self) -> DateTime<Utc> {
        self.as_of
    }

    /// Usage totals. O(1).
    pub fn totals(&self) -> Totals {
        Totals {
            allocated: narrow(self.allocated),
            queued_demand: narrow(self.queued_demand),
            running: self.running.len(),
            queued: self.queue.len(),
        }
    }

    /// The deployment `id`, if the book holds it. O(log n).
    pub fn get(&self, id: &DeploymentId) -> Option<BookEntry> {
        let known = *self.known.get(id)?;
        let (resources, admitted_at) = match self.admitted.get(id) {
            Some(&at) => (
                self.running.get(&run_key(id, &known, at))?.resources,
                Some(at),
            ),
            None => (self.queue.get(&self.queue_key(id, &known))?.resources, None),
        };
        Some(BookEntry {
            id: *id,
            priority: known.priority,
            resources,
            enqueued_at: known.enqueued_at,
            admitted_at,
        })
    }

    /// Every deployment in the book: queued ones in scheduling order, then running ones in
    /// preemption order.
    pub fn entries(&self) -> impl Iterator<Item = BookEntry> + '_ {
        let queued = self.queue.iter().map(|(k, w)| BookEntry {
            id: k.id,
            priority: w.priority,
            resources: w.resources,
            enqueued_at: k.enqueued_at,
            admitted_at: None,
        });
        let running = self.running.iter().map(|(k, h)| BookEntry {
            id: k.id,
            priority: k.priority,
            resources: h.resources,
            enqueued_at: h.enqueued_at,
            admitted_at: Some(k.admitted_at),
        });
        queued.chain(running)
    }

    /// Adds a deployment (queued, or running when `admitted_at` is set), replacing any with
    /// the same id. O(log n).
    pub fn insert(&mut self, entry: BookEntry) {
        self.remove(&entry.id);
        self.known.insert(
            entry.id,
            Known {
                priority: entry.priority,
                enqueued_at: entry.enqueued_at,
            },
        );
        match entry.admitted_at {
            None => self.link_queued(&entry),
            Some(at) => self.link_running(&entry, at),
        }
    }

    /// Removes a deployment (cancelled, stopped, finished, expired). O(log n).
    pub fn remove(&mut self, id: &DeploymentId) -> Option<BookEntry> {
        let known = self.known.remove(id)?;
        let entry = match self.admitted.get(id).copied() {
            Some(at) => {
                let h = self.unlink_running(&run_key(id, &known, at))?;
                BookEntry {
                    id: *id,
                    priority: known.priority,
                    resources: h.resources,
                    enqueued_at: known.enqueued_at,
                    admitted_at: Some(at),
                }
            }
            None => {
                let key = self.queue_key(id, &known);
                let w = self.queue.remove(&key)?;
                self.forget_queued(&key, &w.resources);
                self.compact_steps();
                BookEntry {
                    id: *id,
                    priority: known.priority,
                    resources: w.resources,
                    enqueued_at: known.enqueued_at,
                    admitted_at: None,
                }
            }
        };
        Some(entry)
    }

    /// Changes a queued or running deployment's base priority; false if the book does not
    /// hold it. O(log n).
    pub fn set_priority(&mut self, id: &DeploymentId, priority: i32) -> bool {
        let Some(mut entry) = self.remove(id) else {
            return false;
        };
        entry.priority = priority;
        self.insert(entry);
        true
    }

    /// Moves the book's clock to `now` (never back: an earlier `now` is taken as the latest
    /// one seen) and re-keys the queued entries whose aging boost went up meanwhile.
    /// O(k log n) for k aging steps crossed.
    pub fn advance(&mut self, now: DateTime<Utc>) {
        let before = self.as_of;
        if now <= before {
            return;
        }
        while let Some(&Reverse((at, id))) = self.steps.peek() {
            if at > now {
                break;
            }
            self.steps.pop();
            // Copies of the same record (an entry taken out and put back before its step
            // came) are next in the heap; all but one were counted stale when made.
            while self.steps.peek() == Some(&Reverse((at, id))) {
                self.steps.pop();
                self.stale = self.stale.saturating_sub(1);
            }
            // Every queued entry not re-keyed yet in this loop is keyed as of `before`; a
            // record is live only if its entry is queued and was waiting for this step.
            let waiting_for_it = self.known.get(&id).copied().filter(|known| {
                !self.admitted.contains_key(&id)
                    && next_step(known.enqueued_at, aging_boost(known.enqueued_at, before))
                        == Some(at)
            });
            let Some(known) = waiting_for_it else {
                self.stale = self.stale.saturating_sub(1);
                continue;
            };
            let old = QueueKey {
                effective: known
                    .priority
                    .saturating_add(aging_boost(known.enqueued_at, before)),
                enqueued_at: known.enqueued_at,
                id,
            };
            let boost = aging_boost(known.enqueued_at, now);
            let new = QueueKey {
                effective: known.priority.saturating_add(boost),
                ..old
            };
            if let Some(w) = self.queue.remove(&old) {
                self.queue.insert_new(new, w, weight(&id));
            }
            if let Some(next) = next_step(known.enqueued_at, boost) {
                self.steps.push(Reverse((next, id)));
            }
        }
        self.as_of = now;
    }

    /// Decides what to admit and preempt at `now`, applies it, and returns the decisions in
    /// order: exactly what the engine's loop of up to [`MAX_PASSES`] calls of
    /// [`schedule`](super::scheduler::schedule) on the equivalent state decides, applying
    /// each pass's decisions before the next (admitted entries run from `now`, victims
    /// return to the queue with their original `enqueued_at`) until a pass decides nothing.
    ///
    /// A deployment that was running when the call began, was preempted, and runs again at
    /// its end was never really out: it keeps its original admission time (the engine writes
    /// nothing for it). The queue is ordered as of `max(now, as_of())`.
    pub fn schedule(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
        self.advance(now);
        let mut decisions = Vec::new();
        let mut originals = Originals::new();
        for _ in 0..MAX_PASSES {
            let before = decisions.len();
            self.pass(now, &mut decisions, &mut originals);
            // Without preemption a second pass never decides anything: the free capacity
            // only shrank and nobody returned to the queue, so whatever the first pass passed
            // over (or stopped at) still does not fit.
            if decisions.len() == before || !self.policy.preemption {
                break;
            }
        }
        for original in originals {
            let Some(&current) = self.admitted.get(&original.id) else {
                continue;
            };
            if current != original.admitted_at {
                let key = RunKey {
                    admitted_at: current,
                    ..original
                };
                if let Some(h) = self.running.remove(&key) {
                    self.running.insert_new(original, h, weight(&original.id));
                    self.admitted.insert(original.id, original.admitted_at);
                }
            }
        }
        self.compact_steps();
        decisions
    }

    /// 1-based position of a queued deployment in scheduling order as of [`Book::as_of`].
    /// O(log n).
    pub fn position(&self, id: &DeploymentId) -> Option<u32> {
        let known = self.known.get(id)?;
        if self.admitted.contains_key(id) {
            return None;
        }
        let rank = self.queue.rank(&self.queue_key(id, known));
        Some(u32::try_from(rank + 1).unwrap_or(u32::MAX))
    }

    /// Entries `offset..offset + limit` of what
    /// [`queue_view`](super::scheduler::queue_view) shows for this state as of
    /// [`Book::as_of`] (call [`Book::advance`] first to see it at a later instant).
    /// O(log n + limit).
    pub fn queue_page(&self, offset: usize, limit: usize) -> Vec<QueueEntry> {
        let strict = self.policy.queueing == Queueing::Strict;
        // Under strict queueing the first entry that could ever fit is the head that blocks
        // every later one that could.
        let head = if strict { self.head() } else { None };
        self.queue
            .iter_from(offset)
            .take(limit)
            .enumerate()
            .map(|(i, (key, w))| {
                let reason = if !can_ever_fit(&self.capacity, &w.resources) {
                    WaitReason::NeverFits
                } else if head.is_some_and(|h| h < *key) {
                    WaitReason::BlockedBehindHead
                } else {
                    WaitReason::WaitingForCapacity
                };
                QueueEntry {
                    id: key.id,
                    position: u32::try_from(offset + i + 1).unwrap_or(u32::MAX),
                    effective_priority: key.effective,
                    reason,
                }
            })
            .collect()
    }

    /// The equivalent [`ClusterState`] (queue in scheduling order, running in preemption
    /// order). O(n).
    pub fn state(&self) -> ClusterState {
        ClusterState {
            capacity: self.capacity,
            policy: self.policy,
            running: self
                .running
                .iter()
                .map(|(k, h)| Running {
                    id: k.id,
                    priority: k.priority,
                    resources: h.resources,
                    admitted_at: k.admitted_at,
                })
                .collect(),
            queued: self
                .queue
                .iter()
                .map(|(k, w)| Queued {
                    id: k.id,
                    priority: w.priority,
                    resources: w.resources,
                    enqueued_at: k.enqueued_at,
                })
                .collect(),
        }
    }

    /// The queue key of a queued deployment (keys are current as of `as_of`).
    fn queue_key(&self, id: &DeploymentId, known: &Known) -> QueueKey {
        QueueKey {
            effective: known
                .priority
                .saturating_add(aging_boost(known.enqueued_at, self.as_of)),
            enqueued_at: known.enqueued_at,
            id: *id,
        }
    }

    /// Puts a deployment (already in `known`) into the queue structures.
    fn link_queued(&mut self, e: &BookEntry) {
        let boost = aging_boost(e.enqueued_at, self.as_of);
        let key = QueueKey {
            effective: e.priority.saturating_add(boost),
            enqueued_at: e.enqueued_at,
            id: e.id,
        };
        let waiting = Waiting {
            priority: e.priority,
            resources: e.resources,
        };
        // Keys hold the id and an id is in one place at a time, so the key is new.
        self.queue.insert_new(key, waiting, weight(&e.id));
        if let Some(at) = next_step(e.enqueued_at, boost) {
            self.steps.push(Reverse((at, e.id)));
        }
        self.queued_demand = add(self.queued_demand, wide(&e.resources));
    }

    /// The bookkeeping of taking a queued entry out (the tree removal is the caller's).
    fn forget_queued(&mut self, key: &QueueKey, resources: &Resources) {
        // Its aging record, if it has one (keys are current as of `as_of`, so this is the step
        // it waits for), goes stale: see `compact_steps`.
        if next_step(key.enqueued_at, aging_boost(key.enqueued_at, self.as_of)).is_some() {
            self.stale += 1;
        }
        self.queued_demand = sub(self.queued_demand, wide(resources));
    }

    /// Rebuilds the aging heap without stale records once they outnumber the live ones
    /// (O(n) after more than n removals: O(1) amortised each). Only between operations:
    /// within a pass, the maps do not yet say which entries were admitted.
    fn compact_steps(&mut self) {
        if self.stale <= self.queue.len() + 1024 {
            return;
        }
        let live: Vec<_> = self
            .queue
            .iter()
            .filter_map(|(k, _)| {
                let boost = aging_boost(k.enqueued_at, self.as_of);
                next_step(k.enqueued_at, boost).map(|at| Reverse((at, k.id)))
            })
            .collect();
        self.steps = BinaryHeap::from(live);
        self.stale = 0;
    }

    /// Puts a deployment (already in `known`) into the running structures.
    fn link_running(&mut self, e: &BookEntry, admitted_at: DateTime<Utc>) {
        let holding = Holding {
            resources: e.resources,
            enqueued_at: e.enqueued_at,
        };
        let key = RunKey {
            priority: e.priority,
            admitted_at,
            id: e.id,
        };
        self.running.insert_new(key, holding, weight(&e.id));
        self.admitted.insert(e.id, admitted_at);
        self.allocated = add(self.allocated, wide(&e.resources));
        self.negative_running += usize::from(negative(&e.resources));
    }

    /// Takes a running deployment out of the running structures (not out of `known`).
    fn unlink_running(&mut self, key: &RunKey) -> Option<Holding> {
        let h = self.running.remove(key)?;
        self.admitted.remove(&key.id);
        self.allocated = sub(self.allocated, wide(&h.resources));
        self.negative_running -= usize::from(negative(&h.resources));
        Some(h)
    }

    /// The first queued entry that could ever fit the cluster.
    fn head(&self) -> Option<QueueKey> {
        let cap = wide(&self.capacity);
        self.queue
            .first_after(
                None,
                |s| fits(widen(s.request), cap),
                |_, w| can_ever_fit(&self.capacity, &w.resources),
            )
            .map(|(k, _)| *k)
    }

    /// Resources held by running deployments of base priority below `priority`.
    fn evictable_below(&self, priority: i32) -> Wide {
        self.running.fold_while(|k| k.priority < priority).1 .0
    }

    /// One pass of [`schedule`](super::scheduler::schedule) over the book: the same walk,
    /// except that it skips the entries it would pass over without acting (see
    /// [`Book::next_candidate`]). Entries admitted in the pass join the running set (and
    /// victims the queue) only at its end, so that neither is reconsidered within it; so the
    /// queue tree does not change during the pass, which lets one walk run through it, and
    /// admitted entries leave it at the end in one bulk removal.
    fn pass(
        &mut self,
        now: DateTime<Utc>,
        decisions: &mut Vec<Decision>,
        originals: &mut Originals,
    ) {
        let strict = self.policy.queueing == Queueing::Strict;
        let mut free = sub(wide(&self.capacity), self.allocated);
        let mut walk = self.queue.walk();
        let mut admitted: Vec<(QueueKey, Waiting)> = Vec::new();
        let mut requeued: Vec<BookEntry> = Vec::new();
        while let Some((key, waiting)) = self.next_candidate(&mut walk, free, strict) {
            let need = wide(&waiting.resources);
            let victims = if fits(need, free) {
                Some(Vec::new())
            } else if self.policy.preemption {
                self.select_victims(need, free, waiting.priority)
            } else {
                None
            };
            let Some(victims) = victims else {
                // Under best-effort the walk only stops at entries that can be admitted.
                if strict {
                    break;
                }
                continue;
            };
            for victim in victims {
                let Some(h) = self.unlink_running(&victim) else {
                    continue;
                };
                free = add(free, wide(&h.resources));
                decisions.push(Decision::Preempt {
                    victim: victim.id,
                    by: key.id,
                });
                if victim.admitted_at != now {
                    originals.push(victim);
                }
                requeued.push(BookEntry {
                    id: victim.id,
                    priority: victim.priority,
                    resources: h.resources,
                    enqueued_at: h.enqueued_at,
                    admitted_at: None,
                });
            }
            free = sub(free, need);
            self.forget_queued(&key, &waiting.resources);
            admitted.push((key, waiting));
            decisions.push(Decision::Admit { id: key.id });
        }
        // In walk order, so ascending.
        let keys: Vec<QueueKey> = admitted.iter().map(|(k, _)| *k).collect();
        self.queue.remove_sorted(&keys);
        for (key, waiting) in admitted {
            let entry = BookEntry {
                id: key.id,
                priority: waiting.priority,
                resources: waiting.resources,
                enqueued_at: key.enqueued_at,
                admitted_at: Some(now),
            };
            self.link_running(&entry, now);
        }
        for entry in requeued {
            self.link_queued(&entry);
        }
    }

    /// Continues the pass's walk to the next entry it acts on: under strict queueing the next
    /// that could ever fit (admitted, or the head that stops the walk); under best-effort the
    /// next that fits `free`, or could with preemption.
    fn next_candidate(
        &self,
        walk: &mut Walk<Smallest>,
        free: Wide,
        strict: bool,
    ) -> Option<(QueueKey, Waiting)> {
        let cap = wide(&self.capacity);
        if strict {
            return self
                .queue
                .walk_next(
                    walk,
                    |s| fits(widen(s.request), cap),
                    |_, w| can_ever_fit(&self.capacity, &w.resources),
                )
                .map(|(k, w)| (*k, *w));
        }
        let preemption = self.policy.preemption;
        let monotone = self.negative_running == 0;
        let pool = self.running.summary().0;
        // Below the pool's lowest priority nothing is evictable, above its highest everything
        // is: only priorities in between need a descent (and without preemption, none).
        let (lowest, highest) = if preemption && !self.running.is_empty() {
            let first = self.running.nth(0).map_or(i32::MAX, |(k, _)| k.priority);
            let last = self.running.nth(self.running.len() - 1);
            (first, last.map_or(i32::MIN, |(k, _)| k.priority))
        } else {
            (i32::MAX, i32::MIN)
        };
        let evictable = |priority: i32| {
            if priority <= lowest {
                ZERO_WIDE
            } else if priority > highest {
                pool
            } else {
                self.evictable_below(priority)
            }
        };
        self.queue
            .walk_next(
                walk,
                |s| {
                    let least = widen(s.request);
                    if !fits(least, cap) {
                        return false;
                    }
                    if fits(least, free) {
                        return true;
                    }
                    if !preemption {
                        return false;
                    }
                    if !monotone {
                        return true;
                    }
                    // Nothing in the subtree may evict more than everything below its highest
                    // base priority, and that is at most the whole pool.
                    fits(least, add(free, pool))
                        && fits(least, add(free, evictable(s.top_priority)))
                },
                |_, w| {
                    if !can_ever_fit(&self.capacity, &w.resources) {
                        return false;
                    }
                    let need = wide(&w.resources);
                    fits(need, free) || (preemption && fits(need, add(free, evictable(w.priority))))
                },
            )
            .map(|(k, w)| (*k, *w))
    }

    /// The victims [`schedule`](super::scheduler::schedule) would evict to fit `need` in
    /// `free` for an entry of base priority `priority`, in its order: all-or-nothing, then the
    /// greedy prefix of the preemption order, then Kueue-style minimisation in reverse.
    fn select_victims(&self, need: Wide, free: Wide, priority: i32) -> Option<Vec<RunKey>> {
        let (eligible, evictable) = self.running.fold_while(|k| k.priority < priority);
        if !fits(need, add(free, evictable.0)) {
            return None;
        }
        if self.negative_running > 0 {
            return Some(self.select_victims_by_walking(need, free, eligible));
        }
        // With no negative amounts prefix sums only grow, so both steps are descents.
        // Greedy: the shortest prefix after which the candidate fits (within the eligible
        // ones, since all of them are enough).
        let taken = self.running.first_prefix(|s| fits(need, add(free, s.0)))?;
        // Minimisation, from the last taken back to the first: a victim is spared when it
        // fits in the slack (room beyond the need), which it then uses up. Since amounts are
        // non-negative, a run of victims ending at `end` is spared in full exactly when its
        // total fits the slack, so each kept victim is one descent away from the previous.
        let mut held = self.running.fold_first(taken).0;
        let mut slack = sub(add(free, held), need);
        let mut kept = Vec::new();
        loop {
            let target = sub(held, slack);
            let start = self.running.first_prefix(|s| fits(target, s.0))?;
            if start == 0 {
                break;
            }
            let spared = sub(held, self.running.fold_first(start).0);
            slack = sub(slack, spared);
            let end = start - 1;
            kept.push(end);
            held = self.running.fold_first(end).0;
        }
        kept.reverse();
        Some(
            kept.into_iter()
                .filter_map(|rank| self.running.nth(rank).map(|(k, _)| *k))
                .collect(),
        )
    }

    /// The reference greedy walk and minimisation, for running sets with negative amounts.
    fn select_victims_by_walking(&self, need: Wide, free: Wide, eligible: usize) -> Vec<RunKey> {
        let mut taken = Vec::new();
        let mut room = free;
        for (k, h) in self.running.iter().take(eligible) {
            if fits(need, room) {
                break;
            }
            let r = wide(&h.resources);
            taken.push((*k, r));
            room = add(room, r);
        }
        let mut keep = vec![true; taken.len()];
        for (j, (_, r)) in taken.iter().enumerate().rev() {
            let without = sub(room, *r);
            if fits(need, without) {
                room = without;
                keep[j] = false;
            }
        }
        taken
            .into_iter()
            .zip(keep)
            .filter_map(|((k, _), keep)| keep.then_some(k))
            .collect()
    }

    /// Checks every invariant tying the structures together.
    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.queue.check();
        self.running.check();
        let (mut demand, mut records) = (ZERO_WIDE, 0);
        for (k, w) in self.queue.iter() {
            let known = self.known.get(&k.id).expect("queued entries are known");
            assert_eq!(
                (known.priority, known.enqueued_at),
                (w.priority, k.enqueued_at)
            );
            assert_eq!(
                *k,
                self.queue_key(&k.id, known),
                "keys are aged as of as_of"
            );
            assert!(!self.admitted.contains_key(&k.id));
            let boost = aging_boost(k.enqueued_at, self.as_of);
            if let Some(at) = next_step(k.enqueued_at, boost) {
                assert!(self.steps.iter().any(|r| r.0 == (at, k.id)), "aging record");
                records += 1;
            }
            demand = add(demand, wide(&w.resources));
        }
        let (mut allocated, mut negatives) = (ZERO_WIDE, 0);
        for (k, h) in self.running.iter() {
            let known = self.known.get(&k.id).expect("running entries are known");
            assert_eq!(
                (known.priority, known.enqueued_at),
                (k.priority, h.enqueued_at)
            );
            assert_eq!(self.admitted.get(&k.id), Some(&k.admitted_at));
            allocated = add(allocated, wide(&h.resources));
            negatives += usize::from(negative(&h.resources));
        }
        assert_eq!(self.queue.len() + self.running.len(), self.known.len());
        assert_eq!(self.running.len(), self.admitted.len());
        assert_eq!(
            self.steps.len(),
            records + self.stale,
            "live and stale records"
        );
        assert_eq!(self.allocated, allocated);
        assert_eq!(self.running.summary().0, allocated);
        assert_eq!(self.queued_demand, demand);
        assert_eq!(self.negative_running, negatives);
    }
}

fn run_key(id: &DeploymentId, known: &Known, admitted_at: DateTime<Utc>) -> RunKey {
    RunKey {
        priority: known.priority,
        admitted_at,
        id: *id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scheduler::{queue_view, schedule};
    use proptest::prelude::*;
    use std::collections::HashSet;
    use uuid::Uuid;

    const NOW: i64 = 100_000;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid timestamp")
    }

    /// The reference: a `ClusterState` plus what it cannot hold (when running deployments
    /// were enqueued), scheduled the way the engine did before the book — `schedule` in a
    /// loop of at most MAX_PASSES passes, each pass's decisions applied before the next,
    /// then a deployment preempted and re-admitted within the call restored to its original
    /// admission time.
    #[derive(Debug, Clone)]
    struct Model {
        state: ClusterState,
        enqueued: HashMap<DeploymentId, DateTime<Utc>>,
    }

    impl Model {
        fn new(state: ClusterState, entries: &[BookEntry]) -> Model {
            Model {
                state,
                enqueued: entries.iter().map(|e| (e.id, e.enqueued_at)).collect(),
            }
        }

        fn settle(&mut self, now: DateTime<Utc>) -> Vec<Decision> {
            let at_start: HashMap<DeploymentId, DateTime<Utc>> = self
                .state
                .running
                .iter()
                .map(|r| (r.id, r.admitted_at))
                .collect();
            let mut all = Vec::new();
            let mut preempted = HashSet::new();
            for _ in 0..MAX_PASSES {
                let decisions = schedule(&self.state, now);
                if decisions.is_empty() {
                    break;
                }
                let mut victims = Vec::new();
                for d in &decisions {
                    match *d {
                        Decision::Admit { id } => {
                            let i = self.state.queued.iter().position(|q| q.id == id);
                            let q = self.state.queued.remove(i.expect("admitted is queued"));
                            self.state.running.push(Running {
                                id,
                                priority: q.priority,
                                resources: q.resources,
                                admitted_at: now,
                            });
                        }
                        Decision::Preempt { victim, .. } => {
                            let i = self.state.running.iter().position(|r| r.id == victim);
                            victims.push(self.state.running.remove(i.expect("victim runs")));
                            preempted.insert(victim);
                        }
                    }
                }
                for v in victims {
                    self.state.queued.push(Queued {
                        id: v.id,
                        priority: v.priority,
                        resources: v.resources,
                        enqueued_at: self.enqueued[&v.id],
                    });
                }
                all.extend(decisions);
            }
            for r in &mut self.state.running {
                if preempted.contains(&r.id) {
                    if let Some(&original) = at_start.get(&r.id) {
                        r.admitted_at = original;
                    }
                }
            }
            all
        }

        fn ids(&self) -> Vec<DeploymentId> {
            let mut ids: Vec<_> = self.state.running.iter().map(|r| r.id).collect();
            ids.extend(self.state.queued.iter().map(|q| q.id));
            ids.sort();
            ids
        }

        fn entries(&self) -> Vec<BookEntry> {
            let mut v: Vec<BookEntry> = self
                .state
                .running
                .iter()
                .map(|r| BookEntry {
                    id: r.id,
                    priority: r.priority,
                    resources: r.resources,
                    enqueued_at: self.enqueued[&r.id],
                    admitted_at: Some(r.admitted_at),
                })
                .chain(self.state.queued.iter().map(|q| BookEntry {
                    id: q.id,
                    priority: q.priority,
                    resources: q.resources,
                    enqueued_at: q.enqueued_at,
                    admitted_at: None,
                }))
                .collect();
            v.sort_by_key(|e| e.id);
            v
        }

        fn totals(&self) -> Totals {
            Totals {
                allocated: Resources::sum(self.state.running.iter().map(|r| &r.resources)),
                queued_demand: Resources::sum(self.state.queued.iter().map(|q| &q.resources)),
                running: self.state.running.len(),
                queued: self.state.queued.len(),
            }
        }
    }

    /// Asserts the book and the model hold the same deployments, totals, order and view.
    fn same(book: &Book, model: &Model) {
        book.check();
        let mut entries: Vec<BookEntry> = book.entries().collect();
        entries.sort_by_key(|e| e.id);
        assert_eq!(entries, model.entries());
        assert_eq!(book.totals(), model.totals());
        assert_eq!(book.capacity(), model.state.capacity);
        assert_eq!(book.policy(), model.state.policy);
        let view = queue_view(&model.state, book.as_of());
        assert_eq!(book.queue_page(0, usize::MAX), view);
        for e in &view {
            assert_eq!(book.position(&e.id), Some(e.position));
        }
        for r in &model.state.running {
            assert_eq!(book.position(&r.id), None);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue {
            priority: i32,
            resources: Resources,
            /// Seconds before the current time (negative: a clock ahead of ours).
            ago: i64,
            salt: u64,
        },
        Remove(usize),
        SetPriority(usize, i32),
        SetCapacity(Resources),
        SetPolicy(bool, bool),
        /// Advance the clock by this many seconds and schedule.
        Schedule(i64),
        Page(usize, usize),
    }

    fn arb_priority() -> BoxedStrategy<i32> {
        // Narrow ranges make ties and aging matter; wide ones exercise plain ordering and the
        // cap (100 points) on aging.
        prop_oneof![0..=3i32, 0..=150i32, Just(i32::MAX - 1)].boxed()
    }

    fn arb_resources() -> BoxedStrategy<Resources> {
        let dim = |max: i64| prop_oneof![6 => 0..=max / 3, 3 => 0..=max + max / 5, 1 => -2..=0i64];
        (
            dim(1000),
            dim(4000),
            prop_oneof![3 => Just(0i64), 1 => 0..=3i64],
        )
            .prop_map(|(c, m, g)| Resources::new(c, m, g))
            .boxed()
    }

    fn arb_capacity() -> BoxedStrategy<Resources> {
        (200i64..=1200, 500i64..=5000, 0i64..=3)
            .prop_map(|(c, m, g)| Resources::new(c, m, g))
            .boxed()
    }

    fn arb_time_step() -> BoxedStrategy<i64> {
        prop_oneof![
            2 => Just(0i64),
            2 => 1..=59i64,
            2 => Just(60i64),
            2 => 55..=700i64,
            1 => 5_900..=6_100i64,
            1 => 6_000..=20_000i64,
        ]
        .boxed()
    }

    fn arb_op() -> BoxedStrategy<Op> {
        prop_oneof![
            5 => (arb_priority(), arb_resources(), -300i64..=8_000, any::<u64>()).prop_map(
                |(priority, resources, ago, salt)| Op::Enqueue { priority, resources, ago, salt }
            ),
            2 => any::<usize>().prop_map(Op::Remove),
            2 => (any::<usize>(), arb_priority()).prop_map(|(i, p)| Op::SetPriority(i, p)),
            1 => arb_capacity().prop_map(Op::SetCapacity),
            1 => (any::<bool>(), any::<bool>()).prop_map(|(s, p)| Op::SetPolicy(s, p)),
            5 => arb_time_step().prop_map(Op::Schedule),
            1 => (0usize..40, 0usize..15).prop_map(|(o, l)| Op::Page(o, l)),
        ]
        .boxed()
    }

    fn policy(strict: bool, preemption: bool) -> Policy {
        Policy {
            queueing: if strict {
                Queueing::Strict
            } else {
                Queueing::BestEffort
            },
            preemption,
        }
    }

    fn mk_id(salt: u64, n: usize) -> DeploymentId {
        // Random high bits so id order differs from creation order, a counter in the low bits
        // so ids are unique.
        Uuid::from_u128((u128::from(salt) << 64) | n as u128)
    }

    type Item = (i32, Resources, i64, u64);

    fn arb_item() -> impl Strategy<Value = Item> {
        (arb_priority(), arb_resources(), 0i64..=8_000, any::<u64>())
    }

    /// Builds the initial book and model: running items that fit are admitted some time
    /// after they were enqueued.
    fn initial(
        capacity: Resources,
        policy: Policy,
        running: Vec<Item>,
        queued: Vec<Item>,
    ) -> (Book, Model, usize) {
        let mut entries = Vec::new();
        let mut used = Resources::ZERO;
        for (i, (priority, resources, ago, salt)) in running.into_iter().enumerate() {
            let total = used.saturating_add(&resources);
            if total.fits_within(&capacity) {
                used = total;
                entries.push(BookEntry {
                    id: mk_id(salt, i),
                    priority,
                    resources,
                    enqueued_at: t(NOW - ago - 100),
                    admitted_at: Some(t(NOW - ago)),
                });
            }
        }
        for (i, (priority, resources, ago, salt)) in queued.into_iter().enumerate() {
            entries.push(BookEntry {
                id: mk_id(salt, 1000 + i),
                priority,
                resources,
                enqueued_at: t(NOW - ago),
                admitted_at: None,
            });
        }
        let mut state = ClusterState {
            capacity,
            policy,
            running: vec![],
            queued: vec![],
        };
        for e in &entries {
            match e.admitted_at {
                Some(at) => state.running.push(Running {
                    id: e.id,
                    priority: e.priority,
                    resources: e.resources,
                    admitted_at: at,
                }),
                None => state.queued.push(Queued {
                    id: e.id,
                    priority: e.priority,
                    resources: e.resources,
                    enqueued_at: e.enqueued_at,
                }),
            }
        }
        let book = Book::new(capacity, policy, entries.iter().copied(), t(NOW));
        (book, Model::new(state, &entries), 2000)
    }

    /// Applies one operation to both, checking decisions on the way.
    fn step(book: &mut Book, model: &mut Model, now: &mut i64, next_id: &mut usize, op: &Op) {
        match *op {
            Op::Enqueue {
                priority,
                resources,
                ago,
                salt,
            } => {
                let id = mk_id(salt, *next_id);
                *next_id += 1;
                let enqueued_at = t(*now - ago);
                book.insert(BookEntry {
                    id,
                    priority,
                    resources,
                    enqueued_at,
                    admitted_at: None,
                });
                model.state.queued.push(Queued {
                    id,
                    priority,
                    resources,
                    enqueued_at,
                });
                model.enqueued.insert(id, enqueued_at);
            }
            Op::Remove(i) => {
                let ids = model.ids();
                if ids.is_empty() {
                    return;
                }
                let id = ids[i % ids.len()];
                assert!(book.remove(&id).is_some());
                model.state.running.retain(|r| r.id != id);
                model.state.queued.retain(|q| q.id != id);
            }
            Op::SetPriority(i, p) => {
                let ids = model.ids();
                if ids.is_empty() {
                    return;
                }
                let id = ids[i % ids.len()];
                assert!(book.set_priority(&id, p));
                for r in model.state.running.iter_mut().filter(|r| r.id == id) {
                    r.priority = p;
                }
                for q in model.state.queued.iter_mut().filter(|q| q.id == id) {
                    q.priority = p;
                }
            }
            Op::SetCapacity(c) => {
                book.set_capacity(c);
                model.state.capacity = c;
            }
            Op::SetPolicy(strict, preemption) => {
                book.set_policy(policy(strict, preemption));
                model.state.policy = policy(strict, preemption);
            }
            Op::Schedule(dt) => {
                *now += dt;
                let expected = model.settle(t(*now));
                let got = book.schedule(t(*now));
                assert_eq!(got, expected, "decisions at {now}");
            }
            Op::Page(offset, limit) => {
                let view = queue_view(&model.state, book.as_of());
                let page: Vec<QueueEntry> = view.into_iter().skip(offset).take(limit).collect();
                assert_eq!(book.queue_page(offset, limit), page);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Random sequences of every operation, the book against the reference loop.
        #[test]
        fn book_matches_the_reference_loop(
            capacity in arb_capacity(),
            strict in any::<bool>(),
            preemption in any::<bool>(),
            running in proptest::collection::vec(arb_item(), 0..12),
            queued in proptest::collection::vec(arb_item(), 0..40),
            ops in proptest::collection::vec(arb_op(), 1..60),
        ) {
            let (mut book, mut model, mut next_id) =
                initial(capacity, policy(strict, preemption), running, queued);
            same(&book, &model);
            let mut now = NOW;
            for op in &ops {
                step(&mut book, &mut model, &mut now, &mut next_id, op);
                same(&book, &model);
            }
        }
    }

    use crate::domain::scheduler::tests::Lcg;

    /// Deeper trees than the property test reaches: thousands of entries under a long run of
    /// operations, compared after every schedule.
    #[test]
    fn book_matches_the_reference_loop_at_scale() {
        for seed in 0..6u64 {
            let mut rng = Lcg(seed);
            let strict = seed % 3 == 2;
            let preemption = seed % 2 == 1;
            let capacity = Resources::new(40_000, 160_000, 16);
            let item = |rng: &mut Lcg| -> Item {
                let priority = i32::try_from(rng.next(300)).expect("small");
                let r = Resources::new(rng.next(2_000), rng.next(8_000), rng.next(5) / 4);
                (priority, r, rng.next(9_000), rng.0)
            };
            let running: Vec<Item> = (0..300).map(|_| item(&mut rng)).collect();
            let queued: Vec<Item> = (0..3_000).map(|_| item(&mut rng)).collect();
            let (mut book, mut model, mut next_id) =
                initial(capacity, policy(strict, preemption), running, queued);
            same(&book, &model);
            let mut now = NOW;
            for round in 0..150 {
                let op = match rng.next(10) {
                    0..=3 => {
                        let (priority, resources, ago, salt) = item(&mut rng);
                        Op::Enqueue {
                            priority,
                            resources,
                            ago: ago % 600,
                            salt,
                        }
                    }
                    4..=5 => Op::Remove(usize::try_from(rng.next(1 << 30)).expect("small")),
                    6 => Op::SetPriority(
                        usize::try_from(rng.next(1 << 30)).expect("small"),
                        i32::try_from(rng.next(300)).expect("small"),
                    ),
                    7 if round % 20 == 7 => Op::SetCapacity(Resources::new(
                        20_000 + rng.next(40_000),
                        100_000 + rng.next(100_000),
                        rng.next(20),
                    )),
                    _ => Op::Schedule(
                        [0, 30, 61, 200, 6_100][usize::try_from(rng.next(5)).expect("small")],
                    ),
                };
                step(&mut book, &mut model, &mut now, &mut next_id, &op);
                if matches!(op, Op::Schedule(_) | Op::SetCapacity(_)) || round % 25 == 0 {
                    same(&book, &model);
                }
            }
            same(&book, &model);
        }
    }

    #[test]
    fn an_earlier_now_is_taken_as_the_latest() {
        let q = |n: u128, p: i32, at: i64| BookEntry {
            id: Uuid::from_u128(n),
            priority: p,
            resources: Resources::new(10, 0, 0),
            enqueued_at: t(at),
            admitted_at: None,
        };
        let mut book = Book::new(
            Resources::new(10, 0, 0),
            policy(false, false),
            [q(1, 10, 0), q(2, 14, 300)],
            t(600),
        );
        // At 600 the first has aged 10 points, the second 5: 20 vs 19.
        assert_eq!(book.position(&Uuid::from_u128(1)), Some(1));
        book.advance(t(0));
        assert_eq!(book.as_of(), t(600));
        assert_eq!(
            book.schedule(t(1)),
            vec![Decision::Admit {
                id: Uuid::from_u128(1)
            }]
        );
        // Admission time is the caller's `now`, as the engine writes it.
        assert_eq!(
            book.get(&Uuid::from_u128(1)).and_then(|e| e.admitted_at),
            Some(t(1))
        );
    }

    #[test]
    fn a_preempted_and_readmitted_deployment_keeps_its_admission_time() {
        // Pass 1: 3 (base 1, aged to 101) is admitted first; 1 (base 50) then evicts 9 (base
        // 5), the only running one of lower base priority. Pass 2: 9, queued again, evicts 3
        // (admitted in pass 1, so a victim only now) and runs again.
        let e = |n: u128, p: i32, enqueued: i64, admitted: Option<i64>| BookEntry {
            id: Uuid::from_u128(n),
            priority: p,
            resources: Resources::new(50, 0, 0),
            enqueued_at: t(enqueued),
            admitted_at: admitted.map(t),
        };
        let entries = [
            e(9, 5, 0, Some(10)),
            e(3, 1, 0, None),
            e(1, 50, 10_000, None),
        ];
        let capacity = Resources::new(100, 0, 0);
        let mut book = Book::new(capacity, policy(false, true), entries, t(10_000));
        let mut model = Model::new(book.state(), &entries);
        let decisions = book.schedule(t(10_000));
        let id = Uuid::from_u128;
        assert_eq!(
            decisions,
            vec![
                Decision::Admit { id: id(3) },
                Decision::Preempt {
                    victim: id(9),
                    by: id(1)
                },
                Decision::Admit { id: id(1) },
                Decision::Preempt {
                    victim: id(3),
                    by: id(9)
                },
                Decision::Admit { id: id(9) },
            ]
        );
        assert_eq!(decisions, model.settle(t(10_000)));
        same(&book, &model);
        // 9 was never really out; 3 is queued as it was.
        assert_eq!(book.get(&id(9)).and_then(|e| e.admitted_at), Some(t(10)));
        assert_eq!(book.get(&id(3)), Some(entries[1]));
    }
}
