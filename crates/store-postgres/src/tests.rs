//! The store conformance suite on PostgreSQL: every case runs on a fresh database of the
//! throwaway test cluster (`pg-test`), and a few checks of what only this backend does.

use std::sync::atomic::{AtomicUsize, Ordering};

use store::Store;
use store_sql::{Number, Param, query_one};

use crate::{PgConnection, PostgresOptions, PostgresStore};

fn database(name: &str) -> String {
    let cluster = pg_test::cluster().unwrap_or_else(|e| panic!("a PostgreSQL cluster for the tests: {e}"));
    cluster.database(name).unwrap_or_else(|e| panic!("a test database: {e}"))
}

fn open_temp_store() -> Box<dyn Store> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut options = PostgresOptions::new(database(&format!("conformance_{}_{n}", std::process::id())));
    options.readers = 2;
    // One lane, so that the cases' jobs queued behind a holding job share its group whatever
    // Datastreams they touch (`with_several_writers_...` is the case of several).
    options.writers = 1;
    Box::new(PostgresStore::open(options).expect("open a PostgreSQL store"))
}

store::store_conformance_tests!(open_temp_store);

fn connection(name: &str) -> PgConnection {
    connect_to(&database(name))
}

fn connect_to(url: &str) -> PgConnection {
    PgConnection::connect(&url.parse().expect("a database URL"), None).expect("connect")
}

#[test]
fn numerics_come_back_as_integers_when_integral_and_as_doubles_otherwise() {
    let conn = connection("numerics");
    let cases: [(&str, Number); 9] = [
        ("0", Number::Integer(0)),
        ("42", Number::Integer(42)),
        ("-7", Number::Integer(-7)),
        ("100000000", Number::Integer(100_000_000)),
        ("9223372036854775807", Number::Integer(i64::MAX)),
        ("-9223372036854775808", Number::Integer(i64::MIN)),
        ("2.5", Number::Real(2.5)),
        ("-0.000123", Number::Real(-0.000123)),
        ("123456789.125", Number::Real(123_456_789.125)),
    ];
    for (text, expected) in cases {
        let found =
            query_one(&conn, &format!("SELECT CAST('{text}' AS numeric)"), &[], |row| row.number(0)).unwrap().flatten();
        assert_eq!(found, Some(expected), "{text}");
    }
    let huge = query_one(&conn, "SELECT CAST('1e30' AS numeric)", &[], |row| row.number(0)).unwrap().flatten();
    assert_eq!(huge, Some(Number::Real(1e30)), "beyond i64: the nearest double");
    // Every digit group position, around the point and far from it: the nearest double of
    // the decimal text, as parsing it gives.
    let mut texts: Vec<String> = Vec::new();
    for (i, digits) in
        ["1", "12", "123", "1234", "12345", "99999999", "100010001", "31415926535897932384626"].into_iter().enumerate()
    {
        for point in 0..digits.len() {
            let (whole, fraction) = digits.split_at(point);
            let whole = if whole.is_empty() { "0" } else { whole };
            texts.push(format!("{}{whole}.{fraction}", if i % 2 == 0 { "" } else { "-" }));
        }
        texts.push(format!("0.0000000{digits}"));
        texts.push(format!("{digits}0000.5"));
    }
    texts.extend(["0.25", "99.95", "1000.25", "10000.5", "0.0001", "-0.00001"].map(String::from));
    for text in texts {
        let found =
            query_one(&conn, &format!("SELECT CAST('{text}' AS numeric)"), &[], |row| row.number(0)).unwrap().flatten();
        let expected: f64 = text.parse().unwrap();
        let found = match found {
            Some(Number::Real(r)) => r,
            Some(Number::Integer(i)) => i as f64,
            None => panic!("{text}: NULL"),
        };
        assert_eq!(found.to_bits(), expected.to_bits(), "{text}");
    }
}

