//! The statements that keep and read the statistics of (Multi)Datastreams' Observations
//! (`store::statistics`): counts, latest Observations and rollups.

use model::EntityType;

use crate::dialect::Dialect;

/// The columns of `observation_rollups`, in the order every statement here uses.
pub const ROLLUP_COLUMNS: &str = "parent, parent_id, member, level, bucket, observations, numbers, total, minimum, \
     maximum, first_time, first_id, first_result, last_time, last_id, last_result";

/// How many values a row of [`ROLLUP_COLUMNS`] binds.
pub const ROLLUP_WIDTH: usize = 16;

/// The Observations' column that names their (Multi)Datastream.
pub fn parent_column(entity: EntityType) -> &'static str {
    match entity {
        EntityType::MultiDatastream => "multi_datastream_id",
        _ => "datastream_id",
    }
}

/// Adds `?2` to the count of the (Multi)Datastream `?1` and makes the Observation `?3`
/// (phenomenonTime start `?4`, end or start `?5`) its latest if it comes first in
/// `phenomenonTime desc, id` order.
pub fn add_observations(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!("UPDATE {} SET {} WHERE id = {}", entity.table(), add_observations_set(dialect, 2), dialect.placeholder(1))
}

/// The assignments of [`add_observations`], its `?2` to `?5` numbered from `first`.
fn add_observations_set(dialect: &dyn Dialect, first: usize) -> String {
    let p = |n: usize| dialect.placeholder(first + n - 2);
    add_observations_of([&p(2), &p(3), &p(4), &p(5)])
}

/// The assignments that add `n` to the count and make the Observation `id` (phenomenonTime
/// start `start`, end or start `end`) the latest if it comes first in `phenomenonTime desc, id`
/// order.
fn add_observations_of([n, id, start, end]: [&str; 4]) -> String {
    let later = format!(
        "(latest_observation_id IS NULL OR {start} > latest_start OR ({start} = latest_start AND ({end} > latest_end \
         OR ({end} = latest_end AND {id} < latest_observation_id))))"
    );
    format!(
        "observation_count = observation_count + {n}, \
         latest_observation_id = CASE WHEN {later} THEN {id} ELSE latest_observation_id END, \
         latest_start = CASE WHEN {later} THEN {start} ELSE latest_start END, \
         latest_end = CASE WHEN {later} THEN {end} ELSE latest_end END"
    )
}

/// [`crate::fixed::extend_times`] (`?2` to `?5`) and [`add_observations`] (`?6` to `?9`) of
/// the (Multi)Datastream `?1` in one statement: a group of new Observations of one
/// Datastream changes its row once.
pub fn extend_times_and_add_observations(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "UPDATE {} SET {}, {} WHERE id = {}",
        entity.table(),
        crate::fixed::extend_times_set(dialect, 2),
        add_observations_set(dialect, 6),
        dialect.placeholder(1)
    )
}

/// How many values a row of [`extend_times_and_add_observations_each`] binds.
pub const EXTEND_AND_ADD_WIDTH: usize = 9;

