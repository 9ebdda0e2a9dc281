//! The migration runner: numbered SQL files embedded in the binary, applied in order, each in
//! its own transaction, recorded with a checksum so an edited migration is noticed.

use rusqlite::Connection;
use store::StoreError;

use crate::connection::db_error;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "observed_features", include_str!("../migrations/0002_observed_features.sql")),
    (3, "ordered_observed_properties", include_str!("../migrations/0003_ordered_observed_properties.sql")),
    (4, "projects", include_str!("../migrations/0004_projects.sql")),
    (5, "principals", include_str!("../migrations/0005_principals.sql")),
    (6, "audit", include_str!("../migrations/0006_audit.sql")),
    (7, "devices", include_str!("../migrations/0007_devices.sql")),
    (8, "device_mud", include_str!("../migrations/0008_device_mud.sql")),
    (9, "time_series", include_str!("../migrations/0009_time_series.sql")),
    (10, "observation_order", include_str!("../migrations/0010_observation_order.sql")),
];

fn checksum(text: &str) -> i64 {
    // FNV-1a: stable across builds and platforms, which `DefaultHasher` is not.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

pub fn run(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum INTEGER NOT NULL)",
    )
    .map_err(db_error)?;
    for (version, name, text) in MIGRATIONS {
        let applied: Option<i64> = conn
            .query_row("SELECT checksum FROM schema_migrations WHERE version = ?1", [version], |r| r.get(0))
            .map(Some)
            .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
            .map_err(db_error)?;
        match applied {
            Some(sum) if sum == checksum(text) => continue,
            Some(_) => {
                return Err(StoreError::Database(
                    format!("migration {version} ({name}) was changed after it was applied").into(),
                ));
            }
            None => {
                let apply = || -> rusqlite::Result<()> {
                    conn.execute_batch(&format!("BEGIN IMMEDIATE; {text}"))?;
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                        rusqlite::params![version, name, checksum(text)],
                    )?;
                    conn.execute_batch("COMMIT")
                };
                if let Err(e) = apply() {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(db_error(e));
                }
                tracing::info!(version, name, "applied migration");
            }
        }
    }
    Ok(())
}
