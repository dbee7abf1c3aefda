//! `GET /v1/clusters/{cluster_id}/watch`: a cluster's changes as they are committed, as a
//! server-sent event stream (`text/event-stream`).
//!
//! The cluster's object serves it, since it commits every change of the cluster: it
//! authorizes the caller on its reading connection, answers a snapshot (or, for a
//! `Last-Event-ID` it still has, the events missed since), then one event per committed change
//! (`engine::Change`), with heartbeat comments when idle. It ends the stream when the caller's
//! access token expires, when the member is removed or the key revoked, and when the watcher
//! reads too slowly to keep up. Here: the route, and the rendering of every frame, so that the
//! object (`edge::watch`) only moves text.
//!
//! Every `id:` is `E` for the change that is the cluster's event `E`, and `E.N` for the N-th
//! change of another kind (usage, agent) after event `E`: resuming from either replays the
//! events after `E`, then the current usage and agents.

pub mod gzip;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::agents::Agent;
use super::clusters::{cluster, queue_entry, usage_view, Cluster, QueueEntry, UsageView};
use super::deployments::{deployment, Deployment};
use super::error::Problem;
use super::extract::{authenticate, Ids};
use super::rate_limit::{self, Allowance, Authenticated};
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::domain::deployment::{EventKind, Process};
use crate::domain::ids::ClusterId;
use crate::engine::{Change, Changed, Opening, Shown};

/// A watch the Worker asks the cluster's object to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watch {
    pub cluster: ClusterId,
    pub by: Caller,
    /// When the stream must end: the access token's expiry (none for an API key).
    pub until: Option<DateTime<Utc>>,
    /// The event the watcher saw last (`Last-Event-ID`).
    pub after: Option<i64>,
    /// Whether the stream is sent gzip-coded (the client accepts it: `Accept-Encoding`).
    #[serde(default)]
    pub gzip: bool,
}

