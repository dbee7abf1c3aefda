//! The reference scheduler's properties, over random clusters.

use proptest::prelude::*;
use std::collections::HashSet;
use uuid::Uuid;

use super::tests::{apply, cluster, t};
use super::*;
use crate::domain::resources::Resources;
use crate::domain::scheduling::model::*;

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
                proptest::collection::vec(item.clone(), 0..60),
                proptest::collection::vec(item, 0..8),
            )
        })
        .prop_map(
            |(capacity, strict, preemption, run_items, queue_items, held_items)| {
                // Ids: random high bits so id order differs from input order, index in the low
                // bits so they are unique.
                let mk_id = |salt: u64, i: usize| {
                    DeploymentId(Uuid::from_u128((u128::from(salt) << 64) | i as u128))
                };
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
                // Held for their dependencies: they would fit and outrank the queue as often as
                // not, and must change nothing.
                let held = held_items
                    .into_iter()
                    .enumerate()
                    .map(|(i, (priority, resources, ago, salt))| Queued {
                        id: mk_id(salt, 5000 + i),
                        priority,
                        resources,
                        enqueued_at: t(NOW - ago % 8_000),
                    })
                    .collect();
                let queueing = if strict {
                    Queueing::Strict
                } else {
                    Queueing::BestEffort
                };
                ClusterState {
                    held,
                    ..cluster(capacity, queueing, preemption, running, queued)
                }
            },
        )
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
        prop_assert_eq!(view.len(), order.len() + next.held.len());
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

    /// Deployments held for their dependencies change no decision, whatever they ask and
    /// however high their priority (they never block a strict queue's head either).
    #[test]
    fn held_entries_change_no_decision(state in arb_state()) {
        let without = ClusterState { held: vec![], ..state.clone() };
        prop_assert_eq!(schedule(&state, t(NOW)), schedule(&without, t(NOW)));
        let before = queue_view(&without, t(NOW));
        let view = queue_view(&state, t(NOW));
        prop_assert_eq!(&view[..before.len()], &before[..]);
    }

    /// They are shown after the whole queue, by base priority, then `enqueued_at`, then id,
    /// unaged, each waiting for its dependencies.
    #[test]
    fn held_entries_follow_the_queue_in_their_order(state in arb_state()) {
        let view = queue_view(&state, t(NOW));
        let tail = &view[state.queued.len()..];
        let mut held = state.held.clone();
        held.sort_by_key(|q| (std::cmp::Reverse(q.priority), q.enqueued_at, q.id));
        prop_assert_eq!(tail.len(), held.len());
        for (i, (e, q)) in tail.iter().zip(&held).enumerate() {
            prop_assert_eq!(e.id, q.id);
            prop_assert_eq!(e.position as usize, state.queued.len() + i + 1);
            prop_assert_eq!(e.effective_priority, q.priority);
            prop_assert_eq!(e.reason, WaitReason::WaitingForDependencies);
        }
        prop_assert!(view[..state.queued.len()]
            .iter()
            .all(|e| e.reason != WaitReason::WaitingForDependencies));
    }
}
