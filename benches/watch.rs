//! Watch benchmark (a program, not a test; `make bench` runs it last, `BENCH_ONLY=watch`
//! alone): what open watch streams cost the hot path. Submissions from WATCH_CLIENTS
//! connections (default 16) into a cluster for BENCH_SECONDS (default 10) each round, after
//! two uncounted warm-up rounds (without and with watchers): rounds without a watcher and
//! WATCH_PAIRS (default 3) rounds with WATCHERS (default 100) watch streams open on the
//! round's cluster, in turn, beginning and ending with a round without — the baseline is
//! measured in the same run, and each watched round sits between two baseline rounds, so that
//! a drift of the machine's speed during the run hits both alike. Every round has a new
//! cluster of its own, so that each starts from the same state. With the watchers:
//!
//! - every watcher must receive every deployment event its round's cluster recorded
//!   (checked against the database), in order;
//! - one watcher's delivery delay (201 on the submitting client → the `created` event on the
//!   watcher) is reported as percentiles;
//! - one more watcher never reads (a raw socket with a small receive buffer): the server must
//!   drop it (end its stream) rather than buffer without bound.
//!
//! The watchers ask for the gzip-coded stream (`Accept-Encoding: gzip`), as browsers and
//! `berth watch` do; WATCH_CODING=identity makes them ask for plain text, as `curl -N` does.
//! The one that never reads always asks for plain text (the most bytes to hold back).
//!
//! Each round also reports workerd's CPU time per submission when BENCH_WORKERD_PID names its
//! process (`make bench` does): its one JavaScript thread is what limits the rate here, so
//! the CPU a submission costs it is the watchers' price with less of the machine's noise.
//!
//! BERTH_URL and BERTH_DB (the Worker's database) say where things are.

#[path = "support/env.rs"]
mod env;
use env::env_or;
#[path = "support/tenant.rs"]
mod tenant;
use tenant::{tenant, Tenant};
#[path = "../tests/common/gunzip.rs"]
mod gunzip;
use gunzip::gunzip;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One round of submissions: rate, latencies (ms, sorted), and when each id's 201 came.
struct Round {
    rate: f64,
    /// workerd's CPU time per acknowledged submission, ms (BENCH_WORKERD_PID).
    cpu_ms: Option<f64>,
    /// This program's own CPU time per acknowledged submission, ms (its watchers' reading
    /// included).
    own_ms: Option<f64>,
    /// The share of the machine's CPU time left idle during the round.
    idle: Option<f64>,
    latencies: Vec<f64>,
    acked: Vec<(String, Instant)>,
    errors: usize,
}

/// The CPU time (user and system, in clock ticks of 10 ms) process `pid` has used.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses: utime and stime are
    // the 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The machine's CPU time so far, in clock ticks: idle (idle and iowait) and all.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    Some((ticks.get(3)? + ticks.get(4)?, ticks.iter().sum()))
}

async fn round(http: &reqwest::Client, base: &str, token: &str, cluster: &str) -> Round {
    let pid = std::env::var("BENCH_WORKERD_PID").unwrap_or_default();
    let own = std::process::id().to_string();
    let (ticks_before, own_before, machine_before) =
        (cpu_ticks(&pid), cpu_ticks(&own), machine_ticks());
    let (clients, seconds) = (
        env_or("WATCH_CLIENTS", 16usize),
        env_or("BENCH_SECONDS", 10.0),
    );
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            let (http, url, token) = (
                http.clone(),
                format!("{base}/v1/clusters/{cluster}/deployments"),
                token.to_string(),
            );
            tokio::spawn(async move {
                let (mut lat, mut acked, mut errors, mut i) = (vec![], vec![], 0, 0);
                while Instant::now() < stop {
                    i += 1;
                    let body = json!({"name": format!("w{k}-{i}"), "image": "ghcr.io/acme/job:1",
                        "resources": {"cpu_millis": 1, "memory_mib": 1, "gpus": 0}});
                    let t = Instant::now();
                    match http.post(&url).bearer_auth(&token).json(&body).send().await {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let at = Instant::now();
                            lat.push((at - t).as_secs_f64() * 1000.0);
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            acked.push((v["id"].as_str().unwrap_or_default().to_string(), at));
                        }
                        _ => errors += 1,
                    }
                }
                (lat, acked, errors)
            })
        })
        .collect();
    let (mut latencies, mut acked, mut errors) = (vec![], vec![], 0);
    for t in tasks {
        let (l, a, e) = t.await.expect("client");
        latencies.extend(l);
        acked.extend(a);
        errors += e;
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let per_submission = |before: Option<u64>, after: Option<u64>| {
        before
            .zip(after)
            .map(|(a, b)| (b - a) as f64 * 10.0 / acked.len().max(1) as f64)
    };
    let idle = machine_before
        .zip(machine_ticks())
        .map(|((idle0, all0), (idle1, all1))| (idle1 - idle0) as f64 / (all1 - all0).max(1) as f64);
    Round {
        cpu_ms: per_submission(ticks_before, cpu_ticks(&pid)),
        own_ms: per_submission(own_before, cpu_ticks(&own)),
        idle,
        rate: acked.len() as f64 / start.elapsed().as_secs_f64(),
        latencies,
        acked,
        errors,
    }
}

