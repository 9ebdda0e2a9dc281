//! Trusted devices: the registry of device classes and devices, the hub's certificate
//! authority and enrollment (EST, RFC 7030: one-time tokens bound to one URN, or a key
//! registered ahead), device credentials (certificates, per-device secrets) turned into
//! principals, revocation with a CRL, and the admission gate (`gate`) deciding whose data is
//! let in. One [`Trust`] per node, over the shared database: the CA is stored there, sealed
//! with the node's sealing key (every node of a database needs the same one).
//!
//! Device states: `registered` (no credential) -> `pending` (a credential, not admitted yet)
//! -> `admitted` | `quarantined` (failed after having been admitted, or sent undeclared data)
//! -> `suspended` / `retired` (by an operator). Every change of state is audited.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use access::{Action, Admission, DeviceIdentity, Identity, Principal, ProjectId};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use model::{DeviceUrn, EntityType, Instant};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::{
    AuthorityRecord, CertificateRecord, DeviceClassRecord, DeviceRecord, DeviceState, NewDevice, Reader, StoreError,
    TokenRefusal, Writer,
};

use crate::gate::{self, Evidence, PasswordFindings, Profile, Report};
use crate::{App, AppError, Caller};

/// How long a device principal is trusted without reading its records again (changes made
/// through this node take effect at once; this bounds those made on another node).
const DEVICE_CACHE: Duration = Duration::from_secs(10);

/// The prefix of per-device secrets; 64 hex digits follow.
const SECRET_PREFIX: &str = "tbd_";

/// The prefix of enrollment tokens; 64 hex digits follow.
const TOKEN_PREFIX: &str = "tbe_";

/// How the CRL is kept fresh: its next update is a day ahead, and it is re-signed hourly.
const CRL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Settings of the device trust machinery.
#[derive(Clone, Debug)]
pub struct TrustSettings {
    /// How long a device certificate is valid.
    pub certificate_validity: Duration,
    /// How long an enrollment token can be used.
    pub token_validity: Duration,
    /// DNS names and IP addresses the hub's own TLS certificate is for.
    pub server_names: Vec<String>,
    /// Where devices reach the hub, for the resolver: the HTTPS base URL, the MQTTS URL.
    pub https_url: Option<String>,
    pub mqtts_url: Option<String>,
}

impl Default for TrustSettings {
    fn default() -> Self {
        TrustSettings {
            certificate_validity: Duration::from_secs(90 * 24 * 3600),
            token_validity: Duration::from_secs(7 * 24 * 3600),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            https_url: None,
            mqtts_url: None,
        }
    }
}

/// A device class as an operator declares it.
#[derive(Clone, Debug, Default)]
pub struct NewClass {
    pub manufacturer: String,
    pub model: String,
    pub hardware_version: String,
    pub support_until: Option<Instant>,
    pub vulnerability_contact: Option<String>,
    pub sensing: Vec<String>,
    pub mud_url: Option<String>,
    pub update_mechanism: Option<String>,
    /// `(version, digest)` in release order.
    pub firmware: Vec<(String, String)>,
    /// The manufacturer's RFC 8520 MUD file.
    pub mud: Option<Value>,
}

/// A device as an operator registers it.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub urn: String,
    pub class: i64,
    pub project: Option<ProjectId>,
    pub thing: Option<i64>,
    pub firmware_version: Option<String>,
    /// A password the device ships with (checked by the gate, stored keyed-hashed).
    pub password: Option<String>,
    /// A public key (PEM SubjectPublicKeyInfo) or its SHA-256 hex, for zero-touch enrollment.
    pub public_key: Option<String>,
    /// Issue a one-time enrollment token.
    pub enrollment_token: bool,
    /// Issue a random per-device secret.
    pub secret: bool,
}

/// What registering returns: the device, and the secrets made for it (shown once).
#[derive(Clone, Debug)]
pub struct Registered {
    pub device: DeviceRecord,
    pub enrollment_token: Option<(String, Instant)>,
    /// The secret and the DTLS pre-shared key that goes with it.
    pub secret: Option<(String, String)>,
}

/// An operator's change of a device's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateChange {
    Suspend,
    /// Back from suspended or quarantined: evaluated again.
    Reinstate,
    /// Out of service for good: certificates revoked, tokens and secret voided.
    Retire,
}

/// The credentials a device presented, borrowed.
pub enum DeviceCredentials<'a> {
    /// The leaf certificate of a verified TLS client chain (DER).
    Certificate(&'a [u8]),
    /// Its URN and its secret (or pre-installed password), over TLS only.
    Secret { urn: &'a str, secret: &'a str },
}

struct CachedDevice {
    principal: Principal,
    at: std::time::Instant,
    generation: u64,
    /// When the principal stops being right by itself (its class's support period ends).
    until: Option<Instant>,
}

/// The CRL now in force.
struct Crl {
    der: Arc<Vec<u8>>,
    /// The revoked serials it lists, to tell whether it must be re-signed.
    serials: Vec<String>,
    signed_at: std::time::Instant,
}

/// The device trust machinery of one node.
pub struct Trust {
    app: App,
    authority: Arc<pki::CertificateAuthority>,
    server: pki::ServerIdentity,
    /// The key device secrets are hashed with (HMAC-SHA-256), derived from the sealing key, so
    /// a stolen database does not reveal weak pre-installed passwords by a dictionary.
    pepper: [u8; 32],
    profile: Profile,
    settings: TrustSettings,
    crl: RwLock<Crl>,
    /// Bumped whenever the CRL changes: TLS listeners rebuild their configuration.
    crl_version: tokio::sync::watch::Sender<u64>,
    cache: Mutex<HashMap<String, CachedDevice>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("profile", &self.profile.name).finish_non_exhaustive()
    }
}

fn internal(error: impl std::fmt::Display) -> AppError {
    AppError::Internal(error.to_string())
}

