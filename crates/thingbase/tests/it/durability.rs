//! Durability: every acknowledged write survives `kill -9`. The real binary is spawned,
//! Observations are posted from several threads, the process is killed mid-stream, restarted on
//! the same data directory, and every Observation that got a 201 must be there.

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
    Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args(["serve", "--http-port", &port.to_string(), "--mqtt-port", "0", "--log", "warn"])
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

#[test]
fn acknowledged_observations_survive_kill_9() {
    let dir = TempDir::new("durability");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/v1.1");
    let mut child = spawn(&dir, port);
    wait_ready(&base);

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
    let datastream = datastreams.json["value"][0]["@iot.id"].as_i64().expect("datastream id");

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
    let mut stored = std::collections::HashSet::new();
    let mut next = Some(format!("{base}/Datastreams({datastream})/Observations?$select=id&$top=10000"));
    while let Some(url) = next {
        let page = request("GET", &url, None, None);
        assert_eq!(page.status, 200, "{}", page.text);
        for o in page.json["value"].as_array().expect("value") {
            stored.insert(o["@iot.id"].as_i64().expect("id"));
        }
        next = page.json["@iot.nextLink"].as_str().map(str::to_owned);
    }
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
