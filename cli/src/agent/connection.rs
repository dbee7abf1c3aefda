//! The agent's connection to its cluster: `GET /v1/clusters/{id}/agent/connect` upgraded to
//! a WebSocket with the agent token, a `hello` answered by a `welcome`, the exact ping every
//! 15 s, and a new connection after any drop ([`Backoff`]). What cannot get better by trying
//! again ends [`run`] with an error: the token refused (401, or the server closing with
//! "agent token revoked") or the cluster not the token's (404).
//!
//! What the server sends is read into an [`Incoming`] and handled in [`Connection::handle`]:
//! its orders (`run`, `stop`, `forget`) go to [`Orders`], which carries them out on the
//! [`Driver`] without holding up the connection, and whose reports (`started`, `exited`) are
//! sent as they come. The exits not yet acknowledged outlive a connection: the next hello
//! lists them and they are reported again after its welcome.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use berth::domain::agent::protocol::{self, ObjectMessage, PING, POLICY_VIOLATION};
use berth::domain::ids::AgentId;
use berth::domain::resources::Resources;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{interval_at, sleep, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::backoff::Backoff;
use super::driver::{DeploymentId, Driver, RunSpec};
use super::orders::{self, Orders};

/// How long a stop lets a deployment end on SIGTERM (the protocol's stop grace).
const STOP_GRACE: Duration = Duration::from_secs(protocol::STOP_GRACE_SECONDS as u64);
/// Margin before the server's grace ends, on top of [`STOP_GRACE`].
const STOP_MARGIN: Duration = Duration::from_secs(2);

/// How often the agent pings.
pub const PING_EVERY: Duration = Duration::from_secs(protocol::PING_INTERVAL_SECONDS);
/// Pings in a row without a pong after which the connection counts as dead (45 s).
pub const MISSED_PONGS: u32 = protocol::MISSED_PINGS;
/// The longest wait for the upgrade (TCP, TLS and the HTTP answer).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest wait for the `welcome` after the `hello`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for the server's answer to our close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The reason of the server's 1008 when the agent's token is revoked.
pub const REVOKED_REASON: &str = "agent token revoked";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Who the agent is and where it connects.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ws://…/v1/clusters/{id}/agent/connect` (or `wss://`).
    pub url: String,
    /// The agent token (`bat_…`).
    pub token: String,
    /// The agent's name in its hello (the host name by default).
    pub name: String,
    /// What it offers.
    pub capacity: Resources,
    /// The capacity as the log shows it (`2 cpu, 1Gi`).
    pub capacity_text: String,
}

/// One line on stderr, after the time (UTC).
pub fn log(line: impl Display) {
    eprintln!("{} {line}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
}

/// Connects, and connects again after every drop, until `stop` turns true (then the socket
/// is closed with 1000 and this returns `Ok`) or the server refuses the agent for good (the
/// error says why, in one line).
pub async fn run(
    settings: &Settings,
    driver: Arc<dyn Driver>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut orders = Orders::new(driver).await?;
    let result = reconnect(settings, &mut orders, &mut stop).await;
    orders.shutdown().await;
    result
}

async fn reconnect(
    settings: &Settings,
    orders: &mut Orders,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let mut backoff = Backoff::new();
    // Since when the agent has been away from the server (its last welcomed connection
    // ended), and whether it stopped its deployments for it.
    let mut away: Option<(Instant, bool)> = None;
    loop {
        log(format_args!("connecting to {}", settings.url));
        let mut connection = Connection {
            settings,
            orders: &mut *orders,
            welcomed_at: None,
            unanswered: 0,
        };
        let ended = connection.serve(stop).await;
        if let Some(at) = connection.welcomed_at {
            backoff.ended_after(at.elapsed());
            away = Some((Instant::now(), false));
        }
        let reason = match ended {
            Ended::Stopped => {
                log("stopped");
                return Ok(());
            }
            Ended::Fatal(reason) => return Err(reason),
            Ended::Lost(reason) => reason,
        };
        let delay = backoff.next_delay();
        log(format_args!(
            "connection lost: {reason}; retrying in {:.1} s",
            delay.as_secs_f64()
        ));
        // Exits keep being recorded (and logged) meanwhile; the next hello lists them.
        let wait = sleep(delay);
        tokio::pin!(wait);
        // Away for longer than the server's grace, its deployments run elsewhere: they are
        // stopped here first (with the time a stop takes), so that none runs twice.
        let stop_at = away.and_then(|(since, stopped)| {
            let grace = orders.away_grace?;
            (!stopped).then(|| since + grace.saturating_sub(STOP_GRACE + STOP_MARGIN))
        });
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = stop_requested(stop) => {
                    log("stopped");
                    return Ok(());
                }
                _ = tokio::time::sleep_until(stop_at.unwrap_or_else(Instant::now)),
                    if stop_at.is_some() && away.is_some_and(|(_, stopped)| !stopped) =>
                {
                    let n = orders.stop_all(STOP_GRACE).await;
                    log(format_args!(
                        "away from the server too long: stopping the {n} deployment(s) it runs \
                         here (the server gives them to other agents)"
                    ));
                    away = away.map(|(since, _)| (since, true));
                }
                _ = orders.step() => {}
            }
        }
    }
}

