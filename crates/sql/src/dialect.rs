//! The [`Dialect`] trait: the small set of SQL differences between databases, with defaults
//! written once. `SqliteDialect` and `PostgresDialect` override what each spells differently.

/// A date or time part extracted from an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePart {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// The JSON type a value extracted from a JSON column is coerced to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonAs {
    Number,
    Text,
    Boolean,
    /// Whatever the database makes of it (numbers as numbers, strings as text).
    Any,
}

pub trait Dialect: Send + Sync {
    /// The placeholder for parameter `n` (1-based).
    fn placeholder(&self, n: usize) -> String {
        let mut out = String::with_capacity(6);
        self.push_placeholder(&mut out, n);
        out
    }

    /// Appends [`Dialect::placeholder`] `n` to `out` (statements of many rows bind thousands).
    fn push_placeholder(&self, out: &mut String, n: usize);

    /// A FROM item with one column `value` listing the ids of a [`crate::Param::IdList`].
    fn id_list(&self, placeholder: &str, alias: &str) -> String;

    /// A value of `column` (JSON text) at `path` (a placeholder holding the dialect's path text),
    /// coerced to `ty`; NULL when absent or of another type.
    fn json_value(&self, column: &str, path: &str, ty: JsonAs) -> String;

    /// The path text for a JSON path given as keys and array indexes.
    fn json_path(&self, keys: &[String]) -> String;

    /// An integer date or time part of `micros`, an expression of microseconds since the epoch.
    fn date_part(&self, part: DatePart, micros: &str) -> String;

    /// `YYYY-MM-DD` of `micros`.
    fn date_text(&self, micros: &str) -> String;

    /// `HH:MM:SS` of `micros`.
    fn time_text(&self, micros: &str) -> String;

    /// A spatial predicate or measure by its OGC name (`st_within`, `geo_distance`, ...) over
    /// GeoJSON or WKT text arguments.
    fn geo_function(&self, name: &str, args: &[String]) -> String;

    /// 1-based position of `needle` in `haystack`, 0 if absent.
    fn position(&self, haystack: &str, needle: &str) -> String;

    /// Microseconds since the epoch of an ISO 8601 text; NULL if it is not one.
    fn text_to_micros(&self, text: &str) -> String;

    fn modulo(&self, a: &str, b: &str) -> String {
        format!("mod({a}, {b})")
    }

    /// `a IS NOT b` with NULLs comparing as values.
    fn distinct(&self, a: &str, b: &str) -> String {
        format!("({a} IS DISTINCT FROM {b})")
    }

    fn floor(&self, x: &str) -> String {
        format!("floor({x})")
    }

    fn ceiling(&self, x: &str) -> String {
        format!("ceil({x})")
    }

    /// The name of the n-ary minimum function.
    fn least(&self) -> &'static str {
        "LEAST"
    }

    /// The name of the n-ary maximum function.
    fn greatest(&self) -> &'static str {
        "GREATEST"
    }

    /// A boolean condition as a value comparable with a stored boolean.
    fn boolean_literal(&self, value: bool) -> &'static str {
        if value { "TRUE" } else { "FALSE" }
    }

    /// The clause that keeps the rows a statement reads from being deleted until the
    /// transaction ends (what a foreign key check takes), where the database needs it: a write
    /// job that found a Datastream creates Observations of it, which on PostgreSQL hold no
    /// foreign key. SQLite's single writer needs none.
    fn key_share_lock(&self) -> Option<&'static str> {
        None
    }

    /// A statement that claims a series (`?1`, `?2`: [`crate::statistics::claim_key`]) for
    /// the rest of the transaction and says whether it got it, without waiting, where nodes
    /// may share the database: retention then leaves a series another node is expiring to it,
    /// instead of deleting the same rows and waiting for its locks. SQLite needs none.
    fn claim_series(&self) -> Option<&'static str> {
        None
    }

    /// What an `ORDER BY` key that may be NULL needs so that NULLs sort as the smallest value
    /// (first ascending, last descending), as OData orders them: SQLite's own order, nothing.
    fn nulls_smallest(&self, _descending: bool) -> &'static str {
        ""
    }

    /// The clause that locks the rows a statement reads as an update of them would (but for
    /// their keys), where writers run side by side: a statement that updates many rows reads
    /// them in key order with it first, so that two writers never wait for each other in
    /// turn. SQLite's single writer needs none.
    fn update_lock(&self) -> Option<&'static str> {
        None
    }

    /// The statement that moves the key generator of `table` past its largest `key` after rows
    /// were loaded with their keys, if the database needs one (SQLite's do not).
    fn after_load(&self, table: &str, key: &str) -> Option<String> {
        let _ = (table, key);
        None
    }

    /// The statements (without parameters) that announce `messages` to the other nodes, if
    /// the database can be shared by several nodes. They run in a transaction of their own,
    /// right after the write group's transaction committed (see `store_sql::commit`).
    fn announce_all(&self, messages: &[String]) -> Option<String> {
        let _ = messages;
        None
    }

    /// Whether a write group's derived Datastream times are written once, just before it
    /// commits, rather than by each job: where writers run side by side, each job's update
    /// would hold the Datastream's row lock until the commit and queue the other writers.
    /// The statement that asks the planner how many rows `sql` yields (its plan as JSON), if
    /// the database has a planner that estimates.
    fn explain(&self, sql: &str) -> Option<String> {
        let _ = sql;
        None
    }

    fn defers_derived_times(&self) -> bool {
        false
    }

    /// The first non-NULL of a result's columns (`number`, `string`, `boolean`, `json`), for a
    /// result compared without a known kind (e.g. with `null`).
    fn any_result(&self, number: &str, string: &str, boolean: &str, json: &str) -> String {
        format!("COALESCE({number}, {string}, {boolean}, {json})")
    }
}

