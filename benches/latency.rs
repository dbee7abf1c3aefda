//! Fixed-rate latency benchmark (a program, not a test; `make bench` runs it after the load
//! program, `BENCH_ONLY=latency` alone): each read route, submissions and `/health` (the
//! runtime's own floor) at a fixed offered rate, open loop — request i is due at
//! start + i / rate whatever happened to the ones before, and its latency counts from when it
//! was due, so a stall also delays (and is charged to) the requests queued behind it
//! (latency correction). Prints, per route and rate, the achieved rate, p50 / p90 / p99 /
//! p99.9 / max and a histogram of the slow tail.
//!
//! LATENCY_RATES (default "100,250"), BENCH_SECONDS (default 10 per cell) and BERTH_URL;
//! LATENCY_ROUTES runs only the routes whose name contains it, and LATENCY_TRACE prints each
//! request of 20 ms or more with how late it was sent and its `x-request-id`.

#[path = "support/env.rs"]
mod env;
use env::env_or;
#[path = "support/tenant.rs"]
mod tenant;
use tenant::{post, tenant, Tenant};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One route as the generator calls it.
#[derive(Clone)]
struct Route {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The slow tail's buckets (ms): [10, 20), [20, 40), [40, 80), [80, 160), [160, ∞).
const TAIL: [f64; 5] = [10.0, 20.0, 40.0, 80.0, 160.0];

struct Cell {
    achieved: f64,
    latencies: Vec<f64>,
    errors: usize,
}

/// `route` at `rate` requests/s for `seconds`, open loop.
async fn cell(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    route: &Route,
    rate: f64,
    seconds: f64,
) -> Cell {
    let n = (rate * seconds).round() as usize;
    let trace = std::env::var_os("LATENCY_TRACE").is_some();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let errors = Arc::new(Mutex::new(0usize));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (http, route, token, latencies, errors) = (
            http.clone(),
            route.clone(),
            token.to_string(),
            latencies.clone(),
            errors.clone(),
        );
        let url = format!("{base}{}", route.path);
        tasks.push(tokio::spawn(async move {
            let mut req = http.request(route.method.clone(), &url);
            if !token.is_empty() {
                req = req.bearer_auth(&token);
            }
            if let Some(b) = &route.body {
                req = req.json(b);
            }
            let sent = due.elapsed().as_secs_f64() * 1000.0;
            let (ok, id) = match req.send().await {
                Ok(r) => {
                    let good = r.status().is_success();
                    let id = r
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let _ = r.bytes().await;
                    (good, id)
                }
                Err(_) => (false, String::new()),
            };
            // From when it was due, not from when it was sent.
            let ms = due.elapsed().as_secs_f64() * 1000.0;
            if trace && ms >= 20.0 {
                println!("  slow {ms:8.2} ms (sent {sent:6.2} ms late) {id}");
            }
            latencies.lock().expect("latencies").push(ms);
            if !ok {
                *errors.lock().expect("errors") += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let took = start.elapsed().as_secs_f64();
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
    latencies.sort_by(|a, b| a.total_cmp(b));
    let errors = *errors.lock().expect("errors");
    Cell {
        achieved: latencies.len() as f64 / took,
        latencies,
        errors,
    }
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BERTH_URL").unwrap_or_else(|_| "http://127.0.0.1:8787".into());
    let seconds = env_or("BENCH_SECONDS", 10.0);
    let rates: Vec<f64> = std::env::var("LATENCY_RATES")
        .unwrap_or_else(|_| "100,250".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("client");
    let Tenant {
        token,
        org,
        cluster,
    } = tenant(&http, &base, "latency-bench").await;
    let job = json!({"name": "r", "image": "ghcr.io/acme/job:1",
        "resources": {"cpu_millis": 1, "memory_mib": 1, "gpus": 0}});
    let deployment = post(
        &http,
        &base,
        &format!("/v1/clusters/{cluster}/deployments"),
        Some(&token),
        job.clone(),
    )
    .await["id"]
        .as_str()
        .expect("deployment")
        .to_string();
    let get = |name, path: String| Route {
        name,
        method: reqwest::Method::GET,
        path,
        body: None,
    };
    let routes = [
        get("GET /health (floor)", "/health".into()),
        get("GET /v1/clusters/{id}", format!("/v1/clusters/{cluster}")),
        get(
            "GET /v1/orgs/{org}/clusters",
            format!("/v1/orgs/{org}/clusters"),
        ),
        get(
            "GET /v1/deployments/{id}",
            format!("/v1/deployments/{deployment}"),
        ),
        get(
            "GET /v1/clusters/{id}/deployments",
            format!("/v1/clusters/{cluster}/deployments"),
        ),
        Route {
            name: "POST …/deployments",
            method: reqwest::Method::POST,
            path: format!("/v1/clusters/{cluster}/deployments"),
            body: Some(job),
        },
    ];
    println!("Fixed-rate latency benchmark: {base}; {seconds} s per cell, open loop, latency from when each request was due");
    println!();
    println!(
        "{:<34} {:>7} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>6}   slow tail: ≥10 / ≥20 / ≥40 / ≥80 / ≥160 ms",
        "route", "offered", "achieved", "p50", "p90", "p99", "p99.9", "max", "errors"
    );
    let mut failed = false;
    let only = std::env::var("LATENCY_ROUTES").unwrap_or_default();
    for rate in &rates {
        for route in routes
            .iter()
            .filter(|r| only.is_empty() || r.name.contains(&only))
        {
            let c = cell(&http, &base, &token, route, *rate, seconds).await;
            let tail: Vec<String> = TAIL
                .iter()
                .map(|t| c.latencies.iter().filter(|l| **l >= *t).count().to_string())
                .collect();
            println!(
                "{:<34} {:>7.0} {:>8.1} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>8.2} {:>6}   {}",
                route.name,
                rate,
                c.achieved,
                pct(&c.latencies, 0.5),
                pct(&c.latencies, 0.9),
                pct(&c.latencies, 0.99),
                pct(&c.latencies, 0.999),
                c.latencies.last().copied().unwrap_or(f64::NAN),
                c.errors,
                tail.join(" / ")
            );
            failed |= c.errors > 0;
        }
    }
    if failed {
        eprintln!("latency benchmark: some requests failed");
        std::process::exit(1);
    }
}
