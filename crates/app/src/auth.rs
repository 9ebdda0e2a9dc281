//! Authentication and the management of principals: credentials an edge received become a
//! [`Principal`], and hub or project administrators create projects, users, roles and tokens.
//!
//! A token check costs no database round trip in the common case: principals are cached by
//! token hash, and every change to users, roles, tokens or projects made through this module
//! empties the cache at once (one node; several nodes will hear of changes through the change
//! bus with the PostgreSQL backend). Expiry is checked on every use, cached or not. Passwords
//! are verified with Argon2 on a blocking thread, and successful ones are cached by the SHA-256
//! of user name and password for a minute, so HTTP Basic clients do not pay Argon2 per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use access::credentials::{self, TokenSecret};
use access::{Action, Decision, Grant, Identity, Principal, ProjectId, Role};
use model::Instant;
use sha2::{Digest, Sha256};
use store::{NewToken, ProjectRecord, TokenRecord, TokenScope};

use crate::limits::{Limiter, Rate};
use crate::{App, AppError, Caller};

/// How long a verified password is remembered.
const PASSWORD_CACHE: Duration = Duration::from_secs(60);

/// How long a checked token is trusted without asking the database again: changes made through
/// this server take effect at once; this bounds changes made elsewhere (the `thingbase token`
/// command, another node).
const TOKEN_CACHE: Duration = Duration::from_secs(10);

/// Failed password sign-ins for one user name before it is locked out.
const LOCKOUT_AFTER: u32 = 5;

/// The longest lock-out; each further failure doubles it up to this.
const LOCKOUT_MAX: Duration = Duration::from_secs(15 * 60);

/// User names with failures remembered at most (the oldest unlocked ones go first).
const LOCKOUT_NAMES: usize = 10_000;

/// Failed sign-ins of one user name.
struct Failures {
    count: u32,
    locked_until: Option<std::time::Instant>,
}

/// The user the bootstrap token belongs to.
pub const ADMIN_USER: &str = "admin";

/// The label of the setup token printed on first start; it works once.
const SETUP_LABEL: &str = "setup";

/// How long the setup token lasts.
const SETUP_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// What a client presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Token(String),
    Password {
        user: String,
        password: String,
    },
    /// A device: checked by `devices::Trust`.
    Device(DeviceCredential),
}

/// How a device proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceCredential {
    /// The leaf of the client certificate chain its TLS handshake verified (DER).
    Certificate(std::sync::Arc<Vec<u8>>),
    /// Its URN and its own secret (or pre-installed password); the edge accepts these over
    /// TLS only.
    Secret { urn: String, secret: String },
}

/// Whether a user name is a device's URN (a device secret follows, not a password).
pub fn is_device_urn(user: &str) -> bool {
    user.len() >= 8 && user.is_char_boundary(8) && user[..8].eq_ignore_ascii_case("urn:dev:")
}

impl std::fmt::Debug for Credentials {
    // Secrets never print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(<secret>)"),
            Credentials::Password { user, .. } => write!(f, "Password {{ user: {user:?}, password: <secret> }}"),
            Credentials::Device(DeviceCredential::Certificate(_)) => f.write_str("Device(Certificate)"),
            Credentials::Device(DeviceCredential::Secret { urn, .. }) => {
                write!(f, "Device {{ urn: {urn:?}, secret: <secret> }}")
            }
        }
    }
}

struct Cached {
    principal: Principal,
    /// The access changes other nodes had announced when it was checked: another one makes
    /// it stale.
    access: u64,
    expires_at: Option<Instant>,
    /// When to check the credentials against the database again.
    recheck_at: Option<std::time::Instant>,
}

