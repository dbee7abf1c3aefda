//! Organizations and their members.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::Problem;
use super::extract::{Caller, Ids, Valid};
use super::guard::{authorize_in, not_found, Declared};
use super::pagination::{List, ListParams, Paged};
use super::{ApiError, AppState};
use crate::db::clusters;
use crate::db::orgs::{self, MemberRow, OrgRow};
use crate::domain::ids::{OrgId, UserId};
use crate::domain::policy::{Action, Role};
use crate::domain::validation::{display_name, role_field, FieldError, Fields, FromJson};

/// An organization.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Org {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The caller's role in it.
    pub role: Role,
}

fn org(row: OrgRow, role: Role) -> Org {
    Org {
        id: row.id.0,
        name: row.name,
        created_at: row.created_at,
        role,
    }
}

/// `{name}`: 1–100 characters, trimmed.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateOrgRequest {
    #[schema(schema_with = crate::domain::validation::schema::display_name, example = "Acme Research")]
    pub name: String,
}

impl FromJson for CreateOrgRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let name = f
            .string("name")
            .and_then(|s| display_name(s, 100).map_err(|m| f.error("name", m)).ok());
        f.finish(name.map(|name| Self { name }))
    }
}

/// Creates an organization; the caller becomes its admin. (Any user.)
#[utoipa::path(post, path = "/v1/orgs", tag = "organizations", request_body = CreateOrgRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the caller is its admin", body = Org),
        (status = 403, description = "API keys cannot create organizations", body = Problem),
        (status = 422, description = "Invalid name", body = Problem),
    ))]
pub async fn create_org(
    State(st): State<AppState>,
    caller: Caller,
    Valid(req): Valid<CreateOrgRequest>,
) -> Result<(StatusCode, Json<Org>), ApiError> {
    let user = caller.user()?;
    let db = st.db().await?;
    let row = orgs::create(&db, OrgId::new(), &req.name, user).await?;
    Ok((StatusCode::CREATED, Json(org(row, Role::Admin))))
}

/// The organizations the caller belongs to. (Users only: an API key → 403.)
#[utoipa::path(get, path = "/v1/orgs", tag = "organizations", params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's organizations", body = Paged<Org>),
        (status = 403, description = "API keys cannot list organizations", body = Problem),
    ))]
pub async fn list_orgs(
    State(st): State<AppState>,
    caller: Caller,
    list: List,
) -> Result<Json<Paged<Org>>, ApiError> {
    let user = caller.user()?;
    let db = st.db().await?;
    let rows = orgs::list_for_user(&db, user, &list.page).await?;
    Ok(Json(Paged::new(
        rows,
        &list.page,
        |(o, _)| o.id.0,
        |(o, r)| org(o, r),
    )))
}

/// One organization. Role: viewer.
#[utoipa::path(get, path = "/v1/orgs/{org_id}", tag = "organizations",
    params(("org_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "The organization", body = Org),
        (status = 404, description = "Unknown, or not a member", body = Problem),
    ))]
pub async fn get_org(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<OrgId>,
) -> Result<Json<Org>, ApiError> {
    let db = st.db().await?;
    let access = authorize_in(&st, &db, &caller, id, action, "organization").await?;
    let row = orgs::get(&db, id)
        .await?
        .ok_or_else(|| not_found("organization"))?;
    Ok(Json(org(row, access.role)))
}

/// A member of an organization.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

impl From<MemberRow> for Member {
    fn from(m: MemberRow) -> Self {
        Self {
            user_id: m.user_id.0,
            email: m.email,
            name: m.name,
            role: m.role,
            joined_at: m.joined_at,
        }
    }
}

/// Members of an organization. Role: viewer.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/members", tag = "organizations",
    params(("org_id" = Uuid, Path), ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Members", body = Paged<Member>),
        (status = 404, description = "Unknown, or not a member", body = Problem),
    ))]
pub async fn list_members(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(id): Ids<OrgId>,
    list: List,
) -> Result<Json<Paged<Member>>, ApiError> {
    let db = st.db().await?;
    authorize_in(&st, &db, &caller, id, action, "organization").await?;
    let rows = orgs::members(&db, id, &list.page).await?;
    Ok(Json(Paged::new(
        rows,
        &list.page,
        |m| m.user_id.0,
        Member::from,
    )))
}

/// `{role}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleRequest {
    pub role: Role,
}

impl FromJson for RoleRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let role = role_field(f, "role");
        f.finish(role.map(|role| Self { role }))
    }
}

fn last_admin() -> ApiError {
    ApiError::Conflict("an organization must keep at least one admin".into())
}

/// Changes a member's role. Role: admin. Demoting the last admin → 409.
#[utoipa::path(patch, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "organizations",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = RoleRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated member", body = Member),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization or member", body = Problem),
        (status = 409, description = "Would leave no admin", body = Problem),
    ))]
pub async fn update_member(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids((id, target)): Ids<(OrgId, UserId)>,
    Valid(req): Valid<RoleRequest>,
) -> Result<Json<Member>, ApiError> {
    let mut db = st.db().await?;
    authorize_in(&st, &db, &caller, id, action, "organization").await?;
    let tx = db.transaction().await?;
    // The organization row lock serializes membership changes: two admins demoting each
    // other at once are decided one after the other, and the second sees one admin left.
    let admins = orgs::lock_and_count_admins(&tx, id).await?;
    let member = orgs::member(&tx, id, target)
        .await?
        .ok_or_else(|| not_found("member"))?;
    if member.role == Role::Admin && req.role != Role::Admin && admins <= 1 {
        return Err(last_admin());
    }
    orgs::set_role(&tx, id, target, req.role).await?;
    tx.commit().await?;
    Ok(Json(Member {
        role: req.role,
        ..member.into()
    }))
}

/// Removes a member (role: admin), or leaves (the member itself). The last admin → 409.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "organizations",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Neither an admin nor the member itself", body = Problem),
        (status = 404, description = "Unknown organization or member", body = Problem),
        (status = 409, description = "Would leave no admin", body = Problem),
    ))]
pub async fn delete_member(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids((id, target)): Ids<(OrgId, UserId)>,
) -> Result<StatusCode, ApiError> {
    let mut db = st.db().await?;
    // A member may always leave: that needs only membership, not the declared action.
    let leaving = matches!(caller, Caller::User(u) if u == target);
    let action = if leaving { Action::ReadOrg } else { action };
    authorize_in(&st, &db, &caller, id, action, "organization").await?;
    let tx = db.transaction().await?;
    let admins = orgs::lock_and_count_admins(&tx, id).await?;
    let member = orgs::member(&tx, id, target)
        .await?
        .ok_or_else(|| not_found("member"))?;
    if member.role == Role::Admin && admins <= 1 {
        return Err(last_admin());
    }
    orgs::remove(&tx, id, target).await?;
    tx.commit().await?;
    // Removed first: a new watch is refused from now on; then its streams end.
    let clusters = clusters::ids_of(&db, id).await?;
    st.platform
        .end_watches(&clusters, &Caller::User(target))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
