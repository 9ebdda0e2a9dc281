//! Bring your own broker: Thingbase connects to an external MQTT 5 broker (Mosquitto, EMQX,
//! HiveMQ, ...) as a client, takes the devices' publishes to SensorThings topics from there, and
//! publishes its change notifications to it. The embedded broker keeps running beside it.
//!
//! - **Inbound**: one shared subscription, `$share/<group>/v1.1/#` at QoS 1, so that several
//!   Thingbase nodes on one external broker split the devices' publishes between them instead
//!   of each creating every entity. A publish becomes the same create as an HTTP POST (via
//!   [`crate::hooks::create_request`]), and its PUBACK goes back only after the commit, in the
//!   order the publishes came (MQTT 5.0 §4.6). Publishes the external broker redelivers after
//!   a reconnect may be created twice: that is QoS 1, at least once.
//! - **Outbound**: every notification on a topic without query options, at QoS 1, carrying the
//!   user property `thingbase: notification`, by which the inbound side recognises and skips
//!   notifications (its own, which the shared subscription echoes back since No Local cannot be
//!   set on a shared subscription, and other nodes'). When the external broker is unreachable
//!   notifications are dropped and counted, never queued without bound.
//! - The session is persistent (clean start off, a day's expiry), so device publishes sent
//!   while Thingbase is down wait at the external broker. rumqttc reconnects after a second.
//!
//! A device cannot be told why its publish was refused (the external broker acknowledged it
//! long ago): refusals are logged and counted in `thingbase_mqtt_bridge_refused_total`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use app::auth::Credentials;
use app::{App, Caller};
use broker::TopicName;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;

use crate::hooks::{create_request, publish_error};
use crate::session::MqttAccess;
use crate::topic;

/// The user property every notification published to the external broker carries.
pub const NOTIFICATION_PROPERTY: (&str, &str) = ("thingbase", "notification");

/// How many notifications may wait for the external broker.
const OUTBOUND_QUEUE: usize = 10_000;

/// How long to wait before the next connection attempt after a failure.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Where the external broker is and how to log in.
#[derive(Clone)]
pub struct BridgeConfig {
    pub host: String,
    pub port: u16,
    /// The client id at the external broker; give each Thingbase node its own.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The shared-subscription group the nodes of one hub join.
    pub share_group: String,
    /// The Thingbase API token the bridge acts with when access control is on: the devices'
    /// publishes create as its principal, and only notifications it may read go out.
    pub token: Option<String>,
}

impl std::fmt::Debug for BridgeConfig {
    // The password is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("share_group", &self.share_group)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// The sending side the notifier pushes notifications into, and the task that runs the bridge.
pub(crate) fn start(app: App, config: BridgeConfig, access: MqttAccess) -> mpsc::Sender<(TopicName, Bytes, i64)> {
    let (sender, receiver) = mpsc::channel(OUTBOUND_QUEUE);
    tokio::spawn(async move {
        let caller = match (&access, &config.token) {
            (MqttAccess::Open, _) => Caller::server(),
            (MqttAccess::Required(authenticator), Some(token)) => {
                match authenticator.authenticate(Credentials::Token(token.clone())).await {
                    Ok(principal) => Caller::new(principal),
                    Err(error) => {
                        tracing::error!(%error, "mqtt bridge: its token does not work; the bridge is off");
                        return;
                    }
                }
            }
            (MqttAccess::Required(_), None) => {
                tracing::error!(
                    "mqtt bridge: access control is on and the bridge has no token (--mqtt-bridge-token); the bridge is off"
                );
                return;
            }
        };
        run(app, config, caller, receiver).await;
    });
    sender
}

type Acknowledgement = Pin<Box<dyn Future<Output = (Publish, u64)> + Send>>;

async fn run(
    app: App,
    config: BridgeConfig,
    caller: Caller,
    mut notifications: mpsc::Receiver<(TopicName, Bytes, i64)>,
) {
    let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(24 * 60 * 60))
        .set_manual_acks(true);
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        options.set_credentials(username.clone(), password.clone());
    }
    let (client, event_loop) = AsyncClient::new(options, 1024);
    // The event loop runs in a task of its own and is only ever awaited there: it owns the
    // socket, and being cancelled by a `select!` halfway through a write is not safe for it.
    let (event_sender, mut events) = mpsc::channel(1024);
    let poller = tokio::spawn(poll(event_loop, event_sender));
    let filter = format!("$share/{}/{}#", config.share_group, topic::PREFIX);
    // Each connection has a generation: an acknowledgement computed for a publish of an
    // earlier connection is not sent on a later one (the broker redelivers that publish).
    let mut generation = 0_u64;
    let mut acknowledgements: FuturesOrdered<Acknowledgement> = FuturesOrdered::new();
    let mut connected = false;
    tracing::info!(host = %config.host, port = config.port, client_id = %config.client_id, "mqtt bridge: connecting to the external broker");
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Ok(Packet::ConnAck(_))) => {
                    generation += 1;
                    connected = true;
                    tracing::info!(host = %config.host, port = config.port, "mqtt bridge: connected");
                    metrics::gauge!("thingbase_mqtt_bridge_connected").set(1.0);
                    // Persistent sessions keep subscriptions, but a new session has none.
                    if client.try_subscribe_many([Filter::new(filter.clone(), QoS::AtLeastOnce)]).is_err() {
                        tracing::warn!("mqtt bridge: cannot subscribe");
                    }
                }
                Some(Ok(Packet::Publish(publish))) => {
                    acknowledgements.push_back(receive(&app, &caller, publish, generation));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if connected {
                        tracing::warn!(%error, "mqtt bridge: lost the external broker; reconnecting");
                    } else {
                        tracing::debug!(%error, "mqtt bridge: cannot reach the external broker");
                    }
                    connected = false;
                    metrics::gauge!("thingbase_mqtt_bridge_connected").set(0.0);
                }
                None => break,
            },
            Some((publish, of_generation)) = acknowledgements.next() => {
                if of_generation == generation && publish.qos != QoS::AtMostOnce && client.try_ack(&publish).is_err() {
                    tracing::warn!("mqtt bridge: cannot queue a PUBACK; the broker will redeliver");
                }
            }
            notification = notifications.recv() => {
                let Some((topic, payload, project)) = notification else { break };
                // The external broker's subscribers see what the bridge's principal may read.
                if app.readable(&caller.principal, project) {
                    publish_notification(&client, connected, topic, payload);
                }
            }
        }
    }
    let _ = client.try_disconnect();
    // Give the DISCONNECT a moment to go out.
    let _ = tokio::time::timeout(Duration::from_millis(500), poller).await;
}

