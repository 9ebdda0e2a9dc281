//! Percent-decoding of URL paths and query strings.

use crate::error::{ErrorKind, ODataError};

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in query strings).
/// Errors carry the 1-based character column in `text`, shifted by `offset` characters.
pub(crate) fn decode(text: &str, plus_is_space: bool, kind: ErrorKind, offset: usize) -> Result<String, ODataError> {
    let column = |byte: usize| offset + text.get(..byte).map_or(0, |before| before.chars().count()) + 1;
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let high = bytes.get(i + 1).and_then(|&h| hex(h));
                let low = bytes.get(i + 2).and_then(|&l| hex(l));
                let (Some(high), Some(low)) = (high, low) else {
                    let message = "`%` must be followed by two hexadecimal digits";
                    return Err(ODataError::new(kind, message).at(column(i)));
                };
                out.push(high * 16 + low);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| {
        // Columns in the decoded text do not exist here, so the error points at the whole piece.
        ODataError::new(kind, "the percent-encoded bytes are not valid UTF-8").at(offset + 1)
    })
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}
