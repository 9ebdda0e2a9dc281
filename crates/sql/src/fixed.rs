//! Statements with a fixed shape that the generic compiler does not produce: maintenance of
//! derived Datastream fields, the generated-feature lookup, and cascades beyond foreign keys.

use model::EntityType;

use crate::dialect::Dialect;

/// Widens the phenomenonTime and resultTime extents of the (Multi)Datastream `?1` to cover
/// `[?2, ?3]` and `[?4, ?5]` (the latter may be NULL: no resultTime).
pub fn extend_times(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!("UPDATE {} SET {} WHERE id = {}", entity.table(), extend_times_set(dialect, 2), dialect.placeholder(1))
}

/// The assignments of [`extend_times`], its `?2` to `?5` numbered from `first`.
pub fn extend_times_set(dialect: &dyn Dialect, first: usize) -> String {
    let p = |n: usize| dialect.placeholder(first + n - 2);
    extend_times_to(dialect, [&p(2), &p(3), &p(4), &p(5)])
}

/// The assignments that widen the phenomenonTime extent by `[ps, pe]` and the resultTime
/// extent by `[rs, re]` (BIGINT expressions; `rs` and `re` may be NULL: no resultTime).
pub fn extend_times_to(dialect: &dyn Dialect, [ps, pe, rs, re]: [&str; 4]) -> String {
    let (least, greatest) = (dialect.least(), dialect.greatest());
    format!(
        "phenomenon_time_start = {least}(COALESCE(phenomenon_time_start, {ps}), {ps}), \
         phenomenon_time_end = {greatest}(COALESCE(phenomenon_time_end, {pe}), {pe}), \
         result_time_start = CASE WHEN CAST({rs} AS BIGINT) IS NULL THEN result_time_start ELSE {least}(COALESCE(result_time_start, {rs}), {rs}) END, \
         result_time_end = CASE WHEN CAST({re} AS BIGINT) IS NULL THEN result_time_end ELSE {greatest}(COALESCE(result_time_end, {re}), {re}) END"
    )
}

/// Sets the phenomenonTime and resultTime extents of the (Multi)Datastream `?1` to those of its
/// Observations (NULL when it has none).
pub fn recompute_times(dialect: &dyn Dialect, entity: EntityType) -> String {
    let column = match entity {
        EntityType::MultiDatastream => "multi_datastream_id",
        _ => "datastream_id",
    };
    let of =
        |aggregate: &str| format!("(SELECT {aggregate} FROM observations WHERE {column} = {})", dialect.placeholder(1));
    format!(
        "UPDATE {table} SET \
         phenomenon_time_start = {ps}, phenomenon_time_end = {pe}, \
         result_time_start = {rs}, result_time_end = {re} \
         WHERE id = {p1}",
        table = entity.table(),
        ps = of("MIN(phenomenon_time_start)"),
        pe = of("MAX(COALESCE(phenomenon_time_end, phenomenon_time_start))"),
        rs = of("MIN(result_time)"),
        re = of("MAX(result_time)"),
        p1 = dialect.placeholder(1),
    )
}

/// Rows `(location id, generated feature id or NULL, encoding type, location, name,
/// description, whether the (Multi)Datastream has Observations of that feature already, the
/// (Multi)Datastream's id)` for the Locations of the Thing of the (Multi)Datastream `?1`.
pub fn thing_locations_of(dialect: &dyn Dialect, entity: EntityType) -> String {
    thing_locations_of_each(dialect, entity, 1)
}

