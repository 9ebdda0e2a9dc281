//! The Data Array extension (OGC 18-088 §14): creating Observations from
//! `/CreateObservations` and reading Observations with `$resultFormat=dataArray`.

use std::fmt::Write as _;

use app::DataArrayItem;
use model::{EntityType, Id};
use odata::{Expand, Query, ResourcePath};
use serde_json::Value as Json;
use store::{Expanded, Rows};

use crate::encode::{self, Encoder};
use crate::error::ApiError;
use crate::handler::{Request, json_body};
use crate::{ApiState, Reply};

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "invalid_data_array", message)
}

/// `POST /CreateObservations`: an array of blocks, answered with one self link (or `"error"`)
/// per row, in order.
pub async fn create(state: &ApiState, base: &str, request: Request<'_>) -> Result<Reply, ApiError> {
    let body = json_body(request.body)?;
    let blocks = body.as_array().ok_or_else(|| bad("the body must be an array of Data Array blocks"))?;
    let mut items = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let id_of = |key: &str| -> Result<Option<Id>, ApiError> {
            match block.get(key) {
                None => Ok(None),
                Some(reference) => reference
                    .get("@iot.id")
                    .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
                    .map(|id| Some(Id(id)))
                    .ok_or_else(|| bad(format!("block {i}: {key} must be {{\"@iot.id\": <id>}}"))),
            }
        };
        let components = block
            .get("components")
            .and_then(Json::as_array)
            .ok_or_else(|| bad(format!("block {i}: `components` must be an array of names")))?
            .iter()
            .map(|c| c.as_str().map(str::to_owned).ok_or_else(|| bad(format!("block {i}: components are strings"))))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = block
            .get("dataArray")
            .and_then(Json::as_array)
            .ok_or_else(|| bad(format!("block {i}: `dataArray` must be an array of rows")))?
            .iter()
            .map(|r| r.as_array().cloned().ok_or_else(|| bad(format!("block {i}: each row is an array"))))
            .collect::<Result<Vec<_>, _>>()?;
        items.push(DataArrayItem {
            datastream: id_of("Datastream")?,
            multi_datastream: id_of("MultiDatastream")?,
            components,
            rows,
        });
    }
    let outcomes = state.app.create_observations(request.caller, items).await?;
    let encoder = Encoder { base };
    let mut out = String::from("[");
    for (i, outcome) in outcomes.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match outcome {
            Ok(id) => encode::string(&mut out, &encoder.self_link(EntityType::Observation, id)),
            Err(e) => {
                tracing::debug!(row = i, error = %e, "data array row rejected");
                encode::string(&mut out, &row_error(e));
            }
        }
    }
    out.push(']');
    Ok(Reply::json(201, out.into_bytes()))
}

/// What a rejected row answers: `"error"`, as OGC 18-088 §14 has it, followed (as FROST-Server
/// does) by what is wrong with the row when that is the client's to put right; a failure of the
/// server itself stays `"error"` alone, and is logged.
fn row_error(e: app::AppError) -> String {
    let error = ApiError::from(e);
    if error.status < 500 { format!("error {}", error.message) } else { "error".to_owned() }
}

/// Adds what the Data Array encoding needs to a query on Observations: the (Multi)Datastream of
/// each Observation, to group by.
pub fn prepare(entity: EntityType, path: &ResourcePath, query: &mut Query) -> Result<(), ApiError> {
    if entity != EntityType::Observation || path.segments.last().is_none_or(|s| s.key.is_some()) {
        return Err(ApiError::new(
            400,
            "unsupported_query",
            "$resultFormat=dataArray applies to collections of Observations",
        ));
    }
    if !query.expand.is_empty() {
        return Err(ApiError::new(400, "unsupported_query", "$resultFormat=dataArray cannot be combined with $expand"));
    }
    for name in ["Datastream", "MultiDatastream"] {
        if let Some(navigation) = entity.navigation(name) {
            let only_id = Query { select: Some(vec![odata::SelectItem::Id]), ..Query::default() };
            query.expand.push(Expand { navigation, query: only_id });
        }
    }
    Ok(())
}

/// `{"value": [{"Datastream@iot.navigationLink": ..., "components": [...], "dataArray@iot.count": n,
/// "dataArray": [[...], ...]}]}`, one block per (Multi)Datastream in order of first appearance.
pub fn encode(out: &mut String, encoder: &Encoder<'_>, rows: &Rows, query: &Query, next_link: Option<&str>) {
    let with_id = query.select.as_ref().is_none_or(|s| s.iter().any(|i| matches!(i, odata::SelectItem::Id)));
    let mut blocks: Vec<((EntityType, i64), Vec<usize>)> = Vec::new();
    for (index, row) in rows.rows.iter().enumerate() {
        let parent = row.expanded.iter().zip(["Datastream", "MultiDatastream"]).find_map(|(e, name)| match e {
            Expanded::One { row: Some(p), .. } => {
                let ty = if name == "Datastream" { EntityType::Datastream } else { EntityType::MultiDatastream };
                Some((ty, p.id.0))
            }
            _ => None,
        });
        let Some(key) = parent else { continue };
        match blocks.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(index),
            None => blocks.push((key, vec![index])),
        }
    }
    encode::open_collection(out, rows.count, rows.estimated, next_link);
    for (b, ((entity, id), members)) in blocks.iter().enumerate() {
        if b > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"{}@iot.navigationLink\":", entity.name());
        encode::string(out, &encoder.self_link(*entity, Id(*id)));
        out.push_str(",\"components\":[");
        let mut names: Vec<&str> = Vec::new();
        if with_id {
            names.push("id");
        }
        names.extend(rows.fields.iter().map(|f| f.name));
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            encode::string(out, name);
        }
        let _ = write!(out, "],\"dataArray@iot.count\":{},\"dataArray\":[", members.len());
        for (i, index) in members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let row = &rows.rows[*index];
            out.push('[');
            let mut first = true;
            if with_id {
                let _ = write!(out, "{}", row.id.0);
                first = false;
            }
            for value in &row.values {
                if !first {
                    out.push(',');
                }
                first = false;
                encode::value(out, value);
            }
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
}
