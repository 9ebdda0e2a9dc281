//! Conversions between `store::Value`s and SQLite values, by property kind, in the column
//! layout of `sql::columns`.

use model::{Instant, Interval, Property, PropertyKind};
use rusqlite::types::{Value as SqlValue, ValueRef};
use store::Value;

/// The SQLite values of `value` for the columns of `property`.
pub fn bind(property: &Property, value: &Value, out: &mut Vec<SqlValue>) {
    match property.kind {
        PropertyKind::Interval | PropertyKind::InstantOrInterval => match value {
            Value::Instant(i) => out.extend([SqlValue::Integer(i.micros()), SqlValue::Null]),
            Value::Interval(i) => {
                out.extend([SqlValue::Integer(i.start().micros()), SqlValue::Integer(i.end().micros())])
            }
            _ => out.extend([SqlValue::Null, SqlValue::Null]),
        },
        PropertyKind::Result => {
            let mut cells = [SqlValue::Null, SqlValue::Null, SqlValue::Null, SqlValue::Null];
            match value {
                Value::Integer(i) => cells[0] = SqlValue::Integer(*i),
                Value::Real(r) => cells[0] = SqlValue::Real(*r),
                Value::Text(s) => cells[1] = SqlValue::Text(s.clone()),
                Value::Boolean(b) => cells[2] = SqlValue::Integer(i64::from(*b)),
                Value::Json(j) => cells[3] = SqlValue::Text(j.clone()),
                _ => {}
            }
            out.extend(cells);
        }
        _ => out.push(scalar(value)),
    }
}

fn scalar(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Boolean(b) => SqlValue::Integer(i64::from(*b)),
        Value::Integer(i) => SqlValue::Integer(*i),
        Value::Real(r) => SqlValue::Real(*r),
        Value::Text(s) | Value::Json(s) => SqlValue::Text(s.clone()),
        Value::Instant(i) => SqlValue::Integer(i.micros()),
        Value::Interval(i) => SqlValue::Integer(i.start().micros()),
    }
}

/// Reads the value of `property` from `row`, starting at column `at`; returns it and the next
/// column.
pub fn decode(property: &Property, row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(Value, usize)> {
    let int = |i: usize| -> rusqlite::Result<Option<i64>> { row.get(i) };
    Ok(match property.kind {
        PropertyKind::Interval | PropertyKind::InstantOrInterval => {
            let value = match (int(at)?, int(at + 1)?) {
                (Some(start), None) => Value::Instant(Instant::from_micros(start)),
                (Some(start), Some(end)) => Interval::new(Instant::from_micros(start), Instant::from_micros(end))
                    .map(Value::Interval)
                    .unwrap_or(Value::Instant(Instant::from_micros(start))),
                _ => Value::Null,
            };
            (value, at + 2)
        }
        PropertyKind::Result => {
            let value = match row.get_ref(at)? {
                ValueRef::Integer(i) => Value::Integer(i),
                ValueRef::Real(r) => Value::Real(r),
                _ => match (row.get::<_, Option<String>>(at + 1)?, int(at + 2)?, row.get::<_, Option<String>>(at + 3)?)
                {
                    (Some(s), _, _) => Value::Text(s),
                    (_, Some(b), _) => Value::Boolean(b != 0),
                    (_, _, Some(j)) => Value::Json(j),
                    _ => Value::Null,
                },
            };
            (value, at + 4)
        }
        PropertyKind::Instant => {
            (int(at)?.map(|m| Value::Instant(Instant::from_micros(m))).unwrap_or(Value::Null), at + 1)
        }
        PropertyKind::Text => (row.get::<_, Option<String>>(at)?.map(Value::Text).unwrap_or(Value::Null), at + 1),
        PropertyKind::Object | PropertyKind::Json | PropertyKind::Geometry => {
            (row.get::<_, Option<String>>(at)?.map(Value::Json).unwrap_or(Value::Null), at + 1)
        }
    })
}

/// The SQLite value of a compiler parameter.
pub fn param(param: &sql::Param) -> SqlValue {
    match param {
        sql::Param::Null => SqlValue::Null,
        sql::Param::Integer(i) => SqlValue::Integer(*i),
        sql::Param::Real(r) => SqlValue::Real(*r),
        sql::Param::Text(s) => SqlValue::Text(s.clone()),
        sql::Param::IdList(ids) => {
            let mut list = String::with_capacity(ids.len() * 8 + 2);
            list.push('[');
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                list.push_str(&id.to_string());
            }
            list.push(']');
            SqlValue::Text(list)
        }
    }
}
