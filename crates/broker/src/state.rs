//! The broker's shared state: sessions, the subscription tree and retained messages, behind one
//! mutex, and the routing of a message to the sessions that subscribed to it.
//!
//! The mutex is a `std` one and is never held across an `.await`: routing only pushes into
//! bounded channels and queues, so each critical section is short. One lock for everything keeps
//! subscribe, route and session takeover trivially consistent; if it ever shows up in profiles,
//! the tree and the sessions can be sharded by client id.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_protocol_core::mqtt::ArcPayload;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::metrics;
use crate::topic::SubscriptionTree;
use crate::{QoS, TopicFilter, TopicName};

pub(crate) type ClientId = Arc<str>;

/// A message on its way through the broker, shared by every subscriber it goes to.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) topic: TopicName,
    pub(crate) payload: ArcPayload,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// The client that published it, for the v5 No Local option; `None` for in-process publishes.
    pub(crate) publisher: Option<ClientId>,
    /// The application's tag of an in-process publish, for `Hooks::authorize_delivery`.
    pub(crate) tag: Option<u64>,
}

/// One message for one subscriber, with the QoS and retain flag it is sent with.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) message: Arc<Message>,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// Sent before on a connection that ended without its PUBACK; resent with DUP set.
    pub(crate) redelivery: bool,
}

/// The options a subscription was made with (v3.1.1 clients only choose the QoS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubscriptionOptions {
    pub(crate) qos: QoS,
    pub(crate) no_local: bool,
    pub(crate) retain_as_published: bool,
}

/// A FIFO of deliveries with a length limit, kept in the queue-depth gauge.
#[derive(Debug)]
pub(crate) struct MessageQueue {
    deliveries: VecDeque<Delivery>,
    limit: usize,
}

impl MessageQueue {
    pub(crate) fn new(limit: usize) -> Self {
        Self { deliveries: VecDeque::new(), limit }
    }

    /// Appends, or gives the delivery back when the queue is full.
    pub(crate) fn push(&mut self, delivery: Delivery) -> Result<(), Delivery> {
        if self.deliveries.len() >= self.limit {
            return Err(delivery);
        }
        self.deliveries.push_back(delivery);
        ::metrics::gauge!(metrics::QUEUED).increment(1.0);
        Ok(())
    }

    pub(crate) fn front(&self) -> Option<&Delivery> {
        self.deliveries.front()
    }

    pub(crate) fn pop(&mut self) -> Option<Delivery> {
        let delivery = self.deliveries.pop_front()?;
        ::metrics::gauge!(metrics::QUEUED).decrement(1.0);
        Some(delivery)
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        if !self.deliveries.is_empty() {
            ::metrics::gauge!(metrics::QUEUED).decrement(self.deliveries.len() as f64);
            ::metrics::counter!(metrics::MESSAGES_DROPPED, "reason" => "session_ended")
                .increment(self.deliveries.len() as u64);
        }
    }
}

/// How the broker reaches the connection currently attached to a session.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) connection_id: u64,
    pub(crate) sender: mpsc::Sender<Delivery>,
    /// Notified when another connection takes the session over.
    pub(crate) kick: Arc<Notify>,
    /// Completes when the connection has detached (its sender side is dropped at the end).
    pub(crate) finished: Option<oneshot::Receiver<()>>,
}

#[derive(Debug)]
struct Session {
    subscriptions: HashMap<TopicFilter, SubscriptionOptions>,
    /// How long the session outlives its connection; zero for a clean session.
    expiry: Duration,
    link: Option<Link>,
    /// QoS 1 messages that arrived while no connection was attached.
    queue: MessageQueue,
    expires_at: Option<Instant>,
}

/// What a connection gets when it attaches to its session.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) session_present: bool,
    pub(crate) queued: MessageQueue,
}

#[derive(Debug)]
pub(crate) struct State {
    sessions: HashMap<ClientId, Session>,
    subscriptions: SubscriptionTree<ClientId, SubscriptionOptions>,
    retained: BTreeMap<TopicName, Arc<Message>>,
    queue_limit: usize,
}

impl State {
    pub(crate) fn new(queue_limit: usize) -> Self {
        Self {
            sessions: HashMap::new(),
            subscriptions: SubscriptionTree::new(),
            retained: BTreeMap::new(),
            queue_limit,
        }
    }

    /// Asks the connection attached to `client_id`'s session, if any, to go away. Returns what to
    /// wait on until it has detached.
    pub(crate) fn kick(&mut self, client_id: &str) -> Option<oneshot::Receiver<()>> {
        let link = self.sessions.get_mut(client_id)?.link.as_mut()?;
        link.kick.notify_one();
        link.finished.take()
    }

    /// Attaches a connection to its session, creating or (on clean start) replacing it. Any
    /// connection still attached is simply replaced: the caller kicked it and waited.
    pub(crate) fn attach(&mut self, client_id: &ClientId, clean_start: bool, expiry: Duration, link: Link) -> Attached {
        if clean_start && let Some(old) = self.sessions.remove(client_id) {
            self.forget_subscriptions(client_id, &old);
        }
        let session_present = self.sessions.contains_key(client_id);
        let session = self.sessions.entry(client_id.clone()).or_insert_with(|| Session {
            subscriptions: HashMap::new(),
            expiry,
            link: None,
            queue: MessageQueue::new(self.queue_limit),
            expires_at: None,
        });
        session.expiry = expiry;
        session.link = Some(link);
        session.expires_at = None;
        let queued = std::mem::replace(&mut session.queue, MessageQueue::new(self.queue_limit));
        self.record_sizes();
        Attached { session_present, queued }
    }

