//! The broker's metric names and the few helpers that record them, through the `metrics` facade
//! (the binary installs the Prometheus recorder).

/// Open network connections (gauge).
pub(crate) const CONNECTIONS: &str = "mqtt_connections";
/// Connections accepted since start (counter).
pub(crate) const CONNECTIONS_ACCEPTED: &str = "mqtt_connections_accepted_total";
/// Connections closed by the broker, labelled with `reason` (counter).
pub(crate) const DISCONNECTS: &str = "mqtt_disconnects_total";
/// Sessions known to the broker, connected or not (gauge).
pub(crate) const SESSIONS: &str = "mqtt_sessions";
/// (filter, client) subscription pairs (gauge).
pub(crate) const SUBSCRIPTIONS: &str = "mqtt_subscriptions";
/// Retained messages held (gauge).
pub(crate) const RETAINED: &str = "mqtt_retained_messages";
/// PUBLISH packets received from clients (counter).
pub(crate) const MESSAGES_RECEIVED: &str = "mqtt_messages_received_total";
/// PUBLISH packets sent to clients (counter).
pub(crate) const MESSAGES_SENT: &str = "mqtt_messages_sent_total";
/// Messages not delivered, labelled with `reason` (counter).
pub(crate) const MESSAGES_DROPPED: &str = "mqtt_messages_dropped_total";
/// Messages waiting in session queues, offline or behind the inflight window (gauge).
pub(crate) const QUEUED: &str = "mqtt_queued_messages";

pub(crate) fn dropped(reason: &'static str) {
    metrics::counter!(MESSAGES_DROPPED, "reason" => reason).increment(1);
}

pub(crate) fn disconnected(reason: &'static str) {
    metrics::counter!(DISCONNECTS, "reason" => reason).increment(1);
}
