//! One client connection: a task that owns the byte stream and the protocol state, and turns
//! packets into broker actions (connect, publish, subscribe) and deliveries into packets.
//!
//! The task waits on one thing at a time through `select!`, then handles it with `&mut self`:
//! bytes from the client, a delivery from its session's channel, the next acknowledgement of an
//! intercepted publish, the keep-alive deadline, a takeover notice, shutdown, or (before
//! CONNECT) the connect deadline. After each, waiting deliveries are sent as far as the inflight
//! window allows, and the output buffer is written out.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use mqtt::common::Cursor;
use mqtt::connection::{ConnectionOptions, Event, TimerKind};
use mqtt::packet::{GenericPacketTrait, Packet, Property, Qos, RetainHandling, SubEntry, v3_1_1, v5_0};
use mqtt::result_code::{
    ConnectReasonCode, ConnectReturnCode, DisconnectReasonCode, MqttError, PubackReasonCode, PubrecReasonCode,
    SubackReasonCode, SubackReturnCode, UnsubackReasonCode,
};
use mqtt_protocol_core::mqtt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::hooks::{
    ConnectInfo, Hooks, InboundPublish, ProtocolVersion, PublishDecision, PublishError, RefuseReason, TransportInfo,
};
use crate::metrics;
use crate::state::{ClientId, Delivery, Link, Message, MessageQueue, SubscriptionOptions};
use crate::{PublishRefusal, QoS, Shared, TopicFilter, TopicName};

/// How long a taking-over connection waits for the old one to hand its session back.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many more deliveries one wake-up takes from the session channel before writing.
const DELIVERY_BATCH: usize = 256;

/// How many bytes one read takes from the socket of a busy connection.
const READ_CHUNK: usize = 8 * 1024;

/// The read buffer of a quiet connection (CONNECT, PINGREQ, the odd small publish): idle
/// connections are most of them, and each would otherwise hold a [`READ_CHUNK`]. A read that
/// fills it grows the buffer; a small read shrinks it again.
const SMALL_READ: usize = 512;

/// How long a new subscription waits for the application's current state of it.
const CURRENT_STATE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn run<H, S>(shared: Arc<Shared<H>>, stream: S, peer: SocketAddr, transport: TransportInfo)
where
    H: Hooks,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let open = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let _count = ConnectionCount(shared.clone());
    ::metrics::gauge!(metrics::CONNECTIONS).increment(1.0);
    ::metrics::counter!(metrics::CONNECTIONS_ACCEPTED).increment(1);
    let busy = open > shared.config.max_connections;
    let connection = ClientConnection::new(shared, stream, peer, transport, busy);
    connection.run().await;
}

/// Keeps the open-connection count right however the task ends.
struct ConnectionCount<H: Hooks>(Arc<Shared<H>>);

impl<H: Hooks> Drop for ConnectionCount<H> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        ::metrics::gauge!(metrics::CONNECTIONS).decrement(1.0);
    }
}

/// Why a connection ends: a metric label, and whether it is worth a log line at info level.
#[derive(Debug, Clone, Copy)]
struct Close {
    reason: &'static str,
    notable: bool,
}

impl Close {
    const fn normal(reason: &'static str) -> Self {
        Self { reason, notable: false }
    }

    const fn notable(reason: &'static str) -> Self {
        Self { reason, notable: true }
    }

    fn from_error(error: MqttError) -> Self {
        match error {
            MqttError::PacketTooLarge => Self::notable("packet_too_large"),
            MqttError::ReceiveMaximumExceeded => Self::notable("receive_maximum_exceeded"),
            MqttError::KeepAliveTimeout => Self::notable("keep_alive_timeout"),
            MqttError::UnsupportedProtocolVersion => Self::notable("unsupported_protocol_version"),
            MqttError::MalformedPacket => Self::notable("malformed_packet"),
            _ => Self::notable("protocol_error"),
        }
    }
}

/// The acknowledgement an intercepted (or routed, behind intercepted ones) publish is waiting for.
struct Acknowledgement {
    /// `None` for QoS 0, which is acknowledged to nobody but still waited for, in order.
    packet_id: Option<u16>,
    qos: QoS,
    result: Result<(), PublishError>,
}

type AcknowledgementFuture = Pin<Box<dyn Future<Output = Acknowledgement> + Send>>;

/// A client's will, published if the connection ends without a normal DISCONNECT.
struct Will {
    topic: TopicName,
    payload: Bytes,
    qos: QoS,
    retain: bool,
}

/// What the connection knows once CONNECT is accepted.
struct Session<P> {
    client_id: ClientId,
    principal: P,
    will: Option<Will>,
    /// Deliveries waiting for room in the inflight window.
    pending: MessageQueue,
    /// QoS 1 deliveries sent and not yet acknowledged, oldest first.
    inflight: VecDeque<(u16, Delivery)>,
    /// The most QoS 1 deliveries in flight: ours and the client's receive maximum.
    send_limit: usize,
    /// Dropped when the task ends, which tells a taking-over connection the session is free.
    _finished: oneshot::Sender<()>,
}

/// The fields of CONNECT that matter to the broker, from either protocol version.
struct ConnectRequest {
    info: ConnectInfo,
    keep_will: Option<Will>,
    invalid_will: bool,
    session_expiry: Duration,
    /// The client asked for longer than the broker allows (v5 is told the real value).
    session_expiry_capped: bool,
    client_receive_maximum: u16,
}

enum Input {
    Read(std::io::Result<usize>),
    Delivery(Option<Delivery>),
    Acknowledgement(Acknowledgement),
    KeepAliveExpired,
    Kicked,
    Shutdown,
    ConnectTimeout,
}

