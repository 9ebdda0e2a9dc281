//! rustls configuration of the hub's TLS listeners, and what a verified client certificate
//! says about the device holding it.
//!
//! TLS 1.3 and 1.2 only. rustls implements neither TLS 1.0 nor 1.1 (nor SSL), so there is
//! nothing older to switch off. The aws-lc-rs provider is given explicitly, so no process-wide
//! default provider is needed or consulted.
//!
//! Client certificates are verified by rustls' WebPKI verifier against the given roots: the
//! chain, the validity, extendedKeyUsage clientAuth and, when CRLs are given, revocation of the
//! client's own certificate. Only the end entity is checked against the CRLs, because the hub
//! publishes CRLs for the certificates it issues; an operator's intermediate is revoked by the
//! operator's PKI. With CRLs given, a certificate whose issuer has no CRL among them is refused
//! (rustls' default): give one CRL per root, or none to turn revocation checking off. An
//! expired CRL (past its next update) is still used, so a hub that fails to renew its CRL keeps
//! admitting the devices it has not revoked rather than locking every one of them out.

use std::sync::Arc;

use jiff::Timestamp;
use rustls::crypto::aws_lc_rs;
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::ca::timestamp;
use crate::{PkiError, Serial, ServerIdentity, hex, sha256_hex};

/// The protocol versions every listener offers, newest first.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// Whether a listener asks for a client certificate or insists on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may come without a certificate, and one it presents is still verified: HTTPS,
    /// where browsers and devices enrolling with a token have none yet.
    Optional,
    /// Every client must present a certificate that verifies: MQTTS.
    Required,
}

/// A rustls server configuration for `identity`, verifying client certificates against
/// `client_roots` (DER certificates; normally the CA's own) and `crls` (DER), offering the
/// `alpn` protocols in the given order.
pub fn server_config(
    identity: &ServerIdentity,
    client_roots: &[Vec<u8>],
    crls: &[Vec<u8>],
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for root in client_roots {
        roots.add(CertificateDer::from(root.clone()))?;
    }
    let crls = crls.iter().map(|crl| CertificateRevocationListDer::from(crl.clone()));
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation();
    let verifier = match client_auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    }
    .build()?;
    let chain = identity.chain_der.iter().map(|der| CertificateDer::from(der.clone())).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8_der.clone()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subjectAltName URIs that start with "urn:dev:" (in any case), as written.
    pub urns: Vec<String>,
    /// The serial number's bytes as they stand in the certificate. Device certificates this CA
    /// issues have 16 (see [`ClientIdentity::device_serial`]); an operator's CA may use any
    /// length, hence bytes rather than a [`Serial`].
    pub serial: Vec<u8>,
    /// `serial` in lowercase hexadecimal.
    pub serial_hex: String,
    pub not_after: Timestamp,
    /// The lowercase hexadecimal SHA-256 of the certificate's DER.
    pub fingerprint_sha256: String,
}

impl ClientIdentity {
    /// The serial as this CA assigns them, when it is one.
    pub fn device_serial(&self) -> Option<Serial> {
        let bytes: [u8; 16] = self.serial.as_slice().try_into().ok()?;
        Serial::from_bytes(bytes).ok()
    }
}

/// Reads the identity of a client from its certificate, DER, which rustls has already verified
/// (this does not verify anything).
pub fn client_identity(cert_der: &[u8]) -> Result<ClientIdentity, PkiError> {
    let (rest, certificate) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::Certificate(format!("the DER does not parse ({e})")))?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate(format!("{} bytes follow the certificate", rest.len())));
    }
    let names = certificate
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(format!("its subjectAltName does not parse ({e})")))?;
    let urns = names
        .iter()
        .flat_map(|extension| &extension.value.general_names)
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("urn:dev:")) => {
                Some((*uri).to_owned())
            }
            _ => None,
        })
        .collect();
    let serial = certificate.raw_serial().to_vec();
    Ok(ClientIdentity {
        urns,
        serial_hex: hex(&serial),
        serial,
        not_after: timestamp(certificate.validity().not_after.timestamp())?,
        fingerprint_sha256: sha256_hex(cert_der),
    })
}
