//! Failed DTLS handshakes by source, so that guessing keys (or making the hub look them up)
//! from one address is slow: after `CoapSettings::failures_before_pause` failures in a row
//! from a source, its ClientHellos are ignored for `CoapSettings::first_pause`, twice that
//! after each further failure, up to `CoapSettings::longest_pause`; a handshake from the
//! source that succeeds forgets its failures. A source is an IPv4 address, or the /64 of an
//! IPv6 one (what one subscriber is given), whatever the port.
//!
//! Devices behind one NAT share a source: one that keeps failing pauses the others too, for
//! at most the longest pause at a time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Sources remembered at most; beyond, the one that failed longest ago is forgotten.
const SOURCES: usize = 10_000;

/// Where a handshake comes from, for counting its failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(address: IpAddr) -> Source {
        match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Source(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
                }
            },
            v4 => Source(v4),
        }
    }
}

#[derive(Debug)]
struct Failing {
    count: u32,
    last: Instant,
    paused_until: Option<Instant>,
}

/// The failures of every source that failed and has not succeeded since.
#[derive(Debug)]
pub struct Pauses {
    before_pause: u32,
    first: Duration,
    longest: Duration,
    sources: HashMap<Source, Failing>,
}

impl Pauses {
    pub fn new(before_pause: u32, first: Duration, longest: Duration) -> Pauses {
        Pauses { before_pause: before_pause.max(1), first, longest: longest.max(first), sources: HashMap::new() }
    }

    /// Until when handshakes from `source` are ignored, if they are at `now`.
    pub fn paused(&self, source: Source, now: Instant) -> Option<Instant> {
        self.sources.get(&source).and_then(|f| f.paused_until).filter(|until| *until > now)
    }

    /// A handshake from `source` failed at `now`; returns the pause it now begins, if any.
    pub fn failed(&mut self, source: Source, now: Instant) -> Option<Duration> {
        if self.sources.len() >= SOURCES && !self.sources.contains_key(&source) {
            let oldest = self.sources.iter().min_by_key(|(_, f)| f.last).map(|(s, _)| *s);
            if let Some(oldest) = oldest {
                self.sources.remove(&oldest);
            }
        }
        let failing = self.sources.entry(source).or_insert(Failing { count: 0, last: now, paused_until: None });
        failing.count = failing.count.saturating_add(1);
        failing.last = now;
        if failing.count < self.before_pause {
            return None;
        }
        let doublings = (failing.count - self.before_pause).min(30);
        let pause = self.first.checked_mul(1 << doublings).unwrap_or(self.longest).min(self.longest);
        failing.paused_until = Some(now + pause);
        Some(pause)
    }

    /// A handshake from `source` succeeded: its failures are forgotten.
    pub fn succeeded(&mut self, source: Source) {
        self.sources.remove(&source);
    }

    /// How many sources have failures counted.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::of(text.parse().expect("an address"))
    }

    #[test]
    fn a_source_is_paused_after_failures_in_a_row_for_twice_as_long_each_time_up_to_the_longest() {
        let mut pauses = Pauses::new(3, Duration::from_secs(30), Duration::from_secs(100));
        let (a, t0) = (source("192.0.2.7"), Instant::now());
        assert_eq!(pauses.failed(a, t0), None);
        assert_eq!(pauses.failed(a, t0), None);
        assert_eq!(pauses.paused(a, t0), None, "two failures pause nothing");
        assert_eq!(pauses.failed(a, t0), Some(Duration::from_secs(30)));
        assert_eq!(pauses.paused(a, t0 + Duration::from_secs(29)), Some(t0 + Duration::from_secs(30)));
        assert_eq!(pauses.paused(a, t0 + Duration::from_secs(30)), None, "the pause ends");
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(pauses.failed(a, t1), Some(Duration::from_secs(60)), "the next failure doubles it");
        assert_eq!(pauses.failed(a, t1), Some(Duration::from_secs(100)), "up to the longest");
        assert_eq!(pauses.failed(a, t1), Some(Duration::from_secs(100)));
        assert_eq!(pauses.paused(source("192.0.2.8"), t1), None, "another address is not paused");
        pauses.succeeded(a);
        assert_eq!(pauses.paused(a, t1), None, "a success forgets the failures");
        assert_eq!(pauses.failed(a, t1), None, "and counting starts again");
        assert_eq!(pauses.sources(), 1);
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_prefixes_whatever_the_port() {
        assert_eq!(source("2001:db8:1:2:aaaa::1"), source("2001:db8:1:2:bbbb::9"), "one /64");
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(source("::ffff:192.0.2.7"), source("192.0.2.7"), "a mapped IPv4 address is itself");
        assert_ne!(source("192.0.2.7"), source("192.0.2.8"));
    }

    #[test]
    fn the_source_that_failed_longest_ago_makes_room() {
        let mut pauses = Pauses::new(1, Duration::from_secs(60), Duration::from_secs(60));
        let t0 = Instant::now();
        let oldest = source("10.0.0.0");
        pauses.failed(oldest, t0);
        for i in 1..SOURCES {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
            pauses.failed(Source::of(address), t0 + Duration::from_millis(1));
        }
        assert_eq!(pauses.sources(), SOURCES);
        let newcomer = source("192.0.2.1");
        pauses.failed(newcomer, t0 + Duration::from_millis(2));
        assert_eq!(pauses.sources(), SOURCES, "bounded");
        assert!(pauses.paused(newcomer, t0 + Duration::from_millis(3)).is_some());
        assert_eq!(pauses.paused(oldest, t0 + Duration::from_millis(3)), None, "the oldest was forgotten");
    }
}
