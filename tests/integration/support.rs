//! Spawns the app in-process against a real PostgreSQL: each test gets its own database,
//! cloned from the migrated template `make test` prepares, and a `Platform` implemented
//! natively (TCP to Postgres, an in-memory throttle book, a clock the test can move). The
//! requests go through the shared client of `tests/common`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use berth::auth::access::TokenKeys;
use berth::auth::Caller;
use berth::db::DbError;
use berth::domain::ids::{AgentTokenId, ClusterId};
use berth::domain::throttle::{Key, ThrottleBook};
use berth::engine::{ClusterWriter, Command, Executed, View, Viewed};
use berth::http::{app, ApiError, AppState, Platform};
use chrono::{DateTime, Duration, Utc};
use tower::ServiceExt;

pub use crate::common::{request, Reply, TestClient, Transport};

/// The server URL (without database) and the template database, from `make test`.
fn pg_base() -> (String, String) {
    let base = std::env::var("BERTH_TEST_PG").expect(
        "integration tests need PostgreSQL: run `make test` (it starts one and sets BERTH_TEST_PG)",
    );
    let template = std::env::var("BERTH_TEST_TEMPLATE").unwrap_or_else(|_| "berth_template".into());
    (base, template)
}

pub struct NativePlatform {
    url: String,
    book: Mutex<ThrottleBook>,
    skew: Mutex<Duration>,
    writers: Mutex<HashMap<ClusterId, Arc<ClusterWriter>>>,
    /// The structured log lines the app wrote.
    pub logs: Mutex<Vec<String>>,
    /// How many database connections the app and the writers opened.
    pub connections: std::sync::atomic::AtomicUsize,
    /// Whether the wake-ups of other clusters are lost (as a failed object's would be).
    pub wakes_lost: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Platform for NativePlatform {
    async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
    async fn throttle_check(&self, keys: &[Key]) -> Result<Option<u64>, ApiError> {
        Ok(self
            .book
            .lock()
            .expect("lock")
            .retry_after(keys, self.now()))
    }
    async fn throttle_fail(&self, keys: &[Key]) -> Result<(), ApiError> {
        let now = self.now();
        self.book.lock().expect("lock").record_failure(keys, now);
        Ok(())
    }
    async fn throttle_reset(&self, key: &Key) -> Result<(), ApiError> {
        self.book.lock().expect("lock").reset(key);
        Ok(())
    }
    async fn end_watches(&self, _clusters: &[ClusterId], _who: &Caller) -> Result<(), ApiError> {
        Ok(())
    }
    async fn disconnect_agents(
        &self,
        _cluster: ClusterId,
        _token: AgentTokenId,
    ) -> Result<(), ApiError> {
        // No agent connects to the in-process app (the sockets are tested end to end).
        Ok(())
    }
    async fn cluster_command(
        &self,
        cluster: ClusterId,
        cmd: Command,
    ) -> Result<Executed, ApiError> {
        let writer = self.writer(cluster);
        let executed = writer
            .run(cluster, cmd, || self.connect(), || self.now())
            .await;
        for line in writer.take_logs() {
            self.log(&line);
        }
        // As the object does once its batch committed: the other clusters waiting for what
        // it ended are ticked (here before answering, so tests see them settled).
        for other in writer.take_wakes() {
            if self.wakes_lost.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            let _ = Box::pin(self.cluster_command(other, Command::TICK)).await;
        }
        Ok(executed?)
    }
    async fn cluster_view(
        &self,
        cluster: ClusterId,
        view: View,
        by: Caller,
    ) -> Result<Viewed, ApiError> {
        Ok(self
            .writer(cluster)
            .view(cluster, view, &by, || self.connect(), self.now())
            .await?)
    }
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.skew.lock().expect("lock")
    }
    fn log(&self, line: &str) {
        self.logs.lock().expect("lock").push(line.to_string());
    }
}

impl NativePlatform {
    /// The orders for the cluster's agents that its writer's batches decided since last
    /// taken (the object would deliver them to the agents' sockets).
    pub fn orders(&self, cluster: ClusterId) -> Vec<berth::engine::Order> {
        self.writer(cluster).take_orders()
    }

    /// The in-process stand-in for the cluster's Durable Object: one writer per cluster.
    pub fn writer(&self, cluster: ClusterId) -> Arc<ClusterWriter> {
        self.writers
            .lock()
            .expect("lock")
            .entry(cluster)
            .or_insert_with(|| {
                Arc::new(ClusterWriter::with_deadline(Arc::new(|d| {
                    Box::pin(tokio::time::sleep(d))
                })))
            })
            .clone()
    }
}

/// The in-process transport: the app on its platform, and the database it owns.
pub struct InProcess {
    pub platform: Arc<NativePlatform>,
    pub state: AppState,
    pub db_url: String,
    _database: Option<TestDatabase>,
}

impl Transport for InProcess {
    async fn send(&self, req: Request<Vec<u8>>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let res = app(self.state.clone())
            .oneshot(req.map(Body::from))
            .await
            .expect("infallible");
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, headers, bytes.to_vec())
    }
}

/// The app in-process on its own database.
pub type TestApp = TestClient<InProcess>;

impl TestApp {
    /// A fresh database cloned from the template, and the app on top of it.
    pub async fn spawn() -> Self {
        let database = TestDatabase::create().await;
        Self::on(&database.url.clone(), Some(database))
    }

    /// The app on an explicit database URL (used to point at an unreachable one).
    pub fn on_database(url: &str) -> Self {
        Self::on(url, None)
    }

    fn on(url: &str, database: Option<TestDatabase>) -> Self {
        let platform = Arc::new(NativePlatform {
            url: url.to_string(),
            book: Mutex::new(ThrottleBook::default()),
            skew: Mutex::new(Duration::zero()),
            writers: Mutex::new(HashMap::new()),
            logs: Mutex::new(Vec::new()),
            connections: Default::default(),
            wakes_lost: Default::default(),
        });
        let keys =
            TokenKeys::from_config(&TokenKeys::generate_config(), None, "berth", "berth-api")
                .expect("keys");
        let state = AppState::new(platform.clone(), keys);
        TestClient::over(InProcess {
            platform,
            state,
            db_url: url.to_string(),
            _database: database,
        })
    }

    /// Moves the app's clock forward (time is passed in, never slept).
    pub fn advance(&self, by: Duration) {
        *self.platform.skew.lock().expect("lock") += by;
    }
}

/// A database of one test, cloned from the template; dropped when the test ends, passed or
/// failed (`scripts/testdb.sh` drops what a killed run left behind).
struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> Self {
        let (base, template) = pg_base();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin(&base)
            .await
            .batch_execute(&format!("create database {name} template {template}"))
            .await
            .expect("clone the template database");
        let url = format!("{base}/{name}");
        Self { name, url }
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a thread of its own (the test's runtime cannot block on it),
    /// closing the app's connections to it; a failure is reported, never a second panic.
    fn drop(&mut self) {
        let (base, _) = pg_base();
        let sql = format!("drop database if exists {} with (force)", self.name);
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async { admin(&base).await.batch_execute(&sql).await })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// A connection to the server's maintenance database.
async fn admin(base: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}
