//! Unit tests: topic rules, the subscription tree, routing and queue limits, and whole
//! connections driven with raw bytes (the wire format as a client's bytes, exactly).

mod clients;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::state::{Link, Message, State, SubscriptionOptions};
use crate::topic::SubscriptionTree;
use crate::{Broker, BrokerConfig, QoS, TopicError, TopicFilter, TopicName};

fn name(text: &str) -> TopicName {
    TopicName::new(text).expect("valid topic name")
}

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("valid topic filter")
}

#[test]
fn topic_names_refuse_wildcards_and_empty_text() {
    assert_eq!(TopicName::new("").unwrap_err(), TopicError::Empty);
    assert_eq!(TopicName::new("a/+").unwrap_err(), TopicError::WildcardInName);
    assert_eq!(TopicName::new("a/#").unwrap_err(), TopicError::WildcardInName);
    assert_eq!(TopicName::new("a\0b").unwrap_err(), TopicError::NullCharacter);
    assert_eq!(TopicName::new(&"x".repeat(65_536)).unwrap_err(), TopicError::TooLong);
    // Empty levels and leading or trailing slashes are legal (§4.7.1.1).
    for valid in ["a", "/", "a//b", "/a/", "$SYS/broker", "v1.1/Datastreams(1)/Observations"] {
        assert!(TopicName::new(valid).is_ok(), "{valid}");
    }
}

#[test]
fn topic_filters_follow_the_wildcard_rules() {
    for valid in ["#", "+", "a/#", "a/+/b", "+/+", "/+", "a//#", "$SYS/#", "$share/g/a"] {
        assert!(TopicFilter::new(valid).is_ok(), "{valid}");
    }
    assert_eq!(TopicFilter::new("a/b#").unwrap_err(), TopicError::MultiLevelWildcardNotLast);
    assert_eq!(TopicFilter::new("a/#/b").unwrap_err(), TopicError::MultiLevelWildcardNotLast);
    assert_eq!(TopicFilter::new("a+").unwrap_err(), TopicError::SingleLevelWildcardNotAlone);
    assert_eq!(TopicFilter::new("a/+b/c").unwrap_err(), TopicError::SingleLevelWildcardNotAlone);
    assert_eq!(TopicFilter::new("").unwrap_err(), TopicError::Empty);
    assert!(filter("$share/group/a/b").is_shared());
    assert!(!filter("$shared/a").is_shared());
}

