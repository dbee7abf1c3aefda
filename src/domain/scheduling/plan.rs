//! What a submission would meet now (a dry run): the very scheduling pass a submission
//! gets, on a copy of the cluster's [`Book`] with the new entry in it. Nothing is changed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::lifecycle::settle;
use super::model::{can_ever_fit, WaitReason};
use super::{Book, BookEntry};
use crate::domain::deployment::Status;
use crate::domain::ids::DeploymentId;

/// What would happen to a submission now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Plan {
    /// Admitted at once, evicting these running deployments (none when it fits as it is).
    Admitted { preempts: Vec<DeploymentId> },
    /// Queued at `position` (1-based), waiting for `reason`.
    Queued { position: u32, reason: WaitReason },
    /// Larger than the whole cluster on some dimension: it could never run.
    NeverFits,
}

/// What `entry` (queued, not yet in the book) would meet if it were submitted at `now`, with
/// `status_of` the current status of the book's deployments; `held` when some of its
/// dependencies have not succeeded yet (it would wait for them, behind the whole queue).
/// O(n) for the copy.
pub fn plan(
    book: &Book,
    entry: BookEntry,
    held: bool,
    now: DateTime<Utc>,
    status_of: impl Fn(&DeploymentId) -> Option<Status>,
) -> Plan {
    if !can_ever_fit(&book.capacity(), &entry.resources) {
        return Plan::NeverFits;
    }
    let mut copy = book.clone();
    let entry = BookEntry {
        admitted_at: None,
        ..entry
    };
    if held {
        copy.advance(now);
        copy.hold(entry);
        return Plan::Queued {
            position: copy.position(&entry.id).unwrap_or(1),
            reason: WaitReason::WaitingForDependencies,
        };
    }
    copy.insert(entry);
    let decisions = copy.schedule(now);
    let settled = settle(&decisions, |id| {
        if *id == entry.id {
            Some(Status::Queued)
        } else {
            status_of(id)
        }
    });
    if settled.admitted.contains(&entry.id) {
        return Plan::Admitted {
            preempts: settled
                .preempted
                .iter()
                .map(|(victim, _)| *victim)
                .collect(),
        };
    }
    let position = copy.position(&entry.id).unwrap_or(1);
    let reason = copy
        .queue_page(position as usize - 1, 1)
        .first()
        .map_or(WaitReason::WaitingForCapacity, |q| q.reason);
    Plan::Queued { position, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::resources::Resources;
    use crate::domain::scheduling::{Policy, Queueing};
    use uuid::Uuid;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    fn entry(n: u128, priority: i32, cpu: i64, admitted: Option<i64>) -> BookEntry {
        BookEntry {
            id: DeploymentId(Uuid::from_u128(n)),
            priority,
            resources: Resources::new(cpu, 0, 0),
            enqueued_at: t(0),
            admitted_at: admitted.map(t),
        }
    }

    fn book(preemption: bool, queueing: Queueing, entries: Vec<BookEntry>) -> Book {
        let policy = Policy {
            queueing,
            preemption,
        };
        Book::new(Resources::new(1000, 0, 0), policy, entries, t(0))
    }

    fn status(b: &Book) -> impl Fn(&DeploymentId) -> Option<Status> + '_ {
        |id| {
            b.get(id).map(|e| {
                if e.admitted_at.is_some() {
                    Status::Running
                } else {
                    Status::Queued
                }
            })
        }
    }

    #[test]
    fn what_fits_is_admitted_and_nothing_changes() {
        let b = book(
            false,
            Queueing::BestEffort,
            vec![entry(1, 500, 600, Some(0))],
        );
        let before = b.state();
        let p = plan(&b, entry(9, 500, 400, None), false, t(1), status(&b));
        assert_eq!(p, Plan::Admitted { preempts: vec![] });
        assert_eq!(b.state(), before, "the book itself is untouched");
        assert!(b.get(&DeploymentId(Uuid::from_u128(9))).is_none());
    }

    #[test]
    fn what_waits_gets_its_position_and_reason() {
        let b = book(
            false,
            Queueing::Strict,
            vec![entry(1, 500, 900, Some(0)), entry(2, 600, 500, None)],
        );
        // Behind the head (priority 600) under strict queueing, though 100 would fit.
        let p = plan(&b, entry(9, 500, 100, None), false, t(1), status(&b));
        assert_eq!(
            p,
            Plan::Queued {
                position: 2,
                reason: WaitReason::BlockedBehindHead
            }
        );
        // A higher priority goes first, and waits for capacity.
        let p = plan(&b, entry(9, 700, 500, None), false, t(1), status(&b));
        assert_eq!(
            p,
            Plan::Queued {
                position: 1,
                reason: WaitReason::WaitingForCapacity
            }
        );
    }

    #[test]
    fn preemption_names_its_victims_and_the_oversized_never_fit() {
        let b = book(
            true,
            Queueing::BestEffort,
            vec![entry(1, 100, 600, Some(0)), entry(2, 200, 400, Some(0))],
        );
        let p = plan(&b, entry(9, 900, 500, None), false, t(1), status(&b));
        assert_eq!(
            p,
            Plan::Admitted {
                preempts: vec![DeploymentId(Uuid::from_u128(1))]
            }
        );
        assert_eq!(
            plan(&b, entry(9, 900, 1001, None), false, t(1), status(&b)),
            Plan::NeverFits
        );
    }

    #[test]
    fn what_awaits_its_dependencies_waits_behind_the_whole_queue() {
        let mut b = book(
            false,
            Queueing::Strict,
            vec![entry(1, 500, 900, Some(0)), entry(2, 100, 500, None)],
        );
        b.hold(entry(3, 900, 100, None));
        // It would fit now, and outranks the queue: held, it waits anyway, after the queue
        // and after the held entry of higher priority.
        let p = plan(&b, entry(9, 800, 50, None), true, t(1), status(&b));
        assert_eq!(
            p,
            Plan::Queued {
                position: 3,
                reason: WaitReason::WaitingForDependencies
            }
        );
        assert!(!b.is_held(&DeploymentId(Uuid::from_u128(9))));
        // Larger than the cluster, it never fits whatever it waits for.
        assert_eq!(
            plan(&b, entry(9, 800, 5000, None), true, t(1), status(&b)),
            Plan::NeverFits
        );
    }
}
