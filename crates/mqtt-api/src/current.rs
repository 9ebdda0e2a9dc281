//! The current state a new subscription to a SensorThings topic receives when the server is
//! configured to send it (FROST-Server users have asked for it since 2022, its issue #2323):
//! the entity of an entity topic, the property of a property topic, and the newest Observation
//! (by phenomenonTime) of an Observation collection topic. Other collections have no single
//! current state and get none. The payload is shaped exactly like the notifications on that
//! topic, `$select` included, and is sent as the topic's retained message, so MQTT 5 clients
//! can opt out per subscription with Retain Handling. It is read as the subscriber, so it shows
//! only what the subscriber may see.

use app::{App, ReadResult};
use broker::{TopicFilter, TopicName};
use bytes::Bytes;
use model::EntityType;
use odata::{Limits, Tail};
use sensorthings_json::Encoder;

use crate::notify::property_payload;
use crate::topic;

/// The newest Observation: the one `$orderby=phenomenonTime desc` puts first (between equal
/// phenomenon times the longer interval, then the lower id), which the store keeps on each
/// (Multi)Datastream, so subscribing never scans.
const NEWEST_OBSERVATION: &str = "$top=1&$orderby=phenomenonTime desc";

/// The current state of the topic `filter` names, or nothing when it has none (wildcards,
/// collections of entities other than Observations, entities that do not exist).
pub(crate) async fn current_state(
    app: App,
    caller: std::sync::Arc<app::Caller>,
    base: String,
    filter: TopicFilter,
) -> Vec<(TopicName, Bytes)> {
    let text = filter.as_str();
    if text.contains(['+', '#']) {
        return Vec::new();
    }
    let Some(Ok(parsed)) = topic::parse(text) else { return Vec::new() };
    let Ok(name) = TopicName::new(text) else { return Vec::new() };
    let encoder = Encoder { base: &base };
    let path = parsed.path;
    let mut query = parsed.query;
    query.expand.clear();
    let payload = match path.tail {
        Tail::Property(_) => match app.read(&caller, path, odata::Query::default()).await {
            Ok(ReadResult::Property { property, value }) => property_payload(property.name, &value),
            _ => return Vec::new(),
        },
        Tail::None if !app::addresses_collection(&path) => match app.read(&caller, path, query.clone()).await {
            Ok(ReadResult::Entity { entity, fields, row }) => {
                let mut payload = String::with_capacity(512);
                encoder.entity(&mut payload, entity, &fields, &row, &query);
                payload
            }
            _ => return Vec::new(),
        },
        Tail::None if app::target_entity(&path) == EntityType::Observation => {
            let Ok(mut newest) = odata::parse_query(NEWEST_OBSERVATION, EntityType::Observation, &Limits::default())
            else {
                return Vec::new();
            };
            newest.select = query.select.clone();
            match app.read(&caller, path, newest).await {
                Ok(ReadResult::Collection { entity, rows }) => {
                    let Some(row) = rows.rows.first() else { return Vec::new() };
                    let mut payload = String::with_capacity(512);
                    encoder.entity(&mut payload, entity, &rows.fields, row, &query);
                    payload
                }
                _ => return Vec::new(),
            }
        }
        _ => return Vec::new(),
    };
    vec![(name, Bytes::from(payload))]
}
