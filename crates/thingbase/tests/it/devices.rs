//! Trusted devices end to end, as a new user does it from the README: declare a device class,
//! register a device, enroll it over EST with `openssl req` + `curl` (and in Rust with a
//! generated key), publish with `mosquitto_pub --cert` over MQTTS and `curl --cert` over
//! HTTPS; and every refusal the admission gate and the CA make: a reused token, a foreign
//! URN, a revoked certificate, an ended support period, a default password, undeclared
//! sensing, another Thing's Datastream, TLS below 1.2. Real openssl, curl, mosquitto_pub and
//! real TLS handshakes.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::support::{Response, TempDir, TestServer, request_with};

const ADMIN: &str = "tbt_d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0";
const TEMPERATURE: &str = "http://example.org/def/temperature";
const HUMIDITY: &str = "http://example.org/def/humidity";

struct Hub {
    server: TestServer,
    files: TempDir,
    ca: PathBuf,
}

fn hub(name: &str) -> Hub {
    let server =
        TestServer::start_with(name, |c| c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) });
    let files = TempDir::new(&format!("{name}-files"));
    let ca = files.0.join("ca.pem");
    let pem = request_with("GET", &format!("{}/pki/ca.pem", root(&server)), None, &[]);
    assert_eq!(pem.status, 200, "{}", pem.text);
    std::fs::write(&ca, pem.text).expect("CA written");
    Hub { server, files, ca }
}

fn root(server: &TestServer) -> String {
    server.base.trim_end_matches("/v1.1").to_owned()
}

impl Hub {
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let auth = format!("Bearer {ADMIN}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        request_with(method, &format!("{}{path}", root(&self.server)), body.map(|b| b.to_string()), &headers)
    }

    fn https(&self) -> String {
        format!("https://localhost:{}", self.server.https_addr().port())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.files.0.join(name)
    }

    /// A device class declaring `sensing`, supported until `support_until`.
    fn class(&self, model: &str, sensing: &[&str], support_until: &str) -> i64 {
        let response = self.admin(
            "POST",
            "/admin/device-classes",
            Some(json!({
                "manufacturer": "Acme Sensors",
                "model": model,
                "supportUntil": support_until,
                "vulnerabilityContact": "https://acme.example/.well-known/security.txt",
                "sensing": sensing,
                "updateMechanism": "suit",
                "firmware": [{"version": "1.4.2", "digest": format!("sha256:{}", "ab".repeat(32))}],
            })),
        );
        assert_eq!(response.status, 201, "{}", response.text);
        response.json["id"].as_i64().expect("class id")
    }

    /// A Thing with a Location (so Observations get a generated feature) and one Datastream per
    /// definition; returns the Thing and the Datastreams.
    fn thing(&self, definitions: &[&str]) -> (i64, Vec<i64>) {
        let datastreams: Vec<Value> = definitions
            .iter()
            .map(|definition| {
                json!({
                    "name": format!("stream of {definition}"), "description": "d",
                    "unitOfMeasurement": {"name": "u", "symbol": "u", "definition": "u"},
                    "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                    "Sensor": {"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"},
                    "ObservedProperty": {"name": definition, "definition": definition, "description": "d"},
                })
            })
            .collect();
        let response = self.admin(
            "POST",
            "/v1.1/Things?$expand=Datastreams",
            Some(json!({
                "name": "station", "description": "a weather station",
                "Locations": [{"name": "here", "description": "d", "encodingType": "application/geo+json",
                               "location": {"type": "Point", "coordinates": [8.5, 47.4]}}],
                "Datastreams": datastreams,
            })),
        );
        assert_eq!(response.status, 201, "{}", response.text);
        let thing = self.admin("GET", "/v1.1/Things?$orderby=id%20desc&$top=1&$expand=Datastreams($orderby=id)", None);
        let thing = &thing.json["value"][0];
        let ids = thing["Datastreams"].as_array().expect("datastreams").iter().filter_map(|d| d["@iot.id"].as_i64());
        (thing["@iot.id"].as_i64().expect("thing id"), ids.collect())
    }

    fn register(&self, body: Value) -> Response {
        self.admin("POST", "/admin/devices", Some(body))
    }

    /// Registers `urn` for the Thing and returns its enrollment token.
    fn register_for_token(&self, urn: &str, class: i64, thing: i64) -> String {
        let response = self.register(json!({"urn": urn, "class": class, "thing": thing, "firmwareVersion": "1.4.2"}));
        assert_eq!(response.status, 201, "{}", response.text);
        response.json["enrollmentToken"].as_str().expect("a token").to_owned()
    }

    fn device(&self, urn: &str) -> Value {
        let response = self.admin("GET", &format!("/devices/{urn}"), None);
        assert_eq!(response.status, 200, "{}", response.text);
        response.json
    }

    fn observation_count(&self) -> i64 {
        let response = self.admin("GET", "/v1.1/Observations?$count=true&$top=0", None);
        response.json["@iot.count"].as_i64().expect("a count")
    }

    /// `openssl req` for a new P-256 key with `name` as CN and SAN URI, then `curl` to
    /// simpleenroll with `token`; the HTTP status and, on 200, the certificate and key files.
    fn enroll_with_openssl(&self, label: &str, name: &str, token: &str) -> (u16, String, PathBuf, PathBuf) {
        let (key, csr, b64) = (
            self.file(&format!("{label}.key")),
            self.file(&format!("{label}.csr")),
            self.file(&format!("{label}.b64")),
        );
        let status = Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
            .arg(&key)
            .args([
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                &format!("subjectAltName=URI:{name}"),
                "-outform",
                "DER",
                "-out",
            ])
            .arg(&csr)
            .output()
            .expect("openssl runs");
        assert!(status.status.success(), "openssl req: {}", String::from_utf8_lossy(&status.stderr));
        let der = std::fs::read(&csr).expect("csr");
        std::fs::write(&b64, base64_lines(&der)).expect("b64");
        let answer = self.file(&format!("{label}.p7"));
        let (code, _) = curl(&[
            "--cacert",
            path(&self.ca),
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/pkcs10",
            "-H",
            "Content-Transfer-Encoding: base64",
            "--data-binary",
            &format!("@{}", path(&b64)),
            "-o",
            path(&answer),
            &format!("{}/.well-known/est/simpleenroll", self.https()),
        ]);
        let body = std::fs::read_to_string(&answer).unwrap_or_default();
        let cert = self.file(&format!("{label}.pem"));
        if code == 200 {
            // RFC 7030's answer: base64 of a certs-only PKCS#7, read back with openssl.
            let der = base64_decode(&body);
            let p7 = self.file(&format!("{label}.p7.der"));
            std::fs::write(&p7, der).expect("p7");
            let out = Command::new("openssl")
                .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
                .arg(&p7)
                .arg("-out")
                .arg(&cert)
                .output()
                .expect("openssl pkcs7 runs");
            assert!(out.status.success(), "openssl pkcs7: {}", String::from_utf8_lossy(&out.stderr));
        }
        (code, body, cert, key)
    }

