//! The TLS listeners devices connect to: HTTPS (the whole HTTP API, EST enrollment included)
//! and MQTTS, both with the hub's own server certificate and client certificates verified
//! against the hub's CA and its CRL during the handshake. HTTPS accepts clients without a
//! certificate too (enrollment with a token, browsers, users with tokens); MQTTS requires one
//! unless the client signs in with a device secret or API token. The TLS configuration is
//! rebuilt whenever the CRL changes, so a revoked certificate fails its next handshake.
//!
//! Also the node's sealing key: 32 bytes that seal the CA's private key in the database,
//! from `THINGBASE_SEALING_KEY` (64 hex digits; every node of a database needs the same) or
//! the file `sealing.key` in the data directory, made on the first start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use app::devices::Trust;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::Service as _;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sealing key: given (hex), or the data directory's `sealing.key`, made when missing.
pub fn sealing_key(given: Option<&str>, data_dir: &Path) -> anyhow::Result<pki::SealingKey> {
    if let Some(text) = given {
        let bytes = hex_decode(text).context("THINGBASE_SEALING_KEY must be 64 hex digits")?;
        return pki::SealingKey::from_bytes(&bytes).context("THINGBASE_SEALING_KEY must be 64 hex digits");
    }
    let path = data_dir.join("sealing.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex_decode(&text).with_context(|| format!("{} must hold 64 hex digits", path.display()))?;
            pki::SealingKey::from_bytes(&bytes).with_context(|| format!("{} must hold 64 hex digits", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
            let key = pki::SealingKey::generate();
            write_private(&path, &hex_encode(&key.to_bytes()))?;
            tracing::info!(path = %path.display(), "made the sealing key of the CA; back it up with the database");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a new file only its owner can read; an existing one is an error (another process
/// was first, and its key is the one in use).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// A TLS configuration that follows the CRL: the current one for each new connection.
#[derive(Clone)]
struct LiveConfig {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl LiveConfig {
    fn new(
        trust: &Arc<Trust>,
        client_auth: pki::ClientAuth,
        alpn: &'static [&'static [u8]],
    ) -> anyhow::Result<LiveConfig> {
        let current = Arc::new(RwLock::new(trust.server_config(client_auth, alpn)?));
        let (trust, shared) = (Arc::clone(trust), Arc::clone(&current));
        let mut changes = trust.crl_changes();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                match trust.server_config(client_auth, alpn) {
                    Ok(config) => {
                        if let Ok(mut slot) = shared.write() {
                            *slot = config;
                        }
                    }
                    Err(error) => tracing::error!(%error, "cannot rebuild the TLS configuration after a CRL change"),
                }
            }
        });
        Ok(LiveConfig { current })
    }

    fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.current.read().ok().map(|config| tokio_rustls::TlsAcceptor::from(Arc::clone(&config)))
    }
}

/// What the handshake established about the client.
fn transport_of(connection: &rustls::ServerConnection) -> http_api::auth::Transport {
    let client_certificate =
        connection.peer_certificates().and_then(|chain| chain.first()).map(|leaf| Arc::new(leaf.as_ref().to_vec()));
    http_api::auth::Transport { tls: true, client_certificate }
}

/// Accepts TLS connections on `listener` until `stop`, each handshake bounded in time, and
/// hands each established stream to `serve`.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    config: LiveConfig,
    stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
    serve: F,
) where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr, http_api::auth::Transport) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut stopping = std::pin::pin!(stopped(stop));
    loop {
        tokio::select! {
            () = &mut stopping => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "{what}: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let Some(acceptor) = config.acceptor() else { continue };
                let serve = serve.clone();
                tasks.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let transport = transport_of(stream.get_ref().1);
                            serve(stream, peer, transport).await;
                        }
                        Ok(Err(error)) => tracing::info!(%peer, %error, "{what}: TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "{what}: TLS handshake timed out"),
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let drained =
        tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tasks.shutdown().await;
    }
}

/// Resolves once the server is told to stop.
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Serves the HTTP API over TLS on `listener`.
pub fn serve_https(
    listener: TcpListener,
    trust: &Arc<Trust>,
    router: axum::Router,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let config = LiveConfig::new(trust, pki::ClientAuth::Optional, &[b"http/1.1"])?;
    let connection_stop = stop.clone();
    Ok(tokio::spawn(accept_loop(listener, config, stop, "HTTPS", move |stream, peer, transport| {
        let router = router.clone();
        let stop = connection_stop.clone();
        async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(transport.clone());
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                let mut router = router.clone();
                async move { router.call(request.map(axum::body::Body::new)).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "HTTPS connection ended with an error");
                    }
                }
                () = stopped(stop) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        }
    })))
}

/// Serves MQTT over TLS on `listener`: the broker sees the client's certificate.
pub fn serve_mqtts<H: broker::Hooks>(
    listener: TcpListener,
    trust: &Arc<Trust>,
    broker: broker::Broker<H>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Optional at the TLS layer: a device with a secret or a user with a token connects
    // without a certificate and signs in with CONNECT's credentials; one with neither is
    // refused at CONNECT.
    let config = LiveConfig::new(trust, pki::ClientAuth::Optional, &[b"mqtt"])?;
    Ok(tokio::spawn(accept_loop(listener, config, stop, "MQTTS", move |stream, peer, transport| {
        let broker = broker.clone();
        async move {
            let transport =
                broker::TransportInfo { tls: transport.tls, client_certificate: transport.client_certificate };
            broker.serve_connection_with(stream, peer, transport).await;
        }
    })))
}

/// Refuses a profile file that cannot be read.
pub fn baseline_profile(path: Option<&Path>) -> anyhow::Result<app::gate::Profile> {
    let Some(path) = path else { return Ok(app::gate::Profile::default_profile()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let profile = app::gate::Profile::parse(&text)?;
    let relaxed = profile.relaxed();
    if !relaxed.is_empty() {
        tracing::warn!(?relaxed, "the baseline profile is less strict than the default for these provisions");
    }
    if profile.name.is_empty() {
        bail!("{}: the profile needs a name", path.display());
    }
    Ok(profile)
}
