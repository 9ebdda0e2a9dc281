//! Resource paths: `/Things(1)/Datastreams(2)/Observations`, `/Things(1)/name/$value`,
//! `/Datastreams(1)/Thing/$ref`.

use crate::error::{ErrorKind, ODataError};
use crate::ir::{ResourcePath, Segment, Tail};
use crate::percent;
use model::{EntityType, Id};

fn bad_path(column: usize, message: impl Into<String>) -> ODataError {
    ODataError::new(ErrorKind::BadPath, message).at(column)
}

fn bad_key(column: usize, message: impl Into<String>) -> ODataError {
    ODataError::new(ErrorKind::BadKey, message).at(column)
}

pub(crate) fn parse(raw: &str) -> Result<ResourcePath, ODataError> {
    let path = percent::decode(raw, false, ErrorKind::BadPath, 0)?;
    let (mut column, rest) = match path.strip_prefix('/') {
        Some(rest) => (2, rest),
        None => (1, path.as_str()),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(bad_path(column, "the path names no entity set"));
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut tail = Tail::None;
    for piece in rest.split('/') {
        let at = column;
        column += piece.chars().count() + 1;
        match tail {
            Tail::None => {}
            Tail::Property(property) if piece == "$value" => {
                tail = Tail::Value(property);
                continue;
            }
            Tail::Property(property) => {
                return Err(bad_path(at, format!("only `$value` may follow the property `{}`", property.name)));
            }
            Tail::Value(_) => return Err(bad_path(at, "nothing may follow `$value`")),
            Tail::Ref => return Err(bad_path(at, "nothing may follow `$ref`")),
        }
        if piece.is_empty() {
            return Err(bad_path(at, "empty path segment"));
        }
        let Some(previous) = segments.last() else {
            let (name, key) = split_key(piece, at)?;
            let entity =
                EntityType::from_set_name(name).ok_or_else(|| bad_path(at, format!("unknown entity set `{name}`")))?;
            segments.push(Segment { entity, via: None, key });
            continue;
        };
        let single = previous.key.is_some() || previous.via.is_some_and(|via| !via.many);
        let entity = previous.entity;
        if piece == "$ref" {
            tail = Tail::Ref;
            continue;
        }
        if piece == "$value" {
            return Err(bad_path(at, "`$value` must follow a property"));
        }
        let (name, key) = split_key(piece, at)?;
        let from_collection = || {
            let set = previous.via.map_or(entity.set_name(), |via| via.name);
            format!("cannot take `{name}` from the collection `{set}`; address one entity with a key, e.g. `{set}(1)`")
        };
        if let Some(navigation) = entity.navigation(name) {
            if !single {
                return Err(bad_path(at, from_collection()));
            }
            if key.is_some() && !navigation.many {
                return Err(bad_path(at, format!("`{name}` is a single entity and takes no key")));
            }
            segments.push(Segment { entity: navigation.target, via: Some(navigation), key });
        } else if let Some(property) = entity.property(name) {
            if !single {
                return Err(bad_path(at, from_collection()));
            }
            if key.is_some() {
                return Err(bad_path(at, format!("the property `{name}` takes no key")));
            }
            tail = Tail::Property(property);
        } else {
            return Err(bad_path(at, format!("unknown property or navigation property `{name}` of {entity}")));
        }
    }
    Ok(ResourcePath { segments, tail })
}

/// `Things(1)` into `Things` and the id; `Things` has no key.
fn split_key(piece: &str, column: usize) -> Result<(&str, Option<Id>), ODataError> {
    let Some((name, after)) = piece.split_once('(') else {
        return Ok((piece, None));
    };
    let open = column + name.chars().count();
    let Some(key) = after.strip_suffix(')') else {
        return Err(bad_key(open, format!("the key of `{name}` must be an integer in parentheses, e.g. `{name}(1)`")));
    };
    if key.is_empty() {
        return Err(bad_key(open + 1, format!("the key of `{name}` is empty")));
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_key(open + 1, format!("`{key}` is not an id; ids are integers")));
    }
    let id = key.parse().map_err(|_| bad_key(open + 1, format!("the id `{key}` is too large")))?;
    Ok((name, Some(Id(id))))
}
