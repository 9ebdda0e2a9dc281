//! Fuzzes the decoding and routing of one CoAP message as a device sends it inside DTLS (no
//! DTLS, no server): any bytes must give nothing, an answer or a create, never a panic; every
//! answer, and a create's answer for each outcome, must encode to a CoAP message that decodes
//! again, echoes the request's token and fits a datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn check(request: &[u8], reply: coap_api::Reply) {
    let bytes = reply.encode(0x4242);
    assert!(!bytes.is_empty(), "an answer encodes");
    assert!(bytes.len() <= coap_api::MAX_MESSAGE_BYTES, "an answer fits a datagram: {} bytes", bytes.len());
    let answer = coap_lite::Packet::from_bytes(&bytes).expect("an answer decodes");
    if answer.header.get_type() != coap_lite::MessageType::Reset {
        let token = coap_lite::Packet::from_bytes(request).expect("a request with an answer decodes");
        assert_eq!(answer.get_token(), token.get_token(), "the token is echoed");
    }
}

fuzz_target!(|data: &[u8]| {
    match coap_api::decode(data) {
        coap_api::Incoming::Ignore => {}
        coap_api::Incoming::Answer(reply) => check(data, reply),
        coap_api::Incoming::Create { exchange, op } => {
            assert!(matches!(op, app::WriteOp::Create { .. }), "only creates");
            let created = app::WriteOutcome::Created {
                entity: model::EntityType::Observation,
                id: model::Id(i64::MAX),
                row: None,
            };
            check(data, exchange.outcome(Ok(created)));
            check(data, exchange.outcome(Err(app::AppError::Forbidden("é".repeat(400)))));
            check(
                data,
                exchange.outcome(Err(app::AppError::Throttled { message: "wait".into(), retry_after: u64::MAX })),
            );
            check(data, exchange.outcome(Err(app::AppError::Internal("hidden".into()))));
        }
    }
});
