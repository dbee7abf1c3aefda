//! Load benchmark (a program, not a test) against a running Berth. It sets up a realistic
//! tenant population — several users, organizations with invited developers, clusters of
//! different sizes and policies — then measures, in one run:
//!
//! 1. `/health` as the baseline (no database), `/v1/me`, login (argon2id);
//! 2. submissions to ONE cluster at 16 and 64 connections (random sizes and priorities,
//!    demand several times capacity): requests/s end to end, and the cluster object's own
//!    admission rate from the `Server-Timing` batch each submission was committed in;
//!    Then the object's own admission rate, apart from the HTTP front: thousands wait in a
//!    cluster's queue, one resize lets them in, admitted ÷ the resize's time;
//! 3. mixed traffic over every cluster: submit, stop, finish, cancel, priority change and
//!    reads, each route with its own requests/s, p50 and p99;
//! 4. each read endpoint alone (cluster, queue, running list, one deployment);
//!
//! then checks the invariants: on every cluster allocated ≤ capacity and allocated = the sum
//! over its running deployments, and every acknowledged (201) deployment is stored.
//!
//! `make bench` runs it against workerd + PgBouncer; BERTH_URL, BENCH_SECONDS,
//! BENCH_CONNECTIONS, BENCH_USERS, BENCH_ORGS and BENCH_CLUSTERS tune it.

#[path = "support/env.rs"]
mod env;
use env::env_or;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

/// Latencies and outcomes of one route.
#[derive(Default)]
struct Stats {
    ok: usize,
    /// Expected refusals under concurrency (409: someone else stopped it first, …).
    conflicts: usize,
    failed: usize,
    server_errors: usize,
    latencies: Vec<Duration>,
}

