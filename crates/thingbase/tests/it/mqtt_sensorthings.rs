//! Conformance classes "MQTT Create" and "MQTT Receive Updates" (OGC 18-088 §14) with a real
//! client (rumqttc): publishing creates Observations acknowledged after commit, subscribers get
//! every create made through MQTT or HTTP, shaped by `$select`.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use crate::support::TestServer;

fn client(server: &TestServer, id: &str) -> (AsyncClient, EventLoop) {
    let addr = server.mqtt_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 100)
}

/// Polls until `count` publishes arrived (or a timeout); returns (topic, payload JSON) pairs.
async fn receive(events: &mut EventLoop, count: usize) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < count {
        let event =
            tokio::time::timeout_at(deadline, events.poll()).await.expect("notifications in time").expect("connected");
        if let Event::Incoming(Packet::Publish(p)) = event {
            got.push((p.topic.clone(), serde_json::from_slice(&p.payload).expect("a JSON payload")));
        }
    }
    got
}

/// Polls until the subscription is acknowledged.
async fn subscribed(events: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("connected") {
            return;
        }
    }
}

/// A Thing with a Location and one Datastream; returns the Datastream's id.
pub(crate) fn datastream(server: &TestServer) -> i64 {
    let thing = server.create(
        "/Things",
        json!({
            "name": "station", "description": "d",
            "Locations": [{"name": "l", "description": "d", "encodingType": "application/geo+json",
                           "location": {"type": "Point", "coordinates": [1, 2]}}],
            "Datastreams": [{"name": "temperature", "description": "d", "unitOfMeasurement": {},
                "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                "Sensor": {"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"},
                "ObservedProperty": {"name": "p", "definition": "d", "description": "d"}}]
        }),
    );
    server.get(&format!("/Things({thing})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap()
}

#[test]
fn publishing_creates_observations_and_subscribers_receive_creates_from_mqtt_and_http() {
    let server = TestServer::start("mqtt-create");
    let ds = datastream(&server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (subscriber, mut sub_events) = client(&server, "subscriber");
        subscriber.subscribe(format!("v1.1/Datastreams({ds})/Observations"), QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut sub_events).await;
        subscriber.subscribe("v1.1/Observations?$select=result", QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut sub_events).await;

        let (publisher, mut pub_events) = client(&server, "device");
        publisher
            .publish(format!("v1.1/Datastreams({ds})/Observations"), QoS::AtLeastOnce, false, r#"{"result": 42}"#)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = pub_events.poll().await.unwrap() {
                break;
            }
        }
        // Acknowledged means committed: the Observation is there.
        let stored = server.get(&format!("/Datastreams({ds})/Observations"));
        assert_eq!(stored.json["value"][0]["result"], 42, "{}", stored.text);

        let mut got = receive(&mut sub_events, 2).await;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got[0].0, format!("v1.1/Datastreams({ds})/Observations"));
        assert_eq!(got[0].1["result"], 42);
        assert!(got[0].1["@iot.selfLink"].as_str().unwrap().contains("/v1.1/Observations("));
        // The notification is the entity exactly as a GET shows it.
        let id = got[0].1["@iot.id"].as_i64().unwrap();
        assert_eq!(got[0].1, server.get(&format!("/Observations({id})")).json);
        assert_eq!(got[1].0, "v1.1/Observations?$select=result");
        assert_eq!(got[1].1, json!({"result": 42}), "$select shapes the notification");

        // A create over HTTP notifies too.
        server.create(&format!("/Datastreams({ds})/Observations"), json!({"result": 7}));
        let got = receive(&mut sub_events, 2).await;
        assert!(got.iter().all(|(_, body)| body["result"] == 7), "{got:?}");
    });
}

