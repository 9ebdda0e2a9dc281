//! Durability: every acknowledged write survives `kill -9`. The real binary is spawned,
//! Observations are posted (HTTP) or published at QoS 1 (MQTT) from several clients, the
//! process is killed mid-stream, restarted on the same data directory, and every Observation
//! that got a 201 or a PUBACK must be there.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{TempDir, request};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn spawn(dir: &TempDir, port: u16) -> Child {
    spawn_with_mqtt(dir, port, 0)
}

/// The PostgreSQL database of the server kept in `dir` when the suite runs on PostgreSQL: one
/// per directory, the same after a restart.
fn database_of(dir: &TempDir) -> Option<String> {
    static DATABASES: Mutex<Vec<(std::path::PathBuf, String)>> = Mutex::new(Vec::new());
    let mut known = DATABASES.lock().expect("not poisoned");
    if let Some((_, url)) = known.iter().find(|(path, _)| *path == dir.0) {
        return Some(url.clone());
    }
    let url = crate::support::backend_database("durability")?;
    known.push((dir.0.clone(), url.clone()));
    Some(url)
}

fn spawn_with_mqtt(dir: &TempDir, port: u16, mqtt_port: u16) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thingbase"));
    if let Some(url) = database_of(dir) {
        command.env("THINGBASE_DATABASE_URL", url);
    }
    command
        .args([
            "serve",
            "--auth",
            "off",
            "--http-port",
            &port.to_string(),
            "--mqtt-port",
            &mqtt_port.to_string(),
            "--log",
            "warn",
        ])
        .env("THINGBASE_DATA_DIR", &dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the thingbase binary starts")
}

fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(base.trim_start_matches("http://").split('/').next().unwrap_or("")).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the server did not start listening");
}

/// Creates a Thing with one Datastream; returns the Datastream's id.
fn datastream(base: &str) -> i64 {
    let thing = request(
        "POST",
        &format!("{base}/Things"),
        Some(
            json!({
                "name": "t", "description": "d",
                "Locations": [{"name": "l", "description": "d", "encodingType": "application/geo+json",
                               "location": {"type": "Point", "coordinates": [1, 2]}}],
                "Datastreams": [{"name": "ds", "description": "d", "unitOfMeasurement": {},
                    "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                    "Sensor": {"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"},
                    "ObservedProperty": {"name": "p", "definition": "d", "description": "d"}}]
            })
            .to_string(),
        ),
        Some("application/json"),
    );
    assert_eq!(thing.status, 201, "{}", thing.text);
    let datastreams = request("GET", &format!("{base}/Datastreams"), None, None);
    datastreams.json["value"][0]["@iot.id"].as_i64().expect("datastream id")
}

/// Every value of `property` among the Datastream's Observations, read page by page.
fn stored(base: &str, datastream: i64, property: &str) -> std::collections::HashSet<i64> {
    let mut stored = std::collections::HashSet::new();
    let mut next = Some(format!("{base}/Datastreams({datastream})/Observations?$select={property}&$top=10000"));
    while let Some(url) = next {
        let page = request("GET", &url, None, None);
        assert_eq!(page.status, 200, "{}", page.text);
        for o in page.json["value"].as_array().expect("value") {
            stored.insert(o[if property == "id" { "@iot.id" } else { property }].as_i64().expect("a number"));
        }
        next = page.json["@iot.nextLink"].as_str().map(str::to_owned);
    }
    stored
}

#[test]
fn acknowledged_observations_survive_kill_9() {
    let dir = TempDir::new("durability");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/v1.1");
    let mut child = spawn(&dir, port);
    wait_ready(&base);
    let datastream = datastream(&base);

    let acknowledged = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let acknowledged = Arc::clone(&acknowledged);
            let stop = Arc::clone(&stop);
            let url = format!("{base}/Datastreams({datastream})/Observations");
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({"result": w * 1_000_000 + n}).to_string();
                    let Ok(mut response) = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("prefer", "return=minimal")
                        .send(body)
                    else {
                        return;
                    };
                    if response.status().as_u16() != 201 {
                        continue;
                    }
                    let _ = response.body_mut().read_to_string();
                    let id = response
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| l.rsplit('(').next())
                        .and_then(|l| l.trim_end_matches(')').parse::<i64>().ok())
                        .expect("a 201 carries the Location of the new Observation");
                    acknowledged.lock().expect("lock").push(id);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 50, "too few writes before the kill to mean anything: {}", acknowledged.len());

    let mut child = spawn(&dir, port);
    wait_ready(&base);
    let stored = stored(&base, datastream, "id");
    let _ = child.kill();
    let _ = child.wait();
    let lost: Vec<_> = acknowledged.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged Observations were lost: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn pubacked_observations_survive_kill_9() {
    let dir = TempDir::new("durability-mqtt");
    let (port, mqtt_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}/v1.1");
    let mut child = spawn_with_mqtt(&dir, port, mqtt_port);
    wait_ready(&base);
    let datastream = datastream(&base);

    // Each client keeps several publishes in flight and records a result once its PUBACK is
    // in: rumqttc hands out packet ids in publish order, and its Outgoing event says which.
    let acknowledged = Arc::new(Mutex::new(Vec::<i64>::new()));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let clients: Vec<_> = (0..8)
        .map(|w| {
            let acknowledged = Arc::clone(&acknowledged);
            runtime.spawn(async move {
                let mut options = rumqttc::MqttOptions::new(format!("device-{w}"), "127.0.0.1", mqtt_port);
                options.set_keep_alive(Duration::from_secs(30)).set_inflight(16);
                let (client, mut events) = rumqttc::AsyncClient::new(options, 64);
                let topic = format!("v1.1/Datastreams({datastream})/Observations");
                let publisher = tokio::spawn(async move {
                    for n in 1.. {
                        let body = json!({"result": w * 1_000_000 + n}).to_string();
                        if client.publish(&topic, rumqttc::QoS::AtLeastOnce, false, body).await.is_err() {
                            return;
                        }
                    }
                });
                let mut in_flight = std::collections::HashMap::new();
                let mut next = 1;
                // Ends with an error when the server is killed.
                while let Ok(event) = events.poll().await {
                    match event {
                        rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(packet_id)) => {
                            in_flight.insert(packet_id, w * 1_000_000 + next);
                            next += 1;
                        }
                        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack)) => {
                            let result = in_flight.remove(&ack.pkid).expect("a PUBACK for a publish in flight");
                            acknowledged.lock().expect("lock").push(result);
                        }
                        _ => {}
                    }
                }
                publisher.abort();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    runtime.block_on(async {
        for client in clients {
            let _ = tokio::time::timeout(Duration::from_secs(10), client).await;
        }
    });
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 50, "too few PUBACKs before the kill to mean anything: {}", acknowledged.len());

    let mut child = spawn_with_mqtt(&dir, port, mqtt_port);
    wait_ready(&base);
    let stored = stored(&base, datastream, "result");
    let _ = child.kill();
    let _ = child.wait();
    let lost: Vec<_> = acknowledged.iter().filter(|result| !stored.contains(result)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} PUBACKed Observations were lost: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
}
