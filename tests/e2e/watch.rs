//! The watch stream (`GET /v1/clusters/{id}/watch`) through the real Worker and the cluster's
//! Durable Object: events in commit order as they are committed, resuming with
//! `Last-Event-ID`, and who may watch for how long.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::{Duration, Instant};

use berth::domain::ids::UserId;
use berth::domain::policy::Role;
use chrono::Utc;
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduling::Team;
use crate::support::{database, Client};

type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;
type Bytes = Pin<Box<dyn Stream<Item = Result<Vec<u8>, String>> + Send>>;

#[path = "../common/gunzip.rs"]
mod gunzip;
use gunzip::gunzip;

/// One open watch stream.
pub(crate) struct Watcher {
    events: Events,
    /// The `id:` of the last event read.
    last: Option<String>,
}

/// Opens `cluster`'s stream as `token` (resuming after `last`), gzip-coded as browsers and
/// `berth` ask for it: its status, and the stream when it is 200.
async fn open(
    c: &Client,
    token: &str,
    cluster: &str,
    last: Option<&str>,
) -> (StatusCode, Option<Watcher>) {
    open_coded(c, token, cluster, last, true).await
}

/// [`open`], gzip-coded or not (`Accept-Encoding: gzip`, decoded here as it comes: [`gunzip`],
/// or nothing, as `curl -N` asks).
async fn open_coded(
    c: &Client,
    token: &str,
    cluster: &str,
    last: Option<&str>,
    gzip: bool,
) -> (StatusCode, Option<Watcher>) {
    let mut req = reqwest::Client::new()
        .get(format!("{}/v1/clusters/{cluster}/watch", c.base))
        .header("authorization", format!("Bearer {token}"))
        .header("cf-connecting-ip", &c.ip);
    if let Some(last) = last {
        req = req.header("last-event-id", last);
    }
    if gzip {
        req = req.header("accept-encoding", "gzip, deflate, br");
    }
    let res = req.send().await.expect("the Worker answers");
    let status = res.status();
    if status != StatusCode::OK {
        return (status, None);
    }
    assert_eq!(
        res.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    assert_eq!(
        res.headers()
            .get("content-encoding")
            .map(|v| v.to_str().expect("coding")),
        gzip.then_some("gzip")
    );
    // Like every answer to a caller, it says what is left of the caller's budget.
    for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(res.headers().contains_key(name), "{name}");
    }
    let body = res.bytes_stream().map(|b| b.map_err(|e| e.to_string()));
    let body: Bytes = if gzip {
        Box::pin(gunzip(body))
    } else {
        Box::pin(body.map(|b| b.map(|b| b.to_vec())))
    };
    let events = body.eventsource().map(|e| e.map_err(|e| e.to_string()));
    (
        status,
        Some(Watcher {
            events: Box::pin(events),
            last: last.map(str::to_string),
        }),
    )
}

/// The status of a watch of `path` as `token` (the stream, if any, dropped unread), as a
/// reply with its problem body when refused.
pub async fn status(c: &Client, token: &str, path: &str) -> crate::support::Reply {
    let res = reqwest::Client::new()
        .get(format!("{}{path}", c.base))
        .header("authorization", format!("Bearer {token}"))
        .header("cf-connecting-ip", &c.ip)
        .send()
        .await
        .expect("the Worker answers");
    let status = res.status();
    let body = if status == StatusCode::OK {
        Value::Null
    } else {
        res.json().await.unwrap_or(Value::Null)
    };
    crate::support::Reply {
        status,
        headers: Default::default(),
        body,
    }
}

pub(crate) async fn watch(c: &Client, token: &str, cluster: &str) -> Watcher {
    let (status, w) = open(c, token, cluster, None).await;
    assert_eq!(status, StatusCode::OK);
    w.expect("stream")
}

impl Watcher {
    /// The next event within `within`, or `None` when the stream ended.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let e = tokio::time::timeout(within, self.events.next())
            .await
            .expect("an event in time")?
            .expect("a well-formed event");
        if !e.id.is_empty() {
            self.last = Some(e.id.clone());
        }
        let data = serde_json::from_str(&e.data).expect("data is JSON");
        Some((e.event, data))
    }

    /// The next event of kind `event` (skipping others) within `within`.
    pub(crate) async fn until(&mut self, event: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some((kind, data)) if kind == event => return data,
                Some(_) => {}
                None => panic!("the stream ended before a {event} event"),
            }
        }
    }

    /// The next deployment event about `id` with event kind `kind`.
    pub(crate) async fn deployment(&mut self, id: &str, kind: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let d = self.until("deployment", left).await;
            if d["id"] == id && d["event"] == kind {
                return d;
            }
        }
    }
}