impl Stats {
    fn record(&mut self, status: Option<StatusCode>, took: Duration) {
        match status {
            Some(s) if s.is_success() => {
                self.ok += 1;
                self.latencies.push(took);
            }
            Some(StatusCode::CONFLICT) => {
                self.conflicts += 1;
                self.latencies.push(took);
            }
            Some(s) if s.is_server_error() => self.server_errors += 1,
            _ => self.failed += 1,
        }
    }

    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.conflicts += other.conflicts;
        self.failed += other.failed;
        self.server_errors += other.server_errors;
        self.latencies.extend(other.latencies);
    }

    fn pct(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// One row of the report.
struct Row {
    name: String,
    key: &'static str,
    seconds: f64,
    stats: Stats,
}

impl Row {
    fn rps(&self) -> f64 {
        (self.stats.ok + self.stats.conflicts) as f64 / self.seconds
    }
}

/// A request to make: method, path, bearer token, body.
struct Call {
    route: &'static str,
    method: Method,
    path: String,
    token: String,
    body: Option<Value>,
}

impl Call {
    fn get(route: &'static str, path: String, token: String) -> Self {
        Call {
            route,
            method: Method::GET,
            path,
            token,
            body: None,
        }
    }

    fn with_method(self, method: Method) -> Self {
        Call { method, ..self }
    }
}

/// What the load loops learn from answers: deployments by cluster and state, acknowledged
/// ids, and the object's batch timings.
#[derive(Default)]
struct Book {
    running: HashMap<String, Vec<String>>,
    queued: HashMap<String, Vec<String>>,
    acknowledged: HashMap<String, HashSet<String>>,
    /// Σ over submissions of (batch duration ÷ batch size), in seconds: the object's busy
    /// time attributable to them.
    busy_seconds: f64,
    timed: usize,
}

struct Tenant {
    token: String,
}

struct Cluster {
    id: String,
    /// Tokens of members allowed to deploy here.
    deployers: Vec<String>,
}

struct Bench {
    client: Client,
    base: String,
    book: Mutex<Book>,
    counter: AtomicU64,
}

impl Bench {
    async fn send(&self, call: &Call) -> (Option<StatusCode>, Duration, Option<Value>, String) {
        let t = Instant::now();
        let mut req = self
            .client
            .request(call.method.clone(), format!("{}{}", self.base, call.path))
            .bearer_auth(&call.token);
        if let Some(b) = &call.body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status();
                let timing = r
                    .headers()
                    .get("server-timing")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = r.json::<Value>().await.ok();
                (Some(status), t.elapsed(), body, timing)
            }
            Err(_) => (None, t.elapsed(), None, String::new()),
        }
    }

    fn random(&self) -> u64 {
        let i = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
        x ^= x >> 29;
        x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 7
    }

    fn submission(&self, cluster: &Cluster) -> Call {
        let r = self.random();
        let token = cluster.deployers[(r % cluster.deployers.len() as u64) as usize].clone();
        Call {
            route: "POST deployments",
            method: Method::POST,
            path: format!("/v1/clusters/{}/deployments", cluster.id),
            token,
            body: Some(json!({
                "name": format!("job-{r}"), "image": "ghcr.io/acme/job:1", "priority": (r >> 8) % 1001,
                "max_runtime_seconds": 3600,
                "resources": {"cpu_millis": 250 + (r >> 20) % 4000, "memory_mib": 512 + (r >> 32) % 16_384,
                              "gpus": (r >> 48) % 3}})),
        }
    }

    /// Learns from an answer about a deployment.
    fn learn(
        &self,
        cluster: &str,
        call: &Call,
        status: Option<StatusCode>,
        body: &Option<Value>,
        timing: &str,
    ) {
        let mut book = self.book.lock().expect("book");
        if call.route == "POST deployments" && status == Some(StatusCode::CREATED) {
            if let Some(d) = body {
                let id = d["id"].as_str().unwrap_or_default().to_string();
                book.acknowledged
                    .entry(cluster.into())
                    .or_default()
                    .insert(id.clone());
                let list = if d["status"] == "running" {
                    &mut book.running
                } else {
                    &mut book.queued
                };
                list.entry(cluster.into()).or_default().push(id);
            }
            if let Some((ms, n)) = parse_timing(timing) {
                book.busy_seconds += ms / 1000.0 / n;
                book.timed += 1;
            }
        }
    }

    /// Takes a known deployment of `cluster` believed to be in `running` (or queued) state.
    fn take(&self, cluster: &str, running: bool) -> Option<String> {
        let r = self.random() as usize;
        let mut book = self.book.lock().expect("book");
        let list = if running {
            &mut book.running
        } else {
            &mut book.queued
        };
        let ids = list.get_mut(cluster)?;
        if ids.is_empty() {
            return None;
        }
        let i = r % ids.len();
        Some(ids.swap_remove(i))
    }

    /// A known deployment of `cluster` believed running (or queued), left in place.
    fn peek(&self, cluster: &str, running: bool) -> Option<String> {
        let r = self.random() as usize;
        let book = self.book.lock().expect("book");
        let list = if running { &book.running } else { &book.queued };
        let ids = list.get(cluster).filter(|ids| !ids.is_empty())?;
        Some(ids[r % ids.len()].clone())
    }

    /// `connections` loops making calls from `next` for `seconds`; one Stats per route.
    async fn drive(
        self: &Arc<Self>,
        connections: usize,
        seconds: f64,
        next: impl Fn(&Bench) -> Option<(String, Call)> + Send + Sync + Clone + 'static,
    ) -> (f64, BTreeMap<&'static str, Stats>) {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (bench, next) = (self.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut stats: BTreeMap<&'static str, Stats> = BTreeMap::new();
                while Instant::now() < deadline {
                    let Some((cluster, call)) = next(&bench) else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let (status, took, body, timing) = bench.send(&call).await;
                    bench.learn(&cluster, &call, status, &body, &timing);
                    stats.entry(call.route).or_default().record(status, took);
                }
                stats
            }));
        }
        let mut all: BTreeMap<&'static str, Stats> = BTreeMap::new();
        for t in tasks {
            for (route, s) in t.await.expect("load task") {
                all.entry(route).or_default().merge(s);
            }
        }
        (start.elapsed().as_secs_f64(), all)
    }

    async fn json(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let call = Call {
            route: "setup",
            method,
            path: path.into(),
            token: token.into(),
            body,
        };
        let (status, _, body, _) = self.send(&call).await;
        assert!(
            status.is_some_and(|s| s.is_success()),
            "{path}: {status:?} {body:?}"
        );
        body.unwrap_or(Value::Null)
    }
}

