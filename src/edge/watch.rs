//! The cluster object's watch streams (`GET /v1/clusters/{id}/watch`, `http::watch`).
//!
//! The Worker forwards an authenticated watch to the object's `fetch` ([`connect`]); the
//! object registers a watcher with a stream of its own ([`Watchers::open`]: a JavaScript
//! `ReadableStream` whose controller the object writes to), reads its opening on the writer
//! ([`ClusterWriter::open_watch`]: a snapshot, or the events missed) and answers the stream.
//! After every command, the changes the writer committed are rendered once into a chunk the
//! live watchers share ([`Watchers::publish`]); [`FLUSH_MS`] after its first frame (or when
//! it reaches [`CHUNK_BYTES`]) that one chunk, copied once into JavaScript, is enqueued on
//! every stream. A watcher whose opening is still being read keeps the changes that arrive
//! meanwhile, and is handed only those after its opening's `seq`: nothing is missed or
//! repeated. A watcher that accepts gzip gets the same chunk compressed once for all of them
//! (`http::watch::gzip`: each piece stands alone, and the watcher keeps only its check for
//! the trailer). A stream's queue counts bytes; a watcher more than [`MAX_QUEUED_BYTES`] behind
//! is dropped (its stream ends; it reconnects with `Last-Event-ID`); nothing is buffered
//! without bound. One timer per object sends the heartbeats, one per watcher ends its stream
//! when its access token expires.
//!
//! [`ClusterWriter::open_watch`]: crate::engine::ClusterWriter::open_watch

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    ByteLengthQueuingStrategy, QueuingStrategy, QueuingStrategyInit,
    ReadableStreamDefaultController,
};
use worker::js_sys::{self, Uint8Array};
use worker::{web_sys, EncodeBody, Request, Response, ResponseBody};

use super::agents::fetch_object;
use crate::auth::Caller;
use crate::engine::{Change, Changed, EngineError};
use crate::http::rate_limit::Allowance;
use crate::http::watch::gzip::{self, Check, Piece};
use crate::http::watch::{self as render, Watch, EVENT_STREAM, HEARTBEAT, HEARTBEAT_SECONDS};
use crate::http::ApiError;

/// The header the Worker passes the [`Watch`] in (the object's fetch is reachable only from
/// the Worker, through its binding).
const WATCH_HEADER: &str = "x-berth-watch";
/// The object's own path for a watch.
const OBJECT_PATH: &str = "/watch";
/// The status the object answers a refused watch with (its body: the `EngineError`).
const REFUSED: u16 = 409;

/// How far a watcher may fall behind (bytes enqueued on its stream and not yet read by the
/// runtime: the queue's high-water mark) before it is dropped.
pub const MAX_QUEUED_BYTES: usize = 512 * 1024;
/// A shared chunk this large (in text) is handed out at once (it may be larger by its last
/// frames): half a plain-text watcher's queue.
const CHUNK_BYTES: usize = MAX_QUEUED_BYTES / 2;
/// How long a chunk that is not full waits for more frames.
const FLUSH_MS: u64 = 100;

/// The Worker's side of `GET /v1/clusters/{id}/watch`, beside the router: the watch is
/// admitted (`http::watch::admit_path`), and the object's streaming answer returned with its
/// body as it is; a refusal is an ordinary problem+json answer. Both carry the caller's
/// `ratelimit-*` headers.
pub async fn connect(
    st: &crate::http::AppState,
    env: &worker::Env,
    segment: &str,
    req: &axum::http::Request<axum::body::Body>,
) -> worker::Result<web_sys::Response> {
    use axum::response::IntoResponse;
    let (opened, allowance) =
        match crate::http::watch::admit_path(st, req.method(), segment, req.headers()) {
            Ok((watch, allowance)) => (open_or_refused(env, &watch).await, allowance),
            Err(e) => (Err(e), None),
        };
    match opened {
        Ok(res) => Ok(with_allowance(res, allowance)?),
        Err(e) => {
            let mut res = e.into_response();
            if let Some(a) = allowance {
                a.write(res.headers_mut());
            }
            Ok(super::exchange::response_to_js(res).await?)
        }
    }
}

