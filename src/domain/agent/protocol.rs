//! The agent protocol: JSON text frames, each an object with `"v": 1` and a `"type"`.
//!
//! agent → object:
//! - `hello` `{v, type, agent: {name, version}, capacity: {cpu_millis, memory_mib, gpus},
//!   running: [ids], exited: [ids]}`, once, first: what the machine offers, the deployments
//!   it runs now, and those whose exit it has yet to see recorded (`exited` may be absent).
//!   The object then reconciles: it keeps what should run, stops what should not, sends again
//!   a `run` the agent does not have, and counts as lost what the agent no longer has.
//! - `started` `{v, type, deployment_id}`: a `run` order's deployment is running.
//! - `exited` `{v, type, deployment_id, exit_code: int|null, output, abandoned?}`: it ended
//!   (`exit_code` null when it never ran, `output` then says why); `output` is the last lines
//!   it wrote, at most [`OUTPUT_LIMIT`] bytes; `abandoned: true` when the agent stopped it
//!   itself, having been away from the server too long. Sent again after every reconnection
//!   until `forget` comes.
//!
//! object → agent:
//! - `welcome` `{v, type, agent_id, grace_seconds}`, the answer to the hello: the agent's id,
//!   and how long it may stay away before its deployments are lost and run elsewhere (an
//!   agent that cannot reconnect stops them before then, so none runs twice).
//! - `run` `{v, type, deployment: {deployment_id, image, resources, command?, env?}}`: start
//!   it (an order may come twice: a deployment the agent has already is not started again).
//! - `stop` `{v, type, deployment_id, grace_seconds}`: SIGTERM, then SIGKILL after the grace.
//! - `forget` `{v, type, deployment_id}`: its exit is recorded; what is left of it may go.
//!
//! Liveness: the agent sends exactly [`PING`] (`{"type":"ping"}`, these bytes, no `v`) and
//! the runtime answers [`PONG`] itself without waking the object (the hibernation API's
//! auto-response, matched byte for byte). A ping written differently (`{"v":1,
//! "type":"ping"}`, other spacing) reaches the object, which answers the same pong.
//!
//! Anything else — not JSON, not an object, no string `type`, a `v` other than 1, an unknown
//! type, an invalid hello, a second hello — is a [`Violation`]: the object closes that socket
//! with 1008 and a reason, and nothing else changes. A binary frame is closed with 1003.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::ids::AgentId;
use crate::domain::ids::DeploymentId;
use crate::domain::resources::Resources;

/// The protocol version every message carries.
pub const VERSION: u32 = 1;

/// The ping the runtime answers by itself (the auto-response's request, byte for byte).
pub const PING: &str = r#"{"type":"ping"}"#;
/// Its answer.
pub const PONG: &str = r#"{"type":"pong"}"#;

/// How often an agent pings, in seconds.
pub const PING_INTERVAL_SECONDS: u64 = 15;
/// Pings in a row without an answer after which either side counts the connection dead
/// (45 s of silence).
pub const MISSED_PINGS: u32 = 3;

/// Close code: the message broke the protocol.
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code: a frame of a kind the protocol does not use (binary).
pub const UNSUPPORTED_DATA: u16 = 1003;

/// A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455 §5.5: a control frame's
/// payload is 125 bytes, two of them the code); the runtime throws on a longer one.
pub const MAX_REASON_BYTES: usize = 123;

/// Longest agent name or version accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Most deployment ids a hello may list (`running` and `exited` together).
pub const MAX_RUNNING: usize = 10_000;
/// The most output an `exited` report carries, in bytes: the last lines of what the
/// deployment wrote.
pub const OUTPUT_LIMIT: usize = 4096;
/// How long a `stop` lets a deployment end on SIGTERM before SIGKILL.
pub const STOP_GRACE_SECONDS: u32 = 10;

/// The agent's self-description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its name (a host name, say), 1 to 100 characters.
    pub name: String,
    /// Its software version, 1 to 100 characters.
    pub version: String,
}

/// The first message of every connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Hello {
    /// Who it is.
    pub agent: AgentInfo,
    /// What it offers.
    pub capacity: Resources,
    /// The deployments it is running now (after a reconnect, say).
    pub running: Vec<DeploymentId>,
    /// The deployments that ended and whose `exited` report follows the hello.
    #[serde(default)]
    pub exited: Vec<DeploymentId>,
}