/// [`extend_times_and_add_observations`] of `rows` (Multi)Datastreams in one statement, its
/// nine values a row in the same order (`?1` to `?9` of the first, `?10` to `?18` of the
/// second...): a group of new Observations of many Datastreams changes each row once, in one
/// statement. Where the dialect locks for update (`Dialect::update_lock`) the rows are locked
/// in key order before any is changed: every row the update changes comes out of the locking
/// sub-select, which locks as it emits, in key order, whatever the plan of the join.
pub fn extend_times_and_add_observations_each(dialect: &dyn Dialect, entity: EntityType, rows: usize) -> String {
    let table = entity.table();
    const NAMES: [&str; EXTEND_AND_ADD_WIDTH] = ["id", "ps", "pe", "rs", "re", "n", "latest", "ls", "le"];
    let mut values = String::new();
    for row in 0..rows {
        values.push_str(if row == 0 { "SELECT " } else { " UNION ALL SELECT " });
        for (i, name) in NAMES.iter().enumerate() {
            if i > 0 {
                values.push_str(", ");
            }
            values.push_str("CAST(");
            dialect.push_placeholder(&mut values, row * EXTEND_AND_ADD_WIDTH + i + 1);
            values.push_str(" AS BIGINT)");
            if row == 0 {
                values.push_str(" AS ");
                values.push_str(name);
            }
        }
    }
    let lock = dialect.update_lock().map(|l| format!("{l} OF d")).unwrap_or_default();
    let v = |name: &str| format!("v.{name}");
    format!(
        "UPDATE {table} SET {}, {} \
         FROM (SELECT r.* FROM {table} d JOIN ({values}) r ON d.id = r.id ORDER BY d.id{lock}) v \
         WHERE {table}.id = v.id",
        crate::fixed::extend_times_to(dialect, [&v("ps"), &v("pe"), &v("rs"), &v("re")]),
        add_observations_of([&v("n"), &v("latest"), &v("ls"), &v("le")]),
    )
}

/// Adds `?2` (negative: takes away) to the count of the (Multi)Datastream `?1`.
pub fn add_to_count(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "UPDATE {} SET observation_count = observation_count + {} WHERE id = {}",
        entity.table(),
        dialect.placeholder(2),
        dialect.placeholder(1)
    )
}

/// Sets the count of the (Multi)Datastream `?1` to the number of its Observations.
pub fn recount(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "UPDATE {table} SET observation_count = (SELECT COUNT(*) FROM observations WHERE {column} = {p1}) WHERE id = {p1}",
        table = entity.table(),
        column = parent_column(entity),
        p1 = dialect.placeholder(1)
    )
}

/// The row `(id, phenomenonTime start, end or start)` of the Observation of the
/// (Multi)Datastream `?1` that `$orderby=phenomenonTime desc` puts first.
pub fn find_latest(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "SELECT id, phenomenon_time_start, COALESCE(phenomenon_time_end, phenomenon_time_start) FROM observations \
         WHERE {column} = {p1} \
         ORDER BY phenomenon_time_start DESC, COALESCE(phenomenon_time_end, phenomenon_time_start) DESC, id LIMIT 1",
        column = parent_column(entity),
        p1 = dialect.placeholder(1)
    )
}

/// Sets the latest Observation of the (Multi)Datastream `?1` to `?2` (start `?3`, end `?4`;
/// all NULL when it has none).
pub fn set_latest(dialect: &dyn Dialect, entity: EntityType) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "UPDATE {} SET latest_observation_id = {}, latest_start = {}, latest_end = {} WHERE id = {}",
        entity.table(),
        p(2),
        p(3),
        p(4),
        p(1)
    )
}

/// `(observation_count, latest_observation_id, latest_start, latest_end, rollups_pending)` of
/// the (Multi)Datastream `?1`.
pub fn summary(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "SELECT observation_count, latest_observation_id, latest_start, latest_end, rollups_pending FROM {} WHERE id = {}",
        entity.table(),
        dialect.placeholder(1)
    )
}

/// Sets whether the rollups of the (Multi)Datastream `?1` are still to be built (`?2`, 0 or 1).
pub fn set_rollups_pending(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "UPDATE {} SET rollups_pending = {} WHERE id = {}",
        entity.table(),
        dialect.placeholder(2),
        dialect.placeholder(1)
    )
}

/// The ids of the (Multi)Datastreams whose rollups are still to be built, at most `?1`.
pub fn rollups_pending(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!("SELECT id FROM {} WHERE rollups_pending = 1 ORDER BY id LIMIT {}", entity.table(), dialect.placeholder(1))
}

