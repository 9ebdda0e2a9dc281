//! The workloads and their baselines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::Settings;
use crate::client::{Connection, Stats, load, percentile};

/// 2024-01-01T00:00:00Z in seconds.
pub(crate) const T0: i64 = 1_704_067_200;

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn instant(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> anyhow::Result<TempDir> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("thingbase-bench-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_server(dir: &Path, max_top: u64) -> anyhow::Result<(thingbase::Server, SocketAddr)> {
    let config = thingbase::Config {
        https_port: None,
        mqtts_port: None,
        data_dir: dir.to_path_buf(),
        http_port: 0,
        mqtt_port: 0,
        max_top,
        auth: thingbase::Auth::Off,
        ..Default::default()
    };
    let server = thingbase::start(config, None).await?;
    let addr = server.http_addrs[0];
    Ok((server, addr))
}

/// Creates a Thing with a Location and `count` Datastreams; returns their ids in order.
pub(crate) async fn create_datastreams(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<i64>> {
    create_datastreams_as(addr, None, count).await
}

/// [`create_datastreams`] by the holder of `token`.
pub(crate) async fn create_datastreams_as(
    addr: SocketAddr,
    token: Option<&str>,
    count: usize,
) -> anyhow::Result<Vec<i64>> {
    let mut connection = Connection::open(addr).await?.with_token(token);
    let datastream = |i: usize| {
        json!({
            "name": format!("ds {i}"), "description": "bench", "unitOfMeasurement": {"name": "degree Celsius", "symbol": "°C"},
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement",
        })
    };
    let mut first = datastream(0);
    first["Sensor"] = json!({"name": "s", "description": "d", "encodingType": "text/plain", "metadata": "m"});
    first["ObservedProperty"] = json!({"name": "p", "definition": "d", "description": "d"});
    let thing = json!({
        "name": "bench", "description": "bench",
        "Locations": [{"name": "l", "description": "d", "encodingType": "application/geo+json",
                       "location": {"type": "Point", "coordinates": [8.4, 49.0]}}],
        "Datastreams": [first],
    });
    let (status, body) = connection.send("POST", "/v1.1/Things", Bytes::from(thing.to_string()), false).await?;
    ensure!(status == 201, "creating the Thing: {status}");
    // This Thing's Datastream: the database may hold others already.
    let created: Value = serde_json::from_slice(&body)?;
    let thing = created["@iot.id"].as_i64().context("thing id")?;
    let path = format!("/v1.1/Things({thing})/Datastreams?$expand=Thing,Sensor,ObservedProperty");
    let (_, body) = connection.send("GET", &path, Bytes::new(), false).await?;
    let listed: Value = serde_json::from_slice(&body)?;
    let first = &listed["value"][0];
    let mut ids = vec![first["@iot.id"].as_i64().context("datastream id")?];
    let links = (
        first["Thing"]["@iot.id"].clone(),
        first["Sensor"]["@iot.id"].clone(),
        first["ObservedProperty"]["@iot.id"].clone(),
    );
    for i in 1..count {
        let mut body = datastream(i);
        body["Thing"] = json!({"@iot.id": links.0});
        body["Sensor"] = json!({"@iot.id": links.1});
        body["ObservedProperty"] = json!({"@iot.id": links.2});
        let (status, body) = connection.send("POST", "/v1.1/Datastreams", Bytes::from(body.to_string()), false).await?;
        ensure!(status == 201, "creating a Datastream: {status}");
        let created: Value = serde_json::from_slice(&body)?;
        ids.push(created["@iot.id"].as_i64().context("datastream id")?);
    }
    Ok(ids)
}

pub(crate) fn data_array_body(datastream: i64, start: i64, count: u64) -> Bytes {
    let mut rows = String::with_capacity(count as usize * 40);
    for i in 0..count as i64 {
        if i > 0 {
            rows.push(',');
        }
        rows.push_str(&format!("[\"{}\",{}]", instant(start + i), (i % 1000) as f64 / 10.0 + 0.25));
    }
    Bytes::from(format!(
        "[{{\"Datastream\":{{\"@iot.id\":{datastream}}},\"components\":[\"phenomenonTime\",\"result\"],\"dataArray\":[{rows}]}}]"
    ))
}

pub(crate) fn print(label: &str, stats: &Stats) {
    println!(
        "{label:<44} {:>10.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {} failed)",
        stats.per_second, stats.p50_ms, stats.p99_ms, stats.requests, stats.failures
    );
}

/// A do-nothing axum server answering 201 to every POST.
async fn baseline_server() -> anyhow::Result<SocketAddr> {
    let router = axum::Router::new()
        .route("/", axum::routing::post(|| async { (axum::http::StatusCode::CREATED, "{\"@iot.id\":1}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

pub async fn post(settings: &Settings) -> anyhow::Result<()> {
    let dir = TempDir::new("post")?;
    let (server, addr) = start_server(&dir.0, 10_000).await?;
    let datastream = create_datastreams(addr, 1).await?[0];
    let baseline = baseline_server().await?;
    let path = format!("/v1.1/Datastreams({datastream})/Observations");
    let (mut full, mut minimal, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let (mut full_p99, mut minimal_p99) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        for minimal_reply in [false, true] {
            let path = path.clone();
            let stats = load(addr, settings.concurrency, settings.seconds, 201, move |w, n| {
                let body =
                    format!("{{\"result\":{},\"phenomenonTime\":\"{}\"}}", n, instant(T0 + n as i64 * 64 + w as i64));
                ("POST", path.clone(), Bytes::from(body), minimal_reply)
            })
            .await?;
            print(
                &format!(
                    "round {round}: thingbase POST (return={})",
                    if minimal_reply { "minimal" } else { "representation" }
                ),
                &stats,
            );
            if minimal_reply {
                minimal.push(stats.per_second);
                minimal_p99.push(stats.p99_ms);
            } else {
                full.push(stats.per_second);
                full_p99.push(stats.p99_ms);
            }
        }
        let stats = load(baseline, settings.concurrency, settings.seconds, 201, |_, n| {
            ("POST", "/".to_owned(), Bytes::from(format!("{{\"result\":{n}}}")), false)
        })
        .await?;
        print(&format!("round {round}: baseline do-nothing axum POST"), &stats);
        base.push(stats.per_second);
    }
    let (full, minimal, base) = (median(&mut full), median(&mut minimal), median(&mut base));
    println!(
        "POST median: {full:.0}/s (p99 {:.1} ms) with the entity in the reply, {minimal:.0}/s (p99 {:.1} ms) minimal; baseline {base:.0}/s; ratios {:.2} and {:.2}",
        median(&mut full_p99),
        median(&mut minimal_p99),
        full / base,
        minimal / base
    );
    server.stop().await;
    Ok(())
}

/// Raw batched inserts of `rows` Observations straight into a freshly migrated database file,
/// in transactions of `batch` rows; returns rows per second.
pub(crate) fn raw_sqlite_ingest(dir: &Path, rows: u64, batch: u64) -> anyhow::Result<f64> {
    let path = dir.join("raw.sqlite");
    drop(store_sqlite::SqliteStore::open(store_sqlite::SqliteOptions::new(&path))?);
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        // The writer connection's pragmas from `store_sqlite::open_connection`.
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16000; PRAGMA temp_store = MEMORY;
         INSERT INTO things (id, name, description) VALUES (1, 't', 'd');
         INSERT INTO sensors (id, name, description, encoding_type, metadata) VALUES (1, 's', 'd', 'text/plain', 'm');
         INSERT INTO observed_properties (id, name, definition, description) VALUES (1, 'p', 'd', 'd');
         INSERT INTO datastreams (id, name, description, unit_of_measurement, observation_type, thing_id, sensor_id, observed_property_id)
             VALUES (1, 'ds', 'd', '{}', 'm', 1, 1, 1);
         INSERT INTO features (id, name, description, encoding_type, feature) VALUES (1, 'f', 'd', 'application/geo+json', '{}');",
    )?;
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO observations (phenomenon_time_start, result_number, datastream_id, feature_id) VALUES (?1, ?2, 1, 1)",
            )?;
            for i in written..(written + batch).min(rows) {
                insert.execute(rusqlite::params![(T0 + i as i64) * 1_000_000, (i % 1000) as f64 / 10.0 + 0.25])?;
            }
        }
        tx.commit()?;
        written = (written + batch).min(rows);
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// One Data Array request to make: Datastream, first second, rows.
pub(crate) type Block = (i64, i64, u64);

/// The query workloads' data, as Data Array requests of 10,000 rows: the first Datastream holds
/// one day at 1 Hz, the others share the rest of `total`, each at 1 Hz. Returns the requests
/// and the rows they hold.
pub(crate) fn query_blocks(ids: &[i64], total: u64) -> (Vec<Block>, u64) {
    const DAY: u64 = 86_400;
    let per_other = (total - DAY) / (ids.len() as u64 - 1);
    let mut bodies: Vec<Block> = Vec::new();
    for chunk in 0..DAY.div_ceil(10_000) {
        bodies.push((ids[0], T0 + (chunk * 10_000) as i64, 10_000.min(DAY - chunk * 10_000)));
    }
    for id in &ids[1..] {
        let mut done = 0;
        while done < per_other {
            let n = 10_000.min(per_other - done);
            bodies.push((*id, T0 + done as i64, n));
            done += n;
        }
    }
    (bodies, DAY + per_other * (ids.len() as u64 - 1))
}

/// Posts `blocks` to `/CreateObservations` over `concurrency` connections, generating each body
/// just before it is sent (so the generator's memory stays out of the peak RSS); returns the
/// seconds.
pub(crate) async fn ingest<I: Send + 'static>(
    addr: SocketAddr,
    blocks: Vec<I>,
    to_body: fn(I) -> Bytes,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(blocks));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let queue = std::sync::Arc::clone(&queue);
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await?;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(block) = next else { return anyhow::Ok(()) };
                let body = to_body(block);
                let (status, reply) = connection.send("POST", "/v1.1/CreateObservations", body, false).await?;
                ensure!(status == 201, "ingest: {status} {}", String::from_utf8_lossy(&reply));
                ensure!(!reply.windows(7).any(|w| w == b"\"error\""), "ingest rejected rows");
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

pub async fn data_array(settings: &Settings) -> anyhow::Result<()> {
    const BATCH: u64 = 10_000;
    let rows = settings.observations;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        let dir = TempDir::new(&format!("ingest-{round}"))?;
        let (server, addr) = start_server(&dir.0, 10_000).await?;
        let datastream = create_datastreams(addr, 1).await?[0];
        let bodies: Vec<Bytes> = (0..rows.div_ceil(BATCH))
            .map(|b| data_array_body(datastream, T0 + (b * BATCH) as i64, BATCH.min(rows - b * BATCH)))
            .collect();
        // Bodies are made before the clock starts: the measurement is the server's.
        let seconds = ingest(addr, bodies, |body| body, 2).await?;
        server.stop().await;
        let rate = rows as f64 / seconds;
        println!(
            "round {round}: thingbase dataArray ingest                  {rate:>10.0} obs/s ({rows} rows, {BATCH} per request)"
        );
        ours.push(rate);
        let raw_dir = TempDir::new(&format!("raw-{round}"))?;
        let path = raw_dir.0.clone();
        let rate = tokio::task::spawn_blocking(move || raw_sqlite_ingest(&path, rows, BATCH)).await??;
        println!("round {round}: baseline raw SQLite batched insert         {rate:>10.0} obs/s");
        raw.push(rate);
    }
    let (ours, raw) = (median(&mut ours), median(&mut raw));
    println!("dataArray median: {ours:.0} obs/s; raw SQLite {raw:.0} obs/s; ratio {:.2}", ours / raw);
    Ok(())
}

/// GETs each path in turn, checking each answer; returns p50 and p99 in ms.
pub(crate) async fn timed_gets(
    connection: &mut Connection,
    paths: &[String],
    check: impl Fn(u16, &Bytes) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let mut latencies = Vec::with_capacity(paths.len());
    for path in paths {
        let started = Instant::now();
        let (status, body) = connection.send("GET", path, Bytes::new(), false).await?;
        latencies.push(started.elapsed());
        check(status, &body)?;
    }
    latencies.sort_unstable();
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.99)))
}

