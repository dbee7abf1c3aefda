//! Agents: the machines that run a cluster's deployments and connect to its object over a
//! WebSocket. `protocol` is the wire (JSON text frames), `Session` what the object keeps
//! per socket (in the socket's attachment, so it survives hibernation).

pub mod protocol;

use super::ids::AgentId;
use super::ids::ClusterId;
use super::ids::DeploymentId;
use super::resources::Resources;
use chrono::{DateTime, Utc};
use protocol::{AgentInfo, AgentMessage, Exit, Hello, ObjectMessage, Violation};
use serde::{Deserialize, Serialize};

/// Who the Worker admitted: what the object needs to know about the credential behind a
/// socket. Sent from the Worker to the object with the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    /// The cluster the agent joins (the object's own).
    pub cluster: ClusterId,
    /// The credential's stable key (an agent token's id), the tag its sockets carry so that
    /// revoking it can close them.
    pub token: String,
}

/// What the object keeps for one socket, as its attachment (at most 2 KiB serialized; the
/// `running` list of a hello is therefore not kept here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The cluster it joined.
    pub cluster: ClusterId,
    /// The credential it was admitted with ([`Admitted::token`]).
    pub token: String,
    /// When the object accepted it.
    pub accepted_at: DateTime<Utc>,
    /// The name its hello claimed (set before the hello is recorded, so that the orders the
    /// recording decides — the welcome first — find this socket).
    #[serde(default)]
    pub name: Option<String>,
    /// When it last sent a message the object read (pings answered by the runtime are not).
    #[serde(default)]
    pub heard_at: Option<DateTime<Utc>>,
    /// The agent, once its hello was accepted and recorded.
    pub agent: Option<Joined>,
}

/// An agent whose hello was accepted: who it is by its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    /// The id its name has in the cluster (the same on every reconnection).
    pub id: AgentId,
    /// Its name and version.
    pub info: AgentInfo,
    /// The capacity it announced.
    pub capacity: Resources,
    /// When its record says it connected, so that only this socket's close marks it gone.
    pub since: DateTime<Utc>,
}

impl Session {
    /// A session just accepted, before its hello.
    pub fn new(admitted: &Admitted, now: DateTime<Utc>) -> Self {
        Self {
            cluster: admitted.cluster,
            token: admitted.token.clone(),
            accepted_at: now,
            name: None,
            heard_at: None,
            agent: None,
        }
    }
}

/// What the object does with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Answer this.
    Reply(ObjectMessage),
    /// A first hello: record the agent, keep it as the session's [`Joined`], then welcome it
    /// with its id.
    Hello(Hello),
    /// A report of the joined agent, for the cluster's writer.
    Report(Report),
}

/// What a joined agent reports about one deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    Started { deployment_id: DeploymentId },
    Exited(Exit),
}

/// The session's transition on `message`; a violation closes the socket and changes nothing.
pub fn step(session: &Session, message: AgentMessage) -> Result<Step, Violation> {
    match message {
        AgentMessage::Ping => Ok(Step::Reply(ObjectMessage::Pong)),
        AgentMessage::Hello(_) if session.name.is_some() => {
            Err(Violation::policy("hello was already received"))
        }
        AgentMessage::Hello(hello) => Ok(Step::Hello(hello)),
        _ if session.name.is_none() => Err(Violation::policy("the first message must be hello")),
        AgentMessage::Started { deployment_id } => {
            Ok(Step::Report(Report::Started { deployment_id }))
        }
        AgentMessage::Exited(exit) => Ok(Step::Report(Report::Exited(exit))),
    }
}

#[cfg(test)]
mod tests {
    use super::protocol::parse;
    use super::*;

    fn session() -> Session {
        let admitted = Admitted {
            cluster: ClusterId::new(),
            token: "t1".into(),
        };
        Session::new(&admitted, Utc::now())
    }

    const HELLO: &str = r#"{"v":1,"type":"hello","agent":{"name":"gpu-01","version":"0.1.0"},
        "capacity":{"cpu_millis":8000,"memory_mib":32768,"gpus":2},"running":[]}"#;

    #[test]
    fn a_first_hello_is_to_be_recorded_and_a_second_is_refused() {
        let s = session();
        let Step::Hello(hello) = step(&s, parse(HELLO).expect("valid")).expect("accepted") else {
            panic!("a hello step")
        };
        assert_eq!(hello.agent.name, "gpu-01");
        assert_eq!(hello.capacity, Resources::new(8000, 32768, 2));

        let joined = Session {
            name: Some(hello.agent.name.clone()),
            agent: Some(Joined {
                id: AgentId::new(),
                info: hello.agent,
                capacity: hello.capacity,
                since: Utc::now(),
            }),
            ..s
        };
        let twice = step(&joined, parse(HELLO).expect("valid")).expect_err("hello twice");
        assert_eq!(twice.code, protocol::POLICY_VIOLATION);
        assert!(twice.reason.contains("already"), "{}", twice.reason);
    }

    #[test]
    fn ping_answers_pong() {
        let s = session();
        assert_eq!(
            step(&s, AgentMessage::Ping),
            Ok(Step::Reply(ObjectMessage::Pong))
        );
    }
}
