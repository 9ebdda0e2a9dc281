//! Fuzzes a whole broker connection: arbitrary bytes from a client, after an optional valid
//! CONNECT (v3.1.1 or v5, chosen by the first byte) so that the fuzzer starts past the
//! handshake. Publishes to topics starting with `i` are intercepted (acknowledged at once, or
//! refused when the payload starts with `!`) and those starting with `r` rejected, so that the
//! acknowledgement paths run too. The connection must neither panic nor allocate beyond its
//! packet-size limit, and must end when the client stops sending.
#![no_main]

use std::time::Duration;

use broker::{
    AuthenticateFuture, ConnectInfo, Hooks, InboundPublish, PublishDecision, PublishError, PublishRefusal,
    RefuseReason, TopicFilter, TopicName,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECT_V3: &[u8] = &[0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'f'];
const CONNECT_V5: &[u8] = &[0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'f'];

struct FuzzHooks;

impl Hooks for FuzzHooks {
    type Principal = ();

    fn authenticate(&self, connect: &ConnectInfo) -> AuthenticateFuture<()> {
        let verdict =
            if connect.username.as_deref() == Some("refused") { Err(RefuseReason::NotAuthorized) } else { Ok(()) };
        Box::pin(std::future::ready(verdict))
    }

    fn authorize_subscribe(&self, _principal: &(), filter: &TopicFilter) -> bool {
        !filter.as_str().starts_with('s')
    }

    fn on_publish(&self, _principal: &(), publish: &InboundPublish) -> PublishDecision {
        let refused = || PublishError::new(PublishRefusal::PayloadFormatInvalid, "refused");
        match publish.topic.as_str().as_bytes().first() {
            Some(b'i') if publish.payload.starts_with(b"!") => {
                PublishDecision::Intercept(Box::pin(std::future::ready(Err(refused()))))
            }
            Some(b'i') => PublishDecision::Intercept(Box::pin(std::future::ready(Ok(())))),
            Some(b'r') => PublishDecision::Reject(refused()),
            _ => PublishDecision::Route,
        }
    }

    fn authorize_delivery(&self, _principal: &(), topic: &TopicName, _tag: Option<u64>) -> bool {
        !topic.as_str().starts_with('h')
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let mut input = match selector % 3 {
        0 => Vec::new(),
        1 => CONNECT_V3.to_vec(),
        _ => CONNECT_V5.to_vec(),
    };
    input.extend_from_slice(rest);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_time().build() else { return };
    runtime.block_on(async {
        let config = broker::BrokerConfig {
            max_packet_size: 4096,
            max_queued_messages: 16,
            max_inflight: 4,
            ..broker::BrokerConfig::default()
        };
        let broker = broker::Broker::with_hooks(config, FuzzHooks);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let connection = broker.serve_connection(server, "127.0.0.1:1".parse().expect("address"));
        let (mut from_broker, mut to_broker) = tokio::io::split(client);
        let talk = async move {
            let _ = to_broker.write_all(&input).await;
            let _ = to_broker.shutdown().await;
        };
        let listen = async move {
            let mut sink = Vec::new();
            let _ = from_broker.read_to_end(&mut sink).await;
        };
        let finished = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(connection, talk, listen);
        })
        .await;
        assert!(finished.is_ok(), "the connection did not end after the client stopped sending");
    });
});
