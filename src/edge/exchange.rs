//! The crossing between workerd's `Request`/`Response` and axum's, without JavaScript streams.
//!
//! `worker`'s `http` conversion wraps every request body in a Rust stream over the JS
//! stream's reader and every answer in a JS `ReadableStream` pulled from a Rust stream: a
//! promise and a JS↔Wasm round trip per chunk, plus the reader's lock and release. Berth's
//! bodies are small JSON documents, so a body with a declared length within
//! [`BUFFERED_LIMIT`] is read with one `arrayBuffer()`, and every answer (already complete in
//! memory) is handed over as one byte array. A body without a length, or a longer one, keeps
//! the streaming path, where the body limit stops it without reading it all.
//!
//! Calls to Durable Objects cross the same way: over RPC, JSON text in one piece each way,
//! decoded by serde_json — no `Request` or `Response`, headers or body streams.

use axum::body::{Body, Bytes};
use axum::http::header::ACCEPT_ENCODING;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use worker::js_sys::{self, Array, ArrayBuffer, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys;

use crate::http::extract::MAX_BODY_BYTES;

/// Bodies up to this declared length are read in one piece: the largest the API accepts
/// (longer ones are refused with 413 after reading no more than that).
const BUFFERED_LIMIT: u64 = MAX_BODY_BYTES as u64;

/// workerd's request as axum's. Header values axum cannot represent are dropped (workerd
/// has already parsed them as HTTP); a request workerd gives us is otherwise well formed.
pub async fn request_from_js(req: &web_sys::Request) -> Result<Request<Body>, JsValue> {
    let mut headers = HeaderMap::new();
    for entry in req.headers().entries() {
        let pair: Array = entry?.unchecked_into();
        let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    let method = Method::from_bytes(req.method().as_bytes())
        .map_err(|e| JsValue::from_str(&e.to_string()))?;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match (req.body(), declared) {
        (None, _) | (_, Some(0)) => Body::empty(),
        (Some(_), Some(len)) if len <= BUFFERED_LIMIT => {
            let buffer: ArrayBuffer = JsFuture::from(req.array_buffer()?).await?.unchecked_into();
            Body::from(Uint8Array::new(&buffer).to_vec())
        }
        (Some(stream), _) => Body::new(worker::Body::new(stream)),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(req.url())
        .body(body)
        .map_err(|e| JsValue::from_str(&e.to_string()))?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// What the client itself accepts, in `headers`: Cloudflare (and `wrangler dev`) hands the
/// Worker its own `Accept-Encoding` and keeps the client's in `cf.clientAcceptEncoding`. Only
/// the routes whose answer depends on it ask (reading `cf` builds an object per request).
pub fn client_accept_encoding(req: &web_sys::Request, headers: &mut HeaderMap) {
    let client = js_sys::Reflect::get(req, &JsValue::from_str("cf"))
        .and_then(|cf| js_sys::Reflect::get(&cf, &JsValue::from_str("clientAcceptEncoding")))
        .ok()
        .and_then(|v| v.as_string());
    let Some(client) = client else {
        return;
    };
    headers.remove(ACCEPT_ENCODING);
    if let Some(value) = HeaderValue::from_str(&client)
        .ok()
        .filter(|_| !client.is_empty())
    {
        headers.insert(ACCEPT_ENCODING, value);
    }
}

/// axum's complete answer as workerd's, body in one byte array.
pub async fn response_to_js(res: Response<Body>) -> Result<web_sys::Response, JsValue> {
    let (parts, body) = res.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| JsValue::from_str(&e.to_string()))?;
    let headers = web_sys::Headers::new()?;
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            headers.append(name.as_str(), value)?;
        }
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(parts.status.as_u16());
    init.set_headers(&headers);
    // A status that cannot carry a body gets none (the runtime would throw on one).
    let bodiless = matches!(parts.status.as_u16(), 101 | 204 | 205 | 304);
    let body = (!bytes.is_empty() && !bodiless).then(|| Uint8Array::from(&bytes[..]));
    web_sys::Response::new_with_opt_js_u8_array_and_init(body.as_ref(), &init)
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// A Durable Object's stub with the RPC methods of Berth's objects (`edge::cluster`,
    /// `edge::throttle`).
    #[wasm_bindgen(extends = worker::js_sys::Object)]
    type ObjectStub;

    #[wasm_bindgen(method, catch, js_name = command)]
    fn rpc_command(this: &ObjectStub, call: &str) -> Result<worker::js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = view)]
    fn rpc_view(this: &ObjectStub, call: &str) -> Result<worker::js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = throttle)]
    fn rpc_throttle(this: &ObjectStub, call: &str) -> Result<worker::js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = disconnect)]
    fn rpc_disconnect(this: &ObjectStub, call: &str) -> Result<worker::js_sys::Promise, JsValue>;

    #[wasm_bindgen(method, catch, js_name = unwatch)]
    fn rpc_unwatch(this: &ObjectStub, call: &str) -> Result<worker::js_sys::Promise, JsValue>;
}

/// An object's RPC method.
#[derive(Debug, Clone, Copy)]
pub enum ObjectMethod {
    /// A cluster's command.
    Command,
    /// A read of a cluster's view.
    View,
    /// A throttle shard's operation.
    Throttle,
    /// Closing a cluster's agent sockets of one (revoked) token.
    Disconnect,
    /// Ending a cluster's watch streams of one caller (removed, or a revoked key).
    Unwatch,
}

/// Calls an object's RPC `method` with a JSON `call` and decodes its JSON answer. RPC passes
/// the string as it is: a `fetch` to the object, with its `Request`, `Response` and body,
/// cost about as much again as the rest of a submission.
pub async fn call_object<R: serde::de::DeserializeOwned>(
    stub: worker::Stub,
    method: ObjectMethod,
    call: &str,
) -> worker::Result<R> {
    let stub: ObjectStub = stub.into_rpc();
    let promise = match method {
        ObjectMethod::Command => stub.rpc_command(call)?,
        ObjectMethod::View => stub.rpc_view(call)?,
        ObjectMethod::Throttle => stub.rpc_throttle(call)?,
        ObjectMethod::Disconnect => stub.rpc_disconnect(call)?,
        ObjectMethod::Unwatch => stub.rpc_unwatch(call)?,
    };
    let answer = JsFuture::from(promise).await?;
    let text = answer
        .as_string()
        .ok_or_else(|| worker::Error::RustError("an answer that is not text".into()))?;
    Ok(serde_json::from_str(&text)?)
}

/// An RPC method's JSON argument, on the object's side.
pub fn rpc_argument<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, JsValue> {
    serde_json::from_str(text).map_err(|e| JsValue::from_str(&e.to_string()))
}

/// An RPC method's JSON answer, on the object's side.
pub fn rpc_answer<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    serde_json::to_string(value)
        .map(JsValue::from)
        .map_err(|e| JsValue::from_str(&e.to_string()))
}
