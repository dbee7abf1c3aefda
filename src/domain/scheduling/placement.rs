//! Placement: which connected agent runs an admitted deployment.
//!
//! Admission (the rest of this folder) treats a cluster's capacity as a quota. Placement then
//! hands each admitted deployment to one agent whose free room fits it, so that no machine is
//! ever asked to run more than it has. An agent's room is its capacity minus everything placed
//! on it that has not confirmed its exit: the container of a stopped or preempted deployment
//! still occupies its agent until the agent reports it gone, which is what makes a preemptor
//! wait for its victims' containers.
//!
//! [`Fleet`] is a cluster's placement state: its agents (capacity, presence) and where each
//! placed deployment's container is ([`Stage`]); its methods are the transitions, each
//! answering what the engine must write and which orders to send.
//!
//! The choice is best fit (Nomad's default, `binpack`): the agent left with the least room
//! after taking the deployment, so large requests still find a whole machine later.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::agent::protocol::{MISSED_PINGS, PING_INTERVAL_SECONDS, STOP_GRACE_SECONDS};
use crate::domain::ids::{AgentId, DeploymentId};
use crate::domain::resources::Resources;

/// One connected agent as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub agent: AgentId,
    /// What the agent said it has.
    pub capacity: Resources,
    /// Placed on it and not yet confirmed gone.
    pub occupied: Resources,
}

impl Room {
    /// What is still free (never negative: an agent that came back smaller has none).
    pub fn free(&self) -> Resources {
        let f = self.capacity.saturating_sub(&self.occupied);
        Resources::new(f.cpu_millis.max(0), f.memory_mib.max(0), f.gpus.max(0))
    }

    /// Whether `request` fits in what is free (a dimension it does not ask for may be
    /// over-full).
    pub fn fits(&self, request: &Resources) -> bool {
        request.fits_within(&self.free())
    }

    /// How full it would be with `request` too: the largest share of any dimension it has,
    /// from 0 (empty) to 1 (full). Dimensions it has none of do not count.
    fn fullness_with(&self, request: &Resources) -> f64 {
        let after = self.occupied.saturating_add(request);
        after
            .dims()
            .iter()
            .zip(self.capacity.dims())
            .filter(|(_, cap)| *cap > 0)
            .map(|(used, cap)| *used as f64 / cap as f64)
            .fold(0.0, f64::max)
    }
}

/// Places each of `waiting` (in the order given: admission order) on the best-fitting agent
/// of `rooms` that has room for it, and counts it there. Answers the placements; what fits
/// no agent is left out and keeps waiting for one.
pub fn place(
    rooms: &mut [Room],
    waiting: impl IntoIterator<Item = (DeploymentId, Resources)>,
) -> Vec<(DeploymentId, AgentId)> {
    let mut placed = Vec::new();
    for (deployment, request) in waiting {
        let best = rooms
            .iter_mut()
            .filter(|r| r.fits(&request))
            .min_by(|a, b| {
                b.fullness_with(&request)
                    .total_cmp(&a.fullness_with(&request))
                    .then(a.agent.0.cmp(&b.agent.0))
            });
        if let Some(room) = best {
            room.occupied = room.occupied.saturating_add(&request);
            placed.push((deployment, room.agent));
        }
    }
    placed
}

/// Where a placed deployment's container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The run order is sent.
    Assigned,
    /// The agent said it runs.
    Started,
    /// A stop order is sent; the container occupies its agent until it reports the exit or
    /// the stop's grace (and a margin for the report) has passed.
    Stopping,
}

impl Stage {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assigned => "assigned",
            Self::Started => "started",
            Self::Stopping => "stopping",
        }
    }

    /// The stage a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Assigned, Self::Started, Self::Stopping]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// Where a running deployment stands with the agents, as its answers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// No agent runs it yet: none connected has room for it (or its previous container has
    /// not stopped yet).
    AwaitingAgent,
    /// An agent was told to run it.
    Assigned,
    /// Its agent said it runs.
    Started,
}

