//! Conformance class "Sensing Core" and "Create-Update-Delete": entities, their relations,
//! deep insert, and the links and self links of responses.

use serde_json::json;

use crate::support::TestServer;

fn weather_station() -> serde_json::Value {
    json!({
        "name": "Weather station",
        "description": "On the roof",
        "properties": {"owner": {"name": "Ada"}},
        "Locations": [{
            "name": "Roof",
            "description": "Roof of building 1",
            "encodingType": "application/geo+json",
            "location": {"type": "Point", "coordinates": [8.4, 49.0]}
        }],
        "Datastreams": [{
            "name": "Air temperature",
            "description": "2 m above the roof",
            "unitOfMeasurement": {"name": "degree Celsius", "symbol": "°C", "definition": "ucum:Cel"},
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
            "Sensor": {"name": "PT100", "description": "a sensor", "encodingType": "text/plain", "metadata": "none"},
            "ObservedProperty": {"name": "Temperature", "definition": "http://example.org/temp", "description": "air temperature"}
        }]
    })
}

#[test]
fn deep_insert_creates_the_graph_with_a_historical_location() {
    let server = TestServer::start("deep-insert");
    let thing = server.create("/Things", weather_station());
    let response = server.get(&format!("/Things({thing})?$expand=Locations,HistoricalLocations,Datastreams/Sensor"));
    assert_eq!(response.status, 200, "{}", response.text);
    let body = response.json;
    assert_eq!(body["name"], "Weather station");
    assert_eq!(body["properties"]["owner"]["name"], "Ada");
    assert_eq!(body["Locations"].as_array().unwrap().len(), 1);
    assert_eq!(body["HistoricalLocations"].as_array().unwrap().len(), 1);
    assert_eq!(body["Datastreams"][0]["Sensor"]["name"], "PT100");
    assert_eq!(body["@iot.selfLink"], server.url(&format!("/Things({thing})")));
    assert_eq!(body["Datastreams@iot.navigationLink"], server.url(&format!("/Things({thing})/Datastreams")));
}

