//! Agents: the machines that run a cluster's deployments and connect to its object over a
//! WebSocket. `protocol` is the wire (JSON text frames), `Session` what the object keeps
//! per socket (in the socket's attachment, so it survives hibernation).

pub mod protocol;

use super::ids::AgentId;
use super::ids::ClusterId;
use super::resources::Resources;
use chrono::{DateTime, Utc};
use protocol::{AgentInfo, AgentMessage, Hello, ObjectMessage, Violation, VERSION};
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
    /// The agent: a placeholder until its hello, then the id its name has in the cluster.
    pub agent_id: AgentId,
    /// The credential it was admitted with ([`Admitted::token`]).
    pub token: String,
    /// When the object accepted it; after the hello, when the agent's record says it
    /// connected (so that only this socket's close marks it gone).
    pub connected_at: DateTime<Utc>,
    /// The agent's name and version, from its hello; `None` until then.
    pub agent: Option<AgentInfo>,
    /// The capacity it announced in its hello.
    pub capacity: Option<Resources>,
}

impl Session {
    /// A session just accepted, before its hello (`agent_id` a placeholder until the hello
    /// names the agent).
    pub fn new(admitted: &Admitted, agent_id: AgentId, now: DateTime<Utc>) -> Self {
        Self {
            cluster: admitted.cluster,
            agent_id,
            token: admitted.token.clone(),
            connected_at: now,
            agent: None,
            capacity: None,
        }
    }
}

/// What the object does with one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The session's new state, when it changed (store it as the attachment).
    pub session: Option<Session>,
    /// The answer to send.
    pub reply: ObjectMessage,
}

/// The session's transition on `message`; a violation closes the socket and changes nothing.
pub fn step(session: &Session, message: AgentMessage) -> Result<Step, Violation> {
    match message {
        AgentMessage::Ping => Ok(Step {
            session: None,
            reply: ObjectMessage::Pong,
        }),
        AgentMessage::Hello(_) if session.agent.is_some() => {
            Err(Violation::policy("hello was already received"))
        }
        AgentMessage::Hello(Hello {
            agent, capacity, ..
        }) => Ok(Step {
            session: Some(Session {
                agent: Some(agent),
                capacity: Some(capacity),
                ..session.clone()
            }),
            reply: ObjectMessage::Welcome {
                v: VERSION,
                agent_id: session.agent_id,
            },
        }),
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
        Session::new(&admitted, AgentId::new(), Utc::now())
    }

    const HELLO: &str = r#"{"v":1,"type":"hello","agent":{"name":"gpu-01","version":"0.1.0"},
        "capacity":{"cpu_millis":8000,"memory_mib":32768,"gpus":2},"running":[]}"#;

    #[test]
    fn hello_is_welcomed_once_and_recorded() {
        let s = session();
        let step1 = step(&s, parse(HELLO).expect("valid")).expect("welcomed");
        assert_eq!(
            step1.reply,
            ObjectMessage::Welcome {
                v: 1,
                agent_id: s.agent_id
            }
        );
        let after = step1.session.expect("changed");
        assert_eq!(
            after.agent.as_ref().map(|a| a.name.as_str()),
            Some("gpu-01")
        );
        assert_eq!(after.capacity, Some(Resources::new(8000, 32768, 2)));
        assert_eq!(after.agent_id, s.agent_id);

        let twice = step(&after, parse(HELLO).expect("valid")).expect_err("hello twice");
        assert_eq!(twice.code, protocol::POLICY_VIOLATION);
        assert!(twice.reason.contains("already"), "{}", twice.reason);
    }

    #[test]
    fn ping_answers_pong_and_changes_nothing() {
        let s = session();
        let st = step(&s, AgentMessage::Ping).expect("pong");
        assert_eq!(st.reply, ObjectMessage::Pong);
        assert_eq!(st.session, None);
    }
}
