//! The statistics a store keeps of each Datastream's and MultiDatastream's Observations, so
//! that time-series questions never scan them: how many there are, which is the latest, and
//! rollups (count, numeric count, sum, minimum, maximum, first and last) per minute, hour and
//! day, aligned to UTC.
//!
//! This module is the arithmetic, the same for every backend: which buckets an Observation
//! falls in, what it contributes, and how contributions merge. Rollups are merged from the
//! Observations written (per write group) and computed again from the stored Observations of a
//! bucket when some of them go away or change, so a rollup always equals a computation over
//! the raw rows it covers.

use std::collections::BTreeMap;

use model::{EntityType, Id, Instant};

use crate::Value;

/// The widths of the rollup levels kept, in seconds: a minute, an hour, a day.
pub const LEVELS: [i64; 3] = [60, 3_600, 86_400];

const MICROS_PER_SECOND: i64 = 1_000_000;

/// The start of the bucket of width `level` seconds (UTC-aligned) that holds `time`.
pub fn bucket_of(level: i64, time: Instant) -> i64 {
    let width = level * MICROS_PER_SECOND;
    time.micros().div_euclid(width) * width
}

/// Which kind of entity a rollup belongs to, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Parent {
    Datastream = 0,
    MultiDatastream = 1,
}

impl Parent {
    pub fn of(entity: EntityType) -> Option<Parent> {
        match entity {
            EntityType::Datastream => Some(Parent::Datastream),
            EntityType::MultiDatastream => Some(Parent::MultiDatastream),
            _ => None,
        }
    }

    pub fn entity(self) -> EntityType {
        match self {
            Parent::Datastream => EntityType::Datastream,
            Parent::MultiDatastream => EntityType::MultiDatastream,
        }
    }

    pub fn code(self) -> i64 {
        self as i64
    }
}

/// One bucket of one series: a Datastream, or one member (a position of the result array) of
/// a MultiDatastream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub parent: Parent,
    pub parent_id: i64,
    pub member: u32,
    /// The bucket's width in seconds (one of [`LEVELS`]).
    pub level: i64,
    /// The bucket's start, microseconds since the epoch.
    pub bucket: i64,
}

/// An Observation at an edge of a bucket: its phenomenonTime start, its id, and its result
/// (or member of the result) as JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub time: i64,
    pub id: i64,
    pub result: String,
}

/// What a set of Observations contributes to one bucket. Only numeric results count towards
/// `numbers`, `total`, `minimum` and `maximum`; every Observation counts towards
/// `observations`, `first` and `last` (by phenomenonTime start, then id).
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub observations: u64,
    pub numbers: u64,
    pub total: f64,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub first: Edge,
    pub last: Edge,
}

impl Partial {
    /// What one Observation contributes; `value` is its result (or member of its result).
    pub fn of(time: i64, id: i64, value: &serde_json::Value) -> Partial {
        let number = value.as_f64().filter(|n| n.is_finite());
        let edge = Edge { time, id, result: value.to_string() };
        Partial {
            observations: 1,
            numbers: u64::from(number.is_some()),
            total: number.unwrap_or(0.0),
            minimum: number,
            maximum: number,
            first: edge.clone(),
            last: edge,
        }
    }

    /// Takes in `other` (Observations of the same bucket not counted yet).
    pub fn merge(&mut self, other: &Partial) {
        self.observations += other.observations;
        self.numbers += other.numbers;
        self.total += other.total;
        self.minimum = min_of(self.minimum, other.minimum);
        self.maximum = max_of(self.maximum, other.maximum);
        if (other.first.time, other.first.id) < (self.first.time, self.first.id) {
            self.first = other.first.clone();
        }
        if (other.last.time, other.last.id) > (self.last.time, self.last.id) {
            self.last = other.last.clone();
        }
    }

    /// The mean of the numeric results, if there are any.
    pub fn average(&self) -> Option<f64> {
        (self.numbers > 0).then(|| self.total / self.numbers as f64)
    }
}

fn min_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A stored Observation as the statistics see it.
#[derive(Clone, Copy, Debug)]
pub struct Point<'a> {
    pub id: Id,
    pub start: Instant,
    /// The end of an interval phenomenonTime.
    pub end: Option<Instant>,
    pub result: &'a Value,
}

impl Point<'_> {
    /// The key the latest Observation is chosen by: `$orderby=phenomenonTime desc` (start,
    /// then end, descending), then id ascending.
    pub fn latest_key(&self) -> Latest {
        Latest { start: self.start.micros(), end: self.end.unwrap_or(self.start).micros(), id: self.id.0 }
    }
}

/// The Observation that `$orderby=phenomenonTime desc` puts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latest {
    pub start: i64,
    /// The end of the phenomenonTime, or its start for an instant.
    pub end: i64,
    pub id: i64,
}

impl Latest {
    /// Whether `self` comes before `other` in `phenomenonTime desc, id asc` order.
    pub fn is_later_than(&self, other: &Latest) -> bool {
        (self.start, self.end, std::cmp::Reverse(self.id)) > (other.start, other.end, std::cmp::Reverse(other.id))
    }
}

/// The series values of one result: the result itself for a Datastream, each element of the
/// array for a MultiDatastream (a result that is no array has none).
pub fn members(parent: Parent, result: &Value) -> Vec<serde_json::Value> {
    let json = match result {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Real(r) => serde_json::Number::from_f64(*r).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(s) => serde_json::Value::String(s.clone()),
        Value::Json(text) => serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
        Value::Instant(_) | Value::Interval(_) => serde_json::Value::Null,
    };
    match parent {
        Parent::Datastream => vec![json],
        Parent::MultiDatastream => match json {
            serde_json::Value::Array(items) => items,
            _ => Vec::new(),
        },
    }
}