#[test]
fn parameters_keep_their_types_in_comparisons() {
    let conn = connection("parameters");
    // Two literals compared: as numbers, not as text ('2' > '10' would be true).
    let greater = query_one(&conn, "SELECT $1 > $2", &[Param::Integer(2), Param::Integer(10)], |row| row.boolean(0));
    assert_eq!(greater.unwrap().flatten(), Some(false));
    let mixed = query_one(&conn, "SELECT $1 < $2", &[Param::Integer(2), Param::Real(2.5)], |row| row.boolean(0));
    assert_eq!(mixed.unwrap().flatten(), Some(true));
    let listed = query_one(
        &conn,
        "SELECT count(*) FROM unnest(CAST($1 AS bigint[])) AS ids(value) WHERE value > $2",
        &[Param::IdList(vec![1, 5, 9]), Param::Integer(4)],
        |row| row.integer(0),
    );
    assert_eq!(listed.unwrap().flatten(), Some(2));
    // A NULL takes the type its context gives it.
    let null = query_one(&conn, "SELECT COALESCE($1, 5) = 5", &[Param::Null], |row| row.boolean(0));
    assert_eq!(null.unwrap().flatten(), Some(true));
}

#[test]
fn nulls_share_the_statement_prepared_for_their_values_types() {
    let conn = connection("null_patterns");
    let sql = "SELECT COALESCE(CAST($1 AS BIGINT), 0) + COALESCE(CAST($2 AS BIGINT), 0)";
    let sum = |a: Param, b: Param| query_one(&conn, sql, &[a, b], |row| row.integer(0)).unwrap().flatten();
    assert_eq!(sum(Param::Integer(2), Param::Null), Some(2));
    assert_eq!(sum(Param::Null, Param::Integer(3)), Some(3));
    assert_eq!(sum(Param::Null, Param::Null), Some(0));
    assert_eq!(sum(Param::Integer(4), Param::Integer(5)), Some(9));
    assert_eq!(conn.prepared_of(sql), 1, "one statement for every pattern of NULLs");
    // A value of another type than the statement's is prepared anew, and keeps its type.
    let text = "SELECT CAST($1 AS TEXT) || 'x'";
    let cat = |a: Param| query_one(&conn, text, &[a], |row| row.text(0)).unwrap().flatten();
    assert_eq!(cat(Param::Integer(7)), Some("7x".to_owned()));
    assert_eq!(cat(Param::Text("a".into())), Some("ax".to_owned()));
    assert_eq!(cat(Param::Null), None);
    assert_eq!(conn.prepared_of(text), 2, "an integer and a text parameter");
}

#[test]
fn text_becomes_an_instant_or_null() {
    let conn = connection("micros");
    conn_open_schema(&conn);
    let micros = |text: &str| {
        query_one(&conn, "SELECT tb_micros($1)", &[Param::Text(text.to_owned())], |row| row.integer(0))
            .unwrap()
            .flatten()
    };
    assert_eq!(micros("2020-01-01T00:00:00Z"), Some(1_577_836_800_000_000));
    assert_eq!(micros("2020-01-01T00:00:00.5+01:00"), Some(1_577_833_200_500_000));
    assert_eq!(micros("2020-01-01T00:00:00"), Some(1_577_836_800_000_000), "no offset: UTC");
    assert_eq!(micros("not a time"), None);
}

/// Applies the schema to the database of `conn` (as opening a store does).
fn conn_open_schema(conn: &PgConnection) {
    use store_sql::Connection as _;
    conn.batch("SET TIME ZONE 'UTC'").unwrap();
    crate::migrate::run(conn).unwrap();
}

