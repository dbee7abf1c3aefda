//! Users, refresh tokens and the memberships shown on `/v1/me`.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use super::DbResult;
use crate::domain::ids::{TokenFamilyId, UserId};

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Id.
    pub id: UserId,
    /// E-mail as typed at registration.
    pub email: String,
    /// Display name.
    pub name: String,
    /// PHC string.
    pub password_hash: String,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

impl TryFrom<&Row> for UserRow {
    type Error = tokio_postgres::Error;
    fn try_from(r: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: UserId(r.try_get("id")?),
            email: r.try_get("email")?,
            name: r.try_get("name")?,
            password_hash: r.try_get("password_hash")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

const USER_COLUMNS: &str = "id, email, name, password_hash, created_at";

/// Inserts a user; a taken e-mail surfaces as `DbError::Unique("users_email_lower_key")`.
pub async fn insert_user(
    db: &impl GenericClient,
    id: UserId,
    email: &str,
    name: &str,
    password_hash: &str,
) -> DbResult<UserRow> {
    let sql = format!(
        "insert into users (id, email, name, password_hash) values ($1, $2, $3, $4) \
         returning {USER_COLUMNS}"
    );
    let row = db
        .query_typed_one(
            &sql,
            &[
                (&id.0, Type::UUID),
                (&email, Type::TEXT),
                (&name, Type::TEXT),
                (&password_hash, Type::TEXT),
            ],
        )
        .await?;
    Ok(UserRow::try_from(&row)?)
}

/// The user with this e-mail, ignoring letter case.
pub async fn user_by_email(db: &impl GenericClient, email: &str) -> DbResult<Option<UserRow>> {
    let sql = format!("select {USER_COLUMNS} from users where lower(email) = lower($1)");
    let row = db.query_typed_opt(&sql, &[(&email, Type::TEXT)]).await?;
    Ok(row.as_ref().map(UserRow::try_from).transpose()?)
}

/// The user with this id.
pub async fn user_by_id(db: &impl GenericClient, id: UserId) -> DbResult<Option<UserRow>> {
    let sql = format!("select {USER_COLUMNS} from users where id = $1");
    let row = db.query_typed_opt(&sql, &[(&id.0, Type::UUID)]).await?;
    Ok(row.as_ref().map(UserRow::try_from).transpose()?)
}

/// Replaces a password hash (rehash on login after the parameters were raised).
pub async fn set_password_hash(db: &impl GenericClient, id: UserId, hash: &str) -> DbResult<()> {
    db.query_typed(
        "update users set password_hash = $2 where id = $1",
        &[(&id.0, Type::UUID), (&hash, Type::TEXT)],
    )
    .await?;
    Ok(())
}

/// Stores a new refresh token of `family`.
pub async fn insert_refresh_token(
    db: &impl GenericClient,
    user: UserId,
    family: TokenFamilyId,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> DbResult<()> {
    db.query_typed(
        "insert into refresh_tokens (id, family_id, user_id, token_hash, expires_at) \
         values ($1, $2, $3, $4, $5)",
        &[
            (&Uuid::now_v7(), Type::UUID),
            (&family.0, Type::UUID),
            (&user.0, Type::UUID),
            (&hash, Type::BYTEA),
            (&expires_at, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend {
    /// The token was live and is now spent; issue the next one in `family`.
    Spent { user: UserId, family: TokenFamilyId },
    /// The token was spent or revoked before: reuse. Its family has been revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// Atomically spends a live refresh token; on reuse of a spent one revokes its whole family.
/// Concurrent presentations of one token: exactly one spends it, the others see reuse.
pub async fn spend_refresh_token(
    db: &impl GenericClient,
    hash: &[u8],
    now: DateTime<Utc>,
) -> DbResult<Spend> {
    let spent = db
        .query_typed_opt(
            "update refresh_tokens set used_at = $2 \
             where token_hash = $1 and used_at is null and revoked_at is null and expires_at > $2 \
             returning user_id, family_id",
            &[(&hash, Type::BYTEA), (&now, Type::TIMESTAMPTZ)],
        )
        .await?;
    if let Some(row) = spent {
        return Ok(Spend::Spent {
            user: UserId(row.try_get(0)?),
            family: TokenFamilyId(row.try_get(1)?),
        });
    }
    let revoked = db
        .query_typed(
            "update refresh_tokens set revoked_at = coalesce(revoked_at, $2) \
             where family_id = (select family_id from refresh_tokens \
                                where token_hash = $1 and expires_at > $2 \
                                  and (used_at is not null or revoked_at is not null)) \
             returning id",
            &[(&hash, Type::BYTEA), (&now, Type::TIMESTAMPTZ)],
        )
        .await?;
    Ok(if revoked.is_empty() {
        Spend::Invalid
    } else {
        Spend::Reused
    })
}

/// Revokes the family of a refresh token owned by `user` (logout). Unknown tokens are ignored.
pub async fn revoke_family_of(
    db: &impl GenericClient,
    user: UserId,
    hash: &[u8],
    now: DateTime<Utc>,
) -> DbResult<()> {
    db.query_typed(
        "update refresh_tokens set revoked_at = coalesce(revoked_at, $3) \
         where family_id = (select family_id from refresh_tokens \
                            where token_hash = $2 and user_id = $1)",
        &[
            (&user.0, Type::UUID),
            (&hash, Type::BYTEA),
            (&now, Type::TIMESTAMPTZ),
        ],
    )
    .await?;
    Ok(())
}

/// Deletes refresh tokens that expired before `now` (cron).
pub async fn purge_expired_refresh_tokens(
    db: &impl GenericClient,
    now: DateTime<Utc>,
) -> DbResult<u64> {
    let rows = db
        .query_typed(
            "with gone as (delete from refresh_tokens where expires_at <= $1 returning 1) \
             select count(*) from gone",
            &[(&now, Type::TIMESTAMPTZ)],
        )
        .await?;
    let n: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
    Ok(n.max(0) as u64)
}

/// One organization the user belongs to.
#[derive(Debug, Clone)]
pub struct MembershipRow {
    /// Organization id.
    pub org_id: Uuid,
    /// Organization name.
    pub org_name: String,
    /// Role name.
    pub role: String,
}

/// The user's memberships, oldest first.
pub async fn memberships_of(db: &impl GenericClient, user: UserId) -> DbResult<Vec<MembershipRow>> {
    let rows = db
        .query_typed(
            "select o.id, o.name, m.role from memberships m \
             join organizations o on o.id = m.org_id where m.user_id = $1 \
             order by m.joined_at, o.id",
            &[(&user.0, Type::UUID)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(MembershipRow {
                org_id: r.try_get(0)?,
                org_name: r.try_get(1)?,
                role: r.try_get(2)?,
            })
        })
        .collect()
}
