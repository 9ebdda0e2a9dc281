//! The time-series extensions (docs/timeseries.md): aggregates per interval and per even
//! bucket, served from rollups or computed from the Observations, checked against a
//! brute-force computation over the raw rows; counts and latest Observations kept on
//! Datastreams.

use std::collections::BTreeMap;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde_json::{Value, json};

use crate::support::TestServer;

const MEASUREMENT: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement";
const COMPLEX: &str = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_ComplexObservation";

/// Random data, replayable from the seed.
struct Dice(store::sample::SplitMix64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// 2026-03-01T00:00:00Z: windows from here cross the clock changes of Europe and America.
const BASE: i64 = 1_772_323_200;
const SPAN_SECONDS: u64 = 40 * 86_400;

fn rfc3339(seconds: i64) -> String {
    Timestamp::from_second(seconds).expect("in range").to_string()
}

fn random_value(dice: &mut Dice) -> Value {
    match dice.below(12) {
        0 => json!(format!("s{}", dice.below(4))),
        1 => Value::Null,
        2..=6 => json!(dice.below(100) as i64 - 50),
        _ => json!((dice.below(10_000) as f64 - 5_000.0) / 8.0),
    }
}

/// A Datastream and a MultiDatastream of two members with random Observations (some at equal
/// times), loaded by dataArray; returns their ids.
fn random_series(server: &TestServer, dice: &mut Dice) -> (i64, i64) {
    let property =
        |name: &str| json!({"name": name, "definition": format!("http://example.org/{name}"), "description": "d"});
    let sensor = json!({"name": "S", "description": "d", "encodingType": "text/plain", "metadata": "m"});
    let thing = json!({"name": "T", "description": "d", "Locations": [{"name": "L", "description": "d",
        "encodingType": "application/geo+json", "location": {"type": "Point", "coordinates": [1, 2]}}]});
    let ds = server.create(
        "/Datastreams",
        json!({"name": "A", "description": "d", "observationType": MEASUREMENT,
               "unitOfMeasurement": {"name": "n", "symbol": "s", "definition": "d"},
               "Thing": thing, "Sensor": sensor, "ObservedProperty": property("P")}),
    );
    let thing_id = server.get(&format!("/Datastreams({ds})/Thing")).json["@iot.id"].as_i64().expect("thing");
    let mds = server.create(
        "/MultiDatastreams",
        json!({"name": "M", "description": "d", "observationType": COMPLEX,
               "unitOfMeasurements": [{"name": "a", "symbol": "s", "definition": "d"}, {"name": "b", "symbol": "s", "definition": "d"}],
               "multiObservationDataTypes": [MEASUREMENT, MEASUREMENT],
               "Thing": {"@iot.id": thing_id}, "Sensor": sensor, "ObservedProperties": [property("X"), property("Y")]}),
    );
    let mut rows = Vec::new();
    let mut multi_rows = Vec::new();
    let mut last = BASE;
    for _ in 0..1500 {
        let t = if dice.below(8) == 0 { last } else { BASE + dice.below(SPAN_SECONDS) as i64 };
        last = t;
        rows.push(json!([rfc3339(t), random_value(dice)]));
        if dice.below(2) == 0 {
            multi_rows.push(json!([rfc3339(t), [random_value(dice), random_value(dice)]]));
        }
    }
    let body = json!([
        {"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"], "dataArray": rows},
        {"MultiDatastream": {"@iot.id": mds}, "components": ["phenomenonTime", "result"], "dataArray": multi_rows}
    ]);
    let response = server.post("/CreateObservations", body);
    assert_eq!(response.status, 201, "{}", response.text);
    (ds, mds)
}

/// The stored Observations as (start in µs, id, result).
fn stored(server: &TestServer, path: &str) -> Vec<(i64, i64, Value)> {
    let mut out = Vec::new();
    let mut answer = server.get(&format!("{path}?$top=10000&$select=id,phenomenonTime,result&$orderby=id"));
    loop {
        assert_eq!(answer.status, 200, "{}", answer.text);
        out.extend(answer.json["value"].as_array().expect("a collection").iter().map(|o| {
            let time: Timestamp = o["phenomenonTime"].as_str().expect("an instant").parse().expect("RFC 3339");
            (time.as_microsecond(), o["@iot.id"].as_i64().expect("id"), o["result"].clone())
        }));
        match answer.json["@iot.nextLink"].as_str() {
            Some(next) => answer = crate::support::request("GET", next, None, None),
            None => return out,
        }
    }
}