/// `batch;dur=12.345;desc="37 commands"` → (12.345 ms, 37).
fn parse_timing(header: &str) -> Option<(f64, f64)> {
    let dur = header
        .split(';')
        .find_map(|p| p.strip_prefix("dur="))?
        .parse()
        .ok()?;
    let desc = header.split("desc=\"").nth(1)?;
    let n: f64 = desc.split(' ').next()?.parse().ok()?;
    (n > 0.0).then_some((dur, n))
}

#[tokio::main]
async fn main() {
    let config = Config::from_env();
    let bench = connect(&config).await;
    let world = setup(&bench, &config).await;
    let mut rows = baseline(&bench, &config, &world).await;
    let admissions = admissions(&bench, &config, &world, &mut rows).await;
    let backlog = backlog(&bench, &world).await;
    let mixed = mixed(&bench, &config, &world).await;
    rows.extend(reads(&bench, &config, &world).await);
    let server_errors = report(&config, &world, rows, mixed, &backlog, &admissions);
    check_invariants(&bench, &world, &backlog.cluster, server_errors).await;
}

/// What the environment tunes.
struct Config {
    base: String,
    seconds: f64,
    connections: usize,
    n_users: usize,
    n_orgs: usize,
    n_clusters: usize,
}

impl Config {
    fn from_env() -> Self {
        Self {
            base: std::env::var("BERTH_URL").unwrap_or_else(|_| "http://127.0.0.1:8787".into()),
            seconds: env_or("BENCH_SECONDS", 10.0),
            connections: env_or("BENCH_CONNECTIONS", 16),
            n_users: env_or("BENCH_USERS", 8).max(2),
            n_orgs: env_or("BENCH_ORGS", 2).max(1),
            n_clusters: env_or("BENCH_CLUSTERS", 2).max(1),
        }
    }
}

/// The tenants the phases act as: users (e-mail, token), organizations and clusters.
struct World {
    users: Vec<(String, Tenant)>,
    orgs: Vec<String>,
    clusters: Arc<Vec<Cluster>>,
    /// The first user's token, for the single-caller phases.
    token: String,
}

const PASSWORD: &str = "correct horse battery";

/// The client, once something answers at the base URL (else exit 2).
async fn connect(config: &Config) -> Arc<Bench> {
    let base = &config.base;
    let client = Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    if client.get(format!("{base}/health")).send().await.is_err() {
        eprintln!("nothing answers at {base}: start `make dev` first (or set BERTH_URL)");
        std::process::exit(2);
    }
    Arc::new(Bench {
        client,
        base: base.clone(),
        book: Mutex::default(),
        counter: AtomicU64::new(1),
    })
}

