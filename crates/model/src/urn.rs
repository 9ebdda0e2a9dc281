//! Device identifiers: RFC 9039 `urn:dev:` URNs, validated and held in one normal form
//! ([`DeviceUrn`]), so that equal devices compare equal as plain strings.
//!
//! # Grammar
//!
//! The ABNF of RFC 9039 §3.2 (with RFC 7405 `%s"..."`, a case-sensitive literal), as
//! implemented:
//!
//! ```text
//! devurn              = "urn:dev:" body componentpart
//! body                = macbody / owbody / orgbody / osbody / opsbody / otherbody
//! macbody             = %s"mac:" hexstring          ; 12 or 16 hex digits, see below
//! owbody              = %s"ow:" hexstring           ; 16 hex digits, see below
//! orgbody             = %s"org:" posnumber "-" identifier *( ":" identifier )
//! osbody              = %s"os:" posnumber "-" serial *( ":" identifier )
//! opsbody             = %s"ops:" posnumber "-" product "-" serial *( ":" identifier )
//! otherbody           = subtype ":" identifier *( ":" identifier )
//! subtype             = LALPHA *( DIGIT / LALPHA )
//! identifier          = 1*devunreserved
//! identifiernodash    = 1*devunreservednodash
//! product             = identifiernodash
//! serial              = identifier
//! componentpart       = *( "_" identifier )
//! devunreservednodash = ALPHA / DIGIT / "."
//! devunreserved       = devunreservednodash / "-"
//! hexstring           = 1*( hexdigit hexdigit )
//! hexdigit            = DIGIT / "a" / "b" / "c" / "d" / "e" / "f"
//! posnumber           = NZDIGIT *DIGIT             ; an IANA Private Enterprise Number
//! ALPHA               = %x41-5A / %x61-7A
//! LALPHA              = %x61-7A                    ; the RFC prints %x41-5A, an erratum
//! NZDIGIT             = %x31-39
//! DIGIT               = %x30-39
//! ```
//!
//! How the grammar is read where it leaves room:
//!
//! - `mac`, `ow`, `org`, `os` and `ops` are parsed by their own rules only. `otherbody` would
//!   also match `mac:hello` (`mac` is a valid `subtype`), but the subtypes RFC 9039 defines
//!   are not "other", so `urn:dev:mac:hello` is rejected rather than read as an unknown kind.
//! - `mac` takes exactly 12 or 16 hex digits (an EUI-48 or EUI-64, RFC 9039 §4.1) and `ow`
//!   exactly 16 (the 64-bit 1-Wire id, §4.2); the ABNF alone allows any even count.
//! - No `_` and no `:` can occur inside an identifier or a hex string, so the first `_` starts
//!   the component part and the body splits on `:` and (for the PEN and product) `-`
//!   without ambiguity: in `ops`, the product ends at its first `-`, the serial may hold more.
//! - RFC 8141 r-, q- and f-components (`?+`, `?=`, `#`) and percent-encoding are not part of
//!   the `devurn` rule and are rejected: a [`DeviceUrn`] is an assigned name only.
//! - Input longer than [`DeviceUrn::MAX_LEN`] (255) bytes is rejected before it is looked at,
//!   so hostile input costs at most that much work. The grammar does not nest, so no depth
//!   limit is needed. Every byte outside the grammar, non-ASCII included, is an error.
//!
//! # Normal form
//!
//! RFC 8141 §3.1 makes two URNs equivalent when they are equal octet by octet after
//! lowercasing the scheme `urn` and the NID `dev`; the rest (the NSS) is case-sensitive.
//! [`DeviceUrn::parse`] accepts a few case variants beyond the strict grammar and maps each to
//! one normal form, so that one device is one string:
//!
//! - `urn:dev:` is matched case-insensitively and written lowercase (RFC 8141 §3.1; the ABNF
//!   literal `"urn:dev:"` is case-insensitive by RFC 5234 §2.3).
//! - Hex digits of `mac` and `ow` are accepted in either case and written lowercase. The
//!   published `hexdigit` uses quoted (so, by RFC 5234 §2.3, case-insensitive) letters, but
//!   the RFC intends and writes them lowercase; both spellings denote the same hardware
//!   address, so they must not become two devices.
//! - Subtype names are case-insensitive here and written lowercase. This is a deliberate
//!   leniency: RFC 9039 spells the defined subtypes with case-sensitive `%s` literals, so
//!   `urn:dev:MAC:...` is strictly not a `mac` URN, while the published `LALPHA` (`%x41-5A`)
//!   is uppercase despite its name, so the text is of two minds. The IANA "DEV URN Subtypes"
//!   registry holds lowercase names only, so folding case cannot merge two registered
//!   subtypes; it only stops `MAC` and `mac` from naming two devices. The flip side: compare
//!   identities from elsewhere (a certificate subject, say) by parsing them, never as text.
//! - Everything else — PEN, product, serial, further identifiers, components — is
//!   case-sensitive, as RFC 8141 has it, and kept exactly as written.

