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
    let multipart = request.content_type.and_then(|c| {
        let c = c.trim();
        c.to_ascii_lowercase().starts_with("multipart/mixed").then(|| boundary(c)).flatten()
    });
    let parts = match &multipart {
        Some(boundary) => parse_multipart(request.body, boundary)?,
        None => parse_json(request.body)?,
    };
    let replies = execute(state, request.caller, base, &parts).await;
    Ok(match multipart {
        Some(_) => render_multipart(&parts, &replies),
        None => {
            let responses: Vec<Json> = parts.iter().zip(&replies).map(|(p, r)| response(p, r)).collect();
            Reply::json(200, json!({ "responses": responses }).to_string().into_bytes())
        }
    })
}

fn parse_json(body: &[u8]) -> Result<Vec<Part>, ApiError> {
    let body = json_body(body)?;
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
    Ok(parts)
}

/// Runs the parts in order (atomicity groups as one transaction each); one reply per part.
async fn execute(state: &ApiState, caller: &app::Caller, base: &str, parts: &[Part]) -> Vec<Reply> {
    let mut created: HashMap<String, String> = HashMap::new();
    let mut replies = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let end = match &parts[i].group {
            Some(g) => i + parts[i..].iter().take_while(|p| p.group.as_ref() == Some(g)).count(),
            None => i + 1,
        };
        if parts[i].group.is_some() {
            replies.extend(run_group(state, caller, base, &parts[i..end], &mut created).await);
        } else {
            replies.push(run_one(state, caller, base, &parts[i], &mut created).await);
        }
        i = end;
    }
    replies
}

/// The `boundary` parameter of a multipart content type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The bodies between `--boundary` delimiters.
fn split_multipart<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, ApiError> {
    let delimiter = format!("--{boundary}");
    let mut sections = body.split(delimiter.as_str());
    sections.next(); // the preamble
    let mut parts = Vec::new();
    for section in sections {
        if section.starts_with("--") {
            return Ok(parts);
        }
        parts.push(section.strip_prefix("\r\n").or_else(|| section.strip_prefix('\n')).unwrap_or(section));
    }
    Err(bad(format!("the multipart body does not end with --{boundary}--")))
}

/// Splits MIME headers from the body at the first empty line.
fn headers_and_body(text: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = text.split_once("\r\n\r\n").or_else(|| text.split_once("\n\n")).unwrap_or((text, ""));
    let headers = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Parses the OData 4.0 multipart batch format; change sets become atomicity groups.
fn parse_multipart(body: &[u8], outer: &str) -> Result<Vec<Part>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the batch body is not UTF-8"))?;
    let mut parts = Vec::new();
    for (index, section) in split_multipart(text, outer)?.into_iter().enumerate() {
        let (headers, content) = headers_and_body(section);
        let content_type = header(&headers, "content-type").unwrap_or("");
        if content_type.to_ascii_lowercase().starts_with("multipart/mixed") {
            let inner = boundary(content_type).ok_or_else(|| bad("a change set needs a boundary"))?;
            let group = format!("changeset-{index}");
            for section in split_multipart(content, &inner)? {
                let (headers, content) = headers_and_body(section);
                let id = header(&headers, "content-id").map(str::to_owned).unwrap_or_else(|| parts.len().to_string());
                parts.push(http_part(id, content, Some(group.clone()))?);
            }
        } else {
            let id = header(&headers, "content-id").map(str::to_owned).unwrap_or_else(|| parts.len().to_string());
            parts.push(http_part(id, content, None)?);
        }
    }
    Ok(parts)
}

/// One `application/http` request: request line, headers, body.
fn http_part(id: String, text: &str, group: Option<String>) -> Result<Part, ApiError> {
    let text = text.trim_start_matches(['\r', '\n']);
    let (line, rest) = text.split_once('\n').unwrap_or((text, ""));
    let mut words = line.split_whitespace();
    let (Some(method), Some(url)) = (words.next(), words.next()) else {
        return Err(bad(format!("part {id}: expected a request line like `GET Things HTTP/1.1`")));
    };
    let (headers, body) = headers_and_body(rest);
    let body = body.trim_end_matches(['\r', '\n']);
    Ok(Part {
        id,
        method: Method::parse(method),
        url: url.to_owned(),
        body: body.as_bytes().to_vec(),
        content_type: header(&headers, "content-type").map(str::to_owned),
        group,
    })
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        424 => "Failed Dependency",
        _ => "",
    }
}