/// The object's answer with the caller's `ratelimit-*` headers (its own headers cannot be
/// changed: a new answer around the same body stream).
fn with_allowance(
    res: web_sys::Response,
    allowance: Option<Allowance>,
) -> Result<web_sys::Response, JsValue> {
    let Some(allowance) = allowance else {
        return Ok(res);
    };
    let headers = web_sys::Headers::new_with_headers(&res.headers())?;
    for (name, value) in allowance.headers() {
        headers.set(name, &value.to_string())?;
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(res.status());
    init.set_headers(&headers);
    web_sys::Response::new_with_opt_readable_stream_and_init(res.body().as_ref(), &init)
}

/// The object's 200 with its stream, or its refusal as the API's error.
async fn open_or_refused(env: &worker::Env, watch: &Watch) -> Result<web_sys::Response, ApiError> {
    let unavailable = |e: JsValue| ApiError::Unavailable(format!("cluster object (watch): {e:?}"));
    let res = open(env, watch).await.map_err(unavailable)?;
    if res.status() == 200 {
        return Ok(res);
    }
    let text = JsFuture::from(res.text().map_err(unavailable)?)
        .await
        .map_err(unavailable)?
        .as_string()
        .unwrap_or_default();
    match serde_json::from_str::<EngineError>(&text) {
        Ok(refused) => Err(refused.into()),
        Err(_) => Err(ApiError::Unavailable(format!(
            "cluster object (watch): {} {text}",
            res.status()
        ))),
    }
}

async fn open(env: &worker::Env, watch: &Watch) -> Result<web_sys::Response, JsValue> {
    let w = serde_json::to_string(watch).map_err(|e| JsValue::from_str(&e.to_string()))?;
    fetch_object(
        env,
        &watch.cluster.to_string(),
        OBJECT_PATH,
        &[(WATCH_HEADER, &w)],
    )
    .await
}

/// The watch a request to the object's fetch carries, if it is one.
pub fn requested(req: &Request) -> worker::Result<Option<Watch>> {
    if req.path() != OBJECT_PATH {
        return Ok(None);
    }
    Ok(req
        .headers()
        .get(WATCH_HEADER)?
        .and_then(|h| serde_json::from_str::<Watch>(&h).ok()))
}

/// The object's answer to a watch it refused.
pub fn refused(e: &EngineError) -> worker::Result<Response> {
    Ok(Response::from_json(e)?.with_status(REFUSED))
}

/// The object's answer to a watch it opened: its stream, gzip-coded already if `gzip` (the
/// runtime passes it on as it is, through the Worker too).
pub fn answer(stream: web_sys::ReadableStream, gzip: bool) -> worker::Result<Response> {
    let mut res = Response::from_body(ResponseBody::Stream(stream))?;
    let headers = res.headers_mut();
    headers.set("content-type", EVENT_STREAM)?;
    headers.set("cache-control", "no-cache")?;
    headers.set("vary", "accept-encoding")?;
    // Proxies that buffer answers (nginx) pass this one through as it comes.
    headers.set("x-accel-buffering", "no")?;
    if gzip {
        headers.set("content-encoding", "gzip")?;
        res = res.with_encode_body(EncodeBody::Manual);
    }
    Ok(res)
}

/// One watcher's stream, as the object writes to it: chunks are enqueued on its controller,
/// whose queue counts bytes ([`MAX_QUEUED_BYTES`] is its high-water mark); the runtime reads
/// them from there into the HTTP answer.
struct Out {
    controller: ReadableStreamDefaultController,
}

impl Out {
    /// A new stream and its writing end.
    fn new() -> Result<(Out, web_sys::ReadableStream), JsValue> {
        let slot: Rc<RefCell<Option<JsValue>>> = Rc::default();
        let keep = slot.clone();
        let start = Closure::once_into_js(move |controller: JsValue| {
            *keep.borrow_mut() = Some(controller);
        });
        let source = js_sys::Object::new();
        js_sys::Reflect::set(&source, &JsValue::from_str("start"), &start)?;
        let strategy =
            ByteLengthQueuingStrategy::new(&QueuingStrategyInit::new(MAX_QUEUED_BYTES as f64))?;
        // `start` runs inside the constructor.
        let stream = web_sys::ReadableStream::new_with_underlying_source_and_strategy(
            &source,
            strategy.unchecked_ref::<QueuingStrategy>(),
        )?;
        let controller = slot
            .borrow_mut()
            .take()
            .ok_or_else(|| JsValue::from_str("the stream did not start"))?
            .dyn_into::<ReadableStreamDefaultController>()?;
        Ok((Out { controller }, stream))
    }

    /// Hands `chunk` to the stream; false when it is gone (the client left) or too far
    /// behind.
    fn send(&self, chunk: &Uint8Array) -> bool {
        if self.controller.desired_size().is_none_or(|d| d < 0.0) {
            return false;
        }
        self.controller.enqueue_with_chunk(chunk).is_ok()
    }

    /// Hands `chunk` to the stream however far behind it is (a few bytes that end it).
    fn push(&self, chunk: &Uint8Array) {
        let _ = self.controller.enqueue_with_chunk(chunk);
    }

    /// Ends the stream after what it was handed.
    fn close(&self) {
        let _ = self.controller.close();
    }

    /// Ends the stream at once, dropping what waits in it (a watcher too far behind).
    fn abort(&self) {
        self.controller
            .error_with_e(&JsValue::from_str("the watcher fell too far behind"));
    }
}

/// Some frames in the forms their watchers take them: plain text, or one gzip piece; each
/// made at most once, whatever the number of watchers.
struct Chunk<'a> {
    text: &'a str,
    plain: Option<Uint8Array>,
    gzip: Option<(Uint8Array, Piece)>,
}