#[test]
fn observations_go_to_monthly_partitions_made_ahead_and_old_ones_to_the_default() {
    use store_sql::Connection as _;
    let url = database("partitions");
    // Opening the store migrates and makes the partitions around now.
    let store = PostgresStore::open(PostgresOptions::new(url.clone())).expect("open");
    let conn = connect_to(&url);
    let now = model::Instant::now().micros();
    let month = |offset: i64| {
        let name = query_one(
            &conn,
            "SELECT to_char(date_trunc('month', to_timestamp($1 / 1000000.0) AT TIME ZONE 'UTC') \
             + make_interval(months => CAST($2 AS integer)), 'YYYY_MM')",
            &[Param::Integer(now), Param::Integer(offset)],
            |row| row.required_text(0),
        );
        format!("observations_{}", name.unwrap().unwrap())
    };
    let partitions = store_sql::query_all(
        &conn,
        "SELECT CAST(c.relname AS text) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = CAST('observations' AS regclass) ORDER BY c.relname",
        &[],
        |row| row.required_text(0),
    )
    .unwrap();
    for offset in -1..=3 {
        assert!(partitions.contains(&month(offset)), "{} in {partitions:?}", month(offset));
    }
    assert!(partitions.contains(&"observations_default".to_owned()), "{partitions:?}");
    let again =
        query_one(&conn, "SELECT tb_observation_partitions($1, 1, 3)", &[Param::Integer(now)], |row| row.integer(0));
    assert_eq!(again.unwrap().flatten(), Some(0), "nothing is made twice");

    // An Observation of now lands in this month's partition, one of 1990 in the default.
    conn.batch("INSERT INTO features (name, description, encoding_type, feature) VALUES ('f', 'd', 'e', '{}')")
        .unwrap();
    let insert = "INSERT INTO observations (phenomenon_time_start, feature_id) VALUES ($1, 1)";
    conn.execute(insert, &[Param::Integer(now)]).unwrap();
    conn.execute(insert, &[Param::Integer(631_152_000_000_000)]).unwrap();
    let placed = store_sql::query_all(
        &conn,
        "SELECT CAST(CAST(tableoid AS regclass) AS text) FROM observations ORDER BY phenomenon_time_start",
        &[],
        |row| row.required_text(0),
    )
    .unwrap();
    assert_eq!(placed, ["observations_default".to_owned(), month(0)]);
    // Moving an Observation to another month moves its row.
    let moved = "UPDATE observations SET phenomenon_time_start = $1 WHERE phenomenon_time_start = $2";
    conn.execute(moved, &[Param::Integer(now), Param::Integer(631_152_000_000_000)]).unwrap();
    let count = query_one(&conn, "SELECT count(*) FROM observations_default", &[], |row| row.integer(0));
    assert_eq!(count.unwrap().flatten(), Some(0));
    store.shutdown();
}

/// `store::dump::TABLES` lists every table and column of this schema too.
#[test]
fn the_dump_lists_every_table_and_column() {
    let url = database("dump_tables");
    let conn = connect_to(&url);
    crate::migrate::run(&conn).unwrap();
    let tables = store_sql::query_all(
        &conn,
        "SELECT CAST(c.relname AS text) FROM pg_class c \
         WHERE c.relnamespace = CAST('public' AS regnamespace) AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
         AND c.relname NOT IN ('schema_migrations', 'spatial_ref_sys') ORDER BY c.relname",
        &[],
        |row| row.required_text(0),
    )
    .unwrap();
    let mut listed: Vec<String> = store::dump::TABLES.iter().map(|t| t.name.to_owned()).collect();
    listed.sort();
    assert_eq!(listed, tables);
    for table in store::dump::TABLES {
        let columns = store_sql::query_all(
            &conn,
            "SELECT CAST(column_name AS text) FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            &[Param::Text(table.name.to_owned())],
            |row| row.required_text(0),
        )
        .unwrap();
        assert_eq!(table.column_names().collect::<Vec<_>>(), columns, "{}", table.name);
    }
}

/// Thing 1 with Datastream 1 (Sensor 1, ObservedProperty 1), and FeatureOfInterest 1, written
/// straight into the tables.
const PARENTS: &str = "INSERT INTO things (id, name, description) VALUES (1, 't', 'd');
    INSERT INTO sensors (id, name, description, encoding_type, metadata) VALUES (1, 's', 'd', 'e', '\"m\"');
    INSERT INTO observed_properties (id, name, definition, description) VALUES (1, 'p', 'd', 'd');
    INSERT INTO datastreams (id, name, description, unit_of_measurement, observation_type, thing_id, sensor_id, observed_property_id)
        VALUES (1, 'ds', 'd', '{}', 'm', 1, 1, 1);
    INSERT INTO features (id, name, description, encoding_type, feature) VALUES (1, 'f', 'd', 'e', '{}');";

