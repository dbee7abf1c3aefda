//! API keys for automation: bound to one organization and a role no higher than the
//! creator's, shown once, stored hashed, revocable.

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
use crate::auth::opaque::{self, Kind};
use crate::db::api_keys::{self, ApiKeyRow};
use crate::db::clusters;
use crate::domain::ids::{ApiKeyId, OrgId};
use crate::domain::policy::Role;
use crate::domain::validation::{display_name, role_field, FieldError, Fields, FromJson};

/// Characters of a key kept visible (the `bak_` prefix and 8 more) to recognise it.
const VISIBLE_PREFIX: usize = 12;

/// An API key as listed (never with its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub role: Role,
    /// The key's first characters, to recognise it.
    #[schema(example = "bak_Xy12ab34")]
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: r.id.0,
            org_id: r.org_id.0,
            name: r.name,
            role: r.role,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A new key, with its secret: shown only here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// Use as `Authorization: Bearer <key>`; it cannot be shown again.
    #[schema(example = "bak_…")]
    pub secret: String,
}

/// `{name, role}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreateApiKeyRequest {
    #[schema(schema_with = crate::domain::validation::schema::display_name, example = "ci-deployer")]
    pub name: String,
    pub role: Role,
}

impl FromJson for CreateApiKeyRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let name = f
            .string("name")
            .and_then(|s| display_name(s, 100).map_err(|m| f.error("name", m)).ok());
        let role = role_field(f, "role");
        f.finish(name.zip(role).map(|(name, role)| Self { name, role }))
    }
}

/// Creates an API key for the organization. Role: admin; the key's role cannot exceed yours.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/api-keys", tag = "api-keys",
    params(("org_id" = Uuid, Path)), request_body = CreateApiKeyRequest, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = CreatedApiKey),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization, or not a member", body = Problem),
    ))]
pub async fn create_api_key(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(org): Ids<OrgId>,
    Valid(req): Valid<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let db = st.db().await?;
    let access = authorize_in(&st, &db, &caller, org, action, "organization").await?;
    if req.role > access.role {
        return Err(ApiError::Forbidden(
            "a key's role cannot exceed your own".into(),
        ));
    }
    let minted = opaque::mint(Kind::ApiKey);
    let prefix: String = minted.secret.chars().take(VISIBLE_PREFIX).collect();
    let row = api_keys::insert(
        &db,
        org,
        &req.name,
        req.role,
        &minted.hash,
        &prefix,
        access.user(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            key: row.into(),
            secret: minted.secret,
        }),
    ))
}

/// The organization's API keys, without secrets. Role: admin.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/api-keys", tag = "api-keys",
    params(("org_id" = Uuid, Path), ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Keys", body = Paged<ApiKey>),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization, or not a member", body = Problem),
    ))]
pub async fn list_api_keys(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids(org): Ids<OrgId>,
    list: List,
) -> Result<Json<Paged<ApiKey>>, ApiError> {
    let db = st.db().await?;
    authorize_in(&st, &db, &caller, org, action, "organization").await?;
    let rows = api_keys::list(&db, org, &list.page).await?;
    Ok(Json(Paged::new(rows, &list.page, |r| r.id.0, ApiKey::from)))
}

/// Revokes an API key. Role: admin.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/api-keys/{key_id}", tag = "api-keys",
    params(("org_id" = Uuid, Path), ("key_id" = Uuid, Path)), security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked (also when it already was)"),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "Unknown organization or key", body = Problem),
    ))]
pub async fn delete_api_key(
    State(st): State<AppState>,
    caller: Caller,
    Declared(action): Declared,
    Ids((org, id)): Ids<(OrgId, ApiKeyId)>,
) -> Result<StatusCode, ApiError> {
    let db = st.db().await?;
    authorize_in(&st, &db, &caller, org, action, "organization").await?;
    if api_keys::revoke(&db, org, id, st.now()).await? {
        // Revoked first: a new watch with it is refused from now on; then its streams end.
        let (hash, clusters) =
            tokio::try_join!(api_keys::hash_of(&db, org, id), clusters::ids_of(&db, org))?;
        if let Some(hash) = hash {
            st.platform
                .end_watches(&clusters, &Caller::ApiKey(hash))
                .await?;
        }
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("API key"))
    }
}