impl Placement {
    /// What a deployment in `status` whose container is at `stage` shows (only a running one
    /// shows any).
    pub fn of(status: crate::domain::deployment::Status, stage: Option<Stage>) -> Option<Self> {
        (status == crate::domain::deployment::Status::Running).then_some(match stage {
            Some(Stage::Assigned) => Self::Assigned,
            Some(Stage::Started) => Self::Started,
            None | Some(Stage::Stopping) => Self::AwaitingAgent,
        })
    }
}

/// How long a stopping container is counted on its agent at most: the stop's grace before
/// SIGKILL, and this margin for the exit's report.
pub const STOP_REPORT_MARGIN_SECONDS: i64 = 5;

/// Until when a container told to stop at `now` still counts on its agent.
fn stop_until(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::seconds(i64::from(STOP_GRACE_SECONDS) + STOP_REPORT_MARGIN_SECONDS)
}

/// One deployment's container on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub agent: AgentId,
    pub resources: Resources,
    pub stage: Stage,
    /// Until when a stopping container still counts on its agent.
    pub stop_until: Option<DateTime<Utc>>,
}

/// Whether an agent is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Its socket is open; last heard of at `seen` (a message, or the runtime's answer to its
    /// ping).
    Connected { seen: DateTime<Utc> },
    /// Its socket closed at `since`.
    Away { since: DateTime<Utc> },
}

/// One agent of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    pub capacity: Resources,
    pub presence: Presence,
    /// When its current connection began (its record's `connected_at`): a close of an older
    /// socket changes nothing.
    pub since: DateTime<Utc>,
}

/// How long a connected agent may be silent before it counts as away: the pings it may
/// miss (an agent pings every 15 s; 45 s).
pub fn silence() -> Duration {
    Duration::seconds(i64::try_from(PING_INTERVAL_SECONDS).unwrap_or(15) * i64::from(MISSED_PINGS))
}

impl Agent {
    /// Since when it counts as away: its socket's close, or the end of the silence its pings
    /// are allowed after its last sign of life.
    fn away_since(&self) -> DateTime<Utc> {
        match self.presence {
            Presence::Connected { seen } => seen + silence(),
            Presence::Away { since } => since,
        }
    }
}

/// Who says hello ([`Fleet::join`]): its name and capacity, and when its connection began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joining {
    pub name: String,
    pub capacity: Resources,
    pub at: DateTime<Utc>,
}

/// What a reconnecting agent's hello changes ([`Fleet::join`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Assigned to it and now reported running: started.
    pub started: Vec<DeploymentId>,
    /// Assigned to it, and it has not got them: the run order goes again.
    pub rerun: Vec<DeploymentId>,
    /// Reported running, but not to run there (placed elsewhere, ended, stopping): stop them.
    pub stop: Vec<DeploymentId>,
    /// Started there and no longer reported (nor with an exit to come): lost.
    pub lost: Vec<DeploymentId>,
    /// Stopping there and no longer reported: the container is gone.
    pub released: Vec<DeploymentId>,
}

/// What a `started` report means ([`Fleet::started`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Assigned to that agent: it runs now.
    Started,
    /// Said before: nothing changes.
    Again,
    /// It should not run there (stopping, ended, placed elsewhere): stop it.
    Unwanted,
}

/// An agent that stayed away longer than the grace, with what it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub agent: AgentId,
    pub name: String,
    /// Whether its socket is still open (silent): it is to be closed.
    pub connected: bool,
    /// Its deployments that were to run (assigned or started): lost.
    pub running: Vec<DeploymentId>,
    /// Its stopping containers, no longer counted.
    pub released: Vec<DeploymentId>,
}

