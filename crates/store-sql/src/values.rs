//! Conversions between `store::Value`s and bound parameters or result cells, by property
//! kind, in the column layout of `sql::columns`.

use model::{Instant, Interval, Property, PropertyKind};
use sql::Param;
use store::{StoreError, Value};

use crate::{Number, SqlRow};

/// The parameters of `value` for the columns of `property`.
pub fn bind(property: &Property, value: &Value, out: &mut Vec<Param>) {
    match property.kind {
        PropertyKind::Interval | PropertyKind::InstantOrInterval => match value {
            Value::Instant(i) => out.extend([Param::Integer(i.micros()), Param::Null]),
            Value::Interval(i) => out.extend([Param::Integer(i.start().micros()), Param::Integer(i.end().micros())]),
            _ => out.extend([Param::Null, Param::Null]),
        },
        PropertyKind::Result => {
            let mut cells = [Param::Null, Param::Null, Param::Null, Param::Null];
            match value {
                Value::Integer(i) => cells[0] = Param::Integer(*i),
                Value::Real(r) => cells[0] = Param::Real(*r),
                Value::Text(s) => cells[1] = Param::Text(s.clone()),
                Value::Boolean(b) => cells[2] = Param::Boolean(*b),
                Value::Json(j) => cells[3] = Param::Json(j.clone()),
                _ => {}
            }
            out.extend(cells);
        }
        PropertyKind::Object | PropertyKind::Json | PropertyKind::Geometry => out.push(match value {
            Value::Null => Param::Null,
            Value::Json(s) | Value::Text(s) => Param::Json(s.clone()),
            other => scalar(other),
        }),
        _ => out.push(scalar(value)),
    }
}

fn scalar(value: &Value) -> Param {
    match value {
        Value::Null => Param::Null,
        Value::Boolean(b) => Param::Boolean(*b),
        Value::Integer(i) => Param::Integer(*i),
        Value::Real(r) => Param::Real(*r),
        Value::Text(s) => Param::Text(s.clone()),
        Value::Json(s) => Param::Json(s.clone()),
        Value::Instant(i) => Param::Integer(i.micros()),
        Value::Interval(i) => Param::Integer(i.start().micros()),
    }
}

/// Reads the value of `property` from `row`, starting at column `at`; returns it and the next
/// column.
pub fn decode(property: &Property, row: &dyn SqlRow, at: usize) -> Result<(Value, usize), StoreError> {
    Ok(match property.kind {
        PropertyKind::Interval | PropertyKind::InstantOrInterval => {
            let value = match (row.integer(at)?, row.integer(at + 1)?) {
                (Some(start), None) => Value::Instant(Instant::from_micros(start)),
                (Some(start), Some(end)) => Interval::new(Instant::from_micros(start), Instant::from_micros(end))
                    .map(Value::Interval)
                    .unwrap_or(Value::Instant(Instant::from_micros(start))),
                _ => Value::Null,
            };
            (value, at + 2)
        }
        PropertyKind::Result => {
            let value = match row.number(at)? {
                Some(Number::Integer(i)) => Value::Integer(i),
                Some(Number::Real(r)) => Value::Real(r),
                None => match (row.text(at + 1)?, row.boolean(at + 2)?, row.json(at + 3)?) {
                    (Some(s), _, _) => Value::Text(s),
                    (_, Some(b), _) => Value::Boolean(b),
                    (_, _, Some(j)) => Value::Json(j),
                    _ => Value::Null,
                },
            };
            (value, at + 4)
        }
        PropertyKind::Instant => {
            (row.integer(at)?.map(|m| Value::Instant(Instant::from_micros(m))).unwrap_or(Value::Null), at + 1)
        }
        PropertyKind::Text => (row.text(at)?.map(Value::Text).unwrap_or(Value::Null), at + 1),
        PropertyKind::Object | PropertyKind::Json | PropertyKind::Geometry => {
            (row.json(at)?.map(Value::Json).unwrap_or(Value::Null), at + 1)
        }
    })
}