fn random_hex(prefix: &str) -> Result<String, AppError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(internal)?;
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn to_timestamp(at: Instant) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(at.micros()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn from_timestamp(at: jiff::Timestamp) -> Instant {
    Instant::from_micros(at.as_microsecond())
}

fn after(duration: Duration) -> Instant {
    let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
    Instant::from_micros(Instant::now().micros().saturating_add(micros))
}

/// Parses and normalises a URN, as a 400 with the position when it is not one.
pub fn parse_urn(text: &str) -> Result<DeviceUrn, AppError> {
    DeviceUrn::parse(text)
        .map_err(|e| AppError::bad("invalid_urn", format!("`{text}` is not an RFC 9039 device URN: {e}")))
}

/// The project a caller administers for `project`, or why not.
fn require_project_admin(caller: &Caller, project: ProjectId) -> Result<(), AppError> {
    let hub = access::Hub::default();
    match caller.principal.decide(&hub, Action::ManageMembers, EntityType::Thing, project) {
        access::Decision::Allow => Ok(()),
        access::Decision::Unauthenticated => Err(AppError::Unauthenticated("sign in to manage devices".into())),
        access::Decision::Forbidden => {
            Err(AppError::Forbidden(format!("only administrators of project {project} manage its devices")))
        }
    }
}

/// Whether the caller may see a device of `project` (a role there, the hub's administrators,
/// or the device itself). Identifiers are personal-data-adjacent: open data does not suffice.
fn may_see(caller: &Caller, device: &DeviceRecord) -> bool {
    let principal = &caller.principal;
    principal.hub_admin
        || principal.role_in(device.project).is_some()
        || matches!(&principal.identity, Identity::Device(d) if d.id == device.id)
}

impl Trust {
    /// Loads the hub's CA from the database, or makes one on the first start (another node
    /// starting at once may win; its CA is then used), and issues this node's TLS certificate.
    pub async fn open(
        app: App,
        sealing: &pki::SealingKey,
        profile: Profile,
        settings: TrustSettings,
    ) -> Result<Arc<Trust>, AppError> {
        let stored = app.read_job(&Caller::server(), |reader| Ok(reader.principals().authority()?)).await?;
        let record = match stored {
            Some(record) => record,
            None => {
                let authority = pki::CertificateAuthority::generate("Thingbase device CA").map_err(internal)?;
                let record = seal_authority(&authority, sealing, 0)?;
                let stored = record.clone();
                app.write_job(&Caller::server(), None, move |writer| {
                    let principals = writer.principals();
                    principals.insert_authority(&stored)?;
                    Ok(principals.authority()?)
                })
                .await?
                .unwrap_or(record)
            }
        };
        let authority = Arc::new(unseal_authority(&record, sealing)?);
        let not_after = to_timestamp(after(Duration::from_secs(365 * 24 * 3600)));
        let server = authority.issue_server(&settings.server_names, not_after).map_err(internal)?;
        let pepper = {
            let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&sealing.to_bytes()).map_err(internal)?;
            mac.update(b"thingbase device secrets");
            mac.finalize().into_bytes().into()
        };
        let (crl_version, _) = tokio::sync::watch::channel(0);
        let trust = Trust {
            app,
            authority,
            server,
            pepper,
            profile,
            settings,
            crl: RwLock::new(Crl {
                der: Arc::default(),
                serials: vec!["(none yet)".into()],
                signed_at: std::time::Instant::now(),
            }),
            crl_version,
            cache: Mutex::default(),
        };
        trust.refresh_crl(true).await?;
        Ok(Arc::new(trust))
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The CA's chain, leaf (the CA) first, DER.
    pub fn ca_chain_der(&self) -> Vec<Vec<u8>> {
        self.authority.chain_der()
    }

    pub fn ca_pem(&self) -> String {
        self.authority.certificate_pem()
    }

    /// The CRL in force, DER.
    pub fn crl_der(&self) -> Arc<Vec<u8>> {
        self.crl.read().map(|crl| Arc::clone(&crl.der)).unwrap_or_default()
    }

    /// Changes whenever the CRL does.
    pub fn crl_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.crl_version.subscribe()
    }

    /// A TLS configuration for a listener with the CRL in force now.
    pub fn server_config(
        &self,
        client_auth: pki::ClientAuth,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, AppError> {
        let crl = self.crl_der();
        let crls: Vec<Vec<u8>> = if crl.is_empty() { Vec::new() } else { vec![crl.as_ref().clone()] };
        pki::server_config(&self.server, &self.authority.chain_der(), &crls, client_auth, alpn).map_err(internal)
    }

    /// Signs a new CRL when the revoked certificates changed (or `force`, or it is an hour
    /// old), and tells the listeners.
    pub async fn refresh_crl(&self, force: bool) -> Result<(), AppError> {
        let now = Instant::now();
        let revoked = self
            .app
            .read_job(&Caller::server(), move |reader| Ok(reader.principals().revoked_certificates(now)?))
            .await?;
        let serials: Vec<String> = revoked.iter().map(|(serial, _)| serial.clone()).collect();
        let stale = self
            .crl
            .read()
            .map(|crl| crl.serials != serials || crl.signed_at.elapsed() > Duration::from_secs(3600))
            .unwrap_or(true);
        if !force && !stale {
            return Ok(());
        }
        let number =
            self.app.write_job(&Caller::server(), None, |writer| Ok(writer.principals().next_crl_number()?)).await?;
        let entries: Vec<(pki::Serial, jiff::Timestamp)> = revoked
            .iter()
            .filter_map(|(serial, at)| Some((pki::Serial::from_hex(serial).ok()?, to_timestamp(*at))))
            .collect();
        let this_update = jiff::Timestamp::now();
        let next_update = to_timestamp(after(CRL_LIFETIME));
        let der = self
            .authority
            .crl(&entries, u64::try_from(number).unwrap_or_default(), this_update, next_update)
            .map_err(internal)?;
        if let Ok(mut crl) = self.crl.write() {
            *crl = Crl { der: Arc::new(der), serials, signed_at: std::time::Instant::now() };
        }
        self.crl_version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Writes an audit entry; a failure is logged (the change it records is committed).
    async fn audit(&self, actor: String, event: &'static str, detail: Value) {
        if let Err(error) = self.app.audit(actor, event, detail).await {
            tracing::error!(%error, event, "cannot write the audit log");
        }
    }

    /// Forgets the cached device principals, and tells long-lived sessions (MQTT) of devices
    /// to check theirs again before their next publish.
    fn forget_cached(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
        self.app.devices_changed();
    }

    /// The DTLS pre-shared key of a device whose secret hashes to `secret_hash` (CoAP over
    /// DTLS): `tbp_` and 28 base64url characters (168 bits), an HMAC of that hash under a key
    /// derived from the sealing key, so it needs no storage of its own, changes with the
    /// secret, and a copy of the database alone does not reveal it. 32 bytes in all: DTLS
    /// stacks of constrained devices hold no longer keys (tinydtls' and mbedTLS' default
    /// maximum; libcoap's `coap-client -k` silently cuts keys at 64 bytes).
    fn psk_of(&self, secret_hash: &str) -> String {
        let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.pepper) else { return String::new() };
        mac.update(b"dtls-psk:");
        mac.update(secret_hash.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("tbp_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..21]))
    }

    /// The pre-shared key a device with URN `identity` uses for DTLS, if it has a secret and
    /// is not retired; looked up for every DTLS handshake (the PSK identity is the URN).
    pub async fn dtls_psk(&self, identity: &str) -> Result<Option<Vec<u8>>, AppError> {
        let Ok(urn) = DeviceUrn::parse(identity) else { return Ok(None) };
        let key = urn.as_str().to_owned();
        let device =
            self.app.read_job(&Caller::server(), move |reader| Ok(reader.principals().device_by_urn(&key)?)).await?;
        Ok(device
            .filter(|d| d.state != DeviceState::Retired)
            .and_then(|d| d.secret_hash)
            .map(|hash| self.psk_of(&hash).into_bytes()))
    }

    /// The principal of a device that completed a DTLS handshake with its pre-shared key.
    pub async fn psk_principal(&self, identity: &str) -> Result<Principal, AppError> {
        let urn = parse_urn(identity)
            .map_err(|_| AppError::Unauthenticated("the PSK identity is not a device URN".into()))?;
        let key = urn.as_str().to_owned();
        let found = self
            .app
            .read_job(&Caller::server(), move |reader| {
                let principals = reader.principals();
                let Some(device) = principals.device_by_urn(&key)? else { return Ok(None) };
                let class = principals.device_class(device.class)?;
                Ok(Some((device, class)))
            })
            .await?;
        match found {
            Some((device, class)) if device.secret_hash.is_some() => device_principal(&device, class.as_ref()),
            _ => Err(AppError::Unauthenticated(format!("{urn} has no pre-shared key"))),
        }
    }

    fn secret_hash(&self, secret: &str) -> String {
        let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.pepper) else { return String::new() };
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    // ----- the registry -----

    /// A new device class; hub administrators and project administrators may declare one.
    pub async fn register_class(&self, caller: &Caller, class: NewClass) -> Result<DeviceClassRecord, AppError> {
        let principal = &caller.principal;
        if !principal.hub_admin && !principal.grants.iter().any(|g| g.role == access::Role::Admin) {
            return Err(match principal.identity {
                Identity::Anonymous => AppError::Unauthenticated("sign in to declare device classes".into()),
                _ => AppError::Forbidden("only hub or project administrators declare device classes".into()),
            });
        }
        if class.manufacturer.trim().is_empty() || class.model.trim().is_empty() {
            return Err(AppError::bad("invalid_device_class", "a device class needs a manufacturer and a model"));
        }
        let mud_url = match &class.mud {
            Some(mud) => {
                Some(gate::check_mud(mud, class.mud_url.as_deref()).map_err(|e| AppError::bad("invalid_mud", e))?)
            }
            None => class.mud_url.clone(),
        };
        let record = DeviceClassRecord {
            id: 0,
            manufacturer: class.manufacturer,
            model: class.model,
            hardware_version: class.hardware_version,
            support_until: class.support_until,
            vulnerability_contact: class.vulnerability_contact,
            sensing: Value::from(class.sensing).to_string(),
            mud_url,
            update_mechanism: class.update_mechanism,
            firmware: Value::Array(
                class
                    .firmware
                    .into_iter()
                    .map(|(version, digest)| json!({"version": version, "digest": digest}))
                    .collect(),
            )
            .to_string(),
            created_at: Instant::now(),
            mud: class.mud.as_ref().map(Value::to_string),
        };
        let stored = record.clone();
        let id = self
            .app
            .write_job(&Caller::server(), None, move |writer| Ok(writer.principals().insert_device_class(&stored)?))
            .await?;
        self.audit(
            crate::audit::actor_of(caller),
            "device_class_registered",
            json!({"id": id, "manufacturer": record.manufacturer, "model": record.model}),
        )
        .await;
        Ok(DeviceClassRecord { id, ..record })
    }

    pub async fn device_classes(&self, caller: &Caller) -> Result<Vec<DeviceClassRecord>, AppError> {
        if matches!(caller.principal.identity, Identity::Anonymous) {
            return Err(AppError::Unauthenticated("sign in to list device classes".into()));
        }
        self.app.read_job(&Caller::server(), |reader| Ok(reader.principals().device_classes()?)).await
    }

    /// Registers a device in a project the caller administers.
    pub async fn register(&self, caller: &Caller, registration: Registration) -> Result<Registered, AppError> {
        let urn = parse_urn(&registration.urn)?;
        if !urn.components().is_empty() {
            return Err(AppError::bad(
                "invalid_urn",
                format!("register the device {}, not one of its components", urn.device()),
            ));
        }
        let project = registration.project.unwrap_or(access::DEFAULT_PROJECT);
        require_project_admin(caller, project)?;
        let preregistered_key = match registration.public_key.as_deref() {
            None => None,
            Some(text) => Some(key_fingerprint(text)?),
        };
        let findings = registration
            .password
            .as_deref()
            .map(|password| gate::check_password(password, &urn.identifiers(), urn.as_str()));
        let password_hash = registration.password.as_deref().map(|p| self.secret_hash(p));
        let secret = if registration.secret { Some(random_hex(SECRET_PREFIX)?) } else { None };
        let secret_hash = secret.as_deref().map(|s| self.secret_hash(s));
        let token = if registration.enrollment_token { Some(random_hex(TOKEN_PREFIX)?) } else { None };
        let token_hash = token.as_deref().map(|t| sha256_hex(t.as_bytes()));
        let token_expires = after(self.settings.token_validity);
        let thing = registration.thing;
        let caller_for_job = caller.clone();
        let (urn_text, firmware) = (urn.as_str().to_owned(), registration.firmware_version.clone());
        let class = registration.class;
        let device = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                if let Some(thing) = thing {
                    // The Thing must be one the caller sees, in the device's project.
                    match writer.project_of(EntityType::Thing, model::Id(thing))? {
                        Some(p) if p == project && may_see_project(&caller_for_job, p) => {}
                        _ => {
                            return Err(AppError::bad(
                                "invalid_thing",
                                format!("Things({thing}) is not a Thing of project {project}"),
                            ));
                        }
                    }
                }
                let principals = writer.principals();
                if principals.device_class(class)?.is_none() {
                    return Err(AppError::bad("invalid_device_class", format!("there is no device class {class}")));
                }
                let id = principals.insert_device(&NewDevice {
                    urn: &urn_text,
                    project,
                    class,
                    thing,
                    firmware_version: firmware.as_deref(),
                    preregistered_key: preregistered_key.as_deref(),
                })?;
                let mut findings = findings;
                if let (Some(hash), Some(f)) = (&password_hash, findings.as_mut()) {
                    // A password another device has: both are flagged, and neither may use it.
                    if let Some(other) = principals.device_by_secret(hash)? {
                        f.shared = true;
                        let mut theirs =
                            other.password_findings.as_deref().map(PasswordFindings::from_json).unwrap_or_default();
                        theirs.shared = true;
                        principals.set_device_secret(other.id, None, Some(&theirs.to_json()))?;
                        principals.set_device_secret(id, None, Some(&f.to_json()))?;
                    } else {
                        principals.set_device_secret(id, Some(hash), Some(&f.to_json()))?;
                    }
                }
                if let Some(hash) = &secret_hash {
                    principals.set_device_secret(id, Some(hash), None)?;
                }
                if let Some(hash) = &token_hash {
                    principals.insert_enrollment_token(id, hash, token_expires)?;
                }
                Ok(id)
            })
            .await?;
        self.audit(
            crate::audit::actor_of(caller),
            "device_registered",
            json!({"urn": urn.as_str(), "project": project}),
        )
        .await;
        self.forget_cached();
        // A device with a secret or password holds a credential: evaluate it now.
        let record = self.evaluate_and_store(device, "registered").await?.0;
        let secret = secret.map(|secret| {
            let psk = self.psk_of(&self.secret_hash(&secret));
            (secret, psk)
        });
        Ok(Registered { device: record, enrollment_token: token.map(|t| (t, token_expires)), secret })
    }

    /// The device with `urn`, if the caller may see it (else the same 404 as for none).
    async fn visible_device(&self, caller: &Caller, urn: &str) -> Result<DeviceRecord, AppError> {
        let urn = parse_urn(urn)?.device();
        if matches!(caller.principal.identity, Identity::Anonymous) {
            return Err(AppError::Unauthenticated("sign in to look devices up".into()));
        }
        let key = urn.as_str().to_owned();
        let device =
            self.app.read_job(&Caller::server(), move |reader| Ok(reader.principals().device_by_urn(&key)?)).await?;
        match device {
            Some(device) if may_see(caller, &device) => Ok(device),
            _ => Err(AppError::NotFound(format!("no device {urn}"))),
        }
    }

    /// The device's record as its operator sees it.
    pub async fn device(&self, caller: &Caller, urn: &str) -> Result<Value, AppError> {
        let device = self.visible_device(caller, urn).await?;
        let id = device.id;
        let (class, certificates) = self
            .app
            .read_job(&Caller::server(), move |reader| {
                let principals = reader.principals();
                Ok((principals.device_class(device.class)?, principals.certificates_of(id)?))
            })
            .await?;
        Ok(device_json(&device, class.as_ref(), &certificates))
    }

    /// A new enrollment token for the device (its earlier unused ones stop working).
    pub async fn new_enrollment_token(&self, caller: &Caller, urn: &str) -> Result<(String, Instant), AppError> {
        let device = self.visible_device(caller, urn).await?;
        require_project_admin(caller, device.project)?;
        if device.state == DeviceState::Retired {
            return Err(AppError::Conflict(format!("{} is retired", device.urn)));
        }
        let token = random_hex(TOKEN_PREFIX)?;
        let hash = sha256_hex(token.as_bytes());
        let expires = after(self.settings.token_validity);
        let id = device.id;
        self.app
            .write_job(&Caller::server(), None, move |writer| {
                let principals = writer.principals();
                principals.void_enrollment_tokens(id, Instant::now())?;
                principals.insert_enrollment_token(id, &hash, expires)?;
                Ok(())
            })
            .await?;
        self.audit(crate::audit::actor_of(caller), "enrollment_token_issued", json!({"urn": device.urn})).await;
        Ok((token, expires))
    }

    /// A new random secret for the device (replacing its secret or password), and the DTLS
    /// pre-shared key that goes with it.
    pub async fn new_secret(&self, caller: &Caller, urn: &str) -> Result<(String, String), AppError> {
        let device = self.visible_device(caller, urn).await?;
        require_project_admin(caller, device.project)?;
        if device.state == DeviceState::Retired {
            return Err(AppError::Conflict(format!("{} is retired", device.urn)));
        }
        let secret = random_hex(SECRET_PREFIX)?;
        let hash = self.secret_hash(&secret);
        let id = device.id;
        self.app
            .write_job(&Caller::server(), None, move |writer| {
                Ok(writer.principals().set_device_secret(id, Some(&hash), None)?)
            })
            .await?;
        self.audit(crate::audit::actor_of(caller), "device_secret_issued", json!({"urn": device.urn})).await;
        self.forget_cached();
        self.evaluate_and_store(id, "secret issued").await?;
        let psk = self.psk_of(&self.secret_hash(&secret));
        Ok((secret, psk))
    }

    /// Suspends, reinstates or retires a device.
    pub async fn change_state(
        &self,
        caller: &Caller,
        urn: &str,
        change: StateChange,
        reason: &str,
    ) -> Result<Value, AppError> {
        let device = self.visible_device(caller, urn).await?;
        require_project_admin(caller, device.project)?;
        if device.state == DeviceState::Retired {
            return Err(AppError::Conflict(format!("{} is retired", device.urn)));
        }
        let id = device.id;
        let reason = if reason.trim().is_empty() { "by an operator".to_owned() } else { reason.trim().to_owned() };
        let event = match change {
            StateChange::Suspend => {
                let why = format!("suspended: {reason}");
                self.app
                    .write_job(&Caller::server(), None, move |writer| {
                        Ok(writer.principals().set_device_state(id, DeviceState::Suspended, &why, None)?)
                    })
                    .await?;
                "device_suspended"
            }
            StateChange::Retire => {
                let why = format!("retired: {reason}");
                self.app
                    .write_job(&Caller::server(), None, move |writer| {
                        let principals = writer.principals();
                        let now = Instant::now();
                        for certificate in principals.certificates_of(id)? {
                            principals.revoke_certificate(&certificate.serial, now, "cessationOfOperation")?;
                        }
                        principals.void_enrollment_tokens(id, now)?;
                        principals.set_device_secret(id, None, None)?;
                        principals.set_device_state(id, DeviceState::Retired, &why, None)?;
                        Ok(())
                    })
                    .await?;
                self.refresh_crl(false).await?;
                "device_retired"
            }
            StateChange::Reinstate => {
                // Back to pending, then evaluated like any other.
                self.app
                    .write_job(&Caller::server(), None, move |writer| {
                        Ok(writer.principals().set_device_state(id, DeviceState::Pending, "reinstated", None)?)
                    })
                    .await?;
                "device_reinstated"
            }
        };
        self.audit(crate::audit::actor_of(caller), event, json!({"urn": device.urn, "reason": reason})).await;
        self.forget_cached();
        if change == StateChange::Reinstate {
            self.evaluate_and_store(id, "reinstated").await?;
        }
        self.device(caller, urn).await
    }

    /// Revokes a certificate by serial (hex); the CRL is re-signed at once.
    pub async fn revoke(&self, caller: &Caller, serial: &str, reason: &str) -> Result<Value, AppError> {
        let serial = serial.trim().to_ascii_lowercase();
        let key = serial.clone();
        let found = self
            .app
            .read_job(&Caller::server(), move |reader| {
                let principals = reader.principals();
                let Some(certificate) = principals.certificate_by_serial(&key)? else { return Ok(None) };
                Ok(principals.device(certificate.device)?.map(|d| (certificate, d)))
            })
            .await?;
        let Some((certificate, device)) = found.filter(|(_, d)| may_see(caller, d)) else {
            return Err(AppError::NotFound(format!("no certificate with serial {serial}")));
        };
        require_project_admin(caller, device.project)?;
        let reason = if reason.trim().is_empty() { "unspecified".to_owned() } else { reason.trim().to_owned() };
        let why = reason.clone();
        let revoked = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                Ok(writer.principals().revoke_certificate(&certificate.serial, Instant::now(), &why)?)
            })
            .await?;
        if revoked {
            self.audit(
                crate::audit::actor_of(caller),
                "certificate_revoked",
                json!({"urn": device.urn, "serial": serial, "reason": reason}),
            )
            .await;
        }
        self.forget_cached();
        self.refresh_crl(false).await?;
        self.evaluate_and_store(device.id, "certificate revoked").await?;
        self.device(caller, &device.urn).await
    }

    /// Evaluates the device against the profile now, stores the report and moves its state.
    pub async fn check(&self, caller: &Caller, urn: &str) -> Result<Report, AppError> {
        let device = self.visible_device(caller, urn).await?;
        Ok(self.evaluate_and_store(device.id, "checked").await?.1)
    }

    /// The resolver: what a URN names, for those allowed to see it.
    pub async fn resolve(&self, caller: &Caller, urn: &str, base_url: &str) -> Result<Value, AppError> {
        let parsed = parse_urn(urn)?;
        let device = self.visible_device(caller, parsed.as_str()).await?;
        let id = device.id;
        let thing = device.thing;
        let (class, certificates, datastreams, multi) = self
            .app
            .read_job(&Caller::server(), move |reader| {
                let (datastreams, multi) = match thing {
                    Some(thing) => {
                        (related(reader, thing, "Datastreams")?, related(reader, thing, "MultiDatastreams")?)
                    }
                    None => (Vec::new(), Vec::new()),
                };
                let principals = reader.principals();
                Ok((principals.device_class(device.class)?, principals.certificates_of(id)?, datastreams, multi))
            })
            .await?;
        let link = |set: &str, id: i64| format!("{base_url}/v1.1/{set}({id})");
        let topics: Vec<String> = datastreams
            .iter()
            .map(|id| format!("v1.1/Datastreams({id})/Observations"))
            .chain(multi.iter().map(|id| format!("v1.1/MultiDatastreams({id})/Observations")))
            .collect();
        let mut out = device_json(&device, class.as_ref(), &certificates);
        out["urn"] = json!(parsed.as_str());
        if !parsed.components().is_empty() {
            out["device"] = json!(device.urn);
            out["components"] = json!(parsed.components());
            // A component is linked to the Datastreams of the device's Thing that name it in
            // their properties: `"properties": {"urn": "urn:dev:..._humidity"}`.
            out["componentDatastreams"] = match thing {
                Some(thing) => self.component_datastreams(thing, parsed.as_str()).await?.into_iter().collect(),
                None => json!([]),
            };
        }
        out["thing"] = match thing {
            Some(thing) => json!({"@iot.id": thing, "@iot.selfLink": link("Things", thing)}),
            None => Value::Null,
        };
        out["datastreams"] =
            datastreams.iter().map(|id| json!({"@iot.id": id, "@iot.selfLink": link("Datastreams", *id)})).collect();
        out["multiDatastreams"] =
            multi.iter().map(|id| json!({"@iot.id": id, "@iot.selfLink": link("MultiDatastreams", *id)})).collect();
        // SensorThings Part 2 (tasking) is not served yet: a device has no TaskingCapabilities.
        out["taskingCapabilities"] = json!([]);
        out["endpoints"] = json!({
            "sensorthings": base_url.to_owned() + "/v1.1",
            "https": self.settings.https_url,
            "est": self.settings.https_url.as_ref().map(|u| format!("{u}/.well-known/est")),
            "mqtts": self.settings.mqtts_url,
            "mqttTopics": topics,
        });
        Ok(out)
    }

    /// The Datastreams of `thing` whose `properties/urn` is `urn`.
    async fn component_datastreams(&self, thing: i64, urn: &str) -> Result<Vec<i64>, AppError> {
        let path = odata::parse_path(&format!("Things({thing})/Datastreams"))?;
        let text = format!("$filter=properties/urn%20eq%20'{urn}'&$select=id&$top=1000");
        let query = odata::parse_query(&text, EntityType::Datastream, &odata::Limits::default())?;
        match self.app.read(&Caller::server(), path, query).await? {
            crate::ReadResult::Collection { rows, .. } => Ok(rows.rows.iter().map(|row| row.id.0).collect()),
            _ => Ok(Vec::new()),
        }
    }

    // ----- the gate -----

    /// Gathers the evidence about device `id`, evaluates it, stores the report and moves the
    /// device's state; returns the device as stored and the report.
    async fn evaluate_and_store(&self, id: i64, occasion: &'static str) -> Result<(DeviceRecord, Report), AppError> {
        let profile = self.profile.clone();
        let (device, report, before) = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                let device =
                    writer.principals().device(id)?.ok_or_else(|| AppError::NotFound(format!("no device {id}")))?;
                let (report, has_credential) = report_of(writer, &profile, &device)?;
                let before = device.state;
                let (state, reason) = next_state(&device, has_credential, &report);
                let report_json = report.to_json().to_string();
                writer.principals().set_device_state(id, state, &reason, Some(&report_json))?;
                let device = writer.principals().device(id)?.unwrap_or(device);
                Ok((device, report, before))
            })
            .await?;
        if device.state != before {
            self.audit(
                "server".into(),
                "device_state_changed",
                json!({"urn": device.urn, "from": before.name(), "to": device.state.name(), "reason": device.state_reason, "occasion": occasion}),
            ).await;
            self.forget_cached();
        }
        Ok((device, report))
    }

    /// Evaluates every admitted device again (support periods end, certificates expire) and
    /// re-signs the CRL when it is due; run hourly.
    pub async fn sweep(&self) -> Result<(), AppError> {
        let devices = self.app.read_job(&Caller::server(), |reader| Ok(reader.principals().devices(None)?)).await?;
        for device in devices.iter().filter(|d| matches!(d.state, DeviceState::Admitted | DeviceState::Pending)) {
            self.evaluate_and_store(device.id, "periodic check").await?;
        }
        self.refresh_crl(false).await
    }

    // ----- enrollment (EST) -----

    /// `simpleenroll`: a CSR with an enrollment token (or from a key registered ahead), over
    /// TLS. The token is used up only when a certificate is issued.
    pub async fn enroll(&self, token: Option<&str>, csr: &[u8]) -> Result<pki::IssuedCertificate, AppError> {
        let csr = pki::parse_csr(csr).map_err(|e| AppError::bad("invalid_csr", e.to_string()))?;
        let csr_urns = csr_urns(&csr)?;
        let how = match token {
            Some(token) => Issue::Token(sha256_hex(token.trim().as_bytes())),
            None => {
                let key = csr.public_key_fingerprint();
                let found = self
                    .app
                    .read_job(&Caller::server(), move |reader| {
                        Ok(reader.principals().device_by_preregistered_key(&key)?)
                    })
                    .await?;
                let Some(device) = found else {
                    return Err(AppError::Unauthenticated(
                        "enrollment needs the device's one-time token (Authorization: Bearer tbe_...) or a key \
                         registered ahead"
                            .into(),
                    ));
                };
                Issue::Device(device.id)
            }
        };
        self.issue(how, csr, csr_urns, "device_enrolled").await
    }

    /// `simplereenroll`: a new certificate for a device authenticated by its current one.
    pub async fn reenroll(&self, caller: &Caller, csr: &[u8]) -> Result<pki::IssuedCertificate, AppError> {
        let Identity::Device(device) = &caller.principal.identity else {
            return Err(AppError::Unauthenticated(
                "re-enrollment needs the device's current certificate (mutual TLS)".into(),
            ));
        };
        let csr = pki::parse_csr(csr).map_err(|e| AppError::bad("invalid_csr", e.to_string()))?;
        let csr_urns = csr_urns(&csr)?;
        self.issue(Issue::Device(device.id), csr, csr_urns, "device_reenrolled").await
    }

    async fn issue(
        &self,
        how: Issue,
        csr: pki::CheckedCsr,
        csr_urns: Vec<DeviceUrn>,
        event: &'static str,
    ) -> Result<pki::IssuedCertificate, AppError> {
        let authority = Arc::clone(&self.authority);
        let validity = self.settings.certificate_validity;
        let issued = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                let principals = writer.principals();
                let device = match &how {
                    Issue::Token(hash) => match principals.take_enrollment_token(hash, Instant::now())? {
                        Ok(device) => device,
                        Err(TokenRefusal::Unknown) => {
                            return Err(AppError::Unauthenticated("unknown enrollment token".into()));
                        }
                        Err(TokenRefusal::Used) => {
                            return Err(AppError::Unauthenticated(
                                "the enrollment token was used already; ask the device's operator for a new one".into(),
                            ));
                        }
                        Err(TokenRefusal::Expired) => {
                            return Err(AppError::Unauthenticated(
                                "the enrollment token has expired; ask the device's operator for a new one".into(),
                            ));
                        }
                    },
                    Issue::Device(device) => *device,
                };
                let device = principals
                    .device(device)?
                    .ok_or_else(|| AppError::Unauthenticated("the token's device is gone".into()))?;
                if device.state == DeviceState::Retired {
                    return Err(AppError::Forbidden(format!("{} is retired", device.urn)));
                }
                if let Some(other) = csr_urns.iter().find(|u| u.as_str() != device.urn) {
                    return Err(AppError::Forbidden(format!(
                        "the request is for {other}, but this credential is bound to {}",
                        device.urn
                    )));
                }
                let key = csr.public_key_fingerprint();
                let others = principals.devices_with_key(&key, device.id)?;
                if !others.is_empty() {
                    return Err(AppError::Forbidden(
                        "EN 303 645 5.4-2: this key already belongs to another device; every device needs its own key"
                            .into(),
                    ));
                }
                let serial = pki::Serial::random();
                let now = Instant::now();
                let not_before = Instant::from_micros(now.micros() - 60_000_000);
                let not_after = Instant::from_micros(
                    now.micros().saturating_add(i64::try_from(validity.as_micros()).unwrap_or(i64::MAX)),
                );
                let issued = authority
                    .issue_device(&csr, &device.urn, &serial, to_timestamp(not_before), to_timestamp(not_after))
                    .map_err(internal)?;
                principals.insert_certificate(&CertificateRecord {
                    id: 0,
                    device: device.id,
                    serial: issued.serial.to_hex(),
                    fingerprint: issued.fingerprint_sha256.clone(),
                    key_fingerprint: key,
                    not_before,
                    not_after: from_timestamp(issued.not_after),
                    issued_at: now,
                    revoked_at: None,
                    revocation_reason: None,
                    pem: issued.pem.clone(),
                })?;
                if device.state == DeviceState::Registered {
                    principals.set_device_state(
                        device.id,
                        DeviceState::Pending,
                        "enrolled; admission check pending",
                        None,
                    )?;
                }
                Ok((device, issued))
            })
            .await?;
        let (device, issued) = issued;
        self.audit(
            format!("device:{}", device.urn),
            event,
            json!({"urn": device.urn, "serial": issued.serial.to_hex()}),
        )
        .await;
        self.forget_cached();
        self.evaluate_and_store(device.id, "enrolled").await?;
        Ok(issued)
    }

    // ----- authentication -----

    /// The principal of a device that presented `credentials`. A device that is not admitted
    /// is still a principal (it may enroll and read), with the reason its data is refused.
    pub async fn authenticate(&self, credentials: DeviceCredentials<'_>) -> Result<Principal, AppError> {
        let key = match &credentials {
            DeviceCredentials::Certificate(der) => format!("cert:{}", sha256_hex(der)),
            DeviceCredentials::Secret { urn, secret } => format!("secret:{urn}:{}", self.secret_hash(secret)),
        };
        let generation = self.app.devices_generation();
        if let Some(principal) = self.cache.lock().ok().and_then(|cache| {
            cache
                .get(&key)
                .filter(|c| c.generation == generation && c.at.elapsed() < DEVICE_CACHE)
                .filter(|c| c.until.is_none_or(|until| until > Instant::now()))
                .map(|c| c.principal.clone())
        }) {
            return Ok(principal);
        }
        let (principal, until) = match credentials {
            DeviceCredentials::Certificate(der) => {
                let identity = pki::client_identity(der)
                    .map_err(|e| AppError::Unauthenticated(format!("unusable client certificate: {e}")))?;
                let serial = identity.serial_hex.clone();
                let found = self
                    .app
                    .read_job(&Caller::server(), move |reader| {
                        let principals = reader.principals();
                        let Some(certificate) = principals.certificate_by_serial(&serial)? else { return Ok(None) };
                        let Some(device) = principals.device(certificate.device)? else { return Ok(None) };
                        let class = principals.device_class(device.class)?;
                        Ok(Some((certificate, device, class)))
                    })
                    .await?;
                let Some((certificate, device, class)) = found else {
                    return Err(AppError::Unauthenticated(
                        "the client certificate was not issued to a device of this hub".into(),
                    ));
                };
                if certificate.fingerprint != identity.fingerprint_sha256 {
                    return Err(AppError::Unauthenticated(
                        "the client certificate does not match the one issued".into(),
                    ));
                }
                if certificate.revoked_at.is_some() {
                    return Err(AppError::Unauthenticated(format!("certificate {} was revoked", certificate.serial)));
                }
                if certificate.not_after <= Instant::now() {
                    return Err(AppError::Unauthenticated(format!("certificate {} has expired", certificate.serial)));
                }
                (device_principal(&device, class.as_ref())?, class.and_then(|c| c.support_until))
            }
            DeviceCredentials::Secret { urn, secret } => {
                let urn = parse_urn(urn)
                    .map_err(|_| AppError::Unauthenticated("the user name is not a device URN".into()))?;
                let hash = self.secret_hash(secret);
                let found = self
                    .app
                    .read_job(&Caller::server(), move |reader| {
                        let principals = reader.principals();
                        let Some(device) = principals.device_by_secret(&hash)? else { return Ok(None) };
                        let class = principals.device_class(device.class)?;
                        Ok(Some((device, class)))
                    })
                    .await?;
                let Some((device, class)) =
                    found.filter(|(d, _)| constant_time_eq(d.urn.as_bytes(), urn.as_str().as_bytes()))
                else {
                    return Err(AppError::Unauthenticated("wrong device URN or secret".into()));
                };
                (device_principal(&device, class.as_ref())?, class.and_then(|c| c.support_until))
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            let at = std::time::Instant::now();
            cache.insert(key, CachedDevice { principal: principal.clone(), at, generation, until });
        }
        Ok(principal)
    }
}

