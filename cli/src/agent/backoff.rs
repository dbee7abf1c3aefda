//! When the agent tries again after its connection drops: exponential backoff from 1 s,
//! doubling to at most 60 s, with full jitter (each delay uniform between zero and the
//! current ceiling, so that the agents of a restarted server do not all come back at once),
//! starting over after a connection that lived a minute.

use std::time::Duration;

/// The first ceiling.
pub const FIRST: Duration = Duration::from_secs(1);
/// The highest ceiling.
pub const MAX: Duration = Duration::from_secs(60);
/// A connection that lived this long was a good one: the next drop starts over at [`FIRST`].
pub const RESET_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone)]
pub struct Backoff {
    /// Failed attempts since the last good connection.
    attempts: u32,
}

impl Backoff {
    pub fn new() -> Self {
        Self::default()
    }

    /// The ceiling of the next delay: [`FIRST`] × 2^attempts, at most [`MAX`].
    pub fn ceiling(&self) -> Duration {
        FIRST
            .checked_mul(1u32.checked_shl(self.attempts).unwrap_or(u32::MAX))
            .map_or(MAX, |d| d.min(MAX))
    }

    /// The delay before the next attempt, `unit` (in `[0, 1)`) of the way up to the
    /// ceiling; the ceiling then doubles.
    pub fn delay(&mut self, unit: f64) -> Duration {
        let delay = self.ceiling().mul_f64(unit.clamp(0.0, 1.0));
        self.attempts = self.attempts.saturating_add(1);
        delay
    }

    /// [`delay`](Self::delay) with a random `unit`.
    pub fn next_delay(&mut self) -> Duration {
        self.delay(fastrand::f64())
    }

    /// A connection ended after `lived`: one that lived [`RESET_AFTER`] starts over.
    pub fn ended_after(&mut self, lived: Duration) {
        if lived >= RESET_AFTER {
            self.attempts = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_one_second_to_a_minute() {
        let mut b = Backoff::new();
        let mut ceilings = vec![];
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_secs());
            b.delay(0.5);
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        // However many failures, the ceiling stays a minute (no overflow).
        for _ in 0..1000 {
            b.delay(0.5);
        }
        assert_eq!(b.ceiling(), MAX);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let mut b = Backoff::new();
        for _ in 0..4 {
            b.delay(0.0);
        }
        // The fifth attempt's ceiling is 16 s.
        assert_eq!(b.clone().delay(0.0), Duration::ZERO);
        assert_eq!(b.clone().delay(0.2), Duration::from_secs_f64(3.2));
        assert_eq!(b.clone().delay(1.0), Duration::from_secs(16));
        // Out-of-range units are clamped, never past the ceiling.
        assert_eq!(b.clone().delay(7.0), Duration::from_secs(16));
        assert_eq!(b.clone().delay(-1.0), Duration::ZERO);
        // Random delays stay in range and are not all alike.
        let delays: Vec<Duration> = (0..200).map(|_| b.clone().next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(16)));
        assert!(delays.iter().any(|d| *d < Duration::from_secs(8)));
        assert!(delays.iter().any(|d| *d >= Duration::from_secs(8)));
    }

    #[test]
    fn a_connection_that_lived_a_minute_starts_over() {
        let mut b = Backoff::new();
        for _ in 0..8 {
            b.delay(0.5);
        }
        b.ended_after(Duration::from_secs(59));
        assert_eq!(b.ceiling(), MAX, "a short connection does not reset");
        b.ended_after(RESET_AFTER);
        assert_eq!(b.ceiling(), FIRST);
        assert!(b.delay(1.0) <= FIRST);
        assert_eq!(b.ceiling(), Duration::from_secs(2));
    }
}
