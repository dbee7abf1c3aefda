//! The agent WebSocket on Workers: the Worker forwards an admitted upgrade to the cluster's
//! object (`forward`); the object accepts the socket with the hibernation API (`accept`) and
//! runs the protocol on each message (`on_message`), its per-socket state in the socket's
//! attachment so that it survives the object's eviction.
//!
//! Each socket carries two tags: `agent:<agent_id>` (to send to one agent later:
//! `get_websockets_with_tag`) and `token:<token key>` (to close every socket of a revoked
//! token). Pings are answered by the runtime without waking the object (the auto-response
//! set in `ClusterObject::new`).

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
use crate::domain::agent::protocol::{self, Violation, PING, PONG};
use crate::domain::agent::{step, Admitted, Session};
use crate::domain::ids::AgentId;
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
    let stub = env
        .durable_object("CLUSTER")?
        .get_by_name(&admitted.cluster.to_string())?;
    let headers = web_sys::Headers::new()?;
    headers.set("upgrade", "websocket")?;
    let admitted =
        serde_json::to_string(admitted).map_err(|e| JsValue::from_str(&e.to_string()))?;
    headers.set(ADMITTED_HEADER, &admitted)?;
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init(
        &format!("https://cluster.internal{OBJECT_PATH}"),
        &init,
    )?;
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
    let session = Session::new(&admitted, AgentId::new(), Utc::now());
    let agent_tag = format!("agent:{}", session.agent_id);
    let token_tag = format!("token:{}", session.token);
    state.accept_websocket_with_tags(&server, &[&agent_tag, &token_tag]);
    server.serialize_attachment(&session)?;
    Response::from_websocket(client)
}

/// One message on an accepted socket (the object may have been woken from hibernation for
/// it: everything it needs is in the attachment).
pub fn on_message(
    state: &State,
    hibernation: &HibernationState,
    ws: &WebSocket,
    message: WebSocketIncomingMessage,
) -> worker::Result<()> {
    let Some(session) = ws.deserialize_attachment::<Session>()? else {
        // Not one of ours (cannot happen: every accepted socket has its session).
        return ws.close(Some(1011), Some("no session"));
    };
    let result = match message {
        WebSocketIncomingMessage::String(text) => {
            protocol::parse(&text).and_then(|m| step(&session, m))
        }
        WebSocketIncomingMessage::Binary(_) => Err(Violation::binary()),
    };
    match result {
        Ok(step) => {
            if let Some(next) = &step.session {
                ws.serialize_attachment(next)?;
                // One line per change of an agent's state: its hello was accepted.
                worker::console_log!(
                    "agent {} joined: {} agent socket(s) on this cluster, last auto-pong {:?}",
                    session.agent_id,
                    state.get_websockets().len(),
                    last_auto_pong(hibernation, ws)
                );
            }
            ws.send_with_str(step.reply.to_text())
        }
        Err(v) => {
            worker::console_log!("agent {} closed: {} {}", session.agent_id, v.code, v.reason);
            ws.close(Some(v.code), Some(v.reason))
        }
    }
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
