//! The SensorThings API over HTTP: the service root, one generic resource route for every
//! entity set and navigation path, `$batch`, the Data Array extension, `/health` and
//! `/metrics`.
//!
//! This is the only crate that knows HTTP and the JSON wire format; it turns requests into `app`
//! calls and `app` answers into JSON. Must not depend on a concrete backend or on the broker.

mod admin;
pub mod auth;
mod batch;
mod data_array;
mod devices;
mod error;
mod handler;
pub mod limits;
mod openapi;
mod root;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

pub use error::ApiError;
pub use handler::{Method, Request};
use sensorthings_json::{encode, url};

/// The settings of the HTTP API.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// The externally visible URL of the server (e.g. `https://sensors.example.org`); when
    /// absent, links are built from the request's `Host` header.
    pub public_url: Option<String>,
    /// The largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// The port of the MQTT broker (which also answers WebSockets at `/mqtt` on this server):
    /// the service root then lists the MQTT conformance classes and endpoints.
    pub mqtt_port: Option<u16>,
}

impl Default for ApiSettings {
    fn default() -> ApiSettings {
        ApiSettings { public_url: None, max_body_bytes: 16 * 1024 * 1024, mqtt_port: None }
    }
}

/// Renders the Prometheus exposition text.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct ApiState {
    pub app: app::App,
    pub settings: Arc<ApiSettings>,
    pub metrics: Option<MetricsRender>,
    pub auth: auth::AuthMode,
    pub limits: Arc<limits::RateLimits>,
    /// Devices, their enrollment and the admission gate (absent with access control off).
    pub trust: Option<Arc<app::devices::Trust>>,
}

/// The version path of the service root.
pub const VERSION: &str = "v1.1";

/// A response as the handlers produce it, before it becomes an HTTP response (or a `$batch`
/// part).
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub location: Option<String>,
    /// Seconds for a 429's `Retry-After`.
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, content_type: Some("application/json"), location: None, retry_after: None, body }
    }

    pub fn text(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, content_type: Some("text/plain; charset=utf-8"), location: None, retry_after: None, body }
    }

    pub fn empty(status: u16) -> Reply {
        Reply { status, content_type: None, location: None, retry_after: None, body: Vec::new() }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(content_type) = self.content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        if let Some(seconds) = self.retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, seconds);
        }
        if self.status == 401 {
            // RFC 9110 §11.6.1: a 401 says how to authenticate.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"thingbase\", Basic realm=\"thingbase\""),
            );
        }
        response
    }
}

/// The HTTP routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1.1", get(root::service_root))
        .route("/v1.1/", get(root::service_root))
        .route("/v1.1/{*rest}", any(resource))
        .route("/health", get(|| async { Reply::json(200, br#"{"status":"ok"}"#.to_vec()) }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|State(state): State<ApiState>, headers: HeaderMap| async move {
                let base = base_url(&state.settings, &headers);
                Reply::json(200, openapi::document(&base).to_string().into_bytes())
            }),
        )
        .merge(admin::routes())
        .merge(devices::routes())
        .fallback(|| async {
            ApiError::new(404, "unknown_path", "no such resource; the SensorThings API is at /v1.1").reply()
        })
        .with_state(state)
}

async fn metrics(State(state): State<ApiState>) -> Reply {
    match &state.metrics {
        Some(render) => {
            Reply { content_type: Some("text/plain; version=0.0.4"), ..Reply::text(200, render().into_bytes()) }
        }
        None => ApiError::new(404, "unknown_path", "metrics are not enabled").reply(),
    }
}

/// The service root URL for a request, e.g. `http://localhost:8080/v1.1`.
pub fn base_url(settings: &ApiSettings, headers: &HeaderMap) -> String {
    base_url_over(settings, headers, None)
}

/// [`base_url`] for a request that came over `transport` (HTTPS links for TLS connections).
pub fn base_url_over(settings: &ApiSettings, headers: &HeaderMap, transport: Option<&auth::Transport>) -> String {
    match &settings.public_url {
        Some(url) => format!("{}/{VERSION}", url.trim_end_matches('/')),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let scheme = if transport.is_some_and(|t| t.tls) { "https" } else { "http" };
            format!("{scheme}://{host}/{VERSION}")
        }
    }
}

async fn resource(State(state): State<ApiState>, request: HttpRequest) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let method = Method::parse(parts.method.as_str());
    let base = base_url_over(&state.settings, &parts.headers, parts.extensions.get::<auth::Transport>());
    let raw_path = parts.uri.path();
    let path = raw_path.strip_prefix("/v1.1").unwrap_or(raw_path).to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let method_label = parts.method.as_str().to_owned();
    let record = |status: u16| {
        metrics::counter!("thingbase_http_requests_total", "method" => method_label.clone(), "status" => status.to_string())
            .increment(1);
        metrics::histogram!("thingbase_http_request_duration_seconds", "method" => method_label.clone())
            .record(started.elapsed().as_secs_f64());
    };
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let caller = match auth::caller(&state, peer, &parts.headers, parts.extensions.get::<auth::Transport>()).await {
        Ok(caller) => caller,
        Err(error) => {
            let reply = error.reply();
            record(reply.status);
            return reply.into_response();
        }
    };
    if method == Method::Get {
        let response = handler::get_response(&state, &caller, &base, &path, &query).await;
        record(response.status().as_u16());
        return response;
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let minimal =
        parts.headers.get("prefer").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("return=minimal"));
    let body = match axum::body::to_bytes(body, state.settings.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let reply = ApiError::new(
                413,
                "body_too_large",
                format!("the request body is larger than {} bytes", state.settings.max_body_bytes),
            )
            .reply();
            record(reply.status);
            return reply.into_response();
        }
    };
    let request = Request {
        method,
        path: &path,
        query: &query,
        body: &body,
        content_type: content_type.as_deref(),
        minimal,
        caller: &caller,
    };
    let reply = handler::handle(&state, &base, request).await;
    record(reply.status);
    reply.into_response()
}
