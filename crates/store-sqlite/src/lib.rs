//! The embedded SQLite backend: one file, no setup.
//!
//! One writer thread owns the only write connection and commits queued write jobs in groups:
//! it takes every job waiting (up to a bound), runs each in its own savepoint inside one
//! transaction, commits, and only then reports each job's outcome. A pool of reader threads with
//! their own connections serves reads concurrently (WAL mode lets readers and the writer run
//! side by side).
//!
//! Must not depend on any other backend.

mod connection;
mod functions;
mod migrate;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use odata::Visibility;
use rusqlite::{Connection, OpenFlags};
use store::{ReadJob, Store, StoreError, WriteDone, WriteJob};
use store_sql::ProjectCache;
use store_sql::queues::{Next, Queues, WriteQueue, take_group};

use crate::connection::{SqliteConnection, db_error};

/// How hard a commit presses on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: a crash of the process loses nothing committed; a power
    /// loss may lose the last commits.
    Process,
    /// `synchronous=FULL`: every commit survives a power loss.
    PowerLoss,
}

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub readers: usize,
    pub durability: Durability,
    /// The most write jobs committed in one transaction.
    pub max_group: usize,
    /// Whether rollups are kept as Observations are written (docs/timeseries.md).
    pub rollups: bool,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> SqliteOptions {
        SqliteOptions { path: path.into(), readers: 4, durability: Durability::Process, max_group: 1024, rollups: true }
    }
}

/// A SQLite database file with its writer and readers.
pub struct SqliteStore {
    queues: Queues,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn open_connection(path: &Path, options: &SqliteOptions, write: bool) -> Result<Connection, StoreError> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(db_error)?;
    let synchronous = match options.durability {
        Durability::Process => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    if write {
        conn.execute_batch("PRAGMA journal_mode = WAL;").map_err(db_error)?;
        // The query planner stability guarantee: without it SQLite (built with STAT4) marks
        // statements whose plan might depend on a bound value, such as the joins that find a
        // Datastream's Locations, and prepares them again at every new binding. On the writer,
        // whose statements are few and keyed by ids, that was a third of ingest time. Readers
        // keep re-planning: their ranges and filters can profit from it.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(db_error)?;
    }
    // Page caches are per connection and count towards the process's memory; the OS page cache
    // holds the file anyway. The writer gets more for its index pages; readers stay small.
    let cache_kib = if write { 16_000 } else { 4_000 };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = 10000; PRAGMA cache_size = -{cache_kib}; PRAGMA temp_store = MEMORY;"
    ))
    .map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(256);
    functions::register(&conn).map_err(db_error)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (or creates) the database file, applies migrations and starts the writer and
    /// reader threads.
    pub fn open(options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let writer = open_connection(&options.path, &options, true)?;
        migrate::run(&writer)?;
        let (queues, mut lanes, reads) = Queues::new(options.max_group, 1);
        let writes = lanes.remove(0);
        let (max_group, rollups) = (options.max_group.max(1), options.rollups);
        queues.spawn("sqlite-writer".into(), move || write_loop(writer, writes, max_group, rollups))?;
        for i in 0..options.readers.max(1) {
            let mut conn = open_connection(&options.path, &options, false)?;
            let deadline = connection::Deadline::default();
            connection::watch_deadline(&mut conn, &deadline)?;
            let reads = reads.clone();
            queues.spawn(format!("sqlite-reader-{i}"), move || {
                store_sql::queues::read_loop(&SqliteConnection(&conn, Some(&deadline)), &DIALECT, "BEGIN", &reads);
            })?;
        }
        Ok(SqliteStore { queues })
    }
}

impl Store for SqliteStore {
    fn read(&self, visibility: Visibility, job: ReadJob) {
        self.queues.read(visibility, job);
    }

    fn write(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        self.queues.write(visibility, job, done);
    }

    fn shutdown(&self) {
        self.queues.shutdown();
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

const DIALECT: sql::SqliteDialect = sql::SqliteDialect;

/// The one writer: commits groups of jobs (`store_sql::commit`), and lets SQLite update its
/// statistics when idle and on the way out.
fn write_loop(conn: Connection, jobs: WriteQueue, max_group: usize, rollups: bool) {
    let mut group = Vec::with_capacity(max_group);
    let mut projects = ProjectCache::default();
    loop {
        match take_group(&jobs, &mut group, max_group, Duration::from_secs(60)) {
            Next::Group => store_sql::commit::commit_group(
                &SqliteConnection(&conn, None),
                &DIALECT,
                "BEGIN IMMEDIATE",
                &mut group,
                &mut projects,
                rollups,
            ),
            Next::Idle => {
                let _ = conn.execute_batch("PRAGMA optimize;");
            }
            Next::Closed => break,
        }
    }
    let _ = conn.execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);");
}
