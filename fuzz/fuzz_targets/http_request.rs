//! Fuzzes whole HTTP requests through the real router (`http_api::router`, access control off)
//! over a real SQLite store holding a Thing, a Datastream and a MultiDatastream: `$batch` in
//! both formats (JSON, and multipart with change sets), Data Arrays (`CreateObservations`), and
//! any method, path, query and body. The first byte chooses the shape; the rest fills it. No
//! input may panic or answer a 5xx, neither the request nor any part of a `$batch`.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

const SETUP: &[(&str, &str)] = &[
    (
        "/v1.1/Things",
        r#"{"name":"t","description":"d","Locations":[{"name":"l","description":"d","encodingType":"application/geo+json","location":{"type":"Point","coordinates":[1,2]}}]}"#,
    ),
    (
        "/v1.1/Datastreams",
        r#"{"name":"s","description":"d","observationType":"http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement","unitOfMeasurement":{"name":"c","symbol":"C","definition":"u"},"Thing":{"@iot.id":1},"Sensor":{"name":"s","description":"d","encodingType":"application/pdf","metadata":"m"},"ObservedProperty":{"name":"p","definition":"u","description":"d"}}"#,
    ),
    (
        "/v1.1/MultiDatastreams",
        r#"{"name":"m","description":"d","observationType":"http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation","multiObservationDataTypes":["http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"],"unitOfMeasurements":[{"name":"c","symbol":"C","definition":"u"}],"Thing":{"@iot.id":1},"Sensor":{"@iot.id":1},"ObservedProperties":[{"@iot.id":1}]}"#,
    ),
];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("thingbase-fuzz-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = store_sqlite::SqliteStore::open(store_sqlite::SqliteOptions::new(dir.join("fuzz.sqlite")))
            .expect("store opens");
        let paging = store::Paging { default_top: 100, max_top: 1000 };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let app = app::App::new(Arc::new(store), paging);
        let state = http_api::ApiState {
            app,
            settings: Arc::new(http_api::ApiSettings { max_body_bytes: 1 << 20, ..Default::default() }),
            metrics: None,
            auth: http_api::auth::AuthMode::Off,
            limits: Arc::new(http_api::limits::RateLimits::default()),
            trust: None,
        };
        let router = http_api::router(state);
        for (path, body) in SETUP {
            let (status, reply) =
                runtime.block_on(send(&router, "POST", path, Some("application/json"), body.as_bytes()));
            assert_eq!(status, 201, "setup POST {path}: {}", String::from_utf8_lossy(&reply));
        }
        Fixture { runtime, router }
    })
}

async fn send(
    router: &axum::Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut request = axum::http::Request::builder().method(method).uri(uri).header("host", "localhost");
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let Ok(mut request) = request.body(Body::from(body.to_vec())) else {
        return (0, Vec::new());
    };
    request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = router.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a whole body");
    (status, body.to_vec())
}

/// Splits `text` at its first line break: (first line, rest).
fn line(text: &str) -> (&str, &str) {
    text.split_once('\n').unwrap_or((text, ""))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (method, uri, content_type, body): (String, String, Option<String>, Vec<u8>) = match selector % 6 {
        0 => ("POST".into(), "/v1.1/$batch".into(), Some("application/json".into()), rest.to_vec()),
        1 => {
            // One batch of parts the input writes (change sets need a boundary of their own).
            let body = format!("--b\r\nContent-Type: application/http\r\n\r\n{text}\r\n--b--\r\n");
            ("POST".into(), "/v1.1/$batch".into(), Some("multipart/mixed; boundary=b".into()), body.into_bytes())
        }
        2 => ("POST".into(), "/v1.1/$batch".into(), Some("multipart/mixed; boundary=b".into()), rest.to_vec()),
        3 => ("POST".into(), "/v1.1/CreateObservations".into(), Some("application/json".into()), rest.to_vec()),
        4 => {
            // `PATH?QUERY` on the first line, a GET.
            let (target, _) = line(&text);
            ("GET".into(), format!("/v1.1/{target}"), None, Vec::new())
        }
        _ => {
            // `METHOD PATH?QUERY` on the first line, the content type on the second, then the body.
            let (request_line, rest) = line(&text);
            let (content_type, body) = line(rest);
            let (method, target) = request_line.split_once(' ').unwrap_or((request_line, ""));
            let content_type = (!content_type.is_empty()).then(|| content_type.to_owned());
            (method.to_owned(), format!("/v1.1/{target}"), content_type, body.as_bytes().to_vec())
        }
    };
    let fixture = fixture();
    let (status, reply) =
        fixture.runtime.block_on(send(&fixture.router, &method, &uri, content_type.as_deref(), &body));
    if status == 0 {
        return; // not a request the HTTP layer would have let through (bad method or URI)
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(status < 500, "{method} {uri} answered {status}: {reply}");
    if uri.ends_with("$batch") && status == 200 {
        // No part may have failed inside either.
        if let Ok(answer) = serde_json::from_str::<serde_json::Value>(&reply) {
            for part in answer["responses"].as_array().into_iter().flatten() {
                let part_status = part["status"].as_u64().unwrap_or(0);
                assert!(part_status < 500, "a $batch part answered {part_status}: {part}");
            }
        } else {
            assert!(!reply.contains("HTTP/1.1 5"), "a multipart $batch part answered 5xx: {reply}");
        }
    }
});
