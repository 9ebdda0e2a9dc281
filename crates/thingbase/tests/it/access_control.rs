//! Access control over HTTP (`--auth required`): roles × entity sets × operations, through
//! plain requests, `$expand`, `$count`, nextLinks, `$batch` and Data Array; tokens, users,
//! open data, revocation; and the first start as a new user meets it (setup token).

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Response, TempDir, TestServer, request_with};

/// The admin token the test servers are started with.
pub(crate) const ADMIN: &str = "tbt_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A client: the server's root URL, and the token (or user) it sends.
#[derive(Clone)]
pub(crate) struct As {
    root: String,
    authorization: Option<String>,
    project: Option<i64>,
}

impl As {
    fn anonymous(server: &TestServer) -> As {
        As { root: server.base.trim_end_matches("/v1.1").to_owned(), authorization: None, project: None }
    }

    pub(crate) fn token(server: &TestServer, token: &str) -> As {
        As { authorization: Some(format!("Bearer {token}")), ..As::anonymous(server) }
    }

    fn in_project(&self, project: i64) -> As {
        As { project: Some(project), ..self.clone() }
    }

    pub(crate) fn send(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let project = self.project.map(|p| p.to_string());
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &self.authorization {
            headers.push(("authorization", a));
        }
        if let Some(p) = &project {
            headers.push(("thingbase-project", p));
        }
        let url = match path {
            p if p.starts_with("http") => p.to_owned(),
            p if p.starts_with("/admin") => format!("{}{p}", self.root),
            p => format!("{}/v1.1{p}", self.root),
        };
        request_with(method, &url, body.map(|b| b.to_string()), &headers)
    }

    /// The status of a DELETE.
    pub(crate) fn send_delete(&self, path: &str) -> u16 {
        self.send("DELETE", path, None).status
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        self.send("GET", path, None)
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> Response {
        self.send("POST", path, Some(body))
    }

    /// Creates and returns the new id, asserting success.
    pub(crate) fn create(&self, path: &str, body: Value) -> i64 {
        let response = self.post(path, body);
        assert!(matches!(response.status, 200 | 201), "creating at {path}: {} {}", response.status, response.text);
        response.json["id"].as_i64().or(response.json["@iot.id"].as_i64()).expect("an id")
    }

    /// The ids of a collection (following nextLinks), and its `@iot.count`.
    fn ids(&self, path: &str) -> (Vec<i64>, Option<i64>) {
        let mut ids = Vec::new();
        let first = self.get(path);
        assert_eq!(first.status, 200, "{path}: {}", first.text);
        let count = first.json["@iot.count"].as_i64();
        let mut page = first;
        loop {
            ids.extend(
                page.json["value"].as_array().expect("a collection").iter().map(|e| e["@iot.id"].as_i64().unwrap()),
            );
            let Some(next) = page.json["@iot.nextLink"].as_str().map(str::to_owned) else { break };
            page = self.get(&next);
            assert_eq!(page.status, 200, "{next}: {}", page.text);
        }
        (ids, count)
    }
}

pub(crate) fn server(name: &str) -> TestServer {
    TestServer::start_with(name, |c| c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) })
}

/// A user with `role` in `project` (none for `None`), and a client with a token of theirs.
pub(crate) fn member(server: &TestServer, name: &str, project: i64, role: Option<&str>) -> (i64, As) {
    let admin = As::token(server, ADMIN);
    let user = admin.create("/admin/users", json!({"name": name}));
    if let Some(role) = role {
        let set = admin.send("PUT", &format!("/admin/users/{user}/roles/{project}"), Some(json!({"role": role})));
        assert_eq!(set.status, 204, "{}", set.text);
    }
    let token = admin.post("/admin/tokens", json!({"label": name, "user": user}));
    assert_eq!(token.status, 201, "{}", token.text);
    (user, As::token(server, token.json["token"].as_str().expect("a token")))
}

fn thing(name: &str) -> Value {
    json!({
        "name": name, "description": "d",
        "Locations": [{"name": "l", "description": "d", "encodingType": "application/geo+json",
                       "location": {"type": "Point", "coordinates": [1, 2]}}],
        "Datastreams": [{"name": format!("{name} temperature"), "description": "d", "unitOfMeasurement": {},
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
            "Sensor": {"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"},
            "ObservedProperty": {"name": "p", "definition": "d", "description": "d"}}]
    })
}