/// A Datastream deleted while another session is creating Observations of it (having locked it
/// as the writer does) waits for that session, then deletes its Observations too: none is
/// left without its Datastream, though Observations hold no foreign key.
#[test]
fn deleting_a_datastream_waits_for_observations_being_created_and_takes_them() {
    use store_sql::Connection as _;
    let url = database("delete_race");
    let store = PostgresStore::open(PostgresOptions::new(url.clone())).expect("open");
    let setup = connect_to(&url);
    setup.batch(PARENTS).unwrap();
    // Another node's writer, in the middle of its job.
    let other = connect_to(&url);
    other.batch("BEGIN; SELECT id FROM datastreams WHERE id = 1 FOR KEY SHARE").unwrap();
    other
        .execute(
            "INSERT INTO observations (phenomenon_time_start, datastream_id, feature_id) VALUES ($1, 1, 1)",
            &[Param::Integer(model::Instant::now().micros())],
        )
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    store.write(
        odata::Visibility::All,
        Box::new(|w: &mut dyn store::Writer| w.delete(model::EntityType::Datastream, model::Id(1)).map(drop)),
        Box::new(move |outcome| {
            let _ = tx.send(outcome.is_ok());
        }),
    );
    assert!(rx.recv_timeout(std::time::Duration::from_millis(500)).is_err(), "the delete waits for the other job");
    other.batch("COMMIT").unwrap();
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(true));
    let left = query_one(&setup, "SELECT count(*) FROM observations", &[], |row| row.integer(0));
    assert_eq!(left.unwrap().flatten(), Some(0), "no Observation outlives its Datastream");
    store.shutdown();
}

/// The same for a feature generated from a Location, which new Observations find through the
/// Location rather than by id.
#[test]
fn deleting_a_generated_feature_waits_for_observations_being_created_of_it() {
    use store_sql::Connection as _;
    let url = database("delete_generated_race");
    let store = PostgresStore::open(PostgresOptions::new(url.clone())).expect("open");
    let setup = connect_to(&url);
    setup.batch(PARENTS).unwrap();
    setup
        .batch(
            "INSERT INTO locations (id, name, description, encoding_type, location) VALUES (1, 'l', 'd', 'e', '{}');
             INSERT INTO thing_locations (thing_id, location_id) VALUES (1, 1);
             INSERT INTO location_features (location_id, feature_id) VALUES (1, 1);",
        )
        .unwrap();
    // Another node's writer reads the Datastream's Locations as the store does, then inserts.
    let other = connect_to(&url);
    other.batch("BEGIN").unwrap();
    let found = store_sql::query_all(
        &other,
        &sql::fixed::thing_locations_of(&sql::PostgresDialect, model::EntityType::Datastream),
        &[Param::Integer(1)],
        |row| row.integer(1),
    )
    .unwrap();
    assert_eq!(found, [Some(1)], "the generated feature");
    other
        .execute(
            "INSERT INTO observations (phenomenon_time_start, datastream_id, feature_id) VALUES ($1, 1, 1)",
            &[Param::Integer(model::Instant::now().micros())],
        )
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    store.write(
        odata::Visibility::All,
        Box::new(|w: &mut dyn store::Writer| w.delete(model::EntityType::FeatureOfInterest, model::Id(1)).map(drop)),
        Box::new(move |outcome| {
            let _ = tx.send(outcome.is_ok());
        }),
    );
    assert!(rx.recv_timeout(std::time::Duration::from_millis(500)).is_err(), "the delete waits");
    other.batch("COMMIT").unwrap();
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(true));
    let left = query_one(&setup, "SELECT count(*) FROM observations", &[], |row| row.integer(0));
    assert_eq!(left.unwrap().flatten(), Some(0), "no Observation outlives its feature");
    store.shutdown();
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM, with the CA's DER.
fn server_certificate(name: &str) -> (Vec<u8>, String, String) {
    let ca = pki::CertificateAuthority::generate(name).expect("a CA");
    let not_after = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let identity = ca.issue_server(&["127.0.0.1".to_owned()], not_after).expect("a server certificate");
    let chain: String = identity.chain_der.iter().map(|der| pki::pem_encode("CERTIFICATE", der)).collect();
    (ca.certificate_der().to_vec(), chain, pki::pem_encode("PRIVATE KEY", &identity.key_pkcs8_der))
}