/// Users, organizations (each with every other user invited as a developer) and clusters of
/// different sizes and policies.
async fn setup(bench: &Bench, config: &Config) -> World {
    // Users (argon2id hashing makes registration slow; a few are plenty).
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut users = Vec::new();
    for i in 0..config.n_users {
        let email = format!("bench-{run_id}-{i}@example.com");
        bench
            .json(
                Method::POST,
                "/v1/auth/register",
                "",
                Some(json!({"email": email, "password": PASSWORD, "name": format!("User {i}")})),
            )
            .await;
        let login = bench
            .json(
                Method::POST,
                "/v1/auth/login",
                "",
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        users.push((
            email,
            Tenant {
                token: login["access_token"].as_str().expect("token").to_string(),
            },
        ));
    }
    let mut clusters = Vec::new();
    let mut orgs = Vec::new();
    for o in 0..config.n_orgs {
        let owner = &users[o % users.len()].1.token;
        let org = bench
            .json(
                Method::POST,
                "/v1/orgs",
                owner,
                Some(json!({"name": format!("bench org {o}")})),
            )
            .await;
        let org = org["id"].as_str().expect("org").to_string();
        orgs.push(org.clone());
        let mut deployers = vec![owner.clone()];
        for (_, u) in users.iter().filter(|(_, u)| u.token != *owner) {
            let inv = bench
                .json(
                    Method::POST,
                    &format!("/v1/orgs/{org}/invites"),
                    owner,
                    Some(json!({"role": "developer"})),
                )
                .await;
            bench
                .json(
                    Method::POST,
                    "/v1/invites/accept",
                    &u.token,
                    Some(json!({"code": inv["code"]})),
                )
                .await;
            deployers.push(u.token.clone());
        }
        for c in 0..config.n_clusters {
            let (queueing, preemption) = match c % 3 {
                0 => ("best_effort", true),
                1 => ("strict", false),
                _ => ("best_effort", false),
            };
            let scale = 1 + (c % 2) as i64;
            let cluster = bench
                .json(Method::POST, &format!("/v1/orgs/{org}/clusters"), owner, Some(json!({
                    "name": format!("bench-{c}"), "queueing": queueing, "preemption": preemption,
                    "capacity": {"cpu_millis": 64_000 * scale, "memory_mib": 262_144 * scale, "gpus": 16 * scale}})))
                .await;
            clusters.push(Cluster {
                id: cluster["id"].as_str().expect("cluster").to_string(),
                deployers: deployers.clone(),
            });
        }
    }
    let token = users[0].1.token.clone();
    println!(
        "Berth load benchmark: {}; {} users, {} organizations, {} clusters; {} connections, {} s per phase",
        config.base,
        config.n_users,
        config.n_orgs,
        clusters.len(),
        config.connections,
        config.seconds
    );
    World {
        users,
        orgs,
        clusters: Arc::new(clusters),
        token,
    }
}

/// One row of the report from a phase's run, its routes taken together.
fn row(name: &str, key: &'static str, (secs, stats): (f64, BTreeMap<&'static str, Stats>)) -> Row {
    let stats = stats.into_values().fold(Stats::default(), |mut a, s| {
        a.merge(s);
        a
    });
    Row {
        name: name.into(),
        key,
        seconds: secs,
        stats,
    }
}

/// The same GET, over and over.
fn get(
    route: &'static str,
    path: String,
    token: String,
) -> impl Fn(&Bench) -> Option<(String, Call)> + Send + Sync + Clone + 'static {
    move |_: &Bench| Some((String::new(), Call::get(route, path.clone(), token.clone())))
}

/// Phase 1: the baseline and simple authenticated reads.
async fn baseline(bench: &Arc<Bench>, config: &Config, world: &World) -> Vec<Row> {
    let (connections, seconds) = (config.connections, config.seconds);
    let health = bench
        .drive(
            connections,
            seconds,
            get("health", "/health".into(), String::new()),
        )
        .await;
    let me = bench
        .drive(
            connections,
            seconds,
            get("me", "/v1/me".into(), world.token.clone()),
        )
        .await;
    let (email0, _) = &world.users[0];
    let login_body = json!({"email": email0, "password": PASSWORD});
    let login = bench
        .drive(4, seconds.min(5.0), move |_| {
            Some((
                String::new(),
                Call {
                    route: "login",
                    method: Method::POST,
                    path: "/v1/auth/login".into(),
                    token: String::new(),
                    body: Some(login_body.clone()),
                },
            ))
        })
        .await;
    vec![
        row("GET /health (baseline)", "health", health),
        row("GET /v1/me", "me", me),
        row("POST /v1/auth/login (argon2id, 4 conns)", "login", login),
    ]
}

/// Phase 2: submissions into one cluster at 16 and 64 connections; a row each, and the
/// object's own rate (submissions/s while busy, from Server-Timing) at each.
async fn admissions(
    bench: &Arc<Bench>,
    config: &Config,
    world: &World,
    rows: &mut Vec<Row>,
) -> Vec<(usize, f64)> {
    let mut admissions = Vec::new();
    for conns in [16usize, 64] {
        {
            let mut book = bench.book.lock().expect("book");
            book.busy_seconds = 0.0;
            book.timed = 0;
        }
        let cl = world.clusters.clone();
        let run = bench
            .drive(conns, config.seconds, move |b| {
                Some((cl[0].id.clone(), b.submission(&cl[0])))
            })
            .await;
        let book = bench.book.lock().expect("book");
        let capacity = if book.busy_seconds > 0.0 {
            book.timed as f64 / book.busy_seconds
        } else {
            f64::NAN
        };
        admissions.push((conns, capacity));
        drop(book);
        rows.push(row(
            &format!("POST deployments, one cluster, {conns} conns"),
            if conns == 16 { "submit16" } else { "submit64" },
            run,
        ));
    }
    admissions
}

