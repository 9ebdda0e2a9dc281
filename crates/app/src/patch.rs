//! JSON Patch (RFC 6902) applied to an entity's JSON, for PATCH with
//! `application/json-patch+json`.

use serde_json::Value as Json;

use crate::AppError;

fn bad(message: String) -> AppError {
    AppError::bad("invalid_json_patch", message)
}

/// Applies the operations in `patch` (a JSON array) to `document`, all or nothing.
pub fn apply(mut document: Json, patch: &Json) -> Result<Json, AppError> {
    let operations = patch.as_array().ok_or_else(|| bad("a JSON Patch is an array of operations".into()))?;
    for (i, operation) in operations.iter().enumerate() {
        let field = |name: &str| operation.get(name).and_then(Json::as_str);
        let op = field("op").ok_or_else(|| bad(format!("operation {i} has no `op`")))?;
        let path = field("path").ok_or_else(|| bad(format!("operation {i} has no `path`")))?;
        let value =
            || operation.get("value").cloned().ok_or_else(|| bad(format!("operation {i} ({op}) needs a `value`")));
        match op {
            "add" => add(&mut document, path, value()?)?,
            "replace" => {
                remove(&mut document, path)?;
                add(&mut document, path, value()?)?;
            }
            "remove" => {
                remove(&mut document, path)?;
            }
            "move" | "copy" => {
                let from = field("from").ok_or_else(|| bad(format!("operation {i} ({op}) needs `from`")))?;
                let moved = if op == "move" {
                    remove(&mut document, from)?
                } else {
                    document.pointer(from).cloned().ok_or_else(|| bad(format!("nothing at `{from}`")))?
                };
                add(&mut document, path, moved)?;
            }
            "test" => {
                if document.pointer(path) != Some(&value()?) {
                    return Err(bad(format!("test failed at `{path}`")));
                }
            }
            other => return Err(bad(format!("unknown JSON Patch operation `{other}`"))),
        }
    }
    Ok(document)
}

fn split(path: &str) -> Result<(&str, String), AppError> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| bad(format!("`{path}` is not a JSON Pointer")))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(document: &mut Json, path: &str, value: Json) -> Result<(), AppError> {
    if path.is_empty() {
        *document = value;
        return Ok(());
    }
    let (parent, key) = split(path)?;
    match document.pointer_mut(parent) {
        Some(Json::Object(map)) => {
            map.insert(key, value);
            Ok(())
        }
        Some(Json::Array(items)) => {
            let index = if key == "-" {
                items.len()
            } else {
                key.parse().map_err(|_| bad(format!("bad index in `{path}`")))?
            };
            if index > items.len() {
                return Err(bad(format!("index out of range in `{path}`")));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(bad(format!("nothing to add to at `{parent}`"))),
    }
}

fn remove(document: &mut Json, path: &str) -> Result<Json, AppError> {
    let (parent, key) = split(path)?;
    let removed = match document.pointer_mut(parent) {
        Some(Json::Object(map)) => map.remove(&key),
        Some(Json::Array(items)) => match key.parse::<usize>() {
            Ok(i) if i < items.len() => Some(items.remove(i)),
            _ => None,
        },
        _ => None,
    };
    removed.ok_or_else(|| bad(format!("nothing at `{path}`")))
}
