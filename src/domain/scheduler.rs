//! Pure admission logic: given a cluster's capacity, policy, running set and queue, decide which
//! queued deployments to admit now and which running ones to preempt for them.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers: the same [`ClusterState`]
//! and `now` always yield the same decisions, which keeps the scheduler trivially testable and
//! lets the caller apply decisions inside one transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::resources::Resources;

pub use super::book::{Book, BookEntry, Totals};

/// Identifier of a deployment.
pub type DeploymentId = uuid::Uuid;

/// Seconds a queued deployment must wait to gain one point of effective priority.
///
/// One minute is long enough that aging never reorders entries that arrive in a burst, and short
/// enough that a starved low-priority entry climbs noticeably within an hour.
pub const AGING_STEP_SECONDS: i64 = 60;

/// Upper bound on the priority boost aging can give (reached after 100 minutes of waiting).
///
/// The cap keeps aging a tie-breaker between nearby priorities: a deployment that is more than
/// 100 priority points above another is always ordered first, however long the other waited.
pub const AGING_MAX_BOOST: i32 = 100;

/// Passes of [`schedule`] that settle a cluster: a pass may preempt, and victims requeued by
/// one pass are considered by the next; preemption chains strictly lower the priority, so a
/// few passes always settle. [`Book::schedule`] runs up to this many passes, stopping at the
/// first that decides nothing.
pub const MAX_PASSES: usize = 8;

/// How the queue behaves when the entry at its head does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Queueing {
    /// Later entries that fit may be admitted ahead of an earlier one that does not.
    BestEffort,
    /// Strict order: nothing may pass the first waiting entry (except entries that can never
    /// fit the cluster at all, which are skipped so that they cannot wedge the queue).
    Strict,
}

/// Per-cluster scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Queue ordering discipline.
    pub queueing: Queueing,
    /// Whether a queued deployment may evict running ones of strictly lower base priority.
    pub preemption: bool,
}

/// A deployment currently holding resources on the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Deployment id.
    pub id: DeploymentId,
    /// Base priority (higher is more important).
    pub priority: i32,
    /// Resources it holds.
    pub resources: Resources,
    /// When it was admitted; among equal priorities the newest is preempted first.
    pub admitted_at: DateTime<Utc>,
}

/// A deployment waiting for admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Deployment id.
    pub id: DeploymentId,
    /// Base priority (higher is more important); aging is added on top, see
    /// [`effective_priority`].
    pub priority: i32,
    /// Resources it requests.
    pub resources: Resources,
    /// When it entered the queue; drives FIFO order and aging.
    pub enqueued_at: DateTime<Utc>,
}

/// Everything the scheduler needs to know about one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Total allocatable resources.
    pub capacity: Resources,
    /// Scheduling policy.
    pub policy: Policy,
    /// Deployments holding resources.
    pub running: Vec<Running>,
    /// Deployments waiting, in any order.
    pub queued: Vec<Queued>,
}

/// One action for the caller to apply, in the order returned by [`schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// Move a queued deployment to running.
    Admit {
        /// The deployment to admit.
        id: DeploymentId,
    },
    /// Stop a running deployment and put it back in the queue with its original priority, to
    /// make room for `by` (whose `Admit` follows the preemptions).
    Preempt {
        /// The running deployment to evict.
        victim: DeploymentId,
        /// The queued deployment it makes room for.
        by: DeploymentId,
    },
}

/// Why a queued deployment is still waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// It fits the cluster but not the capacity currently free.
    WaitingForCapacity,
    /// Strict queueing: an earlier entry does not fit, so this one may not pass it.
    BlockedBehindHead,
    /// It asks for more than the cluster's total capacity on some dimension (only possible
    /// after the cluster shrank); it will never be admitted unless capacity grows.
    NeverFits,
}

/// One line of the queue as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Deployment id.
    pub id: DeploymentId,
    /// 1-based position in scheduling order.
    pub position: u32,
    /// Priority used for ordering, including aging.
    pub effective_priority: i32,
    /// Why it is waiting.
    pub reason: WaitReason,
}

/// Base priority plus aging: one point per full [`AGING_STEP_SECONDS`] waited, at most
/// [`AGING_MAX_BOOST`].
///
/// Aging only orders the queue. Preemption compares base priorities, so waiting long never
/// entitles a deployment to evict anything.
pub fn effective_priority(q: &Queued, now: DateTime<Utc>) -> i32 {
    q.priority.saturating_add(aging_boost(q.enqueued_at, now))
}

/// The aging boost (`0..=AGING_MAX_BOOST`) of an entry enqueued at `enqueued_at`, at `now`.
pub(super) fn aging_boost(enqueued_at: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    // A clock that went backwards (enqueued_at in the future) simply means no boost yet.
    let waited = now.signed_duration_since(enqueued_at).num_seconds().max(0);
    let steps = (waited / AGING_STEP_SECONDS).min(i64::from(AGING_MAX_BOOST));
    i32::try_from(steps).unwrap_or(AGING_MAX_BOOST)
}

/// The queue in scheduling order: effective priority descending, then `enqueued_at` ascending
/// (FIFO), then id ascending, so the order is total and deterministic.
pub fn queue_order(queued: &[Queued], now: DateTime<Utc>) -> Vec<&Queued> {
    ordered(queued, now).into_iter().map(|(_, q)| q).collect()
}

