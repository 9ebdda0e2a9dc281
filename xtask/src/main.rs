//! Project automation, run as `cargo xtask <command>`:
//!
//! - `ci`: everything CI checks, in fail-fast order: formatting, clippy with warnings as
//!   errors, then the whole test suite (unit tests and the integration binary), the
//!   integration binary once more on PostgreSQL (`THINGBASE_TEST_BACKEND=postgres`, a
//!   throwaway cluster from `pg-test`), the CoAP tests (`--features coap`), and a short fuzz
//!   run. First it installs what the tests need and the machine lacks: Python clients from
//!   PyPI, Mosquitto, libcoap's client, and PostgreSQL with PostGIS from Debian.
//! - `fuzz [seconds]`: builds the fuzz targets in `fuzz/` with libFuzzer coverage
//!   instrumentation (the flags `cargo fuzz --sanitizer none` uses, so no nightly and no
//!   cargo-fuzz install is needed) and runs each for `seconds` (default 20). Crashes stop with
//!   the input saved under `fuzz/artifacts/`.
//! - `help`: this list.
//!
//! Tidy checks (file headers, forbidden macros, crate-graph absences) are ordinary tests in
//! `src/tidy.rs`, so `cargo test` runs them too.

use std::process::Command;

use anyhow::{Context, bail};