/// The PostgreSQL channel of [`Dialect::announce`].
pub const ANNOUNCE_CHANNEL: &str = "thingbase_changes";

const HEX: &[u8; 16] = b"0123456789abcdef";

/// PostgreSQL 15+ with PostGIS. Instants stay integer microseconds; JSON columns are `json`
/// (stored text is returned as it was); spatial predicates are the `tb_*` functions of the
/// backend's schema, which wrap PostGIS and accept GeoJSON or WKT like SQLite's.
/// Appends `n` in decimal, without the formatting machinery.
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PostgresDialect;

impl PostgresDialect {
    fn timestamp(micros: &str) -> String {
        format!("(to_timestamp(({micros}) / 1000000.0) AT TIME ZONE 'UTC')")
    }
}

impl Dialect for PostgresDialect {
    fn push_placeholder(&self, out: &mut String, n: usize) {
        out.push('$');
        push_decimal(out, n);
    }

    fn id_list(&self, placeholder: &str, alias: &str) -> String {
        format!("unnest(CAST({placeholder} AS bigint[])) AS {alias}(value)")
    }

    fn json_value(&self, column: &str, path: &str, ty: JsonAs) -> String {
        let value = format!("(({column}) #> CAST({path} AS text[]))");
        let kind = format!("json_typeof({value})");
        let text = format!("(({column}) #>> CAST({path} AS text[]))");
        match ty {
            JsonAs::Any => text,
            JsonAs::Number => format!("(CASE WHEN {kind} = 'number' THEN CAST({text} AS double precision) END)"),
            JsonAs::Text => format!("(CASE WHEN {kind} = 'string' THEN {text} END)"),
            JsonAs::Boolean => format!("(CASE WHEN {kind} = 'boolean' THEN CAST({text} AS boolean) END)"),
        }
    }

    fn json_path(&self, keys: &[String]) -> String {
        // A text[] literal: every element quoted, backslashes and quotes escaped.
        let mut path = String::from("{");
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                path.push(',');
            }
            path.push('"');
            path.push_str(&key.replace('\\', "\\\\").replace('"', "\\\""));
            path.push('"');
        }
        path.push('}');
        path
    }

    fn date_part(&self, part: DatePart, micros: &str) -> String {
        let field = match part {
            DatePart::Year => "YEAR",
            DatePart::Month => "MONTH",
            DatePart::Day => "DAY",
            DatePart::Hour => "HOUR",
            DatePart::Minute => "MINUTE",
            DatePart::Second => "SECOND",
        };
        format!("CAST(floor(EXTRACT({field} FROM {})) AS bigint)", Self::timestamp(micros))
    }

    fn date_text(&self, micros: &str) -> String {
        format!("to_char({}, 'YYYY-MM-DD')", Self::timestamp(micros))
    }

    fn time_text(&self, micros: &str) -> String {
        format!("to_char({}, 'HH24:MI:SS')", Self::timestamp(micros))
    }

    fn geo_function(&self, name: &str, args: &[String]) -> String {
        format!("tb_{name}({})", args.join(", "))
    }

    fn position(&self, haystack: &str, needle: &str) -> String {
        format!("strpos({haystack}, {needle})")
    }

    fn text_to_micros(&self, text: &str) -> String {
        // `tb_micros` (in the schema) answers NULL for text that is not an instant.
        format!("tb_micros({text})")
    }

    fn modulo(&self, a: &str, b: &str) -> String {
        // `mod` has no double precision form; numeric keeps fractions and integers exact. A
        // zero divisor gives NULL, as division by zero does on SQLite.
        format!("mod(CAST({a} AS numeric), NULLIF(CAST({b} AS numeric), 0))")
    }

    fn any_result(&self, number: &str, string: &str, boolean: &str, json: &str) -> String {
        format!("COALESCE(CAST({number} AS text), {string}, CAST({boolean} AS text), CAST({json} AS text))")
    }

    fn after_load(&self, table: &str, key: &str) -> Option<String> {
        // Sequences owned by their column, or (observations) named after it.
        Some(format!(
            "SELECT setval(COALESCE(pg_get_serial_sequence('{table}', '{key}'), '{table}_{key}_seq'), \
             COALESCE((SELECT max({key}) FROM {table}), 0) + 1, false)"
        ))
    }

    fn key_share_lock(&self) -> Option<&'static str> {
        Some(" FOR KEY SHARE")
    }

    fn nulls_smallest(&self, descending: bool) -> &'static str {
        // PostgreSQL sorts NULLs as the largest value by default.
        if descending { " NULLS LAST" } else { " NULLS FIRST" }
    }

    fn update_lock(&self) -> Option<&'static str> {
        Some(" FOR NO KEY UPDATE")
    }

    fn claim_series(&self) -> Option<&'static str> {
        Some("SELECT pg_try_advisory_xact_lock(CAST($1 AS integer), CAST($2 AS integer))")
    }

    fn explain(&self, sql: &str) -> Option<String> {
        Some(format!("EXPLAIN (FORMAT JSON) {sql}"))
    }

    fn announce_all(&self, messages: &[String]) -> Option<String> {
        // A transaction that notifies holds a lock of the whole cluster from just before its
        // commit until the commit is flushed, so that notifications queue in commit order:
        // inside the write group's transaction it would make the writers of every node commit
        // one at a time. In a transaction of its own that does not wait for the flush (a
        // notification is not data: it does not outlive the listeners' connections anyway) it
        // holds the lock for no more than the queueing. Each message goes as hexadecimal
        // UTF-8, which no setting (`standard_conforming_strings`) reads otherwise.
        let mut text = String::from("SELECT set_config('synchronous_commit', 'off', true)");
        for message in messages {
            text.push_str(", pg_notify('");
            text.push_str(ANNOUNCE_CHANNEL);
            text.push_str("', convert_from(decode('");
            for byte in message.bytes() {
                text.push(char::from(HEX[usize::from(byte >> 4)]));
                text.push(char::from(HEX[usize::from(byte & 15)]));
            }
            text.push_str("', 'hex'), 'UTF8'))");
        }
        Some(text)
    }

    fn defers_derived_times(&self) -> bool {
        true
    }
}

