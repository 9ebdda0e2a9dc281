//! Conformance class "Filtering Extension" (`$filter`): operators and their precedence,
//! arithmetic, the built-in string, date, math and geospatial functions, JSON and related-entity
//! paths, time-interval comparisons, and the errors of bad filters.

use serde_json::{Value, json};

use crate::support::TestServer;

/// Two Things with one Datastream each and Observations of several result types.
struct Fixture {
    server: TestServer,
    station: i64,
    buoy: i64,
    /// Observation ids by a short label.
    obs: Vec<(&'static str, i64)>,
}

impl Fixture {
    fn obs(&self, label: &str) -> i64 {
        self.obs.iter().find(|(l, _)| *l == label).map(|(_, id)| *id).expect("known label")
    }

    /// The ids the filter selects on `set`, in id order.
    fn ids(&self, set: &str, filter: &str) -> Vec<i64> {
        ids(&self.server, &format!("/{set}?$orderby=id&$filter={}", encode(filter)))
    }

    /// The labels of the Observations the filter selects, in id order.
    fn labels(&self, filter: &str) -> Vec<&'static str> {
        self.ids("Observations", filter)
            .into_iter()
            .map(|id| self.obs.iter().find(|(_, o)| *o == id).map(|(l, _)| *l).expect("known id"))
            .collect()
    }
}

pub fn encode(text: &str) -> String {
    text.replace('%', "%25").replace(' ', "%20").replace('#', "%23").replace('+', "%2B").replace('&', "%26")
}

fn ids(server: &TestServer, path: &str) -> Vec<i64> {
    let response = server.get(path);
    assert_eq!(response.status, 200, "GET {path}: {}", response.text);
    response.json["value"].as_array().expect("a collection").iter().map(|e| e["@iot.id"].as_i64().unwrap()).collect()
}

fn thing(name: &str, owner: &str, point: [f64; 2], datastream: &str) -> Value {
    json!({
        "name": name,
        "description": format!("the {name}"),
        "properties": {"owner": {"name": owner}, "floors": 3},
        "Locations": [{
            "name": format!("{name} location"),
            "description": "where it is",
            "encodingType": "application/geo+json",
            "location": {"type": "Point", "coordinates": point}
        }],
        "Datastreams": [{
            "name": datastream,
            "description": "a datastream",
            "unitOfMeasurement": {"name": "degree Celsius", "symbol": "°C", "definition": "ucum:Cel"},
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
            "Sensor": {"name": "PT100", "description": "a sensor", "encodingType": "text/plain", "metadata": "none"},
            "ObservedProperty": {"name": "Temperature", "definition": "http://example.org/temp", "description": "t"}
        }]
    })
}