/// A cluster's agents and placed containers.
///
/// Beside the placements it keeps, changed with them ([`Fleet::put`], [`Fleet::take`]), what
/// each agent holds and the stopping containers in time order, so that a batch's questions
/// (rooms, what is due) never walk every placement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    agents: HashMap<AgentId, Agent>,
    placed: HashMap<DeploymentId, Placed>,
    /// What the containers placed on each agent occupy, and how many there are.
    occupied: HashMap<AgentId, (Resources, usize)>,
    /// (until when it counts, id) of every stopping container.
    stopping: BTreeSet<(DateTime<Utc>, DeploymentId)>,
}

/// A stopping container's key in [`Fleet::stopping`] (one without a time is overdue).
fn stopping_key(d: DeploymentId, p: &Placed) -> Option<(DateTime<Utc>, DeploymentId)> {
    (p.stage == Stage::Stopping).then(|| (p.stop_until.unwrap_or(DateTime::<Utc>::MIN_UTC), d))
}

impl Fleet {
    pub fn new(
        agents: impl IntoIterator<Item = (AgentId, Agent)>,
        placed: impl IntoIterator<Item = (DeploymentId, Placed)>,
    ) -> Self {
        let mut fleet = Self {
            agents: agents.into_iter().collect(),
            ..Self::default()
        };
        for (d, p) in placed {
            fleet.put(d, p);
        }
        fleet
    }

    /// Places `p` as `d`'s container (replacing any other), with the indexes.
    fn put(&mut self, d: DeploymentId, p: Placed) {
        self.take(d);
        let o = self.occupied.entry(p.agent).or_insert((Resources::ZERO, 0));
        *o = (o.0.saturating_add(&p.resources), o.1 + 1);
        self.stopping.extend(stopping_key(d, &p));
        self.placed.insert(d, p);
    }

    /// Removes `d`'s container, with the indexes.
    fn take(&mut self, d: DeploymentId) -> Option<Placed> {
        let p = self.placed.remove(&d)?;
        if let Some(o) = self.occupied.get_mut(&p.agent) {
            *o = (o.0.saturating_sub(&p.resources), o.1.saturating_sub(1));
            if o.1 == 0 {
                self.occupied.remove(&p.agent);
            }
        }
        if let Some(key) = stopping_key(d, &p) {
            self.stopping.remove(&key);
        }
        Some(p)
    }

    pub fn agent(&self, id: &AgentId) -> Option<&Agent> {
        self.agents.get(id)
    }

    pub fn placed(&self, id: &DeploymentId) -> Option<&Placed> {
        self.placed.get(id)
    }

    /// Whether some agent is connected (placement has somewhere to go).
    pub fn any_connected(&self) -> bool {
        self.agents
            .values()
            .any(|a| matches!(a.presence, Presence::Connected { .. }))
    }

    /// Every connected agent's room.
    pub fn rooms(&self) -> Vec<Room> {
        let mut rooms: Vec<Room> = self
            .agents
            .iter()
            .filter(|(_, a)| matches!(a.presence, Presence::Connected { .. }))
            .map(|(id, a)| Room {
                agent: *id,
                capacity: a.capacity,
                occupied: self.occupied.get(id).map_or(Resources::ZERO, |o| o.0),
            })
            .collect();
        rooms.sort_by_key(|r| r.agent.0);
        rooms
    }

    /// Places `waiting` (admitted, not placed; in admission order) on connected agents with
    /// room ([`place`]); each placed one is assigned there.
    pub fn place(
        &mut self,
        waiting: impl IntoIterator<Item = (DeploymentId, Resources)>,
    ) -> Vec<(DeploymentId, AgentId)> {
        let mut rooms = self.rooms();
        let waiting: Vec<_> = waiting
            .into_iter()
            .filter(|(d, _)| !self.placed.contains_key(d))
            .collect();
        let resources: HashMap<DeploymentId, Resources> = waiting.iter().copied().collect();
        let placed = place(&mut rooms, waiting);
        for (d, agent) in &placed {
            self.put(
                *d,
                Placed {
                    agent: *agent,
                    resources: resources.get(d).copied().unwrap_or(Resources::ZERO),
                    stage: Stage::Assigned,
                    stop_until: None,
                },
            );
        }
        placed
    }

