//! `$batch` (OGC 18-088 §12, OData JSON batch format): requests run in order; requests that
//! share an `atomicityGroup` run in one transaction and succeed or fail together; a request may
//! address an entity created earlier in the batch as `$<id>`.

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};

use crate::error::ApiError;
use crate::handler::{self, Method, Request, json_body};
use crate::{ApiState, Reply};

struct Part {
    id: String,
    method: Method,
    url: String,
    body: Vec<u8>,
    content_type: Option<String>,
    group: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "invalid_batch", message)
}

pub async fn handle(state: &ApiState, base: &str, request: Request<'_>) -> Result<Reply, ApiError> {
    if request.content_type.is_some_and(|c| c.starts_with("multipart/")) {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "this server accepts $batch in the JSON format (Content-Type: application/json)",
        ));
    }
    let body = json_body(request.body)?;
    let requests =
        body.get("requests").and_then(Json::as_array).ok_or_else(|| bad("a batch is {\"requests\": [...]}"))?;
    let mut parts = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let text = |k: &str| r.get(k).and_then(Json::as_str).map(str::to_owned);
        let id = text("id").unwrap_or_else(|| i.to_string());
        let method = Method::parse(&text("method").ok_or_else(|| bad(format!("request {id} has no method")))?);
        let url = text("url").ok_or_else(|| bad(format!("request {id} has no url")))?;
        let body = match r.get("body") {
            None | Some(Json::Null) => Vec::new(),
            Some(b) => b.to_string().into_bytes(),
        };
        let content_type = r
            .get("headers")
            .and_then(Json::as_object)
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")))
            .and_then(|(_, v)| v.as_str().map(str::to_owned));
        parts.push(Part { id, method, url, body, content_type, group: text("atomicityGroup") });
    }
    let mut created: HashMap<String, String> = HashMap::new();
    let mut responses = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let end = match &parts[i].group {
            Some(g) => i + parts[i..].iter().take_while(|p| p.group.as_ref() == Some(g)).count(),
            None => i + 1,
        };
        if parts[i].group.is_some() {
            responses.extend(run_group(state, base, &parts[i..end], &mut created).await);
        } else {
            let part = &parts[i];
            let reply = run_one(state, base, part, &mut created).await;
            responses.push(response(part, &reply));
        }
        i = end;
    }
    Ok(Reply::json(200, json!({ "responses": responses }).to_string().into_bytes()))
}

/// Splits a batch URL into the path below the service root and the query.
fn locate(url: &str, created: &HashMap<String, String>) -> Result<(String, String), ApiError> {
    let mut rest = url;
    if let Some(i) = rest.find("/v1.1") {
        rest = &rest[i + 5..];
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut path = path.trim_start_matches('/').to_owned();
    if let Some(reference) = path.strip_prefix('$') {
        let (name, tail) = reference.split_once('/').unwrap_or((reference, ""));
        let target =
            created.get(name).ok_or_else(|| bad(format!("`${name}` names no entity created earlier in the batch")))?;
        path = if tail.is_empty() { target.clone() } else { format!("{target}/{tail}") };
    }
    Ok((format!("/{path}"), query.to_owned()))
}

fn remember(part: &Part, reply: &Reply, base: &str, created: &mut HashMap<String, String>) {
    if reply.status == 201
        && let Some(location) = &reply.location
    {
        let relative = location.strip_prefix(base).unwrap_or(location).trim_start_matches('/');
        created.insert(part.id.clone(), relative.to_owned());
    }
}

async fn run_one(state: &ApiState, base: &str, part: &Part, created: &mut HashMap<String, String>) -> Reply {
    let (path, query) = match locate(&part.url, created) {
        Ok(located) => located,
        Err(e) => return e.reply(),
    };
    let request = Request {
        method: part.method,
        path: &path,
        query: &query,
        body: &part.body,
        content_type: part.content_type.as_deref(),
        minimal: false,
    };
    let reply = Box::pin(handler::handle(state, base, request)).await;
    remember(part, &reply, base, created);
    reply
}

async fn run_group(state: &ApiState, base: &str, parts: &[Part], created: &mut HashMap<String, String>) -> Vec<Json> {
    let mut ops = Vec::with_capacity(parts.len());
    for part in parts {
        let op = locate(&part.url, created).and_then(|(path, query)| {
            if part.method == Method::Get {
                return Err(bad("an atomicity group holds changes only, not GET"));
            }
            let request = Request {
                method: part.method,
                path: &path,
                query: &query,
                body: &part.body,
                content_type: part.content_type.as_deref(),
                minimal: false,
            };
            let resource = odata::parse_path(&path)?;
            handler::write_op(request, resource, base)
        });
        match op {
            Ok(op) => ops.push(op),
            Err(e) => return failed_group(parts, ops.len(), e),
        }
    }
    match state.app.write_atomic(ops).await {
        Ok(outcomes) => {
            let mut responses = Vec::with_capacity(parts.len());
            for (part, outcome) in parts.iter().zip(outcomes) {
                let reply = handler::reply_for(state, base, outcome, false).await.unwrap_or_else(|e| e.reply());
                remember(part, &reply, base, created);
                responses.push(response(part, &reply));
            }
            responses
        }
        Err((index, e)) => failed_group(parts, index, ApiError::from(e)),
    }
}

/// Responses for a group that was rolled back because of request `index`.
fn failed_group(parts: &[Part], index: usize, error: ApiError) -> Vec<Json> {
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            if i == index {
                response(part, &error.reply())
            } else {
                let message = format!("not applied: request {} of the atomicity group failed", parts[index].id);
                response(part, &ApiError::new(424, "failed_dependency", message).reply())
            }
        })
        .collect()
}

fn response(part: &Part, reply: &Reply) -> Json {
    let mut object = Map::new();
    object.insert("id".into(), json!(part.id));
    object.insert("status".into(), json!(reply.status));
    let mut headers = Map::new();
    if let Some(location) = &reply.location {
        headers.insert("location".into(), json!(location));
    }
    if let Some(content_type) = reply.content_type {
        headers.insert("content-type".into(), json!(content_type));
    }
    if !headers.is_empty() {
        object.insert("headers".into(), Json::Object(headers));
    }
    if !reply.body.is_empty() {
        let body = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&reply.body).into_owned()));
        object.insert("body".into(), body);
    }
    Json::Object(object)
}