/// The cases of MQTT 5.0 §4.7.1 and §4.7.2, checked against both `TopicFilter::matches` and the
/// subscription tree, which must agree.
#[test]
fn filters_match_topics_as_the_spec_says() {
    let cases: &[(&str, &str, bool)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
        ("sport/#", "sport", true),
        ("#", "sport/tennis", true),
        ("#", "/", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("a/b", "a/b", true),
        ("a/b", "a/b/c", false),
        ("a/b/c", "a/b", false),
        ("#", "$SYS/uptime", false),
        ("+/uptime", "$SYS/uptime", false),
        ("$SYS/#", "$SYS/uptime", true),
        ("$SYS/+", "$SYS/uptime", true),
        ("a/+/#", "a/b", true),
        ("a/+/#", "a", false),
    ];
    for &(filter_text, topic_text, expected) in cases {
        let (f, t) = (filter(filter_text), name(topic_text));
        assert_eq!(f.matches(&t), expected, "{filter_text} against {topic_text}");
        let mut tree = SubscriptionTree::new();
        tree.insert(&f, "client", ());
        let mut found = 0;
        tree.for_each_match(&t, |_, ()| found += 1);
        assert_eq!(found == 1, expected, "tree: {filter_text} against {topic_text}");
    }
}

#[test]
fn subscription_tree_counts_and_prunes() {
    let mut tree = SubscriptionTree::new();
    assert!(tree.insert(&filter("a/+/c"), 1, ()));
    assert!(!tree.insert(&filter("a/+/c"), 1, ()));
    assert!(tree.insert(&filter("a/+/c"), 2, ()));
    assert!(tree.insert(&filter("a/#"), 1, ()));
    assert_eq!(tree.len(), 3);
    let mut matched = Vec::new();
    tree.for_each_match(&name("a/b/c"), |client, ()| matched.push(*client));
    matched.sort_unstable();
    assert_eq!(matched, [1, 1, 2]);
    assert!(tree.remove(&filter("a/+/c"), &1));
    assert!(!tree.remove(&filter("a/+/c"), &1));
    assert!(!tree.remove(&filter("x/y"), &1));
    assert!(tree.remove(&filter("a/+/c"), &2));
    assert!(tree.remove(&filter("a/#"), &1));
    assert_eq!(tree.len(), 0);
    let mut any = false;
    tree.for_each_match(&name("a/b/c"), |_, ()| any = true);
    assert!(!any);
}

fn message(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Arc<Message> {
    Arc::new(Message {
        topic: name(topic),
        payload: crate::payload_of(payload),
        qos,
        retain,
        publisher: None,
        tag: None,
    })
}

/// A link for a connection that nobody drives; the receiver must be kept to keep it open.
fn unattended_link(connection_id: u64) -> (Link, tokio::sync::mpsc::Receiver<crate::state::Delivery>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    (Link { connection_id, sender, kick: Arc::new(tokio::sync::Notify::new()), finished: None }, receiver)
}

const QOS1: SubscriptionOptions =
    SubscriptionOptions { qos: QoS::AtLeastOnce, no_local: false, retain_as_published: false };

#[test]
fn retained_messages_are_set_replaced_and_cleared() {
    let mut state = State::new(10);
    state.route(message("r/1", b"one", QoS::AtMostOnce, true));
    state.route(message("r/2", b"two", QoS::AtLeastOnce, true));
    state.route(message("r/1", b"uno", QoS::AtMostOnce, true));
    let payloads = |state: &State| -> Vec<Vec<u8>> {
        state.retained_matching(&filter("r/+")).iter().map(|m| m.payload.as_slice().to_vec()).collect()
    };
    assert_eq!(payloads(&state), [b"uno".to_vec(), b"two".to_vec()]);
    state.route(message("r/1", b"", QoS::AtMostOnce, true));
    assert_eq!(payloads(&state), [b"two".to_vec()]);
    // A message without the retain flag leaves the retained one alone.
    state.route(message("r/2", b"transient", QoS::AtMostOnce, false));
    assert_eq!(payloads(&state), [b"two".to_vec()]);
}

#[test]
fn offline_persistent_sessions_queue_qos1_up_to_the_limit() {
    let mut state = State::new(2);
    let client: Arc<str> = "sleeper".into();
    let (link, _receiver1) = unattended_link(1);
    state.attach(&client, true, Duration::from_secs(60), link);
    state.subscribe(&client, &filter("t/#"), QOS1);
    state.detach(&client, 1, Vec::new());
    for payload in [b"1", b"2", b"3"] {
        state.route(message("t/x", payload, QoS::AtLeastOnce, false));
    }
    state.route(message("t/x", b"qos0", QoS::AtMostOnce, false));
    let (link, _receiver2) = unattended_link(2);
    let mut attached = state.attach(&client, false, Duration::from_secs(60), link);
    assert!(attached.session_present);
    let mut queued = Vec::new();
    while let Some(delivery) = attached.queued.pop() {
        queued.push(delivery.message.payload.as_slice().to_vec());
    }
    assert_eq!(queued, [b"1".to_vec(), b"2".to_vec()], "the third is over the limit, QoS 0 is not queued");
}

#[test]
fn clean_sessions_end_with_their_connection() {
    let mut state = State::new(2);
    let client: Arc<str> = "brief".into();
    let (link, _receiver1) = unattended_link(1);
    state.attach(&client, true, Duration::ZERO, link);
    assert!(state.subscribe(&client, &filter("t"), QOS1));
    state.detach(&client, 1, Vec::new());
    let (link, _receiver2) = unattended_link(2);
    assert!(!state.attach(&client, false, Duration::ZERO, link).session_present);
    assert!(state.subscribe(&client, &filter("t"), QOS1), "the old subscription is gone");
}

#[test]
fn persistent_sessions_expire_after_their_interval() {
    let mut state = State::new(2);
    let client: Arc<str> = "mayfly".into();
    let (link, _receiver1) = unattended_link(1);
    state.attach(&client, true, Duration::from_secs(60), link);
    state.subscribe(&client, &filter("t"), QOS1);
    state.detach(&client, 1, Vec::new());
    state.expire_sessions(std::time::Instant::now() + Duration::from_secs(59));
    state.route(message("t", b"kept", QoS::AtLeastOnce, false));
    state.expire_sessions(std::time::Instant::now() + Duration::from_secs(61));
    let (link, _receiver2) = unattended_link(2);
    let attached = state.attach(&client, false, Duration::from_secs(60), link);
    assert!(!attached.session_present, "expired with its queue and subscriptions");
    assert!(state.subscribe(&client, &filter("t"), QOS1), "the subscription was gone");
}

/// The bytes of a CONNECT: protocol level 4 (3.1.1) or 5, clean start, the given keep-alive,
/// client id "c".
fn connect_packet(level: u8, keep_alive: u16) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02];
    body.extend(keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend([0, 1, b'c']);
    let mut packet = vec![0x10, u8::try_from(body.len()).expect("short")];
    packet.extend(body);
    packet
}

/// Runs one connection on an in-memory stream: writes `input`, then reads what the broker says
/// until it closes the stream or stays silent for `quiet`. Returns the bytes and whether it closed.
async fn exchange(broker: &Broker, input: &[u8], quiet: Duration) -> (Vec<u8>, bool) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let task = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.serve_connection(server, "127.0.0.1:1".parse().expect("address")).await })
    };
    client.write_all(input).await.expect("write");
    let (output, closed) = read_until_quiet(&mut client, quiet).await;
    if closed {
        task.await.expect("connection task");
    }
    (output, closed)
}

