//! Credentials: password hashing, access tokens (EdDSA JWT) and opaque secrets
//! (refresh tokens, API keys, invite codes). Pure: time and randomness come in from outside
//! or from the OS generator.

pub mod access;
pub mod opaque;
pub mod password;

/// Fills `buf` from the operating system's CSPRNG (Web Crypto on wasm32).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS generator failing is not recoverable; workerd and Linux always provide one.
    getrandom::fill(&mut buf).expect("the system random number generator is unavailable");
    buf
}