/// Stores an operator's CA (an intermediate of their PKI: its chain, leaf first, and its PKCS#8
/// key, PEM) as the hub's, before the first start makes one; returns its SHA-256 fingerprint.
pub async fn import_authority(
    app: &App,
    sealing: &pki::SealingKey,
    chain_pem: &str,
    key_pem: &str,
) -> Result<String, AppError> {
    let authority = pki::CertificateAuthority::from_pem(chain_pem, key_pem)
        .map_err(|e| AppError::bad("invalid_certificate_authority", e.to_string()))?;
    let record = seal_authority(&authority, sealing, 0)?;
    let stored = app
        .write_job(&Caller::server(), None, move |writer| Ok(writer.principals().insert_authority(&record)?))
        .await?;
    if !stored {
        return Err(AppError::Conflict(
            "this hub has a certificate authority already; its devices' certificates depend on it".into(),
        ));
    }
    Ok(sha256_hex(authority.certificate_der()))
}

/// The hub's CA certificate chain (PEM) and the SHA-256 fingerprint of its certificate, to
/// compare out of band with what `/.well-known/est/cacerts` serves.
pub async fn authority_pem(app: &App) -> Result<Option<(String, String)>, AppError> {
    let record = app.read_job(&Caller::server(), |reader| Ok(reader.principals().authority()?)).await?;
    let Some(record) = record else { return Ok(None) };
    let first = pki::pem_certificates(&record.chain_pem).map_err(internal)?.into_iter().next().unwrap_or_default();
    Ok(Some((record.chain_pem, sha256_hex(&first))))
}