/// The numeric value of a Datastream's result, if it is a number.
fn number_of(result: &Value) -> Option<f64> {
    match result {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(r) if r.is_finite() => Some(*r),
        _ => None,
    }
}

/// A Datastream's result as JSON text.
fn json_text(result: &Value) -> String {
    match result {
        Value::Json(text) => {
            serde_json::from_str::<serde_json::Value>(text).map_or_else(|_| "null".into(), |j| j.to_string())
        }
        other => members(Parent::Datastream, other).first().map_or_else(|| "null".into(), ToString::to_string),
    }
}

/// The contributions of `points` (Observations of one parent) to every bucket of every level.
///
/// The points are swept in (start, id) order, once per level, so a bucket costs one partial
/// and the results of only its first and last Observations are turned into text.
pub fn contributions(parent: Parent, parent_id: Id, points: &[Point<'_>], into: &mut BTreeMap<RollupKey, Partial>) {
    let mut order: Vec<usize> = (0..points.len()).collect();
    let key_of = |i: usize| (points[i].start.micros(), points[i].id.0);
    if !order.windows(2).all(|w| key_of(w[0]) <= key_of(w[1])) {
        order.sort_unstable_by_key(|&i| key_of(i));
    }
    // A MultiDatastream's members, parsed once per point.
    let parsed: Vec<Vec<serde_json::Value>> = match parent {
        Parent::MultiDatastream => points.iter().map(|p| members(parent, p.result)).collect(),
        Parent::Datastream => Vec::new(),
    };
    let width = match parent {
        Parent::Datastream => 1,
        Parent::MultiDatastream => parsed.iter().map(Vec::len).max().unwrap_or(0),
    };
    for member in 0..width {
        // The Observations that have this member, with its numeric value.
        let values: Vec<(usize, Option<f64>)> = order
            .iter()
            .filter_map(|&i| match parent {
                Parent::Datastream => Some((i, number_of(points[i].result))),
                Parent::MultiDatastream => parsed[i].get(member).map(|v| (i, v.as_f64().filter(|n| n.is_finite()))),
            })
            .collect();
        let text = |i: usize| match parent {
            Parent::Datastream => json_text(points[i].result),
            Parent::MultiDatastream => parsed[i].get(member).map_or_else(|| "null".into(), ToString::to_string),
        };
        let edge = |i: usize| Edge { time: points[i].start.micros(), id: points[i].id.0, result: text(i) };
        for level in LEVELS {
            let mut at = 0;
            while at < values.len() {
                let bucket = bucket_of(level, points[values[at].0].start);
                let mut end = at;
                let (mut observations, mut numbers, mut total) = (0u64, 0u64, 0.0f64);
                let (mut minimum, mut maximum): (Option<f64>, Option<f64>) = (None, None);
                while end < values.len() && bucket_of(level, points[values[end].0].start) == bucket {
                    observations += 1;
                    if let Some(n) = values[end].1 {
                        numbers += 1;
                        total += n;
                        minimum = Some(minimum.map_or(n, |m| m.min(n)));
                        maximum = Some(maximum.map_or(n, |m| m.max(n)));
                    }
                    end += 1;
                }
                let partial = Partial {
                    observations,
                    numbers,
                    total,
                    minimum,
                    maximum,
                    first: edge(values[at].0),
                    last: edge(values[end - 1].0),
                };
                let key = RollupKey { parent, parent_id: parent_id.0, member: member as u32, level, bucket };
                match into.get_mut(&key) {
                    Some(existing) => existing.merge(&partial),
                    None => {
                        into.insert(key, partial);
                    }
                }
                at = end;
            }
        }
    }
}

/// A stored rollup row, as read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollup {
    pub member: u32,
    pub bucket: i64,
    pub partial: Partial,
}

/// The statistics kept on a Datastream or MultiDatastream row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Summary {
    pub observations: u64,
    pub latest: Option<Latest>,
    /// Its rollups are being built (after an upgrade); until then, aggregates come from the
    /// raw Observations.
    pub rollups_pending: bool,
}

/// A stored Observation as aggregates read it.
#[derive(Clone, Debug, PartialEq)]
pub struct RawPoint {
    pub id: Id,
    pub start: Instant,
    pub result: Value,
}

/// What a retention policy applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetentionScope {
    Project(i64),
    Datastream(i64),
    MultiDatastream(i64),
}

impl RetentionScope {
    /// `(scope, scope_id)` as stored.
    pub fn code(self) -> (i64, i64) {
        match self {
            RetentionScope::Project(id) => (0, id),
            RetentionScope::Datastream(id) => (1, id),
            RetentionScope::MultiDatastream(id) => (2, id),
        }
    }

    pub fn from_code(scope: i64, id: i64) -> Option<RetentionScope> {
        match scope {
            0 => Some(RetentionScope::Project(id)),
            1 => Some(RetentionScope::Datastream(id)),
            2 => Some(RetentionScope::MultiDatastream(id)),
            _ => None,
        }
    }
}

/// How long Observations and rollups are kept; `None`: for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub scope: RetentionScope,
    pub raw_days: Option<u32>,
    pub rollup_days: Option<u32>,
    pub updated_at: Instant,
}
