//! `thingbase export` and `thingbase import`: every stored table (`store::dump::TABLES`), row by
//! row, as JSON Lines, so that data moves between the embedded SQLite file and PostgreSQL (or
//! into a backup) without loss: ids, derived fields, users, tokens (hashed) and the audit log
//! included.
//!
//! The format (version 1), one JSON value per line:
//!
//! ```text
//! {"format":"thingbase-export","version":1,"exported_at":"2026-12-01T12:00:00Z"}
//! {"table":"things","columns":["id","name","description","properties","project_id"]}
//! [1,"Weather station","On the roof","{\"floor\":3}",1]
//! ...                                  (each table in load order, its rows in key order)
//! {"end":true,"tables":21,"rows":12345}
//! ```
//!
//! Integers, numbers and booleans are JSON numbers and booleans; text is a string; JSON columns
//! are strings holding the stored JSON text byte for byte; NULL is `null`. The last line makes
//! a cut-off file detectable. An export reads one snapshot of the database (one read
//! transaction); an import runs as one transaction into an empty database, so it loads all or
//! nothing.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context, bail, ensure};
use serde_json::{Value as Json, json};
use store::dump::{ColumnKind, TABLES, Table};
use store::{Store, StoreError, Value};

const FORMAT: &str = "thingbase-export";
const VERSION: u64 = 1;
/// Rows read per statement and loaded per statement batch.
const PAGE: usize = 2_000;

/// What an export or import moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub tables: usize,
    pub rows: u64,
}

fn cell_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => json!(n),
        Value::Real(r) => serde_json::Number::from_f64(*r).map_or(Json::Null, Json::Number),
        Value::Text(s) | Value::Json(s) => Json::String(s.clone()),
        Value::Instant(i) => json!(i.micros()),
        Value::Interval(i) => json!(i.start().micros()),
    }
}

fn cell_value(json: &Json, kind: ColumnKind, table: &str, column: &str) -> anyhow::Result<Value> {
    let wrong = || anyhow::anyhow!("{table}.{column}: {json} is not a {kind:?} value");
    Ok(match (json, kind) {
        (Json::Null, _) => Value::Null,
        (Json::Number(n), ColumnKind::Integer) => Value::Integer(n.as_i64().ok_or_else(wrong)?),
        (Json::Number(n), ColumnKind::Number) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or_else(wrong)?),
        },
        (Json::String(s), ColumnKind::Text) => Value::Text(s.clone()),
        (Json::String(s), ColumnKind::Json) => {
            serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|_| wrong())?;
            Value::Json(s.clone())
        }
        (Json::Bool(b), ColumnKind::Boolean) => Value::Boolean(*b),
        _ => return Err(wrong()),
    })
}

/// Writes every table of `store` to `out`, from one snapshot.
pub fn export(store: &Arc<dyn Store>, out: &mut dyn Write) -> anyhow::Result<Moved> {
    let (lines, received) = mpsc::sync_channel::<Result<String, StoreError>>(64);
    store.read(
        odata::Visibility::All,
        Box::new(move |reader| {
            for table in TABLES {
                let header = json!({"table": table.name, "columns": table.column_names().collect::<Vec<_>>()});
                if lines.send(Ok(header.to_string())).is_err() {
                    return;
                }
                let mut after: Option<Vec<i64>> = None;
                loop {
                    let rows = match reader.dump_rows(table, after.as_deref(), PAGE) {
                        Ok(rows) => rows,
                        Err(e) => {
                            let _ = lines.send(Err(e));
                            return;
                        }
                    };
                    for row in &rows {
                        let cells: Vec<Json> = row.iter().map(cell_json).collect();
                        if lines.send(Ok(Json::Array(cells).to_string())).is_err() {
                            return;
                        }
                    }
                    match rows.last() {
                        Some(last) if rows.len() == PAGE => after = Some(key_of(table, last)),
                        _ => break,
                    }
                }
            }
        }),
    );
    let started = jiff::Timestamp::now();
    writeln!(out, "{}", json!({"format": FORMAT, "version": VERSION, "exported_at": started.to_string()}))?;
    let mut moved = Moved { tables: 0, rows: 0 };
    for line in received {
        let line = line.context("reading the database")?;
        if line.starts_with('{') {
            moved.tables += 1;
        } else {
            moved.rows += 1;
        }
        writeln!(out, "{line}")?;
    }
    ensure!(moved.tables == TABLES.len(), "the export stopped after {} of {} tables", moved.tables, TABLES.len());
    writeln!(out, "{}", json!({"end": true, "tables": moved.tables, "rows": moved.rows}))?;
    out.flush()?;
    Ok(moved)
}

/// The key of `row` (a dumped row of `table`).
fn key_of(table: &Table, row: &[Value]) -> Vec<i64> {
    table
        .key
        .iter()
        .map(|key| {
            let i = table.column_names().position(|c| c == *key).unwrap_or(0);
            match row.get(i) {
                Some(Value::Integer(n)) => *n,
                _ => 0,
            }
        })
        .collect()
}