/// Drives the client's event loop, forwarding what arrives; after a failure it waits before
/// the next poll, which reconnects.
async fn poll(mut event_loop: EventLoop, events: mpsc::Sender<Result<Packet, String>>) {
    loop {
        let forwarded = match event_loop.poll().await {
            Ok(Event::Incoming(packet)) => events.send(Ok(packet)).await,
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(Event::Outgoing(_)) => Ok(()),
            Err(error) => {
                let forwarded = events.send(Err(error.to_string())).await;
                tokio::time::sleep(RECONNECT_DELAY).await;
                forwarded
            }
        };
        if forwarded.is_err() {
            return;
        }
    }
}

fn publish_notification(client: &AsyncClient, connected: bool, topic: TopicName, payload: Bytes) {
    if !connected {
        metrics::counter!("thingbase_mqtt_notifications_dropped_total", "reason" => "bridge_disconnected").increment(1);
        return;
    }
    let (key, value) = NOTIFICATION_PROPERTY;
    let properties = PublishProperties { user_properties: vec![(key.into(), value.into())], ..Default::default() };
    let sent = client.try_publish_with_properties(topic.as_str(), QoS::AtLeastOnce, false, payload, properties);
    if sent.is_err() {
        metrics::counter!("thingbase_mqtt_notifications_dropped_total", "reason" => "bridge_queue_full").increment(1);
    } else {
        metrics::counter!("thingbase_mqtt_bridge_notifications_total").increment(1);
    }
}

/// Handles one publish from the external broker; resolves when it may be acknowledged.
fn receive(app: &App, caller: &Caller, publish: Publish, generation: u64) -> Acknowledgement {
    let is_notification = publish
        .properties
        .as_ref()
        .is_some_and(|p| p.user_properties.iter().any(|(k, v)| (k.as_str(), v.as_str()) == NOTIFICATION_PROPERTY));
    if is_notification {
        return Box::pin(std::future::ready((publish, generation)));
    }
    metrics::counter!("thingbase_mqtt_bridge_received_total").increment(1);
    let Ok(topic) = std::str::from_utf8(&publish.topic) else {
        return refuse(publish, generation, "the topic is not UTF-8");
    };
    let op = match create_request(topic, &publish.payload) {
        // The shared subscription covers v1.1/# only; nothing else arrives.
        None => return Box::pin(std::future::ready((publish, generation))),
        Some(Err(error)) => return refuse(publish, generation, &error.message),
        Some(Ok(op)) => op,
    };
    let (app, caller) = (app.clone(), caller.clone());
    Box::pin(async move {
        if let Err(error) = app.write(&caller, op).await {
            let error = publish_error(error);
            metrics::counter!("thingbase_mqtt_bridge_refused_total").increment(1);
            tracing::info!(topic = %String::from_utf8_lossy(&publish.topic), reason = %error.message, "mqtt bridge: publish refused");
        }
        (publish, generation)
    })
}

fn refuse(publish: Publish, generation: u64, reason: &str) -> Acknowledgement {
    metrics::counter!("thingbase_mqtt_bridge_refused_total").increment(1);
    tracing::info!(topic = %String::from_utf8_lossy(&publish.topic), reason, "mqtt bridge: publish refused");
    Box::pin(std::future::ready((publish, generation)))
}
