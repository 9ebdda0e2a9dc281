//! The cost of access control on the hot paths: single-Observation POST and QoS 1 MQTT ingest,
//! each run against a server with `--auth off` and one with `--auth required` in the same
//! invocation, alternating per round. Besides the rates it reports the server's CPU time per
//! request (from `/proc`), which the other tenants of a shared machine disturb less. With
//! access control on, the load comes from a contributor of the default project (a restricted
//! principal, so every statement carries the visibility condition and every insert is
//! authorized), with an API token.

use std::net::SocketAddr;

use anyhow::{Context, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::Settings;
use crate::client::{Connection, load_as};
use crate::mqtt::{ingest_run, start_thingbase_as};
use crate::workloads::{create_datastreams_as, median};

const ADMIN: &str = "tbt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A contributor of the default project and its token, made with the admin token.
async fn contributor(http: SocketAddr) -> anyhow::Result<String> {
    let mut admin = Connection::open(http).await?.with_token(Some(ADMIN));
    let (status, body) =
        admin.send("POST", "/admin/users", Bytes::from(json!({"name": "station"}).to_string()), false).await?;
    ensure!(status == 201, "creating the user: {status}");
    let user = serde_json::from_slice::<Value>(&body)?["id"].as_i64().context("a user id")?;
    let role = Bytes::from(json!({"role": "contributor"}).to_string());
    let (status, _) = admin.send("PUT", &format!("/admin/users/{user}/roles/1"), role, false).await?;
    ensure!(status == 204, "giving the role: {status}");
    let request = Bytes::from(json!({"label": "bench", "user": user}).to_string());
    let (status, body) = admin.send("POST", "/admin/tokens", request, false).await?;
    ensure!(status == 201, "making the token: {status}");
    Ok(serde_json::from_slice::<Value>(&body)?["token"].as_str().context("a token")?.to_owned())
}

async fn post_run(
    http: SocketAddr,
    token: Option<String>,
    datastream: i64,
    settings: &Settings,
) -> anyhow::Result<f64> {
    let path = format!("/v1.1/Datastreams({datastream})/Observations");
    let stats = load_as(http, token, settings.concurrency, settings.seconds, 201, move |_, n| {
        ("POST", path.clone(), Bytes::from(format!("{{\"result\":{n}}}")), false)
    })
    .await?;
    ensure!(stats.failures == 0, "{} POSTs failed", stats.failures);
    Ok(stats.per_second)
}

pub async fn access(settings: &Settings) -> anyhow::Result<()> {
    println!(
        "access control off vs required: POST at concurrency {}, MQTT QoS 1 ingest from {} clients, {} s each",
        settings.concurrency, settings.clients, settings.seconds
    );
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut cpu: [Vec<f64>; 6] = Default::default();
    for round in 0..settings.rounds {
        for (slot, admin) in [(0, None), (1, Some(ADMIN))] {
            let server = start_thingbase_as("access", admin).await?;
            let http = server.http.context("Thingbase has HTTP")?;
            let token = match admin {
                Some(_) => Some(contributor(http).await?),
                None => None,
            };
            let datastreams = create_datastreams_as(http, admin, settings.clients).await?;
            let cpu_before = server.cpu_seconds();
            let post = post_run(http, token.clone(), datastreams[0], settings).await?;
            let post_us = (server.cpu_seconds() - cpu_before) * 1e6 / (post * settings.seconds).max(1.0);
            let topics: Vec<String> =
                datastreams.iter().map(|id| format!("v1.1/Datastreams({id})/Observations")).collect();
            let (cpu_before, writer_before) = (server.cpu_seconds(), server.thread_cpu_seconds("sqlite-writer"));
            let ingest = ingest_run(server.mqtt, token.as_deref(), &topics, 64, settings.seconds).await?;
            let messages = ingest.acknowledged.max(1) as f64;
            let cpu_us = (server.cpu_seconds() - cpu_before) * 1e6 / messages;
            let writer_us = (server.thread_cpu_seconds("sqlite-writer") - writer_before) * 1e6 / messages;
            let label = if admin.is_some() { "required" } else { "off" };
            println!(
                "  round {round} auth {label:<8} POST {post:>8.0}/s ({post_us:.1} µs)   MQTT ingest {:>8.0}/s (p99 {:.1} ms, {cpu_us:.1} µs, writer {writer_us:.1} µs)",
                ingest.per_second, ingest.p99_ms
            );
            rates[slot].push(post);
            rates[slot + 2].push(ingest.per_second);
            cpu[slot].push(post_us);
            cpu[slot + 2].push(cpu_us);
            cpu[slot + 4].push(writer_us);
        }
    }
    let [off_post, on_post, off_mqtt, on_mqtt] = rates.each_mut().map(|r| median(r));
    println!(
        "access control, median: POST {on_post:.0}/s on vs {off_post:.0}/s off (ratio {:.2}); MQTT ingest {on_mqtt:.0}/s on vs {off_mqtt:.0}/s off (ratio {:.2})",
        on_post / off_post,
        on_mqtt / off_mqtt
    );
    let [off_post, on_post, off_mqtt, on_mqtt, off_writer, on_writer] = cpu.each_mut().map(|c| median(c));
    println!(
        "server CPU per request, median: POST {on_post:.1} µs on vs {off_post:.1} µs off (ratio {:.2}); MQTT message {on_mqtt:.1} µs on vs {off_mqtt:.1} µs off (ratio {:.2})",
        on_post / off_post,
        on_mqtt / off_mqtt
    );
    println!(
        "writer thread CPU per MQTT message, median: {on_writer:.1} µs on vs {off_writer:.1} µs off (ratio {:.2})",
        on_writer / off_writer
    );
    Ok(())
}
