//! The SensorThings JSON of entities and collections, written straight into a byte buffer:
//! `@iot.selfLink`, `@iot.id`, properties, `@iot.navigationLink`s, expanded entities with their
//! `@iot.count` and `@iot.nextLink`, shaped by `$select` and `$expand`.

use std::fmt::Write as _;

use model::{EntityType, Property};
use odata::{Query, SelectItem};
use store::{Expanded, Row, Rows, Value};

use crate::url;

/// Opens a collection object: `{"@iot.count": n, "@iot.nextLink": "...", "value":[`, with the
/// annotations that are known.
pub fn open_collection(out: &mut String, count: Option<u64>, estimated: bool, next_link: Option<&str>) {
    out.push('{');
    if let Some(count) = count {
        out.push_str("\"@iot.count\":");
        out.push_str(itoa::Buffer::new().format(count));
        out.push(',');
        if estimated {
            // Counting exactly would have taken too long (docs/timeseries.md).
            out.push_str("\"@thingbase.countEstimated\":true,");
        }
    }
    if let Some(link) = next_link {
        out.push_str("\"@iot.nextLink\":");
        string(out, link);
        out.push(',');
    }
    out.push_str("\"value\":[");
}

/// Writes JSON for one service root URL (e.g. `http://host:8080/v1.1`).
pub struct Encoder<'a> {
    pub base: &'a str,
}

pub fn string(out: &mut String, text: &str) {
    out.push('"');
    escaped(out, text);
    out.push('"');
}

/// Appends `text` JSON-escaped, copying runs that need no escape in one go.
fn escaped(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    // Most texts (links, names) need no escape: one pass that compiles to vector compares.
    let plain = !bytes.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if plain {
        out.push_str(text);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
}

pub fn value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(itoa::Buffer::new().format(*i)),
        // The same shortest round-trip text serde_json writes (`1.0` stays `1.0`).
        Value::Real(r) if r.is_finite() => out.push_str(ryu::Buffer::new().format_finite(*r)),
        Value::Real(_) => out.push_str("null"),
        Value::Text(s) => string(out, s),
        Value::Json(raw) => out.push_str(raw),
        Value::Instant(i) => {
            out.push('"');
            i.write_rfc3339(out);
            out.push('"');
        }
        Value::Interval(i) => {
            out.push('"');
            i.start().write_rfc3339(out);
            out.push('/');
            i.end().write_rfc3339(out);
            out.push('"');
        }
    }
}

impl Encoder<'_> {
    /// Writes `"<base>/<Set>(<id>)[/<nav>]"` as a JSON string without building it first.
    fn link(&self, out: &mut String, entity: EntityType, id: model::Id, nav: Option<&str>) {
        out.push('"');
        escaped(out, self.base);
        out.push('/');
        out.push_str(entity.set_name());
        out.push('(');
        out.push_str(itoa::Buffer::new().format(id.0));
        out.push(')');
        if let Some(nav) = nav {
            out.push('/');
            out.push_str(nav);
        }
        out.push('"');
    }

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
            self.link(out, entity, row.id, None);
        }
        if all || selected_id {
            sep(out);
            out.push_str("\"@iot.id\":");
            out.push_str(itoa::Buffer::new().format(row.id.0));
        }
        for (field, v) in fields.iter().zip(&row.values) {
            sep(out);
            // Property names are the schema's ASCII identifiers: nothing to escape.
            out.push('"');
            out.push_str(field.name);
            out.push_str("\":");
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
                out.push('"');
                out.push_str(nav.name);
                out.push_str("@iot.navigationLink\":");
                self.link(out, entity, row.id, Some(nav.name));
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

    /// The next link of an expanded collection: the navigation from its parent, with the
    /// expand's own options written back (`odata::query_options`) and `$skip` moved on by the
    /// page, e.g. `.../Things(1)/Datastreams?$filter=...&$orderby=name&$top=2&$skip=2`.
    fn expanded_next_link(
        &self,
        entity: EntityType,
        id: model::Id,
        nav: &str,
        query: &Query,
        page: usize,
    ) -> Option<String> {
        let options: Vec<(String, String)> =
            odata::query_options(query).into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        let next = url::next_query(&options, page as u64, query.skip)?;
        Some(format!("{}/{}({id})/{nav}?{next}", self.base, entity.set_name()))
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
        open_collection(out, rows.count, rows.estimated, next_link);
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
        open_collection(out, rows.count, rows.estimated, next_link);
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
