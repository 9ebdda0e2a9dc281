//! The broker hooks of the SensorThings MQTT extension (OGC 18-088 §14): a PUBLISH to a
//! collection topic creates an entity exactly as an HTTP POST would, and the PUBACK waits for
//! the commit; subscriptions to SensorThings topics are checked and their `$select` variants
//! remembered for notifications. Topics outside `v1.1/` are ordinary broker topics.
//!
//! With access control on (see `session.rs`), CONNECT is authenticated, every publish creates
//! as its connection's principal, and every delivery is checked per message: a notification
//! carries its entity's project as the broker tag, and reaches only subscribers who may read
//! that project now.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use app::{App, AppError, WriteOp};
use broker::{
    AuthenticateFuture, ConnectInfo, Hooks, InboundPublish, PublishDecision, PublishError, PublishRefusal,
    SubscribedFuture,
};
use broker::{TopicFilter, TopicName};
use odata::Tail;

use crate::notify::Listening;
use crate::session::{self, MqttAccess, Session};
use crate::{current, topic};

/// Subscribed topics that carry query options, by the topic without them: notifications for
/// `v1.1/Things` are also rendered for `v1.1/Things?$select=name` when someone subscribed to it.
#[derive(Debug, Default)]
pub struct Variants(Mutex<HashMap<String, BTreeSet<String>>>);

impl Variants {
    fn remember(&self, filter: &str) {
        if let (Some((base, _)), Ok(mut map)) = (filter.split_once('?'), self.0.lock()) {
            map.entry(base.to_owned()).or_default().insert(filter.to_owned());
        }
    }

    /// The topic and its remembered variants.
    pub fn of(&self, base: &str) -> Vec<String> {
        let mut topics = vec![base.to_owned()];
        if let Some(variants) = self.0.lock().ok().as_ref().and_then(|map| map.get(base)) {
            topics.extend(variants.iter().cloned());
        }
        topics
    }
}

pub struct SensorThingsHooks {
    app: App,
    access: MqttAccess,
    latest_on_subscribe: bool,
    /// The service root URL self links start with.
    base: String,
    variants: Arc<Variants>,
    listening: Arc<Listening>,
}

impl SensorThingsHooks {
    pub(crate) fn new(
        app: App,
        access: MqttAccess,
        latest_on_subscribe: bool,
        base: String,
        variants: Arc<Variants>,
        listening: Arc<Listening>,
    ) -> SensorThingsHooks {
        SensorThingsHooks { app, access, latest_on_subscribe, base, variants, listening }
    }
}

fn refused(reason: PublishRefusal, message: impl Into<String>) -> PublishError {
    metrics::counter!("thingbase_mqtt_publishes_refused_total").increment(1);
    PublishError::new(reason, message)
}

/// What a publish to `topic` asks of the application: `None` for topics outside the
/// SensorThings namespace (ordinary broker topics), else the create it stands for (OGC 18-088
/// §14.2: a publish to a collection creates an entity in it), or why it is refused.
pub(crate) fn create_request(topic: &str, payload: &[u8]) -> Option<Result<WriteOp, PublishError>> {
    let parsed = match topic::parse(topic)? {
        Ok(parsed) => parsed,
        Err(e) => return Some(Err(refused(PublishRefusal::TopicNameInvalid, e.to_string()))),
    };
    if !app::addresses_collection(&parsed.path) || parsed.path.tail != Tail::None {
        return Some(Err(refused(
            PublishRefusal::TopicNameInvalid,
            "publish new entities to a collection topic, e.g. v1.1/Datastreams(1)/Observations",
        )));
    }
    let body: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(body) => body,
        Err(e) => {
            return Some(Err(refused(PublishRefusal::PayloadFormatInvalid, format!("the payload is not JSON: {e}"))));
        }
    };
    metrics::counter!("thingbase_mqtt_creates_total").increment(1);
    Some(Ok(WriteOp::Create { path: parsed.path, body }))
}

