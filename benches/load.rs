//! Load benchmark (a program, not a test) against a running Berth: `/health` as the baseline
//! measured in the same run, then `/v1/me`, login (argon2id), and deployment submissions to
//! one cluster at 16 and 64 connections. Prints requests/s, p50, p99 and the ratio to the
//! baseline, then checks the cluster's invariants.
//!
//! `make dev` in one terminal, then `make bench` (BERTH_URL, BENCH_SECONDS, BENCH_CONNECTIONS).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Stats {
    name: &'static str,
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

async fn run(
    name: &'static str,
    client: &reqwest::Client,
    connections: usize,
    seconds: u64,
    make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + Clone + Send + 'static,
) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match make(&client).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.expect("worker task");
        latencies.extend(l);
        failed += f;
    }
    latencies.sort();
    Stats {
        name,
        ok: latencies.len(),
        failed,
        elapsed: start.elapsed(),
        latencies,
    }
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BERTH_URL").unwrap_or_else(|_| "http://127.0.0.1:8787".into());
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let connections: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");

    if client.get(format!("{base}/health")).send().await.is_err() {
        eprintln!("nothing answers at {base}: start `make dev` first (or set BERTH_URL)");
        std::process::exit(2);
    }
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "correct horse battery";
    let r = client
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": password, "name": "Bench"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 201, "register");
    let login: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    let token = login["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    let token2 = token.clone();

    println!("Berth load benchmark: {base}, {connections} connections, {seconds} s per route");
    let h = base.clone();
    let health = run(
        "GET /health (baseline)",
        &client,
        connections,
        seconds,
        move |c| c.get(format!("{h}/health")),
    )
    .await;
    let m = base.clone();
    let me = run("GET /v1/me", &client, connections, seconds, move |c| {
        c.get(format!("{m}/v1/me")).bearer_auth(&token)
    })
    .await;
    let l = base.clone();
    let login_run = run(
        "POST /v1/auth/login (argon2id, 4 conns)",
        &client,
        4,
        seconds.min(5),
        move |c| {
            c.post(format!("{l}/v1/auth/login"))
                .json(&json!({"email": email, "password": password}))
        },
    )
    .await;

    // One cluster; demand several times its capacity, random sizes and priorities.
    let org: Value = client
        .post(format!("{base}/v1/orgs"))
        .bearer_auth(&token2)
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .expect("org")
        .json()
        .await
        .expect("org json");
    let org = org["id"].as_str().expect("org id").to_string();
    let cluster: Value = client.post(format!("{base}/v1/orgs/{org}/clusters")).bearer_auth(&token2)
        .json(&json!({"name": "bench", "capacity": {"cpu_millis": 64_000, "memory_mib": 262_144, "gpus": 16},
                      "preemption": true}))
        .send().await.expect("cluster").json().await.expect("cluster json");
    let cluster = cluster["id"].as_str().expect("cluster id").to_string();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let submit = |label: &'static str, conns: usize| {
        let (b, t, c, n) = (
            base.clone(),
            token2.clone(),
            cluster.clone(),
            counter.clone(),
        );
        run(label, &client, conns, seconds, move |http| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
            http.post(format!("{b}/v1/clusters/{c}/deployments")).bearer_auth(&t).json(&json!({
                "name": format!("job-{i}"), "image": "ghcr.io/acme/job:1", "priority": r % 1001,
                "resources": {"cpu_millis": 250 + (r % 4000), "memory_mib": 512 + (r >> 12) % 16_384,
                              "gpus": (r >> 20) % 3}}))
        })
    };
    let submit16 = submit("POST deployments (16 conns)", 16).await;
    let submit64 = submit("POST deployments (64 conns)", 64).await;

    // Reads: the cluster with its usage, the queue, a filtered list, single deployments.
    let listed: Value = client
        .get(format!(
            "{base}/v1/clusters/{cluster}/deployments?limit=200"
        ))
        .bearer_auth(&token2)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list json");
    let ids: Vec<String> = listed["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let read = |label: &'static str, path: String| {
        let (b, t) = (base.clone(), token2.clone());
        run(label, &client, connections, seconds, move |http| {
            http.get(format!("{b}{path}")).bearer_auth(&t)
        })
    };
    let get_cluster = read("GET cluster (usage)", format!("/v1/clusters/{cluster}")).await;
    let get_queue = read(
        "GET queue (first 50)",
        format!("/v1/clusters/{cluster}/queue"),
    )
    .await;
    let list_running = read(
        "GET deployments?status=running",
        format!("/v1/clusters/{cluster}/deployments?status=running"),
    )
    .await;
    let picked = ids.first().cloned().unwrap_or_default();
    let get_one = read(
        "GET deployment (with events)",
        format!("/v1/deployments/{picked}"),
    )
    .await;

    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "route", "req/s", "p50 ms", "p99 ms", "errors", "vs base"
    );
    for s in [
        &health,
        &me,
        &login_run,
        &submit16,
        &submit64,
        &get_cluster,
        &get_queue,
        &list_running,
        &get_one,
    ] {
        println!(
            "{:<40} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>7.0}%",
            s.name,
            s.rps(),
            s.pct(0.50),
            s.pct(0.99),
            s.failed,
            100.0 * s.rps() / health.rps()
        );
    }

    // Machine-readable figures for scripts/bench.sh (ratios against the pgbench ceilings).
    if let Ok(path) = std::env::var("BENCH_RESULTS") {
        let lines: String = [
            ("health", &health),
            ("me", &me),
            ("login", &login_run),
            ("submit16", &submit16),
            ("submit64", &submit64),
        ]
        .iter()
        .map(|(k, s)| format!("{k} {:.1}\n", s.rps()))
        .collect();
        std::fs::write(path, lines).expect("write the results file");
    }

    let detail: Value = client
        .get(format!("{base}/v1/clusters/{cluster}"))
        .bearer_auth(&token2)
        .send()
        .await
        .expect("cluster")
        .json()
        .await
        .expect("json");
    let u = &detail["usage"];
    let fits = ["cpu_millis", "memory_mib", "gpus"]
        .iter()
        .all(|k| u["allocated"][k].as_i64() <= u["capacity"][k].as_i64());
    let stored = u["running"].as_i64().unwrap_or(0) + u["queued"].as_i64().unwrap_or(0);
    println!("cluster after the run: {} running, {} queued, {} accepted; allocated within capacity: {fits}",
        u["running"], u["queued"], submit16.ok + submit64.ok);
    assert!(fits, "overcommitted: {u}");
    assert_eq!(
        stored as usize,
        submit16.ok + submit64.ok,
        "every 201 is stored"
    );
}
