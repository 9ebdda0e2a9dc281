//! Test helpers: an in-process server on an ephemeral port with its own data directory, and a
//! small blocking HTTP client.

use serde_json::Value;

pub struct TestServer {
    pub base: String,
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<thingbase::Server>,
    /// The PostgreSQL database in the PostgreSQL pass.
    pub database_url: Option<String>,
    _dir: TempDir,
}

/// With `THINGBASE_TEST_BACKEND=postgres` every server gets a fresh database of a throwaway
/// PostgreSQL cluster (`pg-test`); otherwise the embedded SQLite file of its data directory.
pub fn backend_database(name: &str) -> Option<String> {
    if std::env::var("THINGBASE_TEST_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let cluster = pg_test::cluster().unwrap_or_else(|e| panic!("THINGBASE_TEST_BACKEND=postgres: {e}"));
    Some(cluster.database(&format!("it_{name}_{n}")).unwrap_or_else(|e| panic!("a test database: {e}")))
}

/// The sealing key of every test server.
pub const TEST_SEALING_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("thingbase-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestServer {
    pub fn start(name: &str) -> TestServer {
        Self::start_with(name, |_| {})
    }

    pub fn start_with(name: &str, configure: impl FnOnce(&mut thingbase::Config)) -> TestServer {
        let dir = TempDir::new(name);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        // Access control is off unless a test turns it on: `access_control.rs` tests it.
        let mut config = thingbase::Config {
            data_dir: dir.0.clone(),
            database_url: backend_database(name),
            http_port: 0,
            mqtt_port: 0,
            https_port: Some(0),
            mqtts_port: Some(0),
            coaps_port: Some(0),
            // One key for every test server, so data moved between them (export, import,
            // several nodes) keeps its CA usable, as operators must do.
            sealing_key: Some(TEST_SEALING_KEY.into()),
            readers: 2,
            auth: thingbase::Auth::Off,
            ..Default::default()
        };
        configure(&mut config);
        let database_url = config.database_url.clone();
        let server = runtime.block_on(thingbase::start(config, None)).expect("server starts");
        let base = format!("http://{}/v1.1", server.http_addrs[0]);
        TestServer { base, runtime: Some(runtime), server: Some(server), database_url, _dir: dir }
    }

    /// The first address the MQTT broker listens on.
    pub fn mqtt_addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().map(|s| s.mqtt_addrs[0]).expect("a running server")
    }

    /// The first address of the HTTPS listener (with access control on).
    pub fn https_addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().map(|s| s.https_addrs[0]).expect("a running server with HTTPS")
    }

    /// The first address of the MQTTS listener (with access control on).
    pub fn mqtts_addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().map(|s| s.mqtts_addrs[0]).expect("a running server with MQTTS")
    }

    /// The first address of the CoAPS listener (with access control on and the `coap` feature).
    #[cfg(feature = "coap")]
    pub fn coaps_addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().map(|s| s.coaps_addrs[0]).expect("a running server with CoAPS")
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self._dir.0
    }

    /// Every address the HTTP API listens on.
    pub fn addrs(&self) -> Vec<std::net::SocketAddr> {
        self.server.as_ref().map(|s| s.http_addrs.clone()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> Response {
        request("GET", &self.url(path), None, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Response {
        request("POST", &self.url(path), Some(body.to_string()), Some("application/json"))
    }

    pub fn patch(&self, path: &str, body: Value) -> Response {
        request("PATCH", &self.url(path), Some(body.to_string()), Some("application/json"))
    }

    pub fn put(&self, path: &str, body: Value) -> Response {
        request("PUT", &self.url(path), Some(body.to_string()), Some("application/json"))
    }

    /// A request with a JSON body of the given content type (e.g. `application/json-patch+json`).
    pub fn send(&self, method: &str, path: &str, body: Value, content_type: &str) -> Response {
        request(method, &self.url(path), Some(body.to_string()), Some(content_type))
    }

    pub fn delete(&self, path: &str) -> Response {
        request("DELETE", &self.url(path), None, None)
    }

    /// Creates an entity and returns its id.
    pub fn create(&self, path: &str, body: Value) -> i64 {
        let response = self.post(path, body);
        assert_eq!(response.status, 201, "creating at {path}: {}", response.text);
        response.json["@iot.id"].as_i64().expect("created entity has an id")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let (Some(runtime), Some(server)) = (self.runtime.take(), self.server.take()) {
            runtime.block_on(server.stop());
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    /// The `WWW-Authenticate` header of a 401.
    pub authenticate: Option<String>,
    /// The `Retry-After` header of a 429, in seconds.
    pub retry_after: Option<u64>,
    pub text: String,
    pub json: Value,
}

pub fn request(method: &str, url: &str, body: Option<String>, content_type: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = content_type.map(|ct| ("content-type", ct)).into_iter().collect();
    request_with(method, url, body, &headers)
}

/// A request with any headers (`authorization`, `thingbase-project`, ...).
pub fn request_with(method: &str, url: &str, body: Option<String>, headers: &[(&str, &str)]) -> Response {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let result = match body {
        Some(body) => agent.run(req.body(body).expect("request")),
        None => agent.run(req.body(()).expect("request")),
    };
    let mut response = result.expect("HTTP round trip");
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (location, authenticate) = (header("location"), header("www-authenticate"));
    let retry_after = header("retry-after").and_then(|s| s.parse().ok());
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Response { status, location, authenticate, retry_after, text, json }
}
