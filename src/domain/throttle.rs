//! Sliding-window failure throttling (logins, invite acceptance).
//!
//! The book is pure: the caller passes `now`. The edge keeps one book per Durable Object
//! shard so the limit holds across isolates; native tests keep one in memory.
//!
//! Each [`Key`] has its own limit. An account (or a user) gets few failures, which is what
//! keeps guessing its password slow. A client address gets far more: many people can share
//! one (an office NAT, a CI runner), and a few of them mistyping must not lock out the rest;
//! the address limit only bounds how many guesses one source sprays over many accounts
//! (OWASP's authentication advice: lock per account, limit per address much more loosely).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

use super::ids::UserId;

/// Failed logins to one account, or failed invite acceptances by one user, in a window.
pub const MAX_ACCOUNT_FAILURES: usize = 5;
/// Failed logins from one client address in a window: 20 times the account limit, so that
/// 20 people behind one address can each exhaust their own before the address is refused.
pub const MAX_ADDRESS_FAILURES: usize = 100;
/// The sliding window.
pub const WINDOW_SECONDS: i64 = 15 * 60;

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Key {
    /// Logins to one account, by a fingerprint of its e-mail address (so records stay small
    /// whatever is typed, and hold no addresses).
    LoginAccount(String),
    /// Logins from one client address.
    LoginAddress(String),
    /// Invite acceptances by one (authenticated) user; never by address, so one user's
    /// mistyped codes cost nobody else anything. Codes are 256-bit secrets: the limit stops
    /// a user hammering the endpoint, not a guess that could succeed.
    InviteUser(UserId),
}

impl Key {
    /// How many failures the key may have inside the window before it is refused.
    pub fn max_failures(&self) -> usize {
        match self {
            Self::LoginAccount(_) | Self::InviteUser(_) => MAX_ACCOUNT_FAILURES,
            Self::LoginAddress(_) => MAX_ADDRESS_FAILURES,
        }
    }

    /// The name its record is stored under.
    pub fn name(&self) -> String {
        match self {
            Self::LoginAccount(fingerprint) => format!("login:acct:{fingerprint}"),
            Self::LoginAddress(ip) => format!("login:ip:{ip}"),
            Self::InviteUser(user) => format!("invite:user:{user}"),
        }
    }
}

/// Failure timestamps per key name, oldest first.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ThrottleBook {
    failures: HashMap<String, VecDeque<DateTime<Utc>>>,
}

impl ThrottleBook {
    /// `Some(seconds)` to wait when any of `keys` is over its limit, else `None`.
    pub fn retry_after(&self, keys: &[Key], now: DateTime<Utc>) -> Option<u64> {
        keys.iter()
            .filter_map(|k| Some((k.max_failures(), self.failures.get(&k.name())?)))
            .filter_map(|(max, times)| {
                let recent: Vec<_> = times.iter().filter(|t| **t > window_start(now)).collect();
                if recent.len() < max {
                    return None;
                }
                // Allowed again once the oldest failure that keeps it at the limit leaves the window.
                let pivot = recent[recent.len() - max];
                let wait = (*pivot + Duration::seconds(WINDOW_SECONDS) - now).num_seconds();
                Some(wait.max(1) as u64)
            })
            .max()
    }

    /// Records one failure against every key (keeping as many as its limit looks at).
    pub fn record_failure(&mut self, keys: &[Key], now: DateTime<Utc>) {
        for key in keys {
            let times = self.failures.entry(key.name()).or_default();
            times.push_back(now);
            while times.len() > key.max_failures() {
                times.pop_front();
            }
        }
    }

    /// Forgets a key's failures (a successful login clears the account key).
    pub fn reset(&mut self, key: &Key) {
        self.failures.remove(&key.name());
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

    /// A book holding just these records, by key name (a Durable Object stores one record
    /// per key).
    pub fn from_records(
        records: impl IntoIterator<Item = (String, VecDeque<DateTime<Utc>>)>,
    ) -> Self {
        Self {
            failures: records.into_iter().filter(|(_, t)| !t.is_empty()).collect(),
        }
    }

    /// The record stored under a key name, if it has failures on record.
    pub fn record(&self, name: &str) -> Option<&VecDeque<DateTime<Utc>>> {
        self.failures.get(name)
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

    fn account(a: &str) -> Key {
        Key::LoginAccount(a.to_string())
    }

    fn address(ip: &str) -> Key {
        Key::LoginAddress(ip.to_string())
    }

    #[test]
    fn five_failures_lock_an_account_until_the_oldest_leaves_the_window() {
        let mut book = ThrottleBook::default();
        let keys = [account("a")];
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
    fn an_address_takes_a_hundred_failures_and_its_accounts_only_their_own() {
        let mut book = ThrottleBook::default();
        for i in 0..99 {
            let keys = [account(&format!("user{i}")), address("10.0.0.1")];
            book.record_failure(&keys, t(i));
        }
        // Another account behind the same address is not refused...
        assert_eq!(
            book.retry_after(&[account("other"), address("10.0.0.1")], t(99)),
            None
        );
        // ...until the address itself reaches its limit.
        book.record_failure(&[account("user99"), address("10.0.0.1")], t(99));
        assert_eq!(
            book.retry_after(&[account("other"), address("10.0.0.1")], t(100)),
            Some(900 - 100)
        );
        assert_eq!(book.retry_after(&[address("10.0.0.2")], t(100)), None);
        // A record keeps only what its limit looks at.
        assert_eq!(
            book.record(&address("10.0.0.1").name()).map(|r| r.len()),
            Some(100)
        );
        for _ in 0..7 {
            book.record_failure(&[account("user0")], t(200));
        }
        assert_eq!(
            book.record(&account("user0").name()).map(|r| r.len()),
            Some(5)
        );
    }

    #[test]
    fn invite_failures_count_against_the_user() {
        let mut book = ThrottleBook::default();
        let (me, you) = (UserId::new(), UserId::new());
        for i in 0..5 {
            book.record_failure(&[Key::InviteUser(me)], t(i));
        }
        assert!(book.retry_after(&[Key::InviteUser(me)], t(5)).is_some());
        assert_eq!(book.retry_after(&[Key::InviteUser(you)], t(5)), None);
    }

    #[test]
    fn any_key_over_its_limit_refuses_and_reset_clears_one_key() {
        let mut book = ThrottleBook::default();
        for i in 0..5 {
            book.record_failure(&[account("b")], t(i));
        }
        let both = [account("b"), address("1")];
        assert!(book.retry_after(&both, t(5)).is_some());
        book.reset(&account("b"));
        assert_eq!(book.retry_after(&both, t(5)), None);
    }

    #[test]
    fn key_names_keep_the_stored_format() {
        assert_eq!(account("x").name(), "login:acct:x");
        assert_eq!(address("10.0.0.1").name(), "login:ip:10.0.0.1");
        let user = UserId::new();
        assert_eq!(Key::InviteUser(user).name(), format!("invite:user:{user}"));
    }

    #[test]
    fn purge_drops_only_expired_keys() {
        let mut book = ThrottleBook::default();
        book.record_failure(&[account("old")], t(0));
        book.record_failure(&[account("new")], t(1000));
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