/// How one connection ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// It dropped or could not be made: try again.
    Lost(String),
    /// Trying again cannot help: the agent ends with this error.
    Fatal(String),
    /// Ctrl-C or SIGTERM: closed cleanly.
    Stopped,
}

/// What the server sends, as far as this agent understands it.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// The answer to the hello: this connection's agent id.
    Welcome {
        agent_id: AgentId,
        /// How long the server lets the agent stay away before its deployments go elsewhere.
        grace: Option<Duration>,
    },
    /// The answer to a ping.
    Pong,
    /// Start this deployment (unless it is here already).
    Run(RunSpec),
    /// Stop this deployment: SIGTERM, then SIGKILL after `grace`.
    Stop { id: DeploymentId, grace: Duration },
    /// This deployment's exit is recorded: what is left of it may go.
    Forget(DeploymentId),
    /// A message this agent does not act on: its type, as the log shows it.
    Unknown(String),
}

impl Incoming {
    /// Reads one text frame. The server's message types are the protocol's own
    /// [`ObjectMessage`], so that one it gains must be handled here to compile.
    pub fn parse(text: &str) -> Self {
        match serde_json::from_str::<ObjectMessage>(text) {
            Ok(ObjectMessage::Welcome {
                agent_id,
                grace_seconds,
                ..
            }) => Incoming::Welcome {
                agent_id,
                grace: grace_seconds.map(|s| Duration::from_secs(u64::from(s))),
            },
            Ok(ObjectMessage::Pong) => Incoming::Pong,
            Ok(ObjectMessage::Run { deployment, .. }) => Incoming::Run(deployment),
            Ok(ObjectMessage::Stop {
                deployment_id,
                grace_seconds,
                ..
            }) => Incoming::Stop {
                id: deployment_id,
                grace: Duration::from_secs(u64::from(grace_seconds)),
            },
            Ok(ObjectMessage::Forget { deployment_id, .. }) => Incoming::Forget(deployment_id),
            Err(_) => {
                let kind = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string));
                Incoming::Unknown(match kind {
                    Some(kind) => format!("{:?}", clean(&kind, 40)),
                    None => "a message without a type".to_string(),
                })
            }
        }
    }
}

/// The close frame's meaning: [`REVOKED_REASON`] with 1008 ends the agent; any other close
/// is a drop like another.
fn closed(frame: Option<&CloseFrame>) -> Ended {
    match frame {
        Some(f)
            if u16::from(f.code) == POLICY_VIOLATION && f.reason.starts_with(REVOKED_REASON) =>
        {
            Ended::Fatal(
                "the server closed the connection: the agent token was revoked (create another \
                 with `berth agent-token create`)"
                    .to_string(),
            )
        }
        Some(f) if f.reason.is_empty() => Ended::Lost(format!(
            "the server closed the connection ({})",
            u16::from(f.code)
        )),
        Some(f) => Ended::Lost(format!(
            "the server closed the connection ({} {})",
            u16::from(f.code),
            clean(&f.reason, 123)
        )),
        None => Ended::Lost("the server closed the connection".to_string()),
    }
}

