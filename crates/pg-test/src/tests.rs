//! Tests of the throwaway cluster, and (in `schema`) of the PostgreSQL schema against the
//! SQLite one.

mod schema;

use crate::{Cluster, cluster};

fn started() -> &'static Cluster {
    cluster().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn databases_created_in_parallel_have_postgis() {
    let cluster = started();
    let urls: Vec<String> = std::thread::scope(|scope| {
        let creating = ["parallel_a", "parallel_b"].map(|name| scope.spawn(move || cluster.database(name)));
        creating.map(|c| c.join().expect("no panic").unwrap_or_else(|e| panic!("{e}"))).into()
    });
    let port = cluster.port();
    assert_eq!(
        urls,
        [
            format!("postgres://postgres@127.0.0.1:{port}/parallel_a"),
            format!("postgres://postgres@127.0.0.1:{port}/parallel_b")
        ]
    );
    for url in &urls {
        // psql reads the URL alone: no host, port or user besides it.
        let version = cluster.psql(url, &["SELECT postgis_version()"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(version.starts_with('3') && version.contains("USE_GEOS=1"), "{url}: {version}");
    }
}

#[test]
fn a_database_is_created_afresh_each_time() {
    let cluster = started();
    let url = cluster.database("afresh").unwrap_or_else(|e| panic!("{e}"));
    // An open connection does not keep the database from being replaced.
    let mut session = cluster
        .psql_command(&url)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql starts");
    cluster.psql(&url, &["CREATE TABLE leftover (id bigint)"]).unwrap_or_else(|e| panic!("{e}"));
    let again = cluster.database("afresh").unwrap_or_else(|e| panic!("{e}"));
    let tables = cluster.psql(&again, &["SELECT count(*) FROM pg_tables WHERE tablename = 'leftover'"]);
    assert_eq!(tables.as_deref().map(str::trim), Ok("0"));
    drop(session.stdin.take());
    let _ = session.wait();
}

#[test]
fn database_names_are_sanitized() {
    let cluster = started();
    let url = cluster.database("Schema-Test.1 ü").unwrap_or_else(|e| panic!("{e}"));
    assert!(url.ends_with("/schema_test_1__"), "{url}");
    let long = |n: usize| crate::database_name(&format!("{}_{n}", "x".repeat(100)));
    assert_eq!(long(1).map(|name| name.len()), Ok(63));
    assert_ne!(long(1), long(2));
    for reserved in ["postgres", "Template1", "thingbase_template", ""] {
        assert!(cluster.database(reserved).is_err(), "{reserved:?} was accepted");
    }
}

#[test]
fn the_cluster_lives_in_a_directory_of_this_process() {
    let cluster = started();
    let data = cluster.psql(&cluster.url("postgres"), &["SHOW data_directory"]).unwrap_or_else(|e| panic!("{e}"));
    let expected = std::env::temp_dir().join(format!("thingbase-pg-{}", std::process::id())).join("data");
    assert_eq!(std::path::Path::new(data.trim()), expected);
    assert_ne!(cluster.port(), 5432);
    assert_eq!(cluster.host(), "127.0.0.1");
}
