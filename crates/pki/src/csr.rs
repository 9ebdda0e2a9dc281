//! PKCS#10 certificate requests as devices send them, checked before anything is signed.
//!
//! Accepted encodings, told apart by their first bytes:
//!
//! ```text
//! body   = der | pem | base64
//! der    = the DER CertificationRequest itself (starts with 0x30, a SEQUENCE)
//! pem    = ... "-----BEGIN CERTIFICATE REQUEST-----" base64 "-----END CERTIFICATE REQUEST-----" ...
//!          (the older label "NEW CERTIFICATE REQUEST" too)
//! base64 = base64 of the DER, whitespace and line breaks anywhere, padding optional
//!          (RFC 7030 §4.2.1: EST clients send it with Content-Transfer-Encoding: base64)
//! ```
//!
//! The checks, in order: size (at most [`MAX_CSR_BYTES`]), encoding, DER structure with nothing
//! after it, the key (ECDSA P-256 or P-384, Ed25519, RSA of 2048 to 8192 bits), the signature
//! algorithm (no SHA-1), and last the signature itself, which proves the sender holds the
//! private key. The key is checked before the signature so that a weak key is named as such:
//! aws-lc-rs would otherwise just fail to verify a 1024-bit RSA signature.
//!
//! Nothing here panics on any input; the `csr` fuzz target holds it to that.

use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::sha256_hex;

/// The largest request body accepted, in bytes. A P-256 request is about 400 bytes of DER, an
/// RSA-8192 one about 2.2 KiB, and base64 and PEM add a third.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// The largest RSA modulus accepted, in bits: aws-lc-rs verifies nothing bigger.
const MAX_RSA_BITS: usize = 8192;

/// Why a certificate request was refused, in words for the person operating the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the request is empty")]
    Empty,
    #[error("the request is {size} bytes; at most {MAX_CSR_BYTES} are accepted")]
    TooLarge { size: usize },
    #[error("not a PKCS#10 certificate request: {0}")]
    NotARequest(String),
    #[error("RSA keys must have at least 2048 bits; this one has {bits}")]
    RsaKeyTooSmall { bits: usize },
    #[error("RSA keys of more than {MAX_RSA_BITS} bits are not accepted; this one has {bits}")]
    RsaKeyTooLarge { bits: usize },
    #[error("ECDSA keys must be on the curve P-256 or P-384; this one is on {0}")]
    UnsupportedCurve(String),
    #[error("keys of type {0} are not accepted; use ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits")]
    UnsupportedKeyType(String),
    #[error("the request is signed with {0}, which is not accepted; sign it with SHA-256 or stronger")]
    WeakSignatureAlgorithm(String),
    #[error(
        "the request is signed with {0}, which is not supported; use ECDSA with SHA-256 or SHA-384, Ed25519, \
         or RSA with SHA-256, SHA-384 or SHA-512"
    )]
    UnsupportedSignatureAlgorithm(String),
    #[error("the request's signature does not verify")]
    BadSignature,
}

/// A certificate request whose encoding, key and proof of possession have been checked.
///
/// Only its public key goes into a certificate: the names, extensions and attributes a device
/// asks for are shown here for the caller to compare with what it knows, and otherwise ignored.
#[derive(Clone)]
pub struct CheckedCsr {
    der: Vec<u8>,
    subject_common_name: Option<String>,
    san_uris: Vec<String>,
    key_description: String,
    spki_der: Vec<u8>,
    pub(crate) public_key: rcgen::SubjectPublicKeyInfo,
    challenge_password: Option<String>,
}

impl CheckedCsr {
    /// The request's DER, as received (after PEM or base64 decoding).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The first common name of the requested subject, when it is a string.
    pub fn subject_common_name(&self) -> Option<&str> {
        self.subject_common_name.as_deref()
    }

    /// The URIs of the requested subjectAltName extension, as written.
    pub fn san_uris(&self) -> &[String] {
        &self.san_uris
    }

