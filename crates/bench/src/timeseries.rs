//! `bench timeseries` (issue 7): a store of `--observations` Observations (100 million by
//! default) over 10,000 Datastreams, built through the backfill path (the Data Array path,
//! in-process), then:
//!
//! - hourly averages over a year of one 1 Hz Datastream, daily averages over ten years of
//!   another, the latest Observation of every Datastream in one request, and `$count` of one
//!   Datastream, each beside the same answer computed directly on the SQLite file;
//! - a backfill of 250,000 Observations from CSV (`thingbase backfill`'s path) beside raw
//!   batched SQLite inserts of the same rows;
//! - Data Array ingest with rollups on beside rollups off, in the same run;
//! - single-Observation POST latency while retention deletes `--retention-rows` old
//!   Observations, beside the same load undisturbed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::Settings;
use crate::client::{Connection, load};
use crate::workloads::{
    TempDir, create_datastreams, data_array_body, ingest, instant, median, occurrences, print, timed_gets,
};

/// 2024-01-01T00:00:00Z.
const YEAR_START: i64 = 1_704_067_200;
/// 2015-01-01T00:00:00Z.
const DECADE_START: i64 = 1_420_070_400;
const YEAR: i64 = 366 * 86_400;
const DATASTREAMS: usize = 10_000;

async fn server(dir: &Path, rollups: bool) -> anyhow::Result<(thingbase::Server, SocketAddr)> {
    let config = thingbase::Config {
        https_port: None,
        mqtts_port: None,
        data_dir: dir.to_path_buf(),
        http_port: 0,
        mqtt_port: 0,
        max_top: 10_000,
        auth: thingbase::Auth::Off,
        rollups,
        retention_interval: Duration::from_secs(1_000_000),
        ..Default::default()
    };
    let server = thingbase::start(config, None).await?;
    let addr = server.http_addrs[0];
    Ok((server, addr))
}

/// One Data Array item: `count` rows of `datastream` from `start`, `step` seconds apart.
fn item(datastream: i64, start: i64, step: i64, count: usize) -> app::DataArrayItem {
    let rows = (0..count as i64)
        .map(|i| {
            let t = start + i * step;
            vec![Value::String(instant(t)), json!(((t % 86_400) as f64 / 864.0).round() / 10.0 + 0.25)]
        })
        .collect();
    app::DataArrayItem {
        datastream: Some(model::Id(datastream)),
        multi_datastream: None,
        components: vec!["phenomenonTime".into(), "result".into()],
        rows,
    }
}

/// Writes `blocks` (Datastream, first second, step, rows) through the application, three
/// jobs in flight; returns the seconds.
async fn backfill(app: &app::App, blocks: Vec<(i64, i64, i64, usize)>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for (id, start, step, count) in blocks {
        let (app, caller) = (app.clone(), app::Caller::server());
        in_flight.push_back(tokio::spawn(async move {
            let items = vec![tokio::task::spawn_blocking(move || item(id, start, step, count)).await?];
            let outcomes = app.create_observations(&caller, items).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(outcomes.iter().all(Result::is_ok), "the backfill refused rows");
            anyhow::Ok(())
        }));
        if in_flight.len() >= 3
            && let Some(job) = in_flight.pop_front()
        {
            job.await??;
        }
    }
    for job in in_flight {
        job.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The dataset's blocks of 10,000 rows: a 1 Hz year (2024) for the first Datastream, ten years
/// every five minutes (2015 to 2024) for the second, and minutely data from 2024 for the rest,
/// sharing what is left of `total`; all scaled down together when `total` is small.
fn blocks(ids: &[i64], total: u64) -> (Vec<(i64, i64, i64, usize)>, u64) {
    let scale = (total as f64 / 100_000_000.0).min(1.0);
    let year = ((YEAR as f64 - 86_400.0) * scale) as i64; // seconds of 1 Hz data
    let decade = (10.0 * 365.25 * 86_400.0 / 300.0 * scale) as i64; // rows every 5 minutes
    let rest = total.saturating_sub((year + decade) as u64);
    let per_other = rest / (ids.len() as u64 - 2);
    let mut out = Vec::new();
    let mut push = |id: i64, start: i64, step: i64, rows: i64| {
        let mut done = 0;
        while done < rows {
            let n = 10_000.min(rows - done);
            out.push((id, start + done * step, step, n as usize));
            done += n;
        }
    };
    push(ids[0], YEAR_START, 1, year);
    push(ids[1], DECADE_START, 300, decade);
    for id in &ids[2..] {
        push(*id, YEAR_START, 60, per_other as i64);
    }
    let rows = out.iter().map(|b| b.3 as u64).sum();
    (out, rows)
}

fn files_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// Times `sql` on the SQLite file `runs` times (reading every row); returns the median ms.
fn raw_ms(conn: &rusqlite::Connection, runs: usize, sql: &str, params: &[i64]) -> anyhow::Result<f64> {
    let mut statement = conn.prepare(sql)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        let mut n = 0u64;
        while rows.next()?.is_some() {
            n += 1;
        }
        std::hint::black_box(n);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&mut times))
}

