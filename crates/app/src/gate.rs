//! The admission gate's baseline profile and its evaluation: which provisions of ETSI EN 303 645
//! (and NIST IR 8259A's device identification and configuration capabilities) a device must
//! pass before its data is accepted, each answered pass, fail or not applicable with the
//! evidence. Pure: it reads records gathered by `devices`, and does no I/O.
//!
//! The profile is a versioned JSON file (`baseline-profile.json` is the default, documented in
//! docs/devices.md); an operator's file sets each provision `required`, `advisory` or `off`.

use std::collections::BTreeMap;

use model::Instant;
use serde_json::{Value, json};
use store::{CertificateRecord, DeviceClassRecord, DeviceRecord};

/// The default profile, as shipped.
pub const DEFAULT_PROFILE: &str = include_str!("baseline-profile.json");

/// How much a provision counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Failing it keeps the device's data out.
    Required,
    /// Reported, never blocking.
    Advisory,
    Off,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Required => "required",
            Level::Advisory => "advisory",
            Level::Off => "off",
        }
    }
}

/// Every provision the hub can evaluate: its id and what it asks, in words.
pub const PROVISIONS: &[(&str, &str)] = &[
    ("5.1-1", "Unique per-device credentials; no universal default password"),
    ("5.1-2", "A pre-installed password is not guessable or derived from the device's identifiers"),
    ("5.2-1", "A published point of contact for vulnerability reports"),
    ("5.3-2", "A secure software update mechanism, with signed firmware declared"),
    ("5.3-8", "The device runs the newest firmware its class declares"),
    ("5.3-13", "A defined support period, not past"),
    ("5.3-16", "A recognisable model designation"),
    ("5.4-2", "Unique per-device identity: no key serves two devices"),
    ("5.5-1", "Best-practice cryptography in transit"),
    ("5.5-7", "Live credentials: a certificate neither revoked nor expired, or an own secret"),
    ("5.8-3", "Only the sensing capabilities its class declares"),
    ("5.13-1", "Input data is validated"),
    ("8259A-identification", "NIST IR 8259A device identification: a unique logical identifier"),
    ("8259A-configuration", "NIST IR 8259A device configuration: changed only by authorised entities"),
];

/// A parsed profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub version: i64,
    levels: BTreeMap<&'static str, Level>,
}

/// Why a profile file is refused.
#[derive(Debug, thiserror::Error)]
#[error("baseline profile: {0}")]
pub struct ProfileError(String);

impl Profile {
    pub fn default_profile() -> Profile {
        // The shipped file is checked by a test; it parses.
        Profile::parse(DEFAULT_PROFILE).unwrap_or_else(|_| Profile {
            name: "thingbase-baseline".into(),
            version: 1,
            levels: PROVISIONS.iter().map(|(id, _)| (*id, Level::Required)).collect(),
        })
    }

    /// Reads a profile file. Provisions it leaves out keep the default profile's level, so a
    /// file only needs the ones it changes; unknown provisions and levels are errors.
    pub fn parse(text: &str) -> Result<Profile, ProfileError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ProfileError(format!("not JSON: {e}")))?;
        let name =
            value.get("profile").and_then(Value::as_str).ok_or_else(|| ProfileError("no \"profile\" name".into()))?;
        let version = value
            .get("version")
            .and_then(Value::as_i64)
            .ok_or_else(|| ProfileError("no integer \"version\"".into()))?;
        let mut levels: BTreeMap<&'static str, Level> =
            PROVISIONS.iter().map(|(id, _)| (*id, Level::Required)).collect();
        let given = value
            .get("provisions")
            .and_then(Value::as_object)
            .ok_or_else(|| ProfileError("no \"provisions\" object".into()))?;
        for (id, level) in given {
            let Some((known, _)) = PROVISIONS.iter().find(|(known, _)| known == id) else {
                return Err(ProfileError(format!("unknown provision `{id}`")));
            };
            let level = match level.as_str() {
                Some("required") => Level::Required,
                Some("advisory") => Level::Advisory,
                Some("off") => Level::Off,
                _ => {
                    return Err(ProfileError(format!("provision `{id}`: the level must be required, advisory or off")));
                }
            };
            levels.insert(known, level);
        }
        Ok(Profile { name: name.to_owned(), version, levels })
    }

    pub fn level(&self, id: &str) -> Level {
        self.levels.get(id).copied().unwrap_or(Level::Required)
    }

    /// The provisions this profile makes less strict than the default profile's, for a warning.
    pub fn relaxed(&self) -> Vec<&'static str> {
        let default = Profile::default_profile();
        let rank = |level: Level| match level {
            Level::Required => 2,
            Level::Advisory => 1,
            Level::Off => 0,
        };
        PROVISIONS.iter().map(|(id, _)| *id).filter(|id| rank(self.level(id)) < rank(default.level(id))).collect()
    }
}

