//! Aggregates of a Datastream's or MultiDatastream's Observations per fixed interval (aligned
//! to a time zone) or per even bucket of a window (downsampling for charts): the declared
//! extension of docs/timeseries.md.
//!
//! A request is parsed from the custom query options of an Observations collection
//! (`aggregate`, `interval`, `timezone`, `buckets`, `from`, `to`), its buckets computed here,
//! and then filled either from the rollups the store keeps per minute, hour and day (UTC) when
//! every bucket boundary falls on one of theirs and no `$filter` narrows the Observations, or
//! from the Observations themselves. Both give the same answer: a rollup is a computation over
//! the raw rows it covers, merged the same way.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use model::{EntityType, Id, Instant};
use odata::Expr;
use store::Reader;
use store::statistics::{self, LEVELS, Parent, Partial};

use crate::AppError;

/// The most buckets one request computes.
pub const MAX_BUCKETS: usize = 100_000;

/// The most even buckets (`buckets=N`) one request asks for.
pub const MAX_EVEN_BUCKETS: u64 = 10_000;

/// What is computed per bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Count,
    Min,
    Max,
    Avg,
    Sum,
    First,
    Last,
}

impl Function {
    pub const ALL: [Function; 7] =
        [Function::Count, Function::Min, Function::Max, Function::Avg, Function::Sum, Function::First, Function::Last];

    pub fn name(self) -> &'static str {
        match self {
            Function::Count => "count",
            Function::Min => "min",
            Function::Max => "max",
            Function::Avg => "avg",
            Function::Sum => "sum",
            Function::First => "first",
            Function::Last => "last",
        }
    }

    /// The value of this function over `partial` (absent: no Observation of the member).
    pub fn apply(self, partial: Option<&Partial>) -> serde_json::Value {
        use serde_json::Value as J;
        let Some(p) = partial else {
            return if self == Function::Count { J::from(0) } else { J::Null };
        };
        let number = |n: Option<f64>| n.and_then(serde_json::Number::from_f64).map_or(J::Null, J::Number);
        match self {
            Function::Count => J::from(p.observations),
            Function::Min => number(p.minimum),
            Function::Max => number(p.maximum),
            Function::Avg => number(p.average()),
            Function::Sum => number((p.numbers > 0).then_some(p.total)),
            Function::First => serde_json::from_str(&p.first.result).unwrap_or(J::Null),
            Function::Last => serde_json::from_str(&p.last.result).unwrap_or(J::Null),
        }
    }
}

/// A calendar interval: buckets begin where the local clock of the time zone shows a multiple
/// of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    /// `PTnM`, n dividing 60: from every n-th minute of each local hour.
    Minutes(i64),
    /// `PTnH`, n dividing 24: from every n-th hour of each local day.
    Hours(i64),
    /// `P1D`: local days.
    Day,
    /// `P1W`: local weeks from Monday.
    Week,
    /// `PnM`, n of 1, 2, 3, 4 or 6: months from January.
    Months(i8),
    /// `P1Y`: years.
    Year,
}

impl Interval {
    /// Parses the ISO 8601 durations offered.
    pub fn parse(text: &str) -> Result<Interval, String> {
        let upper = text.to_ascii_uppercase();
        let number = |digits: &str| digits.parse::<i64>().ok().filter(|n| *n > 0);
        let interval = if let Some(rest) = upper.strip_prefix("PT") {
            if let Some(n) = rest.strip_suffix('M').and_then(number) {
                (60 % n == 0).then_some(Interval::Minutes(n))
            } else if let Some(n) = rest.strip_suffix('H').and_then(number) {
                (24 % n == 0).then_some(Interval::Hours(n))
            } else {
                None
            }
        } else if let Some(rest) = upper.strip_prefix('P') {
            match rest {
                "1D" => Some(Interval::Day),
                "1W" | "7D" => Some(Interval::Week),
                "1Y" | "12M" => Some(Interval::Year),
                _ => rest
                    .strip_suffix('M')
                    .and_then(number)
                    .filter(|n| [1, 2, 3, 4, 6].contains(n))
                    .map(|n| Interval::Months(n as i8)),
            }
        } else {
            None
        };
        interval.ok_or_else(|| {
            format!(
                "`{text}` is not an interval offered: use PTnM (n dividing 60), PTnH (n dividing 24), P1D, P1W, \
                 PnM (n = 1, 2, 3, 4 or 6) or P1Y"
            )
        })
    }