/// [`thing_locations_of`] for the (Multi)Datastreams `?1` to `?count` at once; by
/// (Multi)Datastream, then Location.
pub fn thing_locations_of_each(dialect: &dyn Dialect, entity: EntityType, count: usize) -> String {
    let (features, column) = observed_features(entity);
    let ids: Vec<String> = (1..=count.max(1)).map(|n| dialect.placeholder(n)).collect();
    format!(
        "SELECT l.id, g.feature_id, l.encoding_type, l.location, l.name, l.description, \
         EXISTS (SELECT 1 FROM {features} n WHERE n.{column} = d.id AND n.feature_id = g.feature_id), d.id \
         FROM {table} d JOIN thing_locations tl ON tl.thing_id = d.thing_id \
         JOIN locations l ON l.id = tl.location_id \
         LEFT JOIN location_features g ON g.location_id = l.id \
         WHERE d.id IN ({ids}) ORDER BY d.id, l.id{lock}",
        table = entity.table(),
        ids = ids.join(", "),
        lock = dialect.key_share_lock().map(|lock| format!("{lock} OF l")).unwrap_or_default(),
    )
}

/// Remembers that the feature `?2` was generated from the location `?1`.
pub fn remember_generated_feature(dialect: &dyn Dialect) -> String {
    format!(
        "INSERT INTO location_features (location_id, feature_id) VALUES ({}, {}) \
         ON CONFLICT (location_id) DO UPDATE SET feature_id = excluded.feature_id",
        dialect.placeholder(1),
        dialect.placeholder(2)
    )
}

/// Locks, before the entity `?1` and its Observations are deleted, the rows new Observations
/// of it would lock `FOR KEY SHARE` (its Datastreams, MultiDatastreams or itself), so that a
/// write job of another session that is creating Observations of them commits first and its
/// Observations are deleted too. Only where Observations hold no foreign keys
/// ([`Dialect::key_share_lock`]).
pub fn lock_owners(dialect: &dyn Dialect, entity: EntityType) -> Vec<String> {
    if dialect.key_share_lock().is_none() {
        return Vec::new();
    }
    let p1 = dialect.placeholder(1);
    let of = |filter: &str| {
        vec![
            format!("SELECT id FROM datastreams WHERE {filter} ORDER BY id FOR UPDATE"),
            format!("SELECT id FROM multi_datastreams WHERE {filter} ORDER BY id FOR UPDATE"),
        ]
    };
    match entity {
        EntityType::Datastream | EntityType::MultiDatastream => {
            vec![format!("SELECT id FROM {} WHERE id = {p1} FOR UPDATE", entity.table())]
        }
        // New Observations of a generated feature lock the Location it was generated from.
        EntityType::FeatureOfInterest => vec![
            format!("SELECT id FROM features WHERE id = {p1} FOR UPDATE"),
            format!(
                "SELECT id FROM locations WHERE id IN \
                 (SELECT location_id FROM location_features WHERE feature_id = {p1}) ORDER BY id FOR UPDATE"
            ),
        ],
        EntityType::Thing => of(&format!("thing_id = {p1}")),
        EntityType::Sensor => of(&format!("sensor_id = {p1}")),
        EntityType::ObservedProperty => vec![
            format!("SELECT id FROM datastreams WHERE observed_property_id = {p1} ORDER BY id FOR UPDATE"),
            format!(
                "SELECT id FROM multi_datastreams WHERE id IN (SELECT multi_datastream_id FROM \
                 multi_datastream_observed_properties WHERE observed_property_id = {p1}) ORDER BY id FOR UPDATE"
            ),
        ],
        _ => Vec::new(),
    }
}