/// The local start of the bucket of `interval` holding `t`, computed by truncating the local
/// clock (independently of the server's boundary walk).
fn label(interval: &str, t: DateTime) -> DateTime {
    let date = t.date();
    let midnight = date.to_datetime(jiff::civil::Time::midnight());
    let n = |s: &str| s.trim_matches(|c: char| !c.is_ascii_digit()).parse::<i8>().expect("a number");
    match interval {
        "P1D" => midnight,
        "P1W" => midnight - Span::new().days(i64::from(date.weekday().to_monday_zero_offset())),
        "P1M" | "P3M" => {
            let k = if interval == "P1M" { 1 } else { 3 };
            jiff::civil::date(date.year(), date.month() - (date.month() - 1) % k, 1)
                .to_datetime(jiff::civil::Time::midnight())
        }
        "P1Y" => jiff::civil::date(date.year(), 1, 1).to_datetime(jiff::civil::Time::midnight()),
        m if m.ends_with('M') => date.at(t.hour(), t.minute() - t.minute() % n(m), 0, 0),
        h => date.at(t.hour() - t.hour() % n(h), 0, 0, 0),
    }
}

fn to_local(zone: &TimeZone, micros: i64) -> DateTime {
    zone.to_datetime(Timestamp::from_microsecond(micros).expect("in range"))
}

fn to_instant(zone: &TimeZone, local: DateTime) -> i64 {
    zone.to_ambiguous_zoned(local).compatible().expect("in range").timestamp().as_microsecond()
}

/// Per bucket start (µs) and member: the values of the Observations in it.
type Expected = BTreeMap<i64, BTreeMap<usize, Vec<(i64, i64, Value)>>>;

fn members(multi: bool, result: &Value) -> Vec<Value> {
    if multi { result.as_array().cloned().unwrap_or_default() } else { vec![result.clone()] }
}