async fn read_until_quiet(client: &mut DuplexStream, quiet: Duration) -> (Vec<u8>, bool) {
    let mut output = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match tokio::time::timeout(quiet, client.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return (output, true),
            Ok(Ok(length)) => output.extend_from_slice(&chunk[..length]),
            Err(_) => return (output, false),
        }
    }
}

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test]
async fn v3_connect_gets_a_plain_connack() {
    let broker = Broker::new(BrokerConfig::default());
    let (output, closed) = exchange(&broker, &connect_packet(4, 60), QUIET).await;
    assert_eq!(output, [0x20, 0x02, 0x00, 0x00]);
    assert!(!closed);
}

#[tokio::test]
async fn v5_connack_announces_the_limits() {
    let config = BrokerConfig { max_packet_size: 1000, max_inflight: 7, ..BrokerConfig::default() };
    let broker = Broker::new(config);
    let (output, _) = exchange(&broker, &connect_packet(5, 60), QUIET).await;
    assert_eq!(&output[..2], [0x20, u8::try_from(output.len() - 2).expect("short")]);
    assert_eq!(output[2..4], [0x00, 0x00], "no session present, success");
    let properties = &output[5..];
    let has = |needle: &[u8]| properties.windows(needle.len()).any(|w| w == needle);
    assert!(has(&[0x27, 0, 0, 0x03, 0xe8]), "Maximum Packet Size 1000 in {properties:x?}");
    assert!(has(&[0x21, 0, 7]), "Receive Maximum 7 in {properties:x?}");
    assert!(has(&[0x2a, 0]), "Shared Subscription Available 0 in {properties:x?}");
}

#[tokio::test]
async fn a_packet_over_the_size_limit_is_refused_from_its_header() {
    let config = BrokerConfig { max_packet_size: 100, ..BrokerConfig::default() };
    let broker = Broker::new(config);
    // A PUBLISH announcing 200 MB: refused after the length bytes, nothing allocated or read.
    let mut input = connect_packet(5, 60);
    input.extend([0x30, 0x80, 0x80, 0x80, 0x64]);
    let (output, closed) = exchange(&broker, &input, Duration::from_secs(2)).await;
    assert!(closed);
    let connack_length = usize::from(output[1]) + 2;
    assert_eq!(&output[connack_length..], [0xe0, 0x01, 0x95], "DISCONNECT, Packet Too Large");
}

#[tokio::test]
async fn an_oversized_connect_closes_without_an_answer() {
    let config = BrokerConfig { max_packet_size: 100, ..BrokerConfig::default() };
    let broker = Broker::new(config);
    let (output, closed) = exchange(&broker, &[0x10, 0xff, 0x01], Duration::from_secs(2)).await;
    assert!(closed);
    assert!(output.is_empty());
}

#[tokio::test]
async fn garbage_before_connect_closes_the_connection() {
    let broker = Broker::new(BrokerConfig::default());
    for input in [&[0x30, 0x00][..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], &[0x10, 0x02, 0x00, 0x00]] {
        let (output, closed) = exchange(&broker, input, Duration::from_secs(2)).await;
        assert!(closed, "{input:x?}");
        assert!(output.is_empty(), "{input:x?} gave {output:x?}");
    }
}