#[test]
fn connections_use_verified_tls_when_asked_and_refuse_an_unknown_server() {
    let cluster = pg_test::cluster().unwrap_or_else(|e| panic!("a PostgreSQL cluster for the tests: {e}"));
    let (ca, chain, key) = server_certificate("database CA");
    cluster.enable_tls(&chain, &key).expect("TLS on");
    let url = database("tls");
    let mut options = PostgresOptions::new(url.clone());
    options.readers = 1;
    options.tls = crate::DatabaseTls::Verified { roots: vec![ca.clone()], client: None };
    let store = PostgresStore::open(options).expect("a store over TLS");
    // Every connection of this database is encrypted (the store's, as pg_stat_ssl says).
    let name = url.rsplit('/').next().expect("a database name").to_owned();
    let conn = connection("tls_observer");
    let encrypted = query_one(
        &conn,
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = $1",
        &[Param::Text(name)],
        |row| Ok((row.required_integer(0)?, row.required_integer(1)?)),
    )
    .expect("query")
    .expect("a row");
    assert!(encrypted.1 >= 2, "the store's writer and reader are connected: {encrypted:?}");
    assert_eq!(encrypted.0, encrypted.1, "all of them over TLS: {encrypted:?}");
    store.shutdown();
    // A server whose certificate another CA signed is refused.
    let (other, _, _) = server_certificate("another CA");
    let mut options = PostgresOptions::new(database("tls_refused"));
    options.tls = crate::DatabaseTls::Verified { roots: vec![other], client: None };
    let refused = PostgresStore::open(options);
    assert!(refused.is_err(), "an unverified server is refused");

    // A role that logs in with a client certificate only (the server's `cert` authentication).
    // In this test, which enabled TLS: the cluster is shared, and one server certificate is
    // enough.
    let user = "tb_cert_user";
    let (client_ca, identity) = client_certificate("database client CA", user);
    cluster.require_client_certificates(&client_ca, user).expect("the client certificate rules");
    let url = database("tls_client_certificate");
    let name = url.rsplit('/').next().expect("a database name").to_owned();
    let as_user = cluster.url_as(user, &name);
    let open = |client: Option<crate::ClientIdentity>| {
        let mut options = PostgresOptions::new(as_user.clone());
        options.readers = 1;
        options.tls = crate::DatabaseTls::Verified { roots: vec![ca.clone()], client };
        PostgresStore::open(options)
    };
    let refused = open(None).expect_err("no client certificate, no login");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let (_, stranger) = client_certificate("another client CA", user);
    assert!(open(Some(stranger)).is_err(), "a certificate another CA signed is refused");
    let store = open(Some(identity)).expect("a store logged in with its client certificate");
    let dns: Vec<String> = {
        use store_sql::Connection as _;
        let mut found = Vec::new();
        conn.query(
            "SELECT s.client_dn FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1",
            &[Param::Text(name)],
            &mut |row| {
                found.push(row.text(0)?.unwrap_or_default());
                Ok(true)
            },
        )
        .expect("query");
        found
    };
    assert!(dns.len() >= 2, "the store's writer and reader are connected: {dns:?}");
    assert!(dns.iter().all(|dn| dn.contains(&format!("CN={user}"))), "each with the certificate: {dns:?}");
    store.shutdown();
}

/// A CA (PEM) and a client certificate it signed whose common name is `user`.
fn client_certificate(ca_name: &str, user: &str) -> (String, crate::ClientIdentity) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, ca_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("a key");
    let certificate = params.signed_by(&key, &ca).expect("a client certificate");
    (ca.pem(), crate::ClientIdentity { chain: vec![certificate.der().to_vec()], key_pkcs8: key.serialize_der() })
}