    /// An agent said hello at `now` with what it runs and the exits it will report next.
    /// A copy it runs that it should not is stopped; while it stops, it holds its room there
    /// (`resources_of` tells what it asked for) and, when the deployment has no other
    /// container, keeps it from being placed again until that copy's exit.
    pub fn join(
        &mut self,
        agent: AgentId,
        joined: Joining,
        running: &[DeploymentId],
        exiting: &[DeploymentId],
        resources_of: impl Fn(&DeploymentId) -> Option<Resources>,
    ) -> Reconciled {
        let now = joined.at;
        self.agents.insert(
            agent,
            Agent {
                name: joined.name,
                capacity: joined.capacity,
                presence: Presence::Connected { seen: now },
                since: now,
            },
        );
        let running: std::collections::HashSet<_> = running.iter().copied().collect();
        let exiting: std::collections::HashSet<_> = exiting.iter().copied().collect();
        let mut r = Reconciled::default();
        for d in &running {
            match self.placed.get_mut(d) {
                Some(p) if p.agent == agent && p.stage == Stage::Assigned => {
                    p.stage = Stage::Started;
                    r.started.push(*d);
                }
                Some(p) if p.agent == agent && p.stage == Stage::Started => {}
                Some(_) => r.stop.push(*d),
                None => {
                    self.put(
                        *d,
                        Placed {
                            agent,
                            resources: resources_of(d).unwrap_or(Resources::ZERO),
                            stage: Stage::Stopping,
                            stop_until: Some(stop_until(now)),
                        },
                    );
                    r.stop.push(*d);
                }
            }
        }
        let mine: Vec<(DeploymentId, Stage)> = self
            .placed
            .iter()
            .filter(|(d, p)| p.agent == agent && !running.contains(d) && !exiting.contains(d))
            .map(|(d, p)| (*d, p.stage))
            .collect();
        for (d, stage) in mine {
            match stage {
                Stage::Assigned => r.rerun.push(d),
                Stage::Started => {
                    self.take(d);
                    r.lost.push(d);
                }
                Stage::Stopping => {
                    self.take(d);
                    r.released.push(d);
                }
            }
        }
        for list in [
            &mut r.started,
            &mut r.rerun,
            &mut r.stop,
            &mut r.lost,
            &mut r.released,
        ] {
            list.sort_by_key(|d| d.0);
        }
        r
    }

    /// The agent's socket of the connection begun at `since` closed at `now`.
    pub fn leave(&mut self, agent: AgentId, since: DateTime<Utc>, now: DateTime<Utc>) {
        if let Some(a) = self.agents.get_mut(&agent).filter(|a| a.since == since) {
            if let Presence::Connected { .. } = a.presence {
                a.presence = Presence::Away { since: now };
            }
        }
    }

