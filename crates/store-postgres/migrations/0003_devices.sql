-- Trusted devices (issue 6), column for column as SQLite's 0007_devices.sql: device classes (what a manufacturer declares about a model),
-- devices with their RFC 9039 URN and admission state, one-time enrollment tokens, the
-- certificates the hub's CA issued, and the CA itself. Secrets are stored only as hashes
-- (tokens, device secrets: SHA-256 hex) or sealed (the CA's key: AES-256-GCM under the
-- node's sealing key, base64).

CREATE TABLE device_classes (
    id bigserial PRIMARY KEY,
    manufacturer text NOT NULL,
    -- The model designation (EN 303 645 provision 5.3-16).
    model text NOT NULL,
    hardware_version text NOT NULL DEFAULT '',
    -- Microseconds since the epoch; NULL when no support period is declared (5.3-13).
    support_until bigint,
    -- Where vulnerabilities are reported: an https URL or a mailto address (5.2-1).
    vulnerability_contact text,
    -- JSON array of the ObservedProperty definitions the model can sense (5.8-3).
    sensing text NOT NULL,
    -- RFC 8520 MUD URL, optional.
    mud_url text,
    -- How firmware reaches the device ('suit', 'lwm2m', ...); NULL when there is none (5.3-2).
    update_mechanism text,
    -- JSON array of {"version", "digest"}: the firmware versions the manufacturer released.
    firmware text NOT NULL,
    created_at bigint NOT NULL,
    UNIQUE (manufacturer, model, hardware_version)
);

CREATE TABLE devices (
    id bigserial PRIMARY KEY,
    -- Normal form of the RFC 9039 URN; unique across the hub.
    urn text NOT NULL UNIQUE,
    project_id bigint NOT NULL REFERENCES projects (id),
    class_id bigint NOT NULL REFERENCES device_classes (id),
    thing_id bigint REFERENCES things (id) ON DELETE SET NULL,
    state text NOT NULL CHECK (state IN ('registered', 'pending', 'admitted', 'quarantined', 'suspended', 'retired')),
    -- Why the device is in its state, for its operator.
    state_reason text NOT NULL,
    state_changed_at bigint NOT NULL,
    -- The firmware version the device reports or its operator recorded.
    firmware_version text,
    -- SHA-256 hex of the device's own random secret (for devices that cannot hold a
    -- certificate); NULL when it has none.
    secret_hash text UNIQUE,
    -- JSON: what the checks of a pre-installed password found when it was set (never the
    -- password).
    password_findings text,
    -- SHA-256 hex of a public key registered ahead for zero-touch enrollment.
    preregistered_key text UNIQUE,
    -- JSON: the last admission report.
    report text,
    created_at bigint NOT NULL
);
CREATE INDEX devices_thing ON devices (thing_id);

CREATE TABLE enrollment_tokens (
    id bigserial PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    hash text NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    used_at bigint
);

CREATE TABLE device_certificates (
    id bigserial PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    -- Hex of the certificate's serial number.
    serial text NOT NULL UNIQUE,
    -- SHA-256 hex of the certificate's DER.
    fingerprint text NOT NULL UNIQUE,
    -- SHA-256 hex of its SubjectPublicKeyInfo: one key never serves two devices (5.4-2).
    key_fingerprint text NOT NULL,
    not_before bigint NOT NULL,
    not_after bigint NOT NULL,
    issued_at bigint NOT NULL,
    revoked_at bigint,
    revocation_reason text,
    pem text NOT NULL
);
CREATE INDEX device_certificates_device ON device_certificates (device_id);
CREATE INDEX device_certificates_key ON device_certificates (key_fingerprint);

-- The hub's CA: one row. `sealed_key` is base64 of the sealed PKCS#8 key.
CREATE TABLE certificate_authority (
    id bigint PRIMARY KEY CHECK (id = 1),
    chain_pem text NOT NULL,
    sealed_key text NOT NULL,
    crl_number bigint NOT NULL,
    created_at bigint NOT NULL
);