struct ClientConnection<H: Hooks, S> {
    shared: Arc<Shared<H>>,
    stream: S,
    peer: SocketAddr,
    transport: TransportInfo,
    connection_id: u64,
    protocol: mqtt::Connection<mqtt::role::Server>,
    version: ProtocolVersion,
    /// The connection limit was already reached when this one was accepted.
    busy: bool,
    /// The read buffer; `input_start..input_end` is read but not yet handled (it waits while
    /// the window is full). A read replaces it only once it is all handled.
    input: Vec<u8>,
    input_start: usize,
    input_end: usize,
    /// The length of the last read, which sizes the next one.
    last_read: usize,
    /// Bytes to write, gathered while handling one input.
    output: Vec<u8>,
    /// 1.5 × the client's keep-alive, as the protocol computed it.
    keep_alive_timeout: Option<Duration>,
    keep_alive_deadline: Option<Instant>,
    connect_deadline: Option<Instant>,
    /// Set once CONNECT is accepted.
    session: Option<Session<H::Principal>>,
    deliveries: Option<mpsc::Receiver<Delivery>>,
    acknowledgements: FuturesOrdered<AcknowledgementFuture>,
    kick: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
}

impl<H: Hooks, S: AsyncRead + AsyncWrite + Unpin + Send> ClientConnection<H, S> {
    fn new(shared: Arc<Shared<H>>, stream: S, peer: SocketAddr, transport: TransportInfo, busy: bool) -> Self {
        // The receive maximum is not set here: the protocol would enforce it on v3.1.1 clients
        // too, who are never told it. It goes into the v5 CONNACK instead, which the protocol
        // then enforces for that connection.
        let options = ConnectionOptions::new().maximum_packet_size_recv(shared.config.max_packet_size);
        let mut protocol = mqtt::Connection::<mqtt::role::Server>::with_options(mqtt::Version::Undetermined, options);
        // We acknowledge publishes ourselves: intercepted ones only when the application is done.
        protocol.set_auto_pub_response(false);
        protocol.set_auto_ping_response(true);
        let connection_id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        // A configured timeout too large to add to the clock means no timeout at all.
        let connect_deadline = Instant::now().checked_add(shared.config.connect_timeout);
        let shutdown = shared.shutdown.subscribe();
        Self {
            shared,
            stream,
            peer,
            transport,
            connection_id,
            protocol,
            version: ProtocolVersion::V3_1_1,
            busy,
            input: vec![0; SMALL_READ],
            input_start: 0,
            input_end: 0,
            last_read: 0,
            output: Vec::new(),
            keep_alive_timeout: None,
            keep_alive_deadline: None,
            connect_deadline,
            session: None,
            deliveries: None,
            acknowledgements: FuturesOrdered::new(),
            kick: Arc::new(Notify::new()),
            shutdown,
        }
    }

    async fn run(mut self) {
        let close = loop {
            if let Err(close) = self.step().await {
                break close;
            }
            self.send_pending();
            if self.flush().await.is_err() {
                break Close::notable("write_failed");
            }
        };
        self.finish(close).await;
    }

    /// How many publishes may wait for the application before we stop reading. A v3.1.1 client
    /// (which has no window) is then slowed down by TCP. A v5 client was told our Receive
    /// Maximum: we read one packet more, so that a client ignoring it is disconnected with
    /// "receive maximum exceeded" by the protocol instead of stalling.
    fn read_limit(&self) -> usize {
        let window = usize::from(self.shared.config.max_inflight.max(1));
        if self.version == ProtocolVersion::V5 { window + 1 } else { window }
    }

    async fn step(&mut self) -> Result<(), Close> {
        let can_read = self.acknowledgements.len() < self.read_limit();
        if can_read && self.input_start < self.input_end {
            // Bytes read earlier and left while the window was full.
            return self.receive().await;
        }
        if can_read {
            self.size_read_buffer();
        }
        let connected = self.session.is_some();
        let input = tokio::select! {
            read = self.stream.read(&mut self.input), if can_read => Input::Read(read),
            delivery = next_delivery(&mut self.deliveries) => Input::Delivery(delivery),
            Some(acknowledgement) = self.acknowledgements.next() => Input::Acknowledgement(acknowledgement),
            () = sleep_until(self.keep_alive_deadline) => Input::KeepAliveExpired,
            () = self.kick.notified() => Input::Kicked,
            _ = self.shutdown.changed() => Input::Shutdown,
            () = sleep_until(self.connect_deadline), if !connected => Input::ConnectTimeout,
        };
        match input {
            Input::Read(Ok(0)) => Err(Close::normal("connection_lost")),
            Input::Read(Ok(length)) => {
                self.input_start = 0;
                self.input_end = length;
                self.last_read = length;
                self.receive().await
            }
            Input::Read(Err(_)) => Err(Close::normal("connection_lost")),
            Input::Delivery(Some(delivery)) => {
                self.enqueue(delivery);
                // Take what else is waiting, so that a burst goes out in one write.
                for _ in 0..DELIVERY_BATCH {
                    let Some(delivery) = self.deliveries.as_mut().and_then(|r| r.try_recv().ok()) else { break };
                    self.enqueue(delivery);
                }
                Ok(())
            }
            // Only our own state holds the sender, and it is replaced only after a kick.
            Input::Delivery(None) => Err(Close::normal("session_taken_over")),
            Input::Acknowledgement(acknowledgement) => {
                self.acknowledge(acknowledgement);
                Ok(())
            }
            Input::KeepAliveExpired if !can_read || self.input_start < self.input_end => {
                // We stopped reading, not the client: its PINGREQs may be waiting unread.
                self.keep_alive_deadline = self.keep_alive_timeout.and_then(|t| Instant::now().checked_add(t));
                Ok(())
            }
            Input::KeepAliveExpired => {
                self.keep_alive_deadline = None;
                let events = self.protocol.notify_timer_fired(TimerKind::PingreqRecv);
                let _ = self.apply(events);
                Err(Close::notable("keep_alive_timeout"))
            }
            Input::Kicked => {
                self.disconnect(DisconnectReasonCode::SessionTakenOver);
                Err(Close::notable("session_taken_over"))
            }
            Input::Shutdown => {
                // A will is for the client's unexpected death, not for the server going away.
                if let Some(session) = &mut self.session {
                    session.will = None;
                }
                self.disconnect(DisconnectReasonCode::ServerShuttingDown);
                Err(Close::normal("server_shutting_down"))
            }
            Input::ConnectTimeout => Err(Close::notable("connect_timeout")),
        }
    }

