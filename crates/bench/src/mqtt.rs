//! The MQTT workloads, each run against Thingbase and, with the same load generator in the same
//! invocation, against Mosquitto from Debian's packages. Both brokers run as child processes
//! (Thingbase as this binary's `serve-child` mode), so their memory can be read on its own and
//! neither shares an address space with the load generator.
//!
//! The load generator speaks MQTT 3.1.1 itself over raw sockets, with every packet it sends
//! encoded before the clock starts where it can be, so that it costs the two cores as little as
//! possible and the same for both brokers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::Settings;
use crate::workloads::{TempDir, create_datastreams, median};

/// A broker under test, in its own process.
pub(crate) struct BrokerProcess {
    name: &'static str,
    child: Child,
    pub(crate) mqtt: SocketAddr,
    /// Thingbase's HTTP API (for setting up Datastreams and counting what was stored).
    pub(crate) http: Option<SocketAddr>,
    _dir: TempDir,
}

impl BrokerProcess {
    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    }

    /// CPU time the process has used so far (user and system), in seconds: on a shared
    /// machine a steadier measure of the cost of a message than the rate is.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // `/proc` counts in USER_HZ, which Linux fixes at 100 for user space.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// CPU time the process's thread named `thread` has used so far, in seconds (0 if none is):
    /// the SQLite writer thread is where every write is serialised.
    pub(crate) fn thread_cpu_seconds(&self, thread: &str) -> f64 {
        let tasks = format!("/proc/{}/task", self.child.id());
        let Ok(entries) = std::fs::read_dir(&tasks) else { return 0.0 };
        for entry in entries.flatten() {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.trim() == thread {
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                return (ticks(11) + ticks(12)) / 100.0;
            }
        }
        0.0
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn start_thingbase(name: &str) -> anyhow::Result<BrokerProcess> {
    start_thingbase_as(name, None).await
}

/// A Thingbase child, with access control on when `admin_token` is given.
pub(crate) async fn start_thingbase_as(name: &str, admin_token: Option<&str>) -> anyhow::Result<BrokerProcess> {
    let dir = TempDir::new(name)?;
    let (http_port, mqtt_port) = (free_port()?, free_port()?);
    let mut args = vec![dir.0.display().to_string(), http_port.to_string(), mqtt_port.to_string()];
    args.extend(admin_token.map(str::to_owned));
    let child = Command::new(std::env::current_exe()?)
        .arg("serve-child")
        .args(&args)
        .stdout(Stdio::null())
        .spawn()
        .context("starting the Thingbase child process")?;
    let mqtt = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let process = BrokerProcess { name: "thingbase", child, mqtt, http: Some(http), _dir: dir };
    wait_listening(http).await?;
    wait_listening(mqtt).await?;
    Ok(process)
}

async fn start_mosquitto(name: &str) -> anyhow::Result<BrokerProcess> {
    let dir = TempDir::new(name)?;
    let port = free_port()?;
    let config = dir.0.join("mosquitto.conf");
    // Memory only, like Thingbase's own broker; the same queue length per session.
    std::fs::write(
        &config,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000\n"),
    )?;
    let binary = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mosquitto (apt-get install mosquitto)")?;
    let mqtt = SocketAddr::from(([127, 0, 0, 1], port));
    let process = BrokerProcess { name: "mosquitto", child, mqtt, http: None, _dir: dir };
    wait_listening(mqtt).await?;
    Ok(process)
}

/// The serve-child mode: a Thingbase server in this process until it is killed.
pub fn serve_child(args: &[String]) -> anyhow::Result<()> {
    let (dir, http_port, mqtt_port, admin_token) = match args {
        [dir, http, mqtt] => (dir, http, mqtt, None),
        [dir, http, mqtt, token] => (dir, http, mqtt, Some(token.clone())),
        _ => bail!("serve-child <dir> <http port> <mqtt port> [admin token]"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = thingbase::Config {
            https_port: None,
            mqtts_port: None,
            data_dir: dir.into(),
            http_port: http_port.parse()?,
            mqtt_port: mqtt_port.parse()?,
            mqtt_limits: broker::BrokerConfig { max_connections: 20_000, ..Default::default() },
            auth: match admin_token {
                Some(token) => thingbase::Auth::Required { admin_token: Some(token) },
                None => thingbase::Auth::Off,
            },
            ..Default::default()
        };
        let _server = thingbase::start(config, None).await?;
        std::future::pending::<()>().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// A minimal MQTT 3.1.1 client.

fn put_remaining_length(out: &mut Vec<u8>, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            return;
        }
    }
}

fn put_string(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
}

fn connect_packet(client_id: &str, keep_alive: u16, token: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, b"MQTT");
    body.push(4);
    // Clean session, and a user name and password when signing in with a token.
    body.push(if token.is_some() { 0xc2 } else { 0x02 });
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_string(&mut body, client_id.as_bytes());
    if let Some(token) = token {
        put_string(&mut body, b"token");
        put_string(&mut body, token.as_bytes());
    }
    let mut packet = vec![0x10];
    put_remaining_length(&mut packet, body.len());
    packet.extend(body);
    packet
}

fn put_publish(out: &mut Vec<u8>, topic: &[u8], payload: &[u8], packet_id: Option<u16>) {
    out.push(if packet_id.is_some() { 0x32 } else { 0x30 });
    put_remaining_length(out, 2 + topic.len() + packet_id.map_or(0, |_| 2) + payload.len());
    put_string(out, topic);
    if let Some(id) = packet_id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

fn subscribe_packet(filter: &str, qos: u8) -> Vec<u8> {
    let mut body = vec![0, 1];
    put_string(&mut body, filter.as_bytes());
    body.push(qos);
    let mut packet = vec![0x82];
    put_remaining_length(&mut packet, body.len());
    packet.extend(body);
    packet
}

/// Reads whole packets from a socket.
struct PacketReader {
    stream: OwnedReadHalf,
    buffer: Vec<u8>,
    start: usize,
}

impl PacketReader {
    fn new(stream: OwnedReadHalf) -> Self {
        Self { stream, buffer: Vec::with_capacity(64 * 1024), start: 0 }
    }

    /// The next packet's first byte and body; `None` at the end of the stream.
    async fn next(&mut self) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some((header, length, offset)) = self.header() {
                let end = self.start + offset + length;
                if self.buffer.len() >= end {
                    let body = self.buffer[self.start + offset..end].to_vec();
                    self.start = end;
                    return Ok(Some((header, body)));
                }
            }
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0; 16 * 1024];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok(None);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// The fixed header at `start`: first byte, remaining length, header length.
    fn header(&self) -> Option<(u8, usize, usize)> {
        let bytes = self.buffer.get(self.start..)?;
        let first = *bytes.first()?;
        let mut length = 0_usize;
        for (i, byte) in bytes.iter().skip(1).take(4).enumerate() {
            length |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some((first, length, i + 2));
            }
        }
        None
    }
}

