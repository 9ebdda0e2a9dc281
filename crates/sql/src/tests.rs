//! Snapshot tests of the SQL the compiler writes for typical queries.

use expect_test::{Expect, expect};
use model::{EntityType, Instant};

use odata::Visibility;

use crate::{Page, SqliteDialect, count_expanded, select, select_expanded};

fn check(entity: EntityType, query: &str, expect: Expect) {
    check_as(&Visibility::All, entity, query, expect);
}

fn check_as(visibility: &Visibility, entity: EntityType, query: &str, expect: Expect) {
    let query = odata::parse_query(query, entity, &odata::Limits::default()).expect("query binds");
    let page = Page { limit: Some(100), offset: 0 };
    let (statement, _) = select(&SqliteDialect, visibility, entity, &query, None, page, Instant::from_micros(0));
    expect.assert_eq(&statement.sql);
}

fn projects() -> Visibility {
    Visibility::Projects(vec![2, 3])
}

#[test]
fn filter_on_own_property_is_a_plain_condition() {
    check(
        EntityType::Thing,
        "$filter=name%20eq%20'a'",
        expect![[
            r#"SELECT t0.id, t0.name, t0.description, t0.properties FROM things t0 WHERE (t0.name = ?1) ORDER BY t0.id LIMIT ?2"#
        ]],
    );
}

#[test]
fn foreign_key_id_needs_no_join() {
    check(
        EntityType::Observation,
        "$filter=Datastream/id%20eq%205&$select=result",
        expect![[
            r#"SELECT t0.id, t0.result_number, t0.result_string, t0.result_boolean, t0.result_json FROM observations t0 WHERE (t0.datastream_id = ?1) ORDER BY t0.id LIMIT ?2"#
        ]],
    );
}

#[test]
fn to_one_path_is_a_scalar_subquery() {
    check(
        EntityType::Observation,
        "$filter=Datastream/Thing/name%20eq%20'x'&$select=id",
        expect![[
            r#"SELECT t0.id FROM observations t0 WHERE ((SELECT t2.name FROM datastreams t1 JOIN things t2 ON t2.id = t1.thing_id WHERE t1.id = t0.datastream_id) = ?1) ORDER BY t0.id LIMIT ?2"#
        ]],
    );
}

#[test]
fn to_many_path_is_exists() {
    check(
        EntityType::Thing,
        "$filter=Datastreams/name%20eq%20'x'&$select=id",
        expect![[
            r#"SELECT t0.id FROM things t0 WHERE EXISTS (SELECT 1 FROM datastreams t1 WHERE t1.thing_id = t0.id AND (t1.name = ?1)) ORDER BY t0.id LIMIT ?2"#
        ]],
    );
}

#[test]
fn result_compares_by_type_of_other_side() {
    check(
        EntityType::Observation,
        "$filter=result%20gt%205%20and%20result%20eq%20'high'&$select=id",
        expect![[
            r#"SELECT t0.id FROM observations t0 WHERE ((t0.result_number > ?1) AND (t0.result_string = ?2)) ORDER BY t0.id LIMIT ?3"#
        ]],
    );
}

#[test]
fn phenomenon_time_interval_semantics() {
    check(
        EntityType::Observation,
        "$filter=phenomenonTime%20ge%202020-01-01T00:00:00Z&$orderby=phenomenonTime%20desc&$select=id",
        expect![[
            r#"SELECT t0.id FROM observations t0 WHERE (t0.phenomenon_time_start >= ?1 AND COALESCE(t0.phenomenon_time_end, t0.phenomenon_time_start) >= ?1) ORDER BY t0.phenomenon_time_start DESC, COALESCE(t0.phenomenon_time_end, t0.phenomenon_time_start) DESC, t0.id LIMIT ?2"#
        ]],
    );
}

