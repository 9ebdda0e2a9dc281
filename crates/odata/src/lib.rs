//! The SensorThings URL language: resource paths and query options, parsed and bound to the
//! model into the IR of [`ir`]. This crate does no I/O and depends on nothing but `model`; it
//! knows neither HTTP nor SQL.
//!
//! [`parse_path`] takes the raw path below the service root, [`parse_query`] the raw query
//! string. Both percent-decode their input themselves (in query strings `+` is a space, as in
//! Java servlets and FROST-Server). Errors are [`ODataError`]s with a kind, the option they are
//! in and a 1-based character column inside that option's decoded value.
//!
//! [`query_options`] goes the other way: it writes a bound [`Query`] back as option text that
//! parses and binds to an equal `Query` (expressions alone through their `Display`).
//!
//! # Grammar
//!
//! Resource paths (a trailing `/` is ignored):
//!
//! ```text
//! path     = "/"? set key? ( "/" nav key? )* ( "/" property ( "/$value" )? | "/$ref" )?
//! key      = "(" digits ")"                    an i64 id; only on sets and to-many navigations
//! ```
//!
//! A navigation or property may only follow a single entity: a keyed segment or a to-one
//! navigation.
//!
//! Query options are `&`-separated `name=value` pairs; names starting with `$` are system
//! options, others are ignored. Each option may be given once.
//!
//! ```text
//! $filter       = expr                         must be boolean (or a JSON value)
//! $select       = name ( "," name )*
//! $expand       = item ( "," item )*
//! item          = name ( "/" name )* ( "(" option ( ";" option )* ")" )?
//! option        = "$filter=" expr | "$select=" ... | "$expand=" ... | "$orderby=" ...
//!               | "$top=" digits | "$skip=" digits | "$count=" ( "true" | "false" )
//! $orderby      = expr ( "asc" | "desc" )? ( "," expr ( "asc" | "desc" )? )*
//! $top, $skip   = digits
//! $count        = "true" | "false"
//! $resultFormat = "dataArray"
//!
//! expr     = expr "or" expr                    loosest
//!          | expr "and" expr
//!          | expr ( "eq" | "ne" ) expr
//!          | expr ( "gt" | "ge" | "lt" | "le" ) expr
//!          | expr ( "add" | "sub" ) expr
//!          | expr ( "mul" | "div" | "mod" ) expr
//!          | ( "not" | "-" ) expr              tightest; binary operators associate left
//!          | primary
//! primary  = "(" expr ")" | literal | function "(" ( expr ( "," expr )* )? ")" | member
//! member   = name ( "/" ( name | digits ) )*   e.g. Datastream/Thing/name, result/0, @iot.id
//! literal  = "null" | "true" | "false" | number | "'" ( char | "''" )* "'"
//!          | datetime ( "/" datetime )?        2024-01-01T00:00:00Z, with fraction or offset
//!          | date | time                      2024-01-01, 12:30:00 (bound as strings)
//!          | "duration'" iso-duration "'"      days, hours, minutes, seconds
//!          | ( "geography" | "geometry" ) "'" ( "SRID=" digits ";" )? wkt "'"
//! number   = "-"? digits ( "." digits )? ( ( "e" | "E" ) ( "+" | "-" )? digits )?
//! ```
//!
//! Keywords and function names are lowercase and case-sensitive. Spaces separate tokens.
//! As in OData, `not` binds tighter than comparisons: `not a eq b` is `(not a) eq b`, so
//! negated comparisons are written `not (a eq b)`. A run of `and`s (or of `or`s) is one chain;
//! a parenthesised chain is one operand of the chain around it (`(a or b) or c`).
//!
//! # Binding
//!
//! Names resolve against the entity type the options apply to (inside `$expand`, the
//! navigation's target). `id` and `@iot.id` are the id. A property of kind object, JSON or
//! result takes further segments as a path into its JSON value. Date literals (`2024-01-01`)
//! and times of day (`12:30:00`) bind as strings, to be compared with `date()` and `time()`.
//! Expressions are type-checked as [`ir::Type`] describes; a JSON value fits wherever a
//! string, number, boolean or time does, since its type is only known per row.
//!
//! # Limits
//!
//! [`Limits`] bounds the query length, the nesting of expressions (parentheses, `not`, `-`,
//! function calls and chains of binary operators all count, except that `and`/`or` chains are
//! built as balanced trees) and the nesting of `$expand`. Exceeding one is an
//! [`ErrorKind::Limit`] error; nothing in this crate recurses without such a bound.

