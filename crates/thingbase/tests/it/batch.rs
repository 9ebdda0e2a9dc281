//! Conformance class "Batch Requests" (`$batch`, JSON format): requests in order, atomicity
//! groups that commit or roll back as one, and `$<id>` references to entities created earlier.

use serde_json::{Value, json};

use crate::support::TestServer;

fn batch(server: &TestServer, requests: Value) -> Vec<Value> {
    let response = server.post("/$batch", json!({"requests": requests}));
    assert_eq!(response.status, 200, "{}", response.text);
    response.json["responses"].as_array().expect("responses").clone()
}

fn count(server: &TestServer, set: &str) -> u64 {
    server.get(&format!("/{set}?$count=true&$top=0")).json["@iot.count"].as_u64().unwrap()
}

fn statuses(responses: &[Value]) -> Vec<u64> {
    responses.iter().map(|r| r["status"].as_u64().unwrap()).collect()
}

fn thing(name: &str) -> Value {
    json!({"name": name, "description": "from a batch"})
}

#[test]
fn independent_requests_run_in_order_with_their_own_statuses() {
    let server = TestServer::start("batch-order");
    let responses = batch(
        &server,
        json!([
            {"id": "a", "method": "post", "url": "Things", "body": thing("First")},
            {"id": "b", "method": "get", "url": "Things?$select=name"},
            {"id": "c", "method": "post", "url": "Things", "body": {"name": "no description"}},
            {"id": "d", "method": "patch", "url": "$a", "body": {"name": "Renamed"}},
            {"id": "e", "method": "get", "url": "/v1.1/Things(999)"},
            {"id": "f", "method": "delete", "url": "Things(999)"}
        ]),
    );
    assert_eq!(statuses(&responses), [201, 200, 400, 200, 404, 404]);
    let ids: Vec<&str> = responses.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e", "f"]);
    let created = responses[0]["body"]["@iot.id"].as_i64().unwrap();
    assert_eq!(responses[0]["headers"]["location"], server.url(&format!("/Things({created})")));
    assert_eq!(responses[1]["body"]["value"], json!([{"name": "First"}]), "a GET sees earlier changes");
    assert_eq!(responses[3]["body"]["name"], "Renamed");
    assert_eq!(server.get(&format!("/Things({created})")).json["name"], "Renamed", "the changes are kept");
}

#[test]
fn an_atomicity_group_rolls_back_entirely_when_one_request_fails() {
    let server = TestServer::start("batch-rollback");
    let existing = server.create("/Things", thing("Existing"));
    let responses = batch(
        &server,
        json!([
            {"id": "1", "method": "post", "url": "Things", "body": thing("A"), "atomicityGroup": "g"},
            {"id": "2", "method": "patch", "url": format!("Things({existing})"), "body": {"name": "Changed"}, "atomicityGroup": "g"},
            {"id": "3", "method": "post", "url": "Things", "body": {"name": "invalid"}, "atomicityGroup": "g"},
            {"id": "4", "method": "post", "url": "Things", "body": thing("Outside")}
        ]),
    );
    let statuses = statuses(&responses);
    assert_eq!(statuses[2], 400, "{responses:?}");
    assert!(statuses[0] >= 400 && statuses[1] >= 400, "the others in the group report failure too: {responses:?}");
    assert_eq!(statuses[3], 201, "a request outside the group is independent");
    assert_eq!(count(&server, "Things"), 2, "Existing and Outside");
    assert_eq!(server.get(&format!("/Things({existing})")).json["name"], "Existing", "the PATCH was rolled back");
}

#[test]
fn an_atomicity_group_commits_together_and_references_its_own_creations() {
    let server = TestServer::start("batch-group-refs");
    let responses = batch(
        &server,
        json!([
            {"id": "thing", "method": "post", "url": "Things", "body": thing("Grouped"), "atomicityGroup": "g"},
            {"id": "sensor", "method": "post", "url": "Sensors", "atomicityGroup": "g",
             "body": {"name": "S", "description": "d", "encodingType": "text/plain", "metadata": "m"}},
            {"id": "ds", "method": "post", "url": "$thing/Datastreams", "atomicityGroup": "g", "body": {
                "name": "D", "description": "d",
                "unitOfMeasurement": {"name": "n", "symbol": "s", "definition": "d"},
                "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                "ObservedProperty": {"name": "P", "definition": "p", "description": "d"},
                "Sensor": {"@iot.id": 1}
            }},
            {"id": "loc", "method": "post", "url": "$thing/Locations", "atomicityGroup": "g", "body": {
                "name": "L", "description": "d", "encodingType": "application/geo+json",
                "location": {"type": "Point", "coordinates": [1, 2]}
            }},
            {"id": "obs", "method": "post", "url": "$ds/Observations", "body": {"result": 42}},
            {"id": "read", "method": "get", "url": "$thing?$expand=Datastreams/Observations,Locations"}
        ]),
    );
    assert_eq!(statuses(&responses), [201, 201, 201, 201, 201, 200], "{responses:?}");
    let read = &responses[5]["body"];
    assert_eq!(read["name"], "Grouped");
    assert_eq!(read["Datastreams"][0]["name"], "D");
    assert_eq!(read["Datastreams"][0]["Observations"][0]["result"], 42);
    assert_eq!(read["Locations"][0]["name"], "L");
    assert_eq!(count(&server, "HistoricalLocations"), 1);
}

#[test]
fn a_group_referencing_a_failed_request_rolls_back() {
    let server = TestServer::start("batch-group-bad-ref");
    let responses = batch(
        &server,
        json!([
            {"id": "t", "method": "post", "url": "Things", "body": thing("T"), "atomicityGroup": "g"},
            {"id": "x", "method": "patch", "url": "$nosuch", "body": {"name": "x"}, "atomicityGroup": "g"}
        ]),
    );
    assert_eq!(responses[1]["status"], 400, "{responses:?}");
    assert!(responses[0]["status"].as_u64().unwrap() >= 400);
    assert_eq!(count(&server, "Things"), 0);
}

#[test]
fn malformed_batches_are_rejected() {
    let server = TestServer::start("batch-malformed");
    assert_eq!(server.post("/$batch", json!({"nope": []})).status, 400);
    assert_eq!(server.post("/$batch", json!({"requests": [{"id": "1", "url": "Things"}]})).status, 400);
    assert_eq!(server.get("/$batch").status, 405);
}
