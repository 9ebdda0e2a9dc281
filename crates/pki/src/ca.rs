//! The certificate authority: a generated root or an operator's CA, and what it signs.
//!
//! Profiles (RFC 5280):
//!
//! - Generated root: ECDSA P-256, subject CN as given, CA:TRUE with pathLenConstraint 0 (it
//!   signs end entities only), keyUsage keyCertSign and cRLSign, subjectKeyIdentifier, valid
//!   from an hour ago for ten years.
//! - Device: subject CN = the URN, subjectAltName URI = the URN, extendedKeyUsage clientAuth,
//!   keyUsage digitalSignature, CA:FALSE, subject and authority key identifiers, the caller's
//!   serial and validity, the key from the checked request.
//! - Server: a fresh P-256 key, subjectAltName DNS names and IP addresses as given (the first
//!   is also the CN), extendedKeyUsage serverAuth, otherwise as a device certificate.
//! - CRL: v2 with the authority key identifier and the CRL number, no reason codes.
//!
//! Every certificate and CRL is signed with the CA's key by rcgen, which signs ECDSA with the
//! hash that matches the curve and RSA with PKCS#1 v1.5 and SHA-256.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use jiff::{Timestamp, ToSpan, tz::TimeZone};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::{CheckedCsr, PkiError, Serial, pem_encode, sha256_hex};

/// What to say when rcgen cannot write a CA's subject name back exactly.
const UNREPRODUCIBLE: &str = "its subject name may have one attribute per RDN and no attribute type twice";

/// The hub's CA: its certificate, the chain above it when it is an operator's intermediate,
/// and its signing key.
///
/// Its `Debug` shows the subject and never the key.
pub struct CertificateAuthority {
    /// The CA's certificate first, then each one's issuer.
    chain_der: Vec<Vec<u8>>,
    issuer: Issuer<'static, KeyPair>,
    /// What the CA's subjectKeyIdentifier says, or how rcgen derives it when there is none;
    /// CRLs carry it as their authority key identifier.
    key_identifier: KeyIdMethod,
    subject: String,
    not_after: Timestamp,
}

/// A certificate the CA signed for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub der: Vec<u8>,
    pub pem: String,
    pub serial: Serial,
    /// The end of the validity as written in the certificate, that is, to the second.
    pub not_after: Timestamp,
    /// The lowercase hexadecimal SHA-256 of `der`.
    pub fingerprint_sha256: String,
}

/// The hub's TLS server certificate chain and its private key.
///
/// Its `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The server certificate first, then the CA's chain ([`CertificateAuthority::chain_der`]).
    pub chain_der: Vec<Vec<u8>>,
    pub key_pkcs8_der: Vec<u8>,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("chain_der", &format_args!("[{} certificates]", self.chain_der.len()))
            .field("key_pkcs8_der", &"..")
            .finish()
    }
}

