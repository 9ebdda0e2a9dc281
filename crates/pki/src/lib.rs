//! The hub's built-in certificate authority and the TLS configuration of its listeners.
//!
//! What is here:
//!
//! - [`CertificateAuthority`]: a generated ECDSA P-256 root, or an operator's own CA (for example
//!   an intermediate of their PKI) loaded from PEM. It issues device certificates for checked
//!   certificate requests ([`CertificateAuthority::issue_device`]), the hub's own TLS server
//!   certificate ([`CertificateAuthority::issue_server`]) and CRLs ([`CertificateAuthority::crl`]).
//! - [`parse_csr`]: a PKCS#10 request as a device sends it (PEM, base64 of DER as RFC 7030 EST
//!   clients send it, or DER), with its proof of possession verified and weak keys refused.
//! - [`certs_only`]: the RFC 7030 / RFC 5652 "certs-only" reply of EST.
//! - [`SealingKey`]: AES-256-GCM for secrets at rest, the CA's private key above all.
//! - [`server_config`] and [`client_identity`]: rustls for the HTTPS and MQTTS listeners, with
//!   client certificates checked against the CA and its CRLs, and what a verified client
//!   certificate says about the device holding it.
//!
//! Every key this crate generates is ECDSA P-256, and all cryptography goes through aws-lc-rs
//! (rcgen's and rustls' `aws_lc_rs` backends, set explicitly, never a process default).
//!
//! Architecture invariant: `pki` depends on no other Thingbase crate, on no database and on no
//! HTTP or MQTT crate. It knows certificates, keys and TLS configuration; where they are stored,
//! which device a URN belongs to and how a request arrived are its callers' business. It does
//! no I/O. Domain types carry no serde.

mod ca;
mod csr;
mod pkcs7;
mod seal;
mod tls;

#[cfg(test)]
mod tests;

use std::fmt;

pub use ca::{CertificateAuthority, IssuedCertificate, ServerIdentity, pem_pkcs8_key};
pub use csr::{CheckedCsr, CsrError, MAX_CSR_BYTES, parse_csr};
pub use pkcs7::certs_only;
pub use seal::SealingKey;
pub use tls::{ClientAuth, ClientIdentity, PROTOCOL_VERSIONS, client_identity, server_config};

/// Why a CA, certificate, key, sealed secret or TLS configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("not a usable certificate: {0}")]
    Certificate(String),
    #[error("not a usable private key: {0}")]
    Key(String),
    #[error("the private key does not belong to the CA certificate")]
    KeyMismatch,
    #[error("the certificate cannot act as the hub's CA: {0}")]
    NotACa(String),
    #[error("the CA certificate chain is not usable: {0}")]
    Chain(String),
    #[error("not PEM as expected: {0}")]
    Pem(String),
    #[error("not a usable name: {0}")]
    Name(String),
    #[error("not a usable validity period: {0}")]
    Validity(String),
    #[error("not a certificate serial number: {0}")]
    Serial(String),
    #[error("a sealing key has exactly 32 bytes; this one has {0}")]
    SealingKeyLength(usize),
    #[error("not sealed data: {0}")]
    SealedFormat(String),
    #[error("the sealed data does not open: wrong key, wrong associated data, or tampered with")]
    Unseal,
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verification cannot be set up: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// A certificate serial number as this CA assigns them: 16 random bytes, read as a positive
/// big-endian integer whose first byte is non-zero.
///
/// Keeping the first byte in `0x01..=0x7f` makes the DER INTEGER exactly these 16 bytes (no
/// sign byte in front, no leading zero stripped), so a serial read back from a certificate or
/// CRL compares equal byte for byte. That leaves 127 bits of randomness, well above the 64 the
/// CA/Browser Forum asks for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial([u8; 16]);

impl Serial {
    /// A fresh serial from the operating system's random source.
    pub fn random() -> Serial {
        loop {
            let mut bytes: [u8; 16] = random_bytes();
            bytes[0] &= 0x7f;
            // One draw in 128 has a zero first byte; drawing again keeps the width fixed.
            if bytes[0] != 0 {
                return Serial(bytes);
            }
        }
    }

    /// A serial from its 16 bytes, as [`Serial::as_bytes`] gave them.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Serial, PkiError> {
        match bytes[0] {
            0 => Err(PkiError::Serial("the first byte is zero".into())),
            0x80.. => Err(PkiError::Serial("the top bit is set, so the number would be negative".into())),
            _ => Ok(Serial(bytes)),
        }
    }

    /// A serial from 32 hexadecimal digits (either case), as [`Serial::to_hex`] wrote them.
    pub fn from_hex(hex: &str) -> Result<Serial, PkiError> {
        let digits: Option<Vec<u8>> = hex.bytes().map(hex_value).collect();
        let Some(digits) = digits else {
            return Err(PkiError::Serial(format!("{hex:?} is not hexadecimal")));
        };
        if digits.len() != 32 {
            return Err(PkiError::Serial(format!("expected 32 hexadecimal digits, found {}", digits.len())));
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = pair[0] << 4 | pair[1];
        }
        Serial::from_bytes(bytes)
    }

    /// The 32 lowercase hexadecimal digits of the serial.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The serial's 16 bytes, big-endian, as they stand in the certificate.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// `N` bytes from the operating system's random source.
///
/// # Panics
///
/// When the operating system has no random source to give. Nothing here can go on without one,
/// and no caller could do anything sensible with the error, so it is not returned.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The lowercase hexadecimal SHA-256 of `bytes`, as fingerprints are shown.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// The certificates of a PEM text (the "CERTIFICATE" blocks, other blocks skipped), DER, in
/// order.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|certificate| certificate.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(e.to_string()))
}

/// The SubjectPublicKeyInfo (DER) of a PEM "PUBLIC KEY".
pub fn pem_public_key(pem: &str) -> Result<Vec<u8>, PkiError> {
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|e| PkiError::Pem(format!("the public key: {e}")))
}

/// PEM with the usual 64-character lines and a final newline.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so every 64-byte chunk is valid UTF-8 on its own.
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
