//! The Thingbase benchmark tool. Each workload runs against the real server (started in-process
//! on an ephemeral port, driven over real HTTP/1.1 connections) and beside a baseline measured in
//! the same invocation, so results read as ratios on a shared, noisy machine:
//!
//! - `post`: single-Observation POSTs at a given concurrency, beside a do-nothing axum server.
//! - `data-array`: Data Array ingest, beside raw batched SQLite inserts of the same rows.
//! - `query`: a store of N Observations over 1,000 Datastreams: latest 100 of one Datastream,
//!   a one-day window of 1 Hz data, and the latest Observation of every Datastream by
//!   `$expand`, each beside the same read done directly on the SQLite file.
//! - `all`: all three.
//! - `mqtt-ingest`: QoS 1 Observation publishes from `--clients` connections (default 100) to
//!   the SensorThings topics, acknowledged after commit, beside Mosquitto taking the same load.
//! - `mqtt-pubsub`: QoS 0 pub/sub throughput, beside Mosquitto with the same clients.
//! - `mqtt-latency`: publish-to-subscriber latency at 10,000 Observations/s, beside Mosquitto.
//! - `mqtt-idle`: the broker's memory with `--connections` idle connections (default 10,000),
//!   beside Mosquitto's.
//! - `mqtt`: all four.
//! - `access`: POST and MQTT ingest with access control off and required, in the same run.
//! - `tls-handshake`: mutual-TLS handshakes per second, beside server-authenticated ones.
//! - `enroll`: EST enrollments per second, beside HTTPS GETs on new connections.
//! - `timeseries`: aggregates, latest values and counts over `--observations` (100 million
//!   for issue 7) Observations in 10,000 Datastreams, a CSV backfill, ingest with rollups on
//!   and off, and POST latency while retention deletes `--retention-rows` (see
//!   `timeseries.rs`); `pg-timeseries`: its store and queries on PostgreSQL.
//! - `pg-post`: single-Observation POSTs on PostgreSQL, one node against two; `pg-post-devices`:
//!   only its part with a Datastream per client, with `--writers` writers a node (default 2, the
//!   server's).
//!
//! Usage: `cargo run --release -p bench -- <workload> [--observations N] [--seconds S]
//! [--rounds R] [--concurrency C] [--clients N] [--connections N]`. Results are medians over
//! the rounds.

mod access;
mod client;
mod commits;
mod cpu;
mod devices;
mod mqtt;
mod pg;
mod timeseries;
mod workloads;

use anyhow::{Context, bail};

/// The settings shared by the workloads.
#[derive(Clone, Debug)]
pub struct Settings {
    pub observations: u64,
    pub seconds: f64,
    pub rounds: usize,
    pub concurrency: usize,
    /// MQTT clients of the ingest and pub/sub workloads.
    pub clients: usize,
    /// Connections of the idle workload.
    pub connections: usize,
    /// Old Observations the timeseries workload's retention deletes.
    pub retention_rows: u64,
    /// Writer connections of each node with a Datastream per client (`pg-post`,
    /// `pg-post-devices`); the server's default, two, unless given.
    pub writers: usize,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "help".into());
    if workload == "serve-child" {
        return mqtt::serve_child(&args.collect::<Vec<_>>());
    }
    let mut settings = Settings {
        observations: 1_000_000,
        seconds: 5.0,
        rounds: 3,
        concurrency: 64,
        clients: 100,
        connections: 10_000,
        retention_rows: 10_000_000,
        writers: 2,
    };
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--observations" => settings.observations = value.parse()?,
            "--seconds" => settings.seconds = value.parse()?,
            "--rounds" => settings.rounds = value.parse()?,
            "--concurrency" => settings.concurrency = value.parse()?,
            "--clients" => settings.clients = value.parse()?,
            "--connections" => settings.connections = value.parse()?,
            "--retention-rows" => settings.retention_rows = value.parse()?,
            "--writers" => settings.writers = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("# bench {workload} {settings:?}");
    match workload.as_str() {
        "post" => runtime.block_on(workloads::post(&settings)),
        "data-array" => runtime.block_on(workloads::data_array(&settings)),
        "query" => runtime.block_on(workloads::query(&settings)),
        "access" => runtime.block_on(access::access(&settings)),
        "timeseries" => runtime.block_on(timeseries::timeseries(&settings)),
        "pg-timeseries" => runtime.block_on(timeseries::pg_timeseries(&settings)),
        "tls-handshake" => runtime.block_on(devices::tls_handshake(&settings)),
        "enroll" => runtime.block_on(devices::enroll(&settings)),
        "pg-ingest" => runtime.block_on(pg::ingest_workload(&settings)),
        "pg-post" => runtime.block_on(pg::post_workload(&settings)),
        "pg-post-devices" => runtime.block_on(pg::post_devices_workload(&settings)),
        "pg-query" => runtime.block_on(pg::query_workload(&settings)),
        "mqtt-ingest" => runtime.block_on(mqtt::ingest(&settings)),
        "mqtt-pubsub" => runtime.block_on(mqtt::pubsub(&settings)),
        "mqtt-latency" => runtime.block_on(mqtt::latency(&settings)),
        "mqtt-idle" => runtime.block_on(mqtt::idle(&settings)),
        "mqtt" => runtime.block_on(async {
            mqtt::ingest(&settings).await?;
            mqtt::pubsub(&settings).await?;
            mqtt::latency(&settings).await?;
            mqtt::idle(&settings).await
        }),
        "all" => runtime.block_on(async {
            workloads::post(&settings).await?;
            workloads::data_array(&settings).await?;
            workloads::query(&settings).await
        }),
        _ => {
            println!(
                "usage: bench <post|data-array|query|all|mqtt-ingest|mqtt-pubsub|mqtt-latency|mqtt-idle|mqtt|access|tls-handshake|enroll|timeseries|pg-timeseries|pg-ingest|pg-post|pg-post-devices|pg-query> [--observations N] [--seconds S] [--rounds R] [--concurrency C] [--clients N] [--connections N] [--writers N]"
            );
            Ok(())
        }
    }?;
    println!("peak RSS of the process (server and load generator): {} MB", peak_rss_mb());
    Ok(())
}

/// `VmHWM` of this process in MB.
pub fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb / 1024)
}