/// What one watcher saw: the deployment events' ids in order, and (for the one that times
/// them) when each deployment's `created` arrived.
#[derive(Default)]
struct Seen {
    events: Vec<i64>,
    /// What a watcher that only drains its stream read.
    bytes: usize,
    created: HashMap<String, Instant>,
}

/// Whether the watchers ask for the gzip-coded stream (WATCH_CODING, default gzip).
fn gzip() -> bool {
    std::env::var("WATCH_CODING").map_or(true, |v| v != "identity")
}

async fn watcher(
    url: String,
    token: String,
    timed: bool,
    checked: bool,
    seen: Arc<Mutex<Seen>>,
    ready: Arc<tokio::sync::Barrier>,
    done: Arc<AtomicBool>,
) {
    if !checked {
        // Most watchers only drain their stream, from a raw socket into a large buffer: the
        // client's parsing (on the same two cores) is not what is measured.
        let mut s = raw_watch(&url, &token, None, gzip()).await;
        let mut buf = vec![0u8; 256 * 1024];
        let mut head = Vec::new();
        let mut waiting = true;
        while let Ok(Ok(n @ 1..)) =
            tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await
        {
            if waiting {
                head.extend_from_slice(&buf[..n]);
                if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    continue;
                }
                assert!(head.starts_with(b"HTTP/1.1 200"), "watch");
                waiting = false;
                ready.wait().await;
            }
            seen.lock().expect("seen").bytes += n;
        }
        return;
    }
    let mut req = reqwest::Client::new().get(&url);
    if gzip() {
        req = req.header("accept-encoding", "gzip");
    }
    let res = req.bearer_auth(&token).send().await.expect("watch");
    assert_eq!(res.status().as_u16(), 200, "watch");
    ready.wait().await;
    // What arrives is kept as it comes, with when it came, and read once the round is over:
    // the client's decoding and parsing (on the same two cores) is not what is measured.
    let mut arrived = vec![];
    let mut body = res.bytes_stream();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(3), body.next()).await
    {
        arrived.push((Instant::now(), chunk));
    }
    // A quiet stream after the rounds: the test is over.
    if !done.load(Ordering::Relaxed) {
        eprintln!("a watcher's stream ended before the rounds did");
    }
    // The parser pulls the chunks one at a time: an event it yields came with the last one.
    let came = Arc::new(Mutex::new(Instant::now()));
    let pulled = came.clone();
    let body = futures::stream::iter(arrived).map(move |(at, chunk)| {
        *pulled.lock().expect("came") = at;
        Ok::<_, String>(chunk)
    });
    let body: Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, String>> + Send>> = if gzip() {
        Box::pin(gunzip(body))
    } else {
        Box::pin(body.map(|b| b.map(|b| b.to_vec())))
    };
    let mut events = body.eventsource();
    let mut mine = Seen::default();
    while let Some(Ok(e)) = events.next().await {
        if e.event != "deployment" {
            continue;
        }
        mine.events.push(e.id.parse().unwrap_or(-1));
        if timed && e.data.contains("\"event\":\"created\"") {
            let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
            if let Some(id) = v["id"].as_str() {
                let at = *came.lock().expect("came");
                mine.created.insert(id.to_string(), at);
            }
        }
    }
    *seen.lock().expect("seen") = mine;
}

/// A watcher that never reads (a raw HTTP/1.1 request on a socket with a small receive
/// buffer).
async fn never_reads(base: &str, token: &str, cluster: &str) -> tokio::net::TcpStream {
    raw_watch(
        &format!("{base}/v1/clusters/{cluster}/watch"),
        token,
        Some(4096),
        false,
    )
    .await
}

/// A watch request (HTTP/1.1) written on a raw socket, its receive buffer `recv` bytes if set,
/// asking for the gzip-coded stream if `gzip`.
async fn raw_watch(url: &str, token: &str, recv: Option<u32>, gzip: bool) -> tokio::net::TcpStream {
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv {
        socket.set_recv_buffer_size(size).expect("small buffer");
    }
    let mut s = socket
        .connect(addr.parse().expect("host:port"))
        .await
        .expect("connect");
    let coding = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{coding}\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("send");
    s
}

