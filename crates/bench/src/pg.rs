//! The PostgreSQL backend (issue 4), on a durable throwaway cluster (`pg_test::durable_cluster`:
//! fsync and synchronous commit on) with Thingbase in-process:
//!
//! - `pg-ingest`: dataArray ingest through Thingbase against raw binary `COPY` of the same rows
//!   into the same schema, in the same run;
//! - `pg-post`: single-Observation POSTs at the given concurrency on one node, and split over
//!   two nodes on one database;
//! - `pg-query`: the core issue's query targets (latest 100 of a Datastream, a one-day window)
//!   with `--observations` rows loaded.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, ensure};
use bytes::Bytes;
use postgres::types::{ToSql, Type};

use crate::Settings;
use crate::client::load;
use crate::cpu::{PerRequest, Spent};
use crate::workloads::{
    T0, create_datastreams, data_array_body, ingest, instant, median, occurrences, print, query_blocks, timed_gets,
};

fn database(name: &str) -> anyhow::Result<String> {
    let cluster = pg_test::durable_cluster().map_err(|e| anyhow::anyhow!("a PostgreSQL cluster: {e}"))?;
    cluster.database(name).map_err(|e| anyhow::anyhow!("a database: {e}"))
}

async fn node(url: &str, max_top: u64) -> anyhow::Result<(thingbase::Server, SocketAddr, crate::workloads::TempDir)> {
    node_with(url, max_top, 1).await
}

async fn node_with(
    url: &str,
    max_top: u64,
    writers: usize,
) -> anyhow::Result<(thingbase::Server, SocketAddr, crate::workloads::TempDir)> {
    let dir = crate::workloads::TempDir::new("pg-node")?;
    let config = thingbase::Config {
        https_port: None,
        mqtts_port: None,
        data_dir: dir.0.clone(),
        database_url: Some(url.to_owned()),
        database_writers: writers,
        http_port: 0,
        mqtt_port: 0,
        max_top,
        auth: thingbase::Auth::Off,
        ..Default::default()
    };
    let server = thingbase::start(config, None).await?;
    let addr = server.http_addrs[0];
    Ok((server, addr, dir))
}

/// A `numeric` in PostgreSQL's binary form, from a decimal text (for COPY).
struct Numeric(String);

impl std::fmt::Debug for Numeric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ToSql for Numeric {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let (negative, digits) = match self.0.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, self.0.as_str()),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        // Base-10000 groups: the whole part padded on the left, the fraction on the right.
        let pad_left = (4 - whole.len() % 4) % 4;
        let whole = format!("{}{whole}", "0".repeat(pad_left));
        let pad_right = (4 - fraction.len() % 4) % 4;
        let fraction_padded = format!("{fraction}{}", "0".repeat(pad_right));
        let mut groups: Vec<i16> = Vec::new();
        for chunk in whole.as_bytes().chunks(4).chain(fraction_padded.as_bytes().chunks(4)) {
            groups.push(std::str::from_utf8(chunk)?.parse()?);
        }
        let weight = (whole.len() / 4) as i16 - 1;
        for value in [groups.len() as i16, weight, if negative { 0x4000 } else { 0 }, fraction.len() as i16] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        for group in groups {
            out.extend_from_slice(&group.to_be_bytes());
        }
        Ok(postgres::types::IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    postgres::types::to_sql_checked!();
}

