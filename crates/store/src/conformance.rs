//! The conformance suite every [`Store`] backend runs: one function per case, each given a
//! fresh empty store, and [`store_conformance_tests!`](crate::store_conformance_tests) to turn
//! them all into `#[test]`s with one line.
//!
//! A case states behaviour `app` relies on in domain terms (values read back as written,
//! cascades, links, paging, group commit), so a case added here runs on every backend. Cases
//! assert on the calling thread: jobs only carry values out through `std::sync::mpsc` channels,
//! because a panic inside a job would be caught by the backend and reported as a failed job.
//!
//! JSON is compared without insignificant whitespace, so a backend may store it normalized
//! (PostgreSQL `jsonb`); the inputs keep their object keys in the order `jsonb` would sort them.

use std::sync::mpsc;
use std::time::Duration;

use model::{EntityType, Id, Instant, Interval, Navigation, Property};
use odata::{Expr, Limits, Query, Visibility};

use crate::{Expanded, Paging, Reader, Record, Row, Rows, Store, StoreError, ThingLocation, Value, Writer, id_eq};

/// Expands to one `#[test]` per conformance case, each running on a fresh store from
/// `$factory` (anything callable as `$factory()` returning a `Box<dyn Store>`).
///
/// ```ignore
/// store::store_conformance_tests!(open_temp_store);
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            text_object_and_json_properties_read_back_as_written,
            instants_intervals_and_their_mix_read_back_as_written,
            geometry_reads_back_as_its_json,
            observation_results_keep_their_json_type,
            many_observations_at_once_keep_their_values,
            insert_many_returns_one_id_per_record_in_order,
            update_overwrites_only_the_given_values,
            update_moves_to_one_links,
            update_of_a_missing_entity_returns_false,
            deleting_a_thing_deletes_its_datastreams_observations_and_links,
            deleting_a_sensor_or_a_datastream_deletes_their_observations,
            deleting_a_feature_deletes_its_observations,
            deleting_an_observed_property_deletes_its_multi_datastreams,
            deleting_a_location_removes_its_link_rows,
            link_unlink_and_unlink_all_change_related_both_ways,
            links_to_missing_entities_are_conflicts,
            exists_answers_for_id_and_filter_constraints,
            query_applies_constraint_filter_order_paging_and_count,
            query_pages_by_default_top_and_caps_at_max_top,
            expand_to_one_gives_the_target_or_none,
            expand_to_many_pages_and_counts_each_parent_separately,
            nested_expand_pages_each_child_separately,
            failed_job_rolls_back_only_its_own_changes,
            reads_see_a_write_only_once_its_done_has_run,
            extend_times_widens_the_derived_times,
            extents_of_failed_jobs_in_a_group_are_not_kept,
            recompute_times_follows_the_observations,
            thing_locations_lists_locations_with_their_generated_feature,
            note_feature_is_true_only_the_first_time,
            jobs_of_one_group_see_what_earlier_jobs_changed,
            what_a_group_looks_up_ahead_each_job_sees_as_it_could,
            observations_of_one_group_are_seen_at_once_and_follow_their_jobs,
            large_writes_commit_and_report_like_the_others,
            announcements_are_heard_once_committed_in_order,
            shutdown_commits_queued_writes_then_refuses_new_ones,
            restricted_visibility_hides_other_projects_everywhere,
            restricted_writes_see_only_their_projects,
            users_and_their_roles_per_project,
            tokens_are_found_by_hash_with_their_scope_and_revoked_once,
            projects_start_with_the_default_one,
            devices_are_unique_by_urn_and_found_by_thing_and_secret,
            enrollment_tokens_are_used_once_and_expire,
            certificates_are_revoked_once_and_listed_until_they_expire,
            the_authority_is_stored_once_and_numbers_its_crls,
            feeds_name_the_thing_and_what_it_observes,
            statistics_follow_random_inserts_updates_and_deletes,
            statistics_follow_cascades,
            a_group_of_many_datastreams_keeps_each_ones_times_and_statistics,
            latest_observations_expand_from_what_is_kept,
            expired_observations_leave_their_rollups,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let store: ::std::boxed::Box<dyn $crate::Store> = ($factory)();
                $crate::conformance::$case(&*store);
            }
        )*
    };
}

/// How long a case waits for a job or callback before it fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

const PAGING: Paging = Paging { default_top: 100, max_top: 1000 };

// ---------------------------------------------------------------------------------------------
// Running jobs

/// Runs `job` in a write transaction and returns its value once `done` reported the commit.
fn try_write<T: Send + 'static>(
    store: &dyn Store,
    job: impl FnOnce(&mut dyn Writer) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let (value_tx, value_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    store.write(
        Visibility::All,
        Box::new(move |w| {
            let value = job(w)?;
            let _ = value_tx.send(value);
            Ok(())
        }),
        Box::new(move |outcome| {
            let _ = done_tx.send(outcome);
        }),
    );
    let outcome = done_rx.recv_timeout(WAIT).expect("the write job's `done` never ran");
    outcome.map(|()| value_rx.try_recv().expect("a committed write job left no value"))
}

fn write<T: Send + 'static>(
    store: &dyn Store,
    job: impl FnOnce(&mut dyn Writer) -> Result<T, StoreError> + Send + 'static,
) -> T {
    try_write(store, job).unwrap_or_else(|e| panic!("the write job failed: {e}"))
}

/// Runs `job` on a reader and returns its value.
fn read<T: Send + 'static>(store: &dyn Store, job: impl FnOnce(&mut dyn Reader) -> T + Send + 'static) -> T {
    read_as(store, Visibility::All, job)
}

/// Runs `job` on a reader with `visibility` and returns its value.
fn read_as<T: Send + 'static>(
    store: &dyn Store,
    visibility: Visibility,
    job: impl FnOnce(&mut dyn Reader) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    store.read(
        visibility,
        Box::new(move |r| {
            let _ = tx.send(job(r));
        }),
    );
    rx.recv_timeout(WAIT).expect("the read job never answered")
}

/// Runs a query given as a raw query string (`$filter=...&$top=...`).
fn query(store: &dyn Store, entity: EntityType, constraint: Option<&str>, raw: &str, paging: Paging) -> Rows {
    let constraint = constraint.map(|c| filter(entity, c));
    let query = parse(entity, raw);
    read(store, move |r| r.query(entity, constraint.as_ref(), &query, paging)).expect("the query failed")
}

fn exists(store: &dyn Store, entity: EntityType, id: Id) -> bool {
    read(store, move |r| r.exists(entity, &id_eq(id))).expect("exists failed")
}

/// The ids `navigation` leads to from `from`, sorted.
fn related(store: &dyn Store, entity: EntityType, from: Id, navigation: &str) -> Vec<Id> {
    let nav = navigation_of(entity, navigation);
    let mut ids = read(store, move |r| r.related(entity, from, nav)).expect("related failed");
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// Building inputs

fn parse(entity: EntityType, raw: &str) -> Query {
    odata::parse_query(raw, entity, &Limits::default()).unwrap_or_else(|e| panic!("bad test query `{raw}`: {e:?}"))
}

fn filter(entity: EntityType, raw: &str) -> Expr {
    parse(entity, &format!("$filter={raw}")).filter.expect("a filter")
}

fn property(entity: EntityType, name: &str) -> &'static Property {
    entity.property(name).unwrap_or_else(|| panic!("{entity} has no property {name}"))
}

fn navigation_of(entity: EntityType, name: &str) -> &'static Navigation {
    entity.navigation(name).unwrap_or_else(|| panic!("{entity} has no navigation {name}"))
}