impl<'a> Chunk<'a> {
    fn new(text: &'a str) -> Self {
        Chunk {
            text,
            plain: None,
            gzip: None,
        }
    }

    /// Hands the frames to `w`, in its coding; false when its stream is gone or too far
    /// behind.
    fn send(&mut self, w: &mut Watcher, now: i64) -> bool {
        w.sent.set(now);
        match &mut w.gzip {
            None => {
                let plain = self
                    .plain
                    .get_or_insert_with(|| Uint8Array::from(self.text.as_bytes()));
                w.out.send(plain)
            }
            Some(check) => {
                let (js, piece) = self.gzip.get_or_insert_with(|| {
                    let piece = Piece::new(self.text.as_bytes());
                    (Uint8Array::from(&piece.bytes[..]), piece)
                });
                let sent = w.out.send(js);
                if sent {
                    check.add(piece);
                }
                sent
            }
        }
    }
}

/// The object's watchers. Cheap to clone (one registry): the flush and heartbeat timers hold
/// a clone.
#[derive(Default, Clone)]
pub struct Watchers(Rc<Registry>);

#[derive(Default)]
struct Registry {
    next: Cell<u64>,
    list: RefCell<Vec<Watcher>>,
    /// Frames published and not yet handed to the live watchers: one chunk, the same bytes
    /// for every one of them.
    pending: RefCell<Pending>,
    /// Whether a flush is due.
    flushing: Cell<bool>,
    /// Whether the heartbeat timer runs.
    beating: Cell<bool>,
}

/// The next shared chunk's frames.
#[derive(Default)]
struct Pending {
    frames: Vec<String>,
    bytes: usize,
    /// Which of them is the latest usage: a newer one replaces it (usage is a state; the
    /// chunk carries the cluster's usage as of its last change, and ids stay in order).
    usage: Option<usize>,
}

