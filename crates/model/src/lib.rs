//! The SensorThings vocabulary shared by every other crate: entity types with their properties
//! and relations ([`EntityType`]), times ([`Instant`], [`Interval`]), geometry values and
//! RFC 9039 device identifiers ([`DeviceUrn`]).
//!
//! This crate does no I/O and knows nothing of HTTP, SQL or MQTT.

mod geometry;
mod schema;
mod time;
pub mod urn;

#[cfg(test)]
mod tests;

pub use geometry::{GEOJSON_ENCODINGS, Geometry, GeometryError};
pub use schema::{EntityType, Link, Navigation, Property, PropertyKind};
pub use time::{Instant, Interval, TimeError, TimeValue};
pub use urn::{DeviceUrn, UrnError, UrnKind};

/// An entity id. Ids are positive integers assigned by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub i64);

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
