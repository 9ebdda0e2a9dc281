//! Unit tests: sealing, the CA and what it issues (read back with x509-parser and, where it is
//! installed, checked by OpenSSL), CSR parsing and its error messages, certs-only, and real
//! in-memory TLS handshakes through tokio-rustls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use expect_test::{Expect, expect};
use jiff::{Timestamp, ToSpan};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::*;

const URN: &str = "urn:dev:mac:0024befffe804ff1";

fn test_ca() -> CertificateAuthority {
    CertificateAuthority::generate("Thingbase test CA").expect("CA generates")
}

/// A device's request for `key`, as a device would make it with rcgen.
fn device_request(key: &KeyPair) -> rcgen::CertificateSigningRequest {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, URN);
    params.subject_alt_names = vec![SanType::URI(URN.try_into().expect("ASCII"))];
    params.serialize_request(key).expect("request serializes")
}

fn checked_request(key: &KeyPair) -> CheckedCsr {
    parse_csr(device_request(key).der()).expect("request is accepted")
}

/// A device key and a certificate for it from `ca`, valid from an hour ago for a day.
fn device(ca: &CertificateAuthority) -> (KeyPair, IssuedCertificate) {
    let key = KeyPair::generate().expect("key generates");
    let now = Timestamp::now();
    let issued = ca
        .issue_device(&checked_request(&key), URN, &Serial::random(), now - 1.hour(), now + 24.hours())
        .expect("device certificate issues");
    (key, issued)
}

fn parse_certificate(der: &[u8]) -> X509Certificate<'_> {
    let (rest, certificate) = X509Certificate::from_der(der).expect("certificate parses");
    assert!(rest.is_empty());
    certificate
}

fn subject_key_identifier(certificate: &X509Certificate<'_>) -> Option<Vec<u8>> {
    certificate.iter_extensions().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
        _ => None,
    })
}

fn authority_key_identifier<'a>(extensions: impl IntoIterator<Item = &'a ParsedExtension<'a>>) -> Option<Vec<u8>> {
    extensions.into_iter().find_map(|e| match e {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|id| id.0.to_vec()),
        _ => None,
    })
}

