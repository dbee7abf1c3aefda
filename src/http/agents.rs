//! Agents: the list of a cluster's agents, and the agent's WebSocket,
//! `GET /v1/clusters/{cluster_id}/agent/connect`: its admission.
//!
//! axum cannot answer with a workerd WebSocket, so this route is not in the router: the
//! Worker's fetch event (`edge::fetch`) recognizes its path ([`connect_path`]), asks
//! [`admit`] here, and on success forwards the upgrade to the cluster's object, whose 101
//! (with the socket) it returns as is. A refusal is an ordinary problem+json answer.
//!
//! Not in the OpenAPI document: a WebSocket is not an operation the fuzzer or the role
//! matrix can call, and the agent protocol is described in `domain::agent::protocol`.

use axum::extract::State;
use axum::http::{header, HeaderMap, Method};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use utoipa::ToSchema;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::error::Problem;
use super::extract::{Caller, Ids};
use super::guard::{cluster_access, Declared};
use super::pagination::{List, ListParams, Paged};
use super::{ApiError, AppState};
use crate::auth::opaque::Kind;
use crate::db::agent_tokens;
use crate::db::agents::{self, AgentRow};
use crate::domain::agent::Admitted;
use crate::domain::ids::{AgentId, ClusterId};
use crate::domain::resources::Resources;

/// A machine that has connected as one of the cluster's agents.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: Uuid,
    pub cluster_id: Uuid,
    /// Its name in the cluster (a host name, say): an agent that reconnects under the same
    /// name is the same agent.
    pub name: String,
    /// Its software version.
    pub version: String,
    /// `connected` while its socket is open, else `disconnected`.
    #[schema(example = "connected")]
    pub status: String,
    /// What it said it has.
    pub capacity: Resources,
    /// What its containers occupy now (assigned, running, or stopping and not yet exited).
    pub placed: Resources,
    /// Its containers that it said are running.
    pub running: i64,
    pub connected_at: DateTime<Utc>,
    /// When it was last heard of (its socket opening or closing, or the cluster's last look at
    /// its pings).
    pub last_seen_at: DateTime<Utc>,
}

impl Agent {
    pub(super) fn new(r: AgentRow, placed: &[(AgentId, Resources, i64)]) -> Self {
        let (placed, running) = placed
            .iter()
            .find(|(a, _, _)| *a == r.id)
            .map_or((Resources::ZERO, 0), |(_, p, n)| (*p, *n));
        Self {
            placed,
            running,
            id: r.id.0,
            cluster_id: r.cluster_id.0,
            name: r.name,
            version: r.version,
            status: r.status,
            capacity: r.capacity,
            connected_at: r.connected_at,
            last_seen_at: r.last_seen_at,
        }
    }
}

/// The cluster's agents, connected or not. Role: viewer.
#[utoipa::path(get, path = "/v1/clusters/{cluster_id}/agents", tag = "agents",
    params(("cluster_id" = Uuid, Path), ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Agents", body = Paged<Agent>),
        (status = 404, description = "Unknown cluster, or in another organization", body = Problem),
    ))]
pub async fn list_agents(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<ClusterId>,
    list: List,
) -> Result<Json<Paged<Agent>>, ApiError> {
    let db = st.db().await?;
    let (cluster, _) = cluster_access(&st, &db, &caller, id, action).await?;
    let (rows, placed) = tokio::try_join!(
        agents::list(&db, cluster.id, &list.page),
        agents::placed_on(&db, cluster.id),
    )?;
    Ok(Json(Paged::new(
        rows,
        &list.page,
        |r| r.id.0,
        |r| Agent::new(r, &placed),
    )))
}

/// The cluster id segment of `path` when it is the agent connect route, whatever it holds
/// (an id that does not parse is [`admit`]'s 404).
pub fn connect_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/clusters/")?;
    let id = rest.strip_suffix("/agent/connect")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Decides whether a request to the connect route may open an agent socket on the cluster:
/// 405 unless GET; 401 without an agent token (`Authorization: Bearer bat_…`); 426 without
/// `Upgrade: websocket`; then [`authenticate_agent`]'s 401 or 404. Only that last step
/// reads the database.
pub async fn admit(
    st: &AppState,
    method: &Method,
    cluster_segment: &str,
    headers: &HeaderMap,
) -> Result<Admitted, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let cluster = ClusterId::parse(cluster_segment)
        .ok_or_else(|| ApiError::NotFound("no such cluster".into()))?;
    let secret = agent_bearer(headers)?;
    if !is_websocket_upgrade(headers) {
        return Err(ApiError::UpgradeRequired(
            "this route is a WebSocket: send Upgrade: websocket".into(),
        ));
    }
    let db = st.db().await?;
    authenticate_agent(&db, cluster, secret, st.now()).await
}

/// Which agent token `secret` is, for the cluster the path names: 401 for a secret that is
/// no valid (or a revoked) token, 404 when the cluster is not the token's — an agent token
/// of one cluster says nothing of another's existence. The token's id is the key its
/// sockets are tagged with, so that revoking it closes them.
pub async fn authenticate_agent(
    db: &impl GenericClient,
    cluster: ClusterId,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Admitted, ApiError> {
    let row = agent_tokens::authenticate(db, secret, now)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid or revoked agent token".into()))?;
    if row.cluster_id != cluster {
        return Err(ApiError::NotFound("no such cluster".into()));
    }
    Ok(Admitted {
        cluster,
        token: row.id.to_string(),
    })
}

/// The agent token of `Authorization: Bearer bat_…`, or 401.
fn agent_bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let refused =
        || ApiError::Unauthorized("expected Authorization: Bearer bat_… (an agent token)".into());
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(refused)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(refused)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with(Kind::AgentToken.prefix()) {
        return Err(refused());
    }
    Ok(token)
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}
