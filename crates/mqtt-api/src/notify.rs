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
}

impl ChangeChannel {
    pub fn new() -> (ChangeChannel, tokio::sync::mpsc::Receiver<Vec<Change>>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(QUEUE);
        (ChangeChannel { sender }, receiver)
    }
}

impl ChangeBus for ChangeChannel {
    fn publish(&self, changes: &[Change]) {
        if self.sender.try_send(changes.to_vec()).is_err() {
            metrics::counter!("thingbase_mqtt_notifications_dropped_total", "reason" => "queue_full")
                .increment(changes.len() as u64);
        }
    }
}

/// Counts SensorThings subscriptions ever made, so a hub nobody listens to does no notification
/// work at all.
#[derive(Debug, Default)]
pub struct Listening(pub AtomicUsize);

/// Runs until the channel closes: renders and publishes the notifications of each change.
pub async fn run<H: Hooks>(
    mut changes: tokio::sync::mpsc::Receiver<Vec<Change>>,
    app: App,
    outlet: Outlet<H>,
    variants: Arc<Variants>,
    listening: Arc<Listening>,
    base: String,
) {
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
        Change::Created { entity, id } | Change::Updated { entity, id } => {
            let updated = matches!(change, Change::Updated { .. });
            let Some((fields, row, query)) = read_with_parents(app, *entity, *id).await? else { return Ok(()) };
            let set = entity.set_name();
            let mut topics = vec![format!("{}{set}", topic::PREFIX)];
            for (item, expanded) in query.expand.iter().zip(&row.expanded) {
                let (Expanded::One { row: Some(parent), .. }, Some(back)) = (expanded, entity.inverse(item.navigation))
                else {
                    continue;
                };
                topics.push(format!(
                    "{}{}({})/{}",
                    topic::PREFIX,
                    item.navigation.target.set_name(),
                    parent.id,
                    back.name
                ));
            }
            if updated {
                topics.push(format!("{}{set}({id})", topic::PREFIX));
                for (field, value) in fields.iter().zip(&row.values) {
                    let payload = property_payload(field.name, value);
                    send(outlet, &format!("{}{set}({id})/{}", topic::PREFIX, field.name), payload);
                }
            }
            for base_topic in topics {
                publish_entity(outlet, variants, base, &base_topic, *entity, &fields, &row);
            }
        }
        Change::Linked { navigation, from, to } => {
            let Some(source) = EntityType::ALL.into_iter().find(|e| e.navigations().contains(navigation)) else {
                return Ok(());
            };
            let Some((fields, row, _)) = read_with_parents(app, navigation.target, *to).await? else { return Ok(()) };
            let base_topic = format!("{}{}({from})/{}", topic::PREFIX, source.set_name(), navigation.name);
            publish_entity(outlet, variants, base, &base_topic, navigation.target, &fields, &row);
        }
        Change::Deleted { .. } => {}
    }
    Ok(())
}

/// The entity with the ids of the entities it points to (to find its navigation topics).
async fn read_with_parents(
    app: &App,
    entity: EntityType,
    id: Id,
) -> Result<Option<(Vec<&'static model::Property>, Row, Query)>, app::AppError> {
    let path = odata::parse_path(&format!("/{}({id})", entity.set_name()))?;
    let only_id = Query { select: Some(vec![SelectItem::Id]), ..Query::default() };
    let expand = entity
        .navigations()
        .iter()
        .filter(|n| !n.many)
        .map(|navigation| Expand { navigation, query: only_id.clone() })
        .collect();
    let query = Query { expand, ..Query::default() };
    match app.read(path, query.clone()).await {
        Ok(ReadResult::Entity { fields, row, .. }) => Ok(Some((fields, row, query))),
        Ok(_) | Err(app::AppError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Publishes the entity on `base_topic` and on each remembered `$select` variant of it.
fn publish_entity<H: Hooks>(
    outlet: &Outlet<H>,
    variants: &Variants,
    base: &str,
    base_topic: &str,
    entity: EntityType,
    fields: &[&'static model::Property],
    row: &Row,
) {
    let encoder = Encoder { base };
    for topic_text in variants.of(base_topic) {
        let query = match topic::parse(&topic_text) {
            Some(Ok(parsed)) => parsed.query,
            _ => Query::default(),
        };
        // The row was read with every field; `$select` keeps the chosen ones.
        let (chosen, values): (Vec<&'static model::Property>, Vec<Value>) = fields
            .iter()
            .zip(&row.values)
            .filter(|(field, _)| {
                query.select.as_ref().is_none_or(|items| {
                    items.iter().any(|i| matches!(i, SelectItem::Property(p) if p.name == field.name))
                })
            })
            .map(|(field, value)| (*field, value.clone()))
            .unzip();
        let shaped = Row { id: row.id, values, expanded: Vec::new() };
        let mut payload = String::with_capacity(512);
        encoder.entity(&mut payload, entity, &chosen, &shaped, &Query { expand: Vec::new(), ..query });
        send(outlet, &topic_text, payload);
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
    /// are not seen here, so their `$select` variants are unknown.
    pub(crate) bridge: Option<tokio::sync::mpsc::Sender<(TopicName, Bytes)>>,
}

fn send<H: Hooks>(outlet: &Outlet<H>, topic_text: &str, payload: String) {
    match TopicName::new(topic_text) {
        Ok(name) => {
            metrics::counter!("thingbase_mqtt_notifications_total").increment(1);
            let payload = Bytes::from(payload);
            if let Some(bridge) = &outlet.bridge
                && !topic_text.contains('?')
                && bridge.try_send((name.clone(), payload.clone())).is_err()
            {
                metrics::counter!("thingbase_mqtt_notifications_dropped_total", "reason" => "bridge_queue_full")
                    .increment(1);
            }
            outlet.broker.publish(name, payload, QoS::AtLeastOnce, false);
        }
        Err(e) => tracing::debug!(topic = topic_text, error = %e, "mqtt: not a valid topic for a notification"),
    }
}
