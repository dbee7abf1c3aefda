//! The live cache's held deployments: what each still waits for, who waits for each
//! dependency, and what is known of the dependencies of other clusters (as the batch that
//! read them found them). Applies [`dependencies::resolve`] to them in each batch: released
//! into the queue, or cancelled with the dependency named, which cascades within the batch.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::Live;
use crate::db::dependencies::HeldDependency;
use crate::db::deployments::DeploymentRow;
use crate::domain::deployment::{EventKind, Status};
use crate::domain::ids::DeploymentId;
use crate::domain::scheduling::dependencies::{self, Found, Resolution};
use crate::engine::batch::{event, Batch};

/// The held deployments of a cluster (see the module documentation).
#[derive(Debug, Default)]
pub(in crate::engine) struct Held {
    /// Each held deployment's dependencies that had not succeeded when last read, in the
    /// order it named them.
    awaited: HashMap<DeploymentId, Vec<DeploymentId>>,
    /// The held deployments waiting for each dependency.
    dependents: HashMap<DeploymentId, Vec<DeploymentId>>,
    /// The status of each awaited dependency when last known (none: it does not exist). A
    /// dependency of this cluster's is current in the rows as long as it is live.
    known: HashMap<DeploymentId, Option<Status>>,
    /// Held deployments whose dependencies may have moved: resolved in the next batch.
    unresolved: BTreeSet<DeploymentId>,
}

impl Held {
    /// The held deployments of a cluster as read (`db::dependencies::held`); every one is
    /// resolved in the next batch, since their dependencies may have ended since.
    pub(super) fn read(dependencies: Vec<HeldDependency>) -> Self {
        let mut held = Held::default();
        for (id, dependency, status) in dependencies {
            let awaited = held.awaited.entry(id).or_default();
            held.unresolved.insert(id);
            // A dependency that succeeded is met for good.
            if status != Some(Status::Succeeded) {
                awaited.push(dependency);
                held.dependents.entry(dependency).or_default().push(id);
                held.known.insert(dependency, status);
            }
        }
        held
    }

    /// Whether `id` is held.
    pub(super) fn holds(&self, id: &DeploymentId) -> bool {
        self.awaited.contains_key(id)
    }

    /// Holds a new submission for `awaited` (each with what the batch found of it).
    fn add(&mut self, id: DeploymentId, awaited: Vec<(DeploymentId, Status)>) {
        for &(dependency, status) in &awaited {
            self.dependents.entry(dependency).or_default().push(id);
            self.known.insert(dependency, Some(status));
        }
        self.awaited
            .insert(id, awaited.into_iter().map(|(d, _)| d).collect());
        // A dependency of this cluster may end later in the same batch.
        self.unresolved.insert(id);
    }

    /// Forgets a deployment that is no longer held (released or ended).
    fn forget(&mut self, id: &DeploymentId) {
        self.unresolved.remove(id);
        for dependency in self.awaited.remove(id).unwrap_or_default() {
            if let Some(waiting) = self.dependents.get_mut(&dependency) {
                waiting.retain(|w| w != id);
                if waiting.is_empty() {
                    self.dependents.remove(&dependency);
                    self.known.remove(&dependency);
                }
            }
        }
    }

    /// A deployment of this cluster ended as `status`: the ones waiting for it must be
    /// resolved, and it is forgotten if it was itself held.
    pub(super) fn ended(&mut self, id: &DeploymentId, status: Status) {
        self.forget(id);
        if let Some(waiting) = self.dependents.get(id) {
            self.known.insert(*id, Some(status));
            self.unresolved.extend(waiting.iter().copied());
        }
    }
}

impl Live {
    /// Whether `id` is held for its dependencies.
    #[cfg(test)]
    pub(in crate::engine) fn is_held(&self, id: &DeploymentId) -> bool {
        self.held.holds(id)
    }

    /// What a submission finds of its dependency `id`: this cluster's row when it has it
    /// (current within the batch), else what the batch read.
    pub(in crate::engine) fn dependency(
        &self,
        id: &DeploymentId,
        read: &HashMap<DeploymentId, Found>,
    ) -> Option<Found> {
        match self.row(id) {
            Some(r) => Some(Found {
                org: r.org_id,
                status: r.status,
            }),
            None => read.get(id).copied(),
        }
    }

    /// Adds a new submission's row, held for `awaited` when some dependencies have not
    /// succeeded yet.
    pub(in crate::engine) fn insert_submitted(
        &mut self,
        row: DeploymentRow,
        awaited: Option<Vec<(DeploymentId, Status)>>,
    ) {
        if let Some(awaited) = awaited {
            self.held.add(row.id, awaited);
        }
        self.insert(row);
    }

    /// Releases or cancels the held deployments whose dependencies moved (in memory), with
    /// their events; a cancel is a final status, so what waits for the cancelled one is
    /// resolved next, in the same batch.
    pub(in crate::engine) fn resolve_dependencies(
        &mut self,
        batch: &mut Batch,
        now: DateTime<Utc>,
    ) {
        while let Some(id) = self.held.unresolved.pop_first() {
            let Some(awaited) = self.held.awaited.get(&id) else {
                continue;
            };
            let statuses: Vec<(DeploymentId, Option<Status>)> = awaited
                .iter()
                .map(|d| {
                    let status = match self.row(d) {
                        Some(r) => Some(r.status),
                        None => self.held.known.get(d).copied().flatten(),
                    };
                    (*d, status)
                })
                .collect();
            match dependencies::resolve(&statuses) {
                Resolution::Wait => {}
                Resolution::Release => {
                    self.held.forget(&id);
                    self.book.release(&id, now);
                    if let Some(r) = self.rows.get_mut(&id) {
                        r.enqueued_at = now;
                        r.updated_at = now;
                    }
                    batch.released.push(id);
                    batch
                        .events
                        .push(event(id, EventKind::Released, None, None));
                }
                Resolution::Cancel { dependency, reason } => {
                    batch.events.push(event(
                        id,
                        EventKind::Cancelled,
                        Some(&reason),
                        Some(dependency),
                    ));
                    let ending = self.finish(id, Status::Cancelled, Some(reason), now);
                    batch.finishes.extend(ending);
                }
            }
        }
    }
}