/// How an issue is authorised: a token's hash, or a device already known.
enum Issue {
    /// The SHA-256 hex of a one-time enrollment token.
    Token(String),
    /// A device known already (a key registered ahead, or its current certificate).
    Device(i64),
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn may_see_project(caller: &Caller, project: ProjectId) -> bool {
    caller.principal.hub_admin || caller.principal.role_in(project).is_some()
}

/// The URNs a CSR names (subject CN and SAN URIs), normalised; none is fine (the device's is
/// put in), another device's is not.
fn csr_urns(csr: &pki::CheckedCsr) -> Result<Vec<DeviceUrn>, AppError> {
    let mut urns = Vec::new();
    for text in csr.san_uris().iter().map(String::as_str).chain(csr.subject_common_name()) {
        if text.len() >= 8 && text[..8].eq_ignore_ascii_case("urn:dev:") {
            let urn = DeviceUrn::parse(text).map_err(|e| {
                AppError::bad(
                    "invalid_csr",
                    format!("the request names `{text}`, which is not a valid device URN: {e}"),
                )
            })?;
            urns.push(urn);
        }
    }
    Ok(urns)
}

/// The SHA-256 hex of a public key given as PEM SubjectPublicKeyInfo, or the hex itself.
fn key_fingerprint(text: &str) -> Result<String, AppError> {
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(text.to_ascii_lowercase());
    }
    let der = pki::pem_public_key(text).map_err(|e| {
        AppError::bad("invalid_public_key", format!("publicKey must be a PEM public key or its SHA-256 in hex ({e})"))
    })?;
    Ok(sha256_hex(&der))
}