/// The rows the dataArray bodies hold, by binary COPY into a migrated database; rows/s.
fn raw_copy(url: &str, rows: u64) -> anyhow::Result<f64> {
    drop(store_postgres::PostgresStore::open(store_postgres::PostgresOptions::new(url))?);
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(
        "INSERT INTO things (id, name, description) VALUES (1, 't', 'd');
         INSERT INTO sensors (id, name, description, encoding_type, metadata) VALUES (1, 's', 'd', 'text/plain', '\"m\"');
         INSERT INTO observed_properties (id, name, definition, description) VALUES (1, 'p', 'd', 'd');
         INSERT INTO datastreams (id, name, description, unit_of_measurement, observation_type, thing_id, sensor_id, observed_property_id)
             VALUES (1, 'ds', 'd', '{}', 'm', 1, 1, 1);
         INSERT INTO features (id, name, description, encoding_type, feature) VALUES (1, 'f', 'd', 'application/geo+json', '{}');",
    )?;
    let started = Instant::now();
    const BATCH: u64 = 10_000;
    let mut written = 0;
    while written < rows {
        let mut transaction = client.transaction()?;
        let sink = transaction.copy_in(
            "COPY observations (phenomenon_time_start, result_number, datastream_id, feature_id) FROM STDIN BINARY",
        )?;
        let types = [Type::INT8, Type::NUMERIC, Type::INT8, Type::INT8];
        let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
        for i in written..(written + BATCH).min(rows) {
            let time = (T0 + i as i64) * 1_000_000;
            let result = Numeric(format!("{}", (i % 1000) as f64 / 10.0 + 0.25));
            writer.write(&[&time, &result, &1_i64, &1_i64])?;
        }
        writer.finish()?;
        transaction.commit()?;
        written = (written + BATCH).min(rows);
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

pub async fn ingest_workload(settings: &Settings) -> anyhow::Result<()> {
    const BATCH: u64 = 10_000;
    let rows = settings.observations;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        let url = database(&format!("bench_ingest_{round}"))?;
        let (server, addr, _dir) = node(&url, 10_000).await?;
        let datastream = create_datastreams(addr, 1).await?[0];
        let bodies: Vec<Bytes> = (0..rows.div_ceil(BATCH))
            .map(|b| data_array_body(datastream, T0 + (b * BATCH) as i64, BATCH.min(rows - b * BATCH)))
            .collect();
        let seconds = ingest(addr, bodies, |body| body, 2).await?;
        server.stop().await;
        let rate = rows as f64 / seconds;
        println!("round {round}: thingbase dataArray ingest on PostgreSQL  {rate:>10.0} obs/s ({rows} rows)");
        ours.push(rate);
        let url = database(&format!("bench_copy_{round}"))?;
        let rate = tokio::task::spawn_blocking(move || raw_copy(&url, rows)).await??;
        println!("round {round}: baseline raw binary COPY                 {rate:>10.0} obs/s");
        raw.push(rate);
    }
    let (ours, raw) = (median(&mut ours), median(&mut raw));
    println!("PostgreSQL dataArray median: {ours:.0} obs/s; raw binary COPY {raw:.0} obs/s; ratio {:.2}", ours / raw);
    Ok(())
}

/// The POST rate of `per_node` clients on each of the nodes at `addrs` (client `w` of a node
/// posting to the `w`-th of its Datastreams, round robin), and the CPU a request cost meanwhile.
async fn post_load(
    addrs: &[(SocketAddr, &[i64])],
    per_node: usize,
    settings: &Settings,
) -> anyhow::Result<(f64, PerRequest)> {
    let postmaster = pg_test::durable_cluster().ok().and_then(|c| c.postmaster_pid());
    let profiling = std::env::var_os("BENCH_PG_STATEMENTS").is_some();
    if profiling {
        statements(None).await?;
    }
    let started = Spent::now(postmaster);
    let commits = crate::commits::so_far();
    let mut tasks = Vec::new();
    for &(addr, datastreams) in addrs {
        ensure!(!datastreams.is_empty(), "no Datastream to post to");
        let seconds = settings.seconds;
        let paths: Vec<String> = datastreams.iter().map(|d| format!("/v1.1/Datastreams({d})/Observations")).collect();
        tasks.push(tokio::spawn(async move {
            load(addr, per_node, seconds, 201, move |w, n| {
                let body =
                    format!("{{\"result\":{},\"phenomenonTime\":\"{}\"}}", n, instant(T0 + n as i64 * 64 + w as i64));
                ("POST", paths[w % paths.len()].clone(), Bytes::from(body), true)
            })
            .await
        }));
    }
    let (mut total, mut requests) = (0.0, 0);
    for task in tasks {
        let stats = task.await??;
        ensure!(stats.failures == 0, "{} POSTs failed", stats.failures);
        print("  one node's share", &stats);
        total += stats.per_second;
        requests += stats.requests;
    }
    let cpu = Spent::now(postmaster).per_request(&started, requests);
    let commits = crate::commits::so_far() - commits;
    println!("  {:.1} POSTs a commit ({requests} POSTs, {commits} commits)", requests as f64 / commits.max(1) as f64);
    if profiling {
        statements(Some(commits)).await?;
    }
    Ok((total, cpu))
}

/// With `BENCH_PG_STATEMENTS` set (and the cluster started with
/// `THINGBASE_PG_SETTINGS=shared_preload_libraries=pg_stat_statements`), a diagnosis: `None`
/// forgets the statements' statistics, `Some(commits)` prints what each statement cost the
/// server a commit since (calls, planning and execution) and forgets them again.
async fn statements(commits: Option<u64>) -> anyhow::Result<()> {
    let url = database("bench_statements")?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
        if let Some(commits) = commits {
            let per = commits.max(1) as f64;
            let rows = client.query(
                // Statements of one kind differ in how many rows or ids they carry: summed by
                // the start of their text.
                "SELECT sum(calls)::int8, sum(total_plan_time), sum(total_exec_time), sum(rows)::int8, \
                 left(regexp_replace(regexp_replace(query, '[\\s()]+', ' ', 'g'), '\\$[0-9]+', '$', 'g'), 90) AS kind FROM pg_stat_statements \
                 WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%DATABASE%' \
                 GROUP BY kind ORDER BY sum(total_plan_time + total_exec_time) DESC LIMIT 16",
                &[],
            )?;
            let total = client.query_one(
                "SELECT sum(calls)::float8, sum(total_plan_time), sum(total_exec_time), count(*) FROM pg_stat_statements \
                 WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%DATABASE%'",
                &[],
            )?;
            let (calls, plan, exec, kinds): (f64, f64, f64, i64) = (total.get(0), total.get(1), total.get(2), total.get(3));
            println!(
                "  all statements, a commit: {:.2} calls, {:.1} us planning, {:.1} us executing ({kinds} statement texts)",
                calls / per,
                plan * 1000.0 / per,
                exec * 1000.0 / per
            );
            println!("  statements by kind, a commit: calls, plan us, exec us, rows, query");
            for row in rows {
                let (calls, plan, exec, count, query): (i64, f64, f64, i64, String) =
                    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
                println!(
                    "  {:6.2} {:7.1} {:7.1} {:7.1}  {query}",
                    calls as f64 / per,
                    plan * 1000.0 / per,
                    exec * 1000.0 / per,
                    count as f64 / per
                );
            }
        }
        client.batch_execute("SELECT pg_stat_statements_reset()")?;
        Ok(())
    })
    .await?
}

