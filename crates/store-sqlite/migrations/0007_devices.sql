-- Trusted devices (issue 6): device classes (what a manufacturer declares about a model),
-- devices with their RFC 9039 URN and admission state, one-time enrollment tokens, the
-- certificates the hub's CA issued, and the CA itself. Secrets are stored only as hashes
-- (tokens, device secrets: SHA-256 hex) or sealed (the CA's key: AES-256-GCM under the
-- node's sealing key, base64).

CREATE TABLE device_classes (
    id INTEGER PRIMARY KEY,
    manufacturer TEXT NOT NULL,
    -- The model designation (EN 303 645 provision 5.3-16).
    model TEXT NOT NULL,
    hardware_version TEXT NOT NULL DEFAULT '',
    -- Microseconds since the epoch; NULL when no support period is declared (5.3-13).
    support_until INTEGER,
    -- Where vulnerabilities are reported: an https URL or a mailto address (5.2-1).
    vulnerability_contact TEXT,
    -- JSON array of the ObservedProperty definitions the model can sense (5.8-3).
    sensing TEXT NOT NULL,
    -- RFC 8520 MUD URL, optional.
    mud_url TEXT,
    -- How firmware reaches the device ('suit', 'lwm2m', ...); NULL when there is none (5.3-2).
    update_mechanism TEXT,
    -- JSON array of {"version", "digest"}: the firmware versions the manufacturer released.
    firmware TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (manufacturer, model, hardware_version)
);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    -- Normal form of the RFC 9039 URN; unique across the hub.
    urn TEXT NOT NULL UNIQUE,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    class_id INTEGER NOT NULL REFERENCES device_classes (id),
    thing_id INTEGER REFERENCES things (id) ON DELETE SET NULL,
    state TEXT NOT NULL CHECK (state IN ('registered', 'pending', 'admitted', 'quarantined', 'suspended', 'retired')),
    -- Why the device is in its state, for its operator.
    state_reason TEXT NOT NULL,
    state_changed_at INTEGER NOT NULL,
    -- The firmware version the device reports or its operator recorded.
    firmware_version TEXT,
    -- SHA-256 hex of the device's own random secret (for devices that cannot hold a
    -- certificate); NULL when it has none.
    secret_hash TEXT UNIQUE,
    -- JSON: what the checks of a pre-installed password found when it was set (never the
    -- password).
    password_findings TEXT,
    -- SHA-256 hex of a public key registered ahead for zero-touch enrollment.
    preregistered_key TEXT UNIQUE,
    -- JSON: the last admission report.
    report TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX devices_thing ON devices (thing_id);

CREATE TABLE enrollment_tokens (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

CREATE TABLE device_certificates (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    -- Hex of the certificate's serial number.
    serial TEXT NOT NULL UNIQUE,
    -- SHA-256 hex of the certificate's DER.
    fingerprint TEXT NOT NULL UNIQUE,
    -- SHA-256 hex of its SubjectPublicKeyInfo: one key never serves two devices (5.4-2).
    key_fingerprint TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revocation_reason TEXT,
    pem TEXT NOT NULL
);
CREATE INDEX device_certificates_device ON device_certificates (device_id);
CREATE INDEX device_certificates_key ON device_certificates (key_fingerprint);

-- The hub's CA: one row. `sealed_key` is base64 of the sealed PKCS#8 key.
CREATE TABLE certificate_authority (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    chain_pem TEXT NOT NULL,
    sealed_key TEXT NOT NULL,
    crl_number INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
