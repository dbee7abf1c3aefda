//! The placement transitions of a batch: agents joining, reporting and leaving, agents lost
//! past their grace, stopping what must not run, and placing what waits for an agent. The
//! rules are the domain's ([`Fleet`](crate::domain::scheduling::placement::Fleet)); each
//! method here applies one to the cached rows and records in the [`Batch`] the writes, the
//! events and the orders for the agents.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};

use super::{awaiting_key, book_entry, deadline_key, progress, Live};
use crate::db::agents::AgentRow;
use crate::db::clusters::ClusterRow;
use crate::db::deployments::{AgentRef, PlacementWrite};
use crate::domain::agent::protocol::{Exit, ObjectMessage, STOP_GRACE_SECONDS, VERSION};
use crate::domain::deployment::{EventKind, Status};
use crate::domain::ids::{AgentId, DeploymentId};
use crate::domain::scheduling::lifecycle::{
    exit_message, exit_reason, exit_status, Settled, LOST_REQUEUED_REASON,
};
use crate::domain::scheduling::placement::{self, Joining, Stage, Start};
use crate::engine::batch::{event, Batch, Outgoing};
use crate::engine::Order;

/// A change of one deployment's placement; `None` fields keep what is stored.
#[derive(Default)]
struct Change {
    /// `Some(None)`: no agent any more (lost).
    agent: Option<Option<AgentRef>>,
    /// Always written: the stage after the change (none: no container expected).
    stage: Option<Stage>,
    stop_until: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
}

impl Live {
    /// The name of an agent placement knows (its socket is found by it).
    fn name_of(&self, agent: AgentId) -> String {
        self.fleet
            .agent(&agent)
            .map(|a| a.name.clone())
            .unwrap_or_default()
    }

    fn send(&self, batch: &mut Batch, agent: AgentId, message: ObjectMessage) {
        batch.orders.push(Outgoing::Ready(Order::Send {
            agent,
            name: self.name_of(agent),
            message,
        }));
    }

    fn stop_order(&self, batch: &mut Batch, agent: AgentId, deployment_id: DeploymentId) {
        let stop = ObjectMessage::Stop {
            v: VERSION,
            deployment_id,
            grace_seconds: STOP_GRACE_SECONDS,
        };
        self.send(batch, agent, stop);
    }

    /// Applies `change` to the cached row (live or just finished) and to the batch's writes.
    fn change_placement(&mut self, batch: &mut Batch, id: DeploymentId, change: Change) {
        let apply = |r: &mut crate::db::deployments::DeploymentRow| {
            if let Some(agent) = &change.agent {
                r.agent = agent.clone();
            }
            r.placement = change.stage;
            r.started_at = change.started_at.or(r.started_at);
            r.exit_code = change.exit_code.or(r.exit_code);
        };
        if let Some(r) = self.rows.get_mut(&id) {
            if let Some(a) = awaiting_key(r) {
                self.awaiting.remove(&a);
            }
            apply(r);
            self.awaiting.extend(awaiting_key(r));
        } else if let Some(r) = self.done.get_mut(&id) {
            apply(r);
        }
        batch.place(PlacementWrite {
            id,
            agent: change.agent,
            stage: change.stage,
            stop_until: change.stop_until,
            started_at: change.started_at,
            exit_code: change.exit_code,
        });
    }

    /// A running deployment whose agent no longer has it goes back to the queue at its old
    /// place, with its events (`lost` naming why, then `requeued`).
    fn lose_deployment(
        &mut self,
        batch: &mut Batch,
        id: DeploymentId,
        why: &str,
        now: DateTime<Utc>,
    ) {
        if let Some(r) = self
            .rows
            .get_mut(&id)
            .filter(|r| r.status == Status::Running)
        {
            if let Some(d) = deadline_key(r) {
                self.deadlines.remove(&d);
            }
            if let Some(a) = awaiting_key(r) {
                self.awaiting.remove(&a);
            }
            progress(r).lose(now);
            self.book.remove(&id);
            if let Some(entry) = book_entry(r) {
                self.book.insert(entry);
            }
            batch.lost.push(id);
            batch
                .events
                .push(event(id, EventKind::Lost, Some(why), None));
            batch.events.push(event(
                id,
                EventKind::Requeued,
                Some(LOST_REQUEUED_REASON),
                None,
            ));
        }
        let change = Change {
            agent: Some(None),
            ..Change::default()
        };
        self.change_placement(batch, id, change);
        self.unplaced = true;
    }

