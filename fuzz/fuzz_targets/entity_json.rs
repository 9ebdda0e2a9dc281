//! Fuzzes entity JSON through the real create path: bytes are POSTed (as `app` sees them) to
//! a collection of a real SQLite store. Any input must give an entity or a client error, never
//! a panic or an internal error.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: app::App,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("thingbase-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = store_sqlite::SqliteStore::open(store_sqlite::SqliteOptions::new(dir.join("fuzz.sqlite")))
            .expect("store opens");
        let paging = store::Paging { default_top: 100, max_top: 1000 };
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        Fixture { runtime, app: app::App::new(Arc::new(store), paging) }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
    let entity = model::EntityType::ALL[usize::from(selector) % model::EntityType::ALL.len()];
    let Ok(path) = odata::parse_path(&format!("/{}", entity.set_name())) else { return };
    let fixture = fixture();
    let outcome =
        fixture.runtime.block_on(fixture.app.write(&app::Caller::server(), app::WriteOp::Create { path, body }));
    if let Err(app::AppError::Internal(message)) = outcome {
        panic!("a client's entity caused an internal error: {message}");
    }
});