/// Turns credentials into principals; shared by every edge.
pub struct Authenticator {
    app: App,
    tokens: Mutex<HashMap<String, Cached>>,
    passwords: Mutex<HashMap<[u8; 32], Cached>>,
    /// Failed password sign-ins by user name, for the lock-out with back-off.
    failures: Mutex<HashMap<String, Failures>>,
    /// Bumped by every change that may alter anyone's rights (a revoked token, a project's
    /// open data); long-lived sessions (MQTT) compare it to the one they authenticated at.
    generation: std::sync::atomic::AtomicU64,
    /// Bumped per user by changes to that user's rights (roles).
    user_generations: Mutex<HashMap<i64, u64>>,
    /// Requests and connections without working credentials, per client address, over every
    /// interface: one bucket, so guessing over HTTP and MQTT at once gains nothing.
    addresses: Limiter<IpAddr>,
    /// The devices' trust machinery, once the node has opened it.
    trust: std::sync::OnceLock<std::sync::Arc<crate::devices::Trust>>,
}

/// The generations a principal was authenticated at; see [`Authenticator::is_current`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    hub: u64,
    user: u64,
    /// For a device: the generation of device states (any device's state or credentials
    /// changed since makes it stale); `None` for other principals, whom that does not concern.
    devices: Option<u64>,
    /// Access changes other nodes announced (`App::access_generation`).
    access: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

fn unauthenticated(message: &str) -> AppError {
    AppError::Unauthenticated(message.to_owned())
}

impl Authenticator {
    pub fn new(app: App) -> Authenticator {
        Authenticator {
            app,
            tokens: Mutex::default(),
            passwords: Mutex::default(),
            failures: Mutex::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
            user_generations: Mutex::default(),
            addresses: Limiter::new(Rate::per_second(20.0)),
            trust: std::sync::OnceLock::new(),
        }
    }

    /// Lets devices authenticate through this authenticator.
    pub fn set_trust(&self, trust: std::sync::Arc<crate::devices::Trust>) {
        let _ = self.trust.set(trust);
    }

    /// The rate of requests and connections without working credentials per client address
    /// (20 a second, 40 at once, unless set here; [`Rate::NONE`] for no limit).
    pub fn with_address_rate(mut self, rate: Rate) -> Authenticator {
        self.addresses = Limiter::new(rate);
        self
    }

    /// Counts a request or connection from `address` without working credentials (anonymous,
    /// or failed); `Err(seconds)` to wait when the address has used up its allowance.
    pub fn charge_address(&self, address: IpAddr) -> Result<(), u64> {
        self.addresses.take(&address)
    }

    /// Whether `address` may still try credentials; `Err(seconds)` to wait when not. Checked
    /// before a password is verified, so a throttled address costs no Argon2 work.
    pub fn address_allowed(&self, address: IpAddr) -> Result<(), u64> {
        self.addresses.available(&address)
    }

    /// The generation a principal of `user` authenticated now is current at.
    pub fn generation(&self, user: Option<i64>) -> Generation {
        let hub = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let user =
            user.and_then(|user| self.user_generations.lock().ok().and_then(|g| g.get(&user).copied())).unwrap_or(0);
        Generation { hub, user, devices: None, access: self.app.access_generation() }
    }

    /// [`Authenticator::generation`] of a principal like the one `was` was taken for (a device
    /// follows device changes as well).
    pub fn generation_like(&self, user: Option<i64>, was: Option<Generation>) -> Generation {
        let devices = was.and_then(|w| w.devices).map(|_| self.app.devices_generation());
        Generation { devices, ..self.generation(user) }
    }

    /// [`Authenticator::authenticate`] with the generation the principal is current at. The hub's
    /// is read before the credentials are checked, so a change made meanwhile makes the
    /// principal stale at once; the user's can only be read once the user is known.
    pub async fn authenticate_with_generation(
        &self,
        credentials: Credentials,
    ) -> Result<(Principal, Generation), AppError> {
        let hub = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let devices = self.app.devices_generation();
        let access = self.app.access_generation();
        let principal = self.authenticate(credentials).await?;
        let devices = matches!(principal.identity, Identity::Device(_)).then_some(devices);
        let generation = Generation { hub, devices, access, ..self.generation(user_of(&principal)) };
        Ok((principal, generation))
    }

