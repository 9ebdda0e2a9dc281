//! Unit tests of everything but the sockets: decoding and routing of CoAP requests, the codes
//! of application errors, deduplication, and the bytes of the DTLS wire read before dimpl.
//! Snapshots are `expect!`s (`UPDATE_EXPECT=1 cargo test -p coap-api` updates them); the
//! handshake with a real client is in the integration suite (`tests/it/coap.rs`).

use std::time::{Duration, Instant};

use app::{AppError, WriteOp};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use expect_test::{Expect, expect};

use crate::dtls;
use crate::exchanges::{EXCHANGE_LIFETIME, Exchanges, Seen};
use crate::message::{Incoming, decode, refusal};

const CON: MessageType = MessageType::Confirmable;
const NON: MessageType = MessageType::NonConfirmable;

/// A request as coap-client sends it: message id 0x1234, token `ab`, the path as Uri-Path
/// segments.
fn request(kind: MessageType, method: RequestType, path: &[&str], format: Option<u8>, payload: &str) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_version(1);
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Request(method);
    packet.header.message_id = 0x1234;
    packet.set_token(vec![0xab]);
    for segment in path {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    if let Some(format) = format {
        packet.add_option(CoapOption::ContentFormat, vec![format]);
    }
    packet.payload = payload.as_bytes().to_vec();
    packet.to_bytes_unlimited().expect("encodes")
}

fn post(path: &[&str], payload: &str) -> Vec<u8> {
    request(CON, RequestType::Post, path, Some(50), payload)
}

const OBSERVATIONS: &[&str] = &["v1.1", "Datastreams(7)", "Observations"];

/// The answer as type, code, message id, token, options and payload, or the create.
fn render(incoming: Incoming) -> String {
    match incoming {
        Incoming::Ignore => "ignored".to_owned(),
        Incoming::Answer(reply) => render_bytes(&reply.encode(0x9999)),
        Incoming::Create { exchange, op } => {
            let WriteOp::Create { path, body } = op else { return format!("not a create: {op:?}") };
            let segments: Vec<String> = path
                .segments
                .iter()
                .map(|s| match s.key {
                    Some(key) => format!("{}({key})", s.entity.set_name()),
                    None => s.entity.set_name().to_owned(),
                })
                .collect();
            let kind = if exchange.confirmable { "CON" } else { "NON" };
            format!("create in {} ({kind} {:#06x}): {body}", segments.join("/"), exchange.message_id)
        }
    }
}

fn render_bytes(bytes: &[u8]) -> String {
    let packet = Packet::from_bytes(bytes).expect("an answer decodes");
    let kind = match packet.header.get_type() {
        MessageType::Confirmable => "CON",
        MessageType::NonConfirmable => "NON",
        MessageType::Acknowledgement => "ACK",
        MessageType::Reset => "RST",
    };
    let mut out =
        format!("{kind} {} id={:#06x} token={:02x?}", packet.header.code, packet.header.message_id, packet.get_token());
    for (number, values) in packet.options() {
        for value in values {
            out.push_str(&format!(" opt{number}={}", String::from_utf8_lossy(value).escape_debug()));
        }
    }
    if !packet.payload.is_empty() {
        out.push_str(&format!(" \"{}\"", String::from_utf8_lossy(&packet.payload)));
    }
    out
}

fn check(message: &[u8], expect: Expect) {
    expect.assert_eq(&render(decode(message)));
}

