//! Conformance class "Data Array Extension": `POST /CreateObservations` and
//! `$resultFormat=dataArray` on reads.

use serde_json::{Value, json};

use crate::support::TestServer;

const MEASUREMENT: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement";

/// A Thing with a Location and two Datastreams; returns their ids.
fn two_datastreams(server: &TestServer) -> (i64, i64) {
    let datastream = |name: &str| {
        json!({
            "name": name, "description": "d", "observationType": MEASUREMENT,
            "unitOfMeasurement": {"name": "n", "symbol": "s", "definition": "d"},
            "Sensor": {"name": "S", "description": "d", "encodingType": "text/plain", "metadata": "m"},
            "ObservedProperty": {"name": "P", "definition": "p", "description": "d"}
        })
    };
    let thing = server.create(
        "/Things",
        json!({
            "name": "T", "description": "d",
            "Locations": [{"name": "L", "description": "d", "encodingType": "application/geo+json",
                           "location": {"type": "Point", "coordinates": [1, 2]}}],
            "Datastreams": [datastream("A"), datastream("B")]
        }),
    );
    let ids: Vec<i64> = server.get(&format!("/Things({thing})/Datastreams?$orderby=id")).json["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["@iot.id"].as_i64().unwrap())
        .collect();
    (ids[0], ids[1])
}

fn create_observations(server: &TestServer, body: Value) -> Vec<Value> {
    let response = server.post("/CreateObservations", body);
    assert_eq!(response.status, 201, "{}", response.text);
    response.json.as_array().expect("one entry per row").clone()
}

#[test]
fn create_observations_inserts_rows_and_reports_each() {
    let server = TestServer::start("data-array-create");
    let (a, b) = two_datastreams(&server);
    let feature = server.create(
        "/FeaturesOfInterest",
        json!({"name": "F", "description": "d", "encodingType": "application/geo+json",
               "feature": {"type": "Point", "coordinates": [3, 4]}}),
    );
    let links = create_observations(
        &server,
        json!([
            {
                "Datastream": {"@iot.id": a},
                "components": ["phenomenonTime", "result", "FeatureOfInterest/id"],
                "dataArray": [
                    ["2024-01-01T00:00:00Z", 1, feature],
                    ["2024-01-02T00:00:00Z", 2, feature],
                    ["not a time", 3, feature],
                    ["2024-01-03T00:00:00Z", 4, null],
                    ["2024-01-04T00:00:00Z", 5, 999_999]
                ]
            },
            {
                "Datastream": {"@iot.id": b},
                "components": ["result", "phenomenonTime", "resultTime"],
                "dataArray": [["x", "2024-02-01T00:00:00Z", "2024-02-01T00:00:05Z"]]
            }
        ]),
    );
    assert_eq!(links.len(), 6);
    // A rejected row answers "error" and, as FROST-Server does, what is wrong with it.
    let reasons: Vec<&str> = links[2..5].iter().map(|l| l.as_str().expect("a string")).collect();
    for (reason, names) in reasons.iter().zip(["phenomenonTime", "FeatureOfInterest/id", "999999"]) {
        assert!(reason.starts_with("error "), "{reason}");
        assert!(reason.contains(names), "{reason} should name {names}");
    }
    for link in [&links[0], &links[1], &links[5]] {
        let url = link.as_str().expect("a self link");
        assert!(url.starts_with(&server.url("/Observations(")), "{url}");
        assert_eq!(crate::support::request("GET", url, None, None).status, 200);
    }
    let observations =
        server.get(&format!("/Datastreams({a})/Observations?$orderby=phenomenonTime&$expand=FeatureOfInterest"));
    let observations = observations.json["value"].as_array().unwrap().clone();
    assert_eq!(observations.len(), 2);
    assert_eq!(observations[0]["result"], 1);
    assert_eq!(observations[1]["FeatureOfInterest"]["@iot.id"], feature);
    let b_obs = &server.get(&format!("/Datastreams({b})/Observations")).json["value"][0];
    assert_eq!(b_obs["result"], "x");
    assert_eq!(b_obs["resultTime"], "2024-02-01T00:00:05Z");
    assert_eq!(
        server.get(&format!("/Datastreams({a})")).json["phenomenonTime"],
        "2024-01-01T00:00:00Z/2024-01-02T00:00:00Z"
    );
}

#[test]
fn create_observations_rejects_bad_blocks() {
    let server = TestServer::start("data-array-bad");
    let (a, _) = two_datastreams(&server);
    let post = |body: Value| server.post("/CreateObservations", body).status;
    assert_eq!(post(json!({"not": "an array"})), 400);
    assert_eq!(post(json!([{"components": ["result"], "dataArray": [[1]]}])), 400, "no Datastream");
    assert_eq!(
        post(
            json!([{"Datastream": {"@iot.id": a}, "components": ["phenomenonTime"], "dataArray": [["2024-01-01T00:00:00Z"]]}])
        ),
        400
    );
    assert_eq!(
        post(json!([{"Datastream": {"@iot.id": a}, "components": ["colour", "result"], "dataArray": [["red", 1]]}])),
        400
    );
    assert_eq!(server.get("/Observations?$count=true").json["@iot.count"], 0);
    let response = server.post(
        "/CreateObservations",
        json!([{"Datastream": {"@iot.id": 999}, "components": ["result"], "dataArray": [[1]]}]),
    );
    assert!(response.status == 400 || response.status == 404, "{}", response.text);
}

#[test]
fn result_format_data_array_groups_observations_by_datastream() {
    let server = TestServer::start("data-array-read");
    let (a, b) = two_datastreams(&server);
    create_observations(
        &server,
        json!([
            {"Datastream": {"@iot.id": a}, "components": ["phenomenonTime", "result"],
             "dataArray": [["2024-01-01T00:00:00Z", 1], ["2024-01-02T00:00:00Z", 2]]},
            {"Datastream": {"@iot.id": b}, "components": ["phenomenonTime", "result"],
             "dataArray": [["2024-01-03T00:00:00Z", 3]]}
        ]),
    );
    let response = server.get(
        "/Observations?$resultFormat=dataArray&$select=id,phenomenonTime,result&$orderby=phenomenonTime&$count=true",
    );
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json["@iot.count"], 3);
    let blocks = response.json["value"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["Datastream@iot.navigationLink"], server.url(&format!("/Datastreams({a})")));
    assert_eq!(blocks[0]["components"], json!(["id", "phenomenonTime", "result"]));
    assert_eq!(blocks[0]["dataArray@iot.count"], 2);
    let rows = blocks[0]["dataArray"].as_array().unwrap();
    assert_eq!(rows[0][1], "2024-01-01T00:00:00Z");
    assert_eq!(rows[1][2], 2);
    assert_eq!(blocks[1]["dataArray"][0][2], 3);

    let response = server
        .get(&format!("/Datastreams({a})/Observations?$resultFormat=dataArray&$select=result&$orderby=result%20desc"));
    assert_eq!(response.json["value"][0]["components"], json!(["result"]));
    assert_eq!(response.json["value"][0]["dataArray"], json!([[2], [1]]));
    let response = server.get("/Things?$resultFormat=dataArray");
    assert_eq!(response.status, 400);
    let response = server.get("/Observations?$resultFormat=csv");
    assert_eq!(response.status, 400);
    assert_eq!(response.json["option"], "$resultFormat");
}
