//! A cluster's counters: what its batches decided since it was created (admissions,
//! preemptions, expirations, lost deployments) and how long each admitted deployment had
//! waited, as a histogram. Each committed batch adds what it decided (`engine/batch.rs`),
//! `db::counters` keeps the totals (so they outlive the cluster's object) and
//! `http::metrics` exposes them to Prometheus.

/// The inclusive upper bounds of the queue-wait histogram's buckets, in microseconds
/// (0.1 s to 1 h); one more bucket holds the waits above the last.
pub const WAIT_BOUNDS_MICROS: [i64; 9] = [
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    15_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];

/// How many buckets a histogram keeps: one per bound, and the overflow.
pub const WAIT_BUCKETS: usize = WAIT_BOUNDS_MICROS.len() + 1;

/// A cluster's counts, or what one batch adds to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Queued deployments admitted (a requeued one admitted again counts again).
    pub admissions: i64,
    /// Running deployments evicted for a higher-priority one.
    pub preemptions: i64,
    /// Running deployments failed for running past `max_runtime_seconds`.
    pub expirations: i64,
    /// Running deployments requeued because their agent was lost.
    pub lost: i64,
    /// Queue waits per bucket, not cumulative: `[i]` counts the waits above bound `i − 1` and
    /// at most bound `i`; the last, those above every bound.
    pub wait_buckets: [i64; WAIT_BUCKETS],
    /// Every wait added up, in microseconds.
    pub wait_sum_micros: i64,
}

impl Counters {
    /// Counts one admission's queue wait (a negative one, from a clock set back, as 0).
    pub fn observe_wait(&mut self, micros: i64) {
        let micros = micros.max(0);
        let bucket = WAIT_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        if let Some(n) = self.wait_buckets.get_mut(bucket) {
            *n = n.saturating_add(1);
        }
        self.wait_sum_micros = self.wait_sum_micros.saturating_add(micros);
    }

    /// How many waits the histogram holds.
    pub fn wait_count(&self) -> i64 {
        self.wait_buckets
            .iter()
            .fold(0, |a, n| a.saturating_add(*n))
    }

    /// The histogram as Prometheus has it: (upper bound in seconds, waits at most that long)
    /// for every bound, cumulative; the `+Inf` bucket is [`Self::wait_count`].
    pub fn cumulative_waits(&self) -> Vec<(f64, i64)> {
        let mut total = 0i64;
        WAIT_BOUNDS_MICROS
            .iter()
            .zip(self.wait_buckets)
            .map(|(&bound, n)| {
                total = total.saturating_add(n);
                (bound as f64 / 1e6, total)
            })
            .collect()
    }

    /// Whether there is nothing to add.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// Reads stored bucket counts, which may be fewer (a row written before a bucket was
    /// added: the missing ones are 0) or more (the extra ones count as the overflow).
    pub fn buckets_from(stored: &[i64]) -> [i64; WAIT_BUCKETS] {
        let mut buckets = [0i64; WAIT_BUCKETS];
        for (i, n) in stored.iter().enumerate() {
            let slot = i.min(WAIT_BUCKETS - 1);
            buckets[slot] = buckets[slot].saturating_add(*n);
        }
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_goes_to_the_first_bucket_whose_bound_it_does_not_exceed() {
        let mut c = Counters::default();
        for micros in [
            -5,
            0,
            100_000,
            100_001,
            2_000_000,
            3_600_000_000,
            3_600_000_001,
        ] {
            c.observe_wait(micros);
        }
        assert_eq!(c.wait_buckets, [3, 1, 0, 1, 0, 0, 0, 0, 1, 1]);
        assert_eq!(c.wait_count(), 7);
        assert_eq!(
            c.wait_sum_micros,
            100_000 + 100_001 + 2_000_000 + 3_600_000_000 + 3_600_000_001
        );
        let cumulative = c.cumulative_waits();
        assert_eq!(cumulative.first(), Some(&(0.1, 3)));
        assert_eq!(cumulative.get(3), Some(&(5.0, 5)));
        assert_eq!(cumulative.last(), Some(&(3600.0, 6)));
        assert!(!c.is_zero());
        assert!(Counters::default().is_zero());
    }

    #[test]
    fn stored_buckets_of_another_length_keep_every_wait() {
        assert_eq!(
            Counters::buckets_from(&[1, 2]),
            [1, 2, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let long: Vec<i64> = (1..=12).collect();
        let buckets = Counters::buckets_from(&long);
        assert_eq!(buckets[..9], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(buckets[9], 10 + 11 + 12);
    }
}
