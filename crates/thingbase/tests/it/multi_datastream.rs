//! Conformance class "MultiDatastream Extension": creation rules (a complex observation type,
//! one unit and one data type per ObservedProperty) and Observations with array results.

use serde_json::{Value, json};

use crate::support::TestServer;

const MEASUREMENT: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement";
const COMPLEX: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation";

fn property(name: &str) -> Value {
    json!({"name": name, "definition": format!("http://example.org/{name}"), "description": "d"})
}

/// A MultiDatastream body with the given counts of units, data types and ObservedProperties.
fn multi(units: usize, types: usize, properties: Vec<Value>) -> Value {
    json!({
        "name": "Weather", "description": "wind and temperature",
        "observationType": COMPLEX,
        "unitOfMeasurements": (0..units).map(|i| json!({"name": format!("u{i}"), "symbol": "s", "definition": "d"})).collect::<Vec<_>>(),
        "multiObservationDataTypes": vec![MEASUREMENT; types],
        "Thing": {"name": "T", "description": "d", "Locations": [{"name": "L", "description": "d",
            "encodingType": "application/geo+json", "location": {"type": "Point", "coordinates": [1, 2]}}]},
        "Sensor": {"name": "S", "description": "d", "encodingType": "text/plain", "metadata": "m"},
        "ObservedProperties": properties
    })
}

fn count(server: &TestServer, set: &str) -> u64 {
    server.get(&format!("/{set}?$count=true&$top=0")).json["@iot.count"].as_u64().unwrap()
}

#[test]
fn creation_checks_arity_and_observation_type() {
    let server = TestServer::start("multi-create-rules");
    let two = || vec![property("Wind"), property("Temperature")];
    assert_eq!(server.post("/MultiDatastreams", multi(1, 2, two())).status, 400, "too few units");
    assert_eq!(server.post("/MultiDatastreams", multi(2, 3, two())).status, 400, "too many data types");
    let mut wrong_type = multi(2, 2, two());
    wrong_type["observationType"] = json!(MEASUREMENT);
    assert_eq!(server.post("/MultiDatastreams", wrong_type).status, 400);
    let mut no_properties = multi(0, 0, Vec::new());
    no_properties.as_object_mut().unwrap().remove("ObservedProperties");
    assert_eq!(server.post("/MultiDatastreams", no_properties).status, 400);
    assert_eq!(count(&server, "MultiDatastreams"), 0);
    assert_eq!(count(&server, "Things"), 0, "a rejected deep insert leaves nothing");
    assert_eq!(count(&server, "ObservedProperties"), 0);

    let id = server.create("/MultiDatastreams", multi(2, 2, two()));
    let created =
        server.get(&format!("/MultiDatastreams({id})?$expand=ObservedProperties($select=name),Thing($select=name)"));
    assert_eq!(
        created.json["ObservedProperties"],
        json!([{"name": "Wind"}, {"name": "Temperature"}]),
        "in the given order"
    );
    assert_eq!(created.json["Thing"]["name"], "T");
    assert_eq!(created.json["unitOfMeasurements"][1]["name"], "u1");
    let thing = created.json["Thing"]["@iot.id"].as_i64();
    assert!(thing.is_none(), "$select=name leaves out the id");
    let things = server.get("/Things?$expand=MultiDatastreams($select=id)").json;
    assert_eq!(things["value"][0]["MultiDatastreams"], json!([{"@iot.id": id}]));
}