    /// The start of the bucket holding the local time `t`.
    fn floor(self, t: DateTime) -> DateTime {
        let date = t.date();
        let midnight = date.to_datetime(jiff::civil::Time::midnight());
        match self {
            Interval::Minutes(n) => {
                let minute = i64::from(t.minute());
                date.at(t.hour(), (minute - minute % n) as i8, 0, 0)
            }
            Interval::Hours(n) => {
                let hour = i64::from(t.hour());
                date.at((hour - hour % n) as i8, 0, 0, 0)
            }
            Interval::Day => midnight,
            Interval::Week => {
                let back = i64::from(date.weekday().to_monday_zero_offset());
                midnight.checked_sub(Span::new().days(back)).unwrap_or(midnight)
            }
            Interval::Months(n) => {
                let month = date.month();
                let first = month - (month - 1) % n;
                jiff::civil::date(date.year(), first, 1).to_datetime(jiff::civil::Time::midnight())
            }
            Interval::Year => jiff::civil::date(date.year(), 1, 1).to_datetime(jiff::civil::Time::midnight()),
        }
    }

    /// The local start of the bucket after the one starting at `start` (a floor).
    fn next(self, start: DateTime) -> Option<DateTime> {
        let step = match self {
            Interval::Minutes(n) => Span::new().minutes(n),
            Interval::Hours(n) => Span::new().hours(n),
            Interval::Day => Span::new().days(1),
            Interval::Week => Span::new().weeks(1),
            Interval::Months(n) => Span::new().months(n),
            Interval::Year => Span::new().years(1),
        };
        start.checked_add(step).ok()
    }
}

/// How the window is cut into buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Calendar(Interval),
    /// `buckets=N`: the window in N buckets of equal length.
    Even(u64),
}

/// One aggregation request.
#[derive(Clone, Debug)]
pub struct Request {
    pub functions: Vec<Function>,
    pub cut: Cut,
    pub zone: TimeZone,
    pub zone_name: String,
    pub from: Option<Instant>,
    pub to: Option<Instant>,
    /// Narrows the Observations (then always computed from them).
    pub filter: Option<Expr>,
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::bad("invalid_aggregate", message)
}

fn instant(name: &str, text: &str) -> Result<Instant, AppError> {
    let timestamp: Timestamp = text
        .parse()
        .map_err(|e| bad(format!("`{name}` must be an RFC 3339 instant like 2026-01-01T00:00:00Z: {e}")))?;
    Ok(Instant::from_micros(timestamp.as_microsecond()))
}

impl Request {
    /// The request the custom options of a query ask for; `None` when they ask for none.
    pub fn parse(options: &[(String, String)], filter: Option<Expr>) -> Result<Option<Request>, AppError> {
        let get = |name: &str| options.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        for name in ["aggregate", "interval", "timezone", "buckets", "from", "to"] {
            if options.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(bad(format!("`{name}` is given more than once")));
            }
        }
        let (aggregate, interval, buckets) = (get("aggregate"), get("interval"), get("buckets"));
        if aggregate.is_none() && interval.is_none() && buckets.is_none() {
            return Ok(None);
        }
        let cut = match (interval, buckets) {
            (Some(_), Some(_)) => return Err(bad("give either `interval` or `buckets`, not both")),
            (Some(interval), None) => Cut::Calendar(Interval::parse(interval).map_err(bad)?),
            (None, Some(n)) => match n.parse::<u64>() {
                Ok(n) if (1..=MAX_EVEN_BUCKETS).contains(&n) => Cut::Even(n),
                _ => return Err(bad(format!("`buckets` must be a whole number from 1 to {MAX_EVEN_BUCKETS}"))),
            },
            (None, None) => return Err(bad("an aggregate needs an `interval` (e.g. PT1H) or a number of `buckets`")),
        };
        let functions = match aggregate {
            None if matches!(cut, Cut::Even(_)) => vec![Function::Min, Function::Max],
            None => vec![Function::Avg],
            Some(list) => {
                let mut functions = Vec::new();
                for name in list.split(',').map(str::trim) {
                    let function = Function::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
                        bad(format!(
                            "`{name}` is not an aggregate function; use count, min, max, avg, sum, first or last"
                        ))
                    })?;
                    if !functions.contains(&function) {
                        functions.push(function);
                    }
                }
                functions
            }
        };
        let zone_name = get("timezone").unwrap_or("UTC").to_owned();
        let zone = TimeZone::get(&zone_name).map_err(|_| {
            bad(format!("`{zone_name}` is not a time zone known here; use an IANA name like Europe/Berlin"))
        })?;
        let from = get("from").map(|t| instant("from", t)).transpose()?;
        let to = get("to").map(|t| instant("to", t)).transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err(bad("`from` must come before `to`"));
        }
        Ok(Some(Request { functions, cut, zone, zone_name, from, to, filter }))
    }
}

