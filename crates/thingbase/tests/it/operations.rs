//! Operations: the real binary's command line, `/health`, `/metrics`, the OpenAPI document, the
//! service root, and graceful shutdown on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TempDir, request};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_thingbase"))
}

#[test]
fn help_lists_every_setting_and_unknown_flags_are_errors() {
    let help = binary().args(["serve", "--help"]).output().expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--data-dir",
        "--bind",
        "--http-port",
        "--auth",
        "THINGBASE_ADMIN_TOKEN",
        "--log-format",
        "THINGBASE_HTTP_PORT",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let bad = binary().args(["serve", "--no-such-flag"]).output().expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--no-such-flag"));
}

#[test]
fn health_metrics_openapi_and_graceful_shutdown() {
    let dir = TempDir::new("operations");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mqtt_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = binary()
        .args([
            "serve",
            "--auth",
            "off",
            "--log-format",
            "json",
            "--mqtt-port",
            &mqtt_port.to_string(),
            "--https-port",
            "0",
            "--mqtts-port",
            "0",
        ])
        .env("THINGBASE_HTTP_PORT", port.to_string())
        .env("THINGBASE_DATA_DIR", &dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let root = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    assert_eq!(request("GET", &format!("{root}/health"), None, None).json["status"], "ok");
    let service = request("GET", &format!("{root}/v1.1"), None, None).json;
    let sets: Vec<&str> = service["value"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(sets.contains(&"MultiDatastreams") && sets.contains(&"FeaturesOfInterest"), "{sets:?}");
    let conformance = service["serverSettings"]["conformance"].as_array().unwrap();
    assert!(conformance.iter().any(|c| c.as_str().unwrap().ends_with("create-update-delete")));
    assert!(conformance.iter().any(|c| c.as_str().unwrap().ends_with("receive-updates-via-mqtt/receive-updates")));
    let create_via_mqtt =
        "http://www.opengis.net/spec/iot_sensing/1.1/req/create-observations-via-mqtt/observations-creation";
    assert_eq!(
        service["serverSettings"][create_via_mqtt]["endpoints"],
        serde_json::json!([format!("mqtt://127.0.0.1:{mqtt_port}"), format!("ws://127.0.0.1:{port}/mqtt")])
    );

    let openapi = request("GET", &format!("{root}/openapi.json"), None, None).json;
    assert_eq!(openapi["openapi"], "3.0.3");
    assert!(openapi["paths"]["/Things({id})"]["patch"].is_object());

    request("GET", &format!("{root}/v1.1/Things"), None, None);
    // An MQTT client that is still connected, subscribed, and has published one message.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mqtt = runtime.block_on(async {
        let (client, mut events) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("ops", "127.0.0.1", mqtt_port), 10);
        client.subscribe("ops/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
        client.publish("ops/x", rumqttc::QoS::AtLeastOnce, false, "1").await.unwrap();
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = events.poll().await.unwrap() {
                break;
            }
        }
        (client, tokio::spawn(async move { while events.poll().await.is_ok() {} }))
    });
    let metrics = request("GET", &format!("{root}/metrics"), None, None).text;
    for name in [
        "thingbase_http_requests_total",
        "mqtt_connections 1",
        "mqtt_subscriptions 1",
        "mqtt_messages_received_total 1",
        "mqtt_messages_sent_total 1",
        "mqtt_queued_messages",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    drop(mqtt);
    drop(runtime);

    // SIGTERM: the process finishes and exits cleanly.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn listens_on_ipv6_and_ipv4_together() {
    let server = crate::support::TestServer::start_with("dual-stack", |config| {
        config.bind = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    });
    assert_eq!(server.get("/Things").status, 200);
    let v6 = server.addrs().into_iter().find(|a| a.is_ipv6()).expect("an IPv6 listener");
    let response = request("GET", &format!("http://{v6}/v1.1/Things"), None, None);
    assert_eq!(response.status, 200, "{}", response.text);
}

#[test]
fn oversize_bodies_get_413_with_a_json_error() {
    let server = crate::support::TestServer::start_with("oversize", |config| config.max_body_bytes = 1024);
    let big = serde_json::json!({"name": "x".repeat(4096), "description": "d"});
    let response = server.post("/Things", big);
    assert_eq!(response.status, 413, "{}", response.text);
    assert_eq!(response.json["error"], "body_too_large");
    assert_eq!(server.post("/Things", serde_json::json!({"name": "x", "description": "d"})).status, 201);
}