    /// `curl --cert` over HTTPS: the status (0 when the handshake failed) and the body.
    fn curl_as(
        &self,
        cert: &Path,
        key: &Path,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> (u16, String) {
        let url = format!("{}{path_and_query}", self.https());
        let body_text = body.map(Value::to_string);
        let mut args = vec!["--cacert", path(&self.ca), "--cert", path(cert), "--key", path(key), "-X", method];
        if let Some(text) = &body_text {
            args.extend(["-H", "Content-Type: application/json", "--data-binary", text]);
        }
        args.push(&url);
        curl(&args)
    }

    /// POSTs an Observation to Datastream `datastream` over HTTPS as the device of `cert`.
    fn post_as(&self, cert: &Path, key: &Path, datastream: i64, result: f64) -> (u16, String) {
        let path = format!("/v1.1/Datastreams({datastream})/Observations");
        self.curl_as(cert, key, "POST", &path, Some(&observation(result)))
    }

    /// `mosquitto_pub` over MQTTS with QoS 1 (MQTT 5): whether it ran to the end, and what it
    /// printed (with `-d`, the PUBACK's reason code).
    fn mosquitto_pub(&self, credentials: &[&str], topic: &str, message: &Value) -> (bool, String) {
        let port = self.server.mqtts_addr().port().to_string();
        let output = Command::new("timeout")
            .args(["20", "mosquitto_pub", "-h", "localhost", "-p", &port, "--cafile", path(&self.ca)])
            .args(credentials)
            .args(["-V", "mqttv5", "-q", "1", "-d", "-t", topic, "-m", &message.to_string()])
            .output()
            .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Runs curl; the HTTP status (0 if there was no HTTP answer) and the body on standard out.
fn curl(args: &[&str]) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned() + "\n").collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).expect("base64")
}

fn observation(result: f64) -> Value {
    json!({"result": result, "phenomenonTime": "2026-12-01T10:00:00Z"})
}

#[test]
fn a_device_enrolls_with_openssl_and_curl_and_publishes_over_mqtts_and_https() {
    let hub = hub("device-e2e");
    let class = hub.class("WS-1", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, datastreams) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe804ff1";
    let token = hub.register_for_token("URN:DEV:MAC:0024BEFFFE804FF1", class, thing);
    assert_eq!(hub.device(urn)["state"], "registered");

    let (code, body, cert, key) = hub.enroll_with_openssl("d1", urn, &token);
    assert_eq!(code, 200, "{body}");
    let san = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(String::from_utf8_lossy(&san.stdout).contains(&format!("URI:{urn}")));
    let device = hub.device(urn);
    assert_eq!(device["state"], "admitted", "{device}");
    assert_eq!(device["admission"]["result"], "pass");

    let topic = format!("v1.1/Datastreams({})/Observations", datastreams[0]);
    let (ran, printed) = hub.mosquitto_pub(&["--cert", path(&cert), "--key", path(&key)], &topic, &observation(21.5));
    assert!(ran && printed.contains("RC:0"), "{printed}");
    let (status, body) = hub.post_as(&cert, &key, datastreams[0], 22.5);
    assert_eq!(status, 201, "{body}");
    let results = hub.admin("GET", "/v1.1/Observations?$orderby=result&$select=result", None);
    assert_eq!(results.json["value"], json!([{"result": 21.5}, {"result": 22.5}]));

    // The device reads as a viewer of its project and sees itself.
    let (status, body) = hub.curl_as(&cert, &key, "GET", &format!("/devices/{urn}"), None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = hub.curl_as(&cert, &key, "GET", "/admin/whoami", None);
    assert_eq!(status, 200, "{body}");
    let me: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        me["identity"],
        json!({"kind": "device", "urn": urn, "project": 1, "thing": thing, "admitted": true, "refusal": null})
    );
    let (status, _) = hub.curl_as(&cert, &key, "POST", "/v1.1/Things", Some(&json!({"name": "x", "description": "y"})));
    assert_eq!(status, 403);

    // The resolver, over HTTPS with the device's own certificate.
    let (status, body) = hub.curl_as(&cert, &key, "GET", &format!("/resolve/{urn}_temperature"), None);
    assert_eq!(status, 200, "{body}");
    let resolved: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(resolved["device"], urn);
    assert_eq!(resolved["components"], json!(["temperature"]));
    assert_eq!(resolved["componentDatastreams"], json!([]), "no Datastream names the component yet");
    assert_eq!(resolved["thing"]["@iot.id"], thing);
    assert_eq!(resolved["datastreams"][0]["@iot.id"], datastreams[0]);
    assert_eq!(resolved["certificates"][0]["status"], "valid");
    assert_eq!(resolved["endpoints"]["mqttTopics"][0], topic);
    assert!(resolved["thing"]["@iot.selfLink"].as_str().is_some_and(|l| l.starts_with("https://")), "{resolved}");

    // A Datastream that names the component in its properties is linked to it.
    let named = hub.admin(
        "PATCH",
        &format!("/v1.1/Datastreams({})", datastreams[0]),
        Some(json!({"properties": {"urn": format!("{urn}_temperature")}})),
    );
    assert_eq!(named.status, 200, "{}", named.text);
    let resolved = hub.admin("GET", &format!("/resolve/{urn}_temperature"), None);
    assert_eq!(resolved.json["componentDatastreams"], json!([datastreams[0]]), "{}", resolved.text);

    // The audit log tells the story.
    let audit = hub.admin("GET", "/admin/audit", None);
    let events: Vec<&str> =
        audit.json["value"].as_array().expect("entries").iter().filter_map(|e| e["event"].as_str()).collect();
    for event in ["device_class_registered", "device_registered", "device_enrolled", "device_state_changed"] {
        assert!(events.contains(&event), "{event} missing from {events:?}");
    }
}

