//! Organizations and memberships.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

use super::{DbError, DbResult, Page};
use crate::domain::ids::{ClusterId, OrgId, UserId};
use crate::domain::policy::Role;

/// An organization as stored.
#[derive(Debug, Clone)]
pub struct OrgRow {
    /// Id.
    pub id: OrgId,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl TryFrom<&Row> for OrgRow {
    type Error = tokio_postgres::Error;
    fn try_from(r: &Row) -> Result<Self, Self::Error> {
        Ok(Self {
            id: OrgId(r.try_get("id")?),
            name: r.try_get("name")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

/// Creates an organization with `creator` as its first admin, in one statement.
pub async fn create(
    db: &impl GenericClient,
    id: OrgId,
    name: &str,
    creator: UserId,
) -> DbResult<OrgRow> {
    let row = db
        .query_typed_one(
            "with org as (insert into organizations (id, name) values ($1, $2) \
                          returning id, name, created_at), \
                  m as (insert into memberships (org_id, user_id, role) \
                        select id, $3, 'admin' from org) \
             select id, name, created_at from org",
            &[
                (&id.0, Type::UUID),
                (&name, Type::TEXT),
                (&creator.0, Type::UUID),
            ],
        )
        .await?;
    Ok(OrgRow::try_from(&row)?)
}

/// The organizations `user` belongs to, with the user's role, by id.
pub async fn list_for_user(
    db: &impl GenericClient,
    user: UserId,
    page: &Page,
) -> DbResult<Vec<(OrgRow, Role)>> {
    let rows = db
        .query_typed(
            "select o.id, o.name, o.created_at, m.role from memberships m \
             join organizations o on o.id = m.org_id \
             where m.user_id = $1 and ($2::uuid is null or o.id > $2) order by o.id limit $3",
            &[
                (&user.0, Type::UUID),
                (&page.after, Type::UUID),
                (&page.fetch(), Type::INT8),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((OrgRow::try_from(r)?, role_of(r, "role")?)))
        .collect()
}

/// One organization by id.
pub async fn get(db: &impl GenericClient, id: OrgId) -> DbResult<Option<OrgRow>> {
    let row = db
        .query_typed_opt(
            "select id, name, created_at from organizations where id = $1",
            &[(&id.0, Type::UUID)],
        )
        .await?;
    Ok(row.as_ref().map(OrgRow::try_from).transpose()?)
}

/// Reads a role column.
pub fn role_of(r: &Row, column: &str) -> DbResult<Role> {
    let name: String = r.try_get(column)?;
    Role::parse(&name).ok_or_else(|| DbError::Other(format!("unknown role {name} stored")))
}

/// The role of `user` in `org`, if a member.
pub async fn role(db: &impl GenericClient, org: OrgId, user: UserId) -> DbResult<Option<Role>> {
    let row = db
        .query_typed_opt(
            "select role from memberships where org_id = $1 and user_id = $2",
            &[(&org.0, Type::UUID), (&user.0, Type::UUID)],
        )
        .await?;
    row.as_ref().map(|r| role_of(r, "role")).transpose()
}

/// The roles of several users in the organization owning `cluster`, in one statement that
/// needs nothing read before it (non-members are absent).
pub async fn roles_in_cluster(
    db: &impl GenericClient,
    cluster: ClusterId,
    users: &[UserId],
) -> DbResult<Vec<(UserId, Role)>> {
    let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.0).collect();
    let rows = db
        .query_typed(
            "select m.user_id, m.role from clusters c \
             join memberships m on m.org_id = c.org_id \
             where c.id = $1 and m.user_id = any($2)",
            &[(&cluster.0, Type::UUID), (&ids, Type::UUID_ARRAY)],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((UserId(r.try_get("user_id")?), role_of(r, "role")?)))
        .collect()
}

/// A member as listed.
#[derive(Debug, Clone)]
pub struct MemberRow {
    /// User id.
    pub user_id: UserId,
    /// E-mail.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

impl TryFrom<&Row> for MemberRow {
    type Error = DbError;
    fn try_from(r: &Row) -> Result<Self, DbError> {
        Ok(Self {
            user_id: UserId(r.try_get("id")?),
            email: r.try_get("email")?,
            name: r.try_get("name")?,
            role: role_of(r, "role")?,
            joined_at: r.try_get("joined_at")?,
        })
    }
}

const MEMBER_COLUMNS: &str = "u.id, u.email, u.name, m.role, m.joined_at \
    from memberships m join users u on u.id = m.user_id";

/// Members of `org`, by user id.
pub async fn members(db: &impl GenericClient, org: OrgId, page: &Page) -> DbResult<Vec<MemberRow>> {
    let sql = format!(
        "select {MEMBER_COLUMNS} where m.org_id = $1 and ($2::uuid is null or u.id > $2) \
         order by u.id limit $3"
    );
    let rows = db
        .query_typed(
            &sql,
            &[
                (&org.0, Type::UUID),
                (&page.after, Type::UUID),
                (&page.fetch(), Type::INT8),
            ],
        )
        .await?;
    rows.iter().map(MemberRow::try_from).collect()
}

/// One member.
pub async fn member(
    db: &impl GenericClient,
    org: OrgId,
    user: UserId,
) -> DbResult<Option<MemberRow>> {
    let sql = format!("select {MEMBER_COLUMNS} where m.org_id = $1 and m.user_id = $2");
    let row = db
        .query_typed_opt(&sql, &[(&org.0, Type::UUID), (&user.0, Type::UUID)])
        .await?;
    row.as_ref().map(MemberRow::try_from).transpose()
}

/// Locks the organization row so membership changes of one organization run one at a time
/// (keeps "at least one admin" true under concurrent demotions). Returns the admin count.
pub async fn lock_and_count_admins(db: &impl GenericClient, org: OrgId) -> DbResult<i64> {
    db.query_typed(
        "select 1 from organizations where id = $1 for update",
        &[(&org.0, Type::UUID)],
    )
    .await?;
    let row = db
        .query_typed_one(
            "select count(*) from memberships where org_id = $1 and role = 'admin'",
            &[(&org.0, Type::UUID)],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Sets a member's role.
pub async fn set_role(
    db: &impl GenericClient,
    org: OrgId,
    user: UserId,
    role: Role,
) -> DbResult<()> {
    db.query_typed(
        "update memberships set role = $3 where org_id = $1 and user_id = $2",
        &[
            (&org.0, Type::UUID),
            (&user.0, Type::UUID),
            (&role.as_str(), Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}

/// Removes a member.
pub async fn remove(db: &impl GenericClient, org: OrgId, user: UserId) -> DbResult<()> {
    db.query_typed(
        "delete from memberships where org_id = $1 and user_id = $2",
        &[(&org.0, Type::UUID), (&user.0, Type::UUID)],
    )
    .await?;
    Ok(())
}

/// Adds a member; `DbError::Unique` when already one.
pub async fn add_member(
    db: &impl GenericClient,
    org: OrgId,
    user: UserId,
    role: Role,
) -> DbResult<()> {
    db.query_typed(
        "insert into memberships (org_id, user_id, role) values ($1, $2, $3)",
        &[
            (&org.0, Type::UUID),
            (&user.0, Type::UUID),
            (&role.as_str(), Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}
