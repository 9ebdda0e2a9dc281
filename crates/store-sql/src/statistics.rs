//! Keeping the statistics of (Multi)Datastreams' Observations (`store::statistics`): what the
//! write jobs of a group change is gathered here and written once, just before the group
//! commits, in key order (so writers side by side take row locks in one order).
//!
//! - Inserted Observations add to the count, may become the latest, and are merged into the
//!   rollups of their buckets.
//! - Removed (or moved) Observations take from the count; the latest Observation is looked up
//!   again and the buckets they were in are computed again from what is stored (at the end of
//!   the group, so from every job's rows).
//! - A rebuild computes everything of one parent again.

use std::collections::{BTreeMap, BTreeSet};

use model::{EntityType, Id, Instant};
use sql::{Dialect, Param};
use store::StoreError;
use store::statistics::{self, Edge, LEVELS, Latest, Parent, Partial, Point, Rollup, RollupKey, Summary};

use crate::{Connection, Number, SqlRow, query_one};

/// The count change and latest candidate of one parent.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    delta: i64,
    latest: Option<Latest>,
    /// Observations went away or changed: look the latest up again.
    relook: bool,
}

impl Tally {
    /// The count change and latest candidate (`add_observations`' `?2` to `?5`) when they are
    /// all this tally asks to write: it has a candidate and needs no look-up of the latest.
    fn addition(&self) -> Option<[Param; 4]> {
        match self.latest {
            Some(latest) if !self.relook => Some([
                Param::Integer(self.delta),
                Param::Integer(latest.id),
                Param::Integer(latest.start),
                Param::Integer(latest.end),
            ]),
            _ => None,
        }
    }
}

/// What a job (or a group) leaves to write.
#[derive(Debug)]
pub struct Statistics {
    /// Whether rollups are kept (`false`: series written to are marked for a rebuild instead,
    /// and their aggregates come from the Observations until then).
    rollups: bool,
    /// Series whose rollups fell behind (rollups off).
    stale: BTreeSet<(Parent, i64)>,
    tallies: BTreeMap<(Parent, i64), Tally>,
    rollups_merged: BTreeMap<RollupKey, Partial>,
    /// Buckets to compute again from the stored Observations: (parent, id, level, bucket).
    dirty: BTreeSet<(Parent, i64, i64, i64)>,
    /// Whole UTC days to compute again, every level: (parent, id, day start).
    dirty_days: BTreeSet<(Parent, i64, i64)>,
    rebuild: BTreeSet<(Parent, i64)>,
}

impl Default for Statistics {
    fn default() -> Statistics {
        Statistics::new(true)
    }
}

fn parent(entity: EntityType) -> Result<Parent, StoreError> {
    Parent::of(entity).ok_or_else(|| StoreError::Rejected(format!("{} keeps no statistics", entity.set_name())))
}

impl Statistics {
    pub fn new(rollups: bool) -> Statistics {
        Statistics {
            rollups,
            stale: BTreeSet::new(),
            tallies: BTreeMap::new(),
            rollups_merged: BTreeMap::new(),
            dirty: BTreeSet::new(),
            dirty_days: BTreeSet::new(),
            rebuild: BTreeSet::new(),
        }
    }

    pub fn keeps_rollups(&self) -> bool {
        self.rollups
    }

