//! Sliding-window failure throttling (logins, invite acceptance).
//!
//! The book is pure: the caller passes `now`. The edge keeps one book per Durable Object
//! shard so the limit holds across isolates; native tests keep one in memory.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// How many failures a key may have inside the window before it is refused.
pub const MAX_FAILURES: usize = 5;
/// The sliding window.
pub const WINDOW_SECONDS: i64 = 15 * 60;

/// Failure timestamps per key, oldest first.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ThrottleBook {
    failures: HashMap<String, VecDeque<DateTime<Utc>>>,
}

impl ThrottleBook {
    /// `Some(seconds)` to wait when any of `keys` is over the limit, else `None`.
    pub fn retry_after(&self, keys: &[String], now: DateTime<Utc>) -> Option<u64> {
        keys.iter()
            .filter_map(|k| self.failures.get(k))
            .filter_map(|times| {
                let recent: Vec<_> = times.iter().filter(|t| **t > window_start(now)).collect();
                if recent.len() < MAX_FAILURES {
                    return None;
                }
                // Allowed again once the oldest failure that keeps it at the limit leaves the window.
                let pivot = recent[recent.len() - MAX_FAILURES];
                let wait = (*pivot + Duration::seconds(WINDOW_SECONDS) - now).num_seconds();
                Some(wait.max(1) as u64)
            })
            .max()
    }

    /// Records one failure against every key.
    pub fn record_failure(&mut self, keys: &[String], now: DateTime<Utc>) {
        for key in keys {
            let times = self.failures.entry(key.clone()).or_default();
            times.push_back(now);
            while times.len() > MAX_FAILURES * 2 {
                times.pop_front();
            }
        }
    }

    /// Forgets a key's failures (a successful login clears the account key).
    pub fn reset(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// Drops every failure that left the window; returns how many keys were removed.
    pub fn purge(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.failures.len();
        let start = window_start(now);
        self.failures.retain(|_, times| {
            times.retain(|t| *t > start);
            !times.is_empty()
        });
        before - self.failures.len()
    }

    /// A book holding just these keys' records (a Durable Object stores one record per key).
    pub fn from_records(
        records: impl IntoIterator<Item = (String, VecDeque<DateTime<Utc>>)>,
    ) -> Self {
        Self {
            failures: records.into_iter().filter(|(_, t)| !t.is_empty()).collect(),
        }
    }

    /// The record of one key, if it has failures on record.
    pub fn record(&self, key: &str) -> Option<&VecDeque<DateTime<Utc>>> {
        self.failures.get(key)
    }

    /// Number of keys with failures on record.
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// True when nothing is on record.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::seconds(WINDOW_SECONDS)
}

/// A stable shard number for a key, so every isolate sends the same key to the same object.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    // FNV-1a: stable across builds and targets, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("valid time")
    }

    #[test]
    fn five_failures_lock_the_key_until_the_oldest_leaves_the_window() {
        let mut book = ThrottleBook::default();
        let keys = vec!["acct:a".to_string()];
        for i in 0..4 {
            book.record_failure(&keys, t(i));
            assert_eq!(book.retry_after(&keys, t(i)), None);
        }
        book.record_failure(&keys, t(10));
        assert_eq!(book.retry_after(&keys, t(10)), Some(900 - 10));
        assert_eq!(book.retry_after(&keys, t(899)), Some(1));
        assert_eq!(book.retry_after(&keys, t(900)), None);
    }

    #[test]
    fn any_key_over_the_limit_refuses_and_reset_clears_one_key() {
        let mut book = ThrottleBook::default();
        let ip = vec!["ip:1".to_string()];
        for i in 0..5 {
            book.record_failure(&ip, t(i));
        }
        let both = vec!["acct:b".to_string(), "ip:1".to_string()];
        assert!(book.retry_after(&both, t(5)).is_some());
        book.reset("ip:1");
        assert_eq!(book.retry_after(&both, t(5)), None);
    }

    #[test]
    fn purge_drops_only_expired_keys() {
        let mut book = ThrottleBook::default();
        book.record_failure(&["old".into()], t(0));
        book.record_failure(&["new".into()], t(1000));
        assert_eq!(book.purge(t(1000)), 1);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(
            shard_of("login:acct:a@b.c", 16),
            shard_of("login:acct:a@b.c", 16)
        );
        assert!(shard_of("x", 16) < 16);
        assert_eq!(shard_of("x", 0), 0);
    }
}
