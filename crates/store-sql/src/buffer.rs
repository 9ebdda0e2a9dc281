//! Observations inserted a few at a time (one per POST or MQTT publish) are held back by the
//! writer and sent together, so that a write group of many small jobs costs a multi-row
//! INSERT instead of a round trip per job.
//!
//! A held row has its key already: drawn from the table's generator through
//! [`Connection::reserve_key`] (backends that cannot, SQLite, insert at once, where a
//! statement costs no round trip). Held rows go ahead of any other statement of the write
//! job, in its round trip, so every statement sees them (but for the lookups that say they
//! read no Observations, `Connection::query_two_reading_no_observations`, which a stream of
//! Observations to many Datastreams makes per job), and at the latest ahead of the
//! group's pending writes and its commit ([`Buffering::flush_group`]). Rows follow their job's
//! savepoint: a job that fails loses its own rows, and rows of earlier jobs that went out
//! inside its savepoint are held again. A send that fails fails the whole transaction
//! (`Connection::execute_deferred_for_transaction`: no rollback to a savepoint hides it), which
//! is then rolled back and reported as failed, every job of it.

use std::cell::RefCell;

use sql::{Dialect, Param};
use store::StoreError;

use crate::{Connection, SqlRow};

/// Rows of one table with the same columns, keys first.
#[derive(Debug)]
struct Held {
    table: String,
    columns: Vec<String>,
    keys: Vec<i64>,
    /// `columns.len()` values per row.
    values: Vec<Param>,
}

#[derive(Debug, Default)]
struct State {
    /// Rows of the jobs that succeeded, not sent yet.
    group: Vec<Held>,
    /// Rows of earlier jobs sent inside the running job's savepoint.
    sent_in_job: Vec<Held>,
    /// The running job's rows.
    job: Vec<Held>,
    /// Why a send failed: the group cannot commit.
    failed: Option<String>,
}

/// The writer's connection as its write jobs see it: inserts of a few Observations are held
/// (see the module's documentation).
pub struct Buffering<'c> {
    inner: &'c dyn Connection,
    dialect: &'c dyn Dialect,
    key: &'static str,
    state: RefCell<State>,
}

/// Held rows of one table and column list are sent in statements of at most this many rows
/// (PostgreSQL takes at most 65,535 parameters).
const ROWS_PER_STATEMENT: usize = 256;

impl<'c> Buffering<'c> {
    /// Holds rows keyed by the column `key`.
    pub fn new(inner: &'c dyn Connection, dialect: &'c dyn Dialect, key: &'static str) -> Buffering<'c> {
        Buffering { inner, dialect, key, state: RefCell::default() }
    }

    /// A job succeeded: its rows join the group's.
    pub fn job_succeeded(&self) {
        let mut state = self.state.borrow_mut();
        let job = std::mem::take(&mut state.job);
        state.group.extend(job);
        state.sent_in_job.clear();
    }

    /// A job failed and is rolled back to its savepoint: its rows go, and what went out inside
    /// the savepoint is held again.
    pub fn job_failed(&self) {
        let mut state = self.state.borrow_mut();
        state.job.clear();
        let sent = std::mem::take(&mut state.sent_in_job);
        let later = std::mem::replace(&mut state.group, sent);
        state.group.extend(later);
    }

    /// Sends every held row, before the group's pending writes and its commit: deferred, to
    /// go with them (a failure is then theirs, or the commit's, and fails the group as well).
    pub fn flush_group(&self) -> Result<(), StoreError> {
        let held = {
            let mut state = self.state.borrow_mut();
            if let Some(why) = &state.failed {
                return Err(failed(why));
            }
            let mut held = std::mem::take(&mut state.group);
            held.append(&mut state.job);
            held
        };
        self.send(&held)
    }

    /// Whether every row held (if any) is of `table`.
    fn holds_only(&self, table: &str) -> bool {
        let state = self.state.borrow();
        state.group.iter().chain(&state.job).all(|held| held.table == table)
    }

    /// Sends what is held with a statement of the running job, ahead of it.
    fn flush(&self) -> Result<(), StoreError> {
        let (group, job) = {
            let mut state = self.state.borrow_mut();
            if let Some(why) = &state.failed {
                return Err(failed(why));
            }
            if state.group.is_empty() && state.job.is_empty() {
                return Ok(());
            }
            (std::mem::take(&mut state.group), std::mem::take(&mut state.job))
        };
        let sent = self.send(&group).and_then(|()| self.send(&job));
        // The job's own rows go with it should it roll back; the group's are held again then.
        self.state.borrow_mut().sent_in_job.extend(group);
        sent
    }

    /// Defers `held` to go with the next statement, ahead of it in the same round trip; a
    /// failure fails the transaction (`Connection::execute_deferred_for_transaction`).
    fn send(&self, held: &[Held]) -> Result<(), StoreError> {
        let mut at = 0;
        while at < held.len() {
            // Consecutive runs of one table and column list, in one statement each.
            let first = &held[at];
            let mut end = at + 1;
            while end < held.len() && held[end].table == first.table && held[end].columns == first.columns {
                end += 1;
            }
            if let Err(e) = self.send_run(&held[at..end]) {
                self.state.borrow_mut().failed = Some(e.to_string());
                return Err(e);
            }
            at = end;
        }
        Ok(())
    }

    fn send_run(&self, run: &[Held]) -> Result<(), StoreError> {
        let first = &run[0];
        let width = first.columns.len() + 1;
        let mut params: Vec<Param> = Vec::with_capacity(ROWS_PER_STATEMENT * width);
        let mut rows = 0;
        let mut text: Option<(usize, String)> = None;
        let mut send = |params: &mut Vec<Param>, rows: usize| -> Result<(), StoreError> {
            let sql_text = match &text {
                Some((n, t)) if *n == rows => t.clone(),
                _ => {
                    let t = insert_text(self.dialect, &first.table, self.key, &first.columns, rows);
                    text = Some((rows, t.clone()));
                    t
                }
            };
            self.inner.execute_deferred_for_transaction(&sql_text, params)?;
            params.clear();
            Ok(())
        };
        for held in run {
            for (key, values) in held.keys.iter().zip(held.values.chunks(width - 1)) {
                params.push(Param::Integer(*key));
                params.extend(values.iter().cloned());
                rows += 1;
                if rows == ROWS_PER_STATEMENT {
                    send(&mut params, rows)?;
                    rows = 0;
                }
            }
        }
        if rows > 0 {
            send(&mut params, rows)?;
        }
        Ok(())
    }
}

fn failed(why: &str) -> StoreError {
    StoreError::Database(format!("held rows of the write group could not be written: {why}").into())
}

/// `INSERT INTO table (key, columns...) VALUES (...), ...` for `rows` rows.
fn insert_text(dialect: &dyn Dialect, table: &str, key: &str, columns: &[String], rows: usize) -> String {
    let names: Vec<&str> = std::iter::once(key).chain(columns.iter().map(String::as_str)).collect();
    sql::insert_rows(dialect, table, &names, rows)
}

impl Connection for Buffering<'_> {
    fn query(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.query(sql, params, each)
    }

