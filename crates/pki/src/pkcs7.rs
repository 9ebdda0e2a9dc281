//! The "certs-only" reply of EST (RFC 7030 §4.1.3): a degenerate CMS SignedData that carries
//! certificates and no signature, written as DER by hand.
//!
//! ```text
//! ContentInfo ::= SEQUENCE {
//!   contentType  OBJECT IDENTIFIER,            -- 1.2.840.113549.1.7.2, signedData
//!   content      [0] EXPLICIT SignedData }
//! SignedData ::= SEQUENCE {
//!   version           INTEGER,                 -- 1
//!   digestAlgorithms  SET OF AlgorithmIdentifier,   -- empty
//!   encapContentInfo  SEQUENCE {
//!     eContentType    OBJECT IDENTIFIER },     -- 1.2.840.113549.1.7.1, id-data; no eContent
//!   certificates      [0] IMPLICIT SET OF Certificate,
//!   signerInfos       SET OF SignerInfo }      -- empty
//! ```
//!
//! Twenty lines of encoder are simpler than a CMS crate for one fixed shape.

/// `signedData`, 1.2.840.113549.1.7.2, as DER content octets.
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// `id-data`, 1.2.840.113549.1.7.1, as DER content octets.
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OBJECT_IDENTIFIER: u8 = 0x06;
const CONTEXT_0_CONSTRUCTED: u8 = 0xa0;

/// A DER "certs-only" SignedData holding `certificates_der` (each a DER certificate, copied
/// as given), as EST's `/cacerts` and `/simpleenroll` answer with
/// `application/pkcs7-mime; smime-type=certs-only`.
///
/// DER orders the elements of a SET OF by their encodings, so the certificates come out in that
/// order, not the order given; RFC 5652 gives the set no meaning, and clients build the chain
/// from the names.
pub fn certs_only(certificates_der: &[&[u8]]) -> Vec<u8> {
    let mut certificates = certificates_der.to_vec();
    certificates.sort_by(|a, b| der_set_order(a, b));
    let signed_data = tlv(
        SEQUENCE,
        &[
            &tlv(INTEGER, &[&[1]]),
            &tlv(SET, &[]),
            &tlv(SEQUENCE, &[&tlv(OBJECT_IDENTIFIER, &[OID_DATA])]),
            &tlv(CONTEXT_0_CONSTRUCTED, &certificates),
            &tlv(SET, &[]),
        ],
    );
    tlv(SEQUENCE, &[&tlv(OBJECT_IDENTIFIER, &[OID_SIGNED_DATA]), &tlv(CONTEXT_0_CONSTRUCTED, &[&signed_data])])
}

/// One DER element: `tag`, the definite length, then the parts of its contents in order.
fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        // Short form: one byte, below 128.
        out.push(len as u8);
    } else {
        // Long form: 0x80 | the number of length bytes, then the length big-endian without
        // leading zero bytes.
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// X.690 §11.6: the encodings compared as octet strings, the shorter one padded at its end with
/// zero octets.
fn der_set_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let len = a.len().max(b.len());
    let padded = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    (0..len).map(|i| padded(a, i).cmp(&padded(b, i))).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
}
