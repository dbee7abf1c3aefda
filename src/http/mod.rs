//! The HTTP API: one router with routes and OpenAPI registered together, handlers per
//! resource, extractors, and the one error type that becomes problem+json.

mod accounts;
mod agent_tokens;
pub mod agents;
mod api_keys;
mod clusters;
mod deployments;
pub mod error;
pub mod extract;
pub mod guard;
mod invites;
pub mod metrics;
mod ops;
mod orgs;
pub mod pagination;
pub mod rate_limit;
pub mod request_log;
pub mod router;
pub mod state;
pub mod watch;

pub use error::ApiError;

/// Every request and answer body of the API, as its clients (the `berth` CLI) build and read
/// them: answers are `Deserialize`, requests `Serialize`, so a client that does not follow a
/// change to one of them fails to compile.
pub mod wire {
    pub use super::accounts::{
        LoginRequest, Me, Membership, RefreshRequest, RegisterRequest, TokenPair, User,
        UserEnvelope,
    };
    pub use super::agent_tokens::{AgentToken, CreateAgentTokenRequest, CreatedAgentToken};
    pub use super::agents::Agent;
    pub use super::api_keys::{ApiKey, CreateApiKeyRequest, CreatedApiKey};
    pub use super::clusters::{
        Cluster, CreateClusterRequest, QueueEntry, UpdateClusterRequest, UsageView,
        AGENT_GRACE_SECONDS,
    };
    pub use super::deployments::{
        AgentView, CreateDeploymentRequest, Deployment, DeploymentEvent, DryRun, FinishOutcome,
        FinishRequest, UpdateDeploymentRequest,
    };
    pub use super::error::Problem;
    pub use super::invites::{AcceptRequest, Accepted, CreateInviteRequest, CreatedInvite, Invite};
    pub use super::ops::Health;
    pub use super::orgs::{CreateOrgRequest, Member, Org, RoleRequest};
    pub use super::pagination::Paged;
    pub use crate::domain::deployment::{EventKind, ImageRef, Status};
    pub use crate::domain::policy::Role;
    pub use crate::domain::resources::Resources;
    pub use crate::domain::scheduling::placement::Placement;
    pub use crate::domain::scheduling::{Queueing, WaitReason};
    pub use crate::domain::validation::{Email, FieldError, Password};
}
pub use router::{app, openapi};
pub use state::{AppState, Platform};