#[tokio::test]
async fn unknown_protocol_level_closes_the_connection() {
    let broker = Broker::new(BrokerConfig::default());
    let (_, closed) = exchange(&broker, &connect_packet(3, 60), Duration::from_secs(2)).await;
    assert!(closed);
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives() {
    let broker = Broker::new(BrokerConfig::default());
    let started = tokio::time::Instant::now();
    let (output, closed) = exchange(&broker, &connect_packet(4, 1), Duration::from_secs(4)).await;
    assert!(closed);
    assert_eq!(output, [0x20, 0x02, 0x00, 0x00]);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_millis(3000), "{waited:?}");
}

#[tokio::test]
async fn a_connection_without_connect_times_out() {
    let config = BrokerConfig { connect_timeout: Duration::from_millis(200), ..BrokerConfig::default() };
    let broker = Broker::new(config);
    let (output, closed) = exchange(&broker, &[], Duration::from_secs(2)).await;
    assert!(closed);
    assert!(output.is_empty());
}

#[tokio::test]
async fn v3_publish_qos1_is_acknowledged_and_pingreq_answered() {
    let broker = Broker::new(BrokerConfig::default());
    let mut input = connect_packet(4, 60);
    // PUBLISH QoS 1 to "t", packet id 7, payload "x"; then PINGREQ.
    input.extend([0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x07, b'x']);
    input.extend([0xc0, 0x00]);
    let (output, closed) = exchange(&broker, &input, QUIET).await;
    assert!(!closed);
    assert_eq!(output, [0x20, 0x02, 0x00, 0x00, 0x40, 0x02, 0x00, 0x07, 0xd0, 0x00]);
}

#[tokio::test]
async fn in_process_publish_reaches_a_raw_subscriber() {
    let broker = Broker::new(BrokerConfig::default());
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let task = {
        let broker = broker.clone();
        tokio::spawn(async move { broker.serve_connection(server, "127.0.0.1:1".parse().expect("address")).await })
    };
    let mut input = connect_packet(4, 60);
    // SUBSCRIBE packet id 1 to "n/+" at QoS 0.
    input.extend([0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'n', b'/', b'+', 0x00]);
    client.write_all(&input).await.expect("write");
    let (output, _) = read_until_quiet(&mut client, QUIET).await;
    assert_eq!(output, [0x20, 0x02, 0x00, 0x00, 0x90, 0x03, 0x00, 0x01, 0x00]);
    broker.publish(name("n/1"), Bytes::from_static(b"hi"), QoS::AtMostOnce, false);
    let (output, _) = read_until_quiet(&mut client, QUIET).await;
    assert_eq!(output, [0x30, 0x07, 0x00, 0x03, b'n', b'/', b'1', b'h', b'i']);
    drop(client);
    task.await.expect("connection task");
}

#[tokio::test]
async fn shutdown_says_goodbye_to_v5_clients() {
    let broker = Broker::new(BrokerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let broker = broker.clone();
        tokio::spawn(async move {
            broker
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        })
    };
    let mut client = tokio::net::TcpStream::connect(address).await.expect("connect");
    client.write_all(&connect_packet(5, 60)).await.expect("write");
    let mut connack = [0; 64];
    let length = client.read(&mut connack).await.expect("read");
    assert_eq!(connack[0], 0x20, "{:x?}", &connack[..length]);
    let _ = stop.send(());
    serving.await.expect("serve ends");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("read");
    assert_eq!(rest, [0xe0, 0x02, 0x8b, 0x00], "DISCONNECT, Server Shutting Down, no properties");
}

#[tokio::test]
async fn v3_publish_qos2_gets_pubrec_then_pubcomp() {
    let broker = Broker::new(BrokerConfig::default());
    let mut input = connect_packet(4, 60);
    // PUBLISH QoS 2 to "t", packet id 9, payload "x"; then its PUBREL.
    input.extend([0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x09, b'x']);
    input.extend([0x62, 0x02, 0x00, 0x09]);
    let (output, closed) = exchange(&broker, &input, QUIET).await;
    assert!(!closed);
    assert_eq!(output, [0x20, 0x02, 0x00, 0x00, 0x50, 0x02, 0x00, 0x09, 0x70, 0x02, 0x00, 0x09]);
}

#[tokio::test]
async fn a_v5_publish_to_an_invalid_topic_is_a_protocol_error() {
    let broker = Broker::new(BrokerConfig::default());
    let mut input = connect_packet(5, 60);
    // PUBLISH QoS 0 to "a/+" (a wildcard in a topic name), no properties.
    input.extend([0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00]);
    let (output, closed) = exchange(&broker, &input, Duration::from_secs(2)).await;
    assert!(closed);
    let connack_length = usize::from(output[1]) + 2;
    assert_eq!(output[connack_length], 0xe0, "a DISCONNECT follows the CONNACK: {output:x?}");
    assert_eq!(output[connack_length + 2], 0x90, "Topic Name Invalid: {output:x?}");
}

