//! Typed identifiers, so that one kind of id can never be passed where another is wanted.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses an id from a path segment; anything that is not a UUID is `None`.
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::try_parse(s).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

typed_id!(
    /// A user account.
    UserId
);
typed_id!(
    /// A family of rotated refresh tokens (one per login).
    TokenFamilyId
);
typed_id!(
    /// An organization.
    OrgId
);
typed_id!(
    /// An invite code's record.
    InviteId
);
typed_id!(
    /// An API key's record.
    ApiKeyId
);
typed_id!(
    /// A cluster.
    ClusterId
);
typed_id!(
    /// A deployment.
    DeploymentId
);
typed_id!(
    /// An agent: one machine that runs a cluster's deployments.
    AgentId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_what_is_not_a_uuid() {
        assert!(UserId::parse("not-a-uuid").is_none());
        assert!(UserId::parse("").is_none());
        let id = UserId::new();
        assert_eq!(UserId::parse(&id.to_string()), Some(id));
    }
}
