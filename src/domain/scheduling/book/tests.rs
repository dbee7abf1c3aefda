use super::*;
use crate::domain::scheduling::model::{Decision, MAX_PASSES};
use crate::domain::scheduling::{queue_view, schedule};
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
        ids.extend(self.state.held.iter().map(|q| q.id));
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
            .chain(
                self.state
                    .queued
                    .iter()
                    .chain(&self.state.held)
                    .map(|q| BookEntry {
                        id: q.id,
                        priority: q.priority,
                        resources: q.resources,
                        enqueued_at: q.enqueued_at,
                        admitted_at: None,
                    }),
            )
            .collect();
        v.sort_by_key(|e| e.id);
        v
    }

    fn totals(&self) -> Totals {
        Totals {
            allocated: Resources::sum(self.state.running.iter().map(|r| &r.resources)),
            queued_demand: Resources::sum(
                self.state
                    .queued
                    .iter()
                    .chain(&self.state.held)
                    .map(|q| &q.resources),
            ),
            running: self.state.running.len(),
            queued: self.state.queued.len() + self.state.held.len(),
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
    for q in &model.state.held {
        assert!(book.is_held(&q.id));
    }
    assert_eq!(book.state().held.len(), model.state.held.len());
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        priority: i32,
        resources: Resources,
        /// Seconds before the current time (negative: a clock ahead of ours).
        ago: i64,
        salt: u64,
        /// Held for its dependencies.
        held: bool,
    },
    /// Release a held entry (if any), enqueued from now.
    Release(usize),
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
        7 => (arb_priority(), arb_resources(), -300i64..=8_000, any::<u64>(), 0..7u8).prop_map(
            |(priority, resources, ago, salt, h)| Op::Enqueue { priority, resources, ago, salt, held: h < 2 }
        ),
        2 => any::<usize>().prop_map(Op::Release),
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
    DeploymentId(Uuid::from_u128((u128::from(salt) << 64) | n as u128))
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
        held: vec![],
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
            held,
        } => {
            let id = mk_id(salt, *next_id);
            *next_id += 1;
            let enqueued_at = t(*now - ago);
            let entry = BookEntry {
                id,
                priority,
                resources,
                enqueued_at,
                admitted_at: None,
            };
            let q = Queued {
                id,
                priority,
                resources,
                enqueued_at,
            };
            if held {
                book.hold(entry);
                model.state.held.push(q);
            } else {
                book.insert(entry);
                model.state.queued.push(q);
                model.enqueued.insert(id, enqueued_at);
            }
        }
        Op::Release(i) => {
            if model.state.held.is_empty() {
                return;
            }
            let mut q = model.state.held.remove(i % model.state.held.len());
            // Released at the book's clock, as the engine releases at its batch's `now`.
            q.enqueued_at = book.as_of();
            assert!(book.release(&q.id, q.enqueued_at));
            assert!(!book.is_held(&q.id));
            model.enqueued.insert(q.id, q.enqueued_at);
            model.state.queued.push(q);
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
            model.state.held.retain(|q| q.id != id);
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
            for q in model.state.held.iter_mut().filter(|q| q.id == id) {
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

use crate::domain::scheduling::reference::tests::Lcg;

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
                        held: false,
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
        id: uid(n),
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
    assert_eq!(book.position(&uid(1)), Some(1));
    book.advance(t(0));
    assert_eq!(book.as_of(), t(600));
    assert_eq!(book.schedule(t(1)), vec![Decision::Admit { id: uid(1) }]);
    // Admission time is the caller's `now`, as the engine writes it.
    assert_eq!(book.get(&uid(1)).and_then(|e| e.admitted_at), Some(t(1)));
}

#[test]
fn a_preempted_and_readmitted_deployment_keeps_its_admission_time() {
    // Pass 1: 3 (base 1, aged to 101) is admitted first; 1 (base 50) then evicts 9 (base
    // 5), the only running one of lower base priority. Pass 2: 9, queued again, evicts 3
    // (admitted in pass 1, so a victim only now) and runs again.
    let e = |n: u128, p: i32, enqueued: i64, admitted: Option<i64>| BookEntry {
        id: uid(n),
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
    let id = uid;
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

fn uid(n: u128) -> DeploymentId {
    DeploymentId(Uuid::from_u128(n))
}

impl Book {
    /// Checks every invariant tying the structures together.
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
        self.held.check();
        assert_eq!(self.held.len(), self.held_keys.len());
        for (k, w) in self.held.iter() {
            assert_eq!(self.held_keys.get(&k.id), Some(k), "held keys");
            assert_eq!(k.effective, w.priority, "held entries do not age");
            assert!(!self.known.contains_key(&k.id), "held apart from the queue");
            demand = add(demand, wide(&w.resources));
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
