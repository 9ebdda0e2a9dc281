//! Fuzzes certificate-request parsing as the enrollment endpoints meet it: any body (DER, PEM,
//! base64 or neither) must give a checked request or a refusal, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = pki::parse_csr(data) {
        // Whatever passed every check must also read back in full.
        let _ = (request.subject_common_name(), request.san_uris(), request.key_description());
        let _ = (request.public_key_fingerprint(), request.challenge_password(), request.der().len());
    }
});