#[test]
fn enrollment_refuses_a_reused_token_a_foreign_urn_and_plain_http() {
    let hub = hub("device-enroll-refusals");
    let class = hub.class("WS-2", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, _) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:ops:32473-WeatherStation-0001";
    let token = hub.register_for_token(urn, class, thing);

    // A request for another device's URN is refused, and the token stays usable.
    let (code, body, _, _) = hub.enroll_with_openssl("foreign", "urn:dev:ops:32473-WeatherStation-0002", &token);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("bound to urn:dev:ops:32473-WeatherStation-0001"), "{body}");
    assert!(hub.device(urn)["certificates"].as_array().expect("list").is_empty());

    // Over plain HTTP, never.
    let csr = std::fs::read(hub.file("foreign.b64")).expect("csr");
    let plain = request_with(
        "POST",
        &format!("{}/.well-known/est/simpleenroll", root(&hub.server)),
        Some(String::from_utf8_lossy(&csr).into_owned()),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(plain.status, 403, "{}", plain.text);
    assert_eq!(plain.json["error"], "tls_required");

    let (code, body, _, _) = hub.enroll_with_openssl("first", urn, &token);
    assert_eq!(code, 200, "{body}");
    let (code, body, _, _) = hub.enroll_with_openssl("again", urn, &token);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("used already"), "{body}");
    let (code, body, _, _) = hub.enroll_with_openssl("unknown", urn, &format!("tbe_{}", "0".repeat(64)));
    assert_eq!(code, 401, "{body}");
    assert_eq!(hub.device(urn)["certificates"].as_array().expect("list").len(), 1);

    // Not a CSR, and a weak key: 400 with the reason.
    let (code, body) = curl(&[
        "--cacert",
        path(&hub.ca),
        "-H",
        &format!("Authorization: Bearer {token}"),
        "--data-binary",
        "not a certificate request",
        &format!("{}/.well-known/est/simpleenroll", hub.https()),
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid_csr"), "{body}");
}

#[test]
fn a_revoked_certificate_fails_its_handshake_and_only_a_new_token_enrolls_again() {
    let hub = hub("device-revocation");
    let class = hub.class("WS-3", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, datastreams) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:os:32473-SN000123";
    let token = hub.register_for_token(urn, class, thing);
    let (code, body, cert, key) = hub.enroll_with_openssl("r1", urn, &token);
    assert_eq!(code, 200, "{body}");
    let serial = hub.device(urn)["certificates"][0]["serial"].as_str().expect("serial").to_owned();

    let revoked =
        hub.admin("POST", &format!("/admin/certificates/{serial}/revoke"), Some(json!({"reason": "keyCompromise"})));
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.json["certificates"][0]["status"], "revoked");
    assert_eq!(revoked.json["state"], "quarantined", "{}", revoked.json);
    assert!(revoked.json["reason"].as_str().is_some_and(|r| r.contains("5.5-7")), "{}", revoked.json);

    // The CRL lists it, and both TLS listeners refuse it at the handshake.
    let crl = Command::new("sh")
        .arg("-c")
        .arg(format!("curl -s {}/pki/crl | openssl crl -inform DER -noout -text", root(&hub.server)))
        .output()
        .expect("openssl crl");
    assert!(
        String::from_utf8_lossy(&crl.stdout).to_ascii_lowercase().contains(&serial),
        "{}",
        String::from_utf8_lossy(&crl.stdout)
    );
    let before = hub.observation_count();
    let (status, _) = hub.post_as(&cert, &key, datastreams[0], 1.0);
    assert_eq!(status, 0, "no HTTP answer after a failed handshake");
    let topic = format!("v1.1/Datastreams({})/Observations", datastreams[0]);
    let (ran, printed) = hub.mosquitto_pub(&["--cert", path(&cert), "--key", path(&key)], &topic, &observation(1.0));
    assert!(!ran, "{printed}");
    assert!(printed.contains("revoked"), "{printed}");
    // Re-enrollment needs the current certificate, which no longer gets through.
    let (status, _) = hub.curl_as(&cert, &key, "POST", "/.well-known/est/simplereenroll", None);
    assert_eq!(status, 0);
    assert_eq!(hub.observation_count(), before, "nothing written");

    // A new token from its operator enrolls it again, and it is admitted again.
    let fresh = hub.admin("POST", &format!("/admin/devices/{urn}/token"), None);
    assert_eq!(fresh.status, 201, "{}", fresh.text);
    let (code, body, cert, key) =
        hub.enroll_with_openssl("r2", urn, fresh.json["enrollmentToken"].as_str().expect("token"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(hub.device(urn)["state"], "admitted");
    let (status, body) = hub.post_as(&cert, &key, datastreams[0], 2.0);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_device_past_its_support_period_is_refused_with_the_reason() {
    let hub = hub("device-support-ended");
    let class = hub.class("WS-OLD", &[TEMPERATURE], "2020-01-01T00:00:00Z");
    let (thing, datastreams) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe804ff2";
    let token = hub.register_for_token(urn, class, thing);
    // It can still enroll (and so fetch updates), but its data stays out.
    let (code, body, cert, key) = hub.enroll_with_openssl("old", urn, &token);
    assert_eq!(code, 200, "{body}");
    let device = hub.device(urn);
    assert_eq!(device["state"], "pending");
    assert!(device["reason"].as_str().is_some_and(|r| r.contains("5.3-13: its support period ended")), "{device}");
    let (status, body) = hub.post_as(&cert, &key, datastreams[0], 3.0);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("support period ended"), "{body}");
    let topic = format!("v1.1/Datastreams({})/Observations", datastreams[0]);
    let (_, printed) = hub.mosquitto_pub(&["--cert", path(&cert), "--key", path(&key)], &topic, &observation(3.0));
    assert!(printed.contains("RC:135"), "not authorized: {printed}");
    assert_eq!(hub.observation_count(), 0, "nothing written");

    // The report, as JSON and as text.
    let report = hub.admin("GET", &format!("/devices/{urn}/conformance"), None);
    assert_eq!(report.json["result"], "fail");
    let support =
        report.json["provisions"].as_array().expect("provisions").iter().find(|p| p["id"] == "5.3-13").cloned();
    assert_eq!(support.expect("5.3-13")["outcome"], "fail");
    let text = hub.admin("GET", &format!("/devices/{urn}/conformance?format=text"), None);
    assert!(text.text.contains("FAIL") && text.text.contains("[FAIL] 5.3-13"), "{}", text.text);
}

#[test]
fn a_device_with_a_default_password_is_refused_and_a_random_secret_works_over_tls_only() {
    let hub = hub("device-passwords");
    let class = hub.class("WS-PW", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, datastreams) = hub.thing(&[TEMPERATURE]);
    let topic = format!("v1.1/Datastreams({})/Observations", datastreams[0]);

    let weak = "urn:dev:mac:0024befffe804ff3";
    let response = hub.register(
        json!({"urn": weak, "class": class, "thing": thing, "password": "admin", "firmwareVersion": "1.4.2"}),
    );
    assert_eq!(response.status, 201, "{}", response.text);
    assert_eq!(response.json["state"], "pending");
    assert!(
        response.json["reason"].as_str().is_some_and(|r| r.contains("well-known default password")),
        "{}",
        response.json
    );
    let (_, printed) = hub.mosquitto_pub(&["-u", weak, "-P", "admin"], &topic, &observation(4.0));
    assert!(printed.contains("RC:135"), "{printed}");
    let basic = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            path(&hub.ca),
            "-u",
            &format!("{weak}:admin"),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "--data-binary",
            &observation(4.0).to_string(),
            &format!("{}/v1.1/Datastreams({})/Observations", hub.https(), datastreams[0]),
        ])
        .output()
        .expect("curl");
    let basic = String::from_utf8_lossy(&basic.stdout).into_owned();
    assert!(basic.contains("403") && basic.contains("default password"), "{basic}");

    // A password derived from its identifiers fails 5.1-2.
    let derived = "urn:dev:ops:32473-Thermo-77881122";
    let response = hub.register(json!({"urn": derived, "class": class, "thing": thing, "password": "Thermo-77881122!", "firmwareVersion": "1.4.2"}));
    assert!(response.json["reason"].as_str().is_some_and(|r| r.contains("5.1-2")), "{}", response.json);

    // A random secret from the hub: accepted over MQTTS, refused over plain MQTT.
    let good = "urn:dev:mac:0024befffe804ff4";
    let response = hub.register(json!({"urn": good, "class": class, "thing": thing, "secret": true, "enrollmentToken": false, "firmwareVersion": "1.4.2"}));
    assert_eq!(response.status, 201, "{}", response.text);
    assert_eq!(response.json["state"], "admitted", "{}", response.json);
    let secret = response.json["secret"].as_str().expect("a secret").to_owned();
    assert!(secret.starts_with("tbd_"));
    let (ran, printed) = hub.mosquitto_pub(&["-u", good, "-P", &secret], &topic, &observation(5.0));
    assert!(ran && printed.contains("RC:0"), "{printed}");
    let plain = Command::new("timeout")
        .args([
            "20",
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            &hub.server.mqtt_addr().port().to_string(),
            "-u",
            good,
            "-P",
            &secret,
        ])
        .args(["-V", "mqttv5", "-q", "1", "-t", &topic, "-m", &observation(6.0).to_string()])
        .output()
        .expect("mosquitto_pub");
    assert!(!plain.status.success(), "a device secret over plain MQTT must be refused");
    assert_eq!(hub.observation_count(), 1, "only the admitted device's Observation");
    // The secret is never shown again.
    assert!(hub.device(good).get("secret").is_none());
}