/// A refused upgrade: 401 and 404 end the agent, anything else is tried again.
fn refused(e: WsError, url: &str) -> Ended {
    let WsError::Http(res) = e else {
        return Ended::Lost(clean(&e.to_string(), 300));
    };
    let status = res.status();
    let problem: Option<Value> = res
        .body()
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok());
    let text = |key: &str| {
        problem
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(|s| clean(s, 300))
    };
    // The body arrives only when it came with the headers; the route's 401 and 404 have one
    // meaning each, said here when the server's own words are missing.
    let known = match status.as_u16() {
        401 => "invalid or revoked agent token",
        404 => "no such cluster",
        _ => status.canonical_reason().unwrap_or("no explanation"),
    };
    let title = status.canonical_reason().unwrap_or("refused");
    let said = match (text("title"), text("detail")) {
        (Some(t), Some(d)) if t != d => format!("{t}: {d}"),
        (Some(t), _) => t,
        (None, Some(d)) => d,
        (None, None) if known == title => known.to_string(),
        (None, None) => format!("{title}: {known}"),
    };
    match status.as_u16() {
        401 => Ended::Fatal(format!(
            "the server refused the agent token (401 {said}): pass the token `berth \
             agent-token create` printed, in --token or BERTH_AGENT_TOKEN"
        )),
        404 => Ended::Fatal(format!(
            "the server refused {url} (404 {said}): --cluster must be the id of the cluster \
             the token was created for"
        )),
        code => Ended::Lost(format!("the server answered {code} ({said})")),
    }
}

/// One connection, from the upgrade to its end.
struct Connection<'a> {
    settings: &'a Settings,
    orders: &'a mut Orders,
    /// When the welcome came; `None` before.
    welcomed_at: Option<Instant>,
    /// Pings sent since the last pong.
    unanswered: u32,
}

