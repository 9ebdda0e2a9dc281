//! Bring your own broker: Thingbase bridged to a real Mosquitto (Debian's package, started here
//! on a private port). Devices publish to Mosquitto with `mosquitto_pub` and the Observations
//! are created in Thingbase; notifications of creates made over HTTP reach Mosquitto's
//! subscribers; Thingbase's own notifications, echoed back by Mosquitto, create nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use crate::mqtt_sensorthings::datastream;
use crate::support::{TempDir, TestServer};

/// A Mosquitto broker on a free loopback port, stopped when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = TempDir::new("mosquitto");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.0.join("mosquitto.conf");
        std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
            .unwrap();
        let binary =
            if std::path::Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, _dir: dir }
    }

    fn publish(&self, topic: &str, payload: &str) {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-V", "5", "-q", "1", "-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
        assert!(status.success(), "mosquitto_pub failed");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next publish within `wait`, as (topic, JSON payload).
async fn next_publish(events: &mut EventLoop, wait: Duration) -> Option<(String, Value)> {
    tokio::time::timeout(wait, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("connected to mosquitto") {
                return (p.topic.clone(), serde_json::from_slice(&p.payload).expect("JSON"));
            }
        }
    })
    .await
    .ok()
}

fn results(server: &TestServer, ds: i64, result: i64) -> u64 {
    let found = server.get(&format!("/Datastreams({ds})/Observations?$filter=result%20eq%20{result}&$count=true"));
    found.json["@iot.count"].as_u64().unwrap_or(0)
}

#[test]
fn a_bridge_to_mosquitto_takes_device_publishes_and_sends_notifications() {
    let mosquitto = Mosquitto::start();
    let server = TestServer::start_with("mqtt-bridge", |c| {
        c.mqtt.bridge = Some(mqtt_api::BridgeConfig {
            host: "127.0.0.1".into(),
            port: mosquitto.port,
            client_id: "thingbase-test".into(),
            username: None,
            password: None,
            share_group: "thingbase".into(),
            token: None,
        });
    });
    let ds = datastream(&server);
    let topic = format!("v1.1/Datastreams({ds})/Observations");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut options = MqttOptions::new("dashboard", "127.0.0.1", mosquitto.port);
        options.set_keep_alive(Duration::from_secs(30));
        let (subscriber, mut events) = AsyncClient::new(options, 100);
        subscriber.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();

        // The bridge is up once a create over HTTP is announced on Mosquitto.
        let mut announced = None;
        for attempt in 0..40 {
            server.create(&format!("/Datastreams({ds})/Observations"), json!({"result": 1000 + attempt}));
            if let Some(publish) = next_publish(&mut events, Duration::from_millis(250)).await {
                announced = Some(publish);
                break;
            }
        }
        let (announced_topic, body) = announced.expect("a notification of an HTTP create on mosquitto");
        assert_eq!(announced_topic, topic);
        assert!(body["result"].as_i64().is_some_and(|r| r >= 1000), "{body}");

        // A device publishes to Mosquitto; Thingbase creates the Observation and announces it.
        // Mosquitto's subscribers see the device's own publish too (it is on the same topic);
        // Thingbase's notification is the one with an id.
        mosquitto.publish(&topic, r#"{"result": 99}"#);
        loop {
            let (_, body) = next_publish(&mut events, Duration::from_secs(10)).await.expect("the notification");
            if body["result"] == 99 && body["@iot.id"].is_i64() {
                break;
            }
        }
        assert_eq!(results(&server, ds, 99), 1);

        // An invalid publish creates nothing and the bridge keeps going.
        mosquitto.publish(&topic, "not json");
        mosquitto.publish(&topic, r#"{"result": 100}"#);
        let deadline = Instant::now() + Duration::from_secs(10);
        while results(&server, ds, 100) == 0 {
            assert!(Instant::now() < deadline, "the publish after an invalid one was not created");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The notifications Mosquitto echoes back to the bridge created nothing more.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!((results(&server, ds, 99), results(&server, ds, 100)), (1, 1));
    });
}
