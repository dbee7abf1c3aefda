//! The lifecycle transitions the scheduler drives, as pure functions: what admission,
//! preemption (counted), expiry and an ending change of a deployment, its deadline, and the
//! net changes of one scheduling call. The engine calls them on its cached rows and writes
//! what changed; nothing here does I/O or reads a clock.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};

use super::model::{Decision, DeploymentId};
use crate::domain::deployment::Status;

/// The reason of an expiry (its event's and the deployment's message).
pub const EXPIRED_REASON: &str = "ran longer than max_runtime_seconds";
/// The reason of a `preempted` event.
pub const PREEMPTED_REASON: &str = "evicted for a higher-priority deployment";
/// The reason of the `requeued` event that follows a preemption.
pub const REQUEUED_REASON: &str = "back in the queue after preemption";

/// The reason of the `requeued` event that follows a loss.
pub const LOST_REQUEUED_REASON: &str = "back in the queue after its agent was lost";

/// The final status of a deployment whose container exited with `code` (none: it never ran).
pub fn exit_status(code: Option<i32>) -> Status {
    if code == Some(0) {
        Status::Succeeded
    } else {
        Status::Failed
    }
}

/// The `exited` event's reason: the exit code, or why it never ran.
pub fn exit_reason(code: Option<i32>, output: &str) -> String {
    match code {
        Some(c) => format!("exit code {c}"),
        None => {
            let why = output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("did not run: {}", why.chars().take(500).collect::<String>())
        }
    }
}

/// What a deployment that exited keeps as its message: the last lines it wrote, or its exit
/// reason when it wrote nothing.
pub fn exit_message(code: Option<i32>, output: &str) -> String {
    if output.trim().is_empty() {
        exit_reason(code, output)
    } else {
        output.to_string()
    }
}

/// What a transition reads and changes of a deployment's record, borrowed from it.
pub struct Progress<'a> {
    pub status: &'a mut Status,
    pub max_runtime_seconds: Option<i32>,
    pub admitted_at: &'a mut Option<DateTime<Utc>>,
    pub deadline_at: &'a mut Option<DateTime<Utc>>,
    pub finished_at: &'a mut Option<DateTime<Utc>>,
    pub preemptions: &'a mut i32,
    pub preempted_by: &'a mut Option<DeploymentId>,
    pub message: &'a mut Option<String>,
    pub updated_at: &'a mut DateTime<Utc>,
}

impl Progress<'_> {
    /// queued → running at `now`, with its deadline from `max_runtime_seconds`.
    pub fn admit(self, now: DateTime<Utc>) {
        *self.status = Status::Running;
        *self.admitted_at = Some(now);
        *self.updated_at = now;
        *self.deadline_at = deadline(now, self.max_runtime_seconds);
    }

    /// running → queued, evicted by `by`: one more preemption, no deadline.
    pub fn preempt(self, by: DeploymentId, now: DateTime<Utc>) {
        *self.status = Status::Queued;
        *self.admitted_at = None;
        *self.deadline_at = None;
        *self.updated_at = now;
        *self.preemptions += 1;
        *self.preempted_by = Some(by);
    }

    /// running → queued, its agent lost: back at its old place, not counted as a preemption.
    pub fn lose(self, now: DateTime<Utc>) {
        *self.status = Status::Queued;
        *self.admitted_at = None;
        *self.deadline_at = None;
        *self.updated_at = now;
    }

    /// To the final status `to` at `now`; `message`, when given, replaces the stored one.
    pub fn finish(self, to: Status, message: Option<String>, now: DateTime<Utc>) {
        *self.status = to;
        *self.finished_at = Some(now);
        *self.updated_at = now;
        *self.deadline_at = None;
        if message.is_some() {
            *self.message = message;
        }
    }
}

/// When a deployment admitted at `admitted_at` must have finished, if it has a maximum
/// runtime.
pub fn deadline(
    admitted_at: DateTime<Utc>,
    max_runtime_seconds: Option<i32>,
) -> Option<DateTime<Utc>> {
    max_runtime_seconds.map(|s| admitted_at + Duration::seconds(i64::from(s)))
}

/// The running deployments past their deadline at `now`, earliest first, from the
/// (deadline, id) pairs of the running ones.
pub fn overdue(
    deadlines: &BTreeSet<(DateTime<Utc>, DeploymentId)>,
    now: DateTime<Utc>,
) -> Vec<DeploymentId> {
    // Deadlines are in order: the overdue ones are a prefix.
    deadlines
        .iter()
        .take_while(|(d, _)| *d <= now)
        .map(|(_, id)| *id)
        .collect()
}

