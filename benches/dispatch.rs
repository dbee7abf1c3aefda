//! Dispatch benchmark (a program, not a test; `make bench` runs it after the load program):
//! one cluster with real `berth agent --driver exec` processes (DISPATCH_AGENTS, default 10,
//! each 4 CPU / 4 GiB), DISPATCH_N deployments (default 2,000) of `["true"]` with small
//! resources submitted at full speed by DISPATCH_CLIENTS concurrent clients (default 4).
//! Measured in one run:
//!
//! - the baseline: the same submissions to a cluster without agents (201 = admission only);
//! - submissions/s and 201 latency on the cluster with agents;
//! - placements/s (the `assigned` events' rate), starts/s, ends/s;
//! - 201 → `started_at` p50/p90/p99/max and 201 → finished (succeeded) p50/p99/max, on the
//!   client's clock at the 201 and the server's stored times (same machine, same clock).
//!
//! Then checks, from the database: every deployment succeeded exactly once (one `assigned`,
//! one `started`, one `exited`, no `lost`), and no agent ever held more than its capacity —
//! replaying each agent's `assigned` (+) and `exited` (−) events in the order they were
//! written, and from `GET /v1/clusters/{id}/agents` sampled during the run.
//!
//! Placement is best fit (the fullest agent with room), so `true`, which ends at once, mostly
//! runs on one agent; DISPATCH_SLEEP=S submits `sleep S` instead, which spreads them.
//!
//! BERTH_URL, BERTH_DB (PostgreSQL URL of the Worker's database) and BERTH_BIN (the release
//! `berth`, default target/release/berth) say where things are.

#[path = "support/agents.rs"]
mod agents;

#[path = "support/env.rs"]
mod env;
use env::env_or;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Each agent's offer, as `berth agent` takes it and in the API's units.
const AGENT_CPU: (&str, i64) = ("4", 4000);
const AGENT_MEMORY: (&str, i64) = ("4Gi", 4096);

/// A submission's size: 100–500 mCPU, 64–512 MiB (at least 8 fit an agent at once).
fn size(i: usize) -> (i64, i64) {
    (100 + 100 * (i % 5) as i64, 64 << (i % 4))
}

/// What one submission phase saw.
struct Submitted {
    /// Acknowledged ids and when their 201 arrived (client clock, UTC).
    acked: Vec<(String, DateTime<Utc>)>,
    latencies: Vec<Duration>,
    errors: usize,
    seconds: f64,
    first_sent: DateTime<Utc>,
}