#[test]
fn an_admitted_device_is_quarantined_when_it_sends_undeclared_data_or_writes_elsewhere() {
    let hub = hub("device-undeclared");
    let class = hub.class("WS-T", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, datastreams) = hub.thing(&[TEMPERATURE]);
    let (_, others) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe804ff5";
    let token = hub.register_for_token(urn, class, thing);
    let (code, body, cert, key) = hub.enroll_with_openssl("u1", urn, &token);
    assert_eq!(code, 200, "{body}");
    assert_eq!(hub.device(urn)["state"], "admitted");

    // Another Thing's Datastream: refused, nothing else happens.
    let (status, body) = hub.post_as(&cert, &key, others[0], 1.0);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("its own Thing"), "{body}");
    assert_eq!(hub.device(urn)["state"], "admitted");

    // Its operator adds a humidity Datastream its class does not declare; the device sends to
    // it and is quarantined.
    let added = hub.admin(
        "POST",
        &format!("/v1.1/Things({thing})/Datastreams"),
        Some(json!({
            "name": "humidity", "description": "d", "unitOfMeasurement": {"name": "%", "symbol": "%", "definition": "%"},
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
            "Sensor": {"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"},
            "ObservedProperty": {"name": "humidity", "definition": HUMIDITY, "description": "d"},
        })),
    );
    assert_eq!(added.status, 201, "{}", added.text);
    let humidity = added.json["@iot.id"].as_i64().expect("id");
    let (status, body) = hub.post_as(&cert, &key, humidity, 40.0);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("5.8-3"), "{body}");
    let mut state = Value::Null;
    for _ in 0..100 {
        state = hub.device(urn)["state"].clone();
        if state == "quarantined" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(state, "quarantined");
    // Quarantined: even its declared stream is refused now.
    let (status, body) = hub.post_as(&cert, &key, datastreams[0], 2.0);
    assert_eq!(status, 403, "{body}");
    assert_eq!(hub.observation_count(), 0);
}