async fn connect(addr: SocketAddr, client_id: &str, keep_alive: u16) -> anyhow::Result<(PacketReader, OwnedWriteHalf)> {
    connect_as(addr, client_id, keep_alive, None).await
}

async fn connect_as(
    addr: SocketAddr,
    client_id: &str,
    keep_alive: u16,
    token: Option<&str>,
) -> anyhow::Result<(PacketReader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    write.write_all(&connect_packet(client_id, keep_alive, token)).await?;
    let mut reader = PacketReader::new(read);
    match reader.next().await? {
        Some((0x20, body)) if body.get(1) == Some(&0) => Ok((reader, write)),
        other => bail!("CONNECT refused: {other:?}"),
    }
}

async fn subscribe(
    reader: &mut PacketReader,
    writer: &mut OwnedWriteHalf,
    filter: &str,
    qos: u8,
) -> anyhow::Result<()> {
    writer.write_all(&subscribe_packet(filter, qos)).await?;
    loop {
        match reader.next().await? {
            Some((0x90, _)) => return Ok(()),
            Some(_) => {}
            None => bail!("no SUBACK"),
        }
    }
}

/// The topic and payload of a PUBLISH body.
fn publish_parts(header: u8, body: &[u8]) -> Option<(&[u8], &[u8])> {
    let length = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + length)?;
    let skip = if header & 0x06 != 0 { 2 } else { 0 };
    Some((topic, body.get(2 + length + skip..)?))
}

