//! The service root: the entity sets and `serverSettings.conformance`, listing exactly the
//! conformance classes this server implements, and the MQTT endpoints (OGC 18-088 §8.2).

use axum::extract::State;
use axum::http::HeaderMap;
use model::EntityType;

use crate::encode::string;
use crate::{ApiState, Reply, base_url};

/// The conformance classes of OGC 18-088 (and its extensions) that work end to end here.
pub const CONFORMANCE: &[&str] = &[
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/create-update-delete",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/batch-request/batch-request",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/multi-datastream",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/data-array/data-array",
    AGGREGATION,
    FILTERED_DELETE,
];

/// Thingbase's own extensions (docs/timeseries.md, docs/sensorthings.md): identifiers, not
/// addresses to resolve.
pub const AGGREGATION: &str = "urn:x-thingbase:extension:aggregation:1.0";
pub const FILTERED_DELETE: &str = "urn:x-thingbase:extension:filtered-delete:1.0";

/// The MQTT extension's classes, listed when MQTT endpoints are configured.
pub const MQTT_CONFORMANCE: &[&str] =
    &[MQTT_CREATE, "http://www.opengis.net/spec/iot_sensing/1.1/req/receive-updates-via-mqtt/receive-updates"];

/// The class whose `serverSettings` entry lists the MQTT endpoints.
const MQTT_CREATE: &str =
    "http://www.opengis.net/spec/iot_sensing/1.1/req/create-observations-via-mqtt/observations-creation";

pub async fn service_root(State(state): State<ApiState>, headers: HeaderMap) -> Reply {
    let base = base_url(&state.settings, &headers);
    let mut out = String::from("{\"value\":[");
    for (i, entity) in EntityType::ALL.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        string(&mut out, entity.set_name());
        out.push_str(",\"url\":");
        string(&mut out, &format!("{base}/{}", entity.set_name()));
        out.push('}');
    }
    out.push_str("],\"serverSettings\":{\"conformance\":[");
    let endpoints = state.settings.mqtt_port.map(|port| mqtt_endpoints(&base, port)).unwrap_or_default();
    let mqtt = if endpoints.is_empty() { &[][..] } else { MQTT_CONFORMANCE };
    for (i, class) in CONFORMANCE.iter().chain(mqtt).enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&mut out, class);
    }
    out.push(']');
    if !endpoints.is_empty() {
        out.push(',');
        string(&mut out, MQTT_CREATE);
        out.push_str(":{\"endpoints\":[");
        for (i, endpoint) in endpoints.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(&mut out, endpoint);
        }
        out.push_str("]}");
    }
    // What the aggregation extension offers, for clients to discover.
    out.push(',');
    string(&mut out, AGGREGATION);
    out.push(':');
    let functions: Vec<&str> = app::aggregate::Function::ALL.iter().map(|f| f.name()).collect();
    let offered = serde_json::json!({
        "functions": functions,
        "intervals": ["PTnM (n dividing 60)", "PTnH (n dividing 24)", "P1D", "P1W", "PnM (n = 1, 2, 3, 4, 6)", "P1Y"],
        "rollups": ["PT1M", "PT1H", "P1D"],
        "maxBuckets": app::aggregate::MAX_BUCKETS,
        "maxEvenBuckets": app::aggregate::MAX_EVEN_BUCKETS,
    });
    out.push_str(&offered.to_string());
    out.push_str("}}");
    Reply::json(200, out.into_bytes())
}

/// The MQTT endpoints of a server whose service root is `base` (`http://host:8080/v1.1`): the
/// broker's own port on the same host, and WebSockets at `/mqtt` beside the service root.
pub fn mqtt_endpoints(base: &str, port: u16) -> Vec<String> {
    let root = base.strip_suffix(&format!("/{}", crate::VERSION)).unwrap_or(base);
    let (scheme, rest) = root.split_once("://").unwrap_or(("http", root));
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or(v6)),
        None => authority.split(':').next().unwrap_or(authority).to_owned(),
    };
    let websocket = if scheme == "https" { "wss" } else { "ws" };
    vec![format!("mqtt://{host}:{port}"), format!("{websocket}://{rest}/mqtt")]
}