#[test]
fn the_resolver_refuses_malformed_unknown_and_hidden_urns() {
    let hub = hub("device-resolver");
    let malformed = hub.admin("GET", "/resolve/urn:dev:ops:my-lamp-1234", None);
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    assert_eq!(malformed.json["error"], "invalid_urn");
    assert!(
        malformed.json["message"].as_str().is_some_and(|m| m.contains("Private Enterprise Number")),
        "{}",
        malformed.text
    );
    let unknown = hub.admin("GET", "/resolve/urn:dev:mac:0024befffe80ffff", None);
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let anonymous =
        request_with("GET", &format!("{}/resolve/urn:dev:mac:0024befffe80ffff", root(&hub.server)), None, &[]);
    assert_eq!(anonymous.status, 401);

    // A user without a role in the device's project gets the same 404 as for none.
    let class = hub.class("WS-R", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, _) = hub.thing(&[TEMPERATURE]);
    hub.register_for_token("urn:dev:mac:0024befffe804ff6", class, thing);
    let project = hub.admin("POST", "/admin/projects", Some(json!({"name": "elsewhere"})));
    let user =
        hub.admin("POST", "/admin/users", Some(json!({"name": "outsider", "password": "a long enough password"})));
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = user.json["id"].as_i64().expect("user");
    let project_id = project.json["id"].as_i64().expect("project");
    hub.admin("PUT", &format!("/admin/users/{user_id}/roles/{project_id}"), Some(json!({"role": "admin"})));
    let outsider = request_with(
        "GET",
        &format!("{}/resolve/urn:dev:mac:0024befffe804ff6", root(&hub.server)),
        None,
        &[("authorization", "Basic b3V0c2lkZXI6YSBsb25nIGVub3VnaCBwYXNzd29yZA==")],
    );
    assert_eq!(outsider.status, 404, "{}", outsider.text);
    assert_eq!(hub.admin("GET", "/resolve/urn:dev:mac:0024befffe804ff6", None).status, 200);
}

/// A TLS client for the Rust enrollment: one HTTP/1.1 request, the status and the body.
fn tls_request(
    hub: &Hub,
    client: Option<(Vec<u8>, Vec<u8>)>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let ca = std::fs::read_to_string(&hub.ca)?;
    let ca_der = base64_decode(&ca.lines().filter(|l| !l.starts_with("-----")).collect::<String>());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca_der)).map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .map_err(std::io::Error::other)?,
        None => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut tcp = std::net::TcpStream::connect(hub.server.https_addr())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    let mut stream = rustls::Stream::new(&mut connection, &mut tcp);
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.as_bytes().to_vec()).unwrap_or_default();
    Ok((status, body))
}

#[test]
fn a_device_enrolls_in_rust_with_a_generated_key_and_rotates_its_certificate() {
    let hub = hub("device-rust");
    let class = hub.class("WS-RS", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, _) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:org:32473-gateway7";
    let token = hub.register_for_token(urn, class, thing);

    let request = |key: &rcgen::KeyPair| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, urn);
        params.subject_alt_names = vec![rcgen::SanType::URI(urn.try_into().expect("ia5"))];
        params.serialize_request(key).expect("csr").pem().expect("pem")
    };
    let key = rcgen::KeyPair::generate().expect("key");
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("accept", "application/pem-certificate-chain")];
    let (status, body) =
        tls_request(&hub, None, "POST", "/.well-known/est/simpleenroll", &headers, request(&key).as_bytes())
            .expect("https");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let pem = String::from_utf8_lossy(&body).into_owned();
    let cert = base64_decode(&pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>());
    assert_eq!(hub.device(urn)["state"], "admitted");

    // mTLS with it: the device sees itself; then re-enrollment with a new key rotates.
    let client = Some((cert.clone(), key.serialize_der()));
    let (status, body) = tls_request(&hub, client.clone(), "GET", &format!("/devices/{urn}"), &[], b"").expect("https");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let next = rcgen::KeyPair::generate().expect("key");
    let pem_accept = [("accept", "application/pem-certificate-chain")];
    let (status, body) = tls_request(
        &hub,
        client.clone(),
        "POST",
        "/.well-known/est/simplereenroll",
        &pem_accept,
        request(&next).as_bytes(),
    )
    .expect("https");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hub.device(urn)["certificates"].as_array().expect("list").len(), 2);
    // The same key again for another device is refused (EN 303 645 5.4-2).
    let other = "urn:dev:org:32473-gateway8";
    let token = hub.register_for_token(other, class, thing);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(other.try_into().expect("ia5"))];
    let csr = params.serialize_request(&next).expect("csr").pem().expect("pem");
    let auth = format!("Bearer {token}");
    let (status, body) =
        tls_request(&hub, None, "POST", "/.well-known/est/simpleenroll", &[("authorization", &auth)], csr.as_bytes())
            .expect("https");
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("5.4-2"));
}

