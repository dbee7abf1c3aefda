//! What the HTTP layer needs from the outside world, as one port (`Platform`): a Postgres
//! connection, the login throttle and the clock. `edge/` implements it on Workers; native
//! tests implement it in-process.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rate_limit::RateLimits;
use super::ApiError;
use crate::auth::access::TokenKeys;
use crate::auth::Caller;
use crate::db::DbError;
use crate::domain::ids::{AgentTokenId, ClusterId};
use crate::domain::throttle::Key;
use crate::engine::{Command, Executed, View, Viewed};

/// The platform port.
#[async_trait]
pub trait Platform: Send + Sync {
    /// Opens a database connection for this request.
    async fn connect(&self) -> Result<tokio_postgres::Client, DbError>;
    /// Seconds to wait if any of `keys` is over its limit, else `None`.
    async fn throttle_check(&self, keys: &[Key]) -> Result<Option<u64>, ApiError>;
    /// Records a failed attempt against every key.
    async fn throttle_fail(&self, keys: &[Key]) -> Result<(), ApiError>;
    /// Clears a key after a success.
    async fn throttle_reset(&self, key: &Key) -> Result<(), ApiError>;
    /// Runs a command through the cluster's single writer (its Durable Object on Workers).
    async fn cluster_command(&self, cluster: ClusterId, cmd: Command)
        -> Result<Executed, ApiError>;
    /// A read from the cluster writer's own view (its Durable Object on Workers), which
    /// authorizes `by` itself.
    async fn cluster_view(
        &self,
        cluster: ClusterId,
        view: View,
        by: Caller,
    ) -> Result<Viewed, ApiError>;
    /// Ends the watch streams of `who` on each of `clusters` (a member removed, a key
    /// revoked).
    async fn end_watches(&self, clusters: &[ClusterId], who: &Caller) -> Result<(), ApiError>;
    /// Closes every live agent connection to `cluster` that uses the agent token `token`
    /// (after it was revoked). Where no agent can connect (the native test platform), none.
    async fn disconnect_agents(
        &self,
        cluster: ClusterId,
        token: AgentTokenId,
    ) -> Result<(), ApiError>;
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Writes one structured log line (JSON) where the platform's logs go.
    fn log(&self, line: &str);
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The platform port.
    pub platform: Arc<dyn Platform>,
    /// Token signing and verification keys.
    pub keys: Arc<TokenKeys>,
    /// Every caller's request budget, when the deployment keeps one.
    pub limits: Option<Arc<RateLimits>>,
}

impl AppState {
    /// A new state.
    pub fn new(platform: Arc<dyn Platform>, keys: TokenKeys) -> Self {
        Self {
            platform,
            keys: Arc::new(keys),
            limits: None,
        }
    }

    /// The same, spending every caller's requests from `limits`.
    pub fn with_limits(mut self, limits: Option<Arc<RateLimits>>) -> Self {
        self.limits = limits;
        self
    }

    /// A database connection, or 503 when the database cannot be reached.
    pub async fn db(&self) -> Result<tokio_postgres::Client, ApiError> {
        Ok(self.platform.connect().await?)
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.platform.now()
    }
}
