//! The agent WebSocket on Workers: the Worker forwards an admitted upgrade to the cluster's
//! object (`forward`); the object accepts the socket with the hibernation API (`accept`) and
//! runs the protocol on each message (`on_message`), its per-socket state in the socket's
//! attachment so that it survives the object's eviction. What a message means for the
//! cluster (a hello, a report, a close) is a command for the cluster's writer; the orders
//! the writer's batches decide are carried out on the sockets by `deliver`, which finds an
//! agent's socket by the name its hello claimed.
//!
//! Each socket is tagged `token:<token id>`, to close every socket of a revoked token (tags
//! are fixed at accept, before the hello names the agent, whose id is in the attachment).
//! Pings are answered by the runtime without waking the object (the auto-response set in
//! `ClusterObject::new`).

use std::collections::HashMap;

use axum::body::Body;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use worker::js_sys::{Date, Promise};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    web_sys, Env, Request, Response, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
    WebSocketRequestResponsePair,
};

use super::exchange::response_to_js;
use crate::db::agents::AgentRow;
use crate::domain::agent::protocol::{self, Violation, PING, PONG};
use crate::domain::agent::{step, Admitted, Joined, Session, Step};
use crate::domain::ids::{AgentId, AgentTokenId};
use crate::domain::scheduling::placement;
use crate::engine::{Command, Order};
use crate::http::{agents, ApiError, AppState};

/// The header that carries [`Admitted`] (JSON) from the Worker to the object. The object's
/// fetch is reachable only through its binding, so it trusts the header.
const ADMITTED_HEADER: &str = "x-berth-admitted";
/// The object's own path for an agent socket.
const OBJECT_PATH: &str = "/agent/connect";

/// The Worker's side of `GET /v1/clusters/{id}/agent/connect`: admission, then the
/// object's 101 (with the client end of its socket) returned unchanged.
pub async fn connect(
    st: &AppState,
    env: &Env,
    segment: &str,
    req: &axum::http::Request<Body>,
) -> worker::Result<web_sys::Response> {
    let admitted = match agents::admit(st, req.method(), segment, req.headers()).await {
        Ok(admitted) => admitted,
        Err(e) => return Ok(response_to_js(e.into_response()).await?),
    };
    match forward(env, &admitted).await {
        Ok(res) => Ok(res),
        Err(e) => {
            let e = ApiError::Unavailable(format!("cluster object (agent connect): {e:?}"));
            Ok(response_to_js(e.into_response()).await?)
        }
    }
}

#[worker::wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// A Durable Object stub's own `fetch` (with a `web_sys::Request`, answer unconverted,
    /// so the 101's `webSocket` passes through as it is).
    #[wasm_bindgen(extends = worker::js_sys::Object)]
    type FetchStub;

    #[wasm_bindgen(method, catch, js_name = fetch)]
    fn fetch_request(this: &FetchStub, req: &web_sys::Request) -> Result<Promise, JsValue>;

    /// The hibernation calls of `DurableObjectState` that `worker` 0.8.7 does not bind.
    #[wasm_bindgen(extends = worker::js_sys::Object)]
    pub type HibernationState;

    /// When the runtime last answered `ws` with the auto-response (null: never).
    #[wasm_bindgen(method, catch, js_name = getWebSocketAutoResponseTimestamp)]
    fn get_websocket_auto_response_timestamp(
        this: &HibernationState,
        ws: &web_sys::WebSocket,
    ) -> Result<JsValue, JsValue>;
}

async fn forward(env: &Env, admitted: &Admitted) -> Result<web_sys::Response, JsValue> {
    let cluster = admitted.cluster.to_string();
    let admitted =
        serde_json::to_string(admitted).map_err(|e| JsValue::from_str(&e.to_string()))?;
    let headers = [
        ("upgrade", "websocket"),
        (ADMITTED_HEADER, admitted.as_str()),
    ];
    fetch_object(env, &cluster, OBJECT_PATH, &headers).await
}

