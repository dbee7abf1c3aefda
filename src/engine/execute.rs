//! One command, one transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use super::{Command, EngineError, Executed, Outcome};
use crate::db::clusters::{self, ClusterRow};
use crate::db::deployments::{self, DeploymentRow, Event};
use crate::domain::deployment::Status;
use crate::domain::ids::ClusterId;
use crate::domain::resources::Resources;
use crate::domain::scheduler::{self, ClusterState, Decision};
use crate::domain::validation::FieldError;

/// Scheduling passes per command at most: a pass may preempt, and victims requeued by one
/// pass are considered by the next; preemption chains strictly lower the priority, so a few
/// passes always settle.
const MAX_PASSES: usize = 8;

/// Runs `cmd` against `cluster` in one transaction.
pub async fn execute(
    db: &mut Client,
    cluster: ClusterId,
    cmd: Command,
    now: DateTime<Utc>,
) -> Result<Executed, EngineError> {
    let tx = db.transaction().await?;
    let mut c = clusters::lock(&tx, cluster)
        .await?
        .ok_or_else(|| EngineError::NotFound("cluster".into()))?;
    let mut live = Live::new(deployments::live(&tx, cluster).await?);
    let mut events = Vec::new();
    let mut subject: Option<(Uuid, bool)> = None;
    let mut cluster_changed = false;

    match cmd {
        Command::DeleteCluster => {
            if !live.rows.is_empty() {
                return Err(EngineError::Conflict(
                    "the cluster still has queued or running deployments".into(),
                ));
            }
            clusters::delete(&tx, cluster).await?;
            tx.commit().await?;
            return Ok(Executed {
                outcome: Outcome::Deleted,
                next_deadline: None,
            });
        }
        Command::UpdateCluster {
            name,
            capacity,
            policy,
        } => {
            if let Some(cap) = capacity {
                let allocated = live.allocated();
                if !allocated.fits_within(&cap) {
                    return Err(EngineError::Conflict(format!(
                        "cannot shrink below what is allocated ({} mCPU, {} MiB, {} GPUs)",
                        allocated.cpu_millis, allocated.memory_mib, allocated.gpus
                    )));
                }
                c.capacity = cap;
            }
            c.name = name.unwrap_or(c.name);
            c.policy = policy.unwrap_or(c.policy);
            c = clusters::update(&tx, &c, now).await?;
            cluster_changed = true;
        }
        Command::Submit(new) => {
            if let Some(key) = &new.idempotency_key {
                if let Some(existing) = deployments::by_idempotency_key(&tx, cluster, key).await? {
                    if existing.name != new.name
                        || existing.image != new.image
                        || existing.resources != new.resources
                        || existing.priority != new.priority
                    {
                        return Err(EngineError::Conflict(
                            "this Idempotency-Key was used for a different request".into(),
                        ));
                    }
                    subject = Some((existing.id, true));
                }
            }
            if subject.is_none() {
                if !scheduler::can_ever_fit(&c.capacity, &new.resources) {
                    return Err(EngineError::Validation(vec![FieldError::new(
                        "resources",
                        "exceeds the cluster's total capacity on some dimension: it could never run",
                    )]));
                }
                let row =
                    deployments::insert(&tx, Uuid::now_v7(), cluster, c.org_id, &new, now).await?;
                events.push(event(row.id, "created", None, None));
                subject = Some((row.id, false));
                live.rows.insert(row.id, row);
            }
        }
        Command::Cancel { id } => {
            live.expect(id, Status::Queued, "cancel", &tx).await?;
            deployments::finish(&tx, &[id], Status::Queued, Status::Cancelled, None, now).await?;
            events.push(event(id, "cancelled", Some("cancelled by a user"), None));
            live.rows.remove(&id);
            subject = Some((id, false));
        }
        Command::Stop { id } => {
            live.expect(id, Status::Running, "stop", &tx).await?;
            deployments::finish(&tx, &[id], Status::Running, Status::Stopped, None, now).await?;
            events.push(event(id, "stopped", Some("stopped by a user"), None));
            live.rows.remove(&id);
            subject = Some((id, false));
        }
        Command::Finish {
            id,
            succeeded,
            message,
        } => {
            live.expect(id, Status::Running, "finish", &tx).await?;
            let to = if succeeded {
                Status::Succeeded
            } else {
                Status::Failed
            };
            deployments::finish(&tx, &[id], Status::Running, to, message.as_deref(), now).await?;
            events.push(event(id, to.as_str(), message.as_deref(), None));
            live.rows.remove(&id);
            subject = Some((id, false));
        }
        Command::SetPriority { id, priority } => {
            if !live.rows.contains_key(&id) {
                live.expect(id, Status::Queued, "change the priority of", &tx)
                    .await?;
            }
            deployments::set_priority(&tx, id, priority, now).await?;
            if let Some(row) = live.rows.get_mut(&id) {
                events.push(event(
                    id,
                    "priority_changed",
                    Some(&format!("{} → {priority}", row.priority)),
                    None,
                ));
                row.priority = priority;
            }
            subject = Some((id, false));
        }
        Command::Tick => {}
    }

    let expired = live.expire(&tx, now, &mut events).await?;
    let (admitted, preempted) = live.schedule(&tx, &c, now, &mut events).await?;
    deployments::record(&tx, &events, now).await?;
    let next_deadline = live.next_deadline();

    let outcome = match subject {
        Some((id, replayed)) => {
            let position = live.position(&c, id, now);
            let deployment = match live.rows.remove(&id) {
                Some(row) => row,
                None => deployments::get(&tx, id)
                    .await?
                    .ok_or_else(|| EngineError::NotFound("deployment".into()))?,
            };
            Outcome::Deployment {
                deployment: Box::new(deployment),
                position,
                replayed,
            }
        }
        None if cluster_changed => Outcome::Cluster {
            usage: live.usage(),
            cluster: Box::new(c),
        },
        None => Outcome::Ticked {
            admitted,
            preempted,
            expired,
        },
    };
    tx.commit().await?;
    Ok(Executed {
        outcome,
        next_deadline,
    })
}

