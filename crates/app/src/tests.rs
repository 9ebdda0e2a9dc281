//! Use-case tests against the real SQLite store: change events after commit.

use std::sync::{Arc, Mutex};

use model::EntityType;
use serde_json::json;

use crate::{App, Change, ChangeBus, WriteOp};

#[derive(Default)]
struct Collect(Mutex<Vec<Vec<Change>>>);

impl ChangeBus for Collect {
    fn publish(&self, changes: &[Change]) {
        self.0.lock().unwrap().push(changes.to_vec());
    }
}

fn app(name: &str) -> (App, Arc<Collect>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("thingbase-app-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = store_sqlite::SqliteStore::open(store_sqlite::SqliteOptions::new(dir.join("db.sqlite"))).unwrap();
    let bus = Arc::new(Collect::default());
    let paging = store::Paging { default_top: 100, max_top: 1000 };
    (App::new(Arc::new(store), paging).with_change_bus(bus.clone()), bus, dir)
}

fn create(set: &str, body: serde_json::Value) -> WriteOp {
    WriteOp::Create { path: odata::parse_path(set).unwrap(), body }
}

#[tokio::test]
async fn committed_writes_publish_their_changes_in_order_and_failed_ones_nothing() {
    let (app, bus, dir) = app("changes");
    let thing = json!({"name": "t", "description": "d",
        "Locations": [{"name": "l", "description": "d", "encodingType": "application/geo+json",
                       "location": {"type": "Point", "coordinates": [1, 2]}}]});
    app.write(&crate::Caller::server(), create("/Things", thing)).await.unwrap();
    let published = bus.0.lock().unwrap().clone();
    assert_eq!(published.len(), 1, "one job, one publication");
    let kinds: Vec<String> = published[0]
        .iter()
        .map(|c| match c {
            Change::Created { entity, .. } => format!("created {}", entity.name()),
            Change::Linked { navigation, .. } => format!("linked {}", navigation.name),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["created Thing", "created Location", "linked Locations", "created HistoricalLocation", "linked Locations"]
    );
    assert!(matches!(published[0][0], Change::Created { entity: EntityType::Thing, .. }));

    let refused = app.write(&crate::Caller::server(), create("/Things", json!({"name": "no description"}))).await;
    assert!(refused.is_err());
    let half_done = json!({"name": "t2", "description": "d", "Datastreams": [{"name": "missing everything"}]});
    assert!(app.write(&crate::Caller::server(), create("/Things", half_done)).await.is_err());
    assert_eq!(bus.0.lock().unwrap().len(), 1, "rolled-back jobs publish nothing");
    app.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_limiter_tells_whether_a_token_is_left_without_taking_it() {
    use crate::limits::{Limiter, Rate};
    let limiter = Limiter::new(Rate { per_second: 0.001, burst: 2.0 });
    assert_eq!(limiter.available(&"a"), Ok(()), "a new key has its burst");
    assert_eq!(limiter.take(&"a"), Ok(()));
    assert_eq!(limiter.available(&"a"), Ok(()), "looking took nothing");
    assert_eq!(limiter.take(&"a"), Ok(()));
    let wait = limiter.available(&"a").expect_err("the burst is used up");
    assert!(wait >= 999, "a token every 1000 s: {wait}");
    assert!(limiter.take(&"a").is_err());
    assert_eq!(limiter.available(&"b"), Ok(()), "keys are apart");
    let unlimited = Limiter::new(Rate::NONE);
    assert!((0..100).all(|_| unlimited.take(&"a").is_ok()));
}

#[test]
fn announcements_round_trip_with_runs_of_ids_and_stay_within_the_limit() {
    use model::Id;
    let thing = EntityType::Thing;
    let locations = thing.navigation("Locations").unwrap();
    let mut changes = vec![
        Change::Created { entity: thing, id: Id(7), record: None },
        Change::Linked { navigation: locations, from: Id(7), to: Id(3) },
        Change::Updated { entity: EntityType::Datastream, id: Id(2) },
        Change::Deleted { entity: EntityType::Sensor, id: Id(9) },
    ];
    changes.extend((100..5100).map(|n| Change::Created { entity: EntityType::Observation, id: Id(n), record: None }));
    changes.push(Change::Created { entity: EntityType::Observation, id: Id(9000), record: None });
    // Ids that are not consecutive do not make a run; enough of them take several messages.
    changes.extend((0..2000).map(|n| Change::Created {
        entity: EntityType::Observation,
        id: Id(20_000 + 2 * n),
        record: None,
    }));
    let messages = crate::announce::encode(0xabc, &changes);
    assert!(messages.len() > 1, "2,000 single ids do not fit one message");
    assert!(messages.iter().all(|m| m.len() <= store::ANNOUNCEMENT_BYTES));
    assert!(messages[0].contains("C Observations 100-5099\n"), "{}", &messages[0][..200]);
    let mut decoded = Vec::new();
    for message in &messages {
        let (node, part) = crate::announce::decode(message).expect("our own format");
        assert_eq!(node, 0xabc);
        decoded.extend(part);
    }
    assert_eq!(decoded, changes);
    assert_eq!(crate::announce::sender(&messages[1]), Some(0xabc));
    // The store may join the messages of one group that share their first line.
    let first = crate::announce::encode(0xabc, &changes[..1]).remove(0);
    let second = crate::announce::encode(0xabc, &changes[1..2]).remove(0);
    let joined = format!("{first}{}", second.split_once('\n').expect("a first line").1);
    assert_eq!(crate::announce::decode(&joined), Some((0xabc, changes[..2].to_vec())));
    assert_eq!(crate::announce::decode("tb2 0000000000000000\nC Things 1"), None, "another version");
    assert_eq!(crate::announce::decode("tb1 0000000000000000\nC Things 5-1"), None, "a backwards run");
    assert_eq!(crate::announce::decode("tb1 0000000000000000\nX Things 1"), None);
    assert_eq!(crate::announce::decode("tb1 0\nC Things 1"), None, "a node is 16 digits");
}

#[test]
fn access_announcements_name_their_node_and_are_no_changes() {
    let message = crate::announce::encode_access(0xfeed);
    assert_eq!(crate::announce::access_of(&message), Some(0xfeed));
    // Its first line is not that of the node's changes, so the store never joins the two;
    // and a node that does not know access messages reads them as of another version.
    assert_eq!(crate::announce::decode(&message), None);
    assert_eq!(crate::announce::sender(&message), None);
    let created = Change::Created { entity: EntityType::Thing, id: model::Id(1), record: None };
    let changes = crate::announce::encode(0xfeed, &[created]).remove(0);
    assert_ne!(message.lines().next(), changes.lines().next());
    for other in [
        "tb1 00000000000000ab\nC Things 1\n",
        "tb2 00000000000000ab access\n",
        "tb1 00000000000000ab access\nC Things 1\n",
        "tb1 zz access\n",
        "tb1 00000000000000ab\nA\n",
    ] {
        assert_eq!(crate::announce::access_of(other), None, "{other:?}");
    }
}

/// The admission gate's evaluation, on records made here (it is pure).
mod gate {
    use model::Instant;
    use store::{CertificateRecord, DeviceClassRecord, DeviceRecord, DeviceState};

    use crate::gate::{self, Evidence, Outcome, PasswordFindings, Profile};

    fn at(seconds: i64) -> Instant {
        Instant::from_micros(1_800_000_000_000_000 + seconds * 1_000_000)
    }

    fn class() -> DeviceClassRecord {
        DeviceClassRecord {
            id: 1,
            manufacturer: "Acme".into(),
            model: "WS-1".into(),
            hardware_version: String::new(),
            support_until: Some(at(1000)),
            vulnerability_contact: Some("https://acme.example/security".into()),
            sensing: r#"["http://example.org/t"]"#.into(),
            mud_url: None,
            update_mechanism: Some("suit".into()),
            firmware: format!(r#"[{{"version":"1.0","digest":"sha256:{}"}}]"#, "a".repeat(64)),
            created_at: at(0),
            mud: None,
        }
    }

    fn device() -> DeviceRecord {
        DeviceRecord {
            id: 1,
            urn: "urn:dev:mac:0024befffe804ff1".into(),
            project: 1,
            class: 1,
            thing: Some(1),
            state: DeviceState::Pending,
            state_reason: String::new(),
            state_changed_at: at(0),
            firmware_version: Some("1.0".into()),
            secret_hash: None,
            password_findings: None,
            preregistered_key: None,
            report: None,
            created_at: at(0),
        }
    }

    fn certificate(revoked: bool) -> CertificateRecord {
        CertificateRecord {
            id: 1,
            device: 1,
            serial: "01".into(),
            fingerprint: "f".into(),
            key_fingerprint: "k".into(),
            not_before: at(-10),
            not_after: at(500),
            issued_at: at(-10),
            revoked_at: revoked.then(|| at(5)),
            revocation_reason: None,
            pem: String::new(),
        }
    }

    /// The outcome of each provision that did not pass, for `device` of `class` with
    /// `certificates`, at `at(10)`.
    fn failures(device: &DeviceRecord, class: &DeviceClassRecord, certificates: &[CertificateRecord]) -> Vec<String> {
        let evidence = Evidence {
            device,
            class,
            certificates,
            shared_keys: vec![],
            feeds: vec![("Datastreams(1)".into(), vec!["http://example.org/t".into()])],
            now: at(10),
        };
        let report = gate::evaluate(&Profile::default_profile(), &evidence);
        report
            .findings
            .iter()
            .filter(|f| f.outcome == Outcome::Fail)
            .map(|f| format!("{}: {}", f.id, f.evidence))
            .collect()
    }

    #[test]
    fn a_declared_enrolled_device_passes_every_provision() {
        assert_eq!(failures(&device(), &class(), &[certificate(false)]), Vec::<String>::new());
    }

    #[test]
    fn each_missing_declaration_fails_its_provision() {
        let class = DeviceClassRecord {
            support_until: Some(at(5)),
            vulnerability_contact: Some("call us".into()),
            update_mechanism: None,
            ..class()
        };
        assert_eq!(
            failures(&device(), &class, &[certificate(false)]),
            [
                "5.2-1: `call us` is not an https URL or a mailto address",
                "5.3-2: its device class declares no software update mechanism",
                "5.3-13: its support period ended at 2027-01-15T08:00:05Z",
            ]
        );
    }

    #[test]
    fn a_revoked_certificate_fails_5_5_7_and_nothing_at_all_fails_5_1_1() {
        assert_eq!(
            failures(&device(), &class(), &[certificate(true)]),
            ["5.5-7: certificate 01 was revoked; re-enroll it with a new token"]
        );
        assert_eq!(
            failures(&device(), &class(), &[]),
            ["5.1-1: it holds no credential yet: enroll it (EST) or issue it a secret"]
        );
    }

    #[test]
    fn pre_installed_passwords_are_checked_for_defaults_identifiers_and_length() {
        let urn = "urn:dev:ops:32473-Thermo-7788";
        let identifiers = ["32473", "Thermo", "7788"];
        assert_eq!(
            gate::check_password("ADMIN", &identifiers, urn),
            PasswordFindings { default: true, short: true, ..Default::default() }
        );
        assert_eq!(
            gate::check_password("my-thermo-77881", &identifiers, urn),
            PasswordFindings { derived: true, ..Default::default() }
        );
        assert_eq!(gate::check_password("correct horse battery", &identifiers, urn), PasswordFindings::default());
        let defaulted = DeviceRecord {
            secret_hash: Some("h".into()),
            password_findings: Some(PasswordFindings { default: true, ..Default::default() }.to_json()),
            ..device()
        };
        assert_eq!(
            failures(&defaulted, &class(), &[]),
            ["5.1-1: its pre-installed password is a well-known default password"]
        );
    }

    #[test]
    fn undeclared_sensing_fails_5_8_3() {
        let evidence = Evidence {
            device: &device(),
            class: &class(),
            certificates: &[certificate(false)],
            shared_keys: vec![],
            feeds: vec![("Datastreams(2)".into(), vec!["http://example.org/humidity".into()])],
            now: at(10),
        };
        let report = gate::evaluate(&Profile::default_profile(), &evidence);
        assert_eq!(report.reason(), "5.8-3: undeclared sensing: Datastreams(2) observes http://example.org/humidity");
    }

    #[test]
    fn profiles_change_levels_and_refuse_what_they_do_not_know() {
        let shipped = Profile::parse(gate::DEFAULT_PROFILE).expect("the shipped profile parses");
        assert_eq!((shipped.name.as_str(), shipped.version), ("thingbase-baseline", 1));
        assert!(shipped.relaxed().is_empty());
        let relaxed =
            Profile::parse(r#"{"profile": "lab", "version": 2, "provisions": {"5.3-13": "off", "5.3-8": "required"}}"#)
                .expect("parses");
        assert_eq!(relaxed.relaxed(), ["5.3-13"]);
        let old = DeviceClassRecord { support_until: Some(at(5)), ..class() };
        let evidence = Evidence {
            device: &device(),
            class: &old,
            certificates: &[certificate(false)],
            shared_keys: vec![],
            feeds: vec![],
            now: at(10),
        };
        let report = gate::evaluate(&relaxed, &evidence);
        assert!(report.passed(), "{}", report.to_text());
        assert!(report.findings.iter().all(|f| f.id != "5.3-13"), "off provisions are not reported");
        let unknown = Profile::parse(r#"{"profile": "x", "version": 1, "provisions": {"9.9-9": "required"}}"#);
        assert_eq!(
            unknown.map_err(|e| e.to_string()).err().as_deref(),
            Some("baseline profile: unknown provision `9.9-9`")
        );
        let level = Profile::parse(r#"{"profile": "x", "version": 1, "provisions": {"5.1-1": "maybe"}}"#);
        assert!(level.is_err());
    }
}

#[test]
fn creates_of_observations_say_which_datastream_they_will_look_up() {
    use model::Id;
    let touches = |path: &str, body: serde_json::Value| crate::write::touches(&create(path, body));
    let result = || json!({"result": 1});
    assert_eq!(touches("Datastreams(7)/Observations", result()), [(EntityType::Datastream, Id(7))]);
    assert_eq!(touches("MultiDatastreams(8)/Observations", result()), [(EntityType::MultiDatastream, Id(8))]);
    assert_eq!(
        touches("Observations", json!({"result": 1, "Datastream": {"@iot.id": 9}})),
        [(EntityType::Datastream, Id(9))]
    );
    assert_eq!(
        touches("Observations", json!({"result": [1], "MultiDatastream": {"@iot.id": 10}})),
        [(EntityType::MultiDatastream, Id(10))]
    );
    // The Datastream a longer path ends in, and the one named where the path names none.
    assert_eq!(touches("Things(1)/Datastreams(2)/Observations", result()), [(EntityType::Datastream, Id(2))]);
    assert_eq!(
        touches("FeaturesOfInterest(3)/Observations", json!({"result": 1, "Datastream": {"@iot.id": 4}})),
        [(EntityType::Datastream, Id(4))]
    );
    // Nothing to look up ahead: no id, another entity, or a path that names the Datastream
    // another way.
    assert!(touches("Observations", json!({"result": 1, "Datastream": {"@iot.id": "9"}})).is_empty());
    assert!(touches("Observations", json!({"result": 1, "Datastream": {"name": "new"}})).is_empty());
    assert!(touches("Things", json!({"name": "t"})).is_empty());
    assert!(touches("Things(1)/Datastreams", json!({"name": "d"})).is_empty());
    assert!(touches("Sensors(1)/Datastreams(2)/Observations(3)/FeatureOfInterest/Observations", result()).is_empty());
    let update = WriteOp::Delete { path: odata::parse_path("Datastreams(7)/Observations").unwrap() };
    assert!(crate::write::touches(&update).is_empty());
}

#[test]
fn data_arrays_say_which_datastreams_they_will_look_up() {
    use model::Id;
    let item = |datastream: Option<i64>, multi: Option<i64>| crate::write::DataArrayItem {
        datastream: datastream.map(Id),
        multi_datastream: multi.map(Id),
        components: vec!["result".into()],
        rows: vec![vec![json!(1)]],
    };
    let items = [item(Some(3), None), item(None, Some(3)), item(Some(1), None), item(Some(3), None)];
    assert_eq!(
        crate::write::data_array_touches(&items),
        [(EntityType::Datastream, Id(3)), (EntityType::MultiDatastream, Id(3)), (EntityType::Datastream, Id(1))],
        "each once, in order"
    );
    assert!(crate::write::data_array_touches(&[item(None, None)]).is_empty());
}
