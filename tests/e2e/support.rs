//! The shared client of `tests/common` over HTTP, to the running Worker.

use axum::http::{HeaderMap, Request, StatusCode};
use berth::auth::access::TokenKeys;

pub use crate::common::{request, unique_email, Reply, TestClient, Transport};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: end-to-end tests need the running Worker that `make test` starts"
        )
    })
}

/// The HTTP transport: reqwest to the Worker, from a client address of the test's own.
pub struct Http {
    pub base: String,
    http: reqwest::Client,
    /// A client address of this test's own, so throttling in one test never touches another.
    pub ip: String,
}

impl Transport for Http {
    async fn send(&self, req: Request<Vec<u8>>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let (parts, body) = req.into_parts();
        let res = self
            .http
            .request(parts.method, format!("{}{}", self.base, parts.uri))
            .headers(parts.headers)
            .header("cf-connecting-ip", &self.ip)
            .body(body)
            .send()
            .await
            .expect("the Worker answers");
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.bytes().await.expect("body");
        (status, headers, bytes.to_vec())
    }
}

/// A client of the running Worker.
pub type Client = TestClient<Http>;

impl Client {
    pub fn new() -> Self {
        let n = uuid::Uuid::new_v4().as_bytes()[..3].to_vec();
        TestClient::over(Http {
            base: env("BERTH_E2E_URL"),
            http: reqwest::Client::new(),
            ip: format!("10.{}.{}.{}", n[0], n[1], n[2]),
        })
    }

    /// The keys the Worker signs with (the test run generated them) and verifies.
    pub fn keys(&self) -> TokenKeys {
        TokenKeys::from_config(
            &env("BERTH_E2E_SIGNING_KEY"),
            None,
            "https://berth.dev",
            "berth-api",
        )
        .expect("signing key")
    }
}

/// A direct connection to the Worker's database, to arrange or inspect what the API cannot.
pub async fn database() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&env("BERTH_E2E_DATABASE_URL"), tokio_postgres::NoTls)
            .await
            .expect("connect to the e2e database");
    tokio::spawn(conn);
    client
}

/// Restarts the Worker under test (`BERTH_E2E_RESTART`, which `make test` sets) and waits
/// until it answers again; only tests of the restart group, which run alone, may call it.
pub async fn restart_server() {
    restart_server_with(&[]).await;
}

/// The same, with `vars` in the restart's environment (`E2E_DATABASE_URL`,
/// `BERTH_E2E_RATE_LIMIT`: what `scripts/e2e-server.sh` reads). Awaited, not blocking: the
/// clients' pooled connections to the old server must see it go meanwhile.
pub async fn restart_server_with(vars: &[(&str, &str)]) {
    let ok = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(restart_command())
        .envs(vars.iter().copied())
        .status()
        .await
        .expect("restart");
    assert!(ok.success(), "the server restarted");
}

fn restart_command() -> String {
    std::env::var("BERTH_E2E_RESTART").expect("BERTH_E2E_RESTART (set by make test)")
}

/// Restarts the Worker as `make test` started it when dropped, however the test ends.
pub struct RestartWhenDone;

impl Drop for RestartWhenDone {
    fn drop(&mut self) {
        let ok = std::process::Command::new("bash")
            .arg("-c")
            .arg(restart_command())
            .status()
            .expect("restart");
        assert!(ok.success(), "the server restarted");
    }
}
