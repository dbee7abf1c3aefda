//! Invite codes: created, listed and revoked by admins; accepted by users.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::Problem;
use super::extract::{Caller, Ids, Valid};
use super::guard::{authorize_in, not_found, Declared};
use super::pagination::{List, ListParams, Paged};
use super::{ApiError, AppState};
use crate::auth::opaque::{self, Kind};
use crate::db::invites::{self, InviteRow, NewInvite};
use crate::db::orgs;
use crate::domain::ids::{InviteId, OrgId};
use crate::domain::policy::Role;
use crate::domain::throttle::Key;
use crate::domain::validation::{role_field, FieldError, Fields, FromJson};

/// Default lifetime of an invite: 7 days.
pub const DEFAULT_EXPIRES_SECONDS: i64 = 7 * 24 * 3600;
/// Longest lifetime: 30 days.
pub const MAX_EXPIRES_SECONDS: i64 = 30 * 24 * 3600;
/// Most uses one code may allow.
pub const MAX_USES: i64 = 1000;

/// An invite as listed (never with its code).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Invite {
    pub id: Uuid,
    pub org_id: Uuid,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
    pub max_uses: i32,
    pub uses: i32,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// `active`, `expired`, `revoked` or `used_up`.
    #[schema(example = "active")]
    pub status: String,
}

fn status(row: &InviteRow, now: DateTime<Utc>) -> &'static str {
    if row.revoked_at.is_some() {
        "revoked"
    } else if row.expires_at <= now {
        "expired"
    } else if row.uses >= row.max_uses {
        "used_up"
    } else {
        "active"
    }
}

fn invite(row: InviteRow, now: DateTime<Utc>) -> Invite {
    Invite {
        status: status(&row, now).into(),
        id: row.id.0,
        org_id: row.org_id.0,
        role: row.role,
        expires_at: row.expires_at,
        max_uses: row.max_uses,
        uses: row.uses,
        revoked_at: row.revoked_at,
        created_at: row.created_at,
    }
}

/// A new invite, with its code: shown only here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedInvite {
    pub id: Uuid,
    /// The secret code to hand to the invitee; it cannot be shown again.
    #[schema(example = "bic_…")]
    pub code: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
    pub max_uses: i32,
    pub uses: i32,
}

/// `{role, expires_in_seconds?, max_uses?}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateInviteRequest {
    pub role: Role,
    /// 60 s to 30 days; default 7 days.
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in_seconds: Option<i64>,
    /// 1–1000; default 1.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_uses: Option<i64>,
}

impl FromJson for CreateInviteRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let role = role_field(f, "role");
        let expires = f.opt_int("expires_in_seconds", 60, MAX_EXPIRES_SECONDS);
        let uses = f.opt_int("max_uses", 1, MAX_USES);
        let value = match (role, expires, uses) {
            (Some(role), Ok(expires_in_seconds), Ok(max_uses)) => Some(Self {
                role,
                expires_in_seconds,
                max_uses,
            }),
            _ => None,
        };
        f.finish(value)
    }
}

/// Creates an invite code. Role: admin.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/invites", tag = "invites",
    params(("org_id" = Uuid, Path)), request_body = CreateInviteRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the code is shown only now", body = CreatedInvite),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization, or not a member", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
    ))]
pub async fn create_invite(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(org): Ids<OrgId>,
    Valid(req): Valid<CreateInviteRequest>,
) -> Result<(StatusCode, Json<CreatedInvite>), ApiError> {
    let db = st.db().await?;
    let access = authorize_in(&st, &db, &caller, org, action, "organization").await?;
    let code = opaque::mint(Kind::Invite);
    let expires =
        st.now() + Duration::seconds(req.expires_in_seconds.unwrap_or(DEFAULT_EXPIRES_SECONDS));
    let new = NewInvite {
        org,
        code_hash: &code.hash,
        role: req.role,
        created_by: access.user(),
        expires_at: expires,
        max_uses: req.max_uses.unwrap_or(1) as i32,
    };
    let row = invites::insert(&db, &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvite {
            id: row.id.0,
            code: code.secret,
            role: row.role,
            expires_at: row.expires_at,
            max_uses: row.max_uses,
            uses: row.uses,
        }),
    ))
}