#[test]
fn observations_need_one_value_per_observed_property() {
    let server = TestServer::start("multi-observations");
    let id = server.create("/MultiDatastreams", multi(3, 3, vec![property("A"), property("B"), property("C")]));
    let path = format!("/MultiDatastreams({id})/Observations");
    let good = server.create(&path, json!({"phenomenonTime": "2024-01-01T00:00:00Z", "result": [1, 2.5, "x"]}));
    server.create(&path, json!({"phenomenonTime": "2024-01-02T00:00:00Z", "result": [7, 0, "y"]}));
    assert_eq!(server.post(&path, json!({"result": [1, 2]})).status, 400, "too few values");
    assert_eq!(server.post(&path, json!({"result": 1})).status, 400, "not an array");
    assert_eq!(server.post(&path, json!({"result": [1, 2, 3, 4]})).status, 400, "too many values");
    assert_eq!(server.get(&format!("/Observations({good})")).json["result"], json!([1, 2.5, "x"]));
    assert_eq!(server.get(&format!("/Observations({good})/MultiDatastream")).json["@iot.id"], id);
    let filtered = server.get(&format!("{path}?$filter=result/0%20gt%205&$select=result"));
    assert_eq!(filtered.json["value"], json!([{"result": [7, 0, "y"]}]));
    let filtered = server.get(&format!("{path}?$filter=result/2%20eq%20'x'&$select=result"));
    assert_eq!(filtered.json["value"], json!([{"result": [1, 2.5, "x"]}]));
    assert_eq!(
        server.get(&format!("/MultiDatastreams({id})")).json["phenomenonTime"],
        "2024-01-01T00:00:00Z/2024-01-02T00:00:00Z"
    );

    let data_array = server.post(
        "/CreateObservations",
        json!([{"MultiDatastream": {"@iot.id": id}, "components": ["phenomenonTime", "result"],
                "dataArray": [["2024-01-03T00:00:00Z", [1, 1, "z"]], ["2024-01-04T00:00:00Z", [1]]]}]),
    );
    assert_eq!(data_array.status, 201, "{}", data_array.text);
    assert!(data_array.json[0].as_str().unwrap().contains("/Observations("));
    let rejected = data_array.json[1].as_str().unwrap_or_default();
    assert!(rejected.starts_with("error ") && rejected.contains("array of 3 values"), "{rejected}");
    assert_eq!(server.get(&format!("{path}?$count=true")).json["@iot.count"], 3);
    let read = server.get(&format!("{path}?$resultFormat=dataArray&$select=result&$orderby=phenomenonTime"));
    assert_eq!(
        read.json["value"][0]["MultiDatastream@iot.navigationLink"],
        server.url(&format!("/MultiDatastreams({id})"))
    );
    assert_eq!(read.json["value"][0]["dataArray"][2], json!([[1, 1, "z"]]));
}

#[test]
fn an_observation_cannot_belong_to_a_datastream_and_a_multi_datastream() {
    let server = TestServer::start("multi-exclusive");
    let id = server.create("/MultiDatastreams", multi(1, 1, vec![property("A")]));
    let response = server.post("/Observations", json!({"result": [1], "MultiDatastream": {"@iot.id": id}}));
    assert_eq!(response.status, 201, "{}", response.text);
    let response = server.post("/Observations", json!({"result": [1]}));
    assert_eq!(response.status, 400);
}

#[test]
fn linked_observed_properties_keep_the_order_given_not_the_id_order() {
    let server = TestServer::start("multi-order");
    let first = server.create("/ObservedProperties", property("Humidity"));
    let second = server.create("/ObservedProperties", property("Pressure"));
    let id =
        server.create("/MultiDatastreams", multi(2, 2, vec![json!({"@iot.id": second}), json!({"@iot.id": first})]));
    let read =
        server.get(&format!("/MultiDatastreams?$expand=ObservedProperties($select=name)&$filter=id%20eq%20{id}"));
    assert_eq!(read.json["value"][0]["ObservedProperties"], json!([{"name": "Pressure"}, {"name": "Humidity"}]));
    let sorted = server.get(&format!("/MultiDatastreams({id})?$expand=ObservedProperties($select=name;$orderby=name)"));
    assert_eq!(
        sorted.json["ObservedProperties"],
        json!([{"name": "Humidity"}, {"name": "Pressure"}]),
        "$orderby still rules"
    );
}
