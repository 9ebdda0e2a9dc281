//! Who is asking: `Authorization: Bearer <token>` (an API token) or HTTP Basic (a user's name
//! and password), and the project a request names for its new entities
//! (`Thingbase-Project: <id>`). With access control off every request runs as the server.

use std::net::IpAddr;
use std::sync::Arc;

use app::Caller;
use app::auth::{Authenticator, Credentials, DeviceCredential};
use axum::http::{HeaderMap, header};
use base64::Engine as _;

use crate::error::ApiError;

/// How a request's connection came in, as the listener saw it: inserted into each request's
/// extensions by the TLS accept loop (absent on the plain HTTP listener).
#[derive(Clone, Debug, Default)]
pub struct Transport {
    pub tls: bool,
    /// The leaf of the client's certificate chain (DER), verified against the hub's CA and
    /// CRL during the handshake.
    pub client_certificate: Option<Arc<Vec<u8>>>,
}

/// The header that names the project of a request's new entities.
pub const PROJECT_HEADER: &str = "thingbase-project";

/// Whether requests must say who they are.
#[derive(Clone)]
pub enum AuthMode {
    /// No access control: everyone acts as the server (loopback-only default until the MQTT
    /// side is authorized as well).
    Off,
    /// Deny by default: credentials decide what a request sees and may change.
    Required(Arc<Authenticator>),
}

impl std::fmt::Debug for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthMode::Off => "Off",
            AuthMode::Required(_) => "Required",
        })
    }
}

/// The credentials in the headers; a malformed Authorization header is an error, not
/// anonymous.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Credentials::None) };
    let invalid = || ApiError::new(401, "invalid_credentials", "the Authorization header is neither Bearer nor Basic");
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let (scheme, rest) = text.split_once(' ').ok_or_else(invalid)?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Ok(Credentials::Token(rest.trim().to_owned())),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| invalid())?;
            let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
            // A device's user name is its URN, which has colons of its own: its secret follows
            // the last one (so a device's secret cannot contain a colon over Basic).
            let split =
                if app::auth::is_device_urn(&decoded) { decoded.rsplit_once(':') } else { decoded.split_once(':') };
            let (user, password) = split.ok_or_else(invalid)?;
            Ok(Credentials::Password { user: user.to_owned(), password: password.to_owned() })
        }
        _ => Err(invalid()),
    }
}

/// The caller of a request. Without credentials on a hub that has no open data, nothing could
/// be answered: that is a 401 asking for credentials, not an empty answer. Requests without
/// working credentials count against their address's rate limit, a principal's against its
/// own.
pub async fn caller(
    state: &crate::ApiState,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    transport: Option<&Transport>,
) -> Result<Caller, ApiError> {
    let (mode, app, limits) = (&state.auth, &state.app, &state.limits);
    let AuthMode::Required(authenticator) = mode else { return Ok(Caller::server()) };
    let unauthenticated = |error: ApiError| match peer.map(|ip| authenticator.charge_address(ip)) {
        Some(Err(wait)) => ApiError::throttled("too many requests without working credentials from this address", wait),
        _ => error,
    };
    let credentials = credentials(headers).map_err(unauthenticated)?;
    // Devices: a verified client certificate (when no other credentials are given), or a
    // device URN and its secret, over TLS only.
    let tls = transport.is_some_and(|t| t.tls);
    let credentials = match (credentials, transport.and_then(|t| t.client_certificate.clone())) {
        (Credentials::None, Some(der)) => Credentials::Device(DeviceCredential::Certificate(der)),
        (Credentials::Password { user, password }, _) if app::auth::is_device_urn(&user) => {
            if !tls {
                return Err(ApiError::new(
                    403,
                    "tls_required",
                    "device secrets are accepted over HTTPS only; this connection is not encrypted",
                ));
            }
            Credentials::Device(DeviceCredential::Secret { urn: user, secret: password })
        }
        (credentials, _) => credentials,
    };
    // A password from an address over its allowance is not checked (Argon2 work, and passwords
    // can be guessed); tokens cannot be guessed, so signed-in neighbours are not held back.
    if matches!(credentials, Credentials::Password { .. })
        && let Some(Err(wait)) = peer.map(|ip| authenticator.address_allowed(ip))
    {
        return Err(ApiError::throttled("too many requests without working credentials from this address", wait));
    }
    let principal = authenticator.authenticate(credentials).await.map_err(|e| unauthenticated(e.into()))?;
    if principal.identity == access::Identity::Anonymous {
        if let Some(Err(wait)) = peer.map(|ip| authenticator.charge_address(ip)) {
            return Err(ApiError::throttled("too many requests without credentials from this address", wait));
        }
        if !app.has_open_data() {
            return Err(ApiError::new(401, "unauthenticated", "sign in: send an API token (Bearer) or a user (Basic)"));
        }
    } else if let Err(wait) = limits.principal.take(&principal.label()) {
        return Err(ApiError::throttled("too many requests; slow down", wait));
    }
    let project = match headers.get(PROJECT_HEADER) {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()).ok_or_else(|| {
            ApiError::new(400, "invalid_project", "Thingbase-Project must be a project id, e.g. `Thingbase-Project: 2`")
        })?),
    };
    Ok(Caller { principal, project })
}
