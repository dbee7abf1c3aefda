//! The two orders of scheduling, each defined once here and used by both the reference
//! scheduler and the incremental book:
//!
//! * [`QueueKey`], the queue order: effective priority descending, then `enqueued_at`
//!   ascending (FIFO), then id ascending; deployments held for their dependencies are
//!   ordered by the same key without aging ([`QueueKey::held`]), after the whole queue;
//! * [`RunKey`], the preemption (victim) order: base priority ascending, then `admitted_at`
//!   descending (the most recently admitted is evicted first), then id ascending.
//!
//! Both are total: the id breaks every tie, so the order is deterministic.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use super::model::{effective_priority, DeploymentId, Queued, Running};

/// A queued deployment's position in scheduling order (the first is considered first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKey {
    /// Base priority plus aging, as of some instant.
    pub effective: i32,
    pub enqueued_at: DateTime<Utc>,
    pub id: DeploymentId,
}

impl QueueKey {
    /// The key of `q` with its effective priority at `now`.
    pub fn of(q: &Queued, now: DateTime<Utc>) -> Self {
        Self {
            effective: effective_priority(q, now),
            enqueued_at: q.enqueued_at,
            id: q.id,
        }
    }

    /// The key of `q` while it is held for its dependencies: no aging (it is not waiting
    /// for the scheduler yet), so its base priority stands as the effective one.
    pub fn held(q: &Queued) -> Self {
        Self {
            effective: q.priority,
            enqueued_at: q.enqueued_at,
            id: q.id,
        }
    }
}

impl Ord for QueueKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .effective
            .cmp(&self.effective)
            .then_with(|| self.enqueued_at.cmp(&other.enqueued_at))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for QueueKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A running deployment's position in preemption order (the first is evicted first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunKey {
    /// Base priority (aging never counts here).
    pub priority: i32,
    pub admitted_at: DateTime<Utc>,
    pub id: DeploymentId,
}

impl RunKey {
    /// The key of `r`.
    pub fn of(r: &Running) -> Self {
        Self {
            priority: r.priority,
            admitted_at: r.admitted_at,
            id: r.id,
        }
    }
}

impl Ord for RunKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.admitted_at.cmp(&self.admitted_at))
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for RunKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