/// A ClientHello offering only `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1), without the
/// supported_versions extension: what an old client sends.
fn legacy_client_hello(version: u16) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // no session id
    let suites: [u16; 4] = [0xc009, 0xc013, 0x002f, 0x0035];
    hello.extend_from_slice(&u16::try_from(suites.len() * 2).expect("small").to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // null compression
    // Extensions: server_name localhost, supported_groups, ec_point_formats.
    let mut extensions = Vec::new();
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&u16::try_from(name.len() + 3).expect("small").to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&u16::try_from(name.len()).expect("small").to_be_bytes());
    sni.extend_from_slice(name);
    extensions.extend_from_slice(&[0, 0]);
    extensions.extend_from_slice(&u16::try_from(sni.len()).expect("small").to_be_bytes());
    extensions.extend_from_slice(&sni);
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]);
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    hello.extend_from_slice(&u16::try_from(extensions.len()).expect("small").to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1u8];
    handshake.extend_from_slice(&u32::try_from(hello.len()).expect("small").to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).expect("small").to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_below_1_2_is_refused_on_https_and_mqtts() {
    let hub = hub("device-tls-versions");
    for addr in [hub.server.https_addr(), hub.server.mqtts_addr()] {
        for version in [0x0301u16, 0x0302] {
            let mut tcp = std::net::TcpStream::connect(addr).expect("connects");
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
            tcp.write_all(&legacy_client_hello(version)).expect("hello sent");
            let mut answer = [0u8; 7];
            tcp.read_exact(&mut answer).expect("an answer");
            // A fatal (2) alert record (21), handshake_failure (40) or protocol_version (70): no
            // ServerHello (22).
            assert_eq!(answer[0], 21, "{addr} offered {version:#06x}: {answer:?}");
            assert_eq!(answer[5], 2, "{addr} offered {version:#06x}: {answer:?}");
            assert!([40, 70].contains(&answer[6]), "{addr} offered {version:#06x}: {answer:?}");
        }
    }
    // And a TLS 1.2 client is served.
    let (code, _) =
        curl(&["--cacert", path(&hub.ca), "--tlsv1.2", "--tls-max", "1.2", &format!("{}/pki/ca.pem", hub.https())]);
    assert_eq!(code, 200);
}

#[test]
fn device_check_prints_the_report_from_the_command_line() {
    if std::env::var("THINGBASE_TEST_BACKEND").as_deref() == Ok("postgres") {
        // The command works on the data directory's SQLite file; the PostgreSQL pass covers
        // the same evaluation through the HTTP API.
        return;
    }
    let hub = hub("device-cli");
    let class = hub.class("WS-CLI", &[TEMPERATURE], "2020-01-01T00:00:00Z");
    let (thing, _) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe804ff7";
    let token = hub.register_for_token(urn, class, thing);
    let (code, body, _, _) = hub.enroll_with_openssl("cli", urn, &token);
    assert_eq!(code, 200, "{body}");
    let output = Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args(["device", "check", urn, "--sealing-key", crate::support::TEST_SEALING_KEY, "--data-dir"])
        .arg(hub.server.data_dir())
        .output()
        .expect("thingbase runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "a failing device exits with 1: {text}");
    assert!(text.contains(&format!("{urn}: FAIL")) && text.contains("[FAIL] 5.3-13"), "{text}");
    let json = Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args(["device", "check", urn, "--json", "--sealing-key", crate::support::TEST_SEALING_KEY, "--data-dir"])
        .arg(hub.server.data_dir())
        .output()
        .expect("thingbase runs");
    let report: Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert_eq!(report["result"], "fail");
    assert_eq!(report["profile"], "thingbase-baseline");
}

#[test]
fn a_key_registered_ahead_enrolls_without_a_token_and_weak_keys_are_refused() {
    let hub = hub("device-zero-touch");
    let class = hub.class("WS-ZT", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, _) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:ops:32473-ZeroTouch-42";
    let key = rcgen::KeyPair::generate().expect("key");
    let response = hub.register(json!({
        "urn": urn, "class": class, "thing": thing, "enrollmentToken": false, "publicKey": key.public_key_pem(),
        "firmwareVersion": "1.4.2",
    }));
    assert_eq!(response.status, 201, "{}", response.text);
    assert!(response.json.get("enrollmentToken").is_none());
    let request = |key: &rcgen::KeyPair| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::URI(urn.try_into().expect("ia5"))];
        params.serialize_request(key).expect("csr").pem().expect("pem")
    };
    let other = rcgen::KeyPair::generate().expect("key");
    let (status, body) =
        tls_request(&hub, None, "POST", "/.well-known/est/simpleenroll", &[], request(&other).as_bytes())
            .expect("https");
    assert_eq!(status, 401, "another key needs a token: {}", String::from_utf8_lossy(&body));
    let (status, body) =
        tls_request(&hub, None, "POST", "/.well-known/est/simpleenroll", &[], request(&key).as_bytes()).expect("https");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hub.device(urn)["state"], "admitted");

    // An RSA key of 1024 bits, made by openssl, is refused with the reason.
    let token = hub.register_for_token("urn:dev:ops:32473-Weak-1", class, thing);
    let weak = hub.file("weak.csr");
    let made = Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:1024", "-nodes", "-keyout"])
        .arg(hub.file("weak.key"))
        .args(["-subj", "/CN=urn:dev:ops:32473-Weak-1", "-out"])
        .arg(&weak)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (code, body) = curl(&[
        "--cacert",
        path(&hub.ca),
        "-H",
        &format!("Authorization: Bearer {token}"),
        "--data-binary",
        &format!("@{}", path(&weak)),
        &format!("{}/.well-known/est/simpleenroll", hub.https()),
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("2048"), "{body}");
}