/// The net changes of one scheduling call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Queued before, running now.
    pub admitted: Vec<DeploymentId>,
    /// Running before, queued now: (victim, the last deployment that evicted it).
    pub preempted: Vec<(DeploymentId, DeploymentId)>,
}

/// Reduces a scheduling call's decisions to their net changes, each list in the order of
/// the deployments' last decisions.
///
/// Within one call a deployment may be admitted and later preempted, or preempted and later
/// admitted again: only its state before (`status_of`, `None` for one not in the record) and
/// after counts. One that ends where it began is not a change.
pub fn settle(
    decisions: &[Decision],
    status_of: impl Fn(&DeploymentId) -> Option<Status>,
) -> Settled {
    // Each deployment's last decision: an `Admit` leaves it running, a `Preempt` (with its
    // preemptor) queued.
    let mut last: HashMap<DeploymentId, (usize, Option<DeploymentId>)> = HashMap::new();
    for (i, d) in decisions.iter().enumerate() {
        match *d {
            Decision::Admit { id } => last.insert(id, (i, None)),
            Decision::Preempt { victim, by } => last.insert(victim, (i, Some(by))),
        };
    }
    let mut last: Vec<(usize, DeploymentId, Option<DeploymentId>)> =
        last.into_iter().map(|(id, (i, by))| (i, id, by)).collect();
    last.sort_unstable_by_key(|(i, _, _)| *i);
    let mut settled = Settled::default();
    for (_, id, by) in last {
        match (status_of(&id), by) {
            (Some(Status::Queued), None) => settled.admitted.push(id),
            (Some(Status::Running), Some(by)) => settled.preempted.push((id, by)),
            // Back where it began, or not in the record.
            _ => {}
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid timestamp")
    }

    #[test]
    fn settle_keeps_only_net_changes_in_order_of_last_decisions() {
        let id = |n: u128| DeploymentId(Uuid::from_u128(n));
        let decisions = [
            Decision::Admit { id: id(3) },
            Decision::Preempt {
                victim: id(9),
                by: id(1),
            },
            Decision::Admit { id: id(1) },
            Decision::Preempt {
                victim: id(3),
                by: id(9),
            },
            Decision::Admit { id: id(9) },
            Decision::Preempt {
                victim: id(8),
                by: id(7),
            },
            Decision::Admit { id: id(7) },
        ];
        let status = |d: &DeploymentId| match d.0.as_u128() {
            3 | 1 | 7 => Some(Status::Queued),
            9 | 8 => Some(Status::Running),
            _ => None,
        };
        // 3 was admitted then evicted (back where it began), 9 evicted then re-admitted.
        assert_eq!(
            settle(&decisions, status),
            Settled {
                admitted: vec![id(1), id(7)],
                preempted: vec![(id(8), id(7))],
            }
        );
    }

    #[test]
    fn transitions_set_what_they_say() {
        let (mut status, mut admitted, mut deadline_at, mut finished) =
            (Status::Queued, None, None, None);
        let (mut preemptions, mut by, mut message, mut updated) =
            (0, None, Some("m".to_string()), t(0));
        macro_rules! progress {
            () => {
                Progress {
                    status: &mut status,
                    max_runtime_seconds: Some(100),
                    admitted_at: &mut admitted,
                    deadline_at: &mut deadline_at,
                    finished_at: &mut finished,
                    preemptions: &mut preemptions,
                    preempted_by: &mut by,
                    message: &mut message,
                    updated_at: &mut updated,
                }
            };
        }
        progress!().admit(t(10));
        assert_eq!(
            (status, admitted, deadline_at, updated),
            (Status::Running, Some(t(10)), Some(t(110)), t(10))
        );
        let other = DeploymentId(Uuid::from_u128(5));
        progress!().preempt(other, t(20));
        assert_eq!(
            (status, admitted, deadline_at, preemptions, by),
            (Status::Queued, None, None, 1, Some(other))
        );
        progress!().admit(t(30));
        progress!().finish(Status::Failed, None, t(40));
        assert_eq!(
            (status, finished, deadline_at, message.as_deref()),
            (Status::Failed, Some(t(40)), None, Some("m"))
        );
        progress!().finish(Status::Failed, Some(EXPIRED_REASON.into()), t(50));
        assert_eq!(message.as_deref(), Some(EXPIRED_REASON));

        let deadlines: BTreeSet<_> =
            [(t(5), other), (t(9), DeploymentId(Uuid::from_u128(6)))].into();
        assert_eq!(overdue(&deadlines, t(5)), vec![other]);
        assert_eq!(deadline(t(0), None), None);
    }
}
