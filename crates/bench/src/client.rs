//! A lean load generator: one HTTP/1.1 keep-alive connection per worker, requests sent back to
//! back, latencies recorded per request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// The `Authorization` header every request carries, if any.
    authorization: Option<String>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection { sender, authorization: None })
    }

    /// The same connection, sending `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<&str>) -> Connection {
        self.authorization = token.map(|t| format!("Bearer {t}"));
        self
    }

    /// Sends one request and returns the status and body.
    pub async fn send(&mut self, method: &str, path: &str, body: Bytes, minimal: bool) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench")
            .header("content-type", "application/json");
        if minimal {
            request = request.header("prefer", "return=minimal");
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization.as_str());
        }
        let response = self.sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// What a load run measured.
#[derive(Clone, Debug)]
pub struct Stats {
    pub requests: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failures: u64,
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs `concurrency` workers for `seconds`, each sending `make(worker, n)` requests and
/// expecting `expect` as the status.
pub async fn load<F>(addr: SocketAddr, concurrency: usize, seconds: f64, expect: u16, make: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, u64) -> (&'static str, String, Bytes, bool) + Send + Sync + 'static,
{
    load_as(addr, None, concurrency, seconds, expect, make).await
}

/// [`load`] with every request carrying `token`.
pub async fn load_as<F>(
    addr: SocketAddr,
    token: Option<String>,
    concurrency: usize,
    seconds: f64,
    expect: u16,
    make: F,
) -> anyhow::Result<Stats>
where
    F: Fn(usize, u64) -> (&'static str, String, Bytes, bool) + Send + Sync + 'static,
{
    let make = std::sync::Arc::new(make);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let make = std::sync::Arc::clone(&make);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await?.with_token(token.as_deref());
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let (method, path, body, minimal) = make(worker, n);
                let sent = Instant::now();
                let (status, _) = connection.send(method, &path, body, minimal).await?;
                latencies.push(sent.elapsed());
                if status != expect {
                    failures += 1;
                }
                n += 1;
            }
            anyhow::Ok((latencies, failures))
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (mine, failed) = task.await??;
        latencies.extend(mine);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Stats {
        requests: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        failures,
    })
}
