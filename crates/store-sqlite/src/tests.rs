//! The store conformance suite on SQLite: every case runs on a fresh database file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use odata::Visibility;
use store::{ReadJob, Store, WriteDone, WriteJob};

use crate::{SqliteOptions, SqliteStore};

/// A `SqliteStore` on a temporary file that is removed (with its WAL files) when dropped.
struct TempStore {
    store: SqliteStore,
    path: PathBuf,
}

fn open_temp_store() -> Box<dyn Store> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("thingbase-store-sqlite-{}-{n}.db", std::process::id()));
    remove_database(&path);
    let mut options = SqliteOptions::new(&path);
    options.readers = 2;
    let store = SqliteStore::open(options).expect("open a SQLite store");
    Box::new(TempStore { store, path })
}

fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

impl Store for TempStore {
    fn read(&self, visibility: Visibility, job: ReadJob) {
        self.store.read(visibility, job);
    }

    fn write(&self, visibility: Visibility, job: WriteJob, done: WriteDone) {
        self.store.write(visibility, job, done);
    }

    fn shutdown(&self) {
        self.store.shutdown();
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        // Joining the threads closes every connection before the files go.
        self.store.shutdown();
        remove_database(&self.path);
    }
}

store::store_conformance_tests!(open_temp_store);

/// `store::dump::TABLES` (what export and import move) lists every table and column of the
/// schema, so that a migration adding one cannot be forgotten there.
#[test]
fn the_dump_lists_every_table_and_column() {
    let path = std::env::temp_dir().join(format!("thingbase-store-sqlite-{}-dump.db", std::process::id()));
    remove_database(&path);
    let conn = rusqlite::Connection::open(&path).unwrap();
    crate::migrate::run(&conn).unwrap();
    let mut tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('schema_migrations') ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut listed: Vec<String> = store::dump::TABLES.iter().map(|t| t.name.to_owned()).collect();
    listed.sort();
    tables.retain(|t| !t.starts_with("sqlite_"));
    assert_eq!(listed, tables);
    for table in store::dump::TABLES {
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{}') ORDER BY cid", table.name))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(table.column_names().collect::<Vec<_>>(), columns, "{}", table.name);
    }
    drop(conn);
    remove_database(&path);
}

#[test]
fn a_deadline_stops_a_statement_unless_it_was_lifted() {
    use store_sql::Connection as _;
    let mut conn = rusqlite::Connection::open_in_memory().expect("in memory");
    let deadline = crate::connection::Deadline::default();
    crate::connection::watch_deadline(&mut conn, &deadline).expect("a progress handler");
    let sqlite = crate::connection::SqliteConnection(&conn, Some(&deadline));
    // A statement of some millions of steps.
    let long =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000) SELECT COUNT(*) FROM n";
    let count =
        |c: &crate::connection::SqliteConnection<'_>| store_sql::query_one(c, long, &[], |row| row.required_integer(0));
    assert_eq!(count(&sqlite).expect("no deadline"), Some(2_000_000));
    sqlite.set_deadline(Some(std::time::Instant::now())).expect("set");
    assert!(matches!(count(&sqlite), Err(store::StoreError::OverBudget(_))), "stopped at the deadline");
    let lifted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    sqlite.lift_deadline_when(lifted);
    assert_eq!(count(&sqlite).expect("lifted"), Some(2_000_000), "a lifted deadline stops nothing");
    sqlite.set_deadline(None).expect("cleared");
    sqlite.set_deadline(Some(std::time::Instant::now())).expect("set again");
    assert!(count(&sqlite).is_err(), "a new deadline is not lifted");
}
