//! The store's `Reader`, `Writer` and `Principals` for every SQL backend, written once: the
//! statements come from the `sql` compiler in the backend's [`Dialect`], values are bound and
//! rows decoded by property kind (`values`), and `$expand` runs one statement per expand item.
//! A backend provides a [`Connection`]: how to run a statement with [`Param`]s and read the
//! cells of its rows. Group commit (`commit`) is shared too; connections, pools and
//! migrations stay the backend's.
//!
//! Must not depend on any backend.

mod access;
mod buffer;
pub mod commit;
mod count;
mod devices;
mod dump;
mod principals;
pub mod queues;
pub mod statistics;
mod values;

pub use access::{Access, GroupMemo, ProjectCache, over_budget};
pub use sql::{Dialect, Param};
pub use store::StoreError;

/// A number as a database holds it: integers stay integers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Integer(i64),
    Real(f64),
}

/// The cells of one result row, by 0-based column. Every getter answers `None` for NULL and an
/// error for a cell of another type.
pub trait SqlRow {
    fn integer(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn number(&self, i: usize) -> Result<Option<Number>, StoreError>;
    fn text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn boolean(&self, i: usize) -> Result<Option<bool>, StoreError>;
    /// The JSON text of a JSON column, as stored.
    fn json(&self, i: usize) -> Result<Option<String>, StoreError>;

    /// A cell that must not be NULL.
    fn required_integer(&self, i: usize) -> Result<i64, StoreError> {
        self.integer(i)?.ok_or_else(|| StoreError::Database(format!("column {i} is NULL").into()))
    }

    fn required_text(&self, i: usize) -> Result<String, StoreError> {
        self.text(i)?.ok_or_else(|| StoreError::Database(format!("column {i} is NULL").into()))
    }
}

/// One database connection as the shared code uses it. Statements are identified by their text
/// (backends cache what they prepare); parameters are numbered from 1 in `params` order.
/// Inside a write job every call runs in the job's transaction.
pub trait Connection {
    /// Runs a query and calls `each` per row until it returns `false`. `each` may run other
    /// statements on the same connection.
    fn query(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;

    /// Two queries, in one round trip where the backend pipelines them: the rows of `first`
    /// go to `each_first`, then those of `second` to `each_second` (each until it returns
    /// `false`); neither may run statements on this connection.
    fn query_two(
        &self,
        first: (&str, &[Param]),
        second: (&str, &[Param]),
        each_first: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
        each_second: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        // Through `query_many`, which a backend pipelines; each callback stops only its own.
        let mut open = [true, true];
        self.query_many(&[first, second], &mut |i, row| {
            if open[i] {
                open[i] = if i == 0 { each_first(row)? } else { each_second(row)? };
            }
            Ok(())
        })
    }

    /// Several queries, in one round trip where the backend pipelines them: the rows of the
    /// `i`-th go to `each(i, row)`; `each` may not run statements on this connection.
    fn query_many(
        &self,
        queries: &[(&str, &[Param])],
        each: &mut dyn FnMut(usize, &dyn SqlRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for (i, (sql, params)) in queries.iter().enumerate() {
            self.query(sql, params, &mut |row| each(i, row).map(|()| true))?;
        }
        Ok(())
    }

    /// [`Connection::query_two`] of queries that read no Observations: rows a writer holds
    /// back for its group (`buffer`) may then stay held, to go with later ones in one insert.
    fn query_two_reading_no_observations(
        &self,
        first: (&str, &[Param]),
        second: (&str, &[Param]),
        each_first: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
        each_second: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.query_two(first, second, each_first, each_second)
    }

    /// [`Connection::query`] for a result that may be large: where reading it whole before the
    /// first row would delay the answer (PostgreSQL), it is read in pieces as `each` goes.
    fn query_large(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.query(sql, params, each)
    }

    /// [`Connection::query_large`] for an `each` that runs no statement on this connection:
    /// the backend may read on while it works.
    fn query_ahead(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.query_large(sql, params, each)
    }

    /// Runs a statement; returns the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, StoreError>;

    /// Runs statements without parameters (transaction control).
    fn batch(&self, sql: &str) -> Result<(), StoreError>;

    /// [`Connection::batch`], but it may wait to go with the next statement, saving a round
    /// trip to a server. Its failure is then that statement's, and fails every later one until
    /// a `ROLLBACK` ends the transaction, so no statement after it can seem to succeed (nor a
    /// `COMMIT`: PostgreSQL answers one in a failed transaction by rolling back).
    fn batch_deferred(&self, sql: &str) -> Result<(), StoreError> {
        self.batch(sql)
    }

    /// [`Connection::execute`] of a statement whose row count nobody needs, which may wait
    /// to go with the next statement. Its failure is then that statement's (or
    /// [`Connection::flush_deferred`]'s), as if it had run then.
    fn execute_deferred(&self, sql: &str, params: &[Param]) -> Result<(), StoreError> {
        self.execute(sql, params).map(drop)
    }

    /// [`Connection::execute_deferred`] of a statement that belongs to the whole transaction
    /// rather than to the statement it goes with (rows held for the write group): its failure
    /// fails every later statement until a `ROLLBACK`, as [`Connection::batch_deferred`]'s
    /// does, so that rolling back to a savepoint cannot hide it.
    fn execute_deferred_for_transaction(&self, sql: &str, params: &[Param]) -> Result<(), StoreError> {
        self.execute(sql, params).map(drop)
    }

    /// Sends whatever waits to go with the next statement, and answers for it.
    fn flush_deferred(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Ends the transaction: runs the statements of `finish` (without parameters, the last of
    /// them the `COMMIT`) and, once they all succeeded, `after` (statements without parameters)
    /// in a transaction of its own. A backend with round trips sends what was deferred, both
    /// and the statements between in one. `Err` when the transaction did not commit;
    /// `Ok(Err(_))` when it did but `after` failed.
    fn commit_then(&self, finish: &[&str], after: Option<&str>) -> Result<Result<(), StoreError>, StoreError> {
        for statement in finish {
            self.batch(statement)?;
        }
        Ok(after.map_or(Ok(()), |after| self.batch(after)))
    }

    /// Stops statements that run past `deadline` (inside the current read transaction; `None`
    /// lifts it), failing them with `StoreError::OverBudget`. Backends without a way to do so
    /// ignore it.
    fn set_deadline(&self, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        let _ = deadline;
        Ok(())
    }

    /// The deadline stops applying once `lifted` is true (until the next `set_deadline`).
    fn lift_deadline_when(&self, lifted: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let _ = lifted;
    }

    /// Inserts many rows of `table` at once (`rows` holds `columns.len()` values per row) by
    /// the database's bulk path, with keys `key` taken from its generator; returns the keys in
    /// row order, or `None` when the backend has no faster way than a multi-row INSERT.
    fn bulk_insert(
        &self,
        table: &str,
        key: &str,
        columns: &[&str],
        rows: &[Param],
    ) -> Result<Option<Vec<i64>>, StoreError> {
        let _ = (table, key, columns, rows);
        Ok(None)
    }

    /// A key of `table`'s column `key` from its generator, for a row inserted later; `None`
    /// when the backend cannot draw keys ahead.
    fn reserve_key(&self, table: &str, key: &str) -> Result<Option<i64>, StoreError> {
        let _ = (table, key);
        Ok(None)
    }

    /// Inserts rows as [`Connection::bulk_insert`] does, but may hold them to be sent with
    /// others later (a write group's connection, see `buffer`): the keys in row order, or
    /// `None` when the rows are not held.
    fn hold_insert(
        &self,
        table: &str,
        key: &str,
        columns: &[&str],
        rows: &[Param],
    ) -> Result<Option<Vec<i64>>, StoreError> {
        let _ = (table, key, columns, rows);
        Ok(None)
    }
}

/// The first row of a query, turned into a `T`.
pub fn query_one<T>(
    conn: &dyn Connection,
    sql: &str,
    params: &[Param],
    mut each: impl FnMut(&dyn SqlRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut found = None;
    conn.query(sql, params, &mut |row| {
        found = Some(each(row)?);
        Ok(false)
    })?;
    Ok(found)
}

/// The rows of a query, each turned into a `T`.
pub fn query_all<T>(
    conn: &dyn Connection,
    sql: &str,
    params: &[Param],
    mut each: impl FnMut(&dyn SqlRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    conn.query(sql, params, &mut |row| {
        out.push(each(row)?);
        Ok(true)
    })?;
    Ok(out)
}
