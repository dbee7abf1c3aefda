//! Agent tokens: each lets one cluster's agent connect as that cluster's agent, and nothing
//! else. Stored hashed like API keys, revocable; they go with their cluster.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::{DbResult, Page};
use crate::auth::opaque::{self, Kind};
use crate::domain::ids::{AgentTokenId, ClusterId, UserId};

/// An agent token as stored (never with its secret).
#[derive(Debug, Clone)]
pub struct AgentTokenRow {
    /// Id.
    pub id: AgentTokenId,
    /// The cluster whose agent it connects.
    pub cluster_id: ClusterId,
    /// Label.
    pub name: String,
    /// First characters of the token, to recognise it.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last authenticated use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<&Row> for AgentTokenRow {
    type Error = super::DbError;
    fn try_from(r: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: AgentTokenId(r.try_get("id")?),
            cluster_id: ClusterId(r.try_get("cluster_id")?),
            name: r.try_get("name")?,
            prefix: r.try_get("prefix")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }
}

const COLUMNS: &str = "id, cluster_id, name, prefix, created_at, last_used_at, revoked_at";

/// Stores a new token of `cluster`.
pub async fn insert(
    db: &impl GenericClient,
    cluster: ClusterId,
    name: &str,
    token_hash: &[u8],
    prefix: &str,
    created_by: Option<UserId>,
) -> DbResult<AgentTokenRow> {
    let sql = format!(
        "insert into agent_tokens (id, cluster_id, name, token_hash, prefix, created_by) \
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    );
    let created_by = created_by.map(|u| u.0);
    let row = db
        .query_typed_one(
            &sql,
            &[
                (&AgentTokenId::new().0, Type::UUID),
                (&cluster.0, Type::UUID),
                (&name, Type::TEXT),
                (&token_hash, Type::BYTEA),
                (&prefix, Type::TEXT),
                (&created_by, Type::UUID),
            ],
        )
        .await?;
    AgentTokenRow::try_from(&row)
}

/// A cluster's tokens, by id (revoked ones too).
pub async fn list(
    db: &impl GenericClient,
    cluster: ClusterId,
    page: &Page,
) -> DbResult<Vec<AgentTokenRow>> {
    let rows = super::page_of_cluster(db, "agent_tokens", COLUMNS, cluster, page).await?;
    rows.iter().map(AgentTokenRow::try_from).collect()
}

/// Revokes a token of `cluster` (idempotently); `false` when the cluster has no such token.
pub async fn revoke(
    db: &impl GenericClient,
    cluster: ClusterId,
    id: AgentTokenId,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let rows = db
        .query_typed(
            "update agent_tokens set revoked_at = coalesce(revoked_at, $3) \
             where cluster_id = $1 and id = $2 returning id",
            &[
                (&cluster.0, Type::UUID),
                (&id.0, Type::UUID),
                (&now, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// Authenticates a presented agent token (`bat_…`): the live (unrevoked) token it is, with
/// its `last_used_at` bumped to `now`; `None` for anything else, including a secret that
/// cannot be an agent token at all (rejected without a round trip).
pub async fn authenticate(
    db: &impl GenericClient,
    secret: &str,
    now: DateTime<Utc>,
) -> DbResult<Option<AgentTokenRow>> {
    let Some(hash) = opaque::hash_presented(Kind::AgentToken, secret) else {
        return Ok(None);
    };
    let sql = format!(
        "update agent_tokens set last_used_at = $2 where token_hash = $1 and revoked_at is null \
         returning {COLUMNS}"
    );
    let row = db
        .query_typed_opt(&sql, &[(&hash, Type::BYTEA), (&now, Type::TIMESTAMPTZ)])
        .await?;
    row.as_ref().map(AgentTokenRow::try_from).transpose()
}