/// Found by the fuzz target: a repeated QoS 2 publish with packet id 0 made mqtt-protocol-core
/// panic. Packet id 0 is invalid, so the first one closes the connection.
#[tokio::test]
async fn a_publish_with_packet_id_zero_closes_the_connection() {
    let broker = Broker::new(BrokerConfig::default());
    let mut input = connect_packet(4, 60);
    let publish = [0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x00, b'x'];
    input.extend(publish);
    input.extend(publish);
    let (output, closed) = exchange(&broker, &input, Duration::from_secs(2)).await;
    assert!(closed);
    assert_eq!(output, [0x20, 0x02, 0x00, 0x00]);
}

/// Hooks that hold every publish forever, to fill the inflight window.
struct InterceptEverything;

impl crate::Hooks for InterceptEverything {
    type Principal = ();

    fn authenticate(&self, _connect: &crate::ConnectInfo) -> crate::AuthenticateFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn authorize_subscribe(&self, _principal: &(), _filter: &TopicFilter) -> bool {
        true
    }

    fn on_publish(&self, _principal: &(), _publish: &crate::InboundPublish) -> crate::PublishDecision {
        crate::PublishDecision::Intercept(Box::pin(std::future::pending()))
    }

    fn authorize_delivery(&self, _principal: &(), _topic: &TopicName, _tag: Option<u64>) -> bool {
        true
    }
}

#[tokio::test]
async fn a_v5_client_over_the_receive_maximum_is_disconnected() {
    let broker = Broker::with_hooks(BrokerConfig { max_inflight: 1, ..BrokerConfig::default() }, InterceptEverything);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        broker.serve_connection(server, "127.0.0.1:1".parse().expect("address")).await;
    });
    let mut input = connect_packet(5, 60);
    // Two QoS 1 publishes (ids 1 and 2, no properties) while the Receive Maximum is 1.
    input.extend([0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x01, 0x00]);
    input.extend([0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x02, 0x00]);
    client.write_all(&input).await.expect("write");
    let (output, closed) = read_until_quiet(&mut client, Duration::from_secs(2)).await;
    assert!(closed);
    let connack_length = usize::from(output[1]) + 2;
    assert_eq!(output[connack_length], 0xe0, "a DISCONNECT follows the CONNACK: {output:x?}");
    assert_eq!(output[connack_length + 2], 0x93, "Receive Maximum exceeded: {output:x?}");
    task.await.expect("connection task");
}

#[tokio::test]
async fn a_v3_client_over_the_window_is_not_read_from() {
    let broker = Broker::with_hooks(BrokerConfig { max_inflight: 1, ..BrokerConfig::default() }, InterceptEverything);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let _task = tokio::spawn(async move {
        broker.serve_connection(server, "127.0.0.1:1".parse().expect("address")).await;
    });
    let mut input = connect_packet(4, 60);
    input.extend([0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x01]);
    input.extend([0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x02]);
    client.write_all(&input).await.expect("write");
    let (output, closed) = read_until_quiet(&mut client, QUIET).await;
    assert!(!closed, "a v3.1.1 client is throttled, not disconnected");
    assert_eq!(output, [0x20, 0x02, 0x00, 0x00]);
}

#[tokio::test]
async fn a_qos2_publish_resent_before_pubrel_is_routed_once() {
    let broker = Broker::new(BrokerConfig::default());
    let mut input = connect_packet(4, 60);
    // SUBSCRIBE packet id 1 to "t" at QoS 0; PUBLISH QoS 2 id 9 twice (the second with DUP);
    // then PUBREL 9.
    input.extend([0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00]);
    input.extend([0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x09, b'x']);
    input.extend([0x3c, 0x06, 0x00, 0x01, b't', 0x00, 0x09, b'x']);
    input.extend([0x62, 0x02, 0x00, 0x09]);
    let (output, _) = exchange(&broker, &input, QUIET).await;
    let count = |needle: &[u8]| output.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(count(&[0x30, 0x04, 0x00, 0x01, b't', b'x']), 1, "delivered once: {output:x?}");
    assert_eq!(count(&[0x50, 0x02, 0x00, 0x09]), 2, "each copy gets its PUBREC: {output:x?}");
    assert_eq!(count(&[0x70, 0x02, 0x00, 0x09]), 1, "one PUBCOMP: {output:x?}");
}