#[test]
fn a_deferred_statement_that_fails_fails_its_transaction_until_a_rollback() {
    use store_sql::Connection;
    let conn = connection("deferred_failure");
    conn.batch("CREATE TABLE t (n bigint)").expect("a table");
    let count = |conn: &PgConnection| {
        query_one(conn, "SELECT count(*) FROM t", &[], |row| row.required_integer(0)).expect("a count")
    };
    let insert = |conn: &PgConnection, n: i64| conn.execute("INSERT INTO t VALUES ($1)", &[Param::Integer(n)]);

    // Deferred statements go with the next one, and work as if run at once.
    conn.batch_deferred("BEGIN").expect("deferred");
    conn.batch_deferred("SAVEPOINT job").expect("deferred");
    insert(&conn, 1).expect("the first insert");
    conn.batch_deferred("RELEASE SAVEPOINT job").expect("deferred");
    conn.batch_deferred("SAVEPOINT job").expect("deferred");
    insert(&conn, 2).expect("the second insert");
    conn.batch_deferred("RELEASE SAVEPOINT job").expect("deferred");
    conn.batch("COMMIT").expect("commit");
    assert_eq!(count(&conn), Some(2));

    // A deferred statement fails with the statement it went with: nothing after it may seem
    // to succeed, not even a return to an earlier savepoint, which would undo what was
    // already counted as done, nor a COMMIT, which PostgreSQL would turn into a rollback.
    conn.batch("BEGIN").expect("begin");
    conn.batch_deferred("SAVEPOINT job").expect("deferred");
    insert(&conn, 3).expect("an insert");
    conn.batch_deferred("RELEASE SAVEPOINT no_such_savepoint").expect("deferred");
    conn.batch_deferred("SAVEPOINT job").expect("deferred");
    let failed = insert(&conn, 4).expect_err("the deferred statement fails");
    assert!(failed.to_string().contains("no_such_savepoint"), "{failed}");
    assert!(conn.batch("ROLLBACK TO SAVEPOINT job").is_err(), "no savepoint can save the transaction");
    assert!(conn.batch_deferred("SAVEPOINT again").is_err());
    assert!(insert(&conn, 5).is_err());
    assert!(conn.batch("COMMIT").is_err(), "a COMMIT is refused");
    conn.batch("ROLLBACK").expect("a rollback ends it");
    assert_eq!(count(&conn), Some(2), "nothing of the failed transaction stays");
    insert(&conn, 6).expect("the connection works again");
    assert_eq!(count(&conn), Some(3));
}

#[test]
fn a_group_announces_in_as_few_messages_as_the_limit_allows() {
    let store = open_temp_store();
    let messages = store::conformance::heard_from_one_group(&*store).expect("PostgreSQL is shared");
    // One group: "first" lines of four jobs (~50 bytes each, 303 in all) fill as few
    // messages as 7,900 bytes allow; "other" is one message.
    let firsts: Vec<usize> = messages.iter().filter(|m| m[0] == "first").map(|m| m.len() - 1).collect();
    assert_eq!(firsts.iter().sum::<usize>(), 303, "{firsts:?}");
    assert_eq!(firsts.len(), 303_usize.div_ceil(firsts[0]), "full messages but the last: {firsts:?}");
    assert!(firsts.len() <= 3, "{firsts:?}");
    assert_eq!(messages.iter().filter(|m| m[0] == "other").count(), 1);
}

#[test]
fn a_commit_sends_what_follows_it_only_once_committed_and_tells_which_failed() {
    use store_sql::Connection;
    let conn = connection("commit_then");
    conn.batch("CREATE TABLE t (n bigint); CREATE TABLE after_commit (n bigint)").expect("tables");
    let count = |table: &str| {
        query_one(&conn, &format!("SELECT count(*) FROM {table}"), &[], |row| row.required_integer(0))
            .expect("a count")
            .expect("a row")
    };
    let deferred_insert = |n: i64| conn.execute_deferred("INSERT INTO t VALUES ($1)", &[Param::Integer(n)]);
    let finish = ["RELEASE SAVEPOINT pending", "COMMIT"];

    // The deferred statements, the commit and what follows it.
    conn.batch_deferred("BEGIN; SAVEPOINT pending").expect("deferred");
    deferred_insert(1).expect("deferred");
    let after = conn.commit_then(&finish, Some("INSERT INTO after_commit VALUES (1)")).expect("committed");
    assert!(after.is_ok(), "{after:?}");
    assert_eq!((count("t"), count("after_commit")), (1, 1));

    // What follows fails: the transaction committed all the same, and says so.
    conn.batch_deferred("BEGIN; SAVEPOINT pending").expect("deferred");
    deferred_insert(2).expect("deferred");
    let after = conn.commit_then(&finish, Some("SELECT 1 / 0")).expect("committed");
    assert!(after.expect_err("what follows failed").to_string().contains("division by zero"));
    assert_eq!(count("t"), 2);

    // A deferred statement fails: no commit, nothing after it, and a savepoint from before
    // the failure can save the transaction (a writer tries again after a deadlock).
    conn.batch("BEGIN").expect("begin");
    deferred_insert(3).expect("deferred");
    conn.batch_deferred("SAVEPOINT pending").expect("deferred");
    conn.execute_deferred("INSERT INTO t VALUES (CAST($1 AS bigint) / 0)", &[Param::Integer(4)]).expect("deferred");
    let failed = conn.commit_then(&finish, Some("INSERT INTO after_commit VALUES (3)")).expect_err("not committed");
    assert!(failed.to_string().contains("division by zero"), "{failed}");
    conn.batch("ROLLBACK TO SAVEPOINT pending").expect("back to the savepoint");
    let after = conn.commit_then(&finish, None).expect("committed the second time");
    assert!(after.is_ok());
    assert_eq!((count("t"), count("after_commit")), (3, 1), "the insert before the savepoint stays; no `after`");

    // A failing statement of `finish` itself: no commit, no `after`.
    conn.batch("BEGIN").expect("begin");
    deferred_insert(5).expect("deferred");
    let failed = conn
        .commit_then(&["RELEASE SAVEPOINT no_such_savepoint", "COMMIT"], Some("INSERT INTO after_commit VALUES (5)"))
        .expect_err("not committed");
    assert!(failed.to_string().contains("no_such_savepoint"), "{failed}");
    conn.batch("ROLLBACK").expect("a rollback ends it");
    assert_eq!((count("t"), count("after_commit")), (3, 1));
}