impl CertificateAuthority {
    /// A new self-signed ECDSA P-256 root named `common_name` (see the module documentation for
    /// its profile).
    pub fn generate(common_name: &str) -> Result<CertificateAuthority, PkiError> {
        if common_name.trim().is_empty() || common_name.chars().count() > 64 {
            return Err(PkiError::Name(format!(
                "a CA's common name has 1 to 64 characters (RFC 5280 ub-common-name); {common_name:?} does not"
            )));
        }
        let now = Timestamp::now();
        let ten_years = now
            .to_zoned(TimeZone::UTC)
            .checked_add(10.years())
            .map_err(|e| PkiError::Validity(format!("ten years from now: {e}")))?
            .timestamp();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from_slice(Serial::random().as_bytes()));
        set_validity(&mut params, now - 1.hour(), ten_years)?;
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        CertificateAuthority::from_parts(vec![certificate.der().to_vec()], key.serialized_der())
    }

    /// An operator's own CA, for example an intermediate of their PKI: `chain_pem` holds the CA
    /// certificate first, optionally followed by its issuers up to the root; `key_pem` the CA's
    /// PKCS#8 private key ("PRIVATE KEY"). The checks are those of
    /// [`CertificateAuthority::from_parts`].
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<CertificateAuthority, PkiError> {
        let chain_der =
            crate::pem_certificates(chain_pem).map_err(|e| PkiError::Pem(format!("the certificate chain: {e}")))?;
        if chain_der.is_empty() {
            return Err(PkiError::Pem("the certificate chain has no \"CERTIFICATE\" block".into()));
        }
        CertificateAuthority::from_parts(chain_der, &pem_pkcs8_key(key_pem)?)
    }

    /// The CA from its chain ([`CertificateAuthority::chain_der`]) and its PKCS#8 key
    /// ([`CertificateAuthority::key_pkcs8_der`]), as after unsealing a stored CA.
    ///
    /// Checks that the first certificate is a CA (basicConstraints CA:TRUE; keyCertSign and
    /// cRLSign when it has a keyUsage), that each further certificate issued the one before it,
    /// and that the key belongs to the CA certificate. Last it signs a probe certificate and
    /// checks that it chains to the CA exactly: rcgen re-encodes the issuer name, and a name it
    /// cannot reproduce byte for byte (several attributes in one RDN, the same attribute type
    /// twice) would make every certificate it signs fail to verify.
    ///
    /// Validity is not checked: an expired CA still loads, and [`CertificateAuthority::not_after`]
    /// tells.
    pub fn from_parts(chain_der: Vec<Vec<u8>>, key_pkcs8_der: &[u8]) -> Result<CertificateAuthority, PkiError> {
        let Some(ca_der) = chain_der.first() else {
            return Err(PkiError::Chain("it holds no certificate".into()));
        };
        let ca = parse_certificate(ca_der)?;
        check_is_ca(&ca)?;
        for (position, pair) in chain_der.windows(2).enumerate() {
            let (child, parent) = (parse_certificate(&pair[0])?, parse_certificate(&pair[1])?);
            if child.verify_signature(Some(parent.public_key())).is_err() {
                return Err(PkiError::Chain(format!(
                    "certificate {} ({}) did not issue certificate {} ({}); give the CA first, then each issuer",
                    position + 2,
                    parent.subject(),
                    position + 1,
                    child.subject()
                )));
            }
        }

        let key = KeyPair::try_from(&PrivatePkcs8KeyDer::from(key_pkcs8_der))
            .map_err(|e| PkiError::Key(format!("it is not a PKCS#8 ECDSA, Ed25519 or RSA key ({e})")))?;
        if key.public_key_raw() != ca.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::KeyMismatch);
        }
        let key_identifier = ca
            .iter_extensions()
            .find_map(|extension| match extension.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        let subject = ca.subject().to_string();
        let not_after = timestamp(ca.validity().not_after.timestamp())?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.as_slice()), key)
            .map_err(|e| PkiError::Chain(format!("rcgen cannot sign as {subject} ({e}); {UNREPRODUCIBLE}")))?;
        probe(&issuer, &ca)?;
        Ok(CertificateAuthority { chain_der, issuer, key_identifier, subject, not_after })
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.chain_der[0]
    }

    /// The CA certificate first, then the certificates above it when it is an operator's
    /// intermediate.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        self.chain_der.clone()
    }

    /// The CA certificate as PEM (the certificate only, not the chain above it).
    pub fn certificate_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.certificate_der())
    }

    /// The CA's private key, PKCS#8 DER, to be sealed (see [`crate::SealingKey`]) before it is
    /// stored. It is a plain `Vec`: the copy is not wiped from memory when dropped.
    pub fn key_pkcs8_der(&self) -> Vec<u8> {
        self.issuer.key().serialize_der()
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }

    /// A device certificate for `csr`'s key (see the module documentation for its profile).
    ///
    /// `urn` must already be validated by the caller; it only has to be ASCII here. The
    /// request's own names and extensions are ignored.
    pub fn issue_device(
        &self,
        csr: &CheckedCsr,
        urn: &str,
        serial: &Serial,
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Result<IssuedCertificate, PkiError> {
        let uri = rcgen::string::Ia5String::try_from(urn)
            .map_err(|_| PkiError::Name(format!("a device URN must be ASCII; {urn:?} is not")))?;
        let mut params = end_entity(common_name_only(urn), serial, ExtendedKeyUsagePurpose::ClientAuth);
        params.subject_alt_names = vec![SanType::URI(uri)];
        set_validity(&mut params, not_before, not_after)?;
        let certificate = params.signed_by(&csr.public_key, &self.issuer)?;
        let der = certificate.der().to_vec();
        Ok(IssuedCertificate {
            pem: pem_encode("CERTIFICATE", &der),
            fingerprint_sha256: sha256_hex(&der),
            der,
            serial: *serial,
            not_after: to_the_second(not_after)?,
        })
    }

    /// The hub's TLS server certificate with a fresh P-256 key, valid from an hour ago until
    /// `not_after`, for `names` (DNS names and IP addresses; at least one).
    pub fn issue_server(&self, names: &[String], not_after: Timestamp) -> Result<ServerIdentity, PkiError> {
        let Some(first) = names.first() else {
            return Err(PkiError::Name("a server certificate needs at least one DNS name or IP address".into()));
        };
        let mut subject_alt_names = Vec::with_capacity(names.len());
        for name in names {
            subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(address) => SanType::IpAddress(address),
                Err(_) => {
                    let valid = rustls_pki_types::DnsName::try_from(name.as_str()).is_ok();
                    let dns = rcgen::string::Ia5String::try_from(name.as_str()).ok().filter(|_| valid);
                    SanType::DnsName(
                        dns.ok_or_else(|| PkiError::Name(format!("{name:?} is neither a DNS name nor an IP address")))?,
                    )
                }
            });
        }
        let mut params = end_entity(common_name_only(first), &Serial::random(), ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names = subject_alt_names;
        set_validity(&mut params, Timestamp::now() - 1.hour(), not_after)?;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        let mut chain_der = vec![certificate.der().to_vec()];
        chain_der.extend(self.chain_der.iter().cloned());
        Ok(ServerIdentity { chain_der, key_pkcs8_der: key.serialize_der() })
    }

    /// A signed CRL, DER: version 2, CRL number `number`, the `revoked` serials each with its
    /// revocation time and no reason code, valid from `this_update` to `next_update`.
    pub fn crl(
        &self,
        revoked: &[(Serial, Timestamp)],
        number: u64,
        this_update: Timestamp,
        next_update: Timestamp,
    ) -> Result<Vec<u8>, PkiError> {
        if next_update <= this_update {
            return Err(PkiError::Validity(format!(
                "a CRL's next update ({next_update}) must come after its this update ({this_update})"
            )));
        }
        let revoked_certs = revoked
            .iter()
            .map(|(serial, at)| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial.as_bytes()),
                    revocation_time: rcgen::date_time_ymd(1970, 1, 1) + since_epoch(*at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(1970, 1, 1) + since_epoch(this_update)?,
            next_update: rcgen::date_time_ymd(1970, 1, 1) + since_epoch(next_update)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            // rcgen derives the CRL's authority key identifier with this method, not the
            // issuer's, so an operator CA's own subjectKeyIdentifier must be handed over.
            key_identifier_method: self.key_identifier.clone(),
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

/// Signs a throwaway certificate as `issuer` and checks that it chains to `ca` exactly.
fn probe(issuer: &Issuer<'_, KeyPair>, ca: &X509Certificate<'_>) -> Result<(), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_only("probe");
    let signed = params.signed_by(&key, issuer)?;
    let probe = parse_certificate(signed.der())?;
    if probe.issuer().as_raw() != ca.subject().as_raw() {
        return Err(PkiError::Chain(format!(
            "the certificates it signs would not name {} exactly as their issuer; {UNREPRODUCIBLE}",
            ca.subject()
        )));
    }
    if probe.verify_signature(Some(ca.public_key())).is_err() {
        return Err(PkiError::KeyMismatch);
    }
    Ok(())
}

/// The parameters every end-entity certificate shares.
/// The PKCS#8 private key (DER) of a PEM "PRIVATE KEY"; other key formats are refused with how
/// to convert them.
pub fn pem_pkcs8_key(key_pem: &str) -> Result<Vec<u8>, PkiError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| PkiError::Pem(format!("the private key: {e}")))?;
    let convert = "convert it with `openssl pkcs8 -topk8 -nocrypt`";
    match key {
        PrivateKeyDer::Pkcs8(key) => Ok(key.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Sec1(_) => {
            Err(PkiError::Key(format!("the key is a SEC1 \"EC PRIVATE KEY\", not PKCS#8 \"PRIVATE KEY\"; {convert}")))
        }
        PrivateKeyDer::Pkcs1(_) => Err(PkiError::Key(format!(
            "the key is a PKCS#1 \"RSA PRIVATE KEY\", not PKCS#8 \"PRIVATE KEY\"; {convert}"
        ))),
        _ => Err(PkiError::Key(format!("the key is not PKCS#8 \"PRIVATE KEY\"; {convert}"))),
    }
}

