//! Request rate limits, token buckets in memory (per node): one per client address for requests
//! without working credentials (anonymous reads of open data, failed sign-ins), so that nobody
//! guesses passwords or floods the hub unauthenticated; and, when configured, one per principal.
//! An empty bucket answers 429 with `Retry-After`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept at most; full ones are forgotten first.
const MAX_BUCKETS: usize = 100_000;

/// A rate: `per_second` on average, `burst` at once. Zero means no limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub const NONE: Rate = Rate { per_second: 0.0, burst: 0.0 };

    /// `per_second` with a burst of twice as much.
    pub fn per_second(per_second: f64) -> Rate {
        Rate { per_second, burst: (per_second * 2.0).max(1.0) }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
pub struct Limiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate) -> Limiter<K> {
        Limiter { rate, buckets: Mutex::default() }
    }

    /// Takes one token for `key`; `Err(seconds)` to wait when there is none.
    pub fn take(&self, key: &K) -> Result<(), u64> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate.per_second, self.rate.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.rate.burst, at: now });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.rate.per_second).min(self.rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate.per_second).ceil().max(1.0) as u64)
        }
    }
}

/// The limits of the HTTP API.
pub struct RateLimits {
    /// Requests without working credentials, per client address.
    pub unauthenticated: Limiter<IpAddr>,
    /// Requests of a principal (user or token), by its identity.
    pub principal: Limiter<String>,
}

impl RateLimits {
    pub fn new(unauthenticated: Rate, principal: Rate) -> RateLimits {
        RateLimits { unauthenticated: Limiter::new(unauthenticated), principal: Limiter::new(principal) }
    }
}

impl Default for RateLimits {
    /// 20 unauthenticated requests a second per address (40 at once); principals unlimited.
    fn default() -> RateLimits {
        RateLimits::new(Rate::per_second(20.0), Rate::NONE)
    }
}