    /// Detaches connection `connection_id` from its session, unless another connection took the
    /// session over already. A session with no expiry ends here; otherwise the messages the
    /// connection still held (unacknowledged first, then waiting) go back to the front of the queue.
    pub(crate) fn detach(&mut self, client_id: &ClientId, connection_id: u64, leftovers: Vec<Delivery>) {
        let Some(session) = self.sessions.get_mut(client_id) else { return };
        if session.link.as_ref().is_none_or(|link| link.connection_id != connection_id) {
            return;
        }
        session.link = None;
        if session.expiry.is_zero() {
            if let Some(old) = self.sessions.remove(client_id) {
                self.forget_subscriptions(client_id, &old);
            }
            self.record_sizes();
            return;
        }
        session.expires_at = Instant::now().checked_add(session.expiry);
        let mut queue = MessageQueue::new(self.queue_limit);
        let mut older = std::mem::replace(&mut session.queue, MessageQueue::new(0));
        for delivery in leftovers.into_iter().filter(|d| d.qos != QoS::AtMostOnce) {
            if queue.push(delivery).is_err() {
                metrics::dropped("queue_full");
            }
        }
        while let Some(delivery) = older.pop() {
            if queue.push(delivery).is_err() {
                metrics::dropped("queue_full");
            }
        }
        session.queue = queue;
    }

    /// Ends the sessions whose expiry passed.
    pub(crate) fn expire_sessions(&mut self, now: Instant) {
        let expired: Vec<ClientId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.link.is_none() && s.expires_at.is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for client_id in expired {
            if let Some(old) = self.sessions.remove(&client_id) {
                self.forget_subscriptions(&client_id, &old);
            }
        }
        self.record_sizes();
    }

    fn forget_subscriptions(&mut self, client_id: &ClientId, session: &Session) {
        for filter in session.subscriptions.keys() {
            self.subscriptions.remove(filter, client_id);
        }
    }

    fn record_sizes(&self) {
        ::metrics::gauge!(metrics::SESSIONS).set(self.sessions.len() as f64);
        ::metrics::gauge!(metrics::SUBSCRIPTIONS).set(self.subscriptions.len() as f64);
        ::metrics::gauge!(metrics::RETAINED).set(self.retained.len() as f64);
    }

    /// Adds or replaces a subscription; true if it is new (for v5 Retain Handling 1).
    pub(crate) fn subscribe(
        &mut self,
        client_id: &ClientId,
        filter: &TopicFilter,
        options: SubscriptionOptions,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(client_id) else { return false };
        session.subscriptions.insert(filter.clone(), options);
        let added = self.subscriptions.insert(filter, client_id.clone(), options);
        self.record_sizes();
        added
    }

    /// Removes a subscription; true if there was one.
    pub(crate) fn unsubscribe(&mut self, client_id: &ClientId, filter: &TopicFilter) -> bool {
        let Some(session) = self.sessions.get_mut(client_id) else { return false };
        session.subscriptions.remove(filter);
        let removed = self.subscriptions.remove(filter, client_id);
        self.record_sizes();
        removed
    }

    /// The retained messages a new subscription to `filter` receives.
    pub(crate) fn retained_matching(&self, filter: &TopicFilter) -> Vec<Arc<Message>> {
        // A linear scan: retained topics are few next to messages routed, and the tree is
        // indexed the other way round (by filter). A topic trie of retained messages is the
        // next step if a deployment keeps very many.
        self.retained.iter().filter(|(topic, _)| filter.matches(topic)).map(|(_, m)| m.clone()).collect()
    }

    /// Stores or clears the retained message of the topic, then delivers the message to every
    /// matching subscription (once per client, with the highest QoS among its matching filters).
    pub(crate) fn route(&mut self, message: Arc<Message>) {
        if message.retain {
            if message.payload.is_empty() {
                self.retained.remove(&message.topic);
            } else {
                self.retained.insert(message.topic.clone(), message.clone());
            }
            self.record_sizes();
        }
        let mut targets: HashMap<&ClientId, SubscriptionOptions> = HashMap::new();
        self.subscriptions.for_each_match(&message.topic, |client_id, options| {
            if options.no_local && message.publisher.as_ref() == Some(client_id) {
                return;
            }
            targets
                .entry(client_id)
                .and_modify(|merged| {
                    merged.qos = merged.qos.max(options.qos);
                    merged.retain_as_published |= options.retain_as_published;
                })
                .or_insert(*options);
        });
        for (client_id, options) in targets {
            let Some(session) = self.sessions.get_mut(client_id) else { continue };
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(options.qos),
                retain: message.retain && options.retain_as_published,
                redelivery: false,
            };
            deliver(session, delivery);
        }
    }
}

fn deliver(session: &mut Session, delivery: Delivery) {
    let delivery = match &session.link {
        Some(link) => match link.sender.try_send(delivery) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::dropped("queue_full");
                return;
            }
            // The connection is ending and has not detached yet: queue as if offline.
            Err(mpsc::error::TrySendError::Closed(delivery)) => delivery,
        },
        None => delivery,
    };
    if delivery.qos == QoS::AtMostOnce {
        metrics::dropped("offline");
    } else if session.queue.push(delivery).is_err() {
        metrics::dropped("queue_full");
    }
}