use std::fmt;
use std::str::FromStr;

/// A validated, normalised RFC 9039 device URN (text always in normal form).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceUrn(String);

/// The subtype of a device URN (RFC 9039 §4): what kind of identifier the body holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrnKind {
    /// `mac`: an EUI-48 or EUI-64 hardware address.
    Mac,
    /// `ow`: a 1-Wire device id.
    Ow,
    /// `org`: an identifier assigned by the holder of a Private Enterprise Number.
    Org,
    /// `os`: a serial number assigned by the holder of a Private Enterprise Number.
    Os,
    /// `ops`: a product name and serial number assigned by the holder of a Private Enterprise
    /// Number.
    Ops,
    /// Any other (later registered) subtype, in lowercase, e.g. `ueid`.
    Other(String),
}

/// Why a text is not a device URN: the byte offset where it goes wrong and a sentence saying
/// what was expected there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {position}")]
pub struct UrnError {
    pub position: usize,
    pub message: String,
}

const PREFIX: &str = "urn:dev:";

impl DeviceUrn {
    /// The longest text [`DeviceUrn::parse`] accepts, in bytes. RFC 9039 sets no limit; 255
    /// is far above any identifier in its examples and keeps hostile input cheap.
    pub const MAX_LEN: usize = 255;

    pub fn parse(text: &str) -> Result<DeviceUrn, UrnError> {
        if text.len() > Self::MAX_LEN {
            return Err(UrnError {
                position: Self::MAX_LEN,
                message: format!(
                    "expected the end: a device URN is at most {} bytes long (this text has {})",
                    Self::MAX_LEN,
                    text.len()
                ),
            });
        }
        let parsed = Parser { text, pos: 0 }.devurn()?;
        let mut normal = String::with_capacity(text.len());
        normal.push_str(&text[..parsed.lowercase_end].to_ascii_lowercase());
        normal.push_str(&text[parsed.lowercase_end..]);
        Ok(DeviceUrn(normal))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subtype.
    pub fn kind(&self) -> UrnKind {
        match self.subtype_and_body().0 {
            "mac" => UrnKind::Mac,
            "ow" => UrnKind::Ow,
            "org" => UrnKind::Org,
            "os" => UrnKind::Os,
            "ops" => UrnKind::Ops,
            other => UrnKind::Other(other.to_owned()),
        }
    }

    /// The device itself: the URN without its `_component` parts.
    pub fn device(&self) -> DeviceUrn {
        match self.0.find('_') {
            Some(at) => DeviceUrn(self.0[..at].to_owned()),
            None => self.clone(),
        }
    }

    /// The `_component` parts, in order (empty for a whole device).
    pub fn components(&self) -> Vec<&str> {
        self.0.split('_').skip(1).collect()
    }

    /// The identifying values inside the URN (the MAC / 1-Wire hex, the PEN, product, serial,
    /// further identifiers), used by the security gate to flag passwords derived from them.
    /// Component names (`humidity`) are not among them: they name a part, not the device.
    pub fn identifiers(&self) -> Vec<&str> {
        let (_, body) = self.subtype_and_body();
        let leading_parts = match self.kind() {
            UrnKind::Org | UrnKind::Os => 2, // PEN "-" identifier or serial
            UrnKind::Ops => 3,               // PEN "-" product "-" serial
            UrnKind::Mac | UrnKind::Ow | UrnKind::Other(_) => 1,
        };
        let mut out = Vec::new();
        for (index, part) in body.split(':').enumerate() {
            if index == 0 {
                out.extend(part.splitn(leading_parts, '-'));
            } else {
                out.push(part);
            }
        }
        out
    }

    /// The subtype and the body after its `:`, without the component part.
    fn subtype_and_body(&self) -> (&str, &str) {
        let device = self.0[PREFIX.len()..].split('_').next().unwrap_or_default();
        // Every normal form has a `:` after its subtype; the fallback is never taken.
        device.split_once(':').unwrap_or((device, ""))
    }
}

impl fmt::Display for DeviceUrn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeviceUrn {
    type Err = UrnError;