/// Deletes, before the entity `?1` itself, what must go with it that foreign keys do not
/// remove: the MultiDatastreams of a deleted ObservedProperty, and Observations, which hold no
/// foreign keys on PostgreSQL (checking them per row cost two thirds of ingest). On SQLite,
/// whose Observations keep theirs, this only does first what the cascade would do.
pub fn delete_dependents(dialect: &dyn Dialect, entity: EntityType) -> Vec<String> {
    let p1 = dialect.placeholder(1);
    // The Observations of the (Multi)Datastreams that `filter` selects.
    // ... and their rollups (`observation_rollups.parent`: 0 Datastreams, 1 MultiDatastreams).
    let observations_of = |filter: &str| {
        vec![
            format!("DELETE FROM observations WHERE datastream_id IN (SELECT id FROM datastreams WHERE {filter})"),
            format!(
                "DELETE FROM observations WHERE multi_datastream_id IN (SELECT id FROM multi_datastreams WHERE {filter})"
            ),
            format!(
                "DELETE FROM observation_rollups WHERE parent = 0 AND parent_id IN (SELECT id FROM datastreams WHERE {filter})"
            ),
            format!(
                "DELETE FROM observation_rollups WHERE parent = 1 AND parent_id IN \
                 (SELECT id FROM multi_datastreams WHERE {filter})"
            ),
            format!(
                "DELETE FROM retention_policies WHERE scope = 1 AND scope_id IN (SELECT id FROM datastreams WHERE {filter})"
            ),
            format!(
                "DELETE FROM retention_policies WHERE scope = 2 AND scope_id IN \
                 (SELECT id FROM multi_datastreams WHERE {filter})"
            ),
        ]
    };
    match entity {
        EntityType::Datastream => vec![
            format!("DELETE FROM observations WHERE datastream_id = {p1}"),
            format!("DELETE FROM observation_rollups WHERE parent = 0 AND parent_id = {p1}"),
            format!("DELETE FROM retention_policies WHERE scope = 1 AND scope_id = {p1}"),
        ],
        EntityType::MultiDatastream => vec![
            format!("DELETE FROM observations WHERE multi_datastream_id = {p1}"),
            format!("DELETE FROM observation_rollups WHERE parent = 1 AND parent_id = {p1}"),
            format!("DELETE FROM retention_policies WHERE scope = 2 AND scope_id = {p1}"),
        ],
        EntityType::FeatureOfInterest => vec![format!("DELETE FROM observations WHERE feature_id = {p1}")],
        EntityType::Thing => observations_of(&format!("thing_id = {p1}")),
        EntityType::Sensor => observations_of(&format!("sensor_id = {p1}")),
        EntityType::ObservedProperty => {
            let linked = format!(
                "SELECT multi_datastream_id FROM multi_datastream_observed_properties WHERE observed_property_id = {p1}"
            );
            vec![
                format!("DELETE FROM observations WHERE multi_datastream_id IN ({linked})"),
                format!("DELETE FROM observation_rollups WHERE parent = 1 AND parent_id IN ({linked})"),
                format!("DELETE FROM retention_policies WHERE scope = 2 AND scope_id IN ({linked})"),
                format!("DELETE FROM multi_datastreams WHERE id IN ({linked})"),
                format!(
                    "DELETE FROM observations WHERE datastream_id IN \
                     (SELECT id FROM datastreams WHERE observed_property_id = {p1})"
                ),
                format!(
                    "DELETE FROM observation_rollups WHERE parent = 0 AND parent_id IN \
                     (SELECT id FROM datastreams WHERE observed_property_id = {p1})"
                ),
                format!(
                    "DELETE FROM retention_policies WHERE scope = 1 AND scope_id IN \
                     (SELECT id FROM datastreams WHERE observed_property_id = {p1})"
                ),
            ]
        }
        _ => Vec::new(),
    }
}

/// The table of the features a Datastream (or MultiDatastream) has Observations of, and its
/// column naming the (Multi)Datastream.
fn observed_features(entity: EntityType) -> (&'static str, &'static str) {
    match entity {
        EntityType::MultiDatastream => ("multi_datastream_features", "multi_datastream_id"),
        _ => ("datastream_features", "datastream_id"),
    }
}

/// Records that the (Multi)Datastream `?1` has Observations of the feature `?2`.
pub fn note_feature(dialect: &dyn Dialect, entity: EntityType) -> String {
    let (table, column) = observed_features(entity);
    format!(
        "INSERT INTO {table} ({column}, feature_id) VALUES ({}, {}) ON CONFLICT DO NOTHING",
        dialect.placeholder(1),
        dialect.placeholder(2)
    )
}

/// `SELECT project_id FROM table WHERE id = ?1`.
pub fn project_of(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!("SELECT {} FROM {} WHERE id = {}", crate::PROJECT_COLUMN, entity.table(), dialect.placeholder(1))
}
