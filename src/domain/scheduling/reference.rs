//! Pure admission logic: given a cluster's capacity, policy, running set and queue, decide which
//! queued deployments to admit now and which running ones to preempt for them.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers: the same [`ClusterState`]
//! and `now` always yield the same decisions, which keeps the scheduler trivially testable and
//! lets the caller apply decisions inside one transaction. The orders it walks are those of
//! [`super::order`].

use chrono::{DateTime, Utc};

use super::model::{
    can_ever_fit, ClusterState, Decision, QueueEntry, Queued, Queueing, Running, WaitReason,
};
use super::order::{QueueKey, RunKey};
use super::wide::{add, fits, sub, wide, Wide, ZERO_WIDE};

/// The queue in scheduling order ([`QueueKey`]'s).
pub fn queue_order(queued: &[Queued], now: DateTime<Utc>) -> Vec<&Queued> {
    ordered(queued, now).into_iter().map(|(_, q)| q).collect()
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
/// preemption freed room is picked up by the next call rather than this one. The entries
/// held for their dependencies (`state.held`) are not in the walk at all.
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
/// first entry that could fit is the head that blocks everything after it. The deployments
/// held for their dependencies follow the whole queue, in [`QueueKey::held`] order, each
/// [`WaitReason::WaitingForDependencies`] (`schedule` never looks at them).
pub fn queue_view(state: &ClusterState, now: DateTime<Utc>) -> Vec<QueueEntry> {
    let strict = state.policy.queueing == Queueing::Strict;
    let mut head_seen = false;
    let mut held: Vec<(QueueKey, &Queued)> =
        state.held.iter().map(|q| (QueueKey::held(q), q)).collect();
    held.sort_by_key(|(k, _)| *k);
    ordered(&state.queued, now)
        .into_iter()
        .map(|(key, q)| (key, q, false))
        .chain(held.into_iter().map(|(key, q)| (key, q, true)))
        .enumerate()
        .map(|(i, (key, q, held))| {
            let reason = if held {
                WaitReason::WaitingForDependencies
            } else if !can_ever_fit(&state.capacity, &q.resources) {
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
                effective_priority: key.effective,
                reason,
            }
        })
        .collect()
}

/// Queue entries paired with their key (effective priorities computed once), sorted into
/// scheduling order.
fn ordered(queued: &[Queued], now: DateTime<Utc>) -> Vec<(QueueKey, &Queued)> {
    let mut v: Vec<(QueueKey, &Queued)> =
        queued.iter().map(|q| (QueueKey::of(q, now), q)).collect();
    // A stable sort keeps even exact duplicates (same id and time) in input order.
    v.sort_by_key(|(k, _)| *k);
    v
}

/// Running deployments in preemption order, with the bookkeeping that keeps each victim search
/// cheap across a whole [`schedule`] call.
struct VictimPool<'a> {
    /// In [`RunKey`] order.
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
        victims.sort_by_key(|r| RunKey::of(r));
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
mod properties;
#[cfg(test)]
pub(crate) mod tests;