    /// Grows the read buffer after a read that filled it, shrinks it after a small one. Only
    /// called when everything read has been handled, so no bytes are lost.
    fn size_read_buffer(&mut self) {
        let wanted = if self.last_read >= self.input.len() {
            READ_CHUNK
        } else if self.last_read < SMALL_READ {
            SMALL_READ
        } else {
            self.input.len()
        };
        if wanted != self.input.len() {
            self.input = vec![0; wanted];
        }
    }

    /// Feeds the bytes read to the protocol one packet at a time, handling each packet before
    /// the next is parsed (a client may send CONNECT and PUBLISH in one segment), until they
    /// are used up or the application holds as many publishes as we allow.
    async fn receive(&mut self) -> Result<(), Close> {
        let input = std::mem::take(&mut self.input);
        let result = self.receive_from(&input).await;
        self.input = input;
        result
    }

    async fn receive_from(&mut self, input: &[u8]) -> Result<(), Close> {
        while self.input_start < self.input_end && self.acknowledgements.len() < self.read_limit() {
            let mut cursor = Cursor::new(input.get(self.input_start..self.input_end).unwrap_or_default());
            let events = self.protocol.recv(&mut cursor);
            let consumed = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            self.input_start = self.input_start.saturating_add(consumed.max(1));
            let (packets, close) = self.apply(events);
            for packet in packets {
                self.dispatch(packet).await?;
            }
            if let Some(close) = close {
                return Err(close);
            }
        }
        Ok(())
    }

    /// Carries out what the protocol asks for and returns the packets it received, and why the
    /// connection must close if it must (after those packets are handled).
    fn apply(&mut self, events: Vec<Event>) -> (Vec<Packet>, Option<Close>) {
        let mut packets = Vec::new();
        let mut close = None;
        let mut error = None;
        for event in events {
            match event {
                Event::RequestSendPacket { packet, .. } => self.output.extend(packet.to_continuous_buffer()),
                Event::NotifyPacketReceived(packet) => packets.push(packet),
                Event::NotifyPacketIdReleased(packet_id) => {
                    if let Some(session) = &mut self.session {
                        session.inflight.retain(|(id, _)| *id != packet_id);
                    }
                }
                Event::RequestTimerReset { kind: TimerKind::PingreqRecv, duration_ms } => {
                    let timeout = Duration::from_millis(duration_ms);
                    self.keep_alive_timeout = Some(timeout);
                    self.keep_alive_deadline = Instant::now().checked_add(timeout);
                }
                Event::RequestTimerCancel(TimerKind::PingreqRecv) => self.keep_alive_deadline = None,
                Event::RequestTimerReset { .. } | Event::RequestTimerCancel(_) => {}
                Event::NotifyError(mqtt_error) => error = Some(mqtt_error),
                Event::RequestClose => close = Some(Close::normal("closed")),
            }
        }
        // Before CONNECT is accepted, any error ends the connection (the protocol does not ask
        // to close for every one of them, e.g. an unknown protocol level).
        let fatal = close.is_some() || self.session.is_none();
        match (error, fatal) {
            (Some(error), true) => (packets, Some(Close::from_error(error))),
            (Some(error), false) => {
                tracing::debug!(peer = %self.peer, %error, "mqtt: packet not sent");
                (packets, None)
            }
            (None, _) => (packets, close),
        }
    }

    fn send(&mut self, packet: Packet) {
        let events = self.protocol.send(packet);
        // Sending never asks to close; a refused packet is reported and skipped.
        let _ = self.apply(events);
    }

    fn disconnect(&mut self, reason: DisconnectReasonCode) {
        // An explicit empty property list: rumqttc 0.25 cannot read a DISCONNECT that ends after
        // the reason code, although the spec allows it (MQTT 5.0 §3.14.2.2.1).
        if self.version == ProtocolVersion::V5
            && self.session.is_some()
            && let Ok(packet) = v5_0::Disconnect::builder().reason_code(reason).props(Vec::new()).build()
        {
            self.send(packet.into());
        }
    }

