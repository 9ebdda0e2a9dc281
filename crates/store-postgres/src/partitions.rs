//! The monthly partitions of `observations` (migration 0002): created for the months around
//! now when the store opens and every hour after, ahead of the data. When the table is no
//! longer natively partitioned (an operator turned it into a TimescaleDB hypertable or a Citus
//! distributed table, see `docs/postgres.md`), partitions are that extension's business and
//! this does nothing.

use std::time::Duration;

use store_sql::{Param, StoreError, query_one};

use crate::PgConnection;

/// How often the partitions are checked.
pub const EVERY: Duration = Duration::from_secs(60 * 60);

/// Months before and after the current one that must have a partition.
const MONTHS_BEFORE: i64 = 1;
const MONTHS_AFTER: i64 = 3;

/// Whether `observations` is natively partitioned; says what it is otherwise.
pub fn native(conn: &PgConnection) -> Result<bool, StoreError> {
    let found = query_one(
        conn,
        "SELECT CAST(c.relkind AS text), \
         (SELECT string_agg(extname, ', ' ORDER BY extname) FROM pg_extension WHERE extname IN ('timescaledb', 'citus')) \
         FROM pg_class c WHERE c.oid = to_regclass('observations')",
        &[],
        |row| Ok((row.text(0)?, row.text(1)?)),
    )?;
    let Some((kind, extensions)) = found else {
        return Err(StoreError::Database("the observations table is missing".into()));
    };
    let native = kind.as_deref() == Some("p");
    if !native {
        tracing::info!(
            extensions = extensions.as_deref().unwrap_or("none"),
            "observations are not natively partitioned; their partitions (chunks, shards) are left to the database"
        );
    }
    Ok(native)
}

/// Creates the missing partitions around now; failures are logged (rows of a month without
/// its partition still go to the default one).
pub fn maintain(conn: &PgConnection) {
    let now = model::Instant::now().micros();
    let made = query_one(
        conn,
        "SELECT tb_observation_partitions($1, CAST($2 AS integer), CAST($3 AS integer))",
        &[Param::Integer(now), Param::Integer(MONTHS_BEFORE), Param::Integer(MONTHS_AFTER)],
        |row| row.integer(0),
    );
    match made {
        Ok(Some(Some(made))) if made > 0 => tracing::info!(made, "created monthly partitions of observations"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot create the monthly partitions of observations"),
    }
}
