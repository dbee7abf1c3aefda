//! The deployments a [`Book`] holds for their dependencies: queued, counted in the totals,
//! shown after the whole queue, but never walked by a pass (so never admitted, never the
//! head of a strict queue, never aged) until released into the queue.

use chrono::{DateTime, Utc};

use super::super::model::{DeploymentId, Queued};
use super::super::order::QueueKey;
use super::super::wide::{add, sub, wide};
use super::parts::{weight, Waiting};
use super::{Book, BookEntry};

impl Book {
    /// Adds a queued deployment held for its dependencies (replacing any with the same id;
    /// `admitted_at` is ignored). O(log h).
    pub fn hold(&mut self, entry: BookEntry) {
        self.remove(&entry.id);
        let key = held_key(&entry);
        self.held.insert_new(
            key,
            Waiting {
                priority: entry.priority,
                resources: entry.resources,
            },
            weight(&entry.id),
        );
        self.held_keys.insert(entry.id, key);
        self.queued_demand = add(self.queued_demand, wide(&entry.resources));
    }

    /// Moves a held deployment into the queue as if it had been enqueued at `enqueued_at`
    /// (its dependencies all succeeded then); false if it is not held. O(log n).
    pub fn release(&mut self, id: &DeploymentId, enqueued_at: DateTime<Utc>) -> bool {
        let Some(entry) = self.unhold(id) else {
            return false;
        };
        self.insert(BookEntry {
            enqueued_at,
            admitted_at: None,
            ..entry
        });
        true
    }

    /// Whether `id` is held for its dependencies.
    pub fn is_held(&self, id: &DeploymentId) -> bool {
        self.held_keys.contains_key(id)
    }

    /// Takes a held deployment out of the book.
    pub(super) fn unhold(&mut self, id: &DeploymentId) -> Option<BookEntry> {
        let key = self.held_keys.remove(id)?;
        let w = self.held.remove(&key)?;
        self.queued_demand = sub(self.queued_demand, wide(&w.resources));
        Some(entry(&key, &w))
    }

    /// A held deployment, if `id` is one.
    pub(super) fn held_entry(&self, id: &DeploymentId) -> Option<BookEntry> {
        let key = self.held_keys.get(id)?;
        Some(entry(key, self.held.get(key)?))
    }

    /// 1-based position of a held deployment: after the whole queue, in held order.
    pub(super) fn held_position(&self, id: &DeploymentId) -> Option<u32> {
        let key = self.held_keys.get(id)?;
        let rank = self.queue.len() + self.held.rank(key);
        Some(u32::try_from(rank + 1).unwrap_or(u32::MAX))
    }

    /// The held deployments in held order, as the scheduler's model has them.
    pub(super) fn held_queued(&self) -> impl Iterator<Item = Queued> + '_ {
        self.held.iter().map(|(k, w)| Queued {
            id: k.id,
            priority: w.priority,
            resources: w.resources,
            enqueued_at: k.enqueued_at,
        })
    }
}

/// The held entry of `key`.
pub(super) fn entry(key: &QueueKey, w: &Waiting) -> BookEntry {
    BookEntry {
        id: key.id,
        priority: w.priority,
        resources: w.resources,
        enqueued_at: key.enqueued_at,
        admitted_at: None,
    }
}

/// Where a held entry goes in held order ([`QueueKey::held`]).
fn held_key(e: &BookEntry) -> QueueKey {
    QueueKey::held(&Queued {
        id: e.id,
        priority: e.priority,
        resources: e.resources,
        enqueued_at: e.enqueued_at,
    })
}
