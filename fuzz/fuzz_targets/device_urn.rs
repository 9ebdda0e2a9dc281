//! Fuzzes device URN parsing: any input gives a URN or an error, never a panic, and an
//! accepted URN's normal form parses back to the same URN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::DeviceUrn;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(urn) = DeviceUrn::parse(text) else { return };
    assert_eq!(DeviceUrn::parse(urn.as_str()).as_ref(), Ok(&urn), "normal form of {text:?}");
    assert!(urn.as_str().eq_ignore_ascii_case(text), "normalising changed more than case in {text:?}");
    let device = urn.device();
    assert_eq!(DeviceUrn::parse(device.as_str()).as_ref(), Ok(&device), "device of {text:?}");
    let _ = (urn.kind(), urn.components(), urn.identifiers());
});