/// Where the baselines run: the SQLite file, or the PostgreSQL database.
enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Raw {
    /// The median ms of `sql` over `runs` runs, on a blocking thread (PostgreSQL's sync
    /// client runs a runtime of its own).
    async fn ms(&self, runs: usize, sql: &'static str, params: Vec<i64>) -> anyhow::Result<f64> {
        match self {
            Raw::Sqlite(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                    raw_ms(&conn, runs, sql, &params)
                })
                .await?
            }
            Raw::Postgres(url) => {
                let url = url.clone();
                tokio::task::spawn_blocking(move || raw_pg_ms(&url, runs, sql, &params)).await?
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Raw::Sqlite(_) => "SQLite",
            Raw::Postgres(_) => "PostgreSQL",
        }
    }
}

/// The baselines' SQL: hourly and daily averages, the latest per Datastream, a count.
struct BaselineSql {
    hourly: &'static str,
    daily: &'static str,
    latest: &'static str,
    count: &'static str,
}

const SQLITE_SQL: BaselineSql = BaselineSql {
    hourly: "SELECT phenomenon_time_start / 3600000000, AVG(result_number) FROM observations \
             WHERE datastream_id = ?1 AND phenomenon_time_start >= ?2 AND phenomenon_time_start < ?3 GROUP BY 1",
    daily: "SELECT phenomenon_time_start / 86400000000, AVG(result_number) FROM observations \
            WHERE datastream_id = ?1 GROUP BY 1",
    latest: "SELECT d.id, (SELECT o.id FROM observations o WHERE o.datastream_id = d.id \
             ORDER BY o.phenomenon_time_start DESC LIMIT 1) FROM datastreams d",
    count: "SELECT COUNT(*) FROM observations WHERE datastream_id = ?1",
};

const POSTGRES_SQL: BaselineSql = BaselineSql {
    hourly: "SELECT phenomenon_time_start / 3600000000, AVG(result_number) FROM observations \
             WHERE datastream_id = $1 AND phenomenon_time_start >= $2 AND phenomenon_time_start < $3 GROUP BY 1",
    daily: "SELECT phenomenon_time_start / 86400000000, AVG(result_number) FROM observations \
            WHERE datastream_id = $1 GROUP BY 1",
    latest: "SELECT d.id, (SELECT o.id FROM observations o WHERE o.datastream_id = d.id \
             ORDER BY o.phenomenon_time_start DESC LIMIT 1) FROM datastreams d",
    count: "SELECT COUNT(*) FROM observations WHERE datastream_id = $1",
};

