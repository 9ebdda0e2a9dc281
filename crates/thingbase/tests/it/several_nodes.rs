//! Several Thingbase nodes on one PostgreSQL database, with no shared memory between them:
//! every node serves every request, a change made through any node reaches the MQTT
//! subscribers of every node (PostgreSQL `LISTEN/NOTIFY`), and the derived Datastream fields
//! stay right when nodes write to one Datastream at once. Always on PostgreSQL (the throwaway
//! cluster of `pg-test`), whichever backend the rest of the suite runs on.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use crate::mqtt_sensorthings::datastream;
use crate::support::TestServer;

fn nodes(name: &str, count: usize) -> Vec<TestServer> {
    let cluster = pg_test::cluster().unwrap_or_else(|e| panic!("a PostgreSQL cluster: {e}"));
    let url = cluster.database(name).unwrap_or_else(|e| panic!("a database: {e}"));
    (0..count).map(|i| TestServer::start_with(&format!("{name}-{i}"), |c| c.database_url = Some(url.clone()))).collect()
}

#[test]
fn three_nodes_on_one_database_serve_every_request_and_notify_every_subscriber() {
    let nodes = nodes("it_three_nodes", 3);
    let ds = datastream(&nodes[0]);
    let topic = format!("v1.1/Datastreams({ds})/Observations");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received: Vec<BTreeSet<i64>> = runtime.block_on(async {
        let mut subscribers = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let addr = node.mqtt_addr();
            let options = MqttOptions::new(format!("watcher-{i}"), addr.ip().to_string(), addr.port());
            let (client, mut events) = AsyncClient::new(options, 100);
            client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), events.poll()).await.expect("a SUBACK");
                if let Event::Incoming(Packet::SubAck(_)) = event.expect("connected") {
                    break;
                }
            }
            subscribers.push((client, events));
        }
        // One Observation through each node over HTTP, and one over MQTT through the second.
        for (i, node) in nodes.iter().enumerate() {
            let created = node.post(&format!("/Datastreams({ds})/Observations"), json!({"result": i}));
            assert_eq!(created.status, 201, "node {i}: {}", created.text);
        }
        let mut early = BTreeSet::new();
        let (publisher, events) = &mut subscribers[1];
        publisher.publish(&topic, QoS::AtLeastOnce, false, json!({"result": 10}).to_string()).await.unwrap();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.poll()).await.expect("a PUBACK");
            match event.expect("connected") {
                Event::Incoming(Packet::PubAck(_)) => break,
                Event::Incoming(Packet::Publish(p)) => {
                    let value: Value = serde_json::from_slice(&p.payload).expect("JSON");
                    early.insert(value["result"].as_i64().expect("a result"));
                }
                _ => {}
            }
        }
        let mut received = Vec::new();
        for (i, (_, events)) in subscribers.iter_mut().enumerate() {
            let mut results = if i == 1 { std::mem::take(&mut early) } else { BTreeSet::new() };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while results.len() < 4 {
                let Ok(event) = tokio::time::timeout_at(deadline, events.poll()).await else { break };
                if let Event::Incoming(Packet::Publish(p)) = event.expect("connected") {
                    let value: Value = serde_json::from_slice(&p.payload).expect("JSON");
                    results.insert(value["result"].as_i64().expect("a result"));
                }
            }
            received.push(results);
        }
        received
    });
    let all: BTreeSet<i64> = [0, 1, 2, 10].into();
    for (i, results) in received.iter().enumerate() {
        assert_eq!(results, &all, "the subscriber on node {i} hears of every node's Observations");
    }
    for (i, node) in nodes.iter().enumerate() {
        let page = node.get(&format!("/Datastreams({ds})/Observations?$count=true&$orderby=result"));
        assert_eq!(page.json["@iot.count"], 4, "node {i} reads what every node wrote: {}", page.text);
    }
}

#[test]
fn nodes_writing_to_one_datastream_at_once_keep_its_derived_times_right() {
    let nodes = nodes("it_concurrent_nodes", 3);
    let ds = datastream(&nodes[0]);
    let path = format!("/Datastreams({ds})/Observations");
    std::thread::scope(|scope| {
        for (i, node) in nodes.iter().enumerate() {
            let path = &path;
            scope.spawn(move || {
                for n in 0..40 {
                    // Node i writes minutes i, i + 3, i + 6, ... of one hour.
                    let minute = i + 3 * (n % 20);
                    let time = format!("2024-05-01T10:{minute:02}:00Z");
                    let created = node.post(path, json!({"result": n, "phenomenonTime": time}));
                    assert_eq!(created.status, 201, "{}", created.text);
                }
            });
        }
    });
    for node in &nodes {
        let datastream = node.get(&format!("/Datastreams({ds})"));
        assert_eq!(
            datastream.json["phenomenonTime"], "2024-05-01T10:00:00Z/2024-05-01T10:59:00Z",
            "{}",
            datastream.text
        );
        let count = node.get(&format!("{path}?$count=true&$top=0"));
        assert_eq!(count.json["@iot.count"], 120);
    }
}

/// A token revoked through one node is refused by the others at once: the change is announced
/// to them (`NOTIFY`), so they do not trust what they cached for its 10 seconds.
#[test]
fn a_token_revoked_on_one_node_is_refused_by_the_others_at_once() {
    use crate::access_control::{ADMIN, As};
    let cluster = pg_test::cluster().unwrap_or_else(|e| panic!("a PostgreSQL cluster: {e}"));
    let url = cluster.database("it_nodes_revoke").unwrap_or_else(|e| panic!("a database: {e}"));
    let nodes: Vec<TestServer> = (0..2)
        .map(|i| {
            TestServer::start_with(&format!("it_nodes_revoke-{i}"), |c| {
                c.database_url = Some(url.clone());
                c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) };
            })
        })
        .collect();
    let admin = As::token(&nodes[0], ADMIN);
    let made = admin.post("/admin/tokens", json!({"label": "station"}));
    assert_eq!(made.status, 201, "{}", made.text);
    let secret = made.json["token"].as_str().expect("a token");
    let whoami = As::token(&nodes[0], secret).get("/admin/whoami");
    let id = whoami.json["identity"]["id"].as_i64().unwrap_or_else(|| panic!("a token id: {}", whoami.text));
    // Both nodes take the token, and the second caches it.
    for node in &nodes {
        let things = As::token(node, secret).get("/Things");
        assert_eq!(things.status, 200, "{}", things.text);
    }
    let started = std::time::Instant::now();
    assert_eq!(admin.send("DELETE", &format!("/admin/tokens/{id}"), None).status, 204);
    // Within its cache's 10 seconds the second node must have heard; give the announcement
    // a few seconds on a busy machine.
    let refused = loop {
        let status = As::token(&nodes[1], secret).get("/Things").status;
        if status == 401 || started.elapsed() > Duration::from_secs(6) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused, 401, "the second node still took the token {:?} after it was revoked", started.elapsed());
    assert_eq!(As::token(&nodes[0], secret).get("/Things").status, 401, "the first node knew at once");
}
