//! Devices over HTTP: EST enrollment (RFC 7030) under `/.well-known/est`, the CA certificate
//! and CRL under `/pki`, the registry of device classes and devices under `/admin`, a device's
//! record and conformance report under `/devices/{urn}`, and the resolver `/resolve/{urn}`.
//! The decisions are `app::devices::Trust`'s; this is the wire.

use std::net::SocketAddr;
use std::sync::Arc;

use app::Caller;
use app::devices::{NewClass, Registration, StateChange, Trust};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value as Json, json};

use crate::admin::{answer, body, flag, reply, text};
use crate::auth::{Transport, caller};
use crate::error::ApiError;
use crate::{ApiState, Reply};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route("/pki/ca.pem", get(ca_pem))
        .route("/pki/crl", get(crl))
        .route("/admin/device-classes", get(list_classes).post(create_class))
        .route("/admin/devices", post(register))
        .route("/admin/devices/{urn}/{action}", post(device_action))
        .route("/admin/certificates/{serial}/revoke", post(revoke))
        .route("/devices/{urn}", get(device))
        .route("/devices/{urn}/conformance", get(conformance))
        .route("/resolve/{urn}", get(resolve))
}

fn trust(state: &ApiState) -> Result<&Arc<Trust>, ApiError> {
    state.trust.as_ref().ok_or_else(|| {
        ApiError::new(404, "devices_off", "device management needs access control (it is off: --auth off)")
    })
}

/// A device-management request: the hub's `Trust` and the caller, authenticated with the
/// transport it came over (a device's client certificate counts).
struct Asked {
    trust: Arc<Trust>,
    caller: Caller,
}

impl axum::extract::FromRequestParts<ApiState> for Asked {
    type Rejection = Reply;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &ApiState) -> Result<Asked, Reply> {
        let trust = Arc::clone(trust(state).map_err(|e| e.reply())?);
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let transport = parts.extensions.get::<Transport>().cloned();
        let caller = caller(state, peer, &parts.headers, transport.as_ref()).await.map_err(|e| e.reply())?;
        Ok(Asked { trust, caller })
    }
}

/// The request's caller, with the transport it came over.
async fn who(
    state: &ApiState,
    headers: &HeaderMap,
    peer: SocketAddr,
    transport: Option<&Transport>,
) -> Result<Caller, ApiError> {
    caller(state, Some(peer.ip()), headers, transport).await
}

fn bytes_response(status: u16, content_type: &'static str, body: Vec<u8>, base64_encoded: bool) -> Response {
    let mut response = Reply { content_type: Some(content_type), ..Reply::json(status, body) }.into_response();
    if base64_encoded {
        response.headers_mut().insert("content-transfer-encoding", header::HeaderValue::from_static("base64"));
    }
    response
}

