//! The principals' records (users, their roles per project, API tokens, projects) in storage
//! terms. Secrets are never here: only their hashes (see `access::credentials`).

use access::{Grant, ProjectId};
use model::Instant;

use crate::StoreError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub name: String,
    /// The Argon2id PHC string; `None` when the user signs in with tokens only.
    pub password_hash: Option<String>,
    pub hub_admin: bool,
    pub disabled: bool,
}

/// What a token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything its user may do, now and later.
    User,
    /// Only these grants, and only as far as its user still holds them.
    Grants(Vec<Grant>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub user: i64,
    pub label: String,
    pub scope: TokenScope,
    pub expires_at: Option<Instant>,
    pub revoked_at: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    pub id: ProjectId,
    pub name: String,
    pub open_data: bool,
}

/// A new token to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken<'a> {
    pub user: i64,
    /// `access::credentials::TokenHash` text.
    pub hash: &'a str,
    pub label: &'a str,
    pub scope: TokenScope,
    pub expires_at: Option<Instant>,
}

/// One entry of the audit log, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Instant,
    pub actor: String,
    pub event: String,
    /// JSON text.
    pub detail: String,
    pub previous_hash: String,
    pub hash: String,
}

/// Access to the principal tables. Reached from any job through `Reader::principals`; the
/// methods that change something work only inside a write job.
pub trait Principals: Devices {
    fn user_by_name(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError>;

    fn user(&mut self, id: i64) -> Result<Option<UserRecord>, StoreError>;

    /// A new user; a taken name is a conflict.
    fn insert_user(&mut self, name: &str, password_hash: Option<&str>, hub_admin: bool) -> Result<i64, StoreError>;

    /// The user's roles, one per project.
    fn memberships(&mut self, user: i64) -> Result<Vec<Grant>, StoreError>;

    /// Sets (or, with `None`, removes) the user's role in a project.
    fn set_membership(&mut self, user: i64, project: ProjectId, role: Option<access::Role>) -> Result<(), StoreError>;

    fn insert_token(&mut self, token: &NewToken<'_>) -> Result<i64, StoreError>;

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// True if the token was live (and, with `owner`, belongs to that user) and is now revoked.
    fn revoke_token(&mut self, id: i64, owner: Option<i64>) -> Result<bool, StoreError>;

    fn projects(&mut self) -> Result<Vec<ProjectRecord>, StoreError>;

    /// A new project; a taken name is a conflict.
    fn insert_project(&mut self, name: &str, open_data: bool) -> Result<ProjectId, StoreError>;

    /// True if the project exists.
    fn set_open_data(&mut self, project: ProjectId, open_data: bool) -> Result<bool, StoreError>;

    /// The hash of the newest audit entry, `None` for an empty log.
    fn last_audit_hash(&mut self) -> Result<Option<String>, StoreError>;

    /// Appends an audit entry (its `id` is ignored); `app` computes the chained hash.
    fn append_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// Up to `limit` audit entries after the id `after`, oldest first.
    fn audit_entries(&mut self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;
}

/// What a manufacturer declares about one model of device (issue 6): the evidence the
/// admission gate checks. Lists are JSON text, kept as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceClassRecord {
    pub id: i64,
    pub manufacturer: String,
    pub model: String,
    /// Empty when the model has one hardware version.
    pub hardware_version: String,
    pub support_until: Option<Instant>,
    pub vulnerability_contact: Option<String>,
    /// JSON array of ObservedProperty definitions.
    pub sensing: String,
    pub mud_url: Option<String>,
    pub update_mechanism: Option<String>,
    /// JSON array of `{"version", "digest"}`.
    pub firmware: String,
    pub created_at: Instant,
    /// The RFC 8520 MUD file, JSON text as given.
    pub mud: Option<String>,
}

/// A device's place in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Known to the hub; no credential yet.
    Registered,
    /// Holds a credential; its admission check has not passed (yet).
    Pending,
    /// Passed the baseline profile: its data is accepted.
    Admitted,
    /// Failed the profile, or failed it later: its data is refused until it passes again.
    Quarantined,
    /// Stopped by an operator.
    Suspended,
    /// Taken out of service for good.
    Retired,
}

impl DeviceState {
    pub const ALL: [DeviceState; 6] = [
        DeviceState::Registered,
        DeviceState::Pending,
        DeviceState::Admitted,
        DeviceState::Quarantined,
        DeviceState::Suspended,
        DeviceState::Retired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Registered => "registered",
            DeviceState::Pending => "pending",
            DeviceState::Admitted => "admitted",
            DeviceState::Quarantined => "quarantined",
            DeviceState::Suspended => "suspended",
            DeviceState::Retired => "retired",
        }
    }

