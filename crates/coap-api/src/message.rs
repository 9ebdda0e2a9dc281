//! One CoAP message (RFC 7252) of a device, decoded and routed without any I/O: what it asks
//! of the application, or the answer it gets at once. The DTLS sessions in `server.rs` call
//! [`decode`] for every record of application data and send what comes back; the fuzz target
//! calls it on raw bytes.
//!
//! What a request may be:
//!
//! ```text
//! POST v1.1/Datastreams(<id>)/Observations        (Uri-Path: "v1.1", "Datastreams(<id>)", "Observations")
//! POST v1.1/MultiDatastreams(<id>)/Observations
//!      Content-Format absent or 50 (application/json); payload one Observation, at most 1,024 bytes
//! ```
//!
//! Uri-Path segments are joined with `/` (a client that sends the whole path as one segment is
//! served too) and parsed with `odata::parse_path`, as the HTTP API parses its paths. A
//! confirmable request is answered with a piggybacked ACK, a non-confirmable one with a NON; an
//! empty confirmable message (a CoAP ping) and a malformed confirmable one with a Reset. Error
//! answers carry a diagnostic payload (RFC 7252 §5.5.2): UTF-8 text, at most 256 bytes.

use app::{AppError, WriteOp, WriteOutcome};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use model::EntityType;
use odata::{ErrorKind, ResourcePath, Tail};

/// The largest CoAP message served (RFC 7252 §4.6: 1,152 bytes fit an IPv6 minimum MTU with
/// the DTLS overhead); a larger one is answered 4.13.
pub const MAX_MESSAGE_BYTES: usize = 1152;

/// The largest JSON payload of a create; a larger one is answered 4.13 with `Size1`.
pub const MAX_JSON_BYTES: usize = 1024;

/// Diagnostic payloads are cut to this many bytes (on a character boundary).
const MAX_DIAGNOSTIC_BYTES: usize = 256;

/// Content-Format `application/json`.
const JSON: u32 = 50;

/// Critical options (odd numbers) this server understands; any other critical option is
/// answered 4.02 (RFC 7252 §5.4.1). Uri-Host, Uri-Port, Uri-Path, Uri-Query and Accept.
const UNDERSTOOD_CRITICAL: [u16; 5] = [3, 7, 11, 15, 17];

/// Proxy-Uri and Proxy-Scheme: answered 5.05, this is no proxy.
const PROXY_OPTIONS: [u16; 2] = [35, 39];

/// What one message asks of the server.
#[derive(Debug)]
pub enum Incoming {
    /// Nothing to do: an ACK, a Reset, a response, a non-confirmable message that is not a
    /// request, or bytes that are no CoAP message at all.
    Ignore,
    /// An answer to send now (a ping's Reset, a refused request).
    Answer(Reply),
    /// A create to run as the device; [`Exchange::outcome`] answers it once it committed.
    Create { exchange: Exchange, op: WriteOp },
}

/// How a request came: what its answer must echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Confirmable (answered by a piggybacked ACK) or non-confirmable (answered by a NON).
    pub confirmable: bool,
    pub message_id: u16,
    token: Vec<u8>,
}

/// An answer, encoded by [`Reply::encode`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    packet: Packet,
}

impl Reply {
    fn reset(message_id: u16) -> Reply {
        let mut packet = Packet::new();
        packet.header.set_version(1);
        packet.header.set_type(MessageType::Reset);
        packet.header.code = MessageClass::Empty;
        packet.header.message_id = message_id;
        Reply { packet }
    }

    /// The response code, `None` for a Reset.
    pub fn code(&self) -> Option<ResponseType> {
        match self.packet.header.code {
            MessageClass::Response(code) => Some(code),
            _ => None,
        }
    }

    /// The diagnostic payload (or the payload of a success, which is empty).
    pub fn payload(&self) -> &[u8] {
        &self.packet.payload
    }

    /// The Location-Path segments of a 2.01.
    pub fn location(&self) -> Vec<String> {
        let segments = self.packet.get_option(CoapOption::LocationPath);
        segments.into_iter().flatten().map(|s| String::from_utf8_lossy(s).into_owned()).collect()
    }

    /// The bytes to send. An ACK or a Reset keeps the request's message id; a NON answer is a
    /// new message and takes `fresh_id`.
    pub fn encode(mut self, fresh_id: u16) -> Vec<u8> {
        if self.packet.header.get_type() == MessageType::NonConfirmable {
            self.packet.header.message_id = fresh_id;
        }
        // Every answer is small (the diagnostic is bounded), so this cannot fail; an empty
        // vector would simply not be sent.
        self.packet.to_bytes().unwrap_or_default()
    }
}