fn end_entity(subject: DistinguishedName, serial: &Serial, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    // `ExplicitNoCa` writes basicConstraints CA:FALSE and the subjectKeyIdentifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params
}

fn common_name_only(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn check_is_ca(ca: &X509Certificate<'_>) -> Result<(), PkiError> {
    let constraints = ca
        .basic_constraints()
        .map_err(|e| PkiError::Certificate(format!("its basicConstraints do not parse ({e})")))?;
    if !constraints.is_some_and(|c| c.value.ca) {
        return Err(PkiError::NotACa(format!(
            "{} is not a CA certificate (no basicConstraints CA:TRUE)",
            ca.subject()
        )));
    }
    let usage = ca.key_usage().map_err(|e| PkiError::Certificate(format!("its keyUsage does not parse ({e})")))?;
    if let Some(usage) = usage {
        if !usage.value.key_cert_sign() {
            return Err(PkiError::NotACa(format!("the keyUsage of {} lacks keyCertSign", ca.subject())));
        }
        if !usage.value.crl_sign() {
            return Err(PkiError::NotACa(format!(
                "the keyUsage of {} lacks cRLSign, which the hub needs to revoke devices",
                ca.subject()
            )));
        }
    }
    Ok(())
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, certificate) =
        X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(format!("the DER does not parse ({e})")))?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate(format!("{} bytes follow the certificate", rest.len())));
    }
    Ok(certificate)
}

fn set_validity(params: &mut CertificateParams, not_before: Timestamp, not_after: Timestamp) -> Result<(), PkiError> {
    if not_after <= not_before {
        return Err(PkiError::Validity(format!("not after ({not_after}) must come after not before ({not_before})")));
    }
    // rcgen takes `time::OffsetDateTime`, a crate the workspace does not list; counting from
    // rcgen's own epoch value avoids naming it.
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before)?;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after)?;
    Ok(())
}

/// Whole seconds since 1970, as certificates count them; fractions are dropped.
fn since_epoch(at: Timestamp) -> Result<Duration, PkiError> {
    let seconds = u64::try_from(at.as_second())
        .map_err(|_| PkiError::Validity(format!("{at} is before 1970, which certificates here do not use")))?;
    Ok(Duration::from_secs(seconds))
}

fn to_the_second(at: Timestamp) -> Result<Timestamp, PkiError> {
    timestamp(at.as_second())
}

pub(crate) fn timestamp(seconds: i64) -> Result<Timestamp, PkiError> {
    Timestamp::from_second(seconds).map_err(|e| PkiError::Validity(format!("{seconds} s since 1970: {e}")))
}
