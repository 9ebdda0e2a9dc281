//! The listener: one UDP socket, one DTLS server session (dimpl) per peer address, and the
//! CoAP requests inside them.
//!
//! Everything about the sessions happens on one task, which never waits for anything but the
//! socket, its timers and the answers of the work it spawned: key lookups and creates run as
//! tasks of their own and report back through a channel. dimpl is sans-IO: every call is
//! preceded by `handle_timeout(now)` (it must be, before a session's first `handle_packet`),
//! its output is drained until it names its next timeout, and every error it returns ends
//! that session alone.
//!
//! A session is opened only by a datagram that starts with a ClientHello; dimpl answers the
//! first with a HelloVerifyRequest cookie, so a spoofed address gets no further than that.
//! Sessions are dropped after `idle_timeout` without a datagram and, beyond `max_sessions`, the
//! one idle the longest makes room. A ClientHello to an established session starts it anew (a
//! device that rebooted keeps its address but not its keys). An address whose handshakes kept
//! failing has its ClientHellos ignored for a while (`pause.rs`).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::{App, AppError, Caller};
use dimpl::{Dtls, Output};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::dtls::{self, KeySlot};
use crate::exchanges::{Exchanges, Seen};
use crate::message::{self, Exchange, Incoming, Reply};
use crate::pause::{Pauses, Source};
use crate::{CoapSettings, Keys};

/// Datagrams are read into a buffer of this size; a longer one is cut and then fails its
/// record's integrity check.
const RECEIVE_BUFFER: usize = 2048;

/// Datagrams of a session kept while its key is looked up.
const QUEUED_WHILE_LOOKING_UP: usize = 8;

/// How long the stopping listener waits for creates in flight, so that each committed one is
/// still answered.
const DRAIN: Duration = Duration::from_secs(10);

/// What the tasks of the listener report back.
enum Event {
    /// The key of a session's PSK identity.
    Key { peer: SocketAddr, generation: u64, identity: String, key: Result<Option<Vec<u8>>, AppError> },
    /// The answer of a create.
    Answered {
        peer: SocketAddr,
        generation: u64,
        exchange: Exchange,
        reply: Reply,
        /// A principal looked up anew.
        caller: Option<Arc<Caller>>,
        /// The device's credentials no longer hold: end the session after the answer.
        close: bool,
    },
}

/// The PSK state of a session.
enum Lookup {
    /// No key looked up yet, or the key is known (`Session::key`).
    Idle,
    /// A key lookup runs; these datagrams wait for it.
    Pending(Vec<Vec<u8>>),
}

struct Session {
    dtls: Dtls,
    /// Tells a session from an earlier one of the same address, for late reports.
    generation: u64,
    last_active: Instant,
    /// dimpl's next timeout.
    timer: Instant,
    lookup: Lookup,
    identity: Option<String>,
    key: Option<Vec<u8>>,
    connected: bool,
    caller: Option<(Arc<Caller>, Instant)>,
    exchanges: Exchanges,
    in_flight: usize,
    /// The message id of the next non-confirmable answer.
    next_message_id: u16,
}

impl Session {
    fn fresh_message_id(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_message_id
    }
}

/// What draining a session's output brought.
#[derive(Default)]
struct Drained {
    messages: Vec<Vec<u8>>,
    timeout: Option<Instant>,
    closed: bool,
}

struct Listener<K> {
    socket: UdpSocket,
    app: App,
    keys: Arc<K>,
    settings: CoapSettings,
    config: Arc<dimpl::Config>,
    slot: Arc<KeySlot>,
    sessions: HashMap<SocketAddr, Session>,
    /// `(timer, peer)` of every session, soonest first.
    timers: BTreeSet<(Instant, SocketAddr)>,
    /// `(last_active, peer)` of every session, idle the longest first.
    idle: BTreeSet<(Instant, SocketAddr)>,
    generations: u64,
    /// Failed handshakes by source, and the pauses they earned.
    pauses: Pauses,
    events: mpsc::UnboundedSender<Event>,
    tasks: tokio::task::JoinSet<()>,
    out: Vec<u8>,
}