    /// Whether nothing changed the rights of `user` since `at`.
    pub fn is_current(&self, user: Option<i64>, at: Generation) -> bool {
        self.generation_like(user, Some(at)) == at
    }

    fn bump(&self, user: Option<i64>) {
        match user {
            Some(user) => {
                if let Ok(mut generations) = self.user_generations.lock() {
                    *generations.entry(user).or_default() += 1;
                }
            }
            None => {
                self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
    }

    /// Forgets every cached principal; called after any change to principals.
    pub fn invalidate(&self) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.clear();
        }
        if let Ok(mut passwords) = self.passwords.lock() {
            passwords.clear();
        }
    }

    /// How long `user` is still locked out, if it is.
    fn locked_out(&self, user: &str) -> Option<Duration> {
        let failures = self.failures.lock().ok()?;
        let until = failures.get(user)?.locked_until?;
        until.checked_duration_since(std::time::Instant::now())
    }

    /// Counts a failed password sign-in; the fifth in a row locks the name out for a second,
    /// each further one twice as long, up to a quarter of an hour.
    fn failed(&self, user: &str) {
        let Ok(mut failures) = self.failures.lock() else { return };
        if failures.len() >= LOCKOUT_NAMES && !failures.contains_key(user) {
            let now = std::time::Instant::now();
            failures.retain(|_, f| f.locked_until.is_some_and(|until| until > now));
            if failures.len() >= LOCKOUT_NAMES {
                return;
            }
        }
        let entry = failures.entry(user.to_owned()).or_insert(Failures { count: 0, locked_until: None });
        entry.count += 1;
        if entry.count >= LOCKOUT_AFTER {
            let doubling = (entry.count - LOCKOUT_AFTER).min(20);
            let wait = Duration::from_secs(1_u64 << doubling).min(LOCKOUT_MAX);
            entry.locked_until = std::time::Instant::now().checked_add(wait);
            tracing::warn!(user = %user, failures = entry.count, wait_s = wait.as_secs(), "sign-ins locked out");
        }
    }

