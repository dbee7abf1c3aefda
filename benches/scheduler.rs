//! The pure scheduler under criterion: one `schedule` call over a cluster with 100,000
//! queued deployments, (a) when a stop frees room for a handful (the common, incremental
//! case) and (b) when a resize frees room for thousands. Decisions/s = decisions per call ÷
//! time per call; the program prints both after criterion's own report.

use std::time::Instant;

use berth::domain::resources::Resources;
use berth::domain::scheduler::{schedule, ClusterState, Policy, Queued, Queueing, Running};
use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, Criterion};
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

fn bench(c: &mut Criterion) {
    // (a) 2,000 mCPU free after a stop: a few admissions.
    let few = state(102_000, false);
    // (b) 1,000,000 mCPU free after a resize: thousands of admissions.
    let many = state(1_100_000, false);
    let mut group = c.benchmark_group("schedule_100k_queued");
    group.sample_size(10);
    group.bench_function("few_admissions", |b| b.iter(|| schedule(&few, now())));
    group.bench_function("thousands_of_admissions", |b| {
        b.iter(|| schedule(&many, now()))
    });
    group.bench_function("preemption_on_few", |b| {
        let s = state(102_000, true);
        b.iter(|| schedule(&s, now()))
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    for (label, s) in [
        ("few admissions", state(102_000, false)),
        ("thousands of admissions", state(1_100_000, false)),
    ] {
        let runs = 10;
        let start = Instant::now();
        let mut decisions = 0;
        for _ in 0..runs {
            decisions = schedule(&s, now()).len();
        }
        let per_call = start.elapsed().as_secs_f64() / runs as f64;
        println!(
            "{label}: {decisions} decisions per call over {QUEUED} queued, {:.1} ms per call, {:.0} decisions/s",
            per_call * 1000.0,
            decisions as f64 / per_call
        );
    }
}
