//! Times as the SensorThings model has them: instants and ISO 8601 intervals, held as
//! microseconds since the Unix epoch so that storage and comparison are plain integers.

use std::fmt;
use std::str::FromStr;

/// An instant with microsecond precision, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(i64);

/// A time interval `[start, end]`; `start == end` is allowed (a degenerate interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interval {
    start: Instant,
    end: Instant,
}

/// What `Observation/phenomenonTime` holds: an instant or an interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeValue {
    Instant(Instant),
    Interval(Interval),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is not an ISO 8601 date-time with a time zone, e.g. 2024-05-01T12:00:00Z")]
    BadInstant(String),
    #[error("`{0}` is not an ISO 8601 interval `start/end`")]
    BadInterval(String),
    #[error("the interval `{0}` ends before it starts")]
    Reversed(String),
}

impl Instant {
    /// The earliest instant the server represents (`mindatetime()`): 0001-01-01T00:00:00Z.
    pub const MIN: Instant = Instant(-62_135_596_800_000_000);
    /// The latest instant the server represents (`maxdatetime()`): 9999-12-30T00:00:00Z, a day
    /// short of the calendar's end so every time zone can still display it.
    pub const MAX: Instant = Instant(253_402_128_000_000_000);

    pub fn now() -> Instant {
        Instant(jiff::Timestamp::now().as_microsecond())
    }

    pub fn from_micros(micros: i64) -> Instant {
        Instant(micros.clamp(Self::MIN.0, Self::MAX.0))
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Appends the instant as RFC 3339 in UTC, e.g. `2024-05-01T12:00:00Z` or
    /// `2024-05-01T12:00:00.25Z` (fraction without trailing zeros), as `Display` does, without
    /// going through a formatter: responses write hundreds of thousands of these.
    pub fn write_rfc3339(self, out: &mut String) {
        let seconds = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = seconds.div_euclid(86_400);
        let rest = seconds.rem_euclid(86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            out.push_str(&self.to_string());
            return;
        }
        let mut buf = [0u8; 27];
        let digits = |buf: &mut [u8], mut v: i64| {
            for b in buf.iter_mut().rev() {
                *b = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        digits(&mut buf[0..4], year);
        buf[4] = b'-';
        digits(&mut buf[5..7], month);
        buf[7] = b'-';
        digits(&mut buf[8..10], day);
        buf[10] = b'T';
        digits(&mut buf[11..13], rest / 3600);
        buf[13] = b':';
        digits(&mut buf[14..16], rest % 3600 / 60);
        buf[16] = b':';
        digits(&mut buf[17..19], rest % 60);
        let mut end = 19;
        if micros > 0 {
            buf[19] = b'.';
            digits(&mut buf[20..26], micros);
            end = 26;
            while buf[end - 1] == b'0' {
                end -= 1;
            }
        }
        buf[end] = b'Z';
        out.push_str(std::str::from_utf8(&buf[..=end]).unwrap_or(""));
    }

    fn timestamp(self) -> jiff::Timestamp {
        // Every `Instant` is constructed inside jiff's range, so this cannot fail.
        jiff::Timestamp::from_microsecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

impl FromStr for Instant {
    type Err = TimeError;

    /// Parses an RFC 3339 / ISO 8601 date-time that carries an offset (`Z` or `+hh:mm`).
    fn from_str(text: &str) -> Result<Instant, TimeError> {
        let ts: jiff::Timestamp = text.parse().map_err(|_| TimeError::BadInstant(text.to_owned()))?;
        let micros = ts.as_microsecond();
        if !(Self::MIN.0..=Self::MAX.0).contains(&micros) {
            return Err(TimeError::BadInstant(text.to_owned()));
        }
        Ok(Instant(micros))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.timestamp(), f)
    }
}

impl Interval {
    pub fn new(start: Instant, end: Instant) -> Option<Interval> {
        (start <= end).then_some(Interval { start, end })
    }

    pub fn start(self) -> Instant {
        self.start
    }

    pub fn end(self) -> Instant {
        self.end
    }

    /// The smallest interval covering both.
    pub fn union(self, other: Interval) -> Interval {
        Interval { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

impl FromStr for Interval {
    type Err = TimeError;

    /// Parses `start/end`, `start/duration` or `duration/end`.
    fn from_str(text: &str) -> Result<Interval, TimeError> {
        let bad = || TimeError::BadInterval(text.to_owned());
        let (a, b) = text.split_once('/').ok_or_else(bad)?;
        let (start, end) = if a.starts_with('P') {
            let end: Instant = b.parse().map_err(|_| bad())?;
            (shift(end, a, -1).ok_or_else(bad)?, end)
        } else if b.starts_with('P') {
            let start: Instant = a.parse().map_err(|_| bad())?;
            (start, shift(start, b, 1).ok_or_else(bad)?)
        } else {
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
        };
        Interval::new(start, end).ok_or_else(|| TimeError::Reversed(text.to_owned()))
    }
}

/// Moves `at` by an ISO 8601 duration, forwards (`sign` 1) or backwards (-1), in UTC.
fn shift(at: Instant, duration: &str, sign: i64) -> Option<Instant> {
    let span: jiff::Span = duration.parse().ok()?;
    let span = if sign < 0 { span.negate() } else { span };
    let zoned = at.timestamp().to_zoned(jiff::tz::TimeZone::UTC);
    let moved = zoned.checked_add(span).ok()?;
    Some(Instant(moved.timestamp().as_microsecond()))
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.start, self.end)
    }
}

impl TimeValue {
    pub fn start(self) -> Instant {
        match self {
            TimeValue::Instant(i) => i,
            TimeValue::Interval(i) => i.start,
        }
    }

    pub fn end(self) -> Instant {
        match self {
            TimeValue::Instant(i) => i,
            TimeValue::Interval(i) => i.end,
        }
    }

    /// The interval this value covers; an instant covers itself.
    pub fn extent(self) -> Interval {
        Interval { start: self.start(), end: self.end() }
    }
}

impl FromStr for TimeValue {
    type Err = TimeError;

    fn from_str(text: &str) -> Result<TimeValue, TimeError> {
        if text.contains('/') { text.parse().map(TimeValue::Interval) } else { text.parse().map(TimeValue::Instant) }
    }
}

impl fmt::Display for TimeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeValue::Instant(i) => i.fmt(f),
            TimeValue::Interval(i) => i.fmt(f),
        }
    }
}
