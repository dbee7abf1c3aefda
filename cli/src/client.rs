//! Talking to the server: the bearer token (from `BERTH_TOKEN`, or the stored login refreshed
//! transparently), one retry after a 503 or a spent request budget's 429 as its `retry-after`
//! says, and every failure turned into a [`CliError`] a person can read.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use berth::http::wire::{Paged, Problem, RefreshRequest, TokenPair};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::{self, Config, Session};
use crate::error::CliError;

/// The server `make dev` serves.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8787";
/// An access token this close to its expiry is refreshed before use.
const EXPIRY_MARGIN_SECONDS: i64 = 30;
/// The longest `retry-after` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where the bearer token comes from.
#[derive(Debug)]
enum Auth {
    /// `BERTH_TOKEN`: an API key or an access token, used as it is.
    Fixed(String),
    /// The login in the config file.
    Stored,
}

/// A successful answer's JSON body (`Null` for 204; a `text/plain` one as a string).
#[derive(Debug)]
pub struct Reply {
    pub body: Value,
}

impl Reply {
    /// The body as one of the API's answer types; a mismatch means the server and this CLI
    /// disagree about the API.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, CliError> {
        // Read in place (a list's every page is parsed, and its raw items kept beside).
        T::deserialize(&self.body).map_err(|e| {
            CliError::Other(format!(
                "the server's answer is not what this berth expects ({e}): is it a different version?"
            ))
        })
    }
}

