//! Load benchmark (a program, not a test): logs in and calls `/v1/me` at 16 connections,
//! with `/health` measured in the same run as the baseline. Prints requests/s, p50 and p99.
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

    println!("Berth auth benchmark: {base}, {connections} connections, {seconds} s per route");
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
        "POST /v1/auth/login (argon2id)",
        &client,
        4,
        seconds.min(5),
        move |c| {
            c.post(format!("{l}/v1/auth/login"))
                .json(&json!({"email": email, "password": password}))
        },
    )
    .await;

    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>7} {:>8}",
        "route", "req/s", "p50 ms", "p99 ms", "errors", "vs base"
    );
    for s in [&health, &me, &login_run] {
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>7.0}%",
            s.name,
            s.rps(),
            s.pct(0.50),
            s.pct(0.99),
            s.failed,
            100.0 * s.rps() / health.rps()
        );
    }
}
