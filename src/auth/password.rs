//! Password hashing with argon2id, stored as PHC strings.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
pub const MEMORY_KIB: u32 = 19_456;
/// Passes over memory.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("argon2 parameters are constants within range");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt into a PHC string.
pub fn hash(password: &str) -> String {
    let salt: [u8; 16] = super::random_bytes();
    hasher()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .expect("hashing with valid constant parameters cannot fail")
        .to_string()
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password, or a stored hash that cannot be read.
    No,
    /// Correct.
    Yes,
    /// Correct, but hashed with other parameters: store a fresh hash.
    YesRehash,
}

/// Checks `password` against a stored PHC string, using the parameters stored with it.
pub fn verify(password: &str, phc: &str) -> Verified {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return Verified::No;
    };
    if hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_err()
    {
        return Verified::No;
    }
    let current = Params::try_from(&parsed).ok();
    let wanted = hasher().params().clone();
    let same = parsed.algorithm.as_str() == "argon2id"
        && current.is_some_and(|p| {
            p.m_cost() == wanted.m_cost()
                && p.t_cost() == wanted.t_cost()
                && p.p_cost() == wanted.p_cost()
        });
    if same {
        Verified::Yes
    } else {
        Verified::YesRehash
    }
}

/// A hash of a random password: verifying against it costs the same as a real check, so an
/// unknown e-mail takes as long to reject as a wrong password.
pub fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$J8LLn7ADDuHkoaAF4lD2TqWdjmQzRwQx2bAgoKt6Pj8"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_use_owasp_parameters() {
        let h = hash("correct horse battery");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify("correct horse battery", &h), Verified::Yes);
        assert_eq!(verify("wrong horse battery", &h), Verified::No);
        assert_ne!(hash("correct horse battery"), h, "salts differ");
    }

    #[test]
    fn weaker_old_hashes_ask_for_a_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).expect("params"),
        )
        .hash_password_with_salt(b"old password!", b"0123456789abcdef")
        .expect("hash")
        .to_string();
        assert_eq!(verify("old password!", &weak), Verified::YesRehash);
    }

    #[test]
    fn garbage_hashes_never_verify() {
        assert_eq!(verify("anything at all", "not a phc string"), Verified::No);
        assert_eq!(verify("anything at all", dummy_hash()), Verified::No);
    }
}
