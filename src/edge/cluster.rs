//! `ClusterObject`: one Durable Object per cluster, the single writer of its queue and
//! allocation. Input gates do not hold across a Postgres round trip, so the object
//! serializes commands itself (`ClusterWriter`: commands arriving together are committed as
//! one batch, in one transaction that also locks the cluster row). Its connections (one for
//! batches, one for authorizing reads) are reused across requests and reopened when lost; all
//! state is in Postgres, so a restarted object simply carries on. The Worker calls it over
//! RPC (`command`, `view`). Its alarm fires at the earliest `max_runtime_seconds` deadline.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use worker::wasm_bindgen::JsCast;
use worker::{
    durable_object, DurableObject, Env, Error, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage,
};

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::agents::{self, HibernationState};
use super::exchange::{rpc_answer, rpc_argument};
use super::platform::connect_db;
use super::watch::{self, Watchers};
use crate::auth::Caller;
use crate::domain::agent::Session;
use crate::domain::ids::{AgentTokenId, ClusterId};
use crate::engine::{ClusterWriter, Command, EngineError, Executed, Outcome, View};
use crate::http::Platform as _;

/// What the Worker sends to the object.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterCall {
    /// The cluster (the object is named after it).
    pub cluster: ClusterId,
    /// The command.
    pub command: Command,
}

/// A read answered from the writer's view, for a caller the object authorizes.
#[derive(Debug, Serialize, Deserialize)]
pub struct ViewCall {
    pub cluster: ClusterId,
    pub view: View,
    pub by: Caller,
}

#[durable_object]
pub struct ClusterObject {
    state: State,
    /// The same `DurableObjectState`, for the hibernation calls `State` does not bind.
    hibernation: HibernationState,
    env: Env,
    writer: ClusterWriter,
    /// Whether this instance has stored its cluster's id for the alarm.
    remembered: std::cell::Cell<bool>,
    /// When this instance last ran a command.
    last_run: std::cell::Cell<Option<chrono::DateTime<Utc>>>,
    /// The alarm this instance has set and that has not fired yet.
    alarm_at: std::cell::Cell<Option<chrono::DateTime<Utc>>>,
    /// The open watch streams.
    watchers: Watchers,
}

/// After this long without a command, the object closes its database connections (at its
/// alarm), so that it can leave memory while its agents stay connected.
const IDLE_SECONDS: i64 = 30;

impl ClusterObject {
    /// Runs a command on the cluster's writer, then carries out the orders for its agents
    /// that committed batches decided, and sets the alarm at the next time the cluster must be
    /// looked at. A tick learns here when each agent with an open socket was last heard of.
    async fn run(
        &self,
        cluster: ClusterId,
        command: Command,
    ) -> std::result::Result<Executed, EngineError> {
        let command = match command {
            Command::Tick { seen: None } => Command::Tick {
                seen: Some(agents::seen(&self.state, &self.hibernation)),
            },
            other => other,
        };
        self.last_run.set(Some(Utc::now()));
        let result = self
            .writer
            .run(cluster, command, || connect_db(&self.env), Utc::now)
            .await;
        agents::deliver(&self.state, self.writer.take_orders());
        self.wake(self.writer.take_wakes());
        self.watchers.publish(&self.writer.take_changes());
        self.writer.set_watched(!self.watchers.is_empty());
        for line in self.writer.take_logs() {
            worker::console_log!("{line}");
        }
        if let Ok(Executed { next_deadline, .. }) = &result {
            if !self.remembered.get() {
                // Remembered for the alarm, which arrives without a request (once per
                // instance, and only for a cluster that exists).
                match self.state.storage().put("cluster", cluster).await {
                    Ok(()) => self.remembered.set(true),
                    Err(e) => worker::console_error!("remembering the cluster failed: {e}"),
                }
            }
            // Woken at the next time the cluster must be looked at, or once idle, to close
            // its connections.
            let idle = Utc::now() + chrono::Duration::seconds(IDLE_SECONDS);
            let at = next_deadline.map_or(idle, |at| at.min(idle));
            // An alarm already due sooner will do (it looks again, and sets the next one):
            // a command does not cost a storage write for moving it.
            let sooner = self
                .alarm_at
                .get()
                .is_some_and(|pending| pending <= at && pending > Utc::now());
            if !sooner {
                self.set_alarm(Some(at)).await;
            }
        }
        result
    }

