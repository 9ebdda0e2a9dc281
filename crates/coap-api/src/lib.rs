//! CoAP over DTLS for constrained devices (RFC 7252, RFC 7925): a device with a secret shakes
//! hands with DTLS 1.2 and its pre-shared key (PSK identity = its RFC 9039 URN, key = its
//! `dtlsPsk`, suite TLS_PSK_WITH_AES_128_CCM_8) and POSTs Observations as JSON to
//! `v1.1/Datastreams(<id>)/Observations` or `v1.1/MultiDatastreams(<id>)/Observations`. Each
//! becomes the same `app::App::write` as an HTTP POST, made as the device, and the 2.01 goes
//! out only after the commit.
//!
//! `message.rs` decodes and routes one CoAP message without any I/O (the fuzz target's entry);
//! `server.rs` owns the UDP socket and the DTLS sessions (dimpl, sans-IO); `dtls.rs` the DTLS
//! configuration and the PSK lookup; `exchanges.rs` message deduplication.
//!
//! Built on `app` and `odata`; must not depend on a store backend, `sql`, `http-api`, axum or
//! `broker`. Keys come through the [`Keys`] trait, which the hub's `app::devices::Trust`
//! implements.

mod dtls;
mod exchanges;
mod message;
mod pause;
mod server;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use access::Principal;
use app::AppError;

pub use message::{Exchange, Incoming, MAX_JSON_BYTES, MAX_MESSAGE_BYTES, Reply, decode};
pub use server::serve;

/// Where the listener gets device keys and principals.
pub trait Keys: Send + Sync + 'static {
    /// The pre-shared key of a PSK identity, `None` for identities that have none; looked up
    /// for every handshake.
    fn psk(&self, identity: &str) -> impl Future<Output = Result<Option<Vec<u8>>, AppError>> + Send;

    /// The principal of a device whose handshake succeeded; asked again every
    /// [`CoapSettings::recheck`] while the session lasts.
    fn principal(&self, identity: &str) -> impl Future<Output = Result<Principal, AppError>> + Send;
}

impl Keys for app::devices::Trust {
    fn psk(&self, identity: &str) -> impl Future<Output = Result<Option<Vec<u8>>, AppError>> + Send {
        self.dtls_psk(identity)
    }

    fn principal(&self, identity: &str) -> impl Future<Output = Result<Principal, AppError>> + Send {
        self.psk_principal(identity)
    }
}

/// The limits of a listener.
#[derive(Clone, Debug)]
pub struct CoapSettings {
    /// A session with no datagram for this long is dropped (the device shakes hands again).
    pub idle_timeout: Duration,
    /// Sessions (handshaking or established) per listener; a new peer beyond this replaces
    /// the session idle the longest.
    pub max_sessions: usize,
    /// Creates one session may have in flight; more are answered 5.03.
    pub max_in_flight: usize,
    /// How long a session's principal is used before it is looked up again (with the key, so
    /// a new secret or a retired device ends the session).
    pub recheck: Duration,
    /// Failed handshakes in a row from one address (an IPv4 address, an IPv6 /64) after which
    /// its handshakes are ignored for `first_pause`, twice as long after each further
    /// failure, up to `longest_pause` (`pause.rs`).
    pub failures_before_pause: u32,
    pub first_pause: Duration,
    pub longest_pause: Duration,
}

impl Default for CoapSettings {
    fn default() -> CoapSettings {
        CoapSettings {
            idle_timeout: Duration::from_secs(5 * 60),
            max_sessions: 10_000,
            max_in_flight: 8,
            recheck: Duration::from_secs(10),
            failures_before_pause: 5,
            first_pause: Duration::from_secs(30),
            longest_pause: Duration::from_secs(15 * 60),
        }
    }
}