fn job(name: &str, cpu: i64) -> Value {
    json!({"name": name, "image": "ghcr.io/acme/job:1",
        "resources": {"cpu_millis": cpu, "memory_mib": 0, "gpus": 0}})
}

/// The cluster's events in commit order, as the database has them: (id, deployment, kind).
async fn recorded(cluster: &str) -> Vec<(i64, String, String)> {
    let db = database().await;
    let id: uuid::Uuid = cluster.parse().expect("uuid");
    db.query(
        "select id, deployment_id::text, kind from deployment_events where cluster_id = $1 order by id",
        &[&id],
    )
    .await
    .expect("events")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_watcher_sees_every_change_in_commit_order_within_a_second() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 1000, 0, false).await;
    let mut w = watch(&t.c, &t.admin, &cluster).await;
    let (kind, snapshot) = w.next(5 * SECOND).await.expect("snapshot");
    assert_eq!(kind, "snapshot", "{snapshot}");
    assert_eq!(snapshot["cluster"]["id"], cluster.as_str());
    assert_eq!(snapshot["usage"]["capacity"]["cpu_millis"], 1000);
    assert_eq!(snapshot["queue"], json!([]));
    assert_eq!(snapshot["agents"], json!([]));
    assert_eq!(w.last.as_deref(), Some("0"), "a cluster without events");

    // Admitted at once, then one that waits, then room freed by a stop.
    let a = t.submit(&cluster, job("a", 1000)).await.body["id"].clone();
    let a = a.as_str().expect("id");
    let sent = Instant::now();
    let created = w.deployment(a, "created", SECOND).await;
    assert_eq!(created["name"], "a");
    let admitted = w.deployment(a, "admitted", SECOND).await;
    assert_eq!(admitted["status"], "running");
    let usage = w.until("usage", SECOND).await;
    assert_eq!(usage["allocated"]["cpu_millis"], 1000);
    assert!(sent.elapsed() < SECOND, "{:?}", sent.elapsed());

    let b = t.submit(&cluster, job("b", 500)).await.body["id"].clone();
    let b = b.as_str().expect("id");
    let queued = w.deployment(b, "created", SECOND).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["position"], 1, "{queued}");
    let usage = w.until("usage", SECOND).await;
    assert_eq!(usage["queued_demand"]["cpu_millis"], 500);

    let r =
        t.c.call(
            Method::POST,
            &format!("/v1/deployments/{a}/stop"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sent = Instant::now();
    let stopped = w.deployment(a, "stopped", SECOND).await;
    assert_eq!(stopped["status"], "stopped");
    let admitted = w.deployment(b, "admitted", SECOND).await;
    assert_eq!(admitted["status"], "running");
    assert!(admitted.get("position").is_none(), "{admitted}");
    assert!(sent.elapsed() < SECOND, "{:?}", sent.elapsed());
    let usage = w.until("usage", SECOND).await;
    assert_eq!(usage["allocated"]["cpu_millis"], 500);
    assert_eq!(usage["queued_demand"]["cpu_millis"], 0);

    // Replayed from the start: exactly the recorded events, in their order.
    let (status, replay) = open(&t.c, &t.admin, &cluster, Some("0")).await;
    assert_eq!(status, StatusCode::OK);
    let mut replay = replay.expect("stream");
    let events = recorded(&cluster).await;
    assert!(events.len() >= 5, "{events:?}");
    let (kind, _) = replay.next(5 * SECOND).await.expect("event");
    // Event 0 is no event of the cluster's: a snapshot, then nothing missed.
    assert_eq!(kind, "snapshot");
    let first = events[0].0;
    let (status, replay) = open(&t.c, &t.admin, &cluster, Some(&first.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let mut replay = replay.expect("stream");
    for (id, deployment, kind) in &events[1..] {
        let d = replay.until("deployment", 5 * SECOND).await;
        assert_eq!(replay.last.as_deref(), Some(id.to_string().as_str()));
        assert_eq!(
            (d["id"].as_str(), d["event"].as_str()),
            (Some(deployment.as_str()), Some(kind.as_str()))
        );
    }
    // Then the usage as it is now.
    let usage = replay.until("usage", 5 * SECOND).await;
    assert_eq!(usage["allocated"]["cpu_millis"], 500);
}

#[tokio::test]
async fn reconnecting_with_last_event_id_loses_nothing_across_100_reconnects_under_load() {
    let t = Team::new().await;
    let cluster = t.cluster(2000, 0, 0, false).await;
    let mut w = watch(&t.c, &t.admin, &cluster).await;
    let (kind, _) = w.next(5 * SECOND).await.expect("snapshot");
    assert_eq!(kind, "snapshot");
    let start: i64 = w.last.as_deref().expect("id").parse().expect("number");

    // Load: four clients submit and cancel while the watcher keeps reconnecting.
    let load = tokio::spawn({
        let admin = t.admin.clone();
        let cluster = cluster.clone();
        async move {
            let c = Client::new();
            let tasks = (0..4).map(|k| {
                let (c, admin, cluster) = (&c, &admin, &cluster);
                async move {
                    for i in 0..60 {
                        let r = c
                            .deploy(admin, cluster, job(&format!("l{k}-{i}"), 300))
                            .await;
                        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                        if r.body["status"] == "queued" {
                            let id = r.body["id"].as_str().expect("id");
                            let path = format!("/v1/deployments/{id}/cancel");
                            c.call(Method::POST, &path, Some(admin), None).await;
                        } else if i % 3 == 0 {
                            let id = r.body["id"].as_str().expect("id");
                            let path = format!("/v1/deployments/{id}/stop");
                            c.call(Method::POST, &path, Some(admin), None).await;
                        }
                    }
                }
            });
            futures::future::join_all(tasks).await;
        }
    });

    let mut seen: Vec<i64> = Vec::new();
    let mut reconnects = 0;
    let mut snapshots = 0;
    let mut n = 0u64;
    loop {
        // A few events on this connection, then drop it and resume where it stopped.
        let take = 1 + (n % 7);
        n += 1;
        for _ in 0..take {
            match tokio::time::timeout(Duration::from_millis(500), w.events.next()).await {
                Ok(Some(Ok(e))) => {
                    if !e.id.is_empty() {
                        w.last = Some(e.id.clone());
                    }
                    match e.event.as_str() {
                        "deployment" => {
                            seen.push(e.id.parse().expect("a deployment's id is its event"))
                        }
                        "snapshot" => snapshots += 1,
                        _ => {}
                    }
                }
                Ok(other) => panic!("the stream ended: {other:?}"),
                Err(_) => break, // quiet for now
            }
        }
        if reconnects == 100 && load.is_finished() {
            break;
        }
        if reconnects < 100 {
            let last = w.last.clone();
            let (status, next) = open(&t.c, &t.admin, &cluster, last.as_deref()).await;
            assert_eq!(status, StatusCode::OK);
            w = next.expect("stream");
            reconnects += 1;
        }
    }
    load.await.expect("load");
    // Caught up: everything recorded after the snapshot was seen once, in order.
    let want: Vec<i64> = recorded(&cluster)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|id| *id > start)
        .collect();
    loop {
        if seen.last() >= want.last() {
            break;
        }
        match w.next(5 * SECOND).await {
            Some((kind, _)) if kind == "deployment" => {
                seen.push(w.last.as_deref().expect("id").parse().expect("number"))
            }
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
    assert_eq!(snapshots, 0, "every resume was within the replay limit");
    assert!(want.len() > 400, "{} events", want.len());
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert_eq!(seen, want, "every event, in commit order");
}

#[tokio::test]
async fn outsiders_get_404_and_revoked_or_removed_callers_are_cut_off() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let (_, outsider, _) = t.c.user().await;
    assert_eq!(
        open(&t.c, &outsider, &cluster, None).await.0,
        StatusCode::NOT_FOUND
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        open(&t.c, &t.admin, &unknown, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        open(&t.c, &t.admin, "not-a-uuid", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        open(&t.c, "nonsense", &cluster, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let r =
        t.c.call(
            Method::POST,
            &format!("/v1/clusters/{cluster}/watch"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // A viewer's API key watches until it is revoked; then it is refused.
    let key = t.c.api_key(&t.admin, &t.org, "watcher", Role::Viewer).await;
    let secret = key["secret"].as_str().expect("secret");
    let mut w = watch(&t.c, secret, &cluster).await;
    assert_eq!(w.next(5 * SECOND).await.expect("snapshot").0, "snapshot");
    let path = format!(
        "/v1/orgs/{}/api-keys/{}",
        t.org,
        key["id"].as_str().expect("id")
    );
    let r = t.c.call(Method::DELETE, &path, Some(&t.admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (kind, end) = w.next(SECOND).await.expect("the end");
    assert_eq!(kind, "end", "{end}");
    assert!(w.next(SECOND).await.is_none(), "the stream is over");
    assert_eq!(
        open(&t.c, secret, &cluster, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A member watches until removed; the admin's own stream goes on.
    let (_, member, _) = t.c.user().await;
    let member_id = t.c.join(&t.admin, &t.org, &member, Role::Viewer).await;
    let mut w = watch(&t.c, &member, &cluster).await;
    let mut admin = watch(&t.c, &t.admin, &cluster).await;
    assert_eq!(w.next(5 * SECOND).await.expect("snapshot").0, "snapshot");
    assert_eq!(
        admin.next(5 * SECOND).await.expect("snapshot").0,
        "snapshot"
    );
    let path = format!("/v1/orgs/{}/members/{member_id}", t.org);
    let r = t.c.call(Method::DELETE, &path, Some(&t.admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(w.next(SECOND).await.expect("the end").0, "end");
    assert!(w.next(SECOND).await.is_none(), "the stream is over");
    assert_eq!(
        open(&t.c, &member, &cluster, None).await.0,
        StatusCode::NOT_FOUND
    );
    let d = t.submit(&cluster, job("after", 10)).await.body["id"].clone();
    admin
        .deployment(d.as_str().expect("id"), "admitted", SECOND)
        .await;
}

#[tokio::test]
async fn a_stream_ends_when_its_access_token_expires() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let me = t.c.me(&t.admin).await;
    let user = UserId(
        me["user"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
    );
    // Issued 15 minutes less 3 seconds ago: it expires 3 seconds from now.
    let token =
        t.c.keys()
            .issue(user, Utc::now() - chrono::Duration::seconds(15 * 60 - 3));
    let mut w = watch(&t.c, &token, &cluster).await;
    assert_eq!(w.next(5 * SECOND).await.expect("snapshot").0, "snapshot");
    let (kind, end) = w.next(10 * SECOND).await.expect("the end");
    assert_eq!(kind, "end");
    assert!(
        end["reason"].as_str().expect("reason").contains("expired"),
        "{end}"
    );
    assert!(w.next(SECOND).await.is_none(), "the stream is over");
}

#[tokio::test]
async fn gzip_and_plain_watchers_read_the_same_events_and_both_end_well() {
    let t = Team::new().await;
    let cluster = t.cluster(1000, 0, 0, false).await;
    let (_, plain) = open_coded(&t.c, &t.admin, &cluster, None, false).await;
    let (_, gzip) = open_coded(&t.c, &t.admin, &cluster, None, true).await;
    let (mut plain, mut gzip) = (plain.expect("stream"), gzip.expect("stream"));
    for w in [&mut plain, &mut gzip] {
        assert_eq!(w.next(5 * SECOND).await.expect("snapshot").0, "snapshot");
    }
    // Changes enough for several chunks, then the cluster's deletion, which ends both
    // streams (the gzip one with its check, or its decoder would fail).
    let mut left = vec![];
    for i in 0..30 {
        let d = t.submit(&cluster, job(&format!("j{i}"), 400)).await.body["id"].clone();
        let d = d.as_str().expect("id").to_string();
        if i % 3 == 0 {
            let path = format!("/v1/deployments/{d}/cancel");
            t.c.call(Method::POST, &path, Some(&t.admin), None).await;
        }
        left.push(d);
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    // What waits is cancelled, then what runs stopped (each refuses the other), so that
    // nothing is admitted meanwhile.
    for verb in ["cancel", "stop"] {
        for d in &left {
            let path = format!("/v1/deployments/{d}/{verb}");
            t.c.call(Method::POST, &path, Some(&t.admin), None).await;
        }
    }
    let r =
        t.c.call(
            Method::DELETE,
            &format!("/v1/clusters/{cluster}"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let mut seen = [vec![], vec![]];
    for (w, seen) in [&mut plain, &mut gzip].into_iter().zip(&mut seen) {
        while let Some((kind, data)) = w.next(5 * SECOND).await {
            seen.push((w.last.clone(), kind, data));
        }
    }
    assert_eq!(seen[0], seen[1]);
    let kinds: Vec<&str> = seen[0].iter().map(|(_, k, _)| k.as_str()).collect();
    assert!(
        kinds.iter().filter(|k| **k == "deployment").count() >= 60,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"deleted"));
}

#[tokio::test]
async fn an_unknown_or_foreign_last_event_id_gets_a_snapshot() {
    let t = Team::new().await;
    let one = t.cluster(1000, 0, 0, false).await;
    let other = t.cluster(1000, 0, 0, false).await;
    t.submit(&other, job("x", 10)).await;
    let foreign = recorded(&other).await[0].0.to_string();
    for last in [foreign.as_str(), "999999999999", "garbage", "-4", ""] {
        let (status, w) = open(&t.c, &t.admin, &one, Some(last)).await;
        assert_eq!(status, StatusCode::OK, "{last:?}");
        let (kind, _) = w.expect("stream").next(5 * SECOND).await.expect("event");
        assert_eq!(kind, "snapshot", "{last:?}");
    }
    // Deleting the cluster ends its streams.
    let mut w = watch(&t.c, &t.admin, &one).await;
    assert_eq!(w.next(5 * SECOND).await.expect("snapshot").0, "snapshot");
    let r =
        t.c.call(
            Method::DELETE,
            &format!("/v1/clusters/{one}"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(w.next(SECOND).await.expect("deleted").0, "deleted");
    assert!(w.next(SECOND).await.is_none(), "the stream is over");
}