#[test]
fn a_post_to_a_datastreams_observations_becomes_a_create() {
    check(
        &post(OBSERVATIONS, r#"{"result": 21.5}"#),
        expect![[r#"create in Datastreams(7)/Observations (CON 0x1234): {"result":21.5}"#]],
    );
    check(
        &post(&["v1.1", "MultiDatastreams(2)", "Observations"], r#"{"result": [1, 2]}"#),
        expect![[r#"create in MultiDatastreams(2)/Observations (CON 0x1234): {"result":[1,2]}"#]],
    );
    // The whole path in one segment, and no Content-Format at all.
    check(
        &request(NON, RequestType::Post, &["/v1.1/Datastreams(7)/Observations"], None, r#"{"result": 1}"#),
        expect![[r#"create in Datastreams(7)/Observations (NON 0x1234): {"result":1}"#]],
    );
}

#[test]
fn paths_outside_the_observation_collections_are_refused_with_the_reason() {
    check(
        &post(&["sensors", "kitchen"], "{}"),
        expect![[
            r#"ACK 4.04 id=0x1234 token=[ab] "nothing at `/sensors/kitchen`; POST Observations to /v1.1/Datastreams(<id>)/Observations""#
        ]],
    );
    check(
        &post(&[], "{}"),
        expect![[
            r#"ACK 4.04 id=0x1234 token=[ab] "nothing at `/`; POST Observations to /v1.1/Datastreams(<id>)/Observations""#
        ]],
    );
    check(
        &post(&["v1.1", "Nonsense(1)", "Observations"], "{}"),
        expect![[
            r#"ACK 4.04 id=0x1234 token=[ab] "/v1.1/Nonsense(1)/Observations: unknown entity set `Nonsense` at column 7""#
        ]],
    );
    check(
        &post(&["v1.1", "Datastreams('x')", "Observations"], "{}"),
        expect![[
            r#"ACK 4.00 id=0x1234 token=[ab] "/v1.1/Datastreams('x')/Observations: `'x'` is not an id; ids are integers at column 19""#
        ]],
    );
    check(
        &post(&["v1.1", "Things"], "{}"),
        expect![[
            r#"ACK 4.05 id=0x1234 token=[ab] "/v1.1/Things: over CoAP a device only creates Observations, in /v1.1/Datastreams(<id>)/Observations or /v1.1/MultiDatastreams(<id>)/Observations""#
        ]],
    );
    check(
        &post(&["v1.1", "Datastreams(7)", "Observations(3)"], "{}"),
        expect![[
            r#"ACK 4.05 id=0x1234 token=[ab] "/v1.1/Datastreams(7)/Observations(3): over CoAP a device only creates Observations, in /v1.1/Datastreams(<id>)/Observations or /v1.1/MultiDatastreams(<id>)/Observations""#
        ]],
    );
}

#[test]
fn other_methods_formats_and_payloads_are_refused() {
    check(
        &request(CON, RequestType::Get, OBSERVATIONS, None, ""),
        expect![[r#"ACK 4.05 id=0x1234 token=[ab] "POST Observations to this collection; nothing else is served""#]],
    );
    check(
        &request(NON, RequestType::Delete, OBSERVATIONS, None, ""),
        expect![[r#"NON 4.05 id=0x9999 token=[ab] "POST Observations to this collection; nothing else is served""#]],
    );
    check(
        &request(CON, RequestType::Post, OBSERVATIONS, Some(0), "21.5"),
        expect![[r#"ACK 4.15 id=0x1234 token=[ab] "send the Observation as application/json (Content-Format 50)""#]],
    );
    check(
        &post(OBSERVATIONS, r#"{"result": "#),
        expect![[
            r#"ACK 4.00 id=0x1234 token=[ab] "the payload is not JSON: EOF while parsing a value at line 1 column 11""#
        ]],
    );
    check(
        &post(OBSERVATIONS, ""),
        expect![[r#"ACK 4.00 id=0x1234 token=[ab] "the payload is empty: send an Observation as JSON""#]],
    );
    let big = format!(r#"{{"result": "{}"}}"#, "x".repeat(1100));
    check(
        &post(OBSERVATIONS, &big),
        expect![[r#"ACK 4.13 id=0x1234 token=[ab] opt60=\u{4}\0 "a CoAP message may have at most 1152 bytes""#]],
    );
    let large = format!(r#"{{"result": "{}"}}"#, "x".repeat(1020));
    check(
        &post(OBSERVATIONS, &large),
        expect![[
            r#"ACK 4.13 id=0x1234 token=[ab] opt60=\u{4}\0 "an Observation may have at most 1024 bytes of JSON""#
        ]],
    );
}

#[test]
fn unknown_critical_options_and_proxies_are_refused_elective_ones_ignored() {
    let mut packet = Packet::from_bytes(&post(OBSERVATIONS, "{}")).expect("decodes");
    packet.add_option(CoapOption::Block1, vec![0x0e]);
    check(
        &packet.to_bytes().expect("encodes"),
        expect![[r#"ACK 4.02 id=0x1234 token=[ab] "option 27 is not supported""#]],
    );
    let mut packet = Packet::from_bytes(&post(OBSERVATIONS, "{}")).expect("decodes");
    packet.add_option(CoapOption::ProxyUri, b"coap://elsewhere/".to_vec());
    check(
        &packet.to_bytes().expect("encodes"),
        expect![[r#"ACK 5.05 id=0x1234 token=[ab] "this server is no proxy""#]],
    );
    let mut packet = Packet::from_bytes(&post(OBSERVATIONS, "{}")).expect("decodes");
    packet.add_option(CoapOption::UriHost, b"hub.example".to_vec());
    packet.add_option(CoapOption::Size1, vec![2]);
    check(&packet.to_bytes().expect("encodes"), expect![[r#"create in Datastreams(7)/Observations (CON 0x1234): {}"#]]);
}

#[test]
fn pings_responses_and_garbage_get_a_reset_or_nothing() {
    // An empty CON is a ping: a Reset with its id.
    check(&[0x40, 0x00, 0x12, 0x34], expect!["RST 0.00 id=0x1234 token=[]"]);
    // Empty NON, ACK and RST messages need nothing.
    check(&[0x50, 0x00, 0x12, 0x34], expect!["ignored"]);
    check(&[0x60, 0x00, 0x12, 0x34], expect!["ignored"]);
    check(&[0x70, 0x00, 0x12, 0x34], expect!["ignored"]);
    // A confirmable response: this server asked nothing.
    check(&[0x40, 0x45, 0x12, 0x34], expect!["RST 0.00 id=0x1234 token=[]"]);
    // A token longer than 8 bytes is a format error: Reset for CON, nothing for NON.
    check(&[0x49, 0x02, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9], expect!["RST 0.00 id=0x1234 token=[]"]);
    check(&[0x59, 0x02, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9], expect!["ignored"]);
    // Too short, or another version.
    check(&[0x40, 0x02], expect!["ignored"]);
    check(&[0x80, 0x02, 0x12, 0x34], expect!["ignored"]);
    // An unassigned method code (0.31).
    check(
        &[0x40, 0x1f, 0x12, 0x34, 0xb4, b'v', b'1', b'.', b'1'],
        expect![[
            r#"ACK 4.04 id=0x1234 token=[] "nothing at `/v1.1`; POST Observations to /v1.1/Datastreams(<id>)/Observations""#
        ]],
    );
}

#[test]
fn application_errors_map_to_coap_codes_with_their_reason() {
    let errors = [
        AppError::bad("invalid_observation", "result is required"),
        AppError::NotFound("nothing exists at Datastreams(9)".into()),
        AppError::Conflict("already there".into()),
        AppError::MethodNotAllowed("no".into()),
        AppError::Unauthenticated("urn:dev:mac:0024befffe804ff1 has no pre-shared key".into()),
        AppError::Forbidden("5.3-13: its support period ended".into()),
        AppError::Throttled { message: "slow down".into(), retry_after: 3 },
        AppError::Unavailable,
        AppError::Internal("disk on fire".into()),
        AppError::InBatch(2, Box::new(AppError::Forbidden("not yours".into()))),
    ];
    let rendered: Vec<String> = errors
        .iter()
        .map(|e| {
            let (code, message) = refusal(e);
            format!("{} {message}", MessageClass::Response(code))
        })
        .collect();
    expect![[r#"
        4.00 result is required
        4.04 nothing exists at Datastreams(9)
        4.09 already there
        4.05 no
        4.01 urn:dev:mac:0024befffe804ff1 has no pre-shared key
        4.03 5.3-13: its support period ended
        4.29 slow down
        5.03 the service is unavailable, try again
        5.00 the server failed; the error is logged
        4.03 not yours"#]]
    .assert_eq(&rendered.join("\n"));
}

#[test]
fn outcomes_answer_with_the_location_after_the_commit_or_the_refusal() {
    let Incoming::Create { exchange, .. } = decode(&post(OBSERVATIONS, "{}")) else { panic!("a create") };
    let created = exchange.outcome(Ok(app::WriteOutcome::Created {
        entity: model::EntityType::Observation,
        id: model::Id(42),
        row: None,
    }));
    assert_eq!(created.location(), ["v1.1", "Observations(42)"]);
    expect![[r#"ACK 2.01 id=0x1234 token=[ab] opt8=v1.1 opt8=Observations(42)"#]]
        .assert_eq(&render_bytes(&created.encode(1)));
    let refused = exchange.outcome(Err(AppError::Forbidden("the device is not admitted: 5.3-13".into())));
    expect![[r#"ACK 4.03 id=0x1234 token=[ab] "the device is not admitted: 5.3-13""#]]
        .assert_eq(&render_bytes(&refused.encode(1)));
    let throttled = exchange.outcome(Err(AppError::Throttled { message: "wait".into(), retry_after: 30 }));
    expect![[r#"ACK 4.29 id=0x1234 token=[ab] opt14=\u{1e} "wait""#]].assert_eq(&render_bytes(&throttled.encode(1)));
    // A NON request's answer is a new message with an id of its own.
    let Incoming::Create { exchange, .. } = decode(&request(NON, RequestType::Post, OBSERVATIONS, None, "{}")) else {
        panic!("a create")
    };
    let long = "é".repeat(300);
    let refused = exchange.outcome(Err(AppError::bad("x", long)));
    assert_eq!(refused.payload().len(), 256, "the diagnostic is cut on a character boundary");
    expect!["NON 4.00 id=0x0007 token=[ab]"]
        .assert_eq(render_bytes(&refused.encode(7)).split(" \"").next().unwrap_or_default());
}

#[test]
fn a_retransmission_gets_the_first_answer_within_the_exchange_lifetime() {
    let start = Instant::now();
    let mut exchanges = Exchanges::default();
    assert_eq!(exchanges.seen(1, start), None);
    exchanges.record(1, start, Seen::InFlight);
    assert_eq!(exchanges.seen(1, start), Some(&Seen::InFlight));
    exchanges.answered(1, Seen::Answered(vec![0x60, 0x41, 0, 1]));
    let later = start + Duration::from_secs(100);
    assert_eq!(exchanges.seen(1, later), Some(&Seen::Answered(vec![0x60, 0x41, 0, 1])));
    assert_eq!(exchanges.seen(2, later), None);
    // After the exchange lifetime the id may be used for a new request.
    assert_eq!(exchanges.seen(1, start + EXCHANGE_LIFETIME), None);
    // Only the newest 32 are kept.
    for id in 10..50 {
        exchanges.record(id, later, Seen::Dropped);
    }
    assert_eq!(exchanges.seen(10, later), None);
    assert_eq!(exchanges.seen(49, later), Some(&Seen::Dropped));
}

/// A DTLS record of `content` at `epoch` holding one unfragmented handshake message.
fn record(content: u8, epoch: u16, kind: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len()).expect("short").to_be_bytes();
    let mut handshake = vec![kind, length[1], length[2], length[3], 0, 0, 0, 0, 0, length[1], length[2], length[3]];
    handshake.extend_from_slice(body);
    let mut out = vec![content, 0xfe, 0xfd];
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&u16::try_from(handshake.len()).expect("short").to_be_bytes());
    out.extend_from_slice(&handshake);
    out
}

#[test]
fn the_psk_identity_is_read_from_a_client_key_exchange_in_the_clear() {
    let urn = b"urn:dev:mac:0024befffe804ff1";
    let mut body = u16::try_from(urn.len()).expect("short").to_be_bytes().to_vec();
    body.extend_from_slice(urn);
    // ClientKeyExchange, then ChangeCipherSpec and an encrypted Finished, in one datagram.
    let mut flight = record(22, 0, 16, &body);
    flight.extend_from_slice(&[20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 1]);
    flight.extend_from_slice(&record(22, 1, 20, &[0; 24]));
    assert_eq!(dtls::client_key_exchange_identity(&flight), Some(&urn[..]));
    assert!(!dtls::is_client_hello(&flight));
    // Not at epoch 0, truncated, or no ClientKeyExchange at all.
    assert_eq!(dtls::client_key_exchange_identity(&record(22, 1, 16, &body)), None);
    assert_eq!(dtls::client_key_exchange_identity(&flight[..20]), None);
    let hello = record(22, 0, 1, &[0xfe, 0xfd]);
    assert_eq!(dtls::client_key_exchange_identity(&hello), None);
    assert!(dtls::is_client_hello(&hello));
    assert!(!dtls::is_client_hello(&[23, 0xfe, 0xfd]));
}