    /// The key in words: "ECDSA P-256", "ECDSA P-384", "Ed25519" or "RSA 3072".
    pub fn key_description(&self) -> &str {
        &self.key_description
    }

    /// The requested key as a DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The lowercase hexadecimal SHA-256 of [`CheckedCsr::public_key_der`].
    pub fn public_key_fingerprint(&self) -> String {
        sha256_hex(&self.spki_der)
    }

    /// The PKCS#9 challengePassword attribute, which EST and SCEP clients use for a one-time
    /// enrollment secret.
    pub fn challenge_password(&self) -> Option<&str> {
        self.challenge_password.as_deref()
    }
}

impl fmt::Debug for CheckedCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The challenge password is a secret, so only its presence is shown.
        f.debug_struct("CheckedCsr")
            .field("subject_common_name", &self.subject_common_name)
            .field("san_uris", &self.san_uris)
            .field("key_description", &self.key_description)
            .field("public_key_fingerprint", &self.public_key_fingerprint())
            .field("challenge_password", &self.challenge_password.as_ref().map(|_| ".."))
            .finish()
    }
}

/// Decodes and checks a PKCS#10 request as a device sends it (see the module documentation for
/// the encodings and the checks).
pub fn parse_csr(body: &[u8]) -> Result<CheckedCsr, CsrError> {
    if body.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { size: body.len() });
    }
    let der = decode(body)?;
    check(der)
}

fn decode(body: &[u8]) -> Result<Vec<u8>, CsrError> {
    // DER is taken as it is: its trailing bytes may well look like whitespace.
    if body.first() == Some(&0x30) {
        return Ok(body.to_vec());
    }
    let text = body.trim_ascii();
    if text.is_empty() {
        return Err(CsrError::Empty);
    }
    match find(text, b"-----BEGIN ") {
        Some(begin) => pem_contents(&text[begin + b"-----BEGIN ".len()..]),
        None => base64_decode(text),
    }
}

/// The decoded contents of the first PEM block in `after_begin` (the text after its
/// "-----BEGIN "), which must be a certificate request.
fn pem_contents(after_begin: &[u8]) -> Result<Vec<u8>, CsrError> {
    let label_end =
        find(after_begin, b"-----").ok_or_else(|| not_a_request("the PEM BEGIN line does not end with \"-----\""))?;
    let label = &after_begin[..label_end];
    if label != b"CERTIFICATE REQUEST" && label != b"NEW CERTIFICATE REQUEST" {
        let shown: String = String::from_utf8_lossy(label).chars().take(40).collect();
        return Err(not_a_request(&format!("the PEM block is a {shown:?}, not a \"CERTIFICATE REQUEST\"")));
    }
    let contents = &after_begin[label_end + b"-----".len()..];
    let mut end_line = b"-----END ".to_vec();
    end_line.extend_from_slice(label);
    end_line.extend_from_slice(b"-----");
    let end = find(contents, &end_line).ok_or_else(|| not_a_request("the PEM block has no END line"))?;
    base64_decode(&contents[..end])
}

fn base64_decode(text: &[u8]) -> Result<Vec<u8>, CsrError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(CsrError::Empty);
    }
    ENGINE.decode(&compact).map_err(|e| not_a_request(&format!("it is neither DER, PEM nor base64 ({e})")))
}