#[test]
fn observation_gets_a_feature_of_interest_from_the_location() {
    let server = TestServer::start("foi");
    let thing = server.create("/Things", weather_station());
    let datastream = server.get(&format!("/Things({thing})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
    let first = server.create(
        &format!("/Datastreams({datastream})/Observations"),
        json!({"phenomenonTime": "2024-05-01T12:00:00Z", "result": 21.5}),
    );
    let second = server.create("/Observations", json!({"result": 22, "Datastream": {"@iot.id": datastream}}));
    let a = server.get(&format!("/Observations({first})/FeatureOfInterest")).json;
    let b = server.get(&format!("/Observations({second})/FeatureOfInterest")).json;
    assert_eq!(a["feature"]["type"], "Point");
    assert_eq!(a["@iot.id"], b["@iot.id"], "the generated feature is reused");
    assert_eq!(server.get(&format!("/Observations({first})")).json["result"], 21.5);
    assert_eq!(server.get(&format!("/Observations({second})")).json["result"], 22);
    let ds = server.get(&format!("/Datastreams({datastream})")).json;
    assert!(ds["phenomenonTime"].as_str().unwrap().starts_with("2024-05-01T12:00:00Z/"), "{ds}");
}

#[test]
fn missing_entities_are_404_and_bad_input_is_400() {
    let server = TestServer::start("errors");
    assert_eq!(server.get("/Things(999)").status, 404);
    assert_eq!(server.get("/Things(999)/Datastreams").status, 404);
    assert_eq!(server.get("/Nonsense").status, 404);
    let bad_filter = server.get("/Things?$filter=name%20eq");
    assert_eq!(bad_filter.status, 400, "{}", bad_filter.text);
    assert_eq!(bad_filter.json["option"], "$filter");
    assert!(bad_filter.json["position"].as_u64().is_some(), "{}", bad_filter.text);
    let missing = server.post("/Things", json!({"name": "no description"}));
    assert_eq!(missing.status, 400);
    assert!(missing.json["message"].as_str().unwrap().contains("description"));
    assert_eq!(server.post("/Things", json!({"name": "x", "description": "y", "colour": 1})).status, 400);
    assert_eq!(request_raw(&server, "POST", "/Things", "{not json").status, 400);
}

fn request_raw(server: &TestServer, method: &str, path: &str, body: &str) -> crate::support::Response {
    crate::support::request(method, &server.url(path), Some(body.to_owned()), Some("application/json"))
}

#[test]
fn update_replace_and_delete_with_cascade() {
    let server = TestServer::start("cud");
    let created = server.post("/Things", weather_station());
    assert_eq!(created.status, 201);
    let thing = created.json["@iot.id"].as_i64().unwrap();
    assert_eq!(created.location.as_deref(), Some(server.url(&format!("/Things({thing})")).as_str()));

    let patched = server.patch(&format!("/Things({thing})"), json!({"name": "Renamed"}));
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["name"], "Renamed");
    assert_eq!(patched.json["description"], "On the roof", "PATCH keeps what it does not name");

    let replaced = server.put(&format!("/Things({thing})"), json!({"name": "Replaced", "description": "new"}));
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert!(replaced.json["properties"].is_null(), "PUT clears what it does not name");
    assert_eq!(server.put(&format!("/Things({thing})"), json!({"name": "no description"})).status, 400);

    let datastreams = server.get(&format!("/Things({thing})/Datastreams")).json;
    let datastream = datastreams["value"][0]["@iot.id"].as_i64().unwrap();
    assert_eq!(server.delete(&format!("/Things({thing})")).status, 200);
    assert_eq!(server.get(&format!("/Things({thing})")).status, 404);
    assert_eq!(server.get(&format!("/Datastreams({datastream})")).status, 404, "a Thing's Datastreams go with it");
    assert_eq!(server.delete(&format!("/Things({thing})")).status, 404);
}

/// The PyPI `frost_sta_client` library, as real users drive SensorThings servers, against this
/// server. `cargo xtask ci` installs it; without it this test fails and says how to install it.
#[test]
fn frost_sta_client_from_pypi_works_end_to_end() {
    let server = TestServer::start("frost-client");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/python/frost_client.py");
    let output = std::process::Command::new("python3")
        .args([script, &server.base])
        .output()
        .expect("python3 runs (install it, and `pip install frost_sta_client`)");
    assert!(
        output.status.success(),
        "frost_sta_client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn observed_area_covers_the_features_of_the_observations() {
    let server = TestServer::start("observed-area");
    let thing = server.create("/Things", weather_station());
    let datastream = server.get(&format!("/Things({thing})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
    let path = format!("/Datastreams({datastream})");
    assert!(server.get(&path).json["observedArea"].is_null(), "no Observations, no area");
    server.create(&format!("{path}/Observations"), json!({"result": 1}));
    assert_eq!(server.get(&path).json["observedArea"], json!({"type": "Point", "coordinates": [8.4, 49.0]}));
    let elsewhere = json!({"name": "buoy", "description": "d", "encodingType": "application/geo+json",
                           "feature": {"type": "Point", "coordinates": [10.0, 50.0]}});
    server.create(&format!("{path}/Observations"), json!({"result": 2, "FeatureOfInterest": elsewhere}));
    let area = server.get(&path).json["observedArea"].clone();
    assert_eq!(area["type"], "Polygon", "{area}");
    let corners: Vec<(f64, f64)> = area["coordinates"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
        .collect();
    for corner in [(8.4, 49.0), (10.0, 50.0), (8.4, 50.0), (10.0, 49.0)] {
        assert!(corners.contains(&corner), "{corner:?} not in {corners:?}");
    }
}

#[test]
fn deleting_a_feature_shrinks_the_derived_fields_of_its_datastreams() {
    let server = TestServer::start("feature-cascade");
    let thing = server.create("/Things", weather_station());
    let datastream = server.get(&format!("/Things({thing})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
    let path = format!("/Datastreams({datastream})");
    server.create(&format!("{path}/Observations"), json!({"result": 1, "phenomenonTime": "2024-01-01T00:00:00Z"}));
    let far = json!({"name": "far", "description": "d", "encodingType": "application/geo+json",
                     "feature": {"type": "Point", "coordinates": [20.0, 60.0]}});
    let late = server.create(
        &format!("{path}/Observations"),
        json!({"result": 2, "phenomenonTime": "2024-06-01T00:00:00Z", "FeatureOfInterest": far}),
    );
    assert_eq!(server.get(&path).json["observedArea"]["type"], "Polygon");
    let feature = server.get(&format!("/Observations({late})/FeatureOfInterest")).json["@iot.id"].as_i64().unwrap();
    assert_eq!(server.delete(&format!("/FeaturesOfInterest({feature})")).status, 200);
    let ds = server.get(&path).json;
    assert_eq!(ds["phenomenonTime"], "2024-01-01T00:00:00Z/2024-01-01T00:00:00Z", "{ds}");
    assert_eq!(ds["observedArea"], json!({"type": "Point", "coordinates": [8.4, 49.0]}));
}

#[test]
fn large_pages_stream_across_chunks_as_one_valid_document() {
    let server = TestServer::start("streamed");
    let thing = server.create("/Things", weather_station());
    let datastream = server.get(&format!("/Things({thing})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
    let rows: Vec<serde_json::Value> =
        (0..2500).map(|i| json!([format!("2024-01-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60), i])).collect();
    let created = server.post(
        "/CreateObservations",
        json!([{"Datastream": {"@iot.id": datastream}, "components": ["phenomenonTime", "result"], "dataArray": rows}]),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let page = server.get(&format!("/Datastreams({datastream})/Observations?$top=2000&$count=true&$orderby=result"));
    assert_eq!(page.status, 200);
    assert_eq!(page.json["@iot.count"], 2500, "{}", &page.text[..200.min(page.text.len())]);
    let values = page.json["value"].as_array().expect("a JSON document");
    assert_eq!(values.len(), 2000);
    assert!(values.iter().enumerate().all(|(i, o)| o["result"] == i), "order holds across chunks");
    let next = page.json["@iot.nextLink"].as_str().expect("a next link after the stream");
    let rest = crate::support::request("GET", next, None, None);
    assert_eq!(rest.json["value"].as_array().unwrap().len(), 500);
    assert!(rest.json["@iot.nextLink"].is_null());
    assert_eq!(server.get("/Things(999)/Datastreams").status, 404, "errors still come before the stream");
}
