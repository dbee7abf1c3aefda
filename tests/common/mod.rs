//! The one test client of both tiers: the integration tests send its requests to the app
//! in-process (tower's `oneshot`), the end-to-end tests to the running Worker (reqwest). A
//! [`Transport`] carries a request; [`TestClient`] is the API on top of it, the same in both
//! tiers: raw requests, then a helper per step a caller takes (register, log in, create an
//! organization, invite, join, mint an API key, create a cluster, deploy).
//!
//! Each tier uses part of it, so what the other tier alone uses is dead code there.
#![allow(dead_code)]

use std::future::Future;
use std::ops::Deref;

use axum::http::{HeaderMap, Method, Request, StatusCode};
use berth::domain::policy::Role;
use serde_json::{json, Value};

/// The password every test user has.
pub const PASSWORD: &str = "correct horse battery";

/// An answer: its status, headers and body (JSON, or the text when it is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `retry-after` header of a throttled answer, in seconds.
    pub fn retry_after(&self) -> u64 {
        self.headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds")
    }
}

/// Carries one request to Berth and brings back its status, headers and body bytes.
pub trait Transport {
    fn send(&self, req: Request<Vec<u8>>)
        -> impl Future<Output = (StatusCode, HeaderMap, Vec<u8>)>;
}

/// The API over a transport. It dereferences to the transport, so a tier's own parts (the
/// in-process platform and clock, the Worker's address) stay at hand.
pub struct TestClient<T> {
    transport: T,
}

impl<T> Deref for TestClient<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.transport
    }
}

/// A request as the client sends it: the bearer token and the content type when given.
pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Request<Vec<u8>> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(body).expect("a valid request")
}

/// A fresh address, so that tests never share a user (or its throttle).
/// The kinds of a deployment's events (`GET /v1/deployments/{id}`), in order.
pub fn kinds(d: &Value) -> Vec<String> {
    d["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_string())
        .collect()
}

pub fn unique_email() -> String {
    format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple())
}

impl<T: Transport> TestClient<T> {
    pub fn over(transport: T) -> Self {
        Self { transport }
    }