/// Two projects with a Thing (and Datastream, Observations) each; returns (project 2, project 3,
/// thing in 2, datastream in 2, thing in 3, datastream in 3).
fn two_projects(server: &TestServer) -> (i64, i64, i64, i64, i64, i64) {
    let admin = As::token(server, ADMIN);
    let mine = admin.create("/admin/projects", json!({"name": "mine"}));
    let theirs = admin.create("/admin/projects", json!({"name": "theirs"}));
    let my_thing = admin.in_project(mine).create("/Things", thing("my station"));
    let their_thing = admin.in_project(theirs).create("/Things", thing("their station"));
    let ds = |t: i64| admin.get(&format!("/Things({t})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
    let (my_ds, their_ds) = (ds(my_thing), ds(their_thing));
    for ds in [my_ds, their_ds] {
        for result in 0..3 {
            admin.create(&format!("/Datastreams({ds})/Observations"), json!({"result": result}));
        }
    }
    (mine, theirs, my_thing, my_ds, their_thing, their_ds)
}

#[test]
fn requests_without_credentials_are_asked_for_them() {
    let server = server("auth-anonymous");
    let anonymous = As::anonymous(&server);
    for (method, path) in [("GET", "/Things"), ("POST", "/Things"), ("GET", "/admin/whoami")] {
        let response = anonymous.send(method, path, Some(thing("x")));
        assert_eq!(response.status, 401, "{method} {path}: {}", response.text);
        assert_eq!(response.json["error"], "unauthenticated");
        assert_eq!(response.authenticate.as_deref(), Some(r#"Bearer realm="thingbase", Basic realm="thingbase""#));
    }
    let wrong = As::token(&server, "tbt_ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    assert_eq!(wrong.get("/Things").status, 401, "an unknown token is not anonymous");
    let garbage = As { authorization: Some("Token abc".into()), ..anonymous.clone() };
    assert_eq!(garbage.get("/Things").json["error"], "invalid_credentials");
    // The service root and health stay public.
    assert_eq!(anonymous.get("").status, 200);
    assert_eq!(request_with("GET", &format!("{}/health", anonymous.root), None, &[]).status, 200);
}

#[test]
fn each_role_reads_and_writes_what_it_may_and_nothing_leaks() {
    let server = server("auth-roles");
    let (mine, _theirs, my_thing, my_ds, their_thing, their_ds) = two_projects(&server);
    let observation = || json!({"result": 42});
    // (role, may create Observations, may create/update/delete other entities)
    let roles = [("viewer", false, false), ("contributor", true, false), ("editor", true, true), ("admin", true, true)];
    for (role, contributes, edits) in roles {
        let (_, client) = member(&server, &format!("{role}-user"), mine, Some(role));

        // Reads: their project only, through every path.
        let things = client.ids("/Things?$count=true");
        assert!(things.0.contains(&my_thing) && !things.0.contains(&their_thing), "{role}: {things:?}");
        assert_eq!(things.1, Some(things.0.len() as i64), "{role}");
        let all = client.ids("/Observations").0;
        assert!(
            all.len() >= 3
                && all.iter().all(|id| client.get(&format!("/Observations({id})/Datastream")).json["@iot.id"] == my_ds)
        );
        let paged = client.ids("/Observations?$top=2&$count=true");
        assert_eq!(paged, (all.clone(), Some(all.len() as i64)), "{role}: nextLinks and $count see the same");
        assert_eq!(client.get(&format!("/Things({their_thing})")).status, 404, "{role}: hidden is not found");
        assert_eq!(client.get(&format!("/Datastreams({their_ds})/Observations")).status, 404, "{role}");
        let filtered = client.ids("/Datastreams?$filter=Thing/name%20eq%20'their%20station'");
        assert!(filtered.0.is_empty(), "{role}: a filter cannot reach into another project");
        let expanded = client.get("/Things?$expand=Datastreams($expand=Observations($count=true))");
        let datastreams = expanded.json["value"][0]["Datastreams"].as_array().expect("expanded").clone();
        assert_eq!(datastreams.len(), 1, "{role}");
        assert_eq!(datastreams[0]["Observations@iot.count"], all.len(), "{role}");

        // Observations.
        let created = client.post(&format!("/Datastreams({my_ds})/Observations"), observation());
        assert_eq!(created.status, if contributes { 201 } else { 403 }, "{role}: {}", created.text);
        let elsewhere = client.post(&format!("/Datastreams({their_ds})/Observations"), observation());
        assert_eq!(elsewhere.status, 404, "{role}: another project's Datastream does not exist for it");
        let linked = client.post("/Observations", json!({"result": 1, "Datastream": {"@iot.id": their_ds}}));
        assert_eq!(linked.status, 400, "{role}: {}", linked.text);
        let rows = json!([{"Datastream": {"@iot.id": my_ds}, "components": ["result"], "dataArray": [[1], [2]]}]);
        assert_eq!(client.post("/CreateObservations", rows).status, if contributes { 201 } else { 403 }, "{role}");

        // Other entities.
        let thing_created = client.post("/Things", json!({"name": role, "description": "d"}));
        assert_eq!(thing_created.status, if edits { 201 } else { 403 }, "{role}: {}", thing_created.text);
        if edits {
            let id = thing_created.json["@iot.id"].as_i64().unwrap();
            assert_eq!(client.ids("/Things").0.len(), things.0.len() + 1, "{role}: the new Thing went to its project");
            assert_eq!(client.send("DELETE", &format!("/Things({id})"), None).status, 200);
        }
        let patched = client.send("PATCH", &format!("/Things({my_thing})"), Some(json!({"description": role})));
        assert_eq!(patched.status, if edits { 200 } else { 403 }, "{role}: {}", patched.text);
        let hidden = client.send("PATCH", &format!("/Things({their_thing})"), Some(json!({"description": role})));
        assert_eq!(hidden.status, 404, "{role}");
        // A $batch part is judged like a request of its own.
        let batch = client.post(
            "/$batch",
            json!({"requests": [
                {"id": "1", "method": "post", "url": "Things", "body": {"name": "b", "description": "d"}},
                {"id": "2", "method": "get", "url": format!("Things({their_thing})")}
            ]}),
        );
        let statuses: Vec<u64> =
            batch.json["responses"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
        assert_eq!(statuses, [if edits { 201 } else { 403 }, 404], "{role}: {}", batch.text);
    }
}

#[test]
fn users_without_a_role_see_nothing_and_open_data_is_public() {
    let server = server("auth-open-data");
    let (mine, theirs, my_thing, _, _, _) = two_projects(&server);
    let (_, outsider) = member(&server, "outsider", mine, None);
    assert!(outsider.ids("/Things").0.is_empty());
    assert_eq!(outsider.post("/Things", json!({"name": "x", "description": "d"})).status, 403);

    let admin = As::token(&server, ADMIN);
    assert_eq!(admin.send("PATCH", &format!("/admin/projects/{mine}"), Some(json!({"openData": true}))).status, 204);
    let anonymous = As::anonymous(&server);
    assert_eq!(anonymous.ids("/Things").0, [my_thing], "open data reads are public");
    assert_eq!(outsider.ids("/Things").0, [my_thing]);
    let write = anonymous.post(&format!("/Things({my_thing})/Locations"), json!({"name": "x"}));
    assert_eq!(write.status, 401, "writes stay authenticated: {}", write.text);
    assert_eq!(outsider.post("/Things", json!({"name": "x", "description": "d"})).status, 403);
    // The project a request names must exist, and be one the caller may write to.
    let admin = As::token(&server, ADMIN);
    let ghost = admin.in_project(999).post("/Things", json!({"name": "x", "description": "d"}));
    assert_eq!(ghost.status, 400, "{}", ghost.text);
    assert!(ghost.json["message"].as_str().unwrap().contains("project 999 does not exist"));
    let (_, editor) = member(&server, "editor-of-mine", mine, Some("editor"));
    let elsewhere = editor.in_project(theirs).post("/Things", json!({"name": "x", "description": "d"}));
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.text);
}

#[test]
fn revoked_tokens_and_removed_roles_stop_working_at_once() {
    let server = server("auth-revoke");
    let (mine, _, my_thing, _, _, _) = two_projects(&server);
    let (user, editor) = member(&server, "editor", mine, Some("editor"));
    assert_eq!(editor.ids("/Things").0, [my_thing]);
    let admin = As::token(&server, ADMIN);
    assert_eq!(admin.send("DELETE", &format!("/admin/users/{user}/roles/{mine}"), None).status, 204);
    assert!(editor.ids("/Things").0.is_empty(), "the cached principal was dropped");

    // A token of one's own, narrower than oneself, then revoked by its owner.
    assert_eq!(
        admin.send("PUT", &format!("/admin/users/{user}/roles/{mine}"), Some(json!({"role": "editor"}))).status,
        204
    );
    let narrow =
        editor.post("/admin/tokens", json!({"label": "station", "grants": [{"project": mine, "role": "contributor"}]}));
    assert_eq!(narrow.status, 201, "{}", narrow.text);
    let station = As::token(&server, narrow.json["token"].as_str().unwrap());
    let whoami = station.get("/admin/whoami");
    assert_eq!(whoami.json["roles"], json!([{"project": mine, "role": "contributor"}]), "{}", whoami.text);
    assert_eq!(station.post("/Things", json!({"name": "x", "description": "d"})).status, 403);
    let wider = editor.post("/admin/tokens", json!({"label": "x", "grants": [{"project": mine, "role": "admin"}]}));
    assert_eq!(wider.status, 403, "no token beyond one's own rights: {}", wider.text);
    let id = narrow.json["id"].as_i64().unwrap();
    assert_eq!(editor.send("DELETE", &format!("/admin/tokens/{id}"), None).status, 204);
    assert_eq!(station.get("/Things").status, 401);
    // Only hub administrators manage users and projects.
    assert_eq!(editor.post("/admin/users", json!({"name": "mallory"})).status, 403);
    assert_eq!(editor.post("/admin/projects", json!({"name": "mallory"})).status, 403);
}

#[test]
fn users_sign_in_with_a_password_over_basic() {
    let server = server("auth-basic");
    let admin = As::token(&server, ADMIN);
    let user = admin.create("/admin/users", json!({"name": "ada", "password": "correct horse battery"}));
    assert_eq!(admin.send("PUT", &format!("/admin/users/{user}/roles/1"), Some(json!({"role": "editor"}))).status, 204);
    let basic = |password: &str| {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("ada:{password}"));
        As { authorization: Some(format!("Basic {encoded}")), ..As::anonymous(&server) }
    };
    assert_eq!(basic("correct horse battery").post("/Things", json!({"name": "t", "description": "d"})).status, 201);
    assert_eq!(basic("wrong horse battery").get("/Things").status, 401);
    let short = admin.post("/admin/users", json!({"name": "bob", "password": "short"}));
    assert_eq!((short.status, short.json["error"].as_str()), (400, Some("invalid_password")));
}

/// The environment that points the binary at the suite's backend: `THINGBASE_DATABASE_URL`
/// of a fresh database in the PostgreSQL pass, nothing (the data directory's SQLite file)
/// otherwise.
pub(crate) fn backend_env(name: &str) -> Vec<(&'static str, String)> {
    crate::support::backend_database(name).map(|url| ("THINGBASE_DATABASE_URL", url)).into_iter().collect()
}

/// As a new user would meet it: start the real binary with access control on, read the
/// one-time setup token it prints, make a project, a user and a token with it, post data.
#[test]
fn first_start_prints_a_one_time_setup_token() {
    let dir = TempDir::new("auth-setup");
    let backend = backend_env("auth_setup");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args([
            "serve",
            "--auth",
            "required",
            "--http-port",
            &port.to_string(),
            "--mqtt-port",
            "0",
            "--https-port",
            "0",
            "--mqtts-port",
            "0",
            "--log",
            "warn",
        ])
        .env("THINGBASE_DATA_DIR", &dir.0)
        .envs(backend.clone())
        .env_remove("THINGBASE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let setup = loop {
        assert!(Instant::now() < deadline, "no setup token printed");
        let line = lines.next().expect("a line").expect("text");
        if let Some(token) = line.trim().strip_prefix("tbt_") {
            break format!("tbt_{token}");
        }
    };
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let root = format!("http://127.0.0.1:{port}");
    let setup_client = As { root: root.clone(), authorization: Some(format!("Bearer {setup}")), project: None };
    assert_eq!(setup_client.get("/admin/whoami").json["hubAdmin"], true);
    let token = setup_client.post("/admin/tokens", json!({"label": "my admin token"}));
    assert_eq!(token.status, 201, "{}", token.text);
    assert_eq!(setup_client.get("/Things").status, 401, "the setup token worked once");
    let me =
        As { root, authorization: Some(format!("Bearer {}", token.json["token"].as_str().unwrap())), project: None };
    let project = me.create("/admin/projects", json!({"name": "roof"}));
    let thing = me.in_project(project).create("/Things", thing("roof station"));
    let ds = me.get(&format!("/Things({thing})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
    assert_eq!(me.post(&format!("/Datastreams({ds})/Observations"), json!({"result": 1})).status, 201);
    let _ = child.kill();
    let _ = child.wait();
}

/// A rumqttc v5 client with its event loop in a task, forwarding what arrives.
struct Mqtt {
    client: rumqttc::v5::AsyncClient,
    incoming: tokio::sync::mpsc::UnboundedReceiver<Result<rumqttc::v5::mqttbytes::v5::Packet, String>>,
}

impl Mqtt {
    async fn connect(server: &TestServer, id: &str, credentials: Option<(&str, &str)>) -> Result<Mqtt, String> {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let addr = server.mqtt_addr();
        let mut options = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 100);
        let (sender, mut incoming) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(packet)) => {
                        if sender.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = sender.send(Err(format!("{error:?}")));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), incoming.recv()).await.expect("an answer to CONNECT") {
            Some(Ok(Packet::ConnAck(_))) => Ok(Mqtt { client, incoming }),
            Some(Ok(other)) => Err(format!("{other:?}")),
            Some(Err(error)) => Err(error),
            None => Err("closed".into()),
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        use rumqttc::v5::mqttbytes::v5::Packet;
        self.client.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.expect("subscribe");
        while !matches!(self.next(Duration::from_secs(10)).await, Some(Packet::SubAck(_))) {}
    }

    async fn next(&mut self, wait: Duration) -> Option<rumqttc::v5::mqttbytes::v5::Packet> {
        match tokio::time::timeout(wait, self.incoming.recv()).await {
            Ok(Some(Ok(packet))) => Some(packet),
            _ => None,
        }
    }

    /// The results of the Observations published to this client within `wait`.
    async fn results(&mut self, wait: Duration) -> Vec<i64> {
        let mut results = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(packet))) = tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            if let rumqttc::v5::mqttbytes::v5::Packet::Publish(publish) = packet {
                let body: Value = serde_json::from_slice(&publish.payload).expect("JSON");
                results.extend(body["result"].as_i64());
            }
        }
        results
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason.
    async fn publish(&mut self, topic: &str, payload: Value) -> rumqttc::v5::mqttbytes::v5::PubAckReason {
        use rumqttc::v5::mqttbytes::v5::Packet;
        self.client
            .publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload.to_string())
            .await
            .expect("publish");
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some(Packet::PubAck(ack)) => return ack.reason,
                Some(_) => {}
                None => panic!("no PUBACK"),
            }
        }
    }
}

