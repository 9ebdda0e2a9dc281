//! A rusqlite connection as the shared store code (`store_sql`) uses it: statements from its
//! statement cache, parameters borrowed rather than copied, cells read by kind.

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};
use store_sql::{Number, Param, SqlRow, StoreError};

pub fn db_error(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(code, message) = &error {
        if code.code == rusqlite::ErrorCode::ConstraintViolation {
            return StoreError::Conflict(message.clone().unwrap_or_else(|| "constraint violated".into()));
        }
        // Stopped by the progress handler at the read's deadline (see `Deadline`).
        if code.code == rusqlite::ErrorCode::OperationInterrupted {
            return store_sql::over_budget();
        }
    }
    StoreError::Database(Box::new(error))
}

/// When the statements of a reader's current job must stop, unless the flag says the deadline
/// was lifted; its progress handler looks.
pub type Deadline = std::sync::Arc<std::sync::Mutex<DeadlineSlot>>;

#[derive(Default)]
pub struct DeadlineSlot {
    at: Option<std::time::Instant>,
    lifted: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl DeadlineSlot {
    fn passed(&self) -> bool {
        let lifted = self.lifted.as_ref().is_some_and(|l| l.load(std::sync::atomic::Ordering::Relaxed));
        !lifted && self.at.is_some_and(|at| std::time::Instant::now() >= at)
    }
}

/// Makes `conn` stop any statement running past what `deadline` holds.
pub fn watch_deadline(conn: &mut rusqlite::Connection, deadline: &Deadline) -> Result<(), StoreError> {
    let deadline = std::sync::Arc::clone(deadline);
    // Every 1,000 virtual-machine steps (some microseconds): the clock costs nothing then.
    conn.progress_handler(1_000, Some(move || deadline.lock().map(|slot| slot.passed()).unwrap_or(false)))
        .map_err(db_error)
}

/// One SQLite connection, and for a reader the deadline its progress handler watches.
pub struct SqliteConnection<'c>(pub &'c rusqlite::Connection, pub Option<&'c Deadline>);

/// A parameter bound as SQLite stores it: booleans as 0 and 1, JSON as text, id lists as a JSON
/// array (`json_each` reads it).
struct Bound<'p>(&'p Param);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Param::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Param::Boolean(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Param::Text(s) | Param::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::IdList(ids) => {
                let mut list = String::with_capacity(ids.len() * 8 + 2);
                list.push('[');
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        list.push(',');
                    }
                    list.push_str(itoa::Buffer::new().format(*id));
                }
                list.push(']');
                ToSqlOutput::Owned(rusqlite::types::Value::Text(list))
            }
        })
    }
}

/// The parameters a prepared statement takes, bound in order. A statement may use fewer than it
/// was given: the compiler numbers every part of a literal, and one read in part (an interval's
/// start, in `month(2024-01-01T00:00:00Z/2024-01-02T00:00:00Z)`) leaves its last unused, which
/// SQLite refuses to be given (PostgreSQL is told each parameter's type and takes it).
fn bound(taken: usize, params: &[Param]) -> impl Iterator<Item = Bound<'_>> {
    params[..params.len().min(taken)].iter().map(Bound)
}

struct Row<'r, 's>(&'r rusqlite::Row<'s>);

impl SqlRow for Row<'_, '_> {
    fn integer(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.0.get(i).map_err(db_error)
    }

    fn number(&self, i: usize) -> Result<Option<Number>, StoreError> {
        Ok(match self.0.get_ref(i).map_err(db_error)? {
            ValueRef::Integer(n) => Some(Number::Integer(n)),
            ValueRef::Real(r) => Some(Number::Real(r)),
            _ => None,
        })
    }

    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.0.get(i).map_err(db_error)
    }

    fn boolean(&self, i: usize) -> Result<Option<bool>, StoreError> {
        Ok(self.integer(i)?.map(|b| b != 0))
    }

    fn json(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.text(i)
    }
}

impl store_sql::Connection for SqliteConnection<'_> {
    fn query(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&dyn SqlRow) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_error)?;
        let params = rusqlite::params_from_iter(bound(stmt.parameter_count(), params));
        let mut rows = stmt.query(params).map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            if !each(&Row(row))? {
                break;
            }
        }
        Ok(())
    }

    fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db_error)?;
        let params = rusqlite::params_from_iter(bound(stmt.parameter_count(), params));
        Ok(stmt.execute(params).map_err(db_error)? as u64)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.0.execute_batch(sql).map_err(db_error)
    }

    fn set_deadline(&self, deadline: Option<std::time::Instant>) -> Result<(), StoreError> {
        if let Some(Ok(mut slot)) = self.1.map(|d| d.lock()) {
            slot.at = deadline;
            if deadline.is_none() {
                slot.lifted = None;
            }
        }
        Ok(())
    }

    fn lift_deadline_when(&self, lifted: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        if let Some(Ok(mut slot)) = self.1.map(|d| d.lock()) {
            slot.lifted = Some(lifted);
        }
    }
}
