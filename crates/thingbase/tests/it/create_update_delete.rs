//! Conformance class "Create-Update-Delete": deep insert, links by `@iot.id`, creation through
//! navigation paths, HistoricalLocations on Location changes, PATCH (merge and JSON Patch), PUT,
//! `$ref` links, cascading deletes and the error statuses of bad changes.

use serde_json::{Value, json};

use crate::support::TestServer;

const MEASUREMENT: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement";
const COMPLEX: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation";

fn location(name: &str, x: f64) -> Value {
    json!({
        "name": name,
        "description": "a place",
        "encodingType": "application/geo+json",
        "location": {"type": "Point", "coordinates": [x, 50.0]}
    })
}

fn sensor(name: &str) -> Value {
    json!({"name": name, "description": "a sensor", "encodingType": "text/plain", "metadata": "none"})
}

fn observed_property(name: &str) -> Value {
    json!({"name": name, "definition": format!("http://example.org/{name}"), "description": "a property"})
}

fn datastream_json(name: &str) -> Value {
    json!({
        "name": name,
        "description": "a datastream",
        "unitOfMeasurement": {"name": "degree Celsius", "symbol": "°C", "definition": "ucum:Cel"},
        "observationType": MEASUREMENT,
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn count(server: &TestServer, path: &str) -> u64 {
    let separator = if path.contains('?') { '&' } else { '?' };
    let response = server.get(&format!("{path}{separator}$count=true&$top=0"));
    assert_eq!(response.status, 200, "GET {path}: {}", response.text);
    response.json["@iot.count"].as_u64().unwrap()
}

fn id_list(server: &TestServer, path: &str) -> Vec<i64> {
    let response = server.get(path);
    assert_eq!(response.status, 200, "GET {path}: {}", response.text);
    response.json["value"].as_array().unwrap().iter().map(|e| e["@iot.id"].as_i64().unwrap()).collect()
}

/// A Thing with a Location and a Datastream; returns (thing, location, datastream).
fn thing_with_datastream(server: &TestServer) -> (i64, i64, i64) {
    let thing = server.create(
        "/Things",
        json!({
            "name": "Station",
            "description": "on the roof",
            "Locations": [location("Roof", 8.0)],
            "Datastreams": [with(datastream_json("Air"), json!({"Sensor": sensor("PT100"), "ObservedProperty": observed_property("Temperature")}))]
        }),
    );
    let location = id_list(server, &format!("/Things({thing})/Locations"))[0];
    let datastream = id_list(server, &format!("/Things({thing})/Datastreams"))[0];
    (thing, location, datastream)
}

#[test]
fn deep_insert_creates_four_levels_in_one_request() {
    let server = TestServer::start("cud-deep");
    let body = json!({
        "name": "Station",
        "description": "deep",
        "Locations": [location("Roof", 8.0)],
        "Datastreams": [with(datastream_json("Air"), json!({
            "Sensor": sensor("PT100"),
            "ObservedProperty": observed_property("Temperature"),
            "Observations": [
                {"phenomenonTime": "2024-01-01T00:00:00Z", "result": 1,
                 "FeatureOfInterest": {"name": "Lake", "description": "water", "encodingType": "application/geo+json",
                                       "feature": {"type": "Point", "coordinates": [9.0, 50.0]}}},
                {"phenomenonTime": "2024-01-02T00:00:00Z", "result": 2}
            ]
        }))]
    });
    let thing = server.create("/Things", body);
    let datastream = id_list(&server, &format!("/Things({thing})/Datastreams"))[0];
    assert_eq!(count(&server, &format!("/Datastreams({datastream})/Observations")), 2);
    let features: Vec<String> = server
        .get(&format!(
            "/Datastreams({datastream})/Observations?$orderby=phenomenonTime&$expand=FeatureOfInterest($select=name)"
        ))
        .json["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["FeatureOfInterest"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(features, ["Lake", "Roof"], "given inline, or generated from the Location");
    assert_eq!(
        server.get(&format!("/Datastreams({datastream})")).json["phenomenonTime"],
        "2024-01-01T00:00:00Z/2024-01-02T00:00:00Z"
    );

    // Upwards through to-one relations: Observation -> Datastream -> Thing -> Locations.
    let observation = server.create(
        "/Observations",
        json!({
            "result": 3,
            "Datastream": with(datastream_json("Inline"), json!({
                "Sensor": sensor("S"),
                "ObservedProperty": observed_property("P"),
                "Thing": {"name": "Inline thing", "description": "d", "Locations": [location("Inline place", 1.0)]}
            }))
        }),
    );
    let thing =
        server.get(&format!("/Observations({observation})/Datastream/Thing?$expand=Locations,HistoricalLocations"));
    assert_eq!(thing.json["name"], "Inline thing");
    assert_eq!(thing.json["Locations"][0]["name"], "Inline place");
    assert_eq!(thing.json["HistoricalLocations"].as_array().unwrap().len(), 1);
    let feature = server.get(&format!("/Observations({observation})/FeatureOfInterest"));
    assert_eq!(feature.json["name"], "Inline place");
}

#[test]
fn a_failed_deep_insert_leaves_nothing_behind() {
    let server = TestServer::start("cud-deep-rollback");
    let body = json!({
        "name": "Station",
        "description": "deep",
        "Locations": [location("Roof", 8.0)],
        "Datastreams": [with(datastream_json("Air"), json!({"Sensor": sensor("PT100")}))]
    });
    let response = server.post("/Things", body);
    assert_eq!(response.status, 400, "{}", response.text);
    assert!(response.json["message"].as_str().unwrap().contains("ObservedProperty"), "{}", response.text);
    assert_eq!(count(&server, "/Things"), 0);
    assert_eq!(count(&server, "/Locations"), 0);
    assert_eq!(count(&server, "/Sensors"), 0);
}

#[test]
fn entities_link_to_existing_ones_by_id() {
    let server = TestServer::start("cud-link-by-id");
    let thing = server.create("/Things", json!({"name": "T", "description": "d"}));
    let sensor = server.create("/Sensors", sensor("S"));
    let property = server.create("/ObservedProperties", observed_property("P"));
    let datastream = server.create(
        "/Datastreams",
        with(
            datastream_json("D"),
            json!({"Thing": {"@iot.id": thing}, "Sensor": {"@iot.id": sensor}, "ObservedProperty": {"@iot.id": property}}),
        ),
    );
    assert_eq!(server.get(&format!("/Datastreams({datastream})/Thing")).json["@iot.id"], thing);
    assert_eq!(server.get(&format!("/Datastreams({datastream})/Sensor")).json["@iot.id"], sensor);
    assert_eq!(id_list(&server, &format!("/ObservedProperties({property})/Datastreams")), [datastream]);
    let location = server.create("/Locations", location("Here", 1.0));
    let other =
        server.create("/Things", json!({"name": "U", "description": "d", "Locations": [{"@iot.id": location}]}));
    assert_eq!(id_list(&server, &format!("/Things({other})/Locations")), [location]);
    assert_eq!(count(&server, &format!("/Things({other})/HistoricalLocations")), 1);
    let missing = server.post(
        "/Datastreams",
        with(
            datastream_json("D2"),
            json!({"Thing": {"@iot.id": 999}, "Sensor": {"@iot.id": sensor}, "ObservedProperty": {"@iot.id": property}}),
        ),
    );
    assert_eq!(missing.status, 400, "{}", missing.text);
    assert_eq!(count(&server, "/Datastreams"), 1);
}

#[test]
fn post_to_a_navigation_collection_links_the_parent() {
    let server = TestServer::start("cud-nav-post");
    let (thing, _, datastream) = thing_with_datastream(&server);
    let new_location = server.create(&format!("/Things({thing})/Locations"), location("Moved", 9.0));
    assert_eq!(id_list(&server, &format!("/Things({thing})/Locations?$orderby=id")).len(), 2);
    let historical = server.get(&format!("/Things({thing})/HistoricalLocations?$orderby=id&$expand=Locations"));
    let historical = historical.json["value"].as_array().unwrap();
    assert_eq!(historical.len(), 2, "one from the deep insert, one from the new Location");
    assert_eq!(historical[1]["Locations"][0]["@iot.id"], new_location);

    let second = server.create(
        &format!("/Things({thing})/Datastreams"),
        with(datastream_json("Second"), json!({"Sensor": sensor("S2"), "ObservedProperty": observed_property("P2")})),
    );
    assert_eq!(server.get(&format!("/Datastreams({second})/Thing")).json["@iot.id"], thing);
    let observation = server.create(&format!("/Datastreams({datastream})/Observations"), json!({"result": 5}));
    assert_eq!(server.get(&format!("/Observations({observation})/Datastream")).json["@iot.id"], datastream);
    assert_eq!(server.post("/Things(999)/Datastreams", datastream_json("x")).status, 404);
    assert_eq!(
        server.post(&format!("/Datastreams({datastream})/Thing"), json!({"name": "x", "description": "y"})).status,
        405
    );

    // Observations at the end of a longer path, and at a FeatureOfInterest's naming their
    // Datastream in the body: both end in that Datastream, or nowhere.
    let nested = server.create(&format!("/Things({thing})/Datastreams({second})/Observations"), json!({"result": 6}));
    assert_eq!(server.get(&format!("/Observations({nested})/Datastream")).json["@iot.id"], second);
    let other = server.create("/Things", json!({"name": "Other", "description": "no Datastreams"}));
    let wrong = server.post(&format!("/Things({other})/Datastreams({second})/Observations"), json!({"result": 7}));
    assert_eq!(wrong.status, 404, "{}", wrong.text);
    let feature = server.get(&format!("/Observations({observation})/FeatureOfInterest")).json["@iot.id"].clone();
    let at_feature = server.create(
        &format!("/FeaturesOfInterest({feature})/Observations"),
        json!({"result": 8, "Datastream": {"@iot.id": second}}),
    );
    assert_eq!(server.get(&format!("/Observations({at_feature})/FeatureOfInterest")).json["@iot.id"], feature);
    assert_eq!(server.get(&format!("/Observations({at_feature})/Datastream")).json["@iot.id"], second);
    let unknown = server.post(
        &format!("/FeaturesOfInterest({feature})/Observations"),
        json!({"result": 9, "Datastream": {"@iot.id": 999}}),
    );
    assert!(matches!(unknown.status, 400 | 404), "{}", unknown.text);
    let results = server.get(&format!("/Datastreams({second})/Observations?$orderby=id&$select=result"));
    assert_eq!(results.json["value"], json!([{"result": 6}, {"result": 8}]));
}

#[test]
fn patching_a_things_locations_records_a_historical_location() {
    let server = TestServer::start("cud-patch-locations");
    let (thing, old, _) = thing_with_datastream(&server);
    let new = server.create("/Locations", location("New", 2.0));
    let response = server.patch(&format!("/Things({thing})"), json!({"Locations": [{"@iot.id": new}]}));
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(id_list(&server, &format!("/Things({thing})/Locations")), [new], "the Locations are replaced");
    let historical =
        server.get(&format!("/Things({thing})/HistoricalLocations?$orderby=time%20desc,id%20desc&$expand=Locations"));
    let historical = historical.json["value"].as_array().unwrap().clone();
    assert_eq!(historical.len(), 2);
    assert_eq!(historical[0]["Locations"][0]["@iot.id"], new);
    assert_eq!(historical[1]["Locations"][0]["@iot.id"], old);
    assert_eq!(id_list(&server, &format!("/Locations({old})/Things")), Vec::<i64>::new());
    // A PATCH that does not touch Locations records nothing.
    server.patch(&format!("/Things({thing})"), json!({"name": "Renamed"}));
    assert_eq!(count(&server, &format!("/Things({thing})/HistoricalLocations")), 2);
}

#[test]
fn json_patch_edits_properties() {
    let server = TestServer::start("cud-json-patch");
    let thing = server
        .create("/Things", json!({"name": "T", "description": "d", "properties": {"colour": "red", "tags": ["a"]}}));
    let path = format!("/Things({thing})");
    let patch = json!([
        {"op": "replace", "path": "/name", "value": "Patched"},
        {"op": "add", "path": "/properties/size", "value": 3},
        {"op": "add", "path": "/properties/tags/-", "value": "b"},
        {"op": "remove", "path": "/properties/colour"},
        {"op": "test", "path": "/description", "value": "d"}
    ]);
    let response = server.send("PATCH", &path, patch, "application/json-patch+json");
    assert_eq!(response.status, 200, "{}", response.text);
    let thing_json = server.get(&path).json;
    assert_eq!(thing_json["name"], "Patched");
    assert_eq!(thing_json["description"], "d");
    assert_eq!(thing_json["properties"], json!({"size": 3, "tags": ["a", "b"]}));

    let failing =
        json!([{"op": "replace", "path": "/name", "value": "Nope"}, {"op": "test", "path": "/name", "value": "x"}]);
    let response = server.send("PATCH", &path, failing, "application/json-patch+json");
    assert_eq!(response.status, 400, "{}", response.text);
    assert_eq!(server.get(&path).json["name"], "Patched", "a failed patch changes nothing");

    let response =
        server.send("PATCH", &path, json!([{"op": "remove", "path": "/properties"}]), "application/json-patch+json");
    assert_eq!(response.status, 200, "{}", response.text);
    assert!(server.get(&path).json["properties"].is_null(), "a removed property is gone");

    let response =
        server.send("PATCH", &path, json!([{"op": "remove", "path": "/description"}]), "application/json-patch+json");
    assert_eq!(response.status, 400, "a required property cannot be removed: {}", response.text);
    assert_eq!(server.get(&path).json["description"], "d");
    let response = server.send("PATCH", &path, json!({"op": "nonsense"}), "application/json-patch+json");
    assert_eq!(response.status, 400);
}

#[test]
fn ref_links_are_added_replaced_and_removed() {
    let server = TestServer::start("cud-ref");
    let (thing, roof, datastream) = thing_with_datastream(&server);
    let garden = server.create("/Locations", location("Garden", 3.0));
    let refs = format!("/Things({thing})/Locations/$ref");
    let response = server.post(&refs, json!({"@iot.id": garden}));
    assert_eq!(response.status, 204, "{}", response.text);
    assert_eq!(id_list(&server, &format!("/Things({thing})/Locations?$orderby=id")), [roof, garden]);
    assert_eq!(count(&server, &format!("/Things({thing})/HistoricalLocations")), 2);

    let self_link = server.url(&format!("/Locations({roof})"));
    let response = server.delete(&format!("{refs}?$id={self_link}"));
    assert_eq!(response.status, 204, "{}", response.text);
    assert_eq!(id_list(&server, &format!("/Things({thing})/Locations")), [garden]);
    assert_eq!(server.get(&format!("/Locations({roof})")).status, 200, "unlinking deletes nothing");
    assert_eq!(server.delete(&format!("/Things({thing})/Locations({garden})/$ref")).status, 204);
    assert_eq!(id_list(&server, &format!("/Things({thing})/Locations")), Vec::<i64>::new());
    assert_eq!(server.delete(&format!("/Things({thing})/Locations({garden})/$ref")).status, 404, "no such link");

    let other_sensor = server.create("/Sensors", sensor("Other"));
    let response = server.put(&format!("/Datastreams({datastream})/Sensor/$ref"), json!({"@iot.id": other_sensor}));
    assert_eq!(response.status, 204, "{}", response.text);
    assert_eq!(server.get(&format!("/Datastreams({datastream})/Sensor")).json["@iot.id"], other_sensor);
    let response = server
        .post(&format!("/Datastreams({datastream})/Sensor/$ref"), json!({"@iot.selfLink": server.url("/Sensors(1)")}));
    assert_eq!(response.status, 204, "{}", response.text);
    assert_eq!(server.get(&format!("/Datastreams({datastream})/Sensor")).json["@iot.id"], 1);

    assert_eq!(server.post(&refs, json!({"@iot.id": 999})).status, 404);
    assert_eq!(server.post(&refs, json!({"name": "no id"})).status, 400);
    assert_eq!(server.delete(&format!("/Datastreams({datastream})/Thing/$ref")).status, 409, "a required link stays");
}

#[test]
fn deleting_a_datastream_deletes_its_observations() {
    let server = TestServer::start("cud-cascade-datastream");
    let (thing, _, datastream) = thing_with_datastream(&server);
    let observations: Vec<i64> = (0..3)
        .map(|i| server.create(&format!("/Datastreams({datastream})/Observations"), json!({"result": i})))
        .collect();
    assert_eq!(server.delete(&format!("/Datastreams({datastream})")).status, 200);
    for observation in observations {
        assert_eq!(server.get(&format!("/Observations({observation})")).status, 404);
    }
    assert_eq!(server.get(&format!("/Things({thing})")).status, 200, "the Thing stays");
    assert_eq!(count(&server, "/Sensors"), 1, "the Sensor stays");
    assert_eq!(count(&server, "/FeaturesOfInterest"), 1, "the feature stays");
}

#[test]
fn deleting_an_observed_property_deletes_its_datastreams_and_multi_datastreams() {
    let server = TestServer::start("cud-cascade-property");
    let (thing, _, datastream) = thing_with_datastream(&server);
    let property =
        server.get(&format!("/Datastreams({datastream})/ObservedProperty")).json["@iot.id"].as_i64().unwrap();
    let kept = server.create("/ObservedProperties", observed_property("Humidity"));
    let multi = server.create(
        "/MultiDatastreams",
        json!({
            "name": "M", "description": "m", "observationType": COMPLEX,
            "unitOfMeasurements": [{"name": "a"}, {"name": "b"}],
            "multiObservationDataTypes": [MEASUREMENT, MEASUREMENT],
            "Thing": {"@iot.id": thing}, "Sensor": sensor("MS"),
            "ObservedProperties": [{"@iot.id": property}, {"@iot.id": kept}]
        }),
    );
    let observation = server.create(&format!("/MultiDatastreams({multi})/Observations"), json!({"result": [1, 2]}));
    assert_eq!(server.delete(&format!("/ObservedProperties({property})")).status, 200);
    assert_eq!(server.get(&format!("/Datastreams({datastream})")).status, 404);
    assert_eq!(server.get(&format!("/MultiDatastreams({multi})")).status, 404);
    assert_eq!(server.get(&format!("/Observations({observation})")).status, 404);
    assert_eq!(server.get(&format!("/ObservedProperties({kept})")).status, 200);
}

#[test]
fn deleting_a_thing_deletes_its_historical_locations_but_not_its_locations() {
    let server = TestServer::start("cud-cascade-thing");
    let (thing, location, _) = thing_with_datastream(&server);
    let historical = id_list(&server, &format!("/Things({thing})/HistoricalLocations"))[0];
    assert_eq!(server.delete(&format!("/Things({thing})")).status, 200);
    assert_eq!(server.get(&format!("/HistoricalLocations({historical})")).status, 404);
    assert_eq!(server.get(&format!("/Locations({location})")).status, 200);
    assert_eq!(count(&server, "/Observations"), 0);
}

#[test]
fn bad_changes_get_400_404_405_and_409() {
    let server = TestServer::start("cud-errors");
    let (thing, _, datastream) = thing_with_datastream(&server);
    let path = format!("/Things({thing})");
    assert_eq!(server.patch(&path, json!({"name": 5})).status, 400, "wrong type");
    assert_eq!(server.patch(&path, json!({"name": null})).status, 400, "required cannot be null");
    assert_eq!(server.patch(&path, json!({"nosuch": 1})).status, 400, "unknown property");
    assert_eq!(server.patch(&path, json!({"Datastreams": []})).status, 400, "to-many reverse links are not patched");
    assert_eq!(server.patch(&path, json!([1])).status, 400, "a merge patch is an object");
    assert_eq!(server.get(&path).json["name"], "Station", "nothing changed");
    let cut = crate::support::request("POST", &server.url("/Things"), Some(r#"{"name":"x""#.into()), None);
    assert_eq!((cut.status, cut.json["error"].as_str()), (400, Some("invalid_json")), "{}", cut.text);
    let message = cut.json["message"].as_str().unwrap_or_default();
    assert!(message.ends_with("at line 1 column 11"), "says where, once: {message}");
    // U+0000 in a text: PostgreSQL cannot store it, so no database takes it; in JSON values
    // it is kept escaped.
    let nul = server.post(&format!("/Datastreams({datastream})/Observations"), json!({"result": "a\u{0}b"}));
    assert_eq!((nul.status, nul.json["error"].as_str()), (400, Some("invalid_property")), "{}", nul.text);
    assert!(nul.json["message"].as_str().unwrap_or_default().contains("Observation/result"), "{}", nul.text);
    assert_eq!(server.post("/Things", json!({"name": "a\u{0}", "description": "d"})).status, 400);
    let kept = server.create(
        &format!("/Datastreams({datastream})/Observations"),
        json!({"result": {"text": "a\u{0}b"}, "parameters": {"p": "\u{0}"}}),
    );
    assert_eq!(server.get(&format!("/Observations({kept})")).json["result"], json!({"text": "a\u{0}b"}));
    assert_eq!(server.patch("/Things(999)", json!({"name": "x"})).status, 404);
    assert_eq!(server.put("/Things(999)", json!({"name": "x", "description": "y"})).status, 404);
    assert_eq!(server.delete("/Things(999)").status, 404);
    assert_eq!(server.patch("/Things", json!({"name": "x"})).status, 405);
    assert_eq!(server.delete("/Things").status, 405);
    assert_eq!(server.post(&format!("{path}/name"), json!({"name": "x"})).status, 405);
    let bad_time = server
        .post(&format!("/Datastreams({datastream})/Observations"), json!({"result": 1, "phenomenonTime": "yesterday"}));
    assert_eq!(bad_time.status, 400);
    let bad_location = server.post("/Locations", with(location("Bad", 1.0), json!({"location": {"type": "Point"}})));
    assert_eq!(bad_location.status, 400, "{}", bad_location.text);
    let no_result = server
        .post(&format!("/Datastreams({datastream})/Observations"), json!({"phenomenonTime": "2024-01-01T00:00:00Z"}));
    assert_eq!(no_result.status, 400);
    let no_feature = server.post(
        &format!("/Datastreams({datastream})/Observations"),
        json!({"result": 1, "FeatureOfInterest": {"@iot.id": 999}}),
    );
    assert_eq!(no_feature.status, 400, "{}", no_feature.text);
    assert_eq!(no_feature.json["message"], "FeaturesOfInterest(999) does not exist");
    let both = server.post(
        "/Observations",
        json!({"result": 1, "Datastream": {"@iot.id": datastream}, "MultiDatastream": {"@iot.id": 1}}),
    );
    assert_eq!(both.status, 400);
    let response = server.delete(&format!("/Datastreams({datastream})/Thing/$ref"));
    assert_eq!(response.status, 409);
    assert_eq!(response.json["code"], 409);
}

#[test]
fn malformed_geometries_get_400_naming_what_is_wrong() {
    // RFC 7946 §3.1: found by fuzzing, a short position inside a polygon answered 500.
    let server = TestServer::start("cud-geometry");
    let refused = [
        (json!({"type": "Polygon", "coordinates": [[[0, 0], [100], [1, 1], [0, 0]]]}), "two or more numbers"),
        (json!({"type": "LineString", "coordinates": [[7, 50]]}), "two or more positions"),
        (json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}), "end with the position"),
        (json!({"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [0, 0]]]]}), "four or more positions"),
    ];
    for (geometry, reason) in refused {
        let response = server.post("/Locations", with(location("Bad", 1.0), json!({"location": geometry})));
        assert_eq!(response.status, 400, "{geometry}: {}", response.text);
        assert_eq!(response.json["error"], "invalid_geometry", "{}", response.text);
        let message = response.json["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("Location/location: ") && message.contains(reason), "{message}");
        let feature =
            json!({"name": "f", "description": "d", "encodingType": "application/geo+json", "feature": geometry});
        assert_eq!(server.post("/FeaturesOfInterest", feature).status, 400, "{geometry}");
    }
    assert_eq!(count(&server, "/Locations"), 0, "nothing was stored");
    let closed = json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]});
    let created = server.post("/Locations", with(location("Good", 1.0), json!({"location": closed})));
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["@iot.id"].as_i64().unwrap();
    let patched = server.patch(
        &format!("/Locations({id})"),
        json!({"location": {"type": "Polygon", "coordinates": [[[0, 0], [1], [1, 1], [0, 0]]]}}),
    );
    assert_eq!(patched.status, 400, "{}", patched.text);
    assert_eq!(server.get(&format!("/Locations({id})")).json["location"], closed, "the PATCH changed nothing");
    // The same shapes in a $filter's literal are a syntax error at the literal's column.
    for literal in ["POLYGON((0 0, 1 1))", "LINESTRING(0 0)"] {
        let filter = crate::filtering::encode(&format!("st_within(location, geography'{literal}')"));
        let response = server.get(&format!("/Locations?$filter={filter}"));
        assert_eq!(response.status, 400, "{literal}: {}", response.text);
        assert_eq!(response.json["position"], 21, "{}", response.text);
    }
}

#[test]
fn datastream_times_follow_observation_deletes_and_updates() {
    let server = TestServer::start("cud-derived-times");
    let (_, _, datastream) = thing_with_datastream(&server);
    let path = format!("/Datastreams({datastream})");
    let observations = format!("{path}/Observations");
    let first = server.create(&observations, json!({"phenomenonTime": "2024-01-01T00:00:00Z", "result": 1}));
    let last = server.create(
        &observations,
        json!({"phenomenonTime": "2024-01-05T00:00:00Z/2024-01-06T00:00:00Z", "resultTime": "2024-01-07T00:00:00Z", "result": 2}),
    );
    let times = |server: &TestServer| {
        let ds = server.get(&path).json;
        (ds["phenomenonTime"].clone(), ds["resultTime"].clone())
    };
    assert_eq!(
        times(&server),
        (json!("2024-01-01T00:00:00Z/2024-01-06T00:00:00Z"), json!("2024-01-07T00:00:00Z/2024-01-07T00:00:00Z"))
    );
    assert_eq!(server.delete(&format!("/Observations({last})")).status, 200);
    assert_eq!(times(&server), (json!("2024-01-01T00:00:00Z/2024-01-01T00:00:00Z"), Value::Null), "the extent shrinks");
    let response = server.patch(&format!("/Observations({first})"), json!({"phenomenonTime": "2024-01-03T00:00:00Z"}));
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(
        times(&server).0,
        json!("2024-01-03T00:00:00Z/2024-01-03T00:00:00Z"),
        "moving the only Observation moves the extent"
    );
    assert_eq!(server.delete(&format!("/Observations({first})")).status, 200);
    assert_eq!(times(&server), (Value::Null, Value::Null), "no Observations, no extent");
}

#[test]
fn a_filtered_delete_removes_the_matching_observations_and_recomputes_the_datastream() {
    let server = TestServer::start("cud-filtered-delete");
    let (_, _, datastream) = thing_with_datastream(&server);
    let (_, _, other) = thing_with_datastream(&server);
    for (stream, day) in [(datastream, 1), (datastream, 2), (datastream, 3), (other, 1)] {
        let time = format!("2019-12-0{day}T00:00:00Z");
        server.create(&format!("/Datastreams({stream})/Observations"), json!({"result": day, "phenomenonTime": time}));
    }
    let path = format!("/Datastreams({datastream})/Observations?$filter=phenomenonTime%20lt%202019-12-03T00:00:00Z");
    let deleted = server.delete(&path);
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json, json!({"deleted": 2}));
    assert_eq!(count(&server, &format!("/Datastreams({datastream})/Observations")), 1);
    assert_eq!(count(&server, &format!("/Datastreams({other})/Observations")), 1, "only this Datastream's");
    let stream = server.get(&format!("/Datastreams({datastream})"));
    assert_eq!(stream.json["phenomenonTime"], "2019-12-03T00:00:00Z/2019-12-03T00:00:00Z", "recomputed");
    // A filter matching nothing deletes nothing; a collection without a filter is refused.
    let none = server.delete("/Observations?$filter=result%20gt%20100");
    assert_eq!((none.status, none.json.clone()), (200, json!({"deleted": 0})), "{}", none.text);
    let everything = server.delete("/Observations");
    assert_eq!(everything.status, 405, "{}", everything.text);
    assert!(everything.text.contains("$filter"), "{}", everything.text);
    let bad = server.delete("/Observations?$filter=nonsense%20eq%201");
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(count(&server, "/Observations"), 2, "nothing else changed");
}
