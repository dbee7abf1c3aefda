//! The scheduler's state kept between calls: a [`Book`] holds one cluster's capacity, policy,
//! running set and queue in ordered, augmented structures, so that scheduling costs about
//! O(log n) per decision instead of a sort of the whole queue per call.
//!
//! It is as pure as [`schedule`](super::schedule): no I/O, no clock (time is passed
//! in), no randomness, and it decides exactly what the engine's loop over `schedule` decides
//! on the equivalent [`ClusterState`] (the property tests at the end check that, operation by
//! operation, together with the totals, positions and queue pages).
//!
//! # Structures
//!
//! * The queue: a [`Treap`] keyed by scheduling order ([`QueueKey`]) with subtree sizes (for ranks), and per subtree
//!   the component-wise minimum request (invalid requests count as infinite) and the maximum
//!   base priority.
//! * The running set: a [`Treap`] keyed by preemption order ([`RunKey`]) with subtree sizes and resource sums.
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

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::model::{
    aging_boost, can_ever_fit, ClusterState, DeploymentId, Policy, QueueEntry, Queued, Queueing,
    Running, WaitReason,
};
use super::order::{QueueKey, RunKey};
use super::wide::{add, fits, sub, wide, Wide, ZERO_WIDE};
use crate::collections::treap::Treap;
use crate::domain::resources::Resources;

mod held;
mod parts;
mod pass;

use parts::{narrow, negative, next_step, weight, widen, Fixed, Holding, Known, Waiting};

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
    /// The queued deployments held for their dependencies (`held.rs`), keyed by
    /// [`QueueKey::held`]: apart from `queue`, `known` and the aging heap.
    held: Treap<QueueKey, Waiting>,
    held_keys: HashMap<DeploymentId, QueueKey, Fixed>,
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
            held: Treap::new(),
            held_keys: HashMap::default(),
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
        let mut book = Book::new(state.capacity, state.policy, running.chain(queued), now);
        for q in &state.held {
            book.hold(BookEntry {
                id: q.id,
                priority: q.priority,
                resources: q.resources,
                enqueued_at: q.enqueued_at,
                admitted_at: None,
            });
        }
        book
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
            queued: self.queue.len() + self.held.len(),
        }
    }

    /// The deployment `id`, if the book holds it. O(log n).
    pub fn get(&self, id: &DeploymentId) -> Option<BookEntry> {
        if let Some(held) = self.held_entry(id) {
            return Some(held);
        }
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

    /// Every deployment in the book: queued ones in scheduling order, then held ones in
    /// held order, then running ones in preemption order.
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
        let held = self.held.iter().map(|(k, w)| held::entry(k, w));
        queued.chain(held).chain(running)
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
        if let Some(held) = self.unhold(id) {
            return Some(held);
        }
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
        let held = self.is_held(id);
        let Some(mut entry) = self.remove(id) else {
            return false;
        };
        entry.priority = priority;
        if held {
            self.hold(entry);
        } else {
            self.insert(entry);
        }
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

    /// 1-based position of a queued deployment in scheduling order as of [`Book::as_of`].
    /// O(log n).
    pub fn position(&self, id: &DeploymentId) -> Option<u32> {
        if let Some(held) = self.held_position(id) {
            return Some(held);
        }
        let known = self.known.get(id)?;
        if self.admitted.contains_key(id) {
            return None;
        }
        let rank = self.queue.rank(&self.queue_key(id, known));
        Some(u32::try_from(rank + 1).unwrap_or(u32::MAX))
    }

    /// Entries `offset..offset + limit` of what
    /// [`queue_view`](super::queue_view) shows for this state as of
    /// [`Book::as_of`] (call [`Book::advance`] first to see it at a later instant).
    /// O(log n + limit).
    pub fn queue_page(&self, offset: usize, limit: usize) -> Vec<QueueEntry> {
        let strict = self.policy.queueing == Queueing::Strict;
        // Under strict queueing the first entry that could ever fit is the head that blocks
        // every later one that could.
        let head = if strict { self.head() } else { None };
        let queued = self.queue.len();
        let held = self
            .held
            .iter_from(offset.saturating_sub(queued))
            .map(|(k, w)| (k, w, true));
        self.queue
            .iter_from(offset)
            .map(|(k, w)| (k, w, false))
            .chain(held)
            .take(limit)
            .enumerate()
            .map(|(i, (key, w, held))| {
                let reason = if held {
                    WaitReason::WaitingForDependencies
                } else if !can_ever_fit(&self.capacity, &w.resources) {
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
            held: self.held_queued().collect(),
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
}

fn run_key(id: &DeploymentId, known: &Known, admitted_at: DateTime<Utc>) -> RunKey {
    RunKey {
        priority: known.priority,
        admitted_at,
        id: *id,
    }
}

#[cfg(test)]
mod tests;