#[test]
fn an_invalid_publish_is_refused_without_disturbing_the_connection() {
    let server = TestServer::start("mqtt-invalid");
    let ds = datastream(&server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (publisher, mut events) = client(&server, "clumsy");
        let topic = format!("v1.1/Datastreams({ds})/Observations");
        publisher.publish(&topic, QoS::AtLeastOnce, false, "not json").await.unwrap();
        publisher.publish(&topic, QoS::AtLeastOnce, false, r#"{"colour": "red"}"#).await.unwrap();
        publisher
            .publish("v1.1/Datastreams(999)/Observations", QoS::AtLeastOnce, false, r#"{"result": 1}"#)
            .await
            .unwrap();
        publisher.publish(&topic, QoS::AtLeastOnce, false, r#"{"result": 5}"#).await.unwrap();
        let mut acks = 0;
        while acks < 4 {
            match tokio::time::timeout(Duration::from_secs(10), events.poll()).await.expect("acks in time") {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => panic!("the connection broke: {e}"),
            }
        }
        let stored = server.get(&format!("/Datastreams({ds})/Observations?$count=true"));
        assert_eq!(stored.json["@iot.count"], 1, "only the valid publish created something");
        assert_eq!(stored.json["value"][0]["result"], 5);
    });
}

#[test]
fn entity_and_property_topics_receive_updates_made_over_http() {
    let server = TestServer::start("mqtt-updates");
    let thing = server.create("/Things", json!({"name": "before", "description": "d"}));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (subscriber, mut events) = client(&server, "watcher");
        subscriber.subscribe(format!("v1.1/Things({thing})"), QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut events).await;
        subscriber.subscribe(format!("v1.1/Things({thing})/name"), QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut events).await;
        subscriber.subscribe(format!("v1.1/Things({thing})/Locations"), QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut events).await;
        assert_eq!(server.patch(&format!("/Things({thing})"), json!({"name": "after"})).status, 200);
        let mut got = receive(&mut events, 2).await;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got[0].0, format!("v1.1/Things({thing})"));
        assert_eq!(got[0].1["name"], "after");
        assert_eq!(got[1].1, json!({"name": "after"}));
        // Linking a new Location to the Thing notifies its Locations topic.
        server.create(
            &format!("/Things({thing})/Locations"),
            json!({"name": "here", "description": "d", "encodingType": "application/geo+json",
                   "location": {"type": "Point", "coordinates": [3, 4]}}),
        );
        let got = receive(&mut events, 1).await;
        assert_eq!(got[0].0, format!("v1.1/Things({thing})/Locations"));
        assert_eq!(got[0].1["name"], "here");
    });
}

/// Polls until one publish arrives; returns (topic, payload JSON, retain flag).
async fn receive_one(events: &mut EventLoop) -> (String, Value, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event =
            tokio::time::timeout_at(deadline, events.poll()).await.expect("a publish in time").expect("connected");
        if let Event::Incoming(Packet::Publish(p)) = event {
            return (p.topic.clone(), serde_json::from_slice(&p.payload).expect("a JSON payload"), p.retain);
        }
    }
}

/// Waits a moment and fails if a publish arrives meanwhile.
async fn nothing_arrives(events: &mut EventLoop) {
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("connected") {
                return p;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "unexpected publish: {quiet:?}");
}

#[test]
fn subscribers_get_the_current_state_first_when_the_server_sends_it() {
    let server = TestServer::start_with("mqtt-latest", |c| c.mqtt.latest_on_subscribe = true);
    let ds = datastream(&server);
    // The newest by phenomenonTime is not the last one created.
    server.create(
        &format!("/Datastreams({ds})/Observations"),
        json!({"result": 2, "phenomenonTime": "2026-01-02T00:00:00Z"}),
    );
    server.create(
        &format!("/Datastreams({ds})/Observations"),
        json!({"result": 1, "phenomenonTime": "2026-01-01T00:00:00Z"}),
    );
    let thing = server.get(&format!("/Datastreams({ds})/Thing")).json["@iot.id"].as_i64().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (subscriber, mut events) = client(&server, "dashboard");
        let observations = format!("v1.1/Datastreams({ds})/Observations?$select=result,phenomenonTime");
        subscriber.subscribe(&observations, QoS::AtLeastOnce).await.unwrap();
        let (topic, body, retain) = receive_one(&mut events).await;
        assert_eq!(topic, observations);
        assert_eq!(body, json!({"result": 2, "phenomenonTime": "2026-01-02T00:00:00Z"}));
        assert!(retain, "the current state comes as the topic's retained message");

        subscriber.subscribe(format!("v1.1/Things({thing})/name"), QoS::AtLeastOnce).await.unwrap();
        let (_, body, _) = receive_one(&mut events).await;
        assert_eq!(body, json!({"name": "station"}));

        subscriber.subscribe(format!("v1.1/Things({thing})"), QoS::AtLeastOnce).await.unwrap();
        let (_, body, _) = receive_one(&mut events).await;
        assert_eq!(body["@iot.id"], thing);
        assert_eq!(body["name"], "station");
        assert!(body["Datastreams@iot.navigationLink"].is_string(), "shaped like a notification: {body}");

        // A collection of Things has no single current state; a missing entity has none.
        subscriber.subscribe("v1.1/Things", QoS::AtLeastOnce).await.unwrap();
        subscriber.subscribe("v1.1/Things(999)", QoS::AtLeastOnce).await.unwrap();
        nothing_arrives(&mut events).await;

        // Later creates still arrive as ordinary notifications.
        server.create(&format!("/Datastreams({ds})/Observations"), json!({"result": 3}));
        let (topic, body, retain) = receive_one(&mut events).await;
        assert_eq!((topic.as_str(), body["result"].as_i64(), retain), (observations.as_str(), Some(3), false));
    });
}

#[test]
fn by_default_subscribers_get_only_later_changes() {
    let server = TestServer::start("mqtt-no-latest");
    let ds = datastream(&server);
    server.create(&format!("/Datastreams({ds})/Observations"), json!({"result": 1}));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (subscriber, mut events) = client(&server, "plain");
        subscriber.subscribe(format!("v1.1/Datastreams({ds})/Observations"), QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut events).await;
        nothing_arrives(&mut events).await;
    });
}