/// A GET to the `fetch` of `cluster`'s object, at its own `path`, with `headers`; its answer
/// unconverted (a 101 keeps its socket, a stream its body).
pub async fn fetch_object(
    env: &Env,
    cluster: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<web_sys::Response, JsValue> {
    let stub = env.durable_object("CLUSTER")?.get_by_name(cluster)?;
    let h = web_sys::Headers::new()?;
    for (name, value) in headers {
        h.set(name, value)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_headers(&h);
    let req =
        web_sys::Request::new_with_str_and_init(&format!("https://cluster.internal{path}"), &init)?;
    let stub: FetchStub = stub.into_rpc();
    let res = JsFuture::from(stub.fetch_request(&req)?).await?;
    res.dyn_into::<web_sys::Response>()
}

/// Sets the ping's auto-response (once per object instance, from its constructor).
pub fn set_auto_response(state: &State) {
    match WebSocketRequestResponsePair::new(PING, PONG) {
        Ok(pair) => state.set_websocket_auto_response(&pair),
        Err(e) => worker::console_error!("setting the ping auto-response failed: {e:?}"),
    }
}

/// Whether `req` is the Worker's forwarded agent upgrade.
pub fn is_agent_connect(req: &Request) -> bool {
    req.path() == OBJECT_PATH
}

/// The object's side: accepts the socket with the hibernation API, tagged, its session as
/// its attachment, and answers 101 with the client end.
pub fn accept(state: &State, req: &Request) -> worker::Result<Response> {
    let Some(admitted) = req
        .headers()
        .get(ADMITTED_HEADER)?
        .and_then(|h| serde_json::from_str::<Admitted>(&h).ok())
    else {
        return Response::error("not an admitted agent", 400);
    };
    let WebSocketPair { client, server } = WebSocketPair::new()?;
    let session = Session::new(&admitted, Utc::now());
    state.accept_websocket_with_tags(&server, &[&token_tag(&session.token)]);
    server.serialize_attachment(&session)?;
    Response::from_websocket(client)
}

/// One message on an accepted socket (the object may have been woken from hibernation for
/// it: everything it needs is in the attachment). Answers the command for the cluster's
/// writer it amounts to, if any: a hello to record (its name claimed on this socket first),
/// or a joined agent's report. A violation closes the socket and changes nothing.
pub fn on_message(
    state: &State,
    hibernation: &HibernationState,
    ws: &WebSocket,
    message: WebSocketIncomingMessage,
) -> worker::Result<Option<Command>> {
    let Some(mut session) = ws.deserialize_attachment::<Session>()? else {
        // Not one of ours (cannot happen: every accepted socket has its session).
        ws.close(Some(1011), Some("no session"))?;
        return Ok(None);
    };
    let result = match message {
        WebSocketIncomingMessage::String(text) => {
            protocol::parse(&text).and_then(|m| step(&session, m))
        }
        WebSocketIncomingMessage::Binary(_) => Err(Violation::binary()),
    };
    match result {
        Ok(Step::Reply(reply)) => {
            ws.send_with_str(reply.to_text())?;
            Ok(None)
        }
        Ok(Step::Hello(hello)) => {
            // One machine, one live socket: a second agent under a connected one's name is
            // refused, unless that one has been silent past the pings it may miss (its peer
            // is gone without closing, say): then the new socket replaces it.
            let name = hello.agent.name.clone();
            if let Some(old) = socket_named(state, &name) {
                let silent = last_heard(hibernation, &old)
                    .is_none_or(|at| Utc::now() - at > placement::silence());
                if !silent {
                    let v =
                        Violation::policy(format!("an agent named {name} is already connected"));
                    ws.close(Some(v.code), Some(v.reason))?;
                    return Ok(None);
                }
                worker::console_log!("agent {name}: a silent socket replaced by a new one");
                let _ = old.close(Some(1001), Some("replaced by a new connection"));
                let mut stale = old
                    .deserialize_attachment::<Session>()?
                    .unwrap_or(session.clone());
                stale.name = None;
                stale.agent = None;
                old.serialize_attachment(&stale)?;
            }
            session.name = Some(name);
            session.heard_at = Some(Utc::now());
            ws.serialize_attachment(&session)?;
            Ok(Some(Command::AgentHello {
                token: session.token.parse().ok().map(AgentTokenId),
                info: hello.agent,
                capacity: hello.capacity,
                running: hello.running,
                exited: hello.exited,
            }))
        }
        Ok(Step::Report(report)) => {
            let Some(agent) = session.agent.as_ref().map(|a| a.id) else {
                worker::console_log!("a report before the hello was recorded, ignored");
                return Ok(None);
            };
            session.heard_at = Some(Utc::now());
            ws.serialize_attachment(&session)?;
            Ok(Some(Command::AgentReport { agent, report }))
        }
        Err(v) => {
            let who = session.agent.as_ref().map(|a| a.id.to_string());
            let who = who.as_deref().unwrap_or("(before its hello)");
            worker::console_log!("agent {who} closed: {} {}", v.code, v.reason);
            ws.close(Some(v.code), Some(v.reason))?;
            Ok(None)
        }
    }
}

/// The hello on `ws` was recorded as `agent`: the session keeps who it is.
pub fn joined(state: &State, ws: &WebSocket, agent: &AgentRow) -> worker::Result<()> {
    let Some(session) = ws.deserialize_attachment::<Session>()? else {
        return Ok(());
    };
    let Some(info) = session.name.clone().map(|name| protocol::AgentInfo {
        name,
        version: agent.version.clone(),
    }) else {
        return Ok(());
    };
    let joined = Session {
        agent: Some(Joined {
            id: agent.id,
            info,
            capacity: agent.capacity,
            since: agent.connected_at,
        }),
        ..session
    };
    ws.serialize_attachment(&joined)?;
    // One line per change of an agent's state.
    worker::console_log!(
        "agent {} ({}) joined: {} agent socket(s) on this cluster",
        agent.id,
        agent.name,
        state.get_websockets().len(),
    );
    Ok(())
}

/// A socket went away (closed by the agent, or failed): for an agent that had said hello,
/// the command that records it gone (unless it has connected again since on another socket).
pub fn on_gone(ws: &WebSocket) -> Option<Command> {
    let Ok(Some(Session {
        agent: Some(agent), ..
    })) = ws.deserialize_attachment::<Session>()
    else {
        return None;
    };
    worker::console_log!("agent {} left", agent.id);
    Some(Command::AgentGone {
        agent: agent.id,
        since: agent.since,
    })
}

/// Closes every socket of the agent token `token` (revoked), with 1008 and a reason the
/// agent can show; answers them (their agents are to be recorded gone).
pub fn disconnect(state: &State, token: AgentTokenId) -> Vec<WebSocket> {
    let sockets = state.get_websockets_with_tag(&token_tag(&token.to_string()));
    for ws in &sockets {
        // One that is closing already needs nothing more.
        let _ = ws.close(Some(1008), Some("agent token revoked"));
    }
    sockets
}

/// The open socket of the agent named `name` (claimed by its hello), if any.
fn socket_named(state: &State, name: &str) -> Option<WebSocket> {
    state.get_websockets().into_iter().find(|ws| {
        ws.deserialize_attachment::<Session>()
            .ok()
            .flatten()
            .is_some_and(|s| s.name.as_deref() == Some(name))
    })
}

/// Carries out the orders of committed batches on the agents' sockets (each socket's
/// session read once, however many orders). An agent without a socket misses its order;
/// what it should run is reconciled when it says hello again.
pub fn deliver(state: &State, orders: Vec<Order>) {
    if orders.is_empty() {
        return;
    }
    let sockets: HashMap<String, WebSocket> = state
        .get_websockets()
        .into_iter()
        .filter_map(|ws| {
            let name = ws
                .deserialize_attachment::<Session>()
                .ok()
                .flatten()?
                .name?;
            Some((name, ws))
        })
        .collect();
    for order in orders {
        match order {
            Order::Send {
                agent,
                name,
                message,
            } => match sockets.get(&name) {
                Some(ws) => {
                    if let Err(e) = ws.send_with_str(message.to_text()) {
                        worker::console_error!("order for agent {agent} not sent: {e}");
                    }
                }
                None => worker::console_log!("agent {agent} has no socket; order dropped"),
            },
            Order::Close {
                agent,
                name,
                reason,
            } => {
                if let Some(ws) = sockets.get(&name) {
                    let v = Violation::policy(reason);
                    worker::console_log!("agent {agent} closed: {}", v.reason);
                    let _ = ws.close(Some(1011), Some(v.reason));
                }
            }
        }
    }
}

/// When each joined agent with an open socket was last heard of: its last message, or the
/// runtime's last answer to its ping.
pub fn seen(state: &State, hibernation: &HibernationState) -> Vec<(AgentId, DateTime<Utc>)> {
    state
        .get_websockets()
        .iter()
        .filter_map(|ws| {
            let session = ws.deserialize_attachment::<Session>().ok().flatten()?;
            Some((session.agent?.id, last_heard(hibernation, ws)?))
        })
        .collect()
}

/// When the agent on `ws` was last heard of: its hello's record, its last message, or the
/// runtime's last answer to its ping.
fn last_heard(hibernation: &HibernationState, ws: &WebSocket) -> Option<DateTime<Utc>> {
    let session = ws.deserialize_attachment::<Session>().ok().flatten()?;
    [
        session.agent.map(|a| a.since),
        session.heard_at,
        last_auto_pong(hibernation, ws),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// The tag of every socket of one credential.
fn token_tag(token: &str) -> String {
    format!("token:{token}")
}

/// The close handshake's answer (compatibility dates before `web_socket_auto_reply_to_close`
/// leave it to the object). 1005 and 1006 cannot be sent, so they are answered with 1000.
pub fn on_close(ws: &WebSocket, code: usize) {
    let code = u16::try_from(code)
        .ok()
        .filter(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999))
        .unwrap_or(1000);
    // Already closed when the runtime replied itself: nothing to do then.
    let _ = ws.close(Some(code), Some("closed"));
}

/// When the runtime last auto-answered a ping on `ws`.
pub fn last_auto_pong(hibernation: &HibernationState, ws: &WebSocket) -> Option<DateTime<Utc>> {
    let value = hibernation
        .get_websocket_auto_response_timestamp(ws.as_ref())
        .ok()?;
    let date: Date = value.dyn_into().ok()?;
    DateTime::from_timestamp_millis(date.get_time() as i64)
}
