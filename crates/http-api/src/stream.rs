//! Streamed collection responses: a GET of a collection is encoded chunk by chunk on the reader
//! thread while rows are read, and sent as the chunks come, so a page of 86,400 Observations
//! is never held whole in memory and the client starts receiving at once.
//!
//! Everything that can fail because of the request (parsing, binding, 404 of a parent path)
//! fails before the status line is sent; only a database failure in the middle of a read can
//! cut a streamed answer short, and that is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use model::EntityType;
use odata::Query;
use store::Rows;

use crate::ApiState;
use crate::encode::{self, Encoder};
use crate::error::ApiError;

/// Entities encoded per chunk: big enough to amortise the hand-over, small enough to start
/// sending early and keep memory flat.
const CHUNK: usize = 1024;

enum Message {
    Data(Bytes),
    Failed(ApiError),
}

/// Streams the collection `path` addresses. `next_link` is the `@iot.nextLink` to append if
/// entities follow the page.
pub async fn collection(
    state: &ApiState,
    caller: &app::Caller,
    base: &str,
    path: odata::ResourcePath,
    query: Query,
    next_link: String,
) -> Result<Response, ApiError> {
    let entity = app::target_entity(&path);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(4);
    let more = Arc::new(AtomicBool::new(false));
    let sink = {
        let tx = tx.clone();
        let more = Arc::clone(&more);
        let base = base.to_owned();
        let query = query.clone();
        let mut progress = Progress::default();
        Box::new(move |rows: Rows| -> bool {
            let bytes = encode_chunk(&Encoder { base: &base }, entity, &rows, &query, &mut progress);
            more.store(rows.more, Ordering::Relaxed);
            // A closed channel means the client went away: stop reading.
            tx.blocking_send(Message::Data(bytes)).is_ok()
        })
    };
    let app = state.app.clone();
    let caller = caller.clone();
    tokio::spawn(async move {
        let message = match app.read_chunks(&caller, path, query, CHUNK, sink).await {
            Ok(()) => {
                let mut tail = String::from("]");
                if more.load(Ordering::Relaxed) {
                    tail.push_str(",\"@iot.nextLink\":");
                    encode::string(&mut tail, &next_link);
                }
                tail.push('}');
                Message::Data(Bytes::from(tail))
            }
            Err(e) => Message::Failed(ApiError::from(e)),
        };
        let _ = tx.send(message).await;
    });
    let first = match rx.recv().await {
        Some(Message::Data(bytes)) => bytes,
        Some(Message::Failed(error)) => return Err(error),
        None => return Err(ApiError::new(500, "internal", "the read ended without an answer")),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Message::Data(bytes)) => Some((Ok(bytes), rx)),
            Some(Message::Failed(error)) => {
                tracing::error!(message = %error.message, "a streamed read failed after it started");
                Some((Err(std::io::Error::other(error.message)), rx))
            }
            None => None,
        }
    });
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) });
    let body = Body::from_stream(futures_util::StreamExt::chain(body, rest));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// How far a streamed collection has been written.
#[derive(Default)]
struct Progress {
    opened: bool,
    wrote_entity: bool,
}

/// One chunk of `{"@iot.count": n, "value": [ ... ]}`: the opening with the first chunk, then
/// the entities, comma-separated across chunks. The closing comes after the last chunk.
fn encode_chunk(
    encoder: &Encoder<'_>,
    entity: EntityType,
    rows: &Rows,
    query: &Query,
    progress: &mut Progress,
) -> Bytes {
    let mut out = String::with_capacity(256 * rows.rows.len() + 64);
    if !progress.opened {
        // The next link is known only at the end; it follows `value` there.
        encode::open_collection(&mut out, rows.count, None);
        progress.opened = true;
    }
    for row in &rows.rows {
        if progress.wrote_entity {
            out.push(',');
        }
        progress.wrote_entity = true;
        encoder.entity(&mut out, entity, &rows.fields, row, query);
    }
    Bytes::from(out)
}