/// The real `paho-mqtt` from PyPI, MQTT 3.1.1 and 5.0, over TCP and over WebSocket at `/mqtt`.
#[test]
fn paho_mqtt_from_pypi_works_over_tcp_and_websocket() {
    let server = TestServer::start("mqtt-paho");
    let ds = datastream(&server);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/python/paho_mqtt.py");
    let http_port = server.addrs()[0].port().to_string();
    let output = std::process::Command::new("python3")
        .args([script, "127.0.0.1", &server.mqtt_addr().port().to_string(), &http_port, &ds.to_string()])
        .output()
        .expect("python3 runs (install it, and `pip install paho-mqtt`)");
    assert!(
        output.status.success(),
        "paho-mqtt failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every client's valid Observation was stored; no invalid one was.
    let stored = server.get(&format!("/Datastreams({ds})/Observations?$count=true&$select=result"));
    assert_eq!(stored.json["@iot.count"], 4, "{}", stored.text);
}

#[test]
fn a_websocket_without_the_mqtt_subprotocol_is_refused() {
    let server = TestServer::start("mqtt-ws-subprotocol");
    let addr = server.addrs()[0];
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut answer = vec![0; 1024];
    let length = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..length]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("mqtt` subprotocol"), "{answer}");
}

#[test]
fn creates_by_data_array_and_batch_notify_in_commit_order() {
    let server = TestServer::start("mqtt-bulk");
    let ds = datastream(&server);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (subscriber, mut events) = client(&server, "bulk-watcher");
        subscriber.subscribe(format!("v1.1/Datastreams({ds})/Observations"), QoS::AtLeastOnce).await.unwrap();
        subscribed(&mut events).await;
        let rows = json!([{"Datastream": {"@iot.id": ds}, "components": ["result"], "dataArray": [[1], [2], [3]]}]);
        assert_eq!(server.post("/CreateObservations", rows).status, 201);
        let batch = json!({"requests": [
            {"id": "a", "method": "post", "url": format!("Datastreams({ds})/Observations"), "body": {"result": 4}},
            {"id": "b", "method": "post", "url": "Observations", "body": {"result": 5, "Datastream": {"@iot.id": ds}}}
        ]});
        assert_eq!(server.post("/$batch", batch).status, 200);
        let got = receive(&mut events, 5).await;
        let results: Vec<i64> = got.iter().map(|(_, body)| body["result"].as_i64().unwrap()).collect();
        assert_eq!(results, [1, 2, 3, 4, 5], "one notification per Observation, in commit order");
    });
}

/// Debian's `mosquitto_pub` and `mosquitto_sub` against the SensorThings topics of the
/// embedded broker: a v5 publish creates, a wildcard subscriber sees the notification, and an
/// invalid v5 publish is refused with "payload format invalid".
#[test]
fn mosquitto_clients_create_and_receive_on_sensorthings_topics() {
    let server = TestServer::start("mqtt-mosquitto-clients");
    let ds = datastream(&server);
    let port = server.mqtt_addr().port().to_string();
    let topic = format!("v1.1/Datastreams({ds})/Observations");
    let mut subscriber = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-t", "v1.1/+/Observations", "-C", "1", "-W", "10", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
    // Until the subscription is in place, each publish creates one more Observation.
    let publish = |payload: &str| {
        std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-q", "1", "-t", &topic, "-m", payload, "-d"])
            .output()
            .expect("mosquitto_pub runs (apt-get install mosquitto-clients)")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut created = 0;
    // mosquitto_sub exits after its one message.
    while subscriber.try_wait().expect("mosquitto_sub status").is_none() {
        assert!(std::time::Instant::now() < deadline, "mosquitto_sub got no notification");
        assert!(publish(r#"{"result": 12.5}"#).status.success());
        created += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut line = String::new();
    std::io::Read::read_to_string(&mut subscriber.stdout.take().expect("piped"), &mut line).expect("output");
    let (received_topic, body) = line.trim().split_once(' ').expect("topic and payload");
    // A navigation collection the new Observation is announced on: its Datastream's or its
    // FeatureOfInterest's, whichever comes first.
    assert!(received_topic.starts_with("v1.1/") && received_topic.ends_with(")/Observations"), "{line}");
    let body: Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(body["result"], 12.5);
    let stored = server.get(&format!("/Datastreams({ds})/Observations?$count=true&$top=0"));
    assert_eq!(stored.json["@iot.count"], created);

    let refused = publish(r#"{"result": 1, "phenomenonTime": "never"}"#);
    let trace = String::from_utf8_lossy(&refused.stderr).to_string() + &String::from_utf8_lossy(&refused.stdout);
    assert!(trace.contains("RC:153"), "a v5 PUBACK with reason code 0x99: {trace}");
}
