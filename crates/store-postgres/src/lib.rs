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

mod collation;
mod connection;
mod migrate;
mod partitions;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use odata::Visibility;
use store::{ReadJob, Store, StoreError, WriteDone, WriteJob};
use store_sql::queues::{Next, Queues, WriteQueue, take_group};
use store_sql::{Connection, ProjectCache};

pub use crate::connection::PgConnection;
use crate::connection::db_error;

const DIALECT: sql::PostgresDialect = sql::PostgresDialect;

#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database` (or key=value connection settings).
    pub url: String,
    pub readers: usize,
    /// Writer connections, each committing groups of the jobs of its lane (`store_sql::queues`:
    /// the writes of one (Multi)Datastream go to one lane, in order, and those that name none
    /// to the first). Two by default, so that the Observations of many Datastreams are
    /// committed side by side; the publishes one MQTT connection has in flight together to
    /// different Datastreams may then be committed, and so stored and notified, in another
    /// order than sent.
    pub writers: usize,
    /// Writer connections of their own for large jobs (`Store::write_large`: Data Arrays of
    /// many rows, backfills), each committing one job at a time beside the groups of small
    /// ones, so that the database works on several at once; 0 leaves them to `writers`.
    pub large_writers: usize,
    /// The most write jobs committed in one transaction.
    pub max_group: usize,
    /// Whether rollups are kept as Observations are written (docs/timeseries.md).
    pub rollups: bool,
    pub tls: DatabaseTls,
}

/// How connections to the database are secured.
#[derive(Clone, Debug, Default)]
pub enum DatabaseTls {
    /// As the URL says, without TLS (`sslmode` other than `disable` finds no TLS to use).
    #[default]
    Off,
    /// TLS always (`sslmode=require` whatever the URL says), the server's certificate verified
    /// against these trust anchors (DER) and its name against the URL's host; with `client`,
    /// this node shows that certificate when the server asks for one (PostgreSQL's `cert`
    /// authentication, or `clientcert=verify-full`).
    Verified { roots: Vec<Vec<u8>>, client: Option<ClientIdentity> },
}

/// A client certificate for the database: the certificate first, then its issuers (DER), and
/// its PKCS#8 private key (DER).
#[derive(Clone)]
pub struct ClientIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

/// The key stays out of logs.
impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            readers: 4,
            writers: 2,
            large_writers: 2,
            max_group: 1024,
            rollups: true,
            tls: DatabaseTls::Off,
        }
    }
}

/// A PostgreSQL database with this node's writer and readers.
pub struct PostgresStore {
    options: PostgresOptions,
    queues: Queues,
    /// Set by `shutdown`: the listener thread stops.
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

/// The TLS client configuration `options` ask for, if any.
fn tls_config(options: &PostgresOptions) -> Result<Option<rustls::ClientConfig>, StoreError> {
    let DatabaseTls::Verified { roots, client } = &options.tls else { return Ok(None) };
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(rustls::pki_types::CertificateDer::from(root.clone()))
            .map_err(|e| StoreError::Database(format!("a database CA certificate: {e}").into()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Database(e.to_string().into()))?
        .with_root_certificates(store);
    let tls = match client {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = identity.chain.iter().map(|der| rustls::pki_types::CertificateDer::from(der.clone())).collect();
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(identity.key_pkcs8.clone().into());
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| StoreError::Database(format!("the database client certificate: {e}").into()))?
        }
    };
    Ok(Some(tls))
}

/// A blocking client for the database of `options` (the listener's), over TLS when they ask
/// for it.
fn client(options: &PostgresOptions) -> Result<postgres::Client, StoreError> {
    let mut config: postgres::Config = options.url.parse().map_err(db_error)?;
    match tls_config(options)? {
        None => config.connect(postgres::NoTls).map_err(db_error),
        Some(tls) => {
            config.ssl_mode(postgres::config::SslMode::Require);
            config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)).map_err(db_error)
        }
    }
}

