//! The database's collation, which orders and compares texts (`$orderby=name`,
//! `$filter=name gt 'B'`). SQLite compares bytes; a database made with a language's collation
//! (`en_US.UTF-8`) puts `alpha` before `Bravo` where SQLite and the C collation put it after.
//! Thingbase works with either; it says which one it found.

use store::StoreError;

use crate::connection::PgConnection;
use store_sql::query_one;

/// Collations that order UTF-8 text as its bytes, as SQLite does.
const BYTE_ORDER: [&str; 4] = ["C", "POSIX", "C.UTF-8", "C.utf8"];

/// Whether the database orders texts as SQLite does (by bytes); logs a warning otherwise.
pub fn check(conn: &PgConnection) -> Result<bool, StoreError> {
    // An ICU collation (`datlocprovider` 'i', PostgreSQL 15) orders by language whatever
    // `datcollate` says.
    let found = query_one(
        conn,
        "SELECT CASE WHEN CAST(datlocprovider AS text) = 'i' THEN 'ICU ' || daticulocale ELSE datcollate END \
         FROM pg_database WHERE datname = current_database()",
        &[],
        |row| row.text(0),
    )?;
    let collation = found.flatten().unwrap_or_default();
    let bytes = BYTE_ORDER.contains(&collation.as_str());
    if !bytes {
        tracing::warn!(
            collation = %collation,
            "texts order and compare by this database's collation, not by their bytes as on SQLite; \
             create the database with --locale=C (docs/postgres.md) for the same order on both"
        );
    }
    Ok(bytes)
}