fn seal_authority(
    authority: &pki::CertificateAuthority,
    sealing: &pki::SealingKey,
    crl_number: i64,
) -> Result<AuthorityRecord, AppError> {
    // The whole chain, so that `cacerts` hands devices the path to an operator's root.
    let chain_pem = authority.chain_der().iter().map(|der| pki::pem_encode("CERTIFICATE", der)).collect();
    let sealed = sealing.seal(&authority.key_pkcs8_der(), b"thingbase certificate authority");
    Ok(AuthorityRecord { chain_pem, sealed_key: base64::engine::general_purpose::STANDARD.encode(sealed), crl_number })
}

fn unseal_authority(
    record: &AuthorityRecord,
    sealing: &pki::SealingKey,
) -> Result<pki::CertificateAuthority, AppError> {
    let sealed = base64::engine::general_purpose::STANDARD.decode(&record.sealed_key).map_err(internal)?;
    let key = sealing.open(&sealed, b"thingbase certificate authority").map_err(|_| {
        AppError::Internal(
            "the certificate authority in the database was sealed with another key: give every node the same \
             THINGBASE_SEALING_KEY (or the same sealing.key file)"
                .into(),
        )
    })?;
    let chain = pki::pem_certificates(&record.chain_pem).map_err(internal)?;
    pki::CertificateAuthority::from_parts(chain, &key).map_err(internal)
}

