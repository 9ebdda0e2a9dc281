//! Sealing secrets at rest with AES-256-GCM: the CA's private key, before it is stored.
//!
//! A sealed value is `version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//! Version 1 is AES-256-GCM with a random nonce per seal. The associated data given to the
//! cipher is the version byte followed by the caller's associated data, so neither the format
//! version nor the context the caller binds the secret to (say, the hub's id and the purpose)
//! can be changed without the value failing to open.
//!
//! Random 96-bit nonces are safe for far more seals than a CA key is ever sealed (NIST SP
//! 800-38D allows 2^32 per key).

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::{PkiError, random_bytes};

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// A 256-bit key that seals secrets at rest with AES-256-GCM.
///
/// Its `Debug` does not show the key. The key bytes are not wiped from memory on drop (that
/// would need the `zeroize` crate, which the workspace does not list).
pub struct SealingKey {
    bytes: [u8; 32],
    key: LessSafeKey,
}

impl SealingKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> SealingKey {
        SealingKey::from_array(random_bytes())
    }

    /// A key from the 32 bytes [`SealingKey::to_bytes`] gave.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealingKey, PkiError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| PkiError::SealingKeyLength(bytes.len()))?;
        Ok(SealingKey::from_array(array))
    }

    fn from_array(bytes: [u8; 32]) -> SealingKey {
        // AES-256 takes any 32 bytes as a key; aws-lc-rs refuses only other lengths.
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes are an AES-256 key");
        SealingKey { bytes, key: LessSafeKey::new(unbound) }
    }

    /// The key's 32 bytes, to be kept somewhere safer than the data it seals.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// Encrypts and authenticates `plaintext`, bound to `aad` (which is authenticated, not
    /// encrypted, and must be given again to open).
    ///
    /// # Panics
    ///
    /// For a plaintext beyond AES-GCM's limit of about 64 GiB, and when the operating system
    /// has no random source.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(associated_data(aad)), &mut in_out)
            .expect("the plaintext is within AES-GCM's length limit");
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// Checks and decrypts what [`SealingKey::seal`] gave for the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, PkiError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(PkiError::SealedFormat("it is empty".into()));
        };
        if version != VERSION {
            return Err(PkiError::SealedFormat(format!("format version {version} is not known; this build reads 1")));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(PkiError::SealedFormat(format!(
                "{} bytes are too short to hold a nonce and a tag",
                sealed.len()
            )));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| PkiError::Unseal)?;
        let mut in_out = ciphertext.to_vec();
        let plaintext_len = self
            .key
            .open_in_place(nonce, Aad::from(associated_data(aad)), &mut in_out)
            .map_err(|_| PkiError::Unseal)?
            .len();
        in_out.truncate(plaintext_len);
        Ok(in_out)
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

/// The associated data the cipher sees: the format version, then the caller's.
fn associated_data(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(VERSION);
    full.extend_from_slice(aad);
    full
}