#[test]
fn mqtt_connections_act_as_their_principal_and_lose_rights_at_once() {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    let server = server("auth-mqtt");
    let (mine, _, _, my_ds, _, their_ds) = two_projects(&server);
    let token_of = |client: &As| client.authorization.as_deref().unwrap().trim_start_matches("Bearer ").to_owned();
    let (_, contributor) = member(&server, "mqtt-contributor", mine, Some("contributor"));
    let (viewer_id, viewer) = member(&server, "mqtt-viewer", mine, Some("viewer"));
    let (_, outsider) = member(&server, "mqtt-outsider", mine, None);
    let admin = As::token(&server, ADMIN);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let refused =
            Mqtt::connect(&server, "nobody", None).await.err().expect("no anonymous access without open data");
        assert!(refused.contains("NotAuthorized"), "{refused}");
        let wrong = Mqtt::connect(&server, "wrong", Some(("token", "tbt_nope"))).await.err().expect("refused");
        assert!(wrong.contains("BadUserNamePassword"), "{wrong}");

        let mut watching = Mqtt::connect(&server, "viewer", Some(("token", &token_of(&viewer)))).await.unwrap();
        watching.subscribe("v1.1/Observations").await;
        let mut outside = Mqtt::connect(&server, "outsider", Some(("token", &token_of(&outsider)))).await.unwrap();
        outside.subscribe("v1.1/Observations").await;
        let mut device = Mqtt::connect(&server, "device", Some(("token", &token_of(&contributor)))).await.unwrap();

        // The contributor creates in its project; only those who may read it hear of it.
        let mine_topic = format!("v1.1/Datastreams({my_ds})/Observations");
        assert_eq!(device.publish(&mine_topic, json!({"result": 5})).await, PubAckReason::Success);
        admin.create(&format!("/Datastreams({their_ds})/Observations"), json!({"result": 6}));
        assert_eq!(watching.results(Duration::from_millis(500)).await, [5], "the other project's stays hidden");
        assert!(outside.results(Duration::from_millis(100)).await.is_empty());
        let theirs_topic = format!("v1.1/Datastreams({their_ds})/Observations");
        let hidden = device.publish(&theirs_topic, json!({"result": 7})).await;
        assert_eq!(hidden, PubAckReason::PayloadFormatInvalid, "another project's Datastream does not exist for it");

        // A viewer may not create.
        let mut viewer_device =
            Mqtt::connect(&server, "viewer-device", Some(("token", &token_of(&viewer)))).await.unwrap();
        assert_eq!(viewer_device.publish(&mine_topic, json!({"result": 8})).await, PubAckReason::NotAuthorized);

        // Rights removed: no more notifications, at once.
        let removed = admin.send("DELETE", &format!("/admin/users/{viewer_id}/roles/{mine}"), None);
        assert_eq!(removed.status, 204);
        assert_eq!(device.publish(&mine_topic, json!({"result": 9})).await, PubAckReason::Success);
        assert!(watching.results(Duration::from_millis(500)).await.is_empty(), "the viewer lost its role");

        // A revoked token publishes nothing more.
        let whoami = contributor.get("/admin/whoami");
        let token_id = whoami.json["identity"]["id"].as_i64().expect("a token id");
        assert_eq!(admin.send("DELETE", &format!("/admin/tokens/{token_id}"), None).status, 204);
        assert_eq!(device.publish(&mine_topic, json!({"result": 10})).await, PubAckReason::NotAuthorized);
    });
    let stored = admin.get(&format!("/Datastreams({my_ds})/Observations?$filter=result%20ge%205&$count=true"));
    assert_eq!(stored.json["@iot.count"], 2, "5 and 9 only: {}", stored.text);
}