/// An organization's invites, without codes. Role: admin.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/invites", tag = "invites",
    params(("org_id" = Uuid, Path), ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Invites", body = Paged<Invite>),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization, or not a member", body = Problem),
    ))]
pub async fn list_invites(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(org): Ids<OrgId>,
    list: List,
) -> Result<Json<Paged<Invite>>, ApiError> {
    let db = st.db().await?;
    authorize_in(&st, &db, &caller, org, action, "organization").await?;
    let rows = invites::list(&db, org, &list.page).await?;
    let now = st.now();
    Ok(Json(Paged::new(
        rows,
        &list.page,
        |r| r.id.0,
        |r| invite(r, now),
    )))
}

/// Revokes an invite. Role: admin.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/invites/{invite_id}", tag = "invites",
    params(("org_id" = Uuid, Path), ("invite_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked (also when it already was)"),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization or invite", body = Problem),
    ))]
pub async fn delete_invite(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids((org, id)): Ids<(OrgId, InviteId)>,
) -> Result<StatusCode, ApiError> {
    let db = st.db().await?;
    authorize_in(&st, &db, &caller, org, action, "organization").await?;
    if invites::revoke(&db, org, id, st.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("invite"))
    }
}

/// `{code}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptRequest {
    #[schema(example = "bic_…")]
    pub code: String,
}

impl FromJson for AcceptRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let code = f.string("code");
        f.finish(code.map(|c| Self {
            code: c.trim().to_string(),
        }))
    }
}

/// Where accepting an invite placed the caller.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub org_id: Uuid,
    pub role: Role,
}

/// Accepts an invite code: the caller joins with the invite's role. Throttled per user (5
/// failures in 15 minutes), whatever address they call from.
#[utoipa::path(post, path = "/v1/invites/accept", tag = "invites", request_body = AcceptRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Joined", body = Accepted),
        (status = 403, description = "API keys cannot join organizations", body = Problem),
        (status = 404, description = "Unknown code", body = Problem),
        (status = 409, description = "Already a member", body = Problem),
        (status = 410, description = "Expired, revoked or used up", body = Problem),
        (status = 429, description = "Too many failed attempts", body = Problem),
    ))]
pub async fn accept_invite(
    State(st): State<AppState>,
    caller: Caller,
    Valid(req): Valid<AcceptRequest>,
) -> Result<Json<Accepted>, ApiError> {
    let user = caller.user()?;
    let keys = [Key::InviteUser(user)];
    if let Some(retry_after) = st.platform.throttle_check(&keys).await? {
        return Err(ApiError::Throttled { retry_after });
    }
    let result = accept(&st, user, &req.code).await;
    if matches!(result, Err(ApiError::NotFound(_) | ApiError::Gone { .. })) {
        st.platform.throttle_fail(&keys).await?;
    }
    result.map(Json)
}

async fn accept(
    st: &AppState,
    user: crate::domain::ids::UserId,
    code: &str,
) -> Result<Accepted, ApiError> {
    let Some(hash) = opaque::hash_presented(Kind::Invite, code) else {
        return Err(not_found("invite"));
    };
    let now = st.now();
    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    let Some(invite) = invites::consume(&tx, &hash, now).await? else {
        drop(tx);
        return Err(refusal(invites::by_code(&db, &hash).await?, now));
    };
    // Already a member: 409, and the transaction rolls back on drop, so the use is not
    // consumed.
    orgs::add_member(&tx, invite.org_id, user, invite.role).await?;
    tx.commit().await?;
    Ok(Accepted {
        org_id: invite.org_id.0,
        role: invite.role,
    })
}

fn refusal(row: Option<InviteRow>, now: DateTime<Utc>) -> ApiError {
    let Some(row) = row else {
        return not_found("invite");
    };
    let (title, detail) = match status(&row, now) {
        "revoked" => ("Invite revoked", "an admin revoked this invite"),
        "expired" => (
            "Invite expired",
            "this invite has expired; ask for a new one",
        ),
        _ => (
            "Invite used up",
            "this invite has been used as many times as it allows",
        ),
    };
    ApiError::Gone {
        title: title.into(),
        detail: detail.into(),
    }
}
