//! How each property kind is laid out in storage columns. Backends decode rows in this order.

use model::{Property, PropertyKind};

/// A storage column of a property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column(pub String);

/// The storage columns of `property`, in row order.
///
/// Instants are integers (microseconds since the epoch); intervals are two of them (`_start`,
/// `_end`; for `InstantOrInterval` a NULL end means an instant); `result` is split by JSON type
/// into `_number`, `_string`, `_boolean` and `_json` so filters compare like with like; every
/// other kind is one column (JSON and GeoJSON as text).
pub fn columns(property: &Property) -> Vec<Column> {
    let base = property.column;
    match property.kind {
        PropertyKind::Interval | PropertyKind::InstantOrInterval => {
            vec![Column(format!("{base}_start")), Column(format!("{base}_end"))]
        }
        PropertyKind::Result => {
            ["number", "string", "boolean", "json"].iter().map(|suffix| Column(format!("{base}_{suffix}"))).collect()
        }
        _ => vec![Column(base.to_owned())],
    }
}