    fn query_many(
        &self,
        queries: &[(&str, &[Param])],
        each: &mut dyn FnMut(usize, &dyn SqlRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.query_many(queries, each)
    }

    fn query_two_reading_no_observations(
        &self,
        first: (&str, &[Param]),
        second: (&str, &[Param]),
        each_first: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
        each_second: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if !self.holds_only(model::EntityType::Observation.table()) {
            self.flush()?;
        }
        self.inner.query_two(first, second, each_first, each_second)
    }

    fn query_large(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.query_large(sql, params, each)
    }

    fn query_ahead(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.query_ahead(sql, params, each)
    }

    fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        self.flush()?;
        self.inner.execute(sql, params)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.batch(sql)
    }

    fn batch_deferred(&self, sql: &str) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.batch_deferred(sql)
    }

    fn execute_deferred(&self, sql: &str, params: &[Param]) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.execute_deferred(sql, params)
    }

    fn execute_deferred_for_transaction(&self, sql: &str, params: &[Param]) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.execute_deferred_for_transaction(sql, params)
    }

    fn flush_deferred(&self) -> Result<(), StoreError> {
        self.flush()?;
        self.inner.flush_deferred()
    }

    fn set_deadline(&self, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        self.inner.set_deadline(deadline)
    }

    fn lift_deadline_when(&self, lifted: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.inner.lift_deadline_when(lifted);
    }

    fn bulk_insert(
        &self,
        table: &str,
        key: &str,
        columns: &[&str],
        rows: &[Param],
    ) -> Result<Option<Vec<i64>>, StoreError> {
        self.flush()?;
        self.inner.bulk_insert(table, key, columns, rows)
    }

    fn reserve_key(&self, table: &str, key: &str) -> Result<Option<i64>, StoreError> {
        self.inner.reserve_key(table, key)
    }

    /// Held when every row gets a reserved key; the keys in row order.
    fn hold_insert(
        &self,
        table: &str,
        key: &str,
        columns: &[&str],
        rows: &[Param],
    ) -> Result<Option<Vec<i64>>, StoreError> {
        let width = columns.len();
        if key != self.key || width == 0 || !rows.len().is_multiple_of(width) {
            return Ok(None);
        }
        let count = rows.len() / width;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            match self.inner.reserve_key(table, key)? {
                Some(k) => keys.push(k),
                None => return Ok(None),
            }
        }
        let held = Held {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            keys: keys.clone(),
            values: rows.to_vec(),
        };
        self.state.borrow_mut().job.push(held);
        Ok(Some(keys))
    }
}
