//! The PostgreSQL schema (`store-postgres/migrations`) checked against the SQLite one
//! (`store-sqlite/migrations`): the same tables, columns, keys, indexes and foreign keys, and
//! spatial functions that answer as the SQLite backend's do. The checks live here because they
//! need nothing but a cluster, `psql` and `python3` (whose `sqlite3` module builds the SQLite
//! schema); store-postgres's own tests run the schema through its migration runner.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::started;
use crate::run;

/// The PostgreSQL schema's shape in the form `sqlite_schema.py` prints the SQLite one, types
/// translated to the SQLite types they stand for (a type with no translation shows as itself,
/// and so differs).
const POSTGRES_SHAPE: &str = r#"
WITH tables AS (
    SELECT c.oid, c.relname FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
        -- The monthly partitions of observations are the partitioned table's storage.
        AND NOT c.relispartition
        -- PostGIS's spatial_ref_sys belongs to the extension.
        AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
)
SELECT format('table %s(%s)', t.relname, string_agg(
    format('%s %s%s', a.attname,
        CASE format_type(a.atttypid, a.atttypmod)
            WHEN 'bigint' THEN 'INTEGER' WHEN 'integer' THEN 'INTEGER' WHEN 'boolean' THEN 'INTEGER'
            WHEN 'text' THEN 'TEXT' WHEN 'json' THEN 'TEXT' WHEN 'numeric' THEN 'ANY' WHEN 'double precision' THEN 'REAL'
            ELSE format_type(a.atttypid, a.atttypmod)
        END,
        CASE WHEN a.attnotnull THEN '!' ELSE '' END),
    ', ' ORDER BY a.attnum))
FROM tables t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
GROUP BY t.relname
UNION ALL
SELECT format('%s %s(%s)', CASE c.contype WHEN 'p' THEN 'key' ELSE 'unique' END, t.relname, pg_temp.columns(t.oid, c.conkey))
FROM tables t JOIN pg_constraint c ON c.conrelid = t.oid AND c.contype IN ('p', 'u')
UNION ALL
SELECT format('index %s on %s(%s)%s', i.relname, t.relname, pg_temp.columns(t.oid, x.indkey::int2[]),
    CASE WHEN x.indpred IS NULL THEN '' ELSE ' partial' END)
FROM tables t JOIN pg_index x ON x.indrelid = t.oid JOIN pg_class i ON i.oid = x.indexrelid
WHERE NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.contype IN ('p', 'u'))
UNION ALL
SELECT format('foreign %s(%s) -> %s(%s) on delete %s', t.relname, pg_temp.columns(t.oid, c.conkey),
    target.relname, pg_temp.columns(target.oid, c.confkey),
    CASE c.confdeltype WHEN 'a' THEN 'no action' WHEN 'r' THEN 'restrict' WHEN 'c' THEN 'cascade'
        WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default' END)
FROM tables t JOIN pg_constraint c ON c.conrelid = t.oid AND c.contype = 'f' JOIN pg_class target ON target.oid = c.confrelid
"#;

/// The names of the columns `keys` of `relation`, in the order of `keys` (an index's
/// expression, key 0, shows as `(expression)`, as `sqlite_schema.py` shows it).
const COLUMNS_FUNCTION: &str = "CREATE FUNCTION pg_temp.columns(relation oid, keys int2[]) RETURNS text \
    LANGUAGE sql STABLE RETURN (SELECT string_agg(COALESCE(a.attname, '(expression)'), ', ' ORDER BY k.n) \
    FROM unnest(keys) WITH ORDINALITY k(attnum, n) \
    LEFT JOIN pg_attribute a ON a.attrelid = relation AND a.attnum = k.attnum AND k.attnum > 0)";

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("pg-test lives in crates/").to_path_buf()
}