/// What `function` makes of one bucket's values of one member.
fn brute(function: &str, values: &[(i64, i64, Value)]) -> Value {
    let numbers: Vec<f64> = values.iter().filter_map(|(_, _, v)| v.as_f64()).collect();
    let number = |n: Option<f64>| n.map_or(Value::Null, |n| json!(n));
    match function {
        "count" => json!(values.len()),
        "min" => number(numbers.iter().copied().reduce(f64::min)),
        "max" => number(numbers.iter().copied().reduce(f64::max)),
        "sum" => number((!numbers.is_empty()).then(|| numbers.iter().sum())),
        "avg" => number((!numbers.is_empty()).then(|| numbers.iter().sum::<f64>() / numbers.len() as f64)),
        "first" => values.iter().min_by_key(|(t, id, _)| (*t, *id)).map_or(Value::Null, |v| v.2.clone()),
        "last" => values.iter().max_by_key(|(t, id, _)| (*t, *id)).map_or(Value::Null, |v| v.2.clone()),
        other => panic!("{other}"),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// Compares an answer with the expected buckets.
fn check(answer: &Value, expected: &Expected, functions: &[&str], multi: bool, what: &str) {
    let got = answer["value"].as_array().unwrap_or_else(|| panic!("{what}: {answer}"));
    let starts: Vec<i64> = got
        .iter()
        .map(|o| {
            let time = o["phenomenonTime"].as_str().expect("an interval");
            let start: Timestamp = time.split('/').next().expect("start").parse().expect("RFC 3339");
            start.as_microsecond()
        })
        .collect();
    let want: Vec<i64> = expected.keys().copied().collect();
    assert_eq!(starts, want, "{what}: the buckets holding Observations");
    for (o, (start, by_member)) in got.iter().zip(expected) {
        let width = if multi { 2 } else { 1 };
        for function in functions {
            let value = &o["parameters"][function];
            for member in 0..width {
                let values = by_member.get(&member).map_or(&[][..], Vec::as_slice);
                let want = brute(function, values);
                let got = if multi { &value[member] } else { value };
                assert!(same(got, &want), "{what}: {function} of bucket {start} member {member}: {got} vs {want}");
            }
        }
        let first = &o["parameters"][functions[0]];
        assert_eq!(&o["result"], first, "{what}: the result is the first function's value");
    }
}

fn aggregate(server: &TestServer, path: &str, options: &str) -> Value {
    let answer = server.get(&format!("{path}?{options}"));
    assert_eq!(answer.status, 200, "{path}?{options}: {}", answer.text);
    answer.json
}

#[test]
fn aggregates_per_interval_equal_a_brute_force_computation() {
    let server = TestServer::start("timeseries-aggregates");
    let mut dice = Dice(store::sample::SplitMix64(7));
    let (ds, mds) = random_series(&server, &mut dice);
    let intervals = ["PT1M", "PT15M", "PT1H", "PT3H", "P1D", "P1W", "P1M", "P3M", "P1Y"];
    let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"];
    let all = ["count", "min", "max", "avg", "sum", "first", "last"];
    let mut sources = Vec::new();
    for round in 0..40 {
        let (path, multi) = if round % 3 == 2 {
            (format!("/MultiDatastreams({mds})/Observations"), true)
        } else {
            (format!("/Datastreams({ds})/Observations"), false)
        };
        let rows = stored(&server, &path);
        let interval = *dice.pick(&intervals);
        let zone_name = *dice.pick(&zones);
        let zone = TimeZone::get(zone_name).expect("a zone");
        let mut functions: Vec<&str> = all.iter().copied().filter(|_| dice.below(2) == 0).collect();
        if functions.is_empty() {
            functions.push("avg");
        }
        // A window of up to a week for minutes, else any; sometimes none at all.
        let longest = if interval.starts_with("PT") && interval.ends_with('M') { 7 * 86_400 } else { SPAN_SECONDS };
        let from = BASE + dice.below(SPAN_SECONDS) as i64 - 86_400;
        let to = from + 1 + dice.below(longest) as i64;
        let windowed = interval.ends_with('M') && interval.starts_with("PT") || dice.below(4) != 0;
        let filtered = dice.below(4) == 0;
        let mut options = format!("aggregate={}&interval={interval}&timezone={zone_name}", functions.join(","));
        if windowed {
            options.push_str(&format!("&from={}&to={}", rfc3339(from), rfc3339(to)));
        }
        if filtered {
            options.push_str("&$filter=result%20gt%200");
        }
        let answer = aggregate(&server, &path, &options);
        sources.push(answer["@thingbase.aggregate"]["source"].as_str().expect("a source").to_owned());
        // The brute force: each Observation in the bucket its local clock says.
        let first_label = windowed.then(|| label(interval, to_local(&zone, from * 1_000_000)));
        let mut expected: Expected = BTreeMap::new();
        for (start, id, result) in &rows {
            if filtered && result.as_f64().is_none_or(|r| r <= 0.0) && !multi {
                continue;
            }
            if filtered && multi {
                // `result gt 0` on an array result matches nothing.
                continue;
            }
            let local = label(interval, to_local(&zone, *start));
            if let Some(first) = first_label
                && (local < first || to_instant(&zone, local) >= to * 1_000_000)
            {
                continue;
            }
            let bucket = to_instant(&zone, local);
            for (member, value) in members(multi, result).into_iter().enumerate() {
                expected.entry(bucket).or_default().entry(member).or_default().push((*start, *id, value));
            }
        }
        check(&answer, &expected, &functions, multi, &format!("round {round}: {path}?{options}"));
    }
    assert!(sources.iter().any(|s| s.starts_with("rollups")), "some answers came from rollups: {sources:?}");
    assert!(sources.iter().any(|s| s == "observations"), "some from the Observations: {sources:?}");
}

#[test]
fn even_buckets_downsample_for_charts() {
    let server = TestServer::start("timeseries-buckets");
    let mut dice = Dice(store::sample::SplitMix64(11));
    let (ds, _) = random_series(&server, &mut dice);
    let path = format!("/Datastreams({ds})/Observations");
    let rows = stored(&server, &path);
    for (from, to, n) in
        [(BASE, BASE + 3_600, 60), (BASE, BASE + SPAN_SECONDS as i64, 400), (BASE + 777, BASE + 9 * 86_400, 37)]
    {
        let options = format!("buckets={n}&from={}&to={}", rfc3339(from), rfc3339(to));
        let answer = aggregate(&server, &path, &options);
        let width = ((to - from) * 1_000_000 + n - 1) / n;
        // Rollups a tenth of a bucket wide or less stand in for their Observations, placed by
        // their start; else the Observations themselves.
        let level = [86_400i64, 3_600, 60].into_iter().find(|l| l * 1_000_000 * 10 <= width);
        let source = answer["@thingbase.aggregate"]["source"].as_str().expect("source").to_owned();
        assert_eq!(source.starts_with("rollups"), level.is_some(), "{options}: {source}");
        let mut expected: Expected = BTreeMap::new();
        for (start, id, result) in &rows {
            if *start < from * 1_000_000 || *start >= to * 1_000_000 {
                let snapped = level.map(|l| start.div_euclid(l * 1_000_000) * l * 1_000_000);
                if snapped
                    .is_none_or(|s| s + level.unwrap_or(0) * 1_000_000 <= from * 1_000_000 || *start >= to * 1_000_000)
                {
                    continue;
                }
            }
            let at = match level {
                Some(l) => (start.div_euclid(l * 1_000_000) * l * 1_000_000).max(from * 1_000_000),
                None => *start,
            };
            let i = (at - from * 1_000_000) / width;
            let bucket = from * 1_000_000 + i * width;
            expected.entry(bucket).or_default().entry(0).or_default().push((*start, *id, result.clone()));
        }
        check(&answer, &expected, &["min", "max"], false, &options);
    }
}

#[test]
fn bad_aggregate_requests_say_what_is_wrong() {
    let server = TestServer::start("timeseries-refusals");
    let mut dice = Dice(store::sample::SplitMix64(3));
    let (ds, _) = random_series(&server, &mut dice);
    let path = format!("/Datastreams({ds})/Observations");
    for (options, needle) in [
        ("interval=PT7M", "PT7M"),
        ("interval=P2D", "P2D"),
        ("interval=PT1H&buckets=10", "not both"),
        ("aggregate=median&interval=PT1H", "median"),
        ("interval=PT1H&timezone=Mars/Olympus", "Mars/Olympus"),
        ("interval=PT1H&$top=5", "$top"),
        ("interval=PT1H&from=yesterday", "from"),
        ("interval=PT1H&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "before"),
        ("interval=PT1M&from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "buckets"),
        ("buckets=0", "buckets"),
        ("aggregate=avg", "interval"),
    ] {
        let answer = server.get(&format!("{path}?{options}"));
        assert_eq!(answer.status, 400, "{options}: {}", answer.text);
        assert!(answer.text.contains(needle), "{options}: the error names `{needle}`: {}", answer.text);
    }
    assert_eq!(server.get("/Observations?interval=PT1H").status, 400, "aggregates are of one Datastream");
    assert_eq!(server.get("/Datastreams(999999)/Observations?interval=PT1H").status, 404);
    let empty = aggregate(&server, &path, "interval=P1D&from=1990-01-01T00:00:00Z&to=1990-02-01T00:00:00Z");
    assert_eq!(empty["value"], json!([]), "a window without Observations has no buckets");
}

#[test]
fn counts_and_latest_values_follow_every_change() {
    let server = TestServer::start("timeseries-latest");
    let mut dice = Dice(store::sample::SplitMix64(5));
    let (ds, mds) = random_series(&server, &mut dice);
    let latest_of = |path: &str| {
        let rows = stored(&server, path);
        rows.iter().max_by_key(|(t, id, _)| (*t, std::cmp::Reverse(*id))).map(|r| r.1)
    };
    let check_latest = |path: &str, what: &str| {
        let top = server.get(&format!("{path}?$orderby=phenomenonTime%20desc&$top=1&$count=true"));
        let n = stored(&server, path).len();
        assert_eq!(top.json["@iot.count"], json!(n), "{what}: the count");
        assert_eq!(top.json["value"][0]["@iot.id"].as_i64(), latest_of(path), "{what}: the latest");
        assert_eq!(top.json.get("@iot.nextLink").is_some(), n > 1, "{what}: a next link while more follow");
    };
    let path = format!("/Datastreams({ds})/Observations");
    check_latest(&path, "loaded");
    // Delete the latest, move the next one back in time, add one in the middle.
    let latest = latest_of(&path).expect("one");
    assert_eq!(server.delete(&format!("/Observations({latest})")).status, 200);
    check_latest(&path, "after deleting the latest");
    let next = latest_of(&path).expect("one");
    let patched = server.patch(&format!("/Observations({next})"), json!({"phenomenonTime": "2020-01-01T00:00:00Z"}));
    assert_eq!(patched.status, 200, "{}", patched.text);
    check_latest(&path, "after moving the latest back");
    let deleted = server.delete(&format!("{path}?$filter=result%20lt%200"));
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    check_latest(&path, "after a filtered delete");
    let streams = server.get(&format!(
        "/Datastreams?$filter=id%20eq%20{ds}&$expand=Observations($top=1;$orderby=phenomenonTime%20desc;$select=id)"
    ));
    assert_eq!(streams.json["value"][0]["Observations"][0]["@iot.id"].as_i64(), latest_of(&path), "expanded");
    check_latest(&format!("/MultiDatastreams({mds})/Observations"), "the MultiDatastream");
    let all = server.get("/Observations?$count=true&$top=0").json["@iot.count"].as_u64();
    let each = stored(&server, &path).len() + stored(&server, &format!("/MultiDatastreams({mds})/Observations")).len();
    assert_eq!(all, Some(each as u64), "every Observation counts");
    // Hourly sums equal the brute force after all those changes.
    let answer = aggregate(&server, &path, "aggregate=sum,count&interval=PT1H");
    assert!(answer["@thingbase.aggregate"]["source"].as_str().expect("source").starts_with("rollups"));
    let mut expected: Expected = BTreeMap::new();
    for (start, id, result) in stored(&server, &path) {
        let bucket = start.div_euclid(3_600_000_000) * 3_600_000_000;
        expected.entry(bucket).or_default().entry(0).or_default().push((start, id, result));
    }
    check(&answer, &expected, &["sum", "count"], false, "hourly after changes");
}

#[test]
fn retention_deletes_old_observations_and_keeps_rollups_longer() {
    use crate::access_control::{ADMIN, As, member, server};
    let server = server("timeseries-retention");
    let admin = As::token(&server, ADMIN);
    let (_, editor) = member(&server, "ed", 1, Some("editor"));
    let stream = |name: &str| {
        json!({"name": name, "description": "d", "observationType": MEASUREMENT,
               "unitOfMeasurement": {"name": "n", "symbol": "s", "definition": "d"},
               "Thing": {"name": "T", "description": "d", "Locations": [{"name": "L", "description": "d",
                   "encodingType": "application/geo+json", "location": {"type": "Point", "coordinates": [1, 2]}}]},
               "Sensor": {"name": "S", "description": "d", "encodingType": "text/plain", "metadata": "m"},
               "ObservedProperty": {"name": "P", "definition": "p", "description": "d"}})
    };
    let (own, by_project) =
        (admin.create("/Datastreams", stream("own")), admin.create("/Datastreams", stream("project")));
    let now = Timestamp::now().as_second();
    let day = 86_400;
    // Per Datastream: 2012 (older than any rollup is kept), 2020, and the last two days.
    for id in [own, by_project] {
        let mut rows = Vec::new();
        for t in [1_330_000_000, 1_330_003_600, 1_590_000_000, 1_590_086_400, now - 2 * day, now - 3_600] {
            rows.push(json!([rfc3339(t), t % 97]));
        }
        let body =
            json!([{"Datastream": {"@iot.id": id}, "components": ["phenomenonTime", "result"], "dataArray": rows}]);
        let created = admin.post("/CreateObservations", body);
        assert_eq!(created.status, 201, "{}", created.text);
    }
    let daily_2020 = |id: i64| {
        admin.get(&format!(
            "/Datastreams({id})/Observations?aggregate=count,sum&interval=P1D&from=2020-05-01T00:00:00Z&to=2020-06-01T00:00:00Z"
        ))
        .json["value"]
        .clone()
    };
    let before = daily_2020(own);
    assert_eq!(before.as_array().map(Vec::len), Some(2));

    // Only admins of the project set policies.
    let body = json!({"rawDays": 30, "rollupDays": 3650});
    assert_eq!(editor.send("PUT", &format!("/admin/retention/datastreams/{own}"), Some(body.clone())).status, 403);
    let set = admin.send("PUT", &format!("/admin/retention/datastreams/{own}"), Some(body));
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.json["rawDays"], 30);
    let refused = admin.send("PUT", "/admin/retention/projects/1", Some(json!({"rawDays": 30, "rollupDays": 7})));
    assert_eq!(refused.status, 400, "rollups kept shorter than Observations: {}", refused.text);
    let bad = admin.send("PUT", "/admin/retention/projects/1", Some(json!({"rawDays": "a month"})));
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("rawDays"), "{}", bad.text);
    let project = admin.send("PUT", "/admin/retention/projects/1", Some(json!({"rawDays": 365, "rollupDays": null})));
    assert_eq!(project.status, 200, "{}", project.text);
    assert_eq!(admin.send("PUT", "/admin/retention/datastreams/999999", Some(json!({"rawDays": 1}))).status, 404);
    let listed = admin.get("/admin/retention");
    assert_eq!(listed.json["value"].as_array().map(Vec::len), Some(2), "{}", listed.text);

    let run = admin.post("/admin/retention/run", json!({}));
    assert_eq!(run.status, 200, "{}", run.text);
    assert_eq!(run.json["series"], 2, "{}", run.text);
    assert_eq!(run.json["observationsDeleted"], 4 + 4, "{}", run.text);
    // The Datastream's own policy: 30 days of Observations, ten years of rollups.
    let left =
        |id: i64| admin.get(&format!("/Datastreams({id})/Observations?$count=true&$top=0")).json["@iot.count"].clone();
    assert_eq!(left(own), 2);
    assert_eq!(left(by_project), 2, "the project's policy applies to the other one");
    assert_eq!(daily_2020(own), before, "the rollups of 2020 stay");
    let ancient = admin.get(&format!(
        "/Datastreams({own})/Observations?aggregate=count&interval=P1D&from=2012-01-01T00:00:00Z&to=2013-01-01T00:00:00Z"
    ));
    assert_eq!(ancient.json["value"], json!([]), "rollups older than ten years went: {}", ancient.text);
    let kept = admin.get(&format!(
        "/Datastreams({by_project})/Observations?aggregate=count&interval=P1Y&from=2012-01-01T00:00:00Z&to=2013-01-01T00:00:00Z"
    ));
    assert_eq!(kept.json["value"][0]["result"], 2, "the project keeps rollups for ever: {}", kept.text);
    let again = admin.post("/admin/retention/run", json!({}));
    assert_eq!(again.json["observationsDeleted"], 0, "nothing is left to delete");

    assert_eq!(admin.send("DELETE", "/admin/retention/projects/1", None).status, 204);
    assert_eq!(admin.send("DELETE", "/admin/retention/projects/1", None).status, 404);
    let audit = admin.get("/admin/audit");
    assert!(audit.text.contains("retention_set") && audit.text.contains("retention_cleared"), "audited");
}

#[test]
fn the_command_line_manages_retention() {
    use std::process::Command;
    let dir = crate::support::TempDir::new("retention-cli");
    let backend = crate::access_control::backend_env("retention_cli");
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_thingbase"))
            .args(args)
            .env("THINGBASE_DATA_DIR", &dir.0)
            .envs(backend.clone())
            .output()
            .expect("the binary runs");
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(run(&["retention", "list"]), "no retention policies");
    assert_eq!(run(&["retention", "set", "--project", "1", "--raw-days", "90"]), "done");
    assert_eq!(run(&["retention", "list"]), r#"{"project":1}: Observations 90 days, rollups for ever"#);
    assert_eq!(run(&["retention", "run"]), "0 series with a policy; 0 Observations and 0 rollups deleted");
    assert_eq!(run(&["retention", "clear", "--project", "1"]), "cleared");
}

fn error_code(response: &crate::support::Response) -> String {
    response.json["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn reads_over_their_time_budget_fail_before_the_answer_starts() {
    let server = TestServer::start_with("timeseries-time-budget", |c| {
        c.query_budget = app::Budget { time: Some(std::time::Duration::from_millis(1)), rows: None, count: None };
    });
    // Writes have no time budget; every read here has a millisecond.
    let ds = server.create(
        "/Datastreams",
        json!({"name": "A", "description": "d", "observationType": MEASUREMENT,
               "unitOfMeasurement": {"name": "n", "symbol": "s", "definition": "d"},
               "Thing": {"name": "T", "description": "d", "Locations": [{"name": "L", "description": "d",
                   "encodingType": "application/geo+json", "location": {"type": "Point", "coordinates": [1, 2]}}]},
               "Sensor": {"name": "S", "description": "d", "encodingType": "text/plain", "metadata": "m"},
               "ObservedProperty": {"name": "P", "definition": "p", "description": "d"}}),
    );
    let rows: Vec<Value> = (0..5_000).map(|i| json!([rfc3339(BASE + i * 7), i % 13])).collect();
    let body = json!([{"Datastream": {"@iot.id": ds}, "components": ["phenomenonTime", "result"], "dataArray": rows}]);
    assert_eq!(server.post("/CreateObservations", body).status, 201);
    for path in [
        format!(
            "/Datastreams({ds})/Observations?$filter=result%20gt%200%20and%20substringof('x',%20Datastream/name)%20eq%20false&$top=1000"
        ),
        "/Observations?$orderby=result%20desc&$top=1000&$expand=Datastream".to_owned(),
        format!("/Datastreams({ds})/Observations?aggregate=avg&interval=PT1M&$filter=result%20gt%200"),
    ] {
        let answer = server.get(&path);
        assert_eq!(answer.status, 503, "{path}: {}", answer.text);
        assert_eq!(error_code(&answer), "query_budget_exceeded", "{path}: a whole JSON error: {}", answer.text);
    }
}

#[test]
fn answers_that_could_be_too_large_are_refused_before_they_run() {
    let server = TestServer::start_with("timeseries-row-budget", |c| {
        c.query_budget = app::Budget { time: None, rows: Some(1_000), count: None };
    });
    let refused = server.get("/Things?$top=100&$expand=Datastreams($top=100;$expand=Observations($top=100))");
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(error_code(&refused), "too_many_rows");
    assert!(refused.text.contains("1000100") || refused.text.contains("up to"), "it says how many: {}", refused.text);
    assert_eq!(server.get("/Things?$top=10&$expand=Datastreams($top=10)").status, 200, "110 entities at most");
    assert_eq!(server.get("/Observations?$top=1000").status, 200);
    assert_eq!(server.get("/Observations?$top=1001").status, 400);
}

#[test]
fn counts_that_would_take_too_long_are_estimated_and_say_so() {
    let server = TestServer::start_with("timeseries-count-estimate", |c| {
        c.query_budget = app::Budget {
            time: Some(std::time::Duration::from_secs(30)),
            rows: None,
            count: Some(std::time::Duration::ZERO),
        };
    });
    let postgres = crate::support::backend_database("probe").is_some();
    let mut dice = Dice(store::sample::SplitMix64(17));
    let (ds, _) = random_series(&server, &mut dice);
    let path = format!("/Datastreams({ds})/Observations");
    let exact = stored(&server, &path).iter().filter(|(_, _, r)| r.as_f64().is_some_and(|r| r > 0.0)).count() as f64;
    let whole = server.get(&format!("{path}?$count=true&$top=0"));
    assert_eq!(whole.json["@iot.count"], json!(stored(&server, &path).len()), "whole Datastreams count exactly");
    assert!(whole.json.get("@thingbase.countEstimated").is_none());
    for filtered in [
        format!("{path}?$filter=result%20gt%200&$count=true&$top=1"),
        "/Observations?$filter=result%20gt%200&$count=true&$top=1".to_owned(),
    ] {
        let answer = server.get(&filtered);
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.json["@thingbase.countEstimated"], true, "{filtered}: {}", answer.text);
        let estimate = answer.json["@iot.count"].as_f64().expect("a count");
        if !postgres && filtered.starts_with("/Datastreams") {
            assert!((estimate - exact).abs() <= 0.3 * exact, "{filtered}: {estimate} estimates {exact}");
        }
        assert_eq!(answer.json["value"].as_array().map(Vec::len), Some(1), "the page is still there");
    }
    // A few Things: the sample is all of them, so the estimate is exact (where it is a
    // sample's; PostgreSQL's planner guesses).
    let things = server.get("/Things?$filter=name%20eq%20'T'&$count=true");
    assert_eq!(things.json["@thingbase.countEstimated"], true, "{}", things.text);
    if !postgres {
        assert_eq!(things.json["@iot.count"], 1, "{}", things.text);
    }
}

#[test]
fn the_command_line_backfills_a_csv_file_with_rollups() {
    use std::process::Command;
    let server = TestServer::start("timeseries-backfill");
    let mut dice = Dice(store::sample::SplitMix64(23));
    let (ds, mds) = random_series(&server, &mut dice);
    let before = stored(&server, &format!("/Datastreams({ds})/Observations")).len();
    // 2025, one row a minute for a week, a quoted text result and a refused row among them.
    let mut csv = String::from("phenomenonTime,result,parameters\r\n");
    let start = 1_735_689_600; // 2025-01-01T00:00:00Z
    for i in 0..10_080 {
        let result = if i == 7 { "\"on, then off\"".to_owned() } else { format!("{}", i % 50) };
        csv.push_str(&format!("{},{result},\"{{\"\"line\"\": {i}}}\"\r\n", rfc3339(start + 60 * i)));
    }
    csv.push_str("not a time,1,\n");
    let dir = crate::support::TempDir::new("backfill-file");
    let file = dir.0.join("week.csv");
    std::fs::write(&file, &csv).expect("written");
    let multi_file = dir.0.join("multi.csv");
    std::fs::write(&multi_file, "phenomenonTime,result\n2025-02-01T00:00:00Z,\"[1, 2.5]\"\n").expect("written");
    let run = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_thingbase"));
        command.args(args).env("THINGBASE_DATA_DIR", server.data_dir());
        if let Some(url) = &server.database_url {
            command.env("THINGBASE_DATABASE_URL", url);
        }
        command.output().expect("the binary runs")
    };
    let output = run(&["backfill", "--datastream", &ds.to_string(), file.to_str().expect("a path")]);
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "a refused row makes it fail: {stdout} {stderr}");
    assert!(stdout.contains("10080 Observations loaded, 1 rows refused"), "{stdout}");
    assert!(stderr.contains("line 10082"), "the refused row is named by its line: {stderr}");
    let multi = run(&["backfill", "--multi-datastream", &mds.to_string(), multi_file.to_str().expect("a path")]);
    assert!(multi.status.success(), "{}", String::from_utf8_lossy(&multi.stderr));

    let path = format!("/Datastreams({ds})/Observations");
    let rows = stored(&server, &path);
    assert_eq!(rows.len(), before + 10_080, "every row is there");
    let text = server.get(&format!("{path}?$filter=phenomenonTime%20eq%20{}", rfc3339(start + 420)));
    assert_eq!(text.json["value"][0]["result"], "on, then off");
    assert_eq!(text.json["value"][0]["parameters"], json!({"line": 7}));
    // The rollups came with the rows: the week's hourly counts and sums, from rollups.
    let answer = aggregate(
        &server,
        &path,
        "aggregate=count,sum&interval=PT1H&from=2025-01-01T00:00:00Z&to=2025-01-08T00:00:00Z",
    );
    assert!(answer["@thingbase.aggregate"]["source"].as_str().expect("source").starts_with("rollups"));
    let mut expected: Expected = BTreeMap::new();
    for (start, id, result) in
        rows.into_iter().filter(|(t, _, _)| (1_735_689_600_000_000..1_736_294_400_000_000).contains(t))
    {
        let bucket = start.div_euclid(3_600_000_000) * 3_600_000_000;
        expected.entry(bucket).or_default().entry(0).or_default().push((start, id, result));
    }
    assert_eq!(expected.len(), 168);
    check(&answer, &expected, &["count", "sum"], false, "hourly after a backfill");
    let last = server
        .get(&format!("/MultiDatastreams({mds})/Observations?$filter=phenomenonTime%20eq%202025-02-01T00:00:00Z"));
    assert_eq!(last.json["value"][0]["result"], json!([1, 2.5]));
}

#[test]
fn rollups_turned_off_and_on_again_are_built_for_what_came_meanwhile() {
    let dir = crate::support::TempDir::new("timeseries-rollups-off");
    let url = crate::support::backend_database("rollups_off");
    let on = |rollups: bool| {
        let (data_dir, url) = (dir.0.clone(), url.clone());
        TestServer::start_with("timeseries-rollups-off", move |c| {
            c.data_dir = data_dir;
            c.database_url = url;
            c.rollups = rollups;
        })
    };
    let options = "aggregate=count,avg,last&interval=PT1H";
    let (path, expected) = {
        let server = on(false);
        let mut dice = Dice(store::sample::SplitMix64(29));
        let (ds, _) = random_series(&server, &mut dice);
        let path = format!("/Datastreams({ds})/Observations");
        let answer = aggregate(&server, &path, options);
        assert_eq!(answer["@thingbase.aggregate"]["source"], "observations", "no rollups to use");
        (path, answer["value"].clone())
    };
    let server = on(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = aggregate(&server, &path, options);
        if answer["@thingbase.aggregate"]["source"].as_str().is_some_and(|s| s.starts_with("rollups")) {
            assert_eq!(answer["value"], expected, "the rollups built equal the Observations");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the rollups were built within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