    /// Ticks the objects of other clusters whose held deployments wait for ones a batch just
    /// ended (committed by now), without waiting for their answers: each re-reads its held
    /// deployments' dependencies and releases or cancels them. A tick lost here is made up
    /// for by the cron sweep.
    fn wake(&self, clusters: Vec<ClusterId>) {
        for other in clusters {
            let platform = super::platform::EdgePlatform::new(self.env.clone());
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = platform.cluster_command(other, Command::TICK).await {
                    worker::console_error!(
                        "waking cluster {other} for its dependencies failed: {e}"
                    );
                }
            });
        }
    }

    /// Sets the alarm at `at` (none: deletes it).
    async fn set_alarm(&self, at: Option<chrono::DateTime<Utc>>) {
        let storage = self.state.storage();
        let done = match at {
            // A DateTime is an absolute time (an i64 would be an offset from now).
            Some(at) => {
                let when = at.max(Utc::now() + chrono::Duration::milliseconds(50));
                storage.set_alarm(when).await
            }
            None => storage.delete_alarm().await,
        };
        match done {
            Ok(()) => self.alarm_at.set(at),
            Err(e) => worker::console_error!("setting the alarm failed: {e}"),
        }
    }

    /// Runs the command an agent's socket gave, if any.
    async fn run_for_agent(&self, ws: &WebSocket, command: Option<Command>) -> Result<()> {
        let Some(command) = command else {
            return Ok(());
        };
        let Some(session) = ws.deserialize_attachment::<Session>()? else {
            return Ok(());
        };
        let hello = matches!(command, Command::AgentHello { .. });
        match self.run(session.cluster, command).await {
            Ok(Executed {
                outcome: Outcome::Agent { agent },
                ..
            }) => agents::joined(&self.state, ws, &agent)?,
            Ok(_) => {}
            Err(e) if hello => {
                // The agent tries again (its reconnect), and nothing was recorded.
                worker::console_error!("agent hello not recorded: {e}");
                ws.close(
                    Some(1011),
                    Some("the cluster cannot record agents now; retry"),
                )?;
            }
            Err(e) => worker::console_error!("agent message not recorded: {e}"),
        }
        Ok(())
    }
}

impl DurableObject for ClusterObject {
    fn new(state: State, env: Env) -> Self {
        let raw: JsValue = state._inner().into();
        let hibernation: HibernationState = raw.clone().unchecked_into();
        let state = State::from(raw.unchecked_into::<worker::worker_sys::DurableObjectState>());
        agents::set_auto_response(&state);
        let kept = state.get_websockets().len();
        if kept > 0 {
            // Back from hibernation (or restarted): its agents stayed connected.
            worker::console_log!("cluster object started with {kept} agent socket(s) kept");
        }
        Self {
            state,
            hibernation,
            env,
            writer: ClusterWriter::with_deadline(std::sync::Arc::new(|d| {
                Box::pin(worker::send::SendFuture::new(worker::Delay::from(d)))
            })),
            remembered: std::cell::Cell::new(false),
            last_run: std::cell::Cell::new(None),
            alarm_at: std::cell::Cell::new(None),
            watchers: Watchers::default(),
        }
    }

