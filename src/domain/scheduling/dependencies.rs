//! Deployment dependencies (`depends_on`, as Slurm's `--dependency=afterok`): a deployment
//! may name earlier deployments of its organization, in any of its clusters, that must all
//! succeed before it becomes a candidate for admission. Pure: what a submission's
//! dependencies allow ([`admit`]) and what a held deployment's dependencies, as they stand,
//! decide for it ([`resolve`]).
//!
//! Cycles cannot arise: a dependency must exist before the deployment naming it, and a
//! deployment's dependencies never change after its submission.

use serde::{Deserialize, Serialize};

use crate::domain::deployment::Status;
use crate::domain::ids::{DeploymentId, OrgId};
use crate::domain::validation::FieldError;

/// Most dependencies a deployment may name.
pub const MAX_DEPENDENCIES: usize = 32;

/// The request field the rules' errors are about.
pub const FIELD: &str = "depends_on";

/// A dependency as a submission finds it: its organization and status now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    pub org: OrgId,
    pub status: Status,
}

/// Checks the dependencies a submission to an organization `org` names, each with what was
/// found under its id (none: no such deployment), in the order given: the ones it must wait
/// for (queued or running now) with that status, or one error per dependency that can never
/// be met — unknown
/// or of another organization (the same words for both, so that ids cannot be probed), or
/// ended without succeeding. One that already succeeded is met: no wait.
pub fn admit(
    org: OrgId,
    dependencies: &[(DeploymentId, Option<Found>)],
) -> Result<Vec<(DeploymentId, Status)>, Vec<FieldError>> {
    let mut awaited = Vec::new();
    let mut errors = Vec::new();
    for &(id, found) in dependencies {
        match found {
            Some(f) if f.org == org => match f.status {
                Status::Succeeded => {}
                waiting @ (Status::Queued | Status::Running) => awaited.push((id, waiting)),
                ended => errors.push(FieldError::new(
                    FIELD,
                    format!("{id} {}: it can never succeed", ended_words(ended)),
                )),
            },
            _ => errors.push(FieldError::new(
                FIELD,
                format!("{id} is not a deployment of this organization"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(awaited)
    } else {
        Err(errors)
    }
}

/// What a held deployment's dependencies decide for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Some are still queued or running: it keeps waiting.
    Wait,
    /// All succeeded: it joins the queue.
    Release,
    /// `dependency` ended without succeeding (or no longer exists): it is cancelled, with
    /// `reason` naming it.
    Cancel {
        dependency: DeploymentId,
        reason: String,
    },
}

/// Decides for a held deployment from its dependencies' statuses now (none: the deployment
/// no longer exists), in the order it named them: cancelled for the first that ended
/// without succeeding, whatever the others are; else released when all succeeded; else it
/// waits.
pub fn resolve(dependencies: &[(DeploymentId, Option<Status>)]) -> Resolution {
    let dead = dependencies.iter().find(|(_, s)| match s {
        None => true,
        Some(s) => s.is_final() && *s != Status::Succeeded,
    });
    if let Some(&(dependency, status)) = dead {
        let what = status.map_or("no longer exists", ended_words);
        return Resolution::Cancel {
            dependency,
            reason: format!("dependency {dependency} {what}"),
        };
    }
    if dependencies
        .iter()
        .all(|(_, s)| *s == Some(Status::Succeeded))
    {
        Resolution::Release
    } else {
        Resolution::Wait
    }
}

/// How a dependency that ended without succeeding is named.
fn ended_words(status: Status) -> &'static str {
    match status {
        Status::Failed => "failed",
        Status::Stopped => "was stopped",
        Status::Cancelled => "was cancelled",
        Status::Succeeded => "succeeded",
        Status::Queued | Status::Running => "has not ended",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn id(n: u128) -> DeploymentId {
        DeploymentId(Uuid::from_u128(n))
    }

    const ORG: OrgId = OrgId(Uuid::from_u128(77));

    fn found(status: Status) -> Option<Found> {
        Some(Found { org: ORG, status })
    }

    #[test]
    fn a_submission_waits_for_what_is_live_and_not_for_what_succeeded() {
        let deps = [
            (id(1), found(Status::Running)),
            (id(2), found(Status::Succeeded)),
            (id(3), found(Status::Queued)),
        ];
        assert_eq!(
            admit(ORG, &deps),
            Ok(vec![(id(1), Status::Running), (id(3), Status::Queued)])
        );
        assert_eq!(admit(ORG, &[]), Ok(vec![]));
    }

    #[test]
    fn every_dependency_that_can_never_be_met_is_listed() {
        let foreign = Some(Found {
            org: OrgId(Uuid::from_u128(5)),
            status: Status::Running,
        });
        let deps = [
            (id(1), None),
            (id(2), found(Status::Failed)),
            (id(3), found(Status::Running)),
            (id(4), foreign),
            (id(5), found(Status::Stopped)),
            (id(6), found(Status::Cancelled)),
        ];
        let errors = admit(ORG, &deps).expect_err("refused");
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                format!("{} is not a deployment of this organization", id(1)),
                format!("{} failed: it can never succeed", id(2)),
                format!("{} is not a deployment of this organization", id(4)),
                format!("{} was stopped: it can never succeed", id(5)),
                format!("{} was cancelled: it can never succeed", id(6)),
            ]
        );
        assert!(errors.iter().all(|e| e.field == FIELD));
    }

    #[test]
    fn the_first_dependency_that_ended_badly_names_the_cancel() {
        let r = resolve(&[
            (id(1), Some(Status::Running)),
            (id(2), Some(Status::Stopped)),
            (id(3), Some(Status::Failed)),
        ]);
        assert_eq!(
            r,
            Resolution::Cancel {
                dependency: id(2),
                reason: format!("dependency {} was stopped", id(2)),
            }
        );
        let gone = resolve(&[(id(4), None)]);
        assert!(
            matches!(gone, Resolution::Cancel { reason, .. } if reason.ends_with("no longer exists"))
        );
        assert_eq!(
            resolve(&[
                (id(1), Some(Status::Succeeded)),
                (id(2), Some(Status::Queued))
            ]),
            Resolution::Wait
        );
        assert_eq!(
            resolve(&[(id(1), Some(Status::Succeeded))]),
            Resolution::Release
        );
    }

    fn arb_status() -> impl Strategy<Value = Option<Status>> {
        prop_oneof![
            1 => Just(None),
            6 => proptest::sample::select(Status::ALL.to_vec()).prop_map(Some),
        ]
    }

    proptest! {
        /// Released exactly when every dependency succeeded; cancelled exactly when one ended
        /// otherwise (naming the first such); waiting otherwise. A submission waits for
        /// exactly the live ones of its organization, and is refused exactly when one can
        /// never be met.
        #[test]
        fn resolution_follows_the_statuses(
            statuses in proptest::collection::vec(arb_status(), 0..8),
        ) {
            let deps: Vec<(DeploymentId, Option<Status>)> = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| (id(i as u128), *s))
                .collect();
            let dead = |s: &Option<Status>| s.is_none_or(|s| s.is_final() && s != Status::Succeeded);
            let first_dead = deps.iter().find(|(_, s)| dead(s)).map(|(d, _)| *d);
            match resolve(&deps) {
                Resolution::Cancel { dependency, reason } => {
                    prop_assert_eq!(Some(dependency), first_dead);
                    prop_assert!(reason.contains(&dependency.to_string()));
                }
                Resolution::Release => {
                    prop_assert!(deps.iter().all(|(_, s)| *s == Some(Status::Succeeded)));
                }
                Resolution::Wait => {
                    prop_assert!(first_dead.is_none());
                    prop_assert!(deps.iter().any(|(_, s)| matches!(s, Some(Status::Queued | Status::Running))));
                }
            }
            let found: Vec<(DeploymentId, Option<Found>)> = deps
                .iter()
                .map(|(d, s)| (*d, s.map(|status| Found { org: ORG, status })))
                .collect();
            match admit(ORG, &found) {
                Ok(awaited) => {
                    prop_assert!(first_dead.is_none());
                    let live: Vec<(DeploymentId, Status)> = deps
                        .iter()
                        .filter_map(|(d, s)| match s {
                            Some(s @ (Status::Queued | Status::Running)) => Some((*d, *s)),
                            _ => None,
                        })
                        .collect();
                    prop_assert_eq!(awaited, live);
                }
                Err(errors) => {
                    prop_assert_eq!(errors.len(), deps.iter().filter(|(_, s)| dead(s)).count());
                }
            }
        }
    }
}
