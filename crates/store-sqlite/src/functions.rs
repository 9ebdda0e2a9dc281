//! SQL functions registered on every connection: the spatial predicates and measures of the
//! SensorThings filter language (over GeoJSON or WKT text, computed with `geo` through
//! `model::Geometry`), and floor/ceiling, which SQLite builds lack by default, and a modulo
//! that keeps fractions (SQLite's `%` truncates both operands to integers first).

use model::Geometry;
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

type Predicate = fn(&Geometry, &Geometry) -> bool;

const PREDICATES: [(&str, Predicate); 8] = [
    ("tb_st_equals", Geometry::equals),
    ("tb_st_disjoint", Geometry::disjoint),
    ("tb_st_touches", Geometry::touches),
    ("tb_st_within", Geometry::within),
    ("tb_st_overlaps", Geometry::overlaps),
    ("tb_st_crosses", Geometry::crosses),
    ("tb_st_intersects", Geometry::intersects),
    ("tb_st_contains", Geometry::contains),
];

pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for (name, predicate) in PREDICATES {
        conn.create_scalar_function(name, 2, flags, move |ctx| {
            Ok(match (geometry(ctx, 0), geometry(ctx, 1)) {
                (Some(a), Some(b)) => Some(predicate(&a, &b)),
                _ => None,
            })
        })?;
    }
    conn.create_scalar_function("tb_st_relate", 3, flags, |ctx| {
        let pattern: Option<String> = ctx.get(2).ok();
        Ok(match (geometry(ctx, 0), geometry(ctx, 1), pattern) {
            (Some(a), Some(b), Some(p)) => a.relate(&b, &p).ok(),
            _ => None,
        })
    })?;
    conn.create_scalar_function("tb_geo_distance", 2, flags, |ctx| {
        Ok(match (geometry(ctx, 0), geometry(ctx, 1)) {
            (Some(a), Some(b)) => Some(a.distance(&b)),
            _ => None,
        })
    })?;
    conn.create_scalar_function("tb_geo_length", 1, flags, |ctx| Ok(geometry(ctx, 0).map(|g| g.length())))?;
    conn.create_scalar_function("tb_floor", 1, flags, |ctx| Ok(number(ctx, 0).map(f64::floor)))?;
    conn.create_scalar_function("tb_ceiling", 1, flags, |ctx| Ok(number(ctx, 0).map(f64::ceil)))?;
    conn.create_scalar_function("tb_mod", 2, flags, |ctx| {
        // Integers stay integers; a zero divisor gives NULL, as division by zero does.
        Ok(match (ctx.get_raw(0), ctx.get_raw(1)) {
            (ValueRef::Integer(a), ValueRef::Integer(b)) => a.checked_rem(b).map(rusqlite::types::Value::Integer),
            _ => match (number(ctx, 0), number(ctx, 1)) {
                (Some(a), Some(b)) if b != 0.0 => Some(rusqlite::types::Value::Real(a % b)),
                _ => None,
            },
        })
    })?;
    Ok(())
}

/// The geometry in argument `i`, or `None` for NULL or text that is no geometry (a location
/// in another encoding simply never matches).
fn geometry(ctx: &Context<'_>, i: usize) -> Option<Geometry> {
    match ctx.get_raw(i) {
        ValueRef::Text(bytes) => Geometry::parse(std::str::from_utf8(bytes).ok()?).ok(),
        _ => None,
    }
}

fn number(ctx: &Context<'_>, i: usize) -> Option<f64> {
    match ctx.get_raw(i) {
        ValueRef::Integer(i) => Some(i as f64),
        ValueRef::Real(r) => Some(r),
        _ => None,
    }
}