/// The PUBACK answer for an application error; internals never leave the server.
pub(crate) fn publish_error(error: AppError) -> PublishError {
    metrics::counter!("thingbase_mqtt_publishes_refused_total").increment(1);
    let reason = match &error {
        AppError::BadRequest { .. } | AppError::Query(_) | AppError::NotFound(_) | AppError::Conflict(_) => {
            PublishRefusal::PayloadFormatInvalid
        }
        AppError::MethodNotAllowed(_) => PublishRefusal::TopicNameInvalid,
        AppError::Unauthenticated(_) | AppError::Forbidden(_) => PublishRefusal::NotAuthorized,
        AppError::Unavailable | AppError::Throttled { .. } | AppError::OverBudget(_) => PublishRefusal::QuotaExceeded,
        AppError::Internal(_) | AppError::InBatch(..) => PublishRefusal::ImplementationSpecificError,
    };
    let message = match &error {
        AppError::Internal(m) => {
            tracing::error!(error = %m, "mqtt: a publish failed inside the server");
            "the server failed; the error is logged".to_owned()
        }
        other => other.to_string(),
    };
    // The broker (or the bridge) logs the refusal with the client and topic.
    PublishError::new(reason, message)
}

impl Hooks for SensorThingsHooks {
    type Principal = Session;

    fn authenticate(&self, connect: &ConnectInfo) -> AuthenticateFuture<Session> {
        let credentials = session::credentials(connect);
        if matches!(credentials, app::auth::Credentials::Device(app::auth::DeviceCredential::Secret { .. }))
            && !connect.transport.tls
        {
            // A device secret never crosses the network in the clear (EN 303 645 5.5-1).
            tracing::info!(peer = %connect.peer, "mqtt: refused a device secret on a connection without TLS");
            return Box::pin(std::future::ready(Err(broker::RefuseReason::NotAuthorized)));
        }
        Box::pin(session::authenticate(self.access.clone(), self.app.clone(), credentials, connect.peer.ip()))
    }

    fn authorize_subscribe(&self, session: &Session, filter: &TopicFilter) -> bool {
        let text = filter.as_str();
        let wildcard = text.contains(['+', '#']);
        // Anonymous connections read open data: SensorThings topics only.
        if session.is_anonymous() && !topic::is_sensorthings(text) {
            return false;
        }
        // Wildcard filters whose first level is one (`#`, `+/...`) cover SensorThings topics
        // too; counting them only switches the notifier on.
        let first_level = text.split('/').next().unwrap_or_default();
        if topic::is_sensorthings(text) || matches!(first_level, "+" | "#") {
            self.listening.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if !topic::is_sensorthings(text) || wildcard {
            // Ordinary topics, and wildcards over SensorThings topics, which match the concrete
            // topics notifications are published on. What a subscriber receives is checked per
            // message.
            return true;
        }
        match topic::parse(text) {
            Some(Ok(_)) => {
                self.variants.remember(text);
                true
            }
            _ => {
                tracing::info!(filter = text, "mqtt: refused a subscription to a malformed SensorThings topic");
                false
            }
        }
    }

    fn on_publish(&self, session: &Session, publish: &InboundPublish) -> PublishDecision {
        match create_request(publish.topic.as_str(), &publish.payload) {
            None if session.is_anonymous() => PublishDecision::Reject(PublishError::new(
                PublishRefusal::NotAuthorized,
                "sign in to publish (user name `token`, an API token as the password)",
            )),
            None => PublishDecision::Route,
            Some(Err(error)) => PublishDecision::Reject(error),
            Some(Ok(op)) => {
                let (app, access, session) = (self.app.clone(), self.access.clone(), session.clone());
                PublishDecision::Intercept(Box::pin(async move {
                    let Some(caller) = session::current_or_refreshed(&access, &session).await else {
                        return Err(PublishError::new(PublishRefusal::NotAuthorized, "the credentials no longer work"));
                    };
                    app.write(&caller, op).await.map(|_| ()).map_err(publish_error)
                }))
            }
        }
    }

    fn authorize_delivery(&self, session: &Session, _topic: &TopicName, tag: Option<u64>) -> bool {
        let MqttAccess::Required(_) = &self.access else { return true };
        let Some(caller) = session::current(&self.access, session) else { return false };
        match tag.and_then(|t| i64::try_from(t).ok()) {
            // A notification: the subscriber must be able to read its entity's project now.
            Some(project) => self.app.readable(&caller.principal, project),
            // A client's publish on an ordinary topic: for those who signed in.
            None => !session.is_anonymous(),
        }
    }

    fn on_subscribed(&self, session: &Session, filter: &TopicFilter) -> Option<SubscribedFuture> {
        if !self.latest_on_subscribe || !topic::is_sensorthings(filter.as_str()) {
            return None;
        }
        let caller = session::current(&self.access, session)?;
        Some(Box::pin(current::current_state(self.app.clone(), caller, self.base.clone(), filter.clone())))
    }
}
