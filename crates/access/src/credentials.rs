//! Secrets: API tokens and passwords. A token is 32 random bytes shown once as
//! `tbt_<64 hex digits>` and stored only as its SHA-256 (a token has the entropy of a key, so a
//! fast hash loses nothing and lets a lookup by hash find it). A password is stored as an
//! Argon2id PHC string with a random salt and checked with Argon2's constant-time comparison.
//! Neither a secret nor its hash is ever logged: [`TokenSecret`] prints as `<secret>`.

use std::fmt;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use sha2::{Digest, Sha256};

/// What every token starts with, so that scanners can recognise leaked ones.
pub const TOKEN_PREFIX: &str = "tbt_";

/// The shortest password accepted.
pub const MIN_PASSWORD_LENGTH: usize = 12;

/// A token as the client holds it. Shown once, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<secret>)")
    }
}

/// The stored form of a token: lowercase hex of its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the system has no randomness to make a secret from")]
    NoRandomness,
    #[error("a password needs at least {MIN_PASSWORD_LENGTH} characters")]
    PasswordTooShort,
    #[error("the password could not be hashed")]
    Hashing,
}

/// A new random token and its hash.
pub fn new_token() -> Result<(TokenSecret, TokenHash), CredentialError> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| CredentialError::NoRandomness)?;
    let secret = TokenSecret(format!("{TOKEN_PREFIX}{}", hex(&bytes)));
    let hash = hash_token(secret.as_str());
    Ok((secret, hash))
}

/// The hash a token is stored and looked up by; `None` for text that cannot be a token.
pub fn token_hash(text: &str) -> Option<TokenHash> {
    let digits = text.strip_prefix(TOKEN_PREFIX)?;
    (digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hash_token(text))
}

fn hash_token(text: &str) -> TokenHash {
    TokenHash(hex(&Sha256::digest(text.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The Argon2id PHC string of a new password.
pub fn hash_password(password: &str) -> Result<String, CredentialError> {
    if password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(CredentialError::PasswordTooShort);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| CredentialError::Hashing)
}

/// Whether `password` matches the stored PHC string (false for a malformed one).
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}
