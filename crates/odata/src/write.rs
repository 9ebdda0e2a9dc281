//! Writing the IR back as query-option text, the inverse of parsing and binding: links such as
//! the `@iot.nextLink` of an expanded collection must carry the options they were asked with.
//!
//! What is written parses and binds to an equal IR. Operands are parenthesised by the binding
//! powers the parser uses (a parenthesised `and`/`or` stays one operand there, so a balanced
//! chain keeps its shape), and each literal is written in the one form that reads back as the
//! same value: strings quoted with `''`, numbers in Rust's shortest exact form, date-times in
//! RFC 3339, durations in days, hours, minutes and seconds, geometries as WKT.

use std::fmt::{self, Write as _};

use crate::bind::{function_name, operator};
use crate::ir::{BinaryOp, Expand, Expr, Literal, Member, MemberPath, OrderBy, Query, ResultFormat, SelectItem};
use crate::parser::{PREFIX_POWER, power};

/// The options of `query` as `(name, value)` pairs, without its own `$top` and `$skip` unless
/// `paging` is set.
pub(crate) fn options(query: &Query, paging: bool) -> Vec<(&'static str, String)> {
    let mut options = Vec::new();
    if let Some(filter) = &query.filter {
        options.push(("$filter", filter.to_string()));
    }
    if let Some(select) = &query.select {
        options.push(("$select", select_list(select)));
    }
    if !query.expand.is_empty() {
        options.push(("$expand", expand_list(&query.expand)));
    }
    if !query.order_by.is_empty() {
        options.push(("$orderby", order_list(&query.order_by)));
    }
    if paging {
        if let Some(top) = query.top {
            options.push(("$top", top.to_string()));
        }
        if query.skip != 0 {
            options.push(("$skip", query.skip.to_string()));
        }
    }
    if let Some(count) = query.count {
        options.push(("$count", count.to_string()));
    }
    if query.result_format == ResultFormat::DataArray {
        options.push(("$resultFormat", "dataArray".to_owned()));
    }
    options
}

fn select_list(items: &[SelectItem]) -> String {
    let names: Vec<&str> = items
        .iter()
        .map(|item| match item {
            SelectItem::Id => "id",
            SelectItem::Property(property) => property.name,
            SelectItem::Navigation(navigation) => navigation.name,
        })
        .collect();
    names.join(",")
}

/// `Datastreams($filter=…;$top=2),Locations`: every option of a nested query, paging included,
/// inside the parentheses.
fn expand_list(expands: &[Expand]) -> String {
    let mut out = String::new();
    for (i, expand) in expands.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(expand.navigation.name);
        let nested = options(&expand.query, true);
        if !nested.is_empty() {
            let nested: Vec<String> = nested.into_iter().map(|(name, value)| format!("{name}={value}")).collect();
            let _ = write!(out, "({})", nested.join(";"));
        }
    }
    out
}

fn order_list(order_by: &[OrderBy]) -> String {
    let items: Vec<String> = order_by
        .iter()
        .map(|item| if item.descending { format!("{} desc", item.expr) } else { item.expr.to_string() })
        .collect();
    items.join(",")
}

/// How tightly an expression holds together when it is an operand; literals, members and calls
/// never need parentheses.
fn binding_power(expr: &Expr) -> u8 {
    match expr {
        Expr::Binary { op, .. } => power(*op),
        Expr::Not(_) | Expr::Negate(_) => PREFIX_POWER,
        Expr::Literal(_) | Expr::Member(_) | Expr::Call { .. } => u8::MAX,
    }
}

/// Writes `operand`, in parentheses when it would otherwise not parse back as one operand.
fn operand(f: &mut fmt::Formatter<'_>, operand: &Expr, parenthesize: bool) -> fmt::Result {
    if parenthesize { write!(f, "({operand})") } else { write!(f, "{operand}") }
}

/// The OData text of an expression, e.g. `(name eq 'a' or id gt 1) and not (result eq null)`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(literal) => write!(f, "{literal}"),
            Expr::Member(path) => write!(f, "{path}"),
            Expr::Not(inner) => {
                f.write_str("not ")?;
                operand(f, inner, binding_power(inner) < PREFIX_POWER)
            }
            // The space keeps `- 5` (a negation) apart from the literal `-5`.
            Expr::Negate(inner) => {
                f.write_str("- ")?;
                operand(f, inner, binding_power(inner) < PREFIX_POWER)
            }
            Expr::Binary { op, left, right } => {
                let power = power(*op);
                // Operators associate left, so a left operand of the same power needs no
                // parentheses, except in an `and`/`or` chain, which would take it in whole.
                let chain = matches!(op, BinaryOp::And | BinaryOp::Or);
                let left_power = binding_power(left);
                operand(f, left, left_power < power || (chain && left_power == power))?;
                write!(f, " {} ", operator(*op))?;
                operand(f, right, binding_power(right) <= power)
            }
            Expr::Call { function, args } => {
                write!(f, "{}(", function_name(*function))?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// `Datastream/Thing/name`, `id`, `properties/owner/name`.
impl fmt::Display for MemberPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for hop in &self.hops {
            write!(f, "{}/", hop.name)?;
        }
        match &self.member {
            Member::Id => f.write_str("id"),
            Member::Property(property) => f.write_str(property.name),
            Member::Json { property, path } => {
                f.write_str(property.name)?;
                path.iter().try_for_each(|segment| write!(f, "/{segment}"))
            }
        }
    }
}

/// A literal as the `$filter` syntax writes it.
impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Boolean(value) => write!(f, "{value}"),
            Literal::Integer(value) => write!(f, "{value}"),
            Literal::Number(value) => {
                // Debug is the shortest text that reads back as the same `f64`; it always has a
                // `.` or an exponent, which keeps the literal a number rather than an integer.
                let text = format!("{value:?}");
                f.write_str(&text)?;
                if text.contains(['.', 'e', 'E']) { Ok(()) } else { f.write_str(".0") }
            }
            Literal::String(text) => quoted(f, text),
            Literal::DateTime(instant) => write!(f, "{instant}"),
            Literal::Interval(interval) => write!(f, "{}/{}", interval.start(), interval.end()),
            Literal::Duration(micros) => {
                f.write_str("duration")?;
                quoted(f, &duration(*micros))
            }
            Literal::Geometry(geometry) => {
                f.write_str("geography")?;
                quoted(f, &geometry.to_wkt())
            }
        }
    }
}

/// `'it''s'`.
fn quoted(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    write!(f, "'{}'", text.replace('\'', "''"))
}

/// An ISO 8601 duration such as `P1DT2H3M4.5S` or `-PT0.000001S`. Only the seconds carry a
/// fraction, so the parser's floating-point sum comes back to the same microseconds.
fn duration(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let total = micros.unsigned_abs();
    let (seconds, fraction) = (total / 1_000_000, total % 1_000_000);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hours, minutes, seconds) = (rest / 3_600, rest % 3_600 / 60, rest % 60);
    let mut out = format!("{sign}P");
    if days > 0 {
        let _ = write!(out, "{days}D");
    }
    if rest == 0 && fraction == 0 && days > 0 {
        return out;
    }
    out.push('T');
    if hours > 0 {
        let _ = write!(out, "{hours}H");
    }
    if minutes > 0 {
        let _ = write!(out, "{minutes}M");
    }
    if seconds > 0 || fraction > 0 || (hours == 0 && minutes == 0) {
        let _ = write!(out, "{seconds}");
        if fraction > 0 {
            let digits = format!("{fraction:06}");
            let _ = write!(out, ".{}", digits.trim_end_matches('0'));
        }
        out.push('S');
    }
    out
}