    pub fn added(&mut self, entity: EntityType, id: Id, points: &[Point<'_>]) -> Result<(), StoreError> {
        let parent = parent(entity)?;
        if points.is_empty() {
            return Ok(());
        }
        let tally = self.tallies.entry((parent, id.0)).or_default();
        tally.delta += points.len() as i64;
        for point in points {
            let key = point.latest_key();
            if tally.latest.is_none_or(|known| key.is_later_than(&known)) {
                tally.latest = Some(key);
            }
        }
        if self.rollups {
            statistics::contributions(parent, id, points, &mut self.rollups_merged);
        } else {
            self.stale.insert((parent, id.0));
        }
        Ok(())
    }

    pub fn removed(&mut self, entity: EntityType, id: Id, starts: &[Instant]) -> Result<(), StoreError> {
        let parent = parent(entity)?;
        if starts.is_empty() {
            return Ok(());
        }
        let tally = self.tallies.entry((parent, id.0)).or_default();
        tally.delta -= starts.len() as i64;
        tally.relook = true;
        if !self.rollups {
            self.stale.insert((parent, id.0));
            return Ok(());
        }
        for start in starts {
            for level in LEVELS {
                self.dirty.insert((parent, id.0, level, statistics::bucket_of(level, *start)));
            }
        }
        Ok(())
    }

    /// `count` Observations expired: their rollups stay.
    pub fn expired(&mut self, entity: EntityType, id: Id, count: u64) -> Result<(), StoreError> {
        let tally = self.tallies.entry((parent(entity)?, id.0)).or_default();
        tally.delta -= count as i64;
        tally.relook = true;
        Ok(())
    }

    /// `count` Observations of the UTC day starting at `day` went (a cascade).
    pub fn removed_on_day(&mut self, entity: EntityType, id: Id, day: i64, count: u64) -> Result<(), StoreError> {
        let parent = parent(entity)?;
        let tally = self.tallies.entry((parent, id.0)).or_default();
        tally.delta -= count as i64;
        tally.relook = true;
        if self.rollups {
            self.dirty_days.insert((parent, id.0, day));
        } else {
            self.stale.insert((parent, id.0));
        }
        Ok(())
    }

    pub fn rebuild(&mut self, entity: EntityType, id: Id) -> Result<(), StoreError> {
        self.rebuild.insert((parent(entity)?, id.0));
        Ok(())
    }

    /// Takes in what a later job of the same group left.
    pub fn absorb(&mut self, job: Statistics) {
        for (key, tally) in job.tallies {
            let mine = self.tallies.entry(key).or_default();
            mine.delta += tally.delta;
            mine.relook |= tally.relook;
            if let Some(latest) = tally.latest
                && mine.latest.is_none_or(|known| latest.is_later_than(&known))
            {
                mine.latest = Some(latest);
            }
        }
        self.stale.extend(job.stale);
        for (key, partial) in job.rollups_merged {
            match self.rollups_merged.get_mut(&key) {
                Some(mine) => mine.merge(&partial),
                None => {
                    self.rollups_merged.insert(key, partial);
                }
            }
        }
        self.dirty.extend(job.dirty);
        self.dirty_days.extend(job.dirty_days);
        self.rebuild.extend(job.rebuild);
    }

    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty()
            && self.rollups_merged.is_empty()
            && self.dirty.is_empty()
            && self.dirty_days.is_empty()
            && self.rebuild.is_empty()
            && self.stale.is_empty()
    }

    /// The count change and latest candidate of `entity` `id` when they are all its tally
    /// asks to write (`add_observations`' `?2` to `?5`), for a statement that also changes its
    /// times; such tallies are then left to that statement (`write`'s `combined`).
    pub fn simple_addition(&self, entity: EntityType, id: i64) -> Option<[Param; 4]> {
        let key = (Parent::of(entity)?, id);
        if self.rebuild.contains(&key) {
            return None;
        }
        self.tallies.get(&key)?.addition()
    }