/// Base64 with line breaks every 64 characters, as EST clients read it.
fn base64_lines(der: &[u8]) -> Vec<u8> {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = Vec::with_capacity(text.len() + text.len() / 64 + 2);
    for chunk in text.as_bytes().chunks(64) {
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out
}

/// `GET /.well-known/est/cacerts`: the CA chain as a certs-only PKCS#7, base64 (RFC 7030
/// §4.1.3). Unauthenticated: a client checks the CA's fingerprint out of band.
async fn cacerts(State(state): State<ApiState>) -> Response {
    match trust(&state) {
        Ok(trust) => {
            let chain = trust.ca_chain_der();
            let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
            let pkcs7 = pki::certs_only(&refs);
            bytes_response(200, "application/pkcs7-mime", base64_lines(&pkcs7), true)
        }
        Err(e) => e.reply().into_response(),
    }
}

async fn ca_pem(State(state): State<ApiState>) -> Response {
    match trust(&state) {
        Ok(trust) => bytes_response(200, "application/x-pem-file", trust.ca_pem().into_bytes(), false),
        Err(e) => e.reply().into_response(),
    }
}

/// `GET /pki/crl`: the CRL in force, DER (RFC 5280), as every TLS handshake checks it.
async fn crl(State(state): State<ApiState>) -> Response {
    match trust(&state) {
        Ok(trust) => bytes_response(200, "application/pkix-crl", trust.crl_der().as_ref().clone(), false),
        Err(e) => e.reply().into_response(),
    }
}

/// The issued certificate in the form the client asked for: PEM with
/// `Accept: application/pem-certificate-chain`, else RFC 7030's base64 certs-only PKCS#7.
fn issued_response(headers: &HeaderMap, issued: &pki::IssuedCertificate) -> Response {
    let wants_pem = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/pem-certificate-chain"));
    if wants_pem {
        bytes_response(200, "application/pem-certificate-chain", issued.pem.clone().into_bytes(), false)
    } else {
        let pkcs7 = pki::certs_only(&[&issued.der]);
        bytes_response(200, "application/pkcs7-mime; smime-type=certs-only", base64_lines(&pkcs7), true)
    }
}

fn require_tls(transport: Option<&Transport>) -> Result<(), ApiError> {
    if transport.is_some_and(|t| t.tls) {
        Ok(())
    } else {
        Err(ApiError::new(403, "tls_required", "EST enrollment is served over HTTPS only (RFC 7030 §3.2.1)"))
    }
}

/// The enrollment token of a `simpleenroll`: `Authorization: Bearer tbe_...`, or HTTP Basic
/// with the token as the password (RFC 7030 §3.2.3).
fn enrollment_token(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match crate::auth::credentials(headers)? {
        app::auth::Credentials::None | app::auth::Credentials::Device(_) => Ok(None),
        app::auth::Credentials::Token(token) => Ok(Some(token)),
        app::auth::Credentials::Password { password, .. } => Ok(Some(password)),
    }
}

/// `POST /.well-known/est/simpleenroll`: a PKCS#10 request (base64 DER as RFC 7030 sends it,
/// PEM or DER) with the device's one-time token, or from a key registered ahead.
async fn simpleenroll(
    State(state): State<ApiState>,
    transport: Option<axum::Extension<Transport>>,
    headers: HeaderMap,
    csr: Bytes,
) -> Response {
    let result = async {
        require_tls(transport.as_deref())?;
        let trust = trust(&state)?;
        let token = enrollment_token(&headers)?;
        Ok::<_, ApiError>(trust.enroll(token.as_deref(), &csr).await?)
    }
    .await;
    match result {
        Ok(issued) => issued_response(&headers, &issued),
        Err(e) => e.reply().into_response(),
    }
}

/// `POST /.well-known/est/simplereenroll`: a new certificate for a device that authenticates
/// with its current one (mutual TLS).
async fn simplereenroll(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    transport: Option<axum::Extension<Transport>>,
    headers: HeaderMap,
    csr: Bytes,
) -> Response {
    let result = async {
        require_tls(transport.as_deref())?;
        let trust = trust(&state)?;
        if transport.as_ref().and_then(|t| t.client_certificate.as_ref()).is_none() {
            return Err(ApiError::new(
                401,
                "certificate_required",
                "re-enrollment needs the device's current certificate (mutual TLS)",
            ));
        }
        let caller = who(&state, &HeaderMap::new(), peer, transport.as_deref()).await?;
        Ok(trust.reenroll(&caller, &csr).await?)
    }
    .await;
    match result {
        Ok(issued) => issued_response(&headers, &issued),
        Err(e) => e.reply().into_response(),
    }
}

fn instant(map: &serde_json::Map<String, Json>, key: &str) -> Result<Option<model::Instant>, ApiError> {
    match text(map, key)? {
        None => Ok(None),
        Some(text) => text.parse::<model::Instant>().map(Some).map_err(|_| {
            ApiError::new(
                400,
                "invalid_property",
                format!("`{key}` must be an RFC 3339 time, e.g. 2030-12-31T00:00:00Z"),
            )
        }),
    }
}

fn strings(map: &serde_json::Map<String, Json>, key: &str) -> Result<Vec<String>, ApiError> {
    match map.get(key) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::new(400, "invalid_property", format!("`{key}` must be an array of strings"))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::new(400, "invalid_property", format!("`{key}` must be an array of strings"))),
    }
}

fn integer(map: &serde_json::Map<String, Json>, key: &str) -> Result<Option<i64>, ApiError> {
    match map.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::new(400, "invalid_property", format!("`{key}` must be an integer"))),
    }
}

/// `POST /admin/device-classes`.
async fn create_class(asked: Asked, bytes: Bytes) -> Reply {
    answer(
        async {
            let class = new_class(&body(&bytes)?)?;
            let record = asked.trust.register_class(&asked.caller, class).await?;
            Ok(reply(201, app::devices::class_json(&record)))
        }
        .await,
    )
}

