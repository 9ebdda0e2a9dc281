//! `thingbase export` and `import`: a hub's data moved from SQLite to PostgreSQL and back gives
//! the same answers to the same queries, users and tokens included; a cut-off file loads
//! nothing; a database that is not empty is refused.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::access_control::{ADMIN, As};
use crate::support::{TempDir, TestServer};

/// The queries whose answers must survive the move.
const QUERIES: &[&str] = &[
    "/Things?$orderby=id&$expand=Locations,Datastreams($orderby=id)",
    "/Datastreams?$orderby=id&$expand=Observations($orderby=id),Sensor,ObservedProperty",
    "/Observations?$orderby=id&$count=true",
    "/Observations?$orderby=result&$select=id,result",
    "/Observations?$filter=result%20gt%201.5&$orderby=id",
    "/FeaturesOfInterest?$orderby=id",
    "/HistoricalLocations?$orderby=id&$expand=Locations",
    "/MultiDatastreams?$orderby=id&$expand=ObservedProperties,Observations",
    "/Things?$filter=properties/floor%20eq%203",
];

fn database(data_dir: &std::path::Path, url: Option<String>) -> thingbase::Database {
    thingbase::Database {
        data_dir: data_dir.to_path_buf(),
        url,
        writers: 0,
        large_writers: None,
        tls_ca: None,
        tls_client: None,
        rollups: true,
    }
}

fn server_on(name: &str, data_dir: &std::path::Path, url: Option<String>) -> TestServer {
    let data_dir = data_dir.to_path_buf();
    TestServer::start_with(name, move |c| {
        c.data_dir = data_dir;
        c.database_url = url;
        c.auth = thingbase::Auth::Required { admin_token: Some(ADMIN.into()) };
    })
}

/// The answers to [`QUERIES`], with the server's own address taken out of the links.
fn answers(server: &TestServer) -> Vec<Value> {
    let admin = As::token(server, ADMIN);
    QUERIES
        .iter()
        .map(|q| {
            let response = admin.get(q);
            assert_eq!(response.status, 200, "{q}: {}", response.text);
            serde_json::from_str(&response.text.replace(&server.base, "BASE")).expect("JSON")
        })
        .collect()
}

fn open(database: &thingbase::Database) -> (tokio::runtime::Runtime, Arc<dyn store::Store>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(database.open(store_sqlite::Durability::Process, 1)).expect("open");
    (runtime, store)
}

fn export(database: &thingbase::Database) -> Vec<u8> {
    let (_runtime, store) = open(database);
    let mut out = Vec::new();
    thingbase::transfer::export(&store, &mut out).expect("export");
    store.shutdown();
    out
}

fn import(database: &thingbase::Database, file: &[u8]) -> anyhow::Result<thingbase::transfer::Moved> {
    let (_runtime, store) = open(database);
    let moved = thingbase::transfer::import(&store, &mut &file[..]);
    store.shutdown();
    moved
}

#[test]
fn data_moves_from_sqlite_to_postgres_and_back_with_the_same_answers() {
    let cluster = pg_test::cluster().unwrap_or_else(|e| panic!("a PostgreSQL cluster: {e}"));
    let first = TempDir::new("transfer-sqlite");
    let (original, user_token) = {
        let server = server_on("transfer-original", &first.0, None);
        let admin = As::token(&server, ADMIN);
        let ds = admin.create(
            "/Things",
            json!({
                "name": "station", "description": "d", "properties": {"floor": 3, "b": [1, {"z": null}], "a": "x"},
                "Locations": [{"name": "roof", "description": "d", "encodingType": "application/geo+json",
                               "location": {"type": "Point", "coordinates": [8.5, 49.25]}}],
                "Datastreams": [{"name": "temperature", "description": "d", "unitOfMeasurement": {"symbol": "°C"},
                    "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
                    "Sensor": {"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"},
                    "ObservedProperty": {"name": "p", "definition": "d", "description": "d"}}]
            }),
        );
        let ds = admin.get(&format!("/Things({ds})/Datastreams")).json["value"][0]["@iot.id"].as_i64().unwrap();
        let results =
            [json!(1), json!(2.25), json!("text"), json!(true), json!({"k": [1, 2]}), json!(12345678901234_i64)];
        for (i, result) in results.iter().enumerate() {
            let time = format!("2024-03-0{}T10:00:00.123456Z", i + 1);
            let body = json!({"result": result, "phenomenonTime": time, "parameters": {"n": i}});
            admin.create(&format!("/Datastreams({ds})/Observations"), body);
        }
        let user = admin.create("/admin/users", json!({"name": "ada", "password": "correct horse battery"}));
        let token = admin.post("/admin/tokens", json!({"label": "laptop", "user": user}));
        assert_eq!(token.status, 201, "{}", token.text);
        (answers(&server), token.json["token"].as_str().unwrap().to_owned())
    };

    let exported = export(&database(&first.0, None));
    let text = String::from_utf8(exported.clone()).unwrap();
    assert!(text.starts_with("{\"format\":\"thingbase-export\",\"version\":1"), "{}", &text[..100]);
    assert!(text.contains(r#""{\"floor\":3,\"b\":[1,{\"z\":null}],\"a\":\"x\"}""#), "JSON kept byte for byte");

    // Into PostgreSQL.
    let url = cluster.database("it_transfer").unwrap();
    let second = TempDir::new("transfer-unused");
    let moved = import(&database(&second.0, Some(url.clone())), &exported).expect("import into PostgreSQL");
    assert_eq!(moved.tables, store::dump::TABLES.len());
    {
        let server = server_on("transfer-postgres", &second.0, Some(url.clone()));
        assert_eq!(answers(&server), original, "PostgreSQL answers as SQLite did");
        // Tokens moved (hashed), and new entities get new ids.
        assert_eq!(As::token(&server, &user_token).get("/admin/whoami").status, 200);
        let admin = As::token(&server, ADMIN);
        let next =
            admin.create("/Sensors", json!({"name": "n", "description": "d", "encodingType": "e", "metadata": "m"}));
        assert_eq!(next, 2, "the sequence moved past the loaded ids");
        let deleted = admin.send_delete(&format!("/Sensors({next})"));
        assert_eq!(deleted, 200);
    }
    // Back into a new SQLite file.
    let back = export(&database(&second.0, Some(url)));
    let third = TempDir::new("transfer-back");
    import(&database(&third.0, None), &back).expect("import into SQLite");
    let server = server_on("transfer-back", &third.0, None);
    assert_eq!(answers(&server), original, "and SQLite again");
    drop(server);

    // A file cut short loads nothing; the database stays empty and takes the whole file after.
    let fourth = TempDir::new("transfer-cut");
    let cut = &exported[..exported.len() - 40];
    let error = import(&database(&fourth.0, None), cut).expect_err("a cut-off file");
    assert!(format!("{error:#}").contains("cut off") || format!("{error:#}").contains("not JSON"), "{error:#}");
    import(&database(&fourth.0, None), &exported).expect("the whole file after a failed one");
    // Not into a database with data.
    let again = import(&database(&fourth.0, None), &exported).expect_err("not empty");
    assert!(format!("{again:#}").contains("not empty"), "{again:#}");
}
