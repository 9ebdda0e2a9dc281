//! Rate limits as token buckets in memory (per node). The authenticator keeps one per client
//! address for requests and connections without working credentials (anonymous reads of open
//! data, failed sign-ins over HTTP or MQTT), so that nobody guesses passwords or floods the hub
//! unauthenticated; the HTTP API keeps one per principal when configured.

use std::collections::HashMap;
use std::hash::Hash;
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

    /// Whether `key` has a token left, without taking it; `Err(seconds)` to wait when not.
    pub fn available(&self, key: &K) -> Result<(), u64> {
        if self.rate.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(buckets) = self.buckets.lock() else { return Ok(()) };
        let Some(bucket) = buckets.get(key) else { return Ok(()) };
        let tokens = (bucket.tokens + bucket.at.elapsed().as_secs_f64() * self.rate.per_second).min(self.rate.burst);
        if tokens >= 1.0 { Ok(()) } else { Err(((1.0 - tokens) / self.rate.per_second).ceil().max(1.0) as u64) }
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
