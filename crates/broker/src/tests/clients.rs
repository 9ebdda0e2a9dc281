//! The broker on a real TCP port against real clients: rumqttc (v3.1.1 and v5) and the Debian
//! `mosquitto_pub`/`mosquitto_sub` tools.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as wire5;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{
    AuthenticateFuture, Broker, BrokerConfig, ConnectInfo, Hooks, InboundPublish, PublishDecision, PublishError,
    PublishRefusal, QoS, RefuseReason, SubscribedFuture, TopicFilter, TopicName,
};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Hooks with a rule per test: usernames "bad" are refused, `secret/...` cannot be subscribed,
/// `hidden/...` is never delivered, `intercept/...` publishes wait for `release`, `reject/...`
/// publishes are refused, and subscribing to `latest/#` sends one current value.
#[derive(Default)]
struct TestHooks {
    gates: Mutex<HashMap<String, oneshot::Sender<Result<(), PublishError>>>>,
}

impl TestHooks {
    /// Resolves the intercepted publish whose payload is `payload`, once it has arrived.
    async fn release(&self, payload: &str, result: Result<(), PublishError>) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let gate = self.gates.lock().expect("lock").remove(payload);
            if let Some(gate) = gate {
                let _ = gate.send(result);
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "publish {payload} never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Hooks for TestHooks {
    type Principal = String;

    fn authenticate(&self, connect: &ConnectInfo) -> AuthenticateFuture<String> {
        let verdict = match connect.username.as_deref() {
            Some("bad") => Err(RefuseReason::BadUserNameOrPassword),
            _ => Ok(connect.client_id.clone()),
        };
        Box::pin(async move {
            // As slow as a credential check against a database.
            tokio::time::sleep(Duration::from_millis(5)).await;
            verdict
        })
    }

    fn authorize_subscribe(&self, _principal: &String, filter: &TopicFilter) -> bool {
        !filter.as_str().starts_with("secret/")
    }

    fn on_publish(&self, _principal: &String, publish: &InboundPublish) -> PublishDecision {
        let topic = publish.topic.as_str();
        if topic.starts_with("intercept/") {
            let (sender, receiver) = oneshot::channel();
            let key = String::from_utf8_lossy(&publish.payload).into_owned();
            self.gates.lock().expect("lock").insert(key, sender);
            return PublishDecision::Intercept(Box::pin(async move {
                receiver.await.unwrap_or_else(|_| Err(PublishError::new(PublishRefusal::UnspecifiedError, "")))
            }));
        }
        if topic.starts_with("reject/") {
            return PublishDecision::Reject(PublishError::new(PublishRefusal::NotAuthorized, "not yours"));
        }
        PublishDecision::Route
    }

    fn authorize_delivery(&self, _principal: &String, topic: &TopicName, tag: Option<u64>) -> bool {
        !topic.as_str().starts_with("hidden/") && tag != Some(13)
    }

    fn on_subscribed(&self, _principal: &String, filter: &TopicFilter) -> Option<SubscribedFuture> {
        if filter.as_str() != "latest/#" {
            return None;
        }
        Some(Box::pin(async {
            // As slow as a database read, so that the ordering after it is tested.
            tokio::time::sleep(Duration::from_millis(50)).await;
            vec![(TopicName::new("latest/value").expect("valid"), Bytes::from_static(b"42"))]
        }))
    }
}

struct Server {
    broker: Broker<TestHooks>,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(config: BrokerConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let broker = Broker::with_hooks(config, TestHooks::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = {
            let broker = broker.clone();
            tokio::spawn(async move {
                broker
                    .serve(listener, async move {
                        let _ = stopped.await;
                    })
                    .await;
            })
        };
        Self { broker, address, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, self.task).await.expect("serve ends").expect("serve task");
    }

    fn options3(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", self.address.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    fn options5(&self, client_id: &str) -> rumqttc::v5::MqttOptions {
        let mut options = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", self.address.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }
}

/// A rumqttc v3.1.1 client whose event loop runs in a task and forwards what it receives.
struct Client3 {
    client: rumqttc::AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<rumqttc::Packet, String>>,
    task: JoinHandle<()>,
}

impl Client3 {
    /// Connects and returns the client with its CONNACK, or the connection error.
    async fn connect(options: rumqttc::MqttOptions) -> Result<(Self, rumqttc::ConnAck), String> {
        let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 100);
        let (sender, mut incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(rumqttc::Event::Incoming(packet)) => {
                        if sender.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Outgoing(_)) => {}
                    Err(error) => {
                        let _ = sender.send(Err(error.to_string()));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(TIMEOUT, incoming.recv()).await.expect("CONNACK in time") {
            Some(Ok(rumqttc::Packet::ConnAck(connack))) => Ok((Self { client, incoming, task }, connack)),
            Some(Ok(other)) => Err(format!("expected CONNACK, got {other:?}")),
            Some(Err(error)) => Err(error),
            None => Err("event loop ended".into()),
        }
    }

    async fn next(&mut self) -> Result<rumqttc::Packet, String> {
        match tokio::time::timeout(TIMEOUT, self.incoming.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => Err("event loop ended".into()),
            Err(_) => Err("nothing received in time".into()),
        }
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        loop {
            match self.next().await {
                Ok(rumqttc::Packet::Publish(publish)) => return publish,
                Ok(_) => {}
                Err(error) => panic!("expected a PUBLISH: {error}"),
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> rumqttc::SubAck {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        loop {
            match self.next().await {
                Ok(rumqttc::Packet::SubAck(suback)) => return suback,
                Ok(_) => {}
                Err(error) => panic!("expected a SUBACK: {error}"),
            }
        }
    }

    /// Asserts that no PUBLISH arrives for a while.
    async fn expect_no_publish(&mut self, wait: Duration) {
        if let Ok(Some(Ok(rumqttc::Packet::Publish(publish)))) = tokio::time::timeout(wait, self.incoming.recv()).await
        {
            panic!("unexpected PUBLISH {publish:?}");
        }
    }

    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("disconnect");
        // The event loop ends with an error once the broker has closed the socket.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, self.incoming.recv()).await {}
        self.task.abort();
    }

    /// Drops the connection without DISCONNECT, as a crashing device would.
    fn kill(self) {
        self.task.abort();
    }
}

/// The v5 twin of [`Client3`].
struct Client5 {
    client: rumqttc::v5::AsyncClient,
    incoming: mpsc::UnboundedReceiver<Result<wire5::Packet, String>>,
    task: JoinHandle<()>,
}

impl Client5 {
    async fn connect(options: rumqttc::v5::MqttOptions) -> Result<(Self, wire5::ConnAck), String> {
        let (client, mut event_loop) = rumqttc::v5::AsyncClient::new(options, 100);
        let (sender, mut incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(packet)) => {
                        if sender.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::v5::Event::Outgoing(_)) => {}
                    Err(error) => {
                        let _ = sender.send(Err(format!("{error:?}")));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(TIMEOUT, incoming.recv()).await.expect("CONNACK in time") {
            Some(Ok(wire5::Packet::ConnAck(connack))) => Ok((Self { client, incoming, task }, connack)),
            Some(Ok(other)) => Err(format!("expected CONNACK, got {other:?}")),
            Some(Err(error)) => Err(error),
            None => Err("event loop ended".into()),
        }
    }

    async fn next(&mut self) -> Result<wire5::Packet, String> {
        match tokio::time::timeout(TIMEOUT, self.incoming.recv()).await {
            Ok(Some(item)) => item,
            Ok(None) => Err("event loop ended".into()),
            Err(_) => Err("nothing received in time".into()),
        }
    }

    async fn next_publish(&mut self) -> wire5::Publish {
        loop {
            match self.next().await {
                Ok(wire5::Packet::Publish(publish)) => return publish,
                Ok(_) => {}
                Err(error) => panic!("expected a PUBLISH: {error}"),
            }
        }
    }

    /// Waits for the broker's DISCONNECT, which rumqttc reports as an error naming the reason.
    async fn expect_server_disconnect(mut self, reason: &str) {
        loop {
            match self.next().await {
                Ok(_) => {}
                Err(error) => {
                    assert!(error.contains("ServerDisconnect") && error.contains(reason), "{error}");
                    break;
                }
            }
        }
        self.task.abort();
    }

    async fn next_puback(&mut self) -> wire5::PubAck {
        loop {
            match self.next().await {
                Ok(wire5::Packet::PubAck(puback)) => return puback,
                Ok(_) => {}
                Err(error) => panic!("expected a PUBACK: {error}"),
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) -> wire5::SubAck {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        loop {
            match self.next().await {
                Ok(wire5::Packet::SubAck(suback)) => return suback,
                Ok(_) => {}
                Err(error) => panic!("expected a SUBACK: {error}"),
            }
        }
    }
}

use rumqttc::QoS as Qos3;
use rumqttc::v5::mqttbytes::QoS as Qos5;

#[tokio::test]
async fn v3_qos0_and_qos1_reach_wildcard_subscribers() {
    let server = Server::start(BrokerConfig::default()).await;
    let (mut subscriber, _) = Client3::connect(server.options3("sub")).await.expect("connect");
    let suback = subscriber.subscribe("sensors/+/temperature", Qos3::AtLeastOnce).await;
    assert_eq!(suback.return_codes, [rumqttc::SubscribeReasonCode::Success(Qos3::AtLeastOnce)]);
    let (publisher, _) = Client3::connect(server.options3("pub")).await.expect("connect");
    publisher.client.publish("sensors/kitchen/humidity", Qos3::AtLeastOnce, false, "no").await.expect("publish");
    publisher.client.publish("sensors/kitchen/temperature", Qos3::AtMostOnce, false, "20.5").await.expect("publish");
    publisher.client.publish("sensors/hall/temperature", Qos3::AtLeastOnce, false, "19").await.expect("publish");
    let first = subscriber.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..], first.qos),
        ("sensors/kitchen/temperature", &b"20.5"[..], Qos3::AtMostOnce)
    );
    let second = subscriber.next_publish().await;
    assert_eq!(
        (second.topic.as_str(), &second.payload[..], second.qos),
        ("sensors/hall/temperature", &b"19"[..], Qos3::AtLeastOnce)
    );
    subscriber.expect_no_publish(Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn v5_qos1_round_trip_and_refused_filters() {
    let server = Server::start(BrokerConfig::default()).await;
    let (mut subscriber, connack) = Client5::connect(server.options5("sub5")).await.expect("connect");
    assert_eq!(connack.code, wire5::ConnectReturnCode::Success);
    let suback = subscriber.subscribe("a/#", Qos5::AtLeastOnce).await;
    assert_eq!(suback.return_codes, [wire5::SubscribeReasonCode::Success(Qos5::AtLeastOnce)]);
    let suback = subscriber.subscribe("secret/#", Qos5::AtLeastOnce).await;
    assert_eq!(suback.return_codes, [wire5::SubscribeReasonCode::NotAuthorized]);
    let (mut publisher, _) = Client5::connect(server.options5("pub5")).await.expect("connect");
    publisher.client.publish("a/b", Qos5::AtLeastOnce, false, "v5").await.expect("publish");
    assert_eq!(publisher.next_puback().await.reason, wire5::PubAckReason::Success);
    let publish = subscriber.next_publish().await;
    assert_eq!((&publish.topic[..], &publish.payload[..], publish.qos), (&b"a/b"[..], &b"v5"[..], Qos5::AtLeastOnce));
    server.stop().await;
}

#[tokio::test]
async fn retained_messages_are_delivered_replaced_and_cleared() {
    let server = Server::start(BrokerConfig::default()).await;
    let (publisher, _) = Client3::connect(server.options3("pub")).await.expect("connect");
    publisher.client.publish("state/door", Qos3::AtLeastOnce, true, "open").await.expect("publish");
    publisher.client.publish("state/door", Qos3::AtLeastOnce, true, "closed").await.expect("publish");
    publisher.client.publish("state/light", Qos3::AtLeastOnce, true, "on").await.expect("publish");
    publisher.client.publish("state/light", Qos3::AtLeastOnce, true, "").await.expect("publish");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut subscriber, _) = Client3::connect(server.options3("late")).await.expect("connect");
    subscriber.subscribe("state/#", Qos3::AtLeastOnce).await;
    let retained = subscriber.next_publish().await;
    assert_eq!((retained.topic.as_str(), &retained.payload[..], retained.retain), ("state/door", &b"closed"[..], true));
    subscriber.expect_no_publish(Duration::from_millis(200)).await;
    // A live message on a retained topic arrives without the retain flag (v3.1.1 §3.3.1.3).
    publisher.client.publish("state/door", Qos3::AtLeastOnce, true, "open").await.expect("publish");
    let live = subscriber.next_publish().await;
    assert_eq!((&live.payload[..], live.retain), (&b"open"[..], false));
    server.stop().await;
}

#[tokio::test]
async fn the_will_is_published_when_a_client_dies_but_not_when_it_disconnects() {
    let server = Server::start(BrokerConfig::default()).await;
    let (mut watcher, _) = Client3::connect(server.options3("watcher")).await.expect("connect");
    watcher.subscribe("wills/#", Qos3::AtLeastOnce).await;

    let mut options = server.options3("polite");
    options.set_last_will(rumqttc::LastWill::new("wills/polite", "gone", Qos3::AtLeastOnce, false));
    let (polite, _) = Client3::connect(options).await.expect("connect");
    polite.disconnect().await;
    watcher.expect_no_publish(Duration::from_millis(300)).await;

    let mut options = server.options3("crasher");
    options.set_last_will(rumqttc::LastWill::new("wills/crasher", "died", Qos3::AtLeastOnce, false));
    let (crasher, _) = Client3::connect(options).await.expect("connect");
    crasher.kill();
    let will = watcher.next_publish().await;
    assert_eq!((will.topic.as_str(), &will.payload[..]), ("wills/crasher", &b"died"[..]));
    server.stop().await;
}

#[tokio::test]
async fn a_persistent_session_keeps_subscriptions_and_queues_qos1() {
    let server = Server::start(BrokerConfig::default()).await;
    let mut options = server.options3("sleepy");
    options.set_clean_session(false);
    let (mut sleepy, connack) = Client3::connect(options.clone()).await.expect("connect");
    assert!(!connack.session_present);
    sleepy.subscribe("mail/#", Qos3::AtLeastOnce).await;
    sleepy.disconnect().await;

    let (publisher, _) = Client3::connect(server.options3("sender")).await.expect("connect");
    for n in 1..=3 {
        publisher.client.publish("mail/box", Qos3::AtLeastOnce, false, format!("letter {n}")).await.expect("publish");
    }
    publisher.client.publish("mail/box", Qos3::AtMostOnce, false, "flyer").await.expect("publish");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut sleepy, connack) = Client3::connect(options).await.expect("reconnect");
    assert!(connack.session_present);
    for n in 1..=3 {
        let letter = sleepy.next_publish().await;
        assert_eq!(&letter.payload[..], format!("letter {n}").as_bytes());
    }
    sleepy.expect_no_publish(Duration::from_millis(200)).await;
    // The subscription itself survived too.
    publisher.client.publish("mail/box", Qos3::AtLeastOnce, false, "later").await.expect("publish");
    assert_eq!(&sleepy.next_publish().await.payload[..], b"later");
    server.stop().await;
}

#[tokio::test]
async fn the_offline_queue_is_bounded() {
    let server = Server::start(BrokerConfig { max_queued_messages: 2, ..BrokerConfig::default() }).await;
    let mut options = server.options5("bounded");
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(60));
    let (mut client, _) = Client5::connect(options.clone()).await.expect("connect");
    client.subscribe("q", Qos5::AtLeastOnce).await;
    client.client.disconnect().await.expect("disconnect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.broker.publish(TopicName::new("q").expect("valid"), Bytes::from_static(b"1"), QoS::AtLeastOnce, false);
    server.broker.publish(TopicName::new("q").expect("valid"), Bytes::from_static(b"2"), QoS::AtLeastOnce, false);
    server.broker.publish(TopicName::new("q").expect("valid"), Bytes::from_static(b"3"), QoS::AtLeastOnce, false);
    client.task.abort();
    let (mut client, connack) = Client5::connect(options).await.expect("reconnect");
    assert!(connack.session_present);
    assert_eq!(&client.next_publish().await.payload[..], b"1");
    assert_eq!(&client.next_publish().await.payload[..], b"2");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.next_publish()).await.is_err(),
        "the third message was over the queue limit"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_publish_disconnects_the_client() {
    let server = Server::start(BrokerConfig { max_packet_size: 1024, ..BrokerConfig::default() }).await;
    let (mut client, _) = Client3::connect(server.options3("big")).await.expect("connect");
    client.client.publish("big", Qos3::AtLeastOnce, false, vec![b'x'; 4096]).await.expect("publish");
    loop {
        match client.next().await {
            Ok(rumqttc::Packet::PubAck(_)) => panic!("an oversized publish must not be acknowledged"),
            Ok(_) => {}
            Err(error) => {
                assert!(!error.contains("in time"), "expected a disconnect, got: {error}");
                break;
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn hooks_refuse_bad_credentials_with_the_right_codes() {
    let server = Server::start(BrokerConfig::default()).await;
    let mut options = server.options3("intruder");
    options.set_credentials("bad", "guess");
    let error = Client3::connect(options).await.err().expect("refused");
    assert!(error.contains("BadUserNamePassword"), "{error}");

    let mut options = server.options5("intruder5");
    options.set_credentials("bad", "guess");
    let error = Client5::connect(options).await.err().expect("refused");
    assert!(error.contains("BadUserNamePassword"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn intercepted_publishes_are_acknowledged_when_the_application_is_done_and_in_order() {
    let server = Server::start(BrokerConfig::default()).await;
    let (mut client, _) = Client5::connect(server.options5("device")).await.expect("connect");
    client.client.publish("intercept/obs", Qos5::AtLeastOnce, false, "first").await.expect("publish");
    client.client.publish("intercept/obs", Qos5::AtLeastOnce, false, "second").await.expect("publish");
    client.client.publish("intercept/obs", Qos5::AtLeastOnce, false, "third").await.expect("publish");
    // The second is done first, but its PUBACK waits for the first's.
    server.broker.hooks().release("second", Ok(())).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.next_puback()).await.is_err(),
        "no PUBACK before the first publish is done"
    );
    server.broker.hooks().release("first", Ok(())).await;
    let first = client.next_puback().await;
    let second = client.next_puback().await;
    assert!(first.pkid < second.pkid, "in order: {} then {}", first.pkid, second.pkid);
    assert_eq!((first.reason, second.reason), (wire5::PubAckReason::Success, wire5::PubAckReason::Success));
    server
        .broker
        .hooks()
        .release("third", Err(PublishError::new(PublishRefusal::PayloadFormatInvalid, "not an Observation")))
        .await;
    let third = client.next_puback().await;
    assert_eq!(third.reason, wire5::PubAckReason::PayloadFormatInvalid);
    let reason = third.properties.and_then(|p| p.reason_string);
    assert_eq!(reason.as_deref(), Some("not an Observation"));
    // The connection is still fine.
    client.client.publish("reject/this", Qos5::AtLeastOnce, false, "x").await.expect("publish");
    assert_eq!(client.next_puback().await.reason, wire5::PubAckReason::NotAuthorized);
    server.stop().await;
}

#[tokio::test]
async fn intercepted_publishes_are_not_routed() {
    let server = Server::start(BrokerConfig::default()).await;
    let (mut subscriber, _) = Client3::connect(server.options3("listener")).await.expect("connect");
    subscriber.subscribe("intercept/#", Qos3::AtLeastOnce).await;
    let (publisher, _) = Client3::connect(server.options3("device")).await.expect("connect");
    publisher.client.publish("intercept/obs", Qos3::AtLeastOnce, false, "only-for-app").await.expect("publish");
    server.broker.hooks().release("only-for-app", Ok(())).await;
    subscriber.expect_no_publish(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn delivery_is_authorized_per_message_and_on_subscribed_sends_the_current_value() {
    let server = Server::start(BrokerConfig::default()).await;
    let (mut client, _) = Client3::connect(server.options3("viewer")).await.expect("connect");
    client.subscribe("hidden/#", Qos3::AtLeastOnce).await;
    server.broker.publish(
        TopicName::new("hidden/x").expect("valid"),
        Bytes::from_static(b"no"),
        QoS::AtLeastOnce,
        false,
    );
    client.expect_no_publish(Duration::from_millis(200)).await;
    // The current state comes first, flagged as retained, even when a message is routed to
    // the new subscription while the state is still being read.
    client.client.subscribe("latest/#", Qos3::AtLeastOnce).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.broker.publish(
        TopicName::new("latest/value").expect("valid"),
        Bytes::from_static(b"43"),
        QoS::AtMostOnce,
        false,
    );
    let current = client.next_publish().await;
    assert_eq!((current.topic.as_str(), &current.payload[..], current.retain), ("latest/value", &b"42"[..], true));
    let routed = client.next_publish().await;
    assert_eq!((&routed.payload[..], routed.retain), (&b"43"[..], false));

    // The application's tag decides too: 13 is refused, 12 delivered.
    client.subscribe("tagged/#", Qos3::AtLeastOnce).await;
    let tagged = TopicName::new("tagged/x").expect("valid");
    server.broker.publish_tagged(tagged.clone(), Bytes::from_static(b"13"), QoS::AtLeastOnce, false, 13);
    server.broker.publish_tagged(tagged, Bytes::from_static(b"12"), QoS::AtLeastOnce, false, 12);
    assert_eq!(&client.next_publish().await.payload[..], b"12");

    // A v5 client that asks for no retained messages gets no current state either.
    let (mut quiet, _) = Client5::connect(server.options5("quiet")).await.expect("connect");
    let filter = wire5::Filter {
        retain_forward_rule: wire5::RetainForwardRule::Never,
        ..wire5::Filter::new("latest/#", Qos5::AtLeastOnce)
    };
    quiet.client.subscribe_many([filter]).await.expect("subscribe");
    loop {
        match quiet.next().await {
            Ok(wire5::Packet::SubAck(_)) => break,
            Ok(_) => {}
            Err(error) => panic!("expected a SUBACK: {error}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(quiet.incoming.try_recv().is_err(), "no current state for Retain Handling 2");
    server.stop().await;
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let server = Server::start(BrokerConfig::default()).await;
    let mut options = server.options5("twin");
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(60));
    let (mut first, _) = Client5::connect(options.clone()).await.expect("connect");
    first.subscribe("twin/#", Qos5::AtLeastOnce).await;
    let (mut second, connack) = Client5::connect(options).await.expect("connect");
    assert!(connack.session_present, "the first connection's session is taken over");
    first.expect_server_disconnect("SessionTakenOver").await;
    server.broker.publish(TopicName::new("twin/x").expect("valid"), Bytes::from_static(b"hi"), QoS::AtLeastOnce, false);
    assert_eq!(&second.next_publish().await.payload[..], b"hi");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_as_busy() {
    let server = Server::start(BrokerConfig { max_connections: 1, ..BrokerConfig::default() }).await;
    let (_first, _) = Client5::connect(server.options5("one")).await.expect("connect");
    let error = Client5::connect(server.options5("two")).await.err().expect("refused");
    assert!(error.contains("ServerBusy"), "{error}");
    let error = Client3::connect(server.options3("three")).await.err().expect("refused");
    assert!(error.contains("ServiceUnavailable"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_disconnects_clients() {
    let server = Server::start(BrokerConfig::default()).await;
    let (client, _) = Client5::connect(server.options5("leaving")).await.expect("connect");
    let broker = server.broker.clone();
    server.stop().await;
    assert_eq!(broker.connection_count(), 0);
    client.expect_server_disconnect("ServerShuttingDown").await;
}

/// `mosquitto_pub` and `mosquitto_sub` from Debian's `mosquitto-clients` (`cargo xtask ci`
/// installs them), in both protocol versions, with a retained message and a live one.
#[tokio::test]
async fn mosquitto_clients_publish_and_subscribe() {
    let server = Server::start(BrokerConfig::default()).await;
    let port = server.address.port().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("mosquitto/{version}");
        let publish = |message: &str, retain: bool| {
            let mut command = tokio::process::Command::new("mosquitto_pub");
            command.args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", "1", "-t", &topic, "-m", message]);
            if retain {
                command.arg("-r");
            }
            command
        };
        let status =
            publish("retained", true).status().await.expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
        assert!(status.success());
        let mut subscriber = tokio::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", "1", "-t", "mosquitto/#", "-C", "2", "-v"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
        let stdout = subscriber.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut next_line =
            async || tokio::time::timeout(TIMEOUT, lines.next_line()).await.expect("in time").expect("read");
        // The retained message arrives after SUBACK, so the live one is sent to a subscriber.
        assert_eq!(next_line().await.as_deref(), Some(format!("{topic} retained").as_str()));
        assert!(publish("live", false).status().await.expect("mosquitto_pub").success());
        assert_eq!(next_line().await.as_deref(), Some(format!("{topic} live").as_str()));
        let status = tokio::time::timeout(TIMEOUT, subscriber.wait()).await.expect("in time").expect("exit status");
        assert!(status.success());
        // Clear the retained message so the next round starts clean.
        let mut clear = tokio::process::Command::new("mosquitto_pub");
        clear.args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-t", &topic, "-n", "-r"]);
        assert!(clear.status().await.expect("mosquitto_pub").success());
    }
    server.stop().await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_after_reconnect() {
    let server = Server::start(BrokerConfig::default()).await;
    let mut options = server.options3("forgetful");
    options.set_clean_session(false);
    options.set_manual_acks(true);
    let (mut client, _) = Client3::connect(options.clone()).await.expect("connect");
    client.subscribe("jobs", Qos3::AtLeastOnce).await;
    server.broker.publish(
        TopicName::new("jobs").expect("valid"),
        Bytes::from_static(b"job 1"),
        QoS::AtLeastOnce,
        false,
    );
    let first = client.next_publish().await;
    assert!(!first.dup);
    client.kill();
    let (mut client, connack) = Client3::connect(options).await.expect("reconnect");
    assert!(connack.session_present);
    let again = client.next_publish().await;
    assert_eq!((&again.payload[..], again.dup), (&b"job 1"[..], true));
    client.client.ack(&again).await.expect("ack");
    server.stop().await;
}

#[tokio::test]
async fn deliveries_respect_the_client_receive_maximum() {
    let server = Server::start(BrokerConfig::default()).await;
    let mut options = server.options5("slow");
    options.set_manual_acks(true);
    options.set_receive_maximum(Some(2));
    let (mut client, _) = Client5::connect(options).await.expect("connect");
    client.subscribe("work", Qos5::AtLeastOnce).await;
    for n in 1..=4 {
        let payload = Bytes::from(format!("item {n}"));
        server.broker.publish(TopicName::new("work").expect("valid"), payload, QoS::AtLeastOnce, false);
    }
    let first = client.next_publish().await;
    let second = client.next_publish().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.next_publish()).await.is_err(),
        "a third message while two are unacknowledged"
    );
    client.client.ack(&first).await.expect("ack");
    let third = client.next_publish().await;
    assert_eq!(&third.payload[..], b"item 3");
    client.client.ack(&second).await.expect("ack");
    client.client.ack(&third).await.expect("ack");
    assert_eq!(&client.next_publish().await.payload[..], b"item 4");
    server.stop().await;
}