/// SQLite 3.54 with JSON1 built in; geometry and rounding through functions the SQLite backend
/// registers on every connection (`tb_st_within`, `tb_floor`, `tb_mod`, ...).
#[derive(Clone, Copy, Debug, Default)]
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    fn push_placeholder(&self, out: &mut String, n: usize) {
        out.push('?');
        push_decimal(out, n);
    }

    fn id_list(&self, placeholder: &str, alias: &str) -> String {
        format!("json_each({placeholder}) {alias}")
    }

    fn json_value(&self, column: &str, path: &str, ty: JsonAs) -> String {
        let value = format!("json_extract({column}, {path})");
        let kind = format!("json_type({column}, {path})");
        match ty {
            JsonAs::Any => value,
            JsonAs::Number => format!("(CASE WHEN {kind} IN ('integer', 'real') THEN {value} END)"),
            JsonAs::Text => format!("(CASE WHEN {kind} = 'text' THEN {value} END)"),
            JsonAs::Boolean => format!("(CASE {kind} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"),
        }
    }

    fn json_path(&self, keys: &[String]) -> String {
        let mut path = String::from("$");
        for key in keys {
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
                path.push('[');
                path.push_str(key);
                path.push(']');
            } else {
                path.push_str(".\"");
                path.push_str(&key.replace('"', "\\\""));
                path.push('"');
            }
        }
        path
    }

    fn date_part(&self, part: DatePart, micros: &str) -> String {
        let format = match part {
            DatePart::Year => "%Y",
            DatePart::Month => "%m",
            DatePart::Day => "%d",
            DatePart::Hour => "%H",
            DatePart::Minute => "%M",
            DatePart::Second => "%S",
        };
        format!("CAST(strftime('{format}', ({micros}) / 1000000.0, 'unixepoch') AS INTEGER)")
    }

    fn date_text(&self, micros: &str) -> String {
        format!("strftime('%Y-%m-%d', ({micros}) / 1000000.0, 'unixepoch')")
    }

    fn time_text(&self, micros: &str) -> String {
        format!("strftime('%H:%M:%S', ({micros}) / 1000000.0, 'unixepoch')")
    }

    fn geo_function(&self, name: &str, args: &[String]) -> String {
        format!("tb_{name}({})", args.join(", "))
    }

    fn position(&self, haystack: &str, needle: &str) -> String {
        format!("instr({haystack}, {needle})")
    }

    fn text_to_micros(&self, text: &str) -> String {
        format!("CAST(unixepoch({text}, 'subsec') * 1000000 AS INTEGER)")
    }

    fn modulo(&self, a: &str, b: &str) -> String {
        // SQLite's `%` casts both operands to integers: `1.5 % 2` would be 1, not 1.5.
        format!("tb_mod({a}, {b})")
    }

    fn distinct(&self, a: &str, b: &str) -> String {
        format!("({a} IS NOT {b})")
    }

    fn floor(&self, x: &str) -> String {
        format!("tb_floor({x})")
    }

    fn ceiling(&self, x: &str) -> String {
        format!("tb_ceiling({x})")
    }

    fn boolean_literal(&self, value: bool) -> &'static str {
        if value { "1" } else { "0" }
    }

    fn least(&self) -> &'static str {
        "min"
    }

    fn greatest(&self) -> &'static str {
        "max"
    }
}
