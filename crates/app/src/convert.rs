//! Entity JSON to stored values and back, checked against each property's kind.

use model::{GEOJSON_ENCODINGS, Geometry, Instant, Interval, Property, PropertyKind, TimeValue};
use serde_json::{Map, Value as Json};
use store::Value;

use crate::AppError;

/// The stored value of `json` for `property`, or a 400 that names the property.
pub fn to_value(entity: model::EntityType, property: &Property, json: &Json) -> Result<Value, AppError> {
    let wrong = |expected: &str| {
        AppError::bad(
            "invalid_property",
            format!("{}/{} must be {expected}, not {}", entity.name(), property.name, kind_of(json)),
        )
    };
    if json.is_null() {
        if property.required && property.kind != PropertyKind::Result {
            return Err(AppError::bad(
                "missing_property",
                format!("{}/{} is required and cannot be null", entity.name(), property.name),
            ));
        }
        return Ok(Value::Null);
    }
    Ok(match property.kind {
        PropertyKind::Text => Value::Text(text(entity, property, json.as_str().ok_or_else(|| wrong("a string"))?)?),
        PropertyKind::Object => {
            if !json.is_object() {
                return Err(wrong("a JSON object"));
            }
            Value::Json(json.to_string())
        }
        PropertyKind::Json | PropertyKind::Geometry => Value::Json(json.to_string()),
        PropertyKind::Instant => {
            let text = json.as_str().ok_or_else(|| wrong("an ISO 8601 date-time string"))?;
            let instant: Instant = text.parse().map_err(|e: model::TimeError| time_error(entity, property, e))?;
            Value::Instant(instant)
        }
        PropertyKind::Interval => {
            let text = json.as_str().ok_or_else(|| wrong("an ISO 8601 interval string"))?;
            let interval: Interval = text.parse().map_err(|e: model::TimeError| time_error(entity, property, e))?;
            Value::Interval(interval)
        }
        PropertyKind::InstantOrInterval => {
            let text = json.as_str().ok_or_else(|| wrong("an ISO 8601 date-time or interval string"))?;
            match text.parse().map_err(|e: model::TimeError| time_error(entity, property, e))? {
                TimeValue::Instant(i) => Value::Instant(i),
                TimeValue::Interval(i) => Value::Interval(i),
            }
        }
        PropertyKind::Result => match json {
            Json::Bool(b) => Value::Boolean(*b),
            Json::String(s) => Value::Text(text(entity, property, s)?),
            Json::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Value::Integer(i),
                (None, Some(f)) if n.is_f64() => Value::Real(f),
                // Integers beyond 64 bits keep their exact text.
                _ => Value::Json(n.to_string()),
            },
            other => Value::Json(other.to_string()),
        },
    })
}

/// A text to store: any string but one holding U+0000, which PostgreSQL's text cannot hold
/// (refused on every database, so that both take the same writes).
fn text(entity: model::EntityType, property: &Property, s: &str) -> Result<String, AppError> {
    if s.contains('\0') {
        return Err(AppError::bad(
            "invalid_property",
            format!("{}/{} must not contain the character U+0000", entity.name(), property.name),
        ));
    }
    Ok(s.to_owned())
}

fn time_error(entity: model::EntityType, property: &Property, e: model::TimeError) -> AppError {
    AppError::bad("invalid_time", format!("{}/{}: {e}", entity.name(), property.name))
}

fn kind_of(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Checks that a location or feature is a valid geometry when its encoding says GeoJSON.
pub fn check_geometry(entity: model::EntityType, object: &Map<String, Json>, property: &str) -> Result<(), AppError> {
    let encoding = object.get("encodingType").and_then(Json::as_str);
    let Some(value) = object.get(property) else { return Ok(()) };
    if encoding.is_some_and(|e| GEOJSON_ENCODINGS.contains(&e)) {
        Geometry::from_geojson_checked(value)
            .map_err(|e| AppError::bad("invalid_geometry", format!("{}/{property}: {e}", entity.name())))?;
    }
    Ok(())
}

/// The JSON of a stored value (the inverse of [`to_value`]).
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Real(r) => serde_json::Number::from_f64(*r).map(Json::Number).unwrap_or(Json::Null),
        Value::Text(s) => Json::String(s.clone()),
        Value::Json(text) => serde_json::from_str(text).unwrap_or(Json::Null),
        Value::Instant(i) => Json::String(i.to_string()),
        Value::Interval(i) => Json::String(i.to_string()),
    }
}
