//! The per-cluster command executor: what a cluster's Durable Object runs (and what native
//! tests run in-process). Commands that arrive together form a batch; every batch is one
//! Postgres transaction that locks the cluster row, applies the commands in order, lets the
//! pure scheduler decide, and writes the decisions. Postgres is the system of record: the
//! writer's in-memory view is only a cache of it.

mod authorize;
mod batch;
mod commands;
mod live;
mod writer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::db::agents::AgentRow;
use crate::db::clusters::{ClusterRow, Usage};
use crate::db::deployments::{DeploymentRow, NewDeployment};
use crate::db::DbError;
use crate::domain::agent::protocol::{AgentInfo, ObjectMessage};
use crate::domain::agent::Report;
use crate::domain::deployment::EventKind;
use crate::domain::ids::{AgentId, AgentTokenId, DeploymentId};
use crate::domain::policy::Action;
use crate::domain::resources::Resources;
use crate::domain::scheduling::plan::Plan;
use crate::domain::scheduling::Queueing;
use crate::domain::validation::FieldError;

pub use live::{QueuePage, QueuedRow};
pub use writer::{ClusterWriter, Sleep, DATABASE_DEADLINE, UNKNOWN_SECONDS};

/// A change to one cluster's queue or allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Queue a new deployment (admitted at once if the scheduler allows). The engine
    /// authorizes `by` itself, in the batch; `created_by` is taken from it.
    Submit {
        deployment: NewDeployment,
        by: Caller,
    },
    /// What a submission would meet now (a dry run): authorized exactly like `Submit`,
    /// answered with the scheduler's [`Plan`] after the batch, writing nothing.
    Plan {
        deployment: NewDeployment,
        by: Caller,
    },
    /// queued → cancelled.
    Cancel { id: DeploymentId },
    /// running → stopped.
    Stop { id: DeploymentId },
    /// running → succeeded | failed, as a cluster agent reports.
    Finish {
        id: DeploymentId,
        succeeded: bool,
        message: Option<String>,
    },
    /// A new priority for a queued or running deployment.
    SetPriority { id: DeploymentId, priority: i32 },
    /// Rename, resize or change policy; absent fields keep their value (merged against the
    /// locked row, so concurrent changes of different fields do not undo each other).
    UpdateCluster {
        name: Option<String>,
        capacity: Option<Resources>,
        queueing: Option<Queueing>,
        preemption: Option<bool>,
        #[serde(default)]
        agent_grace_seconds: Option<i32>,
    },
    /// Delete the cluster (refused while work is queued or running).
    DeleteCluster,
    /// Expire overdue deployments, lose agents away past the grace, admit and place what fits
    /// (alarm and cron). `seen`: when each agent with an open socket was last heard of, as
    /// the object reads it from its sockets (none: not known, nothing is judged by silence).
    Tick {
        #[serde(default)]
        seen: Option<Vec<(AgentId, DateTime<Utc>)>>,
    },
    /// An agent's hello: recorded by its name, then reconciled with what is placed on it.
    AgentHello {
        token: Option<AgentTokenId>,
        info: AgentInfo,
        capacity: Resources,
        running: Vec<DeploymentId>,
        exited: Vec<DeploymentId>,
    },
    /// A joined agent's report.
    AgentReport { agent: AgentId, report: Report },
    /// The socket of the agent's connection begun at `since` closed.
    AgentGone {
        agent: AgentId,
        since: DateTime<Utc>,
    },
}

impl Command {
    /// A tick without signs of life.
    pub const TICK: Command = Command::Tick { seen: None };
}

/// What the cluster's object must say to one of its agents after a batch committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum Order {
    /// Send a message to the agent's socket.
    Send {
        agent: AgentId,
        /// Its name, unique among the cluster's agents: its socket is found by it.
        name: String,
        message: ObjectMessage,
    },
    /// Close the agent's socket with this reason.
    Close {
        agent: AgentId,
        name: String,
        reason: String,
    },
}

/// A read answered from a cluster writer's own view after any batch in progress has
/// committed: no transaction, one round trip on the writer's reading connection to authorize
/// the caller (and read the cluster's row), none for the usage or the queue themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "view", rename_all = "snake_case")]
pub enum View {
    /// The cluster with its allocation and queue totals.
    Cluster,
    /// A page of the queue in scheduling order, after the deployment `after`.
    Queue {
        after: Option<DeploymentId>,
        limit: usize,
    },
    /// The place of one deployment in the queue (none when it is not queued).
    Position { id: DeploymentId },
}

/// The actions the cluster's object authorizes itself (`authorize.rs`); the router declares
/// the routes of submissions and of the two reads with these same constants.
pub const SUBMIT_ACTION: Action = Action::CreateDeployment;
/// Reading a cluster with its usage (`View::Cluster`).
pub const READ_CLUSTER_ACTION: Action = Action::ReadCluster;
/// Reading a cluster's queue (`View::Queue`).
pub const READ_QUEUE_ACTION: Action = Action::ReadQueue;

impl View {
    /// What the policy table calls this read.
    pub fn action(&self) -> Action {
        match self {
            Self::Cluster => READ_CLUSTER_ACTION,
            Self::Queue { .. } => READ_QUEUE_ACTION,
            Self::Position { .. } => Action::ReadDeployment,
        }
    }
}

