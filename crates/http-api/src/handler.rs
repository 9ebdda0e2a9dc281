//! The one generic resource handler: every method on every resource path below the service
//! root, as a function from a request to a [`Reply`] so `$batch` can call it for its parts.

use app::{ReadResult, UpdateMode, WriteOp, WriteOutcome};
use model::Id;
use odata::{Limits, Query, ResourcePath, ResultFormat, Tail};
use serde_json::Value as Json;

use crate::encode::{self, Encoder};
use crate::error::ApiError;
use crate::{ApiState, Reply, data_array, url};

/// An HTTP method the resource handler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Put,
    Delete,
    Other,
}

impl Method {
    pub fn parse(text: &str) -> Method {
        match text.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// A request below the service root.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// The raw path below the service root, e.g. `/Things(1)`.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    /// `Prefer: return=minimal` asks for no body after a create or update.
    pub minimal: bool,
    /// Who is asking (authenticated by the router).
    pub caller: &'a app::Caller,
}

pub async fn handle(state: &ApiState, base: &str, request: Request<'_>) -> Reply {
    match route(state, base, request).await {
        Ok(reply) => reply,
        Err(error) => error.reply(),
    }
}

async fn route(state: &ApiState, base: &str, request: Request<'_>) -> Result<Reply, ApiError> {
    let trimmed = request.path.trim_end_matches('/');
    match (request.method, trimmed) {
        (Method::Post, "/$batch") => return crate::batch::handle(state, base, request).await,
        (Method::Post, "/CreateObservations") => return data_array::create(state, base, request).await,
        (_, "/$batch" | "/CreateObservations") => {
            return Err(ApiError::new(405, "method_not_allowed", format!("{trimmed} accepts POST only")));
        }
        _ => {}
    }
    let path = odata::parse_path(request.path)?;
    if request.method == Method::Get {
        return get(state, request.caller, base, &path, request.query).await;
    }
    let op = write_op(request, path, base)?;
    let outcome = state.app.write(request.caller, op).await?;
    reply_for(state, request.caller, base, outcome, request.minimal).await
}

/// The change a non-GET request asks for.
pub fn write_op(request: Request<'_>, path: ResourcePath, base: &str) -> Result<WriteOp, ApiError> {
    Ok(match request.method {
        Method::Post | Method::Put if path.tail == Tail::Ref => {
            WriteOp::Link { path, id: reference_in(request.body, base)? }
        }
        Method::Delete if path.tail == Tail::Ref => WriteOp::Unlink { path, id: id_option(request.query, base)? },
        Method::Post => WriteOp::Create { path, body: json_body(request.body)? },
        Method::Patch | Method::Put => {
            let mode = match request.method {
                Method::Put => UpdateMode::Replace,
                _ if request.content_type.is_some_and(|c| c.starts_with("application/json-patch+json")) => {
                    UpdateMode::JsonPatch
                }
                _ => UpdateMode::Merge,
            };
            WriteOp::Update { path, body: json_body(request.body)?, mode }
        }
        Method::Delete if app::addresses_collection(&path) && path.tail == Tail::None => {
            let entity = path.segments[path.segments.len() - 1].entity;
            let query = odata::parse_query(request.query, entity, &Limits::default())?;
            WriteOp::DeleteMatching { path, query }
        }
        Method::Delete => WriteOp::Delete { path },
        Method::Get | Method::Other => {
            return Err(ApiError::new(405, "method_not_allowed", "use GET, POST, PATCH, PUT or DELETE"));
        }
    })
}

/// The reply to a committed change.
pub async fn reply_for(
    state: &ApiState,
    caller: &app::Caller,
    base: &str,
    outcome: WriteOutcome,
    minimal: bool,
) -> Result<Reply, ApiError> {
    match outcome {
        WriteOutcome::Created { .. } => written(state, caller, base, outcome, 201, minimal).await,
        WriteOutcome::Updated { .. } => written(state, caller, base, outcome, 200, minimal).await,
        WriteOutcome::Deleted { .. } => Ok(Reply::empty(200)),
        WriteOutcome::DeletedMatching { count, .. } => {
            Ok(Reply::json(200, serde_json::json!({"deleted": count}).to_string().into_bytes()))
        }
        WriteOutcome::Linked | WriteOutcome::Unlinked => Ok(Reply::empty(204)),
    }
}

/// The reply after a create or update: the entity as it is now, with its Location.
async fn written(
    state: &ApiState,
    caller: &app::Caller,
    base: &str,
    outcome: WriteOutcome,
    status: u16,
    minimal: bool,
) -> Result<Reply, ApiError> {
    let (entity, id, row) = match outcome {
        WriteOutcome::Created { entity, id, row } => (entity, id, row),
        WriteOutcome::Updated { entity, id } => (entity, id, None),
        _ => return Ok(Reply::empty(status)),
    };
    let encoder = Encoder { base };
    let location = encoder.self_link(entity, id);
    let mut reply = if minimal {
        Reply::empty(status)
    } else if let Some(row) = row {
        let fields: Vec<&model::Property> = entity.properties().iter().collect();
        let mut out = String::with_capacity(512);
        encoder.entity(&mut out, entity, &fields, &row, &Query::default());
        Reply::json(status, out.into_bytes())
    } else {
        let path = odata::parse_path(&format!("/{}({id})", entity.set_name()))?;
        match state.app.read_unbudgeted(caller, path, Query::default()).await? {
            ReadResult::Entity { entity, fields, row } => {
                let mut out = String::with_capacity(512);
                encoder.entity(&mut out, entity, &fields, &row, &Query::default());
                Reply::json(status, out.into_bytes())
            }
            _ => Reply::empty(status),
        }
    };
    reply.location = Some(location);
    Ok(reply)
}

pub fn json_body(body: &[u8]) -> Result<Json, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(400, "missing_body", "this request needs a JSON body"));
    }
    // serde_json's message says where ("... at line 1 column 11").
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "invalid_json", format!("the body is not valid JSON: {e}")))
}