// ---------------------------------------------------------------------------------------------
// Workloads.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The SensorThings topics the ingest clients publish to: one Datastream per client on
/// Thingbase; the same topic names on Mosquitto.
async fn ingest_topics(broker: &BrokerProcess, clients: usize) -> anyhow::Result<Vec<String>> {
    let ids: Vec<i64> = match broker.http {
        Some(http) => create_datastreams(http, clients).await?,
        None => (1..=clients as i64).collect(),
    };
    Ok(ids.iter().map(|id| format!("v1.1/Datastreams({id})/Observations")).collect())
}

pub(crate) struct IngestResult {
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) acknowledged: u64,
}

/// `clients` connections, each keeping `window` QoS 1 publishes in flight to its topic, for
/// `seconds`; counts PUBACKs and times each from its publish.
pub(crate) async fn ingest_run(
    addr: SocketAddr,
    token: Option<&str>,
    topics: &[String],
    window: u16,
    seconds: f64,
) -> anyhow::Result<IngestResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (c, topic) in topics.iter().enumerate() {
        let (mut reader, mut writer) = connect_as(addr, &format!("ingest-{c}"), 60, token).await?;
        let topic = topic.clone().into_bytes();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent_at = vec![Instant::now(); 65_536];
            let mut latencies = Vec::new();
            let mut next_id: u16 = 1;
            let mut value = 0_u64;
            let mut out = Vec::with_capacity(64 * 1024);
            let mut publish = |out: &mut Vec<u8>, sent_at: &mut Vec<Instant>, next_id: &mut u16| {
                value += 1;
                let payload = format!("{{\"result\":{}}}", value % 1000);
                put_publish(out, &topic, payload.as_bytes(), Some(*next_id));
                sent_at[usize::from(*next_id)] = Instant::now();
                *next_id = if *next_id == u16::MAX { 1 } else { *next_id + 1 };
            };
            for _ in 0..window {
                publish(&mut out, &mut sent_at, &mut next_id);
            }
            writer.write_all(&out).await?;
            out.clear();
            let mut acknowledged = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let Some((header, body)) = reader.next().await? else { bail!("the broker closed the connection") };
                if header != 0x40 || body.len() < 2 {
                    continue;
                }
                let id = u16::from_be_bytes([body[0], body[1]]);
                latencies.push(sent_at[usize::from(id)].elapsed().as_secs_f64() * 1000.0);
                acknowledged += 1;
                publish(&mut out, &mut sent_at, &mut next_id);
                // Send the replacement at once: batching here would shrink the window.
                writer.write_all(&out).await?;
                out.clear();
            }
            anyhow::Ok((acknowledged, latencies))
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut acknowledged = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (count, mut times) = task.await??;
        acknowledged += count;
        latencies.append(&mut times);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(IngestResult {
        per_second: acknowledged as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        acknowledged,
    })
}

async fn stored_observations(http: SocketAddr) -> anyhow::Result<u64> {
    let mut connection = crate::client::Connection::open(http).await?;
    let (_, body) = connection.send("GET", "/v1.1/Observations?$count=true&$top=0", bytes::Bytes::new(), false).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)?;
    value["@iot.count"].as_u64().context("a count")
}

