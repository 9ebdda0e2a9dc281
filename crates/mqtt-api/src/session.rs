//! Who an MQTT connection is, for as long as it lasts. A CONNECT's user name and password are
//! its credentials: user name `token` with an API token as the password, or a user's name and
//! password; none at all is anonymous, which may only read open data. The principal is checked
//! again whenever the access rule reports a change to that user's rights (or to everyone's):
//! until the new principal is known the connection receives and creates nothing, so a
//! revoked token or role loses access at once, not at the next CONNECT.

use std::sync::{Arc, Mutex};

use app::Caller;
use app::auth::{Authenticator, Credentials, DeviceCredential, Generation, user_of};
use broker::{ConnectInfo, RefuseReason};

/// The user name that says "the password is an API token".
pub const TOKEN_USER: &str = "token";

/// Whether MQTT clients must say who they are.
#[derive(Clone)]
pub enum MqttAccess {
    /// Everyone acts as the server (with HTTP's `--auth off`).
    Open,
    /// Deny by default; the authenticator decides.
    Required(Arc<Authenticator>),
}

impl std::fmt::Debug for MqttAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MqttAccess::Open => "Open",
            MqttAccess::Required(_) => "Required",
        })
    }
}

/// The principal of one MQTT connection (clones share its state).
#[derive(Clone)]
pub struct Session {
    credentials: Credentials,
    user: Option<i64>,
    /// Access control is on and the client gave no credentials.
    anonymous: bool,
    state: Arc<Mutex<State>>,
}

/// How often a session's credentials are checked again even when nothing here changed them
/// (the `thingbase token` command or another node may have).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

struct State {
    caller: Arc<Caller>,
    checked_at: std::time::Instant,
    /// `None` with access control off: always current.
    generation: Option<Generation>,
    refreshing: bool,
    /// The credentials stopped working.
    revoked: bool,
}

impl Session {
    fn new(credentials: Credentials, caller: Caller, generation: Option<Generation>) -> Session {
        let user = user_of(&caller.principal);
        let anonymous = caller.principal.identity == access::Identity::Anonymous;
        let state = State {
            caller: Arc::new(caller),
            checked_at: std::time::Instant::now(),
            generation,
            refreshing: false,
            revoked: false,
        };
        Session { credentials, user, anonymous, state: Arc::new(Mutex::new(state)) }
    }

    /// Access control is on and the client did not sign in.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }
}

/// The credentials of a CONNECT: a verified client certificate when no user name is given
/// (MQTTS), a device URN with its secret, an API token, or a user.
pub fn credentials(connect: &ConnectInfo) -> Credentials {
    let password = connect.password.as_ref().map(|p| String::from_utf8_lossy(p).into_owned());
    if let (None, Some(der)) = (connect.username.as_deref(), &connect.transport.client_certificate) {
        return Credentials::Device(DeviceCredential::Certificate(der.clone()));
    }
    if let (Some(user), Some(secret)) = (connect.username.as_deref(), &password)
        && app::auth::is_device_urn(user)
    {
        return Credentials::Device(DeviceCredential::Secret { urn: user.to_owned(), secret: secret.clone() });
    }
    match (connect.username.as_deref(), password) {
        (Some(TOKEN_USER), Some(token)) => Credentials::Token(token),
        (Some(user), Some(password)) => Credentials::Password { user: user.to_owned(), password },
        (Some(user), None) => Credentials::Password { user: user.to_owned(), password: String::new() },
        (None, _) => Credentials::None,
    }
}

/// CONNECT: the session, or why not. A CONNECT without working credentials counts against its
/// address's allowance (shared with HTTP) and, once that is used up, is refused as over the
/// connection rate. A password from such an address is refused before it is checked (each
/// check costs Argon2 work, and passwords can be guessed); API tokens cannot be guessed and
/// are cheap to check, so devices signing in with theirs are not held back by a neighbour.
pub async fn authenticate(
    access: MqttAccess,
    app: app::App,
    credentials: Credentials,
    peer: std::net::IpAddr,
) -> Result<Session, RefuseReason> {
    let MqttAccess::Required(authenticator) = access else {
        return Ok(Session::new(credentials, Caller::server(), None));
    };
    let over = || {
        tracing::info!(%peer, "mqtt: too many CONNECTs without working credentials from this address");
        RefuseReason::ConnectionRateExceeded
    };
    if matches!(credentials, Credentials::Password { .. }) && authenticator.address_allowed(peer).is_err() {
        return Err(over());
    }
    if credentials == Credentials::None {
        if authenticator.charge_address(peer).is_err() {
            return Err(over());
        }
        if !app.has_open_data() {
            return Err(RefuseReason::NotAuthorized);
        }
    }
    match authenticator.authenticate_with_generation(credentials.clone()).await {
        Ok((principal, generation)) => Ok(Session::new(credentials, Caller::new(principal), Some(generation))),
        Err(_) if authenticator.charge_address(peer).is_err() => Err(over()),
        Err(_) => Err(RefuseReason::BadUserNameOrPassword),
    }
}

/// The session's caller if it is current. When the rights of its user changed, `None` now and
/// a new principal shortly (or none, if the credentials no longer work).
pub fn current(access: &MqttAccess, session: &Session) -> Option<Arc<Caller>> {
    let MqttAccess::Required(authenticator) = access else {
        return session.state.lock().ok().map(|s| s.caller.clone());
    };
    let mut state = session.state.lock().ok()?;
    if state.revoked {
        return None;
    }
    let current = state.generation.is_some_and(|at| authenticator.is_current(session.user, at));
    // Nothing here changed the user's rights; check now and then all the same, serving the
    // known principal meanwhile.
    let due = state.checked_at.elapsed() >= RECHECK;
    if (!current || due) && !state.refreshing {
        state.refreshing = true;
        let (authenticator, credentials, user, shared) =
            (authenticator.clone(), session.credentials.clone(), session.user, session.state.clone());
        let was = state.generation;
        tokio::spawn(async move {
            let generation = authenticator.generation_like(user, was);
            let principal = authenticator.authenticate(credentials).await;
            if let Ok(mut state) = shared.lock() {
                state.refreshing = false;
                state.checked_at = std::time::Instant::now();
                match principal {
                    Ok(principal) if user_of(&principal) == user => {
                        state.caller = Arc::new(Caller::new(principal));
                        state.generation = Some(generation);
                    }
                    // Somebody else's failed sign-ins lock the name out; that says nothing
                    // about this session's credentials; nor does a store shutting down.
                    Err(app::AppError::Throttled { .. } | app::AppError::Unavailable) => {
                        state.generation = Some(generation);
                    }
                    _ => state.revoked = true,
                }
            }
        });
    }
    if current {
        return Some(state.caller.clone());
    }
    None
}

/// [`current`], waiting for a refresh if one is due (for publishes, which may wait).
pub async fn current_or_refreshed(access: &MqttAccess, session: &Session) -> Option<Arc<Caller>> {
    for _ in 0..50 {
        if let Some(caller) = current(access, session) {
            return Some(caller);
        }
        if session.state.lock().map(|s| s.revoked).unwrap_or(true) {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}