/// The queries over HTTP, each beside its baseline: hourly averages over the 1 Hz
/// Datastream's year, daily averages over the ten years, the latest Observation of every
/// Datastream, and the 1 Hz Datastream's count.
async fn queries(addr: SocketAddr, ids: &[i64], raw: &Raw, sql: BaselineSql) -> anyhow::Result<()> {
    let mut connection = Connection::open(addr).await?;
    let (first, second, db) = (ids[0], ids[1], raw.name());
    let hourly = format!(
        "/v1.1/Datastreams({first})/Observations?aggregate=avg&interval=PT1H&from={}&to={}",
        instant(YEAR_START),
        instant(YEAR_START + YEAR)
    );
    let (p50, p99) = timed_gets(&mut connection, &vec![hourly; 20], |status, body| {
        ensure!(status == 200 && body.windows(7).any(|w| w == b"rollups"), "hourly: {status}");
        Ok(())
    })
    .await?;
    let base = raw.ms(1, sql.hourly, vec![first, YEAR_START * 1_000_000, (YEAR_START + YEAR) * 1_000_000]).await?;
    println!(
        "hourly averages over a year of 1 Hz data: p50 {p50:.1} ms, p99 {p99:.1} ms; raw {db} GROUP BY {base:.0} ms"
    );

    let daily = format!(
        "/v1.1/Datastreams({second})/Observations?aggregate=avg&interval=P1D&from={}&to={}",
        instant(DECADE_START),
        instant(DECADE_START + 10 * 365 * 86_400 + 3 * 86_400)
    );
    let (p50, p99) = timed_gets(&mut connection, &vec![daily; 20], |status, body| {
        ensure!(status == 200 && body.windows(7).any(|w| w == b"rollups"), "daily: {status}");
        Ok(())
    })
    .await?;
    let base = raw.ms(1, sql.daily, vec![second]).await?;
    println!("daily averages over ten years: p50 {p50:.1} ms, p99 {p99:.1} ms; raw {db} GROUP BY {base:.0} ms");

    let latest = format!(
        "/v1.1/Datastreams?$top={DATASTREAMS}&$select=id&$expand=Observations($top=1;$orderby=phenomenonTime%20desc;$select=id,phenomenonTime,result)"
    );
    let (p50, p99) = timed_gets(&mut connection, &vec![latest; 10], |status, body| {
        ensure!(status == 200 && occurrences(body, b"\"@iot.id\"") == 2 * DATASTREAMS, "latest: {status}");
        Ok(())
    })
    .await?;
    let base = raw.ms(3, sql.latest, Vec::new()).await?;
    println!(
        "latest Observation of each of {DATASTREAMS} Datastreams: p50 {p50:.1} ms, p99 {p99:.1} ms; raw {db} (index per Datastream) {base:.0} ms"
    );

    let count = format!("/v1.1/Datastreams({first})/Observations?$count=true&$top=0");
    let (p50, p99) = timed_gets(&mut connection, &vec![count; 50], |status, body| {
        ensure!(status == 200 && body.windows(10).any(|w| w == b"@iot.count"), "count: {status}");
        Ok(())
    })
    .await?;
    let base = raw.ms(3, sql.count, vec![first]).await?;
    println!("$count of the 1 Hz Datastream: p50 {p50:.2} ms, p99 {p99:.2} ms; raw {db} COUNT(*) {base:.0} ms");
    Ok(())
}

pub async fn timeseries(settings: &Settings) -> anyhow::Result<()> {
    big_store(settings).await?;
    backfill_csv(settings).await?;
    rollups_on_and_off(settings).await?;
    retention_while_ingesting(settings).await
}

async fn big_store(settings: &Settings) -> anyhow::Result<()> {
    let dir = TempDir::new("timeseries")?;
    let (server, addr) = server(&dir.0, true).await?;
    let started = Instant::now();
    let ids = create_datastreams(addr, DATASTREAMS).await?;
    println!("created {DATASTREAMS} Datastreams in {:.1} s", started.elapsed().as_secs_f64());
    let (plan, rows) = blocks(&ids, settings.observations);
    let seconds = backfill(server.app(), plan).await?;
    let bytes = files_size(&dir.0);
    println!(
        "loaded {rows} Observations through the backfill path in {seconds:.0} s ({:.0} obs/s); database {:.1} GB, {:.0} bytes per Observation",
        rows as f64 / seconds,
        bytes as f64 / 1e9,
        bytes as f64 / rows as f64
    );
    let file = dir.0.join("thingbase.sqlite");
    let raw = Raw::Sqlite(file);
    queries(addr, &ids, &raw, SQLITE_SQL).await?;
    server.stop().await;
    Ok(())
}