/// One bucket of the answer: `[start, end)` and, per member of the series (one for a
/// Datastream), what its Observations make.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    pub start: Instant,
    pub end: Instant,
    pub members: Vec<Option<Partial>>,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The rollups of this width in seconds.
    Rollups(i64),
    Observations,
}

/// The answer: the buckets holding Observations, in time order.
#[derive(Clone, Debug)]
pub struct Aggregates {
    pub multi: bool,
    pub functions: Vec<Function>,
    pub source: Source,
    pub buckets: Vec<Bucket>,
}

fn timestamp(i: Instant) -> Timestamp {
    Timestamp::from_microsecond(i.micros()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn from_timestamp(t: Timestamp) -> Instant {
    Instant::from_micros(t.as_microsecond())
}

/// The boundaries of the calendar buckets covering `[from, to)` in `zone`: the first at or
/// before `from`, the last at or after `to`.
pub fn boundaries(interval: Interval, zone: &TimeZone, from: Instant, to: Instant) -> Result<Vec<Instant>, AppError> {
    let too_many = || bad(format!("the window holds more than {MAX_BUCKETS} buckets; use a longer interval"));
    let local = zone.to_datetime(timestamp(from));
    let mut civil = interval.floor(local);
    let mut out: Vec<Instant> = Vec::new();
    loop {
        let at = zone.to_ambiguous_zoned(civil).compatible().map_err(|e| bad(format!("a time out of range: {e}")))?;
        let at = from_timestamp(at.timestamp());
        // A local time skipped by a clock change maps to the next boundary's instant.
        if out.last().is_none_or(|last| at > *last) {
            if out.len() > MAX_BUCKETS {
                return Err(too_many());
            }
            out.push(at);
            if at >= to {
                break;
            }
        }
        civil = interval.next(civil).ok_or_else(|| bad("the window reaches beyond the calendar"))?;
    }
    Ok(out)
}

/// The even buckets of `[from, to)`: `n` of equal length (the last may be shorter).
pub fn even_boundaries(n: u64, from: Instant, to: Instant) -> Vec<Instant> {
    let n = n.max(1) as i64;
    let span = to.micros().saturating_sub(from.micros()).max(1);
    let width = span / n + i64::from(span % n != 0);
    let mut out: Vec<Instant> = (0..n)
        .map(|i| from.micros().saturating_add(i.saturating_mul(width)))
        .take_while(|b| *b < to.micros())
        .map(Instant::from_micros)
        .collect();
    out.push(to);
    out
}

/// The buckets of `boundaries`, empty, with `members` members each.
fn empty_buckets(boundaries: &[Instant]) -> Vec<Bucket> {
    boundaries.windows(2).map(|w| Bucket { start: w[0], end: w[1], members: Vec::new() }).collect()
}

/// Adds `partial` (of `member`, for data starting at `at`) to the bucket holding `at`; `hint`
/// is where the last one went (inputs come in time order).
fn add(buckets: &mut [Bucket], hint: &mut usize, at: Instant, member: usize, partial: &Partial) {
    while *hint < buckets.len() && buckets[*hint].end <= at {
        *hint += 1;
    }
    let Some(bucket) = buckets.get_mut(*hint) else { return };
    if at < bucket.start {
        return;
    }
    if bucket.members.len() <= member {
        bucket.members.resize(member + 1, None);
    }
    match &mut bucket.members[member] {
        Some(existing) => existing.merge(partial),
        slot @ None => *slot = Some(partial.clone()),
    }
}

/// The rollup level every boundary falls on (the widest), if any.
fn aligned_level(boundaries: &[Instant]) -> Option<i64> {
    LEVELS.iter().rev().copied().find(|level| boundaries.iter().all(|b| b.micros().rem_euclid(level * 1_000_000) == 0))
}

/// Computes `request` for the (Multi)Datastream `id`, whose summary says whether its rollups
/// can be used. Runs on a reader.
pub fn compute(reader: &mut dyn Reader, entity: EntityType, id: Id, request: &Request) -> Result<Aggregates, AppError> {
    let parent =
        Parent::of(entity).ok_or_else(|| bad("aggregates are of a Datastream's or MultiDatastream's Observations"))?;
    let summary = reader
        .summary(entity, id)?
        .ok_or_else(|| AppError::NotFound(format!("{}({id}) does not exist", entity.set_name())))?;
    let multi = entity == EntityType::MultiDatastream;
    let mut answer =
        Aggregates { multi, functions: request.functions.clone(), source: Source::Observations, buckets: Vec::new() };
    // The window: as asked, else the extent of the Observations.
    let (from, to) = match (request.from, request.to) {
        (Some(from), Some(to)) => (from, to),
        (from, to) => {
            let Some(extent) = phenomenon_extent(reader, entity, id)? else { return Ok(answer) };
            let from = from.unwrap_or(extent.0);
            let to = to.unwrap_or(Instant::from_micros(extent.1.micros() + 1));
            if from >= to {
                return Ok(answer);
            }
            (from, to)
        }
    };
    let (bounds, level) = match request.cut {
        Cut::Calendar(interval) => {
            let bounds = boundaries(interval, &request.zone, from, to)?;
            let level = aligned_level(&bounds);
            (bounds, level)
        }
        Cut::Even(n) => {
            let bounds = even_boundaries(n, from, to);
            let width = bounds.get(1).map_or(0, |b| b.micros() - from.micros());
            // Rollups a tenth of a bucket wide or less: their boundaries move those of the
            // buckets by at most that.
            let level = LEVELS.iter().rev().copied().find(|level| level * 1_000_000 * 10 <= width);
            (bounds, level)
        }
    };
    let mut buckets = empty_buckets(&bounds);
    let (first, last) = (bounds[0], bounds[bounds.len() - 1]);
    let mut hint = 0;
    match level {
        Some(level) if request.filter.is_none() && !summary.rollups_pending => {
            answer.source = Source::Rollups(level);
            let width = level * 1_000_000;
            let start = Instant::from_micros(first.micros().div_euclid(width) * width);
            reader.rollups(entity, id, level, start, last, &mut |rollup| {
                let at = Instant::from_micros(rollup.bucket.max(first.micros()));
                add(&mut buckets, &mut hint, at, rollup.member as usize, &rollup.partial);
            })?;
        }
        _ => {
            reader.observation_points(entity, id, request.filter.as_ref(), first, last, &mut |point| {
                for (member, value) in statistics::members(parent, &point.result).iter().enumerate() {
                    let partial = Partial::of(point.start.micros(), point.id.0, value);
                    add(&mut buckets, &mut hint, point.start, member, &partial);
                }
                true
            })?;
        }
    }
    buckets.retain(|b| b.members.iter().any(Option::is_some));
    answer.buckets = buckets;
    Ok(answer)
}

/// The earliest and latest phenomenonTime start of the (Multi)Datastream's Observations.
fn phenomenon_extent(
    reader: &mut dyn Reader,
    entity: EntityType,
    id: Id,
) -> Result<Option<(Instant, Instant)>, AppError> {
    let property = entity.property("phenomenonTime").ok_or_else(|| AppError::Internal("schema".into()))?;
    let query = odata::Query {
        select: Some(vec![odata::SelectItem::Property(property)]),
        top: Some(1),
        ..odata::Query::default()
    };
    let paging = store::Paging { default_top: 1, max_top: 1 };
    let rows = reader.query(entity, Some(&store::id_eq(id)), &query, paging)?;
    Ok(match rows.rows.first().and_then(|r| r.values.first()) {
        Some(store::Value::Interval(i)) => Some((i.start(), i.end())),
        Some(store::Value::Instant(i)) => Some((*i, *i)),
        _ => None,
    })
}

/// The answer as a SensorThings collection of virtual Observations: per bucket, its
/// phenomenonTime as an interval, the first function's value as the result (an array of one
/// per member for a MultiDatastream) and every function's value in `parameters`.
pub fn to_json(answer: &Aggregates, zone_name: &str) -> serde_json::Value {
    use serde_json::{Map, Value as J};
    let width = answer.buckets.iter().map(|b| b.members.len()).max().unwrap_or(0);
    let values: Vec<J> = answer
        .buckets
        .iter()
        .map(|bucket| {
            let of = |function: Function| -> J {
                if answer.multi {
                    J::Array(
                        (0..width).map(|m| function.apply(bucket.members.get(m).and_then(Option::as_ref))).collect(),
                    )
                } else {
                    function.apply(bucket.members.first().and_then(Option::as_ref))
                }
            };
            let mut time = String::new();
            bucket.start.write_rfc3339(&mut time);
            time.push('/');
            bucket.end.write_rfc3339(&mut time);
            let mut parameters = Map::new();
            for function in &answer.functions {
                parameters.insert(function.name().to_owned(), of(*function));
            }
            let mut object = Map::new();
            object.insert("phenomenonTime".into(), J::String(time));
            object.insert("resultTime".into(), J::Null);
            object.insert("result".into(), answer.functions.first().map_or(J::Null, |f| of(*f)));
            object.insert("parameters".into(), J::Object(parameters));
            J::Object(object)
        })
        .collect();
    let source = match answer.source {
        Source::Rollups(level) => format!("rollups PT{}M", level / 60),
        Source::Observations => "observations".to_owned(),
    };
    serde_json::json!({
        "@thingbase.aggregate": {
            "functions": answer.functions.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "timezone": zone_name,
            "source": source,
        },
        "value": values,
    })
}