/// The first SQL block of docs/postgres.md after the paragraph that starts `lead`.
fn documented_sql(lead: &str) -> &'static str {
    let doc = include_str!("../../../docs/postgres.md");
    let after = doc.split(lead).nth(1).unwrap_or_else(|| panic!("docs/postgres.md has `{lead}`"));
    after.split("```sql").nth(1).and_then(|b| b.split("```").next()).expect("its SQL")
}

type Case = fn(&dyn Store);

/// The store's cases of Observations that a table laid out another way must pass too.
const OBSERVATION_CASES: [(&str, Case); 5] = [
    ("many", store::conformance::many_observations_at_once_keep_their_values),
    ("deleting", store::conformance::deleting_a_sensor_or_a_datastream_deletes_their_observations),
    ("group", store::conformance::a_group_of_many_datastreams_keeps_each_ones_times_and_statistics),
    ("statistics", store::conformance::statistics_follow_random_inserts_updates_and_deletes),
    ("expired", store::conformance::expired_observations_leave_their_rollups),
];

/// The TimescaleDB script of docs/postgres.md ("TimescaleDB or Citus instead") without its
/// two lines of the extension itself: what it leaves is an `observations` table that is not
/// natively partitioned, holding the rows it had.
fn plain_observations_script() -> String {
    let block = documented_sql("A TimescaleDB hypertable");
    let kept: Vec<&str> =
        block.lines().filter(|l| !l.contains("timescaledb") && !l.contains("create_hypertable")).collect();
    assert!(kept.iter().any(|l| l.contains("RENAME TO observations")), "the script swaps the tables: {block}");
    kept.join("\n")
}

/// Opens a store on a fresh database, turns `observations` into a table of its own the way the
/// documented TimescaleDB script does (but for the extension), and opens the store again:
/// it must see that the table is not natively partitioned and keep working.
fn store_after_the_table_is_swapped(name: &str) -> Box<dyn Store> {
    use store_sql::Connection as _;
    let url = database(name);
    drop(PostgresStore::open(PostgresOptions::new(url.clone())).expect("open"));
    let conn = connect_to(&url);
    conn.batch(&plain_observations_script()).expect("the documented script runs");
    let kind = query_one(
        &conn,
        "SELECT CAST(relkind AS text) FROM pg_class WHERE oid = to_regclass('observations')",
        &[],
        |r| r.text(0),
    );
    assert_eq!(kind.unwrap().flatten().as_deref(), Some("r"), "a plain table now");
    assert!(!crate::partitions::native(&conn).unwrap(), "the store sees it is not partitioned");
    let mut options = PostgresOptions::new(url);
    options.readers = 2;
    Box::new(PostgresStore::open(options).expect("the store opens on the swapped table"))
}

#[test]
fn observations_in_a_table_that_is_not_natively_partitioned_behave_the_same() {
    for (name, case) in OBSERVATION_CASES {
        let store = store_after_the_table_is_swapped(&format!("swapped_{name}"));
        case(&*store);
    }
}

