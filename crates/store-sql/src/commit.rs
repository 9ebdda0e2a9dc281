//! Group commit, the same on every backend: a writer thread takes every queued write job (up
//! to a bound), runs each in its own savepoint inside one transaction, commits, and only then
//! reports each job's outcome. A job that fails is rolled back to its savepoint alone.
//!
//! The statistics of Datastreams' Observations (`crate::statistics`) are not written by each
//! job but gathered ([`Pending`]) and written once per group, just before the commit, in key
//! order: the row locks they take are then held only for the commit, and writers always take
//! them in the same order. Where the dialect asks for it (`Dialect::defers_derived_times`:
//! PostgreSQL, whose writers run side by side), so are the derived time extents.
//!
//! The announcements to other nodes are gathered too, and sent right after the commit (in the
//! same round trip, where the backend has them), before any job is reported done: only
//! committed changes are announced, and a change made after another's answer is announced
//! after it. (Not inside the transaction: see `Dialect::announce_all`.) A node that stops
//! between the commit and the announcement leaves it unsent, as a listener whose connection
//! is down misses it.
//!
//! On PostgreSQL a group of single Observations then costs few round trips: the first job's
//! look-ups, and one carrying the held rows, the pending writes, the commit and the
//! announcements.

use std::collections::{BTreeMap, BTreeSet};

use model::{EntityType, Id, Interval};
use odata::Visibility;
use sql::Param;
use store::{StoreError, WriteDone, WriteJob};

use crate::buffer::Buffering;
use crate::{Access, Connection, Dialect, GroupMemo, ProjectCache};

