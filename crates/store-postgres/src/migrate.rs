//! The migration runner: numbered SQL files embedded in the binary, applied in order, each in
//! its own transaction, recorded with a checksum so an edited migration is noticed. Nodes
//! starting at once take turns through an advisory lock, so each file runs once.

use store_sql::{Connection, Param, StoreError, query_one};

use crate::PgConnection;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "partitioned_observations", include_str!("../migrations/0002_partitioned_observations.sql")),
    (3, "devices", include_str!("../migrations/0003_devices.sql")),
    (4, "device_mud", include_str!("../migrations/0004_device_mud.sql")),
    (5, "time_series", include_str!("../migrations/0005_time_series.sql")),
    (6, "observation_order", include_str!("../migrations/0006_observation_order.sql")),
];

/// The advisory lock key of migrations ("thingbase" in ASCII, folded into 63 bits).
const LOCK: i64 = 0x7468_696e_6762_6173;

fn checksum(text: &str) -> i64 {
    // FNV-1a, as the SQLite backend: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

pub fn run(conn: &PgConnection) -> Result<(), StoreError> {
    conn.batch(&format!("SELECT pg_advisory_lock({LOCK})"))?;
    let result = apply(conn);
    let unlocked = conn.batch(&format!("SELECT pg_advisory_unlock({LOCK})"));
    result.and(unlocked)
}

fn apply(conn: &PgConnection) -> Result<(), StoreError> {
    conn.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version bigint PRIMARY KEY, name text NOT NULL, checksum bigint NOT NULL)",
    )?;
    for (version, name, text) in MIGRATIONS {
        let applied = query_one(
            conn,
            "SELECT checksum FROM schema_migrations WHERE version = $1",
            &[Param::Integer(*version)],
            |row| row.required_integer(0),
        )?;
        match applied {
            Some(sum) if sum == checksum(text) => continue,
            Some(_) => {
                return Err(StoreError::Database(
                    format!("migration {version} ({name}) was changed after it was applied").into(),
                ));
            }
            None => {
                let apply = || -> Result<(), StoreError> {
                    conn.batch(&format!("BEGIN; {text}"))?;
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        &[Param::Integer(*version), Param::Text((*name).to_owned()), Param::Integer(checksum(text))],
                    )?;
                    conn.batch("COMMIT")
                };
                if let Err(e) = apply() {
                    let _ = conn.batch("ROLLBACK");
                    return Err(e);
                }
                tracing::info!(version, name, "applied migration");
            }
        }
    }
    Ok(())
}