/// The id in a `$ref` body: `{"@iot.id": 1}` or `{"@iot.selfLink": ".../Things(1)"}`.
fn reference_in(body: &[u8], base: &str) -> Result<Id, ApiError> {
    let json = json_body(body)?;
    if let Some(id) = json.get("@iot.id") {
        return match id {
            Json::Number(n) => n.as_i64().map(Id),
            Json::String(s) => s.parse().ok().map(Id),
            _ => None,
        }
        .ok_or_else(|| ApiError::new(400, "invalid_id", "`@iot.id` must be an integer"));
    }
    if let Some(link) = json.get("@iot.selfLink").and_then(Json::as_str) {
        return id_of_link(link, base);
    }
    Err(ApiError::new(400, "missing_id", "a reference needs `@iot.id` or `@iot.selfLink`"))
}

/// The id at the end of an entity URL (absolute, or relative to the service root).
fn id_of_link(link: &str, base: &str) -> Result<Id, ApiError> {
    let relative = link.strip_prefix(base).unwrap_or(link);
    let relative = match relative.find("/v1.1/") {
        Some(i) => &relative[i + 5..],
        None => relative,
    };
    let relative = if relative.starts_with('/') { relative.to_owned() } else { format!("/{relative}") };
    let path: ResourcePath = odata::parse_path(&relative)?;
    path.segments
        .last()
        .and_then(|s| s.key)
        .ok_or_else(|| ApiError::new(400, "invalid_reference", format!("`{link}` does not address one entity")))
}

/// The `$id` of `DELETE .../$ref?$id=...`, if given.
fn id_option(query: &str, base: &str) -> Result<Option<Id>, ApiError> {
    let pairs = odata::split_query(query)?;
    pairs.iter().find(|(k, _)| k == "$id").map(|(_, v)| id_of_link(v, base)).transpose()
}

/// A GET from the wire: collections stream (see `stream.rs`), everything else is answered
/// whole.
pub async fn get_response(
    state: &ApiState,
    caller: &app::Caller,
    base: &str,
    raw_path: &str,
    raw_query: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let streamed = async {
        let trimmed = raw_path.trim_end_matches('/');
        if trimmed == "/$batch" || trimmed == "/CreateObservations" {
            return Ok(None);
        }
        let path = odata::parse_path(raw_path)?;
        if !app::addresses_collection(&path) || path.tail != Tail::None {
            return Ok(None);
        }
        let entity = app::target_entity(&path);
        let query = odata::parse_query(raw_query, entity, &Limits::default())?;
        if query.result_format == ResultFormat::DataArray || asks_aggregate(raw_query)? {
            return Ok(None);
        }
        let paging = state.app.paging();
        let top = query.top.unwrap_or(paging.default_top).min(paging.max_top);
        let pairs = odata::split_query(raw_query)?;
        let next_link =
            url::next_query(&pairs, top, query.skip).map(|next| format!("{base}{}?{next}", path_text(&path)));
        crate::stream::collection(state, caller, base, path, query, next_link).await.map(Some)
    };
    match streamed.await {
        Ok(Some(response)) => response,
        Ok(None) => {
            let request = Request {
                method: Method::Get,
                path: raw_path,
                query: raw_query,
                body: &[],
                content_type: None,
                minimal: false,
                caller,
            };
            handle(state, base, request).await.into_response()
        }
        Err(error) => error.reply().into_response(),
    }
}

