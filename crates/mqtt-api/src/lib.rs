//! The SensorThings MQTT extension (OGC 18-088 §14) on the embedded broker: publishing an
//! entity to a collection topic (`v1.1/Datastreams(1)/Observations`) creates it exactly as an
//! HTTP POST would, acknowledged only after the commit; every committed create and update is
//! published on the collection, navigation-collection, entity and property topics it concerns,
//! shaped by the subscriber's `$select`.
//!
//! Built on `broker` (which knows nothing of SensorThings) and `app`; must not depend on a
//! concrete backend or on axum.

mod bridge;
mod current;
mod hooks;
mod notify;
mod session;
mod topic;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use app::App;
use broker::{Broker, BrokerConfig};

pub use bridge::{BridgeConfig, NOTIFICATION_PROPERTY};
pub use hooks::SensorThingsHooks;
pub use notify::{ChangeChannel, Notifications};
pub use session::{MqttAccess, TOKEN_USER};

/// The broker with the SensorThings hooks.
pub type SensorThingsBroker = Broker<SensorThingsHooks>;

/// How the SensorThings MQTT extension behaves, beside the broker's own limits.
#[derive(Debug, Clone, Default)]
pub struct MqttSettings {
    /// Send each new subscription to a SensorThings topic the current state of what it covers
    /// (the entity, the property, or the newest Observation of an Observation collection) as
    /// the topic's retained message. Off by default: the standard only promises notifications
    /// of later changes, and clients written for it may not expect the extra message.
    pub latest_on_subscribe: bool,
    /// An external broker to take device publishes from and send notifications to.
    pub bridge: Option<BridgeConfig>,
}

/// The MQTT side of a server: the broker to serve connections with, and the notifier task.
pub struct MqttApi {
    pub broker: SensorThingsBroker,
}

impl std::fmt::Debug for MqttApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttApi").finish_non_exhaustive()
    }
}

/// Wires the extension: `app` must have been built with the `ChangeChannel` that
/// `notifications` came with. `base` is the service root URL used in self links (e.g. `http://host:8080/v1.1`).
/// Spawns the notifier on the current tokio runtime.
pub fn start(
    app: App,
    config: BrokerConfig,
    settings: MqttSettings,
    access: MqttAccess,
    notifications: Notifications,
    base: String,
) -> MqttApi {
    let variants = Arc::new(hooks::Variants::default());
    let listening = notifications.listening.clone();
    let hooks = SensorThingsHooks::new(
        app.clone(),
        access.clone(),
        settings.latest_on_subscribe,
        base.clone(),
        variants.clone(),
        listening.clone(),
    );
    let bridge = settings.bridge.map(|bridge| bridge::start(app.clone(), bridge, access.clone()));
    if bridge.is_some() {
        // Nobody here sees the external broker's subscriptions: always notify.
        listening.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let broker = Broker::with_hooks(config, hooks);
    let outlet = notify::Outlet { broker: broker.clone(), bridge };
    tokio::spawn(notify::run(notifications, app, outlet, variants, base));
    MqttApi { broker }
}