/// Serves CoAP over DTLS on `socket` until `stop` resolves; creates in flight then still get
/// their answers (for up to 10 s) and every session is closed with a close_notify.
pub async fn serve<K: Keys>(
    socket: UdpSocket,
    app: App,
    keys: Arc<K>,
    settings: CoapSettings,
    stop: impl Future<Output = ()>,
) {
    let slot = Arc::new(KeySlot::default());
    let config = match dtls::config(Arc::clone(&slot)) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "coap: cannot configure DTLS; the listener does not start");
            return;
        }
    };
    let (events, mut reports) = mpsc::unbounded_channel();
    let pauses = Pauses::new(settings.failures_before_pause, settings.first_pause, settings.longest_pause);
    let mut listener = Listener {
        socket,
        app,
        keys,
        settings,
        config,
        slot,
        sessions: HashMap::new(),
        timers: BTreeSet::new(),
        idle: BTreeSet::new(),
        generations: 0,
        pauses,
        events,
        tasks: tokio::task::JoinSet::new(),
        out: vec![0; 2048],
    };
    let mut buffer = vec![0; RECEIVE_BUFFER];
    let mut stop = std::pin::pin!(stop);
    loop {
        let wake = tokio::time::Instant::from_std(listener.next_wake());
        tokio::select! {
            () = &mut stop => break,
            received = listener.socket.recv_from(&mut buffer) => match received {
                Ok((length, peer)) => listener.datagram(peer, &buffer[..length]),
                Err(error) => tracing::debug!(%error, "coap: cannot receive a datagram"),
            },
            Some(event) = reports.recv() => listener.event(event),
            () = tokio::time::sleep_until(wake) => listener.expire(Instant::now()),
            Some(_) = listener.tasks.join_next(), if !listener.tasks.is_empty() => {}
        }
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    while !listener.tasks.is_empty() {
        tokio::select! {
            Some(event) = reports.recv() => listener.event(event),
            Some(_) = listener.tasks.join_next() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    while let Ok(event) = reports.try_recv() {
        listener.event(event);
    }
    listener.tasks.abort_all();
    let peers: Vec<SocketAddr> = listener.sessions.keys().copied().collect();
    for peer in peers {
        listener.close(peer, Instant::now());
    }
}

impl<K: Keys> Listener<K> {
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let timer = self.timers.first().map(|(at, _)| *at);
        let idle = self.idle.first().map(|(at, _)| *at + self.settings.idle_timeout);
        // Nothing scheduled: look again in a while all the same.
        [timer, idle].into_iter().flatten().min().unwrap_or(now + Duration::from_secs(60)).max(now)
    }

    /// A datagram from `peer`.
    fn datagram(&mut self, peer: SocketAddr, datagram: &[u8]) {
        let now = Instant::now();
        let hello = dtls::is_client_hello(datagram);
        let starts = match self.sessions.get(&peer) {
            None => hello,
            Some(session) => hello && session.connected,
        };
        if starts && self.pauses.paused(Source::of(peer.ip()), now).is_some() {
            metrics::counter!("thingbase_coap_handshakes_paused_total").increment(1);
            tracing::debug!(%peer, "coap: ignoring a handshake from an address paused after failed ones");
            return;
        }
        match self.sessions.get(&peer) {
            None if !hello => return,
            None => self.open(peer, now),
            Some(session) if hello && session.connected => {
                tracing::debug!(%peer, "coap: a new handshake replaces an established session");
                self.remove(peer);
                self.open(peer, now);
            }
            Some(_) => {}
        }
        let Some(session) = self.sessions.get_mut(&peer) else { return };
        self.idle.remove(&(session.last_active, peer));
        session.last_active = now;
        self.idle.insert((now, peer));
        if let Lookup::Pending(queued) = &mut session.lookup {
            if queued.len() < QUEUED_WHILE_LOOKING_UP {
                queued.push(datagram.to_vec());
            }
            return;
        }
        if let Some(identity) = dtls::client_key_exchange_identity(datagram)
            && session.identity.as_deref().map(str::as_bytes) != Some(identity)
        {
            match String::from_utf8(identity.to_vec()) {
                Ok(identity) => {
                    session.lookup = Lookup::Pending(vec![datagram.to_vec()]);
                    let (keys, events, generation) = (Arc::clone(&self.keys), self.events.clone(), session.generation);
                    self.tasks.spawn(async move {
                        let key = keys.psk(&identity).await;
                        let _ = events.send(Event::Key { peer, generation, identity, key });
                    });
                    return;
                }
                // No device has such an identity: the handshake fails at Finished.
                Err(_) => session.key = None,
            }
        }
        self.feed(peer, &[datagram], now);
    }

    /// Opens a session for a new peer, making room if need be.
    fn open(&mut self, peer: SocketAddr, now: Instant) {
        if self.sessions.len() >= self.settings.max_sessions
            && let Some(&(_, oldest)) = self.idle.first()
        {
            tracing::info!(%oldest, "coap: too many DTLS sessions; dropping the one idle the longest");
            self.close(oldest, now);
        }
        let mut dtls = Dtls::new_12_psk(Arc::clone(&self.config), now);
        // dimpl's clock must be set before the first packet.
        if let Err(error) = dtls.handle_timeout(now) {
            tracing::warn!(%peer, %error, "coap: cannot start a DTLS session");
            return;
        }
        self.generations += 1;
        let far = now + Duration::from_secs(3600);
        let session = Session {
            dtls,
            generation: self.generations,
            last_active: now,
            timer: far,
            lookup: Lookup::Idle,
            identity: None,
            key: None,
            connected: false,
            caller: None,
            exchanges: Exchanges::default(),
            in_flight: 0,
            next_message_id: (self.generations as u16).wrapping_mul(7919),
        };
        self.sessions.insert(peer, session);
        self.timers.insert((far, peer));
        self.idle.insert((now, peer));
        metrics::gauge!("thingbase_coap_sessions").set(self.sessions.len() as f64);
    }

    fn remove(&mut self, peer: SocketAddr) -> Option<Session> {
        let session = self.sessions.remove(&peer)?;
        self.timers.remove(&(session.timer, peer));
        self.idle.remove(&(session.last_active, peer));
        metrics::gauge!("thingbase_coap_sessions").set(self.sessions.len() as f64);
        Some(session)
    }

    /// Ends a session with a close_notify (sent only if it was established).
    fn close(&mut self, peer: SocketAddr, now: Instant) {
        let Some(mut session) = self.remove(peer) else { return };
        if session.dtls.handle_timeout(now).and_then(|()| session.dtls.close()).is_ok() {
            drain(&mut session, &mut self.out, &self.socket, peer);
        }
    }

    /// A session failed: dimpl's errors are fatal to the session.
    fn fail(&mut self, peer: SocketAddr, error: &dimpl::Error) {
        if let Some(session) = self.remove(peer) {
            if session.connected {
                tracing::info!(%peer, %error, "coap: DTLS session ended");
            } else {
                metrics::counter!("thingbase_coap_handshakes_failed_total").increment(1);
                let identity = session.identity.as_deref().unwrap_or("");
                tracing::info!(%peer, identity, %error, "coap: DTLS handshake failed");
                if let Some(pause) = self.pauses.failed(Source::of(peer.ip()), Instant::now()) {
                    tracing::warn!(
                        address = %peer.ip(),
                        pause_s = pause.as_secs(),
                        "coap: handshakes from this address are ignored for a while after repeated failures"
                    );
                }
                metrics::gauge!("thingbase_coap_failing_sources").set(self.pauses.sources() as f64);
            }
        }
    }

    /// Hands datagrams to a session's DTLS engine, its key in the slot, and deals with what
    /// comes out.
    fn feed(&mut self, peer: SocketAddr, datagrams: &[&[u8]], now: Instant) {
        let Some(session) = self.sessions.get_mut(&peer) else { return };
        if let (Some(identity), Some(key)) = (&session.identity, &session.key) {
            self.slot.set(identity.as_bytes(), key);
        }
        let result = session
            .dtls
            .handle_timeout(now)
            .and_then(|()| datagrams.iter().try_for_each(|datagram| session.dtls.handle_packet(datagram)));
        self.slot.clear();
        match result {
            Ok(()) => self.pump(peer, now),
            Err(error) => self.fail(peer, &error),
        }
    }

    /// Drains a session's output and answers the CoAP messages in it, until it has nothing
    /// more to say.
    fn pump(&mut self, peer: SocketAddr, now: Instant) {
        loop {
            let Some(session) = self.sessions.get_mut(&peer) else { return };
            let was_connected = session.connected;
            let drained = drain(session, &mut self.out, &self.socket, peer);
            if session.connected && !was_connected {
                metrics::counter!("thingbase_coap_handshakes_total").increment(1);
                self.pauses.succeeded(Source::of(peer.ip()));
                let identity = session.identity.as_deref().unwrap_or("");
                tracing::debug!(%peer, identity, "coap: DTLS session established");
            }
            if let Some(timeout) = drained.timeout
                && timeout != session.timer
            {
                self.timers.remove(&(session.timer, peer));
                session.timer = timeout;
                self.timers.insert((timeout, peer));
            }
            if drained.closed {
                tracing::debug!(%peer, "coap: the device closed its DTLS session");
                self.remove(peer);
                return;
            }
            if drained.messages.is_empty() {
                return;
            }
            for message in drained.messages {
                self.message(peer, &message, now);
            }
        }
    }

    /// One CoAP message of an established session.
    fn message(&mut self, peer: SocketAddr, bytes: &[u8], now: Instant) {
        let Some(session) = self.sessions.get_mut(&peer) else { return };
        match message::decode(bytes) {
            Incoming::Ignore => {}
            Incoming::Answer(reply) => self.send(peer, reply),
            Incoming::Create { exchange, op } => {
                match session.exchanges.seen(exchange.message_id, now) {
                    Some(Seen::Answered(answer)) if exchange.confirmable => {
                        let answer = answer.clone();
                        if let Err(error) = session.dtls.send_application_data(&answer) {
                            self.fail(peer, &error);
                        }
                        return;
                    }
                    Some(_) => return,
                    None => {}
                }
                if session.in_flight >= self.settings.max_in_flight {
                    let busy = exchange.outcome(Err(AppError::Unavailable));
                    self.send(peer, busy);
                    return;
                }
                let Some(identity) = session.identity.clone() else { return };
                session.exchanges.record(exchange.message_id, now, Seen::InFlight);
                session.in_flight += 1;
                let cached = session
                    .caller
                    .as_ref()
                    .filter(|(_, at)| now.duration_since(*at) < self.settings.recheck)
                    .map(|(caller, _)| Arc::clone(caller));
                let key = session.key.clone();
                let generation = session.generation;
                let (app, keys, events) = (self.app.clone(), Arc::clone(&self.keys), self.events.clone());
                self.tasks.spawn(async move {
                    let caller = match cached {
                        Some(caller) => Ok((caller, None)),
                        None => principal(keys.as_ref(), &identity, key.as_deref()).await.map(|caller| {
                            let caller = Arc::new(caller);
                            (Arc::clone(&caller), Some(caller))
                        }),
                    };
                    let (reply, caller, close) = match caller {
                        Ok((caller, fresh)) => (exchange.outcome(app.write(&caller, op).await), fresh, false),
                        Err(error) => {
                            let close = matches!(error, AppError::Unauthenticated(_));
                            (exchange.outcome(Err(error)), None, close)
                        }
                    };
                    let _ = events.send(Event::Answered { peer, generation, exchange, reply, caller, close });
                });
            }
        }
    }

    /// Sends an answer inside a session (its output is drained by the caller).
    fn send(&mut self, peer: SocketAddr, reply: Reply) {
        let Some(session) = self.sessions.get_mut(&peer) else { return };
        let bytes = reply.encode(session.fresh_message_id());
        if bytes.is_empty() {
            return;
        }
        if let Err(error) = session.dtls.send_application_data(&bytes) {
            self.fail(peer, &error);
        }
    }

    fn event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Key { peer, generation, identity, key } => {
                let Some(session) = self.sessions.get_mut(&peer).filter(|s| s.generation == generation) else {
                    return;
                };
                let Lookup::Pending(queued) = std::mem::replace(&mut session.lookup, Lookup::Idle) else { return };
                match key {
                    Ok(key) => {
                        if key.is_none() {
                            tracing::info!(%peer, identity, "coap: no pre-shared key for this PSK identity");
                        }
                        session.identity = Some(identity);
                        session.key = key;
                        let queued: Vec<&[u8]> = queued.iter().map(Vec::as_slice).collect();
                        self.feed(peer, &queued, now);
                    }
                    Err(error) => {
                        tracing::warn!(%peer, identity, %error, "coap: cannot look up a pre-shared key");
                        self.remove(peer);
                    }
                }
            }
            Event::Answered { peer, generation, exchange, reply, caller, close } => {
                let Some(session) = self.sessions.get_mut(&peer).filter(|s| s.generation == generation) else {
                    return;
                };
                session.in_flight = session.in_flight.saturating_sub(1);
                if let Some(caller) = caller {
                    session.caller = Some((caller, now));
                }
                let bytes = reply.encode(session.fresh_message_id());
                let seen = if exchange.confirmable { Seen::Answered(bytes.clone()) } else { Seen::Dropped };
                session.exchanges.answered(exchange.message_id, seen);
                let sent = match session.dtls.handle_timeout(now) {
                    Ok(()) => session.dtls.send_application_data(&bytes).map(|_| ()),
                    Err(error) => Err(error),
                };
                if let Err(error) = sent {
                    self.fail(peer, &error);
                    return;
                }
                self.pump(peer, now);
                if close {
                    self.close(peer, now);
                }
            }
        }
    }

    /// Due timers, then idle sessions.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, peer)) = self.timers.first()
            && at <= now
        {
            self.timers.pop_first();
            let Some(session) = self.sessions.get_mut(&peer) else { continue };
            // Until dimpl names the next one.
            session.timer = now + Duration::from_secs(3600);
            self.timers.insert((session.timer, peer));
            match session.dtls.handle_timeout(now) {
                Ok(()) => self.pump(peer, now),
                Err(error) => self.fail(peer, &error),
            }
        }
        while let Some(&(at, peer)) = self.idle.first()
            && at + self.settings.idle_timeout <= now
        {
            tracing::debug!(%peer, "coap: closing an idle DTLS session");
            self.close(peer, now);
        }
    }
}

