//! Access tokens: short-lived EdDSA (Ed25519) JWTs with `kid`, `iss`, `aud`, `sub`, `exp`, `iat`.
//!
//! Keys are configured as text so they can live in Worker secrets:
//! the signing key is `<kid>:<base64url 32-byte seed>`; retired keys that must still verify
//! during a rotation are `<kid>:<base64url public key>` separated by commas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use ed25519_compact::{KeyPair, PublicKey, SecretKey, Seed};
use jwt_compact::alg::Ed25519;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions, UntrustedToken};
use serde::{Deserialize, Serialize};

use crate::domain::ids::UserId;

/// Lifetime of an access token.
pub const ACCESS_TOKEN_SECONDS: i64 = 15 * 60;

/// Verified tokens remembered per isolate (about 1 MB at most); see [`TokenKeys::verify`].
const VERIFIED_CACHE_ENTRIES: usize = 4096;

/// The claims Berth puts into an access token besides the registered time claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct BerthClaims {
    iss: String,
    aud: String,
    sub: UserId,
}

/// Why a presented token was refused (all become 401; the reason is for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT at all.
    #[error("malformed token")]
    Malformed,
    /// `alg` other than EdDSA (including `none`).
    #[error("unsupported algorithm")]
    Algorithm,
    /// Missing or unknown `kid`.
    #[error("unknown signing key")]
    UnknownKey,
    /// Signature or claim structure invalid.
    #[error("invalid signature")]
    Signature,
    /// `exp` passed.
    #[error("token expired")]
    Expired,
    /// Wrong issuer or audience.
    #[error("token not meant for this service")]
    Audience,
}

/// A key configuration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key configuration: {0}")]
pub struct KeyConfigError(pub String);

/// Token → (subject, expiry) of tokens that verified.
type Verified = HashMap<String, (UserId, DateTime<Utc>)>;