    /// The principal behind `credentials`; anonymous for none. Wrong, expired or revoked
    /// credentials are an error, never a fallback to anonymous.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Principal, AppError> {
        let (result, actor) = match credentials {
            Credentials::None => return Ok(Principal::anonymous()),
            Credentials::Token(text) => (self.token(&text).await, "token".to_owned()),
            Credentials::Password { user, password } => (self.password(user.clone(), password).await, user),
            Credentials::Device(credential) => {
                let Some(trust) = self.trust.get() else {
                    return Err(unauthenticated("this hub does not enroll devices"));
                };
                let (result, actor) = match &credential {
                    DeviceCredential::Certificate(der) => (
                        trust.authenticate(crate::devices::DeviceCredentials::Certificate(der)).await,
                        "certificate".to_owned(),
                    ),
                    DeviceCredential::Secret { urn, secret } => (
                        trust.authenticate(crate::devices::DeviceCredentials::Secret { urn, secret }).await,
                        urn.clone(),
                    ),
                };
                (result, actor)
            }
        };
        if let Err(AppError::Unauthenticated(reason)) = &result {
            self.app.audit_later(actor, "sign_in_refused", serde_json::json!({"reason": reason}));
        }
        result
    }

    async fn token(&self, text: &str) -> Result<Principal, AppError> {
        let hash = credentials::token_hash(text).ok_or_else(|| unauthenticated("that is not a Thingbase token"))?;
        let now = Instant::now();
        let access = self.app.access_generation();
        if let Some(principal) = self.tokens.lock().ok().and_then(|cache| {
            let fresh =
                |c: &&Cached| c.access == access && c.recheck_at.is_some_and(|at| at > std::time::Instant::now());
            cache
                .get(&hash.0)
                .filter(|c| c.expires_at.is_none_or(|at| at > now))
                .filter(fresh)
                .map(|c| c.principal.clone())
        }) {
            return Ok(principal);
        }
        let key = hash.0.clone();
        let found = self
            .app
            .read_job(&Caller::server(), move |reader| {
                let principals = reader.principals();
                let Some(token) = principals.token_by_hash(&key)? else { return Ok(None) };
                let Some(user) = principals.user(token.user)? else { return Ok(None) };
                let memberships = principals.memberships(user.id)?;
                Ok(Some((token, user, memberships)))
            })
            .await?;
        let Some((token, user, memberships)) = found else { return Err(unauthenticated("unknown token")) };
        if token.revoked_at.is_some() {
            return Err(unauthenticated("the token was revoked"));
        }
        if token.expires_at.is_some_and(|at| at <= now) {
            return Err(unauthenticated("the token has expired"));
        }
        if user.disabled {
            return Err(unauthenticated("the token's user is disabled"));
        }
        let principal = token_principal(&token, user.hub_admin, memberships);
        if let Ok(mut cache) = self.tokens.lock() {
            cache.insert(
                hash.0,
                Cached {
                    principal: principal.clone(),
                    access,
                    expires_at: token.expires_at,
                    recheck_at: std::time::Instant::now().checked_add(TOKEN_CACHE),
                },
            );
        }
        Ok(principal)
    }

    async fn password(&self, user: String, password: String) -> Result<Principal, AppError> {
        let mut hasher = Sha256::new();
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        let access = self.app.access_generation();
        let fresh = |c: &Cached| c.access == access && c.recheck_at.is_some_and(|at| at > std::time::Instant::now());
        if let Some(principal) = self
            .passwords
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).filter(|c| fresh(c)).map(|c| c.principal.clone()))
        {
            return Ok(principal);
        }
        if let Some(wait) = self.locked_out(&user) {
            return Err(AppError::Throttled {
                message: format!("too many failed sign-ins as {user}; try again in {} s", wait.as_secs().max(1)),
                retry_after: wait.as_secs().max(1),
            });
        }
        let name = user.clone();
        let found = self
            .app
            .read_job(&Caller::server(), move |reader| {
                let principals = reader.principals();
                let Some(user) = principals.user_by_name(&name)? else { return Ok(None) };
                let memberships = principals.memberships(user.id)?;
                Ok(Some((user, memberships)))
            })
            .await?;
        // The same answer, and Argon2's cost, whether the user exists or not.
        let (stored, found) = match found {
            Some((user, memberships)) => (user.password_hash.clone(), Some((user, memberships))),
            None => (None, None),
        };
        let verified = tokio::task::spawn_blocking(move || match stored {
            Some(stored) => credentials::verify_password(&password, &stored),
            None => {
                let _ = credentials::hash_password("a password nobody has, to spend the same time");
                false
            }
        })
        .await
        .unwrap_or(false);
        let (Some((record, memberships)), true) = (found, verified) else {
            tracing::info!(user = %user, "sign-in refused: wrong user name or password");
            self.failed(&user);
            return Err(unauthenticated("wrong user name or password"));
        };
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&user);
        }
        if record.disabled {
            return Err(unauthenticated("the user is disabled"));
        }
        let principal = Principal {
            identity: Identity::User { id: record.id, name: record.name.clone() },
            hub_admin: record.hub_admin,
            grants: memberships,
        };
        if let Ok(mut cache) = self.passwords.lock() {
            let recheck_at = std::time::Instant::now().checked_add(PASSWORD_CACHE);
            cache.insert(key, Cached { principal: principal.clone(), access, expires_at: None, recheck_at });
        }
        Ok(principal)
    }

    /// First start: makes sure a hub administrator can get in. With `admin_token` (from
    /// `THINGBASE_ADMIN_TOKEN`, for automation) that token is stored for the `admin` user if it
    /// is not yet; without one, a setup token is made and returned (to be printed once) when
    /// the `admin` user does not exist yet. Never a default password.
    pub async fn bootstrap(&self, admin_token: Option<&str>) -> Result<Option<TokenSecret>, AppError> {
        let admin_hash = match admin_token {
            Some(text) => Some(credentials::token_hash(text).ok_or_else(|| {
                AppError::bad(
                    "invalid_admin_token",
                    "THINGBASE_ADMIN_TOKEN must look like tbt_ followed by 64 hex digits, e.g. \
                     tbt_$(openssl rand -hex 32)",
                )
            })?),
            None => None,
        };
        let setup = match admin_hash {
            Some(_) => None,
            None => Some(credentials::new_token().map_err(|e| AppError::Internal(e.to_string()))?),
        };
        let setup_hash = setup.as_ref().map(|(_, hash)| hash.0.clone());
        let expires_at = instant_after(SETUP_VALIDITY);
        let created = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                let principals = writer.principals();
                let existing = principals.user_by_name(ADMIN_USER)?;
                let admin = match &existing {
                    Some(user) => user.id,
                    None => principals.insert_user(ADMIN_USER, None, true)?,
                };
                if let Some(hash) = admin_hash {
                    if principals.token_by_hash(&hash.0)?.is_none() {
                        principals.insert_token(&NewToken {
                            user: admin,
                            hash: &hash.0,
                            label: "THINGBASE_ADMIN_TOKEN",
                            scope: TokenScope::User,
                            expires_at: None,
                        })?;
                    }
                    return Ok(false);
                }
                match (existing, setup_hash) {
                    (None, Some(hash)) => {
                        principals.insert_token(&NewToken {
                            user: admin,
                            hash: &hash,
                            label: SETUP_LABEL,
                            scope: TokenScope::User,
                            expires_at,
                        })?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
            .await?;
        self.invalidate();
        Ok(if created { setup.map(|(secret, _)| secret) } else { None })
    }

    /// A new project; hub administrators only.
    pub async fn create_project(
        &self,
        caller: &Caller,
        name: String,
        open_data: bool,
    ) -> Result<ProjectRecord, AppError> {
        require_hub_admin(caller)?;
        let check = name.clone();
        if check.trim().is_empty() {
            return Err(AppError::bad("invalid_project", "a project needs a name"));
        }
        let id = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                Ok(writer.principals().insert_project(&check, open_data)?)
            })
            .await?;
        self.changed(caller, Rights::Nobody, "project_created", serde_json::json!({"project": id, "name": name}))
            .await?;
        Ok(ProjectRecord { id, name, open_data })
    }

    /// Every project the caller may see (all of them for hub administrators).
    pub async fn projects(&self, caller: &Caller) -> Result<Vec<ProjectRecord>, AppError> {
        let projects = self.app.read_job(&Caller::server(), |reader| Ok(reader.principals().projects()?)).await?;
        let hub = self.app.hub();
        Ok(projects
            .into_iter()
            .filter(|p| caller.principal.decide(&hub, Action::Read, model::EntityType::Thing, p.id) == Decision::Allow)
            .collect())
    }

    /// Makes a project's reads public, or not; hub administrators and project admins.
    pub async fn set_open_data(&self, caller: &Caller, project: ProjectId, open_data: bool) -> Result<(), AppError> {
        require_project_admin(caller, project)?;
        let found = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                Ok(writer.principals().set_open_data(project, open_data)?)
            })
            .await?;
        if !found {
            return Err(AppError::NotFound(format!("project {project} does not exist")));
        }
        let detail = serde_json::json!({"project": project, "openData": open_data});
        self.changed(caller, Rights::Everyone, "open_data_changed", detail).await
    }

    /// A new user (with a password, or tokens only); hub administrators only.
    pub async fn create_user(
        &self,
        caller: &Caller,
        name: String,
        password: Option<String>,
        hub_admin: bool,
    ) -> Result<i64, AppError> {
        require_hub_admin(caller)?;
        if name.trim().is_empty() || name.contains(':') {
            return Err(AppError::bad("invalid_user", "a user name must not be empty or contain `:`"));
        }
        let hash = match password {
            Some(password) => Some(
                tokio::task::spawn_blocking(move || credentials::hash_password(&password))
                    .await
                    .map_err(|e| AppError::Internal(e.to_string()))?
                    .map_err(|e| AppError::bad("invalid_password", e.to_string()))?,
            ),
            None => None,
        };
        let detail = serde_json::json!({"name": name, "hubAdmin": hub_admin});
        let id = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                Ok(writer.principals().insert_user(&name, hash.as_deref(), hub_admin)?)
            })
            .await?;
        self.changed(caller, Rights::Nobody, "user_created", serde_json::json!({"user": id, "detail": detail})).await?;
        Ok(id)
    }

    /// Gives `user` a role in `project` (or takes it away); hub administrators and the
    /// project's admins.
    pub async fn set_role(
        &self,
        caller: &Caller,
        user: i64,
        project: ProjectId,
        role: Option<Role>,
    ) -> Result<(), AppError> {
        require_project_admin(caller, project)?;
        self.app
            .write_job(&Caller::server(), None, move |writer| {
                let principals = writer.principals();
                if principals.user(user)?.is_none() {
                    return Err(AppError::NotFound(format!("user {user} does not exist")));
                }
                if !principals.projects()?.iter().any(|p| p.id == project) {
                    return Err(AppError::NotFound(format!("project {project} does not exist")));
                }
                Ok(principals.set_membership(user, project, role)?)
            })
            .await?;
        let detail = serde_json::json!({"user": user, "project": project, "role": role.map(Role::name)});
        self.changed(caller, Rights::User(user), "role_changed", detail).await
    }

    /// A new token for `user` (the caller itself when `None`), shown once. A user may make
    /// tokens for itself, limited to the grants it holds; hub administrators for anyone.
    pub async fn create_token(
        &self,
        caller: &Caller,
        user: Option<i64>,
        label: String,
        grants: Option<Vec<Grant>>,
        valid_for: Option<Duration>,
    ) -> Result<(i64, TokenSecret), AppError> {
        let own = match &caller.principal.identity {
            Identity::User { id, .. } => Some(*id),
            Identity::Token { user, .. } => Some(*user),
            _ => None,
        };
        let user = match (user, own) {
            (Some(user), _) if caller.principal.hub_admin => user,
            (Some(user), Some(own)) if user == own => user,
            (None, Some(own)) => own,
            (Some(_), _) => return Err(AppError::Forbidden("only hub administrators make tokens for others".into())),
            (None, None) => return Err(AppError::Unauthenticated("sign in to make a token".into())),
        };
        let scope = match grants {
            None => TokenScope::User,
            Some(grants) => {
                let allowed =
                    |g: &Grant| caller.principal.hub_admin || caller.principal.role_in(g.project) >= Some(g.role);
                if let Some(g) = grants.iter().find(|g| !allowed(g)) {
                    return Err(AppError::Forbidden(format!(
                        "you cannot give a token the role {} in project {}",
                        g.role.name(),
                        g.project
                    )));
                }
                TokenScope::Grants(grants)
            }
        };
        let (secret, hash) = credentials::new_token().map_err(|e| AppError::Internal(e.to_string()))?;
        let expires_at = match valid_for {
            Some(duration) => {
                Some(instant_after(duration).ok_or_else(|| AppError::bad("invalid_expiry", "too far away"))?)
            }
            None => None,
        };
        let id = self
            .app
            .write_job(&Caller::server(), None, move |writer| {
                let principals = writer.principals();
                if principals.user(user)?.is_none() {
                    return Err(AppError::NotFound(format!("user {user} does not exist")));
                }
                Ok(principals.insert_token(&NewToken { user, hash: &hash.0, label: &label, scope, expires_at })?)
            })
            .await?;
        self.changed(caller, Rights::Nobody, "token_created", serde_json::json!({"token": id, "user": user})).await?;
        Ok((id, secret))
    }

    /// Revokes a token: its owner or a hub administrator.
    pub async fn revoke_token(&self, caller: &Caller, token: i64) -> Result<(), AppError> {
        let owner = match (&caller.principal.identity, caller.principal.hub_admin) {
            (_, true) => None,
            (Identity::User { id, .. } | Identity::Token { user: id, .. }, false) => Some(*id),
            _ => return Err(AppError::Unauthenticated("sign in to revoke a token".into())),
        };
        let revoked = self
            .app
            .write_job(&Caller::server(), None, move |writer| Ok(writer.principals().revoke_token(token, owner)?))
            .await?;
        if !revoked {
            return Err(AppError::NotFound(format!("you have no live token {token}")));
        }
        self.changed(caller, Rights::Everyone, "token_revoked", serde_json::json!({"token": token})).await
    }

    /// After a change to principals: forget cached ones, reload the hub, and spend a one-time
    /// setup token that made the change.
    async fn changed(
        &self,
        caller: &Caller,
        rights_of: Rights,
        event: &'static str,
        detail: serde_json::Value,
    ) -> Result<(), AppError> {
        self.app.audit(crate::audit::actor_of(caller), event, detail).await?;
        match rights_of {
            Rights::Nobody => {}
            Rights::User(user) => self.bump(Some(user)),
            Rights::Everyone => self.bump(None),
        }
        if let Identity::Token { id, one_time: true, .. } = caller.principal.identity {
            self.bump(None);
            self.app
                .write_job(&Caller::server(), None, move |writer| Ok(writer.principals().revoke_token(id, None)?))
                .await?;
        }
        self.invalidate();
        self.app.announce_access();
        self.app.refresh_hub().await
    }
}