fn connect(options: &PostgresOptions) -> Result<PgConnection, StoreError> {
    let config: tokio_postgres::Config = options.url.parse().map_err(db_error)?;
    let conn = PgConnection::connect(&config, tls_config(options)?)?;
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
        collation::check(&writer)?;
        let partitioned = partitions::native(&writer)?;
        if partitioned {
            partitions::maintain(&writer);
        }
        // A lane a writer (`store_sql::queues`).
        let (queues, lanes, reads) = Queues::new(options.max_group, options.writers.max(1));
        let max_group = options.max_group.max(1);
        let mut first = Some(writer);
        for (i, writes) in lanes.into_iter().enumerate() {
            let conn = match first.take() {
                Some(conn) => conn,
                None => connect(&options)?,
            };
            // One writer keeps the partitions; any would do.
            let maintains = partitioned && i == 0;
            let rollups = options.rollups;
            queues.spawn(format!("postgres-writer-{i}"), move || {
                write_loop(conn, writes, max_group, maintains, rollups)
            })?;
        }
        if options.large_writers > 0 {
            let lane = queues.large_lane(options.large_writers * 2);
            for i in 0..options.large_writers {
                let conn = connect(&options)?;
                let lane = lane.clone();
                let rollups = options.rollups;
                queues
                    .spawn(format!("postgres-large-writer-{i}"), move || write_loop(conn, lane, 1, false, rollups))?;
            }
        }
        for i in 0..options.readers.max(1) {
            let conn = connect(&options)?;
            let reads = reads.clone();
            queues.spawn(format!("postgres-reader-{i}"), move || {
                // Each read sees one snapshot, as a SQLite read transaction does.
                let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
                store_sql::queues::read_loop(&conn, &DIALECT, begin, &reads);
            })?;
        }
        Ok(PostgresStore { options, queues, stopping: Arc::default() })
    }
}

impl Store for PostgresStore {
    fn read(&self, visibility: Visibility, job: ReadJob) {
        self.queues.read(visibility, job);
    }

    fn write(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        self.queues.write(visibility, job, done);
    }

    fn write_large(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        self.queues.write_large(visibility, job, done);
    }

    fn write_touching(&self, visibility: Visibility, touches: store::Touches, job: WriteJob, done: WriteDone) {
        self.queues.write_touching(visibility, touches, job, done);
    }

    fn listen(&self, listener: store::Listener) -> bool {
        let (options, stopping) = (self.options.clone(), self.stopping.clone());
        let spawned =
            self.queues.spawn("postgres-listener".into(), move || listen_loop(&options, &stopping, &*listener));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the listener of other nodes' changes");
        }
        true
    }

    fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.queues.shutdown();
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One of the writers: takes every job waiting (up to `max_group`) as one group, commits it,
/// and comes back for more; while it commits, the next writer takes what arrives. Each writer
/// has its own project cache: PostgreSQL never gives a deleted entity's id again, and
/// entities do not change project, so another writer's entries cannot mislead it.
fn write_loop(conn: PgConnection, jobs: WriteQueue, max_group: usize, maintains: bool, rollups: bool) {
    let mut group = Vec::with_capacity(max_group);
    let mut projects = ProjectCache::default();
    let mut maintained = std::time::Instant::now();
    loop {
        if maintains && maintained.elapsed() >= partitions::EVERY {
            partitions::maintain(&conn);
            maintained = std::time::Instant::now();
        }
        match take_group(&jobs, &mut group, max_group, Duration::from_secs(60)) {
            Next::Group => {
                store_sql::commit::commit_group(&conn, &DIALECT, "BEGIN", &mut group, &mut projects, rollups)
            }
            Next::Idle => {}
            Next::Closed => return,
        }
    }
}

/// Receives the announcements of every node (`LISTEN`), reconnecting after a lost connection,
/// until the store shuts down. Announcements made while the connection was down are lost:
/// they are notifications, not data (the data is in the database).
fn listen_loop(options: &PostgresOptions, stopping: &AtomicBool, listener: &(dyn Fn(&str) + Send + Sync)) {
    let mut failures = 0u32;
    while !stopping.load(Ordering::Relaxed) {
        let client = client(options).and_then(|mut client| {
            client.batch_execute(&format!("LISTEN {}", sql::ANNOUNCE_CHANNEL)).map(|()| client).map_err(db_error)
        });
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