    /// The connected agents.
    pub fn connected(&self) -> Vec<AgentId> {
        let mut ids: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| matches!(a.presence, Presence::Connected { .. }))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_by_key(|a| a.0);
        ids
    }

    /// Whether some container is placed on `agent`.
    fn holds(&self, agent: &AgentId) -> bool {
        self.occupied.contains_key(agent)
    }

    /// The agent was heard of at `at` (its socket open).
    pub fn seen(&mut self, agent: AgentId, at: DateTime<Utc>) {
        if let Some(Agent {
            presence: Presence::Connected { seen },
            ..
        }) = self.agents.get_mut(&agent)
        {
            *seen = (*seen).max(at);
        }
    }

    /// The agent reports that `d` runs.
    pub fn started(&mut self, agent: AgentId, d: DeploymentId) -> Start {
        match self.placed.get_mut(&d) {
            Some(p) if p.agent == agent && p.stage == Stage::Assigned => {
                p.stage = Stage::Started;
                Start::Started
            }
            Some(p) if p.agent == agent && p.stage == Stage::Started => Start::Again,
            _ => Start::Unwanted,
        }
    }

    /// The agent reports that `d` ended: its container no longer counts. Answers the
    /// placement it had, if it was on that agent (an exit from elsewhere changes nothing).
    pub fn exited(&mut self, agent: AgentId, d: DeploymentId) -> Option<Placed> {
        match self.placed.get(&d) {
            Some(p) if p.agent == agent => self.take(d),
            _ => None,
        }
    }

    /// `d` must stop (ended, preempted, expired) at `now`: answers the agent to tell, when its
    /// container was to run. A stopping container counts on its agent until it reports the
    /// exit, or until the grace and [`STOP_REPORT_MARGIN_SECONDS`] have passed.
    pub fn stop(&mut self, d: DeploymentId, now: DateTime<Utc>) -> Option<AgentId> {
        let p = *self.placed.get(&d)?;
        if p.stage == Stage::Stopping {
            return None;
        }
        let stopping = Placed {
            stage: Stage::Stopping,
            stop_until: Some(stop_until(now)),
            ..p
        };
        self.put(d, stopping);
        Some(p.agent)
    }

    /// Stopping containers whose time has passed at `now` no longer count; answers them.
    pub fn release_overdue(&mut self, now: DateTime<Utc>) -> Vec<DeploymentId> {
        // In time order: the overdue ones are a prefix.
        let mut overdue: Vec<DeploymentId> = self
            .stopping
            .iter()
            .take_while(|(until, _)| *until <= now)
            .map(|(_, d)| *d)
            .collect();
        overdue.sort_by_key(|d| d.0);
        for d in &overdue {
            self.take(*d);
        }
        overdue
    }

    /// The agents away for longer than `grace` at `now` (a connected one is away once silent
    /// for [`silence`]): each is forgotten with its placements (to come back, it says hello
    /// again). Connected agents are judged by their silence only when `heard` (their signs of life were just read: a tick); an idle one
    /// (nothing placed) is never lost for silence.
    pub fn lose(&mut self, now: DateTime<Utc>, grace: Duration, heard: bool) -> Vec<Lost> {
        let mut gone: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                now - a.away_since() > grace
                    && match a.presence {
                        Presence::Away { .. } => true,
                        Presence::Connected { .. } => heard && self.holds(id),
                    }
            })
            .map(|(id, _)| *id)
            .collect();
        gone.sort_by_key(|a| a.0);
        gone.into_iter()
            .filter_map(|agent| {
                let a = self.agents.remove(&agent)?;
                let mut lost = Lost {
                    agent,
                    name: a.name.clone(),
                    connected: matches!(a.presence, Presence::Connected { .. }),
                    running: vec![],
                    released: vec![],
                };
                let mine: Vec<(DeploymentId, Stage)> = self
                    .placed
                    .iter()
                    .filter(|(_, p)| p.agent == agent)
                    .map(|(d, p)| (*d, p.stage))
                    .collect();
                for (d, stage) in mine {
                    self.take(d);
                    match stage {
                        Stage::Stopping => lost.released.push(d),
                        _ => lost.running.push(d),
                    }
                }
                lost.running.sort_by_key(|d| d.0);
                lost.released.sort_by_key(|d| d.0);
                // An agent already away with nothing placed was forgotten quietly.
                (lost.connected || !lost.running.is_empty() || !lost.released.is_empty())
                    .then_some(lost)
            })
            .collect()
    }

    /// When the next of these is due: the grace of an agent that holds containers, a
    /// stopping container's time.
    pub fn next_due(&self, grace: Duration) -> Option<DateTime<Utc>> {
        let agents = self
            .agents
            .iter()
            .filter(|(id, _)| self.holds(id))
            .map(|(_, a)| a.away_since() + grace);
        let stops = self.stopping.first().map(|(until, _)| *until);
        agents.chain(stops).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    fn agent(n: u128) -> AgentId {
        AgentId(Uuid::from_u128(n))
    }

    fn deployment(n: u128) -> DeploymentId {
        DeploymentId(Uuid::from_u128(n))
    }

    fn room(n: u128, cpu: i64, mem: i64, gpus: i64) -> Room {
        Room {
            agent: agent(n),
            capacity: Resources::new(cpu, mem, gpus),
            occupied: Resources::ZERO,
        }
    }

    #[test]
    fn best_fit_fills_the_fuller_machine_first() {
        let mut rooms = [room(1, 8000, 32768, 0), room(2, 4000, 16384, 0)];
        let got = place(
            &mut rooms,
            [
                (deployment(10), Resources::new(2000, 4096, 0)),
                (deployment(11), Resources::new(2000, 4096, 0)),
                (deployment(12), Resources::new(6000, 8192, 0)),
            ],
        );
        // The first two go to the small machine (fuller after), leaving the big one whole
        // for the large request.
        assert_eq!(
            got,
            vec![
                (deployment(10), agent(2)),
                (deployment(11), agent(2)),
                (deployment(12), agent(1)),
            ]
        );
    }

    #[test]
    fn what_fits_nowhere_waits_and_does_not_block_what_fits() {
        let mut rooms = [room(1, 1000, 1024, 0)];
        let got = place(
            &mut rooms,
            [
                (deployment(1), Resources::new(0, 0, 1)),
                (deployment(2), Resources::new(500, 512, 0)),
            ],
        );
        assert_eq!(got, vec![(deployment(2), agent(1))]);
    }

    #[test]
    fn unconfirmed_exits_still_occupy_their_agent() {
        let mut rooms = [Room {
            occupied: Resources::new(1000, 0, 1),
            ..room(1, 1000, 1024, 1)
        }];
        assert!(place(&mut rooms, [(deployment(1), Resources::new(0, 0, 1))]).is_empty());
        rooms[0].occupied = Resources::ZERO; // the victim's container is gone
        assert_eq!(
            place(&mut rooms, [(deployment(1), Resources::new(0, 0, 1))]),
            vec![(deployment(1), agent(1))]
        );
    }

    #[test]
    fn an_agent_that_came_back_smaller_has_no_room_and_no_negative_free() {
        let r = Room {
            occupied: Resources::new(4000, 0, 0),
            ..room(1, 2000, 1024, 0)
        };
        assert_eq!(r.free(), Resources::new(0, 1024, 0));
        assert!(!r.fits(&Resources::new(1, 0, 0)));
        assert!(r.fits(&Resources::new(0, 1024, 0)));
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid timestamp")
    }

    fn joining(name: impl Into<String>, capacity: Resources, at: DateTime<Utc>) -> Joining {
        Joining {
            name: name.into(),
            capacity,
            at,
        }
    }

    /// The fleet's indexes are what its placements say.
    fn consistent(f: &Fleet) {
        let mut occupied: HashMap<AgentId, (Resources, usize)> = HashMap::new();
        for p in f.placed.values() {
            let o = occupied.entry(p.agent).or_insert((Resources::ZERO, 0));
            *o = (o.0.saturating_add(&p.resources), o.1 + 1);
        }
        assert_eq!(f.occupied, occupied);
        let stopping: BTreeSet<_> = f
            .placed
            .iter()
            .filter_map(|(d, p)| stopping_key(*d, p))
            .collect();
        assert_eq!(f.stopping, stopping);
    }

    fn fleet_of(agents: &[(u128, i64)]) -> Fleet {
        let mut f = Fleet::default();
        for &(n, cpu) in agents {
            f.join(
                agent(n),
                joining(format!("a{n}"), Resources::new(cpu, 1024, 0), t(0)),
                &[],
                &[],
                |_| None,
            );
        }
        f
    }

    #[test]
    fn a_stopping_container_holds_its_room_until_its_exit_or_its_time() {
        let mut f = fleet_of(&[(1, 1000)]);
        let cpu = |n| Resources::new(n, 0, 0);
        assert_eq!(
            f.place([(deployment(1), cpu(1000))]),
            vec![(deployment(1), agent(1))]
        );
        assert_eq!(f.started(agent(1), deployment(1)), Start::Started);
        assert_eq!(f.started(agent(1), deployment(1)), Start::Again);
        // Preempted: the preemptor waits for the victim's container.
        assert_eq!(f.stop(deployment(1), t(10)), Some(agent(1)));
        assert_eq!(f.stop(deployment(1), t(11)), None, "one stop order");
        assert!(f.place([(deployment(2), cpu(1000))]).is_empty());
        assert_eq!(f.started(agent(1), deployment(1)), Start::Unwanted);
        // Its exit frees the room.
        assert!(
            f.exited(agent(2), deployment(1)).is_none(),
            "another agent's word"
        );
        assert_eq!(
            f.exited(agent(1), deployment(1)).map(|p| p.stage),
            Some(Stage::Stopping)
        );
        assert_eq!(
            f.place([(deployment(2), cpu(1000))]),
            vec![(deployment(2), agent(1))]
        );
        // Without an exit, the grace and the margin free it.
        f.stop(deployment(2), t(20));
        consistent(&f);
        assert!(f.release_overdue(t(34)).is_empty());
        assert_eq!(f.next_due(Duration::seconds(600)), Some(t(35)));
        assert_eq!(f.release_overdue(t(35)), vec![deployment(2)]);
        assert!(f.rooms()[0].occupied.is_zero());
        consistent(&f);
    }

    #[test]
    fn a_hello_reconciles_what_the_agent_runs_with_what_is_placed_on_it() {
        let mut f = fleet_of(&[(1, 4000), (2, 4000)]);
        let cpu = Resources::new(1000, 0, 0);
        let placed = f.place((1..=5).map(|n| (deployment(n), cpu)));
        assert_eq!(placed.len(), 5);
        let on = |f: &Fleet, n| f.placed(&deployment(n)).map(|p| p.agent);
        let first: Vec<u128> = (1..=5).filter(|&n| on(&f, n) == Some(agent(1))).collect();
        assert_eq!(first, vec![1, 2, 3, 4], "best fit fills one machine first");
        f.started(agent(1), deployment(1));
        f.started(agent(1), deployment(2));
        f.stop(deployment(3), t(1));
        f.leave(agent(1), t(-5), t(2)); // an older socket's close
        assert!(f.connected().contains(&agent(1)));
        f.leave(agent(1), t(0), t(2));
        assert!(f
            .place([(deployment(9), Resources::ZERO)])
            .iter()
            .all(|(_, a)| *a == agent(2)));
        // Back: it runs 1 and 3, has an exit to report for 4, lost 2, and runs 7 that is
        // not its own.
        let r = f.join(
            agent(1),
            joining("a1", Resources::new(4000, 1024, 0), t(30)),
            &[deployment(1), deployment(3), deployment(7)],
            &[deployment(4)],
            |_| None,
        );
        assert_eq!(r.stop, vec![deployment(3), deployment(7)]);
        assert_eq!(r.lost, vec![deployment(2)]);
        assert!(r.rerun.is_empty() && r.started.is_empty() && r.released.is_empty());
        assert_eq!(on(&f, 2), None);
        assert_eq!(on(&f, 4), Some(agent(1)), "its exit is still to come");
        // The stray copy of 7 stops; until its exit, 7 is placed nowhere (a new copy would
        // take its exit for its own).
        assert!(f.place([(deployment(7), cpu)]).is_empty());
        assert_eq!(
            f.exited(agent(1), deployment(7)).map(|p| p.stage),
            Some(Stage::Stopping)
        );
        assert_eq!(f.place([(deployment(7), cpu)]).len(), 1);
        consistent(&f);
        // An assigned one it does not have is sent again; one it runs is now started.
        let mut g = fleet_of(&[(1, 4000)]);
        g.place([(deployment(1), cpu), (deployment(2), cpu)]);
        let r = g.join(
            agent(1),
            joining("a1", Resources::new(4000, 1024, 0), t(5)),
            &[deployment(2)],
            &[],
            |_| None,
        );
        assert_eq!(
            (r.rerun, r.started),
            (vec![deployment(1)], vec![deployment(2)])
        );
    }

    #[test]
    fn an_agent_away_or_silent_past_the_grace_is_lost_with_what_it_ran() {
        let mut f = fleet_of(&[(1, 4000), (2, 4000)]);
        let cpu = Resources::new(3000, 0, 0);
        f.place([(deployment(1), cpu), (deployment(2), cpu)]);
        let holder = |n| f.placed(&deployment(n)).map(|p| p.agent);
        let (a1, a2) = (holder(1), holder(2));
        assert_ne!(a1, a2);
        f.stop(deployment(2), t(1));
        f.join(
            agent(3),
            joining("idle", Resources::ZERO, t(0)),
            &[],
            &[],
            |_| None,
        );
        f.leave(agent(1), t(0), t(10));
        f.seen(agent(2), t(50));
        f.seen(agent(2), t(40)); // older news changes nothing
        let grace = Duration::seconds(60);
        assert_eq!(
            f.next_due(grace),
            Some(t(16)),
            "the stop's time comes first"
        );
        assert!(f.lose(t(70), grace, true).is_empty());
        let lost = f.lose(t(71), grace, false);
        assert_eq!(lost.len(), 1);
        assert!(!lost[0].connected);
        let gone = lost[0].agent;
        assert_eq!(lost[0].running.len() + lost[0].released.len(), 1);
        assert!(f.agent(&gone).is_none());
        // The silent one, still connected, is lost at seen + silence + grace, when it was
        // listened for; the idle one is not.
        assert!(f.lose(t(155), grace, true).is_empty());
        assert!(f.lose(t(156), grace, false).is_empty());
        let lost = f.lose(t(156), grace, true);
        assert_eq!(lost.len(), 1);
        assert!(lost[0].connected);
        assert_eq!(f.connected(), vec![agent(3)]);
        assert!(f.lose(t(1000), grace, true).is_empty(), "forgotten once");
        consistent(&f);
    }

    fn resources() -> impl Strategy<Value = Resources> {
        (0..9000i64, 0..9000i64, 0..3i64).prop_map(|(c, m, g)| Resources::new(c, m, g))
    }

    proptest! {
        /// No agent is ever given more than its capacity, nothing is placed twice, and what
        /// stays unplaced fits no agent's remaining room.
        #[test]
        fn never_overcommits_and_leaves_only_what_fits_nowhere(
            caps in prop::collection::vec(resources(), 0..6),
            asks in prop::collection::vec(resources(), 0..40),
        ) {
            let mut rooms: Vec<Room> = caps
                .iter()
                .enumerate()
                .map(|(i, c)| Room { agent: agent(i as u128), capacity: *c, occupied: Resources::ZERO })
                .collect();
            let waiting: Vec<_> = asks.iter().enumerate().map(|(i, r)| (deployment(i as u128), *r)).collect();
            let placed = place(&mut rooms, waiting.clone());
            let mut seen = std::collections::HashSet::new();
            for (d, _) in &placed {
                prop_assert!(seen.insert(*d), "placed twice");
            }
            for room in &rooms {
                let on_it: Vec<Resources> = placed
                    .iter()
                    .filter(|(_, a)| *a == room.agent)
                    .map(|(d, _)| waiting[d.0.as_u128() as usize].1)
                    .collect();
                let sum = Resources::sum(on_it.iter());
                prop_assert_eq!(sum, room.occupied);
                prop_assert!(sum.fits_within(&room.capacity), "overcommitted");
            }
            for (d, r) in &waiting {
                if !seen.contains(d) {
                    prop_assert!(rooms.iter().all(|room| !room.fits(r)), "left out but fits");
                }
            }
        }
    }
}