fn check(der: Vec<u8>) -> Result<CheckedCsr, CsrError> {
    let (rest, request) = X509CertificationRequest::from_der(&der).map_err(|e| {
        if X509Certificate::from_der(&der).is_ok() {
            return not_a_request("it is a certificate, not a request for one");
        }
        let reason = match e {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e.to_string(),
            x509_parser::nom::Err::Incomplete(_) => "it is truncated".to_owned(),
        };
        not_a_request(&format!("the DER is malformed or truncated ({reason})"))
    })?;
    if !rest.is_empty() {
        return Err(not_a_request(&format!("{} bytes follow the request", rest.len())));
    }
    let info = &request.certification_request_info;
    let spki = &info.subject_pki;
    let key_description = describe_key(spki)?;
    check_signature_algorithm(&request.signature_algorithm.algorithm.to_id_string())?;
    request.verify_signature().map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => CsrError::UnsupportedSignatureAlgorithm(signature_algorithm_name(
            &request.signature_algorithm.algorithm.to_id_string(),
        )),
        _ => CsrError::BadSignature,
    })?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| not_a_request(&format!("its public key cannot be put into a certificate ({e})")))?;

    let subject_common_name = info.subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    let san_uris = request
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|extension| match extension {
            ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
            _ => None,
        })
        .flatten()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect();
    let challenge_password = info.iter_attributes().find_map(|attribute| match attribute.parsed_attribute() {
        ParsedCriAttribute::ChallengePassword(password) => Some(password.0.clone()),
        _ => None,
    });
    let spki_der = spki.raw.to_vec();
    Ok(CheckedCsr { der, subject_common_name, san_uris, key_description, spki_der, public_key, challenge_password })
}

/// The key in words, or why it is refused.
fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<String, CsrError> {
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(not_a_request("its RSA public key does not parse"));
            };
            let bits = significant_bits(rsa.modulus);
            if bits < 2048 {
                Err(CsrError::RsaKeyTooSmall { bits })
            } else if bits > MAX_RSA_BITS {
                Err(CsrError::RsaKeyTooLarge { bits })
            } else {
                Ok(format!("RSA {bits}"))
            }
        }
        "1.2.840.10045.2.1" => {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => Ok("ECDSA P-256".into()),
                Some("1.3.132.0.34") => Ok("ECDSA P-384".into()),
                Some(other) => Err(CsrError::UnsupportedCurve(curve_name(other))),
                None => Err(CsrError::UnsupportedCurve("a curve given by explicit parameters".into())),
            }
        }
        "1.3.101.112" => Ok("Ed25519".into()),
        other => Err(CsrError::UnsupportedKeyType(key_type_name(other))),
    }
}

/// The number of bits of a big-endian unsigned integer, leading zeros not counted.
fn significant_bits(integer: &[u8]) -> usize {
    let Some(first) = integer.iter().position(|&b| b != 0) else { return 0 };
    let magnitude = &integer[first..];
    magnitude.len() * 8 - magnitude[0].leading_zeros() as usize
}

fn check_signature_algorithm(oid: &str) -> Result<(), CsrError> {
    match oid {
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3" => {
            Err(CsrError::WeakSignatureAlgorithm(signature_algorithm_name(oid)))
        }
        _ => Ok(()),
    }
}

fn signature_algorithm_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "RSA with SHA-1",
        "1.2.840.10045.4.1" => "ECDSA with SHA-1",
        "1.2.840.10040.4.3" => "DSA with SHA-1",
        "2.16.840.1.101.3.4.3.2" => "DSA with SHA-256",
        "1.2.840.113549.1.1.4" => "RSA with MD5",
        "1.2.840.10045.4.3.4" => "ECDSA with SHA-512",
        "1.3.101.113" => "Ed448",
        _ => return format!("the algorithm {oid}"),
    };
    name.into()
}

fn curve_name(oid: &str) -> String {
    let name = match oid {
        "1.3.132.0.35" => "P-521",
        "1.3.132.0.10" => "secp256k1",
        "1.2.840.10045.3.1.1" => "P-192",
        "1.3.132.0.33" => "P-224",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        _ => return format!("the curve {oid}"),
    };
    name.into()
}

fn key_type_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.10040.4.1" => "DSA",
        "1.3.101.113" => "Ed448",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        _ => return oid.to_owned(),
    };
    name.into()
}

fn not_a_request(reason: &str) -> CsrError {
    CsrError::NotARequest(reason.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