    /// Sends `req` and checks what every answer owes: never a 5xx but 503, and every error a
    /// problem document.
    pub async fn send(&self, req: Request<Vec<u8>>) -> Reply {
        let (status, headers, bytes) = self.transport.send(req).await;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        assert!(
            status.as_u16() < 500 || status == StatusCode::SERVICE_UNAVAILABLE,
            "no 5xx: {status} {body}"
        );
        if status.is_client_error() || status.is_server_error() {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert_eq!(
                ct, "application/problem+json",
                "errors are problem documents: {status} {body}"
            );
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Any body, with any content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        self.send(request(method, path, token, content_type, body))
            .await
    }

    /// A JSON body (or none), as the anonymous caller (`token: None`), a user (an access
    /// token) or an API key (its secret).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        match body {
            Some(v) => {
                let bytes = v.to_string().into_bytes();
                self.raw(method, path, token, Some("application/json"), bytes)
                    .await
            }
            None => self.raw(method, path, token, None, vec![]).await,
        }
    }

    pub async fn register(&self, email: &str) -> Reply {
        let body = json!({"email": email, "password": PASSWORD, "name": "Test User"});
        self.call(Method::POST, "/v1/auth/register", None, Some(body))
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        let body = json!({"email": email, "password": password});
        self.call(Method::POST, "/v1/auth/login", None, Some(body))
            .await
    }

    /// Exchanges a refresh token for a new pair.
    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        let body = json!({"refresh_token": refresh_token});
        self.call(Method::POST, "/v1/auth/refresh", None, Some(body))
            .await
    }

    /// Registers `email` and logs in: (access token, refresh token).
    pub async fn user_as(&self, email: &str) -> (String, String) {
        let r = self.register(email).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = self.login(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        (
            r.body["access_token"].as_str().expect("access").into(),
            r.body["refresh_token"].as_str().expect("refresh").into(),
        )
    }

    /// Registers a fresh user and logs in: (email, access token, refresh token).
    pub async fn user(&self) -> (String, String, String) {
        let email = unique_email();
        let (access, refresh) = self.user_as(&email).await;
        (email, access, refresh)
    }

    /// `GET /v1/me` of `token`'s user.
    pub async fn me(&self, token: &str) -> Value {
        let r = self.call(Method::GET, "/v1/me", Some(token), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// A new organization of `token`'s user (its admin); answers the organization.
    pub async fn org(&self, token: &str, name: &str) -> Value {
        self.create(token, "/v1/orgs", json!({"name": name})).await
    }

    /// Creates an organization; answers its id.
    pub async fn org_id(&self, token: &str, name: &str) -> String {
        self.org(token, name).await["id"]
            .as_str()
            .expect("an organization id")
            .to_string()
    }

    /// POSTs `body` to `path`, which must answer 201; answers what it created.
    pub async fn create(&self, token: &str, path: &str, body: Value) -> Value {
        let r = self.call(Method::POST, path, Some(token), Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body
    }

    /// A new invite to `org` (`body` as the API takes it); answers it, with its code.
    pub async fn invite(&self, token: &str, org: &str, body: Value) -> Value {
        self.create(token, &format!("/v1/orgs/{org}/invites"), body)
            .await
    }

    pub async fn accept(&self, token: &str, code: &str) -> Reply {
        let body = json!({"code": code});
        self.call(Method::POST, "/v1/invites/accept", Some(token), Some(body))
            .await
    }

    /// `member` joins `org` with `role`, invited by `admin`; answers the member's user id.
    pub async fn join(&self, admin: &str, org: &str, member: &str, role: Role) -> String {
        let invite = self
            .invite(admin, org, json!({"role": role.as_str()}))
            .await;
        let r = self
            .accept(member, invite["code"].as_str().expect("code"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        self.me(member).await["user"]["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// A new API key of `org` with `role`; answers it, with its secret.
    pub async fn api_key(&self, token: &str, org: &str, name: &str, role: Role) -> Value {
        let body = json!({"name": name, "role": role.as_str()});
        self.create(token, &format!("/v1/orgs/{org}/api-keys"), body)
            .await
    }

    /// A new agent token of `cluster`; answers it, with its secret (`token`).
    pub async fn agent_token(&self, admin: &str, cluster: &str, name: &str) -> Value {
        let path = format!("/v1/clusters/{cluster}/agent-tokens");
        self.create(admin, &path, json!({"name": name})).await
    }

    /// A new cluster of `org` (`body` as the API takes it); answers its id.
    pub async fn cluster(&self, token: &str, org: &str, body: Value) -> String {
        let path = format!("/v1/orgs/{org}/clusters");
        self.create(token, &path, body).await["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Submits a deployment (`body` as the API takes it) to `cluster`.
    pub async fn deploy(&self, token: &str, cluster: &str, body: Value) -> Reply {
        let path = format!("/v1/clusters/{cluster}/deployments");
        self.call(Method::POST, &path, Some(token), Some(body))
            .await
    }
}

impl<T: Transport> TestClient<T> {
    /// `org`'s metrics as `token` scrapes them: 200 in Prometheus' text format, which
    /// promtool accepts ([`promtool_check`]); answers the text.
    pub async fn metrics(&self, token: &str, org: &str) -> String {
        let r = self
            .call(
                Method::GET,
                &format!("/v1/orgs/{org}/metrics"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8",
            "the text exposition format 0.0.4"
        );
        let text = r.body.as_str().expect("a text answer").to_string();
        promtool_check(&text);
        text
    }
}

/// Checks a scrape with `promtool check metrics` (from Debian's `prometheus` package, which
/// `scripts/setup.sh` installs): fails when promtool is missing, cannot parse the text or
/// finds anything against Prometheus' naming conventions.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed (apt-get install prometheus; scripts/setup.sh does): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {} {said}\n{text}",
        out.status
    );
}

/// The value of the series `series` (its name and labels exactly as the scrape writes them,
/// `berth_lost_total{cluster_id="…"}`), which must be in the scrape once.
pub fn sample(text: &str, series: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
        .collect();
    assert_eq!(values.len(), 1, "{series} once in\n{text}");
    values[0]
}