#[test]
fn an_admitted_device_whose_support_period_ends_is_quarantined() {
    let hub = hub("device-support-ends");
    let ends = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let class = hub.class("WS-EOL", &[TEMPERATURE], &ends.to_string());
    let (thing, datastreams) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe804ff8";
    let token = hub.register_for_token(urn, class, thing);
    let (code, body, cert, key) = hub.enroll_with_openssl("eol", urn, &token);
    assert_eq!(code, 200, "{body}");
    assert_eq!(hub.device(urn)["state"], "admitted");
    let target = format!("/v1.1/Datastreams({})/Observations", datastreams[0]);
    let (status, body) = hub.curl_as(&cert, &key, "POST", &target, Some(&observation(1.0)));
    assert_eq!(status, 201, "{body}");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // Refused at once, before any evaluation records it (the device's principal checks the date)...
    let mut refused = (0, String::new());
    for _ in 0..60 {
        refused = hub.curl_as(&cert, &key, "POST", &target, Some(&observation(2.0)));
        if refused.0 == 403 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert!(refused.1.contains("5.3-13"), "{}", refused.1);
    // ...and quarantined, and audited, by the next evaluation.
    let report = hub.admin("POST", &format!("/admin/devices/{urn}/check"), None);
    assert_eq!(report.json["result"], "fail", "{}", report.text);
    assert_eq!(hub.device(urn)["state"], "quarantined");
    let audit = hub.admin("GET", "/admin/audit", None);
    let quarantined = audit.json["value"].as_array().expect("entries").iter().any(|e| {
        e["event"] == "device_state_changed" && e["detail"]["to"] == "quarantined" && e["detail"]["urn"] == urn
    });
    assert!(quarantined, "{}", audit.text);
    assert_eq!(hub.observation_count(), 1);
}

#[test]
fn an_operators_own_ca_is_imported_before_the_first_start_and_signs_the_devices() {
    if std::env::var("THINGBASE_TEST_BACKEND").as_deref() == Ok("postgres") {
        // `thingbase ca import` is tested on the data directory's SQLite file.
        return;
    }
    let files = TempDir::new("operator-ca");
    let data = TempDir::new("operator-ca-data");
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(&files.0).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // The operator's root and an intermediate for the hub (P-256, PKCS#8).
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Operator Root",
    ]);
    std::fs::write(
        files.0.join("ext.cnf"),
        "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .expect("ext");
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "hub.key",
        "-out",
        "hub.csr",
        "-subj",
        "/CN=Operator Hub CA",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "hub.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-out",
        "hub.pem",
        "-days",
        "30",
        "-extfile",
        "ext.cnf",
    ]);
    let chain = std::fs::read_to_string(files.0.join("hub.pem")).expect("hub")
        + &std::fs::read_to_string(files.0.join("root.pem")).expect("root");
    std::fs::write(files.0.join("chain.pem"), chain).expect("chain");
    let thingbase = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_thingbase"))
            .args(args)
            .args(["--sealing-key", crate::support::TEST_SEALING_KEY, "--data-dir"])
            .arg(&data.0)
            .output()
            .expect("thingbase runs")
    };
    let certificate = files.0.join("chain.pem");
    let key = files.0.join("hub.key");
    let imported = thingbase(&["ca", "import", "--certificate", path(&certificate), "--key", path(&key)]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let again = thingbase(&["ca", "import", "--certificate", path(&certificate), "--key", path(&key)]);
    assert!(!again.status.success(), "a second CA is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"), "{}", String::from_utf8_lossy(&again.stderr));

    let data_dir = data.0.clone();
    let server = TestServer::start_with("operator-ca", move |c| {
        c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) };
        c.data_dir = data_dir;
    });
    let hub = Hub { ca: files.0.join("root.pem"), server, files };
    let class = hub.class("WS-OP", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, _) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe804ff9";
    let token = hub.register_for_token(urn, class, thing);
    // The device trusts the operator's root only; the hub's TLS chain leads there.
    let (code, body, cert, _) = hub.enroll_with_openssl("op", urn, &token);
    assert_eq!(code, 200, "{body}");
    let verified = Command::new("openssl")
        .args(["verify", "-CAfile", path(&hub.file("root.pem")), "-untrusted", path(&hub.file("hub.pem")), path(&cert)])
        .output()
        .expect("openssl verify");
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(hub.device(urn)["state"], "admitted");
    let shown = Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args(["ca", "show", "--data-dir"])
        .arg(&data.0)
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("SHA-256 fingerprint"),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
}

#[test]
fn a_mud_file_is_checked_and_one_that_says_unsupported_keeps_data_out() {
    let hub = hub("device-mud");
    let mud = |supported: bool| {
        json!({"ietf-mud:mud": {
            "mud-version": 1, "mud-url": "https://acme.example/mud/ws-9.json",
            "last-update": "2026-11-01T10:00:00+01:00", "cache-validity": 48, "is-supported": supported,
            "systeminfo": "Acme WS-9 weather station", "mfg-name": "Acme", "model-name": "WS-9",
        }})
    };
    let class = |model: &str, mud: Value| {
        hub.admin(
            "POST",
            "/admin/device-classes",
            Some(json!({
                "manufacturer": "Acme", "model": model, "supportUntil": "2035-01-01T00:00:00Z",
                "vulnerabilityContact": "mailto:security@acme.example", "sensing": [TEMPERATURE],
                "updateMechanism": "suit", "firmware": [{"version": "1.4.2", "digest": format!("sha256:{}", "cd".repeat(32))}],
                "mud": mud,
            })),
        )
    };
    let bad = class("WS-8", json!({"ietf-mud:mud": {"mud-version": 1, "mud-url": "http://acme.example/x.json"}}));
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.json["message"].as_str().is_some_and(|m| m.contains("https")), "{}", bad.text);
    let supported = class("WS-9", mud(true));
    assert_eq!(supported.status, 201, "{}", supported.text);
    assert_eq!(supported.json["mudUrl"], "https://acme.example/mud/ws-9.json", "taken from the MUD file");
    let ended = class("WS-9-old", mud(false));
    assert_eq!(ended.status, 201, "{}", ended.text);
    let (thing, _) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe8050aa";
    let response = hub.register(json!({
        "urn": urn, "class": ended.json["id"], "thing": thing, "secret": true, "enrollmentToken": false,
        "firmwareVersion": "1.4.2",
    }));
    assert_eq!(response.status, 201, "{}", response.text);
    assert_eq!(response.json["state"], "pending");
    assert!(response.json["reason"].as_str().is_some_and(|r| r.contains("is-supported: false")), "{}", response.text);
}

