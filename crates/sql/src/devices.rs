//! Statements on the device tables (device classes, devices, enrollment tokens, certificates,
//! the CA): fixed shapes, placeholders from the dialect, values always bound.

use crate::dialect::Dialect;

/// `?1, ?2, ... ?n` in the dialect's spelling.
fn list(d: &dyn Dialect, n: usize) -> String {
    (1..=n).map(|i| d.placeholder(i)).collect::<Vec<_>>().join(", ")
}

fn p(d: &dyn Dialect, n: usize) -> String {
    d.placeholder(n)
}

pub const CLASS_COLUMNS: &str = "id, manufacturer, model, hardware_version, support_until, vulnerability_contact, \
                                 sensing, mud_url, update_mechanism, firmware, created_at, mud";

/// Inserts a class `(manufacturer .. created_at)` in the order of [`CLASS_COLUMNS`] without
/// the id, returning its id.
pub fn insert_class(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO device_classes (manufacturer, model, hardware_version, support_until, vulnerability_contact, \
         sensing, mud_url, update_mechanism, firmware, created_at, mud) VALUES ({}) RETURNING id",
        list(d, 11)
    )
}

pub fn class_by_id(d: &dyn Dialect) -> String {
    format!("SELECT {CLASS_COLUMNS} FROM device_classes WHERE id = {}", p(d, 1))
}

pub fn classes() -> String {
    format!("SELECT {CLASS_COLUMNS} FROM device_classes ORDER BY id")
}

pub const DEVICE_COLUMNS: &str = "id, urn, project_id, class_id, thing_id, state, state_reason, state_changed_at, \
                                  firmware_version, secret_hash, password_findings, preregistered_key, report, created_at";

/// Inserts a device `(urn ?1, project ?2, class ?3, thing ?4, firmware ?5, preregistered key
/// ?6, now ?7)` in state `registered`, returning its id.
pub fn insert_device(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO devices (urn, project_id, class_id, thing_id, firmware_version, preregistered_key, state, \
         state_reason, state_changed_at, created_at) \
         VALUES ({}, {}, {}, {}, {}, {}, 'registered', 'registered; no credential yet', {n}, {n}) RETURNING id",
        p(d, 1),
        p(d, 2),
        p(d, 3),
        p(d, 4),
        p(d, 5),
        p(d, 6),
        n = p(d, 7)
    )
}

pub fn device_by(d: &dyn Dialect, column: DeviceKey) -> String {
    let column = match column {
        DeviceKey::Id => "id",
        DeviceKey::Urn => "urn",
        DeviceKey::Thing => "thing_id",
        DeviceKey::Secret => "secret_hash",
        DeviceKey::PreregisteredKey => "preregistered_key",
    };
    format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE {column} = {} ORDER BY id", p(d, 1))
}

/// The column a device is looked up by.
#[derive(Clone, Copy, Debug)]
pub enum DeviceKey {
    Id,
    Urn,
    Thing,
    Secret,
    PreregisteredKey,
}

/// The devices of project `?1`, or all when `?1` is NULL.
pub fn devices(d: &dyn Dialect) -> String {
    format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE CAST({p} AS BIGINT) IS NULL OR project_id = {p} ORDER BY id",
        p = p(d, 1)
    )
}

/// Sets device `?1` to state `?2` with reason `?3` at `?4`, and its report to `?5` unless that
/// is NULL.
pub fn set_state(d: &dyn Dialect) -> String {
    format!(
        "UPDATE devices SET state = {}, state_reason = {}, state_changed_at = {}, report = COALESCE({}, report) \
         WHERE id = {}",
        p(d, 2),
        p(d, 3),
        p(d, 4),
        p(d, 5),
        p(d, 1)
    )
}

/// Sets device `?1`'s secret hash `?2` and password findings `?3`.
pub fn set_secret(d: &dyn Dialect) -> String {
    format!("UPDATE devices SET secret_hash = {}, password_findings = {} WHERE id = {}", p(d, 2), p(d, 3), p(d, 1))
}

/// Sets device `?1`'s firmware version `?2`.
pub fn set_firmware(d: &dyn Dialect) -> String {
    format!("UPDATE devices SET firmware_version = {} WHERE id = {}", p(d, 2), p(d, 1))
}

/// Inserts a token `(device ?1, hash ?2, created ?3, expires ?4)`, returning its id.
pub fn insert_token(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO enrollment_tokens (device_id, hash, created_at, expires_at) VALUES ({}) RETURNING id",
        list(d, 4)
    )
}