/// Derived time extents, statistics and announcements left for the end of a write group.
#[derive(Debug, Default)]
pub struct Pending {
    /// Whether time extents wait for the end of the group too (else they are written at once).
    pub defers_extents: bool,
    pub statistics: crate::statistics::Statistics,
    /// By table and id: the phenomenon and result extents to widen the entity's times by.
    extents: BTreeMap<(&'static str, i64), (EntityType, Interval, Option<Interval>)>,
    /// Entities whose times a job recomputed from their Observations (which include whatever
    /// was pending for them).
    recomputed: BTreeSet<(&'static str, i64)>,
    pub announcements: Vec<String>,
}

/// The most (Multi)Datastreams one statement of [`Pending::write`] changes (nine values each;
/// PostgreSQL binds at most 65,535).
const COMBINED_ROWS: usize = 256;

fn widen(a: Interval, b: Interval) -> Interval {
    Interval::new(a.start().min(b.start()), a.end().max(b.end())).unwrap_or(a)
}

impl Pending {
    pub fn new(defers_extents: bool, rollups: bool) -> Pending {
        Pending { defers_extents, statistics: crate::statistics::Statistics::new(rollups), ..Pending::default() }
    }

    pub fn extend(&mut self, entity: EntityType, id: Id, phenomenon: Interval, result: Option<Interval>) {
        self.extents
            .entry((entity.table(), id.0))
            .and_modify(|(_, p, r)| {
                *p = widen(*p, phenomenon);
                *r = match (*r, result) {
                    (Some(a), Some(b)) => Some(widen(a, b)),
                    (a, b) => a.or(b),
                };
            })
            .or_insert((entity, phenomenon, result));
    }

    pub fn recomputed(&mut self, entity: EntityType, id: Id) {
        self.extents.remove(&(entity.table(), id.0));
        self.recomputed.insert((entity.table(), id.0));
    }

    /// Takes in what a job that succeeded left.
    fn absorb(&mut self, job: Pending) {
        for key in job.recomputed {
            self.extents.remove(&key);
        }
        for ((_, id), (entity, phenomenon, result)) in job.extents {
            self.extend(entity, Id(id), phenomenon, result);
        }
        self.announcements.extend(job.announcements);
        self.statistics.absorb(job.statistics);
    }

    /// Whether nothing is left to write before the commit (announcements come after it).
    fn is_empty(&self) -> bool {
        self.extents.is_empty() && self.statistics.is_empty()
    }

    /// Writes what is pending before the commit, in key order.
    fn write(&self, conn: &dyn Connection, dialect: &dyn Dialect) -> Result<(), StoreError> {
        // A Datastream whose new Observations both widen its times and add to its statistics
        // (every group of POSTs) has its row changed once; when every Datastream of a table
        // is such, all of them in one statement (`extend_times_and_add_observations_each`,
        // which takes their locks in key order too).
        let mut combined = BTreeSet::new();
        let mut tables: Vec<&'static str> = self.extents.keys().map(|(table, _)| *table).collect();
        tables.dedup();
        for table in tables {
            let extents: Vec<_> = self.extents.range((table, i64::MIN)..=(table, i64::MAX)).collect();
            let additions: Option<Vec<[Param; 4]>> = extents
                .iter()
                .map(|&(&(_, id), &(entity, _, _))| self.statistics.simple_addition(entity, id))
                .collect();
            if let Some(additions) = additions.filter(|a| a.len() > 1) {
                let entity = extents[0].1.0;
                for (chunk, added) in extents.chunks(COMBINED_ROWS).zip(additions.chunks(COMBINED_ROWS)) {
                    let mut values = Vec::with_capacity(chunk.len() * sql::statistics::EXTEND_AND_ADD_WIDTH);
                    for (&(&(_, id), &(_, phenomenon, result)), addition) in chunk.iter().zip(added) {
                        values.extend(extent_values(Id(id), phenomenon, result));
                        values.extend(addition.iter().cloned());
                        combined.insert((table, id));
                    }
                    let sql_text =
                        sql::statistics::extend_times_and_add_observations_each(dialect, entity, chunk.len());
                    conn.execute_deferred(&sql_text, &values)?;
                }
                continue;
            }
            for (&(_, id), (entity, phenomenon, result)) in extents {
                let values = extent_values(Id(id), *phenomenon, *result);
                match self.statistics.simple_addition(*entity, id) {
                    Some(addition) => {
                        let sql_text = sql::statistics::extend_times_and_add_observations(dialect, *entity);
                        let values: Vec<Param> = values.into_iter().chain(addition).collect();
                        conn.execute_deferred(&sql_text, &values)?;
                        combined.insert((table, id));
                    }
                    None => conn.execute_deferred(&sql::fixed::extend_times(dialect, *entity), &values)?,
                }
            }
        }
        // Deferred, to go with the commit.
        self.statistics.write(conn, dialect, &combined)
    }

    /// The statements that send the group's announcements once it committed, with how many
    /// messages they send; `None` when there are none, or the backend has no other nodes.
    fn announcing(&self, dialect: &dyn Dialect) -> Option<(String, usize)> {
        if self.announcements.is_empty() {
            return None;
        }
        let joined = join_announcements(&self.announcements, store::ANNOUNCEMENT_BYTES);
        let mut statements = Vec::new();
        for chunk in joined.chunks(64) {
            statements.push(dialect.announce_all(chunk)?);
        }
        Some((statements.join("; "), joined.len()))
    }
}

/// The group's announcements with those that share their first line joined (each joined
/// message within `limit` bytes), as `store::Writer::announce` allows: a group of single
/// Observations then notifies once, not once per job. The lines of one first line keep their
/// order.
fn join_announcements(messages: &[String], limit: usize) -> Vec<String> {
    let mut joined: Vec<String> = Vec::new();
    for message in messages {
        let (first, rest) = match message.split_once('\n') {
            Some((first, rest)) if !rest.is_empty() => (first, rest),
            _ => {
                joined.push(message.clone());
                continue;
            }
        };
        // Only the latest message of that first line may take more, so lines stay in order.
        let latest = joined.iter_mut().rev().find(|m| m.split_once('\n').is_some_and(|(f, _)| f == first));
        match latest {
            Some(latest) if latest.len() + rest.len() <= limit && latest.ends_with('\n') => latest.push_str(rest),
            _ => joined.push(message.clone()),
        }
    }
    joined
}

/// Widens the derived times of `entity` `id` by the given extents.
pub(crate) fn write_extent(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    entity: EntityType,
    id: Id,
    phenomenon: Interval,
    result: Option<Interval>,
) -> Result<(), StoreError> {
    conn.execute(&sql::fixed::extend_times(dialect, entity), &extent_values(id, phenomenon, result))?;
    Ok(())
}

/// The parameters of `sql::fixed::extend_times` (and of the first five of
/// `sql::statistics::extend_times_and_add_observations`).
fn extent_values(id: Id, phenomenon: Interval, result: Option<Interval>) -> [Param; 5] {
    [
        Param::Integer(id.0),
        Param::Integer(phenomenon.start().micros()),
        Param::Integer(phenomenon.end().micros()),
        result.map(|r| Param::Integer(r.start().micros())).unwrap_or(Param::Null),
        result.map(|r| Param::Integer(r.end().micros())).unwrap_or(Param::Null),
    ]
}

/// A write job waiting for the writer, with the visibility of whoever asked for it.
pub struct Queued {
    pub visibility: Visibility,
    /// What the job said it will look up (`store::Store::write_touching`).
    pub touches: store::Touches,
    pub job: WriteJob,
    pub done: WriteDone,
}

/// Runs `group` in one transaction (opened with `begin`) and reports every outcome after the
/// commit; empties `group`.
pub fn commit_group(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    begin: &str,
    group: &mut Vec<Queued>,
    projects: &mut ProjectCache,
    rollups: bool,
) {
    let started = std::time::Instant::now();
    let size = group.len();
    if let Err(e) = conn.batch_deferred(begin) {
        tracing::error!(error = %e, "cannot begin a write transaction");
        for Queued { done, .. } in group.drain(..) {
            done(Err(StoreError::Database(format!("cannot begin a write transaction: {e}").into())));
        }
        return;
    }
    let mut outcomes: Vec<(WriteDone, Result<(), StoreError>)> = Vec::with_capacity(size);
    let mut pending = Pending::new(dialect.defers_derived_times(), rollups);
    let mut memo = GroupMemo::default();
    let buffering = Buffering::new(conn, dialect, "id");
    look_ahead(&buffering, dialect, group, projects, &mut memo);
    for Queued { visibility, job, done, .. } in group.drain(..) {
        let outcome = run_in_savepoint(conn, &buffering, dialect, &visibility, projects, &mut memo, &mut pending, job);
        outcomes.push((done, outcome));
    }
    let announcing = pending.announcing(dialect);
    let committed = buffering.flush_group().and_then(|()| commit(conn, dialect, &pending, announcing.as_ref()));
    match committed {
        Ok(announced) => {
            let elapsed = started.elapsed();
            tracing::trace!(jobs = size, elapsed_us = elapsed.as_micros() as u64, "committed");
            metrics::counter!("thingbase_commits_total").increment(1);
            metrics::histogram!("thingbase_commit_jobs").record(size as f64);
            metrics::histogram!("thingbase_commit_duration_seconds").record(elapsed.as_secs_f64());
            // The jobs committed whatever happened to the announcements: a failure loses them
            // (logged and counted).
            if let (Err(error), Some((_, messages))) = (announced, &announcing) {
                tracing::warn!(%error, "cannot announce committed changes to the other nodes");
                metrics::counter!("thingbase_announcements_lost_total").increment(*messages as u64);
            }
            for (done, outcome) in outcomes {
                done(outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed");
            metrics::counter!("thingbase_commit_failures_total").increment(1);
            let _ = conn.batch("ROLLBACK");
            projects.clear();
            for (done, _) in outcomes {
                done(Err(StoreError::Database(format!("commit failed: {e}").into())));
            }
        }
    }
}

/// Writes what the group left pending, commits, and then sends the announcements, in one
/// round trip with the held rows where the backend defers statements (`Connection::commit_then`);
/// `Ok(Err(_))` when the group committed but its announcements failed. A deadlock with another
/// writer over the pending writes (which PostgreSQL resolves by failing one statement) is
/// waited out and they are tried again, a few times.
fn commit(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    pending: &Pending,
    announcing: Option<&(String, usize)>,
) -> Result<Result<(), StoreError>, StoreError> {
    let after = announcing.map(|(statements, _)| statements.as_str());
    if pending.is_empty() {
        return conn.commit_then(&["COMMIT"], after);
    }
    let mut tries = 0;
    loop {
        conn.batch_deferred("SAVEPOINT pending")?;
        let committed = pending
            .write(conn, dialect)
            .and_then(|()| conn.commit_then(&["RELEASE SAVEPOINT pending", "COMMIT"], after));
        match committed {
            Ok(announced) => return Ok(announced),
            Err(StoreError::Busy(message)) if tries < 3 => {
                tries += 1;
                tracing::debug!(%message, tries, "writing the group's derived times again");
                conn.batch("ROLLBACK TO SAVEPOINT pending")?;
                std::thread::sleep(std::time::Duration::from_millis(5 * tries));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Looks up what the group's jobs said they will (`Queued::touches`), each under its job's
/// visibility and all in one round trip, into `memo`; on failure they look it up themselves.
fn look_ahead(
    conn: &dyn Connection,
    dialect: &dyn Dialect,
    group: &[Queued],
    projects: &mut ProjectCache,
    memo: &mut GroupMemo,
) {
    let mut wanted: Vec<(EntityType, i64, &Visibility)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for queued in group {
        // Only (Multi)Datastreams are looked up ahead; a hint of anything else is no help.
        for (entity, id) in
            queued.touches.iter().filter(|(e, _)| matches!(e, EntityType::Datastream | EntityType::MultiDatastream))
        {
            let item = (*entity, id.0, &queued.visibility);
            if seen.insert(item) {
                wanted.push(item);
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let looked = conn.batch_deferred("SAVEPOINT ahead").and_then(|()| {
        let found = crate::access::look_ahead(conn, dialect, projects, memo, &wanted);
        match found {
            Ok(()) => conn.batch_deferred("RELEASE SAVEPOINT ahead"),
            Err(e) => {
                memo.clear();
                conn.batch("ROLLBACK TO SAVEPOINT ahead")?;
                conn.batch_deferred("RELEASE SAVEPOINT ahead")?;
                Err(e)
            }
        }
    });
    if let Err(error) = looked {
        tracing::warn!(%error, "the write group's look-ahead failed; its jobs look up for themselves");
    }
}

#[allow(clippy::too_many_arguments)]
fn run_in_savepoint(
    conn: &dyn Connection,
    buffering: &Buffering<'_>,
    dialect: &dyn Dialect,
    visibility: &Visibility,
    projects: &mut ProjectCache,
    memo: &mut GroupMemo,
    group_pending: &mut Pending,
    job: WriteJob,
) -> Result<(), StoreError> {
    conn.batch_deferred("SAVEPOINT job")?;
    let mut job_pending = Pending::new(group_pending.defers_extents, group_pending.statistics.keeps_rollups());
    let mut access = Access {
        conn: buffering,
        dialect,
        visibility,
        projects: Some(projects),
        memo: Some(memo),
        pending: Some(&mut job_pending),
        deadline: None,
        count_time: None,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut access)))
        .unwrap_or_else(|_| Err(StoreError::Database("a write job panicked".into())));
    if result.is_err() {
        // What the job read may describe entities that no longer exist, and its locks are
        // gone with it.
        if let Some(projects) = access.projects.as_mut() {
            projects.clear();
        }
        if let Some(memo) = access.memo.as_mut() {
            memo.clear();
        }
        buffering.job_failed();
        conn.batch("ROLLBACK TO SAVEPOINT job")?;
    } else {
        buffering.job_succeeded();
    }
    conn.batch_deferred("RELEASE SAVEPOINT job")?;
    if result.is_ok() {
        group_pending.absorb(job_pending);
    }
    result
}
