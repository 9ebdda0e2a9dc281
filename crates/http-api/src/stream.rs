//! Streamed collection responses: a GET of a collection is encoded chunk by chunk on the reader
//! thread while rows are read, and sent as the chunks come, so a page of 86,400 Observations
//! is never held whole in memory and the client starts receiving at once.
//!
//! Everything that can fail because of the request (parsing, binding, 404 of a parent path)
//! fails before the status line is sent. So does a read over its time budget: the answer is
//! held back until it is complete or [`HOLD_BYTES`] long, so every answer of up to that size
//! (a page of 10,000 Observations is about 2.5 MB) either arrives whole or not at all. A
//! longer answer starts before it is complete, and from then on its read is no longer held to
//! the time budget (the row budget bounds it): only a database failure can end it early, and
//! that ends the connection without the closing chunk (a client sees an incomplete answer,
//! never a truncated JSON that looks complete), and is logged.

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

/// The longest answer held back until it is complete.
pub const HOLD_BYTES: usize = 4 * 1024 * 1024;

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
    next_link: Option<String>,
) -> Result<Response, ApiError> {
    let entity = app::target_entity(&path);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(4);
    let more = Arc::new(AtomicBool::new(false));
    // Set by the sink, on the reader thread, before it hands over the chunk that makes the
    // answer longer than `HOLD_BYTES`: from then on it streams, and its read must not fail
    // for time.
    let started = Arc::new(AtomicBool::new(false));
    let paging = state.app.paging();
    let limit = query.top.unwrap_or(paging.default_top).min(paging.max_top);
    // A page of more than a chunk is encoded on a thread of its own, beside the reader that
    // decodes the rows: the two halves of the work run at once.
    type Sink = Box<dyn FnMut(Rows) -> bool + Send>;
    let (sink, encoder): (Sink, Option<std::sync::mpsc::SyncSender<Encoded>>) = if limit > CHUNK as u64 {
        let (rows_tx, rows_rx) = std::sync::mpsc::sync_channel::<Encoded>(2);
        let encoding = Encoding {
            base: base.to_owned(),
            entity,
            query: query.clone(),
            tx: tx.clone(),
            started: Arc::clone(&started),
        };
        tokio::task::spawn_blocking(move || encoding.run(rows_rx));
        let more = Arc::clone(&more);
        let rows_tx_sink = rows_tx.clone();
        let sink = Box::new(move |rows: Rows| -> bool {
            more.store(rows.more, Ordering::Relaxed);
            // A closed channel means the client went away: stop reading.
            rows_tx_sink.send(Encoded::Rows(rows)).is_ok()
        });
        (sink, Some(rows_tx))
    } else {
        let tx = tx.clone();
        let more = Arc::clone(&more);
        let started = Arc::clone(&started);
        let base = base.to_owned();
        let query = query.clone();
        let mut progress = Progress::default();
        let mut encoded = 0;
        let sink = Box::new(move |rows: Rows| -> bool {
            let bytes = encode_chunk(&Encoder { base: &base }, entity, &rows, &query, &mut progress);
            encoded += bytes.len();
            if encoded >= HOLD_BYTES {
                started.store(true, Ordering::Relaxed);
            }
            more.store(rows.more, Ordering::Relaxed);
            // A closed channel means the client went away: stop reading.
            tx.blocking_send(Message::Data(bytes)).is_ok()
        });
        (sink, None)
    };
    let app = state.app.clone();
    let caller = caller.clone();
    tokio::spawn(async move {
        let message = match app.read_chunks(&caller, path, query, CHUNK, sink, Some(started)).await {
            Ok(()) => {
                let mut tail = String::from("]");
                if more.load(Ordering::Relaxed)
                    && let Some(next_link) = &next_link
                {
                    tail.push_str(",\"@iot.nextLink\":");
                    encode::string(&mut tail, next_link);
                }
                tail.push('}');
                Message::Data(Bytes::from(tail))
            }
            Err(e) => Message::Failed(ApiError::from(e)),
        };
        match encoder {
            // It follows the last chunk the encoding thread encodes.
            Some(encoder) => {
                let _ = tokio::task::spawn_blocking(move || encoder.send(Encoded::Last(message))).await;
            }
            None => {
                let _ = tx.send(message).await;
            }
        }
    });
    let mut held: Vec<Bytes> = Vec::new();
    let mut size = 0;
    let complete = loop {
        match rx.recv().await {
            Some(Message::Data(bytes)) => {
                size += bytes.len();
                held.push(bytes);
                if size >= HOLD_BYTES {
                    break false;
                }
            }
            Some(Message::Failed(error)) => return Err(error),
            None if held.is_empty() => {
                return Err(ApiError::new(500, "internal", "the read ended without an answer"));
            }
            None => break true,
        }
    };
    let json = HeaderValue::from_static("application/json");
    if complete {
        let mut whole = Vec::with_capacity(size);
        for piece in held {
            whole.extend_from_slice(&piece);
        }
        let mut response = Response::new(Body::from(whole));
        response.headers_mut().insert(header::CONTENT_TYPE, json);
        return Ok(response);
    }
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
    let body = futures_util::stream::iter(held.into_iter().map(Ok::<_, std::io::Error>));
    let body = Body::from_stream(futures_util::StreamExt::chain(body, rest));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    Ok(response)
}

/// What the encoding thread of a large page is handed.
enum Encoded {
    Rows(Rows),
    /// The closing (or the failure) after the last rows.
    Last(Message),
}

/// Encodes the rows of a large page as they come, on a thread of its own.
struct Encoding {
    base: String,
    entity: EntityType,
    query: Query,
    tx: tokio::sync::mpsc::Sender<Message>,
    started: Arc<AtomicBool>,
}

impl Encoding {
    fn run(self, rows: std::sync::mpsc::Receiver<Encoded>) {
        let mut progress = Progress::default();
        let mut encoded = 0;
        let encoder = Encoder { base: &self.base };
        while let Ok(next) = rows.recv() {
            let message = match next {
                Encoded::Rows(rows) => {
                    let bytes = encode_chunk(&encoder, self.entity, &rows, &self.query, &mut progress);
                    encoded += bytes.len();
                    if encoded >= HOLD_BYTES {
                        self.started.store(true, Ordering::Relaxed);
                    }
                    Message::Data(bytes)
                }
                Encoded::Last(message) => {
                    let _ = self.tx.blocking_send(message);
                    return;
                }
            };
            // A closed channel means the client went away: dropping `rows` stops the reader.
            if self.tx.blocking_send(message).is_err() {
                return;
            }
        }
    }
}

/// How far a streamed collection has been written.
#[derive(Default)]
struct Progress {
    opened: bool,
    wrote_entity: bool,
    /// Bytes per entity of the last chunk: what the next one reserves.
    entity_bytes: usize,
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
    let mut out = String::with_capacity(progress.entity_bytes.max(256) * rows.rows.len() + 64);
    if !progress.opened {
        // The next link is known only at the end; it follows `value` there.
        encode::open_collection(&mut out, rows.count, rows.estimated, None);
        progress.opened = true;
    }
    for row in &rows.rows {
        if progress.wrote_entity {
            out.push(',');
        }
        progress.wrote_entity = true;
        encoder.entity(&mut out, entity, &rows.fields, row, query);
    }
    if !rows.rows.is_empty() {
        // A little over, so that the next chunk's entities need not grow it.
        progress.entity_bytes = out.len() / rows.rows.len() + 16;
    }
    Bytes::from(out)
}
