//! `Platform` on Workers: Postgres through the Hyperdrive binding, throttling through the
//! `Throttle` Durable Object shards.

use std::cell::RefCell;
use std::future::Future;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::oneshot;
use worker::send::{SendFuture, SendWrapper};
use worker::Env;

use super::cluster::{ClusterCall, ViewCall};
use super::exchange::{call_object, ObjectMethod};
use super::pg_socket::{PgSocket, StartTls};
use super::throttle::{ThrottleCall, ThrottleOp, SHARDS};
use crate::auth::Caller;
use crate::db::{accounts, clusters, DbError};
use crate::domain::ids::{AgentTokenId, ClusterId};
use crate::domain::throttle::{shard_of, Key};
use crate::engine::{Command, EngineError, Executed, View, Viewed};
use crate::http::{ApiError, Platform};

/// Opens a Postgres connection through the Hyperdrive binding. Its task runs until the
/// client is dropped and the socket closed, then `closed` resolves.
async fn open_db(env: &Env) -> Result<(tokio_postgres::Client, Closed), DbError> {
    let unavailable = |e: String| DbError::Unavailable(e);
    let hd = env
        .hyperdrive("HYPERDRIVE")
        .map_err(|e| unavailable(e.to_string()))?;
    let url = hd.connection_string();
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| unavailable(e.to_string()))?;
    if !url.contains("sslmode=") {
        // Hyperdrive's end of the socket is inside the runtime (its documented clients
        // connect without TLS); skipping the SSLRequest saves a round trip per connection.
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    let socket =
        PgSocket::connect(&hd.host(), hd.port(), true).map_err(|e| unavailable(e.to_string()))?;
    let (client, connection) = config
        .connect_raw(socket, StartTls)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let (done, closed) = oneshot::channel();
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = connection.await {
            worker::console_error!("postgres connection: {e}");
        }
        let _ = done.send(());
    });
    Ok((client, closed))
}

/// Resolves when a connection's task has ended (its socket closed), or was dropped.
type Closed = oneshot::Receiver<()>;

/// Opens a connection for a Durable Object, whose context outlives it: the object keeps it
/// while it works, and its task ends in that context.
pub async fn connect_db(env: &Env) -> Result<tokio_postgres::Client, DbError> {
    Ok(open_db(env).await?.0)
}

/// The Workers implementation of the platform port.
pub struct EdgePlatform {
    env: SendWrapper<Env>,
    /// The connections opened for this event, until they have closed.
    opened: SendWrapper<RefCell<Vec<Closed>>>,
}

impl EdgePlatform {
    pub fn new(env: Env) -> Self {
        Self {
            env: SendWrapper::new(env),
            opened: SendWrapper::new(RefCell::new(Vec::new())),
        }
    }