pub async fn ingest(settings: &Settings) -> anyhow::Result<()> {
    let clients = settings.clients;
    println!("QoS 1 ingest: {clients} clients, 64 publishes in flight each, {} s per round", settings.seconds);
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        for (slot, broker) in
            [start_thingbase("mqtt-ingest").await?, start_mosquitto("mqtt-ingest").await?].into_iter().enumerate()
        {
            let topics = ingest_topics(&broker, clients).await?;
            let result = ingest_run(broker.mqtt, None, &topics, 64, settings.seconds).await?;
            let stored = match broker.http {
                Some(http) => format!(", {} stored", stored_observations(http).await?),
                None => String::new(),
            };
            println!(
                "  round {round} {:<10} {:>9.0} PUBACKs/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} acknowledged{stored}; RSS {:.0} MB)",
                broker.name,
                result.per_second,
                result.p50_ms,
                result.p99_ms,
                result.acknowledged,
                broker.rss_mb()
            );
            rates[slot].push(result.per_second);
        }
    }
    let (thingbase, mosquitto) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "QoS 1 ingest, median: Thingbase {thingbase:.0} Observations/s persisted before PUBACK; Mosquitto {mosquitto:.0} messages/s in memory; ratio {:.2}",
        thingbase / mosquitto
    );
    Ok(())
}

