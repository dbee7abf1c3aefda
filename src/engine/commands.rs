//! Applying each command of a batch to the locked cluster and the live cache, one function
//! per command. A command only collects its writes (in [`Batch`]); the batch sends them.
//!
//! Every function answers `Ok(Ok(subject))` when applied, `Ok(Err(_))` when it refuses this
//! command alone (nothing was written for it), and `Err(_)` for a database failure that
//! aborts the batch.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::batch::{event, Batch, Subject};
use super::live::Live;
use super::{Command, EngineError};
use crate::auth::Caller;
use crate::db::agents as agents_db;
use crate::db::clusters::{self, ClusterRow};
use crate::db::deployments::{self, NewDeployment};
use crate::domain::agent::Report;
use crate::domain::deployment::{EventKind, Status};
use crate::domain::ids::{ClusterId, DeploymentId};
use crate::domain::resources::Resources;
use crate::domain::scheduling::{self, dependencies, Queueing};
use crate::domain::validation::FieldError;

/// A command's result inside a batch; see the module documentation.
type Applied = Result<Result<Subject, EngineError>, EngineError>;

/// Applies one command.
pub(super) async fn apply(
    tx: &Client,
    c: &mut ClusterRow,
    live: &mut Live,
    batch: &mut Batch,
    cmd: Command,
    now: DateTime<Utc>,
) -> Applied {
    match cmd {
        Command::Tick { seen } => {
            if let Some(seen) = seen {
                live.heard(batch, &seen, now);
                batch.heard = true;
            }
            Ok(Ok(Subject::Tick))
        }
        Command::AgentHello {
            token,
            info,
            capacity,
            running,
            exited,
        } => {
            let connecting = agents_db::Connecting {
                cluster: c.id,
                token,
                name: &info.name,
                version: &info.version,
                capacity,
            };
            let agent = agents_db::connected(tx, &connecting, now).await?;
            live.agent_joined(batch, &agent, &running, &exited, c.agent_grace_seconds, now);
            Ok(Ok(Subject::Agent(Box::new(agent))))
        }
        Command::AgentReport { agent, report } => {
            match report {
                Report::Started { deployment_id } => {
                    live.agent_started(batch, agent, deployment_id, now)
                }
                Report::Exited(exit) => live.agent_exited(batch, agent, exit, now),
            }
            Ok(Ok(Subject::Noted))
        }
        Command::AgentGone { agent, since } => {
            live.agent_gone(batch, agent, since, now);
            Ok(Ok(Subject::Noted))
        }
        Command::DeleteCluster => delete_cluster(tx, c.id, live, batch).await,
        Command::UpdateCluster {
            name,
            capacity,
            queueing,
            preemption,
            agent_grace_seconds,
        } => {
            let update = Update {
                name,
                capacity,
                queueing,
                preemption,
                agent_grace_seconds,
            };
            update_cluster(tx, c, live, update, now).await
        }
        Command::Submit { deployment, by } => submit(tx, c, live, batch, deployment, &by).await,
        // Nothing to write: planned after the batch is scheduled, on what it leaves.
        // A dependency that can never be met is refused as it would be; a request larger
        // than the cluster is planned (`never_fits`).
        Command::Plan { deployment, .. } => Ok(match awaited(c, live, batch, &deployment) {
            Ok(awaited) => Ok(Subject::Plan(Box::new(deployment), !awaited.is_empty())),
            Err(errors) => Err(EngineError::Validation(errors)),
        }),
        Command::Cancel { id } => {
            let user = Some("cancelled by a user".to_string());
            let ending = Ending {
                id,
                from: Status::Queued,
                to: Status::Cancelled,
                kind: EventKind::Cancelled,
                verb: "cancel",
                reason: user,
                message: None,
            };
            ending.apply(tx, c.id, live, batch, now).await
        }
        Command::Stop { id } => {
            let user = Some("stopped by a user".to_string());
            let ending = Ending {
                id,
                from: Status::Running,
                to: Status::Stopped,
                kind: EventKind::Stopped,
                verb: "stop",
                reason: user,
                message: None,
            };
            ending.apply(tx, c.id, live, batch, now).await
        }
        Command::Finish {
            id,
            succeeded,
            message,
        } => {
            let (to, kind) = if succeeded {
                (Status::Succeeded, EventKind::Succeeded)
            } else {
                (Status::Failed, EventKind::Failed)
            };
            let ending = Ending {
                id,
                from: Status::Running,
                to,
                kind,
                verb: "finish",
                reason: message.clone(),
                message,
            };
            ending.apply(tx, c.id, live, batch, now).await
        }
        Command::SetPriority { id, priority } => {
            set_priority(tx, c, live, batch, id, priority, now).await
        }
    }
}