/// The migration files of `backend`, in the order they apply.
fn migrations(backend: &str) -> Vec<PathBuf> {
    let dir = crates_dir().join(backend).join("migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory").path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// A fresh database with the PostgreSQL migrations applied, and its URL.
fn migrated(name: &str) -> String {
    let cluster = started();
    let url = cluster.database(name).unwrap_or_else(|e| panic!("{e}"));
    for file in migrations("store-postgres") {
        run(cluster.psql_command(&url).arg("-f").arg(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    url
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn postgres_schema_has_the_shape_of_the_sqlite_schema() {
    let url = migrated("schema_shape");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tests/sqlite_schema.py");
    let sqlite = run(Command::new("python3").arg(script).args(migrations("store-sqlite")))
        .unwrap_or_else(|e| panic!("python3 (with its sqlite3 module) builds the SQLite schema: {e}"));
    let postgres = started().psql(&url, &[COLUMNS_FUNCTION, POSTGRES_SHAPE]).unwrap_or_else(|e| panic!("{e}"));
    let (sqlite, postgres) = (lines(&sqlite), lines(&postgres));
    // Observations are partitioned by time on PostgreSQL, whose primary keys must include the
    // partition key.
    let (sqlite_key, postgres_key) = ("key observations(id)", "key observations(id, phenomenon_time_start)");
    // ... and its Observations hold no foreign keys (the application keeps them).
    let missing: Vec<_> = sqlite
        .difference(&postgres)
        .filter(|line| *line != sqlite_key && !line.starts_with("foreign observations("))
        .collect();
    // SQLite could not add `project_id` with a reference to existing tables; PostgreSQL has it.
    let extra: Vec<_> = postgres
        .difference(&sqlite)
        .filter(|line| !line.ends_with("(project_id) -> projects(id) on delete no action") && *line != postgres_key)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "only in SQLite:\n{}\nonly in PostgreSQL:\n{}",
        missing.iter().map(|l| format!("  {l}\n")).collect::<String>(),
        extra.iter().map(|l| format!("  {l}\n")).collect::<String>(),
    );
    let references = postgres.iter().filter(|l| l.contains("(project_id) -> projects(id) on delete no action"));
    // Devices refer to their project on both backends.
    assert_eq!(references.count(), 9, "every entity table but observations, and devices, refer to their project");
}

/// Runs each of `cases` (an SQL expression and the text it must give, `NULL` for NULL) in the
/// database at `url`, and fails listing every case that gave something else.
fn check(url: &str, setup: &[&str], cases: &[(&str, &str)]) {
    let queries: Vec<String> =
        cases.iter().map(|(expr, _)| format!("SELECT coalesce(({expr})::text, 'NULL')")).collect();
    let statements: Vec<&str> = setup.iter().copied().chain(queries.iter().map(String::as_str)).collect();
    let output = started().psql(url, &statements).unwrap_or_else(|e| panic!("{e}"));
    let answers: Vec<&str> = output.lines().collect();
    assert_eq!(answers.len(), cases.len(), "one answer per case:\n{output}");
    let wrong: String = cases
        .iter()
        .zip(&answers)
        .filter(|((_, expected), answer)| expected != *answer)
        .map(|((expr, expected), answer)| format!("  {expr}\n    expected {expected}, got {answer}\n"))
        .collect();
    assert!(wrong.is_empty(), "wrong answers:\n{wrong}");
}

const SQUARE: &str = "'POLYGON((0 0, 2 0, 2 2, 0 2, 0 0))'";

#[test]
fn spatial_functions_answer_as_in_sqlite() {
    let url = migrated("spatial_functions");
    let point = r#"'{"type": "Point", "coordinates": [1, 1]}'::json"#;
    let feature =
        r#"'{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 1]}}'::json"#;
    let cases = [
        // GeoJSON columns against WKT parameters, and the other way round.
        (format!("tb_st_within({point}, {SQUARE})"), "true"),
        (format!(r#"tb_st_within('{{"type": "Point", "coordinates": [3, 1]}}'::json, {SQUARE})"#), "false"),
        (format!("tb_st_contains({SQUARE}, {point})"), "true"),
        (format!("tb_st_within({feature}, {SQUARE})"), "true"),
        (format!(r#"tb_st_within('  {{"type": "Point", "coordinates": [1, 1]}}', {SQUARE})"#), "true"),
        // A location column against another (json and json).
        ("(SELECT tb_st_within(l.location, f.feature) FROM locations l, features f)".to_owned(), "true"),
        ("(SELECT tb_st_intersects(f.feature, l.location) FROM locations l, features f)".to_owned(), "true"),
        // Values that are no geometry never match, and raise no error.
        (format!("tb_st_within('not a geometry', {SQUARE})"), "NULL"),
        (format!("tb_st_within('{{\"type\": \"Point\"}}', {SQUARE})"), "NULL"),
        (format!("tb_st_within('{{broken', {SQUARE})"), "NULL"),
        (format!(r#"tb_st_within('{{"type": "Feature", "geometry": null}}', {SQUARE})"#), "NULL"),
        (format!("tb_st_within('\"POINT(1 1)\"'::json, {SQUARE})"), "NULL"),
        (format!("tb_st_within('SRID=4326;POINT(1 1)', {SQUARE})"), "NULL"),
        (format!("tb_st_within(NULL::json, {SQUARE})"), "NULL"),
        // Rings that are not closed and one-point lines, which `geo` would close or take; the
        // one difference from SQLite, on values the standards forbid.
        ("tb_st_within('POINT(1 0.5)', 'POLYGON((0 0, 2 0, 2 2))')".to_owned(), "NULL"),
        (
            r#"tb_geo_distance('POINT(1 0.5)', '{"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2]]]}')"#
                .to_owned(),
            "NULL",
        ),
        (r#"tb_geo_length('{"type": "LineString", "coordinates": [[0, 0]]}')"#.to_owned(), "NULL"),
        // Each predicate once.
        (format!("tb_st_equals('POINT(1 1)', {point})"), "true"),
        (format!("tb_st_disjoint('POINT(5 5)', {SQUARE})"), "true"),
        (format!("tb_st_touches('POINT(0 1)', {SQUARE})"), "true"),
        (format!("tb_st_touches({point}, {SQUARE})"), "false"),
        (format!("tb_st_overlaps('POLYGON((1 1, 3 1, 3 3, 1 3, 1 1))', {SQUARE})"), "true"),
        (format!("tb_st_crosses('LINESTRING(-1 1, 3 1)', {SQUARE})"), "true"),
        (format!("tb_st_intersects('LINESTRING(-1 1, 3 1)', {SQUARE})"), "true"),
        (format!("tb_st_contains({SQUARE}, 'POINT(5 5)')"), "false"),
        // DE-9IM patterns, in either case; a malformed pattern is NULL.
        (format!("tb_st_relate({point}, {SQUARE}, 'T*F**F***')"), "true"),
        (format!("tb_st_relate({point}, {SQUARE}, 't*f**f***')"), "true"),
        (format!("tb_st_relate({SQUARE}, {point}, 'T*F**F***')"), "false"),
        (format!("tb_st_relate({point}, {SQUARE}, 'T*F')"), "NULL"),
        (format!("tb_st_relate({point}, {SQUARE}, 'T*F**F**X')"), "NULL"),
        // Planar measures.
        ("tb_geo_distance('POINT(0 0)', 'POINT(3 4)')".to_owned(), "5"),
        (format!("tb_geo_distance({point}, {SQUARE})"), "0"),
        (format!("tb_geo_distance({point}, 'LINESTRING(4 0, 4 5)')"), "3"),
        ("tb_geo_length('LINESTRING(0 0, 3 4, 3 5)')".to_owned(), "6"),
        (r#"tb_geo_length('{"type": "LineString", "coordinates": [[0, 0], [0, 2]]}'::json)"#.to_owned(), "2"),
        (format!("tb_geo_length({SQUARE})"), "0"),
        ("tb_geo_length('POINT(1 1)')".to_owned(), "0"),
        ("tb_geo_length('GEOMETRYCOLLECTION(LINESTRING(0 0, 0 1), POLYGON((0 0, 1 0, 1 1, 0 0)))')".to_owned(), "1"),
        ("tb_geo_length('nothing')".to_owned(), "NULL"),
        // Z is ignored, as `geo` drops it.
        ("tb_geo_distance('POINT Z (0 0 7)', 'POINT(3 4)')".to_owned(), "5"),
        ("tb_st_equals('POINT Z (1 1 7)', 'point(1 1)')".to_owned(), "true"),
    ];
    let setup = [
        r#"INSERT INTO locations (name, description, encoding_type, location)
           VALUES ('here', '', 'application/geo+json', '{"type": "Point", "coordinates": [1, 1]}')"#,
        r#"INSERT INTO features (name, description, encoding_type, feature)
           VALUES ('square', '', 'application/geo+json', '{"type": "Feature", "properties": {},
               "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]}}')"#,
    ];
    let cases: Vec<(&str, &str)> = cases.iter().map(|(expr, expected)| (expr.as_str(), *expected)).collect();
    check(&url, &setup, &cases);
}

#[test]
fn stored_values_read_back_as_written() {
    let url = migrated("stored_values");
    let setup = [
        "INSERT INTO projects (name) VALUES ('second')",
        r#"INSERT INTO things (name, description, properties) VALUES ('t', '', '{"z": 1,  "a": [1.50, 2e3]}')"#,
        "INSERT INTO features (name, description, encoding_type, feature) VALUES ('f', '', 'text/plain', '\"x\"')",
        "INSERT INTO observations (phenomenon_time_start, result_number, feature_id) VALUES (1, 42, 1), (2, 1.50, 1)",
    ];
    check(
        &url,
        &setup,
        &[
            // The default project keeps id 1, and the sequence goes on after it.
            ("(SELECT string_agg(id || ' ' || name, ', ' ORDER BY id) FROM projects)", "1 default, 2 second"),
            ("(SELECT project_id FROM things)", "1"),
            // JSON text exactly as written: key order, spacing and number spelling.
            ("(SELECT properties FROM things)", r#"{"z": 1,  "a": [1.50, 2e3]}"#),
            ("(SELECT feature FROM features)", r#""x""#),
            // Integers keep scale 0, decimals their digits.
            (
                "(SELECT string_agg(result_number || ' ' || scale(result_number), ', ' ORDER BY id) FROM observations)",
                "42 0, 1.50 2",
            ),
            ("(SELECT string_agg(id::text, ', ' ORDER BY id) FROM observations)", "1, 2"),
        ],
    );
}