/// What the hub knows about a device, gathered for an evaluation.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub device: &'a DeviceRecord,
    pub class: &'a DeviceClassRecord,
    /// Newest first.
    pub certificates: &'a [CertificateRecord],
    /// Per certificate serial, the other devices holding its key.
    pub shared_keys: Vec<(String, Vec<i64>)>,
    /// The Datastreams and MultiDatastreams of its Thing, e.g. `Datastreams(3)`, with what they
    /// observe.
    pub feeds: Vec<(String, Vec<String>)>,
    pub now: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    NotApplicable,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::NotApplicable => "not-applicable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub id: &'static str,
    pub title: &'static str,
    pub level: Level,
    pub outcome: Outcome,
    pub evidence: String,
}

/// The result of evaluating a device against a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub urn: String,
    pub profile: String,
    pub profile_version: i64,
    pub evaluated_at: Instant,
    pub findings: Vec<Finding>,
}

impl Report {
    /// The required provisions that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Required && f.outcome == Outcome::Fail)
    }

    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The reason a device is kept out, in one line: its failed required provisions.
    pub fn reason(&self) -> String {
        let failed: Vec<String> = self.failures().map(|f| format!("{}: {}", f.id, f.evidence)).collect();
        if failed.is_empty() {
            format!("passed profile {} v{}", self.profile, self.profile_version)
        } else {
            failed.join("; ")
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "urn": self.urn,
            "profile": self.profile,
            "profileVersion": self.profile_version,
            "evaluatedAt": self.evaluated_at.to_string(),
            "result": if self.passed() { "pass" } else { "fail" },
            "provisions": self.findings.iter().map(|f| json!({
                "id": f.id,
                "title": f.title,
                "level": f.level.name(),
                "outcome": f.outcome.name(),
                "evidence": f.evidence,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report for people: one line per provision.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}: {} against {} v{} at {}\n",
            self.urn,
            if self.passed() { "PASS" } else { "FAIL" },
            self.profile,
            self.profile_version,
            self.evaluated_at
        );
        for f in &self.findings {
            let mark = match f.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::NotApplicable => "n/a ",
            };
            out.push_str(&format!("  [{mark}] {:<21} ({}) {}\n      {}\n", f.id, f.level.name(), f.title, f.evidence));
        }
        out
    }

    /// Reads back a stored report (`to_json`'s shape) for its reason and result.
    pub fn stored_result(json_text: &str) -> Option<bool> {
        let value: Value = serde_json::from_str(json_text).ok()?;
        Some(value.get("result")?.as_str()? == "pass")
    }
}

/// What the checks of a pre-installed password found (never the password), stored with the
/// device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordFindings {
    /// On the list of well-known default passwords.
    pub default: bool,
    /// Another device has the same password.
    pub shared: bool,
    /// Contains one of the device's identifiers (its MAC, serial, the URN).
    pub derived: bool,
    /// Shorter than 8 characters.
    pub short: bool,
}

impl PasswordFindings {
    pub fn to_json(&self) -> String {
        json!({"preinstalled": true, "default": self.default, "shared": self.shared, "derived": self.derived, "short": self.short})
            .to_string()
    }

