//! Accounts and tokens: register, login, refresh, logout, `/v1/me`, JWKS.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::Problem;
use super::extract::{Caller, ClientIp, Valid};
use super::{ApiError, AppState};
use crate::auth::access::ACCESS_TOKEN_SECONDS;
use crate::auth::opaque::{self, Kind};
use crate::auth::password::{self, Verified};
use crate::db::{self, accounts};
use crate::domain::ids::{TokenFamilyId, UserId};
use crate::domain::throttle::Key;
use crate::domain::validation::{display_name, Email, FieldError, Fields, FromJson, Password};

/// Lifetime of a refresh token.
pub const REFRESH_TOKEN_DAYS: i64 = 30;

/// A user, as shown to clients.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<accounts::UserRow> for User {
    fn from(u: accounts::UserRow) -> Self {
        Self {
            id: u.id.0,
            email: u.email,
            name: u.name,
            created_at: u.created_at,
        }
    }
}

/// `{user}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserEnvelope {
    pub user: User,
}

/// Registration request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterRequest {
    /// Unique, case-insensitively.
    #[schema(schema_with = crate::domain::validation::schema::email, example = "ada@example.com")]
    pub email: Email,
    /// At least 12 characters.
    #[schema(value_type = String, min_length = 12, max_length = 1024)]
    pub password: Password,
    /// Display name, 1–100 characters.
    #[schema(schema_with = crate::domain::validation::schema::display_name)]
    pub name: String,
}

impl FromJson for RegisterRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let email = f
            .string("email")
            .and_then(|s| Email::parse(s).map_err(|m| f.error("email", m)).ok());
        let password = f
            .string("password")
            .and_then(|s| Password::parse(s).map_err(|m| f.error("password", m)).ok());
        let name = f
            .string("name")
            .and_then(|s| display_name(s, 100).map_err(|m| f.error("name", m)).ok());
        f.finish(
            email
                .zip(password)
                .zip(name)
                .map(|((email, password), name)| Self {
                    email,
                    password,
                    name,
                }),
        )
    }
}

/// Creates an account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserEnvelope),
        (status = 409, description = "E-mail taken (in any letter case)", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
    ))]
pub async fn register(
    State(st): State<AppState>,
    Valid(req): Valid<RegisterRequest>,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    let db = st.db().await?;
    // Checked first only to spare an argon2 hash for a taken e-mail; the unique index below
    // is what decides under concurrency.
    if accounts::user_by_email(&db, req.email.as_str())
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(
            db::unique_violation("users_email_lower_key").into(),
        ));
    }
    let hash = password::hash(req.password.expose());
    let user =
        accounts::insert_user(&db, UserId::new(), req.email.as_str(), &req.name, &hash).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserEnvelope { user: user.into() }),
    ))
}

/// Login request.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginRequest {
    #[schema(min_length = 1, max_length = 254)]
    pub email: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

impl FromJson for LoginRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let email = f.string("email").filter(|e| {
            let ok = !e.trim().is_empty() && e.len() <= 254;
            if !ok {
                f.error("email", "must be 1 to 254 characters");
            }
            ok
        });
        let password = f.string("password").filter(|p| {
            let ok = !p.is_empty() && p.chars().count() <= Password::MAX_CHARS;
            if !ok {
                f.error("password", "must be 1 to 1024 characters");
            }
            ok
        });
        f.finish(email.zip(password).map(|(e, p)| Self {
            email: e.trim().to_string(),
            password: p.to_string(),
        }))
    }
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
}

/// Exchanges e-mail and password for tokens. Throttled per account (5 failures in 15
/// minutes) and, far more loosely, per client address (100).
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 401, description = "Wrong e-mail or password", body = Problem),
        (status = 429, description = "Too many failures; see retry-after", body = Problem),
    ))]
pub async fn login(
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    Valid(req): Valid<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    let account_key = Key::LoginAccount(opaque::fingerprint(&req.email.to_lowercase()));
    let keys = [account_key.clone(), Key::LoginAddress(ip)];
    if let Some(retry_after) = st.platform.throttle_check(&keys).await? {
        return Err(ApiError::Throttled { retry_after });
    }
    let db = st.db().await?;
    let user = accounts::user_by_email(&db, &req.email).await?;
    let verdict = match &user {
        Some(u) => password::verify(&req.password, &u.password_hash),
        None => {
            // Same cost as a real check, so timing does not reveal which e-mails exist.
            password::verify(&req.password, password::dummy_hash());
            Verified::No
        }
    };
    let Some(user) = user.filter(|_| verdict != Verified::No) else {
        st.platform.throttle_fail(&keys).await?;
        return Err(ApiError::Unauthorized("wrong e-mail or password".into()));
    };
    if verdict == Verified::YesRehash {
        accounts::set_password_hash(&db, user.id, &password::hash(&req.password)).await?;
    }
    st.platform.throttle_reset(&account_key).await?;
    let pair = issue_pair(&st, &db, user.id, TokenFamilyId::new()).await?;
    Ok(Json(pair))
}

