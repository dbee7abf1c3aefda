//! Opaque bearer secrets: prefixed so a leaked one can be recognised, random (256 bits),
//! stored only as a SHA-256 hash.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The kinds of opaque secret Berth hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Refresh token, `brt_…`.
    Refresh,
    /// API key for automation, `bak_…`.
    ApiKey,
    /// Organization invite code, `bic_…`.
    Invite,
    /// A cluster's agent token, `bat_…`: it only connects that cluster's agent.
    AgentToken,
}

impl Kind {
    /// The visible prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Refresh => "brt_",
            Kind::ApiKey => "bak_",
            Kind::Invite => "bic_",
            Kind::AgentToken => "bat_",
        }
    }
}

/// A freshly minted secret: shown once to its owner, stored only as `hash`.
pub struct Minted {
    /// The secret text to hand out.
    pub secret: String,
    /// What the database keeps.
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted").finish_non_exhaustive()
    }
}

/// Mints a new secret of `kind`.
pub fn mint(kind: Kind) -> Minted {
    let bytes: [u8; 32] = super::random_bytes();
    let secret = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes));
    let hash = digest(&secret);
    Minted { secret, hash }
}

/// The stored hash of a presented secret, or `None` when it cannot be one of `kind`
/// (wrong prefix or length): rejected before any database work.
pub fn hash_presented(kind: Kind, presented: &str) -> Option<Vec<u8>> {
    let body = presented.strip_prefix(kind.prefix())?;
    let valid = body.len() == 43
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| digest(presented))
}

/// A short, stable, non-reversible name for a value (its SHA-256, base64url), for keys that
/// must not carry the value itself.
pub fn fingerprint(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_are_prefixed_unique_and_hash_back() {
        let a = mint(Kind::Refresh);
        let b = mint(Kind::Refresh);
        assert!(a.secret.starts_with("brt_"));
        assert_ne!(a.secret, b.secret);
        assert_eq!(
            hash_presented(Kind::Refresh, &a.secret),
            Some(a.hash.clone())
        );
        assert!(!format!("{a:?}").contains(&a.secret));
    }

    #[test]
    fn every_kind_has_its_own_prefix() {
        let kinds = [Kind::Refresh, Kind::ApiKey, Kind::Invite, Kind::AgentToken];
        for a in kinds {
            for b in kinds {
                assert_eq!(a == b, a.prefix() == b.prefix(), "{a:?} {b:?}");
            }
        }
        let token = mint(Kind::AgentToken);
        assert!(token.secret.starts_with("bat_"));
        assert_eq!(hash_presented(Kind::ApiKey, &token.secret), None);
        assert_eq!(
            hash_presented(Kind::AgentToken, &token.secret),
            Some(token.hash)
        );
    }

    #[test]
    fn wrong_kind_or_shape_is_rejected_without_hashing() {
        let a = mint(Kind::ApiKey);
        assert_eq!(hash_presented(Kind::Refresh, &a.secret), None);
        assert_eq!(hash_presented(Kind::ApiKey, "bak_short"), None);
        assert_eq!(
            hash_presented(Kind::ApiKey, &format!("{}!", &a.secret[..46])),
            None
        );
    }
}
