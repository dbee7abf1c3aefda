//! Invite codes: created by admins, consumed atomically on acceptance.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::orgs::role_of;
use super::{DbResult, Page};
use crate::domain::ids::{InviteId, OrgId, UserId};
use crate::domain::policy::Role;

/// An invite as stored (never with its code).
#[derive(Debug, Clone)]
pub struct InviteRow {
    /// Id.
    pub id: InviteId,
    /// Organization it admits to.
    pub org_id: OrgId,
    /// Role it grants.
    pub role: Role,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Maximum acceptances.
    pub max_uses: i32,
    /// Acceptances so far.
    pub uses: i32,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl TryFrom<&Row> for InviteRow {
    type Error = super::DbError;
    fn try_from(r: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: InviteId(r.try_get("id")?),
            org_id: OrgId(r.try_get("org_id")?),
            role: role_of(r, "role")?,
            expires_at: r.try_get("expires_at")?,
            max_uses: r.try_get("max_uses")?,
            uses: r.try_get("uses")?,
            revoked_at: r.try_get("revoked_at")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

const COLUMNS: &str = "id, org_id, role, expires_at, max_uses, uses, revoked_at, created_at";

/// What to store for a new invite.
#[derive(Debug)]
pub struct NewInvite<'a> {
    /// Organization.
    pub org: OrgId,
    /// Hash of the code.
    pub code_hash: &'a [u8],
    /// Role granted.
    pub role: Role,
    /// Creator.
    pub created_by: Option<UserId>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Maximum uses.
    pub max_uses: i32,
}

/// Stores a new invite.
pub async fn insert(db: &impl GenericClient, new: &NewInvite<'_>) -> DbResult<InviteRow> {
    let sql = format!(
        "insert into invites (id, org_id, code_hash, role, created_by, expires_at, max_uses) \
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    );
    let created_by = new.created_by.map(|u| u.0);
    let row = db
        .query_typed_one(
            &sql,
            &[
                (&InviteId::new().0, Type::UUID),
                (&new.org.0, Type::UUID),
                (&new.code_hash, Type::BYTEA),
                (&new.role.as_str(), Type::TEXT),
                (&created_by, Type::UUID),
                (&new.expires_at, Type::TIMESTAMPTZ),
                (&new.max_uses, Type::INT4),
            ],
        )
        .await?;
    InviteRow::try_from(&row)
}

/// An organization's invites, by id.
pub async fn list(db: &impl GenericClient, org: OrgId, page: &Page) -> DbResult<Vec<InviteRow>> {
    let rows = super::page_of_org(db, "invites", COLUMNS, org, page).await?;
    rows.iter().map(InviteRow::try_from).collect()
}

/// Revokes an invite of `org`; `false` when there is no such invite.
pub async fn revoke(
    db: &impl GenericClient,
    org: OrgId,
    id: InviteId,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    super::revoke_in_org(db, "invites", org, id.0, now).await
}

/// Consumes one use of a live code; `None` when the code is unknown, expired, revoked or
/// used up. The row lock of the update serializes concurrent acceptances of one code.
pub async fn consume(
    db: &impl GenericClient,
    code_hash: &[u8],
    now: DateTime<Utc>,
) -> DbResult<Option<InviteRow>> {
    let sql = format!(
        "update invites set uses = uses + 1 \
         where code_hash = $1 and revoked_at is null and expires_at > $2 and uses < max_uses \
         returning {COLUMNS}"
    );
    let row = db
        .query_typed_opt(
            &sql,
            &[(&code_hash, Type::BYTEA), (&now, Type::TIMESTAMPTZ)],
        )
        .await?;
    row.as_ref().map(InviteRow::try_from).transpose()
}

/// The invite with this code, whatever its state (to explain a refusal).
pub async fn by_code(db: &impl GenericClient, code_hash: &[u8]) -> DbResult<Option<InviteRow>> {
    let sql = format!("select {COLUMNS} from invites where code_hash = $1");
    let row = db
        .query_typed_opt(&sql, &[(&code_hash, Type::BYTEA)])
        .await?;
    row.as_ref().map(InviteRow::try_from).transpose()
}