/// The ids of the entities `thing` links through its navigation `name`.
fn related(reader: &mut dyn Reader, thing: i64, name: &str) -> Result<Vec<i64>, StoreError> {
    let Some(navigation) = EntityType::Thing.navigations().iter().find(|n| n.name == name) else {
        return Ok(Vec::new());
    };
    Ok(reader.related(EntityType::Thing, model::Id(thing), navigation)?.into_iter().map(|id| id.0).collect())
}

/// Gathers the evidence about `device` and evaluates it; also whether it holds any credential
/// at all (a certificate, live or not, a secret or a pre-installed password).
fn report_of(writer: &mut dyn Writer, profile: &Profile, device: &DeviceRecord) -> Result<(Report, bool), AppError> {
    let class = writer
        .principals()
        .device_class(device.class)?
        .ok_or_else(|| AppError::Internal(format!("device {} has no class", device.urn)))?;
    let certificates = writer.principals().certificates_of(device.id)?;
    let mut shared_keys = Vec::new();
    for certificate in &certificates {
        shared_keys.push((
            certificate.serial.clone(),
            writer.principals().devices_with_key(&certificate.key_fingerprint, device.id)?,
        ));
    }
    let mut feeds = Vec::new();
    if let Some(thing) = device.thing {
        for (name, multi) in [("Datastreams", false), ("MultiDatastreams", true)] {
            for id in related(writer, thing, name)? {
                if let Some((_, observed)) = writer.principals().feed(id, multi)? {
                    feeds.push((format!("{name}({id})"), observed));
                }
            }
        }
    }
    let has_credential = !certificates.is_empty() || device.secret_hash.is_some() || device.password_findings.is_some();
    let evidence =
        Evidence { device, class: &class, certificates: &certificates, shared_keys, feeds, now: Instant::now() };
    Ok((gate::evaluate(profile, &evidence), has_credential))
}

