//! Fuzzes resource-path parsing: any input gives a path or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = odata::parse_path(text);
    }
});