#[test]
fn the_audit_log_records_security_events_and_shows_tampering() {
    let dir = TempDir::new("auth-audit");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args([
            "serve",
            "--http-port",
            &port.to_string(),
            "--mqtt-port",
            "0",
            "--https-port",
            "0",
            "--mqtts-port",
            "0",
            "--bind",
            "127.0.0.1",
            "--log",
            "warn",
        ])
        .env("THINGBASE_DATA_DIR", &dir.0)
        .env("THINGBASE_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let root = format!("http://127.0.0.1:{port}");
    let admin = As { root: root.clone(), authorization: Some(format!("Bearer {ADMIN}")), project: None };
    let project = admin.create("/admin/projects", json!({"name": "audited"}));
    let user = admin.create("/admin/users", json!({"name": "vera", "password": "correct horse battery"}));
    assert_eq!(
        admin.send("PUT", &format!("/admin/users/{user}/roles/{project}"), Some(json!({"role": "viewer"}))).status,
        204
    );
    let token = admin.post("/admin/tokens", json!({"label": "vera's", "user": user}));
    let secret = token.json["token"].as_str().unwrap().to_owned();
    let vera = As { root: root.clone(), authorization: Some(format!("Bearer {secret}")), project: None };
    assert_eq!(vera.in_project(project).post("/Things", json!({"name": "x", "description": "d"})).status, 403);
    let wrong = As {
        authorization: Some("Bearer tbt_0000000000000000000000000000000000000000000000000000000000000000".into()),
        ..admin.clone()
    };
    assert_eq!(wrong.get("/Things").status, 401);
    assert_eq!(vera.get("/admin/audit").status, 403, "hub administrators only");

    // The log is written after the events (some without waiting): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = admin.get("/admin/audit");
        assert_eq!(log.status, 200, "{}", log.text);
        let events: Vec<String> =
            log.json["value"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect();
        if events.len() >= 6 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let events: Vec<&str> =
        log.json["value"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    for expected in
        ["project_created", "user_created", "role_changed", "token_created", "write_denied", "sign_in_refused"]
    {
        assert!(events.contains(&expected), "{expected} missing from {events:?}");
    }
    assert!(!log.text.contains(&secret) && !log.text.contains("correct horse"), "no secret in the log");

    // Stop, check the chain, change one entry behind the server's back, check again.
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let _ = child.wait();
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_thingbase"))
            .args(["audit", "verify"])
            .env("THINGBASE_DATA_DIR", &dir.0)
            .output()
            .expect("thingbase audit verify runs")
    };
    let intact = verify();
    assert!(intact.status.success(), "{}", String::from_utf8_lossy(&intact.stdout));
    assert!(String::from_utf8_lossy(&intact.stdout).contains("intact"));
    let db = rusqlite::Connection::open(dir.0.join("thingbase.sqlite")).unwrap();
    db.execute("UPDATE audit_log SET actor = 'someone else' WHERE id = 2", []).unwrap();
    drop(db);
    let broken = verify();
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&broken.stdout).contains("broken at entry 2"),
        "{}",
        String::from_utf8_lossy(&broken.stdout)
    );
}