async fn issue_pair(
    st: &AppState,
    db: &impl tokio_postgres::GenericClient,
    user: UserId,
    family: TokenFamilyId,
) -> Result<TokenPair, ApiError> {
    let now = st.now();
    let refresh = opaque::mint(Kind::Refresh);
    let expires = now + Duration::days(REFRESH_TOKEN_DAYS);
    accounts::insert_refresh_token(db, user, family, &refresh.hash, expires).await?;
    Ok(TokenPair {
        access_token: st.keys.issue(user, now),
        token_type: "Bearer".into(),
        expires_in: ACCESS_TOKEN_SECONDS,
        refresh_token: refresh.secret,
    })
}

/// A refresh token in a request body.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(value_type = String, example = "brt_…")]
    pub refresh_token: String,
}

impl FromJson for RefreshRequest {
    fn from_json(f: &Fields<'_>) -> Result<Self, Vec<FieldError>> {
        let t = f.string("refresh_token");
        f.finish(t.map(|t| Self {
            refresh_token: t.to_string(),
        }))
    }
}

/// Spends a refresh token for a new pair. A spent token presented again revokes its family.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented token is spent", body = TokenPair),
        (status = 401, description = "Unknown, expired or reused token (reuse revokes the family)", body = Problem),
    ))]
pub async fn refresh(
    State(st): State<AppState>,
    Valid(req): Valid<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    let Some(hash) = opaque::hash_presented(Kind::Refresh, &req.refresh_token) else {
        return Err(ApiError::Unauthorized("invalid refresh token".into()));
    };
    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    match accounts::spend_refresh_token(&tx, &hash, st.now()).await? {
        accounts::Spend::Spent { user, family } => {
            let pair = issue_pair(&st, &tx, user, family).await?;
            tx.commit().await?;
            Ok(Json(pair))
        }
        accounts::Spend::Reused => {
            tx.commit().await?;
            Err(ApiError::Unauthorized(
                "refresh token reuse detected; every token of this login is revoked".into(),
            ))
        }
        accounts::Spend::Invalid => Err(ApiError::Unauthorized("invalid refresh token".into())),
    }
}

/// Revokes the login (refresh-token family) of the given token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Not authenticated", body = Problem),
        (status = 403, description = "An API key cannot log out", body = Problem),
    ))]
pub async fn logout(
    State(st): State<AppState>,
    caller: Caller,
    Valid(req): Valid<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    if let Some(hash) = opaque::hash_presented(Kind::Refresh, &req.refresh_token) {
        let db = st.db().await?;
        accounts::revoke_family_of(&db, caller.user()?, &hash, st.now()).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// One organization the caller belongs to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Membership {
    pub org_id: Uuid,
    pub org_name: String,
    #[schema(example = "admin")]
    pub role: String,
}

/// The caller and their memberships.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: User,
    pub memberships: Vec<Membership>,
}

/// The authenticated user and the organizations they belong to.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Not authenticated", body = Problem),
        (status = 403, description = "An API key has no user", body = Problem),
    ))]
pub async fn get_me(State(st): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let me = caller.user()?;
    let db = st.db().await?;
    // Both queries in flight at once: tokio-postgres pipelines them on the one connection.
    let (user, memberships) = tokio::try_join!(
        accounts::user_by_id(&db, me),
        accounts::memberships_of(&db, me)
    )?;
    let user =
        user.ok_or_else(|| ApiError::Unauthorized("this account no longer exists".into()))?;
    let memberships = memberships
        .into_iter()
        .map(|m| Membership {
            org_id: m.org_id,
            org_name: m.org_name,
            role: m.role,
        })
        .collect();
    Ok(Json(Me {
        user: user.into(),
        memberships,
    }))
}

/// A JSON Web Key Set (RFC 7517): the public keys that verify access tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    /// The signing key and any retired keys whose tokens may still be valid.
    keys: Vec<Jwk>,
}

/// An Ed25519 public key (RFC 8037).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    kty: String,
    #[schema(example = "Ed25519")]
    crv: String,
    /// The public key, base64url without padding.
    x: String,
    /// The key id that access tokens name in their header.
    kid: String,
    #[schema(example = "EdDSA")]
    alg: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    key_use: String,
}

/// The public keys that verify access tokens (Ed25519, with `kid`).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set", body = Jwks)))]
pub async fn get_jwks(State(st): State<AppState>) -> Result<Json<Jwks>, ApiError> {
    serde_json::from_value(st.keys.jwks())
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("JWKS: {e}")))
}
