//! The scheduler under criterion, over a cluster with 100,000 queued deployments and 100
//! running: (a) a stop frees room for a handful (the common, incremental case), (b) a resize
//! frees room for thousands, (c) preemption is on and there is room for a handful (so the
//! highest-priority entries evict lower ones, settled over several passes).
//!
//! Each case measures [`Book::schedule`] (the incremental book the engine keeps between
//! batches; every iteration starts from a clone of the same book, made outside the timed
//! part) and, as the baseline, one call of the reference [`schedule`] on the equivalent
//! `ClusterState` (which sorts the whole queue). After criterion's report the program prints,
//! per case, time per call, decisions per call and decisions/s for both, and their ratio.

use std::time::{Duration as StdDuration, Instant};

use berth::domain::resources::Resources;
use berth::domain::scheduler::{schedule, Book, ClusterState, Policy, Queued, Queueing, Running};
use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, BatchSize, Criterion};
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
            id: Uuid::from_u128(i as u128 + 1),
            priority: (next() % 1001) as i32,
            resources: Resources::new(1000, 1024, 0),
            admitted_at: t0,
        })
        .collect();
    let queued = (0..QUEUED)
        .map(|i| Queued {
            id: Uuid::from_u128(1_000_000 + i as u128),
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
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_600, 0).expect("time")
}

struct Case {
    name: &'static str,
    state: ClusterState,
    book: Book,
}

fn cases() -> Vec<Case> {
    [
        // (a) 2,000 mCPU free after a stop: a few admissions.
        ("a_stop_frees_room_for_a_few", 102_000, false),
        // (b) 1,000,000 mCPU free after a resize: thousands of admissions.
        ("b_resize_frees_room_for_thousands", 1_100_000, false),
        // (c) as (a) with preemption on.
        ("c_preemption_on_room_for_a_few", 102_000, true),
    ]
    .into_iter()
    .map(|(name, cpu, preemption)| {
        let state = state(cpu, preemption);
        let book = Book::from_state(&state, now());
        Case { name, state, book }
    })
    .collect()
}

fn bench(c: &mut Criterion) {
    for case in cases() {
        let mut group = c.benchmark_group(case.name);
        group.sample_size(20);
        group.bench_function("book", |b| {
            // By reference: the clone is made and dropped outside the timed part.
            b.iter_batched_ref(
                || case.book.clone(),
                |book| book.schedule(now()),
                BatchSize::LargeInput,
            )
        });
        group.bench_function("reference_schedule", |b| {
            b.iter(|| schedule(&case.state, now()))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);

/// Median of `runs` timings of `f` on a fresh `setup()` each (setup and drop not timed),
/// with the number of decisions of the last run.
fn median<S>(
    runs: usize,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(&mut S) -> usize,
) -> (f64, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut decisions = 0;
    for _ in 0..runs {
        let mut input = setup();
        let start = Instant::now();
        decisions = f(&mut input);
        times.push(start.elapsed());
        drop(input);
    }
    times.sort();
    let mid = times.get(runs / 2).copied().unwrap_or(StdDuration::ZERO);
    (mid.as_secs_f64(), decisions)
}

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    println!("\nper call, {QUEUED} queued (median of the runs below; book settles all passes):");
    for case in cases() {
        let (book_s, book_d) = median(50, || case.book.clone(), |b| b.schedule(now()).len());
        let (ref_s, ref_d) = median(10, || (), |_| schedule(&case.state, now()).len());
        println!(
            "{:<36} book {:>10.1} µs, {:>5} decisions, {:>12.0} decisions/s | reference schedule {:>8.2} ms, {:>5} decisions, {:>10.0} decisions/s | {:>7.0}x faster per call",
            case.name,
            book_s * 1e6,
            book_d,
            book_d as f64 / book_s,
            ref_s * 1e3,
            ref_d,
            ref_d as f64 / ref_s,
            ref_s / book_s,
        );
    }
}