/// Runs `openssl` in a fresh directory holding `files`, giving whether it succeeded and what it
/// printed, or `None` (with a note) where OpenSSL is not installed.
fn openssl(args: &[&str], files: &[(&str, &[u8])]) -> Option<(bool, String)> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "thingbase-pki-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).expect("temporary file");
    }
    let output = std::process::Command::new("openssl").args(args).current_dir(&dir).output();
    let _ = std::fs::remove_dir_all(&dir);
    match output {
        Ok(output) => Some((
            output.status.success(),
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: openssl is not on PATH; skipping the check with `openssl {}`", args.join(" "));
            None
        }
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

// --- Serial ---

#[test]
fn random_serials_are_positive_sixteen_byte_integers() {
    for _ in 0..500 {
        let serial = Serial::random();
        let first = serial.as_bytes()[0];
        assert!((1..0x80).contains(&first), "{serial:?}");
        assert_eq!(Serial::from_hex(&serial.to_hex()).expect("round trip"), serial);
    }
    assert_ne!(Serial::random(), Serial::random());
}

#[test]
fn serial_from_hex_accepts_either_case_and_explains_refusals() {
    let serial = Serial::from_hex("7F00000000000000000000000000ABCD").expect("valid");
    assert_eq!(serial.to_hex(), "7f00000000000000000000000000abcd");
    let check = |hex: &str, expect: Expect| expect.assert_eq(&Serial::from_hex(hex).unwrap_err().to_string());
    check("7f", expect!["not a certificate serial number: expected 32 hexadecimal digits, found 2"]);
    check(
        "7g000000000000000000000000000000",
        expect![[r#"not a certificate serial number: "7g000000000000000000000000000000" is not hexadecimal"#]],
    );
    check(
        "80000000000000000000000000000001",
        expect![[r#"not a certificate serial number: the top bit is set, so the number would be negative"#]],
    );
    check("00000000000000000000000000000001", expect![[r#"not a certificate serial number: the first byte is zero"#]]);
    check(
        "7é000000000000000000000000000000",
        expect![[r#"not a certificate serial number: "7é000000000000000000000000000000" is not hexadecimal"#]],
    );
}

// --- SealingKey ---

#[test]
fn sealed_secret_opens_with_the_same_key_and_associated_data() {
    let key = SealingKey::generate();
    let sealed = key.seal(b"the CA key", b"hub-1/ca-key");
    assert_eq!(sealed.len(), 1 + 12 + b"the CA key".len() + 16);
    assert_eq!(sealed[0], 1, "format version");
    assert_eq!(key.open(&sealed, b"hub-1/ca-key").expect("opens"), b"the CA key");
    let reloaded = SealingKey::from_bytes(&key.to_bytes()).expect("32 bytes");
    assert_eq!(reloaded.open(&sealed, b"hub-1/ca-key").expect("opens"), b"the CA key");
    assert_eq!(key.open(&key.seal(b"", b""), b"").expect("empty opens"), b"");
}

#[test]
fn sealing_twice_uses_a_fresh_nonce() {
    let key = SealingKey::generate();
    assert_ne!(key.seal(b"same", b"aad"), key.seal(b"same", b"aad"));
}

#[test]
fn tampered_sealed_data_does_not_open() {
    let key = SealingKey::generate();
    let sealed = key.seal(b"the CA key", b"aad");
    // Every byte after the version: nonce, ciphertext and tag.
    for position in 1..sealed.len() {
        let mut tampered = sealed.clone();
        tampered[position] ^= 0x01;
        assert!(matches!(key.open(&tampered, b"aad"), Err(PkiError::Unseal)), "byte {position}");
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(key.open(&longer, b"aad"), Err(PkiError::Unseal)));
}

#[test]
fn wrong_associated_data_or_key_does_not_open() {
    let key = SealingKey::generate();
    let sealed = key.seal(b"the CA key", b"hub-1/ca-key");
    assert!(matches!(key.open(&sealed, b"hub-2/ca-key"), Err(PkiError::Unseal)));
    assert!(matches!(key.open(&sealed, b""), Err(PkiError::Unseal)));
    assert!(matches!(SealingKey::generate().open(&sealed, b"hub-1/ca-key"), Err(PkiError::Unseal)));
}

#[test]
fn sealed_format_and_key_length_errors_say_what_is_wrong() {
    let key = SealingKey::generate();
    let mut other_version = key.seal(b"x", b"");
    other_version[0] = 2;
    let check = |result: Result<Vec<u8>, PkiError>, expect: Expect| expect.assert_eq(&result.unwrap_err().to_string());
    check(key.open(&[], b""), expect![[r#"not sealed data: it is empty"#]]);
    check(
        key.open(&other_version, b""),
        expect![[r#"not sealed data: format version 2 is not known; this build reads 1"#]],
    );
    check(key.open(&[1; 28], b""), expect![[r#"not sealed data: 28 bytes are too short to hold a nonce and a tag"#]]);
    expect![[r#"a sealing key has exactly 32 bytes; this one has 31"#]]
        .assert_eq(&SealingKey::from_bytes(&[0; 31]).unwrap_err().to_string());
}

#[test]
fn sealing_key_debug_does_not_show_the_key() {
    let key = SealingKey::from_bytes(&[0xab; 32]).expect("32 bytes");
    expect![[r#"SealingKey(..)"#]].assert_eq(&format!("{key:?}"));
}

// --- CertificateAuthority ---

#[test]
fn generated_ca_is_a_p256_root_for_end_entities_valid_ten_years() {
    let ca = test_ca();
    let certificate = parse_certificate(ca.certificate_der());
    assert_eq!(certificate.subject().to_string(), "CN=Thingbase test CA");
    assert_eq!(certificate.issuer().as_raw(), certificate.subject().as_raw());
    certificate.verify_signature(None).expect("self-signed");
    let constraints = certificate.basic_constraints().expect("parses").expect("present");
    assert!(constraints.critical);
    assert!(constraints.value.ca);
    assert_eq!(constraints.value.path_len_constraint, Some(0));
    let usage = certificate.key_usage().expect("parses").expect("present").value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    assert!(!usage.digital_signature() && !usage.key_encipherment());
    assert!(subject_key_identifier(&certificate).is_some());
    let algorithm = &certificate.public_key().algorithm;
    assert_eq!(algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
    assert_eq!(
        algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string()).as_deref(),
        Some("1.2.840.10045.3.1.7")
    );
    let validity = certificate.validity();
    let days = (validity.not_after.timestamp() - Timestamp::now().as_second()) / 86_400;
    assert!((3650..=3654).contains(&days), "{days} days");
    assert!(validity.not_before.timestamp() < Timestamp::now().as_second());
    assert_eq!(certificate.raw_serial().len(), 16);
    assert_eq!(ca.not_after().as_second(), validity.not_after.timestamp());
    assert_eq!(ca.chain_der(), vec![ca.certificate_der().to_vec()]);
    assert!(ca.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(ca.certificate_pem().lines().all(|line| line.len() <= 64));
}

#[test]
fn ca_reloaded_from_sealed_parts_has_the_same_certificate_and_still_signs() {
    let ca = test_ca();
    let sealing_key = SealingKey::generate();
    let sealed_key = sealing_key.seal(&ca.key_pkcs8_der(), b"ca-key");
    let chain = ca.chain_der();

    let reloaded = CertificateAuthority::from_parts(chain, &sealing_key.open(&sealed_key, b"ca-key").expect("opens"))
        .expect("reloads");
    assert_eq!(reloaded.certificate_der(), ca.certificate_der());
    assert_eq!(reloaded.key_pkcs8_der(), ca.key_pkcs8_der());
    let (_, issued) = device(&reloaded);
    let certificate = parse_certificate(&issued.der);
    let original = parse_certificate(ca.certificate_der());
    certificate.verify_signature(Some(original.public_key())).expect("signed by the same key");
    assert_eq!(certificate.issuer().as_raw(), original.subject().as_raw());
}

#[test]
fn ca_is_shareable_across_threads_and_its_debug_hides_the_key() {
    fn shareable<T: Send + Sync>() {}
    shareable::<CertificateAuthority>();
    shareable::<SealingKey>();
    let ca = test_ca();
    let shown = format!("{ca:?}");
    assert!(shown.starts_with(r#"CertificateAuthority { subject: "CN=Thingbase test CA", not_after: "#), "{shown}");
    assert!(shown.ends_with("chain_len: 1, .. }"), "{shown}");
    let identity = ca.issue_server(&["localhost".into()], Timestamp::now() + 24.hours()).expect("issues");
    expect![[r#"ServerIdentity { chain_der: [2 certificates], key_pkcs8_der: ".." }"#]]
        .assert_eq(&format!("{identity:?}"));
}

#[test]
fn ca_refuses_what_cannot_be_a_ca() {
    let ca = test_ca();
    let other = test_ca();
    let (device_key, issued) = device(&ca);
    let check = |result: Result<CertificateAuthority, PkiError>, expect: Expect| {
        expect.assert_eq(&result.unwrap_err().to_string());
    };
    check(
        CertificateAuthority::from_parts(ca.chain_der(), &other.key_pkcs8_der()),
        expect![[r#"the private key does not belong to the CA certificate"#]],
    );
    check(
        CertificateAuthority::from_parts(vec![issued.der.clone()], &device_key.serialize_der()),
        expect![[
            r#"the certificate cannot act as the hub's CA: CN=urn:dev:mac:0024befffe804ff1 is not a CA certificate (no basicConstraints CA:TRUE)"#
        ]],
    );
    check(
        CertificateAuthority::from_parts(vec![], &ca.key_pkcs8_der()),
        expect![[r#"the CA certificate chain is not usable: it holds no certificate"#]],
    );
    check(
        CertificateAuthority::from_parts(vec![b"garbage".to_vec()], &ca.key_pkcs8_der()),
        expect!["not a usable certificate: the DER does not parse (Parsing Error: NomError(Eof))"],
    );
    let mut trailing = ca.certificate_der().to_vec();
    trailing.push(0);
    check(
        CertificateAuthority::from_parts(vec![trailing], &ca.key_pkcs8_der()),
        expect![[r#"not a usable certificate: 1 bytes follow the certificate"#]],
    );
    check(
        CertificateAuthority::from_parts(ca.chain_der(), b"not a key"),
        expect![[
            r#"not a usable private key: it is not a PKCS#8 ECDSA, Ed25519 or RSA key (Could not parse key pair)"#
        ]],
    );
    check(
        CertificateAuthority::generate(""),
        expect![[
            r#"not a usable name: a CA's common name has 1 to 64 characters (RFC 5280 ub-common-name); "" does not"#
        ]],
    );
}

/// An operator's PKI: a root, and below it an intermediate for the hub whose subject key
/// identifier is not what rcgen would derive (as with OpenSSL's SHA-1 identifiers).
struct OperatorPki {
    root_der: Vec<u8>,
    intermediate_pem: String,
    root_pem: String,
    intermediate_key_pem: String,
}

fn operator_pki() -> OperatorPki {
    let root_key = KeyPair::generate().expect("key");
    let mut root_params = CertificateParams::default();
    root_params.distinguished_name = rcgen::DistinguishedName::new();
    root_params.distinguished_name.push(DnType::OrganizationName, "Example Operator");
    root_params.distinguished_name.push(DnType::CommonName, "Example Root CA");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = rcgen::CertifiedIssuer::self_signed(root_params, root_key).expect("root");

    let intermediate_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Example Operator");
    params.distinguished_name.push(DnType::CommonName, "Example Hub CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.key_identifier_method = KeyIdMethod::PreSpecified(vec![0x42; 20]);
    params.use_authority_key_identifier_extension = true;
    let intermediate = params.signed_by(&intermediate_key, &root).expect("intermediate");
    OperatorPki {
        root_der: root.der().to_vec(),
        intermediate_pem: intermediate.pem(),
        root_pem: root.pem(),
        intermediate_key_pem: intermediate_key.serialize_pem(),
    }
}

#[test]
fn operator_intermediate_loads_with_its_chain_and_issues_under_its_own_key_identifier() {
    let pki = operator_pki();
    let ca =
        CertificateAuthority::from_pem(&format!("{}{}", pki.intermediate_pem, pki.root_pem), &pki.intermediate_key_pem)
            .expect("operator CA loads");
    assert_eq!(ca.chain_der().len(), 2);
    assert_eq!(ca.chain_der()[1], pki.root_der);
    let intermediate = parse_certificate(ca.certificate_der());
    assert_eq!(subject_key_identifier(&intermediate), Some(vec![0x42; 20]));

    let (_, issued) = device(&ca);
    let certificate = parse_certificate(&issued.der);
    certificate.verify_signature(Some(intermediate.public_key())).expect("signed by the intermediate");
    assert_eq!(certificate.issuer().to_string(), "O=Example Operator, CN=Example Hub CA");
    let extensions: Vec<_> = certificate.iter_extensions().map(|e| e.parsed_extension()).collect();
    assert_eq!(authority_key_identifier(extensions), Some(vec![0x42; 20]));

    let crl = ca.crl(&[], 1, Timestamp::now(), Timestamp::now() + 24.hours()).expect("CRL");
    let (_, crl) = CertificateRevocationList::from_der(&crl).expect("CRL parses");
    crl.verify_signature(intermediate.public_key()).expect("signed by the intermediate");
    let extensions: Vec<_> = crl.extensions().iter().map(|e| e.parsed_extension()).collect();
    assert_eq!(authority_key_identifier(extensions), Some(vec![0x42; 20]), "the CRL names the intermediate's key");
}

#[test]
fn operator_ca_refusals_say_what_to_fix() {
    let pki = operator_pki();
    let check = |chain: &str, key: &str, expect: Expect| {
        expect.assert_eq(&CertificateAuthority::from_pem(chain, key).unwrap_err().to_string());
    };
    check(
        &format!("{}{}", pki.root_pem, pki.intermediate_pem),
        &pki.intermediate_key_pem,
        expect![[
            r#"the CA certificate chain is not usable: certificate 2 (O=Example Operator, CN=Example Hub CA) did not issue certificate 1 (O=Example Operator, CN=Example Root CA); give the CA first, then each issuer"#
        ]],
    );
    let sec1 = pki.intermediate_key_pem.replace("PRIVATE KEY", "EC PRIVATE KEY");
    check(
        &pki.intermediate_pem,
        &sec1,
        expect![[
            r#"not a usable private key: the key is a SEC1 "EC PRIVATE KEY", not PKCS#8 "PRIVATE KEY"; convert it with `openssl pkcs8 -topk8 -nocrypt`"#
        ]],
    );
    check(
        "",
        &pki.intermediate_key_pem,
        expect![[r#"not PEM as expected: the certificate chain has no "CERTIFICATE" block"#]],
    );
    check(&pki.intermediate_pem, "", expect![[r#"not PEM as expected: the private key: no items found"#]]);
}

#[test]
fn ca_whose_subject_rcgen_cannot_reproduce_is_refused() {
    // rcgen keeps one attribute per RDN and one value per attribute type, so the issuer name
    // in the certificates it signed would not match these subjects, and none would verify.
    let key = KeyPair::generate().expect("key");
    let check = |name: &[u8], expect: Expect| {
        let certificate = hand_made_ca(&key, name);
        parse_certificate(&certificate).verify_signature(None).expect("a valid self-signed certificate");
        let error = CertificateAuthority::from_parts(vec![certificate], key.serialized_der()).unwrap_err();
        expect.assert_eq(&error.to_string());
    };
    let attribute = |oid: u8, value: &[u8]| der(0x30, &[der(0x06, &[0x55, 0x04, oid]), der(0x0c, value)].concat());
    let (common_name, unit) = (3, 11);
    check(
        &der(0x30, &der(0x31, &[attribute(common_name, b"a"), attribute(common_name, b"b")].concat())),
        expect![
            "the CA certificate chain is not usable: rcgen cannot sign as CN=a + CN=b (Could not parse certificate); its subject name may have one attribute per RDN and no attribute type twice"
        ],
    );
    check(
        &der(
            0x30,
            &[
                der(0x31, &attribute(unit, b"a")),
                der(0x31, &attribute(unit, b"b")),
                der(0x31, &attribute(common_name, b"c")),
            ]
            .concat(),
        ),
        expect![
            "the CA certificate chain is not usable: the certificates it signs would not name OU=a, OU=b, CN=c exactly as their issuer; its subject name may have one attribute per RDN and no attribute type twice"
        ],
    );
}

/// One DER element (lengths below 64 KiB), for certificates rcgen cannot write.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        len @ 0..0x80 => out.push(len as u8),
        len @ 0x80..0x100 => out.extend_from_slice(&[0x81, len as u8]),
        len => {
            out.push(0x82);
            out.extend_from_slice(&u16::try_from(len).expect("below 64 KiB").to_be_bytes());
        }
    }
    out.extend_from_slice(contents);
    out
}

/// A self-signed CA certificate (CA:TRUE, no other extension) with the DER `name` as subject
/// and issuer, signed with `key`.
fn hand_made_ca(key: &KeyPair, name: &[u8]) -> Vec<u8> {
    use rcgen::SigningKey;
    let ecdsa_sha256 = der(0x30, &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
    let validity = der(0x30, &[der(0x17, b"200101000000Z"), der(0x18, b"20990101000000Z")].concat());
    let ca_true = der(0x04, &der(0x30, &der(0x01, &[0xff])));
    let basic_constraints = der(0x30, &[der(0x06, &[0x55, 0x1d, 0x13]), der(0x01, &[0xff]), ca_true].concat());
    let tbs = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[1]),
            ecdsa_sha256.clone(),
            name.to_vec(),
            validity,
            name.to_vec(),
            key.subject_public_key_info(),
            der(0xa3, &der(0x30, &basic_constraints)),
        ]
        .concat(),
    );
    let mut signature = vec![0];
    signature.extend_from_slice(&key.sign(&tbs).expect("signs"));
    der(0x30, &[tbs, ecdsa_sha256, der(0x03, &signature)].concat())
}

// --- Device certificates ---

#[test]
fn device_certificate_carries_the_urn_client_auth_serial_and_validity() {
    let ca = test_ca();
    let key = KeyPair::generate().expect("key");
    let request = checked_request(&key);
    let serial = Serial::random();
    let not_before = Timestamp::from_second(1_900_000_000).expect("valid");
    let not_after = "2031-06-01T12:00:00.75Z".parse::<Timestamp>().expect("valid");
    let issued = ca.issue_device(&request, URN, &serial, not_before, not_after).expect("issues");

    assert_eq!(issued.serial, serial);
    assert_eq!(issued.not_after, "2031-06-01T12:00:00Z".parse::<Timestamp>().expect("valid"), "to the second");
    assert_eq!(issued.fingerprint_sha256, sha256_hex(&issued.der));
    assert_eq!(issued.fingerprint_sha256.len(), 64);
    assert!(
        issued.pem.starts_with("-----BEGIN CERTIFICATE-----\n") && issued.pem.ends_with("-----END CERTIFICATE-----\n")
    );

    let certificate = parse_certificate(&issued.der);
    let ca_certificate = parse_certificate(ca.certificate_der());
    certificate.verify_signature(Some(ca_certificate.public_key())).expect("signed by the CA");
    assert_eq!(certificate.issuer().as_raw(), ca_certificate.subject().as_raw());
    assert_eq!(certificate.subject().to_string(), format!("CN={URN}"));
    assert_eq!(certificate.raw_serial(), serial.as_bytes());
    assert_eq!(certificate.validity().not_before.timestamp(), 1_900_000_000);
    assert_eq!(certificate.validity().not_after.timestamp(), issued.not_after.as_second());
    assert_eq!(certificate.public_key().raw, request.public_key_der(), "the requested key, exactly");

    let names = &certificate.subject_alternative_name().expect("parses").expect("present").value.general_names;
    assert_eq!(names, &vec![GeneralName::URI(URN)]);
    let usage = certificate.extended_key_usage().expect("parses").expect("present").value;
    assert!(usage.client_auth);
    assert!(!usage.server_auth && !usage.any && usage.other.is_empty());
    let key_usage = certificate.key_usage().expect("parses").expect("present").value;
    assert!(key_usage.digital_signature());
    assert!(!key_usage.key_cert_sign() && !key_usage.crl_sign());
    let constraints = certificate.basic_constraints().expect("parses").expect("present").value;
    assert!(!constraints.ca);
    assert!(!certificate.is_ca());
    assert!(subject_key_identifier(&certificate).is_some());
    let extensions: Vec<_> = certificate.iter_extensions().map(|e| e.parsed_extension()).collect();
    assert_eq!(authority_key_identifier(extensions), subject_key_identifier(&ca_certificate));
}

#[test]
fn device_certificates_certify_exactly_the_requested_key_of_every_accepted_type() {
    let ca = test_ca();
    let now = Timestamp::now();
    let keys = [
        ("ECDSA P-256", KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)),
        ("ECDSA P-384", KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)),
        ("Ed25519", KeyPair::generate_for(&rcgen::PKCS_ED25519)),
        ("RSA 2048", KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)),
    ];
    for (description, key) in keys {
        let key = key.expect("key generates");
        let request = checked_request(&key);
        assert_eq!(request.key_description(), description);
        assert_eq!(request.public_key_der(), key.subject_public_key_info());
        let issued = ca.issue_device(&request, URN, &Serial::random(), now, now + 1.hour()).expect("issues");
        assert_eq!(parse_certificate(&issued.der).public_key().raw, request.public_key_der(), "{description}");
    }
}

#[test]
fn device_issuance_refuses_a_non_ascii_urn_and_an_empty_validity() {
    let ca = test_ca();
    let request = checked_request(&KeyPair::generate().expect("key"));
    let now = Timestamp::from_second(1_800_000_000).expect("valid");
    let check = |urn: &str, not_before: Timestamp, not_after: Timestamp, expect: Expect| {
        let error = ca.issue_device(&request, urn, &Serial::random(), not_before, not_after).unwrap_err();
        expect.assert_eq(&error.to_string());
    };
    check(
        "urn:dev:ops:ü",
        now,
        now + 1.hour(),
        expect![[r#"not a usable name: a device URN must be ASCII; "urn:dev:ops:ü" is not"#]],
    );
    check(
        URN,
        now,
        now,
        expect![[
            r#"not a usable validity period: not after (2027-01-15T08:00:00Z) must come after not before (2027-01-15T08:00:00Z)"#
        ]],
    );
    check(
        URN,
        Timestamp::from_second(-10).expect("valid"),
        now,
        expect![[
            r#"not a usable validity period: 1969-12-31T23:59:50Z is before 1970, which certificates here do not use"#
        ]],
    );
}

#[test]
fn client_identity_reads_the_urns_serial_validity_and_fingerprint() {
    let ca = test_ca();
    let (_, issued) = device(&ca);
    let identity = client_identity(&issued.der).expect("reads");
    assert_eq!(identity.urns, vec![URN.to_owned()]);
    assert_eq!(identity.serial, issued.serial.as_bytes().to_vec());
    assert_eq!(identity.serial_hex, issued.serial.to_hex());
    assert_eq!(identity.device_serial(), Some(issued.serial));
    assert_eq!(identity.not_after, issued.not_after);
    assert_eq!(identity.fingerprint_sha256, issued.fingerprint_sha256);
}

#[test]
fn client_identity_keeps_only_device_urns_as_written_and_any_serial_length() {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from(0x0102_u64));
    params.subject_alt_names = vec![
        SanType::URI("https://example.com/device".try_into().expect("ASCII")),
        SanType::URI("URN:DEV:ops:Acme-Sensor-42".try_into().expect("ASCII")),
        SanType::URI("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6".try_into().expect("ASCII")),
        SanType::DnsName("urn:dev:not-a-uri".try_into().expect("ASCII")),
        SanType::URI("urn:dev:mac:0024befffe804ff1".try_into().expect("ASCII")),
    ];
    let certificate = params.self_signed(&key).expect("self-signed");
    let identity = client_identity(certificate.der()).expect("reads");
    assert_eq!(identity.urns, vec!["URN:DEV:ops:Acme-Sensor-42".to_owned(), "urn:dev:mac:0024befffe804ff1".to_owned()]);
    assert_eq!(identity.serial, vec![0x01, 0x02]);
    assert_eq!(identity.serial_hex, "0102");
    assert_eq!(identity.device_serial(), None);
    expect!["not a usable certificate: the DER does not parse (Parsing Error: NomError(Eof))"]
        .assert_eq(&client_identity(b"not DER").unwrap_err().to_string());
}

// --- Server certificates ---

#[test]
fn server_certificate_names_dns_and_ip_with_server_auth_and_a_fresh_key() {
    let ca = test_ca();
    let not_after = Timestamp::now() + (24 * 90).hours();
    let names = ["hub.example.com".to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let identity = ca.issue_server(&names, not_after).expect("issues");
    assert_eq!(identity.chain_der.len(), 2);
    assert_eq!(identity.chain_der[1], ca.certificate_der());
    let certificate = parse_certificate(&identity.chain_der[0]);
    certificate.verify_signature(Some(parse_certificate(ca.certificate_der()).public_key())).expect("signed by the CA");
    assert_eq!(certificate.subject().to_string(), "CN=hub.example.com");
    let names = &certificate.subject_alternative_name().expect("parses").expect("present").value.general_names;
    assert_eq!(
        names,
        &vec![
            GeneralName::DNSName("hub.example.com"),
            GeneralName::DNSName("localhost"),
            GeneralName::IPAddress(&[127, 0, 0, 1]),
            GeneralName::IPAddress(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        ]
    );
    let usage = certificate.extended_key_usage().expect("parses").expect("present").value;
    assert!(usage.server_auth && !usage.client_auth);
    assert!(!certificate.basic_constraints().expect("parses").expect("present").value.ca);
    assert_eq!(certificate.validity().not_after.timestamp(), not_after.as_second());
    let key = KeyPair::try_from(identity.key_pkcs8_der.as_slice()).expect("PKCS#8 key");
    assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(certificate.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    let again = ca.issue_server(&["localhost".to_owned()], not_after).expect("issues");
    assert_ne!(again.key_pkcs8_der, identity.key_pkcs8_der, "a fresh key each time");
}

#[test]
fn server_certificate_refuses_names_that_are_neither_dns_nor_ip() {
    let ca = test_ca();
    let not_after = Timestamp::now() + 24.hours();
    let check = |names: &[&str], expect: Expect| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        expect.assert_eq(&ca.issue_server(&names, not_after).unwrap_err().to_string());
    };
    check(&[], expect![[r#"not a usable name: a server certificate needs at least one DNS name or IP address"#]]);
    check(&["hub example"], expect![[r#"not a usable name: "hub example" is neither a DNS name nor an IP address"#]]);
    check(
        &["localhost", "hüb.example"],
        expect![[r#"not a usable name: "hüb.example" is neither a DNS name nor an IP address"#]],
    );
}

// --- CRLs ---

#[test]
fn crl_lists_the_revoked_serials_with_their_dates_and_number() {
    let ca = test_ca();
    let (first, second) = (Serial::random(), Serial::random());
    let revoked_at = Timestamp::from_second(1_800_000_000).expect("valid");
    let this_update = Timestamp::from_second(1_800_000_100).expect("valid");
    let next_update = Timestamp::from_second(1_800_086_500).expect("valid");
    let der = ca.crl(&[(first, revoked_at), (second, this_update)], 7, this_update, next_update).expect("CRL");

    let (rest, crl) = CertificateRevocationList::from_der(&der).expect("CRL parses");
    assert!(rest.is_empty());
    let ca_certificate = parse_certificate(ca.certificate_der());
    crl.verify_signature(ca_certificate.public_key()).expect("signed by the CA");
    assert_eq!(crl.version().map(|v| v.0), Some(1), "v2");
    assert_eq!(crl.issuer().as_raw(), ca_certificate.subject().as_raw());
    assert_eq!(crl.crl_number(), Some(&x509_parser::num_bigint::BigUint::from(7_u32)));
    assert_eq!(crl.last_update().timestamp(), 1_800_000_100);
    assert_eq!(crl.next_update().map(|t| t.timestamp()), Some(1_800_086_500));
    let revoked: Vec<_> =
        crl.iter_revoked_certificates().map(|r| (r.raw_serial().to_vec(), r.revocation_date.timestamp())).collect();
    assert_eq!(revoked, vec![(first.as_bytes().to_vec(), 1_800_000_000), (second.as_bytes().to_vec(), 1_800_000_100)]);
    let extensions: Vec<_> = crl.extensions().iter().map(|e| e.parsed_extension()).collect();
    assert_eq!(authority_key_identifier(extensions), subject_key_identifier(&ca_certificate));

    let empty = ca.crl(&[], 8, this_update, next_update).expect("CRL");
    let (_, empty) = CertificateRevocationList::from_der(&empty).expect("CRL parses");
    assert_eq!(empty.iter_revoked_certificates().count(), 0);
}

#[test]
fn crl_refuses_a_next_update_that_is_not_after_this_update() {
    let ca = test_ca();
    let at = Timestamp::from_second(1_800_000_000).expect("valid");
    expect![[r#"not a usable validity period: a CRL's next update (2027-01-15T08:00:00Z) must come after its this update (2027-01-15T08:00:00Z)"#]]
        .assert_eq(&ca.crl(&[], 1, at, at).unwrap_err().to_string());
}

#[test]
fn openssl_verifies_a_device_certificate_and_sees_it_revoked_by_the_crl() {
    let ca = test_ca();
    let (_, issued) = device(&ca);
    let now = Timestamp::now();
    let crl = ca.crl(&[(issued.serial, now)], 1, now - 1.minute(), now + 24.hours()).expect("CRL");
    let crl_pem = pem_encode("X509 CRL", &crl);
    let ca_pem = ca.certificate_pem();
    let files: &[(&str, &[u8])] =
        &[("ca.pem", ca_pem.as_bytes()), ("device.pem", issued.pem.as_bytes()), ("crl.pem", crl_pem.as_bytes())];
    let Some((ok, output)) = openssl(&["verify", "-purpose", "sslclient", "-CAfile", "ca.pem", "device.pem"], files)
    else {
        return;
    };
    assert!(ok, "{output}");
    assert!(output.contains("device.pem: OK"), "{output}");
    let Some((ok, output)) =
        openssl(&["verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "device.pem"], files)
    else {
        return;
    };
    assert!(!ok, "{output}");
    assert!(output.contains("certificate revoked"), "{output}");
}

// --- CSRs ---

#[test]
fn csr_is_accepted_as_pem_as_base64_with_line_breaks_and_as_der() {
    let key = KeyPair::generate().expect("key");
    let request = device_request(&key);
    let der = request.der().to_vec();
    let pem = request.pem().expect("PEM");
    use base64::Engine;
    let base64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let wrapped: String =
        base64.as_bytes().chunks(64).map(|line| format!("{}\r\n", String::from_utf8_lossy(line))).collect();
    let unpadded = base64.trim_end_matches('=').to_owned();
    let legacy_pem = pem.replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST");
    let surrounded = format!("Certificate request for the sensor\n\n{pem}\ntrailing words\n");

    for body in [
        der.clone(),
        pem.into_bytes(),
        wrapped.into_bytes(),
        base64.into_bytes(),
        unpadded.into_bytes(),
        legacy_pem.into_bytes(),
        surrounded.into_bytes(),
    ] {
        let checked = parse_csr(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        assert_eq!(checked.der(), der);
        assert_eq!(checked.subject_common_name(), Some(URN));
        assert_eq!(checked.san_uris(), [URN.to_owned()]);
        assert_eq!(checked.key_description(), "ECDSA P-256");
        assert_eq!(checked.public_key_der(), key.subject_public_key_info());
        assert_eq!(checked.public_key_fingerprint(), sha256_hex(&key.subject_public_key_info()));
        assert_eq!(checked.challenge_password(), None);
    }
}

#[test]
fn csr_made_by_openssl_with_a_challenge_password_is_read() {
    let checked = parse_csr(include_bytes!("testdata/openssl-p256.csr")).expect("accepted");
    assert_eq!(checked.subject_common_name(), Some("urn:dev:mac:0024befffe804ff4"));
    assert_eq!(checked.san_uris(), ["urn:dev:mac:0024befffe804ff4".to_owned()]);
    assert_eq!(checked.challenge_password(), Some("otp-4711"));
    assert_eq!(checked.key_description(), "ECDSA P-256");
    let shown = format!("{checked:?}");
    assert!(shown.contains(r#"challenge_password: Some("..")"#) && !shown.contains("otp-4711"), "{shown}");
}

#[test]
fn csr_with_a_broken_signature_is_refused() {
    let der = device_request(&KeyPair::generate().expect("key")).der().to_vec();
    let mut broken_signature = der.clone();
    let last = broken_signature.len() - 1;
    broken_signature[last] ^= 0x01;
    assert_eq!(parse_csr(&broken_signature).unwrap_err(), CsrError::BadSignature);
    // A changed common name ("...ff1" to "...ff0") no longer matches the signature either.
    let position = der.windows(URN.len()).position(|w| w == URN.as_bytes()).expect("CN in the DER") + URN.len() - 1;
    let mut changed_subject = der.clone();
    changed_subject[position] = b'0';
    assert_eq!(parse_csr(&changed_subject).unwrap_err(), CsrError::BadSignature);
    expect![[r#"the request's signature does not verify"#]].assert_eq(&CsrError::BadSignature.to_string());
}

#[test]
fn csr_with_a_weak_or_unsupported_key_is_refused_with_the_reason() {
    let check = |body: &[u8], expect: Expect| expect.assert_eq(&parse_csr(body).unwrap_err().to_string());
    check(
        include_bytes!("testdata/rsa1024.csr"),
        expect![[r#"RSA keys must have at least 2048 bits; this one has 1024"#]],
    );
    check(
        include_bytes!("testdata/dsa.csr"),
        expect![[
            r#"keys of type DSA are not accepted; use ECDSA P-256 or P-384, Ed25519, or RSA of at least 2048 bits"#
        ]],
    );
    check(
        include_bytes!("testdata/secp256k1.csr"),
        expect![[r#"ECDSA keys must be on the curve P-256 or P-384; this one is on secp256k1"#]],
    );
    let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).expect("key");
    check(
        device_request(&p521).der(),
        expect![[r#"ECDSA keys must be on the curve P-256 or P-384; this one is on P-521"#]],
    );
    check(
        include_bytes!("testdata/rsa2048-sha1.csr"),
        expect!["the request is signed with RSA with SHA-1, which is not accepted; sign it with SHA-256 or stronger"],
    );
    check(
        include_bytes!("testdata/p256-sha512.csr"),
        expect![
            "the request is signed with ECDSA with SHA-512, which is not supported; use ECDSA with SHA-256 or SHA-384, Ed25519, or RSA with SHA-256, SHA-384 or SHA-512"
        ],
    );
}

#[test]
fn csr_error_messages_say_what_is_wrong() {
    let der = device_request(&KeyPair::generate().expect("key")).der().to_vec();
    let check = |body: &[u8], expect: Expect| expect.assert_eq(&parse_csr(body).unwrap_err().to_string());
    check(b"", expect![[r#"the request is empty"#]]);
    check(b" \r\n\t", expect![[r#"the request is empty"#]]);
    check(&vec![b'A'; MAX_CSR_BYTES + 1], expect![[r#"the request is 16385 bytes; at most 16384 are accepted"#]]);
    check(
        b"hello, world",
        expect![[
            r#"not a PKCS#10 certificate request: it is neither DER, PEM nor base64 (Invalid symbol 44, offset 5.)"#
        ]],
    );
    check(
        b"aGVsbG8=",
        expect!["not a PKCS#10 certificate request: the DER is malformed or truncated (nom error: Eof)"],
    );
    check(
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        expect![[
            r#"not a PKCS#10 certificate request: the PEM block is a "CERTIFICATE", not a "CERTIFICATE REQUEST""#
        ]],
    );
    check(
        b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n",
        expect![[r#"not a PKCS#10 certificate request: the PEM block has no END line"#]],
    );
    check(
        b"-----BEGIN CERTIFICATE REQUEST",
        expect![[r#"not a PKCS#10 certificate request: the PEM BEGIN line does not end with "-----""#]],
    );
    check(
        b"-----BEGIN CERTIFICATE REQUEST----------END CERTIFICATE REQUEST-----",
        expect![[r#"the request is empty"#]],
    );
    check(
        &der[..der.len() - 1],
        expect!["not a PKCS#10 certificate request: the DER is malformed or truncated (nom error: Eof)"],
    );
    let mut trailing = der.clone();
    trailing.extend_from_slice(b"\n\n");
    check(&trailing, expect![[r#"not a PKCS#10 certificate request: 2 bytes follow the request"#]]);
    let certificate = test_ca().certificate_der().to_vec();
    check(&certificate, expect!["not a PKCS#10 certificate request: it is a certificate, not a request for one"]);
}

#[test]
fn csr_parsing_survives_every_truncation_and_byte_flip() {
    let der = device_request(&KeyPair::generate().expect("key")).der().to_vec();
    for len in 0..der.len() {
        assert!(parse_csr(&der[..len]).is_err(), "truncated to {len}");
    }
    for position in 0..der.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut changed = der.clone();
            changed[position] ^= flip;
            // Any outcome but a panic will do: this is about mangled input, not about which
            // mangling the signature happens to survive.
            let _ = parse_csr(&changed);
        }
    }
}

// --- certs-only ---

#[test]
fn certs_only_is_a_degenerate_signed_data_holding_the_certificates() {
    let ca = test_ca();
    let (_, issued) = device(&ca);
    let pkcs7 = certs_only(&[&issued.der, ca.certificate_der()]);

    let (content_info, rest) = element(&pkcs7, 0x30);
    assert!(rest.is_empty());
    let (oid, rest) = element(content_info, 0x06);
    assert_eq!(oid, [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02], "signedData");
    let (explicit, rest) = element(rest, 0xa0);
    assert!(rest.is_empty());
    let (signed_data, rest) = element(explicit, 0x30);
    assert!(rest.is_empty());
    let (version, rest) = element(signed_data, 0x02);
    assert_eq!(version, [1]);
    let (digest_algorithms, rest) = element(rest, 0x31);
    assert!(digest_algorithms.is_empty());
    let (encapsulated, rest) = element(rest, 0x30);
    let (content_type, no_content) = element(encapsulated, 0x06);
    assert_eq!(content_type, [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01], "id-data");
    assert!(no_content.is_empty());
    let (mut certificates, rest) = element(rest, 0xa0);
    let (signer_infos, rest) = element(rest, 0x31);
    assert!(signer_infos.is_empty() && rest.is_empty());
    let mut found = Vec::new();
    while !certificates.is_empty() {
        let (after, certificate) = X509Certificate::from_der(certificates).expect("a certificate");
        found.push(certificate.as_raw().to_vec());
        certificates = after;
    }
    found.sort();
    let mut expected = vec![issued.der.clone(), ca.certificate_der().to_vec()];
    expected.sort();
    assert_eq!(found, expected);
}

/// The contents of the DER element at the start of `input`, which must have the identifier
/// octet `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
    assert_eq!(input.first(), Some(&tag), "identifier octet");
    let (rest, any) = x509_parser::asn1_rs::Any::from_der(input).expect("a DER element");
    (any.data, rest)
}

#[test]
fn certs_only_lengths_use_the_short_and_long_forms() {
    let signed_data = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    let data = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    let empty = [
        &[0x30, 0x25, 0x06, 0x09][..],
        &signed_data,
        &[0xa0, 0x18, 0x30, 0x16, 0x02, 0x01, 0x01, 0x31, 0x00, 0x30, 0x0b, 0x06, 0x09],
        &data,
        &[0xa0, 0x00, 0x31, 0x00],
    ]
    .concat();
    assert_eq!(certs_only(&[]), empty);
    let headers: [(usize, &[u8]); 5] = [
        (0x7f, &[0xa0, 0x7f]),
        (0x80, &[0xa0, 0x81, 0x80]),
        (0xff, &[0xa0, 0x81, 0xff]),
        (0x100, &[0xa0, 0x82, 0x01, 0x00]),
        (0x1_0000, &[0xa0, 0x83, 0x01, 0x00, 0x00]),
    ];
    for (len, header) in headers {
        let filler = vec![0x55u8; len];
        let pkcs7 = certs_only(&[&filler]);
        let (_, rest) = element(&pkcs7, 0x30);
        assert!(rest.is_empty(), "{len}");
        let mut certificates = header.to_vec();
        certificates.extend_from_slice(&filler);
        assert!(pkcs7.windows(certificates.len()).any(|w| w == certificates), "{len}");
    }
}

#[test]
fn certs_only_is_accepted_by_openssl() {
    let ca = test_ca();
    let (_, issued) = device(&ca);
    let pkcs7 = certs_only(&[&issued.der, ca.certificate_der()]);
    let Some((ok, output)) =
        openssl(&["pkcs7", "-inform", "DER", "-in", "certs.p7", "-print_certs", "-noout"], &[("certs.p7", &pkcs7)])
    else {
        return;
    };
    assert!(ok, "{output}");
    assert!(output.contains(&format!("subject=CN = {URN}")), "{output}");
    assert!(output.contains("subject=CN = Thingbase test CA"), "{output}");
}

// --- TLS ---

/// What the server saw of a handshake that succeeded.
#[derive(Debug)]
struct ServerSaw {
    peer_certificate: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
    alpn: Option<Vec<u8>>,
}

/// A TLS connection over an in-memory pipe: the server accepts and sends "hello", the client
/// connects to `server_name` and reads it. Gives each side's outcome.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> (Result<ServerSaw, String>, Result<(), String>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let server_side = async move {
        let mut stream = tokio_rustls::TlsAcceptor::from(server).accept(server_io).await.map_err(|e| e.to_string())?;
        let (_, connection) = stream.get_ref();
        let saw = ServerSaw {
            peer_certificate: connection.peer_certificates().and_then(|chain| chain.first()).map(|c| c.to_vec()),
            version: connection.protocol_version(),
            alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
        };
        stream.write_all(b"hello").await.map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        Ok(saw)
    };
    let client_side = async move {
        let mut stream = tokio_rustls::TlsConnector::from(client)
            .connect(server_name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let mut greeting = [0u8; 5];
        stream.read_exact(&mut greeting).await.map_err(|e| e.to_string())?;
        assert_eq!(&greeting, b"hello");
        Ok(())
    };
    tokio::join!(server_side, client_side)
}

/// A client trusting `root` that presents `identity` (chain and PKCS#8 key), if any.
fn client_config(
    root: &[u8],
    identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.to_vec().into()).expect("root");
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain.into_iter().map(Into::into).collect(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn hub_identity(ca: &CertificateAuthority) -> ServerIdentity {
    ca.issue_server(&["localhost".to_owned(), "127.0.0.1".to_owned()], Timestamp::now() + 24.hours()).expect("issues")
}

fn device_identity(key: &KeyPair, issued: &IssuedCertificate) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
    Some((vec![issued.der.clone()], key.serialize_der()))
}

const BOTH: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn device_with_a_certificate_from_the_ca_connects_and_is_identified_by_its_urn() {
    let ca = test_ca();
    let (key, issued) = device(&ca);
    let server =
        server_config(&hub_identity(&ca), &[ca.certificate_der().to_vec()], &[], ClientAuth::Required, &[b"mqtt"])
            .expect("server config");
    let client = client_config(ca.certificate_der(), device_identity(&key, &issued), BOTH, &[b"mqtt"]);
    let (server_saw, client) = handshake(server, client, "localhost").await;
    client.expect("client connects");
    let server_saw = server_saw.expect("server accepts");
    assert_eq!(server_saw.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(server_saw.alpn.as_deref(), Some(&b"mqtt"[..]));
    let peer = server_saw.peer_certificate.expect("the device's certificate");
    assert_eq!(peer, issued.der);
    let identity = client_identity(&peer).expect("identity");
    assert_eq!(identity.urns, vec![URN.to_owned()]);
    assert_eq!(identity.device_serial(), Some(issued.serial));
}

#[tokio::test]
async fn revoked_device_certificate_is_refused_at_the_handshake() {
    let ca = test_ca();
    let (key, issued) = device(&ca);
    let (_, other) = device(&ca);
    let now = Timestamp::now();
    let roots = [ca.certificate_der().to_vec()];
    let client = client_config(ca.certificate_der(), device_identity(&key, &issued), BOTH, &[]);

    let crl_without = ca.crl(&[(other.serial, now)], 1, now - 1.minute(), now + 24.hours()).expect("CRL");
    let server = server_config(&hub_identity(&ca), &roots, &[crl_without], ClientAuth::Required, &[]).expect("config");
    let (server_saw, _) = handshake(server, client.clone(), "localhost").await;
    server_saw.expect("not revoked yet");

    let crl_with =
        ca.crl(&[(other.serial, now), (issued.serial, now)], 2, now - 1.minute(), now + 24.hours()).expect("CRL");
    let server = server_config(&hub_identity(&ca), &roots, &[crl_with], ClientAuth::Required, &[]).expect("config");
    let (server_saw, client_result) = handshake(server, client, "localhost").await;
    let error = server_saw.expect_err("revoked");
    assert!(error.contains("Revoked"), "{error}");
    assert!(client_result.is_err());
}

#[tokio::test]
async fn client_without_a_certificate_is_refused_when_required_and_accepted_when_optional() {
    let ca = test_ca();
    let roots = [ca.certificate_der().to_vec()];
    let client = client_config(ca.certificate_der(), None, BOTH, &[]);

    let required = server_config(&hub_identity(&ca), &roots, &[], ClientAuth::Required, &[]).expect("config");
    let (server_saw, client_result) = handshake(required, client.clone(), "localhost").await;
    let error = server_saw.expect_err("a certificate is required");
    assert!(error.contains("peer sent no certificates"), "{error}");
    assert!(client_result.is_err());

    let optional =
        server_config(&hub_identity(&ca), &roots, &[], ClientAuth::Optional, &[b"h2", b"http/1.1"]).expect("config");
    let (server_saw, client_result) = handshake(optional.clone(), client, "localhost").await;
    client_result.expect("client connects");
    let server_saw = server_saw.expect("anonymous client accepted");
    assert_eq!(server_saw.peer_certificate, None);
    assert_eq!(server_saw.alpn, None, "the client offered no ALPN");

    // A certificate presented to an optional listener is still verified.
    let stranger_ca = CertificateAuthority::generate("Stranger CA").expect("CA");
    let (key, issued) = device(&stranger_ca);
    let stranger = client_config(ca.certificate_der(), device_identity(&key, &issued), BOTH, &[]);
    let (server_saw, _) = handshake(optional, stranger, "localhost").await;
    assert!(server_saw.expect_err("unknown issuer").contains("UnknownIssuer"));
}

#[tokio::test]
async fn device_certificate_from_another_ca_is_refused_even_under_the_same_name() {
    let ca = test_ca();
    let server = server_config(&hub_identity(&ca), &[ca.certificate_der().to_vec()], &[], ClientAuth::Required, &[])
        .expect("config");
    // A CA of another name is not found among the roots; one that copies the hub CA's name is
    // found, and its signature fails.
    let others =
        [(CertificateAuthority::generate("Other CA").expect("CA"), "UnknownIssuer"), (test_ca(), "BadSignature")];
    for (other_ca, reason) in others {
        let (key, issued) = device(&other_ca);
        let client = client_config(ca.certificate_der(), device_identity(&key, &issued), BOTH, &[]);
        let (server_saw, _) = handshake(server.clone(), client, "localhost").await;
        let error = server_saw.expect_err("refused");
        assert!(error.contains(reason), "{error}");
    }
}

#[tokio::test]
async fn client_restricted_to_tls_1_2_connects_and_nothing_older_is_offered() {
    let ca = test_ca();
    let (key, issued) = device(&ca);
    let server =
        server_config(&hub_identity(&ca), &[ca.certificate_der().to_vec()], &[], ClientAuth::Required, &[b"mqtt"])
            .expect("config");
    let versions: Vec<_> = server.crypto_provider().cipher_suites.iter().map(|suite| suite.version().version).collect();
    assert!(versions.iter().all(|v| [ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3].contains(v)), "{versions:?}");
    let offered: Vec<_> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
    assert_eq!(offered, [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]);

    let client =
        client_config(ca.certificate_der(), device_identity(&key, &issued), &[&rustls::version::TLS12], &[b"mqtt"]);
    let (server_saw, client_result) = handshake(server, client, "127.0.0.1").await;
    client_result.expect("client connects");
    let server_saw = server_saw.expect("server accepts");
    assert_eq!(server_saw.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(client_identity(&server_saw.peer_certificate.expect("certificate")).expect("identity").urns, [URN]);
}

#[tokio::test]
async fn device_of_an_operator_intermediate_connects_with_its_chain_until_revoked() {
    let pki = operator_pki();
    let ca =
        CertificateAuthority::from_pem(&format!("{}{}", pki.intermediate_pem, pki.root_pem), &pki.intermediate_key_pem)
            .expect("operator CA");
    let (key, issued) = device(&ca);
    let chain = vec![issued.der.clone(), ca.certificate_der().to_vec()];
    let client = client_config(&pki.root_der, Some((chain, key.serialize_der())), BOTH, &[]);
    let now = Timestamp::now();
    let roots = [pki.root_der.clone()];

    let empty_crl = ca.crl(&[], 1, now - 1.minute(), now + 24.hours()).expect("CRL");
    let server = server_config(&hub_identity(&ca), &roots, &[empty_crl], ClientAuth::Required, &[]).expect("config");
    let (server_saw, client_result) = handshake(server, client.clone(), "localhost").await;
    client_result.expect("client connects");
    assert_eq!(server_saw.expect("server accepts").peer_certificate, Some(issued.der.clone()));

    let crl = ca.crl(&[(issued.serial, now)], 2, now - 1.minute(), now + 24.hours()).expect("CRL");
    let server = server_config(&hub_identity(&ca), &roots, &[crl], ClientAuth::Required, &[]).expect("config");
    let (server_saw, _) = handshake(server, client, "localhost").await;
    assert!(server_saw.expect_err("revoked").contains("Revoked"));
}

#[test]
fn server_config_refuses_missing_roots_and_broken_crls() {
    let ca = test_ca();
    let identity = hub_identity(&ca);
    let roots = [ca.certificate_der().to_vec()];
    let check = |result: Result<Arc<ServerConfig>, PkiError>, expect: Expect| {
        expect.assert_eq(&result.unwrap_err().to_string())
    };
    check(
        server_config(&identity, &[], &[], ClientAuth::Optional, &[]),
        expect![[r#"client certificate verification cannot be set up: no root trust anchors were provided"#]],
    );
    check(
        server_config(&identity, &roots, &[b"not a CRL".to_vec()], ClientAuth::Required, &[]),
        expect![
            "client certificate verification cannot be set up: provided CRL could not be parsed: Other(OtherError(TrailingData(CertRevocationList)))"
        ],
    );
    check(
        server_config(&identity, &[b"not a certificate".to_vec()], &[], ClientAuth::Required, &[]),
        expect![[r#"TLS configuration failed: invalid peer certificate: BadEncoding"#]],
    );
    let mismatched = ServerIdentity { chain_der: identity.chain_der.clone(), key_pkcs8_der: ca.key_pkcs8_der() };
    check(
        server_config(&mismatched, &roots, &[], ClientAuth::Required, &[]),
        expect!["TLS configuration failed: keys may not be consistent: KeyMismatch"],
    );
}