/// A cluster's changes, live, as server-sent events. Role: viewer (API keys too).
///
/// First `event: snapshot` (`{cluster, usage, queue, agents}`: the head of the queue and the
/// agents that are connected or hold containers), then one event per committed change:
/// `deployment` (the deployment as `GET /v1/deployments/{id}` shows it, without `events`,
/// plus `event`, the kind of event that changed it), `usage` (the cluster's usage),
/// `agent` (an agent that connected or left), `deleted` (the cluster is gone; the stream
/// ends). Every event has an `id:`; reconnecting with `Last-Event-ID` resumes after it
/// (the missed events, then the current usage and agents) while the cluster still has it
/// and few enough events followed, else starts over with a snapshot. `: heartbeat` comments
/// come every 15 s of quiet. The stream ends with `event: end` (`{reason}`) when the access
/// token expires, the member is removed or the key revoked, or the client reads too slowly;
/// reconnect (with a fresh token) and `Last-Event-ID`. A client that sends
/// `Accept-Encoding: gzip` gets the stream gzip-coded (`Content-Encoding: gzip`), each chunk
/// decodable as it arrives.
#[utoipa::path(get, path = "/v1/clusters/{cluster_id}/watch", tag = "clusters",
    params(("cluster_id" = Uuid, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id:` of the last event seen, to resume after it")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event stream (it does not end by itself)",
            content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown, or in another organization", body = Problem),
    ))]
///
/// On Workers, `edge::fetch` answers this route before the router reaches it (the object's
/// stream passes through the Worker untouched: `edge::watch::connect`); this handler, which
/// registers the route and its document, is reached only by an app without cluster objects
/// (the in-process tests), and refuses after the same admission.
pub async fn watch_cluster(
    State(st): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Ids(cluster): Ids<ClusterId>,
    authenticated: Option<Extension<Authenticated>>,
) -> Result<Response, ApiError> {
    admit(
        &st,
        &method,
        cluster,
        &headers,
        authenticated.map(|Extension(a)| a),
    )?;
    Err(ApiError::Unavailable(
        "no cluster object serves event streams here".into(),
    ))
}

/// The cluster id segment of `path` when it is the watch route (an id that does not parse is
/// [`admit_path`]'s 404). On Workers the route is served beside the router, so that the
/// object's stream passes through the Worker untouched (`edge::watch`).
pub fn watch_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/clusters/")?;
    let id = rest.strip_suffix("/watch")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// [`admit`] for the cluster id segment of a path (404 when it is no id), beside the router:
/// the watch spends from its caller's budget here, as the router's layer does for every
/// other request; what is left, for the answer's headers.
pub fn admit_path(
    st: &AppState,
    method: &Method,
    segment: &str,
    headers: &HeaderMap,
) -> Result<(Watch, Option<Allowance>), ApiError> {
    let (authenticated, allowance) = rate_limit::spend(st, method, headers)?.unzip();
    let cluster =
        ClusterId::parse(segment).ok_or_else(|| ApiError::NotFound("no such cluster".into()))?;
    Ok((
        admit(st, method, cluster, headers, authenticated)?,
        allowance,
    ))
}

/// The watch a request asks for: 405 unless GET, 401 without a valid credential (the caller
/// the rate limit `authenticated` already, if it did); its `Last-Event-ID`. Whether the
/// caller may read the cluster is the object's to say.
pub fn admit(
    st: &AppState,
    method: &Method,
    cluster: ClusterId,
    headers: &HeaderMap,
    authenticated: Option<Authenticated>,
) -> Result<Watch, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let (by, until) = match authenticated {
        Some(done) => (done.caller, done.until),
        None => authenticate(headers, st)?,
    };
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(last_event);
    let gzip = headers
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(gzip::accepted);
    Ok(Watch {
        cluster,
        by,
        until,
        after,
        gzip,
    })
}

/// The stream's content type.
pub const EVENT_STREAM: &str = "text/event-stream";

/// The event a `Last-Event-ID` names (`E` or `E.N`), if it is one of ours.
pub fn last_event(id: &str) -> Option<i64> {
    let event = id.trim().split('.').next()?;
    event.parse::<i64>().ok().filter(|e| *e >= 0)
}

/// The comment sent after 15 s without an event, so that proxies keep the stream open.
pub const HEARTBEAT: &str = ": heartbeat\n\n";
/// How long the stream may stay quiet before a heartbeat.
pub const HEARTBEAT_SECONDS: u64 = 15;

/// The last frame of a stream the server ends, and why.
pub fn end(reason: &str) -> String {
    event("end", None, &serde_json::json!({ "reason": reason }))
}

/// The first frames of a stream: the reconnect delay, then the snapshot or what was missed.
pub fn opening(opening: &Opening) -> Vec<String> {
    let mut out = vec!["retry: 2000\n\n".to_string()];
    match &opening.shown {
        Shown::Snapshot {
            event: last,
            cluster: c,
            usage,
            queue,
            agents,
        } => {
            #[derive(Serialize)]
            struct Snapshot {
                cluster: Cluster,
                usage: UsageView,
                queue: Vec<QueueEntry>,
                agents: Vec<Agent>,
            }
            let snapshot = Snapshot {
                usage: usage_view(c.capacity, *usage),
                cluster: cluster((**c).clone(), None),
                queue: queue.iter().cloned().map(queue_entry).collect(),
                agents: agents
                    .iter()
                    .map(|(a, placed, running)| Agent::new(a.clone(), &[(a.id, *placed, *running)]))
                    .collect(),
            };
            out.push(event("snapshot", Some(last.to_string()), &snapshot));
        }
        Shown::Missed(changes) => out.extend(changes.iter().map(frame)),
    }
    out
}

/// One change as its event.
pub fn frame(change: &Change) -> String {
    let id = |kind_of_event: bool| {
        if kind_of_event {
            change.event.to_string()
        } else {
            format!("{}.{}", change.event, change.seq)
        }
    };
    match &change.what {
        Changed::Deployment {
            kind,
            deployment: d,
            position,
        } => {
            #[derive(Serialize)]
            struct Frame {
                #[serde(flatten)]
                deployment: Deployment,
                event: EventKind,
            }
            let frame = Frame {
                deployment: deployment((**d).clone(), *position, Process::default(), None),
                event: *kind,
            };
            event("deployment", Some(id(true)), &frame)
        }
        Changed::Usage { capacity, usage } => {
            event("usage", Some(id(false)), &usage_view(*capacity, *usage))
        }
        Changed::Agent {
            agent,
            placed,
            running,
        } => event(
            "agent",
            Some(id(false)),
            &Agent::new((**agent).clone(), &[(agent.id, *placed, *running)]),
        ),
        Changed::Deleted => event(
            "deleted",
            Some(id(false)),
            &serde_json::json!({ "reason": "the cluster was deleted" }),
        ),
    }
}

/// One event: its name, id and data (JSON on one line, as `data:` needs).
fn event(name: &str, id: Option<String>, data: &impl Serialize) -> String {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    match id {
        Some(id) => format!("event: {name}\nid: {id}\ndata: {data}\n\n"),
        None => format!("event: {name}\ndata: {data}\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_path_names_one_segment() {
        assert_eq!(watch_path("/v1/clusters/abc/watch"), Some("abc"));
        for other in [
            "/v1/clusters//watch",
            "/v1/clusters/a/b/watch",
            "/v1/clusters/a/queue",
        ] {
            assert_eq!(watch_path(other), None, "{other}");
        }
    }

    #[test]
    fn last_event_ids_are_ours_or_nothing() {
        assert_eq!(last_event("42"), Some(42));
        assert_eq!(last_event(" 42.7 "), Some(42));
        assert_eq!(last_event("0.3"), Some(0));
        for bad in ["", "-1", "x", "1e3", ".5", "99999999999999999999"] {
            assert_eq!(last_event(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn frames_are_one_event_each() {
        let e = end("the access token expired");
        assert_eq!(
            e,
            "event: end\ndata: {\"reason\":\"the access token expired\"}\n\n"
        );
        let f = frame(&Change {
            seq: 3,
            event: 17,
            what: Changed::Deleted,
        });
        assert!(f.starts_with("event: deleted\nid: 17.3\ndata: {"), "{f}");
        assert!(f.ends_with("}\n\n") && f.matches('\n').count() == 4, "{f}");
    }
}