/// Where an evaluation moves a device: operators' states stay; a device without a
/// credential stays registered; passing admits; failing keeps it pending, or quarantines it
/// once it had been admitted.
fn next_state(device: &DeviceRecord, has_credential: bool, report: &Report) -> (DeviceState, String) {
    match device.state {
        DeviceState::Suspended | DeviceState::Retired => (device.state, device.state_reason.clone()),
        _ if !has_credential => (DeviceState::Registered, "registered; no credential yet".into()),
        _ if report.passed() => (DeviceState::Admitted, report.reason()),
        DeviceState::Admitted | DeviceState::Quarantined => (DeviceState::Quarantined, report.reason()),
        _ => (DeviceState::Pending, report.reason()),
    }
}

/// The principal of a device as stored.
fn device_principal(device: &DeviceRecord, class: Option<&DeviceClassRecord>) -> Result<Principal, AppError> {
    if device.state == DeviceState::Retired {
        return Err(AppError::Unauthenticated(format!("{} is retired", device.urn)));
    }
    let mut admission = match device.state {
        DeviceState::Admitted => Admission::Admitted,
        state => Admission::Refused(format!("it is {} ({})", state.name(), device.state_reason)),
    };
    // A support period that ended since the last evaluation keeps data out at once; the
    // periodic sweep records it.
    if let (Admission::Admitted, Some(until)) = (&admission, class.and_then(|c| c.support_until))
        && until <= Instant::now()
    {
        admission = Admission::Refused(format!("5.3-13: its support period ended at {until}"));
    }
    Ok(Principal {
        identity: Identity::Device(DeviceIdentity {
            id: device.id,
            urn: device.urn.clone(),
            project: device.project,
            thing: device.thing,
            admission,
            sensing: class.map(gate::sensing_of).unwrap_or_default(),
        }),
        hub_admin: false,
        grants: Vec::new(),
    })
}