    fn from_str(text: &str) -> Result<DeviceUrn, UrnError> {
        DeviceUrn::parse(text)
    }
}

/// What the parser learnt besides validity: the input is in normal form once its first
/// `lowercase_end` bytes are lowercased (the prefix, the subtype and, for `mac` and `ow`, the
/// hex digits).
struct Parsed {
    lowercase_end: usize,
}

/// A cursor over the input. It only ever steps over ASCII bytes, so `pos` is always on a
/// character boundary.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn devurn(mut self) -> Result<Parsed, UrnError> {
        self.literal("urn:", "the scheme `urn:`")?;
        self.literal("dev:", "the namespace `dev:`")?;
        let subtype_start = self.pos;
        if !self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            return Err(self.error("a subtype such as `mac` or `ops` (a letter, then letters and digits)"));
        }
        self.skip_while(|b| b.is_ascii_alphanumeric());
        let subtype = self.text[subtype_start..self.pos].to_ascii_lowercase();
        self.literal(":", "`:` after the subtype")?;
        let body_start = self.pos;
        // What may continue the last part; with `_` and the end, what may follow it.
        let mut continues = "a letter, digit, `.`, `-`, `:`";
        let lowercase_end = match subtype.as_str() {
            "mac" => self.hex(&[12, 16], "an EUI-48 or EUI-64 address (12 or 16 hex digits)")?,
            "ow" => self.hex(&[16], "a 64-bit 1-Wire id (16 hex digits)")?,
            "org" => {
                self.enterprise_number()?;
                self.identifier("an identifier after the enterprise number")?;
                self.further_identifiers()?;
                body_start
            }
            "os" => {
                self.enterprise_number()?;
                self.identifier("a serial number after the enterprise number")?;
                self.further_identifiers()?;
                body_start
            }
            "ops" => {
                self.enterprise_number()?;
                self.product()?;
                self.identifier("a serial number after the product name")?;
                self.further_identifiers()?;
                body_start
            }
            _ => {
                self.identifier("an identifier after the subtype")?;
                self.further_identifiers()?;
                body_start
            }
        };
        while self.peek() == Some(b'_') {
            self.pos += 1;
            self.identifier("a component name after `_`")?;
            continues = "a letter, digit, `.`, `-`";
        }
        if self.pos < self.text.len() {
            return Err(self.error(&format!("{continues}, `_` or the end")));
        }
        Ok(Parsed { lowercase_end })
    }

    /// A run of hex digits whose length is one of `lengths`. Returns where the digits end.
    fn hex(&mut self, lengths: &[usize], what: &str) -> Result<usize, UrnError> {
        let start = self.pos;
        self.skip_while(|b| b.is_ascii_hexdigit());
        let count = self.pos - start;
        if count == 0 {
            return Err(self.error(what));
        }
        if self.peek().is_some_and(|b| b != b'_') {
            return Err(self.error("a hex digit, `_` or the end"));
        }
        if !lengths.contains(&count) {
            return Err(UrnError { position: start, message: format!("expected {what}, found {count} hex digits") });
        }
        Ok(self.pos)
    }

    /// `posnumber "-"`.
    fn enterprise_number(&mut self) -> Result<(), UrnError> {
        match self.peek() {
            Some(b'1'..=b'9') => self.skip_while(|b| b.is_ascii_digit()),
            Some(b'0') => return Err(self.error("a Private Enterprise Number without a leading zero")),
            _ => return Err(self.error("a Private Enterprise Number (decimal digits, no leading zero)")),
        }
        self.literal("-", "`-` after the Private Enterprise Number")
    }

    /// `product "-"`: the product name has no `-`; the first one ends it.
    fn product(&mut self) -> Result<(), UrnError> {
        let start = self.pos;
        self.skip_while(|b| b.is_ascii_alphanumeric() || b == b'.');
        if self.pos == start {
            return Err(self.error("a product name (letters, digits or `.`) after the enterprise number"));
        }
        self.literal("-", "`-` and a serial number after the product name")
    }

    /// `identifier`.
    fn identifier(&mut self, what: &str) -> Result<(), UrnError> {
        let start = self.pos;
        self.skip_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if self.pos == start {
            return Err(self.error(&format!("{what} (letters, digits, `.` or `-`)")));
        }
        Ok(())
    }

    /// `*( ":" identifier )`.
    fn further_identifiers(&mut self) -> Result<(), UrnError> {
        while self.peek() == Some(b':') {
            self.pos += 1;
            self.identifier("an identifier after `:`")?;
        }
        Ok(())
    }

    /// `expected` matched ASCII-case-insensitively; an error at the first byte that differs.
    fn literal(&mut self, expected: &str, what: &str) -> Result<(), UrnError> {
        for want in expected.bytes() {
            if !self.peek().is_some_and(|b| b.eq_ignore_ascii_case(&want)) {
                return Err(self.error(what));
            }
            self.pos += 1;
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_while(&mut self, accept: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&accept) {
            self.pos += 1;
        }
    }

    /// "expected `what`, found ..." at the current position.
    fn error(&self, what: &str) -> UrnError {
        let found = match self.text.get(self.pos..).and_then(|rest| rest.chars().next()) {
            None => "the end".to_owned(),
            Some(c) => format!("`{}`", c.escape_debug()),
        };
        UrnError { position: self.pos, message: format!("expected {what}, found {found}") }
    }
}
