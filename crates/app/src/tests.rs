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
    assert_eq!(crate::announce::decode("tb2 0\nC Things 1"), None, "another version");
    assert_eq!(crate::announce::decode("tb1 0\nC Things 5-1"), None, "a backwards run");
    assert_eq!(crate::announce::decode("tb1 0\nX Things 1"), None);
}