/// True when `request` is a valid resource amount that fits the cluster's total `capacity`,
/// i.e. it could run on an otherwise empty cluster.
pub fn can_ever_fit(capacity: &Resources, request: &Resources) -> bool {
    // Invalid (e.g. negative) requests are treated as never fitting: admitting one would let
    // the books claim free capacity that does not exist.
    request.is_valid() && request.fits_within(capacity)
}

/// The decisions to apply now, in order.
///
/// Walks the queue in [`queue_order`]. An entry that fits the free capacity is admitted. One
/// that does not may, when `policy.preemption` is on, evict running deployments of strictly
/// lower *base* priority (lowest priority first, newest first among equals), reduced to a
/// minimal set; each `Preempt` is emitted before the `Admit` it makes room for. Deployments
/// admitted earlier in the same call are never preempted, and victims are not reconsidered
/// until the caller has requeued them. An entry that still does not fit stops the walk under
/// [`Queueing::Strict`] and is passed over under [`Queueing::BestEffort`]. Entries that can
/// never fit the cluster are skipped under both policies.
///
/// The walk is a single pass: under best-effort, an entry passed over before a later
/// preemption freed room is picked up by the next call rather than this one.
///
/// Cost: one sort of the queue and one of the running set; O(1) per entry that is admitted or
/// skipped without preemption, O(log r) per entry whose preemption attempt fails, and for each
/// successful preemption a walk over at most the r running deployments.
pub fn schedule(state: &ClusterState, now: DateTime<Utc>) -> Vec<Decision> {
    let used = state
        .running
        .iter()
        .fold(ZERO_WIDE, |acc, r| add(acc, wide(&r.resources)));
    // Wide arithmetic so unvalidated input can neither overflow nor panic; free may be negative
    // after a shrink, in which case nothing fits until enough has been preempted.
    let mut free = sub(wide(&state.capacity), used);
    let mut pool = state
        .policy
        .preemption
        .then(|| VictimPool::new(&state.running));
    let mut decisions = Vec::new();

    for (_, q) in ordered(&state.queued, now) {
        if !can_ever_fit(&state.capacity, &q.resources) {
            continue;
        }
        let need = wide(&q.resources);
        if fits(need, free) {
            free = sub(free, need);
            decisions.push(Decision::Admit { id: q.id });
            continue;
        }
        if let Some(victims) = pool.as_mut().and_then(|p| p.select(need, free, q.priority)) {
            for v in victims {
                free = add(free, wide(&v.resources));
                decisions.push(Decision::Preempt {
                    victim: v.id,
                    by: q.id,
                });
            }
            free = sub(free, need);
            decisions.push(Decision::Admit { id: q.id });
            continue;
        }
        if state.policy.queueing == Queueing::Strict {
            break;
        }
    }
    decisions
}

/// The queue in scheduling order, each entry with the reason it is waiting.
///
/// It describes the queue as it stands, assuming [`schedule`]'s decisions have already been
/// applied: every entry is waiting, never-fitting ones say so, and under strict queueing the
/// first entry that could fit is the head that blocks everything after it.
pub fn queue_view(state: &ClusterState, now: DateTime<Utc>) -> Vec<QueueEntry> {
    let strict = state.policy.queueing == Queueing::Strict;
    let mut head_seen = false;
    ordered(&state.queued, now)
        .into_iter()
        .enumerate()
        .map(|(i, (effective_priority, q))| {
            let reason = if !can_ever_fit(&state.capacity, &q.resources) {
                WaitReason::NeverFits
            } else if strict && head_seen {
                WaitReason::BlockedBehindHead
            } else {
                head_seen = true;
                WaitReason::WaitingForCapacity
            };
            QueueEntry {
                id: q.id,
                // A queue longer than u32::MAX cannot be shown anyway; saturate, don't panic.
                position: u32::try_from(i + 1).unwrap_or(u32::MAX),
                effective_priority,
                reason,
            }
        })
        .collect()
}

