//! SensorThings topics: `v1.1/` followed by a resource path and, for subscriptions, query
//! options (`v1.1/Things(1)/Datastreams?$select=name`), parsed with the same `odata` functions
//! the HTTP API uses.

use odata::{Limits, Query, ResourcePath};

/// The prefix every SensorThings topic starts with.
pub const PREFIX: &str = "v1.1/";

/// A parsed SensorThings topic.
#[derive(Clone, Debug)]
pub struct SensorThingsTopic {
    pub path: ResourcePath,
    /// The query options after `?` (only `$select` means something for notifications).
    pub query: Query,
}

/// Whether a topic is in the SensorThings namespace at all.
pub fn is_sensorthings(topic: &str) -> bool {
    topic.starts_with(PREFIX)
}

/// Parses `v1.1/<path>[?<options>]`; `None` for topics outside the namespace, `Some(Err)` for
/// malformed ones.
pub fn parse(topic: &str) -> Option<Result<SensorThingsTopic, odata::ODataError>> {
    let rest = topic.strip_prefix(PREFIX)?;
    let (path, options) = rest.split_once('?').unwrap_or((rest, ""));
    Some((|| {
        let path = odata::parse_path(&format!("/{path}"))?;
        let entity = app::target_entity(&path);
        let query = odata::parse_query(options, entity, &Limits::default())?;
        Ok(SensorThingsTopic { path, query })
    })())
}