/// Whose rights a change to principals may have changed.
enum Rights {
    Nobody,
    User(i64),
    Everyone,
}

/// The user a principal acts for, if any.
pub fn user_of(principal: &Principal) -> Option<i64> {
    match &principal.identity {
        Identity::User { id, .. } | Identity::Token { user: id, .. } => Some(*id),
        _ => None,
    }
}

/// The principal of a token: its user's rights, or its own grants within them.
fn token_principal(token: &TokenRecord, hub_admin: bool, memberships: Vec<Grant>) -> Principal {
    let identity = Identity::Token { id: token.id, user: token.user, one_time: token.label == SETUP_LABEL };
    match &token.scope {
        TokenScope::User => Principal { identity, hub_admin, grants: memberships },
        TokenScope::Grants(grants) => {
            let effective = grants
                .iter()
                .filter_map(|g| {
                    let held = memberships.iter().filter(|m| m.project == g.project).map(|m| m.role).max();
                    let role = if hub_admin { Some(g.role) } else { held.map(|held| held.min(g.role)) };
                    role.map(|role| Grant { project: g.project, role })
                })
                .collect();
            Principal { identity, hub_admin: false, grants: effective }
        }
    }
}

fn instant_after(duration: Duration) -> Option<Instant> {
    let micros = i64::try_from(duration.as_micros()).ok()?;
    Some(Instant::from_micros(Instant::now().micros().checked_add(micros)?))
}

fn require_hub_admin(caller: &Caller) -> Result<(), AppError> {
    match (&caller.principal.identity, caller.principal.hub_admin) {
        (_, true) => Ok(()),
        (Identity::Anonymous, _) => Err(AppError::Unauthenticated("sign in as a hub administrator".into())),
        _ => Err(AppError::Forbidden("only hub administrators may do this".into())),
    }
}

fn require_project_admin(caller: &Caller, project: ProjectId) -> Result<(), AppError> {
    let hub = access::Hub::default();
    match caller.principal.decide(&hub, Action::ManageMembers, model::EntityType::Thing, project) {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(AppError::Unauthenticated("sign in as an admin of the project".into())),
        Decision::Forbidden => Err(AppError::Forbidden(format!("you are not an admin of project {project}"))),
    }
}