fn event(id: Uuid, kind: &str, reason: Option<&str>, by: Option<Uuid>) -> Event {
    Event {
        deployment_id: id,
        kind: kind.to_string(),
        reason: reason.map(str::to_string),
        by_deployment: by,
    }
}

/// The cluster's queued and running deployments, kept current as the command proceeds.
struct Live {
    rows: HashMap<Uuid, DeploymentRow>,
}

impl Live {
    fn new(rows: Vec<DeploymentRow>) -> Self {
        Self {
            rows: rows.into_iter().map(|r| (r.id, r)).collect(),
        }
    }

    fn allocated(&self) -> Resources {
        Resources::sum(
            self.rows
                .values()
                .filter(|r| r.status == Status::Running)
                .map(|r| &r.resources),
        )
    }

    fn usage(&self) -> clusters::Usage {
        let of = |s: Status| self.rows.values().filter(move |r| r.status == s);
        clusters::Usage {
            allocated: Resources::sum(of(Status::Running).map(|r| &r.resources)),
            queued_demand: Resources::sum(of(Status::Queued).map(|r| &r.resources)),
            running: of(Status::Running).count() as i64,
            queued: of(Status::Queued).count() as i64,
        }
    }

    /// Checks that `id` is a live deployment of this cluster in `status`; otherwise explains
    /// (a deployment of another cluster, or in another state).
    async fn expect(
        &self,
        id: Uuid,
        status: Status,
        verb: &str,
        tx: &Transaction<'_>,
    ) -> Result<(), EngineError> {
        let current = match self.rows.get(&id) {
            Some(r) => r.status,
            None => {
                deployments::get(tx, id)
                    .await?
                    .ok_or_else(|| EngineError::NotFound("deployment".into()))?
                    .status
            }
        };
        if current == status {
            Ok(())
        } else {
            Err(EngineError::Conflict(format!(
                "cannot {verb} a deployment that is {}; it must be {}",
                current.as_str(),
                status.as_str()
            )))
        }
    }

