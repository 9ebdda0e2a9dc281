//! Trusted devices: mutual-TLS handshakes per second and EST enrollments per second against the
//! real HTTPS listener, each beside a baseline in the same run:
//!
//! - `tls-handshake`: full handshakes (no session resumption) with a device certificate, then
//!   close, from `--concurrency` tasks; beside the same handshakes without a client
//!   certificate (server authentication only) on the same listener.
//! - `enroll`: `simpleenroll` with a fresh token and a CSR made beforehand, one new TLS
//!   connection per enrollment; beside `GET /pki/ca.pem` over a new TLS connection each.
//!
//! The server runs in this process (SQLite, access control on); client keys and CSRs are made
//! before the clock starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Settings;
use crate::workloads::median;

const ADMIN: &str = "tbt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Hub {
    server: thingbase::Server,
    _dir: TempDir,
    ca: rustls::pki_types::CertificateDer<'static>,
    class: i64,
    thing: i64,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn admin(http: SocketAddr, method: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let mut connection = crate::client::Connection::open(http).await?.with_token(Some(ADMIN));
    let (status, bytes) = connection.send(method, path, bytes::Bytes::from(body.to_string()), false).await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

async fn start() -> anyhow::Result<Hub> {
    let dir = TempDir(std::env::temp_dir().join(format!("thingbase-bench-devices-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let config = thingbase::Config {
        data_dir: dir.0.clone(),
        http_port: 0,
        mqtt_port: 0,
        https_port: Some(0),
        mqtts_port: None,
        auth: thingbase::Auth::Required { admin_token: Some(ADMIN.into()) },
        unauthenticated_rate: 0.0,
        ..Default::default()
    };
    let server = thingbase::start(config, None).await?;
    let http = server.http_addrs[0];
    let (status, pem) = {
        let mut connection = crate::client::Connection::open(http).await?;
        connection.send("GET", "/pki/ca.pem", bytes::Bytes::new(), false).await?
    };
    ensure!(status == 200, "the CA: {status}");
    let ca = rustls::pki_types::CertificateDer::from(pem_der(&String::from_utf8_lossy(&pem))?);
    let class = json!({
        "manufacturer": "Bench", "model": "B-1", "supportUntil": "2040-01-01T00:00:00Z",
        "vulnerabilityContact": "https://bench.example/security", "sensing": ["http://example.org/t"],
        "updateMechanism": "suit", "firmware": [{"version": "1", "digest": format!("sha256:{}", "0".repeat(64))}],
    });
    let (status, class) = admin(http, "POST", "/admin/device-classes", class).await?;
    ensure!(status == 201, "the class: {status}");
    let thing = json!({"name": "t", "description": "d"});
    let (status, thing) = admin(http, "POST", "/v1.1/Things", thing).await?;
    ensure!(status == 201, "the Thing: {status}");
    Ok(Hub {
        server,
        _dir: dir,
        ca,
        class: class["id"].as_i64().context("class id")?,
        thing: thing["@iot.id"].as_i64().context("thing id")?,
    })
}

fn pem_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    pki::pem_certificates(pem)?.into_iter().next().context("a PEM certificate")
}

/// Registers `count` devices (from `first`) and returns their URNs and enrollment tokens.
async fn register(hub: &Hub, first: usize, count: usize) -> anyhow::Result<Vec<(String, String)>> {
    let http = hub.server.http_addrs[0];
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = count.div_ceil(16);
    for chunk in 0..16 {
        let (class, thing) = (hub.class, hub.thing);
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in (first + chunk * per_task)..(first + ((chunk + 1) * per_task).min(count)) {
                let urn = format!("urn:dev:os:32473-bench{i:08}");
                let body = json!({"urn": urn, "class": class, "thing": thing});
                let (status, answer) = admin(http, "POST", "/admin/devices", body).await?;
                ensure!(status == 201, "registering {urn}: {status} {answer}");
                out.push((urn, answer["enrollmentToken"].as_str().context("a token")?.to_owned()));
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// A PEM CSR for `urn` with a fresh P-256 key, and the key (PKCS#8 DER).
fn csr(urn: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![rcgen::SanType::URI(urn.try_into()?)];
    Ok((params.serialize_request(&key)?.pem()?, key.serialize_der()))
}

fn client_config(
    ca: &rustls::pki_types::CertificateDer<'static>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from(cert)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )?,
        None => builder.with_no_client_auth(),
    };
    // Every handshake a full one.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// One TLS connection to `addr`: the handshake, then `request` if given (its status back).
async fn tls_once(addr: SocketAddr, config: Arc<rustls::ClientConfig>, request: Option<&[u8]>) -> anyhow::Result<u16> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    let Some(request) = request else {
        // The server verifies the client's certificate in the handshake's last flight; a
        // request's answer proves it was accepted. The smallest is a 404.
        stream.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        return Ok(status_of(&answer));
    };
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    Ok(status_of(&answer))
}

fn status_of(answer: &[u8]) -> u16 {
    String::from_utf8_lossy(answer).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Runs `work(i)` from `concurrency` tasks for `seconds`: successes per second and failures.
async fn drive<F, Fut>(concurrency: usize, seconds: f64, limit: u64, work: F) -> (f64, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let work = Arc::new(work);
    let (next, done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (work, next, done, failed) = (work.clone(), next.clone(), done.clone(), failed.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                if work(i).await {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    (done.load(Ordering::Relaxed) as f64 / elapsed, failed.load(Ordering::Relaxed))
}

pub async fn tls_handshake(settings: &Settings) -> anyhow::Result<()> {
    let hub = start().await?;
    let https = hub.server.https_addrs[0];
    // One enrolled device whose certificate every handshake presents.
    let (urn, token) = register(&hub, 0, 1).await?.pop().context("a device")?;
    let (request, key) = csr(&urn)?;
    let enroll = format!(
        "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/pem-certificate-chain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{request}",
        request.len()
    );
    let answer = {
        let tcp = tokio::net::TcpStream::connect(https).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut stream = tokio_rustls::TlsConnector::from(client_config(&hub.ca, None)?).connect(name, tcp).await?;
        stream.write_all(enroll.as_bytes()).await?;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    ensure!(status_of(answer.as_bytes()) == 200, "enrolling: {answer}");
    let pem = answer.split_once("\r\n\r\n").map(|(_, b)| b).context("a body")?;
    let mutual = client_config(&hub.ca, Some((pem_der(pem)?, key)))?;
    let plain = client_config(&hub.ca, None)?;
    println!(
        "TLS handshakes at concurrency {}, {} s per run, {} rounds",
        settings.concurrency, settings.seconds, settings.rounds
    );
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        for (label, config, out) in [("mutual TLS", &mutual, &mut with), ("server auth only", &plain, &mut without)] {
            let config = config.clone();
            let (rate, failed) = drive(settings.concurrency, settings.seconds, u64::MAX, move |_| {
                let config = config.clone();
                async move { tls_once(https, config, None).await.is_ok_and(|status| status == 404) }
            })
            .await;
            ensure!(failed == 0, "{failed} {label} handshakes failed");
            println!("round {round}: {label}: {rate:.0} handshakes/s");
            out.push(rate);
        }
    }
    let (with, without) = (median(&mut with), median(&mut without));
    println!("median: mutual TLS {with:.0}/s, server auth only {without:.0}/s, ratio {:.2}", with / without);
    hub.server.stop().await;
    Ok(())
}

pub async fn enroll(settings: &Settings) -> anyhow::Result<()> {
    let hub = start().await?;
    let https = hub.server.https_addrs[0];
    let plain = client_config(&hub.ca, None)?;
    // Enough tokens for a rate well above the target in every round.
    let per_round = ((settings.seconds * 1500.0) as usize).max(100);
    println!(
        "EST simpleenroll at concurrency {}, {} s per run, {} rounds ({per_round} devices registered per round)",
        settings.concurrency, settings.seconds, settings.rounds
    );
    let (mut enrollments, mut baseline) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds {
        let devices = register(&hub, round * per_round, per_round).await?;
        let requests: Vec<Vec<u8>> = devices
            .iter()
            .map(|(urn, token)| {
                let (request, _) = csr(urn)?;
                Ok(format!(
                    "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
                     Connection: close\r\nContent-Length: {}\r\n\r\n{request}",
                    request.len()
                )
                .into_bytes())
            })
            .collect::<anyhow::Result<_>>()?;
        let requests = Arc::new(requests);
        let config = plain.clone();
        let limit = requests.len() as u64;
        let (rate, failed) = drive(settings.concurrency, settings.seconds, limit, move |i| {
            let (config, requests) = (config.clone(), requests.clone());
            async move {
                let Some(request) = usize::try_from(i).ok().and_then(|i| requests.get(i)) else { return false };
                tls_once(https, config, Some(request)).await.is_ok_and(|status| status == 200)
            }
        })
        .await;
        ensure!(failed == 0, "{failed} enrollments failed");
        println!("round {round}: enrollments: {rate:.0}/s");
        enrollments.push(rate);
        let config = plain.clone();
        let (rate, failed) = drive(settings.concurrency, settings.seconds, u64::MAX, move |_| {
            let config = config.clone();
            async move {
                let request = b"GET /pki/ca.pem HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
                tls_once(https, config, Some(request)).await.is_ok_and(|status| status == 200)
            }
        })
        .await;
        ensure!(failed == 0, "{failed} baseline requests failed");
        println!("round {round}: GET /pki/ca.pem on a new TLS connection: {rate:.0}/s");
        baseline.push(rate);
    }
    let (enrollments, baseline) = (median(&mut enrollments), median(&mut baseline));
    println!(
        "median: enrollments {enrollments:.0}/s, new-connection HTTPS GETs {baseline:.0}/s, ratio {:.2}",
        enrollments / baseline
    );
    hub.server.stop().await;
    Ok(())
}
