//! The PostgreSQL/PostGIS backend: the store behaviour of the embedded SQLite backend on a
//! database several Thingbase nodes can share.
//!
//! The same shape as SQLite's: one writer thread with its own connection commits queued write
//! jobs in groups (`store_sql::commit`), and a pool of reader threads with their own
//! connections serves reads. Statements come from the one `sql` compiler in
//! [`sql::PostgresDialect`]; reading and writing entities is `store_sql`'s. Migrations in
//! `migrations/` run at start-up under an advisory lock, so nodes starting together apply each
//! once.
//!
//! Must not depend on any other backend.

mod connection;
mod migrate;
mod partitions;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use odata::Visibility;
use store::{ReadJob, Store, StoreError, WriteDone, WriteJob};
use store_sql::commit::Queued;
use store_sql::{Access, Connection, ProjectCache};

pub use crate::connection::PgConnection;
use crate::connection::db_error;

const DIALECT: sql::PostgresDialect = sql::PostgresDialect;

#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database` (or key=value connection settings).
    pub url: String,
    pub readers: usize,
    /// Writer connections, each committing groups of jobs (PostgreSQL takes writes from many
    /// sessions at once; derived times are written once per group, so writers hold a busy
    /// Datastream's row lock only while they commit). One by default: with several, the
    /// publishes one MQTT connection has in flight together may be committed, and so stored
    /// and notified, in another order than sent.
    pub writers: usize,
    /// The most write jobs committed in one transaction.
    pub max_group: usize,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions { url: url.into(), readers: 4, writers: 1, max_group: 1024 }
    }
}

/// A PostgreSQL database with this node's writer and readers.
pub struct PostgresStore {
    options: PostgresOptions,
    writes: Mutex<Option<SyncSender<Queued>>>,
    reads: Mutex<Option<SyncSender<(Visibility, ReadJob)>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set by `shutdown`: the listener thread stops.
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

fn connect(options: &PostgresOptions) -> Result<PgConnection, StoreError> {
    let client = postgres::Client::connect(&options.url, postgres::NoTls).map_err(db_error)?;
    let conn = PgConnection::new(client);
    // Instants are integers and text is compared as bytes: nothing depends on the session's
    // time zone or collation but the statements' own `AT TIME ZONE 'UTC'`.
    conn.batch("SET TIME ZONE 'UTC'")?;
    Ok(conn)
}

impl PostgresStore {
    /// Connects, applies migrations and starts the writer and reader threads.
    pub fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let writer = connect(&options)?;
        migrate::run(&writer)?;
        let partitioned = partitions::native(&writer)?;
        if partitioned {
            partitions::maintain(&writer);
        }
        let mut threads = Vec::new();
        let (write_tx, write_rx) = mpsc::sync_channel::<Queued>(options.max_group * 4);
        let write_rx = Arc::new(Mutex::new(write_rx));
        let max_group = options.max_group.max(1);
        let mut first = Some(writer);
        for i in 0..options.writers.max(1) {
            let conn = match first.take() {
                Some(conn) => conn,
                None => connect(&options)?,
            };
            let rx = Arc::clone(&write_rx);
            // One writer keeps the partitions; any would do.
            let maintains = partitioned && i == 0;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("postgres-writer-{i}"))
                    .spawn(move || write_loop(conn, rx, max_group, maintains))
                    .map_err(|e| StoreError::Database(Box::new(e)))?,
            );
        }
        let (read_tx, read_rx) = mpsc::sync_channel::<(Visibility, ReadJob)>(1024);
        let read_rx = Arc::new(Mutex::new(read_rx));
        for i in 0..options.readers.max(1) {
            let conn = connect(&options)?;
            let rx = Arc::clone(&read_rx);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("postgres-reader-{i}"))
                    .spawn(move || read_loop(conn, rx))
                    .map_err(|e| StoreError::Database(Box::new(e)))?,
            );
        }
        Ok(PostgresStore {
            options,
            stopping: Arc::default(),
            writes: Mutex::new(Some(write_tx)),
            reads: Mutex::new(Some(read_tx)),
            threads: Mutex::new(threads),
        })
    }
}

impl Store for PostgresStore {
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

    fn listen(&self, listener: store::Listener) -> bool {
        let (options, stopping) = (self.options.clone(), self.stopping.clone());
        let spawned = std::thread::Builder::new()
            .name("postgres-listener".into())
            .spawn(move || listen_loop(&options, &stopping, &*listener));
        match spawned {
            Ok(thread) => {
                if let Ok(mut threads) = self.threads.lock() {
                    threads.push(thread);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot start the listener of other nodes' changes"),
        }
        true
    }

    fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
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

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_loop(conn: PgConnection, jobs: Arc<Mutex<Receiver<(Visibility, ReadJob)>>>) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let (visibility, job) = job;
        // Each read sees one snapshot, as a SQLite read transaction does.
        let _ = conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        let mut access =
            Access { conn: &conn, dialect: &DIALECT, visibility: &visibility, projects: None, pending: None };
        // A panicking job must not take the reader down with it; its caller sees the dropped
        // reply channel as an internal error.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut access)));
        let _ = conn.batch("COMMIT");
    }
}

/// One of the writers: takes every job waiting (up to `max_group`) as one group, commits it,
/// and comes back for more; while it commits, the next writer takes what arrives. Each writer
/// has its own project cache: PostgreSQL never gives a deleted entity's id again, and
/// entities do not change project, so another writer's entries cannot mislead it.
fn write_loop(conn: PgConnection, jobs: Arc<Mutex<Receiver<Queued>>>, max_group: usize, maintains: bool) {
    let mut group: Vec<Queued> = Vec::with_capacity(max_group);
    let mut projects = ProjectCache::default();
    let mut maintained = std::time::Instant::now();
    loop {
        if maintains && maintained.elapsed() >= partitions::EVERY {
            partitions::maintain(&conn);
            maintained = std::time::Instant::now();
        }
        {
            let Ok(queue) = jobs.lock() else { return };
            match queue.recv_timeout(Duration::from_secs(60)) {
                Ok(first) => group.push(first),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while group.len() < max_group {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        store_sql::commit::commit_group(&conn, &DIALECT, "BEGIN", &mut group, &mut projects);
    }
}

/// Receives the announcements of every node (`LISTEN`), reconnecting after a lost connection,
/// until the store shuts down. Announcements made while the connection was down are lost:
/// they are notifications, not data (the data is in the database).
fn listen_loop(options: &PostgresOptions, stopping: &AtomicBool, listener: &(dyn Fn(&str) + Send + Sync)) {
    let mut failures = 0u32;
    while !stopping.load(Ordering::Relaxed) {
        let client = postgres::Client::connect(&options.url, postgres::NoTls)
            .and_then(|mut client| client.batch_execute(&format!("LISTEN {}", sql::ANNOUNCE_CHANNEL)).map(|()| client));
        let mut client = match client {
            Ok(client) => {
                failures = 0;
                client
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "cannot listen to other nodes' changes; retrying");
                std::thread::sleep(Duration::from_millis(100 * u64::from(failures.min(50))));
                continue;
            }
        };
        loop {
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            if client.is_closed() {
                break;
            }
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(Duration::from_millis(250));
            match waiting.next() {
                Ok(Some(notification)) => listener(notification.payload()),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection that listens to other nodes' changes");
                    break;
                }
            }
        }
    }
}