/// Merges `rows` rows of [`ROLLUP_COLUMNS`] into the stored rollups: counts and sums add up,
/// minimum and maximum widen, and the first and last Observations are the earlier and later
/// of the two.
pub fn merge_rollups(dialect: &dyn Dialect, rows: usize) -> String {
    let mut values = String::with_capacity(rows * ROLLUP_WIDTH * 7);
    for row in 0..rows {
        values.push_str(if row == 0 { "(" } else { ", (" });
        for i in 1..=ROLLUP_WIDTH {
            if i > 1 {
                values.push_str(", ");
            }
            dialect.push_placeholder(&mut values, row * ROLLUP_WIDTH + i);
        }
        values.push(')');
    }
    let r = "observation_rollups";
    let earlier = format!(
        "(excluded.first_time < {r}.first_time OR (excluded.first_time = {r}.first_time AND excluded.first_id < {r}.first_id))"
    );
    let later = format!(
        "(excluded.last_time > {r}.last_time OR (excluded.last_time = {r}.last_time AND excluded.last_id > {r}.last_id))"
    );
    let pick = |condition: &str, column: &str| {
        format!("{column} = CASE WHEN {condition} THEN excluded.{column} ELSE {r}.{column} END")
    };
    format!(
        "INSERT INTO {r} ({ROLLUP_COLUMNS}) VALUES {values} \
         ON CONFLICT (parent, parent_id, level, bucket, member) DO UPDATE SET \
         observations = {r}.observations + excluded.observations, \
         numbers = {r}.numbers + excluded.numbers, \
         total = {r}.total + excluded.total, \
         minimum = CASE WHEN {r}.minimum IS NULL OR excluded.minimum < {r}.minimum THEN excluded.minimum \
         ELSE {r}.minimum END, \
         maximum = CASE WHEN {r}.maximum IS NULL OR excluded.maximum > {r}.maximum THEN excluded.maximum \
         ELSE {r}.maximum END, \
         {}, {}, {}, {}, {}, {}",
        pick(&earlier, "first_time"),
        pick(&earlier, "first_id"),
        pick(&earlier, "first_result"),
        pick(&later, "last_time"),
        pick(&later, "last_id"),
        pick(&later, "last_result"),
    )
}

/// Deletes the rollups (every member) of kind `?1`, parent `?2`, level `?3` and bucket `?4`.
pub fn delete_bucket(dialect: &dyn Dialect) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "DELETE FROM observation_rollups WHERE parent = {} AND parent_id = {} AND level = {} AND bucket = {}",
        p(1),
        p(2),
        p(3),
        p(4)
    )
}

/// Rows `(id, phenomenonTime start, result_number, result_string, result_boolean,
/// result_json)` of the Observations of the (Multi)Datastream `?1` starting in `[?2, ?3)`, in
/// time order.
pub fn raw_points(dialect: &dyn Dialect, entity: EntityType) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "SELECT id, phenomenon_time_start, result_number, result_string, result_boolean, result_json \
         FROM observations WHERE {column} = {p1} AND phenomenon_time_start >= {p2} AND phenomenon_time_start < {p3} \
         ORDER BY phenomenon_time_start, id",
        column = parent_column(entity),
        p1 = p(1),
        p2 = p(2),
        p3 = p(3),
    )
}

/// Rows of [`ROLLUP_COLUMNS`] without the first four (so: bucket, observations, ...) and with
/// the member first, of kind `?1`, parent `?2` and level `?3` whose buckets start in
/// `[?4, ?5)`, in bucket then member order.
pub fn read_rollups(dialect: &dyn Dialect) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "SELECT member, bucket, observations, numbers, total, minimum, maximum, first_time, first_id, first_result, \
         last_time, last_id, last_result FROM observation_rollups \
         WHERE parent = {} AND parent_id = {} AND level = {} AND bucket >= {} AND bucket < {} ORDER BY bucket, member",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    )
}

/// Rows `(id, observation_count, latest_observation_id)` of the (Multi)Datastreams whose ids
/// are the list `?1`.
pub fn summaries(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "SELECT l.value, d.observation_count, d.latest_observation_id FROM {} JOIN {} d ON d.id = l.value",
        dialect.id_list(&dialect.placeholder(1), "l"),
        entity.table()
    )
}

