//! Snapshot tests of the SQL the compiler writes for typical queries.

use expect_test::{Expect, expect};
use model::{EntityType, Instant};

use crate::{Page, SqliteDialect, select};

fn check(entity: EntityType, query: &str, expect: Expect) {
    let query = odata::parse_query(query, entity, &odata::Limits::default()).expect("query binds");
    let (statement, _) =
        select(&SqliteDialect, entity, &query, None, Page { limit: Some(100), offset: 0 }, Instant::from_micros(0));
    expect.assert_eq(&statement.sql);
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
