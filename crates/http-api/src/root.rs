//! The service root: the entity sets and `serverSettings.conformance`, listing exactly the
//! conformance classes this server implements.

use std::fmt::Write as _;

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
];

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
    for (i, class) in CONFORMANCE.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&mut out, class);
    }
    let _ = write!(out, "]}}}}");
    Reply::json(200, out.into_bytes())
}
