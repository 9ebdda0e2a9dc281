//! Conformance class "Request Data": `$select`, `$orderby`, `$top`, `$skip`, `$count`, paging by
//! `@iot.nextLink`, nested `$expand` with options, navigation paths, properties, `$value` and
//! `$ref`.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::filtering::encode;
use crate::support::{TestServer, request};

/// Three Things; Thing `i` (1-based) has `i` Datastreams with `3 * i` Observations each.
struct Fixture {
    server: TestServer,
    things: Vec<i64>,
    /// Datastream ids per Thing.
    datastreams: Vec<Vec<i64>>,
}

fn datastream(name: &str) -> Value {
    json!({
        "name": name,
        "description": "a datastream",
        "unitOfMeasurement": {"name": "degree Celsius", "symbol": "°C", "definition": "ucum:Cel"},
        "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
        "Sensor": {"name": "PT100", "description": "a sensor", "encodingType": "text/plain", "metadata": "none"},
        "ObservedProperty": {"name": "Temperature", "definition": "http://example.org/temp", "description": "t"}
    })
}

fn fixture(name: &str) -> Fixture {
    let server = TestServer::start(name);
    let mut things = Vec::new();
    let mut datastreams = Vec::new();
    for (i, (thing_name, group)) in [("Charlie", "b"), ("Alpha", "a"), ("Bravo", "b")].into_iter().enumerate() {
        let n = i + 1;
        let streams: Vec<Value> = (1..=n).map(|d| datastream(&format!("{thing_name} stream {d}"))).collect();
        let thing = server.create(
            "/Things",
            json!({
                "name": thing_name,
                "description": group,
                "Locations": [{
                    "name": format!("{thing_name} place"),
                    "description": "a place",
                    "encodingType": "application/geo+json",
                    "location": {"type": "Point", "coordinates": [n as f64, 50.0]}
                }],
                "Datastreams": streams
            }),
        );
        let ids: Vec<i64> = server.get(&format!("/Things({thing})/Datastreams?$orderby=id")).json["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["@iot.id"].as_i64().unwrap())
            .collect();
        for ds in &ids {
            for k in 0..3 * n {
                server.create(
                    &format!("/Datastreams({ds})/Observations"),
                    json!({"phenomenonTime": format!("2024-01-0{}T00:00:00Z", k % 9 + 1), "result": k}),
                );
            }
        }
        things.push(thing);
        datastreams.push(ids);
    }
    Fixture { server, things, datastreams }
}

fn values(response: &crate::support::Response) -> &Vec<Value> {
    assert_eq!(response.status, 200, "{}", response.text);
    response.json["value"].as_array().expect("a collection")
}

fn keys(entity: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = entity.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[test]
fn select_returns_only_the_named_properties_and_links() {
    let f = fixture("select");
    let response = f.server.get("/Things?$select=id,name&$orderby=id");
    let things = values(&response);
    assert_eq!(things.len(), 3);
    assert_eq!(keys(&things[0]), ["@iot.id", "name"]);
    assert_eq!(things[0]["@iot.id"], f.things[0]);
    let response = f.server.get("/Things?$select=name,Datastreams&$orderby=id");
    assert_eq!(keys(&values(&response)[1]), ["Datastreams@iot.navigationLink", "name"]);
    assert_eq!(
        values(&response)[1]["Datastreams@iot.navigationLink"],
        f.server.url(&format!("/Things({})/Datastreams", f.things[1]))
    );
    let one = f.server.get(&format!("/Things({})?$select=description", f.things[2]));
    assert_eq!(one.json, json!({"description": "b"}));
    let observations =
        f.server.get(&format!("/Datastreams({})/Observations?$select=result&$top=1", f.datastreams[0][0]));
    assert_eq!(keys(&values(&observations)[0]), ["result"]);
}

#[test]
fn orderby_sorts_by_several_keys_in_each_direction() {
    let f = fixture("orderby");
    let names = |query: &str| -> Vec<String> {
        values(&f.server.get(&format!("/Things?{query}")))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("$orderby=name"), ["Alpha", "Bravo", "Charlie"]);
    assert_eq!(names("$orderby=name%20desc"), ["Charlie", "Bravo", "Alpha"]);
    assert_eq!(names("$orderby=description%20desc,name%20asc"), ["Bravo", "Charlie", "Alpha"]);
    assert_eq!(names("$orderby=description,name%20desc"), ["Alpha", "Charlie", "Bravo"]);
    let results: Vec<i64> = values(&f.server.get(&format!(
        "/Datastreams({})/Observations?$orderby=phenomenonTime%20desc,result%20asc&$select=result",
        f.datastreams[2][0]
    )))
    .iter()
    .map(|o| o["result"].as_i64().unwrap())
    .collect();
    assert_eq!(results, [8, 7, 6, 5, 4, 3, 2, 1, 0]);

    // NULLs sort as the smallest value, first ascending and last descending, on every
    // database: a resultTime left out, and a Thing's Locations' names through a navigation
    // the Thing has no Location of.
    let ds = f.datastreams[0][0];
    let timed = f.server.create(
        &format!("/Datastreams({ds})/Observations"),
        json!({"phenomenonTime": "2024-02-01T00:00:00Z", "resultTime": "2024-02-01T00:00:05Z", "result": 100}),
    );
    let order = |direction: &str| -> Vec<i64> {
        values(
            &f.server
                .get(&format!("/Datastreams({ds})/Observations?$orderby=resultTime{direction},id&$select=id&$top=2")),
        )
        .iter()
        .map(|o| o["@iot.id"].as_i64().unwrap())
        .collect()
    };
    assert_ne!(order("")[0], timed, "ascending: the Observations without one first");
    assert_eq!(order("%20desc")[0], timed, "descending: they come last");
    f.server.create("/Things", json!({"name": "Zulu", "description": "nowhere"}));
    assert_eq!(names("$orderby=Locations/name,name&$top=1"), ["Zulu"], "no Location sorts first");
    assert_eq!(names("$orderby=Locations/name%20desc,name&$top=1"), ["Charlie"]);
}

#[test]
fn top_skip_and_count_page_a_collection() {
    let f = fixture("top-skip-count");
    // 1*3 + 2*6 + 3*9 = 42 Observations.
    let response = f.server.get("/Observations?$top=5&$skip=40&$count=true&$orderby=id");
    assert_eq!(response.json["@iot.count"], 42);
    assert_eq!(values(&response).len(), 2);
    assert!(response.json.get("@iot.nextLink").is_none(), "the last page has no next link");
    let response = f.server.get("/Observations?$top=0&$count=true");
    assert_eq!(response.json["@iot.count"], 42);
    assert_eq!(values(&response).len(), 0);
    // A page of none has no next page: its link would be the same request, for ever.
    assert!(response.json.get("@iot.nextLink").is_none(), "{}", response.text);
    let expanded =
        f.server.get(&format!("/Datastreams({})?$expand=Observations($top=0;$count=true)", f.datastreams[2][0]));
    assert_eq!(expanded.json["Observations@iot.count"], 9, "{}", expanded.text);
    assert_eq!(expanded.json["Observations"], serde_json::json!([]));
    assert!(expanded.json.get("Observations@iot.nextLink").is_none(), "{}", expanded.text);
    let refs = f.server.get("/Observations/$ref?$top=0");
    assert_eq!(refs.status, 200, "{}", refs.text);
    assert!(refs.json.get("@iot.nextLink").is_none(), "{}", refs.text);
    let response = f.server.get(&format!("/Things({})/Datastreams?$count=true&$top=1", f.things[2]));
    assert_eq!(response.json["@iot.count"], 3);
    assert_eq!(values(&response).len(), 1);
    let response = f.server.get("/Things?$count=false");
    assert!(response.json.get("@iot.count").is_none());
    let filtered = f.server.get(&format!("/Observations?$count=true&$top=1&$filter={}", encode("result ge 6")));
    assert_eq!(filtered.json["@iot.count"], 3 * 3, "the count honours the filter, not the page");
}

#[test]
fn next_links_visit_every_entity_exactly_once() {
    let f = fixture("next-link");
    let filter = encode("result ge 2");
    let expected = f.server.get(&format!("/Observations?$filter={filter}&$count=true&$top=1")).json["@iot.count"]
        .as_u64()
        .unwrap();
    let mut url =
        f.server.url(&format!("/Observations?$filter={filter}&$orderby=result%20desc&$top=4&$select=id,result"));
    let mut seen = HashSet::new();
    let mut last_result = i64::MAX;
    let mut pages = 0;
    loop {
        let response = request("GET", &url, None, None);
        for observation in values(&response) {
            assert!(seen.insert(observation["@iot.id"].as_i64().unwrap()), "seen twice: {observation}");
            let result = observation["result"].as_i64().unwrap();
            assert!(result <= last_result, "the order holds across pages");
            assert!(result >= 2, "the filter holds across pages");
            last_result = result;
        }
        pages += 1;
        match response.json["@iot.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
        assert!(pages < 100, "paging ends");
    }
    assert_eq!(seen.len() as u64, expected);
    assert_eq!(pages, expected.div_ceil(4));
}

#[test]
fn expand_nests_with_options_at_every_level() {
    let f = fixture("expand-nested");
    let query = "$filter=name%20eq%20'Bravo'&$expand=Datastreams($orderby=name%20desc;$select=name;$count=true;$top=2;\
                 $expand=Observations($filter=result%20ge%203;$select=result;$orderby=result%20desc;$top=2;$skip=1;$count=true)),Locations($select=name)";
    let response = f.server.get(&format!("/Things?{query}"));
    let things = values(&response);
    assert_eq!(things.len(), 1);
    let thing = &things[0];
    assert_eq!(thing["Locations"][0], json!({"name": "Bravo place"}));
    assert_eq!(thing["Datastreams@iot.count"], 3);
    let datastreams = thing["Datastreams"].as_array().unwrap();
    assert_eq!(datastreams.len(), 2);
    assert_eq!(datastreams[0]["name"], "Bravo stream 3");
    assert_eq!(datastreams[1]["name"], "Bravo stream 2");
    for datastream in datastreams {
        assert_eq!(datastream["Observations@iot.count"], 6, "results 3..=8: {datastream}");
        assert_eq!(datastream["Observations"], json!([{"result": 7}, {"result": 6}]));
    }
    // Three levels: Observation -> Datastream -> Thing -> Locations.
    let response = f.server.get(&format!(
        "/Datastreams({})/Observations?$top=1&$expand=Datastream($select=name;$expand=Thing($select=name;$expand=Locations($select=name)))",
        f.datastreams[0][0]
    ));
    let observation = &values(&response)[0];
    assert_eq!(observation["Datastream"]["name"], "Charlie stream 1");
    assert_eq!(observation["Datastream"]["Thing"]["name"], "Charlie");
    assert_eq!(observation["Datastream"]["Thing"]["Locations"][0]["name"], "Charlie place");
    // The slash form means the same.
    let response = f.server.get(&format!("/Things({})?$expand=Datastreams/Observations($top=1)", f.things[1]));
    let datastreams = response.json["Datastreams"].as_array().unwrap();
    assert_eq!(datastreams.len(), 2);
    assert!(datastreams.iter().all(|d| d["Observations"].as_array().unwrap().len() == 1));
}

#[test]
fn expand_with_top_one_gives_the_latest_observation_per_datastream() {
    let f = fixture("expand-latest");
    let response = f.server.get("/Datastreams?$orderby=id&$expand=Observations($top=1;$orderby=phenomenonTime%20desc)");
    let datastreams = values(&response);
    assert_eq!(datastreams.len(), 6);
    let latest: Vec<&str> =
        datastreams.iter().map(|d| d["Observations"][0]["phenomenonTime"].as_str().unwrap()).collect();
    assert_eq!(
        latest,
        [
            "2024-01-03T00:00:00Z",
            "2024-01-06T00:00:00Z",
            "2024-01-06T00:00:00Z",
            "2024-01-09T00:00:00Z",
            "2024-01-09T00:00:00Z",
            "2024-01-09T00:00:00Z"
        ]
    );
    for datastream in datastreams {
        assert_eq!(datastream["Observations"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn expanded_collections_page_by_next_link() {
    let f = fixture("expand-next-link");
    let ds = f.datastreams[2][0];
    let response = f.server.get(&format!("/Datastreams({ds})?$expand=Observations($top=4)"));
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json["Observations"].as_array().unwrap().len(), 4);
    let next = response.json["Observations@iot.nextLink"].as_str().expect("more to read");
    let rest = request("GET", next, None, None);
    assert_eq!(values(&rest).len(), 4);
    assert_eq!(values(&rest)[0]["result"], 4);
}

#[test]
fn expanded_next_links_keep_the_expand_options() {
    let f = fixture("expand-next-link-options");
    // Results 0..=8; the filter leaves 8, 7, 6, 4, 3, 2 in this order, three pages of two.
    let options = encode("$filter=result ge 2 and result ne 5;$orderby=result desc;$top=2;$select=result;$count=true");
    let response = f.server.get(&format!("/Datastreams({})?$expand=Observations({options})", f.datastreams[2][0]));
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json["Observations@iot.count"], 6);
    let mut results: Vec<i64> =
        response.json["Observations"].as_array().unwrap().iter().map(|o| o["result"].as_i64().unwrap()).collect();
    let mut next = response.json["Observations@iot.nextLink"].as_str().map(str::to_owned);
    let mut pages = 1;
    while let Some(url) = next {
        let page = request("GET", &url, None, None);
        assert_eq!(page.json["@iot.count"], 6, "the count honours the filter: {url}");
        for observation in values(&page) {
            assert_eq!(keys(observation), ["result"], "the select holds: {url}");
            results.push(observation["result"].as_i64().unwrap());
        }
        next = page.json["@iot.nextLink"].as_str().map(str::to_owned);
        pages += 1;
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(results, [8, 7, 6, 4, 3, 2]);
    assert_eq!(pages, 3);

    // A quoted string and a nested expand survive the link too.
    let options = encode(
        "$filter=startswith(name, 'Bravo') and name ne 'it''s & 100%';$orderby=name desc;$top=2;\
         $expand=Sensor($select=name)",
    );
    let response = f.server.get(&format!("/Things({})?$expand=Datastreams({options})", f.things[2]));
    assert_eq!(response.status, 200, "{}", response.text);
    let names: Vec<&str> =
        response.json["Datastreams"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Bravo stream 3", "Bravo stream 2"]);
    let next = response.json["Datastreams@iot.nextLink"].as_str().expect("one more Datastream");
    let rest = request("GET", next, None, None);
    let rest = values(&rest);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["name"], "Bravo stream 1");
    assert_eq!(rest[0]["Sensor"], json!({"name": "PT100"}));
}

#[test]
fn navigation_paths_of_depth_three_reach_the_right_entities() {
    let f = fixture("nav-depth");
    let (thing, ds) = (f.things[2], f.datastreams[2][1]);
    let response = f.server.get(&format!("/Things({thing})/Datastreams({ds})/Observations?$count=true"));
    assert_eq!(response.json["@iot.count"], 9);
    assert_eq!(values(&response).len(), 9);
    let response = f.server.get(&format!("/Things({thing})/Datastreams({ds})/Sensor"));
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json["name"], "PT100");
    let observation =
        values(&f.server.get(&format!("/Datastreams({ds})/Observations?$top=1")))[0]["@iot.id"].as_i64().unwrap();
    let response = f.server.get(&format!("/Observations({observation})/Datastream/Thing/Locations"));
    assert_eq!(values(&response)[0]["name"], "Bravo place");
    let response = f.server.get(&format!("/Things({thing})/Locations?$select=name"));
    assert_eq!(values(&response), &vec![json!({"name": "Bravo place"})]);
}

#[test]
fn property_and_value_paths_return_one_property() {
    let f = fixture("property-paths");
    let thing = f.things[1];
    let response = f.server.get(&format!("/Things({thing})/name"));
    assert_eq!(response.status, 200);
    assert_eq!(response.json, json!({"name": "Alpha"}));
    let response = f.server.get(&format!("/Things({thing})/name/$value"));
    assert_eq!(response.status, 200);
    assert_eq!(response.text, "Alpha");
    let response = f.server.get(&format!("/Datastreams({})/unitOfMeasurement", f.datastreams[1][0]));
    assert_eq!(response.json["unitOfMeasurement"]["symbol"], "°C");
    let response = f.server.get(&format!("/Datastreams({})/Thing/name", f.datastreams[1][0]));
    assert_eq!(response.json, json!({"name": "Alpha"}));
    assert_eq!(f.server.get(&format!("/Things({thing})/properties/$value")).status, 204, "null has no value");
    assert_eq!(f.server.get("/Things(999)/name").status, 404);
}

#[test]
fn ref_returns_self_links() {
    let f = fixture("ref-read");
    let thing = f.things[2];
    let response = f.server.get(&format!("/Things({thing})/Datastreams/$ref?$orderby=id"));
    let refs = values(&response);
    assert_eq!(refs.len(), 3);
    for (r, ds) in refs.iter().zip(&f.datastreams[2]) {
        assert_eq!(r, &json!({"@iot.selfLink": f.server.url(&format!("/Datastreams({ds})"))}));
    }
    let response = f.server.get(&format!("/Datastreams({})/Thing/$ref", f.datastreams[2][0]));
    assert_eq!(response.status, 200);
    assert_eq!(response.json, json!({"@iot.selfLink": f.server.url(&format!("/Things({thing})"))}));
    let response = f.server.get("/Things/$ref?$top=2&$count=true");
    assert_eq!(response.json["@iot.count"], 3);
    assert_eq!(values(&response).len(), 2);
    assert!(response.json["@iot.nextLink"].as_str().unwrap().contains("/Things/$ref?"));
}

#[test]
fn navigation_to_an_unrelated_id_is_404() {
    let f = fixture("nav-404");
    let (charlie, alpha) = (f.things[0], f.things[1]);
    let alphas_stream = f.datastreams[1][0];
    assert_eq!(f.server.get(&format!("/Things({alpha})/Datastreams({alphas_stream})")).status, 200);
    assert_eq!(f.server.get(&format!("/Things({charlie})/Datastreams({alphas_stream})")).status, 404);
    assert_eq!(f.server.get(&format!("/Things({charlie})/Datastreams({alphas_stream})/Observations")).status, 404);
    assert_eq!(f.server.get(&format!("/Things({charlie})/Datastreams({alphas_stream})/name")).status, 404);
    assert_eq!(f.server.get(&format!("/Things(999)/Datastreams({alphas_stream})")).status, 404);
    let observation =
        values(&f.server.get(&format!("/Datastreams({alphas_stream})/Observations?$top=1")))[0]["@iot.id"]
            .as_i64()
            .unwrap();
    assert_eq!(
        f.server.get(&format!("/Things({charlie})/Datastreams({alphas_stream})/Observations({observation})")).status,
        404
    );
    assert_eq!(
        f.server.get(&format!("/Things({alpha})/Datastreams({alphas_stream})/Observations({observation})")).status,
        200
    );
    let other_ds = f.datastreams[0][0];
    assert_eq!(f.server.get(&format!("/Datastreams({other_ds})/Observations({observation})")).status, 404);
    assert_eq!(f.server.get("/Things/Datastreams").status, 404, "a collection has no navigation");
}
