//! The SensorThings JSON wire format, written straight into a buffer: entities with
//! `@iot.selfLink`, `@iot.id` and `@iot.navigationLink`s shaped by `$select` and `$expand`,
//! collections with `@iot.count` and `@iot.nextLink`, and the query text of next links.
//!
//! Shared by every edge that sends entities (HTTP responses, MQTT notifications) so they cannot
//! drift apart. Must not depend on a transport (axum, the broker) or a backend.

pub mod encode;
pub mod url;

pub use encode::Encoder;