impl Connection<'_> {
    async fn serve(&mut self, stop: &mut watch::Receiver<bool>) -> Ended {
        let request = match self.request() {
            Ok(r) => r,
            Err(e) => return Ended::Fatal(e),
        };
        let mut ws = tokio::select! {
            r = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)) => match r {
                Err(_) => {
                    return Ended::Lost(format!(
                        "no answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                }
                Ok(Err(e)) => return refused(e, &self.settings.url),
                Ok(Ok((ws, _))) => ws,
            },
            _ = stop_requested(stop) => return Ended::Stopped,
        };
        let ended = self.converse(&mut ws, stop).await;
        if ended == Ended::Stopped {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "agent stopping".into(),
            };
            // The server's answer to the close is awaited briefly; its absence changes
            // nothing (the agent is going away).
            if ws.close(Some(frame)).await.is_ok() {
                let _ = timeout(CLOSE_TIMEOUT, async { while ws.next().await.is_some() {} }).await;
            }
        } else {
            // Sends the answer to a close the server began, if it did.
            let _ = timeout(CLOSE_TIMEOUT, async { while ws.next().await.is_some() {} }).await;
        }
        ended
    }

    fn request(
        &self,
    ) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
        let mut request = self
            .settings
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("cannot connect to {}: {e}", self.settings.url))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.settings.token))
            .map_err(|_| "the agent token holds characters a token never has".to_string())?;
        request.headers_mut().insert("authorization", bearer);
        request.headers_mut().insert(
            "user-agent",
            HeaderValue::from_static(concat!("berth-agent/", env!("CARGO_PKG_VERSION"))),
        );
        Ok(request)
    }

    /// The hello, then frames until the connection ends.
    async fn converse(&mut self, ws: &mut Socket, stop: &mut watch::Receiver<bool>) -> Ended {
        let (running, exited) = match self.orders.hello_lists().await {
            Ok(lists) => lists,
            Err(e) => return Ended::Lost(format!("cannot list this machine's deployments: {e}")),
        };
        let hello = orders::hello(
            &self.settings.name,
            &self.settings.capacity,
            &running,
            &exited,
        );
        if let Err(ended) = send(ws, hello.to_string()).await {
            return ended;
        }
        let welcome_deadline = sleep(WELCOME_TIMEOUT);
        tokio::pin!(welcome_deadline);
        let mut pings = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop_requested(stop) => return Ended::Stopped,
                _ = &mut welcome_deadline, if self.welcomed_at.is_none() => {
                    return Ended::Lost(format!(
                        "no welcome within {} s of the hello",
                        WELCOME_TIMEOUT.as_secs()
                    ));
                }
                _ = pings.tick() => {
                    if self.unanswered >= MISSED_PONGS {
                        return Ended::Lost(format!(
                            "no pong for {} s",
                            PING_EVERY.as_secs() * u64::from(MISSED_PONGS)
                        ));
                    }
                    if let Err(ended) = send(ws, PING.to_string()).await {
                        return ended;
                    }
                    self.unanswered += 1;
                }
                // Reports only once welcomed; until then they wait (the hello says the same).
                report = self.orders.step(), if self.welcomed_at.is_some() => {
                    if let Some(report) = report {
                        if let Err(ended) = send(ws, report.to_text()).await {
                            return ended;
                        }
                    }
                }
                frame = ws.next() => match frame {
                    None => return Ended::Lost("the connection ended".to_string()),
                    Some(Err(e)) => return Ended::Lost(clean(&e.to_string(), 300)),
                    Some(Ok(Message::Text(text))) => {
                        if let Err(ended) = self.handle(ws, Incoming::parse(&text)).await {
                            return ended;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => return closed(frame.as_ref()),
                    Some(Ok(Message::Binary(_))) => {
                        log("ignoring a binary frame (not part of the protocol)");
                    }
                    // WebSocket-level pings are answered by the library itself.
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Acts on one message; `Err` when the connection must end. Orders are handed to
    /// [`Orders`] and return at once.
    async fn handle(&mut self, ws: &mut Socket, incoming: Incoming) -> Result<(), Ended> {
        match incoming {
            Incoming::Welcome { agent_id, grace } => {
                if self.welcomed_at.is_none() {
                    self.welcomed_at = Some(Instant::now());
                    self.orders.away_grace = grace;
                    log(format_args!(
                        "connected as agent {agent_id} ({}, {})",
                        self.settings.name, self.settings.capacity_text
                    ));
                    // The exits the hello listed (and any since), until `forget` comes.
                    for report in self.orders.unacknowledged() {
                        send(ws, report.to_text()).await?;
                    }
                }
            }
            Incoming::Pong => self.unanswered = 0,
            Incoming::Run(spec) => self.orders.run(spec),
            Incoming::Stop { id, grace } => self.orders.stop(id, grace),
            Incoming::Forget(id) => self.orders.forget(id),
            Incoming::Unknown(kind) => {
                log(format_args!(
                    "ignoring {kind}: this agent does not understand it"
                ));
            }
        }
        Ok(())
    }
}

/// Sends one text frame; a failure ends the connection.
async fn send(ws: &mut Socket, text: String) -> Result<(), Ended> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| Ended::Lost(clean(&e.to_string(), 300)))
}

/// Resolves once `stop` is true; never when nobody can set it any more.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Server text made safe for a terminal and a log line: control characters escaped, at
/// most `max` characters.
pub(crate) fn clean(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth::domain::agent::protocol::PONG;
    use serde_json::json;

    #[test]
    fn the_server_s_messages_are_read() {
        let id = AgentId::new();
        let welcome = json!({"v": 1, "type": "welcome", "agent_id": id}).to_string();
        assert_eq!(
            Incoming::parse(&welcome),
            Incoming::Welcome {
                agent_id: id,
                grace: None
            }
        );
        let with_grace =
            json!({"v": 1, "type": "welcome", "agent_id": id, "grace_seconds": 60}).to_string();
        assert_eq!(
            Incoming::parse(&with_grace),
            Incoming::Welcome {
                agent_id: id,
                grace: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(Incoming::parse(PONG), Incoming::Pong);
        // An order that does not read as one is shown by its type, and not acted on.
        assert_eq!(
            Incoming::parse(r#"{"v":1,"type":"run","deployment_id":"x"}"#),
            Incoming::Unknown("\"run\"".into())
        );
        assert_eq!(
            Incoming::parse("not json"),
            Incoming::Unknown("a message without a type".into())
        );
        // A type from the server is shown escaped, never as raw control characters.
        let Incoming::Unknown(odd) = Incoming::parse(r#"{"type":"a\u001b[2Jb"}"#) else {
            panic!("unknown");
        };
        assert!(!odd.chars().any(char::is_control), "{odd}");
    }

    #[test]
    fn the_server_s_orders_are_read() {
        let id = DeploymentId::new();
        let run = json!({"v": 1, "type": "run", "deployment": {
            "deployment_id": id, "image": "busybox:1",
            "resources": {"cpu_millis": 500, "memory_mib": 64, "gpus": 0},
            "command": ["sh", "-c", "exit 3"], "env": {"A": "b"},
        }});
        let Incoming::Run(spec) = Incoming::parse(&run.to_string()) else {
            panic!("a run order");
        };
        assert_eq!(spec.deployment_id, id);
        assert_eq!(spec.image, "busybox:1");
        assert_eq!(spec.resources, Resources::new(500, 64, 0));
        assert_eq!(spec.command.as_deref().map(<[String]>::len), Some(3));
        assert_eq!(spec.env.get("A").map(String::as_str), Some("b"));
        // The protocol's own serialisation reads back the same.
        let order = ObjectMessage::Run {
            v: 1,
            deployment: spec.clone(),
        };
        assert_eq!(Incoming::parse(&order.to_text()), Incoming::Run(spec));

        let stop = json!({"v": 1, "type": "stop", "deployment_id": id, "grace_seconds": 10});
        assert_eq!(
            Incoming::parse(&stop.to_string()),
            Incoming::Stop {
                id,
                grace: Duration::from_secs(10)
            }
        );
        let forget = json!({"v": 1, "type": "forget", "deployment_id": id});
        assert_eq!(Incoming::parse(&forget.to_string()), Incoming::Forget(id));

        // Malformed orders are not acted on, and nothing the server sends panics.
        for bad in [
            json!({"v": 1, "type": "stop", "deployment_id": id}),
            json!({"v": 1, "type": "stop", "deployment_id": id, "grace_seconds": -1}),
            json!({"v": 1, "type": "forget", "deployment_id": "nope"}),
            json!({"v": 1, "type": "run", "deployment": {"deployment_id": id}}),
        ] {
            assert!(
                matches!(Incoming::parse(&bad.to_string()), Incoming::Unknown(_)),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_a_revocation_close_is_final() {
        let frame = |code: u16, reason: &str| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        assert!(matches!(
            closed(Some(&frame(1008, REVOKED_REASON))),
            Ended::Fatal(m) if m.contains("revoked")
        ));
        for other in [
            frame(1008, "not JSON: expected value"),
            frame(1001, "going away"),
            frame(1011, ""),
            frame(1000, REVOKED_REASON),
        ] {
            assert!(matches!(closed(Some(&other)), Ended::Lost(_)), "{other:?}");
        }
        assert!(matches!(closed(None), Ended::Lost(_)));
    }

    #[test]
    fn the_ping_is_the_one_the_runtime_answers() {
        assert_eq!(PING, r#"{"type":"ping"}"#);
        assert_eq!(PING_EVERY * MISSED_PONGS, Duration::from_secs(45));
    }
}