fn http_response(out: &mut String, part: &Part, reply: &Reply) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if part.group.is_some() {
        out.push_str(&format!("Content-ID: {}\r\n", part.id));
    }
    out.push_str(&format!("\r\nHTTP/1.1 {} {}\r\n", reply.status, status_text(reply.status)));
    if let Some(location) = &reply.location {
        out.push_str(&format!("Location: {location}\r\n"));
    }
    if let Some(content_type) = reply.content_type {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&String::from_utf8_lossy(&reply.body));
    out.push_str("\r\n");
}

/// The multipart answer: one `application/http` part per request, change sets nested.
fn render_multipart(parts: &[Part], replies: &[Reply]) -> Reply {
    let outer = "batch_thingbase";
    let mut out = String::new();
    let mut i = 0;
    while i < parts.len() {
        out.push_str(&format!("--{outer}\r\n"));
        match &parts[i].group {
            Some(group) => {
                let inner = format!("changeset_{group}");
                out.push_str(&format!("Content-Type: multipart/mixed; boundary={inner}\r\n\r\n"));
                while i < parts.len() && parts[i].group.as_ref() == Some(group) {
                    out.push_str(&format!("--{inner}\r\n"));
                    http_response(&mut out, &parts[i], &replies[i]);
                    i += 1;
                }
                out.push_str(&format!("--{inner}--\r\n"));
            }
            None => {
                http_response(&mut out, &parts[i], &replies[i]);
                i += 1;
            }
        }
    }
    out.push_str(&format!("--{outer}--\r\n"));
    Reply {
        status: 200,
        content_type: Some("multipart/mixed; boundary=batch_thingbase"),
        location: None,
        retry_after: None,
        body: out.into_bytes(),
    }
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

async fn run_one(
    state: &ApiState,
    caller: &app::Caller,
    base: &str,
    part: &Part,
    created: &mut HashMap<String, String>,
) -> Reply {
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
        caller,
    };
    let reply = Box::pin(handler::handle(state, base, request)).await;
    remember(part, &reply, base, created);
    reply
}

async fn run_group(
    state: &ApiState,
    caller: &app::Caller,
    base: &str,
    parts: &[Part],
    created: &mut HashMap<String, String>,
) -> Vec<Reply> {
    let mut ops: Vec<app::PendingOp> = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        if part.method == Method::Get {
            return failed_group(parts, index, bad("an atomicity group holds changes only, not GET"));
        }
        // Earlier requests of this group are named by their position in it.
        let in_group: HashMap<String, usize> =
            parts[..index].iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
        let before = created.clone();
        let (method, url, body, content_type) =
            (part.method, part.url.clone(), part.body.clone(), part.content_type.clone());
        let base = base.to_owned();
        let caller = caller.clone();
        ops.push(Box::new(move |outcomes: &[app::WriteOutcome]| {
            let mut known = before;
            for (name, i) in in_group {
                if let Some(app::WriteOutcome::Created { entity, id, .. }) = outcomes.get(i) {
                    known.insert(name, format!("{}({id})", entity.set_name()));
                }
            }
            let op = locate(&url, &known).and_then(|(path, query)| {
                let request = Request {
                    method,
                    path: &path,
                    query: &query,
                    body: &body,
                    content_type: content_type.as_deref(),
                    minimal: false,
                    caller: &caller,
                };
                let resource = odata::parse_path(&path)?;
                handler::write_op(request, resource, &base)
            });
            op.map_err(|e| match e.status {
                404 => app::AppError::NotFound(e.message),
                405 => app::AppError::MethodNotAllowed(e.message),
                _ => app::AppError::BadRequest { code: e.code, message: e.message },
            })
        }));
    }
    match state.app.write_atomic(caller, ops).await {
        Ok(outcomes) => {
            let mut responses = Vec::with_capacity(parts.len());
            for (part, outcome) in parts.iter().zip(outcomes) {
                let reply = handler::reply_for(state, caller, base, outcome, false).await.unwrap_or_else(|e| e.reply());
                remember(part, &reply, base, created);
                responses.push(reply);
            }
            responses
        }
        Err((index, e)) => failed_group(parts, index, ApiError::from(e)),
    }
}

/// Responses for a group that was rolled back because of request `index`.
fn failed_group(parts: &[Part], index: usize, error: ApiError) -> Vec<Reply> {
    parts
        .iter()
        .enumerate()
        .map(|(i, _)| {
            if i == index {
                error.reply()
            } else {
                let message = format!("not applied: request {} of the atomicity group failed", parts[index].id);
                ApiError::new(424, "failed_dependency", message).reply()
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