    /// Fails running deployments past their `max_runtime_seconds`.
    async fn expire(
        &mut self,
        tx: &Transaction<'_>,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Result<usize, EngineError> {
        let overdue: Vec<Uuid> = self
            .rows
            .values()
            .filter(|r| r.status == Status::Running && r.deadline_at.is_some_and(|d| d <= now))
            .map(|r| r.id)
            .collect();
        if overdue.is_empty() {
            return Ok(0);
        }
        let reason = "ran longer than max_runtime_seconds";
        deployments::finish(
            tx,
            &overdue,
            Status::Running,
            Status::Failed,
            Some(reason),
            now,
        )
        .await?;
        for id in &overdue {
            events.push(event(*id, "expired", Some(reason), None));
            self.rows.remove(id);
        }
        Ok(overdue.len())
    }

    fn state(&self, c: &ClusterRow) -> ClusterState {
        super::cluster_state(c, self.rows.values())
    }

    /// Runs the pure scheduler until it settles and writes its decisions in bulk.
    async fn schedule(
        &mut self,
        tx: &Transaction<'_>,
        c: &ClusterRow,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Result<(usize, usize), EngineError> {
        let (mut admitted, mut victims, mut preemptors) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..MAX_PASSES {
            let decisions = scheduler::schedule(&self.state(c), now);
            if decisions.is_empty() {
                break;
            }
            for d in decisions {
                match d {
                    Decision::Admit { id } => {
                        if let Some(r) = self.rows.get_mut(&id) {
                            r.status = Status::Running;
                            r.admitted_at = Some(now);
                            r.deadline_at = r
                                .max_runtime_seconds
                                .map(|s| now + chrono::Duration::seconds(i64::from(s)));
                        }
                        // A victim re-admitted within the same command was never really out.
                        if let Some(i) = victims.iter().position(|v| *v == id) {
                            victims.remove(i);
                            preemptors.remove(i);
                        } else {
                            admitted.push(id);
                        }
                    }
                    Decision::Preempt { victim, by } => {
                        if let Some(r) = self.rows.get_mut(&victim) {
                            r.status = Status::Queued;
                            r.admitted_at = None;
                            r.deadline_at = None;
                            r.preemptions += 1;
                            r.preempted_by = Some(by);
                        }
                        if let Some(i) = admitted.iter().position(|a| *a == victim) {
                            admitted.remove(i);
                        } else {
                            victims.push(victim);
                            preemptors.push(by);
                        }
                    }
                }
            }
        }
        deployments::requeue_preempted(tx, &victims, &preemptors, now).await?;
        deployments::admit(tx, &admitted, now).await?;
        for (v, by) in victims.iter().zip(&preemptors) {
            events.push(event(
                *v,
                "preempted",
                Some("evicted for a higher-priority deployment"),
                Some(*by),
            ));
            events.push(event(
                *v,
                "requeued",
                Some("back in the queue after preemption"),
                None,
            ));
        }
        for id in &admitted {
            events.push(event(*id, "admitted", None, None));
        }
        Ok((admitted.len(), victims.len()))
    }

    fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.rows
            .values()
            .filter(|r| r.status == Status::Running)
            .filter_map(|r| r.deadline_at)
            .min()
    }

    fn position(&self, c: &ClusterRow, id: Uuid, now: DateTime<Utc>) -> Option<u32> {
        let row = self.rows.get(&id)?;
        if row.status != Status::Queued {
            return None;
        }
        scheduler::queue_view(&self.state(c), now)
            .into_iter()
            .find(|e| e.id == id)
            .map(|e| e.position)
    }
}
