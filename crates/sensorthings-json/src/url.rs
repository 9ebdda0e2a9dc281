//! URL text helpers: percent-encoding query values and building `@iot.nextLink`s.

/// Percent-encodes everything but unreserved characters and a few that are safe in query values.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b'('
            | b')'
            | b','
            | b'/'
            | b':'
            | b'\''
            | b'@'
            | b';' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The query string of the next page: the request's options with `$skip` moved on by one
/// page and `$top` kept. `None` for pages of `$top=0`: their next page would be the same
/// request, and a client following next links would never stop.
pub fn next_query(pairs: &[(String, String)], top: u64, skip: u64) -> Option<String> {
    if top == 0 {
        return None;
    }
    let mut parts = Vec::with_capacity(pairs.len() + 2);
    for (name, value) in pairs {
        if name == "$skip" || name == "$top" {
            continue;
        }
        parts.push(format!("{}={}", encode_component(name), encode_component(value)));
    }
    parts.push(format!("$top={top}"));
    parts.push(format!("$skip={}", skip + top));
    Some(parts.join("&"))
}