/// 250,000 rows as `thingbase backfill` reads them, beside raw SQLite inserts.
async fn backfill_csv(settings: &Settings) -> anyhow::Result<()> {
    const ROWS: i64 = 250_000;
    let mut csv = String::from("phenomenonTime,result\n");
    for i in 0..ROWS {
        csv.push_str(&format!("{},{}\n", instant(YEAR_START + i), (i % 1000) as f64 / 10.0 + 0.25));
    }
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        let dir = TempDir::new(&format!("backfill-{round}"))?;
        let (server, addr) = server(&dir.0, true).await?;
        let id = create_datastreams(addr, 1).await?[0];
        server.stop().await;
        let file = dir.0.join("rows.csv");
        std::fs::write(&file, &csv)?;
        let database = thingbase::Database {
            data_dir: dir.0.clone(),
            url: None,
            writers: 0,
            large_writers: None,
            tls_ca: None,
            tls_client: None,
            rollups: true,
        };
        let started = Instant::now();
        let loaded = thingbase::backfill(&database, thingbase::backfill::Series::Datastream(id), &file).await?;
        let seconds = started.elapsed().as_secs_f64();
        ensure!(loaded.observations == ROWS as u64, "backfilled {}", loaded.observations);
        println!(
            "round {round}: backfill of {ROWS} rows from CSV: {seconds:.2} s ({:.0} obs/s)",
            ROWS as f64 / seconds
        );
        ours.push(seconds);
        let raw_dir = TempDir::new(&format!("backfill-raw-{round}"))?;
        let path = raw_dir.0.clone();
        let rate = tokio::task::spawn_blocking(move || crate::workloads::raw_sqlite_ingest(&path, ROWS as u64, 10_000))
            .await??;
        println!("round {round}: baseline raw SQLite batched insert: {:.2} s", ROWS as f64 / rate);
        raw.push(ROWS as f64 / rate);
    }
    let (ours, raw) = (median(&mut ours), median(&mut raw));
    println!("backfill of {ROWS} median: {ours:.2} s; raw SQLite {raw:.2} s; ratio {:.2}", raw / ours);
    Ok(())
}

/// Data Array ingest over HTTP into 10 Datastreams, rollups on beside off, rounds alternating.
async fn rollups_on_and_off(settings: &Settings) -> anyhow::Result<()> {
    let rows: u64 = 2_000_000;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        for rollups in [true, false] {
            let dir = TempDir::new(&format!("rollups-{round}-{rollups}"))?;
            let (server, addr) = server(&dir.0, rollups).await?;
            let ids = create_datastreams(addr, 10).await?;
            let bodies: Vec<Bytes> = (0..rows / 10_000)
                .map(|b| {
                    let id = ids[(b % 10) as usize];
                    data_array_body(id, YEAR_START + (b / 10 * 10_000) as i64, 10_000)
                })
                .collect();
            let seconds = ingest(addr, bodies, |body| body, 2).await?;
            server.stop().await;
            let rate = rows as f64 / seconds;
            println!(
                "round {round}: dataArray ingest with rollups {}: {rate:>10.0} obs/s",
                if rollups { "on " } else { "off" }
            );
            if rollups { on.push(rate) } else { off.push(rate) }
        }
    }
    let (on, off) = (median(&mut on), median(&mut off));
    println!("dataArray ingest median: rollups on {on:.0} obs/s, off {off:.0} obs/s; ratio {:.2}", on / off);
    Ok(())
}