/// What the backlog phase measured.
struct Backlog {
    cluster: String,
    submitted: usize,
    admitted: f64,
    /// Seconds the resize took.
    took: f64,
    rate: f64,
}

/// Phase 2b: the object's admission rate, apart from the HTTP front: a cluster with
/// thousands queued grows, and one batch admits them all. Admitted = running after - before;
/// the time is the whole PATCH as the client sees it (HTTP and object hop included).
async fn backlog(bench: &Arc<Bench>, world: &World) -> Backlog {
    let token = &world.token;
    let bulk_n: usize = env_or("BENCH_BULK", 4000);
    let bulk_cluster = bench
        .json(
            Method::POST,
            &format!("/v1/orgs/{}/clusters", world.orgs[0]),
            token,
            Some(json!({"name": "bulk", "capacity": {"cpu_millis": 1000, "memory_mib": 1 << 30, "gpus": 0}})),
        )
        .await["id"]
        .as_str()
        .expect("cluster")
        .to_string();
    let submitted = futures::stream::iter(0..bulk_n)
        .map(|i| {
            let (bench, path, token, cluster) = (
                bench.clone(),
                format!("/v1/clusters/{bulk_cluster}/deployments"),
                token.clone(),
                bulk_cluster.clone(),
            );
            async move {
                let call = Call {
                    route: "bulk",
                    method: Method::POST,
                    path,
                    token,
                    body: Some(
                        json!({"name": format!("bulk-{i}"), "image": "ghcr.io/acme/job:1",
                        "resources": {"cpu_millis": 100, "memory_mib": 1, "gpus": 0}}),
                    ),
                };
                let (status, _, body, _) = bench.send(&call).await;
                if status == Some(StatusCode::CREATED) {
                    let id = body
                        .and_then(|b| b["id"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    bench
                        .book
                        .lock()
                        .expect("book")
                        .acknowledged
                        .entry(cluster)
                        .or_default()
                        .insert(id);
                    1
                } else {
                    0
                }
            }
        })
        .buffer_unordered(64)
        .fold(0usize, |a, b| async move { a + b })
        .await;
    let running = |v: &Value| v["usage"]["running"].as_i64().unwrap_or(0);
    let cluster_path = format!("/v1/clusters/{bulk_cluster}");
    let before = running(&bench.json(Method::GET, &cluster_path, token, None).await);
    let t = Instant::now();
    // The PATCH answers with the cluster's usage after its batch: no second read.
    let resized = bench
        .json(
            Method::PATCH,
            &cluster_path,
            token,
            Some(json!({"capacity": {"cpu_millis": 1000 + 100 * bulk_n as i64, "memory_mib": 1 << 30, "gpus": 0}})),
        )
        .await;
    let took = t.elapsed().as_secs_f64();
    let after = running(&resized);
    let admitted = (after - before).max(0) as f64;
    Backlog {
        cluster: bulk_cluster,
        submitted,
        admitted,
        took,
        rate: admitted / took,
    }
}

/// Phase 3: mixed traffic over every cluster; one Stats per route.
async fn mixed(
    bench: &Arc<Bench>,
    config: &Config,
    world: &World,
) -> (f64, BTreeMap<&'static str, Stats>) {
    let cl = world.clusters.clone();
    bench
        .drive(config.connections, config.seconds * 2.0, move |b| {
            let c = &cl[(b.random() % cl.len() as u64) as usize];
            let token = c.deployers[0].clone();
            let deployment_call =
                |route: &'static str, id: String, verb: &str, body: Option<Value>| Call {
                    route,
                    method: Method::POST,
                    path: format!("/v1/deployments/{id}/{verb}"),
                    token: token.clone(),
                    body,
                };
            let call = match b.random() % 100 {
                0..=44 => b.submission(c),
                45..=54 => deployment_call("POST stop", b.take(&c.id, true)?, "stop", None),
                55..=64 => deployment_call(
                    "POST finish",
                    b.take(&c.id, true)?,
                    "finish",
                    Some(json!({"outcome": "succeeded"})),
                ),
                65..=69 => deployment_call("POST cancel", b.take(&c.id, false)?, "cancel", None),
                70..=74 => Call {
                    body: Some(json!({"priority": b.random() % 1001})),
                    ..Call::get(
                        "PATCH priority",
                        format!("/v1/deployments/{}", b.peek(&c.id, false)?),
                        token,
                    )
                    .with_method(Method::PATCH)
                },
                75..=81 => Call::get("GET cluster", format!("/v1/clusters/{}", c.id), token),
                82..=87 => Call::get("GET queue", format!("/v1/clusters/{}/queue", c.id), token),
                88..=93 => Call::get(
                    "GET running",
                    format!("/v1/clusters/{}/deployments?status=running", c.id),
                    token,
                ),
                _ => Call::get(
                    "GET deployment",
                    format!("/v1/deployments/{}", b.peek(&c.id, true)?),
                    token,
                ),
            };
            Some((c.id.clone(), call))
        })
        .await
}

/// Phase 4: each read endpoint alone, on the busiest cluster.
async fn reads(bench: &Arc<Bench>, config: &Config, world: &World) -> Vec<Row> {
    let busy = world.clusters[0].id.clone();
    let one = bench
        .book
        .lock()
        .expect("book")
        .acknowledged
        .get(&busy)
        .and_then(|s| s.iter().next().cloned())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for (name, key, path) in [
        (
            "GET /v1/clusters/{id} (usage)",
            "cluster",
            format!("/v1/clusters/{busy}"),
        ),
        (
            "GET …/queue (first 50)",
            "queue",
            format!("/v1/clusters/{busy}/queue"),
        ),
        (
            "GET …/deployments?status=running",
            "running",
            format!("/v1/clusters/{busy}/deployments?status=running"),
        ),
        (
            "GET /v1/deployments/{id} (with events)",
            "deployment",
            format!("/v1/deployments/{one}"),
        ),
    ] {
        let run = bench
            .drive(
                config.connections,
                config.seconds,
                get(key, path, world.token.clone()),
            )
            .await;
        rows.push(row(name, key, run));
    }
    rows
}

/// Prints the report (and writes BENCH_RESULTS); answers the run's count of 5xx answers.
fn report(
    config: &Config,
    world: &World,
    mut rows: Vec<Row>,
    (mixed_secs, mixed): (f64, BTreeMap<&'static str, Stats>),
    backlog: &Backlog,
    admissions: &[(usize, f64)],
) -> usize {
    let connections = config.connections;
    let health = rows[0].rps();
    println!(
        "\n{:<44} {:>9} {:>8} {:>8} {:>7} {:>6} {:>8}",
        "route", "req/s", "p50 ms", "p99 ms", "errors", "5xx", "vs base"
    );
    let mut results = String::new();
    for row in rows.iter_mut() {
        let rps = row.rps();
        println!(
            "{:<44} {:>9.1} {:>8.1} {:>8.1} {:>7} {:>6} {:>7.0}%",
            row.name,
            rps,
            row.stats.pct(0.5),
            row.stats.pct(0.99),
            row.stats.failed,
            row.stats.server_errors,
            100.0 * rps / health
        );
        results.push_str(&format!("{} {rps:.1}\n", row.key));
    }
    println!("\nmixed traffic over {} clusters, {connections} connections, {mixed_secs:.0} s (409 = lost a race, expected):", world.clusters.len());
    println!(
        "{:<44} {:>9} {:>8} {:>8} {:>7} {:>6} {:>6}",
        "route", "req/s", "p50 ms", "p99 ms", "errors", "5xx", "409"
    );
    let mut mixed_total = 0.0;
    let mut server_errors: usize = rows.iter().map(|r| r.stats.server_errors).sum();
    for (route, mut s) in mixed {
        let rps = (s.ok + s.conflicts) as f64 / mixed_secs;
        mixed_total += rps;
        server_errors += s.server_errors;
        println!(
            "{:<44} {:>9.1} {:>8.1} {:>8.1} {:>7} {:>6} {:>6}",
            route,
            rps,
            s.pct(0.5),
            s.pct(0.99),
            s.failed,
            s.server_errors,
            s.conflicts
        );
    }
    println!("{:<44} {:>9.1}", "all routes", mixed_total);
    results.push_str(&format!("mixed {mixed_total:.1}\n"));
    println!();
    let Backlog {
        submitted,
        admitted: bulk_admitted,
        took,
        rate: bulk_rate,
        ..
    } = backlog;
    println!(
        "one cluster's object admitting a backlog: {bulk_admitted:.0} of {submitted} queued admitted by one resize in {:.0} ms = {bulk_rate:.0} admissions/s",
        took * 1000.0
    );
    results.push_str(&format!("bulk {bulk_rate:.1}\n"));
    for (conns, capacity) in admissions {
        println!("one cluster's object at {conns} connections: {capacity:.0} submissions/s while busy (Σ batch time ÷ batch size, from Server-Timing)");
        results.push_str(&format!("object{conns} {capacity:.1}\n"));
    }
    if let Ok(path) = std::env::var("BENCH_RESULTS") {
        std::fs::write(path, results).expect("write the results file");
    }
    server_errors
}

/// The invariants, through the API, on every cluster including the backlog's: allocated ≤
/// capacity, allocated = Σ running, every acknowledged deployment stored; and no 5xx.
async fn check_invariants(bench: &Bench, world: &World, bulk_cluster: &str, server_errors: usize) {
    let mut checked: Vec<&Cluster> = world.clusters.iter().collect();
    let bulk = Cluster {
        id: bulk_cluster.to_string(),
        deployers: vec![world.token.clone()],
    };
    checked.push(&bulk);
    let acknowledged_by_cluster =
        std::mem::take(&mut bench.book.lock().expect("book").acknowledged);
    let mut acknowledged = 0;
    for c in checked.iter() {
        let detail = bench
            .json(
                Method::GET,
                &format!("/v1/clusters/{}", c.id),
                &c.deployers[0],
                None,
            )
            .await;
        let u = &detail["usage"];
        let mut stored = HashSet::new();
        let mut running_sum = [0i64; 3];
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cur) => format!("/v1/clusters/{}/deployments?limit=200&cursor={cur}", c.id),
                None => format!("/v1/clusters/{}/deployments?limit=200", c.id),
            };
            let page = bench.json(Method::GET, &path, &c.deployers[0], None).await;
            for d in page["items"].as_array().into_iter().flatten() {
                stored.insert(d["id"].as_str().unwrap_or_default().to_string());
                if d["status"] == "running" {
                    for (i, k) in ["cpu_millis", "memory_mib", "gpus"].iter().enumerate() {
                        running_sum[i] += d["resources"][k].as_i64().unwrap_or(0);
                    }
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        for (i, k) in ["cpu_millis", "memory_mib", "gpus"].iter().enumerate() {
            let allocated = u["allocated"][k].as_i64().unwrap_or(-1);
            assert!(
                allocated <= u["capacity"][k].as_i64().unwrap_or(0),
                "cluster {} overcommitted: {u}",
                c.id
            );
            assert_eq!(
                allocated, running_sum[i],
                "cluster {}: allocated {k} ≠ sum over running: {u}",
                c.id
            );
        }
        let acked = acknowledged_by_cluster
            .get(&c.id)
            .cloned()
            .unwrap_or_default();
        let missing = acked.difference(&stored).count();
        assert_eq!(
            missing, 0,
            "cluster {}: {missing} acknowledged deployments are not stored",
            c.id
        );
        acknowledged += acked.len();
    }
    println!(
        "invariants hold on all {} clusters: allocated ≤ capacity, allocated = Σ running, all {acknowledged} acknowledged deployments stored; {server_errors} 5xx",
        checked.len()
    );
    assert_eq!(server_errors, 0, "5xx answers during the run");
}
