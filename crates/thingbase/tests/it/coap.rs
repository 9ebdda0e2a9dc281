//! CoAP over DTLS with libcoap's real `coap-client` (Debian `libcoap3-bin`; `cargo xtask ci`
//! installs it): an admitted device with a secret POSTs an Observation with its URN as PSK
//! identity and its `dtlsPsk` as key and gets 2.01 after the commit; a wrong key fails the
//! handshake; a device that is not admitted gets 4.03 with the reason. Built with the `coap`
//! feature only.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Response, TestServer, request_with};

const ADMIN: &str = "tbt_c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9c0a9";
const TEMPERATURE: &str = "http://example.org/def/temperature";

struct Hub {
    server: TestServer,
    coaps_port: u16,
}

/// A hub with access control on and CoAPS on a free port.
fn hub(name: &str) -> Hub {
    let server =
        TestServer::start_with(name, |c| c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) });
    let coaps_port = server.coaps_addr().port();
    Hub { server, coaps_port }
}

impl Hub {
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let auth = format!("Bearer {ADMIN}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let root = self.server.base.trim_end_matches("/v1.1");
        request_with(method, &format!("{root}{path}"), body.map(|b| b.to_string()), &headers)
    }

    /// A device class sensing temperature, supported until `support_until`.
    fn class(&self, model: &str, support_until: &str) -> i64 {
        let response = self.admin(
            "POST",
            "/admin/device-classes",
            Some(json!({
                "manufacturer": "Acme Sensors", "model": model, "supportUntil": support_until,
                "vulnerabilityContact": "https://acme.example/.well-known/security.txt",
                "sensing": [TEMPERATURE], "updateMechanism": "suit",
                "firmware": [{"version": "1.4.2", "digest": format!("sha256:{}", "ab".repeat(32))}],
            })),
        );
        assert_eq!(response.status, 201, "{}", response.text);
        response.json["id"].as_i64().expect("class id")
    }

    /// A Thing with a Location and one temperature Datastream; returns both ids.
    fn thing(&self) -> (i64, i64) {
        let response = self.admin(
            "POST",
            "/v1.1/Things",
            Some(json!({
                "name": "station", "description": "a weather station",
                "Locations": [{"name": "here", "description": "d", "encodingType": "application/geo+json",
                               "location": {"type": "Point", "coordinates": [8.5, 47.4]}}],
                "Datastreams": [{
                    "name": "temperature", "description": "d",
                    "unitOfMeasurement": {"name": "degree Celsius", "symbol": "°C", "definition": "ucum:Cel"},
                    "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                    "Sensor": {"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"},
                    "ObservedProperty": {"name": "temperature", "definition": TEMPERATURE, "description": "d"},
                }],
            })),
        );
        assert_eq!(response.status, 201, "{}", response.text);
        let thing = self.admin("GET", "/v1.1/Things?$orderby=id%20desc&$top=1&$expand=Datastreams", None);
        let thing = &thing.json["value"][0];
        let datastream = thing["Datastreams"][0]["@iot.id"].as_i64().expect("datastream id");
        (thing["@iot.id"].as_i64().expect("thing id"), datastream)
    }

    /// Registers a device with a secret (and no enrollment token); returns its `dtlsPsk`.
    fn register(&self, urn: &str, class: i64, thing: i64) -> (Value, String) {
        let response = self.admin(
            "POST",
            "/admin/devices",
            Some(json!({"urn": urn, "class": class, "thing": thing, "secret": true,
                        "enrollmentToken": false, "firmwareVersion": "1.4.2"})),
        );
        assert_eq!(response.status, 201, "{}", response.text);
        let psk = response.json["dtlsPsk"].as_str().expect("a dtlsPsk").to_owned();
        (response.json, psk)
    }

    /// A device registered with a secret on a new Thing, admitted (its class is supported
    /// until 2035): its `dtlsPsk`, and the path of its Datastream's Observations.
    fn admitted_device(&self, urn: &str) -> (String, String) {
        let class = self.class("WS-COAP", "2035-01-01T00:00:00Z");
        let (thing, datastream) = self.thing();
        let (device, psk) = self.register(urn, class, thing);
        assert_eq!(device["state"], "admitted", "{device}");
        (psk, format!("/v1.1/Datastreams({datastream})/Observations"))
    }

    fn observations(&self) -> Value {
        self.admin("GET", "/v1.1/Observations?$count=true", None).json
    }

    /// `coap-client -m post` of `body` as `identity` with `key` (`extra` arguments after ours):
    /// what it printed, the answer's header among it (`v:1 t:ACK c:2.01 ...` at verbosity 6)
    /// and, for errors, the code and the diagnostic payload.
    fn post(&self, identity: &str, key: &str, path: &str, body: &str, extra: &[&str]) -> String {
        let uri = format!("coaps://127.0.0.1:{}{path}", self.coaps_port);
        let output = Command::new(coap_client())
            .args(["-m", "post", "-u", identity, "-k", key, "-t", "application/json", "-B", "3", "-v", "6"])
            .args(extra)
            .args(["-e", body, &uri])
            .output()
            .expect("coap-client runs");
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }
}

/// libcoap's client, whichever DTLS library it was built with.
fn coap_client() -> &'static str {
    ["coap-client", "coap-client-openssl", "coap-client-gnutls"]
        .into_iter()
        .find(|name| Command::new(name).arg("-h").output().is_ok())
        .expect("coap-client (Debian libcoap3-bin; `cargo xtask ci` installs it)")
}