fn raw_timed(
    conn: &rusqlite::Connection,
    runs: usize,
    sql: &str,
    params: &dyn Fn(usize) -> Vec<i64>,
) -> anyhow::Result<(f64, f64)> {
    let mut latencies: Vec<Duration> = Vec::with_capacity(runs);
    let mut statement = conn.prepare(sql)?;
    for i in 0..runs {
        let started = Instant::now();
        let mut rows = statement.query(rusqlite::params_from_iter(params(i)))?;
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            let _: Option<f64> = row.get(2)?;
            n += 1;
        }
        std::hint::black_box(n);
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.99)))
}

pub(crate) fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

fn files_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

pub async fn query(settings: &Settings) -> anyhow::Result<()> {
    const DATASTREAMS: usize = 1000;
    const DAY: u64 = 86_400;
    let total = settings.observations.max(DAY + DATASTREAMS as u64);
    let dir = TempDir::new("query")?;
    let (server, addr) = start_server(&dir.0, 100_000).await?;
    let ids = create_datastreams(addr, DATASTREAMS).await?;
    let (bodies, loaded) = query_blocks(&ids, total);
    let seconds = ingest(addr, bodies, |(id, start, rows)| data_array_body(id, start, rows), 2).await?;
    println!(
        "loaded {loaded} Observations over {DATASTREAMS} Datastreams through dataArray in {seconds:.1} s ({:.0} obs/s)",
        loaded as f64 / seconds
    );

    let raw = rusqlite::Connection::open_with_flags(
        dir.0.join("thingbase.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut connection = Connection::open(addr).await?;

    let runs = 200;
    let latest = |i: usize| {
        format!(
            "/v1.1/Datastreams({})/Observations?$orderby=phenomenonTime%20desc&$top=100",
            ids[1 + (i * 7919) % (DATASTREAMS - 1)]
        )
    };
    let paths: Vec<String> = (0..runs).map(latest).collect();
    let (p50, p99) = timed_gets(&mut connection, &paths, |status, body| {
        ensure!(status == 200 && body.len() > 1000, "latest 100: {status}");
        Ok(())
    })
    .await?;
    let ids_for_raw = ids.clone();
    let (raw50, raw99) = raw_timed(
        &raw,
        runs,
        "SELECT id, phenomenon_time_start, result_number, result_time, datastream_id FROM observations WHERE datastream_id = ?1 ORDER BY phenomenon_time_start DESC LIMIT 100",
        &|i| vec![ids_for_raw[1 + (i * 7919) % (DATASTREAMS - 1)]],
    )?;
    println!(
        "latest 100 of one Datastream: p50 {p50:.2} ms, p99 {p99:.2} ms; raw SQLite p50 {raw50:.2} ms, p99 {raw99:.2} ms"
    );

    let window = format!(
        "/v1.1/Datastreams({})/Observations?$filter=phenomenonTime%20ge%20{}%20and%20phenomenonTime%20lt%20{}&$orderby=phenomenonTime&$top={DAY}",
        ids[0],
        instant(T0),
        instant(T0 + DAY as i64)
    );
    let (p50, p99) = timed_gets(&mut connection, &vec![window; 10], |status, body| {
        ensure!(status == 200 && occurrences(body, b"\"@iot.id\"") == DAY as usize, "window: {status}");
        Ok(())
    })
    .await?;
    let first = ids[0];
    let (raw50, _) = raw_timed(
        &raw,
        10,
        "SELECT id, phenomenon_time_start, result_number, result_time FROM observations WHERE datastream_id = ?1 AND phenomenon_time_start >= ?2 AND phenomenon_time_start < ?3 ORDER BY phenomenon_time_start",
        &|_| vec![first, T0 * 1_000_000, (T0 + DAY as i64) * 1_000_000],
    )?;
    println!("one-day window, 86,400 rows: p50 {p50:.1} ms, p99 {p99:.1} ms; raw SQLite p50 {raw50:.1} ms");

    let expand = "/v1.1/Datastreams?$expand=Observations($top=1;$orderby=phenomenonTime%20desc)&$top=1000";
    let (p50, p99) = timed_gets(&mut connection, &vec![expand.to_owned(); 20], |status, body| {
        // Every Datastream and its one latest Observation carry an id.
        ensure!(status == 200 && occurrences(body, b"\"@iot.id\"") == 2 * DATASTREAMS, "expand: {status}");
        Ok(())
    })
    .await?;
    let (raw50, _) = raw_timed(
        &raw,
        20,
        "SELECT d.id, (SELECT o.id FROM observations o WHERE o.datastream_id = d.id ORDER BY o.phenomenon_time_start DESC LIMIT 1), NULL FROM datastreams d LIMIT 1000",
        &|_| Vec::new(),
    )?;
    println!(
        "latest Observation of 1,000 Datastreams by $expand: p50 {p50:.1} ms, p99 {p99:.1} ms; raw SQLite p50 {raw50:.1} ms"
    );

    drop(raw);
    server.stop().await;
    let bytes = files_size(&dir.0);
    println!("database: {} MB on disk, {:.1} bytes per Observation", bytes / 1_000_000, bytes as f64 / loaded as f64);
    Ok(())
}