#[test]
fn a_restricted_reader_sees_only_its_projects() {
    check_as(
        &projects(),
        EntityType::Thing,
        "$filter=name%20eq%20'a'&$select=id",
        expect![[
            r#"SELECT t0.id FROM things t0 WHERE t0.project_id IN (?1, ?2) AND (t0.name = ?3) ORDER BY t0.id LIMIT ?4"#
        ]],
    );
    check_as(
        &Visibility::Projects(Vec::new()),
        EntityType::Thing,
        "$select=id",
        expect![[r#"SELECT t0.id FROM things t0 WHERE 1 = 0 ORDER BY t0.id LIMIT ?1"#]],
    );
}

#[test]
fn hidden_entities_on_filter_paths_read_as_absent() {
    // A to-one hop, and the foreign-key shortcut that would reveal a hidden parent's id.
    check_as(
        &projects(),
        EntityType::Observation,
        "$filter=Datastream/Thing/name%20eq%20'x'%20and%20Datastream/id%20eq%205&$select=id",
        expect![
            "SELECT t0.id FROM observations t0 WHERE t0.project_id IN (?1, ?2) AND (((SELECT t2.name FROM datastreams t1 JOIN things t2 ON t2.id = t1.thing_id AND t2.project_id IN (?5, ?6) WHERE t1.id = t0.datastream_id AND t1.project_id IN (?3, ?4)) = ?7) AND ((SELECT t3.id FROM datastreams t3 WHERE t3.id = t0.datastream_id AND t3.project_id IN (?8, ?9)) = ?10)) ORDER BY t0.id LIMIT ?11"
        ],
    );
    // A to-many hop.
    check_as(
        &projects(),
        EntityType::Thing,
        "$filter=Datastreams/name%20eq%20'x'&$select=id",
        expect![[
            r#"SELECT t0.id FROM things t0 WHERE t0.project_id IN (?1, ?2) AND EXISTS (SELECT 1 FROM datastreams t1 WHERE t1.thing_id = t0.id AND t1.project_id IN (?3, ?4) AND (t1.name = ?5)) ORDER BY t0.id LIMIT ?6"#
        ]],
    );
}

#[test]
fn expanded_entities_and_their_counts_are_restricted_too() {
    let thing = EntityType::Thing;
    let datastreams = thing.navigation("Datastreams").expect("navigation");
    let query = odata::parse_query("$select=name", EntityType::Datastream, &odata::Limits::default()).unwrap();
    let page = Page { limit: Some(3), offset: 0 };
    let now = Instant::from_micros(0);
    let expanded = select_expanded(&SqliteDialect, &projects(), thing, datastreams, &query, &[1, 2], page, now);
    expect![[
        r#"SELECT t0.value, t1.id, t1.name FROM json_each(?1) t0 JOIN datastreams t1 ON t1.id IN (SELECT t2.id FROM datastreams t2 WHERE t2.thing_id = t0.value AND t2.project_id IN (?2, ?3) ORDER BY t2.id LIMIT ?4) ORDER BY t0.value, t1.id"#
    ]]
    .assert_eq(&expanded.statement.sql);
    let location = EntityType::Datastream.navigation("Thing").expect("navigation");
    let expanded =
        select_expanded(&SqliteDialect, &projects(), EntityType::Datastream, location, &query, &[1], page, now);
    expect!["SELECT t0.value, t1.id, t1.name FROM json_each(?1) t0 JOIN datastreams t2 ON t2.id = t0.value JOIN things t1 ON t1.id = t2.thing_id WHERE t1.project_id IN (?2, ?3)"].assert_eq(&expanded.statement.sql);
    let counted = count_expanded(&SqliteDialect, &projects(), thing, datastreams, None, &[1], now);
    expect!["SELECT t0.value, (SELECT COUNT(*) FROM datastreams t1 WHERE t1.thing_id = t0.value AND t1.project_id IN (?2, ?3)) FROM json_each(?1) t0"].assert_eq(&counted.sql);
}

#[test]
fn placeholders_are_numbered_in_each_dialect() {
    use crate::{Dialect, PostgresDialect, SqliteDialect};
    for (n, text) in [(1, "1"), (9, "9"), (10, "10"), (1088, "1088"), (65_535, "65535"), (0, "0")] {
        assert_eq!(PostgresDialect.placeholder(n), format!("${text}"));
        assert_eq!(SqliteDialect.placeholder(n), format!("?{text}"));
    }
    let mut out = String::from("VALUES (");
    PostgresDialect.push_placeholder(&mut out, 12);
    assert_eq!(out, "VALUES ($12");
    assert_eq!(
        crate::insert_rows(&PostgresDialect, "t", &["a", "b"], 2),
        "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
    );
}
