//! Notifications: committed changes become publishes on every SensorThings topic they concern,
//! rendered as the HTTP API would render the entity (with the subscriber's `$select`).
//!
//! The [`ChangeChannel`] is the `app::ChangeBus`: called on the store's writer thread, it only
//! queues the changes (bounded; when a burst overflows it, notifications are dropped and
//! counted rather than slowing commits). One task takes them in commit order, reads each
//! entity once, and publishes it on the collection, navigation-collection, entity and property
//! topics it belongs to; so notifications on a topic keep commit order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use app::{App, Change, ChangeBus, ReadResult};
use broker::{Broker, Hooks, QoS, TopicName};
use bytes::Bytes;
use model::{EntityType, Id};
use odata::{Expand, Query, SelectItem};
use sensorthings_json::Encoder;
use sensorthings_json::encode;
use store::{Expanded, Row, Value};

use crate::hooks::Variants;
use crate::topic;

/// How many committed jobs' changes may wait for the notifier.
const QUEUE: usize = 65_536;

/// The `app::ChangeBus` of the MQTT extension.
pub struct ChangeChannel {
    sender: tokio::sync::mpsc::Sender<Vec<Change>>,
    listening: Arc<Listening>,
}

/// The receiving end of a [`ChangeChannel`], for [`crate::start`].
pub struct Notifications {
    pub(crate) changes: tokio::sync::mpsc::Receiver<Vec<Change>>,
    pub(crate) listening: Arc<Listening>,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications").finish_non_exhaustive()
    }
}

impl ChangeChannel {
    pub fn new() -> (ChangeChannel, Notifications) {
        let (sender, changes) = tokio::sync::mpsc::channel(QUEUE);
        let listening = Arc::new(Listening::default());
        (ChangeChannel { sender, listening: listening.clone() }, Notifications { changes, listening })
    }
}

impl ChangeBus for ChangeChannel {
    fn publish(&self, changes: &[Change]) {
        if self.sender.try_send(changes.to_vec()).is_err() {
            metrics::counter!("thingbase_mqtt_notifications_dropped_total", "reason" => "queue_full")
                .increment(changes.len() as u64);
        }
    }

    fn wants_records(&self) -> bool {
        self.listening.0.load(Ordering::Relaxed) > 0
    }
}

/// Counts SensorThings subscriptions ever made (and a bridge), so a hub nobody listens to does
/// no notification work at all.
#[derive(Debug, Default)]
pub struct Listening(pub AtomicUsize);

/// Runs until the channel closes: renders and publishes the notifications of each change.
pub(crate) async fn run<H: Hooks>(
    notifications: Notifications,
    app: App,
    outlet: Outlet<H>,
    variants: Arc<Variants>,
    base: String,
) {
    let Notifications { mut changes, listening } = notifications;
    while let Some(batch) = changes.recv().await {
        if listening.0.load(Ordering::Relaxed) == 0 {
            continue;
        }
        for change in batch {
            if let Err(e) = notify(&app, &outlet, &variants, &base, &change).await {
                metrics::counter!("thingbase_mqtt_notifications_dropped_total", "reason" => "read_failed").increment(1);
                tracing::debug!(error = %e, ?change, "mqtt: no notification for a change");
            }
        }
    }
}

async fn notify<H: Hooks>(
    app: &App,
    outlet: &Outlet<H>,
    variants: &Variants,
    base: &str,
    change: &Change,
) -> Result<(), app::AppError> {
    match change {
        Change::Created { entity, id, .. } | Change::Updated { entity, id } => {
            let updated = matches!(change, Change::Updated { .. });
            let stored = match change {
                Change::Created { record: Some(record), .. } => from_record(*entity, *id, record),
                _ => match read_with_parents(app, *entity, *id).await? {
                    Some(stored) => stored,
                    None => return Ok(()),
                },
            };
            let set = entity.set_name();
            let mut topics = vec![format!("{}{set}", topic::PREFIX)];
            for (navigation, parent) in &stored.parents {
                let Some(back) = entity.inverse(navigation) else { continue };
                topics.push(format!("{}{}({parent})/{}", topic::PREFIX, navigation.target.set_name(), back.name));
            }
            if updated {
                topics.push(format!("{}{set}({id})", topic::PREFIX));
                for (field, value) in stored.fields.iter().zip(&stored.row.values) {
                    let payload = property_payload(field.name, value);
                    send(outlet, &format!("{}{set}({id})/{}", topic::PREFIX, field.name), payload, stored.project);
                }
            }
            // The payload without `$select` is the same on every topic: rendered once.
            let mut full = None;
            for base_topic in topics {
                publish_entity(outlet, variants, base, &base_topic, *entity, &stored, &mut full);
            }
        }
        Change::Linked { navigation, from, to } => {
            let Some(source) = EntityType::ALL.into_iter().find(|e| e.navigations().contains(navigation)) else {
                return Ok(());
            };
            let Some(stored) = read_with_parents(app, navigation.target, *to).await? else { return Ok(()) };
            let base_topic = format!("{}{}({from})/{}", topic::PREFIX, source.set_name(), navigation.name);
            publish_entity(outlet, variants, base, &base_topic, navigation.target, &stored, &mut None);
        }
        Change::Deleted { .. } => {}
    }
    Ok(())
}