pub async fn get(
    state: &ApiState,
    caller: &app::Caller,
    base: &str,
    path: &ResourcePath,
    raw_query: &str,
) -> Result<Reply, ApiError> {
    let entity = app::target_entity(path);
    let limits = Limits::default();
    let mut query = odata::parse_query(raw_query, entity, &limits)?;
    if let Some(reply) = aggregate(state, caller, path, raw_query, &query).await? {
        return Ok(reply);
    }
    let data_array = query.result_format == ResultFormat::DataArray;
    if data_array {
        data_array::prepare(entity, path, &mut query)?;
    }
    let paging = state.app.paging();
    let top = query.top.unwrap_or(paging.default_top).min(paging.max_top);
    let encoder = Encoder { base };
    let result = state.app.read(caller, path.clone(), query.clone()).await?;
    let mut out = String::new();
    let next = |more: bool| -> Result<Option<String>, ApiError> {
        if !more {
            return Ok(None);
        }
        let pairs = odata::split_query(raw_query)?;
        Ok(url::next_query(&pairs, top, query.skip).map(|next| format!("{base}{}?{next}", path_text(path))))
    };
    match result {
        ReadResult::Collection { entity, rows } => {
            // About what an Observation takes; one allocation instead of a doubling series.
            out.reserve(256 * rows.rows.len() + 256);
            let link = next(rows.more)?;
            if data_array {
                data_array::encode(&mut out, &encoder, &rows, &query, link.as_deref());
            } else {
                encoder.collection(&mut out, entity, &rows, &query, link.as_deref());
            }
        }
        ReadResult::Entity { entity, fields, row } => encoder.entity(&mut out, entity, &fields, &row, &query),
        ReadResult::Property { property, value } => {
            out.push('{');
            encode::string(&mut out, property.name);
            out.push(':');
            encode::value(&mut out, &value);
            out.push('}');
        }
        ReadResult::Value { value, .. } => {
            return Ok(match value {
                store::Value::Null => Reply::empty(204),
                store::Value::Text(s) => Reply::text(200, s.into_bytes()),
                other => {
                    encode::value(&mut out, &other);
                    Reply::text(200, out.into_bytes())
                }
            });
        }
        ReadResult::Refs { entity, rows } => {
            let link = next(rows.more)?;
            encoder.refs(&mut out, entity, &rows, link.as_deref());
        }
        ReadResult::Ref { entity, id } => {
            out.push_str("{\"@iot.selfLink\":");
            encode::string(&mut out, &encoder.self_link(entity, id));
            out.push('}');
        }
    }
    Ok(Reply::json(200, out.into_bytes()))
}

/// The custom query options of the aggregation extension (docs/timeseries.md).
const AGGREGATE_OPTIONS: [&str; 3] = ["aggregate", "interval", "buckets"];

fn asks_aggregate(raw_query: &str) -> Result<bool, ApiError> {
    Ok(odata::split_query(raw_query)?.iter().any(|(name, _)| AGGREGATE_OPTIONS.contains(&name.as_str())))
}

/// The answer to a GET asking for aggregates, if it does.
async fn aggregate(
    state: &ApiState,
    caller: &app::Caller,
    path: &ResourcePath,
    raw_query: &str,
    query: &Query,
) -> Result<Option<Reply>, ApiError> {
    let pairs = odata::split_query(raw_query)?;
    let Some(request) = app::aggregate::Request::parse(&pairs, query.filter.clone())? else { return Ok(None) };
    if let Some((name, _)) = pairs.iter().find(|(name, _)| name.starts_with('$') && name != "$filter") {
        return Err(app::AppError::bad(
            "invalid_aggregate",
            format!("`{name}` does not apply to aggregates; only `$filter` narrows the Observations aggregated"),
        )
        .into());
    }
    let zone = request.zone_name.clone();
    let answer = state.app.aggregate(caller, path.clone(), request).await?;
    let body = app::aggregate::to_json(&answer, &zone);
    Ok(Some(Reply::json(200, body.to_string().into_bytes())))
}

/// The path as a client would write it, e.g. `/Things(1)/Datastreams`.
fn path_text(path: &ResourcePath) -> String {
    let mut text = String::new();
    for segment in &path.segments {
        text.push('/');
        text.push_str(segment.via.map_or(segment.entity.set_name(), |v| v.name));
        if let Some(key) = segment.key {
            text.push_str(&format!("({key})"));
        }
    }
    match &path.tail {
        Tail::None => {}
        Tail::Property(p) => text.push_str(&format!("/{}", p.name)),
        Tail::Value(p) => text.push_str(&format!("/{}/$value", p.name)),
        Tail::Ref => text.push_str("/$ref"),
    }
    text
}