    pub fn parse(text: &str) -> Option<DeviceState> {
        DeviceState::ALL.into_iter().find(|state| state.name() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: i64,
    /// The normal form of its RFC 9039 URN.
    pub urn: String,
    pub project: ProjectId,
    pub class: i64,
    pub thing: Option<i64>,
    pub state: DeviceState,
    pub state_reason: String,
    pub state_changed_at: Instant,
    pub firmware_version: Option<String>,
    /// SHA-256 hex of its own secret, when it has one.
    pub secret_hash: Option<String>,
    /// JSON findings of the checks of a pre-installed password.
    pub password_findings: Option<String>,
    /// SHA-256 hex of a public key registered for zero-touch enrollment.
    pub preregistered_key: Option<String>,
    /// JSON of the last admission report.
    pub report: Option<String>,
    pub created_at: Instant,
}

/// A new device to store (state `registered`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDevice<'a> {
    pub urn: &'a str,
    pub project: ProjectId,
    pub class: i64,
    pub thing: Option<i64>,
    pub firmware_version: Option<&'a str>,
    pub preregistered_key: Option<&'a str>,
}

/// Why an enrollment token did not admit its holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Used,
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    pub id: i64,
    pub device: i64,
    pub serial: String,
    pub fingerprint: String,
    pub key_fingerprint: String,
    pub not_before: Instant,
    pub not_after: Instant,
    pub issued_at: Instant,
    pub revoked_at: Option<Instant>,
    pub revocation_reason: Option<String>,
    pub pem: String,
}

/// The hub's CA as stored: its chain and its sealed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityRecord {
    pub chain_pem: String,
    /// Base64 of the sealed PKCS#8 key.
    pub sealed_key: String,
    pub crl_number: i64,
}

/// The Thing a Datastream or MultiDatastream belongs to (if any) and the definitions of the
/// ObservedProperties it observes.
pub type Feed = (Option<i64>, Vec<String>);

/// The device tables (issue 6), beside the principals: a device is a principal too.
pub trait Devices {
    /// A new class; the same manufacturer, model and hardware version twice is a conflict.
    fn insert_device_class(&mut self, class: &DeviceClassRecord) -> Result<i64, StoreError>;

    fn device_class(&mut self, id: i64) -> Result<Option<DeviceClassRecord>, StoreError>;

    fn device_classes(&mut self) -> Result<Vec<DeviceClassRecord>, StoreError>;

    /// A new device in state `registered`; a URN taken is a conflict.
    fn insert_device(&mut self, device: &NewDevice<'_>) -> Result<i64, StoreError>;

    fn device_by_urn(&mut self, urn: &str) -> Result<Option<DeviceRecord>, StoreError>;

    fn device(&mut self, id: i64) -> Result<Option<DeviceRecord>, StoreError>;

    /// The devices of a project (all with `None`), by id.
    fn devices(&mut self, project: Option<ProjectId>) -> Result<Vec<DeviceRecord>, StoreError>;

    /// The devices whose Thing is `thing`.
    fn devices_of_thing(&mut self, thing: i64) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Moves a device to `state` with its reason and (when given) its new report.
    fn set_device_state(
        &mut self,
        id: i64,
        state: DeviceState,
        reason: &str,
        report: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Sets the device's secret hash (NULL removes it) and the findings about it; a hash
    /// another device has is a conflict.
    fn set_device_secret(&mut self, id: i64, hash: Option<&str>, findings: Option<&str>) -> Result<(), StoreError>;

    /// The device whose key registered ahead has the SHA-256 `fingerprint`.
    fn device_by_preregistered_key(&mut self, fingerprint: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// The device whose secret hashes to `hash`.
    fn device_by_secret(&mut self, hash: &str) -> Result<Option<DeviceRecord>, StoreError>;

    fn set_device_firmware(&mut self, id: i64, version: Option<&str>) -> Result<(), StoreError>;

    fn insert_enrollment_token(&mut self, device: i64, hash: &str, expires_at: Instant) -> Result<i64, StoreError>;

    /// Uses up the token with hash `hash` at `now`: its device, or why not.
    fn take_enrollment_token(&mut self, hash: &str, now: Instant) -> Result<Result<i64, TokenRefusal>, StoreError>;

    /// Every unused, unexpired token of the device becomes unusable.
    fn void_enrollment_tokens(&mut self, device: i64, now: Instant) -> Result<(), StoreError>;

    /// Stores an issued certificate (its `id` is ignored).
    fn insert_certificate(&mut self, certificate: &CertificateRecord) -> Result<i64, StoreError>;

    fn certificate_by_serial(&mut self, serial: &str) -> Result<Option<CertificateRecord>, StoreError>;

    /// The certificates of a device, newest first.
    fn certificates_of(&mut self, device: i64) -> Result<Vec<CertificateRecord>, StoreError>;

    /// The devices other than `device` that hold a certificate for the key.
    fn devices_with_key(&mut self, key_fingerprint: &str, device: i64) -> Result<Vec<i64>, StoreError>;

    /// Revokes the certificate with serial `serial` unless it was revoked; true if it was live.
    fn revoke_certificate(&mut self, serial: &str, at: Instant, reason: &str) -> Result<bool, StoreError>;

    /// Every revoked certificate that has not expired: `(serial, revoked_at)`.
    fn revoked_certificates(&mut self, now: Instant) -> Result<Vec<(String, Instant)>, StoreError>;

    fn authority(&mut self) -> Result<Option<AuthorityRecord>, StoreError>;

    /// Stores the CA unless one is stored already (another node was first): true if stored.
    fn insert_authority(&mut self, authority: &AuthorityRecord) -> Result<bool, StoreError>;

    /// The next CRL number.
    fn next_crl_number(&mut self) -> Result<i64, StoreError>;

    /// The Thing of a Datastream (`multi` false) or MultiDatastream and the definitions of
    /// what it observes; `None` when it does not exist.
    fn feed(&mut self, id: i64, multi: bool) -> Result<Option<Feed>, StoreError>;
}