/// Deletes the cluster, if nothing is queued or running on it and no deployment of another
/// cluster waits for one of its deployments (their records go with it: a dependency that
/// succeeded would look gone, and cancel what waits for it).
async fn delete_cluster(
    tx: &Client,
    cluster: ClusterId,
    live: &Live,
    batch: &mut Batch,
) -> Applied {
    if live.has_rows() || !batch.inserts.is_empty() {
        return Ok(Err(EngineError::Conflict(
            "the cluster still has queued or running deployments".into(),
        )));
    }
    if crate::db::dependencies::awaited_elsewhere(tx, cluster).await? {
        return Ok(Err(EngineError::Conflict(
            "deployments of other clusters are waiting for deployments of this cluster".into(),
        )));
    }
    batch.deleted = true;
    Ok(Ok(Subject::Deleted))
}

/// The fields of an `UpdateCluster`.
struct Update {
    name: Option<String>,
    capacity: Option<Resources>,
    queueing: Option<Queueing>,
    preemption: Option<bool>,
    agent_grace_seconds: Option<i32>,
}

/// Renames, resizes or changes the policy of the locked cluster `c`.
async fn update_cluster(
    tx: &Client,
    c: &mut ClusterRow,
    live: &mut Live,
    update: Update,
    now: DateTime<Utc>,
) -> Applied {
    // Every check before any change: a refused update must leave `c` as it was (the rest
    // of the batch schedules against it).
    if let Some(cap) = update.capacity {
        let allocated = live.allocated();
        if !allocated.fits_within(&cap) {
            return Ok(Err(EngineError::Conflict(format!(
                "cannot shrink below what is allocated ({} mCPU, {} MiB, {} GPUs)",
                allocated.cpu_millis, allocated.memory_mib, allocated.gpus
            ))));
        }
    }
    if let Some(name) = &update.name {
        if *name != c.name && clusters::name_taken(tx, c.org_id, name).await? {
            // Checked before the write: a violation would abort the whole batch's transaction.
            return Ok(Err(EngineError::Conflict(
                crate::db::unique_violation("clusters_org_name_key").into(),
            )));
        }
    }
    c.capacity = update.capacity.unwrap_or(c.capacity);
    c.name = update.name.unwrap_or_else(|| c.name.clone());
    c.policy.queueing = update.queueing.unwrap_or(c.policy.queueing);
    c.policy.preemption = update.preemption.unwrap_or(c.policy.preemption);
    c.agent_grace_seconds = update.agent_grace_seconds.unwrap_or(c.agent_grace_seconds);
    *c = clusters::update(tx, c, now).await?;
    live.follow(c);
    Ok(Ok(Subject::Cluster))
}

/// Queues a new deployment (written with the batch), or replays the earlier submission
/// with the same Idempotency-Key.
async fn submit(
    tx: &Client,
    c: &ClusterRow,
    live: &Live,
    batch: &mut Batch,
    mut new: NewDeployment,
    by: &Caller,
) -> Applied {
    new.created_by = by.user_id();
    if let Some(replay) = replay(tx, c, batch, &new).await? {
        return Ok(replay);
    }
    let awaited = match checked(c, live, batch, &new) {
        Ok(awaited) => awaited,
        Err(errors) => return Ok(Err(EngineError::Validation(errors))),
    };
    let id = DeploymentId::new();
    if !awaited.is_empty() {
        batch.awaiting.insert(id, awaited);
    }
    batch.inserts.push((id, new));
    Ok(Ok(Subject::Deployment {
        id,
        replayed: false,
    }))
}

/// What the cluster and the submission's dependencies allow: the dependencies it must wait
/// for (each with its status now), or every reason it is refused — a dimension larger than
/// the whole cluster (it could never run), a dependency that can never be met.
fn checked(
    c: &ClusterRow,
    live: &Live,
    batch: &Batch,
    new: &NewDeployment,
) -> Result<Vec<(DeploymentId, Status)>, Vec<FieldError>> {
    let mut errors: Vec<FieldError> = Vec::new();
    if !scheduling::can_ever_fit(&c.capacity, &new.resources) {
        // Each dimension that asks for more than the whole cluster has, by its field.
        errors.extend(
            new.resources
                .named()
                .into_iter()
                .zip(c.capacity.dims())
                .filter(|((_, asked), total)| asked > total)
                .map(|((name, asked), total)| {
                    FieldError::new(
                        format!("resources.{name}"),
                        format!("asks for {asked}, more than the cluster's total of {total}: it could never run"),
                    )
                }),
        );
    }
    match awaited(c, live, batch, new) {
        Ok(awaited) if errors.is_empty() => Ok(awaited),
        Ok(_) => Err(errors),
        Err(refused) => {
            errors.extend(refused);
            Err(errors)
        }
    }
}