impl Pending {
    fn push(&mut self, frame: String, usage: bool) {
        if usage {
            if let Some(old) = self.usage.replace(self.frames.len()) {
                self.bytes -= self.frames[old].len();
                self.frames[old].clear();
            }
        }
        self.bytes += frame.len();
        self.frames.push(frame);
    }
}

struct Watcher {
    id: u64,
    by: Caller,
    out: Out,
    stage: Stage,
    /// When it was last handed anything (ms since the epoch), for the heartbeat.
    sent: Cell<i64>,
    /// A gzip-coded stream's running check (none for plain text).
    gzip: Option<Check>,
}

enum Stage {
    /// Its opening is being read: the changes committed meanwhile, with their `seq`, and
    /// their bytes.
    Opening(Vec<(u64, Rc<str>)>, usize),
    /// Handed every change as it is published.
    Live,
}

impl Watcher {
    /// Ends its stream, after `last` if any (a gzip stream with its trailer).
    fn close(&mut self, last: Option<&mut Chunk>, now: i64) {
        if let Some(last) = last {
            last.send(self, now);
        }
        if let Some(check) = &self.gzip {
            // Ten bytes, past any limit: a gzip stream that ends well ends with its check.
            self.out.push(&Uint8Array::from(&check.end()[..]));
        }
        self.out.close();
    }
}

impl Watchers {
    /// Whether anyone watches.
    pub fn is_empty(&self) -> bool {
        self.0.list.borrow().is_empty()
    }

    /// Registers a watcher for `by` whose opening is about to be read: from now on it keeps
    /// the changes committed. Its stream ends when `until` passes; it is gzip-coded if
    /// `gzip`.
    pub fn open(
        &self,
        by: Caller,
        until: Option<DateTime<Utc>>,
        gzip: bool,
    ) -> Result<(u64, web_sys::ReadableStream), JsValue> {
        let (out, stream) = Out::new()?;
        if gzip {
            out.push(&Uint8Array::from(&gzip::HEADER[..]));
        }
        let id = self.0.next.get() + 1;
        self.0.next.set(id);
        self.0.list.borrow_mut().push(Watcher {
            id,
            by,
            out,
            stage: Stage::Opening(vec![], 0),
            sent: Cell::new(Utc::now().timestamp_millis()),
            gzip: gzip.then(Check::default),
        });
        if let Some(until) = until {
            let me = self.clone();
            let left = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            wasm_bindgen_futures::spawn_local(async move {
                worker::Delay::from(left).await;
                me.expire(id);
            });
        }
        self.beat();
        Ok((id, stream))
    }

    /// Hands watcher `id` its opening (at `seq`), then the changes it kept that came after.
    pub fn opened(&self, id: u64, seq: u64, frames: Vec<String>) {
        // What is pending predates the watcher's going live: the others get it first; the
        // new one has it among what it kept.
        self.flush();
        let now = Utc::now().timestamp_millis();
        let mut list = self.0.list.borrow_mut();
        let Some(at) = list.iter().position(|w| w.id == id) else {
            return;
        };
        let w = &mut list[at];
        let kept = match std::mem::replace(&mut w.stage, Stage::Live) {
            Stage::Opening(kept, _) => kept,
            Stage::Live => vec![],
        };
        let mut chunk = frames.concat();
        for (_, frame) in kept.into_iter().filter(|(s, _)| *s > seq) {
            chunk.push_str(&frame);
        }
        if chunk.len() > MAX_QUEUED_BYTES || !Chunk::new(&chunk).send(w, now) {
            w.out.abort();
            list.remove(at);
        }
    }

    /// Forgets watcher `id` (its opening was refused).
    pub fn abandon(&self, id: u64) {
        self.0.list.borrow_mut().retain(|w| w.id != id);
    }

