//! The scheduler under criterion, over a cluster with 100,000 queued deployments and 100
//! running: (a) a stop frees room for a handful (the common, incremental case), (b) a resize
//! frees room for thousands, (c) preemption is on and there is room for a handful (so the
//! highest-priority entries evict lower ones, settled over several passes).
//!
//! Per case:
//! * `book_fresh_clone`: [`Book::schedule`] on a clone of the same book made (and dropped)
//!   outside the timed part. A 100,000-entry book is larger than the caches and the clone
//!   evicts it, so every access the call makes comes from memory: the pessimistic figure.
//! * `book_in_place`: the same book object every time, put back into the initial state after
//!   each call by removing and re-inserting what the call touched (outside the timed part):
//!   what an engine that keeps its book between batches sees.
//! * `reference_schedule`: one call of the reference [`schedule`] on the equivalent
//!   `ClusterState` (it sorts the whole queue each call): the baseline.
//!
//! Criterion's own report comes first; then the program prints per case the median time per
//! call, decisions per call and decisions/s of each, and the ratio to the baseline.

use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant};

use berth::domain::ids::DeploymentId;
use berth::domain::resources::Resources;
use berth::domain::scheduling::{
    schedule, Book, ClusterState, Decision, Policy, Queued, Queueing, Running,
};
use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, BatchSize, Criterion, SamplingMode};
use uuid::Uuid;

const QUEUED: usize = 100_000;

fn state(capacity_cpu: i64, preemption: bool) -> ClusterState {
    let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let running = (0..100)
        .map(|i| Running {
            id: DeploymentId(Uuid::from_u128(i as u128 + 1)),
            priority: (next() % 1001) as i32,
            resources: Resources::new(1000, 1024, 0),
            admitted_at: t0,
        })
        .collect();
    let queued = (0..QUEUED)
        .map(|i| Queued {
            id: DeploymentId(Uuid::from_u128(1_000_000 + i as u128)),
            priority: (next() % 1001) as i32,
            resources: Resources::new(100 + (next() % 900) as i64, 256, 0),
            enqueued_at: t0 + Duration::milliseconds(i as i64),
        })
        .collect();
    ClusterState {
        capacity: Resources::new(capacity_cpu, 1 << 30, 8),
        policy: Policy {
            queueing: Queueing::BestEffort,
            preemption,
        },
        running,
        queued,
        held: vec![],
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_600, 0).expect("time")
}

struct Case {
    name: &'static str,
    state: ClusterState,
    book: Book,
    /// Criterion's measurement time for the fresh-clone variant: each iteration also pays
    /// an untimed clone of ~10 ms, so the timed total must stay small.
    clone_budget: StdDuration,
}

fn cases() -> Vec<Case> {
    [
        // (a) 2,000 mCPU free after a stop: a few admissions.
        ("a_stop_frees_room_for_a_few", 102_000, false, 10),
        // (b) 1,000,000 mCPU free after a resize: thousands of admissions.
        ("b_resize_frees_room_for_thousands", 1_100_000, false, 300),
        // (c) as (a) with preemption on.
        ("c_preemption_on_room_for_a_few", 102_000, true, 150),
    ]
    .into_iter()
    .map(|(name, cpu, preemption, ms)| {
        let state = state(cpu, preemption);
        let book = Book::from_state(&state, now());
        Case {
            name,
            state,
            book,
            clone_budget: StdDuration::from_millis(ms),
        }
    })
    .collect()
}

/// Puts `book` back into `original`'s state after a call that made `decisions`.
fn reset(book: &mut Book, original: &Book, decisions: &[Decision]) {
    let mut touched: Vec<DeploymentId> = decisions
        .iter()
        .map(|d| match *d {
            Decision::Admit { id } => id,
            Decision::Preempt { victim, .. } => victim,
        })
        .collect();
    touched.sort_unstable();
    touched.dedup();
    for id in touched {
        book.remove(&id);
        if let Some(entry) = original.get(&id) {
            book.insert(entry);
        }
    }
}

/// One timed call on the book kept in place, then the untimed reset.
fn in_place_call(book: &mut Book, original: &Book) -> (StdDuration, usize) {
    let start = Instant::now();
    let decisions = black_box(book.schedule(now()));
    let elapsed = start.elapsed();
    reset(book, original, &decisions);
    (elapsed, decisions.len())
}

fn bench(c: &mut Criterion) {
    for case in cases() {
        let mut group = c.benchmark_group(case.name);
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(case.clone_budget / 4);
        group.measurement_time(case.clone_budget);
        group.bench_function("book_fresh_clone", |b| {
            // By reference: the clone is made and dropped outside the timed part.
            b.iter_batched_ref(
                || case.book.clone(),
                |book| book.schedule(now()),
                BatchSize::LargeInput,
            )
        });
        group.warm_up_time(StdDuration::from_millis(500));
        group.measurement_time(StdDuration::from_secs(2));
        group.bench_function("book_in_place", |b| {
            let mut book = case.book.clone();
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| in_place_call(&mut book, &case.book).0)
                    .sum()
            })
        });
        group.measurement_time(StdDuration::from_secs(3));
        group.bench_function("reference_schedule", |b| {
            b.iter(|| schedule(&case.state, now()))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);

/// Median of the given timings, in seconds.
fn median(mut times: Vec<StdDuration>) -> f64 {
    times.sort();
    times
        .get(times.len() / 2)
        .copied()
        .unwrap_or(StdDuration::ZERO)
        .as_secs_f64()
}

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    println!(
        "\nmedian per call, {QUEUED} queued, 100 running (the book settles all passes; the \
         reference is one pass):"
    );
    for case in cases() {
        // The reset really restores the state the measurements start from.
        let mut book = case.book.clone();
        let _ = in_place_call(&mut book, &case.book);
        assert_eq!(book.state(), case.book.state(), "reset restores the book");

        let (mut fresh, mut decisions) = (Vec::new(), 0);
        for _ in 0..50 {
            let mut b = case.book.clone();
            let start = Instant::now();
            decisions = black_box(b.schedule(now())).len();
            fresh.push(start.elapsed());
            drop(b);
        }
        let in_place: Vec<StdDuration> = (0..500)
            .map(|_| in_place_call(&mut book, &case.book).0)
            .collect();
        let (mut reference, mut ref_decisions) = (Vec::new(), 0);
        for _ in 0..10 {
            let start = Instant::now();
            ref_decisions = black_box(schedule(&case.state, now())).len();
            reference.push(start.elapsed());
        }
        let (fresh, in_place, reference) = (median(fresh), median(in_place), median(reference));
        let rate = |d: usize, s: f64| d as f64 / s;
        println!("{}:", case.name);
        println!(
            "  book, fresh clone   {:>10.1} µs/call  {:>5} decisions/call  {:>12.0} decisions/s  {:>6.0}x the reference per call",
            fresh * 1e6,
            decisions,
            rate(decisions, fresh),
            reference / fresh
        );
        println!(
            "  book, in place      {:>10.1} µs/call  {:>5} decisions/call  {:>12.0} decisions/s  {:>6.0}x the reference per call",
            in_place * 1e6,
            decisions,
            rate(decisions, in_place),
            reference / in_place
        );
        println!(
            "  reference schedule  {:>10.1} µs/call  {:>5} decisions/call  {:>12.0} decisions/s",
            reference * 1e6,
            ref_decisions,
            rate(ref_decisions, reference)
        );
    }
}
