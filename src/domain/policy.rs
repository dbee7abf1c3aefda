//! Roles and the one authorization table: `(role, action) → allowed`.
//!
//! Roles are per organization and ordered `Viewer < Developer < Admin`. Every endpoint that
//! touches an organization's resources declares its `Action` beside its route (`http/router.rs`);
//! the HTTP guard and the cluster's object apply this table, and the end-to-end role matrix is
//! generated from the OpenAPI document, which publishes each operation's least role.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member's role in an organization.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything in the organization.
    Viewer,
    /// Also deploys: submits, changes, cancels, stops and finishes deployments.
    Developer,
    /// Also manages the organization: members, invites, API keys, clusters and their agent
    /// tokens.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Developer, Role::Admin];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored or requested role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Everything a member can ask to do inside an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ReadOrg,
    ReadMetrics,
    ListMembers,
    ChangeMemberRole,
    RemoveMember,
    CreateInvite,
    ListInvites,
    RevokeInvite,
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
    CreateCluster,
    ListClusters,
    ReadCluster,
    UpdateCluster,
    DeleteCluster,
    CreateAgentToken,
    ListAgentTokens,
    RevokeAgentToken,
    ListAgents,
    ReadQueue,
    CreateDeployment,
    ListDeployments,
    ReadDeployment,
    UpdateDeployment,
    CancelDeployment,
    StopDeployment,
    FinishDeployment,
}

impl Action {
    /// The least role that may perform the action: the whole policy in one table.
    pub fn min_role(self) -> Role {
        use Action::*;
        match self {
            ReadOrg | ReadMetrics | ListMembers | ListClusters | ReadCluster | ListAgents
            | ReadQueue | ListDeployments | ReadDeployment => Role::Viewer,
            CreateDeployment | UpdateDeployment | CancelDeployment | StopDeployment
            | FinishDeployment => Role::Developer,
            ChangeMemberRole | RemoveMember | CreateInvite | ListInvites | RevokeInvite
            | CreateApiKey | ListApiKeys | RevokeApiKey | CreateCluster | UpdateCluster
            | DeleteCluster | CreateAgentToken | ListAgentTokens | RevokeAgentToken => Role::Admin,
        }
    }
}

impl Action {
    /// Actions that mint credentials only a user may perform, so that a leaked API key cannot
    /// create more keys, invites or agent tokens that outlive its revocation.
    pub fn needs_user(self) -> bool {
        matches!(
            self,
            Action::CreateApiKey | Action::CreateInvite | Action::CreateAgentToken
        )
    }
}

/// Whether `role` may perform `action`.
pub fn authorize(role: Role, action: Action) -> bool {
    role >= action.min_role()
}

/// Why a caller may not perform an action in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a member (or a key of another organization): answered as "not found", so that
    /// ids of other organizations cannot be probed.
    #[error("not a member of the organization")]
    NotMember,
    /// API keys may not mint credentials.
    #[error("API keys cannot create API keys, invites or agent tokens; a user must")]
    KeyCannotMint,
    /// A member whose role is too low.
    #[error("this needs the {} role or higher; you are {}", needed.as_str(), have.as_str())]
    RoleTooLow { needed: Role, have: Role },
}

/// The whole decision for a caller holding `role` in the organization (`None`: not a
/// member), acting as an API key or not: the role it acts with, or why not.
pub fn check(role: Option<Role>, api_key: bool, action: Action) -> Result<Role, Refusal> {
    let role = role.ok_or(Refusal::NotMember)?;
    if api_key && action.needs_user() {
        return Err(Refusal::KeyCannotMint);
    }
    if !authorize(role, action) {
        return Err(Refusal::RoleTooLow {
            needed: action.min_role(),
            have: role,
        });
    }
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    #[test]
    fn only_users_mint_credentials() {
        let minting: Vec<_> = [
            CreateApiKey,
            CreateInvite,
            CreateAgentToken,
            CreateCluster,
            CreateDeployment,
            ChangeMemberRole,
            ListAgentTokens,
            RevokeAgentToken,
        ]
        .into_iter()
        .filter(|a| a.needs_user())
        .collect();
        assert_eq!(minting, [CreateApiKey, CreateInvite, CreateAgentToken]);
    }

    #[test]
    fn check_orders_its_refusals() {
        assert_eq!(check(None, false, ReadOrg), Err(Refusal::NotMember));
        assert_eq!(check(None, true, CreateApiKey), Err(Refusal::NotMember));
        assert_eq!(
            check(Some(Role::Admin), true, CreateInvite),
            Err(Refusal::KeyCannotMint)
        );
        assert_eq!(
            check(Some(Role::Viewer), false, CreateDeployment),
            Err(Refusal::RoleTooLow {
                needed: Role::Developer,
                have: Role::Viewer
            })
        );
        assert_eq!(
            check(Some(Role::Developer), true, CreateDeployment),
            Ok(Role::Developer)
        );
    }

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Viewer < Role::Developer && Role::Developer < Role::Admin);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("owner"), None);
    }

    #[test]
    fn the_policy_table() {
        // (action, viewer, developer, admin)
        let table = [
            (ReadOrg, true, true, true),
            (ReadMetrics, true, true, true),
            (ListMembers, true, true, true),
            (ChangeMemberRole, false, false, true),
            (RemoveMember, false, false, true),
            (CreateInvite, false, false, true),
            (ListInvites, false, false, true),
            (RevokeInvite, false, false, true),
            (CreateApiKey, false, false, true),
            (ListApiKeys, false, false, true),
            (RevokeApiKey, false, false, true),
            (CreateCluster, false, false, true),
            (ListClusters, true, true, true),
            (ReadCluster, true, true, true),
            (UpdateCluster, false, false, true),
            (DeleteCluster, false, false, true),
            (CreateAgentToken, false, false, true),
            (ListAgentTokens, false, false, true),
            (RevokeAgentToken, false, false, true),
            (ListAgents, true, true, true),
            (ReadQueue, true, true, true),
            (CreateDeployment, false, true, true),
            (ListDeployments, true, true, true),
            (ReadDeployment, true, true, true),
            (UpdateDeployment, false, true, true),
            (CancelDeployment, false, true, true),
            (StopDeployment, false, true, true),
            (FinishDeployment, false, true, true),
        ];
        for (action, viewer, developer, admin) in table {
            assert_eq!(authorize(Role::Viewer, action), viewer, "{action:?}");
            assert_eq!(authorize(Role::Developer, action), developer, "{action:?}");
            assert_eq!(authorize(Role::Admin, action), admin, "{action:?}");
        }
    }
}
