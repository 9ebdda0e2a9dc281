//! A general MQTT 3.1.1 and 5.0 broker core, with hooks for authentication, authorization and
//! publish interception. It knows nothing of SensorThings and must not depend on `app`, `store`
//! or any other Thingbase crate; `mqtt-api` builds the SensorThings MQTT extension on top.
//!
//! # Protocol
//!
//! The wire protocol is `mqtt-protocol-core`'s sans-IO connection in the server role: it parses
//! and validates packets (checking the maximum packet size from the fixed header, before the
//! body is allocated), tracks packet ids, enforces the receive maximum we announce to v5
//! clients, recognises resent QoS 2 publishes, answers PINGREQ and reports the keep-alive
//! deadline (1.5 × the client's keep-alive) as a timer request. We own
//! the socket, the timers and everything a broker decides: sessions, routing, retained
//! messages, wills and limits. It was chosen over a codec of our own because it covers both
//! protocol versions, the v5 properties and the packet-id bookkeeping, and was shown to take
//! ~255k QoS 1 publishes/s from rumqttc on one connection; its automatic PUBACK is turned off
//! so that intercepted publishes are acknowledged only when the application says so. One
//! input it panicked on (a repeated QoS 2 publish with packet id 0) is refused before it gets
//! there; the `mqtt_packet` fuzz target exists to find more.
//!
//! # Tasks
//!
//! [`Broker::serve`] accepts connections and spawns one task per connection
//! ([`Broker::serve_connection`] runs one on any byte stream, for TLS and WebSocket later). A
//! connection task owns its socket and protocol state and waits on: bytes from the client, its
//! session's delivery channel, acknowledgements of intercepted publishes (in order), the
//! keep-alive deadline, a takeover notice and shutdown. Shared state (sessions, subscription
//! tree, retained messages) sits behind one mutex that is never held across an `.await`;
//! routing a message pushes it into each subscriber's bounded channel (or offline queue).
//!
//! # Guarantees and limits
//!
//! - QoS 0 and 1 in both directions. A QoS 2 publish from a client is accepted (PUBREC after
//!   routing, PUBCOMP on PUBREL) and delivered at QoS 1 at most. A QoS 2 publish resent on the
//!   same connection before its PUBREL is not routed again; one resent after a reconnect is
//!   (the QoS 2 state is not part of the session).
//! - Sessions live in memory only. A persistent session (v3.1.1 `clean session = 0`, v5
//!   Session Expiry > 0) keeps its subscriptions and queues QoS 1 messages while offline, up to
//!   [`BrokerConfig::max_queued_messages`]; unacknowledged messages are resent with DUP on
//!   reconnect (with new packet ids).
//! - A full queue drops the new message (counted in `mqtt_messages_dropped_total` with reason
//!   `queue_full`) rather than disconnecting: a slow subscriber loses messages, not its session.
//! - A will is published when the connection ends without a DISCONNECT (or with v5's
//!   "disconnect with will"), including on takeover, but not when the server shuts down.
//! - Not offered: shared subscriptions, topic aliases, subscription identifiers, enhanced
//!   authentication (AUTH), will delay, message expiry, request/response information.

mod connection;
mod hooks;
mod metrics;
mod state;
mod topic;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use hooks::{
    AllowAll, AuthenticateFuture, ConnectInfo, Hooks, InboundPublish, ProtocolVersion, PublishDecision, PublishError,
    PublishFuture, PublishRefusal, RefuseReason, SubscribedFuture, TransportInfo,
};
pub use topic::{TopicError, TopicFilter, TopicName};

use state::{Message, State};

/// How long [`Broker::serve`] waits for connections to say goodbye at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// MQTT's quality of service levels, ordered from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

