//! [`Book::schedule`]: the passes of the reference walk over the book's trees.

use chrono::{DateTime, Utc};

use super::super::model::{can_ever_fit, Decision, Queueing, MAX_PASSES};
use super::super::order::{QueueKey, RunKey};
use super::super::wide::{add, fits, sub, wide, Wide, ZERO_WIDE};
use super::parts::{weight, widen, Smallest, Waiting};
use super::{Book, BookEntry};
use crate::collections::treap::Walk;

/// Deployments that were running when a [`Book::schedule`] call started and were preempted
/// during it, with their key then (to restore the admission time of those running again at
/// the end).
///
/// A victim whose admission time is not the call's `now` was running when the call started
/// (the call admits at `now`), and only its first preemption can find it so; one admitted at
/// `now` needs no restoring either way.
type Originals = Vec<RunKey>;

impl Book {
    /// Decides what to admit and preempt at `now`, applies it, and returns the decisions in
    /// order: exactly what the engine's loop of up to [`MAX_PASSES`] calls of
    /// [`schedule`](super::schedule) on the equivalent state decides, applying
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

    /// Resources held by running deployments of base priority below `priority`.
    fn evictable_below(&self, priority: i32) -> Wide {
        self.running.fold_while(|k| k.priority < priority).1 .0
    }

    /// One pass of [`schedule`](super::schedule) over the book: the same walk,
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

    /// The victims [`schedule`](super::schedule) would evict to fit `need` in
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
}
