//! What the scheduler reasons about: policies, deployments as it sees them, its decisions and
//! the reasons an entry waits, and the arithmetic of aging and fitting. Shared by the
//! reference scheduler, the incremental book and the lifecycle transitions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::resources::Resources;

pub use crate::domain::ids::DeploymentId;

/// Seconds a queued deployment must wait to gain one point of effective priority.
///
/// One minute is long enough that aging never reorders entries that arrive in a burst, and short
/// enough that a starved low-priority entry climbs noticeably within an hour.
pub const AGING_STEP_SECONDS: i64 = 60;

/// Upper bound on the priority boost aging can give (reached after 100 minutes of waiting).
///
/// The cap keeps aging a tie-breaker between nearby priorities: a deployment that is more than
/// 100 priority points above another is always ordered first, however long the other waited.
pub const AGING_MAX_BOOST: i32 = 100;

/// Passes of [`schedule`](super::schedule) that settle a cluster: a pass may preempt, and victims requeued by
/// one pass are considered by the next; preemption chains strictly lower the priority, so a
/// few passes always settle. [`Book::schedule`](super::Book::schedule) runs up to this many passes, stopping at the
/// first that decides nothing.
pub const MAX_PASSES: usize = 8;

/// How the queue behaves when the entry at its head does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Queueing {
    /// Later entries that fit may be admitted ahead of an earlier one that does not.
    BestEffort,
    /// Strict order: nothing may pass the first waiting entry (except entries that can never
    /// fit the cluster at all, which are skipped so that they cannot wedge the queue).
    Strict,
}

/// Per-cluster scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Queue ordering discipline.
    pub queueing: Queueing,
    /// Whether a queued deployment may evict running ones of strictly lower base priority.
    pub preemption: bool,
}

/// A deployment currently holding resources on the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Deployment id.
    pub id: DeploymentId,
    /// Base priority (higher is more important).
    pub priority: i32,
    /// Resources it holds.
    pub resources: Resources,
    /// When it was admitted; among equal priorities the newest is preempted first.
    pub admitted_at: DateTime<Utc>,
}

/// A deployment waiting for admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Deployment id.
    pub id: DeploymentId,
    /// Base priority (higher is more important); aging is added on top, see
    /// [`effective_priority`].
    pub priority: i32,
    /// Resources it requests.
    pub resources: Resources,
    /// When it entered the queue; drives FIFO order and aging.
    pub enqueued_at: DateTime<Utc>,
}

/// Everything the scheduler needs to know about one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Total allocatable resources.
    pub capacity: Resources,
    /// Scheduling policy.
    pub policy: Policy,
    /// Deployments holding resources.
    pub running: Vec<Running>,
    /// Deployments waiting, in any order.
    pub queued: Vec<Queued>,
    /// Queued deployments held until their dependencies succeed, in any order: never
    /// candidates for admission, never the head of a strict queue, shown after every other
    /// entry with [`WaitReason::WaitingForDependencies`].
    #[serde(default)]
    pub held: Vec<Queued>,
}

/// One action for the caller to apply, in the order returned by [`schedule`](super::schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// Move a queued deployment to running.
    Admit {
        /// The deployment to admit.
        id: DeploymentId,
    },
    /// Stop a running deployment and put it back in the queue with its original priority, to
    /// make room for `by` (whose `Admit` follows the preemptions).
    Preempt {
        /// The running deployment to evict.
        victim: DeploymentId,
        /// The queued deployment it makes room for.
        by: DeploymentId,
    },
}

/// Why a queued deployment is still waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// It fits the cluster but not the capacity currently free.
    WaitingForCapacity,
    /// Strict queueing: an earlier entry does not fit, so this one may not pass it.
    BlockedBehindHead,
    /// It asks for more than the cluster's total capacity on some dimension (only possible
    /// after the cluster shrank); it will never be admitted unless capacity grows.
    NeverFits,
    /// Some deployment it depends on (`depends_on`) has not succeeded yet: it is not a
    /// candidate for admission until all have.
    WaitingForDependencies,
}

/// One line of the queue as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Deployment id.
    pub id: DeploymentId,
    /// 1-based position in scheduling order.
    pub position: u32,
    /// Priority used for ordering, including aging.
    pub effective_priority: i32,
    /// Why it is waiting.
    pub reason: WaitReason,
}

/// Base priority plus aging: one point per full [`AGING_STEP_SECONDS`] waited, at most
/// [`AGING_MAX_BOOST`].
///
/// Aging only orders the queue. Preemption compares base priorities, so waiting long never
/// entitles a deployment to evict anything.
pub fn effective_priority(q: &Queued, now: DateTime<Utc>) -> i32 {
    q.priority.saturating_add(aging_boost(q.enqueued_at, now))
}

/// The aging boost (`0..=AGING_MAX_BOOST`) of an entry enqueued at `enqueued_at`, at `now`.
pub(crate) fn aging_boost(enqueued_at: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    // A clock that went backwards (enqueued_at in the future) simply means no boost yet.
    let waited = now.signed_duration_since(enqueued_at).num_seconds().max(0);
    let steps = (waited / AGING_STEP_SECONDS).min(i64::from(AGING_MAX_BOOST));
    i32::try_from(steps).unwrap_or(AGING_MAX_BOOST)
}

/// True when `request` is a valid resource amount that fits the cluster's total `capacity`,
/// i.e. it could run on an otherwise empty cluster.
pub fn can_ever_fit(capacity: &Resources, request: &Resources) -> bool {
    // Invalid (e.g. negative) requests are treated as never fitting: admitting one would let
    // the books claim free capacity that does not exist.
    request.is_valid() && request.fits_within(capacity)
}