/// The broker's limits. Exceeding one closes the connection (or refuses it) with the matching
/// v5 reason code and a log line.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The largest packet a client may send, in bytes including the fixed header; announced to
    /// v5 clients in CONNACK. Larger packets are refused before their body is read.
    pub max_packet_size: u32,
    /// How many QoS 1 publishes may be unacknowledged in each direction: announced to v5
    /// clients as our Receive Maximum (a client sending more is disconnected; a v3.1.1 client
    /// is simply not read from until acknowledgements catch up), and the most we send a client
    /// before its PUBACKs (lower if the client's own Receive Maximum is lower).
    pub max_inflight: u16,
    /// How many messages a session holds for its client: while it is offline, and while it is
    /// online but behind its inflight window. Further messages are dropped and counted.
    pub max_queued_messages: usize,
    /// Open connections (counted from accept); one more is refused with "server busy".
    pub max_connections: usize,
    /// The longest a persistent session outlives its connection (v5 clients may ask for less;
    /// v3.1.1 persistent sessions get exactly this).
    pub max_session_expiry: Duration,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 256 * 1024,
            max_inflight: 64,
            max_queued_messages: 1000,
            max_connections: 10_000,
            max_session_expiry: Duration::from_secs(24 * 60 * 60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// An MQTT broker. Cheap to clone; clones share sessions, subscriptions and retained messages.
pub struct Broker<H: Hooks = AllowAll> {
    shared: Arc<Shared<H>>,
}

impl<H: Hooks> Clone for Broker<H> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<H: Hooks> std::fmt::Debug for Broker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

pub(crate) struct Shared<H: Hooks> {
    config: BrokerConfig,
    hooks: H,
    state: Mutex<State>,
    connections: AtomicUsize,
    next_connection_id: AtomicU64,
    /// Set to true once to make every connection say goodbye.
    shutdown: watch::Sender<bool>,
}

impl<H: Hooks> Shared<H> {
    /// The state, even if a task panicked while holding it: every critical section leaves the
    /// state consistent between statements that can panic, so a poisoned lock is still usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Broker<AllowAll> {
    /// A broker that lets everyone do everything (tests, loopback).
    pub fn new(config: BrokerConfig) -> Self {
        Self::with_hooks(config, AllowAll)
    }
}

impl<H: Hooks> Broker<H> {
    pub fn with_hooks(config: BrokerConfig, hooks: H) -> Self {
        let state = Mutex::new(State::new(config.max_queued_messages));
        Self {
            shared: Arc::new(Shared {
                config,
                hooks,
                state,
                connections: AtomicUsize::new(0),
                next_connection_id: AtomicU64::new(1),
                shutdown: watch::Sender::new(false),
            }),
        }
    }

    pub fn hooks(&self) -> &H {
        &self.shared.hooks
    }

    /// Accepts connections until `shutdown` resolves, then tells every connection the server is
    /// shutting down and waits for their tasks to end.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Small packets (PUBACK, PINGRESP) must not wait for Nagle's algorithm.
                        let _ = stream.set_nodelay(true);
                        let broker = self.clone();
                        tasks.spawn(async move { broker.serve_connection(stream, peer).await });
                    }
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "mqtt: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = sweep.tick() => self.shared.state().expire_sessions(Instant::now()),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        self.shared.shutdown.send_replace(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(left = tasks.len(), "mqtt: connections did not close in time; dropping them");
            tasks.shutdown().await;
        }
    }

    /// Runs one client connection on any byte stream until it ends.
    pub async fn serve_connection<S>(&self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        connection::run(self.shared.clone(), stream, peer, TransportInfo::default()).await;
    }

    /// [`Broker::serve_connection`] for a connection whose transport the caller knows (a TLS
    /// stream with the client's verified certificate).
    pub async fn serve_connection_with<S>(&self, stream: S, peer: SocketAddr, transport: TransportInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        connection::run(self.shared.clone(), stream, peer, transport).await;
    }

    /// Publishes a message from the server itself to every matching subscriber, without
    /// consulting `on_publish` (each delivery is still checked by `authorize_delivery`). A
    /// retained message with an empty payload clears the topic's retained message.
    pub fn publish(&self, topic: TopicName, payload: Bytes, qos: QoS, retain: bool) {
        self.route_own(topic, payload, qos, retain, None);
    }

    /// [`Broker::publish`] with a tag for `Hooks::authorize_delivery` (the application's own
    /// label of who may see the message).
    pub fn publish_tagged(&self, topic: TopicName, payload: Bytes, qos: QoS, retain: bool, tag: u64) {
        self.route_own(topic, payload, qos, retain, Some(tag));
    }

    fn route_own(&self, topic: TopicName, payload: Bytes, qos: QoS, retain: bool, tag: Option<u64>) {
        let qos = qos.min(QoS::AtLeastOnce);
        let message = Message { topic, payload: payload_of(&payload), qos, retain, publisher: None, tag };
        self.shared.state().route(Arc::new(message));
    }

    /// Open connections, for tests and health checks.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

fn payload_of(bytes: &[u8]) -> mqtt_protocol_core::mqtt::ArcPayload {
    let data: Arc<[u8]> = Arc::from(bytes);
    let length = data.len();
    mqtt_protocol_core::mqtt::ArcPayload::new(data, 0, length)
}