    /// Writes the output buffer. A client that stops reading for [`WRITE_TIMEOUT`] is cut off:
    /// the task cannot see anything else (takeover, shutdown) while it waits here.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&self.output)).await;
        self.output.clear();
        result.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    async fn dispatch(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::V3_1_1Connect(connect) => {
                self.version = ProtocolVersion::V3_1_1;
                let request = self.connect_request_v3(&connect);
                self.connect(request).await
            }
            Packet::V5_0Connect(connect) => {
                self.version = ProtocolVersion::V5;
                let request = self.connect_request_v5(&connect);
                self.connect(request).await
            }
            Packet::V3_1_1Publish(publish) => self.publish(
                publish.topic_name(),
                publish.payload(),
                publish.qos(),
                publish.retain(),
                publish.packet_id(),
            ),
            Packet::V5_0Publish(publish) => self.publish(
                publish.topic_name(),
                publish.payload(),
                publish.qos(),
                publish.retain(),
                publish.packet_id(),
            ),
            Packet::V3_1_1Pubrel(pubrel) => {
                if let Ok(pubcomp) = v3_1_1::Pubcomp::builder().packet_id(pubrel.packet_id()).build() {
                    self.send(pubcomp.into());
                }
                Ok(())
            }
            Packet::V5_0Pubrel(pubrel) => {
                if let Ok(pubcomp) = v5_0::Pubcomp::builder().packet_id(pubrel.packet_id()).build() {
                    self.send(pubcomp.into());
                }
                Ok(())
            }
            // Packet id 0 is invalid (§2.2.1), and no SUBACK or UNSUBACK could carry it.
            Packet::V3_1_1Subscribe(subscribe) if subscribe.packet_id() == 0 => Err(self.protocol_error()),
            Packet::V5_0Subscribe(subscribe) if subscribe.packet_id() == 0 => Err(self.protocol_error()),
            Packet::V3_1_1Unsubscribe(unsubscribe) if unsubscribe.packet_id() == 0 => Err(self.protocol_error()),
            Packet::V5_0Unsubscribe(unsubscribe) if unsubscribe.packet_id() == 0 => Err(self.protocol_error()),
            Packet::V3_1_1Subscribe(subscribe) => {
                self.subscribe(subscribe.packet_id(), subscribe.entries()).await;
                Ok(())
            }
            Packet::V5_0Subscribe(subscribe) => {
                self.subscribe(subscribe.packet_id(), subscribe.entries()).await;
                Ok(())
            }
            Packet::V3_1_1Unsubscribe(unsubscribe) => {
                let filters: Vec<&str> = unsubscribe.entries().iter().map(|f| f.as_str()).collect();
                self.unsubscribe(unsubscribe.packet_id(), &filters);
                Ok(())
            }
            Packet::V5_0Unsubscribe(unsubscribe) => {
                let filters: Vec<&str> = unsubscribe.entries().iter().map(|f| f.as_str()).collect();
                self.unsubscribe(unsubscribe.packet_id(), &filters);
                Ok(())
            }
            Packet::V3_1_1Disconnect(_) => {
                self.drop_will();
                Err(Close::normal("client_disconnected"))
            }
            Packet::V5_0Disconnect(disconnect) => {
                if disconnect.reason_code() != Some(DisconnectReasonCode::DisconnectWithWillMessage) {
                    self.drop_will();
                }
                Err(Close::normal("client_disconnected"))
            }
            // Enhanced authentication is not offered; CONNACK did not accept a method.
            Packet::V5_0Auth(_) => Err(self.protocol_error()),
            // PINGREQ is answered by the protocol; PUBACK arrives as a released packet id; the
            // rest are packets a server never receives, which the protocol already refused.
            _ => Ok(()),
        }
    }

    /// Tells a v5 client it broke the protocol, and why the connection ends.
    fn protocol_error(&mut self) -> Close {
        self.disconnect(DisconnectReasonCode::ProtocolError);
        Close::notable("protocol_error")
    }

    fn drop_will(&mut self) {
        if let Some(session) = &mut self.session {
            session.will = None;
        }
    }

    fn connect_request_v3(&self, connect: &v3_1_1::Connect) -> ConnectRequest {
        let (keep_will, invalid_will) =
            will_of(connect.will_topic(), connect.will_payload(), connect.will_qos(), connect.will_retain());
        let persistent = !connect.clean_session();
        ConnectRequest {
            info: ConnectInfo {
                client_id: connect.client_id().to_owned(),
                username: connect.user_name().map(str::to_owned),
                password: connect.password().map(Bytes::copy_from_slice),
                protocol: ProtocolVersion::V3_1_1,
                peer: self.peer,
                clean_start: connect.clean_session(),
                transport: self.transport.clone(),
            },
            keep_will,
            invalid_will,
            session_expiry: if persistent { self.shared.config.max_session_expiry } else { Duration::ZERO },
            session_expiry_capped: false,
            client_receive_maximum: u16::MAX,
        }
    }

    fn connect_request_v5(&self, connect: &v5_0::Connect) -> ConnectRequest {
        let (keep_will, invalid_will) =
            will_of(connect.will_topic(), connect.will_payload(), connect.will_qos(), connect.will_retain());
        let mut requested_expiry = 0;
        let mut client_receive_maximum = u16::MAX;
        for property in &connect.props {
            match property {
                Property::SessionExpiryInterval(value) => requested_expiry = value.val(),
                Property::ReceiveMaximum(value) => client_receive_maximum = value.val(),
                _ => {}
            }
        }
        // 0xFFFFFFFF means "never expires"; the configured maximum caps it like any other value.
        let requested = Duration::from_secs(u64::from(requested_expiry));
        let maximum = self.shared.config.max_session_expiry;
        ConnectRequest {
            info: ConnectInfo {
                client_id: connect.client_id().to_owned(),
                username: connect.user_name().map(str::to_owned),
                password: connect.password().map(Bytes::copy_from_slice),
                protocol: ProtocolVersion::V5,
                peer: self.peer,
                clean_start: connect.clean_start(),
                transport: self.transport.clone(),
            },
            keep_will,
            invalid_will,
            session_expiry: requested.min(maximum),
            session_expiry_capped: requested > maximum,
            client_receive_maximum,
        }
    }

    async fn connect(&mut self, mut request: ConnectRequest) -> Result<(), Close> {
        if self.session.is_some() {
            // A second CONNECT is a protocol violation (the protocol refuses it too).
            return Err(Close::notable("protocol_error"));
        }
        if self.busy {
            tracing::info!(peer = %self.peer, limit = self.shared.config.max_connections, "mqtt: refusing a connection: too many connections");
            return self.refuse(RefuseReason::ServerUnavailable, ConnectReasonCode::ServerBusy, "server_busy");
        }
        if request.invalid_will {
            return self.refuse(RefuseReason::ServerUnavailable, ConnectReasonCode::TopicNameInvalid, "invalid_will");
        }
        let mut assigned_client_id = None;
        if request.info.client_id.is_empty() {
            // v3.1.1 allows an empty client id only for a clean session (§3.1.3-8).
            if self.version == ProtocolVersion::V3_1_1 && !request.info.clean_start {
                return self.refuse(
                    RefuseReason::ClientIdentifierNotValid,
                    ConnectReasonCode::ClientIdentifierNotValid,
                    "client_id_not_valid",
                );
            }
            let generated = format!("thingbase-{}", self.connection_id);
            request.info.client_id.clone_from(&generated);
            assigned_client_id = Some(generated);
        }
        let principal = match self.shared.hooks.authenticate(&request.info).await {
            Ok(principal) => principal,
            Err(reason) => {
                tracing::info!(peer = %self.peer, client_id = %request.info.client_id, ?reason, "mqtt: refusing a connection");
                return self.refuse(reason, connect_reason_code(reason), "not_authorized");
            }
        };
        let client_id: ClientId = request.info.client_id.as_str().into();

        // Take the session over from a connection still attached to it: ask it to leave, and
        // wait until it has put its unacknowledged messages back into the session.
        let finished = self.shared.state().kick(&client_id);
        if let Some(finished) = finished {
            let _ = tokio::time::timeout(TAKEOVER_TIMEOUT, finished).await;
        }
        let (sender, receiver) = mpsc::channel(self.shared.config.max_queued_messages.max(1));
        let (finished_sender, finished_receiver) = oneshot::channel();
        let link = Link {
            connection_id: self.connection_id,
            sender,
            kick: self.kick.clone(),
            finished: Some(finished_receiver),
        };
        let attached = self.shared.state().attach(&client_id, request.info.clean_start, request.session_expiry, link);
        self.deliveries = Some(receiver);
        let send_limit = usize::from(self.shared.config.max_inflight.min(request.client_receive_maximum).max(1));
        self.session = Some(Session {
            client_id: client_id.clone(),
            principal,
            will: request.keep_will,
            pending: attached.queued,
            inflight: VecDeque::new(),
            send_limit,
            _finished: finished_sender,
        });

        let connack: Packet = match self.version {
            ProtocolVersion::V3_1_1 => v3_1_1::Connack::builder()
                .session_present(attached.session_present)
                .return_code(ConnectReturnCode::Accepted)
                .build()
                .map_err(|_| Close::notable("internal_error"))?
                .into(),
            ProtocolVersion::V5 => {
                let mut properties: Vec<Property> = Vec::new();
                if let Some(assigned) = assigned_client_id
                    && let Ok(property) = mqtt::packet::AssignedClientIdentifier::new(assigned)
                {
                    properties.push(property.into());
                }
                if request.session_expiry_capped {
                    let seconds = u32::try_from(request.session_expiry.as_secs()).unwrap_or(u32::MAX);
                    if let Ok(property) = mqtt::packet::SessionExpiryInterval::new(seconds) {
                        properties.push(property.into());
                    }
                }
                for property in [
                    mqtt::packet::ReceiveMaximum::new(self.shared.config.max_inflight.max(1)).map(Property::from),
                    mqtt::packet::SharedSubscriptionAvailable::new(0).map(Property::from),
                    mqtt::packet::SubscriptionIdentifierAvailable::new(0).map(Property::from),
                ]
                .into_iter()
                .flatten()
                {
                    properties.push(property);
                }
                v5_0::Connack::builder()
                    .session_present(attached.session_present)
                    .reason_code(ConnectReasonCode::Success)
                    .props(properties)
                    .build()
                    .map_err(|_| Close::notable("internal_error"))?
                    .into()
            }
        };
        self.send(connack);
        tracing::debug!(peer = %self.peer, %client_id, session_present = attached.session_present, "mqtt: client connected");
        Ok(())
    }

    fn refuse(&mut self, reason: RefuseReason, code: ConnectReasonCode, label: &'static str) -> Result<(), Close> {
        let connack: Option<Packet> = match self.version {
            ProtocolVersion::V3_1_1 => v3_1_1::Connack::builder()
                .session_present(false)
                .return_code(connect_return_code(reason))
                .build()
                .ok()
                .map(Packet::from),
            ProtocolVersion::V5 => {
                v5_0::Connack::builder().session_present(false).reason_code(code).build().ok().map(Packet::from)
            }
        };
        if let Some(connack) = connack {
            self.send(connack);
        }
        Err(Close::normal(label))
    }

    fn publish(
        &mut self,
        topic: &str,
        payload: &mqtt::ArcPayload,
        qos: Qos,
        retain: bool,
        packet_id: Option<u16>,
    ) -> Result<(), Close> {
        ::metrics::counter!(metrics::MESSAGES_RECEIVED).increment(1);
        let qos = qos_from_wire(qos);
        // Packet id 0 is invalid (§2.2.1). It must also end the connection before a second
        // such QoS 2 publish reaches mqtt-protocol-core 0.7.9, which panics building the
        // PUBREC of a duplicate with id 0 (found by the `mqtt_packet` fuzz target).
        if qos != QoS::AtMostOnce && packet_id.is_none_or(|id| id == 0) {
            return Err(self.protocol_error());
        }
        let Some(session) = &self.session else { return Err(Close::notable("protocol_error")) };
        let Ok(topic) = TopicName::new(topic) else {
            self.disconnect(DisconnectReasonCode::TopicNameInvalid);
            return Err(Close::notable("topic_name_invalid"));
        };
        let inbound = InboundPublish {
            client_id: session.client_id.to_string(),
            topic: topic.clone(),
            payload: Bytes::copy_from_slice(payload.as_slice()),
            qos,
            retain,
        };
        let decision = self.shared.hooks.on_publish(&session.principal, &inbound);
        let outcome: AcknowledgementFuture = match decision {
            PublishDecision::Route => {
                let message = Message {
                    topic,
                    payload: payload.clone(),
                    qos: qos.min(QoS::AtLeastOnce),
                    retain,
                    publisher: Some(session.client_id.clone()),
                    tag: None,
                };
                self.shared.state().route(Arc::new(message));
                let acknowledgement = Acknowledgement { packet_id, qos, result: Ok(()) };
                if self.acknowledgements.is_empty() {
                    self.acknowledge(acknowledgement);
                    return Ok(());
                }
                Box::pin(std::future::ready(acknowledgement))
            }
            PublishDecision::Intercept(future) => {
                Box::pin(async move { Acknowledgement { packet_id, qos, result: future.await } })
            }
            PublishDecision::Reject(error) => {
                let acknowledgement = Acknowledgement { packet_id, qos, result: Err(error) };
                if self.acknowledgements.is_empty() {
                    self.acknowledge(acknowledgement);
                    return Ok(());
                }
                Box::pin(std::future::ready(acknowledgement))
            }
        };
        self.acknowledgements.push_back(outcome);
        Ok(())
    }

    /// Sends the PUBACK (QoS 1) or PUBREC (QoS 2) of a handled publish. A refusal reaches v5
    /// clients as the reason code and string; v3.1.1 clients get a plain acknowledgement, since
    /// they have no negative one, and the message is counted as dropped.
    fn acknowledge(&mut self, acknowledgement: Acknowledgement) {
        if let Err(error) = &acknowledgement.result {
            metrics::dropped("refused");
            let client_id = self.session.as_ref().map(|s| s.client_id.clone());
            tracing::info!(peer = %self.peer, client_id = ?client_id, %error, "mqtt: publish refused");
        }
        let Some(packet_id) = acknowledgement.packet_id else { return };
        let reason_string = match &acknowledgement.result {
            Err(error) if !error.message.is_empty() => {
                mqtt::packet::ReasonString::new(error.message.as_str()).ok().map(|p| vec![Property::from(p)])
            }
            _ => None,
        };
        let refusal = acknowledgement.result.as_ref().err().map(|e| e.reason);
        let packet: Option<Packet> = match (self.version, acknowledgement.qos) {
            (_, QoS::AtMostOnce) => None,
            (ProtocolVersion::V3_1_1, QoS::AtLeastOnce) => {
                v3_1_1::Puback::builder().packet_id(packet_id).build().ok().map(Packet::from)
            }
            (ProtocolVersion::V3_1_1, QoS::ExactlyOnce) => {
                v3_1_1::Pubrec::builder().packet_id(packet_id).build().ok().map(Packet::from)
            }
            (ProtocolVersion::V5, QoS::AtLeastOnce) => {
                let mut builder = v5_0::Puback::builder().packet_id(packet_id);
                if let Some(refusal) = refusal {
                    builder = builder.reason_code(puback_reason_code(refusal));
                }
                if let Some(properties) = reason_string {
                    builder = builder.props(properties);
                }
                builder.build().ok().map(Packet::from)
            }
            (ProtocolVersion::V5, QoS::ExactlyOnce) => {
                let mut builder = v5_0::Pubrec::builder().packet_id(packet_id);
                if let Some(refusal) = refusal {
                    builder = builder.reason_code(pubrec_reason_code(refusal));
                }
                if let Some(properties) = reason_string {
                    builder = builder.props(properties);
                }
                builder.build().ok().map(Packet::from)
            }
        };
        if let Some(packet) = packet {
            self.send(packet);
        }
    }

    async fn subscribe(&mut self, packet_id: u16, entries: &[SubEntry]) {
        let Some(session) = &self.session else { return };
        let mut v3_codes = Vec::with_capacity(entries.len());
        let mut v5_codes = Vec::with_capacity(entries.len());
        let mut initial = Vec::new();
        let mut current_states = Vec::new();
        for entry in entries {
            let options = entry.sub_opts();
            let granted = qos_from_wire(options.qos()).min(QoS::AtLeastOnce);
            let refusal = match TopicFilter::new(entry.topic_filter()) {
                Err(_) => Err(SubackReasonCode::TopicFilterInvalid),
                Ok(filter) if filter.is_shared() => Err(SubackReasonCode::SharedSubscriptionsNotSupported),
                Ok(filter) if !self.shared.hooks.authorize_subscribe(&session.principal, &filter) => {
                    Err(SubackReasonCode::NotAuthorized)
                }
                Ok(filter) => Ok(filter),
            };
            let filter = match refusal {
                Ok(filter) => filter,
                Err(code) => {
                    v3_codes.push(SubackReturnCode::Failure);
                    v5_codes.push(code);
                    continue;
                }
            };
            let subscription = SubscriptionOptions {
                qos: granted,
                // No Local and Retain As Published are v5 options; v3.1.1 entries read false.
                no_local: self.version == ProtocolVersion::V5 && options.nl(),
                retain_as_published: self.version == ProtocolVersion::V5 && options.rap(),
            };
            let (is_new, wanted, retained) = {
                let mut state = self.shared.state();
                let is_new = state.subscribe(&session.client_id, &filter, subscription);
                let wanted = match options.rh() {
                    RetainHandling::SendRetained => true,
                    RetainHandling::SendRetainedIfNotExists => is_new,
                    RetainHandling::DoNotSendRetained => false,
                };
                let retained = if wanted { state.retained_matching(&filter) } else { Vec::new() };
                (is_new, wanted, retained)
            };
            tracing::debug!(client_id = %session.client_id, %filter, is_new, "mqtt: subscribed");
            for message in retained {
                let qos = message.qos.min(granted);
                initial.push(Delivery { message, qos, retain: true, redelivery: false });
            }
            if wanted && let Some(future) = self.shared.hooks.on_subscribed(&session.principal, &filter) {
                current_states.push((future, granted));
            }
            v3_codes.push(match granted {
                QoS::AtMostOnce => SubackReturnCode::SuccessMaximumQos0,
                _ => SubackReturnCode::SuccessMaximumQos1,
            });
            v5_codes.push(match granted {
                QoS::AtMostOnce => SubackReasonCode::GrantedQos0,
                _ => SubackReasonCode::GrantedQos1,
            });
        }
        let suback: Option<Packet> = match self.version {
            ProtocolVersion::V3_1_1 => {
                v3_1_1::Suback::builder().packet_id(packet_id).return_codes(v3_codes).build().ok().map(Packet::from)
            }
            ProtocolVersion::V5 => {
                v5_0::Suback::builder().packet_id(packet_id).reason_codes(v5_codes).build().ok().map(Packet::from)
            }
        };
        if let Some(suback) = suback {
            self.send(suback);
        }
        for (future, qos) in current_states {
            let Ok(messages) = tokio::time::timeout(CURRENT_STATE_TIMEOUT, future).await else {
                metrics::dropped("current_state_timeout");
                continue;
            };
            for (topic, payload) in messages {
                let message = Message {
                    topic,
                    payload: crate::payload_of(&payload),
                    qos,
                    retain: true,
                    publisher: None,
                    tag: None,
                };
                initial.push(Delivery { message: Arc::new(message), qos, retain: true, redelivery: false });
            }
        }
        // Before whatever was routed to the new subscription while the state was read, which
        // still waits in the session's channel: the current state comes first.
        for delivery in initial {
            self.enqueue(delivery);
        }
    }

    fn unsubscribe(&mut self, packet_id: u16, filters: &[&str]) {
        let Some(session) = &self.session else { return };
        let mut codes = Vec::with_capacity(filters.len());
        for text in filters {
            let code = match TopicFilter::new(text) {
                Ok(filter) if self.shared.state().unsubscribe(&session.client_id, &filter) => {
                    UnsubackReasonCode::Success
                }
                Ok(_) => UnsubackReasonCode::NoSubscriptionExisted,
                Err(_) => UnsubackReasonCode::TopicFilterInvalid,
            };
            codes.push(code);
        }
        let unsuback: Option<Packet> = match self.version {
            ProtocolVersion::V3_1_1 => v3_1_1::Unsuback::builder().packet_id(packet_id).build().ok().map(Packet::from),
            ProtocolVersion::V5 => {
                v5_0::Unsuback::builder().packet_id(packet_id).reason_codes(codes).build().ok().map(Packet::from)
            }
        };
        if let Some(unsuback) = unsuback {
            self.send(unsuback);
        }
    }

    fn enqueue(&mut self, delivery: Delivery) {
        let Some(session) = &mut self.session else { return };
        if session.pending.push(delivery).is_err() {
            metrics::dropped("queue_full");
        }
    }

    /// Sends waiting deliveries in order while the inflight window has room for QoS 1 ones.
    fn send_pending(&mut self) {
        loop {
            let Some(session) = &mut self.session else { return };
            let Some(front) = session.pending.front() else { return };
            if front.qos != QoS::AtMostOnce && session.inflight.len() >= session.send_limit {
                return;
            }
            let Some(delivery) = session.pending.pop() else { return };
            self.send_delivery(delivery);
        }
    }

    fn send_delivery(&mut self, delivery: Delivery) {
        let Some(session) = &mut self.session else { return };
        if !self.shared.hooks.authorize_delivery(&session.principal, &delivery.message.topic, delivery.message.tag) {
            metrics::dropped("not_authorized");
            return;
        }
        let qos = delivery.qos.min(QoS::AtLeastOnce);
        let packet_id = if qos == QoS::AtLeastOnce {
            match self.protocol.acquire_packet_id() {
                Ok(id) => Some(id),
                Err(_) => {
                    metrics::dropped("no_packet_id");
                    return;
                }
            }
        } else {
            None
        };
        let message = &delivery.message;
        let dup = delivery.redelivery && packet_id.is_some();
        let packet: Result<Packet, MqttError> = match self.version {
            ProtocolVersion::V3_1_1 => {
                v3_1_1::Publish::builder().topic_name(message.topic.as_str()).and_then(|builder| {
                    let builder =
                        builder.qos(qos_to_wire(qos)).retain(delivery.retain).dup(dup).payload(message.payload.clone());
                    let builder = match packet_id {
                        Some(id) => builder.packet_id(id),
                        None => builder,
                    };
                    builder.build().map(Packet::from)
                })
            }
            ProtocolVersion::V5 => v5_0::Publish::builder().topic_name(message.topic.as_str()).and_then(|builder| {
                let builder =
                    builder.qos(qos_to_wire(qos)).retain(delivery.retain).dup(dup).payload(message.payload.clone());
                let builder = match packet_id {
                    Some(id) => builder.packet_id(id),
                    None => builder,
                };
                builder.build().map(Packet::from)
            }),
        };
        let Ok(packet) = packet else {
            metrics::dropped("unencodable");
            if let Some(id) = packet_id {
                let events = self.protocol.release_packet_id(id);
                let _ = self.apply(events);
            }
            return;
        };
        if let Some(id) = packet_id {
            session.inflight.push_back((id, delivery));
        }
        let events = self.protocol.send(packet);
        let sent = events.iter().any(|e| matches!(e, Event::RequestSendPacket { .. }));
        let _ = self.apply(events);
        if sent {
            ::metrics::counter!(metrics::MESSAGES_SENT).increment(1);
            return;
        }
        // Refused by the protocol, most likely larger than the client's Maximum Packet Size:
        // the spec says to discard it (v5 §3.1.2.25).
        metrics::dropped("too_large_for_client");
        if let Some(id) = packet_id {
            if let Some(session) = &mut self.session {
                session.inflight.retain(|(inflight_id, _)| *inflight_id != id);
            }
            let events = self.protocol.release_packet_id(id);
            let _ = self.apply(events);
        }
    }

    /// Writes what is left to say, publishes the will if the client died unexpectedly, and hands
    /// the session's undelivered messages back to the shared state.
    async fn finish(mut self, close: Close) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        metrics::disconnected(close.reason);
        let Some(mut session) = self.session.take() else {
            if close.notable {
                tracing::info!(peer = %self.peer, reason = close.reason, "mqtt: connection closed before CONNECT completed");
            }
            return;
        };
        if close.notable {
            tracing::info!(peer = %self.peer, client_id = %session.client_id, reason = close.reason, "mqtt: disconnecting client");
        } else {
            tracing::debug!(peer = %self.peer, client_id = %session.client_id, reason = close.reason, "mqtt: client disconnected");
        }
        if let Some(will) = session.will.take() {
            self.publish_will(&session, will);
        }
        let mut leftovers: Vec<Delivery> =
            session.inflight.drain(..).map(|(_, delivery)| Delivery { redelivery: true, ..delivery }).collect();
        while let Some(delivery) = session.pending.pop() {
            leftovers.push(delivery);
        }
        let mut state = self.shared.state();
        // Drained under the lock, so no delivery can slip in between the drain and the detach.
        if let Some(deliveries) = &mut self.deliveries {
            while let Ok(delivery) = deliveries.try_recv() {
                leftovers.push(delivery);
            }
        }
        state.detach(&session.client_id, self.connection_id, leftovers);
    }

    fn publish_will(&self, session: &Session<H::Principal>, will: Will) {
        let inbound = InboundPublish {
            client_id: session.client_id.to_string(),
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
        };
        match self.shared.hooks.on_publish(&session.principal, &inbound) {
            PublishDecision::Route => {
                let message = Message {
                    topic: will.topic,
                    payload: crate::payload_of(&will.payload),
                    qos: will.qos.min(QoS::AtLeastOnce),
                    retain: will.retain,
                    publisher: Some(session.client_id.clone()),
                    tag: None,
                };
                self.shared.state().route(Arc::new(message));
            }
            PublishDecision::Intercept(future) => {
                // Nobody waits for a will's acknowledgement; the application still gets it.
                tokio::spawn(async move {
                    if let Err(error) = future.await {
                        tracing::info!(%error, "mqtt: will refused");
                    }
                });
            }
            PublishDecision::Reject(error) => tracing::info!(%error, "mqtt: will refused"),
        }
    }
}

