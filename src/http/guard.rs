//! Authorization in one place: resolves the caller inside an organization and applies the
//! policy table to the action the route declares (`router.rs`, read here as [`Declared`]).
//! Not a member (or a key of another organization) → 404, so ids of other organizations
//! cannot be probed; a member whose role is too low → 403. The loaders of a cluster or a
//! deployment with the caller's standing in its organization live here too, for every
//! handler module to share.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio_postgres::GenericClient;

use super::extract::Caller;
use super::{ApiError, AppState};
use crate::db::clusters::{self, ClusterRow};
use crate::db::deployments::{self, DeploymentRow};
use crate::db::{api_keys, orgs};
use crate::domain::ids::{ApiKeyId, ClusterId, DeploymentId, OrgId, UserId};
use crate::domain::policy::{check, Action, Refusal, Role};

/// The action a route declares beside its registration in `router.rs`, which puts it in the
/// request's extensions; a route that declares none cannot use it (500, and the role-matrix
/// and OpenAPI tests fail first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared(pub Action);

impl<S: Send + Sync> FromRequestParts<S> for Declared {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Action>()
            .copied()
            .map(Declared)
            .ok_or_else(|| ApiError::Internal("the route declares no action".into()))
    }
}

/// Who acts, once resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A user.
    User(UserId),
    /// An API key of one organization.
    ApiKey(ApiKeyId),
}

/// The caller's standing in one organization, after the policy allowed the action.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// Who acts.
    pub principal: Principal,
    /// With which role.
    pub role: Role,
    /// In which organization.
    pub org: OrgId,
}

impl Access {
    /// The acting user, if a user acts.
    pub fn user(&self) -> Option<UserId> {
        match self.principal {
            Principal::User(u) => Some(u),
            Principal::ApiKey(_) => None,
        }
    }
}

/// The message of every "not yours or not there" answer.
pub fn not_found(what: &str) -> ApiError {
    ApiError::NotFound(format!("no such {what}"))
}

/// The answer to a refusal: "not found" for non-members, 403 otherwise.
pub fn refused(refusal: Refusal, what: &str) -> ApiError {
    match refusal {
        Refusal::NotMember => not_found(what),
        r => ApiError::Forbidden(r.to_string()),
    }
}

/// Resolves `caller` in `org` and checks `action` against the policy table.
pub async fn authorize_in(
    st: &AppState,
    db: &impl GenericClient,
    caller: &Caller,
    org: OrgId,
    action: Action,
    what: &str,
) -> Result<Access, ApiError> {
    let user_role = match caller {
        Caller::User(user) => orgs::role(db, org, *user).await?,
        Caller::ApiKey(_) => None,
    };
    authorize_with_role(st, db, caller, org, user_role, action, what).await
}

/// Like `authorize_in`, when a user caller's role in `org` was read together with the
/// resource (one round trip less); API keys are still authenticated here.
pub async fn authorize_with_role(
    st: &AppState,
    db: &impl GenericClient,
    caller: &Caller,
    org: OrgId,
    user_role: Option<Role>,
    action: Action,
    what: &str,
) -> Result<Access, ApiError> {
    let (principal, role) = match caller {
        Caller::User(user) => (Principal::User(*user), user_role),
        Caller::ApiKey(hash) => {
            let key = api_keys::authenticate(db, hash, st.now())
                .await?
                .ok_or_else(|| ApiError::Unauthorized("invalid or revoked API key".into()))?;
            let role = (key.org_id == org).then_some(key.role);
            (Principal::ApiKey(key.id), role)
        }
    };
    let role = check(role, matches!(principal, Principal::ApiKey(_)), action)
        .map_err(|r| refused(r, what))?;
    Ok(Access {
        principal,
        role,
        org,
    })
}

/// Loads a cluster and authorizes `action` in its organization (unknown or foreign → 404).
pub async fn cluster_access(
    st: &AppState,
    db: &impl GenericClient,
    caller: &Caller,
    id: ClusterId,
    action: Action,
) -> Result<(ClusterRow, Access), ApiError> {
    let (c, role) = clusters::get_with_role(db, id, caller.user_id())
        .await?
        .ok_or_else(|| not_found("cluster"))?;
    let access = authorize_with_role(st, db, caller, c.org_id, role, action, "cluster").await?;
    Ok((c, access))
}

/// Loads a deployment and authorizes `action` in its organization (unknown or foreign → 404).
pub async fn deployment_access(
    st: &AppState,
    db: &impl GenericClient,
    caller: &Caller,
    id: DeploymentId,
    action: Action,
) -> Result<(DeploymentRow, Access), ApiError> {
    let (d, role) = deployments::get_with_role(db, id, caller.user_id())
        .await?
        .ok_or_else(|| not_found("deployment"))?;
    let access = authorize_with_role(st, db, caller, d.org_id, role, action, "deployment").await?;
    Ok((d, access))
}
