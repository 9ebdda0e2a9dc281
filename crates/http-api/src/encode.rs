//! The SensorThings JSON of entities and collections, written straight into a byte buffer:
//! `@iot.selfLink`, `@iot.id`, properties, `@iot.navigationLink`s, expanded entities with their
//! `@iot.count` and `@iot.nextLink`, shaped by `$select` and `$expand`.

use std::fmt::Write as _;

use model::{EntityType, Property};
use odata::{Query, SelectItem};
use store::{Expanded, Row, Rows, Value};

/// Writes JSON for one service root URL (e.g. `http://host:8080/v1.1`).
pub struct Encoder<'a> {
    pub base: &'a str,
}

pub fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Real(r) => match serde_json::Number::from_f64(*r) {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        },
        Value::Text(s) => string(out, s),
        Value::Json(raw) => out.push_str(raw),
        Value::Instant(i) => {
            let _ = write!(out, "\"{i}\"");
        }
        Value::Interval(i) => {
            let _ = write!(out, "\"{i}\"");
        }
    }
}

impl Encoder<'_> {
    pub fn self_link(&self, entity: EntityType, id: model::Id) -> String {
        format!("{}/{}({id})", self.base, entity.set_name())
    }

    /// One entity object.
    pub fn entity(&self, out: &mut String, entity: EntityType, fields: &[&Property], row: &Row, query: &Query) {
        let all = query.select.is_none();
        let selected_id = query.select.as_ref().is_some_and(|s| s.iter().any(|i| matches!(i, SelectItem::Id)));
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        out.push('{');
        if all {
            sep(out);
            out.push_str("\"@iot.selfLink\":");
            string(out, &self.self_link(entity, row.id));
        }
        if all || selected_id {
            sep(out);
            let _ = write!(out, "\"@iot.id\":{}", row.id.0);
        }
        for (field, v) in fields.iter().zip(&row.values) {
            sep(out);
            string(out, field.name);
            out.push(':');
            value(out, v);
        }
        for nav in entity.navigations() {
            let selected = all
                || query
                    .select
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|i| matches!(i, SelectItem::Navigation(n) if n.name == nav.name)));
            if selected {
                sep(out);
                let _ = write!(out, "\"{}@iot.navigationLink\":", nav.name);
                string(out, &format!("{}/{}({})/{}", self.base, entity.set_name(), row.id, nav.name));
            }
        }
        for (item, expanded) in query.expand.iter().zip(&row.expanded) {
            let nav = item.navigation;
            match expanded {
                Expanded::One { fields, row: child } => {
                    sep(out);
                    let _ = write!(out, "\"{}\":", nav.name);
                    match child {
                        Some(child) => self.entity(out, nav.target, fields, child, &item.query),
                        None => out.push_str("null"),
                    }
                }
                Expanded::Many(rows) => {
                    if let Some(count) = rows.count {
                        sep(out);
                        let _ = write!(out, "\"{}@iot.count\":{count}", nav.name);
                    }
                    if rows.more
                        && let Some(link) =
                            self.expanded_next_link(entity, row.id, nav.name, &item.query, rows.rows.len())
                    {
                        sep(out);
                        let _ = write!(out, "\"{}@iot.nextLink\":", nav.name);
                        string(out, &link);
                    }
                    sep(out);
                    let _ = write!(out, "\"{}\":[", nav.name);
                    for (i, child) in rows.rows.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        self.entity(out, nav.target, &rows.fields, child, &item.query);
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
    }

    /// A next link for an expanded collection; only for expands without options that a link
    /// could not carry faithfully, which then simply have none.
    fn expanded_next_link(
        &self,
        entity: EntityType,
        id: model::Id,
        nav: &str,
        query: &Query,
        page: usize,
    ) -> Option<String> {
        let plain =
            query.filter.is_none() && query.select.is_none() && query.expand.is_empty() && query.order_by.is_empty();
        plain.then(|| {
            format!("{}/{}({id})/{nav}?$top={page}&$skip={}", self.base, entity.set_name(), query.skip + page as u64)
        })
    }

    /// A collection object with `value`, `@iot.count` and `@iot.nextLink`.
    pub fn collection(
        &self,
        out: &mut String,
        entity: EntityType,
        rows: &Rows,
        query: &Query,
        next_link: Option<&str>,
    ) {
        out.push('{');
        if let Some(count) = rows.count {
            let _ = write!(out, "\"@iot.count\":{count},");
        }
        if let Some(link) = next_link {
            out.push_str("\"@iot.nextLink\":");
            string(out, link);
            out.push(',');
        }
        out.push_str("\"value\":[");
        for (i, row) in rows.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self.entity(out, entity, &rows.fields, row, query);
        }
        out.push_str("]}");
    }

    /// `{"value": [{"@iot.selfLink": ...}, ...]}` for `$ref` on a collection.
    pub fn refs(&self, out: &mut String, entity: EntityType, rows: &Rows, next_link: Option<&str>) {
        out.push('{');
        if let Some(count) = rows.count {
            let _ = write!(out, "\"@iot.count\":{count},");
        }
        if let Some(link) = next_link {
            out.push_str("\"@iot.nextLink\":");
            string(out, link);
            out.push(',');
        }
        out.push_str("\"value\":[");
        for (i, row) in rows.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"@iot.selfLink\":");
            string(out, &self.self_link(entity, row.id));
            out.push('}');
        }
        out.push_str("]}");
    }
}