/// Reads, at last, what waited for the watcher that never read, until the server's answer is
/// over or `quiet` passes without a byte: whether its stream ended (the chunked body's last
/// chunk, or the connection closed), and how much was waiting.
async fn dropped(mut s: tokio::net::TcpStream, quiet: Duration) -> (bool, usize) {
    let mut buf = vec![0u8; 1 << 16];
    let mut tail: Vec<u8> = vec![];
    let mut total = 0;
    loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, total),
            Ok(Ok(n)) => {
                total += n;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
                if tail.ends_with(b"\r\n0\r\n\r\n") {
                    return (true, total);
                }
            }
            Err(_) => return (false, total),
        }
    }
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BERTH_URL").unwrap_or_else(|_| "http://127.0.0.1:8787".into());
    let db_url = std::env::var("BERTH_DB").expect("BERTH_DB: the Worker's database");
    let n_watchers = env_or("WATCHERS", 100usize);
    let pairs = env_or("WATCH_PAIRS", 3usize).max(1);
    let rounds = 2 * pairs + 1;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let Tenant { token, org, .. } = tenant(&http, &base, "watch-bench").await;
    println!(
        "Watch benchmark: {base}; {} clients, {} s per round, {n_watchers} watchers ({})",
        env_or("WATCH_CLIENTS", 16usize),
        env_or("BENCH_SECONDS", 10.0),
        if gzip() {
            "gzip-coded streams"
        } else {
            "plain-text streams"
        }
    );

    let mut rows: Vec<(String, Round)> = vec![];
    let done = Arc::new(AtomicBool::new(false));
    // What each counted watcher saw, with its round's cluster.
    let mut seen_all: Vec<(String, Arc<Mutex<Seen>>)> = vec![];
    let mut slow = None;
    // Two rounds first, not counted, without and with watchers: at first the wasm's hot
    // functions (the watchers' too) still run on V8's baseline compiler, and the first round
    // measured was always the slowest. Each round has a fresh cluster of its own, so that
    // every round starts from the same state (an empty cluster) and the clusters' growth
    // during the run is nobody's cost.
    for r in 0..rounds + 2 {
        let (warm, watched) = (r < 2, r % 2 == 1);
        let cluster = tenant::cluster(&http, &base, &token, &org, &format!("round-{r}")).await;
        let url = format!("{base}/v1/clusters/{cluster}/watch");
        let mut tasks = vec![];
        if watched {
            done.store(false, Ordering::Relaxed);
            let ready = Arc::new(tokio::sync::Barrier::new(n_watchers + 1));
            for w in 0..n_watchers {
                let seen = Arc::new(Mutex::new(Seen::default()));
                if !warm {
                    seen_all.push((cluster.clone(), seen.clone()));
                }
                tasks.push(tokio::spawn(watcher(
                    url.clone(),
                    token.clone(),
                    w == 0,
                    w % 10 == 0,
                    seen,
                    ready.clone(),
                    done.clone(),
                )));
            }
            ready.wait().await;
            if r == rounds {
                slow = Some(never_reads(&base, &token, &cluster).await);
            }
        }
        let result = round(&http, &base, &token, &cluster).await;
        if watched {
            // Every watcher has seen the round's last event (or gave up after 3 s quiet).
            done.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
            }
        }
        let name = match (warm, watched) {
            (true, false) => "warm-up, no watcher (not counted)".to_string(),
            (true, true) => format!("warm-up, {n_watchers} watchers (not counted)"),
            (false, false) => "POST deployments, no watcher (baseline)".to_string(),
            (false, true) => format!("POST deployments, {n_watchers} watchers"),
        };
        if warm {
            println!("{name}: {:.1} per s", result.rate);
        } else {
            rows.push((name, result));
        }
    }

    // The mean of `figure` over the baseline rounds (parity 0) or the watched ones (1),
    // which have the same mean time.
    let mean = |parity: usize, figure: fn(&Round) -> Option<f64>| {
        let all: Vec<f64> = rows
            .iter()
            .skip(parity)
            .step_by(2)
            .filter_map(|(_, r)| figure(r))
            .collect();
        (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64)
    };
    let rate = |r: &Round| Some(r.rate);
    let base_rate = mean(0, rate).unwrap_or(f64::NAN);
    println!();
    println!(
        "{:<44} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>12} {:>12} {:>6}",
        "round",
        "per s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "vs none",
        "workerd CPU",
        "bench CPU",
        "idle"
    );
    for (i, (name, r)) in rows.iter().enumerate() {
        // A watched round against the two baseline rounds around it; a baseline round
        // against the baseline's mean.
        let against = if i % 2 == 1 {
            (rows[i - 1].1.rate + rows[i + 1].1.rate) / 2.0
        } else {
            base_rate
        };
        println!(
            "{:<44} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8.0}% {:>12} {:>12} {:>6}",
            name,
            r.rate,
            pct(&r.latencies, 0.5),
            pct(&r.latencies, 0.9),
            pct(&r.latencies, 0.99),
            r.errors,
            100.0 * r.rate / against,
            r.cpu_ms
                .map_or("-".to_string(), |ms| format!("{ms:.3} ms/sub")),
            r.own_ms
                .map_or("-".to_string(), |ms| format!("{ms:.3} ms/sub")),
            r.idle
                .map_or("-".to_string(), |idle| format!("{:.0}%", 100.0 * idle))
        );
    }
    let watched_rate = mean(1, rate).unwrap_or(f64::NAN);
    println!(
        "with {n_watchers} watchers: {:.1}% of the throughput without (goal: ≥ 90%)",
        100.0 * watched_rate / base_rate
    );
    let cpu = |r: &Round| r.cpu_ms;
    if let (Some(base_cpu), Some(watched_cpu)) = (mean(0, cpu), mean(1, cpu)) {
        println!(
            "workerd CPU per submission: {watched_cpu:.3} ms with {n_watchers} watchers, {base_cpu:.3} ms without ({:+.1}%)",
            100.0 * (watched_cpu / base_cpu - 1.0)
        );
    }

    // Delivery delay: 201 → the timed watcher's `created`.
    let timed = seen_all
        .iter()
        .step_by(n_watchers)
        .map(|(_, s)| s.lock().expect("seen").created.clone())
        .collect::<Vec<_>>();
    let mut delays = vec![];
    for (r, created) in (1..rounds).step_by(2).zip(&timed) {
        for (id, acked) in &rows[r].1.acked {
            if let Some(at) = created.get(id) {
                delays.push(at.saturating_duration_since(*acked).as_secs_f64() * 1000.0);
            }
        }
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    println!(
        "201 → event on a watcher: {} timed, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (0 when the event came first)",
        delays.len(),
        pct(&delays, 0.5),
        pct(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN)
    );

    // Every watcher saw every event of its round, in order.
    let (db, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .expect("database");
    tokio::spawn(conn);
    // The watched rounds' clusters (each watcher names its own).
    let mut clusters: Vec<uuid::Uuid> = seen_all
        .iter()
        .map(|(cluster, _)| cluster.parse().expect("uuid"))
        .collect();
    clusters.sort_unstable();
    clusters.dedup();
    let mut recorded: HashMap<String, Vec<i64>> = HashMap::new();
    for row in db
        .query(
            "select cluster_id::text, id from deployment_events where cluster_id = any($1) order by id",
            &[&clusters],
        )
        .await
        .expect("events")
    {
        recorded.entry(row.get(0)).or_default().push(row.get(1));
    }
    let (mut complete, mut checked, mut drained) = (0, 0, 0);
    // A draining watcher reads two deployment frames per submission, ~1.6 KB of text; gzip
    // makes them about 100 B.
    let least = if gzip() { 40 } else { 300 };
    let fewest = (1..rounds).step_by(2).map(|r| rows[r].1.acked.len()).min();
    let mut per_submission = vec![];
    for (cluster, seen) in &seen_all {
        let seen = seen.lock().expect("seen");
        if seen.events.is_empty() {
            per_submission.push(seen.bytes as f64 / fewest.unwrap_or(1).max(1) as f64);
            drained += usize::from(seen.bytes > least * fewest.unwrap_or(0));
            continue;
        }
        checked += 1;
        // Its cluster was new when it connected: every event the cluster has was its round's.
        if recorded
            .get(cluster)
            .is_some_and(|want| *want == seen.events)
        {
            complete += 1;
        }
    }
    per_submission.sort_by(|a, b| a.total_cmp(b));
    println!(
        "watchers that saw every event of their round, in order: {complete} of {checked} checked; \
         the {} others read at least {least} B per submission: {drained} (median {:.0} B)",
        seen_all.len() - checked,
        pct(&per_submission, 0.5)
    );
    let (gone, read) = match slow {
        Some(s) => dropped(s, Duration::from_secs(5)).await,
        None => (false, 0),
    };
    println!(
        "the watcher that never read: {} ({} KiB were waiting for it)",
        if gone {
            "dropped by the server"
        } else {
            "STILL OPEN"
        },
        read / 1024
    );
    let ok = complete == checked
        && drained == seen_all.len() - checked
        && gone
        && rows.iter().all(|(_, r)| r.errors == 0);
    if !ok {
        eprintln!("watch benchmark: an invariant failed (see above)");
        std::process::exit(1);
    }
}
