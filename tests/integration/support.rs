//! Spawns the app in-process against a real PostgreSQL: each test gets its own database,
//! cloned from the migrated template `make test` prepares, and a `Platform` implemented
//! natively (TCP to Postgres, an in-memory throttle book, a clock the test can move).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use berth::auth::access::TokenKeys;
use berth::auth::Caller;
use berth::db::DbError;
use berth::domain::ids::ClusterId;
use berth::domain::throttle::{Key, ThrottleBook};
use berth::engine::{ClusterWriter, Command, Executed, View, Viewed};
use berth::http::{app, ApiError, AppState, Platform};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tower::ServiceExt;

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
}

#[async_trait]
impl Platform for NativePlatform {
    async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
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
    async fn cluster_command(
        &self,
        cluster: ClusterId,
        cmd: Command,
    ) -> Result<Executed, ApiError> {
        Ok(self
            .writer(cluster)
            .run(cluster, cmd, || self.connect(), || self.now())
            .await?)
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
}

impl NativePlatform {
    /// The in-process stand-in for the cluster's Durable Object: one writer per cluster.
    fn writer(&self, cluster: ClusterId) -> Arc<ClusterWriter> {
        self.writers
            .lock()
            .expect("lock")
            .entry(cluster)
            .or_default()
            .clone()
    }
}

pub struct TestApp {
    pub platform: Arc<NativePlatform>,
    pub state: AppState,
    pub db_url: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl TestApp {
    /// A fresh database cloned from the template, and the app on top of it.
    pub async fn spawn() -> Self {
        let (base, template) = pg_base();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (admin, conn) =
            tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("create database {name} template {template}"))
            .await
            .expect("clone the template database");
        Self::on_database(&format!("{base}/{name}"))
    }

    /// The app on an explicit database URL (used to point at an unreachable one).
    pub fn on_database(url: &str) -> Self {
        let platform = Arc::new(NativePlatform {
            url: url.to_string(),
            book: Mutex::new(ThrottleBook::default()),
            skew: Mutex::new(Duration::zero()),
            writers: Mutex::new(HashMap::new()),
        });
        let keys =
            TokenKeys::from_config(&TokenKeys::generate_config(), None, "berth", "berth-api")
                .expect("keys");
        let state = AppState::new(platform.clone(), keys);
        Self {
            platform,
            state,
            db_url: url.to_string(),
        }
    }

    /// Moves the app's clock forward (time is passed in, never slept).
    pub fn advance(&self, by: Duration) {
        *self.platform.skew.lock().expect("lock") += by;
    }

    pub async fn raw(&self, req: Request<Body>) -> Reply {
        let res = app(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if status.is_client_error() || status.is_server_error() {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert_eq!(
                ct, "application/problem+json",
                "errors are problem documents: {body}"
            );
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).expect("request")).await
    }

    pub async fn register(&self, email: &str) -> Reply {
        self.call(Method::POST, "/v1/auth/register", None,
            Some(serde_json::json!({"email": email, "password": "correct horse battery", "name": "Test User"})))
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(serde_json::json!({"email": email, "password": password})),
        )
        .await
    }

    /// Registers and logs in; returns (access token, refresh token).
    pub async fn user(&self, email: &str) -> (String, String) {
        assert_eq!(self.register(email).await.status, StatusCode::CREATED);
        let r = self.login(email, "correct horse battery").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (
            r.body["access_token"].as_str().expect("access").to_string(),
            r.body["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_string(),
        )
    }
}
