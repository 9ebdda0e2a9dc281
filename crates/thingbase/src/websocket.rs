//! MQTT over WebSocket on the HTTP port at `/mqtt` (MQTT 5.0 §6, the same for 3.1.1): browsers
//! and clients behind HTTP-only proxies reach the same broker as TCP clients. A connection must
//! offer the `mqtt` subprotocol; MQTT bytes travel in binary messages, which may split or join
//! packets freely, so the broker sees one ordinary byte stream (an in-memory pipe pumped from
//! and to the WebSocket).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use mqtt_api::SensorThingsBroker;

/// Bytes buffered between the WebSocket and the broker in each direction.
const PIPE_BYTES: usize = 64 * 1024;

/// The `/mqtt` route, to merge into the HTTP router.
pub(crate) fn router(broker: SensorThingsBroker, max_message_bytes: usize) -> Router {
    Router::new().route("/mqtt", get(upgrade)).with_state((broker, max_message_bytes))
}

async fn upgrade(
    State((broker, max_message_bytes)): State<(SensorThingsBroker, usize)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The subprotocol is required (MQTT 5.0 §6.0.0-3): without it a client is not speaking
    // MQTT, and a 400 says so before the upgrade.
    let offers_mqtt = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("mqtt"));
    if !offers_mqtt {
        let body = r#"{"code":400,"type":"bad_request","error":"websocket_subprotocol","message":"MQTT over WebSocket needs the `mqtt` subprotocol (Sec-WebSocket-Protocol: mqtt)"}"#;
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    upgrade
        .protocols(["mqtt"])
        .max_message_size(max_message_bytes)
        .on_upgrade(move |socket| serve(broker, socket, peer))
}

async fn serve(broker: SensorThingsBroker, socket: WebSocket, peer: SocketAddr) {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (mut from_broker, mut to_broker) = tokio::io::split(theirs);
    let (mut sink, mut stream) = socket.split();
    let inbound = async move {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(bytes) => {
                    if to_broker.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                // MQTT travels in binary messages only (MQTT 5.0 §6.0.0-1): close on text.
                Message::Text(_) | Message::Close(_) => break,
                // Answered by the WebSocket layer itself.
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    };
    let outbound = async move {
        let mut buffer = vec![0; PIPE_BYTES];
        loop {
            match from_broker.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(length) => {
                    let bytes = axum::body::Bytes::copy_from_slice(&buffer[..length]);
                    if sink.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    // Either side ending ends the pump, which drops the pipe's far end: the broker then sees
    // the client go, or the client sees the broker's close.
    let pump = async move {
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    };
    tokio::join!(broker.serve_connection(ours, peer), pump);
}