/// The caller of a session's device: its key must still be the one it shook hands with.
async fn principal<K: Keys>(keys: &K, identity: &str, key: Option<&[u8]>) -> Result<Caller, AppError> {
    let current = keys.psk(identity).await?;
    if current.is_none() || current.as_deref() != key {
        return Err(AppError::Unauthenticated(
            "the device's pre-shared key changed or was withdrawn; shake hands again with the new one".into(),
        ));
    }
    Ok(Caller::new(keys.principal(identity).await?))
}

/// Takes everything dimpl has to say: packets go out, application data and the next timeout
/// come back.
fn drain(session: &mut Session, out: &mut Vec<u8>, socket: &UdpSocket, peer: SocketAddr) -> Drained {
    let mut drained = Drained::default();
    loop {
        match session.dtls.poll_output(out) {
            Output::Packet(packet) => {
                // UDP may drop anything; DTLS retransmits its flights and CoAP its requests.
                if let Err(error) = socket.try_send_to(packet, peer) {
                    tracing::debug!(%peer, %error, "coap: cannot send a datagram");
                }
            }
            Output::BufferTooSmall { needed } => out.resize(needed, 0),
            Output::Timeout(at) => {
                drained.timeout = Some(at);
                return drained;
            }
            Output::Connected => session.connected = true,
            Output::ApplicationData(data) => drained.messages.push(data.to_vec()),
            Output::CloseNotify => drained.closed = true,
            // Certificates and keying material belong to other modes of DTLS.
            _ => {}
        }
    }
}
