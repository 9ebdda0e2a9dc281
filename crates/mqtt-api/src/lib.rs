//! The SensorThings MQTT extension (OGC 18-088 §14) on the embedded broker: publishing an
//! entity to a collection topic (`v1.1/Datastreams(1)/Observations`) creates it exactly as an
//! HTTP POST would, acknowledged only after the commit; every committed create and update is
//! published on the collection, navigation-collection, entity and property topics it concerns,
//! shaped by the subscriber's `$select`.
//!
//! Built on `broker` (which knows nothing of SensorThings) and `app`; must not depend on a
//! concrete backend or on axum.

mod hooks;
mod notify;
mod topic;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use app::App;
use broker::{Broker, BrokerConfig};

pub use hooks::SensorThingsHooks;
pub use notify::ChangeChannel;

/// The broker with the SensorThings hooks.
pub type SensorThingsBroker = Broker<SensorThingsHooks>;

/// The MQTT side of a server: the broker to serve connections with, and the notifier task.
pub struct MqttApi {
    pub broker: SensorThingsBroker,
}

impl std::fmt::Debug for MqttApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttApi").finish_non_exhaustive()
    }
}

/// Wires the extension: `app` must have been built with the `ChangeChannel` whose receiver is
/// `changes`. `base` is the service root URL used in self links (e.g. `http://host:8080/v1.1`).
/// Spawns the notifier on the current tokio runtime.
pub fn start(
    app: App,
    config: BrokerConfig,
    changes: tokio::sync::mpsc::Receiver<Vec<app::Change>>,
    base: String,
) -> MqttApi {
    let variants = Arc::new(hooks::Variants::default());
    let listening = Arc::new(notify::Listening::default());
    let hooks = SensorThingsHooks::new(app.clone(), variants.clone(), listening.clone());
    let broker = Broker::with_hooks(config, hooks);
    tokio::spawn(notify::run(changes, app, broker.clone(), variants, listening, base));
    MqttApi { broker }
}
