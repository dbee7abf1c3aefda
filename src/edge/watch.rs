//! The cluster object's watch streams (`GET /v1/clusters/{id}/watch`, `http::watch`).
//!
//! The Worker forwards an authenticated watch to the object's `fetch` ([`forward`]); the
//! object registers a watcher, reads its opening on the writer ([`ClusterWriter::open_watch`]:
//! a snapshot, or the events missed) and answers a streaming body. After every command, the
//! changes the writer committed are rendered once and handed to every watcher
//! ([`Watchers::publish`]). A watcher whose opening is still being read keeps the changes
//! that arrive meanwhile, and is handed only those after its opening's `seq`: nothing is
//! missed or repeated. A watcher more than [`MAX_QUEUED_BYTES`] behind is dropped (its
//! stream ends; it reconnects with `Last-Event-ID`); nothing is buffered without bound.
//!
//! [`ClusterWriter::open_watch`]: crate::engine::ClusterWriter::open_watch

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::{select, Either};
use tokio::sync::mpsc;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Request, Response};

use super::agents::fetch_object;
use crate::auth::Caller;
use crate::engine::{Change, Changed, EngineError};
use crate::http::watch::{self as render, Watch, EVENT_STREAM, HEARTBEAT, HEARTBEAT_SECONDS};
use crate::http::ApiError;

/// The header the Worker passes the [`Watch`] in (the object's fetch is reachable only from
/// the Worker, through its binding).
const WATCH_HEADER: &str = "x-berth-watch";
/// The object's own path for a watch.
const OBJECT_PATH: &str = "/watch";
/// The status the object answers a refused watch with (its body: the `EngineError`).
const REFUSED: u16 = 409;

/// How far a watcher may fall behind (bytes handed to its stream and not yet read by the
/// runtime) before it is dropped.
pub const MAX_QUEUED_BYTES: usize = 512 * 1024;
/// At most this much is handed to the runtime at once (more when one frame is larger).
const CHUNK_BYTES: usize = 64 * 1024;
/// How long a chunk that is not full waits for more frames.
const FLUSH_MS: u64 = 50;