#[test]
fn two_nodes_over_tls_to_postgres_share_the_ca_and_its_devices() {
    // Always on PostgreSQL, as several_nodes.rs: the throwaway cluster, with TLS turned on.
    let cluster = pg_test::cluster().unwrap_or_else(|e| panic!("a PostgreSQL cluster: {e}"));
    let ca = pki::CertificateAuthority::generate("database CA").expect("CA");
    let not_after = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let server = ca.issue_server(&["127.0.0.1".to_owned()], not_after).expect("server certificate");
    let chain: String = server.chain_der.iter().map(|der| pki::pem_encode("CERTIFICATE", der)).collect();
    cluster.enable_tls(&chain, &pki::pem_encode("PRIVATE KEY", &server.key_pkcs8_der)).expect("TLS on");
    let url = cluster.database("it_devices_two_nodes").unwrap_or_else(|e| panic!("a database: {e}"));
    let files = TempDir::new("two-nodes-db-ca");
    let database_ca = files.0.join("database-ca.pem");
    std::fs::write(&database_ca, pki::pem_encode("CERTIFICATE", ca.certificate_der())).expect("CA file");
    // Node B logs in with a client certificate only (PostgreSQL's `cert` authentication).
    let user = "it_node_b";
    let (client_ca, client_cert, client_key) = database_client_certificate(user);
    cluster.require_client_certificates(&client_ca, user).expect("client certificate rules");
    let (cert_file, key_file) = (files.0.join("node-b.crt"), files.0.join("node-b.key"));
    std::fs::write(&cert_file, client_cert).expect("client certificate file");
    std::fs::write(&key_file, client_key).expect("client key file");
    let name = url.rsplit('/').next().expect("name").to_owned();
    let node = |i: usize, client: Option<(PathBuf, PathBuf)>| {
        let url = if client.is_some() { cluster.url_as(user, &name) } else { url.clone() };
        let database_ca = database_ca.clone();
        TestServer::start_with(&format!("devices-node-{i}"), move |c| {
            c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) };
            c.database_url = Some(url);
            c.database_ca = Some(database_ca);
            c.database_client = client;
        })
    };
    let (a, b) = (node(0, None), node(1, Some((cert_file, key_file))));
    let ca_of = |server: &TestServer| request_with("GET", &format!("{}/pki/ca.pem", root(server)), None, &[]).text;
    assert_eq!(ca_of(&a), ca_of(&b), "one CA for both nodes");
    let hub_a = Hub { ca: files.0.join("hub-ca.pem"), server: a, files: TempDir::new("two-nodes-a") };
    std::fs::write(&hub_a.ca, ca_of(&hub_a.server)).expect("hub CA");
    let class = hub_a.class("WS-N", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, datastreams) = hub_a.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe8050bb";
    let token = hub_a.register_for_token(urn, class, thing);
    let (code, body, cert, key) = hub_a.enroll_with_openssl("n", urn, &token);
    assert_eq!(code, 200, "{body}");
    // The certificate from node A opens node B's HTTPS listener and its data is stored.
    let hub_b = Hub { ca: hub_a.ca.clone(), server: b, files: TempDir::new("two-nodes-b") };
    let (status, body) = hub_b.post_as(&cert, &key, datastreams[0], 7.0);
    assert_eq!(status, 201, "{body}");
    assert_eq!(hub_a.observation_count(), 1);
    // Both nodes' connections to the database are encrypted, node B's with its certificate.
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
        ])
        .arg(format!(
            "SELECT count(*) FILTER (WHERE NOT s.ssl) || ' ' || count(*) || ' ' || \
             count(*) FILTER (WHERE a.usename = '{user}' AND s.client_dn = '/CN={user}') || ' ' || \
             count(*) FILTER (WHERE a.usename = '{user}') \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{name}'"
        ))
        .output()
        .expect("psql");
    let counts = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let counts: Vec<u32> = counts.split(' ').map(|n| n.parse().expect("a count")).collect();
    assert_eq!(counts[0], 0, "no connection without TLS: {counts:?}");
    assert!(counts[1] >= 4, "both nodes are connected: {counts:?}");
    assert!(counts[3] >= 2, "node B logged in as {user}: {counts:?}");
    assert_eq!(counts[2], counts[3], "each of them with its certificate: {counts:?}");
}

/// A CA (PEM) and a client certificate (PEM) with its PKCS#8 key (PEM) for the database role
/// `user` (the certificate's common name).
fn database_client_certificate(user: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "database client CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("a key");
    let certificate = params.signed_by(&key, &ca).expect("a client certificate");
    (ca.pem(), certificate.pem(), key.serialize_pem())
}

#[test]
fn an_open_mqtts_connection_of_a_device_is_refused_at_its_next_publish_once_suspended() {
    use std::io::BufRead as _;
    let hub = hub("device-mqtt-suspend");
    let class = hub.class("WS-MQ", &[TEMPERATURE], "2035-01-01T00:00:00Z");
    let (thing, datastreams) = hub.thing(&[TEMPERATURE]);
    let urn = "urn:dev:mac:0024befffe8050cc";
    let token = hub.register_for_token(urn, class, thing);
    let (code, body, cert, key) = hub.enroll_with_openssl("mq", urn, &token);
    assert_eq!(code, 200, "{body}");
    // One connection for every line given on its standard input.
    let port = hub.server.mqtts_addr().port().to_string();
    let topic = format!("v1.1/Datastreams({})/Observations", datastreams[0]);
    // stdbuf: its debug lines must come as they are printed, not when a pipe's buffer fills.
    let mut publisher = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_pub",
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            path(&hub.ca),
            "--cert",
            path(&cert),
            "--key",
            path(&key),
        ])
        .args(["-V", "mqttv5", "-q", "1", "-d", "-l", "-t", &topic])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs");
    let mut stdin = publisher.stdin.take().expect("stdin");
    let stdout = publisher.stdout.take().expect("stdout");
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let puback = |mid: u32| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match printed.recv_timeout(left) {
                Ok(line) if line.contains(&format!("PUBACK (Mid: {mid}, RC:")) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no PUBACK for message {mid}");
    };
    writeln!(stdin, "{}", observation(1.0)).expect("line 1");
    assert!(puback(1).contains("RC:0"), "the first publish is stored");
    let suspended = hub.admin("POST", &format!("/admin/devices/{urn}/suspend"), Some(json!({"reason": "stolen"})));
    assert_eq!(suspended.status, 200, "{}", suspended.text);
    assert_eq!(suspended.json["state"], "suspended");
    // The very next publish on the same connection is refused, not the next one after a
    // periodic re-check.
    writeln!(stdin, "{}", observation(2.0)).expect("line 2");
    assert!(puback(2).contains("RC:135"), "not authorized once suspended");
    drop(stdin);
    let _ = publisher.wait();
    assert_eq!(hub.observation_count(), 1);
}
