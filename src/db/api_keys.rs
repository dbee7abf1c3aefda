//! API keys: bound to one organization and a role, stored hashed, revocable.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::orgs::role_of;
use super::{DbResult, Page};
use crate::domain::ids::{ApiKeyId, OrgId, UserId};
use crate::domain::policy::Role;

/// An API key as stored (never with its secret).
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    /// Id.
    pub id: ApiKeyId,
    /// Organization it acts in.
    pub org_id: OrgId,
    /// Label.
    pub name: String,
    /// Role it acts with.
    pub role: Role,
    /// First characters of the key, to recognise it.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last authenticated use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<&Row> for ApiKeyRow {
    type Error = super::DbError;
    fn try_from(r: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: ApiKeyId(r.try_get("id")?),
            org_id: OrgId(r.try_get("org_id")?),
            name: r.try_get("name")?,
            role: role_of(r, "role")?,
            prefix: r.try_get("prefix")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }
}

const COLUMNS: &str = "id, org_id, name, role, prefix, created_at, last_used_at, revoked_at";

/// Stores a new key.
pub async fn insert(
    db: &impl GenericClient,
    org: OrgId,
    name: &str,
    role: Role,
    key_hash: &[u8],
    prefix: &str,
    created_by: Option<UserId>,
) -> DbResult<ApiKeyRow> {
    let sql = format!(
        "insert into api_keys (id, org_id, name, role, key_hash, prefix, created_by) \
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    );
    let created_by = created_by.map(|u| u.0);
    let row = db
        .query_typed_one(
            &sql,
            &[
                (&ApiKeyId::new().0, Type::UUID),
                (&org.0, Type::UUID),
                (&name, Type::TEXT),
                (&role.as_str(), Type::TEXT),
                (&key_hash, Type::BYTEA),
                (&prefix, Type::TEXT),
                (&created_by, Type::UUID),
            ],
        )
        .await?;
    ApiKeyRow::try_from(&row)
}

/// An organization's keys, by id.
pub async fn list(db: &impl GenericClient, org: OrgId, page: &Page) -> DbResult<Vec<ApiKeyRow>> {
    let rows = super::page_of_org(db, "api_keys", COLUMNS, org, page).await?;
    rows.iter().map(ApiKeyRow::try_from).collect()
}

/// Revokes a key of `org`; `false` when there is no such key.
pub async fn revoke(
    db: &impl GenericClient,
    org: OrgId,
    id: ApiKeyId,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    super::revoke_in_org(db, "api_keys", org, id.0, now).await
}

/// The hash of the organization's key `id` (what its callers are known by).
pub async fn hash_of(
    db: &impl GenericClient,
    org: OrgId,
    id: ApiKeyId,
) -> DbResult<Option<Vec<u8>>> {
    let row = db
        .query_typed_opt(
            "select key_hash from api_keys where org_id = $1 and id = $2",
            &[(&org.0, Type::UUID), (&id.0, Type::UUID)],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The live (unrevoked) keys among `hashes`, without touching them: (hash, organization,
/// role). For lookups inside another transaction, where bumping `last_used_at` would hold
/// the key's row lock until that commits; [`touch`] bumps them afterwards.
pub async fn live_by_hash(
    db: &impl GenericClient,
    hashes: &[Vec<u8>],
) -> DbResult<Vec<(Vec<u8>, OrgId, Role)>> {
    let rows = db
        .query_typed(
            "select key_hash, org_id, role from api_keys \
             where key_hash = any($1) and revoked_at is null",
            &[(&hashes, Type::BYTEA_ARRAY)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("key_hash")?,
                OrgId(r.try_get("org_id")?),
                role_of(r, "role")?,
            ))
        })
        .collect()
}

/// Records a use of each of the keys `hashes` at `now`.
pub async fn touch(
    db: &impl GenericClient,
    hashes: &[Vec<u8>],
    now: DateTime<Utc>,
) -> DbResult<()> {
    db.execute_typed(
        "update api_keys set last_used_at = $2 where key_hash = any($1) and revoked_at is null",
        &[(&hashes, Type::BYTEA_ARRAY), (&now, Type::TIMESTAMPTZ)],
    )
    .await?;
    Ok(())
}

/// Authenticates a presented key: the live key with this hash, its `last_used_at` bumped.
pub async fn authenticate(
    db: &impl GenericClient,
    key_hash: &[u8],
    now: DateTime<Utc>,
) -> DbResult<Option<ApiKeyRow>> {
    let sql = format!(
        "update api_keys set last_used_at = $2 where key_hash = $1 and revoked_at is null \
         returning {COLUMNS}"
    );
    let row = db
        .query_typed_opt(&sql, &[(&key_hash, Type::BYTEA), (&now, Type::TIMESTAMPTZ)])
        .await?;
    row.as_ref().map(ApiKeyRow::try_from).transpose()
}
