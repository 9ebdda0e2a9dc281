//! Message deduplication of one session (RFC 7252 §4.5): a confirmable request retransmitted
//! within the exchange lifetime gets the answer the first one got (and creates nothing more);
//! one whose answer is still being worked out is dropped (the client retransmits again); a
//! duplicated non-confirmable request is dropped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// EXCHANGE_LIFETIME of RFC 7252 §4.8.2 with the default transmission parameters (247 s).
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// Exchanges remembered per session; a device that keeps more requests going loses the
/// oldest answers first.
const REMEMBERED: usize = 32;

/// What became of a message id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Its create has not finished.
    InFlight,
    /// The encoded answer, sent again for a retransmission.
    Answered(Vec<u8>),
    /// A non-confirmable request: duplicates are dropped.
    Dropped,
}

#[derive(Debug, Default)]
pub struct Exchanges {
    /// Oldest first.
    entries: VecDeque<(u16, Instant, Seen)>,
}

impl Exchanges {
    /// What became of `message_id`, if it was seen within the exchange lifetime.
    pub fn seen(&mut self, message_id: u16, now: Instant) -> Option<&Seen> {
        while self.entries.front().is_some_and(|(_, at, _)| now.duration_since(*at) >= EXCHANGE_LIFETIME) {
            self.entries.pop_front();
        }
        self.entries.iter().find(|(id, _, _)| *id == message_id).map(|(_, _, seen)| seen)
    }

    /// Remembers a new message id.
    pub fn record(&mut self, message_id: u16, now: Instant, seen: Seen) {
        if self.entries.len() >= REMEMBERED {
            self.entries.pop_front();
        }
        self.entries.push_back((message_id, now, seen));
    }

    /// The answer of a request that was in flight.
    pub fn answered(&mut self, message_id: u16, seen: Seen) {
        if let Some(entry) = self.entries.iter_mut().find(|(id, _, _)| *id == message_id) {
            entry.2 = seen;
        }
    }
}
