//! Credentials: password hashing, access tokens (EdDSA JWT) and opaque secrets
//! (refresh tokens, API keys, invite codes, agent tokens). Pure: time and randomness come in from outside
//! or from the OS generator.

pub mod access;
pub mod opaque;
pub mod password;

use serde::{Deserialize, Serialize};

use crate::domain::ids::UserId;

/// An authenticated caller: a user (by a valid access token) or an API key (by the hash of
/// the presented `bak_…` secret, still to be looked up).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", content = "id", rename_all = "snake_case")]
pub enum Caller {
    /// A user.
    User(UserId),
    /// An API key, by the hash of its secret.
    ApiKey(Vec<u8>),
}

impl Caller {
    /// The user, when a user calls.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Caller::User(u) => Some(*u),
            Caller::ApiKey(_) => None,
        }
    }
}

/// Fills `buf` from the operating system's CSPRNG (Web Crypto on wasm32).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS generator failing is not recoverable; workerd and Linux always provide one.
    getrandom::fill(&mut buf).expect("the system random number generator is unavailable");
    buf
}