fn fixture(name: &str) -> Fixture {
    let server = TestServer::start(name);
    let station = server.create("/Things", thing("Weather station", "Ada", [8.4, 49.0], "Air temperature"));
    let buoy = server.create("/Things", thing("Buoy", "Bob", [10.0, 54.0], "Water temperature"));
    let datastream_of =
        |thing: i64| server.get(&format!("/Things({thing})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
    let (air, water) = (datastream_of(station), datastream_of(buoy));
    let mut obs = Vec::new();
    let rows: [(&'static str, i64, &str, Value); 7] = [
        ("low", air, "2024-05-01T10:00:00Z", json!(1.5)),
        ("ten", air, "2024-05-01T12:00:00Z", json!(10)),
        ("warm", air, "2024-05-01T12:30:00Z/2024-05-01T13:30:00Z", json!(21)),
        ("text21", air, "2023-12-31T23:00:00Z", json!("21")),
        ("high", water, "2024-05-02T00:00:00Z/2024-05-03T00:00:00Z", json!("high")),
        ("flag", water, "2024-06-01T00:00:00Z", json!(true)),
        ("minus", water, "2024-06-02T00:00:00Z", json!(-4.25)),
    ];
    for (label, datastream, time, result) in rows {
        let id = server.create(
            &format!("/Datastreams({datastream})/Observations"),
            json!({"phenomenonTime": time, "result": result}),
        );
        obs.push((label, id));
    }
    Fixture { server, station, buoy, obs }
}

#[test]
fn comparison_and_logical_operators_follow_precedence() {
    let f = fixture("filter-logic");
    assert_eq!(f.labels("result gt 5 and result lt 20 or result eq 1.5"), ["low", "ten"]);
    assert_eq!(f.labels("result eq 1.5 or result gt 5 and result lt 20"), ["low", "ten"]);
    assert_eq!(f.labels("(result eq 1.5 or result gt 5) and result lt 20"), ["low", "ten"]);
    assert_eq!(f.labels("result eq 1.5 or (result gt 5 and result lt 11)"), ["low", "ten"]);
    assert_eq!(f.labels("result ge 10 and result le 21"), ["ten", "warm"]);
    assert_eq!(f.labels("not (result lt 10) and result ne 21"), ["ten"]);
    assert_eq!(f.labels("result ne 10 and result lt 100"), ["low", "warm", "minus"]);
    assert_eq!(f.labels("result eq true"), ["flag"]);
    assert_eq!(f.ids("Things", "name eq 'Buoy' or name eq 'Nothing'"), [f.buoy]);
}

#[test]
fn arithmetic_operators_compute_on_numbers() {
    let f = fixture("filter-arithmetic");
    assert_eq!(f.labels("result add 1 eq 11"), ["ten"]);
    assert_eq!(f.labels("result sub 1.5 eq 0"), ["low"]);
    assert_eq!(f.labels("result mul 2 eq 42"), ["warm"]);
    assert_eq!(f.labels("result div 4 eq 2.5"), ["ten"]);
    assert_eq!(f.labels("result mod 2 eq 1"), ["warm"]);
    assert_eq!(f.labels("result add 2 mul 3 eq 16"), ["ten"], "mul binds tighter than add");
    assert_eq!(f.labels("-result eq 4.25"), ["minus"]);
    assert_eq!(f.labels("(result add 2) mul 3 eq 36"), ["ten"]);
}

#[test]
fn string_functions_filter_names() {
    let f = fixture("filter-strings");
    let (station, buoy) = (f.station, f.buoy);
    assert_eq!(f.ids("Things", "substringof('station', name)"), [station]);
    assert_eq!(f.ids("Things", "contains(name, 'uo')"), [buoy]);
    assert_eq!(f.ids("Things", "startswith(name, 'Weather')"), [station]);
    assert_eq!(f.ids("Things", "endswith(name, 'oy')"), [buoy]);
    assert_eq!(f.ids("Things", "tolower(name) eq 'buoy'"), [buoy]);
    assert_eq!(f.ids("Things", "toupper(name) eq 'BUOY'"), [buoy]);
    assert_eq!(f.ids("Things", "length(name) eq 4"), [buoy]);
    assert_eq!(f.ids("Things", "indexof(name, 'station') eq 8"), [station]);
    assert_eq!(f.ids("Things", "indexof(name, 'x') eq -1"), [station, buoy]);
    assert_eq!(f.ids("Things", "substring(name, 1) eq 'uoy'"), [buoy]);
    assert_eq!(f.ids("Things", "substring(name, 0, 7) eq 'Weather'"), [station]);
    assert_eq!(f.ids("Things", "concat(name, '!') eq 'Buoy!'"), [buoy]);
    assert_eq!(f.ids("Things", "concat(concat(name, ' '), 'x') eq 'Buoy x'"), [buoy]);
    assert_eq!(f.ids("Things", "trim(concat(' ', name)) eq 'Buoy'"), [buoy]);
    assert_eq!(f.ids("Things", "name eq 'O''Brien'"), Vec::<i64>::new(), "quotes are doubled");
}

#[test]
fn date_functions_read_parts_of_times() {
    let f = fixture("filter-dates");
    assert_eq!(f.labels("year(phenomenonTime) eq 2023"), ["text21"]);
    assert_eq!(f.labels("hour(phenomenonTime) eq 12"), ["ten", "warm"]);
    assert_eq!(f.labels("month(phenomenonTime) eq 6 and day(phenomenonTime) eq 2"), ["minus"]);
    assert_eq!(f.labels("minute(phenomenonTime) eq 30"), ["warm"]);
    assert_eq!(f.labels("date(phenomenonTime) eq date(2024-05-02T00:00:00Z)"), ["high"]);
    assert_eq!(f.labels("date(phenomenonTime) eq '2024-05-01'"), ["low", "ten", "warm"]);
    assert_eq!(f.labels("phenomenonTime lt now()").len(), 7);
    assert_eq!(f.labels("phenomenonTime gt now()"), Vec::<&str>::new());
    assert_eq!(f.labels("resultTime eq null").len(), 7);
    assert_eq!(f.ids("Datastreams", "phenomenonTime lt now()").len(), 2);
}

#[test]
fn math_functions_round_floor_and_ceiling() {
    let f = fixture("filter-math");
    assert_eq!(f.labels("round(result) eq 2"), ["low"]);
    assert_eq!(f.labels("floor(result) eq 1"), ["low"]);
    assert_eq!(f.labels("ceiling(result) eq 2"), ["low"]);
    assert_eq!(f.labels("floor(result) eq -5"), ["minus"]);
    assert_eq!(f.labels("ceiling(result) eq -4"), ["minus"]);
    assert_eq!(f.labels("round(result) eq -4"), ["minus"]);
}

#[test]
fn result_compares_as_number_or_string_by_the_literal() {
    let f = fixture("filter-result");
    assert_eq!(f.labels("result eq 21"), ["warm"], "a number matches numeric results only");
    assert_eq!(f.labels("result eq '21'"), ["text21"], "a string matches string results only");
    assert_eq!(f.labels("result gt 5"), ["ten", "warm"]);
    assert_eq!(f.labels("result gt 'a'"), ["high"]);
    assert_eq!(f.labels("result lt 0"), ["minus"]);
    assert_eq!(f.labels("length(result) eq 4"), ["high"]);
}

#[test]
fn json_sub_properties_filter_by_their_values() {
    let f = fixture("filter-json");
    assert_eq!(f.ids("Things", "properties/owner/name eq 'Ada'"), [f.station]);
    assert_eq!(f.ids("Things", "properties/floors eq 3"), [f.station, f.buoy]);
    assert_eq!(f.ids("Things", "properties/floors gt 3"), Vec::<i64>::new());
    assert_eq!(f.ids("Things", "properties/missing eq 'x'"), Vec::<i64>::new());
    assert_eq!(f.ids("Things", "properties/owner/name ne 'Ada'"), [f.buoy]);
    assert_eq!(f.ids("Datastreams", "unitOfMeasurement/symbol eq '°C'").len(), 2);
}

#[test]
fn related_entity_paths_filter_through_navigation() {
    let f = fixture("filter-related");
    assert_eq!(f.labels("Datastream/Thing/name eq 'Buoy'"), ["high", "flag", "minus"]);
    assert_eq!(f.labels("Datastream/name eq 'Air temperature' and result gt 5"), ["ten", "warm"]);
    assert_eq!(f.labels("Datastream/Thing/properties/owner/name eq 'Ada' and result eq '21'"), ["text21"]);
    assert_eq!(f.labels("Datastream/id eq 1").len(), 4);
    assert_eq!(f.ids("Things", "Datastreams/name eq 'Water temperature'"), [f.buoy]);
    assert_eq!(f.ids("Things", "Datastreams/Observations/result eq 'high'"), [f.buoy]);
    assert_eq!(f.ids("Things", "Datastreams/Observations/result gt 0"), [f.station]);
    assert_eq!(f.ids("Things", "Locations/name eq 'Buoy location'"), [f.buoy]);
    assert_eq!(f.ids("Things", "not (Datastreams/name eq 'Water temperature')"), [f.station]);
    assert_eq!(f.ids("Sensors", "Datastreams/Thing/name eq 'Buoy'").len(), 1);
    assert_eq!(f.ids("Datastreams", "Observations/result eq true").len(), 1);
}

#[test]
fn phenomenon_time_compares_instants_and_intervals() {
    let f = fixture("filter-intervals");
    // An instant against an instant.
    assert_eq!(f.labels("phenomenonTime eq 2024-05-01T12:00:00Z"), ["ten"]);
    // An instant inside a stored interval counts as equal (see `time_comparison`).
    assert_eq!(f.labels("phenomenonTime eq 2024-05-01T13:00:00Z"), ["warm"]);
    assert_eq!(f.labels("phenomenonTime eq 2024-05-02T12:00:00Z"), ["high"]);
    // Strict before/after: the interval lies wholly on one side.
    assert_eq!(f.labels("phenomenonTime lt 2024-05-01T13:00:00Z"), ["low", "ten", "text21"]);
    assert_eq!(f.labels("phenomenonTime gt 2024-05-01T13:00:00Z"), ["high", "flag", "minus"]);
    assert_eq!(f.labels("phenomenonTime le 2024-05-01T13:30:00Z"), ["low", "ten", "warm", "text21"]);
    assert_eq!(f.labels("phenomenonTime ge 2024-05-02T00:00:00Z"), ["high", "flag", "minus"]);
    // Against an interval literal.
    assert_eq!(f.labels("phenomenonTime eq 2024-05-02T00:00:00Z/2024-05-03T00:00:00Z"), ["high"]);
    assert_eq!(
        f.labels("phenomenonTime lt 2024-05-01T11:00:00Z/2024-05-01T12:00:00Z"),
        ["low", "text21"],
        "before an interval means ending at or before its start"
    );
    assert_eq!(f.labels("phenomenonTime gt 2024-05-03T00:00:00Z/2024-06-01T12:00:00Z"), ["minus"]);
    // The derived interval of a Datastream.
    assert_eq!(f.ids("Datastreams", "phenomenonTime eq 2024-05-01T12:00:00Z").len(), 1);
    assert_eq!(f.ids("Datastreams", "phenomenonTime gt 2024-01-01T00:00:00Z").len(), 1);
}

#[test]
fn geospatial_functions_filter_locations() {
    let f = fixture("filter-geo");
    let locations = |filter: &str| -> Vec<String> {
        let path = format!("/Locations?$orderby=id&$filter={}", encode(filter));
        let response = f.server.get(&path);
        assert_eq!(response.status, 200, "{filter}: {}", response.text);
        response.json["value"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_owned()).collect()
    };
    let box_around_station = "geography'POLYGON((8 48, 9 48, 9 50, 8 50, 8 48))'";
    assert_eq!(locations(&format!("st_within(location, {box_around_station})")), ["Weather station location"]);
    assert_eq!(locations(&format!("st_intersects(location, {box_around_station})")), ["Weather station location"]);
    assert_eq!(locations(&format!("st_contains({box_around_station}, location)")), ["Weather station location"]);
    assert_eq!(locations(&format!("st_disjoint(location, {box_around_station})")), ["Buoy location"]);
    assert_eq!(locations("st_equals(location, geography'POINT(10 54)')"), ["Buoy location"]);
    assert_eq!(locations("geo.intersects(location, geography'POINT(10 54)')"), ["Buoy location"]);
    assert_eq!(locations("geo.distance(location, geography'POINT(8.4 49.5)') lt 1"), ["Weather station location"]);
    assert_eq!(locations("geo.distance(location, geography'POINT(8.4 49.5)') gt 1"), ["Buoy location"]);
    assert_eq!(locations("geo.length(geography'LINESTRING(0 0, 3 4)') eq 5").len(), 2);
    let things = f.ids("Things", &format!("st_within(Locations/location, {box_around_station})"));
    assert_eq!(things, [f.station]);
    let observations = f.labels(&format!("st_within(FeatureOfInterest/feature, {box_around_station})"));
    assert_eq!(observations, ["low", "ten", "warm", "text21"]);
}

/// What a filter of values past the database's reach answers, found by sending random filters
/// to PostgreSQL: never a 500. Division by zero is NULL on every database (no match); a
/// result past bigint or double precision is computed in floating point by SQLite and is a
/// 400 saying so on PostgreSQL. A whole JSON object compares (never equal to a number), and
/// geometries order by their GeoJSON text.
#[test]
fn filters_past_the_databases_range_are_never_a_500() {
    let f = fixture("filter-range");
    assert!(f.labels("result div 0 gt 0").is_empty());
    assert!(f.labels("result mod 0 eq 0").is_empty());
    assert!(f.ids("Things", "id div 0 ge 0").is_empty());
    let filters = ["id add 9223372036854775807 gt 0", "1e300 mul 1e300 gt 0", "substring(name, 1e300) eq ''"];
    // Also where only the count reads them (`$top=0`): its own error, not a later one.
    for (filter, count) in filters.iter().flat_map(|filter| [(filter, ""), (filter, "&$count=true&$top=0")]) {
        let response = f.server.get(&format!("/Things?$filter={}{count}", encode(filter)));
        match response.status {
            200 => assert!(response.json["value"].is_array(), "{filter}: {}", response.text),
            400 => {
                let message = response.json["message"].as_str().unwrap_or_default();
                assert!(message.contains("out of the database's range"), "{filter}: {message}");
            }
            other => panic!("{filter}: {other} {}", response.text),
        }
    }
    assert!(f.ids("Things", "properties eq 1").is_empty());
    assert_eq!(f.ids("Things", "properties ne 1"), [f.station, f.buoy]);
    // An interval read by its start alone leaves a parameter of the statement unused.
    let partly = encode("unitOfMeasurement gt month(2024-01-01T00:00:00Z/2024-01-02T00:00:00Z)");
    for count in ["", "&$count=true&$top=0"] {
        let response = f.server.get(&format!("/Datastreams?$filter={partly}{count}"));
        assert_eq!(response.status, 200, "{}", response.text);
    }
    let by_location = f.server.get("/Locations?$orderby=location%20desc,id&$select=name");
    assert_eq!(by_location.status, 200, "{}", by_location.text);
    // `{"type":"Point","coordinates":[8.4,...]}` after `[10.0,...]` in text order, descending.
    assert_eq!(by_location.json["value"], json!([{"name": "Weather station location"}, {"name": "Buoy location"}]));
}

#[test]
fn bad_filters_are_400_with_option_and_position() {
    let f = fixture("filter-errors");
    let check = |filter: &str, position: u64| {
        let response = f.server.get(&format!("/Things?$filter={}", encode(filter)));
        assert_eq!(response.status, 400, "{filter}: {}", response.text);
        assert_eq!(response.json["code"], 400);
        assert_eq!(response.json["option"], "$filter", "{filter}: {}", response.text);
        assert_eq!(response.json["position"], position, "{filter}: {}", response.text);
        assert!(!response.json["message"].as_str().unwrap().is_empty());
    };
    check("name eq", 8);
    check("nmae eq 'x'", 1);
    check("name eq 'x' and", 16);
    check("name add 1 eq 2", 6);
    check("length(name, 1) eq 2", 1);
    check("name eq 'unterminated", 9);
    let response = f.server.get("/Things?$orderby=nosuch");
    assert_eq!(response.status, 400);
    assert_eq!(response.json["option"], "$orderby");
    assert_eq!(response.json["position"], 1);
    let response = f.server.get("/Things?$top=-1");
    assert_eq!(response.status, 400);
    assert_eq!(response.json["option"], "$top");
}

#[test]
fn filter_applies_inside_navigation_collections() {
    let f = fixture("filter-navigation");
    let air =
        f.server.get(&format!("/Things({})/Datastreams", f.station)).json["value"][0]["@iot.id"].as_i64().unwrap();
    let path = format!("/Datastreams({air})/Observations?$orderby=id&$filter={}", encode("result gt 5"));
    assert_eq!(ids(&f.server, &path), [f.obs("ten"), f.obs("warm")]);
}
