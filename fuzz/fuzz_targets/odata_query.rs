//! Fuzzes query-option parsing and binding for every entity type.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let entity = model::EntityType::ALL[usize::from(selector) % model::EntityType::ALL.len()];
    let _ = odata::parse_query(text, entity, &odata::Limits::default());
});