async fn next_delivery(deliveries: &mut Option<mpsc::Receiver<Delivery>>) -> Option<Delivery> {
    match deliveries {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The will of a CONNECT, and whether it had one the broker cannot accept (invalid topic).
fn will_of(topic: Option<&str>, payload: Option<&[u8]>, qos: Qos, retain: bool) -> (Option<Will>, bool) {
    let Some(topic) = topic else { return (None, false) };
    match TopicName::new(topic) {
        Ok(topic) => (
            Some(Will {
                topic,
                payload: Bytes::copy_from_slice(payload.unwrap_or_default()),
                qos: qos_from_wire(qos),
                retain,
            }),
            false,
        ),
        Err(_) => (None, true),
    }
}

fn qos_from_wire(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos_to_wire(qos: QoS) -> Qos {
    match qos {
        QoS::AtMostOnce => Qos::AtMostOnce,
        QoS::AtLeastOnce => Qos::AtLeastOnce,
        QoS::ExactlyOnce => Qos::ExactlyOnce,
    }
}

fn connect_reason_code(reason: RefuseReason) -> ConnectReasonCode {
    match reason {
        RefuseReason::BadUserNameOrPassword => ConnectReasonCode::BadUserNameOrPassword,
        RefuseReason::NotAuthorized => ConnectReasonCode::NotAuthorized,
        RefuseReason::ClientIdentifierNotValid => ConnectReasonCode::ClientIdentifierNotValid,
        RefuseReason::Banned => ConnectReasonCode::Banned,
        RefuseReason::ServerUnavailable => ConnectReasonCode::ServerUnavailable,
        RefuseReason::ConnectionRateExceeded => ConnectReasonCode::ConnectionRateExceeded,
    }
}

fn connect_return_code(reason: RefuseReason) -> ConnectReturnCode {
    match reason {
        RefuseReason::BadUserNameOrPassword => ConnectReturnCode::BadUserNameOrPassword,
        RefuseReason::NotAuthorized | RefuseReason::Banned => ConnectReturnCode::NotAuthorized,
        RefuseReason::ClientIdentifierNotValid => ConnectReturnCode::IdentifierRejected,
        RefuseReason::ServerUnavailable | RefuseReason::ConnectionRateExceeded => ConnectReturnCode::ServerUnavailable,
    }
}

fn puback_reason_code(refusal: PublishRefusal) -> PubackReasonCode {
    match refusal {
        PublishRefusal::UnspecifiedError => PubackReasonCode::UnspecifiedError,
        PublishRefusal::ImplementationSpecificError => PubackReasonCode::ImplementationSpecificError,
        PublishRefusal::NotAuthorized => PubackReasonCode::NotAuthorized,
        PublishRefusal::TopicNameInvalid => PubackReasonCode::TopicNameInvalid,
        PublishRefusal::QuotaExceeded => PubackReasonCode::QuotaExceeded,
        PublishRefusal::PayloadFormatInvalid => PubackReasonCode::PayloadFormatInvalid,
    }
}

fn pubrec_reason_code(refusal: PublishRefusal) -> PubrecReasonCode {
    match refusal {
        PublishRefusal::UnspecifiedError => PubrecReasonCode::UnspecifiedError,
        PublishRefusal::ImplementationSpecificError => PubrecReasonCode::ImplementationSpecificError,
        PublishRefusal::NotAuthorized => PubrecReasonCode::NotAuthorized,
        PublishRefusal::TopicNameInvalid => PubrecReasonCode::TopicNameInvalid,
        PublishRefusal::QuotaExceeded => PubrecReasonCode::QuotaExceeded,
        PublishRefusal::PayloadFormatInvalid => PubrecReasonCode::PayloadFormatInvalid,
    }
}
