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
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use odata::Visibility;
use rusqlite::{Connection, OpenFlags};
use store::{ReadJob, Store, StoreError, WriteDone, WriteJob};

use store_sql::commit::Queued;
use store_sql::{Access, ProjectCache};

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
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> SqliteOptions {
        SqliteOptions { path: path.into(), readers: 4, durability: Durability::Process, max_group: 1024 }
    }
}

/// A SQLite database file with its writer and readers.
pub struct SqliteStore {
    writes: Mutex<Option<SyncSender<Queued>>>,
    reads: Mutex<Option<SyncSender<(Visibility, ReadJob)>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
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
        let mut threads = Vec::new();

        let (write_tx, write_rx) = mpsc::sync_channel::<Queued>(options.max_group * 4);
        let max_group = options.max_group.max(1);
        threads.push(
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || write_loop(writer, write_rx, max_group))
                .map_err(|e| StoreError::Database(Box::new(e)))?,
        );

        let (read_tx, read_rx) = mpsc::sync_channel::<(Visibility, ReadJob)>(1024);
        let read_rx = Arc::new(Mutex::new(read_rx));
        for i in 0..options.readers.max(1) {
            let conn = open_connection(&options.path, &options, false)?;
            let rx = Arc::clone(&read_rx);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sqlite-reader-{i}"))
                    .spawn(move || read_loop(conn, rx))
                    .map_err(|e| StoreError::Database(Box::new(e)))?,
            );
        }
        Ok(SqliteStore {
            writes: Mutex::new(Some(write_tx)),
            reads: Mutex::new(Some(read_tx)),
            threads: Mutex::new(threads),
        })
    }
}

impl Store for SqliteStore {
    fn read(&self, visibility: Visibility, job: ReadJob) {
        let sender = self.reads.lock().ok().and_then(|s| s.clone());
        if let Some(sender) = sender {
            // A full queue waits: back-pressure instead of unbounded memory.
            let _ = sender.send((visibility, job));
        }
    }

    fn write(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        let sender = self.writes.lock().ok().and_then(|s| s.clone());
        match sender {
            Some(sender) => match sender.try_send(Queued { visibility, job, done }) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => {
                    if let Err(mpsc::SendError(item)) = sender.send(item) {
                        (item.done)(Err(StoreError::ShuttingDown));
                    }
                }
                Err(TrySendError::Disconnected(item)) => (item.done)(Err(StoreError::ShuttingDown)),
            },
            None => done(Err(StoreError::ShuttingDown)),
        }
    }

    fn shutdown(&self) {
        if let Ok(mut w) = self.writes.lock() {
            w.take();
        }
        if let Ok(mut r) = self.reads.lock() {
            r.take();
        }
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

const DIALECT: sql::SqliteDialect = sql::SqliteDialect;

fn read_loop(conn: Connection, jobs: Arc<Mutex<Receiver<(Visibility, ReadJob)>>>) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let (visibility, job) = job;
        let connection = SqliteConnection(&conn);
        // Each read sees one snapshot (a page and its count, an export), as on PostgreSQL.
        let _ = conn.execute_batch("BEGIN");
        let mut access =
            Access { conn: &connection, dialect: &DIALECT, visibility: &visibility, projects: None, pending: None };
        // A panicking job must not take the reader down with it; its caller sees the dropped
        // reply channel as an internal error.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut access)));
        let _ = conn.execute_batch("COMMIT");
    }
}

/// Takes every queued job (up to `max_group`), runs them in one transaction with a savepoint
/// each, commits, then reports.
fn write_loop(conn: Connection, jobs: Receiver<Queued>, max_group: usize) {
    let mut group: Vec<Queued> = Vec::with_capacity(max_group);
    let mut projects = ProjectCache::default();
    loop {
        match jobs.recv_timeout(Duration::from_secs(60)) {
            Ok(first) => group.push(first),
            Err(RecvTimeoutError::Timeout) => {
                let _ = conn.execute_batch("PRAGMA optimize;");
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while group.len() < max_group {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        store_sql::commit::commit_group(
            &SqliteConnection(&conn),
            &DIALECT,
            "BEGIN IMMEDIATE",
            &mut group,
            &mut projects,
        );
    }
    let _ = conn.execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);");
}