fn device_json(device: &DeviceRecord, class: Option<&DeviceClassRecord>, certificates: &[CertificateRecord]) -> Value {
    let now = Instant::now();
    json!({
        "urn": device.urn,
        "project": device.project,
        "thing": device.thing,
        "state": device.state.name(),
        "reason": device.state_reason,
        "stateChangedAt": device.state_changed_at.to_string(),
        "firmwareVersion": device.firmware_version,
        "hasSecret": device.secret_hash.is_some(),
        "class": class.map(class_json),
        "certificates": certificates.iter().map(|c| json!({
            "serial": c.serial,
            "fingerprint": c.fingerprint,
            "notBefore": c.not_before.to_string(),
            "notAfter": c.not_after.to_string(),
            "status": if c.revoked_at.is_some() { "revoked" } else if c.not_after <= now { "expired" } else { "valid" },
            "revokedAt": c.revoked_at.map(|at| at.to_string()),
            "revocationReason": c.revocation_reason,
        })).collect::<Vec<_>>(),
        "admission": device.report.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
    })
}

pub fn class_json(class: &DeviceClassRecord) -> Value {
    json!({
        "id": class.id,
        "manufacturer": class.manufacturer,
        "model": class.model,
        "hardwareVersion": class.hardware_version,
        "supportUntil": class.support_until.map(|at| at.to_string()),
        "vulnerabilityContact": class.vulnerability_contact,
        "sensing": serde_json::from_str::<Value>(&class.sensing).unwrap_or(Value::Null),
        "mudUrl": class.mud_url,
        "updateMechanism": class.update_mechanism,
        "firmware": serde_json::from_str::<Value>(&class.firmware).unwrap_or(Value::Null),
        "mud": class.mud.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
    })
}

impl App {
    /// Bumped whenever a device's state changes here: cached device principals are read again.
    pub(crate) fn devices_generation(&self) -> u64 {
        self.devices.load(Ordering::Acquire)
    }

    pub(crate) fn devices_changed(&self) {
        self.devices.fetch_add(1, Ordering::AcqRel);
        self.announce_access();
    }
}

/// Quarantines device `id` for `reason` (it sent what its class does not declare), in a job
/// of its own after the refused one.
pub(crate) fn quarantine_later(app: &App, id: i64, reason: String) {
    let app = app.clone();
    tokio::spawn(async move {
        let why = format!("quarantined: {reason}");
        let result = app
            .write_job(&Caller::server(), None, move |writer| {
                let principals = writer.principals();
                let Some(device) = principals.device(id)? else { return Ok(None) };
                if matches!(device.state, DeviceState::Retired | DeviceState::Suspended | DeviceState::Quarantined) {
                    return Ok(None);
                }
                principals.set_device_state(id, DeviceState::Quarantined, &why, None)?;
                Ok(Some((device.urn, device.state)))
            })
            .await;
        match result {
            Ok(Some((urn, before))) => {
                app.devices_changed();
                app.audit_later("server".into(), "device_state_changed", json!({"urn": urn, "from": before.name(), "to": "quarantined", "reason": reason, "occasion": "undeclared data"}));
            }
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "cannot quarantine a device"),
        }
    });
}

/// The counter behind `App::devices_generation`.
pub(crate) type DevicesGeneration = Arc<AtomicU64>;
