//! The HTTP API's rate limits: per principal when configured. An empty bucket answers 429
//! with `Retry-After`. Requests without working credentials are limited per client address by
//! the authenticator (`app::auth::Authenticator::charge_address`).

pub use app::limits::{Limiter, Rate};

/// The limits of the HTTP API (those per client address are the authenticator's, shared with
/// MQTT).
pub struct RateLimits {
    /// Requests of a principal (user or token), by its identity.
    pub principal: Limiter<String>,
}

impl RateLimits {
    pub fn new(principal: Rate) -> RateLimits {
        RateLimits { principal: Limiter::new(principal) }
    }
}

impl Default for RateLimits {
    /// Principals unlimited.
    fn default() -> RateLimits {
        RateLimits::new(Rate::NONE)
    }
}
