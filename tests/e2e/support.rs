//! A typed HTTP client for the running Worker.

use berth::auth::access::TokenKeys;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: end-to-end tests need the running Worker that `make test` starts"
        )
    })
}

pub struct Client {
    pub base: String,
    http: reqwest::Client,
    /// A client address of this test's own, so throttling in one test never touches another.
    pub ip: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Client {
    pub fn new() -> Self {
        let n = uuid::Uuid::new_v4().as_bytes()[..3].to_vec();
        Self {
            base: env("BERTH_E2E_URL"),
            http: reqwest::Client::new(),
            ip: format!("10.{}.{}.{}", n[0], n[1], n[2]),
        }
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

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header("cf-connecting-ip", &self.ip);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.body(body).send().await.expect("the Worker answers");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        assert!(
            status.as_u16() < 500 || status == StatusCode::SERVICE_UNAVAILABLE,
            "no 5xx: {status} {body}"
        );
        if status.is_client_error() {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert_eq!(ct, "application/problem+json", "{status} {body}");
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
        match body {
            Some(v) => {
                self.raw(
                    method,
                    path,
                    token,
                    Some("application/json"),
                    v.to_string().into_bytes(),
                )
                .await
            }
            None => self.raw(method, path, token, None, vec![]).await,
        }
    }

    pub async fn register(&self, email: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": email, "password": "correct horse battery", "name": "E2E"})),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
    }

    /// Registers a fresh user and logs in: (email, access, refresh).
    pub async fn user(&self) -> (String, String, String) {
        let email = unique_email();
        assert_eq!(self.register(&email).await.status, StatusCode::CREATED);
        let r = self.login(&email, "correct horse battery").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (
            email,
            r.body["access_token"].as_str().expect("access").into(),
            r.body["refresh_token"].as_str().expect("refresh").into(),
        )
    }
}

pub fn unique_email() -> String {
    format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple())
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