/// One deployment to run: a `run` order's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    pub deployment_id: DeploymentId,
    /// An image reference (`registry/name:tag`); the exec driver ignores it.
    pub image: String,
    /// Its limits on the machine.
    pub resources: Resources,
    /// The program and its arguments; the image's own command when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// How a deployment ended: an `exited` report's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub deployment_id: DeploymentId,
    /// The exit status; 128 + n after signal n (as shells and Docker say it). `None` when it
    /// never ran: the image could not be pulled, the command could not be started; `output`
    /// then says why.
    pub exit_code: Option<i32>,
    /// The last lines of its output (stdout and stderr together), at most [`OUTPUT_LIMIT`]
    /// bytes.
    pub output: String,
    /// The agent stopped it itself: away from the server for nearly the grace the welcome
    /// gave, it gave its deployments up before the server gives them to other agents. The
    /// deployment is then lost (requeued), not finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
}

/// A message from an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentMessage {
    /// Its hello.
    Hello(Hello),
    /// A deployment it was told to run is running.
    Started { deployment_id: DeploymentId },
    /// A deployment ended.
    Exited(Exit),
    /// A ping that the auto-response did not catch.
    Ping,
}

/// A message from the object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ObjectMessage {
    /// The answer to a hello.
    Welcome {
        /// [`VERSION`].
        v: u32,
        /// This connection's id.
        agent_id: AgentId,
        /// The cluster's `agent_grace_seconds`: how long the agent may stay away before
        /// what it runs is given to other agents (it stops its deployments before then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_seconds: Option<u32>,
    },
    /// Start a deployment.
    Run { v: u32, deployment: RunSpec },
    /// Stop a deployment: SIGTERM, then SIGKILL after `grace_seconds`.
    Stop {
        v: u32,
        deployment_id: DeploymentId,
        grace_seconds: u32,
    },
    /// The deployment's exit is recorded: what is left of it may be removed.
    Forget { v: u32, deployment_id: DeploymentId },
    /// The answer to a ping (exactly [`PONG`]).
    Pong,
}