/// POST latency at concurrency 8 undisturbed, then while retention deletes old rows.
async fn retention_while_ingesting(settings: &Settings) -> anyhow::Result<()> {
    let old = settings.retention_rows;
    let dir = TempDir::new("retention")?;
    let (server, addr) = server(&dir.0, true).await?;
    let ids = create_datastreams(addr, 2).await?;
    let (old_stream, live) = (ids[0], ids[1]);
    // Ten years ago, one every 10 s.
    let plan: Vec<(i64, i64, i64, usize)> = (0..old.div_ceil(10_000))
        .map(|b| (old_stream, DECADE_START + b as i64 * 100_000, 10, 10_000.min((old - b * 10_000) as usize)))
        .collect();
    let seconds = backfill(server.app(), plan).await?;
    println!("loaded {old} old Observations in {seconds:.0} s");
    let path = format!("/v1.1/Datastreams({live})/Observations");
    let post = move |_: usize, i: u64| {
        let body = format!("{{\"phenomenonTime\":\"{}\",\"result\":{}}}", instant(YEAR_START + i as i64), i % 100);
        ("POST", path.clone(), Bytes::from(body), true)
    };
    let seconds_each = settings.seconds.max(5.0);
    let quiet = load(addr, 8, seconds_each, 201, post.clone()).await?;
    print("POST c=8 undisturbed", &quiet);
    let app = server.app().clone();
    let caller = app::Caller::server();
    app.set_retention(&caller, store::statistics::RetentionScope::Datastream(old_stream), Some(30), None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let retention = tokio::spawn(async move { app.apply_retention(model::Instant::now()).await });
    // Measure for as long as retention runs, at least the undisturbed time.
    let mut busy = Vec::new();
    loop {
        let stats = load(addr, 8, seconds_each, 201, post.clone()).await?;
        print("POST c=8 while retention deletes", &stats);
        busy.push(stats);
        if retention.is_finished() {
            break;
        }
    }
    let report = retention.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let deleting = started.elapsed().as_secs_f64();
    ensure!(report.observations_deleted == old, "retention deleted {}", report.observations_deleted);
    let worst = busy.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
    println!(
        "retention deleted {old} rows in {deleting:.0} s ({:.0} rows/s) while POSTs ran: p99 {worst:.2} ms vs {:.2} ms undisturbed, ratio {:.2}",
        old as f64 / deleting,
        quiet.p99_ms,
        worst / quiet.p99_ms
    );
    server.stop().await;
    Ok(())
}

/// Times `sql` on PostgreSQL `runs` times (reading every row); returns the median ms.
fn raw_pg_ms(url: &str, runs: usize, sql: &str, params: &[i64]) -> anyhow::Result<f64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let statement = client.prepare(sql)?;
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let rows = client.query(&statement, &refs)?;
        std::hint::black_box(rows.len());
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&mut times))
}

/// `bench pg-timeseries`: the store and queries of `bench timeseries` on PostgreSQL (a durable
/// throwaway cluster), each beside the same answer computed by SQL on the same database.
pub async fn pg_timeseries(settings: &Settings) -> anyhow::Result<()> {
    let cluster = pg_test::durable_cluster().map_err(|e| anyhow::anyhow!("a PostgreSQL cluster: {e}"))?;
    let url = cluster
        .database(&format!("bench_timeseries_{}", std::process::id()))
        .map_err(|e| anyhow::anyhow!("a database: {e}"))?;
    let dir = TempDir::new("pg-timeseries")?;
    let config = thingbase::Config {
        https_port: None,
        mqtts_port: None,
        data_dir: dir.0.clone(),
        database_url: Some(url.clone()),
        http_port: 0,
        mqtt_port: 0,
        max_top: 10_000,
        auth: thingbase::Auth::Off,
        retention_interval: Duration::from_secs(1_000_000),
        ..Default::default()
    };
    let server = thingbase::start(config, None).await?;
    let addr = server.http_addrs[0];
    let ids = create_datastreams(addr, DATASTREAMS).await?;
    let (plan, rows) = blocks(&ids, settings.observations);
    let seconds = backfill(server.app(), plan).await?;
    let analyze = url.clone();
    let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let mut client = postgres::Client::connect(&analyze, postgres::NoTls)?;
        client.batch_execute("VACUUM ANALYZE observations")?;
        client.batch_execute("VACUUM ANALYZE observation_rollups")?;
        let row = client.query_one("SELECT CAST(pg_database_size(current_database()) AS bigint)", &[])?;
        Ok(row.try_get(0)?)
    })
    .await??;
    println!(
        "loaded {rows} Observations through the backfill path in {seconds:.0} s ({:.0} obs/s); database {:.1} GB, {:.0} bytes per Observation",
        rows as f64 / seconds,
        bytes as f64 / 1e9,
        bytes as f64 / rows as f64
    );
    queries(addr, &ids, &Raw::Postgres(url), POSTGRES_SQL).await?;
    server.stop().await;
    Ok(())
}