/// The row `(datastream_id, multi_datastream_id, phenomenon_time_start, phenomenon_time_end,
/// result_number, result_string, result_boolean, result_json)` of the Observation `?1`.
pub fn observation_facts(dialect: &dyn Dialect) -> String {
    format!(
        "SELECT datastream_id, multi_datastream_id, phenomenon_time_start, phenomenon_time_end, result_number, \
         result_string, result_boolean, result_json FROM observations WHERE id = {}",
        dialect.placeholder(1)
    )
}

/// Rows `(parent, id)` (0: a Datastream, 1: a MultiDatastream) of the (Multi)Datastreams whose
/// Observations deleting the entity `?1` of type `entity` deletes or changes.
pub fn affected_parents(dialect: &dyn Dialect, entity: EntityType) -> Option<String> {
    let p1 = dialect.placeholder(1);
    let of = |filter: &str| {
        format!(
            "SELECT 0, id FROM datastreams WHERE {filter} UNION ALL SELECT 1, id FROM multi_datastreams WHERE {filter}"
        )
    };
    Some(match entity {
        EntityType::Datastream => format!("SELECT 0, id FROM datastreams WHERE id = {p1}"),
        EntityType::MultiDatastream => format!("SELECT 1, id FROM multi_datastreams WHERE id = {p1}"),
        EntityType::Thing => of(&format!("thing_id = {p1}")),
        EntityType::Sensor => of(&format!("sensor_id = {p1}")),
        EntityType::ObservedProperty => format!(
            "SELECT 0, id FROM datastreams WHERE observed_property_id = {p1} UNION ALL \
             SELECT 1, multi_datastream_id FROM multi_datastream_observed_properties WHERE observed_property_id = {p1}"
        ),
        _ => return None,
    })
}

/// Rows `(scope, scope_id, raw_days, rollup_days, updated_at)` of every retention policy.
pub fn retention_policies() -> &'static str {
    "SELECT scope, scope_id, raw_days, rollup_days, updated_at FROM retention_policies ORDER BY scope, scope_id"
}

/// Stores the policy `(?1 scope, ?2 scope_id, ?3 raw_days, ?4 rollup_days, ?5 updated_at)`.
pub fn set_retention_policy(dialect: &dyn Dialect) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "INSERT INTO retention_policies (scope, scope_id, raw_days, rollup_days, updated_at) VALUES ({}, {}, {}, {}, {}) \
         ON CONFLICT (scope, scope_id) DO UPDATE SET raw_days = excluded.raw_days, \
         rollup_days = excluded.rollup_days, updated_at = excluded.updated_at",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    )
}

pub fn clear_retention_policy(dialect: &dyn Dialect) -> String {
    format!(
        "DELETE FROM retention_policies WHERE scope = {} AND scope_id = {}",
        dialect.placeholder(1),
        dialect.placeholder(2)
    )
}

/// Rows `(0 or 1, id)` of the Datastreams and MultiDatastreams of project `?1`.
pub fn series_of_project(dialect: &dyn Dialect) -> String {
    let p1 = dialect.placeholder(1);
    format!(
        "SELECT 0, id FROM datastreams WHERE project_id = {p1} UNION ALL \
         SELECT 1, id FROM multi_datastreams WHERE project_id = {p1} ORDER BY 1, 2"
    )
}

/// Deletes up to `?3` of the oldest Observations of the (Multi)Datastream `?1` starting before
/// `?2`.
pub fn expire_observations(dialect: &dyn Dialect, entity: EntityType) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "DELETE FROM observations WHERE id IN (SELECT id FROM observations WHERE {column} = {p1} \
         AND phenomenon_time_start < {p2} ORDER BY phenomenon_time_start LIMIT {p3})",
        column = parent_column(entity),
        p1 = p(1),
        p2 = p(2),
        p3 = p(3),
    )
}