/// Queue entries paired with their effective priority, sorted into scheduling order.
fn ordered(queued: &[Queued], now: DateTime<Utc>) -> Vec<(i32, &Queued)> {
    // Effective priorities are computed once so the sort compares plain integers.
    let mut v: Vec<(i32, &Queued)> = queued
        .iter()
        .map(|q| (effective_priority(q, now), q))
        .collect();
    // A stable sort keeps even exact duplicates (same id and time) in input order.
    v.sort_by(|(pa, a), (pb, b)| {
        pb.cmp(pa)
            .then_with(|| a.enqueued_at.cmp(&b.enqueued_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    v
}

/// Resources widened to i128 per dimension: sums of any number of i64 values fit.
pub(super) type Wide = [i128; 3];

pub(super) const ZERO_WIDE: Wide = [0; 3];

pub(super) fn wide(r: &Resources) -> Wide {
    r.dims().map(i128::from)
}

pub(super) fn add(a: Wide, b: Wide) -> Wide {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(super) fn sub(a: Wide, b: Wide) -> Wide {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(super) fn fits(need: Wide, room: Wide) -> bool {
    need.iter().zip(room.iter()).all(|(n, r)| n <= r)
}

/// Running deployments in preemption order, with the bookkeeping that keeps each victim search
/// cheap across a whole [`schedule`] call.
struct VictimPool<'a> {
    /// Lowest base priority first, then most recently admitted, then id.
    victims: Vec<&'a Running>,
    /// Fenwick tree over `victims` holding the resources of those not yet preempted; answers
    /// "could all eligible victims together make room?" in O(log r) before any walk.
    tree: Vec<Wide>,
    /// `next_live[i]` leads (with path compression) to the first not-yet-preempted index
    /// `>= i`; index `victims.len()` is a sentinel. Lets the greedy walk skip earlier victims
    /// in amortised O(1).
    next_live: Vec<usize>,
}

impl<'a> VictimPool<'a> {
    fn new(running: &'a [Running]) -> Self {
        let mut victims: Vec<&Running> = running.iter().collect();
        victims.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then_with(|| b.admitted_at.cmp(&a.admitted_at))
                .then_with(|| a.id.cmp(&b.id))
        });
        let n = victims.len();
        let mut pool = VictimPool {
            victims,
            tree: vec![ZERO_WIDE; n + 1],
            next_live: (0..=n).collect(),
        };
        for i in 0..n {
            let r = wide(&pool.victims[i].resources);
            pool.tree_add(i, r);
        }
        pool
    }

    fn tree_add(&mut self, index: usize, delta: Wide) {
        let mut i = index + 1;
        while i < self.tree.len() {
            self.tree[i] = add(self.tree[i], delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Sum of the live victims in `victims[..len]`.
    fn prefix_sum(&self, len: usize) -> Wide {
        let mut acc = ZERO_WIDE;
        let mut i = len;
        while i > 0 {
            acc = add(acc, self.tree[i]);
            i -= i & i.wrapping_neg();
        }
        acc
    }

    /// First live index at or after `index` (or `victims.len()`).
    fn next_live(&mut self, index: usize) -> usize {
        let mut root = index;
        while self.next_live[root] != root {
            root = self.next_live[root];
        }
        let mut cur = index;
        while self.next_live[cur] != root {
            let next = self.next_live[cur];
            self.next_live[cur] = root;
            cur = next;
        }
        root
    }

    fn remove(&mut self, index: usize) {
        let r = wide(&self.victims[index].resources);
        self.tree_add(index, sub(ZERO_WIDE, r));
        self.next_live[index] = index + 1;
    }

    /// Chooses, and removes from the pool, a minimal set of victims with base priority
    /// strictly below `priority` that makes `need` fit in `free`; `None` (and no change) if
    /// even all of them would not be enough.
    fn select(&mut self, need: Wide, free: Wide, priority: i32) -> Option<Vec<&'a Running>> {
        let eligible = self.victims.partition_point(|v| v.priority < priority);
        // All-or-nothing: a partial eviction would cost work without admitting anyone.
        if !fits(need, add(free, self.prefix_sum(eligible))) {
            return None;
        }

        // Greedy: take victims in preemption order until the candidate fits.
        let mut taken = Vec::new();
        let mut room = free;
        let mut i = self.next_live(0);
        while !fits(need, room) {
            if i >= eligible {
                // Unreachable given the check above; bail out rather than over-preempt.
                return None;
            }
            taken.push(i);
            room = add(room, wide(&self.victims[i].resources));
            i = self.next_live(i + 1);
        }

        // Minimise as Kueue does: revisit in reverse order of selection and spare every victim
        // whose resources turn out not to be needed, so the cheapest-to-lose ones taken early
        // are dropped when a later, larger victim already makes enough room.
        let mut keep = vec![true; taken.len()];
        for (j, &idx) in taken.iter().enumerate().rev() {
            let without = sub(room, wide(&self.victims[idx].resources));
            if fits(need, without) {
                room = without;
                keep[j] = false;
            }
        }

        let chosen: Vec<usize> = taken
            .into_iter()
            .zip(keep)
            .filter_map(|(idx, k)| k.then_some(idx))
            .collect();
        for &idx in &chosen {
            self.remove(idx);
        }
        Some(chosen.into_iter().map(|idx| self.victims[idx]).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use uuid::Uuid;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid timestamp")
    }

    fn id(n: u128) -> DeploymentId {
        Uuid::from_u128(n)
    }

    fn cpu(c: i64) -> Resources {
        Resources::new(c, 0, 0)
    }

    fn run(n: u128, priority: i32, resources: Resources, admitted: i64) -> Running {
        Running {
            id: id(n),
            priority,
            resources,
            admitted_at: t(admitted),
        }
    }

    fn queued(n: u128, priority: i32, resources: Resources, enqueued: i64) -> Queued {
        Queued {
            id: id(n),
            priority,
            resources,
            enqueued_at: t(enqueued),
        }
    }

    fn cluster(
        capacity: Resources,
        queueing: Queueing,
        preemption: bool,
        running: Vec<Running>,
        queued: Vec<Queued>,
    ) -> ClusterState {
        ClusterState {
            capacity,
            policy: Policy {
                queueing,
                preemption,
            },
            running,
            queued,
        }
    }

    fn admit(n: u128) -> Decision {
        Decision::Admit { id: id(n) }
    }

    fn preempt(victim: u128, by: u128) -> Decision {
        Decision::Preempt {
            victim: id(victim),
            by: id(by),
        }
    }

    /// Applies decisions the way the control plane does: victims go back to the queue with
    /// their original priority, enqueued at `now`. Also checks capacity after every admission.
    fn apply(
        state: &ClusterState,
        decisions: &[Decision],
        now: DateTime<Utc>,
    ) -> (ClusterState, Vec<Running>) {
        let mut next = state.clone();
        let mut victims = Vec::new();
        for d in decisions {
            match *d {
                Decision::Admit { id } => {
                    let pos = next
                        .queued
                        .iter()
                        .position(|q| q.id == id)
                        .expect("admitted id is queued");
                    let q = next.queued.remove(pos);
                    next.running.push(Running {
                        id,
                        priority: q.priority,
                        resources: q.resources,
                        admitted_at: now,
                    });
                    let used = Resources::sum(next.running.iter().map(|r| &r.resources));
                    assert!(used.fits_within(&next.capacity), "overcommitted: {d:?}");
                }
                Decision::Preempt { victim, .. } => {
                    let pos = next
                        .running
                        .iter()
                        .position(|r| r.id == victim)
                        .expect("victim is running");
                    victims.push(next.running.remove(pos));
                }
            }
        }
        for v in &victims {
            next.queued.push(Queued {
                id: v.id,
                priority: v.priority,
                resources: v.resources,
                enqueued_at: now,
            });
        }
        (next, victims)
    }

    fn ids(order: &[&Queued]) -> Vec<DeploymentId> {
        order.iter().map(|q| q.id).collect()
    }

    #[test]
    fn higher_priority_first() {
        let s = cluster(
            cpu(1000),
            Queueing::BestEffort,
            false,
            vec![],
            vec![queued(1, 1, cpu(1000), 0), queued(2, 5, cpu(1000), 10)],
        );
        assert_eq!(schedule(&s, t(20)), vec![admit(2)]);
    }

    #[test]
    fn fifo_within_a_priority_then_id() {
        let q = vec![
            queued(1, 3, cpu(10), 5),
            queued(3, 3, cpu(10), 0),
            queued(2, 3, cpu(10), 0),
        ];
        assert_eq!(ids(&queue_order(&q, t(5))), vec![id(2), id(3), id(1)]);
        let s = cluster(cpu(20), Queueing::Strict, false, vec![], q);
        assert_eq!(schedule(&s, t(5)), vec![admit(2), admit(3)]);
    }

    #[test]
    fn strict_head_blocks_and_best_effort_lets_small_pass() {
        let running = vec![run(9, 100, cpu(600), 0)];
        let q = vec![queued(1, 10, cpu(500), 0), queued(2, 5, cpu(100), 0)];
        let strict = cluster(
            cpu(1000),
            Queueing::Strict,
            false,
            running.clone(),
            q.clone(),
        );
        assert_eq!(schedule(&strict, t(1)), vec![]);
        let reasons: Vec<_> = queue_view(&strict, t(1)).iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            vec![
                WaitReason::WaitingForCapacity,
                WaitReason::BlockedBehindHead
            ]
        );

        let best = cluster(cpu(1000), Queueing::BestEffort, false, running, q);
        assert_eq!(schedule(&best, t(1)), vec![admit(2)]);
    }

    #[test]
    fn aging_steps_and_cap() {
        let q = queued(1, 10, cpu(1), 0);
        assert_eq!(effective_priority(&q, t(59)), 10);
        assert_eq!(effective_priority(&q, t(60)), 11);
        assert_eq!(effective_priority(&q, t(119)), 11);
        assert_eq!(effective_priority(&q, t(6000)), 110);
        assert_eq!(effective_priority(&q, t(10_000_000)), 110);
        // Enqueued "in the future" (clock skew) gets no boost, and never a negative one.
        assert_eq!(effective_priority(&q, t(-500)), 10);
        assert_eq!(
            effective_priority(&queued(1, i32::MAX, cpu(1), 0), t(6000)),
            i32::MAX
        );
    }

    #[test]
    fn aging_promotes_only_after_enough_waiting() {
        // Old priority-10 entry vs. a priority-15 entry that has just arrived.
        let at = |now: i64| vec![queued(1, 10, cpu(1), 0), queued(2, 15, cpu(1), now)];
        assert_eq!(ids(&queue_order(&at(299), t(299))), vec![id(2), id(1)]);
        // After five full minutes the old entry ties and wins on FIFO.
        assert_eq!(ids(&queue_order(&at(300), t(300))), vec![id(1), id(2)]);
    }

    #[test]
    fn aging_never_exceeds_the_cap() {
        let now = 1_000_000;
        let q = vec![queued(1, 0, cpu(1), 0), queued(2, 101, cpu(1), now)];
        assert_eq!(ids(&queue_order(&q, t(now))), vec![id(2), id(1)]);
        let q = vec![queued(1, 0, cpu(1), 0), queued(2, 100, cpu(1), now)];
        assert_eq!(ids(&queue_order(&q, t(now))), vec![id(1), id(2)]);
    }

    #[test]
    fn aging_does_not_grant_preemption() {
        let running = vec![run(9, 50, cpu(100), 0)];
        let old_low = cluster(
            cpu(100),
            Queueing::BestEffort,
            true,
            running.clone(),
            vec![queued(1, 5, cpu(100), 0)],
        );
        assert!(effective_priority(&old_low.queued[0], t(100_000)) > 50);
        assert_eq!(schedule(&old_low, t(100_000)), vec![]);

        let new_high = cluster(
            cpu(100),
            Queueing::BestEffort,
            true,
            running,
            vec![queued(1, 51, cpu(100), 100_000)],
        );
        assert_eq!(
            schedule(&new_high, t(100_000)),
            vec![preempt(9, 1), admit(1)]
        );
    }

    #[test]
    fn preemption_takes_lowest_priority_newest_first() {
        let running = vec![
            run(11, 1, cpu(100), 0),
            run(12, 1, cpu(100), 10),
            run(13, 2, cpu(100), 20),
        ];
        let one = cluster(
            cpu(300),
            Queueing::Strict,
            true,
            running.clone(),
            vec![queued(1, 10, cpu(100), 30)],
        );
        assert_eq!(schedule(&one, t(30)), vec![preempt(12, 1), admit(1)]);

        let two = cluster(
            cpu(300),
            Queueing::Strict,
            true,
            running,
            vec![queued(1, 10, cpu(200), 30)],
        );
        assert_eq!(
            schedule(&two, t(30)),
            vec![preempt(12, 1), preempt(11, 1), admit(1)]
        );
    }

    #[test]
    fn preemption_minimises_the_greedy_set() {
        // Greedy takes the small priority-1 victim first, then needs the big priority-2 one,
        // which alone is enough: minimisation spares the small one.
        let s = cluster(
            cpu(500),
            Queueing::Strict,
            true,
            vec![run(11, 1, cpu(100), 0), run(12, 2, cpu(400), 0)],
            vec![queued(1, 10, cpu(400), 0)],
        );
        assert_eq!(schedule(&s, t(1)), vec![preempt(12, 1), admit(1)]);
    }

    #[test]
    fn preemption_minimisation_is_per_dimension() {
        // Each of the two lowest victims supplies a different dimension the candidate needs, so
        // minimisation must keep both; the higher-priority third is never reached.
        let s = cluster(
            Resources::new(1000, 1000, 1),
            Queueing::Strict,
            true,
            vec![
                run(11, 1, Resources::new(0, 0, 1), 0),
                run(12, 2, Resources::new(600, 0, 0), 0),
                run(13, 3, Resources::new(400, 1000, 0), 0),
            ],
            vec![queued(1, 10, Resources::new(500, 0, 1), 0)],
        );
        assert_eq!(
            schedule(&s, t(1)),
            vec![preempt(11, 1), preempt(12, 1), admit(1)]
        );
    }

    #[test]
    fn never_preempts_equal_or_higher_priority() {
        for priority in [9, 10] {
            let s = cluster(
                cpu(100),
                Queueing::BestEffort,
                true,
                vec![run(11, 10, cpu(100), 0)],
                vec![queued(1, priority, cpu(10), 0)],
            );
            assert_eq!(schedule(&s, t(1)), vec![]);
        }
    }

    #[test]
    fn no_preemption_when_all_lower_victims_are_not_enough() {
        let running = vec![run(11, 1, cpu(300), 0), run(12, 50, cpu(600), 0)];
        let q = vec![queued(1, 10, cpu(500), 0), queued(2, 5, cpu(100), 0)];
        let strict = cluster(
            cpu(1000),
            Queueing::Strict,
            true,
            running.clone(),
            q.clone(),
        );
        assert_eq!(schedule(&strict, t(1)), vec![]);
        // Best-effort: nobody is evicted for the big one, the small one uses the free room.
        let best = cluster(cpu(1000), Queueing::BestEffort, true, running, q);
        assert_eq!(schedule(&best, t(1)), vec![admit(2)]);
    }

    #[test]
    fn never_preempts_what_this_call_admitted() {
        // The aged priority-1 entry is ordered (and admitted) first; the priority-50 entry
        // outranks it on base priority but must not evict it in the same call.
        let s = cluster(
            cpu(10),
            Queueing::BestEffort,
            true,
            vec![],
            vec![queued(1, 1, cpu(10), 0), queued(2, 50, cpu(10), 10_000)],
        );
        assert_eq!(schedule(&s, t(10_000)), vec![admit(1)]);
    }

    #[test]
    fn strict_walk_continues_after_a_preemption() {
        let s = cluster(
            cpu(100),
            Queueing::Strict,
            true,
            vec![run(11, 1, cpu(100), 0)],
            vec![queued(1, 10, cpu(60), 0), queued(2, 5, cpu(40), 0)],
        );
        assert_eq!(schedule(&s, t(1)), vec![preempt(11, 1), admit(1), admit(2)]);
    }

    #[test]
    fn overcommitted_after_shrink_admits_nothing_without_preemption() {
        let running = vec![run(11, 1, cpu(150), 0)];
        let q = vec![queued(1, 10, cpu(10), 0)];
        let off = cluster(
            cpu(100),
            Queueing::BestEffort,
            false,
            running.clone(),
            q.clone(),
        );
        assert_eq!(schedule(&off, t(1)), vec![]);
        let on = cluster(cpu(100), Queueing::BestEffort, true, running, q);
        assert_eq!(schedule(&on, t(1)), vec![preempt(11, 1), admit(1)]);
    }

    #[test]
    fn never_fitting_entry_is_skipped_and_does_not_block_strict() {
        let cap = Resources::new(1000, 1000, 0);
        assert!(!can_ever_fit(&cap, &Resources::new(1, 1, 1)));
        assert!(!can_ever_fit(&cap, &Resources::new(-1, 1, 0)));
        assert!(can_ever_fit(&cap, &cap));
        let s = cluster(
            cap,
            Queueing::Strict,
            true,
            vec![run(11, 1, cpu(500), 0)],
            vec![
                queued(1, 100, Resources::new(1, 1, 1), 0),
                queued(2, 50, cpu(2000), 0),
                queued(3, 1, cpu(100), 0),
            ],
        );
        // The never-fitting entries neither block nor preempt.
        assert_eq!(schedule(&s, t(1)), vec![admit(3)]);
    }

    #[test]
    fn queue_view_reasons_and_positions() {
        let running = vec![run(11, 1000, cpu(900), 0)];
        let q = vec![
            queued(1, 99, Resources::new(0, 0, 1), 0),
            queued(2, 50, cpu(500), 0),
            queued(3, 10, cpu(50), 0),
            queued(4, 5, cpu(2000), 0),
        ];
        let strict = cluster(
            cpu(1000),
            Queueing::Strict,
            false,
            running.clone(),
            q.clone(),
        );
        let view = queue_view(&strict, t(60));
        let expected = [
            (1, 100, WaitReason::NeverFits),
            (2, 51, WaitReason::WaitingForCapacity),
            (3, 11, WaitReason::BlockedBehindHead),
            (4, 6, WaitReason::NeverFits),
        ];
        assert_eq!(view.len(), expected.len());
        for (pos, (entry, (n, prio, reason))) in view.iter().zip(expected).enumerate() {
            assert_eq!(entry.id, id(n));
            assert_eq!(entry.position as usize, pos + 1);
            assert_eq!(entry.effective_priority, prio);
            assert_eq!(entry.reason, reason);
        }
        let best = cluster(cpu(1000), Queueing::BestEffort, false, running, q);
        let reasons: Vec<_> = queue_view(&best, t(60)).iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            vec![
                WaitReason::NeverFits,
                WaitReason::WaitingForCapacity,
                WaitReason::WaitingForCapacity,
                WaitReason::NeverFits
            ]
        );
    }

    /// Deterministic pseudo-random numbers for the larger tests (no extra crates).
    pub(crate) struct Lcg(pub(crate) u64);
    impl Lcg {
        pub(crate) fn next(&mut self, bound: u64) -> i64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            i64::try_from((self.0 >> 33) % bound).expect("bounded")
        }
    }

    #[test]
    fn schedules_a_large_queue_quickly() {
        let mut rng = Lcg(42);
        let running: Vec<Running> = (0..1_000u128)
            .map(|n| {
                let p = i32::try_from(rng.next(1001)).expect("small");
                run(
                    n,
                    p,
                    Resources::new(1000, 4096, rng.next(2)),
                    -rng.next(100_000),
                )
            })
            .collect();
        // Room for a few hundred more besides the running set, so both admission and
        // preemption paths are exercised.
        let capacity = Resources::sum(running.iter().map(|r| &r.resources))
            .saturating_add(&Resources::new(500_000, 2_000_000, 300));
        let queue: Vec<Queued> = (0..100_000u128)
            .map(|n| {
                let p = i32::try_from(rng.next(1001)).expect("small");
                let r = Resources::new(rng.next(4000), rng.next(16_384), rng.next(3));
                queued(10_000 + n, p, r, -rng.next(20_000))
            })
            .collect();
        for queueing in [Queueing::BestEffort, Queueing::Strict] {
            for preemption in [false, true] {
                let s = cluster(
                    capacity,
                    queueing,
                    preemption,
                    running.clone(),
                    queue.clone(),
                );
                let start = std::time::Instant::now();
                let decisions = schedule(&s, t(0));
                let elapsed = start.elapsed();
                eprintln!(
                    "TIMING {queueing:?}/{preemption}: {elapsed:?} {}",
                    decisions.len()
                );
                assert!(!decisions.is_empty());
                assert!(
                    elapsed < std::time::Duration::from_secs(1),
                    "{queueing:?}/{preemption}: {elapsed:?} for {} decisions",
                    decisions.len()
                );
            }
        }
        let s = cluster(capacity, Queueing::Strict, false, running, queue);
        let start = std::time::Instant::now();
        assert_eq!(queue_view(&s, t(0)).len(), 100_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    // ---- property tests ----

    const NOW: i64 = 100_000;

    fn arb_priority() -> BoxedStrategy<i32> {
        // Narrow ranges make ties and aging matter; wide ones exercise plain ordering.
        prop_oneof![0..=1000i32, 0..=3i32].boxed()
    }

    fn arb_request(cap: Resources) -> BoxedStrategy<Resources> {
        let dim = |max: i64| {
            // Mostly small requests so several share the cluster, some up to 110% of capacity
            // so that never-fitting entries occur.
            prop_oneof![3 => 0..=max / 4, 1 => 0..=max + max / 10 + 1]
        };
        let gpus = prop_oneof![4 => Just(0i64), 1 => 0..=cap.gpus + 1];
        (dim(cap.cpu_millis), dim(cap.memory_mib), gpus)
            .prop_map(|(c, m, g)| Resources::new(c, m, g))
            .boxed()
    }

    fn arb_state() -> impl Strategy<Value = ClusterState> {
        (
            1i64..=16_000,
            1i64..=65_536,
            0i64..=4,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_flat_map(|(c, m, g, strict, preemption)| {
                let cap = Resources::new(c, m, g);
                let item = (
                    arb_priority(),
                    arb_request(cap),
                    0i64..=50_000,
                    any::<u64>(),
                );
                (
                    Just(cap),
                    Just(strict),
                    Just(preemption),
                    proptest::collection::vec(item.clone(), 0..20),
                    proptest::collection::vec(item, 0..60),
                )
            })
            .prop_map(|(capacity, strict, preemption, run_items, queue_items)| {
                // Ids: random high bits so id order differs from input order, index in the low
                // bits so they are unique.
                let mk_id =
                    |salt: u64, i: usize| Uuid::from_u128((u128::from(salt) << 64) | i as u128);
                let mut used = Resources::ZERO;
                let mut running = Vec::new();
                for (i, (priority, resources, ago, salt)) in run_items.into_iter().enumerate() {
                    let total = used.saturating_add(&resources);
                    if total.fits_within(&capacity) {
                        used = total;
                        running.push(Running {
                            id: mk_id(salt, i),
                            priority,
                            resources,
                            admitted_at: t(NOW - ago),
                        });
                    }
                }
                let queued = queue_items
                    .into_iter()
                    .enumerate()
                    .map(|(i, (priority, resources, ago, salt))| Queued {
                        id: mk_id(salt, 1000 + i),
                        priority,
                        resources,
                        // Up to ~2.2 hours: some entries reach the aging cap, most do not.
                        enqueued_at: t(NOW - ago % 8_000),
                    })
                    .collect();
                let queueing = if strict {
                    Queueing::Strict
                } else {
                    Queueing::BestEffort
                };
                cluster(capacity, queueing, preemption, running, queued)
            })
    }

    /// One candidate's step of the walk: its position in queue order, what it asked for and
    /// the victims evicted for it.
    struct Step {
        order_index: usize,
        request: Resources,
        victims: Vec<Running>,
    }

    /// Splits decisions into per-candidate steps, checking they are well formed on the way.
    fn steps(state: &ClusterState, decisions: &[Decision]) -> Vec<Step> {
        let order = queue_order(&state.queued, t(NOW));
        let mut out = Vec::new();
        let mut pending: Vec<Running> = Vec::new();
        let mut seen = HashSet::new();
        for d in decisions {
            match *d {
                Decision::Preempt { victim, by } => {
                    let v = state
                        .running
                        .iter()
                        .find(|r| r.id == victim)
                        .expect("victims come from the original running set");
                    assert!(seen.insert(victim), "victim twice");
                    if let Some(p) = pending.first() {
                        assert_eq!(decisions_by(p, decisions), by);
                    }
                    pending.push(v.clone());
                }
                Decision::Admit { id } => {
                    assert!(seen.insert(id), "admitted twice");
                    let order_index = order
                        .iter()
                        .position(|q| q.id == id)
                        .expect("admitted id was queued");
                    for p in &pending {
                        assert_eq!(decisions_by(p, decisions), id, "preempt precedes its admit");
                    }
                    out.push(Step {
                        order_index,
                        request: order[order_index].resources,
                        victims: std::mem::take(&mut pending),
                    });
                }
            }
        }
        assert!(pending.is_empty(), "trailing preemption without admission");
        let indices: Vec<usize> = out.iter().map(|s| s.order_index).collect();
        assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "decisions follow queue order"
        );
        out
    }

    fn decisions_by(victim: &Running, decisions: &[Decision]) -> DeploymentId {
        decisions
            .iter()
            .find_map(|d| match *d {
                Decision::Preempt { victim: v, by } if v == victim.id => Some(by),
                _ => None,
            })
            .expect("victim has a preemptor")
    }

    fn initial_free(state: &ClusterState) -> Resources {
        let used = Resources::sum(state.running.iter().map(|r| &r.resources));
        state.capacity.saturating_sub(&used)
    }

    /// Free capacity at the moment the walk reached queue position `k`.
    fn free_at(state: &ClusterState, steps: &[Step], k: usize) -> Resources {
        steps
            .iter()
            .filter(|s| s.order_index < k)
            .fold(initial_free(state), |free, s| {
                let freed = Resources::sum(s.victims.iter().map(|v| &v.resources));
                free.saturating_add(&freed).saturating_sub(&s.request)
            })
    }

    proptest! {
        #[test]
        fn capacity_never_exceeded(state in arb_state()) {
            let decisions = schedule(&state, t(NOW));
            // `apply` asserts the capacity after every single admission, in order.
            let (next, _) = apply(&state, &decisions, t(NOW));
            let used = Resources::sum(next.running.iter().map(|r| &r.resources));
            prop_assert!(used.fits_within(&state.capacity));
        }

        #[test]
        fn victims_have_strictly_lower_base_priority(state in arb_state()) {
            let decisions = schedule(&state, t(NOW));
            for s in steps(&state, &decisions) {
                let preemptor = queue_order(&state.queued, t(NOW))[s.order_index];
                for v in &s.victims {
                    prop_assert!(v.priority < preemptor.priority);
                }
                if !state.policy.preemption {
                    prop_assert!(s.victims.is_empty());
                }
            }
        }

        #[test]
        fn nothing_lost_or_duplicated(state in arb_state()) {
            let decisions = schedule(&state, t(NOW));
            let (next, _) = apply(&state, &decisions, t(NOW));
            let mut before: Vec<_> = state.running.iter().map(|r| r.id)
                .chain(state.queued.iter().map(|q| q.id)).collect();
            let mut after: Vec<_> = next.running.iter().map(|r| r.id)
                .chain(next.queued.iter().map(|q| q.id)).collect();
            before.sort();
            after.sort();
            prop_assert_eq!(before, after);
            let unique: HashSet<_> = decisions.iter().copied().collect();
            prop_assert_eq!(unique.len(), decisions.len());
        }

        #[test]
        fn best_effort_without_preemption_is_maximal(state in arb_state()) {
            prop_assume!(state.policy.queueing == Queueing::BestEffort && !state.policy.preemption);
            let (next, _) = apply(&state, &schedule(&state, t(NOW)), t(NOW));
            let free = initial_free(&next);
            for q in &next.queued {
                prop_assert!(!q.resources.fits_within(&free), "{:?} fits {:?}", q, free);
            }
        }

        #[test]
        fn strict_admits_a_prefix_of_queue_order(state in arb_state()) {
            prop_assume!(state.policy.queueing == Queueing::Strict);
            let admitted: Vec<_> = schedule(&state, t(NOW)).iter().filter_map(|d| match *d {
                Decision::Admit { id } => Some(id),
                Decision::Preempt { .. } => None,
            }).collect();
            let fitting: Vec<_> = queue_order(&state.queued, t(NOW)).into_iter()
                .filter(|q| can_ever_fit(&state.capacity, &q.resources))
                .map(|q| q.id)
                .collect();
            prop_assert_eq!(&fitting[..admitted.len()], &admitted[..]);
        }

        /// An entry passed over (left queued while a later-ordered one was admitted) did not
        /// fit the capacity free when the walk reached it and, with preemption on, could not
        /// have made room by evicting every running deployment of lower base priority still
        /// present at that point. Under strict queueing nothing is ever passed over.
        #[test]
        fn passed_over_entries_could_not_fit(state in arb_state()) {
            let decisions = schedule(&state, t(NOW));
            let steps = steps(&state, &decisions);
            let last_admitted = steps.last().map(|s| s.order_index);
            let admitted: HashSet<usize> = steps.iter().map(|s| s.order_index).collect();
            let order = queue_order(&state.queued, t(NOW));
            for (k, w) in order.iter().enumerate() {
                let passed_over = !admitted.contains(&k) && last_admitted.is_some_and(|l| l > k);
                if !passed_over || !can_ever_fit(&state.capacity, &w.resources) {
                    continue;
                }
                prop_assert_eq!(state.policy.queueing, Queueing::BestEffort);
                let free = free_at(&state, &steps, k);
                prop_assert!(!w.resources.fits_within(&free));
                if state.policy.preemption {
                    let gone: HashSet<_> = steps.iter().filter(|s| s.order_index < k)
                        .flat_map(|s| s.victims.iter().map(|v| v.id)).collect();
                    let evictable = Resources::sum(state.running.iter()
                        .filter(|r| r.priority < w.priority && !gone.contains(&r.id))
                        .map(|r| &r.resources));
                    prop_assert!(!w.resources.fits_within(&free.saturating_add(&evictable)));
                }
            }
        }

        #[test]
        fn victim_sets_are_needed_and_minimal(state in arb_state()) {
            let decisions = schedule(&state, t(NOW));
            let steps = steps(&state, &decisions);
            for s in steps.iter().filter(|s| !s.victims.is_empty()) {
                let free = free_at(&state, &steps, s.order_index);
                let freed = Resources::sum(s.victims.iter().map(|v| &v.resources));
                let room = free.saturating_add(&freed);
                prop_assert!(!s.request.fits_within(&free));
                prop_assert!(s.request.fits_within(&room));
                for v in &s.victims {
                    prop_assert!(!s.request.fits_within(&room.saturating_sub(&v.resources)));
                }
            }
        }

        #[test]
        fn idempotent_without_preemption(state in arb_state()) {
            prop_assume!(!state.policy.preemption);
            let (next, victims) = apply(&state, &schedule(&state, t(NOW)), t(NOW));
            prop_assert!(victims.is_empty());
            prop_assert_eq!(schedule(&next, t(NOW)), vec![]);
        }

        #[test]
        fn queue_view_matches_order(state in arb_state()) {
            let (next, _) = apply(&state, &schedule(&state, t(NOW)), t(NOW));
            let view = queue_view(&next, t(NOW));
            let order = queue_order(&next.queued, t(NOW));
            prop_assert_eq!(view.len(), order.len());
            let mut heads = 0;
            for (i, (e, q)) in view.iter().zip(&order).enumerate() {
                prop_assert_eq!(e.id, q.id);
                prop_assert_eq!(e.position as usize, i + 1);
                prop_assert_eq!(e.effective_priority, effective_priority(q, t(NOW)));
                prop_assert_eq!(
                    e.reason == WaitReason::NeverFits,
                    !can_ever_fit(&next.capacity, &q.resources)
                );
                if e.reason == WaitReason::WaitingForCapacity {
                    heads += 1;
                }
            }
            if next.policy.queueing == Queueing::Strict {
                prop_assert!(heads <= 1);
            }
        }
    }
}