/// The Worker's side of `GET /v1/clusters/{id}/watch`, beside the router: the watch is
/// admitted (`http::watch::admit_path`), and the object's streaming answer returned as it is;
/// a refusal is an ordinary problem+json answer.
pub async fn connect(
    st: &crate::http::AppState,
    env: &worker::Env,
    segment: &str,
    req: &axum::http::Request<axum::body::Body>,
) -> worker::Result<web_sys::Response> {
    use axum::response::IntoResponse;
    let opened = match crate::http::watch::admit_path(st, req.method(), segment, req.headers()) {
        Ok(watch) => open_or_refused(env, &watch).await,
        Err(e) => Err(e),
    };
    match opened {
        Ok(res) => Ok(res),
        Err(e) => Ok(super::exchange::response_to_js(e.into_response()).await?),
    }
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

/// The object's answer to a watch it opened: the stream of what its watcher is handed, with
/// heartbeats when quiet, ended when `until` passes.
pub fn answer(opened: Opened, until: Option<DateTime<Utc>>) -> worker::Result<Response> {
    let Opened { rx, queued } = opened;
    let stream = futures_util::stream::unfold(
        (rx, queued, false),
        move |(mut rx, queued, ended)| async move {
            if ended {
                return None;
            }
            let now = Utc::now();
            let left = until.map(|u| (u - now).to_std().unwrap_or(Duration::ZERO));
            if left == Some(Duration::ZERO) {
                let end = render::end("the access token expired: reconnect with a fresh one");
                return Some((
                    Ok::<Vec<u8>, worker::Error>(end.into_bytes()),
                    (rx, queued, true),
                ));
            }
            let quiet = Duration::from_secs(HEARTBEAT_SECONDS);
            let wait = left.map_or(quiet, |l| l.min(quiet));
            let got = {
                let next = Box::pin(rx.recv());
                let timer = worker::Delay::from(wait);
                match select(next, timer).await {
                    Either::Left((frame, _)) => Some(frame),
                    Either::Right(_) => None,
                }
            };
            match got {
                Some(Some(frame)) => {
                    // What waits goes in the same chunk; a chunk not yet full waits FLUSH_MS
                    // for more. The runtime moves a few chunks a second per watcher, not one
                    // per frame, and a busy cluster's full chunks go at once.
                    let mut chunk = frame.as_bytes().to_vec();
                    fill(&mut rx, &mut chunk);
                    if chunk.len() < CHUNK_BYTES {
                        worker::Delay::from(Duration::from_millis(FLUSH_MS)).await;
                        fill(&mut rx, &mut chunk);
                    }
                    queued.set(queued.get().saturating_sub(chunk.len()));
                    Some((Ok(chunk), (rx, queued, false)))
                }
                // Dropped by the object (ended, too slow, or the cluster is gone).
                Some(None) => None,
                None => Some((Ok(HEARTBEAT.as_bytes().to_vec()), (rx, queued, false))),
            }
        },
    );
    let mut res = Response::from_stream(stream)?;
    let headers = res.headers_mut();
    headers.set("content-type", EVENT_STREAM)?;
    headers.set("cache-control", "no-cache")?;
    // Proxies that buffer answers (nginx) pass this one through as it comes.
    headers.set("x-accel-buffering", "no")?;
    Ok(res)
}

/// Adds the frames waiting in `rx` to `chunk`, up to [`CHUNK_BYTES`].
fn fill(rx: &mut mpsc::UnboundedReceiver<Rc<str>>, chunk: &mut Vec<u8>) {
    while chunk.len() < CHUNK_BYTES {
        match rx.try_recv() {
            Ok(more) => chunk.extend_from_slice(more.as_bytes()),
            Err(_) => break,
        }
    }
}

/// What a watcher's stream reads from.
pub struct Opened {
    rx: mpsc::UnboundedReceiver<Rc<str>>,
    queued: Rc<Cell<usize>>,
}

/// The object's watchers.
#[derive(Default)]
pub struct Watchers {
    next: Cell<u64>,
    list: RefCell<Vec<Watcher>>,
}

struct Watcher {
    id: u64,
    by: Caller,
    tx: mpsc::UnboundedSender<Rc<str>>,
    /// Bytes handed to its stream and not yet read from it.
    queued: Rc<Cell<usize>>,
    stage: Stage,
}

enum Stage {
    /// Its opening is being read: the changes committed meanwhile, with their `seq`.
    Opening(Vec<(u64, Rc<str>)>),
    /// Handed every change up to this `seq`.
    Live(u64),
}

impl Watcher {
    /// Hands `frame` to its stream; false when it is gone or too far behind.
    fn send(&self, frame: &Rc<str>) -> bool {
        send(&self.tx, &self.queued, frame)
    }
}

/// Hands `frame` to a watcher's stream; false when it is gone or too far behind.
fn send(tx: &mpsc::UnboundedSender<Rc<str>>, queued: &Cell<usize>, frame: &Rc<str>) -> bool {
    let total = queued.get() + frame.len();
    if total > MAX_QUEUED_BYTES {
        return false;
    }
    queued.set(total);
    tx.send(frame.clone()).is_ok()
}

impl Watchers {
    /// Whether anyone watches.
    pub fn is_empty(&self) -> bool {
        self.list.borrow().is_empty()
    }

    /// Registers a watcher for `by` whose opening is about to be read: from now on it keeps
    /// the changes committed.
    pub fn open(&self, by: Caller) -> (u64, Opened) {
        let id = self.next.get() + 1;
        self.next.set(id);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Rc::new(Cell::new(0));
        self.list.borrow_mut().push(Watcher {
            id,
            by,
            tx,
            queued: queued.clone(),
            stage: Stage::Opening(vec![]),
        });
        (id, Opened { rx, queued })
    }

    /// Hands watcher `id` its opening (at `seq`), then the changes it kept that came after.
    pub fn opened(&self, id: u64, seq: u64, frames: Vec<String>) {
        let mut list = self.list.borrow_mut();
        let Some(at) = list.iter().position(|w| w.id == id) else {
            return;
        };
        let w = &mut list[at];
        let kept = match std::mem::replace(&mut w.stage, Stage::Live(seq)) {
            Stage::Opening(kept) => kept,
            Stage::Live(_) => vec![],
        };
        let mut ok = frames.into_iter().all(|f| w.send(&Rc::from(f)));
        let mut last = seq;
        for (s, frame) in kept.into_iter().filter(|(s, _)| *s > seq) {
            ok = ok && w.send(&frame);
            last = s;
        }
        w.stage = Stage::Live(last);
        if !ok {
            list.remove(at);
        }
    }

    /// Forgets watcher `id` (its opening was refused).
    pub fn abandon(&self, id: u64) {
        self.list.borrow_mut().retain(|w| w.id != id);
    }

    /// Hands committed changes to every watcher, each rendered once; drops the watchers that
    /// are gone or too far behind, and all of them when the cluster was deleted.
    pub fn publish(&self, changes: &[Change]) {
        if changes.is_empty() || self.is_empty() {
            return;
        }
        let frames: Vec<(u64, Rc<str>)> = changes
            .iter()
            .map(|c| (c.seq, Rc::from(render::frame(c))))
            .collect();
        let deleted = changes.iter().any(|c| c.what == Changed::Deleted);
        let mut list = self.list.borrow_mut();
        list.retain_mut(|w| {
            let ok = match &mut w.stage {
                Stage::Opening(kept) => {
                    let bytes: usize = kept.iter().map(|(_, f)| f.len()).sum();
                    kept.extend(frames.iter().cloned());
                    bytes <= MAX_QUEUED_BYTES
                }
                Stage::Live(last) => {
                    let from = *last;
                    let mut ok = true;
                    let mut upto = from;
                    for (seq, frame) in frames.iter().filter(|(s, _)| *s > from) {
                        ok = ok && send(&w.tx, &w.queued, frame);
                        upto = *seq;
                    }
                    w.stage = Stage::Live(upto);
                    ok
                }
            };
            ok && !deleted
        });
    }

    /// Ends the streams of `who` (its membership or key is gone), saying why; answers how
    /// many ended.
    pub fn end(&self, who: &Caller, reason: &str) -> usize {
        let frame: Rc<str> = Rc::from(render::end(reason));
        let mut list = self.list.borrow_mut();
        let before = list.len();
        list.retain(|w| {
            if w.by == *who {
                // Past its budget it only misses the reason; its stream ends all the same.
                let _ = w.send(&frame);
                false
            } else {
                true
            }
        });
        before - list.len()
    }
}