impl ObjectMessage {
    /// As the text frame to send.
    pub fn to_text(&self) -> String {
        match self {
            // The very bytes of the auto-response, so that an agent sees one pong.
            Self::Pong => PONG.to_string(),
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

/// Why a socket is closed: its close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// [`POLICY_VIOLATION`] or [`UNSUPPORTED_DATA`].
    pub code: u16,
    /// What was wrong, at most [`MAX_REASON_BYTES`] bytes.
    pub reason: String,
}

impl Violation {
    /// A 1008 with `reason`, cut to fit a close frame.
    pub fn policy(reason: impl Into<String>) -> Self {
        Self::new(POLICY_VIOLATION, reason.into())
    }

    /// The 1003 for a binary frame.
    pub fn binary() -> Self {
        Self::new(
            UNSUPPORTED_DATA,
            "binary frames are not part of the protocol; send JSON text".into(),
        )
    }

    fn new(code: u16, mut reason: String) -> Self {
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }
}

/// Reads one text frame.
pub fn parse(text: &str) -> Result<AgentMessage, Violation> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Violation::policy(format!("not JSON: {e}")))?;
    let Value::Object(object) = &value else {
        return Err(Violation::policy("a message must be a JSON object"));
    };
    let kind = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Violation::policy("a message needs a string \"type\""))?;
    if kind == "ping" {
        return Ok(AgentMessage::Ping);
    }
    match object.get("v") {
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => {
            return Err(Violation::policy(format!(
                "unsupported protocol version {v} (this server speaks 1)"
            )))
        }
        None => return Err(Violation::policy("a message needs \"v\": 1")),
    }
    match kind {
        "hello" => {
            let hello: Hello = serde_json::from_value(value)
                .map_err(|e| Violation::policy(format!("invalid hello: {e}")))?;
            check_hello(&hello)?;
            Ok(AgentMessage::Hello(hello))
        }
        "started" => {
            #[derive(Deserialize)]
            struct Started {
                deployment_id: DeploymentId,
            }
            let s: Started = serde_json::from_value(value)
                .map_err(|e| Violation::policy(format!("invalid started: {e}")))?;
            Ok(AgentMessage::Started {
                deployment_id: s.deployment_id,
            })
        }
        "exited" => {
            let exit: Exit = serde_json::from_value(value)
                .map_err(|e| Violation::policy(format!("invalid exited: {e}")))?;
            if exit.output.len() > OUTPUT_LIMIT {
                return Err(Violation::policy(format!(
                    "invalid exited: output is longer than {OUTPUT_LIMIT} bytes"
                )));
            }
            Ok(AgentMessage::Exited(exit))
        }
        other => Err(Violation::policy(format!(
            "unknown message type {:?}",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

fn check_hello(hello: &Hello) -> Result<(), Violation> {
    for (field, value) in [
        ("agent.name", &hello.agent.name),
        ("agent.version", &hello.agent.version),
    ] {
        let n = value.chars().count();
        if n == 0 || n > MAX_NAME_CHARS || value.chars().any(char::is_control) {
            return Err(Violation::policy(format!(
                "invalid hello: {field} must be 1 to {MAX_NAME_CHARS} printable characters"
            )));
        }
    }
    if !hello.capacity.is_valid() {
        return Err(Violation::policy(
            "invalid hello: capacity must be non-negative and below 2^40 in each dimension",
        ));
    }
    if hello.running.len() + hello.exited.len() > MAX_RUNNING {
        return Err(Violation::policy(format!(
            "invalid hello: running lists more than {MAX_RUNNING} deployments"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hello() -> Value {
        json!({
            "v": 1, "type": "hello",
            "agent": {"name": "gpu-01", "version": "0.1.0"},
            "capacity": {"cpu_millis": 8000, "memory_mib": 32768, "gpus": 2},
            "running": ["0199a4c8-7e2b-7c3d-8f00-000000000001"],
        })
    }

    fn rejected(text: &str) -> Violation {
        parse(text).expect_err(text)
    }

    #[test]
    fn a_hello_parses() {
        let AgentMessage::Hello(h) = parse(&hello().to_string()).expect("valid") else {
            panic!("not a hello");
        };
        assert_eq!(h.agent.name, "gpu-01");
        assert_eq!(h.capacity, Resources::new(8000, 32768, 2));
        assert_eq!(h.running.len(), 1);
    }

    #[test]
    fn unknown_fields_are_ignored_for_later_minor_additions() {
        let mut h = hello();
        h["labels"] = json!({"zone": "a"});
        assert!(matches!(parse(&h.to_string()), Ok(AgentMessage::Hello(_))));
    }

    #[test]
    fn pings_parse_with_or_without_v() {
        assert_eq!(parse(PING), Ok(AgentMessage::Ping));
        assert_eq!(
            parse(r#"{ "v": 1, "type": "ping" }"#),
            Ok(AgentMessage::Ping)
        );
    }

    #[test]
    fn what_is_not_the_protocol_is_a_policy_violation() {
        let mut wrong_v = hello();
        wrong_v["v"] = json!(2);
        let mut no_v = hello();
        no_v.as_object_mut().expect("object").remove("v");
        let mut float_v = hello();
        float_v["v"] = json!(1.5);
        let mut negative = hello();
        negative["capacity"]["gpus"] = json!(-1);
        let mut bad_id = hello();
        bad_id["running"] = json!(["nope"]);
        let mut no_name = hello();
        no_name["agent"]["name"] = json!("");
        let mut missing = hello();
        missing.as_object_mut().expect("object").remove("capacity");
        for (text, needle) in [
            ("garbage".to_string(), "not JSON"),
            ("[1,2]".to_string(), "JSON object"),
            (r#"{"v":1}"#.to_string(), "type"),
            (r#"{"v":1,"type":7}"#.to_string(), "type"),
            (
                r#"{"v":1,"type":"reboot"}"#.to_string(),
                "unknown message type",
            ),
            (wrong_v.to_string(), "version 2"),
            (float_v.to_string(), "version 1.5"),
            (no_v.to_string(), "\"v\": 1"),
            (negative.to_string(), "capacity"),
            (bad_id.to_string(), "invalid hello"),
            (no_name.to_string(), "agent.name"),
            (missing.to_string(), "capacity"),
        ] {
            let v = rejected(&text);
            assert_eq!(v.code, POLICY_VIOLATION, "{text}");
            assert!(v.reason.contains(needle), "{text}: {}", v.reason);
            assert!(v.reason.len() <= MAX_REASON_BYTES);
        }
    }

    #[test]
    fn reports_parse_and_their_output_is_bounded() {
        let id = "0199a4c8-7e2b-7c3d-8f00-000000000001";
        let started = json!({"v": 1, "type": "started", "deployment_id": id}).to_string();
        assert!(matches!(parse(&started), Ok(AgentMessage::Started { .. })));
        let exited = json!({"v": 1, "type": "exited", "deployment_id": id, "exit_code": 3,
            "output": "boom\n"});
        let Ok(AgentMessage::Exited(exit)) = parse(&exited.to_string()) else {
            panic!("an exit");
        };
        assert_eq!((exit.exit_code, exit.output.as_str()), (Some(3), "boom\n"));
        let mut never_ran = exited.clone();
        never_ran["exit_code"] = Value::Null;
        assert!(
            matches!(parse(&never_ran.to_string()), Ok(AgentMessage::Exited(e)) if e.exit_code.is_none())
        );
        let mut long = exited.clone();
        long["output"] = json!("x".repeat(OUTPUT_LIMIT + 1));
        assert!(rejected(&long.to_string()).reason.contains("output"));
        let mut no_id = exited;
        no_id
            .as_object_mut()
            .expect("object")
            .remove("deployment_id");
        assert!(rejected(&no_id.to_string())
            .reason
            .contains("invalid exited"));
        let bad = json!({"v": 1, "type": "started", "deployment_id": 7}).to_string();
        assert!(rejected(&bad).reason.contains("invalid started"));
    }

    #[test]
    fn orders_are_versioned_json() {
        let id = DeploymentId::new();
        let run = ObjectMessage::Run {
            v: VERSION,
            deployment: RunSpec {
                deployment_id: id,
                image: "busybox:1".into(),
                resources: Resources::new(500, 64, 0),
                command: Some(vec!["true".into()]),
                env: BTreeMap::new(),
            },
        };
        let back: Value = serde_json::from_str(&run.to_text()).expect("json");
        assert_eq!(back["type"], "run");
        assert_eq!(back["deployment"]["deployment_id"], id.to_string());
        assert!(back["deployment"].get("env").is_none());
        assert_eq!(
            serde_json::from_value::<ObjectMessage>(back).expect("back"),
            run
        );
        let stop = ObjectMessage::Stop {
            v: VERSION,
            deployment_id: id,
            grace_seconds: STOP_GRACE_SECONDS,
        };
        assert_eq!(
            serde_json::from_str::<Value>(&stop.to_text()).expect("json"),
            json!({"v": 1, "type": "stop", "deployment_id": id.to_string(), "grace_seconds": 10})
        );
    }

    #[test]
    fn a_reason_is_cut_to_a_close_frame_on_a_char_boundary() {
        let v = Violation::policy("é".repeat(100));
        assert!(v.reason.len() <= MAX_REASON_BYTES);
        assert_eq!(v.reason.len(), 122);
        let long_type = json!({"v": 1, "type": "x".repeat(500)}).to_string();
        assert!(rejected(&long_type).reason.len() <= MAX_REASON_BYTES);
        assert_eq!(Violation::binary().code, UNSUPPORTED_DATA);
    }

    #[test]
    fn the_object_s_messages_are_versioned_json() {
        let id = AgentId::new();
        let text = ObjectMessage::Welcome {
            v: 1,
            agent_id: id,
            grace_seconds: Some(60),
        }
        .to_text();
        let back: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            back,
            json!({"v": 1, "type": "welcome", "agent_id": id.to_string(), "grace_seconds": 60})
        );
        assert_eq!(ObjectMessage::Pong.to_text(), PONG);
        assert_eq!(
            serde_json::from_str::<ObjectMessage>(PONG).expect("pong"),
            ObjectMessage::Pong
        );
    }
}