/// Single-Observation POSTs to one Datastream (the busiest case: every job widens the same
/// row's derived times), on one node with one writer connection, one node with four, and two
/// nodes with as many each on one database; then with a Thing and Datastream per client (a
/// sensor each), on one node and on two.
///
/// The machine is shared and its speed drifts within seconds, so each round runs the one node
/// before and after the two (A B A) and compares the two nodes with the mean of the runs around
/// them; the ratio reported is the median of those per-round ratios.
pub async fn post_workload(settings: &Settings) -> anyhow::Result<()> {
    // By writers per node (1, then 4): one node's rates, two nodes' rates, per-round ratios.
    let mut rates: [[Vec<f64>; 3]; 2] = Default::default();
    let (mut spread, mut spread_ratios) = (Vec::new(), Vec::new());
    let (mut doubled, mut doubled_ratios) = (Vec::new(), Vec::new());
    let c = settings.concurrency.max(2);
    let mut cpu_ratios: [Vec<f64>; 2] = Default::default();
    // A Datastream per client: one node's rates, two nodes' rates, per-round ratios.
    let mut devices: [Vec<f64>; 3] = Default::default();
    let mut devices_cpu = Vec::new();
    for round in 0..settings.rounds {
        for (slot, writers) in [(0, 1), (1, 4)] {
            let url = database(&format!("bench_post_{round}_{writers}"))?;
            let (node, addr, _dir) = node_with(&url, 100, writers).await?;
            let datastream = create_datastreams(addr, 1).await?[0];
            let one = |(rate, cpu): (f64, PerRequest), when: &str| {
                println!(
                    "round {round}: POST on PostgreSQL, one node, {writers} writer(s), c={}, {when}: {rate:.0}/s, {cpu}",
                    settings.concurrency
                );
                (rate, cpu)
            };
            let (before, cpu_before) = one(post_load(&[(addr, &[datastream])], c, settings).await?, "before");
            let (second, second_addr, _second_dir) = node_with(&url, 100, writers).await?;
            let both: [(SocketAddr, &[i64]); 2] = [(addr, &[datastream]), (second_addr, &[datastream])];
            let (two, cpu_two) = post_load(&both, c / 2, settings).await?;
            println!(
                "round {round}: POST on PostgreSQL, two nodes, {writers} writer(s) each, c={} in all: {two:.0}/s, {cpu_two}",
                settings.concurrency
            );
            let (mut other_rate, mut doubled_rate) = (None, None);
            if writers == 1 {
                // Not the worst case: each node's clients post to a Datastream of their own.
                let other = create_datastreams(addr, 1).await?[0];
                let (rate, cpu) = post_load(&[(addr, &[datastream]), (second_addr, &[other])], c / 2, settings).await?;
                println!(
                    "round {round}: POST on PostgreSQL, two nodes, 1 writer each, a Datastream per node, c={} in all: {rate:.0}/s, {cpu}",
                    settings.concurrency
                );
                other_rate = Some(rate);
                // Scaling out: twice the clients, each node with as many as the one node had.
                let (rate, cpu) = post_load(&both, c, settings).await?;
                println!(
                    "round {round}: POST on PostgreSQL, two nodes, 1 writer each, c={c} on each ({} in all): {rate:.0}/s, {cpu}",
                    2 * c
                );
                doubled_rate = Some(rate);
            }
            second.stop().await;
            let (after, cpu_after) = one(post_load(&[(addr, &[datastream])], c, settings).await?, "after");
            node.stop().await;
            let around = (before + after) / 2.0;
            let cpu_one = (cpu_before.total() + cpu_after.total()) / 2.0;
            println!(
                "round {round}: {writers} writer(s) per node: two nodes / one node {:.2} in POSTs a second, {:.2} in CPU a POST",
                two / around,
                cpu_two.total() / cpu_one
            );
            cpu_ratios[slot].push(cpu_two.total() / cpu_one);
            rates[slot][0].extend([before, after]);
            rates[slot][1].push(two);
            rates[slot][2].push(two / around);
            if let Some(rate) = other_rate {
                spread.push(rate);
                spread_ratios.push(rate / around);
            }
            if let Some(rate) = doubled_rate {
                doubled.push(rate);
                doubled_ratios.push(rate / around);
            }
        }
        devices_round(round, settings, &mut devices, &mut devices_cpu).await?;
    }
    let [[one, two, ratio], [one_four, two_four, ratio_four]] =
        rates.each_mut().map(|r| r.each_mut().map(|v| median(v)));
    let (spread, spread_ratio) = (median(&mut spread), median(&mut spread_ratios));
    let (doubled, doubled_ratio) = (median(&mut doubled), median(&mut doubled_ratios));
    let [cpu_ratio, cpu_ratio_four] = cpu_ratios.each_mut().map(|r| median(r));
    println!(
        "PostgreSQL POST median, 1 writer per node: one node {one:.0}/s, two nodes {two:.0}/s (ratio {ratio:.2}), \
         two nodes on a Datastream each {spread:.0}/s (ratio {spread_ratio:.2}), \
         two nodes with c={c} each {doubled:.0}/s (ratio {doubled_ratio:.2}); \
         4 writers per node: one node {one_four:.0}/s, two nodes {two_four:.0}/s (ratio {ratio_four:.2}) \
         [ratios: median over rounds of two nodes / mean of one node before and after]; \
         CPU a POST, two nodes / one node: {cpu_ratio:.2} with 1 writer per node, {cpu_ratio_four:.2} with 4"
    );
    devices_summary(settings.writers, &mut devices, &mut devices_cpu);
    Ok(())
}