/// What the import job is handed, in file order.
enum Load {
    Rows(&'static Table, Vec<Vec<Value>>),
    Finished(&'static Table),
    /// The file was not what it should be: undo everything.
    Abort,
}

/// Loads an export into `store`, which must be empty (freshly created: no entities, users or
/// audit entries, only the default project). One transaction: all or nothing.
pub fn import(store: &Arc<dyn Store>, input: &mut dyn BufRead) -> anyhow::Result<Moved> {
    ensure_empty(store)?;
    let mut lines = input.lines();
    let header: Json = serde_json::from_str(&lines.next().context("an empty file")??).context("the first line")?;
    ensure!(header["format"] == FORMAT, "not a Thingbase export (no \"format\": \"{FORMAT}\" on its first line)");
    ensure!(
        header["version"] == VERSION,
        "an export of format version {}; this Thingbase reads {VERSION}",
        header["version"]
    );

    let (batches, received) = mpsc::sync_channel::<Load>(4);
    let (done_tx, done_rx) = mpsc::channel::<Result<(), StoreError>>();
    store.write(
        odata::Visibility::All,
        Box::new(move |writer| {
            if let Some(projects) = store::dump::table("projects") {
                writer.empty_table(projects)?;
            }
            for load in received {
                match load {
                    Load::Rows(table, rows) => writer.load_rows(table, &rows)?,
                    Load::Finished(table) => writer.finish_load(table)?,
                    Load::Abort => return Err(StoreError::Rejected("the import stopped".into())),
                }
            }
            Ok(())
        }),
        Box::new(move |outcome| {
            let _ = done_tx.send(outcome);
        }),
    );
    let fed = feed(&mut lines, &batches);
    // Closing the channel ends the job; a failed feed makes it fail too, so nothing is kept.
    if fed.is_err() {
        let _ = batches.send(Load::Abort);
    }
    drop(batches);
    let outcome = done_rx.recv().context("the import job was dropped")?;
    let moved = fed?;
    outcome.context("loading the rows")?;
    Ok(moved)
}

fn feed(
    lines: &mut dyn Iterator<Item = std::io::Result<String>>,
    batches: &mpsc::SyncSender<Load>,
) -> anyhow::Result<Moved> {
    let mut moved = Moved { tables: 0, rows: 0 };
    let mut current: Option<(&'static Table, Vec<usize>)> = None;
    let mut batch: Vec<Vec<Value>> = Vec::new();
    let send = |load: Load| batches.send(load).map_err(|_| anyhow::anyhow!("the database stopped the import"));
    for (n, line) in lines.enumerate() {
        let number = n + 2;
        let line = line?;
        let value: Json = serde_json::from_str(&line).with_context(|| format!("line {number} is not JSON"))?;
        match value {
            Json::Array(cells) => {
                let Some((table, order)) = &current else { bail!("line {number}: a row before any table") };
                ensure!(
                    cells.len() == order.len(),
                    "line {number}: {} values for {} columns",
                    cells.len(),
                    order.len()
                );
                let mut row = vec![Value::Null; table.columns.len()];
                for (cell, &i) in cells.iter().zip(order) {
                    let (column, kind) = table.columns[i];
                    row[i] = cell_value(cell, kind, table.name, column).with_context(|| format!("line {number}"))?;
                }
                batch.push(row);
                moved.rows += 1;
                if batch.len() == PAGE {
                    send(Load::Rows(table, std::mem::take(&mut batch)))?;
                }
            }
            Json::Object(object) if object.get("end") == Some(&Json::Bool(true)) => {
                if let Some((table, _)) = current.take() {
                    if !batch.is_empty() {
                        send(Load::Rows(table, std::mem::take(&mut batch)))?;
                    }
                    send(Load::Finished(table))?;
                }
                let rows = object.get("rows").and_then(Json::as_u64);
                ensure!(rows == Some(moved.rows), "the file says {rows:?} rows, it holds {}", moved.rows);
                return Ok(moved);
            }
            Json::Object(object) => {
                let name =
                    object.get("table").and_then(Json::as_str).with_context(|| format!("line {number}: no table"))?;
                let table =
                    store::dump::table(name).with_context(|| format!("line {number}: no table `{name}` here"))?;
                if let Some((previous, _)) = current.take() {
                    if !batch.is_empty() {
                        send(Load::Rows(previous, std::mem::take(&mut batch)))?;
                    }
                    send(Load::Finished(previous))?;
                }
                // Columns may come in any order; every column of the table must be there.
                let columns: Vec<&str> = object
                    .get("columns")
                    .and_then(Json::as_array)
                    .map(|c| c.iter().filter_map(Json::as_str).collect())
                    .unwrap_or_default();
                let order: Vec<usize> = columns
                    .iter()
                    .map(|c| table.column_names().position(|known| known == *c))
                    .collect::<Option<_>>()
                    .with_context(|| format!("line {number}: columns {columns:?} are not those of {name}"))?;
                ensure!(order.len() == table.columns.len(), "line {number}: {name} needs all its columns");
                current = Some((table, order));
                moved.tables += 1;
            }
            _ => bail!("line {number}: neither a table, a row nor the end"),
        }
    }
    bail!("the file ends before its last line: cut off?")
}

/// Fails unless `store` holds nothing but the default project.
fn ensure_empty(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    store.read(
        odata::Visibility::All,
        Box::new(move |reader| {
            let mut found = Vec::new();
            for table in TABLES {
                match reader.dump_rows(table, None, 2) {
                    Ok(rows) if table.name == "projects" => {
                        let only_default =
                            rows.len() <= 1 && rows.first().is_none_or(|r| r.first() == Some(&Value::Integer(1)));
                        if !only_default {
                            found.push(table.name);
                        }
                    }
                    Ok(rows) if !rows.is_empty() => found.push(table.name),
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(found));
        }),
    );
    let found = rx.recv().context("the check was dropped")?.context("reading the database")?;
    ensure!(found.is_empty(), "the database is not empty (it has {}); import into a new one", found.join(", "));
    Ok(())
}