/// The token service: one signing key and every key that verifies.
#[derive(Clone)]
pub struct TokenKeys {
    kid: String,
    signing: SecretKey,
    verifying: Vec<(String, PublicKey)>,
    issuer: String,
    audience: String,
    /// Tokens whose signature and claims already verified with these keys: token → (subject,
    /// expiry). Shared by clones, so one isolate verifies each token's signature once.
    verified: Arc<Mutex<Verified>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Reads the signing key and the optional list of retired public keys.
    pub fn from_config(
        signing: &str,
        retired: Option<&str>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyConfigError> {
        let (kid, seed) = split_key(signing)?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| KeyConfigError("the signing seed must be 32 bytes".into()))?;
        let pair = KeyPair::from_seed(Seed::new(seed));
        let mut verifying = vec![(kid.clone(), pair.pk)];
        for entry in retired
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.trim().is_empty())
        {
            let (old_kid, bytes) = split_key(entry.trim())?;
            let pk = PublicKey::from_slice(&bytes)
                .map_err(|_| KeyConfigError(format!("public key {old_kid} is not Ed25519")))?;
            verifying.push((old_kid, pk));
        }
        Ok(Self {
            kid,
            signing: pair.sk,
            verifying,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            verified: Arc::default(),
        })
    }

    /// A new random signing key in configuration form (`make dev` writes one on first run).
    pub fn generate_config() -> String {
        let seed: [u8; 32] = super::random_bytes();
        let kid: [u8; 6] = super::random_bytes();
        format!(
            "{}:{}",
            URL_SAFE_NO_PAD.encode(kid),
            URL_SAFE_NO_PAD.encode(seed)
        )
    }

    /// The public half of this configuration's signing key, in retired-key form.
    pub fn public_config(&self) -> String {
        format!(
            "{}:{}",
            self.kid,
            URL_SAFE_NO_PAD.encode(*self.verifying[0].1)
        )
    }

    /// Issues an access token for `user`, valid from `now` for [`ACCESS_TOKEN_SECONDS`].
    pub fn issue(&self, user: UserId, now: DateTime<Utc>) -> String {
        let header = Header::empty().with_key_id(self.kid.clone());
        let mut claims = Claims::new(BerthClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user,
        });
        claims.issued_at = Some(now);
        claims.expiration = Some(now + Duration::seconds(ACCESS_TOKEN_SECONDS));
        Ed25519
            .token(&header, &claims, &self.signing)
            .expect("serialising fixed claims cannot fail")
    }

    /// Verifies a token at time `now` and returns its subject.
    ///
    /// A token that verified once is remembered with its expiry, and later presentations of
    /// the very same string skip the signature check (Ed25519 verification is most of an
    /// authenticated request's CPU in Wasm, and clients reuse a token for its whole life), as
    /// API gateways' JWT caches do. The answer cannot differ: it depends only on the token
    /// and these keys, except for expiry, which is checked on every call.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<UserId, TokenError> {
        self.verify_until(token, now).map(|(user, _)| user)
    }

    /// [`TokenKeys::verify`], answering also when the token expires.
    pub fn verify_until(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(UserId, DateTime<Utc>), TokenError> {
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|cache| cache.get(token).copied());
        if let Some((user, expires)) = remembered {
            return if now <= expires {
                Ok((user, expires))
            } else {
                Err(TokenError::Expired)
            };
        }
        let (user, expires) = self.verify_signed(token, now)?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.retain(|_, (_, exp)| *exp >= now);
                if cache.len() >= VERIFIED_CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(token.to_string(), (user, expires));
        }
        Ok((user, expires))
    }

    /// The full check: algorithm, key, signature, expiry, issuer and audience.
    fn verify_signed(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(UserId, DateTime<Utc>), TokenError> {
        let untrusted = UntrustedToken::new(token).map_err(|_| TokenError::Malformed)?;
        if untrusted.algorithm() != "EdDSA" {
            return Err(TokenError::Algorithm);
        }
        let kid = untrusted
            .header()
            .key_id
            .as_deref()
            .ok_or(TokenError::UnknownKey)?;
        let key = self
            .verifying
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, pk)| pk)
            .ok_or(TokenError::UnknownKey)?;
        let token = Ed25519
            .validator::<BerthClaims>(key)
            .validate(&untrusted)
            .map_err(|_| TokenError::Signature)?;
        let claims = token.claims();
        let options = TimeOptions::new(Duration::zero(), move || now);
        claims
            .validate_expiration(&options)
            .map_err(|_| TokenError::Expired)?;
        let expires = claims.expiration.ok_or(TokenError::Expired)?;
        if claims.custom.iss != self.issuer || claims.custom.aud != self.audience {
            return Err(TokenError::Audience);
        }
        Ok((claims.custom.sub, expires))
    }

    /// The JSON Web Key Set publishing every verifying key.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .verifying
            .iter()
            .map(|(kid, pk)| {
                let mut jwk = serde_json::to_value(JsonWebKey::from(pk))
                    .unwrap_or_else(|_| serde_json::json!({}));
                if let Some(obj) = jwk.as_object_mut() {
                    obj.insert("kid".into(), kid.clone().into());
                    obj.insert("alg".into(), "EdDSA".into());
                    obj.insert("use".into(), "sig".into());
                }
                jwk
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

fn split_key(text: &str) -> Result<(String, Vec<u8>), KeyConfigError> {
    let (kid, b64) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| KeyConfigError("expected <kid>:<base64url key>".into()))?;
    if kid.is_empty() {
        return Err(KeyConfigError("the key id is empty".into()));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| KeyConfigError(format!("key {kid} is not base64url")))?;
    Ok((kid.to_string(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::from_config(&TokenKeys::generate_config(), None, "berth", "berth-api")
            .expect("valid config")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let k = keys();
        let user = UserId::new();
        let t = k.issue(user, now());
        assert_eq!(k.verify(&t, now()), Ok(user));
        let later = now() + Duration::seconds(ACCESS_TOKEN_SECONDS + 1);
        assert_eq!(k.verify(&t, later), Err(TokenError::Expired));
    }

    #[test]
    fn other_keys_audiences_and_alg_none_are_refused() {
        let k = keys();
        let other = keys();
        let t = other.issue(UserId::new(), now());
        assert_eq!(k.verify(&t, now()), Err(TokenError::UnknownKey));

        let wrong_aud = TokenKeys::from_config(&k_config(&k), None, "berth", "other").expect("cfg");
        let t = wrong_aud.issue(UserId::new(), now());
        assert_eq!(k.verify(&t, now()), Err(TokenError::Audience));

        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
        );
        assert_eq!(k.verify(&none, now()), Err(TokenError::Algorithm));
        assert_eq!(k.verify("garbage", now()), Err(TokenError::Malformed));
    }

    fn k_config(k: &TokenKeys) -> String {
        format!(
            "{}:{}",
            k.kid,
            URL_SAFE_NO_PAD.encode(k.signing.seed().as_ref())
        )
    }

    #[test]
    fn a_retired_key_still_verifies_during_rotation_and_is_published() {
        let old = keys();
        let new = TokenKeys::from_config(
            &TokenKeys::generate_config(),
            Some(&old.public_config()),
            "berth",
            "berth-api",
        )
        .expect("config");
        let t = old.issue(UserId::new(), now());
        assert!(new.verify(&t, now()).is_ok());
        let jwks = new.jwks();
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1]["kid"], old.kid.as_str());
        assert_eq!(keys[0]["crv"], "Ed25519");
    }

    #[test]
    fn a_remembered_token_still_expires_and_tampering_is_still_caught() {
        let k = keys();
        let user = UserId::new();
        let t = k.issue(user, now());
        assert_eq!(k.verify(&t, now()), Ok(user));
        // Served from the cache now; a clone shares it, expiry still applies.
        assert_eq!(k.clone().verify(&t, now()), Ok(user));
        let last = now() + Duration::seconds(ACCESS_TOKEN_SECONDS);
        assert_eq!(
            k.verify(&t, last),
            Ok(user),
            "valid through its exp, as uncached"
        );
        let later = last + Duration::seconds(1);
        assert_eq!(k.verify(&t, later), Err(TokenError::Expired));
        // Any other string is checked in full.
        // (The signature's first character: the last one also carries padding bits.)
        let at = t.rfind('.').expect("three parts") + 1;
        let flipped = if t[at..].starts_with('A') { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &t[..at], &t[at + 1..]);
        assert_eq!(k.verify(&forged, now()), Err(TokenError::Signature));
        // Another key set never sees this cache.
        assert_eq!(keys().verify(&t, now()), Err(TokenError::UnknownKey));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let k = keys();
        for i in 0..(VERIFIED_CACHE_ENTRIES + 10) {
            let t = k.issue(UserId::new(), now() + Duration::milliseconds(i as i64));
            assert!(k.verify(&t, now()).is_ok());
        }
        let len = k.verified.lock().map(|c| c.len()).unwrap_or(usize::MAX);
        assert!(len <= VERIFIED_CACHE_ENTRIES, "{len}");
    }

    #[test]
    fn bad_configuration_is_reported() {
        assert!(TokenKeys::from_config("nokid", None, "i", "a").is_err());
        assert!(TokenKeys::from_config("k:AAAA", None, "i", "a").is_err());
    }
}