impl Submitted {
    fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.seconds
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// `n` submissions to `cluster` from `clients` concurrent loops, as fast as answered.
async fn submit(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    cluster: &str,
    n: usize,
    clients: usize,
) -> Submitted {
    let next = Arc::new(AtomicUsize::new(0));
    // DISPATCH_SLEEP=S runs `sleep S` instead of `true`, so that agents fill up.
    let command = match std::env::var("DISPATCH_SLEEP") {
        Ok(s) if !s.is_empty() && s != "0" => json!(["sleep", s]),
        _ => json!(["true"]),
    };
    let first_sent = Utc::now();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, next, command) = (http.clone(), next.clone(), command.clone());
        let url = format!("{base}/v1/clusters/{cluster}/deployments");
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut latencies, mut errors) = (vec![], vec![], 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (cpu, memory) = size(i);
                let body = json!({"name": format!("d-{i}"), "image": "ghcr.io/acme/job:1",
                    "command": command,
                    "resources": {"cpu_millis": cpu, "memory_mib": memory, "gpus": 0}});
                let t = Instant::now();
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let at = Utc::now();
                        latencies.push(t.elapsed());
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        acked.push((v["id"].as_str().unwrap_or_default().to_string(), at));
                    }
                    _ => errors += 1,
                }
            }
            (acked, latencies, errors)
        }));
    }
    let mut s = Submitted {
        acked: vec![],
        latencies: vec![],
        errors: 0,
        seconds: 0.0,
        first_sent,
    };
    for t in tasks {
        let (a, l, e) = t.await.expect("client");
        s.acked.extend(a);
        s.latencies.extend(l);
        s.errors += e;
    }
    s.seconds = start.elapsed().as_secs_f64();
    s.latencies.sort();
    s
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut req = http.request(method, &url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect(&url);
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BERTH_URL").unwrap_or_else(|_| "http://127.0.0.1:8787".into());
    let db_url = std::env::var("BERTH_DB").expect("BERTH_DB (the Worker's database)");
    let n: usize = env_or("DISPATCH_N", 2000);
    let clients: usize = env_or("DISPATCH_CLIENTS", 4);
    let n_agents: usize = env_or("DISPATCH_AGENTS", 10);
    let wait_s: u64 = env_or("DISPATCH_WAIT_SECONDS", 180);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    use reqwest::Method;

    // One user, one organization, two clusters of the same (ample) capacity.
    let email = format!("dispatch-{}@example.com", uuid::Uuid::new_v4().simple());
    let pw = "correct horse battery";
    call(
        &http,
        Method::POST,
        format!("{base}/v1/auth/register"),
        None,
        json!({"email": email, "password": pw, "name": "Dispatch"}),
    )
    .await;
    let login = call(
        &http,
        Method::POST,
        format!("{base}/v1/auth/login"),
        None,
        json!({"email": email, "password": pw}),
    )
    .await;
    let token = login["access_token"].as_str().expect("token").to_string();
    let org = call(
        &http,
        Method::POST,
        format!("{base}/v1/orgs"),
        Some(&token),
        json!({"name": "dispatch"}),
    )
    .await;
    let org = org["id"].as_str().expect("org").to_string();
    let capacity = json!({"cpu_millis": 10_000_000, "memory_mib": 100_000_000, "gpus": 0});
    let mut ids = vec![];
    for name in ["baseline", "agents"] {
        let c = call(
            &http,
            Method::POST,
            format!("{base}/v1/orgs/{org}/clusters"),
            Some(&token),
            json!({"name": name, "capacity": capacity}),
        )
        .await;
        ids.push(c["id"].as_str().expect("cluster").to_string());
    }
    let (baseline_cluster, cluster) = (ids[0].clone(), ids[1].clone());
    let agent_token = call(
        &http,
        Method::POST,
        format!("{base}/v1/clusters/{cluster}/agent-tokens"),
        Some(&token),
        json!({"name": "dispatch"}),
    )
    .await;
    let agent_token = agent_token["token"]
        .as_str()
        .expect("agent token")
        .to_string();

    let mut fleet = agents::Agents::spawn(
        n_agents,
        "dispatch",
        (&base, &cluster, &agent_token),
        AGENT_CPU.0,
        AGENT_MEMORY.0,
    );
    if !agents::connected(
        &http,
        &base,
        &token,
        &cluster,
        n_agents,
        Duration::from_secs(30),
    )
    .await
    {
        fleet.kill_all().await;
        panic!("the {n_agents} agents did not all connect within 30 s (their logs: BENCH_LOG_DIR)");
    }

    // The baseline first: the same submissions, to the cluster without agents.
    let baseline = submit(&http, &base, &token, &baseline_cluster, n, clients).await;

    // Then the cluster with agents, sampling what each agent holds while it runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let samples: Arc<Mutex<(usize, Vec<String>)>> = Arc::default();
    let sampler = {
        let (http, base, token, cluster) =
            (http.clone(), base.clone(), token.clone(), cluster.clone());
        let (sampling, samples) = (sampling.clone(), samples.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let list = agents::list(&http, &base, &token, &cluster).await;
                {
                    let mut s = samples.lock().expect("samples");
                    s.0 += usize::from(!list.is_empty());
                    for a in list {
                        for k in ["cpu_millis", "memory_mib", "gpus"] {
                            if a["placed"][k].as_i64().unwrap_or(0)
                                > a["capacity"][k].as_i64().unwrap_or(0)
                            {
                                s.1.push(a.to_string());
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let run = submit(&http, &base, &token, &cluster, n, clients).await;

    // Until every acknowledged deployment has succeeded (or the wait is over).
    let (db, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(conn);
    let cid: uuid::Uuid = cluster.parse().expect("uuid");
    let waited = Instant::now();
    let mut done = 0i64;
    while waited.elapsed() < Duration::from_secs(wait_s) {
        done = db
            .query_one(
                "select count(*) from deployments where cluster_id = $1 and status = 'succeeded'",
                &[&cid],
            )
            .await
            .expect("count")
            .get(0);
        if done as usize >= run.acked.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");
    fleet.kill_all().await;

    // What the database says of each deployment and its events.
    let rows = db
        .query(
            "select id::text, status, cpu_millis, memory_mib, started_at, finished_at from deployments where cluster_id = $1",
            &[&cid],
        )
        .await
        .expect("deployments");
    struct D {
        status: String,
        res: (i64, i64),
        started_at: Option<DateTime<Utc>>,
        finished_at: Option<DateTime<Utc>>,
    }
    let stored: HashMap<String, D> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                D {
                    status: r.get(1),
                    res: (r.get(2), r.get(3)),
                    started_at: r.get(4),
                    finished_at: r.get(5),
                },
            )
        })
        .collect();
    let events = db
        .query(
            "select e.deployment_id::text, e.kind, e.reason, e.at from deployment_events e \
             join deployments d on d.id = e.deployment_id where d.cluster_id = $1 order by e.id",
            &[&cid],
        )
        .await
        .expect("events");

    // Counts per deployment and kind; each agent's holding replayed in the events' order.
    let mut kinds: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
    let mut on: HashMap<&str, String> = HashMap::new();
    let mut held: BTreeMap<String, (i64, i64, usize)> = BTreeMap::new();
    let mut peak: BTreeMap<String, (i64, i64, usize)> = BTreeMap::new();
    let mut placed_on: BTreeMap<String, usize> = BTreeMap::new();
    let mut over = vec![];
    let mut assigned_at = vec![];
    for e in &events {
        let (id, kind): (&str, &str) = (e.get(0), e.get(1));
        *kinds.entry(id).or_default().entry(kind).or_default() += 1;
        let res = stored.get(id).map_or((0, 0), |d| d.res);
        match kind {
            "assigned" => {
                let reason: Option<&str> = e.get(2);
                let agent = reason
                    .unwrap_or_default()
                    .trim_start_matches("on agent ")
                    .to_string();
                let at: DateTime<Utc> = e.get(3);
                assigned_at.push(at);
                *placed_on.entry(agent.clone()).or_default() += 1;
                let h = held.entry(agent.clone()).or_default();
                *h = (h.0 + res.0, h.1 + res.1, h.2 + 1);
                let p = peak.entry(agent.clone()).or_default();
                *p = (p.0.max(h.0), p.1.max(h.1), p.2.max(h.2));
                if h.0 > AGENT_CPU.1 || h.1 > AGENT_MEMORY.1 {
                    over.push(format!("{agent} held {h:?} after assigning {id}"));
                }
                on.insert(id, agent);
            }
            "exited" | "lost" => {
                if let Some(agent) = on.remove(id) {
                    let h = held.entry(agent).or_default();
                    *h = (h.0 - res.0, h.1 - res.1, h.2 - 1);
                }
            }
            _ => {}
        }
    }
    let count = |id: &str, kind: &str| {
        kinds
            .get(id)
            .and_then(|k| k.get(kind))
            .copied()
            .unwrap_or(0)
    };
    let mut not_once = vec![];
    let (mut to_start, mut to_end) = (vec![], vec![]);
    let (mut started, mut finished) = (vec![], vec![]);
    for (id, at201) in &run.acked {
        let Some(d) = stored.get(id) else {
            not_once.push(format!("{id}: acknowledged, not stored"));
            continue;
        };
        let once = d.status == "succeeded"
            && count(id, "assigned") == 1
            && count(id, "started") == 1
            && count(id, "exited") == 1
            && count(id, "lost") == 0;
        if !once {
            not_once.push(format!(
                "{id}: {} with events {:?}",
                d.status,
                kinds.get(id.as_str())
            ));
        }
        if let Some(s) = d.started_at {
            to_start.push(ms(s - *at201));
            started.push(s);
        }
        if let (Some(f), "succeeded") = (d.finished_at, d.status.as_str()) {
            to_end.push(ms(f - *at201));
            finished.push(f);
        }
    }
    let (to_start, to_end) = (sorted(to_start), sorted(to_end));
    let span_rate = |mut ts: Vec<DateTime<Utc>>| {
        ts.sort();
        match (ts.first(), ts.last()) {
            (Some(a), Some(b)) if b > a => (ts.len() - 1) as f64 / (ms(*b - *a) / 1000.0),
            _ => f64::NAN,
        }
    };
    let last_end = finished.iter().max().copied();
    let (assign_rate, start_rate, end_rate) = (
        span_rate(assigned_at),
        span_rate(started),
        span_rate(finished.clone()),
    );
    let end_to_end = last_end.map_or(f64::NAN, |l| {
        run.acked.len() as f64 / (ms(l - run.first_sent) / 1000.0)
    });

    // The report.
    let lat = |s: &Submitted, p: f64| {
        let v: Vec<f64> = s
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        pct(&v, p)
    };
    let base_rate = baseline.rate();
    let what = match std::env::var("DISPATCH_SLEEP") {
        Ok(s) if !s.is_empty() && s != "0" => format!("[\"sleep\", \"{s}\"]"),
        _ => "[\"true\"]".into(),
    };
    println!(
        "\ndispatch: {n_agents} exec agents × {} CPU / {}, {n} deployments of {what} (100–500 mCPU, 64–512 MiB), {clients} clients",
        AGENT_CPU.0, AGENT_MEMORY.0
    );
    println!(
        "{:<44} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "vs base"
    );
    let line = |name: &str, rate: f64, p: [f64; 4], errors: String| {
        let f = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        println!(
            "{:<44} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7.0}%",
            name,
            rate,
            f(p[0]),
            f(p[1]),
            f(p[2]),
            f(p[3]),
            errors,
            100.0 * rate / base_rate
        );
    };
    let p4 = |s: &Submitted| [lat(s, 0.5), lat(s, 0.9), lat(s, 0.99), lat(s, 1.0)];
    line(
        "POST → 201, no agents (baseline, admission)",
        base_rate,
        p4(&baseline),
        baseline.errors.to_string(),
    );
    line(
        "POST → 201, with agents",
        run.rate(),
        p4(&run),
        run.errors.to_string(),
    );
    let nan4 = [f64::NAN; 4];
    line(
        "placements (assigned events)",
        assign_rate,
        nan4,
        String::new(),
    );
    line(
        "201 → started_at",
        start_rate,
        [
            pct(&to_start, 0.5),
            pct(&to_start, 0.9),
            pct(&to_start, 0.99),
            pct(&to_start, 1.0),
        ],
        String::new(),
    );
    line(
        "201 → finished (succeeded)",
        end_rate,
        [
            pct(&to_end, 0.5),
            pct(&to_end, 0.9),
            pct(&to_end, 0.99),
            pct(&to_end, 1.0),
        ],
        String::new(),
    );
    line(
        "end to end: first POST → last succeeded",
        end_to_end,
        nan4,
        String::new(),
    );
    println!("(the rates of the last four rows: events per second over the span from their first to their last; \"vs base\" against the baseline's submissions/s)");
    let counts: Vec<usize> = placed_on.values().copied().collect();
    let peaks: Vec<String> = peak
        .values()
        .map(|p| format!("{}m/{}Mi/{}", p.0, p.1, p.2))
        .collect();
    println!(
        "placements per agent: min {} max {} over {} agents; peak held per agent (mCPU/MiB/containers): {}",
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0),
        counts.len(),
        peaks.join(" ")
    );
    let (polls, sampled_over) = std::mem::take(&mut *samples.lock().expect("samples"));
    let ok = not_once.is_empty()
        && over.is_empty()
        && sampled_over.is_empty()
        && run.errors == 0
        && baseline.errors == 0;
    println!(
        "invariants: {done} of {} succeeded within {:.1} s; exactly once (1 assigned, 1 started, 1 exited, 0 lost): {}; \
         no agent over its capacity: {} (events replayed), {} ({polls} samples of GET …/agents)",
        run.acked.len(),
        waited.elapsed().as_secs_f64(),
        if not_once.is_empty() { "yes".to_string() } else { format!("NO, {} not", not_once.len()) },
        if over.is_empty() { "yes".to_string() } else { format!("NO, {}", over.len()) },
        if sampled_over.is_empty() { "yes".to_string() } else { format!("NO, {}", sampled_over.len()) },
    );
    for s in not_once.iter().chain(&over).chain(&sampled_over).take(10) {
        println!("  {s}");
    }
    if !ok {
        std::process::exit(1);
    }
}
