//! `$count` that never runs long: an exact count when it finishes within [`COUNT_TIME`] (and
//! the request's deadline), else an estimate that says it is one (`Rows::estimated`):
//! PostgreSQL's planner's, or a sample's on databases without a planner that estimates. Counts
//! of whole (Multi)Datastreams never get here: they are kept (`crate::statistics`).

use std::time::{Duration, Instant as Clock};

use model::{EntityType, Id, Instant};
use odata::{Expr, Visibility};
use sql::{Param, Statement};
use store::StoreError;

use crate::{Access, query_one};

/// How long an exact count may take before an estimate answers instead.
pub const COUNT_TIME: Duration = Duration::from_secs(1);

/// Entities a sample holds at most.
const SAMPLE: usize = 1_000;

/// Samples are seeded by the statement: the same question gets the same estimate.
type Dice = store::sample::SplitMix64;

fn seed(statement: &Statement) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    statement.sql.hash(&mut hasher);
    format!("{:?}", statement.params).hash(&mut hasher);
    hasher.finish()
}

impl Access<'_> {
    /// The count of `entity` under `constraint` and `filter`, and whether it is an estimate.
    pub(crate) fn bounded_count(
        &mut self,
        entity: EntityType,
        constraint: Option<&Expr>,
        filter: Option<&Expr>,
        now: Instant,
    ) -> Result<(u64, bool), StoreError> {
        let statement = sql::count(self.dialect, self.visibility, entity, filter, constraint, now);
        let Some(deadline) = self.deadline else {
            return Ok((self.scalar(&statement)?, false));
        };
        let limit = deadline.min(Clock::now() + self.count_time.unwrap_or(COUNT_TIME));
        if limit <= Clock::now() {
            return Ok((self.estimate(entity, constraint, filter, &statement, now)?, true));
        }
        self.conn.batch("SAVEPOINT tb_count")?;
        self.conn.set_deadline(Some(limit))?;
        let exact = self.scalar(&statement);
        let outcome = match exact {
            Ok(n) => {
                self.conn.batch("RELEASE SAVEPOINT tb_count")?;
                Ok(Some(n))
            }
            // Out of the count's time, not the request's: estimate instead.
            Err(StoreError::OverBudget(_)) if Clock::now() < deadline => {
                self.conn.batch("ROLLBACK TO SAVEPOINT tb_count")?;
                self.conn.batch("RELEASE SAVEPOINT tb_count")?;
                Ok(None)
            }
            // The count itself failed (a value past the database's range, say): what is said is
            // its error, and the transaction goes on from before it.
            Err(e) => {
                let _ = self.conn.batch("ROLLBACK TO SAVEPOINT tb_count");
                Err(e)
            }
        };
        let restored = self.conn.set_deadline(Some(deadline));
        let outcome = outcome?;
        restored?;
        match outcome {
            Some(n) => Ok((n, false)),
            None => Ok((self.estimate(entity, constraint, filter, &statement, now)?, true)),
        }
    }

    fn scalar(&self, statement: &Statement) -> Result<u64, StoreError> {
        let n = query_one(self.conn, &statement.sql, &statement.params, |row| row.required_integer(0))?
            .ok_or_else(|| StoreError::Database("a count without a row".into()))?;
        Ok(n.max(0) as u64)
    }

    fn estimate(
        &mut self,
        entity: EntityType,
        constraint: Option<&Expr>,
        filter: Option<&Expr>,
        count: &Statement,
        now: Instant,
    ) -> Result<u64, StoreError> {
        if let Some(explain) = self.dialect.explain(&count.sql) {
            let plan = query_one(self.conn, &explain, &count.params, |row| row.json(0))?.flatten();
            return Ok(plan.as_deref().and_then(planned_rows).unwrap_or(0));
        }
        let mut dice = store::sample::SplitMix64(seed(count));
        let (sample, population) = match (entity, crate::access::parent_of(constraint)) {
            (EntityType::Observation, Some((parent, id))) => self.sample_of_parent(parent, id, &mut dice)?,
            _ => self.sample_by_id(entity, &mut dice)?,
        };
        if sample.is_empty() || population == 0 {
            return Ok(0);
        }
        let all = Visibility::All;
        let present = sql::count_among(self.dialect, &all, entity, None, None, &sample, now);
        let present = self.scalar(&present)?;
        let matching = sql::count_among(self.dialect, self.visibility, entity, filter, constraint, &sample, now);
        let matching = self.scalar(&matching)?;
        if present == 0 {
            return Ok(0);
        }
        Ok((population as f64 * matching as f64 / present as f64).round() as u64)
    }

    /// Observations of one (Multi)Datastream at random instants of its time extent (the first
    /// at or after each), and how many it has.
    fn sample_of_parent(&self, parent: EntityType, id: Id, dice: &mut Dice) -> Result<(Vec<i64>, u64), StoreError> {
        let Some(summary) = crate::statistics::summary(self.conn, self.dialect, parent, id)? else {
            return Ok((Vec::new(), 0));
        };
        let (Some(latest), earliest) = (summary.latest, self.earliest(parent, id)?) else {
            return Ok((Vec::new(), 0));
        };
        let Some(earliest) = earliest else { return Ok((Vec::new(), 0)) };
        let span = (latest.start - earliest).max(0) as u64 + 1;
        let next = sql::statistics::next_observation(self.dialect, parent);
        let mut ids = Vec::with_capacity(SAMPLE);
        for _ in 0..SAMPLE.min(summary.observations as usize) {
            let at = earliest + (dice.next_u64() % span) as i64;
            if let Some(found) =
                query_one(self.conn, &next, &[Param::Integer(id.0), Param::Integer(at)], |row| row.required_integer(0))?
            {
                ids.push(found);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok((ids, summary.observations))
    }

    fn earliest(&self, parent: EntityType, id: Id) -> Result<Option<i64>, StoreError> {
        let sql_text =
            format!("SELECT phenomenon_time_start FROM {} WHERE id = {}", parent.table(), self.dialect.placeholder(1));
        Ok(query_one(self.conn, &sql_text, &[Param::Integer(id.0)], |row| row.integer(0))?.flatten())
    }

    /// Random ids between the table's least and greatest, and how many rows it has.
    fn sample_by_id(&self, entity: EntityType, dice: &mut Dice) -> Result<(Vec<i64>, u64), StoreError> {
        let observations = entity == EntityType::Observation;
        let range = sql::statistics::id_range(entity, !observations);
        let Some((Some(low), Some(high), rows)) = query_one(self.conn, &range, &[], |row| {
            Ok((row.integer(0)?, row.integer(1)?, row.integer(2)?.unwrap_or(0)))
        })?
        else {
            return Ok((Vec::new(), 0));
        };
        let population = if observations {
            let all = sql::count_from_summaries(self.dialect, &Visibility::All, None, Instant::now());
            self.scalar(&all)?
        } else {
            rows.max(0) as u64
        };
        let span = (high - low).max(0) as u64 + 1;
        let mut ids: Vec<i64> = (0..SAMPLE.min(span as usize)).map(|_| low + (dice.next_u64() % span) as i64).collect();
        ids.sort_unstable();
        ids.dedup();
        Ok((ids, population))
    }
}

/// The rows the planner expects a `SELECT COUNT(*)` to count: those of the node under the
/// aggregate, from `EXPLAIN (FORMAT JSON)`.
fn planned_rows(plan: &str) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_str(plan).ok()?;
    let top = json.get(0)?.get("Plan")?;
    let node = top.get("Plans").and_then(|plans| plans.get(0)).unwrap_or(top);
    node.get("Plan Rows")?.as_f64().map(|rows| rows.round().max(0.0) as u64)
}