    /// The Worker calls [`ClusterObject::command`] and [`ClusterObject::view`] over RPC;
    /// fetch serves what RPC cannot return: the agent WebSocket's upgrade, forwarded by the
    /// Worker once admitted, and watch streams.
    async fn fetch(&self, req: Request) -> Result<Response> {
        if agents::is_agent_connect(&req) {
            return agents::accept(&self.state, &req);
        }
        if let Some(w) = watch::requested(&req)? {
            let (id, stream) = self
                .watchers
                .open(w.by.clone(), w.until, w.gzip)
                .map_err(|e| worker::Error::from(format!("watch stream: {e:?}")))?;
            self.writer.set_watched(true);
            let opening = self
                .writer
                .open_watch(
                    w.cluster,
                    &w.by,
                    w.after,
                    || connect_db(&self.env),
                    Utc::now(),
                )
                .await;
            return match opening {
                Ok(opening) => {
                    let frames = crate::http::watch::opening(&opening);
                    self.watchers.opened(id, opening.seq, frames);
                    watch::answer(stream, w.gzip)
                }
                Err(e) => {
                    self.watchers.abandon(id);
                    self.writer.set_watched(!self.watchers.is_empty());
                    watch::refused(&e)
                }
            };
        }
        Response::error("this object answers RPC calls only", 404)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let command = agents::on_message(&self.state, &self.hibernation, &ws, message)?;
        self.run_for_agent(&ws, command).await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        agents::on_close(&ws, code);
        self.run_for_agent(&ws, agents::on_gone(&ws)).await
    }

    async fn websocket_error(&self, ws: WebSocket, error: Error) -> Result<()> {
        worker::console_error!("agent socket error: {error}");
        self.run_for_agent(&ws, agents::on_gone(&ws)).await
    }

    /// Ticks (deadlines, agents' grace, stopping containers), then, when no command came for
    /// [`IDLE_SECONDS`], closes the database connections and sleeps until the next time the
    /// cluster must be looked at.
    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(None);
        let idle = self
            .last_run
            .get()
            .is_none_or(|t| Utc::now() - t >= chrono::Duration::seconds(IDLE_SECONDS));
        if let Some(cluster) = self.state.storage().get::<ClusterId>("cluster").await? {
            self.remembered.set(true);
            match self.run(cluster, Command::TICK).await {
                Ok(executed) if idle && self.writer.release() => {
                    worker::console_log!("cluster {cluster} idle: database connections closed");
                    self.set_alarm(executed.next_deadline).await;
                }
                Ok(_) => {}
                Err(e) => worker::console_error!("cluster {cluster} alarm tick failed: {e}"),
            }
        }
        Response::ok("ok")
    }
}

/// The object's RPC methods (JSON in, JSON out). workerd exposes RPC only on classes that
/// extend `DurableObject`; `scripts/build-worker.sh` makes the exported class one.
#[wasm_bindgen(js_sys = ::worker::js_sys, wasm_bindgen_futures = ::worker::wasm_bindgen_futures)]
impl ClusterObject {
    /// Runs a [`ClusterCall`] and answers its `Result<Executed, EngineError>`.
    pub async fn command(&self, call: String) -> std::result::Result<JsValue, JsValue> {
        let call: ClusterCall = rpc_argument(&call)?;
        rpc_answer(&self.run(call.cluster, call.command).await)
    }

    /// Closes the agent sockets of a revoked token (its id as JSON); answers how many.
    pub async fn disconnect(&self, call: String) -> std::result::Result<JsValue, JsValue> {
        let token: AgentTokenId = rpc_argument(&call)?;
        let sockets = agents::disconnect(&self.state, token);
        for ws in &sockets {
            if let Err(e) = self.run_for_agent(ws, agents::on_gone(ws)).await {
                worker::console_error!("revoked agent not recorded gone: {e}");
            }
        }
        let n = sockets.len();
        rpc_answer(&n)
    }

    /// Ends the watch streams of a caller (as JSON: a removed member, a revoked key);
    /// answers how many.
    pub async fn unwatch(&self, call: String) -> std::result::Result<JsValue, JsValue> {
        let who: Caller = rpc_argument(&call)?;
        let n = self.watchers.end(
            &who,
            "access was revoked (membership removed or key revoked)",
        );
        self.writer.set_watched(!self.watchers.is_empty());
        rpc_answer(&n)
    }

    /// Answers a [`ViewCall`] with its `Result<Viewed, EngineError>`.
    pub async fn view(&self, call: String) -> std::result::Result<JsValue, JsValue> {
        let call: ViewCall = rpc_argument(&call)?;
        let viewed = self
            .writer
            .view(
                call.cluster,
                call.view,
                &call.by,
                || connect_db(&self.env),
                Utc::now(),
            )
            .await;
        rpc_answer(&viewed)
    }
}