#[cfg(test)]
mod tidy;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("fuzz") => {
            let seconds = args.get(1).map(|s| s.parse()).transpose().context("seconds must be a number")?;
            fuzz(seconds.unwrap_or(20))
        }
        Some("help") | None => {
            println!("cargo xtask ci              formatting, clippy, all tests and a short fuzz run, as CI runs them");
            println!("cargo xtask fuzz [seconds]  build the fuzz targets and run each for a while (default 20 s)");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`; try `cargo xtask help`"),
    }
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// Installs what the test suites drive the servers with: the PyPI `frost_sta_client` and
/// `paho-mqtt`; Debian's `mosquitto`, `mosquitto-clients` and `libcoap3-bin`
/// (`coap-client`); and PostgreSQL with PostGIS
/// (`postgresql` and `postgresql-postgis`), which `pg-test` starts throwaway clusters of.
fn install_test_tools() -> anyhow::Result<()> {
    let present = Command::new("python3").args(["-c", "import frost_sta_client, paho.mqtt.client"]).status();
    if !present.is_ok_and(|s| s.success()) {
        eprintln!("$ python3 -m pip install frost_sta_client paho-mqtt");
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "frost_sta_client", "paho-mqtt"])
            .status()
            .context("python3 is needed for the integration suite")?;
        if !status.success() {
            bail!("cannot install frost_sta_client and paho-mqtt from PyPI");
        }
    }
    let mut packages = Vec::new();
    // The broker's tests drive it with Debian's clients; the bridge tests and the benchmark
    // run a real Mosquitto beside it.
    if ["mosquitto", "mosquitto_pub"].iter().any(|tool| which(tool).is_none()) {
        packages.extend(["mosquitto", "mosquitto-clients"]);
    }
    // The CoAP tests (`--features coap`) drive the DTLS listener with libcoap's client.
    if ["coap-client", "coap-client-openssl", "coap-client-gnutls"].iter().all(|tool| which(tool).is_none()) {
        packages.push("libcoap3-bin");
    }
    // The PostgreSQL backend's tests. Both names are Debian's metapackages for its default
    // PostgreSQL version (15 on Debian 12, where `postgresql-postgis` pulls in
    // `postgresql-15-postgis-3`), so they work unchanged on later releases. The package named
    // plain `postgis` would not do: it holds the command-line tools and only recommends the
    // extension, and recommends are not installed.
    if !postgis_installed() {
        packages.extend(["postgresql", "postgresql-postgis"]);
    }
    if !packages.is_empty() {
        apt_install(&packages)?;
    }
    Ok(())
}

/// Whether the newest PostgreSQL installed the Debian way (the one `pg-test` runs) has the
/// PostGIS extension: `/usr/lib/postgresql/<version>/bin/initdb` and
/// `/usr/share/postgresql/<version>/extension/postgis.control`.
fn postgis_installed() -> bool {
    let versions = std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten();
    let newest = versions
        .filter(|entry| entry.path().join("bin/initdb").is_file())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            Some((version, name))
        })
        .max();
    newest.is_some_and(|(_, name)| {
        std::path::Path::new("/usr/share/postgresql").join(name).join("extension/postgis.control").is_file()
    })
}

/// Where `tool` is on the PATH (or in /usr/sbin, where Debian puts daemons).
fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// `apt-get install`, after one `apt-get update` (a fresh machine has no package lists).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    eprintln!("$ apt-get update && apt-get install -y {}", packages.join(" "));
    let update = Command::new("apt-get").args(["update", "--quiet"]).status().context("apt-get is needed")?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    let status = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--quiet", "--no-install-recommends"])
        .args(packages)
        .status()
        .context("apt-get is needed")?;
    if !status.success() {
        bail!("cannot install {} with apt-get", packages.join(" "));
    }
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    install_test_tools()?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings"])?;
    cargo(&["test", "--workspace", "--quiet"])?;
    // The whole integration suite again, on PostgreSQL: same answers from both backends.
    eprintln!("$ THINGBASE_TEST_BACKEND=postgres cargo test -p thingbase --test integration");
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo_bin)
        .args(["test", "-p", "thingbase", "--test", "integration", "--quiet"])
        .env("THINGBASE_TEST_BACKEND", "postgres")
        .status()
        .with_context(|| format!("cannot run {cargo_bin}"))?;
    if !status.success() {
        bail!("the integration suite failed on PostgreSQL");
    }
    // CoAP over DTLS is a feature of its own: its integration tests, with libcoap's client.
    cargo(&["test", "-p", "thingbase", "--test", "integration", "--features", "coap", "--quiet", "coap::"])?;
    fuzz(15)?;
    eprintln!("ci passed in {:.0?}", started.elapsed());
    Ok(())
}

const FUZZ_TARGETS: &[&str] = &[
    "odata_path",
    "odata_query",
    "entity_json",
    "mqtt_packet",
    "device_urn",
    "csr",
    "coap_message",
    "aggregate_options",
    "http_request",
];

fn fuzz(seconds: u64) -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?.to_path_buf();
    let fuzz_dir = root.join("fuzz");
    let target = "x86_64-unknown-linux-gnu";
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg",
        "fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo build --release (fuzz targets, instrumented)");
    let status = Command::new(&cargo)
        .current_dir(&fuzz_dir)
        .env("RUSTFLAGS", &flags)
        // Its own target directory, whatever the caller's: instrumented artifacts must not mix
        // with the workspace's, and the binaries are looked for there.
        .env("CARGO_TARGET_DIR", fuzz_dir.join("target"))
        .args(["build", "--release", "--quiet", "--target", target, "--bins"])
        .status()?;
    if !status.success() {
        bail!("building the fuzz targets failed");
    }
    for name in FUZZ_TARGETS {
        let corpus = fuzz_dir.join("corpus").join(name);
        let artifacts = fuzz_dir.join("artifacts").join(name);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let binary = fuzz_dir.join("target").join(target).join("release").join(name);
        eprintln!("$ fuzz {name} for {seconds} s");
        // Seeds kept in the repository (valid requests the fuzzer would take long to find)
        // start the corpus; what the run finds goes to the first directory only.
        let seeds = fuzz_dir.join("seeds").join(name);
        let mut command = Command::new(&binary);
        command.arg(&corpus);
        if seeds.is_dir() {
            command.arg(&seeds);
        }
        let status = command
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=4096")
            .arg("-timeout=10")
            .arg("-print_final_stats=0")
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !status.success() {
            bail!("fuzz target {name} found a crash; the input is in {}", artifacts.display());
        }
    }
    Ok(())
}