    pub fn from_json(text: &str) -> PasswordFindings {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let flag = |name: &str| value.get(name).and_then(Value::as_bool).unwrap_or(false);
        PasswordFindings {
            default: flag("default"),
            shared: flag("shared"),
            derived: flag("derived"),
            short: flag("short"),
        }
    }
}

/// Well-known default passwords of IoT devices (among them those the Mirai botnet tried).
const DEFAULT_PASSWORDS: &[&str] = &[
    "",
    "0000",
    "00000000",
    "1111",
    "111111",
    "1234",
    "12345",
    "123456",
    "1234567",
    "12345678",
    "123456789",
    "54321",
    "666666",
    "7ujmko0admin",
    "888888",
    "admin",
    "admin1234",
    "admin123",
    "administrator",
    "anko",
    "changeme",
    "default",
    "guest",
    "hi3518",
    "ikwb",
    "jvbzd",
    "klv123",
    "klv1234",
    "letmein",
    "meinsm",
    "pass",
    "password",
    "password1",
    "qwerty",
    "raspberry",
    "realtek",
    "root",
    "service",
    "smcadmin",
    "support",
    "system",
    "toor",
    "tech",
    "ubnt",
    "user",
    "vizxv",
    "xc3511",
    "xmhdipc",
    "zlxx.",
    "zte521",
];

/// Checks a password a device comes with (the rest, `shared`, needs the database).
pub fn check_password(password: &str, identifiers: &[&str], urn: &str) -> PasswordFindings {
    let lower = password.to_ascii_lowercase();
    PasswordFindings {
        default: DEFAULT_PASSWORDS.contains(&lower.as_str()),
        shared: false,
        derived: lower.contains(&urn.to_ascii_lowercase())
            || identifiers.iter().any(|id| id.len() >= 4 && lower.contains(&id.to_ascii_lowercase())),
        short: password.chars().count() < 8,
    }
}

/// Whether a vulnerability contact is an address someone can write to.
fn contact_usable(contact: &str) -> bool {
    let contact = contact.trim();
    (contact.starts_with("https://") && contact.len() > "https://".len() && !contact.contains(char::is_whitespace))
        || (contact.starts_with("mailto:") && contact[7..].contains('@'))
}