/// The dependencies a submission must wait for, each with its status now, or why some can
/// never be met ([`dependencies::admit`]).
fn awaited(
    c: &ClusterRow,
    live: &Live,
    batch: &Batch,
    new: &NewDeployment,
) -> Result<Vec<(DeploymentId, Status)>, Vec<FieldError>> {
    let found: Vec<_> = new
        .depends_on
        .iter()
        .map(|id| (*id, live.dependency(id, &batch.found)))
        .collect();
    dependencies::admit(c.org_id, &found)
}

/// The answer to a submission whose Idempotency-Key was used before (in this batch or
/// earlier): the earlier deployment when the request is the same, a conflict when not;
/// `None` when the key is new or absent.
async fn replay(
    tx: &Client,
    c: &ClusterRow,
    batch: &Batch,
    new: &NewDeployment,
) -> Result<Option<Result<Subject, EngineError>>, EngineError> {
    let Some(key) = &new.idempotency_key else {
        return Ok(None);
    };
    let earlier = match batch
        .inserts
        .iter()
        .find(|(_, d)| d.idempotency_key.as_ref() == Some(key))
    {
        Some((id, d)) => Some((*id, d.clone())),
        None => match deployments::by_idempotency_key(tx, c.id, key).await? {
            Some(r) => {
                let process = deployments::process(tx, r.id).await?;
                let d = NewDeployment {
                    name: r.name,
                    image: r.image,
                    resources: r.resources,
                    priority: r.priority,
                    max_runtime_seconds: r.max_runtime_seconds,
                    idempotency_key: r.idempotency_key,
                    created_by: None,
                    process,
                    depends_on: r.depends_on,
                };
                Some((r.id, d))
            }
            None => None,
        },
    };
    let Some((id, d)) = earlier else {
        return Ok(None);
    };
    // Priority may have been changed since; what was asked for may not.
    let same = d.name == new.name
        && d.image == new.image
        && d.resources == new.resources
        && d.max_runtime_seconds == new.max_runtime_seconds
        && d.process == new.process
        && d.depends_on == new.depends_on;
    Ok(Some(if same {
        Ok(Subject::Deployment { id, replayed: true })
    } else {
        Err(EngineError::Conflict(
            "this Idempotency-Key was used for a different request".into(),
        ))
    }))
}

/// A new base priority for a queued or running deployment.
async fn set_priority(
    tx: &Client,
    c: &ClusterRow,
    live: &mut Live,
    batch: &mut Batch,
    id: DeploymentId,
    priority: i32,
    now: DateTime<Utc>,
) -> Applied {
    let Some(old) = live.priority_of(&id) else {
        let refusal = match live
            .expect(tx, c.id, id, Status::Queued, "change the priority of")
            .await?
        {
            Err(e) => e,
            Ok(()) => EngineError::Internal("a live deployment missing from the cache".into()),
        };
        return Ok(Err(refusal));
    };
    batch.priorities.push((id, priority));
    let change = format!("{old} → {priority}");
    batch
        .events
        .push(event(id, EventKind::PriorityChanged, Some(&change), None));
    live.set_priority(id, priority, now);
    Ok(Ok(Subject::Deployment {
        id,
        replayed: false,
    }))
}

/// Cancel, stop and finish alike: a live deployment in `from` moves to the final status `to`.
struct Ending {
    id: DeploymentId,
    from: Status,
    to: Status,
    kind: EventKind,
    /// For the refusal: "cannot <verb> a deployment that is …".
    verb: &'static str,
    /// The event's reason.
    reason: Option<String>,
    /// Replaces the deployment's stored message when given.
    message: Option<String>,
}

impl Ending {
    /// Checks the state, then moves the row in memory and adds the event and the write.
    async fn apply(
        self,
        tx: &Client,
        cluster: ClusterId,
        live: &mut Live,
        batch: &mut Batch,
        now: DateTime<Utc>,
    ) -> Applied {
        let id = self.id;
        if let Err(e) = live.expect(tx, cluster, id, self.from, self.verb).await? {
            return Ok(Err(e));
        }
        batch
            .events
            .push(event(id, self.kind, self.reason.as_deref(), None));
        batch
            .finishes
            .extend(live.finish(id, self.to, self.message, now));
        Ok(Ok(Subject::Deployment {
            id,
            replayed: false,
        }))
    }
}