    /// `d` was started on its agent at `now`.
    fn started(&mut self, batch: &mut Batch, d: DeploymentId, now: DateTime<Utc>) {
        batch.events.push(event(d, EventKind::Started, None, None));
        let change = Change {
            stage: Some(Stage::Started),
            started_at: Some(now),
            ..Change::default()
        };
        self.change_placement(batch, d, change);
    }

    /// An agent's hello, recorded as `agent`: welcome it, then reconcile what it runs with
    /// what is placed on it.
    pub(in crate::engine) fn agent_joined(
        &mut self,
        batch: &mut Batch,
        agent: &AgentRow,
        running: &[DeploymentId],
        exited: &[DeploymentId],
        grace_seconds: i32,
        now: DateTime<Utc>,
    ) {
        let joining = Joining {
            name: agent.name.clone(),
            capacity: agent.capacity,
            at: agent.connected_at,
        };
        let r = self.fleet.join(agent.id, joining, running, exited, |d| {
            self.rows.get(d).map(|r| r.resources)
        });
        let welcome = ObjectMessage::Welcome {
            v: VERSION,
            agent_id: agent.id,
            grace_seconds: u32::try_from(grace_seconds).ok(),
        };
        self.send(batch, agent.id, welcome);
        for d in r.started {
            self.started(batch, d, now);
        }
        for d in r.rerun {
            batch
                .orders
                .push(Outgoing::Run(agent.id, self.name_of(agent.id), d));
        }
        for d in r.stop {
            self.stop_order(batch, agent.id, d);
        }
        let why = format!("agent {} came back without it", agent.name);
        for d in r.lost {
            self.lose_deployment(batch, d, &why, now);
        }
        for d in r.released {
            self.change_placement(batch, d, Change::default());
        }
        self.unplaced = true;
    }

    /// The socket of `agent`'s connection begun at `since` closed at `now`.
    pub(in crate::engine) fn agent_gone(
        &mut self,
        batch: &mut Batch,
        agent: AgentId,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        self.fleet.leave(agent, since, now);
        batch.gone.push((agent, since));
    }

    /// `agent` says `d` runs.
    pub(in crate::engine) fn agent_started(
        &mut self,
        batch: &mut Batch,
        agent: AgentId,
        d: DeploymentId,
        now: DateTime<Utc>,
    ) {
        match self.fleet.started(agent, d) {
            Start::Started => self.started(batch, d, now),
            Start::Again => {}
            Start::Unwanted => self.stop_order(batch, agent, d),
        }
    }

    /// `agent` says `exit.deployment_id` ended. A deployment still to run ends with it
    /// (exit 0 → succeeded, any other → failed); one stopped, cancelled or preempted keeps its
    /// status and gains the exit code. The agent is told to forget it either way.
    pub(in crate::engine) fn agent_exited(
        &mut self,
        batch: &mut Batch,
        agent: AgentId,
        exit: Exit,
        now: DateTime<Utc>,
    ) {
        let d = exit.deployment_id;
        let forget = ObjectMessage::Forget {
            v: VERSION,
            deployment_id: d,
        };
        self.send(batch, agent, forget);
        let Some(placed) = self.fleet.exited(agent, d) else {
            return;
        };
        self.unplaced = true;
        let reason = exit_reason(exit.exit_code, &exit.output);
        batch
            .events
            .push(event(d, EventKind::Exited, Some(&reason), None));
        let to_run = placed.stage != Stage::Stopping
            && self
                .rows
                .get(&d)
                .is_some_and(|r| r.status == Status::Running);
        if to_run && exit.abandoned {
            // Its agent gave it up, away from the server too long: lost, not finished.
            let why = format!(
                "agent {} stopped it, away from the server too long",
                self.name_of(agent)
            );
            self.lose_deployment(batch, d, &why, now);
            return;
        }
        // The exit of a copy stopped while the deployment runs again (it waits for an agent)
        // is not that run's: its code is not kept.
        let running_again = !to_run
            && self
                .rows
                .get(&d)
                .is_some_and(|r| r.status == Status::Running);
        let change = Change {
            exit_code: exit.exit_code.filter(|_| !running_again),
            ..Change::default()
        };
        self.change_placement(batch, d, change);
        if to_run {
            let to = exit_status(exit.exit_code);
            let kind = if to == Status::Succeeded {
                EventKind::Succeeded
            } else {
                EventKind::Failed
            };
            batch.events.push(event(d, kind, None, None));
            let message = exit_message(exit.exit_code, &exit.output);
            batch
                .finishes
                .extend(self.finish(d, to, Some(message), now));
        }
    }