mod bind;
mod error;
pub mod ir;
mod lexer;
mod parser;
mod path;
mod percent;
mod syntax;
mod write;

#[cfg(test)]
mod tests;

pub use error::{ErrorKind, ODataError};
pub use ir::*;

use model::EntityType;

/// Bounds on what a request may ask the parser for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How deeply expressions may nest.
    pub max_depth: usize,
    /// How deeply `$expand` may nest (`Datastreams/Observations` is 2).
    pub max_expand_depth: usize,
    /// The longest raw query string, in characters.
    pub max_length: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_depth: 64, max_expand_depth: 8, max_length: 65_536 }
    }
}

/// Parses a raw (percent-encoded) resource path below the service root, e.g.
/// `/Things(1)/Datastreams`. The service root itself (`""` or `"/"`) is an error: the caller
/// serves it.
pub fn parse_path(path: &str) -> Result<ResourcePath, ODataError> {
    path::parse(path)
}

/// Splits a raw query string (without `?`) into decoded name/value pairs, in order. Empty
/// pieces (`a&&b`) are skipped; a piece without `=` has an empty value.
pub fn split_query(raw_query: &str) -> Result<Vec<(String, String)>, ODataError> {
    let mut pairs = Vec::new();
    let mut offset = 0;
    for piece in raw_query.split('&') {
        if !piece.is_empty() {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            let value_offset = offset + name.chars().count() + 1;
            let name = percent::decode(name, true, ErrorKind::Syntax, offset)?;
            let value = percent::decode(value, true, ErrorKind::Syntax, value_offset)?;
            pairs.push((name, value));
        }
        offset += piece.chars().count() + 1;
    }
    Ok(pairs)
}

/// The system query options that ask for `query`, as decoded `(name, value)` pairs: with each
/// value percent-encoded and the pairs joined by `&`, they make a query string that
/// [`parse_query`] binds to an equal `Query` on the same entity type. The `$top` and `$skip` of
/// `query` itself are left out for the caller to set, as a next link moves them on; those inside
/// `$expand` are written.
pub fn query_options(query: &Query) -> Vec<(&'static str, String)> {
    write::options(query, false)
}

/// Parses and binds the system query options of a raw query string (without `?`) for a
/// request on `entity`.
pub fn parse_query(raw_query: &str, entity: EntityType, limits: &Limits) -> Result<Query, ODataError> {
    let length = raw_query.chars().count();
    if length > limits.max_length {
        let message = format!("the query is {length} characters long; at most {} are allowed", limits.max_length);
        return Err(ODataError::new(ErrorKind::Limit, message));
    }
    let mut query = Query::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in split_query(raw_query)? {
        if !name.starts_with('$') {
            continue;
        }
        if seen.contains(&name) {
            let message = format!("`{name}` is given more than once");
            return Err(ODataError::new(ErrorKind::Syntax, message).in_option(&name));
        }
        apply_option(&mut query, &name, &value, entity, limits).map_err(|e| e.in_option(&name))?;
        seen.push(name);
    }
    Ok(query)
}

fn apply_option(
    query: &mut Query,
    name: &str,
    value: &str,
    entity: EntityType,
    limits: &Limits,
) -> Result<(), ODataError> {
    match name {
        "$filter" => query.filter = Some(bind::filter(&parser::filter(value, limits)?, entity)?),
        "$select" => query.select = Some(bind::select(&parser::select(value, limits)?, entity)?),
        "$expand" => query.expand = bind::expand(&parser::expand(value, limits)?, entity)?,
        "$orderby" => query.order_by = bind::order_by(&parser::order_by(value, limits)?, entity)?,
        "$top" => query.top = Some(parser::integer(value, limits)?),
        "$skip" => query.skip = parser::integer(value, limits)?,
        "$count" => query.count = Some(parser::boolean(value, limits)?),
        "$resultFormat" if value == "dataArray" => query.result_format = ResultFormat::DataArray,
        "$resultFormat" => {
            let message = format!("the result format `{value}` is not supported; only `dataArray` is");
            return Err(ODataError::new(ErrorKind::Unsupported, message).at(1));
        }
        _ => {
            let message = format!("the query option `{name}` is not supported");
            return Err(ODataError::new(ErrorKind::Unsupported, message));
        }
    }
    Ok(())
}