/// An entity as notifications render it, with the ids of the entities it points to (which
/// decide its navigation topics).
struct Stored {
    fields: Vec<&'static model::Property>,
    row: Row,
    parents: Vec<(&'static model::Navigation, Id)>,
    /// The entity's project: the broker tag that decides who receives the notification.
    project: i64,
}

/// A created Observation from the record the write job kept: no read-back.
fn from_record(entity: EntityType, id: Id, record: &store::Record) -> Stored {
    Stored {
        fields: entity.properties().iter().collect(),
        row: Row { id, values: record.values.iter().map(|(_, value)| value.clone()).collect(), expanded: Vec::new() },
        parents: record.links.iter().filter_map(|(navigation, target)| Some((*navigation, (*target)?))).collect(),
        project: record.project.unwrap_or(access::DEFAULT_PROJECT),
    }
}

/// The entity read back, with the ids of its to-one navigations.
async fn read_with_parents(app: &App, entity: EntityType, id: Id) -> Result<Option<Stored>, app::AppError> {
    let path = odata::parse_path(&format!("/{}({id})", entity.set_name()))?;
    let only_id = Query { select: Some(vec![SelectItem::Id]), ..Query::default() };
    let expand: Vec<Expand> = entity
        .navigations()
        .iter()
        .filter(|n| !n.many)
        .map(|navigation| Expand { navigation, query: only_id.clone() })
        .collect();
    let query = Query { expand, ..Query::default() };
    match app.read_unbudgeted(&app::Caller::server(), path, query.clone()).await {
        Ok(ReadResult::Entity { fields, mut row, .. }) => {
            let parents = query
                .expand
                .iter()
                .zip(&row.expanded)
                .filter_map(|(item, expanded)| match expanded {
                    Expanded::One { row: Some(parent), .. } => Some((item.navigation, parent.id)),
                    _ => None,
                })
                .collect();
            row.expanded.clear();
            let project = app.project_of(entity, id).await?.unwrap_or(access::DEFAULT_PROJECT);
            Ok(Some(Stored { fields, row, parents, project }))
        }
        Ok(_) | Err(app::AppError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Publishes the entity on `base_topic` and on each remembered `$select` variant of it. `full`
/// caches the payload without `$select` across the topics of one change.
fn publish_entity<H: Hooks>(
    outlet: &Outlet<H>,
    variants: &Variants,
    base: &str,
    base_topic: &str,
    entity: EntityType,
    stored: &Stored,
    full: &mut Option<String>,
) {
    let encoder = Encoder { base };
    for topic_text in variants.of(base_topic) {
        let query = match topic::parse(&topic_text) {
            Some(Ok(parsed)) => parsed.query,
            _ => Query::default(),
        };
        if query.select.is_none() {
            let payload = full.get_or_insert_with(|| {
                let mut payload = String::with_capacity(512);
                encoder.entity(&mut payload, entity, &stored.fields, &stored.row, &Query::default());
                payload
            });
            send(outlet, &topic_text, payload.clone(), stored.project);
            continue;
        }
        // The row holds every field; `$select` keeps the chosen ones.
        let (chosen, values): (Vec<&'static model::Property>, Vec<Value>) = stored
            .fields
            .iter()
            .zip(&stored.row.values)
            .filter(|(field, _)| {
                query.select.as_ref().is_none_or(|items| {
                    items.iter().any(|i| matches!(i, SelectItem::Property(p) if p.name == field.name))
                })
            })
            .map(|(field, value)| (*field, value.clone()))
            .unzip();
        let shaped = Row { id: stored.row.id, values, expanded: Vec::new() };
        let mut payload = String::with_capacity(512);
        encoder.entity(&mut payload, entity, &chosen, &shaped, &Query { expand: Vec::new(), ..query });
        send(outlet, &topic_text, payload, stored.project);
    }
}

/// The payload of a property topic: `{"name": value}`, as `GET .../name` answers.
pub(crate) fn property_payload(name: &str, value: &Value) -> String {
    let mut payload = String::from("{");
    encode::string(&mut payload, name);
    payload.push(':');
    encode::value(&mut payload, value);
    payload.push('}');
    payload
}

/// Where notifications go: the embedded broker, and the external broker when bridged.
pub(crate) struct Outlet<H: Hooks> {
    pub(crate) broker: Broker<H>,
    /// Topics without query options only: the subscriptions of the external broker's clients
    /// are not seen here, so their `$select` variants are unknown. With the entity's project.
    pub(crate) bridge: Option<tokio::sync::mpsc::Sender<(TopicName, Bytes, i64)>>,
}

fn send<H: Hooks>(outlet: &Outlet<H>, topic_text: &str, payload: String, project: i64) {
    match TopicName::new(topic_text) {
        Ok(name) => {
            metrics::counter!("thingbase_mqtt_notifications_total").increment(1);
            let payload = Bytes::from(payload);
            if let Some(bridge) = &outlet.bridge
                && !topic_text.contains('?')
                && bridge.try_send((name.clone(), payload.clone(), project)).is_err()
            {
                metrics::counter!("thingbase_mqtt_notifications_dropped_total", "reason" => "bridge_queue_full")
                    .increment(1);
            }
            outlet.broker.publish_tagged(name, payload, QoS::AtLeastOnce, false, project.unsigned_abs());
        }
        Err(e) => tracing::debug!(topic = topic_text, error = %e, "mqtt: not a valid topic for a notification"),
    }
}