#[test]
fn repeated_failed_sign_ins_lock_the_name_out_and_floods_get_429() {
    let server = TestServer::start_with("auth-limits", |c| {
        c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) };
        // Generous for this address, so that only the lock-out speaks first.
        c.unauthenticated_rate = 1000.0;
        c.principal_rate = 5.0;
    });
    let admin = As::token(&server, ADMIN);
    admin.create("/admin/users", json!({"name": "ada", "password": "correct horse battery"}));
    let basic = |password: &str| {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("ada:{password}"));
        As { authorization: Some(format!("Basic {encoded}")), ..As::anonymous(&server) }
    };
    for _ in 0..5 {
        assert_eq!(basic("not the password").get("/Things").status, 401);
    }
    // Locked now, even with the right password, and told for how long.
    let locked = basic("correct horse battery").get("/Things");
    assert_eq!(locked.status, 429, "{}", locked.text);
    assert!(locked.json["message"].as_str().unwrap().contains("too many failed sign-ins"));
    assert_eq!(locked.retry_after, Some(1), "the first lock-out lasts a second");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(basic("correct horse battery").get("/Things").status, 200, "the lock-out is over");

    // A principal over its rate (5 a second, 10 at once) gets 429 with Retry-After.
    let statuses: Vec<u16> = (0..15).map(|_| admin.get("/Things").status).collect();
    assert!(statuses.iter().take(10).all(|s| *s == 200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[test]
fn unauthenticated_floods_from_one_address_get_429() {
    let server = TestServer::start_with("auth-flood", |c| {
        c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) };
        c.unauthenticated_rate = 5.0;
    });
    let guesser = As::token(&server, "tbt_1111111111111111111111111111111111111111111111111111111111111111");
    let statuses: Vec<u16> = (0..15).map(|_| guesser.get("/Things").status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 10, "a burst of 10, then throttled: {statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
    // Signed-in callers from the same address are not held back by it.
    assert_eq!(As::token(&server, ADMIN).get("/Things").status, 200);
}

/// MQTT CONNECTs without working credentials draw on the same per-address allowance as HTTP
/// requests: guessing over both at once gains nothing, and a throttled address's passwords are
/// refused unchecked while devices signing in with tokens still connect.
#[test]
fn failed_mqtt_connects_share_the_address_allowance_with_http() {
    let server = TestServer::start_with("auth-mqtt-flood", |c| {
        c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) };
        c.unauthenticated_rate = 2.0;
    });
    let admin = As::token(&server, ADMIN);
    admin.create("/admin/users", json!({"name": "ada", "password": "correct horse battery"}));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let guess = "tbt_2222222222222222222222222222222222222222222222222222222222222222";
        // A burst of 4: two failed HTTP requests and two failed CONNECTs use it up.
        for _ in 0..2 {
            assert_eq!(As::token(&server, guess).get("/Things").status, 401);
        }
        for n in 0..2 {
            let refused = Mqtt::connect(&server, &format!("guess-{n}"), Some(("token", guess))).await.err();
            assert!(refused.expect("a wrong token").contains("BadUserNamePassword"));
        }
        let over = Mqtt::connect(&server, "guess-over", Some(("token", guess))).await.err().expect("refused");
        assert!(over.contains("ConnectionRateExceeded"), "{over}");
        let password = Mqtt::connect(&server, "ada", Some(("ada", "correct horse battery"))).await.err();
        assert!(password.expect("unchecked").contains("ConnectionRateExceeded"), "even the right password waits");
        assert_eq!(As::token(&server, guess).get("/Things").status, 429, "HTTP shares the allowance");
        Mqtt::connect(&server, "device", Some(("token", ADMIN))).await.expect("a working token is not held back");
        // The allowance refills (two a second).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        Mqtt::connect(&server, "ada-later", Some(("ada", "correct horse battery"))).await.expect("allowed again");
    });
}