/// The server: `server` (`--server` / `BERTH_URL`), else the config file's at
/// `config_path`, else [`DEFAULT_SERVER`]; an http:// or https:// URL without a query, and
/// without its trailing `/`.
pub fn server_url(server: Option<String>, config_path: Option<&Path>) -> Result<String, CliError> {
    // A broken file is reported by the commands that need its login; `login` replaces it.
    let stored = config_path.and_then(|p| config::load(p).ok().and_then(|c| c.server));
    let (server, from) = match server.filter(|s| !s.is_empty()) {
        Some(s) => (s, "--server (or BERTH_URL)"),
        None => match stored {
            Some(s) => (s, "the server in the config file"),
            None => (DEFAULT_SERVER.to_string(), "the default server"),
        },
    };
    let url = reqwest::Url::parse(&server)
        .map_err(|e| CliError::Usage(format!("{from} '{server}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!(
            "{from} '{server}' must be an http:// or https:// URL"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Usage(format!(
            "{from} '{server}' must not have a query or a fragment"
        )));
    }
    Ok(server.trim_end_matches('/').to_string())
}

pub struct Client {
    http: reqwest::Client,
    pub server: String,
    auth: Auth,
    pub config_path: PathBuf,
    /// The access token in use and when it expires (stored logins).
    access: Mutex<Option<(String, DateTime<Utc>)>>,
}

impl Client {
    /// `server` from `--server` / `BERTH_URL`, else the config file's, else [`DEFAULT_SERVER`].
    pub fn new(server: Option<String>, config_path: PathBuf) -> Result<Self, CliError> {
        let server = server_url(server, Some(&config_path))?;
        let auth = match std::env::var("BERTH_TOKEN") {
            Ok(t) if !t.trim().is_empty() => {
                let t = t.trim().to_string();
                if !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(CliError::Usage(
                        "BERTH_TOKEN holds characters a token never has (spaces or control \
                         characters)"
                            .into(),
                    ));
                }
                Auth::Fixed(t)
            }
            _ => Auth::Stored,
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Other(format!("cannot start an HTTP client: {e}")))?;
        Ok(Self {
            http,
            server,
            auth,
            config_path,
            access: Mutex::new(None),
        })
    }

    /// True when `BERTH_TOKEN` overrides the stored login.
    pub fn uses_env_token(&self) -> bool {
        matches!(self.auth, Auth::Fixed(_))
    }

    pub async fn get(&self, path: &str) -> Result<Reply, CliError> {
        self.send(Method::GET, path, None::<&()>, None).await
    }

    pub async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Reply, CliError> {
        self.send(Method::POST, path, Some(body), None).await
    }

    pub async fn patch<B: Serialize>(&self, path: &str, body: &B) -> Result<Reply, CliError> {
        self.send(Method::PATCH, path, Some(body), None).await
    }

    pub async fn delete(&self, path: &str) -> Result<Reply, CliError> {
        self.send(Method::DELETE, path, None::<&()>, None).await
    }

    /// Every item of a paginated list, following `next_cursor`: the typed items and the
    /// API's own JSON for each.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(Vec<T>, Vec<Value>), CliError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut cursor: Option<String> = None;
        let (mut typed, mut raw) = (Vec::new(), Vec::new());
        loop {
            let page_path = match &cursor {
                None => format!("{path}{sep}limit=200"),
                Some(c) => format!("{path}{sep}limit=200&cursor={c}"),
            };
            let reply = self.get(&page_path).await?;
            let page: Paged<T> = reply.parse()?;
            typed.extend(page.items);
            if let Some(items) = reply.body.get("items").and_then(Value::as_array) {
                raw.extend(items.iter().cloned());
            }
            match page.next_cursor {
                Some(c) if cursor.as_deref() == Some(c.as_str()) => {
                    return Err(CliError::Other(
                        "the server answered the same page twice: is it a Berth server?".into(),
                    ))
                }
                Some(c) => cursor = Some(c),
                None => return Ok((typed, raw)),
            }
        }
    }

    /// One request with the caller's token; a stored login whose access token the server
    /// refuses is refreshed and the request sent again, once.
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<Reply, CliError> {
        let token = self.bearer(None).await?;
        let (status, reply) = self
            .exchange(&method, path, body, idempotency_key, Some(&token))
            .await?;
        if status == StatusCode::UNAUTHORIZED {
            if let Auth::Stored = self.auth {
                let fresh = self.bearer(Some(&token)).await?;
                let (status, reply) = self
                    .exchange(&method, path, body, idempotency_key, Some(&fresh))
                    .await?;
                return self.finish(status, reply, true);
            }
        }
        self.finish(status, reply, true)
    }

    /// Opens an event stream (`GET path`, `Accept: text/event-stream`, resuming after
    /// `last_event_id`): the answer, whose body is read as it comes. No overall timeout, but
    /// a read timeout longer than the server's heartbeats. A stored login whose access token
    /// is refused is refreshed and the stream opened again, once; a refusal is the problem.
    pub async fn stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, CliError> {
        let streaming = reqwest::Client::builder()
            .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(45))
            .build()
            .map_err(|e| CliError::Other(format!("cannot start an HTTP client: {e}")))?;
        let open = |token: String| {
            let mut req = streaming
                .get(format!("{}{path}", self.server))
                .bearer_auth(token)
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(id) = last_event_id {
                req = req.header("last-event-id", id);
            }
            req.send()
        };
        let token = self.bearer(None).await?;
        let mut resp = open(token.clone()).await.map_err(|e| self.transport(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED && matches!(self.auth, Auth::Stored) {
            let fresh = self.bearer(Some(&token)).await?;
            resp = open(fresh).await.map_err(|e| self.transport(e))?;
        }
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.json().await.unwrap_or(Value::Null);
        // Not a success, so `finish` answers its problem.
        Err(self
            .finish(status, body, true)
            .err()
            .unwrap_or_else(|| CliError::Other(format!("the server answered {status}"))))
    }

    /// A GET with `token` rather than the caller's (login checks the login it just made).
    pub async fn get_as(&self, path: &str, token: &str) -> Result<Reply, CliError> {
        let (status, reply) = self
            .exchange(&Method::GET, path, None::<&()>, None, Some(token))
            .await?;
        self.finish(status, reply, false)
    }

    /// A request without a token (register, login, refresh).
    pub async fn send_anonymous<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply, CliError> {
        let (status, reply) = self
            .exchange(&Method::POST, path, Some(body), None, None)
            .await?;
        self.finish(status, reply, false)
    }

    /// The answer, or its problem as an error. A 401 to a request that carried a token means
    /// that token is no good; to one without (a wrong password), it is the problem itself.
    fn finish(
        &self,
        status: StatusCode,
        body: Value,
        authenticated: bool,
    ) -> Result<Reply, CliError> {
        if status.is_success() {
            return Ok(Reply { body });
        }
        let problem = serde_json::from_value::<Problem>(body).unwrap_or_else(|_| Problem {
            kind: "about:blank".into(),
            title: format!(
                "the server answered {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string(),
            status: status.as_u16(),
            detail: None,
            errors: None,
        });
        if status == StatusCode::UNAUTHORIZED && authenticated {
            return Err(match self.auth {
                Auth::Fixed(_) => CliError::Other(format!(
                    "the token in BERTH_TOKEN was refused: {}",
                    problem.detail.as_deref().unwrap_or(&problem.title)
                )),
                Auth::Stored => CliError::Login("your login has expired".into()),
            });
        }
        Err(CliError::Api {
            problem: Box::new(problem),
            flags: &[],
        })
    }

    /// Sends once, and once more after a 503's or a 429's `retry-after` (at most 30 s).
    async fn exchange<B: Serialize>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
        token: Option<&str>,
    ) -> Result<(StatusCode, Value), CliError> {
        let mut retried = false;
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.server));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(k) = idempotency_key {
                req = req.header("idempotency-key", k);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| self.transport(e))?;
            let status = resp.status();
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/plain"));
            let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
            // Sent again only when a second copy cannot do anything twice: reads, the
            // idempotent PATCH and DELETE, and a submission with its Idempotency-Key.
            let safe = *method != Method::POST || idempotency_key.is_some();
            // A 429 did nothing, whatever the method: sent again when its wait is short (the
            // request budget refills in seconds; a throttled login waits minutes).
            let refused = status == StatusCode::TOO_MANY_REQUESTS
                && wait.is_some_and(|w| w <= MAX_RETRY_AFTER);
            if !retried && (refused || status == StatusCode::SERVICE_UNAVAILABLE && safe) {
                retried = true;
                tokio::time::sleep(wait.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER))
                    .await;
                continue;
            }
            let value = if bytes.is_empty() {
                Value::Null
            } else if status.is_success() && text {
                // The metrics: text, kept as a string.
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            return Ok((status, value));
        }
    }

    fn transport(&self, e: reqwest::Error) -> CliError {
        if e.is_builder() {
            return CliError::Usage(format!(
                "the request cannot be sent as given: {}",
                e.without_url()
            ));
        }
        let reason = if e.is_timeout() {
            "it did not answer in time".to_string()
        } else if e.is_connect() {
            // The innermost cause is the useful part ("Connection refused (os error 111)").
            let mut source: &dyn std::error::Error = &e;
            while let Some(s) = source.source() {
                source = s;
            }
            source.to_string()
        } else {
            e.without_url().to_string()
        };
        CliError::Unreachable {
            server: self.server.clone(),
            reason,
        }
    }

    /// The bearer token to send. `stale` is a token the server just refused: it is not
    /// offered again.
    async fn bearer(&self, stale: Option<&str>) -> Result<String, CliError> {
        if let Auth::Fixed(t) = &self.auth {
            return Ok(t.clone());
        }
        let usable = |t: &str, at: DateTime<Utc>| {
            Some(t) != stale && at > Utc::now() + chrono::Duration::seconds(EXPIRY_MARGIN_SECONDS)
        };
        if let Some((t, at)) = self.cached() {
            if usable(&t, at) {
                return Ok(t);
            }
        }
        let session = self.session(&config::load(&self.config_path)?)?;
        if usable(&session.access_token, session.access_expires_at) {
            return Ok(self.keep(session.access_token, session.access_expires_at));
        }
        // Refresh under the lock, reading the file again inside it: another berth may have
        // refreshed meanwhile, and its refresh token is the only one still good.
        let _lock = config::lock(&self.config_path)?;
        let mut current = config::load(&self.config_path)?;
        let session = self.session(&current)?;
        if usable(&session.access_token, session.access_expires_at) {
            return Ok(self.keep(session.access_token, session.access_expires_at));
        }
        let request = RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        };
        let (status, body) = self
            .exchange(
                &Method::POST,
                "/v1/auth/refresh",
                Some(&request),
                None,
                None,
            )
            .await?;
        if status == StatusCode::UNAUTHORIZED {
            current.session = None;
            config::save(&self.config_path, &current)?;
            return Err(CliError::Login("your login has expired".into()));
        }
        let pair: TokenPair = self.finish(status, body, false)?.parse()?;
        let renewed = Session {
            email: session.email,
            ..session_from(pair)?
        };
        let (token, at) = (renewed.access_token.clone(), renewed.access_expires_at);
        current.session = Some(renewed);
        config::save(&self.config_path, &current)?;
        Ok(self.keep(token, at))
    }

    /// The stored login, if it is for this server.
    fn session(&self, c: &Config) -> Result<Session, CliError> {
        match (&c.session, c.server.as_deref()) {
            (Some(s), Some(server)) if server.trim_end_matches('/') == self.server => Ok(s.clone()),
            (Some(_), Some(other)) => Err(CliError::Login(format!(
                "you are logged in to {other}, not {}",
                self.server
            ))),
            _ => Err(CliError::Login(format!("not logged in to {}", self.server))),
        }
    }

    fn cached(&self) -> Option<(String, DateTime<Utc>)> {
        self.access.lock().ok().and_then(|g| g.clone())
    }

    fn keep(&self, token: String, at: DateTime<Utc>) -> String {
        if let Ok(mut g) = self.access.lock() {
            *g = Some((token.clone(), at));
        }
        token
    }
}

/// A session from a fresh token pair (the e-mail is filled in by the caller).
pub fn session_from(pair: TokenPair) -> Result<Session, CliError> {
    let expires = chrono::Duration::try_seconds(pair.expires_in)
        .filter(|d| *d > chrono::Duration::zero())
        .and_then(|d| Utc::now().checked_add_signed(d))
        .ok_or_else(|| {
            CliError::Other(format!(
                "the server's answer is not what this berth expects (expires_in {})",
                pair.expires_in
            ))
        })?;
    Ok(Session {
        email: String::new(),
        access_expires_at: expires,
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
    })
}