#[test]
fn an_admitted_device_posts_an_observation_with_coap_client_over_dtls_psk() {
    let hub = hub("coap-post");
    let class = hub.class("WS-COAP", "2035-01-01T00:00:00Z");
    let (thing, datastream) = hub.thing();
    let urn = "urn:dev:mac:0024befffe80c0a1";
    let (device, psk) = hub.register(urn, class, thing);
    assert_eq!(device["state"], "admitted", "{device}");
    assert!(psk.starts_with("tbp_") && psk.len() == 32, "{psk}");
    let path = format!("/v1.1/Datastreams({datastream})/Observations");

    // Confirmable: a piggybacked 2.01 with the new Observation's Location-Path.
    let body = json!({"result": 21.5, "phenomenonTime": "2026-12-01T10:00:00Z"}).to_string();
    let printed = hub.post(urn, &psk, &path, &body, &[]);
    assert!(printed.contains("t:ACK c:2.01"), "{printed}");
    let observations = hub.observations();
    assert_eq!(observations["@iot.count"], 1, "{observations}");
    let id = observations["value"][0]["@iot.id"].as_i64().expect("an id");
    assert!(printed.contains(&format!("Location-Path:v1.1, Location-Path:Observations({id})")), "{printed}");
    let stored = hub.admin("GET", &format!("/v1.1/Observations({id})?$expand=Datastream($select=id)"), None);
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.json["result"], 21.5);
    assert_eq!(stored.json["Datastream"]["@iot.id"], datastream);

    // Non-confirmable: answered by a NON.
    let printed = hub.post(urn, &psk, &path, &json!({"result": 22.0}).to_string(), &["-N"]);
    assert!(printed.contains("t:NON c:2.01"), "{printed}");
    assert_eq!(hub.observations()["@iot.count"], 2);

    // Refusals carry the reason as a diagnostic payload.
    let printed = hub.post(urn, &psk, &path, r#"{"result": "#, &[]);
    assert!(printed.contains("c:4.00") && printed.contains("the payload is not JSON"), "{printed}");
    let printed = hub.post(urn, &psk, "/v1.1/Datastreams(999)/Observations", &body, &[]);
    assert!(printed.contains("c:4.04"), "{printed}");
    let printed = hub.post(urn, &psk, "/v1.1/Things", &body, &[]);
    assert!(printed.contains("c:4.05") && printed.contains("only creates Observations"), "{printed}");
    assert_eq!(hub.observations()["@iot.count"], 2, "nothing more written");
}

#[test]
fn a_wrong_key_or_an_unknown_identity_fails_the_handshake_and_writes_nothing() {
    let hub = hub("coap-wrong-key");
    let urn = "urn:dev:mac:0024befffe80c0a2";
    let (psk, path) = hub.admitted_device(urn);
    let body = json!({"result": 1.0}).to_string();
    let wrong = format!("tbp_{}", "A".repeat(28));
    assert_ne!(wrong, psk);
    for (identity, key) in [(urn, wrong.as_str()), ("urn:dev:mac:0024befffe80c0ff", psk.as_str())] {
        let printed = hub.post(identity, key, &path, &body, &[]);
        assert!(!printed.contains("c:2.01"), "{printed}");
    }
    assert_eq!(hub.observations()["@iot.count"], 0, "nothing written");
    // The right key still works afterwards.
    let printed = hub.post(urn, &psk, &path, &body, &[]);
    assert!(printed.contains("c:2.01"), "{printed}");
}

#[test]
fn an_address_whose_handshakes_keep_failing_is_ignored_for_a_while_and_others_are_not() {
    let hub = hub("coap-pause");
    let urn = "urn:dev:mac:0024befffe80c0a4";
    let (psk, path) = hub.admitted_device(urn);
    let body = json!({"result": 1.0}).to_string();
    let wrong = format!("tbp_{}", "B".repeat(28));
    // Four failures and a success: the success forgets them.
    for _ in 0..4 {
        assert!(!hub.post(urn, &wrong, &path, &body, &["-B", "1"]).contains("c:2.01"));
    }
    let printed = hub.post(urn, &psk, &path, &body, &[]);
    assert!(printed.contains("c:2.01"), "four failures pause nothing: {printed}");
    // Five in a row: the address is ignored, even with the right key, for 30 s.
    for _ in 0..5 {
        assert!(!hub.post(urn, &wrong, &path, &body, &["-B", "1"]).contains("c:2.01"));
    }
    let printed = hub.post(urn, &psk, &path, &body, &[]);
    assert!(!printed.contains("c:2.01"), "the address is paused: {printed}");
    // Another address is not.
    let printed = hub.post(urn, &psk, &path, &body, &["-a", "127.0.0.2"]);
    assert!(printed.contains("c:2.01"), "another address shakes hands: {printed}");
    assert_eq!(hub.observations()["@iot.count"], 2, "only the two successes wrote");
}

#[test]
fn a_device_that_is_not_admitted_gets_4_03_with_the_reason() {
    let hub = hub("coap-not-admitted");
    let class = hub.class("WS-OLD", "2020-01-01T00:00:00Z");
    let (thing, datastream) = hub.thing();
    let urn = "urn:dev:mac:0024befffe80c0a3";
    let (device, psk) = hub.register(urn, class, thing);
    assert_eq!(device["state"], "pending", "{device}");
    let body = json!({"result": 3.0}).to_string();
    let printed = hub.post(urn, &psk, &format!("/v1.1/Datastreams({datastream})/Observations"), &body, &[]);
    assert!(printed.contains("c:4.03"), "{printed}");
    assert!(printed.contains("support period ended"), "the reason: {printed}");
    assert_eq!(hub.observations()["@iot.count"], 0, "nothing written");
}