/// `thingbase project|user|token` on the data directory, before and while the server runs.
#[test]
fn the_command_line_manages_projects_users_and_tokens() {
    let dir = TempDir::new("auth-cli");
    let backend = backend_env("auth_cli");
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_thingbase"))
            .args(args)
            .env("THINGBASE_DATA_DIR", &dir.0)
            .envs(backend.clone())
            .env("THINGBASE_PASSWORD", "correct horse battery")
            .output()
            .expect("the binary runs");
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let project = run(&["project", "create", "roof"]);
    let project: i64 = project.strip_prefix("project ").unwrap().parse().unwrap();
    let user = run(&["user", "create", "ada"]);
    let user: i64 = user.strip_prefix("user ").unwrap().parse().unwrap();
    assert_eq!(run(&["user", "role", &user.to_string(), &project.to_string(), "editor"]), "done");
    let token = run(&["token", "create", &user.to_string(), "--label", "laptop"]);
    let (id, secret) = token.strip_prefix("token ").unwrap().split_once(": ").unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args([
            "serve",
            "--http-port",
            &port.to_string(),
            "--mqtt-port",
            "0",
            "--https-port",
            "0",
            "--mqtts-port",
            "0",
            "--bind",
            "127.0.0.1",
            "--log",
            "warn",
        ])
        .env("THINGBASE_DATA_DIR", &dir.0)
        .envs(backend.clone())
        .env("THINGBASE_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ada =
        As { root: format!("http://127.0.0.1:{port}"), authorization: Some(format!("Bearer {secret}")), project: None };
    assert_eq!(ada.post("/Things", json!({"name": "t", "description": "d"})).status, 201, "an editor of roof");
    // Revoked from the command line while the server runs: refused within seconds.
    assert_eq!(run(&["token", "revoke", id]), "revoked");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ada.get("/Things").status != 401 {
        assert!(Instant::now() < deadline, "the revoked token still works");
        std::thread::sleep(Duration::from_millis(250));
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_thingbase"))
        .args(["user", "role", &user.to_string(), &project.to_string(), "owner"])
        .env("THINGBASE_DATA_DIR", &dir.0)
        .envs(backend.clone())
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("is not a role"));
    let _ = child.kill();
    let _ = child.wait();
}

/// Every entity set × every role × read, create, update, delete: what each role may do in its
/// own project, and that another project's entity of the set is not found.
#[test]
fn every_entity_set_obeys_every_role() {
    let server = server("auth-matrix");
    let (mine, theirs, my_thing, my_ds, _, _) = two_projects(&server);
    let admin = As::token(&server, ADMIN);
    let sensor = admin.get(&format!("/Datastreams({my_ds})/Sensor")).json["@iot.id"].as_i64().unwrap();
    let property = admin.get(&format!("/Datastreams({my_ds})/ObservedProperty")).json["@iot.id"].as_i64().unwrap();
    let point = json!({"type": "Point", "coordinates": [1, 2]});
    let bodies: Vec<(&str, Value)> = vec![
        ("Things", json!({"name": "n", "description": "d"})),
        (
            "Locations",
            json!({"name": "n", "description": "d", "encodingType": "application/geo+json", "location": point}),
        ),
        ("Sensors", json!({"name": "n", "description": "d", "encodingType": "text/plain", "metadata": "m"})),
        ("ObservedProperties", json!({"name": "n", "definition": "d", "description": "d"})),
        (
            "FeaturesOfInterest",
            json!({"name": "n", "description": "d", "encodingType": "application/geo+json", "feature": point}),
        ),
        (
            "Datastreams",
            json!({"name": "n", "description": "d", "unitOfMeasurement": {},
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
            "Thing": {"@iot.id": my_thing}, "Sensor": {"@iot.id": sensor}, "ObservedProperty": {"@iot.id": property}}),
        ),
        (
            "MultiDatastreams",
            json!({"name": "n", "description": "d", "unitOfMeasurements": [{}],
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation",
            "multiObservationDataTypes": ["http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"],
            "Thing": {"@iot.id": my_thing}, "Sensor": {"@iot.id": sensor}, "ObservedProperties": [{"@iot.id": property}]}),
        ),
        ("Observations", json!({"result": 1, "Datastream": {"@iot.id": my_ds}})),
    ];
    // One entity of each set in the other project, made by the admin there.
    let mut theirs_ids = Vec::new();
    for (set, body) in &bodies {
        let body = match *set {
            "Datastreams" | "MultiDatastreams" | "Observations" => continue,
            _ => body.clone(),
        };
        theirs_ids.push((*set, admin.in_project(theirs).create(&format!("/{set}"), body)));
    }
    let patch_of =
        |set: &str| if set == "Observations" { json!({"result": 2}) } else { json!({"description": "changed"}) };
    for role in ["viewer", "contributor", "editor", "admin"] {
        let (_, client) = member(&server, &format!("matrix-{role}"), mine, Some(role));
        for (set, body) in &bodies {
            let contributes = matches!(*set, "Observations" | "FeaturesOfInterest");
            let may_create = match role {
                "viewer" => false,
                "contributor" => contributes,
                _ => true,
            };
            let may_edit = matches!(role, "editor" | "admin");
            let created = client.post(&format!("/{set}"), body.clone());
            assert_eq!(created.status, if may_create { 201 } else { 403 }, "{role} creating {set}: {}", created.text);
            // Read, update and delete an entity of the set in its own project.
            let target = match created.json["@iot.id"].as_i64() {
                Some(id) => id,
                None => admin.in_project(mine).create(&format!("/{set}"), body.clone()),
            };
            let path = format!("/{set}({target})");
            assert_eq!(client.get(&path).status, 200, "{role} reading {path}");
            let patched = client.send("PATCH", &path, Some(patch_of(set)));
            assert_eq!(patched.status, if may_edit { 200 } else { 403 }, "{role} patching {path}: {}", patched.text);
            let deleted = client.send("DELETE", &path, None);
            assert_eq!(deleted.status, if may_edit { 200 } else { 403 }, "{role} deleting {path}: {}", deleted.text);
        }
        for (set, id) in &theirs_ids {
            let path = format!("/{set}({id})");
            assert_eq!(client.get(&path).status, 404, "{role} reading another project's {path}");
            assert_eq!(client.send("PATCH", &path, Some(patch_of(set))).status, 404, "{role} patching {path}");
            assert_eq!(client.send("DELETE", &path, None).status, 404, "{role} deleting {path}");
            assert!(!client.ids(&format!("/{set}")).0.contains(id), "{role} listing {set}");
        }
    }
}

/// `$ref` links (add, replace, remove) and the HistoricalLocations the server makes, for every
/// role: linking changes the source entity, so it takes what updating it takes; the other
/// project's entities are not found at either end of a link.
#[test]
fn links_and_historical_locations_obey_every_role() {
    let server = server("auth-links");
    let (mine, theirs, _, my_ds, _, _) = two_projects(&server);
    let admin = As::token(&server, ADMIN);
    let point = json!({"type": "Point", "coordinates": [1, 2]});
    let location =
        json!({"name": "n", "description": "d", "encodingType": "application/geo+json", "location": point.clone()});
    let their_location = admin.in_project(theirs).create("/Locations", location.clone());
    let their_thing = admin.in_project(theirs).create("/Things", thing("theirs"));
    let their_sensor = admin
        .in_project(theirs)
        .create("/Sensors", json!({"name": "n", "description": "d", "encodingType": "text/plain", "metadata": "m"}));
    for role in ["viewer", "contributor", "editor", "admin"] {
        let (_, client) = member(&server, &format!("links-{role}"), mine, Some(role));
        let may_edit = matches!(role, "editor" | "admin");
        let edited = if may_edit { 204 } else { 403 };
        let my_thing = admin.in_project(mine).create("/Things", thing("linked"));
        let first = admin.in_project(mine).create("/Locations", location.clone());
        let second = admin.in_project(mine).create("/Locations", location.clone());
        let refs = format!("/Things({my_thing})/Locations/$ref");

        let added = client.post(&refs, json!({"@iot.id": first}));
        assert_eq!(added.status, edited, "{role} adding a link: {}", added.text);
        let my_sensor = admin.in_project(mine).create(
            "/Sensors",
            json!({"name": "n", "description": "d", "encodingType": "text/plain", "metadata": "m"}),
        );
        let replaced =
            client.send("PUT", &format!("/Datastreams({my_ds})/Sensor/$ref"), Some(json!({"@iot.id": my_sensor})));
        assert_eq!(replaced.status, edited, "{role} replacing a link: {}", replaced.text);
        // The admin links, so that every role has a link to remove and a HistoricalLocation.
        assert_eq!(admin.post(&refs, json!({"@iot.id": second})).status, 204);
        let removed = client.send("DELETE", &format!("/Things({my_thing})/Locations({second})/$ref"), None);
        assert_eq!(removed.status, edited, "{role} removing a link: {}", removed.text);

        let (history, _) = client.ids(&format!("/Things({my_thing})/HistoricalLocations"));
        assert!(!history.is_empty(), "{role} reads its project's HistoricalLocations");
        let path = format!("/HistoricalLocations({})", history[0]);
        assert_eq!(client.get(&path).status, 200, "{role} reading {path}");
        let time = json!({"time": "2026-01-01T00:00:00Z"});
        let patched = client.send("PATCH", &path, Some(time));
        assert_eq!(patched.status, if may_edit { 200 } else { 403 }, "{role} patching {path}: {}", patched.text);
        let deleted = client.send("DELETE", &path, None);
        assert_eq!(deleted.status, if may_edit { 200 } else { 403 }, "{role} deleting {path}: {}", deleted.text);

        // The other project: its entities are missing at either end, whatever the role.
        let to_theirs = client.post(&refs, json!({"@iot.id": their_location}));
        assert_eq!(to_theirs.status, 404, "{role} linking to theirs: {}", to_theirs.text);
        let from_theirs = client.post(&format!("/Things({their_thing})/Locations/$ref"), json!({"@iot.id": first}));
        assert_eq!(from_theirs.status, 404, "{role} linking from theirs: {}", from_theirs.text);
        let sensor =
            client.send("PUT", &format!("/Datastreams({my_ds})/Sensor/$ref"), Some(json!({"@iot.id": their_sensor})));
        assert_eq!(sensor.status, 404, "{role} pointing at theirs: {}", sensor.text);
        let (their_history, _) = admin.ids(&format!("/Things({their_thing})/HistoricalLocations"));
        for id in their_history {
            assert_eq!(client.get(&format!("/HistoricalLocations({id})")).status, 404);
        }
        assert!(
            client.ids("/HistoricalLocations").0.iter().all(|id| !admin
                .in_project(theirs)
                .ids(&format!("/Things({their_thing})/HistoricalLocations"))
                .0
                .contains(id)),
            "{role} lists none of theirs"
        );
    }
}