fn record(entity: EntityType, values: &[(&str, Value)], links: &[(&str, Option<Id>)]) -> Record {
    Record {
        values: values.iter().map(|(name, value)| (property(entity, name), value.clone())).collect(),
        links: links.iter().map(|(name, id)| (navigation_of(entity, name), *id)).collect(),
        project: None,
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn json(s: &str) -> Value {
    Value::Json(s.to_owned())
}

/// An instant `seconds` after a fixed point in 2023.
fn at(seconds: i64) -> Instant {
    Instant::from_micros(1_700_000_000_000_000 + seconds * 1_000_000)
}

fn span(start: i64, end: i64) -> Interval {
    Interval::new(at(start), at(end)).expect("start <= end")
}

const POINT: &str = r#"{"type":"Point","coordinates":[7.5,51.25]}"#;

fn thing(w: &mut dyn Writer, name: &str) -> Result<Id, StoreError> {
    let values = [("name", text(name)), ("description", text("a thing"))];
    w.insert(EntityType::Thing, &record(EntityType::Thing, &values, &[]))
}

fn location(w: &mut dyn Writer, name: &str) -> Result<Id, StoreError> {
    let values = [
        ("name", text(name)),
        ("description", text("a location")),
        ("encodingType", text("application/geo+json")),
        ("location", json(POINT)),
    ];
    w.insert(EntityType::Location, &record(EntityType::Location, &values, &[]))
}

fn feature(w: &mut dyn Writer, name: &str) -> Result<Id, StoreError> {
    let values = [
        ("name", text(name)),
        ("description", text("a feature")),
        ("encodingType", text("application/geo+json")),
        ("feature", json(POINT)),
    ];
    w.insert(EntityType::FeatureOfInterest, &record(EntityType::FeatureOfInterest, &values, &[]))
}

fn sensor(w: &mut dyn Writer) -> Result<Id, StoreError> {
    let values = [
        ("name", text("sensor")),
        ("description", text("a sensor")),
        ("encodingType", text("application/pdf")),
        ("metadata", json(r#""https://example.org/sensor.pdf""#)),
    ];
    w.insert(EntityType::Sensor, &record(EntityType::Sensor, &values, &[]))
}

fn observed_property(w: &mut dyn Writer, name: &str) -> Result<Id, StoreError> {
    let values = [
        ("name", text(name)),
        ("definition", text("https://example.org/temperature")),
        ("description", text("an observed property")),
    ];
    w.insert(EntityType::ObservedProperty, &record(EntityType::ObservedProperty, &values, &[]))
}

/// A Datastream of `thing` with a Sensor and ObservedProperty of its own.
fn datastream(w: &mut dyn Writer, thing: Id, name: &str) -> Result<Id, StoreError> {
    let sensor = sensor(w)?;
    let observed_property = observed_property(w, name)?;
    datastream_of(w, thing, sensor, observed_property, name)
}

fn datastream_of(
    w: &mut dyn Writer,
    thing: Id,
    sensor: Id,
    observed_property: Id,
    name: &str,
) -> Result<Id, StoreError> {
    let values = [
        ("name", text(name)),
        ("description", text("a datastream")),
        ("unitOfMeasurement", json(r#"{"name":"degree Celsius","symbol":"°C"}"#)),
        ("observationType", text("http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement")),
    ];
    let links = [("Thing", Some(thing)), ("Sensor", Some(sensor)), ("ObservedProperty", Some(observed_property))];
    w.insert(EntityType::Datastream, &record(EntityType::Datastream, &values, &links))
}

/// A MultiDatastream of `thing` observing `observed_property`.
fn multi_datastream(w: &mut dyn Writer, thing: Id, observed_property: Id) -> Result<Id, StoreError> {
    let sensor = sensor(w)?;
    let values = [
        ("name", text("multi")),
        ("description", text("a multi datastream")),
        ("unitOfMeasurements", json(r#"[{"name":"degree Celsius","symbol":"°C"}]"#)),
        ("observationType", text("http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation")),
        (
            "multiObservationDataTypes",
            json(r#"["http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"]"#),
        ),
    ];
    let links = [("Thing", Some(thing)), ("Sensor", Some(sensor))];
    let id = w.insert(EntityType::MultiDatastream, &record(EntityType::MultiDatastream, &values, &links))?;
    w.link(navigation_of(EntityType::MultiDatastream, "ObservedProperties"), id, observed_property)?;
    Ok(id)
}

/// An Observation of the Datastream (or MultiDatastream, by `parent`) `of`.
fn observation(
    w: &mut dyn Writer,
    parent: EntityType,
    of: Id,
    feature: Id,
    phenomenon: Value,
    result: Value,
) -> Result<Id, StoreError> {
    let values = [("phenomenonTime", phenomenon), ("result", result)];
    let links = [(parent.name(), Some(of)), ("FeatureOfInterest", Some(feature))];
    w.insert(EntityType::Observation, &record(EntityType::Observation, &values, &links))
}

// ---------------------------------------------------------------------------------------------
// Checking outputs

/// The value of the field `name` in `row` of `rows`.
fn field<'r>(fields: &[&'static Property], row: &'r Row, name: &str) -> &'r Value {
    let at = fields.iter().position(|p| p.name == name).unwrap_or_else(|| panic!("no field {name} in the rows"));
    &row.values[at]
}

fn ids(rows: &Rows) -> Vec<Id> {
    rows.rows.iter().map(|r| r.id).collect()
}

fn names_of(rows: &Rows) -> Vec<String> {
    rows.rows
        .iter()
        .map(|row| match field(&rows.fields, row, "name") {
            Value::Text(s) => s.clone(),
            other => panic!("a name that is not text: {other:?}"),
        })
        .collect()
}

/// The one row with `id`, read with every property.
fn get(store: &dyn Store, entity: EntityType, id: Id) -> (Vec<&'static Property>, Row) {
    let rows = query(store, entity, Some(&format!("id eq {id}")), "", PAGING);
    assert_eq!(ids(&rows), [id], "{entity} {id} should read back");
    (rows.fields, rows.rows.into_iter().next().expect("one row"))
}

/// JSON text without whitespace outside strings.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[track_caller]
fn assert_json(value: &Value, expected: &str) {
    match value {
        Value::Json(actual) => assert_eq!(compact(actual), compact(expected)),
        other => panic!("expected JSON {expected}, got {other:?}"),
    }
}

fn sorted(mut ids: Vec<Id>) -> Vec<Id> {
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// Values

pub fn text_object_and_json_properties_read_back_as_written(store: &dyn Store) {
    let id = write(store, |w| {
        let values = [
            ("name", text("thermometer \"T1\" — ünïcode")),
            ("description", text("")),
            ("encodingType", text("application/pdf")),
            ("metadata", json(r#"[1,"two",{"three":3.5},null,true]"#)),
            ("properties", json(r#"{"a":{"b":[1,2]},"c":"d"}"#)),
        ];
        w.insert(EntityType::Sensor, &record(EntityType::Sensor, &values, &[]))
    });
    let (fields, row) = get(store, EntityType::Sensor, id);
    assert_eq!(field(&fields, &row, "name"), &text("thermometer \"T1\" — ünïcode"));
    assert_eq!(field(&fields, &row, "description"), &text(""));
    assert_eq!(field(&fields, &row, "encodingType"), &text("application/pdf"));
    assert_json(field(&fields, &row, "metadata"), r#"[1,"two",{"three":3.5},null,true]"#);
    assert_json(field(&fields, &row, "properties"), r#"{"a":{"b":[1,2]},"c":"d"}"#);

    // An absent optional property reads back as null; a JSON string stays a JSON string.
    let other = write(store, |w| {
        let values = [
            ("name", text("s")),
            ("description", text("d")),
            ("encodingType", text("text/html")),
            ("metadata", json(r#""https://example.org""#)),
        ];
        w.insert(EntityType::Sensor, &record(EntityType::Sensor, &values, &[]))
    });
    let (fields, row) = get(store, EntityType::Sensor, other);
    assert_json(field(&fields, &row, "metadata"), r#""https://example.org""#);
    assert_eq!(field(&fields, &row, "properties"), &Value::Null);
}

pub fn instants_intervals_and_their_mix_read_back_as_written(store: &dyn Store) {
    let (historical, instant, interval) = write(store, |w| {
        let thing = thing(w, "t")?;
        let historical = w.insert(
            EntityType::HistoricalLocation,
            &record(EntityType::HistoricalLocation, &[("time", Value::Instant(at(-5)))], &[("Thing", Some(thing))]),
        )?;
        let ds = datastream(w, thing, "ds")?;
        let foi = feature(w, "f")?;
        let values = [
            ("phenomenonTime", Value::Instant(at(1))),
            ("resultTime", Value::Instant(at(2))),
            ("result", Value::Integer(1)),
            ("validTime", Value::Interval(span(0, 3600))),
        ];
        let links = [("Datastream", Some(ds)), ("FeatureOfInterest", Some(foi))];
        let instant = w.insert(EntityType::Observation, &record(EntityType::Observation, &values, &links))?;
        let values = [
            ("phenomenonTime", Value::Interval(span(10, 20))),
            ("resultTime", Value::Null),
            ("result", Value::Integer(2)),
            ("validTime", Value::Null),
        ];
        let interval = w.insert(EntityType::Observation, &record(EntityType::Observation, &values, &links))?;
        Ok((historical, instant, interval))
    });

    let (fields, row) = get(store, EntityType::HistoricalLocation, historical);
    assert_eq!(field(&fields, &row, "time"), &Value::Instant(at(-5)));

    let (fields, row) = get(store, EntityType::Observation, instant);
    assert_eq!(field(&fields, &row, "phenomenonTime"), &Value::Instant(at(1)));
    assert_eq!(field(&fields, &row, "resultTime"), &Value::Instant(at(2)));
    assert_eq!(field(&fields, &row, "validTime"), &Value::Interval(span(0, 3600)));

    let (fields, row) = get(store, EntityType::Observation, interval);
    assert_eq!(field(&fields, &row, "phenomenonTime"), &Value::Interval(span(10, 20)));
    assert_eq!(field(&fields, &row, "resultTime"), &Value::Null);
    assert_eq!(field(&fields, &row, "validTime"), &Value::Null);
}

pub fn geometry_reads_back_as_its_json(store: &dyn Store) {
    const POLYGON: &str = r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}"#;
    let (point, polygon) = write(store, |w| {
        let point = location(w, "point")?;
        let values = [
            ("name", text("polygon")),
            ("description", text("an area")),
            ("encodingType", text("application/geo+json")),
            ("feature", json(POLYGON)),
        ];
        let polygon = w.insert(EntityType::FeatureOfInterest, &record(EntityType::FeatureOfInterest, &values, &[]))?;
        Ok((point, polygon))
    });
    let (fields, row) = get(store, EntityType::Location, point);
    assert_json(field(&fields, &row, "location"), POINT);
    let (fields, row) = get(store, EntityType::FeatureOfInterest, polygon);
    assert_json(field(&fields, &row, "feature"), POLYGON);
}

pub fn observation_results_keep_their_json_type(store: &dyn Store) {
    // 2^53 + 1 is not a double: an integer result must not pass through one.
    let results = vec![
        Value::Integer(-7),
        Value::Integer(9_007_199_254_740_993),
        Value::Real(2.5),
        Value::Real(-0.125),
        text("high"),
        text(""),
        Value::Boolean(true),
        Value::Boolean(false),
        json(r#"{"a":1,"b":[true,null]}"#),
        json("[1,2,3]"),
        Value::Null,
    ];
    let inputs = results.clone();
    let ids = write(store, move |w| {
        let thing = thing(w, "t")?;
        let ds = datastream(w, thing, "ds")?;
        let foi = feature(w, "f")?;
        let mut ids = Vec::new();
        for (i, result) in inputs.into_iter().enumerate() {
            ids.push(observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(i as i64)), result)?);
        }
        Ok(ids)
    });
    for (id, expected) in ids.into_iter().zip(results) {
        let (fields, row) = get(store, EntityType::Observation, id);
        let actual = field(&fields, &row, "result");
        match &expected {
            Value::Json(text) => assert_json(actual, text),
            _ => assert_eq!(actual, &expected),
        }
    }
}

/// Enough Observations in one `insert_many` for a backend's bulk path (PostgreSQL's COPY), with
/// every kind of result and time, read back as written.
pub fn many_observations_at_once_keep_their_values(store: &dyn Store) {
    let kinds = [
        Value::Integer(-7),
        Value::Integer(9_007_199_254_740_993),
        Value::Real(0.1),
        Value::Real(-2.5e-7),
        Value::Real(123_456.789),
        Value::Real(1e21),
        text("tab\tand \"quotes\""),
        Value::Boolean(true),
        json(r#"{"b":[true,null],"a":1}"#),
        Value::Null,
    ];
    let results: Vec<Value> = (0..500).map(|i| kinds[i % kinds.len()].clone()).collect();
    let inputs = results.clone();
    let ids = write(store, move |w| {
        let thing = thing(w, "t")?;
        let ds = datastream(w, thing, "ds")?;
        let foi = feature(w, "f")?;
        let records: Vec<Record> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, result)| {
                let time = if i % 2 == 0 {
                    Value::Instant(at(i as i64))
                } else {
                    Value::Interval(Interval::new(at(i as i64), at(i as i64 + 5)).expect("an interval"))
                };
                let values = [("phenomenonTime", time), ("result", result)];
                let links = [("Datastream", Some(ds)), ("FeatureOfInterest", Some(foi))];
                record(EntityType::Observation, &values, &links)
            })
            .collect();
        w.insert_many(EntityType::Observation, &records)
    });
    assert_eq!(ids.len(), 500);
    assert!(ids.windows(2).all(|w| w[0].0 < w[1].0), "ids in record order");
    for (i, (id, expected)) in ids.into_iter().zip(results).enumerate().filter(|(i, _)| i % 7 == 0 || *i < 20) {
        let (fields, row) = get(store, EntityType::Observation, id);
        match &expected {
            Value::Json(text) => assert_json(field(&fields, &row, "result"), text),
            _ => assert_eq!(field(&fields, &row, "result"), &expected, "row {i}"),
        }
        let time = field(&fields, &row, "phenomenonTime");
        assert!(matches!(time, Value::Instant(_) | Value::Interval(_)), "row {i}: {time:?}");
    }
}

pub fn insert_many_returns_one_id_per_record_in_order(store: &dyn Store) {
    // More records than one multi-row statement is likely to hold.
    let labels: Vec<String> = (0..700).map(|i| format!("thing {i:04}")).collect();
    let records: Vec<Record> = labels
        .iter()
        .map(|name| record(EntityType::Thing, &[("name", text(name)), ("description", text("d"))], &[]))
        .collect();
    let (ids, none) = write(store, move |w| {
        let ids = w.insert_many(EntityType::Thing, &records)?;
        Ok((ids, w.insert_many(EntityType::Thing, &[])?))
    });
    assert!(none.is_empty(), "inserting no records gives no ids");
    assert_eq!(ids.len(), labels.len());
    let rows = query(store, EntityType::Thing, None, "$select=name&$orderby=id&$top=1000", PAGING);
    let stored: Vec<(Id, String)> = ids.iter().copied().zip(labels.iter().cloned()).collect();
    let read_back: Vec<(Id, String)> = rows.rows.iter().map(|r| r.id).zip(names_of(&rows)).collect();
    let mut expected = stored;
    expected.sort();
    assert_eq!(read_back, expected, "each id belongs to the record at its position");
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "ids are distinct");
}

// ---------------------------------------------------------------------------------------------
// Updates

pub fn update_overwrites_only_the_given_values(store: &dyn Store) {
    let (id, other) = write(store, |w| {
        let values = [("name", text("old")), ("description", text("kept")), ("properties", json(r#"{"a":1}"#))];
        let id = w.insert(EntityType::Thing, &record(EntityType::Thing, &values, &[]))?;
        Ok((id, thing(w, "other")?))
    });
    let updated = write(store, move |w| {
        w.update(
            EntityType::Thing,
            id,
            &record(EntityType::Thing, &[("name", text("new")), ("properties", Value::Null)], &[]),
        )
    });
    assert!(updated);
    let (fields, row) = get(store, EntityType::Thing, id);
    assert_eq!(field(&fields, &row, "name"), &text("new"));
    assert_eq!(field(&fields, &row, "description"), &text("kept"));
    assert_eq!(field(&fields, &row, "properties"), &Value::Null);
    let (fields, row) = get(store, EntityType::Thing, other);
    assert_eq!(field(&fields, &row, "name"), &text("other"), "other entities are untouched");

    // An update with nothing to change still says whether the entity exists.
    let (empty, empty_missing) = write(store, move |w| {
        Ok((
            w.update(EntityType::Thing, id, &Record::default())?,
            w.update(EntityType::Thing, Id(9_999), &Record::default())?,
        ))
    });
    assert!(empty);
    assert!(!empty_missing);
}

pub fn update_moves_to_one_links(store: &dyn Store) {
    let (first, second, ds, f1, f2, obs) = write(store, |w| {
        let first = thing(w, "first")?;
        let second = thing(w, "second")?;
        let ds = datastream(w, first, "ds")?;
        let f1 = feature(w, "f1")?;
        let f2 = feature(w, "f2")?;
        let obs = observation(w, EntityType::Datastream, ds, f1, Value::Instant(at(0)), Value::Integer(1))?;
        Ok((first, second, ds, f1, f2, obs))
    });
    let moved = write(store, move |w| {
        let a =
            w.update(EntityType::Datastream, ds, &record(EntityType::Datastream, &[], &[("Thing", Some(second))]))?;
        let b = w.update(
            EntityType::Observation,
            obs,
            &record(EntityType::Observation, &[("result", Value::Real(1.5))], &[("FeatureOfInterest", Some(f2))]),
        )?;
        Ok(a && b)
    });
    assert!(moved);
    assert_eq!(related(store, EntityType::Datastream, ds, "Thing"), [second]);
    assert_eq!(related(store, EntityType::Thing, first, "Datastreams"), []);
    assert_eq!(related(store, EntityType::Thing, second, "Datastreams"), [ds]);
    assert_eq!(related(store, EntityType::Observation, obs, "FeatureOfInterest"), [f2]);
    assert_eq!(related(store, EntityType::FeatureOfInterest, f1, "Observations"), []);
    let (fields, row) = get(store, EntityType::Observation, obs);
    assert_eq!(field(&fields, &row, "result"), &Value::Real(1.5));
    assert_eq!(field(&fields, &row, "phenomenonTime"), &Value::Instant(at(0)), "times are untouched");
}

pub fn update_of_a_missing_entity_returns_false(store: &dyn Store) {
    let updated = write(store, |w| {
        w.update(EntityType::Thing, Id(4_242), &record(EntityType::Thing, &[("name", text("x"))], &[]))
    });
    assert!(!updated);
    assert!(query(store, EntityType::Thing, None, "", PAGING).rows.is_empty(), "nothing was created");
}

// ---------------------------------------------------------------------------------------------
// Deletes and cascades

pub fn deleting_a_sensor_or_a_datastream_deletes_their_observations(store: &dyn Store) {
    let (first, second, kept) = write(store, |w| {
        let t = thing(w, "t")?;
        let foi = feature(w, "f")?;
        let (first, second, third) = (datastream(w, t, "a")?, datastream(w, t, "b")?, datastream(w, t, "c")?);
        for ds in [first, second, third] {
            for n in 0..3 {
                observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(n)), Value::Integer(n))?;
            }
        }
        Ok((first, second, third))
    });
    let sensor = related(store, EntityType::Datastream, first, "Sensor")[0];
    write(store, move |w| w.delete(EntityType::Sensor, sensor));
    let observations = |ds: Id| related(store, EntityType::Datastream, ds, "Observations").len();
    assert_eq!(query(store, EntityType::Observation, None, "", PAGING).rows.len(), 6, "the Sensor's went");
    write(store, move |w| w.delete(EntityType::Datastream, second));
    assert_eq!(observations(kept), 3);
    assert_eq!(query(store, EntityType::Observation, None, "", PAGING).rows.len(), 3, "the Datastream's went");
}

pub fn deleting_a_thing_deletes_its_datastreams_observations_and_links(store: &dyn Store) {
    let (doomed, kept, loc, historical, ds, obs, foi, kept_ds, kept_obs) = write(store, |w| {
        let doomed = thing(w, "doomed")?;
        let kept = thing(w, "kept")?;
        let loc = location(w, "shared")?;
        let things_locations = navigation_of(EntityType::Thing, "Locations");
        w.link(things_locations, doomed, loc)?;
        w.link(things_locations, kept, loc)?;
        let historical = w.insert(
            EntityType::HistoricalLocation,
            &record(EntityType::HistoricalLocation, &[("time", Value::Instant(at(0)))], &[("Thing", Some(doomed))]),
        )?;
        w.link(navigation_of(EntityType::HistoricalLocation, "Locations"), historical, loc)?;
        let ds = datastream(w, doomed, "ds")?;
        let foi = feature(w, "f")?;
        let obs = observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(1)), Value::Integer(1))?;
        let kept_ds = datastream(w, kept, "kept ds")?;
        let kept_obs = observation(w, EntityType::Datastream, kept_ds, foi, Value::Instant(at(2)), Value::Integer(2))?;
        Ok((doomed, kept, loc, historical, ds, obs, foi, kept_ds, kept_obs))
    });
    let (first, second) =
        write(store, move |w| Ok((w.delete(EntityType::Thing, doomed)?, w.delete(EntityType::Thing, doomed)?)));
    assert!(first, "the Thing existed");
    assert!(!second, "a second delete finds nothing");

    assert!(!exists(store, EntityType::Thing, doomed));
    assert!(!exists(store, EntityType::Datastream, ds), "its Datastreams go");
    assert!(!exists(store, EntityType::Observation, obs), "their Observations go");
    assert!(!exists(store, EntityType::HistoricalLocation, historical), "its HistoricalLocations go");
    assert!(exists(store, EntityType::Location, loc), "a Location outlives its Things");
    assert!(exists(store, EntityType::FeatureOfInterest, foi), "a feature outlives its Observations");
    assert_eq!(related(store, EntityType::Location, loc, "Things"), [kept], "the link row goes");
    assert_eq!(related(store, EntityType::Location, loc, "HistoricalLocations"), []);
    assert!(exists(store, EntityType::Thing, kept));
    assert!(exists(store, EntityType::Datastream, kept_ds));
    assert!(exists(store, EntityType::Observation, kept_obs));
}

pub fn deleting_a_feature_deletes_its_observations(store: &dyn Store) {
    let (ds, doomed, kept, o1, o2, o3) = write(store, |w| {
        let thing = thing(w, "t")?;
        let ds = datastream(w, thing, "ds")?;
        let doomed = feature(w, "doomed")?;
        let kept = feature(w, "kept")?;
        let o1 = observation(w, EntityType::Datastream, ds, doomed, Value::Instant(at(1)), Value::Integer(1))?;
        let o2 = observation(w, EntityType::Datastream, ds, doomed, Value::Instant(at(2)), Value::Integer(2))?;
        let o3 = observation(w, EntityType::Datastream, ds, kept, Value::Instant(at(3)), Value::Integer(3))?;
        Ok((ds, doomed, kept, o1, o2, o3))
    });
    assert!(write(store, move |w| w.delete(EntityType::FeatureOfInterest, doomed)));
    assert!(!exists(store, EntityType::FeatureOfInterest, doomed));
    assert!(!exists(store, EntityType::Observation, o1));
    assert!(!exists(store, EntityType::Observation, o2));
    assert!(exists(store, EntityType::Observation, o3));
    assert!(exists(store, EntityType::FeatureOfInterest, kept));
    assert_eq!(related(store, EntityType::Datastream, ds, "Observations"), [o3], "the Datastream stays");
}

pub fn deleting_an_observed_property_deletes_its_multi_datastreams(store: &dyn Store) {
    let (doomed, kept_property, ds, md, kept_md, foi, obs) = write(store, |w| {
        let thing = thing(w, "t")?;
        let doomed = observed_property(w, "doomed")?;
        let kept_property = observed_property(w, "kept")?;
        let sensor = sensor(w)?;
        let ds = datastream_of(w, thing, sensor, doomed, "ds")?;
        let md = multi_datastream(w, thing, doomed)?;
        let kept_md = multi_datastream(w, thing, kept_property)?;
        let foi = feature(w, "f")?;
        let obs = observation(w, EntityType::MultiDatastream, md, foi, Value::Instant(at(0)), json("[1]"))?;
        Ok((doomed, kept_property, ds, md, kept_md, foi, obs))
    });
    assert!(write(store, move |w| w.delete(EntityType::ObservedProperty, doomed)));
    assert!(!exists(store, EntityType::Datastream, ds), "a Datastream cannot lose its ObservedProperty");
    assert!(!exists(store, EntityType::MultiDatastream, md), "nor can a MultiDatastream");
    assert!(!exists(store, EntityType::Observation, obs), "and their Observations go with them");
    assert!(exists(store, EntityType::MultiDatastream, kept_md));
    assert!(exists(store, EntityType::ObservedProperty, kept_property));
    assert!(exists(store, EntityType::FeatureOfInterest, foi));
}

pub fn deleting_a_location_removes_its_link_rows(store: &dyn Store) {
    let (thing_id, doomed, kept, historical) = write(store, |w| {
        let thing_id = thing(w, "t")?;
        let doomed = location(w, "doomed")?;
        let kept = location(w, "kept")?;
        let nav = navigation_of(EntityType::Thing, "Locations");
        w.link(nav, thing_id, doomed)?;
        w.link(nav, thing_id, kept)?;
        let historical = w.insert(
            EntityType::HistoricalLocation,
            &record(EntityType::HistoricalLocation, &[("time", Value::Instant(at(0)))], &[("Thing", Some(thing_id))]),
        )?;
        w.link(navigation_of(EntityType::HistoricalLocation, "Locations"), historical, doomed)?;
        Ok((thing_id, doomed, kept, historical))
    });
    assert!(write(store, move |w| w.delete(EntityType::Location, doomed)));
    assert_eq!(related(store, EntityType::Thing, thing_id, "Locations"), [kept]);
    assert_eq!(related(store, EntityType::HistoricalLocation, historical, "Locations"), []);
    assert!(exists(store, EntityType::Thing, thing_id));
    assert!(exists(store, EntityType::HistoricalLocation, historical));
}

// ---------------------------------------------------------------------------------------------
// Links

pub fn link_unlink_and_unlink_all_change_related_both_ways(store: &dyn Store) {
    let things_locations = navigation_of(EntityType::Thing, "Locations");
    let (t, other, l1, l2, l3) = write(store, move |w| {
        let t = thing(w, "t")?;
        let other = thing(w, "other")?;
        let (l1, l2, l3) = (location(w, "l1")?, location(w, "l2")?, location(w, "l3")?);
        w.link(things_locations, t, l1)?;
        w.link(things_locations, t, l2)?;
        // Linking twice is a no-op.
        w.link(things_locations, t, l2)?;
        w.link(things_locations, other, l2)?;
        Ok((t, other, l1, l2, l3))
    });
    assert_eq!(related(store, EntityType::Thing, t, "Locations"), sorted(vec![l1, l2]));
    assert_eq!(related(store, EntityType::Location, l2, "Things"), sorted(vec![t, other]));
    assert_eq!(related(store, EntityType::Location, l3, "Things"), []);

    let (removed, removed_again) =
        write(store, move |w| Ok((w.unlink(things_locations, t, l1)?, w.unlink(things_locations, t, l1)?)));
    assert!(removed, "the link existed");
    assert!(!removed_again, "there is no link left to remove");
    assert_eq!(related(store, EntityType::Thing, t, "Locations"), [l2]);
    assert_eq!(related(store, EntityType::Location, l1, "Things"), []);
    assert!(exists(store, EntityType::Location, l1), "unlinking deletes no entity");

    // The inverse navigation shares the link table.
    let locations_things = navigation_of(EntityType::Location, "Things");
    write(store, move |w| {
        w.link(locations_things, l3, t)?;
        w.unlink_all(things_locations, t)
    });
    assert_eq!(related(store, EntityType::Thing, t, "Locations"), []);
    assert_eq!(related(store, EntityType::Location, l2, "Things"), [other], "only links of `from` go");
    assert_eq!(related(store, EntityType::Location, l3, "Things"), []);
}

pub fn links_to_missing_entities_are_conflicts(store: &dyn Store) {
    let (t, ds) = write(store, |w| {
        let t = thing(w, "t")?;
        Ok((t, datastream(w, t, "ds")?))
    });
    let nav = navigation_of(EntityType::Thing, "Locations");
    let linked = try_write(store, move |w| w.link(nav, t, Id(777)));
    assert!(matches!(linked, Err(StoreError::Conflict(_))), "link to a missing Location: {linked:?}");
    // (Observations are the exception: on PostgreSQL they hold no foreign keys, and the
    // application checks their Datastream and feature in the job that writes them.)
    let inserted = try_write(store, move |w| {
        let foi = feature(w, "f")?;
        let property = observed_property(w, "p")?;
        datastream_of(w, t, Id(888), property, &format!("no sensor {foi}"))
    });
    assert!(matches!(inserted, Err(StoreError::Conflict(_))), "insert linked to a missing Sensor: {inserted:?}");
    let updated = try_write(store, move |w| {
        w.update(EntityType::Datastream, ds, &record(EntityType::Datastream, &[], &[("Thing", Some(Id(999)))]))
    });
    assert!(matches!(updated, Err(StoreError::Conflict(_))), "update linked to a missing Thing: {updated:?}");
    assert_eq!(related(store, EntityType::Datastream, ds, "Thing"), [t]);
    assert!(
        query(store, EntityType::FeatureOfInterest, None, "", PAGING).rows.is_empty(),
        "the failed job left nothing"
    );
    assert_eq!(query(store, EntityType::ObservedProperty, None, "", PAGING).rows.len(), 1, "only the first one");
}

pub fn exists_answers_for_id_and_filter_constraints(store: &dyn Store) {
    let id = write(store, |w| thing(w, "present"));
    assert!(exists(store, EntityType::Thing, id));
    assert!(!exists(store, EntityType::Thing, Id(id.0 + 1)));
    assert!(!exists(store, EntityType::Datastream, id), "ids are per entity type");
    let by_name = filter(EntityType::Thing, "name eq 'present'");
    let by_other_name = filter(EntityType::Thing, "name eq 'absent'");
    let (yes, no) = read(store, move |r| {
        (
            r.exists(EntityType::Thing, &by_name).expect("exists"),
            r.exists(EntityType::Thing, &by_other_name).expect("exists"),
        )
    });
    assert!(yes);
    assert!(!no);
}

// ---------------------------------------------------------------------------------------------
// Queries

/// A Datastream with Observations whose results are 1..=6 at seconds 1..=6 (`mine`) and one with
/// results 1..=3 (`theirs`).
fn two_datastreams(store: &dyn Store) -> (Id, Id) {
    write(store, |w| {
        let thing = thing(w, "t")?;
        let foi = feature(w, "f")?;
        let mine = datastream(w, thing, "mine")?;
        let theirs = datastream(w, thing, "theirs")?;
        for (ds, n) in [(mine, 6), (theirs, 3)] {
            for i in 1..=n {
                observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(i)), Value::Integer(i))?;
            }
        }
        Ok((mine, theirs))
    })
}

fn results(rows: &Rows) -> Vec<Value> {
    rows.rows.iter().map(|row| field(&rows.fields, row, "result").clone()).collect()
}

pub fn query_applies_constraint_filter_order_paging_and_count(store: &dyn Store) {
    let (mine, _) = two_datastreams(store);
    let constraint = format!("Datastream/id eq {mine}");
    let options = "$filter=result ge 2&$orderby=phenomenonTime desc&$select=result&$count=true";
    let run =
        |paging: &str| query(store, EntityType::Observation, Some(&constraint), &format!("{options}&{paging}"), PAGING);

    let page = run("$top=2&$skip=1");
    assert_eq!(results(&page), [Value::Integer(5), Value::Integer(4)]);
    assert_eq!(page.count, Some(5), "the count ignores paging but not the constraint or filter");
    assert!(page.more);

    let last = run("$top=2&$skip=3");
    assert_eq!(results(&last), [Value::Integer(3), Value::Integer(2)]);
    assert!(!last.more, "a page that ends exactly at the last entity has no more");

    let beyond = run("$top=2&$skip=9");
    assert!(beyond.rows.is_empty());
    assert_eq!(beyond.count, Some(5));
    assert!(!beyond.more);

    let uncounted = query(store, EntityType::Observation, Some(&constraint), "$top=1", PAGING);
    assert_eq!(uncounted.count, None, "no count unless asked for");
    assert_eq!(
        query(store, EntityType::Observation, None, "$count=true&$top=0", PAGING).count,
        Some(9),
        "without a constraint every Observation counts"
    );
}

pub fn query_pages_by_default_top_and_caps_at_max_top(store: &dyn Store) {
    two_datastreams(store);
    let paging = Paging { default_top: 2, max_top: 4 };
    let default = query(store, EntityType::Observation, None, "", paging);
    assert_eq!(default.rows.len(), 2);
    assert!(default.more);
    let capped = query(store, EntityType::Observation, None, "$top=50", paging);
    assert_eq!(capped.rows.len(), 4);
    assert!(capped.more);
    let all = query(store, EntityType::Observation, None, "$top=50", PAGING);
    assert_eq!(all.rows.len(), 9);
    assert!(!all.more);
    let ordered = ids(&all);
    assert!(ordered.windows(2).all(|w| w[0] < w[1]), "without $orderby rows come by id: {ordered:?}");
}

pub fn expand_to_one_gives_the_target_or_none(store: &dyn Store) {
    let (ds, foi, obs) = write(store, |w| {
        let thing = thing(w, "t")?;
        let ds = datastream(w, thing, "the datastream")?;
        let foi = feature(w, "the feature")?;
        let obs = observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(0)), Value::Integer(1))?;
        Ok((ds, foi, obs))
    });
    let rows = query(
        store,
        EntityType::Observation,
        None,
        "$select=result&$expand=Datastream($select=name),FeatureOfInterest($select=name),MultiDatastream",
        PAGING,
    );
    assert_eq!(ids(&rows), [obs]);
    let expanded = &rows.rows[0].expanded;
    assert_eq!(expanded.len(), 3, "one result per expand item, in query order");
    for (i, (id, name)) in [(ds, "the datastream"), (foi, "the feature")].into_iter().enumerate() {
        match &expanded[i] {
            Expanded::One { fields, row: Some(row) } => {
                assert_eq!(row.id, id);
                assert_eq!(field(fields, row, "name"), &text(name));
            }
            other => panic!("expected a to-one expansion of {name}, got {other:?}"),
        }
    }
    assert!(matches!(&expanded[2], Expanded::One { row: None, .. }), "an unset to-one link expands to none");
}

pub fn expand_to_many_pages_and_counts_each_parent_separately(store: &dyn Store) {
    let (busy, quiet, idle, busy_ds) = write(store, |w| {
        let busy = thing(w, "busy")?;
        let quiet = thing(w, "quiet")?;
        let idle = thing(w, "idle")?;
        let busy_ds = [datastream(w, busy, "b1")?, datastream(w, busy, "b2")?, datastream(w, busy, "b3")?];
        datastream(w, quiet, "q1")?;
        Ok((busy, quiet, idle, busy_ds))
    });
    let rows = query(
        store,
        EntityType::Thing,
        None,
        "$orderby=id&$expand=Datastreams($top=2;$orderby=name desc;$count=true;$select=name)",
        PAGING,
    );
    assert_eq!(ids(&rows), [busy, quiet, idle]);
    let page = |i: usize| match &rows.rows[i].expanded[..] {
        [Expanded::Many(page)] => page,
        other => panic!("expected one to-many expansion, got {other:?}"),
    };
    assert_eq!(names_of(page(0)), ["b3", "b2"], "each parent gets its own $top");
    assert_eq!(ids(page(0)), [busy_ds[2], busy_ds[1]]);
    assert_eq!(page(0).count, Some(3));
    assert!(page(0).more);
    assert_eq!(names_of(page(1)), ["q1"]);
    assert_eq!(page(1).count, Some(1));
    assert!(!page(1).more);
    assert!(page(2).rows.is_empty());
    assert_eq!(page(2).count, Some(0), "a parent with nothing to expand counts zero");
    assert!(!page(2).more);
}

pub fn nested_expand_pages_each_child_separately(store: &dyn Store) {
    let thing_id = write(store, |w| {
        let thing_id = thing(w, "t")?;
        let foi = feature(w, "f")?;
        for (name, n) in [("a", 3), ("b", 1)] {
            let ds = datastream(w, thing_id, name)?;
            for i in 1..=n {
                observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(i)), Value::Integer(i))?;
            }
        }
        Ok(thing_id)
    });
    let rows = query(
        store,
        EntityType::Thing,
        None,
        "$expand=Datastreams($orderby=name;$expand=Observations($top=2;$orderby=result desc;$select=result))",
        PAGING,
    );
    assert_eq!(ids(&rows), [thing_id]);
    let [Expanded::Many(datastreams)] = &rows.rows[0].expanded[..] else { panic!("expected Datastreams") };
    assert_eq!(names_of(datastreams), ["a", "b"]);
    let observations: Vec<(Vec<Value>, bool)> = datastreams
        .rows
        .iter()
        .map(|ds| match &ds.expanded[..] {
            [Expanded::Many(page)] => (results(page), page.more),
            other => panic!("expected Observations, got {other:?}"),
        })
        .collect();
    assert_eq!(observations, [(vec![Value::Integer(3), Value::Integer(2)], true), (vec![Value::Integer(1)], false)]);
}

// ---------------------------------------------------------------------------------------------
// Group commit

pub fn failed_job_rolls_back_only_its_own_changes(store: &dyn Store) {
    let job = |f: fn(&mut dyn Writer) -> Result<(), StoreError>| -> GroupJob {
        (Visibility::All, Box::new(move |w: &mut dyn Writer| f(w).map(|()| "ok".to_owned())))
    };
    let outcomes = in_one_group(
        store,
        vec![
            job(|w| thing(w, "first").map(drop)),
            job(|w| {
                let t = thing(w, "conflict")?;
                // The Sensor and ObservedProperty do not exist: the statement fails mid-job.
                datastream_of(w, t, Id(5_555), Id(5_556), "orphan").map(drop)
            }),
            job(|w| thing(w, "kept").map(drop)),
            job(|w| {
                thing(w, "rejected")?;
                Err(StoreError::Rejected("the job changed its mind".into()))
            }),
            job(|w| thing(w, "after").map(drop)),
        ],
    );
    let summary: Vec<&str> =
        outcomes.iter().map(|o| if o.starts_with("error: conflict: ") { "conflict" } else { o.as_str() }).collect();
    assert_eq!(summary, ["ok", "conflict", "ok", "error: the job changed its mind", "ok"]);
    let mut stored = names_of(&query(store, EntityType::Thing, None, "", PAGING));
    stored.sort();
    assert_eq!(stored, ["after", "first", "kept"]);
    assert!(query(store, EntityType::Datastream, None, "", PAGING).rows.is_empty());
}

pub fn reads_see_a_write_only_once_its_done_has_run(store: &dyn Store) {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (written_tx, written_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    store.write(
        Visibility::All,
        Box::new(move |w| {
            thing(w, "pending")?;
            let _ = written_tx.send(());
            let _ = gate_rx.recv_timeout(WAIT);
            Ok(())
        }),
        Box::new(move |outcome| {
            let _ = done_tx.send(outcome);
        }),
    );
    written_rx.recv_timeout(WAIT).expect("the write job never ran");
    assert!(
        query(store, EntityType::Thing, None, "", PAGING).rows.is_empty(),
        "a read while the job's transaction is open sees nothing of it"
    );
    assert!(done_rx.try_recv().is_err(), "`done` cannot run before the job finished");
    gate_tx.send(()).expect("the job is waiting");
    done_rx.recv_timeout(WAIT).expect("`done` runs").expect("the job committed");
    assert_eq!(
        names_of(&query(store, EntityType::Thing, None, "", PAGING)),
        ["pending"],
        "a read after `done` sees it"
    );
}

// ---------------------------------------------------------------------------------------------
// Derived Datastream fields and generated features

fn times(store: &dyn Store, entity: EntityType, id: Id) -> (Value, Value) {
    let (fields, row) = get(store, entity, id);
    (field(&fields, &row, "phenomenonTime").clone(), field(&fields, &row, "resultTime").clone())
}

/// A Datastream and a MultiDatastream of one Thing, with one feature.
fn both_datastreams(store: &dyn Store) -> (Id, Id, Id) {
    write(store, |w| {
        let thing = thing(w, "t")?;
        let ds = datastream(w, thing, "ds")?;
        let op = observed_property(w, "op")?;
        let md = multi_datastream(w, thing, op)?;
        Ok((ds, md, feature(w, "f")?))
    })
}

pub fn extend_times_widens_the_derived_times(store: &dyn Store) {
    let (ds, md, _) = both_datastreams(store);
    for (entity, id) in [(EntityType::Datastream, ds), (EntityType::MultiDatastream, md)] {
        assert_eq!(times(store, entity, id), (Value::Null, Value::Null), "{entity} starts without times");

        write(store, move |w| w.extend_times(entity, id, span(10, 20), None));
        assert_eq!(times(store, entity, id), (Value::Interval(span(10, 20)), Value::Null));

        write(store, move |w| w.extend_times(entity, id, span(5, 15), Some(span(30, 30))));
        assert_eq!(times(store, entity, id), (Value::Interval(span(5, 20)), Value::Interval(span(30, 30))));

        write(store, move |w| w.extend_times(entity, id, span(12, 25), Some(span(28, 29))));
        assert_eq!(times(store, entity, id), (Value::Interval(span(5, 25)), Value::Interval(span(28, 30))));

        write(store, move |w| w.extend_times(entity, id, span(6, 7), None));
        assert_eq!(
            times(store, entity, id),
            (Value::Interval(span(5, 25)), Value::Interval(span(28, 30))),
            "a covered interval changes nothing, and no resultTime keeps the old one"
        );
    }
    let (fields, row) = get(store, EntityType::Datastream, ds);
    assert_eq!(field(&fields, &row, "name"), &text("ds"), "only the times change");
}

/// Jobs queued together (so likely committed as one group) that widen one Datastream's times:
/// a job that fails leaves nothing, the others all count, whether a backend writes each job's
/// extent at once or gathers them for the commit.
pub fn extents_of_failed_jobs_in_a_group_are_not_kept(store: &dyn Store) {
    let (ds, _, _) = both_datastreams(store);
    let entity = EntityType::Datastream;
    let (tx, rx) = mpsc::channel();
    for (n, (extent, fails)) in
        [(span(10, 20), false), (span(1, 2), true), (span(30, 40), false), (span(15, 50), true)].into_iter().enumerate()
    {
        let tx = tx.clone();
        store.write(
            Visibility::All,
            Box::new(move |w: &mut dyn Writer| {
                w.extend_times(entity, ds, extent, Some(extent))?;
                if fails { Err(StoreError::Rejected(format!("job {n} fails"))) } else { Ok(()) }
            }),
            Box::new(move |outcome| {
                let _ = tx.send((n, outcome.is_ok()));
            }),
        );
    }
    let mut outcomes: Vec<(usize, bool)> = (0..4).map(|_| rx.recv_timeout(WAIT).expect("every job reports")).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, [(0, true), (1, false), (2, true), (3, false)]);
    assert_eq!(times(store, entity, ds), (Value::Interval(span(10, 40)), Value::Interval(span(10, 40))));
}

pub fn recompute_times_follows_the_observations(store: &dyn Store) {
    let (ds, md, foi) = both_datastreams(store);
    for (entity, id) in [(EntityType::Datastream, ds), (EntityType::MultiDatastream, md)] {
        let (first, last) = write(store, move |w| {
            let values = [
                ("phenomenonTime", Value::Interval(span(10, 40))),
                ("resultTime", Value::Instant(at(50))),
                ("result", json("[1]")),
            ];
            let links = [(entity.name(), Some(id)), ("FeatureOfInterest", Some(foi))];
            let first = w.insert(EntityType::Observation, &record(EntityType::Observation, &values, &links))?;
            let values = [
                ("phenomenonTime", Value::Interval(span(20, 20))),
                ("resultTime", Value::Instant(at(45))),
                ("result", json("[2]")),
            ];
            let last = w.insert(EntityType::Observation, &record(EntityType::Observation, &values, &links))?;
            // Stale extents that recomputing must replace, not widen.
            w.extend_times(entity, id, span(0, 100), Some(span(0, 100)))?;
            w.recompute_times(entity, id)?;
            Ok((first, last))
        });
        assert_eq!(times(store, entity, id), (Value::Interval(span(10, 40)), Value::Interval(span(45, 50))));

        write(store, move |w| {
            w.delete(EntityType::Observation, first)?;
            w.recompute_times(entity, id)
        });
        assert_eq!(
            times(store, entity, id),
            (Value::Interval(span(20, 20)), Value::Interval(span(45, 45))),
            "an instant phenomenonTime spans from itself to itself"
        );

        write(store, move |w| {
            w.delete(EntityType::Observation, last)?;
            w.recompute_times(entity, id)
        });
        assert_eq!(times(store, entity, id), (Value::Null, Value::Null), "no Observations, no times");
    }
}

pub fn thing_locations_lists_locations_with_their_generated_feature(store: &dyn Store) {
    let (ds, md, l1, l2, f1, f2) = write(store, |w| {
        let t = thing(w, "t")?;
        let other = thing(w, "other")?;
        let nav = navigation_of(EntityType::Thing, "Locations");
        let l1 = location(w, "home")?;
        let l2 = location(w, "away")?;
        let elsewhere = location(w, "elsewhere")?;
        w.link(nav, t, l1)?;
        w.link(nav, t, l2)?;
        w.link(nav, other, elsewhere)?;
        let ds = datastream(w, t, "ds")?;
        let op = observed_property(w, "op")?;
        let md = multi_datastream(w, t, op)?;
        Ok((ds, md, l1, l2, feature(w, "f1")?, feature(w, "f2")?))
    });
    let listed = |entity: EntityType, id: Id| {
        let mut locations: Vec<ThingLocation> = write(store, move |w| w.thing_locations(entity, id));
        locations.sort_by_key(|l| l.location);
        for l in &locations {
            assert_eq!(compact(&l.location_json), compact(POINT));
            assert_eq!(l.encoding_type, "application/geo+json");
            assert_eq!(l.description, "a location");
        }
        locations.into_iter().map(|l| (l.location, l.name, l.generated_feature)).collect::<Vec<_>>()
    };
    let home = |feature| (l1, "home".to_owned(), feature);
    let away = |feature| (l2, "away".to_owned(), feature);
    assert_eq!(listed(EntityType::Datastream, ds), [home(None), away(None)]);
    assert_eq!(listed(EntityType::MultiDatastream, md), [home(None), away(None)]);

    write(store, move |w| w.remember_generated_feature(l1, f1));
    assert_eq!(listed(EntityType::Datastream, ds), [home(Some(f1)), away(None)]);
    write(store, move |w| w.remember_generated_feature(l1, f2));
    assert_eq!(listed(EntityType::MultiDatastream, md), [home(Some(f2)), away(None)], "remembering again replaces");

    write(store, move |w| w.delete(EntityType::FeatureOfInterest, f2).map(drop));
    assert_eq!(listed(EntityType::Datastream, ds), [home(None), away(None)], "a deleted feature is forgotten");
}

pub fn note_feature_is_true_only_the_first_time(store: &dyn Store) {
    let (ds, md, f1) = both_datastreams(store);
    let f2 = write(store, |w| feature(w, "f2"));
    let noted = write(store, move |w| {
        Ok([
            w.note_feature(EntityType::Datastream, ds, f1)?,
            w.note_feature(EntityType::Datastream, ds, f1)?,
            w.note_feature(EntityType::Datastream, ds, f2)?,
            w.note_feature(EntityType::MultiDatastream, md, f1)?,
            w.note_feature(EntityType::MultiDatastream, md, f1)?,
        ])
    });
    assert_eq!(noted, [true, false, true, true, false]);
    let later = write(store, move |w| w.note_feature(EntityType::Datastream, ds, f2));
    assert!(!later, "what was noted is remembered across transactions");
    let rolled_back = try_write(store, move |w| {
        let f3 = feature(w, "f3")?;
        w.note_feature(EntityType::Datastream, ds, f3)?;
        Err::<(), _>(StoreError::Rejected("undo".into()))
    });
    assert!(rolled_back.is_err());
    assert!(query(store, EntityType::FeatureOfInterest, Some("name eq 'f3'"), "", PAGING).rows.is_empty());
}

/// A write job that tells what it saw.
type SeeingJob = Box<dyn FnOnce(&mut dyn Writer) -> Result<String, StoreError> + Send>;

/// A job of a write group, with what it may see.
type GroupJob = (Visibility, SeeingJob);

/// Runs `jobs` behind a job that holds the writer until all are queued, so that a grouping
/// backend commits them in one transaction; returns what each saw, or its error, in order.
fn in_one_group(store: &dyn Store, jobs: Vec<GroupJob>) -> Vec<String> {
    in_one_group_touching(store, jobs.into_iter().map(|(visibility, job)| (visibility, Vec::new(), job)).collect())
}

/// [`in_one_group`] of jobs that say what they will look up (`Store::write_touching`).
fn in_one_group_touching(store: &dyn Store, jobs: Vec<(Visibility, crate::Touches, SeeingJob)>) -> Vec<String> {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<(usize, String)>();
    let (holder_tx, holder_rx) = mpsc::channel();
    store.write(
        Visibility::All,
        Box::new(move |_| {
            let _ = started_tx.send(());
            let _ = gate_rx.recv_timeout(WAIT);
            Ok(())
        }),
        Box::new(move |outcome| {
            let _ = holder_tx.send(outcome);
        }),
    );
    started_rx.recv_timeout(WAIT).expect("the holding job never started");
    let count = jobs.len();
    for (n, (visibility, touches, job)) in jobs.into_iter().enumerate() {
        let (seen_tx, seen_rx) = mpsc::channel();
        let done_tx = done_tx.clone();
        store.write_touching(
            visibility,
            touches,
            Box::new(move |w| {
                let seen = job(w)?;
                let _ = seen_tx.send(seen);
                Ok(())
            }),
            Box::new(move |outcome| {
                let text = match outcome {
                    Ok(()) => seen_rx.try_recv().unwrap_or_default(),
                    Err(e) => format!("error: {e}"),
                };
                let _ = done_tx.send((n, text));
            }),
        );
    }
    gate_tx.send(()).expect("the holding job waits");
    holder_rx.recv_timeout(WAIT).expect("the holding job reports").expect("the holding job commits");
    let mut outcomes: Vec<(usize, String)> =
        (0..count).map(|_| done_rx.recv_timeout(WAIT).expect("every job reports")).collect();
    outcomes.sort_unstable();
    outcomes.into_iter().map(|(_, text)| text).collect()
}

/// A backend may let the jobs of one write group take what earlier ones found as known; what
/// a job sees must still be what the database holds at that point: found only under the same
/// visibility, gone after a delete or a rolled-back job, new after a link.
pub fn jobs_of_one_group_see_what_earlier_jobs_changed(store: &dyn Store) {
    let (mine, theirs, _, their_ds, _) = two_projects(store);
    let (ds, _, f1) = both_datastreams(store);
    let (l1, f2) = write(store, |w| Ok((location(w, "home")?, feature(w, "f2")?)));
    let thing_of_ds =
        read(store, move |r| r.related(EntityType::Datastream, ds, navigation_of(EntityType::Datastream, "Thing")))
            .expect("the Thing of the Datastream")[0];
    let exists = |entity: EntityType, id: Id| move |w: &mut dyn Writer| Ok(w.exists(entity, &id_eq(id))?.to_string());
    let locations = move |w: &mut dyn Writer| {
        let found = w.thing_locations(EntityType::Datastream, ds)?;
        Ok(found.iter().map(|l| l.location.0.to_string()).collect::<Vec<_>>().join(","))
    };
    let note =
        |feature: Id| move |w: &mut dyn Writer| Ok(w.note_feature(EntityType::Datastream, ds, feature)?.to_string());
    let fails = |then: SeeingJob| {
        move |w: &mut dyn Writer| {
            then(w)?;
            Err::<String, _>(StoreError::Rejected("undone".into()))
        }
    };
    let all = || Visibility::All;
    let only = |project: i64| Visibility::Projects(vec![project]);
    let jobs: Vec<GroupJob> = vec![
        (only(2), Box::new(exists(EntityType::Thing, mine))),
        (only(3), Box::new(exists(EntityType::Thing, mine))),
        (only(2), Box::new(exists(EntityType::Thing, theirs))),
        (only(3), Box::new(exists(EntityType::Thing, theirs))),
        (all(), Box::new(locations)),
        (
            all(),
            Box::new(move |w: &mut dyn Writer| {
                w.link(navigation_of(EntityType::Thing, "Locations"), thing_of_ds, l1)?;
                Ok("linked".into())
            }),
        ),
        (all(), Box::new(locations)),
        (all(), Box::new(note(f1))),
        (all(), Box::new(note(f1))),
        (all(), Box::new(fails(Box::new(note(f2))))),
        (all(), Box::new(note(f2))),
        (all(), Box::new(exists(EntityType::Datastream, their_ds))),
        (
            all(),
            Box::new(fails(Box::new(move |w: &mut dyn Writer| {
                w.delete(EntityType::Datastream, their_ds)?;
                Ok(String::new())
            }))),
        ),
        (all(), Box::new(exists(EntityType::Datastream, their_ds))),
        (all(), Box::new(move |w: &mut dyn Writer| Ok(w.delete(EntityType::Datastream, their_ds)?.to_string()))),
        (all(), Box::new(exists(EntityType::Datastream, their_ds))),
    ];
    let seen = in_one_group(store, jobs);
    let l1 = l1.0.to_string();
    assert_eq!(
        seen,
        [
            "true",
            "false",
            "false",
            "true",
            "",
            "linked",
            &l1,
            "true",
            "false",
            "error: undone",
            "true",
            "true",
            "error: undone",
            "true",
            "true",
            "false",
        ]
    );
}

/// A backend may look up, for a whole write group, the (Multi)Datastreams its jobs said they
/// will (`Store::write_touching`), with their Things' Locations; each job must still see only
/// what it could have found itself: nothing its visibility hides or that does not exist, the
/// Locations as they are, a Datastream and feature noted before as not new and others as new,
/// and a hint that names what cannot be looked up ahead changes nothing.
pub fn what_a_group_looks_up_ahead_each_job_sees_as_it_could(store: &dyn Store) {
    let (mine, _, crossing, their_ds, _) = two_projects(store);
    let (ds, md, f1) = both_datastreams(store);
    let thing_of = |entity: EntityType, id: Id| {
        let nav = navigation_of(entity, "Thing");
        read(store, move |r| r.related(entity, id, nav)).expect("the Thing")[0]
    };
    let (thing_of_ds, thing_of_md) = (thing_of(EntityType::Datastream, ds), thing_of(EntityType::MultiDatastream, md));
    assert_eq!(thing_of_ds, thing_of_md);
    let (home, f2) = write(store, move |w| {
        let home = location(w, "home")?;
        w.link(navigation_of(EntityType::Thing, "Locations"), thing_of_ds, home)?;
        w.remember_generated_feature(home, f1)?;
        w.note_feature(EntityType::Datastream, ds, f1)?;
        Ok((home, feature(w, "f2")?))
    });
    let missing = Id(987_654_321);
    let exists = |entity: EntityType, id: Id| -> SeeingJob {
        Box::new(move |w: &mut dyn Writer| Ok(w.exists(entity, &id_eq(id))?.to_string()))
    };
    let locations = |entity: EntityType, id: Id| -> SeeingJob {
        Box::new(move |w: &mut dyn Writer| {
            let found = w.thing_locations(entity, id)?;
            Ok(found.iter().map(|l| format!("{}:{:?}", l.location.0, l.generated_feature.map(|f| f.0))).collect())
        })
    };
    let note = |entity: EntityType, id: Id, feature: Id| -> SeeingJob {
        Box::new(move |w: &mut dyn Writer| Ok(w.note_feature(entity, id, feature)?.to_string()))
    };
    let all = || Visibility::All;
    let only = |project: i64| Visibility::Projects(vec![project]);
    let ds_hint = || vec![(EntityType::Datastream, ds)];
    let jobs: Vec<(Visibility, crate::Touches, SeeingJob)> = vec![
        (all(), ds_hint(), exists(EntityType::Datastream, ds)),
        (only(3), vec![(EntityType::Datastream, crossing)], exists(EntityType::Datastream, crossing)),
        (only(2), vec![(EntityType::Datastream, crossing)], exists(EntityType::Datastream, crossing)),
        (all(), vec![(EntityType::Datastream, missing)], exists(EntityType::Datastream, missing)),
        (only(2), vec![(EntityType::Datastream, their_ds)], exists(EntityType::Datastream, their_ds)),
        (all(), ds_hint(), locations(EntityType::Datastream, ds)),
        (all(), ds_hint(), note(EntityType::Datastream, ds, f1)),
        (all(), ds_hint(), note(EntityType::Datastream, ds, f2)),
        (all(), vec![(EntityType::MultiDatastream, md)], exists(EntityType::MultiDatastream, md)),
        (all(), vec![(EntityType::MultiDatastream, md)], note(EntityType::MultiDatastream, md, f1)),
        (all(), vec![(EntityType::Thing, mine), (EntityType::Datastream, ds)], exists(EntityType::Thing, mine)),
        (all(), vec![(EntityType::Datastream, ds)], exists(EntityType::Datastream, ds)),
    ];
    let seen = in_one_group_touching(store, jobs);
    let listed = format!("{}:Some({})", home.0, f1.0);
    assert_eq!(
        seen,
        ["true", "false", "true", "false", "false", &listed, "false", "true", "true", "true", "true", "true"],
        "what each job saw"
    );
}

/// A backend may hold a write group's Observations back to send them together
/// (`store_sql`'s buffer); every statement must still see them as inserted, and they must
/// follow their job: gone with a job that fails, kept when a later job fails. A row the
/// database refuses fails its job, or the whole group; never is a job that reported success
/// missing its row.
pub fn observations_of_one_group_are_seen_at_once_and_follow_their_jobs(store: &dyn Store) {
    let (ds, _, foi) = both_datastreams(store);
    let insert = move |n: i64| {
        move |w: &mut dyn Writer| {
            observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(n)), Value::Integer(n))?;
            Ok(String::new())
        }
    };
    let results = move |w: &mut dyn Writer| {
        let constraint = filter(EntityType::Observation, &format!("Datastream/id eq {}", ds.0));
        let query = parse(EntityType::Observation, "$orderby=phenomenonTime");
        let rows = w.query(EntityType::Observation, Some(&constraint), &query, PAGING)?;
        let seen: Vec<String> =
            rows.rows.iter().map(|row| format!("{:?}", field(&rows.fields, row, "result"))).collect();
        Ok(seen.join(","))
    };
    let fails = |then: SeeingJob| {
        move |w: &mut dyn Writer| {
            let seen = then(w)?;
            Err::<String, _>(StoreError::Rejected(format!("undone after seeing [{seen}]")))
        }
    };
    let all = Visibility::All;
    let jobs: Vec<GroupJob> = vec![
        (all.clone(), Box::new(insert(1))),
        (
            all.clone(),
            Box::new(fails(Box::new(move |w: &mut dyn Writer| {
                insert(2)(w)?;
                results(w)
            }))),
        ),
        (all.clone(), Box::new(results)),
        (all.clone(), Box::new(fails(Box::new(insert(3))))),
        (all.clone(), Box::new(results)),
        (all.clone(), Box::new(insert(6))),
        (all.clone(), Box::new(insert(7))),
        (all.clone(), Box::new(fails(Box::new(insert(8))))),
    ];
    let seen = in_one_group(store, jobs);
    assert_eq!(
        seen,
        [
            "",
            "error: undone after seeing [Integer(1),Integer(2)]",
            "Integer(1)",
            "error: undone after seeing []",
            "Integer(1)",
            "",
            "",
            "error: undone after seeing []",
        ]
    );
    let stored = query(
        store,
        EntityType::Observation,
        Some(&format!("Datastream/id eq {}", ds.0)),
        "$orderby=phenomenonTime",
        PAGING,
    );
    let stored: Vec<&Value> = stored.rows.iter().map(|row| field(&stored.fields, row, "result")).collect();
    assert_eq!(stored, [&Value::Integer(1), &Value::Integer(6), &Value::Integer(7)]);

    // phenomenonTime may not be NULL: the database refuses the row, whenever it sees it.
    let refused = move |w: &mut dyn Writer| {
        observation(w, EntityType::Datastream, ds, foi, Value::Null, Value::Integer(10))?;
        Ok(String::new())
    };
    let seen = in_one_group(
        store,
        vec![(all.clone(), Box::new(insert(9))), (all.clone(), Box::new(refused)), (all, Box::new(insert(11)))],
    );
    let ok: Vec<bool> = seen.iter().map(|s| !s.starts_with("error")).collect();
    assert!(!ok[1], "the refused row's job fails: {seen:?}");
    assert!(
        ok == [true, false, true] || ok == [false, false, false],
        "its job alone fails, or the whole group: {seen:?}"
    );
    let stored = query(
        store,
        EntityType::Observation,
        Some(&format!("Datastream/id eq {}", ds.0)),
        "$orderby=phenomenonTime",
        PAGING,
    );
    let stored: Vec<&Value> = stored.rows.iter().map(|row| field(&stored.fields, row, "result")).collect();
    let expected: Vec<Value> =
        [1, 6, 7].into_iter().chain(if ok[0] { vec![9, 11] } else { vec![] }).map(Value::Integer).collect();
    assert_eq!(stored, expected.iter().collect::<Vec<_>>(), "every job that succeeded has its row, and only those");
}

/// `Store::write_large` may run beside the other writes, in another order, but each job
/// commits or fails on its own and reports after its commit.
pub fn large_writes_commit_and_report_like_the_others(store: &dyn Store) {
    let (ds, _, foi) = both_datastreams(store);
    let (tx, rx) = mpsc::channel();
    for n in 0..12_i64 {
        let tx = tx.clone();
        let job: crate::WriteJob = Box::new(move |w: &mut dyn Writer| {
            let rows = if n % 3 == 0 { 200 } else { 1 };
            for i in 0..rows {
                observation(w, EntityType::Datastream, ds, foi, Value::Instant(at(n * 1000 + i)), Value::Integer(n))?;
            }
            if n == 6 { Err(StoreError::Rejected("a large job fails".into())) } else { Ok(()) }
        });
        let done: crate::WriteDone = Box::new(move |outcome| {
            let _ = tx.send((n, outcome.is_ok()));
        });
        if n % 3 == 0 {
            store.write_large(Visibility::All, job, done);
        } else {
            store.write(Visibility::All, job, done);
        }
    }
    let mut outcomes: Vec<(i64, bool)> = (0..12).map(|_| rx.recv_timeout(WAIT).expect("every job reports")).collect();
    outcomes.sort_unstable();
    let expected: Vec<(i64, bool)> = (0..12).map(|n| (n, n != 6)).collect();
    assert_eq!(outcomes, expected);
    let counted = query(
        store,
        EntityType::Observation,
        Some(&format!("Datastream/id eq {}", ds.0)),
        "$count=true&$top=0",
        PAGING,
    );
    assert_eq!(counted.count, Some(3 * 200 + 8), "three large jobs of 200 and eight small ones");
}

/// What a listener of `store` hears of one write group whose jobs announce `first 1`, then
/// `first 2` and `other 1` (one job), `first 3` (a job that then fails), `first 4`, and 300
/// more of `first` (one job: more than one message holds); `None` when no other node can share
/// the store. Each message is given split into its lines.
pub fn heard_from_one_group(store: &dyn Store) -> Option<Vec<Vec<String>>> {
    let (heard_tx, heard) = mpsc::channel::<String>();
    if !store.listen(Box::new(move |message| {
        let _ = heard_tx.send(message.to_owned());
    })) {
        return None;
    }
    // The listener starts listening on its own time: announce until it hears.
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < WAIT, "the listener never heard an announcement");
        let (tx, rx) = mpsc::channel();
        store.write(Visibility::All, Box::new(|w| w.announce("probe\n")), Box::new(move |o| drop(tx.send(o))));
        rx.recv_timeout(WAIT).expect("the probe reports").expect("the probe commits");
        if heard.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
    }
    while heard.recv_timeout(Duration::from_millis(200)).is_ok() {}
    let line = |first: &str, n: usize| format!("{first}\nline {n} {}\n", "x".repeat(40));
    let announcing = |messages: Vec<String>, fails: bool| -> GroupJob {
        (
            Visibility::All,
            Box::new(move |w: &mut dyn Writer| {
                for message in &messages {
                    w.announce(message)?;
                }
                if fails { Err(StoreError::Rejected("this job fails".into())) } else { Ok(String::new()) }
            }),
        )
    };
    let seen = in_one_group(
        store,
        vec![
            announcing(vec![line("first", 1)], false),
            announcing(vec![line("first", 2), line("other", 1)], false),
            announcing(vec![line("first", 3)], true),
            announcing(vec![line("first", 4)], false),
            announcing((5..305).map(|n| line("first", n)).collect(), false),
        ],
    );
    assert!(seen[2].starts_with("error:") && seen.iter().filter(|s| s.starts_with("error:")).count() == 1, "{seen:?}");
    let mut messages = Vec::new();
    while let Ok(message) = heard.recv_timeout(Duration::from_millis(500)) {
        assert!(message.len() <= crate::ANNOUNCEMENT_BYTES, "{} bytes", message.len());
        messages.push(message.lines().map(str::to_owned).collect());
    }
    Some(messages)
}

/// Writes that say they touch a Datastream (`Store::write_touching`), queued at once to three
/// Datastreams and a MultiDatastream, then with none: every write commits, and those of one
/// (Multi)Datastream in the order they were queued (their Observations' ids, drawn as they
/// run, follow it), whatever writer of a store with several commits them. For backends with
/// several writers; one writer keeps every order anyway.
pub fn writes_of_one_datastream_commit_in_the_order_queued(store: &dyn Store) {
    let (a, b, md, foi) = statistics_setup(store);
    let c = write(store, |w| {
        let thing = thing(w, "u")?;
        datastream(w, thing, "c")
    });
    let (ds, multi) = (EntityType::Datastream, EntityType::MultiDatastream);
    let parents = [(ds, a), (ds, b), (ds, c), (multi, md)];
    let (done_tx, done_rx) = mpsc::channel::<(usize, EntityType, Id, Result<Id, StoreError>)>();
    let total = 400;
    for n in 0..total {
        let (parent, of) = parents[n % parents.len()];
        let done_tx = done_tx.clone();
        let (id_tx, id_rx) = mpsc::channel();
        let value = if parent == multi { Value::Json(format!("[{n},{n}]")) } else { Value::Integer(n as i64) };
        store.write_touching(
            Visibility::All,
            vec![(parent, of)],
            Box::new(move |w: &mut dyn Writer| {
                let id = observation(w, parent, of, foi, Value::Instant(at(n as i64)), value)?;
                let _ = id_tx.send(id);
                Ok(())
            }),
            Box::new(move |outcome| {
                let result = outcome
                    .and_then(|()| id_rx.try_recv().map_err(|_| StoreError::Database("the job left no id".into())));
                let _ = done_tx.send((n, parent, of, result));
            }),
        );
    }
    let mut by_parent: std::collections::BTreeMap<(EntityType, Id), Vec<(usize, Id)>> = Default::default();
    for _ in 0..total {
        let (n, parent, of, result) = done_rx.recv_timeout(WAIT).expect("every write reports");
        by_parent.entry((parent, of)).or_default().push((n, result.expect("every write commits")));
    }
    for ((parent, of), mut written) in by_parent {
        written.sort_unstable();
        let ids: Vec<Id> = written.iter().map(|(_, id)| *id).collect();
        let mut ordered = ids.clone();
        ordered.sort_unstable();
        assert_eq!(ids, ordered, "{parent}({of}): its writes ran in the order they were queued");
        check_statistics(store, parent, of);
    }
}

/// For backends whose nodes share a database: while `claim(entity, id)` holds another
/// session's claim on a series (`sql::statistics::claim_key`), expiring it deletes nothing,
/// and never waits; once the claim is released (the function it returned), it deletes.
pub fn expiring_a_series_another_node_expires_leaves_it(
    store: &dyn Store,
    claim: &dyn Fn(EntityType, Id) -> Box<dyn FnOnce()>,
) {
    let (a, b, _, foi) = statistics_setup(store);
    write(store, move |w| {
        for i in 0..10 {
            observation(w, EntityType::Datastream, a, foi, Value::Instant(at(i)), Value::Integer(i))?;
            observation(w, EntityType::Datastream, b, foi, Value::Instant(at(i)), Value::Integer(i))?;
        }
        Ok(())
    });
    let horizon = at(5);
    let release = claim(EntityType::Datastream, a);
    let gone = write(store, move |w| w.expire_observations(EntityType::Datastream, a, horizon, 100));
    assert_eq!(gone, 0, "a series another node is expiring is left to it");
    assert_eq!(stored_observations(store, EntityType::Datastream, a).len(), 10);
    let other = write(store, move |w| w.expire_observations(EntityType::Datastream, b, horizon, 100));
    assert_eq!(other, 5, "another series is not claimed");
    release();
    let gone = write(store, move |w| w.expire_observations(EntityType::Datastream, a, horizon, 100));
    assert_eq!(gone, 5, "once released, the series expires");
    for id in [a, b] {
        let kept = stored_observations(store, EntityType::Datastream, id).len() as u64;
        let summary = read(store, move |r| r.summary(EntityType::Datastream, id)).expect("summary").expect("exists");
        assert_eq!((kept, summary.observations), (5, 5), "Datastream({id}): what is left, and its count");
    }
}

/// Announcements are heard once their group commits, never those of a failed job, each
/// within the limit, and the lines after each first line in the order they were announced.
pub fn announcements_are_heard_once_committed_in_order(store: &dyn Store) {
    let Some(messages) = heard_from_one_group(store) else { return };
    let lines_of = |first: &str| -> Vec<String> {
        let lines = messages.iter().filter(|m| m[0] == first).flat_map(|m| &m[1..]);
        lines.map(|l| l.trim_end_matches('x').trim_end().to_owned()).collect()
    };
    let expected: Vec<String> = [1, 2].into_iter().chain(4..305).map(|n| format!("line {n}")).collect();
    assert_eq!(lines_of("first"), expected, "the lines of the jobs that committed, in order");
    assert_eq!(lines_of("other"), vec!["line 1".to_owned()]);
    assert_eq!(messages.iter().filter(|m| m[0] != "first" && m[0] != "other").count(), 0, "{messages:?}");
}

// ---------------------------------------------------------------------------------------------
// Shutdown

pub fn shutdown_commits_queued_writes_then_refuses_new_ones(store: &dyn Store) {
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..20 {
        let done_tx = done_tx.clone();
        store.write(
            Visibility::All,
            Box::new(move |w| thing(w, &format!("queued {i}")).map(drop)),
            Box::new(move |outcome| {
                let _ = done_tx.send(outcome);
            }),
        );
    }
    store.shutdown();
    for _ in 0..20 {
        let outcome = done_rx.recv_timeout(WAIT).expect("a write queued before shutdown is reported");
        assert!(outcome.is_ok(), "a write queued before shutdown commits: {outcome:?}");
    }
    let (late_tx, late_rx) = mpsc::channel();
    store.write(
        Visibility::All,
        Box::new(|w| thing(w, "late").map(drop)),
        Box::new(move |outcome| {
            let _ = late_tx.send(outcome);
        }),
    );
    let late = late_rx.recv_timeout(WAIT).expect("a write after shutdown is reported");
    assert!(matches!(late, Err(StoreError::ShuttingDown)), "a write after shutdown: {late:?}");
}

/// Moves an entity to `project`.
fn move_to(w: &mut dyn Writer, entity: EntityType, id: Id, project: i64) -> Result<(), StoreError> {
    let record = Record { values: Vec::new(), links: Vec::new(), project: Some(project) };
    assert!(w.update(entity, id, &record)?, "{entity}({id:?}) exists");
    Ok(())
}

/// Thing "mine" (project 2) with a Datastream and an Observation in project 2; Thing "theirs"
/// (project 3) with a Datastream and an Observation in project 3; and a Datastream "crossing" of
/// "mine" (project 2) whose Sensor is in project 3. Returns (mine, theirs, crossing, their
/// datastream, their sensor).
fn two_projects(store: &dyn Store) -> (Id, Id, Id, Id, Id) {
    write(store, |w| {
        // Projects 2 and 3 (a backend may hold entities to existing projects).
        for name in ["mine", "theirs"] {
            w.principals().insert_project(name, false)?;
        }
        let mine = thing(w, "mine")?;
        let theirs = thing(w, "theirs")?;
        let my_ds = datastream(w, mine, "my datastream")?;
        let their_ds = datastream(w, theirs, "their datastream")?;
        let their_sensor = sensor(w)?;
        let my_property = observed_property(w, "crossing")?;
        let crossing = datastream_of(w, mine, their_sensor, my_property, "crossing")?;
        let foi = feature(w, "f")?;
        let my_obs = observation(w, EntityType::Datastream, my_ds, foi, Value::Instant(at(0)), Value::Integer(1))?;
        let their_obs =
            observation(w, EntityType::Datastream, their_ds, foi, Value::Instant(at(0)), Value::Integer(2))?;
        for (entity, id) in
            [(EntityType::Thing, mine), (EntityType::Datastream, my_ds), (EntityType::Datastream, crossing)]
        {
            move_to(w, entity, id, 2)?;
        }
        for (entity, id) in [(EntityType::Observation, my_obs), (EntityType::ObservedProperty, my_property)] {
            move_to(w, entity, id, 2)?;
        }
        let my_sensor = w.related(EntityType::Datastream, my_ds, navigation_of(EntityType::Datastream, "Sensor"))?;
        move_to(w, EntityType::Sensor, my_sensor[0], 2)?;
        move_to(w, EntityType::FeatureOfInterest, foi, 2)?;
        for (entity, id) in [
            (EntityType::Thing, theirs),
            (EntityType::Datastream, their_ds),
            (EntityType::Observation, their_obs),
            (EntityType::Sensor, their_sensor),
        ] {
            move_to(w, entity, id, 3)?;
        }
        Ok((mine, theirs, crossing, their_ds, their_sensor))
    })
}

pub fn restricted_visibility_hides_other_projects_everywhere(store: &dyn Store) {
    let (mine, theirs, crossing, their_ds, their_sensor) = two_projects(store);
    let only_mine = || Visibility::Projects(vec![2]);
    let run = |entity: EntityType, constraint: Option<&str>, raw: &str, visibility: Visibility| {
        let constraint = constraint.map(|c| filter(entity, c));
        let query = parse(entity, raw);
        read_as(store, visibility, move |r| r.query(entity, constraint.as_ref(), &query, PAGING)).expect("query")
    };

    // The entities read, and their count.
    let things = run(EntityType::Thing, None, "$count=true", only_mine());
    assert_eq!((ids(&things), things.count), (vec![mine], Some(1)));
    assert_eq!(ids(&run(EntityType::Thing, None, "", Visibility::All)).len(), 2, "All sees both");
    assert!(ids(&run(EntityType::Thing, None, "", Visibility::Projects(Vec::new()))).is_empty());
    assert!(!read_as(store, only_mine(), move |r| r.exists(EntityType::Thing, &id_eq(theirs))).expect("exists"));
    assert!(read_as(store, only_mine(), move |r| r.exists(EntityType::Thing, &id_eq(mine))).expect("exists"));

    // Paths in $filter and in the resource path: a hidden entity reads as absent, its id too.
    let by_name = run(EntityType::Datastream, None, "$filter=Thing/name%20eq%20'theirs'", only_mine());
    assert!(ids(&by_name).is_empty());
    let by_sensor =
        run(EntityType::Datastream, None, &format!("$filter=Sensor/id%20eq%20{}", their_sensor.0), only_mine());
    assert!(ids(&by_sensor).is_empty(), "the id of a hidden Sensor is not matched");
    let path = run(EntityType::Datastream, Some(&format!("Thing/id eq {}", theirs.0)), "", only_mine());
    assert!(ids(&path).is_empty(), "a hidden Thing's Datastreams are not reached through it");
    let any = run(EntityType::Thing, None, "$filter=Datastreams/name%20eq%20'their%20datastream'", only_mine());
    assert!(ids(&any).is_empty());
    let observations = run(EntityType::Observation, None, "$filter=Datastream/Thing/name%20eq%20'mine'", only_mine());
    assert_eq!(observations.rows.len(), 1);

    // $expand at every level, with counts.
    let expanded = run(
        EntityType::Thing,
        None,
        "$expand=Datastreams($count=true;$expand=Sensor,Observations)",
        Visibility::Projects(vec![2, 3]),
    );
    assert_eq!(ids(&expanded).len(), 2);
    let expanded = run(EntityType::Datastream, None, "$expand=Sensor,Thing", only_mine());
    let crossing_row = expanded.rows.iter().find(|r| r.id == crossing).expect("the crossing Datastream");
    assert!(matches!(&crossing_row.expanded[0], Expanded::One { row: None, .. }), "its hidden Sensor expands to none");
    assert!(matches!(&crossing_row.expanded[1], Expanded::One { row: Some(_), .. }), "its own Thing is there");
    let sensors = run(EntityType::Sensor, None, "$expand=Datastreams($count=true)", Visibility::Projects(vec![3]));
    let their_sensor_row = sensors.rows.iter().find(|r| r.id == their_sensor).expect("their Sensor");
    match &their_sensor_row.expanded[0] {
        Expanded::Many(rows) => assert_eq!((ids(rows), rows.count), (Vec::new(), Some(0)), "crossing is in project 2"),
        other => panic!("expected a to-many expansion, got {other:?}"),
    }
    let theirs_expanded =
        run(EntityType::Thing, None, "$expand=Datastreams($count=true)", Visibility::Projects(vec![3]));
    match &theirs_expanded.rows[0].expanded[0] {
        Expanded::Many(rows) => assert_eq!((ids(rows), rows.count), (vec![their_ds], Some(1))),
        other => panic!("expected a to-many expansion, got {other:?}"),
    }
}

pub fn restricted_writes_see_only_their_projects(store: &dyn Store) {
    let (mine, theirs, _, _, _) = two_projects(store);
    let (value_tx, value_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    store.write(
        Visibility::Projects(vec![2]),
        Box::new(move |w| {
            let seen = (w.exists(EntityType::Thing, &id_eq(mine))?, w.exists(EntityType::Thing, &id_eq(theirs))?);
            let _ = value_tx.send(seen);
            Ok(())
        }),
        Box::new(move |outcome| {
            let _ = done_tx.send(outcome);
        }),
    );
    done_rx.recv_timeout(WAIT).expect("done").expect("committed");
    assert_eq!(value_rx.try_recv().expect("a value"), (true, false), "a write job checks links with its visibility");
}

pub fn users_and_their_roles_per_project(store: &dyn Store) {
    use access::{Grant, Role};
    let (ada, project) = write(store, |w| {
        let p = w.principals();
        let ada = p.insert_user("ada", Some("$argon2id$stub"), false)?;
        let project = p.insert_project("field trial", false)?;
        p.set_membership(ada, 1, Some(Role::Viewer))?;
        p.set_membership(ada, project, Some(Role::Contributor))?;
        p.set_membership(ada, project, Some(Role::Editor))?;
        Ok((ada, project))
    });
    let duplicate = try_write(store, |w| w.principals().insert_user("ada", None, true));
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
    let (by_name, by_id, missing, grants) = read(store, move |r| {
        let p = r.principals();
        (p.user_by_name("ada"), p.user(ada), p.user_by_name("bob"), p.memberships(ada))
    });
    let user = by_name.expect("read").expect("ada exists");
    assert_eq!(
        (user.id, user.name.as_str(), user.password_hash.as_deref(), user.hub_admin, user.disabled),
        (ada, "ada", Some("$argon2id$stub"), false, false)
    );
    assert_eq!(by_id.expect("read"), Some(user));
    assert_eq!(missing.expect("read"), None);
    assert_eq!(
        grants.expect("read"),
        [Grant { project: 1, role: Role::Viewer }, Grant { project, role: Role::Editor }],
        "one role per project, the last one set"
    );
    write(store, move |w| w.principals().set_membership(ada, 1, None));
    let grants = read(store, move |r| r.principals().memberships(ada)).expect("read");
    assert_eq!(grants, [Grant { project, role: Role::Editor }]);
}

pub fn tokens_are_found_by_hash_with_their_scope_and_revoked_once(store: &dyn Store) {
    use crate::{NewToken, TokenScope};
    use access::{Grant, Role};
    let grants = vec![Grant { project: 1, role: Role::Contributor }];
    let expires = at(3600);
    let scoped = grants.clone();
    let (user, everything, narrow) = write(store, move |w| {
        let p = w.principals();
        let user = p.insert_user("device-operator", None, false)?;
        let everything =
            p.insert_token(&NewToken { user, hash: "aa11", label: "ci", scope: TokenScope::User, expires_at: None })?;
        let narrow = p.insert_token(&NewToken {
            user,
            hash: "bb22",
            label: "station 4",
            scope: TokenScope::Grants(scoped),
            expires_at: Some(expires),
        })?;
        Ok((user, everything, narrow))
    });
    let found = read(store, |r| {
        let p = r.principals();
        (p.token_by_hash("aa11"), p.token_by_hash("bb22"), p.token_by_hash("cc33"))
    });
    let (first, second, none) = (found.0.expect("read"), found.1.expect("read"), found.2.expect("read"));
    let first = first.expect("the first token");
    assert_eq!((first.id, first.user, first.label.as_str(), &first.scope), (everything, user, "ci", &TokenScope::User));
    assert_eq!((first.expires_at, first.revoked_at), (None, None));
    let second = second.expect("the second token");
    assert_eq!((second.id, second.scope, second.expires_at), (narrow, TokenScope::Grants(grants), Some(expires)));
    assert_eq!(none, None);
    let duplicate = try_write(store, move |w| {
        w.principals().insert_token(&NewToken {
            user,
            hash: "aa11",
            label: "again",
            scope: TokenScope::User,
            expires_at: None,
        })
    });
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "hashes are unique: {duplicate:?}");
    assert!(!write(store, move |w| w.principals().revoke_token(narrow, Some(user + 1))), "only by its owner");
    assert!(write(store, move |w| w.principals().revoke_token(narrow, Some(user))));
    assert!(!write(store, move |w| w.principals().revoke_token(narrow, None)), "revoked once");
    let revoked = read(store, |r| r.principals().token_by_hash("bb22")).expect("read").expect("still there");
    assert!(revoked.revoked_at.is_some());
}

pub fn projects_start_with_the_default_one(store: &dyn Store) {
    let initial = read(store, |r| r.principals().projects()).expect("read");
    assert_eq!(
        initial.iter().map(|p| (p.id, p.name.as_str(), p.open_data)).collect::<Vec<_>>(),
        [(1, "default", false)]
    );
    let trial = write(store, |w| w.principals().insert_project("trial", true));
    let duplicate = try_write(store, |w| w.principals().insert_project("trial", false));
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
    assert!(write(store, |w| w.principals().set_open_data(1, true)));
    assert!(!write(store, |w| w.principals().set_open_data(999, true)));
    let projects = read(store, |r| r.principals().projects()).expect("read");
    assert_eq!(
        projects.iter().map(|p| (p.id, p.name.as_str(), p.open_data)).collect::<Vec<_>>(),
        [(1, "default", true), (trial, "trial", true)]
    );
}

fn device_class(w: &mut dyn Writer, model: &str) -> Result<i64, StoreError> {
    w.principals().insert_device_class(&crate::DeviceClassRecord {
        id: 0,
        manufacturer: "Acme".into(),
        model: model.into(),
        hardware_version: String::new(),
        support_until: Some(at(86_400)),
        vulnerability_contact: Some("mailto:security@acme.example".into()),
        sensing: r#"["https://example.org/temperature"]"#.into(),
        mud_url: None,
        update_mechanism: Some("suit".into()),
        firmware: "[]".into(),
        created_at: at(0),
        mud: Some(r#"{"ietf-mud:mud":{"mud-version":1}}"#.into()),
    })
}

fn device(w: &mut dyn Writer, urn: &str, class: i64, thing: Option<Id>) -> Result<i64, StoreError> {
    w.principals().insert_device(&crate::NewDevice {
        urn,
        project: 1,
        class,
        thing: thing.map(|t| t.0),
        firmware_version: Some("1.0"),
        preregistered_key: None,
    })
}

pub fn devices_are_unique_by_urn_and_found_by_thing_and_secret(store: &dyn Store) {
    use crate::DeviceState;
    let (class, thing, first) = write(store, |w| {
        let class = device_class(w, "WS-1")?;
        let thing = thing(w, "station")?;
        let first = device(w, "urn:dev:mac:0024befffe804ff1", class, Some(thing))?;
        device(w, "urn:dev:mac:0024befffe804ff2", class, None)?;
        Ok((class, thing, first))
    });
    let duplicate = try_write(store, move |w| device(w, "urn:dev:mac:0024befffe804ff1", class, None));
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
    let twice = try_write(store, |w| device_class(w, "WS-1"));
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    write(store, move |w| {
        let p = w.principals();
        p.set_device_secret(first, Some("5ec2e7"), Some(r#"{"default":false}"#))?;
        p.set_device_state(first, DeviceState::Admitted, "passed", Some(r#"{"result":"pass"}"#))?;
        p.set_device_firmware(first, Some("1.1"))
    });
    let shared = try_write(store, |w| {
        let other = w.principals().device_by_urn("urn:dev:mac:0024befffe804ff2")?.map(|d| d.id).unwrap_or_default();
        w.principals().set_device_secret(other, Some("5ec2e7"), None)
    });
    assert!(matches!(shared, Err(StoreError::Conflict(_))), "secrets are unique: {shared:?}");
    let (by_urn, by_thing, by_secret, all, class_back) = read(store, move |r| {
        let p = r.principals();
        (
            p.device_by_urn("urn:dev:mac:0024befffe804ff1"),
            p.devices_of_thing(thing.0),
            p.device_by_secret("5ec2e7"),
            p.devices(Some(1)),
            p.device_class(class),
        )
    });
    let device = by_urn.expect("read").expect("the device");
    assert_eq!((device.id, device.class, device.thing, device.project), (first, class, Some(thing.0), 1));
    assert_eq!((device.state, device.state_reason.as_str()), (DeviceState::Admitted, "passed"));
    assert_eq!(
        (device.firmware_version.as_deref(), device.report.as_deref()),
        (Some("1.1"), Some(r#"{"result":"pass"}"#))
    );
    assert_eq!(device.password_findings.as_deref(), Some(r#"{"default":false}"#));
    assert_eq!(by_thing.expect("read"), std::slice::from_ref(&device));
    assert_eq!(by_secret.expect("read"), Some(device));
    assert_eq!(all.expect("read").len(), 2);
    let class_back = class_back.expect("read").expect("the class");
    assert_eq!((class_back.model.as_str(), class_back.support_until), ("WS-1", Some(at(86_400))));
    assert_eq!(class_back.mud.as_deref(), Some(r#"{"ietf-mud:mud":{"mud-version":1}}"#));
    // A state change without a report keeps the last report.
    write(store, move |w| w.principals().set_device_state(first, DeviceState::Quarantined, "undeclared", None));
    let kept =
        read(store, |r| r.principals().device_by_urn("urn:dev:mac:0024befffe804ff1")).expect("read").expect("device");
    assert_eq!((kept.state, kept.report.as_deref()), (DeviceState::Quarantined, Some(r#"{"result":"pass"}"#)));
}

pub fn enrollment_tokens_are_used_once_and_expire(store: &dyn Store) {
    use crate::TokenRefusal;
    let device = write(store, |w| {
        let class = device_class(w, "WS-2")?;
        let device = device(w, "urn:dev:os:32473-1", class, None)?;
        w.principals().insert_enrollment_token(device, "t1", at(3600))?;
        w.principals().insert_enrollment_token(device, "t2", at(10))?;
        w.principals().insert_enrollment_token(device, "t3", at(3600))?;
        Ok(device)
    });
    let take =
        |hash: &'static str, now: i64| write(store, move |w| w.principals().take_enrollment_token(hash, at(now)));
    assert_eq!(take("t1", 0), Ok(device));
    assert_eq!(take("t1", 1), Err(TokenRefusal::Used));
    assert_eq!(take("t2", 20), Err(TokenRefusal::Expired));
    assert_eq!(take("nope", 0), Err(TokenRefusal::Unknown));
    // A failed job that used a token leaves it usable.
    let failed = try_write(store, move |w| {
        let used = w.principals().take_enrollment_token("t3", at(0))?;
        assert_eq!(used, Ok(device));
        Err::<(), _>(StoreError::Rejected("the request was refused".into()))
    });
    assert!(failed.is_err());
    write(store, move |w| w.principals().void_enrollment_tokens(device, at(1)));
    assert_eq!(take("t3", 2), Err(TokenRefusal::Used), "voided");
}

pub fn certificates_are_revoked_once_and_listed_until_they_expire(store: &dyn Store) {
    let certificate = |device: i64, serial: &str, key: &str, not_after: i64| crate::CertificateRecord {
        id: 0,
        device,
        serial: serial.into(),
        fingerprint: format!("fp-{serial}"),
        key_fingerprint: key.into(),
        not_before: at(0),
        not_after: at(not_after),
        issued_at: at(0),
        revoked_at: None,
        revocation_reason: None,
        pem: "-----BEGIN CERTIFICATE-----".into(),
    };
    let (a, b) = write(store, move |w| {
        let class = device_class(w, "WS-3")?;
        let a = device(w, "urn:dev:os:32473-a", class, None)?;
        let b = device(w, "urn:dev:os:32473-b", class, None)?;
        let p = w.principals();
        p.insert_certificate(&certificate(a, "01aa", "key-1", 1000))?;
        p.insert_certificate(&certificate(a, "02bb", "key-2", 50))?;
        p.insert_certificate(&certificate(b, "03cc", "key-1", 1000))?;
        Ok((a, b))
    });
    let duplicate = try_write(store, move |w| w.principals().insert_certificate(&certificate(b, "01aa", "key-9", 10)));
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "serials are unique: {duplicate:?}");
    let (of_a, shared, found) = read(store, move |r| {
        let p = r.principals();
        (p.certificates_of(a), p.devices_with_key("key-1", a), p.certificate_by_serial("03cc"))
    });
    assert_eq!(
        of_a.expect("read").iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(),
        ["02bb", "01aa"],
        "newest first"
    );
    assert_eq!(shared.expect("read"), [b]);
    assert_eq!(found.expect("read").map(|c| c.device), Some(b));
    assert!(write(store, |w| w.principals().revoke_certificate("01aa", at(5), "keyCompromise")));
    assert!(!write(store, |w| w.principals().revoke_certificate("01aa", at(6), "again")), "revoked once");
    assert!(write(store, |w| w.principals().revoke_certificate("02bb", at(5), "superseded")));
    let revoked = read(store, |r| r.principals().revoked_certificates(at(100))).expect("read");
    assert_eq!(revoked, [("01aa".to_owned(), at(5))], "the expired one is no longer listed");
    let back = read(store, |r| r.principals().certificate_by_serial("01aa")).expect("read").expect("certificate");
    assert_eq!((back.revoked_at, back.revocation_reason.as_deref()), (Some(at(5)), Some("keyCompromise")));
}

pub fn the_authority_is_stored_once_and_numbers_its_crls(store: &dyn Store) {
    use crate::AuthorityRecord;
    assert_eq!(read(store, |r| r.principals().authority()).expect("read"), None);
    let first = AuthorityRecord { chain_pem: "first".into(), sealed_key: "c2VhbGVk".into(), crl_number: 0 };
    let second = AuthorityRecord { chain_pem: "second".into(), ..first.clone() };
    let stored = first.clone();
    assert!(write(store, move |w| w.principals().insert_authority(&stored)));
    assert!(!write(store, move |w| w.principals().insert_authority(&second)), "another node was first");
    assert_eq!(write(store, |w| w.principals().next_crl_number()), 1);
    assert_eq!(write(store, |w| w.principals().next_crl_number()), 2);
    let back = read(store, |r| r.principals().authority()).expect("read").expect("stored");
    assert_eq!((back.chain_pem.as_str(), back.crl_number), ("first", 2));
}

pub fn feeds_name_the_thing_and_what_it_observes(store: &dyn Store) {
    let (thing, stream) = write(store, |w| {
        let thing = thing(w, "station")?;
        let stream = datastream(w, thing, "temperature")?;
        Ok((thing, stream))
    });
    let (feed, missing) =
        read(store, move |r| (r.principals().feed(stream.0, false), r.principals().feed(999_999, false)));
    assert_eq!(feed.expect("read"), Some((Some(thing.0), vec!["https://example.org/temperature".to_owned()])));
    assert_eq!(missing.expect("read"), None);
}

// ---------------------------------------------------------------------------------------------
// Statistics of Observations (counts, latest, rollups)

/// The suite's random data, replayable from the seed.
type Dice = crate::sample::SplitMix64;

/// A random result: mostly numbers (integers and reals, some equal), sometimes text, a
/// boolean, JSON or nothing; for a MultiDatastream an array of two such values.
fn random_result(dice: &mut Dice, multi: bool) -> Value {
    let one = |dice: &mut Dice| -> String {
        match dice.below(10) {
            0 => format!("\"s{}\"", dice.below(5)),
            1 => "true".to_owned(),
            2 => "null".to_owned(),
            3 => format!("{{\"k\":{}}}", dice.below(3)),
            4..=6 => format!("{}", dice.below(200) as i64 - 100),
            _ => format!("{}.25", dice.below(2000) as i64 - 1000),
        }
    };
    if multi {
        return Value::Json(format!("[{},{}]", one(dice), one(dice)));
    }
    let text = one(dice);
    match serde_json::from_str::<serde_json::Value>(&text).expect("valid JSON") {
        serde_json::Value::Number(n) if n.is_i64() => Value::Integer(n.as_i64().unwrap_or(0)),
        serde_json::Value::Number(n) => Value::Real(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::Text(s),
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Null => Value::Null,
        other => Value::Json(other.to_string()),
    }
}

/// A random phenomenonTime within three days (so buckets of every level hold several), an
/// interval now and then.
fn random_time(dice: &mut Dice) -> Value {
    let start = dice.below(3 * 86_400) as i64 - 86_400;
    if dice.below(6) == 0 {
        Value::Interval(span(start, start + dice.below(500) as i64))
    } else {
        Value::Instant(at(start))
    }
}

/// The stored Observations of a (Multi)Datastream: (id, start, end or start, result).
fn stored_observations(store: &dyn Store, entity: EntityType, id: Id) -> Vec<(i64, i64, i64, Value)> {
    let constraint = format!("{}/id eq {id}", entity.name());
    let paging = Paging { default_top: 100_000, max_top: 100_000 };
    let rows = query(store, EntityType::Observation, Some(&constraint), "$select=id,phenomenonTime,result", paging);
    rows.rows
        .iter()
        .map(|row| {
            let (start, end) = match field(&rows.fields, row, "phenomenonTime") {
                Value::Instant(i) => (i.micros(), i.micros()),
                Value::Interval(i) => (i.start().micros(), i.end().micros()),
                other => panic!("a phenomenonTime of {other:?}"),
            };
            (row.id.0, start, end, field(&rows.fields, row, "result").clone())
        })
        .collect()
}

/// The series values of a result, computed here independently of `statistics::members`.
fn series_values(multi: bool, result: &Value) -> Vec<serde_json::Value> {
    let json = match result {
        Value::Integer(i) => serde_json::json!(i),
        Value::Real(r) => serde_json::json!(r),
        Value::Text(s) => serde_json::json!(s),
        Value::Boolean(b) => serde_json::json!(b),
        Value::Json(j) => serde_json::from_str(j).expect("stored JSON"),
        _ => serde_json::Value::Null,
    };
    match (multi, json) {
        (false, json) => vec![json],
        (true, serde_json::Value::Array(items)) => items,
        (true, _) => Vec::new(),
    }
}

/// Checks count, latest and every rollup of `entity` `id` against its stored Observations.
fn check_statistics(store: &dyn Store, entity: EntityType, id: Id) {
    use crate::statistics::{LEVELS, Rollup};
    let multi = entity == EntityType::MultiDatastream;
    let rows = stored_observations(store, entity, id);
    let summary = read(store, move |r| r.summary(entity, id)).expect("summary").expect("the parent exists");
    assert_eq!(summary.observations, rows.len() as u64, "{entity}({id}): the count kept equals the stored rows");
    let latest = rows.iter().max_by_key(|(oid, start, end, _)| (*start, *end, std::cmp::Reverse(*oid)));
    assert_eq!(summary.latest.map(|l| l.id), latest.map(|l| l.0), "{entity}({id}): the latest Observation");
    let constraint = format!("{}/id eq {id}", entity.name());
    let top = query(
        store,
        EntityType::Observation,
        Some(&constraint),
        "$orderby=phenomenonTime desc&$top=1&$count=true",
        PAGING,
    );
    assert_eq!(ids(&top), latest.map(|l| Id(l.0)).into_iter().collect::<Vec<_>>(), "the latest as read");
    assert_eq!(top.count, Some(rows.len() as u64), "the count as read");
    assert_eq!(top.more, rows.len() > 1, "more after the latest");
    for level in LEVELS {
        let width = level * 1_000_000;
        // (member, bucket) -> (observations, numbers, total, min, max, first (time, id), last (time, id), first, last)
        type Oracle = (u64, u64, f64, Option<f64>, Option<f64>, (i64, i64), (i64, i64), String, String);
        let mut expected: std::collections::BTreeMap<(u32, i64), Oracle> = std::collections::BTreeMap::new();
        for (oid, start, _, result) in &rows {
            for (member, value) in series_values(multi, result).into_iter().enumerate() {
                let bucket = start.div_euclid(width) * width;
                let number = value.as_f64();
                let entry = expected.entry((member as u32, bucket)).or_insert((
                    0,
                    0,
                    0.0,
                    None,
                    None,
                    (i64::MAX, i64::MAX),
                    (i64::MIN, i64::MIN),
                    String::new(),
                    String::new(),
                ));
                entry.0 += 1;
                if let Some(n) = number {
                    entry.1 += 1;
                    entry.2 += n;
                    entry.3 = Some(entry.3.map_or(n, |m: f64| m.min(n)));
                    entry.4 = Some(entry.4.map_or(n, |m: f64| m.max(n)));
                }
                if (*start, *oid) < entry.5 {
                    entry.5 = (*start, *oid);
                    entry.7 = value.to_string();
                }
                if (*start, *oid) > entry.6 {
                    entry.6 = (*start, *oid);
                    entry.8 = value.to_string();
                }
            }
        }
        let stored: Vec<Rollup> = read(store, move |r| {
            let mut out = Vec::new();
            r.rollups(entity, id, level, Instant::from_micros(i64::MIN), Instant::from_micros(i64::MAX), &mut |row| {
                out.push(row)
            })
            .map(|()| out)
        })
        .expect("rollups");
        let got: Vec<(u32, i64)> = stored.iter().map(|r| (r.member, r.bucket)).collect();
        let mut want: Vec<(u32, i64)> = expected.keys().copied().collect();
        want.sort_by_key(|(member, bucket)| (*bucket, *member));
        assert_eq!(got, want, "{entity}({id}) level {level}: the buckets kept");
        for rollup in stored {
            let e = &expected[&(rollup.member, rollup.bucket)];
            let p = &rollup.partial;
            let what = format!("{entity}({id}) level {level} bucket {} member {}", rollup.bucket, rollup.member);
            assert_eq!((p.observations, p.numbers), (e.0, e.1), "{what}: counts");
            assert!((p.total - e.2).abs() <= 1e-6 * e.2.abs().max(1.0), "{what}: sum {} vs {}", p.total, e.2);
            assert_eq!((p.minimum, p.maximum), (e.3, e.4), "{what}: minimum and maximum");
            assert_eq!(((p.first.time, p.first.id), (p.last.time, p.last.id)), (e.5, e.6), "{what}: first and last");
            let same = |stored: &str, expected: &str| {
                serde_json::from_str::<serde_json::Value>(stored).ok() == serde_json::from_str(expected).ok()
            };
            assert!(same(&p.first.result, &e.7) && same(&p.last.result, &e.8), "{what}: first and last results");
        }
    }
}

/// Two Datastreams and a MultiDatastream of two members, with one feature.
fn statistics_setup(store: &dyn Store) -> (Id, Id, Id, Id) {
    write(store, |w| {
        let thing = thing(w, "t")?;
        let a = datastream(w, thing, "a")?;
        let b = datastream(w, thing, "b")?;
        let first = observed_property(w, "m1")?;
        let md = multi_datastream(w, thing, first)?;
        let second = observed_property(w, "m2")?;
        w.link(navigation_of(EntityType::MultiDatastream, "ObservedProperties"), md, second)?;
        Ok((a, b, md, feature(w, "f")?))
    })
}

/// Queues `job` without waiting; its outcome goes to `done`.
fn queue(
    store: &dyn Store,
    done: &mpsc::Sender<Result<(), StoreError>>,
    job: impl FnOnce(&mut dyn Writer) -> Result<(), StoreError> + Send + 'static,
) {
    let done = done.clone();
    store.write(Visibility::All, Box::new(job), Box::new(move |outcome| drop(done.send(outcome))));
}

pub fn statistics_follow_random_inserts_updates_and_deletes(store: &dyn Store) {
    let (a, b, md, foi) = statistics_setup(store);
    for seed in 1..=3u64 {
        let mut dice = crate::sample::SplitMix64(seed);
        let (done_tx, done_rx) = mpsc::channel();
        let mut queued = 0;
        // Jobs queued together share write groups: inserts, then a failing job whose changes
        // must not count.
        for _ in 0..12 {
            let mut batch = Vec::new();
            for _ in 0..dice.below(40) + 1 {
                let (parent, of) = match dice.below(3) {
                    0 => (EntityType::Datastream, a),
                    1 => (EntityType::Datastream, b),
                    _ => (EntityType::MultiDatastream, md),
                };
                let result = random_result(&mut dice, parent == EntityType::MultiDatastream);
                batch.push((parent, of, random_time(&mut dice), result));
            }
            let fails = dice.below(6) == 0;
            queue(store, &done_tx, move |w| {
                for (parent, of, time, result) in batch {
                    observation(w, parent, of, foi, time, result)?;
                }
                if fails { Err(StoreError::Rejected("on purpose".into())) } else { Ok(()) }
            });
            queued += 1;
        }
        for _ in 0..queued {
            let _ = done_rx.recv_timeout(WAIT).expect("a queued job is reported");
        }
        // Deletes and updates (new times and results, and moves between the Datastreams),
        // again queued together.
        let mut existing: Vec<(EntityType, i64)> = Vec::new();
        for (entity, id) in
            [(EntityType::Datastream, a), (EntityType::Datastream, b), (EntityType::MultiDatastream, md)]
        {
            existing.extend(stored_observations(store, entity, id).into_iter().map(|row| (entity, row.0)));
        }
        let mut queued = 0;
        for _ in 0..10 {
            let mut changes = Vec::new();
            for _ in 0..dice.below(6) + 1 {
                if existing.is_empty() {
                    break;
                }
                let (entity, observation) = existing.swap_remove(dice.below(existing.len() as u64) as usize);
                let change = match dice.below(3) {
                    0 => None,
                    _ => {
                        let result = random_result(&mut dice, entity == EntityType::MultiDatastream);
                        let mut values = vec![("result", result)];
                        if dice.below(2) == 0 {
                            values.push(("phenomenonTime", random_time(&mut dice)));
                        }
                        let mut links = Vec::new();
                        if entity == EntityType::Datastream && dice.below(3) == 0 {
                            links.push(("Datastream", Some(if dice.below(2) == 0 { a } else { b })));
                        }
                        existing.push((entity, observation));
                        Some(record(EntityType::Observation, &values, &links))
                    }
                };
                changes.push((Id(observation), change));
            }
            queue(store, &done_tx, move |w| {
                for (id, change) in changes {
                    match change {
                        None => assert_ok(w.delete(EntityType::Observation, id)?)?,
                        Some(record) => assert_ok(w.update(EntityType::Observation, id, &record)?)?,
                    }
                }
                Ok(())
            });
            queued += 1;
        }
        for _ in 0..queued {
            done_rx.recv_timeout(WAIT).expect("a queued job is reported").expect("the change commits");
        }
        check_statistics(store, EntityType::Datastream, a);
        check_statistics(store, EntityType::Datastream, b);
        check_statistics(store, EntityType::MultiDatastream, md);
    }
}

/// One write group of new Observations of several Datastreams and a MultiDatastream, each
/// job widening its parent's times as the application does (a backend may change all of
/// their rows in one statement): each parent's times, count and latest Observation follow its
/// own Observations, those it had before the group included, and none of a job that failed.
pub fn a_group_of_many_datastreams_keeps_each_ones_times_and_statistics(store: &dyn Store) {
    let (a, b, md, foi) = statistics_setup(store);
    let (c, d) = write(store, |w| {
        let thing = thing(w, "u")?;
        Ok((datastream(w, thing, "c")?, datastream(w, thing, "d")?))
    });
    let (ds, multi) = (EntityType::Datastream, EntityType::MultiDatastream);
    // Before the group: d has an Observation later than any of the group's.
    write(store, move |w| {
        observation(w, ds, d, foi, Value::Instant(at(500)), Value::Integer(1))?;
        w.extend_times(ds, d, span(500, 500), Some(span(501, 501)))
    });
    // (parent, id, phenomenonTime, resultTime, fails): a's second Observation is its
    // latest, b's only success is earlier than its failed one, c's are an interval and an
    // instant inside it.
    let plan: Vec<(EntityType, Id, Interval, Option<Interval>, bool)> = vec![
        (ds, a, span(10, 10), Some(span(11, 11)), false),
        (ds, b, span(20, 20), None, false),
        (ds, c, span(30, 35), Some(span(36, 36)), false),
        (ds, a, span(40, 40), Some(span(41, 41)), false),
        (ds, b, span(50, 50), Some(span(51, 51)), true),
        (ds, d, span(400, 400), Some(span(401, 401)), false),
        (multi, md, span(60, 60), Some(span(61, 61)), false),
        (ds, c, span(32, 32), None, false),
    ];
    let jobs: Vec<GroupJob> = plan
        .iter()
        .map(|&(parent, of, phenomenon, result, fails)| {
            let job: SeeingJob = Box::new(move |w: &mut dyn Writer| {
                let time = if phenomenon.start() == phenomenon.end() {
                    Value::Instant(phenomenon.start())
                } else {
                    Value::Interval(phenomenon)
                };
                let value = if parent == multi { Value::Json("[1,2]".into()) } else { Value::Integer(7) };
                observation(w, parent, of, foi, time, value)?;
                w.extend_times(parent, of, phenomenon, result)?;
                if fails { Err(StoreError::Rejected("on purpose".into())) } else { Ok(String::new()) }
            });
            (Visibility::All, job)
        })
        .collect();
    let outcomes = in_one_group(store, jobs);
    let failed: Vec<bool> = outcomes.iter().map(|o| o.starts_with("error")).collect();
    assert_eq!(failed, plan.iter().map(|p| p.4).collect::<Vec<_>>(), "only the failing job fails: {outcomes:?}");
    let expected = [
        (ds, a, Value::Interval(span(10, 40)), Value::Interval(span(11, 41))),
        (ds, b, Value::Interval(span(20, 20)), Value::Null),
        (ds, c, Value::Interval(span(30, 35)), Value::Interval(span(36, 36))),
        (ds, d, Value::Interval(span(400, 500)), Value::Interval(span(401, 501))),
        (multi, md, Value::Interval(span(60, 60)), Value::Interval(span(61, 61))),
    ];
    for (entity, id, phenomenon, result) in expected {
        assert_eq!(times(store, entity, id), (phenomenon, result), "{entity}({id}): its times");
        check_statistics(store, entity, id);
    }
}

/// `Ok` for a change that found its entity.
fn assert_ok(found: bool) -> Result<(), StoreError> {
    if found { Ok(()) } else { Err(StoreError::Rejected("the entity was not there".into())) }
}

pub fn statistics_follow_cascades(store: &dyn Store) {
    let (a, b, md, foi) = statistics_setup(store);
    let other = write(store, |w| feature(w, "other"));
    write(store, move |w| {
        for i in 0..30 {
            let feature = if i % 3 == 0 { other } else { foi };
            observation(w, EntityType::Datastream, a, feature, Value::Instant(at(i * 1000)), Value::Integer(i))?;
            observation(w, EntityType::Datastream, b, feature, Value::Instant(at(i * 1000)), Value::Integer(i))?;
            observation(w, EntityType::MultiDatastream, md, feature, Value::Instant(at(i * 7)), json("[1,2.5]"))?;
        }
        Ok(())
    });
    // Deleting a feature deletes its Observations of every parent.
    assert!(write(store, move |w| w.delete(EntityType::FeatureOfInterest, other)));
    for (entity, id) in [(EntityType::Datastream, a), (EntityType::Datastream, b), (EntityType::MultiDatastream, md)] {
        check_statistics(store, entity, id);
    }
    // Deleting a Datastream deletes its rollups; deleting the Thing those of the rest.
    assert!(write(store, move |w| w.delete(EntityType::Datastream, b)));
    let left = |entity: EntityType, id: Id| {
        read(store, move |r| {
            let mut n = 0;
            r.rollups(entity, id, 60, Instant::from_micros(i64::MIN), Instant::from_micros(i64::MAX), &mut |_| n += 1)
                .map(|()| n)
        })
        .expect("rollups")
    };
    assert_eq!(left(EntityType::Datastream, b), 0, "a deleted Datastream keeps no rollups");
    assert!(left(EntityType::Datastream, a) > 0);
    let thing = related(store, EntityType::Datastream, a, "Thing")[0];
    assert!(write(store, move |w| w.delete(EntityType::Thing, thing)));
    assert_eq!(left(EntityType::Datastream, a), 0, "the Thing's Datastreams keep no rollups");
    assert_eq!(left(EntityType::MultiDatastream, md), 0, "the Thing's MultiDatastreams keep no rollups");
}

pub fn latest_observations_expand_from_what_is_kept(store: &dyn Store) {
    let (a, b, md, foi) = statistics_setup(store);
    write(store, move |w| {
        // Ties on phenomenonTime: the lower id comes first, as `$orderby` orders them.
        for (i, t) in [5, 9, 9, 2].into_iter().enumerate() {
            observation(w, EntityType::Datastream, a, foi, Value::Instant(at(t)), Value::Integer(i as i64))?;
        }
        observation(w, EntityType::MultiDatastream, md, foi, Value::Interval(span(1, 30)), json("[1,2]"))?;
        observation(w, EntityType::MultiDatastream, md, foi, Value::Interval(span(1, 20)), json("[3,4]"))?;
        Ok(())
    });
    let raw = "$expand=Observations($top=1;$orderby=phenomenonTime desc;$select=result;$count=true)&$orderby=id";
    let streams = query(store, EntityType::Datastream, None, raw, PAGING);
    let latest: Vec<(Id, Vec<Value>, Option<u64>, bool)> = streams
        .rows
        .iter()
        .map(|row| match &row.expanded[0] {
            Expanded::Many(rows) => (row.id, results(rows), rows.count, rows.more),
            other => panic!("expanded {other:?}"),
        })
        .collect();
    assert_eq!(latest, [(a, vec![Value::Integer(1)], Some(4), true), (b, vec![], Some(0), false)]);
    let multi = query(store, EntityType::MultiDatastream, None, raw, PAGING);
    let Expanded::Many(rows) = &multi.rows[0].expanded[0] else { panic!("expanded") };
    assert_eq!(results(rows), [json("[1,2]")], "the longer interval comes first");
    check_statistics(store, EntityType::Datastream, a);
    check_statistics(store, EntityType::MultiDatastream, md);
}

pub fn expired_observations_leave_their_rollups(store: &dyn Store) {
    use crate::statistics::{RetentionPolicy, RetentionScope};
    let (a, b, _, foi) = statistics_setup(store);
    let day = 86_400;
    write(store, move |w| {
        for i in 0..50 {
            observation(w, EntityType::Datastream, a, foi, Value::Instant(at(i * day / 10)), Value::Integer(i))?;
            observation(w, EntityType::Datastream, b, foi, Value::Instant(at(i * day / 10)), Value::Integer(i))?;
        }
        Ok(())
    });
    let hourly = |id: Id| {
        read(store, move |r| {
            let mut out = Vec::new();
            r.rollups(
                EntityType::Datastream,
                id,
                3_600,
                Instant::from_micros(i64::MIN),
                Instant::from_micros(i64::MAX),
                &mut |row| out.push(row),
            )
            .map(|()| out)
        })
        .expect("rollups")
    };
    let before = hourly(a);
    // Expire what starts before the fourth day, 7 at a time.
    let horizon =
        Instant::from_micros(at(0).micros().div_euclid(day * 1_000_000) * day * 1_000_000 + 3 * day * 1_000_000);
    let mut gone = 0;
    loop {
        let n = write(store, move |w| w.expire_observations(EntityType::Datastream, a, horizon, 7));
        gone += n;
        if n < 7 {
            break;
        }
    }
    let left = stored_observations(store, EntityType::Datastream, a);
    assert!(gone > 0 && !left.is_empty(), "some went ({gone}), some stay");
    assert!(left.iter().all(|row| row.1 >= horizon.micros()), "nothing before the horizon stays");
    assert_eq!(left.len() as u64 + gone, 50);
    let summary = read(store, move |r| r.summary(EntityType::Datastream, a)).expect("summary").expect("exists");
    assert_eq!(summary.observations, left.len() as u64, "the count follows");
    assert_eq!(hourly(a), before, "the rollups stay as they were");
    let (start, _) = times(store, EntityType::Datastream, a);
    let earliest = left.iter().map(|row| row.1).min().expect("one");
    assert!(
        match start {
            Value::Interval(i) => i.start().micros() == earliest,
            // (These Observations were written without extending the times.)
            Value::Instant(i) => i.micros() == earliest,
            _ => false,
        },
        "the phenomenonTime starts at the earliest Observation left: {start:?}"
    );
    assert_eq!(stored_observations(store, EntityType::Datastream, b).len(), 50, "other Datastreams keep theirs");
    // Rollups go once they end before their horizon.
    let cut = Instant::from_micros(horizon.micros() - day * 1_000_000);
    let removed = write(store, move |w| w.expire_rollups(EntityType::Datastream, a, cut));
    let after = hourly(a);
    let kept: Vec<_> = before.iter().filter(|r| r.bucket + 3_600_000_000 > cut.micros()).cloned().collect();
    assert!(removed > 0 && kept.len() < before.len());
    assert_eq!(after, kept, "exactly the rollups ending before the cut went");
    // A cascade recomputes only the days it touched: rollups that outlived their
    // Observations stay.
    let late = Instant::from_micros(horizon.micros() + 5 * 3_600_000_000);
    let extra = write(store, move |w| {
        let extra = feature(w, "extra")?;
        observation(w, EntityType::Datastream, a, extra, Value::Instant(late), Value::Integer(1000))?;
        Ok(extra)
    });
    assert_ne!(hourly(a), after);
    assert!(write(store, move |w| w.delete(EntityType::FeatureOfInterest, extra)));
    assert_eq!(hourly(a), after, "deleting the feature takes its Observation out, and only that");
    // Policies: set, replaced, listed, cleared; a deleted Datastream takes its own along.
    let policy =
        |scope, raw, rollups| RetentionPolicy { scope, raw_days: raw, rollup_days: rollups, updated_at: at(1) };
    let project = policy(RetentionScope::Project(1), Some(30), None);
    write(store, move |w| w.set_retention_policy(&project));
    write(store, move |w| w.set_retention_policy(&policy(RetentionScope::Datastream(b.0), Some(7), Some(365))));
    write(store, move |w| w.set_retention_policy(&policy(RetentionScope::Datastream(b.0), Some(8), None)));
    let listed = read(store, |r| r.retention_policies()).expect("policies");
    assert_eq!(listed, [project, policy(RetentionScope::Datastream(b.0), Some(8), None)]);
    assert!(write(store, |w| w.clear_retention_policy(RetentionScope::Project(1))));
    assert!(!write(store, |w| w.clear_retention_policy(RetentionScope::Project(1))), "gone already");
    let mut series = read(store, |r| r.series_of_project(1)).expect("series");
    series.sort();
    assert!(series.contains(&(EntityType::Datastream, a)) && series.contains(&(EntityType::Datastream, b)));
    assert!(write(store, move |w| w.delete(EntityType::Datastream, b)));
    assert_eq!(read(store, |r| r.retention_policies()).expect("policies"), [], "the policy went with its Datastream");
}
