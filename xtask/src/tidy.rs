//! Repository rules checked as tests: every Rust file opens with a `//!` line saying what it is
//! for, no `todo!`/`unimplemented!`/`dbg!` or `#[ignore]` in product code, and the crates keep
//! the dependency absences ARCHITECTURE.md promises.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_says_what_it_is_for() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    rust_files(&workspace_root().join("xtask"), &mut files);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap_or_default().trim_start().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "files without a `//!` header: {missing:?}");
}

#[test]
fn no_placeholders_in_product_code() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    let forbidden =
        [concat!("todo", "!("), concat!("unimplemented", "!("), concat!("dbg", "!("), concat!("#[", "ignore")];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for needle in forbidden {
            assert!(!text.contains(needle), "{} contains {needle}", file.display());
        }
    }
}

/// Each crate's manifest must not name the crates it must not depend on.
#[test]
fn crate_boundaries_hold() {
    let rules: &[(&str, &[&str])] = &[
        ("model", &["tokio", "rusqlite", "axum", "odata", "sql", "store"]),
        ("odata", &["tokio", "rusqlite", "axum", "sql", "store"]),
        ("sql", &["tokio", "rusqlite", "axum", "store"]),
        ("store", &["tokio", "rusqlite", "axum", "sql"]),
        ("app", &["rusqlite", "axum", "store-sqlite", "sql"]),
        ("http-api", &["rusqlite", "store-sqlite", "sql"]),
        ("sensorthings-json", &["tokio", "axum", "rusqlite", "store-sqlite", "sql", "app"]),
        ("broker", &["model", "odata", "sql", "store", "app", "axum", "rusqlite", "sensorthings-json"]),
        ("mqtt-api", &["axum", "rusqlite", "store-sqlite", "sql", "http-api"]),
        (
            "coap-api",
            &["rusqlite", "axum", "store", "store-sql", "store-sqlite", "store-postgres", "sql", "http-api", "broker"],
        ),
        ("http-api", &["broker", "mqtt-api"]),
        ("access", &["store", "sql", "rusqlite", "tokio", "axum", "store-sqlite", "app"]),
        (
            "pki",
            &[
                "model",
                "odata",
                "sql",
                "store",
                "store-sql",
                "store-sqlite",
                "store-postgres",
                "access",
                "app",
                "broker",
                "mqtt-api",
                "http-api",
                "rusqlite",
                "postgres",
                "axum",
                "hyper",
                "tokio",
            ],
        ),
    ];
    for (krate, banned) in rules {
        let manifest = std::fs::read_to_string(workspace_root().join("crates").join(krate).join("Cargo.toml"))
            .expect("manifest exists");
        let dependencies = manifest.split("[dependencies]").nth(1).unwrap_or("").split("\n[").next().unwrap_or("");
        for dep in *banned {
            let named = dependencies.lines().any(|l| {
                l.trim_start().starts_with(&format!("{dep}.")) || l.trim_start().starts_with(&format!("{dep} "))
            });
            assert!(!named, "crate `{krate}` must not depend on `{dep}`");
        }
    }
}