/// A device class from its JSON.
fn new_class(map: &serde_json::Map<String, Json>) -> Result<NewClass, ApiError> {
    let firmware = match map.get("firmware") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| {
                let version = item.get("version").and_then(Json::as_str);
                let digest = item.get("digest").and_then(Json::as_str);
                match (version, digest) {
                    (Some(v), d) => Ok((v.to_owned(), d.unwrap_or_default().to_owned())),
                    _ => Err(ApiError::new(
                        400,
                        "invalid_property",
                        "`firmware` must be an array of {\"version\", \"digest\"} objects",
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::new(400, "invalid_property", "`firmware` must be an array")),
    };
    Ok(NewClass {
        manufacturer: text(map, "manufacturer")?.unwrap_or_default(),
        model: text(map, "model")?.unwrap_or_default(),
        hardware_version: text(map, "hardwareVersion")?.unwrap_or_default(),
        support_until: instant(map, "supportUntil")?,
        vulnerability_contact: text(map, "vulnerabilityContact")?,
        sensing: strings(map, "sensing")?,
        mud_url: text(map, "mudUrl")?,
        update_mechanism: text(map, "updateMechanism")?,
        firmware,
        mud: map.get("mud").filter(|m| !m.is_null()).cloned(),
    })
}

async fn list_classes(asked: Asked) -> Reply {
    answer(
        async {
            let classes = asked.trust.device_classes(&asked.caller).await?;
            Ok(reply(200, json!({"value": classes.iter().map(app::devices::class_json).collect::<Vec<_>>()})))
        }
        .await,
    )
}

/// `POST /admin/devices`: registers a device; the enrollment token (and secret) are in this
/// answer only.
async fn register(asked: Asked, bytes: Bytes) -> Reply {
    answer(
        async {
            let (trust, caller) = (&asked.trust, &asked.caller);
            let map = body(&bytes)?;
            let urn = text(&map, "urn")?.ok_or_else(|| ApiError::new(400, "missing_property", "`urn` is required"))?;
            let class = integer(&map, "class")?
                .ok_or_else(|| ApiError::new(400, "missing_property", "`class` (a device class id) is required"))?;
            let registration = Registration {
                urn,
                class,
                project: integer(&map, "project")?,
                thing: integer(&map, "thing")?,
                firmware_version: text(&map, "firmwareVersion")?,
                password: text(&map, "password")?,
                public_key: text(&map, "publicKey")?,
                enrollment_token: !matches!(map.get("enrollmentToken"), Some(Json::Bool(false))),
                secret: flag(&map, "secret")?,
            };
            let registered = trust.register(caller, registration).await?;
            let mut out = trust.device(caller, &registered.device.urn).await?;
            if let Some((token, expires)) = registered.enrollment_token {
                out["enrollmentToken"] = json!(token);
                out["enrollmentTokenExpiresAt"] = json!(expires.to_string());
            }
            if let Some((secret, psk)) = registered.secret {
                out["secret"] = json!(secret);
                out["dtlsPsk"] = json!(psk);
            }
            Ok(reply(201, out))
        }
        .await,
    )
}

/// `POST /admin/devices/{urn}/{token|secret|suspend|reinstate|retire|check}`.
async fn device_action(asked: Asked, Path((urn, action)): Path<(String, String)>, bytes: Bytes) -> Reply {
    answer(
        async {
            let (trust, caller) = (&asked.trust, &asked.caller);
            let reason = reason(&bytes)?;
            let change = match action.as_str() {
                "token" => {
                    let (token, expires) = trust.new_enrollment_token(caller, &urn).await?;
                    return Ok(reply(201, json!({"enrollmentToken": token, "expiresAt": expires.to_string()})));
                }
                "secret" => {
                    let (secret, psk) = trust.new_secret(caller, &urn).await?;
                    return Ok(reply(201, json!({"secret": secret, "dtlsPsk": psk})));
                }
                "check" => return Ok(reply(200, trust.check(caller, &urn).await?.to_json())),
                "suspend" => StateChange::Suspend,
                "reinstate" => StateChange::Reinstate,
                "retire" => StateChange::Retire,
                other => Err(ApiError::new(
                    404,
                    "unknown_path",
                    format!("unknown device action `{other}`: token, secret, check, suspend, reinstate or retire"),
                ))?,
            };
            Ok(reply(200, trust.change_state(caller, &urn, change, &reason).await?))
        }
        .await,
    )
}

/// The optional `{"reason": ...}` of a state change or revocation.
fn reason(bytes: &Bytes) -> Result<String, ApiError> {
    if bytes.is_empty() {
        return Ok(String::new());
    }
    Ok(text(&body(bytes)?, "reason")?.unwrap_or_default())
}

/// `POST /admin/certificates/{serial}/revoke` with an optional `{"reason": ...}`.
async fn revoke(asked: Asked, Path(serial): Path<String>, bytes: Bytes) -> Reply {
    answer(async { Ok(reply(200, asked.trust.revoke(&asked.caller, &serial, &reason(&bytes)?).await?)) }.await)
}

/// `GET /devices/{urn}`.
async fn device(asked: Asked, Path(urn): Path<String>) -> Reply {
    answer(async { Ok(reply(200, asked.trust.device(&asked.caller, &urn).await?)) }.await)
}

/// `GET /devices/{urn}/conformance`: the admission report, evaluated now; JSON, or readable
/// text with `Accept: text/plain` or `?format=text`.
async fn conformance(
    asked: Asked,
    Path(urn): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Reply {
    answer(
        async {
            let report = asked.trust.check(&asked.caller, &urn).await?;
            let wants_text = query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "format=text"))
                || headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/plain"));
            Ok(if wants_text { Reply::text(200, report.to_text().into_bytes()) } else { reply(200, report.to_json()) })
        }
        .await,
    )
}

/// `GET /resolve/{urn}`: what an RFC 9039 URN names.
async fn resolve(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    transport: Option<axum::Extension<Transport>>,
    Path(urn): Path<String>,
    headers: HeaderMap,
) -> Reply {
    answer(
        async {
            let trust = trust(&state)?;
            // A malformed URN is a 400 whoever asks.
            app::devices::parse_urn(&urn)?;
            let caller = who(&state, &headers, peer, transport.as_deref()).await?;
            let base = crate::base_url_over(&state.settings, &headers, transport.as_deref());
            let base = base.strip_suffix("/v1.1").unwrap_or(&base).to_owned();
            Ok(reply(200, trust.resolve(&caller, &urn, &base).await?))
        }
        .await,
    )
}