/// `pg-post-devices`: only the Datastream-per-client part of `pg-post`.
pub async fn post_devices_workload(settings: &Settings) -> anyhow::Result<()> {
    let (mut devices, mut devices_cpu) = (Default::default(), Vec::new());
    for round in 0..settings.rounds {
        devices_round(round, settings, &mut devices, &mut devices_cpu).await?;
    }
    devices_summary(settings.writers, &mut devices, &mut devices_cpu);
    Ok(())
}

fn devices_summary(writers: usize, devices: &mut [Vec<f64>; 3], devices_cpu: &mut [f64]) {
    let [devices_one, devices_two, devices_ratio] = devices.each_mut().map(|v| median(v));
    let devices_cpu = median(devices_cpu);
    println!(
        "PostgreSQL POST median, a Datastream per client, {writers} writer(s) per node: one node {devices_one:.0}/s, \
         two nodes {devices_two:.0}/s (ratio {devices_ratio:.2}, CPU a POST {devices_cpu:.2})"
    );
}

/// Each client a Thing of its own with its Datastream (a sensor each): one node before and
/// after two nodes that take half the clients each; into `devices` (one node's rates, two
/// nodes' rates, ratios) and `devices_cpu` (ratios of CPU a POST).
async fn devices_round(
    round: usize,
    settings: &Settings,
    devices: &mut [Vec<f64>; 3],
    devices_cpu: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let c = settings.concurrency.max(2);
    // Devices: each client a Thing of its own with its Datastream (a sensor each), one node
    // before and after two nodes that take half the clients each.
    let url = database(&format!("bench_post_{round}_devices"))?;
    let (first, addr, _dir) = node_with(&url, 100, settings.writers).await?;
    let mut own = Vec::with_capacity(c);
    for _ in 0..c {
        own.push(create_datastreams(addr, 1).await?[0]);
    }
    let one = |(rate, cpu): (f64, PerRequest), when: &str| {
        println!(
            "round {round}: POST on PostgreSQL, one node, a Datastream per client, {} writer(s), c={c}, {when}: {rate:.0}/s, {cpu}",
            settings.writers
        );
        (rate, cpu)
    };
    let (before, cpu_before) = one(post_load(&[(addr, &own)], c, settings).await?, "before");
    let (second, second_addr, _second_dir) = node_with(&url, 100, settings.writers).await?;
    let (first_half, second_half) = own.split_at(c / 2);
    let (two, cpu_two) = post_load(&[(addr, first_half), (second_addr, second_half)], c / 2, settings).await?;
    println!(
        "round {round}: POST on PostgreSQL, two nodes, a Datastream per client, c={c} in all: {two:.0}/s, {cpu_two}"
    );
    second.stop().await;
    let (after, cpu_after) = one(post_load(&[(addr, &own)], c, settings).await?, "after");
    first.stop().await;
    let around = (before + after) / 2.0;
    let cpu_ratio = cpu_two.total() / ((cpu_before.total() + cpu_after.total()) / 2.0);
    println!(
        "round {round}: a Datastream per client: two nodes / one node {:.2} in POSTs a second, {cpu_ratio:.2} in CPU a POST",
        two / around
    );
    devices[0].extend([before, after]);
    devices[1].push(two);
    devices[2].push(two / around);
    devices_cpu.push(cpu_ratio);
    Ok(())
}