impl Exchange {
    fn reply(&self, code: ResponseType) -> Reply {
        let mut packet = Packet::new();
        packet.header.set_version(1);
        packet.header.set_type(if self.confirmable {
            MessageType::Acknowledgement
        } else {
            MessageType::NonConfirmable
        });
        packet.header.code = MessageClass::Response(code);
        packet.header.message_id = self.message_id;
        packet.set_token(self.token.clone());
        Reply { packet }
    }

    /// An error answer with `message` as its diagnostic payload.
    fn refuse(&self, code: ResponseType, message: &str) -> Reply {
        metrics::counter!("thingbase_coap_requests_refused_total").increment(1);
        let mut reply = self.reply(code);
        reply.packet.payload = diagnostic(message).into_bytes();
        reply
    }

    /// The answer to a create: 2.01 with the new Observation's Location-Path (`v1.1`,
    /// `Observations(<id>)`), or the error's code with its message.
    pub fn outcome(&self, result: Result<WriteOutcome, AppError>) -> Reply {
        match result {
            Ok(WriteOutcome::Created { entity, id, .. }) => {
                let mut reply = self.reply(ResponseType::Created);
                reply.packet.add_option(CoapOption::LocationPath, b"v1.1".to_vec());
                reply.packet.add_option(CoapOption::LocationPath, format!("{}({id})", entity.set_name()).into_bytes());
                reply
            }
            // A create only ever creates; anything else it reports is a change all the same.
            Ok(_) => self.reply(ResponseType::Changed),
            Err(error) => {
                let (code, message) = refusal(&error);
                let mut reply = self.refuse(code, &message);
                if let AppError::Throttled { retry_after, .. } = error {
                    let seconds = u32::try_from(retry_after).unwrap_or(u32::MAX);
                    reply.packet.add_option(CoapOption::MaxAge, uint(seconds));
                }
                reply
            }
        }
    }
}

/// The CoAP code and diagnostic of an application error; internals are logged, never sent.
pub fn refusal(error: &AppError) -> (ResponseType, String) {
    let code = match error {
        AppError::BadRequest { .. } | AppError::Query(_) => ResponseType::BadRequest,
        AppError::NotFound(_) => ResponseType::NotFound,
        AppError::Conflict(_) => ResponseType::Conflict,
        AppError::MethodNotAllowed(_) => ResponseType::MethodNotAllowed,
        AppError::Unauthenticated(_) => ResponseType::Unauthorized,
        AppError::Forbidden(_) => ResponseType::Forbidden,
        AppError::Throttled { .. } => ResponseType::TooManyRequests,
        AppError::Unavailable | AppError::OverBudget(_) => ResponseType::ServiceUnavailable,
        AppError::Internal(_) => ResponseType::InternalServerError,
        AppError::InBatch(_, inner) => return refusal(inner),
    };
    let message = match error {
        AppError::Internal(message) => {
            tracing::error!(error = %message, "coap: a request failed inside the server");
            "the server failed; the error is logged".to_owned()
        }
        other => other.to_string(),
    };
    (code, message)
}

/// Decodes one CoAP message and routes it.
pub fn decode(message: &[u8]) -> Incoming {
    // The fixed header says how to refuse what follows it: a confirmable message that cannot
    // be processed gets a Reset (RFC 7252 §4.2), anything else is dropped.
    let Some(&[first, _, high, low]) = message.get(..4) else { return Incoming::Ignore };
    if first >> 6 != 1 {
        return Incoming::Ignore;
    }
    let confirmable = (first >> 4) & 0b11 == 0;
    let message_id = u16::from_be_bytes([high, low]);
    let reset = || if confirmable { Incoming::Answer(Reply::reset(message_id)) } else { Incoming::Ignore };
    let Ok(packet) = Packet::from_bytes(message) else { return reset() };
    let request = match packet.header.get_type() {
        MessageType::Confirmable | MessageType::NonConfirmable => packet.header.code,
        MessageType::Acknowledgement | MessageType::Reset => return Incoming::Ignore,
    };
    let exchange = Exchange { confirmable, message_id, token: packet.get_token().to_vec() };
    match request {
        MessageClass::Request(RequestType::Post) if message.len() > MAX_MESSAGE_BYTES => {
            let mut reply = exchange.refuse(
                ResponseType::RequestEntityTooLarge,
                &format!("a CoAP message may have at most {MAX_MESSAGE_BYTES} bytes"),
            );
            reply.packet.add_option(CoapOption::Size1, uint(MAX_JSON_BYTES as u32));
            Incoming::Answer(reply)
        }
        MessageClass::Request(method) => route(&packet, Some(method), exchange),
        // Codes 0.08 to 0.31 are methods nobody defined yet (RFC 7252 §5.8).
        MessageClass::Reserved(code) if code >> 5 == 0 => route(&packet, None, exchange),
        // An empty confirmable message is a ping; responses and reserved classes are no
        // requests, and this server asks nothing of its devices.
        MessageClass::Empty | MessageClass::Response(_) | MessageClass::Reserved(_) => reset(),
    }
}