    /// A tick read when each agent with an open socket was last heard of: those placement
    /// counts as connected without a socket are away from `now`.
    pub(in crate::engine) fn heard(
        &mut self,
        batch: &mut Batch,
        seen: &[(AgentId, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) {
        for &(agent, at) in seen {
            self.fleet.seen(agent, at);
        }
        let open: HashSet<AgentId> = seen.iter().map(|(a, _)| *a).collect();
        for agent in self.fleet.connected() {
            if open.contains(&agent) {
                continue;
            }
            if let Some(since) = self.fleet.agent(&agent).map(|a| a.since) {
                self.fleet.leave(agent, since, now);
                batch.away.push(agent);
            }
        }
        batch
            .seen
            .extend(seen.iter().filter(|(a, _)| self.fleet.agent(a).is_some()));
    }

    /// Before scheduling: agents away (or, when `heard`, silent) past the cluster's grace are
    /// lost with what they ran, and stopping containers past their time stop counting.
    pub(in crate::engine) fn lose_agents(
        &mut self,
        batch: &mut Batch,
        c: &ClusterRow,
        heard: bool,
        now: DateTime<Utc>,
    ) {
        let grace = Duration::seconds(i64::from(c.agent_grace_seconds));
        for lost in self.fleet.lose(now, grace, heard) {
            if lost.connected {
                batch.away.push(lost.agent);
                batch.orders.push(Outgoing::Ready(Order::Close {
                    agent: lost.agent,
                    name: lost.name.clone(),
                    reason: format!(
                        "no sign of life for {} s (its pings, then the cluster's grace)",
                        placement::silence().num_seconds() + i64::from(c.agent_grace_seconds)
                    ),
                }));
            }
            let why = format!(
                "agent {} was away longer than {} s",
                lost.name, c.agent_grace_seconds
            );
            for d in lost.running {
                self.lose_deployment(batch, d, &why, now);
            }
            for d in lost.released {
                self.change_placement(batch, d, Change::default());
            }
        }
        for d in self.fleet.release_overdue(now) {
            self.change_placement(batch, d, Change::default());
            self.unplaced = true;
        }
    }

    /// After scheduling: every deployment that ended or was preempted in this batch and has a
    /// container to run is told to stop (its container keeps its room until it exits).
    pub(in crate::engine) fn stop_unwanted(
        &mut self,
        batch: &mut Batch,
        settled: &Settled,
        now: DateTime<Utc>,
    ) {
        let ended: Vec<DeploymentId> = self
            .done
            .keys()
            .copied()
            .chain(settled.preempted.iter().map(|(victim, _)| *victim))
            .collect();
        for d in ended {
            if let Some(agent) = self.fleet.stop(d, now) {
                self.stop_order(batch, agent, d);
                let change = Change {
                    stage: Some(Stage::Stopping),
                    stop_until: self.fleet.placed(&d).and_then(|p| p.stop_until),
                    ..Change::default()
                };
                self.change_placement(batch, d, change);
            }
        }
    }

    /// After scheduling: running deployments that no agent runs go, in admission order, to
    /// connected agents with room for them.
    pub(in crate::engine) fn place(&mut self, batch: &mut Batch) {
        if !std::mem::take(&mut self.unplaced)
            || self.awaiting.is_empty()
            || !self.fleet.any_connected()
        {
            return;
        }
        let waiting: Vec<_> = self
            .awaiting
            .iter()
            .filter_map(|(_, id)| self.rows.get(id).map(|r| (*id, r.resources)))
            .collect();
        for (d, agent) in self.fleet.place(waiting) {
            let name = self.name_of(agent);
            let on = format!("on agent {name}");
            batch
                .events
                .push(event(d, EventKind::Assigned, Some(&on), None));
            let change = Change {
                agent: Some(Some(AgentRef {
                    id: agent,
                    name: name.clone(),
                })),
                stage: Some(Stage::Assigned),
                ..Change::default()
            };
            self.change_placement(batch, d, change);
            batch.orders.push(Outgoing::Run(agent, name, d));
        }
    }

    /// The run order of a running deployment, with its process.
    pub(in crate::engine) fn run_spec(
        &self,
        d: DeploymentId,
        process: crate::domain::deployment::Process,
    ) -> Option<crate::domain::agent::protocol::RunSpec> {
        let r = self.rows.get(&d)?;
        Some(crate::domain::agent::protocol::RunSpec {
            deployment_id: d,
            image: r.image.clone(),
            resources: r.resources,
            command: process.command,
            env: process.env.unwrap_or_default(),
        })
    }
}
