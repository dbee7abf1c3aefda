//! Authorization of what the Worker forwards unchecked — submissions, and reads of a
//! cluster's usage and queue: the callers are resolved with one query each for users and API
//! keys (a batch's inside its transaction, a read's on the object's reading connection), and
//! the policy table decides per command. The Worker then needs no database connection of its
//! own for them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::{Command, EngineError};
use crate::auth::Caller;
use crate::db::clusters::{self, ClusterRow};
use crate::db::{api_keys, orgs};
use crate::domain::ids::{ClusterId, OrgId, UserId};
use crate::domain::policy::{check, Action, Refusal, Role};

/// The standing of every caller of one batch in the cluster's organization.
pub struct Callers {
    users: HashMap<UserId, Role>,
    /// Live keys: the organization they belong to and their role.
    keys: HashMap<Vec<u8>, (OrgId, Role)>,
}

/// The action a command performs when the engine authorizes it; `None` when the Worker
/// already did.
fn needs_check(cmd: &Command) -> Option<(&Caller, Action)> {
    match cmd {
        Command::Submit { by, .. } | Command::Plan { by, .. } => Some((by, super::SUBMIT_ACTION)),
        _ => None,
    }
}

/// The API keys presented in `cmds` (their use is recorded after the batch commits).
pub fn keys_presented(cmds: &[Command]) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = cmds
        .iter()
        .filter_map(needs_check)
        .filter_map(|(by, _)| match by {
            Caller::ApiKey(hash) => Some(hash.clone()),
            Caller::User(_) => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

impl Callers {
    /// Looks up everyone in `cmds` who still needs authorizing on `cluster`. Both lookups
    /// need nothing read before them, so they go out pipelined with the batch's first
    /// statements.
    pub async fn resolve(
        db: &Client,
        cluster: ClusterId,
        cmds: &[Command],
    ) -> Result<Self, EngineError> {
        let mut users = Vec::new();
        for (by, _) in cmds.iter().filter_map(needs_check) {
            if let Caller::User(u) = by {
                if !users.contains(u) {
                    users.push(*u);
                }
            }
        }
        let presented = keys_presented(cmds);
        let users_of = async {
            if users.is_empty() {
                Ok(Vec::new())
            } else {
                orgs::roles_in_cluster(db, cluster, &users).await
            }
        };
        let keys_of = async {
            if presented.is_empty() {
                Ok(Vec::new())
            } else {
                api_keys::live_by_hash(db, &presented).await
            }
        };
        let (users, keys) = tokio::try_join!(users_of, keys_of)?;
        Ok(Self {
            users: users.into_iter().collect(),
            keys: keys
                .into_iter()
                .map(|(hash, key_org, role)| (hash, (key_org, role)))
                .collect(),
        })
    }

    /// Whether `cmd` may run, by the policy table; refusals answer as the Worker's guard
    /// does (not a member → not found, revoked key → unauthorized, low role → forbidden).
    pub fn permit(&self, org: OrgId, cmd: &Command) -> Result<(), EngineError> {
        match needs_check(cmd) {
            Some((by, action)) => self.permit_as(org, by, action),
            None => Ok(()),
        }
    }

    /// Whether `by` may perform `action` in the organization `org`, by the policy table.
    pub fn permit_as(&self, org: OrgId, by: &Caller, action: Action) -> Result<(), EngineError> {
        let role = match by {
            Caller::User(u) => self.users.get(u).copied(),
            Caller::ApiKey(hash) => {
                let (key_org, role) = self.keys.get(hash).copied().ok_or_else(|| {
                    EngineError::Unauthorized("invalid or revoked API key".into())
                })?;
                (key_org == org).then_some(role)
            }
        };
        match check(role, matches!(by, Caller::ApiKey(_)), action) {
            Ok(_) => Ok(()),
            Err(Refusal::NotMember) => Err(EngineError::NotFound("cluster".into())),
            Err(r) => Err(EngineError::Forbidden(r.to_string())),
        }
    }
}

/// Authorizes one reader of `cluster` for `action` (views, outside any transaction) and
/// returns the cluster's row; `None` when there is no such cluster. The row comes with a
/// user's role in one statement; a key is authenticated as the Worker's guard does
/// (`api_keys::authenticate`, an UPDATE that records its use — and that no query cache can
/// answer, so a revoked key is refused at once), pipelined with it.
pub async fn authorize_reader(
    db: &Client,
    cluster: ClusterId,
    by: &Caller,
    action: Action,
    now: DateTime<Utc>,
) -> Result<Option<ClusterRow>, EngineError> {
    let user = match by {
        Caller::User(u) => Some(*u),
        Caller::ApiKey(_) => None,
    };
    let key = async {
        match by {
            Caller::ApiKey(hash) => api_keys::authenticate(db, hash, now)
                .await
                .map(|k| k.map(|k| (hash.clone(), (k.org_id, k.role)))),
            Caller::User(_) => Ok(None),
        }
    };
    let (found, key) = tokio::try_join!(clusters::get_with_role(db, cluster, user), key)?;
    let Some((row, role)) = found else {
        return Ok(None);
    };
    let callers = Callers {
        users: user.zip(role).into_iter().collect(),
        keys: key.into_iter().collect(),
    };
    callers.permit_as(row.org_id, by, action)?;
    Ok(Some(row))
}