    /// Writes it all, in key order, but the tallies of the `combined` (table, id) pairs, which
    /// a statement of their times already wrote (`simple_addition`).
    pub fn write(
        &self,
        conn: &dyn Connection,
        dialect: &dyn Dialect,
        combined: &BTreeSet<(&'static str, i64)>,
    ) -> Result<(), StoreError> {
        for (&(parent, id), tally) in &self.tallies {
            if self.rebuild.contains(&(parent, id)) || combined.contains(&(parent.entity().table(), id)) {
                continue;
            }
            let entity = parent.entity();
            match tally.addition() {
                Some(addition) => {
                    let params: Vec<Param> = std::iter::once(Param::Integer(id)).chain(addition).collect();
                    conn.execute_deferred(&sql::statistics::add_observations(dialect, entity), &params)?;
                }
                None => {
                    if tally.delta != 0 {
                        let params = [Param::Integer(id), Param::Integer(tally.delta)];
                        conn.execute_deferred(&sql::statistics::add_to_count(dialect, entity), &params)?;
                    }
                    if tally.relook {
                        look_up_latest(conn, dialect, entity, id)?;
                    }
                }
            }
        }
        let merged: Vec<(&RollupKey, &Partial)> = self
            .rollups_merged
            .iter()
            .filter(|(key, _)| {
                !self.rebuild.contains(&(key.parent, key.parent_id))
                    && !self.dirty.contains(&(key.parent, key.parent_id, key.level, key.bucket))
                    && !self.dirty_days.contains(&(
                        key.parent,
                        key.parent_id,
                        statistics::bucket_of(86_400, Instant::from_micros(key.bucket)),
                    ))
            })
            .collect();
        for chunk in merged.chunks(MERGE_ROWS) {
            let mut params = Vec::with_capacity(chunk.len() * sql::statistics::ROLLUP_WIDTH);
            for (key, partial) in chunk {
                bind_rollup(key, partial, &mut params);
            }
            conn.execute_deferred(&sql::statistics::merge_rollups(dialect, chunk.len()), &params)?;
        }
        for &(parent, id, level, bucket) in &self.dirty {
            let day = statistics::bucket_of(86_400, Instant::from_micros(bucket));
            if self.rebuild.contains(&(parent, id)) || self.dirty_days.contains(&(parent, id, day)) {
                continue;
            }
            recompute_bucket(conn, dialect, parent, id, level, bucket)?;
        }
        for &(parent, id, day) in &self.dirty_days {
            if self.rebuild.contains(&(parent, id)) {
                continue;
            }
            recompute_from(conn, dialect, parent, id, day, day + 86_400_000_000)?;
        }
        for &(parent, id) in &self.rebuild {
            rebuild(conn, dialect, parent, id, self.rollups)?;
        }
        for &(parent, id) in &self.stale {
            let params = [Param::Integer(id), Param::Integer(1)];
            conn.execute_deferred(&sql::statistics::set_rollups_pending(dialect, parent.entity()), &params)?;
        }
        Ok(())
    }
}

/// Rollup rows merged by one statement.
const MERGE_ROWS: usize = 64;

fn bind_rollup(key: &RollupKey, partial: &Partial, params: &mut Vec<Param>) {
    let real = |value: Option<f64>| value.map_or(Param::Null, Param::Real);
    params.extend([
        Param::Integer(key.parent.code()),
        Param::Integer(key.parent_id),
        Param::Integer(i64::from(key.member)),
        Param::Integer(key.level),
        Param::Integer(key.bucket),
        Param::Integer(partial.observations as i64),
        Param::Integer(partial.numbers as i64),
        Param::Real(partial.total),
        real(partial.minimum),
        real(partial.maximum),
        Param::Integer(partial.first.time),
        Param::Integer(partial.first.id),
        Param::Text(partial.first.result.clone()),
        Param::Integer(partial.last.time),
        Param::Integer(partial.last.id),
        Param::Text(partial.last.result.clone()),
    ]);
}

fn look_up_latest(conn: &dyn Connection, dialect: &dyn Dialect, entity: EntityType, id: i64) -> Result<(), StoreError> {
    let key = [Param::Integer(id)];
    let found = query_one(conn, &sql::statistics::find_latest(dialect, entity), &key, |row| {
        Ok((row.required_integer(0)?, row.required_integer(1)?, row.required_integer(2)?))
    })?;
    let params = match found {
        Some((observation, start, end)) => {
            [Param::Integer(id), Param::Integer(observation), Param::Integer(start), Param::Integer(end)]
        }
        None => [Param::Integer(id), Param::Null, Param::Null, Param::Null],
    };
    conn.execute(&sql::statistics::set_latest(dialect, entity), &params)?;
    Ok(())
}

/// The result held by the four result columns (number, string, boolean, JSON) from `at`.
pub(crate) fn result_at(row: &dyn SqlRow, at: usize) -> Result<store::Value, StoreError> {
    Ok(match row.number(at)? {
        Some(Number::Integer(i)) => store::Value::Integer(i),
        Some(Number::Real(r)) => store::Value::Real(r),
        None => match (row.text(at + 1)?, row.boolean(at + 2)?, row.json(at + 3)?) {
            (Some(s), _, _) => store::Value::Text(s),
            (_, Some(b), _) => store::Value::Boolean(b),
            (_, _, Some(j)) => store::Value::Json(j),
            _ => store::Value::Null,
        },
    })
}

/// Reads the stored Observations of `parent` `id` starting in `[from, to)` in time order and
/// hands their contributions to `each`, a day's worth of buckets at a time (the day's buckets
/// are complete when handed over), then the rest.
fn contributions_from_rows(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    parent: Parent,
    id: i64,
    from: i64,
    to: i64,
    each: &mut dyn FnMut(BTreeMap<RollupKey, Partial>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    // One UTC day of rows at a time: every bucket of every level lies inside one day.
    let mut day_rows: Vec<(Id, Instant, store::Value)> = Vec::new();
    let mut day = None;
    let flush = |rows: &mut Vec<(Id, Instant, store::Value)>,
                 each: &mut dyn FnMut(BTreeMap<RollupKey, Partial>) -> Result<(), StoreError>|
     -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let points: Vec<Point<'_>> =
            rows.iter().map(|(oid, start, result)| Point { id: *oid, start: *start, end: None, result }).collect();
        let mut gathered = BTreeMap::new();
        statistics::contributions(parent, Id(id), &points, &mut gathered);
        rows.clear();
        each(gathered)
    };
    let params = [Param::Integer(id), Param::Integer(from), Param::Integer(to)];
    conn.query_large(&sql::statistics::raw_points(dialect, parent.entity()), &params, &mut |row| {
        let start = Instant::from_micros(row.required_integer(1)?);
        let this_day = statistics::bucket_of(86_400, start);
        if day.is_some_and(|d| d != this_day) {
            flush(&mut day_rows, each)?;
        }
        day = Some(this_day);
        day_rows.push((Id(row.required_integer(0)?), start, result_at(row, 2)?));
        Ok(true)
    })?;
    flush(&mut day_rows, each)
}

fn insert_rollups(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    rollups: &BTreeMap<RollupKey, Partial>,
) -> Result<(), StoreError> {
    let rows: Vec<(&RollupKey, &Partial)> = rollups.iter().collect();
    for chunk in rows.chunks(MERGE_ROWS) {
        let mut params = Vec::with_capacity(chunk.len() * sql::statistics::ROLLUP_WIDTH);
        for (key, partial) in chunk {
            bind_rollup(key, partial, &mut params);
        }
        conn.execute(&sql::statistics::merge_rollups(dialect, chunk.len()), &params)?;
    }
    Ok(())
}

/// Computes one bucket (every member) of one level again from the stored Observations.
fn recompute_bucket(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    parent: Parent,
    id: i64,
    level: i64,
    bucket: i64,
) -> Result<(), StoreError> {
    let params = [Param::Integer(parent.code()), Param::Integer(id), Param::Integer(level), Param::Integer(bucket)];
    conn.execute(&sql::statistics::delete_bucket(dialect), &params)?;
    contributions_from_rows(conn, dialect, parent, id, bucket, bucket + level * 1_000_000, &mut |mut gathered| {
        gathered.retain(|key, _| key.level == level);
        insert_rollups(conn, dialect, &gathered)
    })
}

/// Computes every statistic of one parent again from its Observations (with `rollups` off,
/// the count and latest, and the rollups are marked as behind).
pub fn rebuild(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    parent: Parent,
    id: i64,
    rollups: bool,
) -> Result<(), StoreError> {
    let entity = parent.entity();
    let key = [Param::Integer(id)];
    conn.execute(&sql::statistics::recount(dialect, entity), &key)?;
    look_up_latest(conn, dialect, entity, id)?;
    if !rollups {
        conn.execute(&sql::statistics::set_rollups_pending(dialect, entity), &[Param::Integer(id), Param::Integer(1)])?;
        return Ok(());
    }
    // From the day of the earliest Observation on: older rollups outlived their Observations
    // by retention and stay.
    let earliest =
        query_one(conn, &sql::statistics::earliest_observation(dialect, entity), &key, |row| row.integer(0))?.flatten();
    if let Some(earliest) = earliest {
        let day = statistics::bucket_of(86_400, Instant::from_micros(earliest));
        recompute_from(conn, dialect, parent, id, day, i64::MAX)?;
    }
    conn.execute(&sql::statistics::set_rollups_pending(dialect, entity), &[Param::Integer(id), Param::Integer(0)])?;
    Ok(())
}

/// Computes every rollup of buckets starting in `[from, to)` again from the stored
/// Observations (`from` a UTC midnight, so no bucket is cut).
fn recompute_from(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    parent: Parent,
    id: i64,
    from: i64,
    to: i64,
) -> Result<(), StoreError> {
    let params = [Param::Integer(parent.code()), Param::Integer(id), Param::Integer(from), Param::Integer(to)];
    conn.execute(&sql::statistics::delete_rollups_between(dialect), &params)?;
    contributions_from_rows(conn, dialect, parent, id, from, to, &mut |gathered| {
        insert_rollups(conn, dialect, &gathered)
    })
}

pub fn summary(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    entity: EntityType,
    id: Id,
) -> Result<Option<Summary>, StoreError> {
    query_one(conn, &sql::statistics::summary(dialect, entity), &[Param::Integer(id.0)], |row| {
        let latest = match (row.integer(1)?, row.integer(2)?, row.integer(3)?) {
            (Some(id), Some(start), Some(end)) => Some(Latest { start, end, id }),
            _ => None,
        };
        Ok(Summary {
            observations: row.required_integer(0)?.max(0) as u64,
            latest,
            rollups_pending: row.required_integer(4)? != 0,
        })
    })
}

fn real(row: &dyn SqlRow, i: usize) -> Result<Option<f64>, StoreError> {
    Ok(row.number(i)?.map(|n| match n {
        Number::Integer(i) => i as f64,
        Number::Real(r) => r,
    }))
}

#[allow(clippy::too_many_arguments, reason = "the reader method's arguments, passed on")]
pub fn read_rollups(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    entity: EntityType,
    id: Id,
    level: i64,
    from: Instant,
    to: Instant,
    sink: &mut dyn FnMut(Rollup),
) -> Result<(), StoreError> {
    let parent = parent(entity)?;
    let params = [
        Param::Integer(parent.code()),
        Param::Integer(id.0),
        Param::Integer(level),
        Param::Integer(from.micros()),
        Param::Integer(to.micros()),
    ];
    conn.query_large(&sql::statistics::read_rollups(dialect), &params, &mut |row| {
        let partial = Partial {
            observations: row.required_integer(2)?.max(0) as u64,
            numbers: row.required_integer(3)?.max(0) as u64,
            total: real(row, 4)?.unwrap_or(0.0),
            minimum: real(row, 5)?,
            maximum: real(row, 6)?,
            first: Edge { time: row.required_integer(7)?, id: row.required_integer(8)?, result: row.required_text(9)? },
            last: Edge {
                time: row.required_integer(10)?,
                id: row.required_integer(11)?,
                result: row.required_text(12)?,
            },
        };
        sink(Rollup { member: row.required_integer(0)?.max(0) as u32, bucket: row.required_integer(1)?, partial });
        Ok(true)
    })
}

/// The (Multi)Datastreams whose rollups are still to be built after an upgrade, at most `limit`.
pub fn pending_rollups(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    limit: usize,
) -> Result<Vec<(EntityType, Id)>, StoreError> {
    let mut out = Vec::new();
    for entity in [EntityType::Datastream, EntityType::MultiDatastream] {
        let params = [Param::Integer(limit as i64)];
        conn.query(&sql::statistics::rollups_pending(dialect, entity), &params, &mut |row| {
            out.push((entity, Id(row.required_integer(0)?)));
            Ok(true)
        })?;
    }
    out.truncate(limit);
    Ok(out)
}