pub async fn query_workload(settings: &Settings) -> anyhow::Result<()> {
    const DATASTREAMS: usize = 1000;
    const DAY: u64 = 86_400;
    let total = settings.observations.max(DAY + DATASTREAMS as u64);
    let url = database("bench_query")?;
    let (server, addr, _dir) = node(&url, 100_000).await?;
    let ids = create_datastreams(addr, DATASTREAMS).await?;
    let (bodies, loaded) = query_blocks(&ids, total);
    let seconds = ingest(addr, bodies, |(id, start, rows)| data_array_body(id, start, rows), 2).await?;
    println!(
        "loaded {loaded} Observations over {DATASTREAMS} Datastreams through dataArray in {seconds:.1} s ({:.0} obs/s)",
        loaded as f64 / seconds
    );
    // The sync client runs a runtime of its own: not on this one's threads.
    let vacuum_url = url.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut client = postgres::Client::connect(&vacuum_url, postgres::NoTls)?;
        client.batch_execute("VACUUM ANALYZE observations")?;
        Ok(())
    })
    .await??;
    let mut connection = crate::client::Connection::open(addr).await?;
    let latest: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "/v1.1/Datastreams({})/Observations?$orderby=phenomenonTime%20desc&$top=100",
                ids[1 + (i * 7919) % (DATASTREAMS - 1)]
            )
        })
        .collect();
    let (p50, p99) = timed_gets(&mut connection, &latest, |status, body| {
        ensure!(status == 200 && body.len() > 1000, "latest 100: {status}");
        Ok(())
    })
    .await?;
    println!("latest 100 of one Datastream: p50 {p50:.2} ms, p99 {p99:.2} ms (target p99 <= 5 ms)");
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
    println!("one-day window, 86,400 rows: p50 {p50:.1} ms, p99 {p99:.1} ms (target <= 150 ms)");
    server.stop().await;
    let bytes: i64 = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        let row = client.query_one("SELECT CAST(pg_database_size(current_database()) AS bigint)", &[])?;
        row.try_get(0).context("database size")
    })
    .await??;
    println!("database: {} MB, {:.1} bytes per Observation", bytes / 1_000_000, bytes as f64 / loaded as f64);
    Ok(())
}