/// `pairs` publishers flooding QoS 0 messages to their own topic and `pairs` subscribers, one
/// per topic; returns the messages the subscribers received per second.
async fn pubsub_run(addr: SocketAddr, pairs: usize, seconds: f64) -> anyhow::Result<f64> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut subscribers = Vec::new();
    for p in 0..pairs {
        let (mut reader, mut writer) = connect(addr, &format!("sub-{p}"), 60).await?;
        subscribe(&mut reader, &mut writer, &format!("bench/{p}"), 0).await?;
        let received = received.clone();
        subscribers.push(tokio::spawn(async move {
            let _writer = writer;
            while let Ok(Some((header, _))) = reader.next().await {
                if header & 0xf0 == 0x30 {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..pairs {
        let (_reader, mut writer) = connect(addr, &format!("pub-{p}"), 60).await?;
        let stop = stop.clone();
        let mut batch = Vec::new();
        for _ in 0..100 {
            put_publish(&mut batch, format!("bench/{p}").as_bytes(), &[b'x'; 64], None);
        }
        publishers.push(tokio::spawn(async move {
            let _reader = _reader;
            while !stop.load(Ordering::Relaxed) {
                if writer.write_all(&batch).await.is_err() {
                    return;
                }
            }
        }));
    }
    // A second to reach a steady state, then the measurement.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let rate = (received.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in publishers.into_iter().chain(subscribers) {
        task.abort();
    }
    Ok(rate)
}

pub async fn pubsub(settings: &Settings) -> anyhow::Result<()> {
    let pairs = settings.clients / 2;
    println!("QoS 0 pub/sub: {pairs} publishers flooding 64-byte messages, {pairs} subscribers, one topic each");
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        for (slot, broker) in
            [start_thingbase("mqtt-pubsub").await?, start_mosquitto("mqtt-pubsub").await?].into_iter().enumerate()
        {
            let rate = pubsub_run(broker.mqtt, pairs, settings.seconds).await?;
            println!(
                "  round {round} {:<10} {rate:>10.0} messages/s delivered (RSS {:.0} MB)",
                broker.name,
                broker.rss_mb()
            );
            rates[slot].push(rate);
        }
    }
    let (thingbase, mosquitto) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "QoS 0 pub/sub, median: Thingbase {thingbase:.0}/s, Mosquitto {mosquitto:.0}/s, ratio {:.2}",
        thingbase / mosquitto
    );
    Ok(())
}

/// Publishes QoS 1 at `rate` per second to `topic` for `seconds`, each payload carrying its send
/// time; a subscriber to `topic` times what arrives. Returns sorted latencies in ms and the
/// number sent.
async fn latency_run(addr: SocketAddr, topic: &str, rate: u64, seconds: f64) -> anyhow::Result<(Vec<f64>, u64)> {
    let origin = Instant::now();
    let (mut reader, mut writer) = connect(addr, "latency-subscriber", 60).await?;
    subscribe(&mut reader, &mut writer, topic, 0).await?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let subscriber = tokio::spawn(async move {
        let _writer = writer;
        let mut latencies = Vec::new();
        loop {
            let packet = tokio::select! {
                packet = reader.next() => packet,
                _ = &mut stopped => break,
            };
            let Ok(Some((header, body))) = packet else { break };
            let Some((_, payload)) = publish_parts(header, &body) else { continue };
            let text = String::from_utf8_lossy(payload);
            let sent = text
                .split("\"result\":")
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|number| number.trim().parse::<f64>().ok());
            if let Some(sent) = sent {
                latencies.push(origin.elapsed().as_secs_f64() * 1000.0 - sent / 1000.0);
            }
        }
        latencies
    });
    let (mut ack_reader, mut publisher) = connect(addr, "latency-publisher", 60).await?;
    let acks = tokio::spawn(async move { while let Ok(Some(_)) = ack_reader.next().await {} });
    // Every millisecond, the messages due by then.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0_u64;
    let mut next_id: u16 = 1;
    let mut out = Vec::new();
    let total = (rate as f64 * seconds) as u64;
    while sent < total {
        tick.tick().await;
        let due = ((origin.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            let micros = origin.elapsed().as_micros();
            put_publish(&mut out, topic.as_bytes(), format!("{{\"result\":{micros}}}").as_bytes(), Some(next_id));
            next_id = if next_id == u16::MAX { 1 } else { next_id + 1 };
            sent += 1;
        }
        publisher.write_all(&out).await?;
        out.clear();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    acks.abort();
    drop(publisher);
    let _ = stop.send(());
    let mut latencies = subscriber.await?;
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, sent))
}

pub async fn latency(settings: &Settings) -> anyhow::Result<()> {
    let rate = 10_000;
    println!("publish-to-subscriber latency at {rate} QoS 1 publishes/s, {} s per round", settings.seconds);
    let mut p99s: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..settings.rounds {
        for (slot, broker) in
            [start_thingbase("mqtt-latency").await?, start_mosquitto("mqtt-latency").await?].into_iter().enumerate()
        {
            let topic = ingest_topics(&broker, 1).await?.remove(0);
            let (latencies, sent) = latency_run(broker.mqtt, &topic, rate, settings.seconds).await?;
            println!(
                "  round {round} {:<10} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} of {sent} received)",
                broker.name,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies.last().copied().unwrap_or(0.0),
                latencies.len()
            );
            p99s[slot].push(percentile(&latencies, 0.99));
        }
    }
    let (thingbase, mosquitto) = (median(&mut p99s[0]), median(&mut p99s[1]));
    println!(
        "latency p99, median: Thingbase {thingbase:.2} ms (create, commit, notification on v1.1/Datastreams(id)/Observations); Mosquitto {mosquitto:.2} ms (plain pub/sub)"
    );
    Ok(())
}

pub async fn idle(settings: &Settings) -> anyhow::Result<()> {
    let connections = settings.connections;
    println!("{connections} idle connections (keep-alive 10 min)");
    for broker in [start_thingbase("mqtt-idle").await?, start_mosquitto("mqtt-idle").await?] {
        let before = broker.rss_mb();
        let mut held = Vec::with_capacity(connections);
        for c in 0..connections {
            held.push(connect(broker.mqtt, &format!("idle-{c}"), 600).await?);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = broker.rss_mb();
        println!(
            "  {:<10} RSS {before:.0} MB before, {after:.0} MB with {connections} connections ({:.1} KB each)",
            broker.name,
            (after - before) * 1024.0 / connections as f64
        );
        drop(held);
    }
    Ok(())
}