/// The answer to a [`View`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "viewed", rename_all = "snake_case")]
pub enum Viewed {
    Cluster {
        cluster: Box<ClusterRow>,
        usage: Usage,
    },
    Queue {
        entries: QueuePage,
    },
    Position {
        position: Option<u32>,
    },
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The deployment the command was about, as it is now.
    Deployment {
        deployment: Box<DeploymentRow>,
        /// 1-based place in the queue when queued.
        position: Option<u32>,
        /// True when an Idempotency-Key replay returned an earlier submission.
        replayed: bool,
    },
    /// The cluster, as it is now.
    Cluster {
        cluster: Box<ClusterRow>,
        usage: Usage,
    },
    /// The cluster is gone.
    Deleted,
    /// An agent's hello was recorded.
    Agent { agent: Box<AgentRow> },
    /// An agent's report or close was taken into account.
    Noted,
    /// What a submission would meet now (a dry run).
    Planned { plan: Plan },
    /// A tick ran.
    Ticked {
        admitted: usize,
        preempted: usize,
        expired: usize,
    },
}

/// A command's outcome and when the cluster must be looked at again (the earliest deadline of
/// a running deployment, agent's grace or stopping container's time: the Durable Object sets
/// its alarm there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Executed {
    pub outcome: Outcome,
    pub next_deadline: Option<DateTime<Utc>>,
    /// The batch the command was committed in (set by the writer).
    #[serde(default)]
    pub batch: Option<BatchStats>,
}

/// Size and duration of one batch: what the object's own admission rate is measured by
/// (`Server-Timing` on submissions), apart from the HTTP front's costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchStats {
    /// Commands in the batch.
    pub commands: u32,
    /// From the start of the transaction to its commit, in microseconds.
    pub micros: u64,
}

/// A committed change to a cluster, for whoever watches it: the cluster's object streams
/// them in commit order (`http::watch` renders them). Made only while someone watches
/// ([`ClusterWriter::set_watched`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its place among the writer's changes (from 1, in commit order): what a watcher
    /// opened at [`Opening::seq`] has already seen up to.
    pub seq: u64,
    /// The cluster's latest event when it was committed (for a deployment's change, its own
    /// event): where a watcher that saw it resumes from.
    pub event: i64,
    pub what: Changed,
}

/// What a [`Change`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    /// One event of a deployment's, with the deployment as the batch left it.
    Deployment {
        kind: EventKind,
        deployment: Box<DeploymentRow>,
        /// 1-based place in the queue when queued.
        position: Option<u32>,
    },
    /// The cluster's allocation, demand or capacity changed.
    Usage { capacity: Resources, usage: Usage },
    /// An agent connected or left (with what its containers occupy, and how many run).
    Agent {
        agent: Box<AgentRow>,
        placed: Resources,
        running: i64,
    },
    /// The cluster was deleted.
    Deleted,
}

/// What a new watcher is shown first ([`ClusterWriter::open_watch`]): a snapshot, or what it
/// missed since the event it names. Either way it has then seen every change up to `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Opening {
    pub seq: u64,
    pub shown: Shown,
}

/// The body of an [`Opening`].
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// The cluster now, as of its latest event `event`.
    Snapshot {
        event: i64,
        cluster: Box<ClusterRow>,
        usage: Usage,
        /// The head of the queue.
        queue: QueuePage,
        /// Its agents that are connected or hold containers, with what those occupy and how
        /// many run.
        agents: Vec<(AgentRow, Resources, i64)>,
    },
    /// The events after the one named, oldest first (each deployment as it is now), then the
    /// current usage and agents.
    Missed(Vec<Change>),
}

/// How many missed events a reconnecting watcher is replayed; past that it gets a snapshot.
pub const REPLAY_LIMIT: i64 = 1000;
/// How many queue entries a snapshot shows.
pub const SNAPSHOT_QUEUE: usize = 50;

/// Why a command was refused; crosses the Durable Object boundary as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum EngineError {
    #[error("no such {0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<DbError> for EngineError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) | DbError::Conflict(m) => Self::Unavailable(m),
            DbError::Unique(c) => Self::Conflict(crate::db::unique_violation(&c).into()),
            DbError::Other(m) => Self::Internal(m),
        }
    }
}

impl From<tokio_postgres::Error> for EngineError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scheduling::{QueueEntry, WaitReason};
    use uuid::Uuid;

    /// Views cross from the cluster's object to the Worker as JSON: each must come back as
    /// it left (an internally tagged enum cannot carry a bare sequence, for one).
    #[test]
    fn views_cross_the_object_boundary_as_json() {
        let entry = QueueEntry {
            id: DeploymentId(Uuid::from_u128(7)),
            position: 1,
            effective_priority: 12,
            reason: WaitReason::WaitingForCapacity,
        };
        let row = QueuedRow {
            name: "web".into(),
            priority: 10,
            resources: Resources::new(500, 256, 0),
            enqueued_at: DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("time"),
        };
        for viewed in [
            Viewed::Queue {
                entries: vec![(entry, row)],
            },
            Viewed::Queue { entries: vec![] },
        ] {
            let json = serde_json::to_string(&viewed).expect("serializes");
            let back: Viewed = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, viewed);
        }
    }
}