/// The two 32-bit keys of `Dialect::claim_series` for the Observations of `entity` `id`: a
/// class of its own per parent kind ("tbr" and the kind), and the id (wrapping past 2^31, where
/// two series share a claim: one waits a pass for the other).
pub fn claim_key(entity: EntityType, id: i64) -> [i64; 2] {
    let kind = match entity {
        EntityType::MultiDatastream => 2,
        _ => 1,
    };
    [0x7462_7200 | kind, id & 0x7fff_ffff]
}

/// Deletes the rollups of kind `?1` and parent `?2` that end at or before `?3`.
pub fn expire_rollups(dialect: &dyn Dialect) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "DELETE FROM observation_rollups WHERE parent = {} AND parent_id = {} AND bucket + level * 1000000 <= {}",
        p(1),
        p(2),
        p(3)
    )
}

/// Sets the phenomenonTime start of the (Multi)Datastream `?1` to its earliest Observation's
/// (after old ones expired; the other extents stay as they are until recomputed).
pub fn earliest_start(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "UPDATE {table} SET phenomenon_time_start = (SELECT MIN(phenomenon_time_start) FROM observations \
         WHERE {column} = {p1}) WHERE id = {p1}",
        table = entity.table(),
        column = parent_column(entity),
        p1 = dialect.placeholder(1)
    )
}

/// The id of the first Observation of the (Multi)Datastream `?1` starting at or after `?2`.
pub fn next_observation(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "SELECT id FROM observations WHERE {column} = {p1} AND phenomenon_time_start >= {p2} \
         ORDER BY phenomenon_time_start, id LIMIT 1",
        column = parent_column(entity),
        p1 = dialect.placeholder(1),
        p2 = dialect.placeholder(2)
    )
}

/// `(MIN(id), MAX(id), COUNT(*))` of `table`; the count only where `count` (it is cheap).
/// Each in a statement of its own, so the first two read one end of the key each.
pub fn id_range(entity: EntityType, count: bool) -> String {
    let table = entity.table();
    let n = if count { format!("(SELECT COUNT(*) FROM {table})") } else { "0".to_owned() };
    format!("SELECT (SELECT MIN(id) FROM {table}), (SELECT MAX(id) FROM {table}), {n}")
}

/// Rows `(parent, id, day, count)` (parent 0: a Datastream, 1: a MultiDatastream; `day` the
/// start of a UTC day in microseconds) of the Observations of feature `?1`, per series and day:
/// what deleting the feature takes from each series' statistics.
pub fn feature_days(dialect: &dyn Dialect) -> String {
    const DAY: i64 = 86_400_000_000;
    let start = "phenomenon_time_start";
    format!(
        "SELECT CASE WHEN datastream_id IS NULL THEN 1 ELSE 0 END, COALESCE(datastream_id, multi_datastream_id), \
         (CASE WHEN {start} >= 0 THEN {start} / {DAY} ELSE ({start} - {DAY} + 1) / {DAY} END) * {DAY}, COUNT(*) \
         FROM observations WHERE feature_id = {} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        dialect.placeholder(1)
    )
}

/// Deletes the rollups (every level and member) of kind `?1` and parent `?2` whose buckets
/// start in `[?3, ?4)`.
pub fn delete_rollups_between(dialect: &dyn Dialect) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "DELETE FROM observation_rollups WHERE parent = {} AND parent_id = {} AND bucket >= {} AND bucket < {}",
        p(1),
        p(2),
        p(3),
        p(4)
    )
}

/// The earliest phenomenonTime start among the Observations of the (Multi)Datastream `?1`.
pub fn earliest_observation(dialect: &dyn Dialect, entity: EntityType) -> String {
    format!(
        "SELECT MIN(phenomenon_time_start) FROM observations WHERE {} = {}",
        parent_column(entity),
        dialect.placeholder(1)
    )
}
