//! Agent tokens: one cluster's agent connects with one, and it can do nothing else (every
//! API route refuses it as a bearer). Created by an admin who is a user, shown once, stored
//! hashed, revocable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::Problem;
use super::extract::{Caller, Ids, Valid};
use super::guard::{cluster_access, not_found, Declared};
use super::pagination::{List, ListParams, Paged};
use super::{ApiError, AppState};
use crate::auth::opaque::{self, Kind};
use crate::db::agent_tokens::{self, AgentTokenRow};
use crate::domain::ids::{AgentTokenId, ClusterId};
use crate::domain::validation::{display_name, FieldError, Fields, FromJson};

/// Characters of a token kept visible (the `bat_` prefix and 8 more) to recognise it.
const VISIBLE_PREFIX: usize = 12;

/// An agent token as listed (never with its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentToken {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub name: String,
    /// The token's first characters, to recognise it.
    #[schema(example = "bat_Xy12ab34")]
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<AgentTokenRow> for AgentToken {
    fn from(r: AgentTokenRow) -> Self {
        Self {
            id: r.id.0,
            cluster_id: r.cluster_id.0,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A new token, with its secret: shown only here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedAgentToken {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub name: String,
    /// The token's first characters, to recognise it.
    #[schema(example = "bat_Xy12ab34")]
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// What the cluster's agent connects with; it cannot be shown again.
    #[schema(example = "bat_…")]
    pub token: String,
}

/// `{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateAgentTokenRequest {
    #[schema(schema_with = crate::domain::validation::schema::display_name, example = "rack-7")]
    pub name: String,
}

impl FromJson for CreateAgentTokenRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let name = f
            .string("name")
            .and_then(|s| display_name(s, 100).map_err(|m| f.error("name", m)).ok());
        f.finish(name.map(|name| Self { name }))
    }
}

/// Creates a token for the cluster's agent. Role: admin, and a user (not an API key).
#[utoipa::path(post, path = "/v1/clusters/{cluster_id}/agent-tokens", tag = "agent-tokens",
    params(("cluster_id" = Uuid, Path)), request_body = CreateAgentTokenRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token is shown only now", body = CreatedAgentToken),
        (status = 403, description = "Not an admin, or an API key", body = Problem),
        (status = 404, description = "Unknown cluster, or in another organization", body = Problem),
    ))]
pub async fn create_agent_token(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<ClusterId>,
    Valid(req): Valid<CreateAgentTokenRequest>,
) -> Result<(StatusCode, Json<CreatedAgentToken>), ApiError> {
    let db = st.db().await?;
    let (cluster, access) = cluster_access(&st, &db, &caller, id, action).await?;
    let minted = opaque::mint(Kind::AgentToken);
    let prefix: String = minted.secret.chars().take(VISIBLE_PREFIX).collect();
    let row = agent_tokens::insert(
        &db,
        cluster.id,
        &req.name,
        &minted.hash,
        &prefix,
        access.user(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAgentToken {
            id: row.id.0,
            cluster_id: row.cluster_id.0,
            name: row.name,
            prefix: row.prefix,
            created_at: row.created_at,
            token: minted.secret,
        }),
    ))
}

/// The cluster's agent tokens, without secrets. Role: admin.
#[utoipa::path(get, path = "/v1/clusters/{cluster_id}/agent-tokens", tag = "agent-tokens",
    params(("cluster_id" = Uuid, Path), ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Tokens, revoked ones too", body = Paged<AgentToken>),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown cluster, or in another organization", body = Problem),
    ))]
pub async fn list_agent_tokens(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<ClusterId>,
    list: List,
) -> Result<Json<Paged<AgentToken>>, ApiError> {
    let db = st.db().await?;
    let (cluster, _) = cluster_access(&st, &db, &caller, id, action).await?;
    let rows = agent_tokens::list(&db, cluster.id, &list.page).await?;
    Ok(Json(Paged::new(
        rows,
        &list.page,
        |r| r.id.0,
        AgentToken::from,
    )))
}

/// Revokes an agent token. Role: admin.
#[utoipa::path(delete, path = "/v1/clusters/{cluster_id}/agent-tokens/{token_id}",
    tag = "agent-tokens",
    params(("cluster_id" = Uuid, Path), ("token_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked (also when it already was)"),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown cluster, or no such token of this cluster", body = Problem),
    ))]
pub async fn delete_agent_token(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids((id, token)): Ids<(ClusterId, AgentTokenId)>,
) -> Result<StatusCode, ApiError> {
    let db = st.db().await?;
    let (cluster, _) = cluster_access(&st, &db, &caller, id, action).await?;
    if agent_tokens::revoke(&db, cluster.id, token, st.now()).await? {
        // Revoked first: a reconnect with it is refused from now on; then its live sockets go.
        st.platform.disconnect_agents(cluster.id, token).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("agent token"))
    }
}