/// The Citus script of docs/postgres.md without its statements of the extension itself (the
/// extension, the reference tables, the distribution): what it leaves is `observations` keyed
/// by `(id, datastream_id, phenomenon_time_start)`, with a `datastream_id` in every row.
fn citus_keys_script() -> String {
    let block = documented_sql("A Citus distributed table");
    let kept: Vec<&str> = block
        .split(';')
        .filter(|statement| {
            !["citus", "create_reference_table", "create_distributed_table"].iter().any(|n| statement.contains(n))
        })
        .filter(|statement| !statement.trim().is_empty())
        .collect();
    assert!(kept.iter().any(|s| s.contains("ADD PRIMARY KEY")), "the script changes the key: {block}");
    kept.join(";")
}

#[test]
fn observations_keyed_as_the_citus_script_leaves_them_behave_the_same() {
    use store_sql::Connection as _;
    // The group case writes Observations of MultiDatastreams, which have no `datastream_id`:
    // the layout is for hubs without them (docs/postgres.md).
    for (name, case) in OBSERVATION_CASES.into_iter().filter(|(name, _)| *name != "group") {
        let url = database(&format!("citus_keys_{name}"));
        drop(PostgresStore::open(PostgresOptions::new(url.clone())).expect("open"));
        let conn = connect_to(&url);
        conn.batch(&citus_keys_script()).expect("the documented script runs");
        let key = query_one(
            &conn,
            "SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n), \
             pg_attribute a WHERE i.indrelid = to_regclass('observations') AND i.indisprimary \
             AND a.attrelid = i.indrelid AND a.attnum = k.attnum",
            &[],
            |r| r.text(0),
        );
        assert_eq!(key.unwrap().flatten().as_deref(), Some("id,datastream_id,phenomenon_time_start"));
        let store = PostgresStore::open(PostgresOptions::new(url)).expect("the store opens on the new keys");
        case(&store);
    }
}

#[test]
fn with_several_writers_the_writes_of_one_datastream_keep_their_order() {
    let mut options = PostgresOptions::new(database("several_writers"));
    options.writers = 3;
    let store = PostgresStore::open(options).expect("open");
    store::conformance::writes_of_one_datastream_commit_in_the_order_queued(&store);
}

#[test]
fn retention_leaves_a_series_another_node_is_expiring_to_it() {
    use store_sql::Connection as _;
    let url = database("retention_claims");
    let store = PostgresStore::open(PostgresOptions::new(url.clone())).expect("open");
    let other = std::sync::Arc::new(std::sync::Mutex::new(connect_to(&url)));
    let claim = |entity: model::EntityType, id: model::Id| -> Box<dyn FnOnce()> {
        let conn = other.lock().unwrap();
        conn.batch("BEGIN").unwrap();
        let [class, key] = sql::statistics::claim_key(entity, id.0);
        let claimed = query_one(
            &*conn,
            "SELECT pg_try_advisory_xact_lock(CAST($1 AS integer), CAST($2 AS integer))",
            &[Param::Integer(class), Param::Integer(key)],
            |row| row.boolean(0),
        );
        assert_eq!(claimed.unwrap().flatten(), Some(true), "the other node claims the series");
        let other = std::sync::Arc::clone(&other);
        Box::new(move || other.lock().unwrap().batch("COMMIT").unwrap())
    };
    store::conformance::expiring_a_series_another_node_expires_leaves_it(&store, &claim);
}

#[test]
fn the_collation_is_checked_for_the_order_of_sqlite() {
    use store_sql::Connection as _;
    let url = database("collation_c");
    assert!(crate::collation::check(&connect_to(&url)).unwrap(), "the test cluster's C collation orders by bytes");
    // A database ordering by language (ICU's en-US): still served, with a warning.
    let admin = connect_to(&url);
    admin.batch("DROP DATABASE IF EXISTS collation_icu").unwrap();
    admin
        .batch("CREATE DATABASE collation_icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'")
        .unwrap();
    let icu = url.rsplit_once('/').map(|(server, _)| format!("{server}/collation_icu")).unwrap();
    assert!(!crate::collation::check(&connect_to(&icu)).unwrap());
    admin.batch("DROP DATABASE collation_icu").unwrap();
}