    /// Resolves when every connection opened so far has closed, for the event's
    /// `waitUntil`; `None` when none was opened. A connection's task closes its socket after
    /// the answer went out (once the handler dropped its client), and its last read settles
    /// only when the server's end of stream arrives (`PgSocket::poll_shutdown`). The runtime
    /// ends an event's I/O with its answer unless told to wait, dropping that read unsettled,
    /// and the future awaiting it is then kept for the isolate's life (BENCHMARKS.md, "the
    /// leak").
    pub fn closed(&self) -> Option<impl Future<Output = ()> + 'static> {
        let opened = std::mem::take(&mut *self.opened.borrow_mut());
        (!opened.is_empty()).then_some(async move {
            for closed in opened {
                let _ = closed.await;
            }
        })
    }

    /// Calls the object `name` of `binding` over RPC with a JSON call and decodes its JSON
    /// answer.
    async fn call_object<T: Serialize, R: DeserializeOwned>(
        &self,
        binding: &'static str,
        name: String,
        method: ObjectMethod,
        call: &T,
    ) -> Result<R, ApiError> {
        let env = self.env.clone();
        let call = serde_json::to_string(call).map_err(|e| ApiError::Internal(e.to_string()))?;
        SendFuture::new(async move {
            let stub = env.durable_object(binding)?.get_by_name(&name)?;
            call_object::<R>(stub, method, &call).await
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("object {binding} ({method:?}): {e}")))
    }

    async fn throttle(&self, call: ThrottleCall) -> Result<Option<u64>, ApiError> {
        let mut worst = None;
        for shard in 0..SHARDS {
            let keys: Vec<Key> = call
                .keys
                .iter()
                .filter(|k| shard_of(&k.name(), SHARDS) == shard)
                .cloned()
                .collect();
            if keys.is_empty() && call.op != ThrottleOp::Purge {
                continue;
            }
            let part = ThrottleCall { op: call.op, keys };
            let wait: Option<u64> = self
                .call_object(
                    "THROTTLE",
                    format!("shard-{shard}"),
                    ObjectMethod::Throttle,
                    &part,
                )
                .await?;
            worst = worst.max(wait);
        }
        Ok(worst)
    }

    /// The cron sweep: wakes every cluster with queued work or overdue deployments (the
    /// safety net for lost wake-ups), purges expired refresh tokens and throttle records.
    pub async fn sweep(&self) -> Result<(), ApiError> {
        let db = self.connect().await?;
        let now = self.now();
        for cluster in clusters::needing_attention(&db, now).await? {
            if let Err(e) = self.cluster_command(cluster, Command::TICK).await {
                worker::console_error!("sweep of cluster {cluster} failed: {e}");
            }
        }
        accounts::purge_expired_refresh_tokens(&db, now).await?;
        self.throttle(ThrottleCall {
            op: ThrottleOp::Purge,
            keys: vec![],
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Platform for EdgePlatform {
    async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
        let env = self.env.clone();
        let (client, closed) = SendFuture::new(async move { open_db(&env).await }).await?;
        self.opened.borrow_mut().push(closed);
        Ok(client)
    }

    async fn cluster_command(
        &self,
        cluster: ClusterId,
        command: Command,
    ) -> Result<Executed, ApiError> {
        let call = ClusterCall { cluster, command };
        let result: Result<Executed, EngineError> = self
            .call_object("CLUSTER", cluster.to_string(), ObjectMethod::Command, &call)
            .await?;
        Ok(result?)
    }

    async fn cluster_view(
        &self,
        cluster: ClusterId,
        view: View,
        by: Caller,
    ) -> Result<Viewed, ApiError> {
        let call = ViewCall { cluster, view, by };
        let result: Result<Viewed, EngineError> = self
            .call_object("CLUSTER", cluster.to_string(), ObjectMethod::View, &call)
            .await?;
        Ok(result?)
    }

    async fn end_watches(&self, clusters: &[ClusterId], who: &Caller) -> Result<(), ApiError> {
        for cluster in clusters {
            let ended: usize = self
                .call_object("CLUSTER", cluster.to_string(), ObjectMethod::Unwatch, who)
                .await?;
            if ended > 0 {
                worker::console_log!("{ended} watch stream(s) of cluster {cluster} ended");
            }
        }
        Ok(())
    }

    async fn disconnect_agents(
        &self,
        cluster: ClusterId,
        token: AgentTokenId,
    ) -> Result<(), ApiError> {
        let closed: usize = self
            .call_object(
                "CLUSTER",
                cluster.to_string(),
                ObjectMethod::Disconnect,
                &token,
            )
            .await?;
        if closed > 0 {
            worker::console_log!(
                "agent token {token} revoked: {closed} socket(s) of cluster {cluster} closed"
            );
        }
        Ok(())
    }

    async fn throttle_check(&self, keys: &[Key]) -> Result<Option<u64>, ApiError> {
        self.throttle(ThrottleCall {
            op: ThrottleOp::Check,
            keys: keys.to_vec(),
        })
        .await
    }

    async fn throttle_fail(&self, keys: &[Key]) -> Result<(), ApiError> {
        self.throttle(ThrottleCall {
            op: ThrottleOp::Fail,
            keys: keys.to_vec(),
        })
        .await
        .map(drop)
    }

    async fn throttle_reset(&self, key: &Key) -> Result<(), ApiError> {
        self.throttle(ThrottleCall {
            op: ThrottleOp::Reset,
            keys: vec![key.clone()],
        })
        .await
        .map(drop)
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn log(&self, line: &str) {
        worker::console_log!("{line}");
    }
}
