//! The seam between the broker and the application: who may connect, subscribe and receive,
//! and what happens to each publish.
//!
//! Every hook is synchronous and called from the connection's task, so it must be quick (a map
//! lookup, not a database query). The one slow path, handling a publish in the application
//! (writing an Observation, say), is asynchronous on purpose: `on_publish` returns
//! [`PublishDecision::Intercept`] with a future, and the broker acknowledges the publish only
//! when that future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;

use crate::{QoS, TopicFilter, TopicName};

/// The MQTT protocol level a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    V3_1_1,
    V5,
}

/// How a connection came in: over TLS or not, and the client's certificate when the TLS
/// layer verified one (the leaf, DER).
#[derive(Debug, Clone, Default)]
pub struct TransportInfo {
    pub tls: bool,
    pub client_certificate: Option<std::sync::Arc<Vec<u8>>>,
}

/// What a client said about itself in CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub protocol: ProtocolVersion,
    pub peer: SocketAddr,
    pub clean_start: bool,
    pub transport: TransportInfo,
}

/// Why a CONNECT is refused. Each maps to a v5 CONNACK reason code and, less precisely, to a
/// v3.1.1 return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    BadUserNameOrPassword,
    NotAuthorized,
    ClientIdentifierNotValid,
    Banned,
    ServerUnavailable,
    /// Too many attempts from this client (v5: Connection rate exceeded; v3.1.1: server
    /// unavailable).
    ConnectionRateExceeded,
}

/// A PUBLISH as a client sent it.
#[derive(Debug, Clone)]
pub struct InboundPublish {
    pub client_id: String,
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// Why the application refused a publish; becomes the v5 PUBACK reason code and reason string.
/// A v3.1.1 client cannot be told: its publish is acknowledged anyway (the spec has no negative
/// PUBACK) and counted as dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason:?}: {message}")]
pub struct PublishError {
    pub reason: PublishRefusal,
    /// Sent to v5 clients as the Reason String, so it must not contain internals.
    pub message: String,
}

impl PublishError {
    pub fn new(reason: PublishRefusal, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// The PUBACK reason codes (MQTT 5.0 §3.4.2.1) an application can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefusal {
    UnspecifiedError,
    ImplementationSpecificError,
    NotAuthorized,
    TopicNameInvalid,
    QuotaExceeded,
    PayloadFormatInvalid,
}

/// The future an intercepted publish is acknowledged after.
pub type PublishFuture = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'static>>;

/// The future of a CONNECT's authentication ([`Hooks::authenticate`]).
pub type AuthenticateFuture<P> = Pin<Box<dyn Future<Output = Result<P, RefuseReason>> + Send + 'static>>;

/// The future of the current state a new subscription receives ([`Hooks::on_subscribed`]).
pub type SubscribedFuture = Pin<Box<dyn Future<Output = Vec<(TopicName, Bytes)>> + Send + 'static>>;

/// What the broker does with a client's PUBLISH.
pub enum PublishDecision {
    /// Deliver it to matching subscribers (and store it if retained), then acknowledge.
    Route,
    /// Hand it to the application: the broker does not deliver it and acknowledges it only when
    /// the future resolves `Ok`. Acknowledgements from one connection keep the publishes' order.
    Intercept(PublishFuture),
    /// Drop it and tell a v5 client why.
    Reject(PublishError),
}

impl std::fmt::Debug for PublishDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Route => f.write_str("Route"),
            Self::Intercept(_) => f.write_str("Intercept(..)"),
            Self::Reject(error) => f.debug_tuple("Reject").field(error).finish(),
        }
    }
}

/// Authentication, authorization and publish handling, implemented by the application.
pub trait Hooks: Send + Sync + 'static {
    /// Whatever identifies an authenticated client to the other hooks (a device URN, a user
    /// with roles). Kept for the lifetime of the connection.
    type Principal: Send + Sync + 'static;

    /// CONNECT: accept with a principal, or refuse with a reason. Asynchronous, since checking
    /// credentials may need a database; the connection reads nothing else meanwhile.
    fn authenticate(&self, connect: &ConnectInfo) -> AuthenticateFuture<Self::Principal>;

    /// SUBSCRIBE, once per filter; a refused filter gets the "not authorized" SUBACK code.
    fn authorize_subscribe(&self, principal: &Self::Principal, filter: &TopicFilter) -> bool;

    /// Every PUBLISH from a client, and a client's will when it is published.
    fn on_publish(&self, principal: &Self::Principal, publish: &InboundPublish) -> PublishDecision;

    /// Every delivery to a subscriber, checked per message because rights can change at any
    /// time. `tag` is what the application attached to a message it published itself
    /// ([`crate::Broker::publish_tagged`]), `None` for client publishes. A refused message is
    /// dropped silently (and counted).
    fn authorize_delivery(&self, principal: &Self::Principal, topic: &TopicName, tag: Option<u64>) -> bool;

    /// The current state of what a granted subscription covers (the newest value of a
    /// sensor, say), sent right after the SUBACK as if it were the topics' retained messages:
    /// with the retain flag, and only when the subscription's Retain Handling asks for retained
    /// messages (so v5 clients can opt out). The future may read a database; the connection
    /// waits for it (up to a few seconds) before it reads the client's next packet, and
    /// messages routed to the subscription meanwhile are sent after it.
    fn on_subscribed(&self, principal: &Self::Principal, filter: &TopicFilter) -> Option<SubscribedFuture> {
        let _ = (principal, filter);
        None
    }
}

/// Lets every client connect, subscribe, publish and receive anything. For tests and for a
/// broker on loopback until access control exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Hooks for AllowAll {
    type Principal = ();

    fn authenticate(&self, _connect: &ConnectInfo) -> AuthenticateFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn authorize_subscribe(&self, _principal: &(), _filter: &TopicFilter) -> bool {
        true
    }

    fn on_publish(&self, _principal: &(), _publish: &InboundPublish) -> PublishDecision {
        PublishDecision::Route
    }

    fn authorize_delivery(&self, _principal: &(), _topic: &TopicName, _tag: Option<u64>) -> bool {
        true
    }
}