/// A firmware digest as declared: `sha256:` and 64 hex digits.
fn digest_usable(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn live(certificate: &CertificateRecord, now: Instant) -> bool {
    certificate.revoked_at.is_none() && certificate.not_after > now && certificate.not_before <= now
}

/// Evaluates `evidence` against `profile`.
pub fn evaluate(profile: &Profile, evidence: &Evidence<'_>) -> Report {
    use Outcome::{Fail, NotApplicable, Pass};
    let (device, class, now) = (evidence.device, evidence.class, evidence.now);
    let live_certificate = evidence.certificates.iter().find(|c| live(c, now));
    let findings = device.password_findings.as_deref().map(PasswordFindings::from_json);
    let has_secret = device.secret_hash.is_some();
    let mut out = Vec::new();
    for (id, title) in PROVISIONS {
        let level = profile.level(id);
        if level == Level::Off {
            continue;
        }
        let (outcome, evidence_text) = match *id {
            "5.1-1" => match (&findings, live_certificate, has_secret) {
                (Some(f), _, _) if f.default => {
                    (Fail, "its pre-installed password is a well-known default password".into())
                }
                (Some(f), _, _) if f.shared => {
                    (Fail, "its pre-installed password is the same as another device's".into())
                }
                (_, Some(c), _) => {
                    (Pass, format!("authenticates with its own certificate (serial {}) from the hub's CA", c.serial))
                }
                (Some(_), None, true) => {
                    (Pass, "its pre-installed password is unique to it and no known default".into())
                }
                (None, None, true) => (Pass, "authenticates with its own random secret issued by the hub".into()),
                (_, None, false) if !evidence.certificates.is_empty() => {
                    (Pass, "its certificates were its own, issued by the hub's CA (none is live: see 5.5-7)".into())
                }
                (_, None, false) => (Fail, "it holds no credential yet: enroll it (EST) or issue it a secret".into()),
            },
            "5.1-2" => match &findings {
                None => (NotApplicable, "no pre-installed password".into()),
                Some(f) if f.derived => (Fail, "its pre-installed password contains one of its identifiers".into()),
                Some(f) if f.short => (Fail, "its pre-installed password is shorter than 8 characters".into()),
                Some(_) => (Pass, "its pre-installed password is not derived from its identifiers".into()),
            },
            "5.2-1" => match class.vulnerability_contact.as_deref() {
                Some(contact) if contact_usable(contact) => (Pass, format!("vulnerability reports go to {contact}")),
                Some(contact) => (Fail, format!("`{contact}` is not an https URL or a mailto address")),
                None => (Fail, "its device class declares no vulnerability-disclosure contact".into()),
            },
            "5.3-2" => {
                let firmware: Vec<Value> = serde_json::from_str(&class.firmware).unwrap_or_default();
                let unsigned = firmware
                    .iter()
                    .filter(|f| !f.get("digest").and_then(Value::as_str).is_some_and(digest_usable))
                    .count();
                match class.update_mechanism.as_deref() {
                    None => (Fail, "its device class declares no software update mechanism".into()),
                    Some(_) if firmware.is_empty() => {
                        (Fail, "its device class declares no firmware versions with digests".into())
                    }
                    Some(_) if unsigned > 0 => {
                        (Fail, format!("{unsigned} declared firmware version(s) lack a sha256 digest"))
                    }
                    Some(mechanism) => {
                        (Pass, format!("updates by {mechanism}; {} firmware version(s) with digests", firmware.len()))
                    }
                }
            }
            "5.3-8" => {
                let firmware: Vec<Value> = serde_json::from_str(&class.firmware).unwrap_or_default();
                let newest = firmware.last().and_then(|f| f.get("version")).and_then(Value::as_str);
                match (device.firmware_version.as_deref(), newest) {
                    (_, None) => (NotApplicable, "its device class declares no firmware versions".into()),
                    (None, Some(_)) => (Fail, "its firmware version is not known".into()),
                    (Some(running), Some(newest)) if running == newest => {
                        (Pass, format!("runs {running}, the newest declared"))
                    }
                    (Some(running), Some(newest)) => (Fail, format!("runs {running}; the newest declared is {newest}")),
                }
            }
            "5.3-13" => match class.support_until {
                _ if mud_unsupported(class) => {
                    (Fail, "its MUD file (RFC 8520) says the model is no longer supported (is-supported: false)".into())
                }
                Some(until) if until > now => (Pass, format!("supported until {until}")),
                Some(until) => (Fail, format!("its support period ended at {until}")),
                None => (Fail, "its device class declares no support period".into()),
            },
            "5.3-16" => {
                if class.manufacturer.trim().is_empty() || class.model.trim().is_empty() {
                    (Fail, "its device class has no manufacturer or model designation".into())
                } else if class.hardware_version.is_empty() {
                    (Pass, format!("{} {}", class.manufacturer, class.model))
                } else {
                    (Pass, format!("{} {} hardware {}", class.manufacturer, class.model, class.hardware_version))
                }
            }
            "5.4-2" => match evidence.shared_keys.iter().find(|(_, others)| !others.is_empty()) {
                _ if evidence.certificates.is_empty() => (NotApplicable, "it holds no certificate".into()),
                Some((serial, others)) => {
                    (Fail, format!("the key of certificate {serial} is also that of device(s) {others:?}"))
                }
                None => (Pass, "its certificates' keys are its own".into()),
            },
            "5.5-1" => (
                Pass,
                "the hub accepts device credentials only over TLS 1.2 or 1.3 (mutual TLS for certificates)".into(),
            ),
            "5.5-7" => match (live_certificate, evidence.certificates.first(), has_secret) {
                (Some(c), _, _) => (Pass, format!("certificate {} is valid until {}", c.serial, c.not_after)),
                (None, _, true) => (Pass, "its own secret is live".into()),
                (None, Some(c), false) if c.revoked_at.is_some() => {
                    (Fail, format!("certificate {} was revoked; re-enroll it with a new token", c.serial))
                }
                (None, Some(c), false) => {
                    (Fail, format!("certificate {} expired at {}; re-enroll it", c.serial, c.not_after))
                }
                (None, None, false) => (NotApplicable, "it holds no credential yet".into()),
            },
            "5.8-3" => {
                let undeclared: Vec<String> = evidence
                    .feeds
                    .iter()
                    .flat_map(|(name, observed)| {
                        observed.iter().filter(|d| !class_senses(class, d)).map(move |d| format!("{name} observes {d}"))
                    })
                    .collect();
                match device.thing {
                    None => (NotApplicable, "it is linked to no Thing".into()),
                    Some(_) if undeclared.is_empty() => {
                        (Pass, format!("{} Datastream(s), all of declared ObservedProperties", evidence.feeds.len()))
                    }
                    Some(_) => (Fail, format!("undeclared sensing: {}", undeclared.join(", "))),
                }
            }
            "5.13-1" => {
                (Pass, "every Observation is checked against the SensorThings data model before it is stored".into())
            }
            "8259A-identification" => (Pass, format!("{} is a valid RFC 9039 URN, unique across the hub", device.urn)),
            "8259A-configuration" => (
                Pass,
                "its records and credentials change only through authenticated, authorised, audited calls".into(),
            ),
            _ => continue,
        };
        out.push(Finding { id, title, level, outcome, evidence: evidence_text });
    }
    Report {
        urn: device.urn.clone(),
        profile: profile.name.clone(),
        profile_version: profile.version,
        evaluated_at: now,
        findings: out,
    }
}

/// Whether the class's MUD file says the model is no longer supported.
fn mud_unsupported(class: &DeviceClassRecord) -> bool {
    let Some(text) = class.mud.as_deref() else { return false };
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    value.pointer("/ietf-mud:mud/is-supported") == Some(&Value::Bool(false))
}

/// Checks a MUD file (RFC 8520 §2.1, the `ietf-mud:mud` container): `mud-version` 1, an https
/// `mud-url` (the one the class declares, if it declares one), `last-update`, `is-supported`;
/// returns its URL. The ACLs it references are stored, not enforced (the hub is no network
/// controller).
pub fn check_mud(mud: &Value, declared_url: Option<&str>) -> Result<String, String> {
    let container = mud
        .get("ietf-mud:mud")
        .and_then(Value::as_object)
        .ok_or("a MUD file is a JSON object with an `ietf-mud:mud` container (RFC 8520 §2.1)")?;
    if container.get("mud-version").and_then(Value::as_i64) != Some(1) {
        return Err("`mud-version` must be 1".into());
    }
    let url = container.get("mud-url").and_then(Value::as_str).ok_or("the MUD file has no `mud-url`")?;
    if !url.starts_with("https://") || url.len() <= "https://".len() {
        return Err(format!("`mud-url` must be an https URL (RFC 8520 §1.4), not `{url}`"));
    }
    if let Some(declared) = declared_url
        && declared != url
    {
        return Err(format!("the MUD file's `mud-url` {url} is not the class's mudUrl {declared}"));
    }
    let updated = container.get("last-update").and_then(Value::as_str).ok_or("the MUD file has no `last-update`")?;
    if updated.parse::<Instant>().is_err() {
        return Err(format!("`last-update` must be a date-and-time, not `{updated}`"));
    }
    if !container.get("is-supported").is_some_and(Value::is_boolean) {
        return Err("`is-supported` must be true or false".into());
    }
    Ok(url.to_owned())
}

/// The ObservedProperty definitions a class declares.
pub fn sensing_of(class: &DeviceClassRecord) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(&class.sensing).unwrap_or_default()
}

fn class_senses(class: &DeviceClassRecord, definition: &str) -> bool {
    sensing_of(class).iter().any(|d| d == definition)
}