    /// Hands committed changes to every watcher, each rendered once: added to the chunk the
    /// live watchers share (sent when full, or [`FLUSH_MS`] after its first frame), kept by
    /// those still opening. All streams end when the cluster was deleted.
    pub fn publish(&self, changes: &[Change]) {
        if changes.is_empty() || self.is_empty() {
            return;
        }
        let deleted = changes.iter().any(|c| c.what == Changed::Deleted);
        {
            let mut list = self.0.list.borrow_mut();
            let mut pending = self.0.pending.borrow_mut();
            let opening = list.iter().any(|w| matches!(w.stage, Stage::Opening(..)));
            for change in changes {
                let frame = render::frame(change);
                if opening {
                    let frame: Rc<str> = Rc::from(frame.as_str());
                    list.retain_mut(|w| match &mut w.stage {
                        Stage::Opening(kept, held) => {
                            kept.push((change.seq, frame.clone()));
                            *held += frame.len();
                            *held <= MAX_QUEUED_BYTES || {
                                w.out.abort();
                                false
                            }
                        }
                        Stage::Live => true,
                    });
                }
                pending.push(frame, matches!(change.what, Changed::Usage { .. }));
            }
        }
        if deleted {
            self.flush();
            let now = Utc::now().timestamp_millis();
            for mut w in self.0.list.borrow_mut().drain(..) {
                w.close(None, now);
            }
        } else if self.0.pending.borrow().bytes >= CHUNK_BYTES {
            self.flush();
        } else if !self.0.flushing.replace(true) {
            let me = self.clone();
            wasm_bindgen_futures::spawn_local(async move {
                worker::Delay::from(Duration::from_millis(FLUSH_MS)).await;
                me.flush();
            });
        }
    }

    /// Hands the pending chunk to every live watcher; drops those gone or too far behind.
    fn flush(&self) {
        self.0.flushing.set(false);
        let pending = std::mem::take(&mut *self.0.pending.borrow_mut());
        if pending.bytes == 0 {
            return;
        }
        let text = pending.frames.concat();
        let mut chunk = Chunk::new(&text);
        let now = Utc::now().timestamp_millis();
        self.0.list.borrow_mut().retain_mut(|w| match w.stage {
            Stage::Opening(..) => true,
            Stage::Live => {
                chunk.send(w, now) || {
                    w.out.abort();
                    false
                }
            }
        });
    }

    /// Ends watcher `id`'s stream: its access token expired.
    fn expire(&self, id: u64) {
        self.flush();
        let end = render::end("the access token expired: reconnect with a fresh one");
        let now = Utc::now().timestamp_millis();
        self.0.list.borrow_mut().retain_mut(|w| {
            if w.id != id {
                return true;
            }
            w.close(Some(&mut Chunk::new(&end)), now);
            false
        });
    }

    /// Keeps a heartbeat timer running while anyone watches: a stream handed nothing for
    /// [`HEARTBEAT_SECONDS`] gets a comment, so that proxies keep it open.
    fn beat(&self) {
        if self.0.beating.replace(true) {
            return;
        }
        let me = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let quiet = Duration::from_secs(HEARTBEAT_SECONDS);
            let mut heartbeat = Chunk::new(HEARTBEAT);
            while !me.is_empty() {
                worker::Delay::from(quiet / 3).await;
                let now = Utc::now().timestamp_millis();
                let due = now - quiet.as_millis() as i64;
                me.0.list.borrow_mut().retain_mut(|w| {
                    matches!(w.stage, Stage::Opening(..))
                        || w.sent.get() > due
                        || heartbeat.send(w, now)
                        || {
                            w.out.abort();
                            false
                        }
                });
            }
            me.0.beating.set(false);
        });
    }

    /// Ends the streams of `who` (its membership or key is gone), saying why; answers how
    /// many ended.
    pub fn end(&self, who: &Caller, reason: &str) -> usize {
        self.flush();
        let end = render::end(reason);
        let mut end = Chunk::new(&end);
        let now = Utc::now().timestamp_millis();
        let mut list = self.0.list.borrow_mut();
        let before = list.len();
        list.retain_mut(|w| {
            if w.by == *who {
                // Past its budget it only misses the reason; its stream ends all the same.
                w.close(Some(&mut end), now);
                false
            } else {
                true
            }
        });
        before - list.len()
    }
}