/// `(id, device_id, expires_at, used_at)` of the token with hash `?1`.
pub fn token_by_hash(d: &dyn Dialect) -> String {
    format!("SELECT id, device_id, expires_at, used_at FROM enrollment_tokens WHERE hash = {}", p(d, 1))
}

/// Marks token `?1` used at `?2` if it was not; one row changed means this caller used it.
pub fn use_token(d: &dyn Dialect) -> String {
    format!("UPDATE enrollment_tokens SET used_at = {} WHERE id = {} AND used_at IS NULL", p(d, 2), p(d, 1))
}

/// Marks every unused token of device `?1` used at `?2`.
pub fn void_tokens(d: &dyn Dialect) -> String {
    format!("UPDATE enrollment_tokens SET used_at = {} WHERE device_id = {} AND used_at IS NULL", p(d, 2), p(d, 1))
}

pub const CERTIFICATE_COLUMNS: &str = "id, device_id, serial, fingerprint, key_fingerprint, not_before, not_after, \
                                       issued_at, revoked_at, revocation_reason, pem";

/// Inserts a certificate, the columns of [`CERTIFICATE_COLUMNS`] without the id, returning
/// its id.
pub fn insert_certificate(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO device_certificates (device_id, serial, fingerprint, key_fingerprint, not_before, not_after, \
         issued_at, revoked_at, revocation_reason, pem) VALUES ({}) RETURNING id",
        list(d, 10)
    )
}

pub fn certificate_by_serial(d: &dyn Dialect) -> String {
    format!("SELECT {CERTIFICATE_COLUMNS} FROM device_certificates WHERE serial = {}", p(d, 1))
}

pub fn certificates_of(d: &dyn Dialect) -> String {
    format!("SELECT {CERTIFICATE_COLUMNS} FROM device_certificates WHERE device_id = {} ORDER BY id DESC", p(d, 1))
}

/// The devices other than `?2` with a certificate for the key `?1`.
pub fn devices_with_key(d: &dyn Dialect) -> String {
    format!(
        "SELECT DISTINCT device_id FROM device_certificates WHERE key_fingerprint = {} AND device_id <> {} \
         ORDER BY device_id",
        p(d, 1),
        p(d, 2)
    )
}

/// Revokes the certificate with serial `?1` at `?2` for reason `?3` unless it was revoked.
pub fn revoke_certificate(d: &dyn Dialect) -> String {
    format!(
        "UPDATE device_certificates SET revoked_at = {}, revocation_reason = {} WHERE serial = {} AND revoked_at IS NULL",
        p(d, 2),
        p(d, 3),
        p(d, 1)
    )
}

/// `(serial, revoked_at)` of the revoked certificates still valid at `?1`.
pub fn revoked_certificates(d: &dyn Dialect) -> String {
    format!(
        "SELECT serial, revoked_at FROM device_certificates WHERE revoked_at IS NOT NULL AND not_after > {} \
         ORDER BY id",
        p(d, 1)
    )
}

pub fn authority() -> &'static str {
    "SELECT chain_pem, sealed_key, crl_number FROM certificate_authority WHERE id = 1"
}

/// Stores the CA `(chain ?1, sealed key ?2, crl number ?3, created ?4)` unless there is one.
pub fn insert_authority(d: &dyn Dialect) -> String {
    format!(
        "INSERT INTO certificate_authority (id, chain_pem, sealed_key, crl_number, created_at) \
         VALUES (1, {}) ON CONFLICT (id) DO NOTHING",
        list(d, 4)
    )
}

pub fn next_crl_number() -> &'static str {
    "UPDATE certificate_authority SET crl_number = crl_number + 1 WHERE id = 1 RETURNING crl_number"
}

/// `(thing_id, definition)` of Datastream `?1` and its ObservedProperty, or of MultiDatastream
/// `?1` and each of its ObservedProperties: what a device writing to it must be declared for.
pub fn feed(d: &dyn Dialect, multi: bool) -> String {
    if multi {
        format!(
            "SELECT m.thing_id, op.definition FROM multi_datastreams m \
             LEFT JOIN multi_datastream_observed_properties x ON x.multi_datastream_id = m.id \
             LEFT JOIN observed_properties op ON op.id = x.observed_property_id WHERE m.id = {}",
            p(d, 1)
        )
    } else {
        format!(
            "SELECT ds.thing_id, op.definition FROM datastreams ds \
             LEFT JOIN observed_properties op ON op.id = ds.observed_property_id WHERE ds.id = {}",
            p(d, 1)
        )
    }
}