/// A request: its options, path, method and payload checked in that order.
fn route(packet: &Packet, method: Option<RequestType>, exchange: Exchange) -> Incoming {
    for (&number, _) in packet.options() {
        if PROXY_OPTIONS.contains(&number) {
            return Incoming::Answer(exchange.refuse(ResponseType::ProxyingNotSupported, "this server is no proxy"));
        }
        if number % 2 == 1 && !UNDERSTOOD_CRITICAL.contains(&number) {
            return Incoming::Answer(
                exchange.refuse(ResponseType::BadOption, &format!("option {number} is not supported")),
            );
        }
    }
    let path = match resource(packet) {
        Ok(path) => path,
        Err((code, message)) => return Incoming::Answer(exchange.refuse(code, &message)),
    };
    if method != Some(RequestType::Post) {
        return Incoming::Answer(
            exchange
                .refuse(ResponseType::MethodNotAllowed, "POST Observations to this collection; nothing else is served"),
        );
    }
    match packet.get_first_option(CoapOption::ContentFormat).map(|v| read_uint(v)) {
        None | Some(Some(JSON)) => {}
        Some(_) => {
            return Incoming::Answer(exchange.refuse(
                ResponseType::UnsupportedContentFormat,
                "send the Observation as application/json (Content-Format 50)",
            ));
        }
    }
    if packet.payload.len() > MAX_JSON_BYTES {
        let mut reply = exchange.refuse(
            ResponseType::RequestEntityTooLarge,
            &format!("an Observation may have at most {MAX_JSON_BYTES} bytes of JSON"),
        );
        reply.packet.add_option(CoapOption::Size1, uint(MAX_JSON_BYTES as u32));
        return Incoming::Answer(reply);
    }
    if packet.payload.is_empty() {
        return Incoming::Answer(
            exchange.refuse(ResponseType::BadRequest, "the payload is empty: send an Observation as JSON"),
        );
    }
    let body: serde_json::Value = match serde_json::from_slice(&packet.payload) {
        Ok(body) => body,
        Err(e) => {
            return Incoming::Answer(
                exchange.refuse(ResponseType::BadRequest, &format!("the payload is not JSON: {e}")),
            );
        }
    };
    metrics::counter!("thingbase_coap_creates_total").increment(1);
    Incoming::Create { exchange, op: WriteOp::Create { path, body } }
}

/// The Observation collection a request's Uri-Path names, or its refusal: 4.04 outside
/// `v1.1/` and for names that do not exist, 4.00 for malformed paths, 4.05 for other resources.
pub fn resource(packet: &Packet) -> Result<ResourcePath, (ResponseType, String)> {
    let mut segments = Vec::new();
    for segment in packet.get_option(CoapOption::UriPath).into_iter().flatten() {
        let text = std::str::from_utf8(segment)
            .map_err(|_| (ResponseType::BadRequest, "a Uri-Path segment is not UTF-8".to_owned()))?;
        segments.push(text);
    }
    let joined = segments.join("/");
    let path = joined.trim_start_matches('/');
    let Some(rest) = path.strip_prefix("v1.1/") else {
        return Err((
            ResponseType::NotFound,
            format!("nothing at `/{path}`; POST Observations to /v1.1/Datastreams(<id>)/Observations"),
        ));
    };
    let parsed = odata::parse_path(&format!("/{rest}")).map_err(|mut e| {
        // The column counts in the path as the device sent it, `/v1.1` included.
        e.position = e.position.map(|column| column + "/v1.1".len());
        let code = match e.kind {
            ErrorKind::UnknownName | ErrorKind::BadPath => ResponseType::NotFound,
            _ => ResponseType::BadRequest,
        };
        (code, format!("/{path}: {e}"))
    })?;
    let observations = matches!(
        parsed.segments.as_slice(),
        [owner, observations]
            if matches!(owner.entity, EntityType::Datastream | EntityType::MultiDatastream)
                && owner.key.is_some()
                && observations.entity == EntityType::Observation
                && observations.key.is_none()
    ) && parsed.tail == Tail::None;
    if !observations {
        return Err((
            ResponseType::MethodNotAllowed,
            format!(
                "/{path}: over CoAP a device only creates Observations, in \
                 /v1.1/Datastreams(<id>)/Observations or /v1.1/MultiDatastreams(<id>)/Observations"
            ),
        ));
    }
    Ok(parsed)
}

/// `text` cut to the diagnostic limit on a character boundary.
fn diagnostic(text: &str) -> String {
    let mut end = text.len().min(MAX_DIAGNOSTIC_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// An option's unsigned integer value (RFC 7252 §3.2: big-endian, no leading zero bytes, at
/// most 4 bytes).
fn read_uint(bytes: &[u8]) -> Option<u32> {
    if bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0, |value, &b| (value << 8) | u32::from(b)))
}

fn uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}
