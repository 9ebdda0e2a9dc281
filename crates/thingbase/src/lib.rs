//! The Thingbase server as a library: configuration, wiring of store, application and HTTP API,
//! listeners and graceful shutdown. `main.rs` is a thin CLI over [`run`]; tests and the bench
//! tool start servers in-process through [`start`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use store_sqlite::{Durability, SqliteOptions, SqliteStore};

pub mod backfill;
mod tls;
pub mod transfer;
mod websocket;

/// Everything `thingbase serve` can be told.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:port/db`) instead of the SQLite file under
    /// `data_dir`.
    pub database_url: Option<String>,
    /// Writer connections to PostgreSQL (0: the backend's default, two).
    pub database_writers: usize,
    /// Writer connections to PostgreSQL for large writes (`None`: the backend's default, two).
    pub database_large_writers: Option<usize>,
    /// Trust anchors for TLS to PostgreSQL (PEM); see [`Database::tls_ca`].
    pub database_ca: Option<PathBuf>,
    /// A client certificate and its key for TLS to PostgreSQL; see [`Database::tls_client`].
    pub database_client: Option<(PathBuf, PathBuf)>,
    pub bind: Vec<IpAddr>,
    pub http_port: u16,
    /// The MQTT port of the embedded broker (0 picks a free one).
    pub mqtt_port: u16,
    pub mqtt_limits: broker::BrokerConfig,
    pub mqtt: mqtt_api::MqttSettings,
    pub auth: Auth,
    /// Requests per second from one address without working credentials (0: unlimited).
    pub unauthenticated_rate: f64,
    /// Requests per second of one principal (0: unlimited).
    pub principal_rate: f64,
    pub default_top: u64,
    pub max_top: u64,
    pub max_body_bytes: usize,
    pub public_url: Option<String>,
    pub durability: Durability,
    pub readers: usize,
    /// The HTTPS port (mutual TLS for devices; EST enrollment); `None`: no HTTPS. Devices,
    /// their CA and both TLS listeners run only with access control on.
    pub https_port: Option<u16>,
    /// The MQTTS port; `None`: no MQTTS.
    pub mqtts_port: Option<u16>,
    /// The CoAPS (CoAP over DTLS, UDP) port; `None`: none. Served only by a build with the
    /// `coap` feature, with access control on.
    pub coaps_port: Option<u16>,
    /// DNS names and addresses of the hub's own TLS certificate (besides localhost).
    pub tls_names: Vec<String>,
    /// The key sealing the CA in the database (64 hex digits); else `sealing.key` in the data
    /// directory, made on the first start.
    pub sealing_key: Option<String>,
    /// The admission gate's baseline profile file; else the shipped default.
    pub baseline_profile: Option<PathBuf>,
    /// How long device certificates are valid.
    pub certificate_validity: std::time::Duration,
    /// How often retention policies are applied (docs/timeseries.md).
    pub retention_interval: std::time::Duration,
    /// What one read request may cost (time to a complete answer, entities in it).
    pub query_budget: app::Budget,
    /// Whether rollups are kept as Observations are written.
    pub rollups: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("thingbase-data"),
            database_url: None,
            database_writers: 0,
            database_large_writers: None,
            database_ca: None,
            database_client: None,
            bind: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            http_port: 8080,
            mqtt_port: 1883,
            mqtt_limits: broker::BrokerConfig::default(),
            mqtt: mqtt_api::MqttSettings::default(),
            auth: Auth::Required { admin_token: None },
            unauthenticated_rate: 20.0,
            principal_rate: 0.0,
            default_top: 100,
            max_top: 10_000,
            max_body_bytes: 16 * 1024 * 1024,
            public_url: None,
            durability: Durability::Process,
            readers: 4,
            https_port: Some(8443),
            mqtts_port: Some(8883),
            coaps_port: Some(5684),
            tls_names: Vec::new(),
            sealing_key: None,
            baseline_profile: None,
            certificate_validity: std::time::Duration::from_secs(90 * 24 * 3600),
            retention_interval: std::time::Duration::from_secs(600),
            query_budget: app::Budget {
                time: Some(std::time::Duration::from_secs(30)),
                rows: Some(5_000_000),
                count: None,
            },
            rollups: true,
        }
    }
}

/// Access control of HTTP and MQTT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Everyone acts as the server: for loopback use (a laptop, tests of other features).
    Off,
    /// Deny by default; `admin_token` (`THINGBASE_ADMIN_TOKEN`) is stored for the `admin` user,
    /// else a one-time setup token is printed on the first start.
    Required { admin_token: Option<String> },
}

/// A running server.
pub struct Server {
    pub http_addrs: Vec<SocketAddr>,
    pub mqtt_addrs: Vec<SocketAddr>,
    pub https_addrs: Vec<SocketAddr>,
    pub mqtts_addrs: Vec<SocketAddr>,
    /// The CoAPS sockets (with the `coap` feature and access control on).
    pub coaps_addrs: Vec<SocketAddr>,
    app: app::App,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("http_addrs", &self.http_addrs)
            .field("mqtt_addrs", &self.mqtt_addrs)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The application behind the listeners (for in-process work such as benchmarks).
    pub fn app(&self) -> &app::App {
        &self.app
    }

    /// Stops accepting requests, lets in-flight ones finish, commits queued writes.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || app.shutdown()).await;
    }
}

/// Opens the store and starts the listeners.
pub async fn start(config: Config, metrics: Option<http_api::MetricsRender>) -> anyhow::Result<Server> {
    let database = Database {
        data_dir: config.data_dir.clone(),
        url: config.database_url.clone(),
        writers: config.database_writers,
        large_writers: config.database_large_writers,
        tls_ca: config.database_ca.clone(),
        tls_client: config.database_client.clone(),
        rollups: config.rollups,
    };
    let (durability, readers) = (config.durability, config.readers);
    let store = database.open(durability, readers).await?;
    let paging = store::Paging { default_top: config.default_top, max_top: config.max_top.max(1) };
    let (changes, notifications) = mqtt_api::ChangeChannel::new();
    let app = app::App::new(store, paging).with_change_bus(Arc::new(changes)).with_budget(config.query_budget);
    if app.share_changes() {
        tracing::info!("sharing changes with the other nodes on this database (LISTEN/NOTIFY)");
    }
    let (shutdown, watch) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let http_listeners = bind(&config.bind, config.http_port, "HTTP").await?;
    let mqtt_listeners = bind(&config.bind, config.mqtt_port, "MQTT").await?;
    let http_addrs = local_addrs(&http_listeners)?;
    let mqtt_addrs = local_addrs(&mqtt_listeners)?;
    // Self links in notifications point where HTTP clients reach the server.
    let base = match (&config.public_url, http_addrs.first()) {
        (Some(url), _) => format!("{}/{}", url.trim_end_matches('/'), http_api::VERSION),
        // Listening on every interface says nothing about the name clients use: say localhost
        // (`--public-url` gives the real one).
        (None, Some(addr)) if addr.ip().is_unspecified() => {
            format!("http://localhost:{}/{}", addr.port(), http_api::VERSION)
        }
        (None, Some(addr)) => format!("http://{addr}/{}", http_api::VERSION),
        (None, None) => format!("http://localhost/{}", http_api::VERSION),
    };
    app.refresh_hub().await?;
    let rate = |per_second: f64| {
        if per_second > 0.0 { app::limits::Rate::per_second(per_second) } else { app::limits::Rate::NONE }
    };
    let auth = match &config.auth {
        Auth::Off => http_api::auth::AuthMode::Off,
        Auth::Required { admin_token } => {
            let authenticator = Arc::new(
                app::auth::Authenticator::new(app.clone()).with_address_rate(rate(config.unauthenticated_rate)),
            );
            if let Some(setup) = authenticator.bootstrap(admin_token.as_deref()).await? {
                // Printed, not logged: a secret never goes into the log stream.
                println!(
                    "Thingbase setup token (valid 24 hours, works once; create a user or token with it):\n  {}",
                    setup.as_str()
                );
            }
            http_api::auth::AuthMode::Required(authenticator)
        }
    };
    let mqtt_access = match &auth {
        http_api::auth::AuthMode::Off => mqtt_api::MqttAccess::Open,
        http_api::auth::AuthMode::Required(authenticator) => mqtt_api::MqttAccess::Required(authenticator.clone()),
    };
    let mqtt =
        mqtt_api::start(app.clone(), config.mqtt_limits.clone(), config.mqtt.clone(), mqtt_access, notifications, base);
    // Devices: the CA, enrollment and the admission gate, with access control on.
    let (https_listeners, mqtts_listeners) = match &auth {
        http_api::auth::AuthMode::Required(_) => (
            match config.https_port {
                Some(port) => bind(&config.bind, port, "HTTPS").await?,
                None => Vec::new(),
            },
            match config.mqtts_port {
                Some(port) => bind(&config.bind, port, "MQTTS").await?,
                None => Vec::new(),
            },
        ),
        http_api::auth::AuthMode::Off => (Vec::new(), Vec::new()),
    };
    let https_addrs = local_addrs(&https_listeners)?;
    let mqtts_addrs = local_addrs(&mqtts_listeners)?;
    let trust = match &auth {
        http_api::auth::AuthMode::Required(authenticator) => {
            let sealing = tls::sealing_key(config.sealing_key.as_deref(), &config.data_dir)?;
            let profile = tls::baseline_profile(config.baseline_profile.as_deref())?;
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
            names.extend(config.tls_names.iter().cloned());
            let host = config.tls_names.first().cloned().unwrap_or_else(|| "localhost".to_owned());
            let settings = app::devices::TrustSettings {
                certificate_validity: config.certificate_validity,
                server_names: names,
                https_url: https_addrs.first().map(|a| format!("https://{host}:{}", a.port())),
                mqtts_url: mqtts_addrs.first().map(|a| format!("mqtts://{host}:{}", a.port())),
                ..Default::default()
            };
            let trust = app::devices::Trust::open(app.clone(), &sealing, profile, settings).await?;
            authenticator.set_trust(Arc::clone(&trust));
            let sweeper = Arc::clone(&trust);
            let stop = watch.clone();
            tasks.push(tokio::spawn(async move {
                // Revocations made on another node reach this node's TLS listeners within
                // 30 s; every device is evaluated again hourly.
                let mut often = tokio::time::interval(std::time::Duration::from_secs(30));
                let mut ticks: u64 = 0;
                let mut stopping = std::pin::pin!(tls::stopped(stop));
                loop {
                    tokio::select! {
                        () = &mut stopping => break,
                        _ = often.tick() => {
                            let result = if ticks.is_multiple_of(120) { sweeper.sweep().await } else { sweeper.refresh_crl(false).await };
                            ticks += 1;
                            if let Err(error) = result {
                                tracing::warn!(%error, "the periodic device check failed");
                            }
                        }
                    }
                }
            }));
            Some(trust)
        }
        http_api::auth::AuthMode::Off => None,
    };
    // Rollups of data stored before they existed are built once; retention runs regularly.
    {
        let app = app.clone();
        let stop = watch.clone();
        let every = config.retention_interval.max(std::time::Duration::from_secs(1));
        tasks.push(tokio::spawn(async move {
            match app.build_pending_rollups().await {
                Ok(0) => {}
                Ok(built) => tracing::info!(built, "rollups built for data stored before them"),
                Err(error) => tracing::warn!(%error, "building rollups failed"),
            }
            let mut ticks = tokio::time::interval(every);
            let mut stopping = std::pin::pin!(tls::stopped(stop));
            loop {
                tokio::select! {
                    () = &mut stopping => break,
                    _ = ticks.tick() => {
                        if let Err(error) = app.apply_retention(model::Instant::now()).await {
                            tracing::warn!(%error, "applying retention failed");
                        }
                    }
                }
            }
        }));
    }
    let settings = http_api::ApiSettings {
        public_url: config.public_url.clone(),
        max_body_bytes: config.max_body_bytes,
        mqtt_port: mqtt_addrs.first().map(SocketAddr::port),
    };
    let max_message_bytes = usize::try_from(config.mqtt_limits.max_packet_size).unwrap_or(usize::MAX);
    let limits = Arc::new(http_api::limits::RateLimits::new(rate(config.principal_rate)));
    let router = http_api::router(http_api::ApiState {
        app: app.clone(),
        settings: Arc::new(settings),
        metrics,
        auth,
        limits,
        trust: trust.clone(),
    })
    .merge(websocket::router(mqtt.broker.clone(), max_message_bytes));
    if let Some(trust) = &trust {
        for listener in https_listeners {
            tracing::info!(local = %listener.local_addr()?, "HTTPS listening (mutual TLS for devices; EST at /.well-known/est)");
            tasks.push(tls::serve_https(listener, trust, router.clone(), watch.clone())?);
        }
        for listener in mqtts_listeners {
            tracing::info!(local = %listener.local_addr()?, "MQTTS listening (client certificates or device secrets)");
            tasks.push(tls::serve_mqtts(listener, trust, mqtt.broker.clone(), watch.clone())?);
        }
    }
    // CoAP over DTLS for devices with pre-shared keys, in builds with the `coap` feature.
    #[cfg(feature = "coap")]
    let coaps_addrs = serve_coaps(&config, trust.as_ref(), &app, &watch, &mut tasks).await?;
    #[cfg(not(feature = "coap"))]
    let coaps_addrs = Vec::new();
    for listener in http_listeners {
        let local = listener.local_addr()?;
        tracing::info!(%local, "HTTP API listening; SensorThings service root at /v1.1, MQTT over WebSocket at /mqtt");
        let service = router.clone().into_make_service_with_connect_info::<SocketAddr>();
        let mut watch = watch.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = watch.wait_for(|stop| *stop).await;
            };
            // Streamed answers go out in several writes; without TCP_NODELAY the last one waits
            // for the client's delayed ACK (tens of milliseconds).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            });
            if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        }));
    }
    for listener in mqtt_listeners {
        let local = listener.local_addr()?;
        tracing::info!(%local, "MQTT broker listening; SensorThings topics under v1.1/");
        let broker = mqtt.broker.clone();
        let mut watch = watch.clone();
        tasks.push(tokio::spawn(async move {
            broker
                .serve(listener, async move {
                    let _ = watch.wait_for(|stop| *stop).await;
                })
                .await;
        }));
    }
    Ok(Server { http_addrs, mqtt_addrs, https_addrs, mqtts_addrs, coaps_addrs, app, shutdown, tasks })
}

/// A management command of the `thingbase project|user|token` subcommands.
#[derive(Debug)]
pub enum AdminCommand {
    CreateProject {
        name: String,
        open_data: bool,
    },
    CreateUser {
        name: String,
        password: Option<String>,
        hub_admin: bool,
    },
    SetRole {
        user: i64,
        project: i64,
        role: Option<access::Role>,
    },
    CreateToken {
        user: i64,
        label: String,
        expires_in: Option<u64>,
    },
    RevokeToken {
        id: i64,
    },
    /// Lists, sets or clears retention policies, or applies them now.
    RetentionList,
    RetentionSet {
        scope: store::statistics::RetentionScope,
        raw_days: Option<u32>,
        rollup_days: Option<u32>,
    },
    RetentionClear {
        scope: store::statistics::RetentionScope,
    },
    RetentionRun,
}

/// Where the data lives: the embedded SQLite file under `data_dir`, or the PostgreSQL database
/// at `url` (`postgres://...`).
#[derive(Clone, Debug)]
pub struct Database {
    pub data_dir: PathBuf,
    pub url: Option<String>,
    /// PostgreSQL writer connections (0: the default).
    pub writers: usize,
    /// PostgreSQL writer connections for large writes (`None`: the default).
    pub large_writers: Option<usize>,
    /// Trust anchors (a PEM file) for TLS to PostgreSQL: with them every connection uses TLS
    /// and verifies the server's certificate and name.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (a PEM file: the certificate, then any issuers) and its PKCS#8
    /// private key (a PEM file), shown over that TLS when the server asks for one.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Whether rollups are kept as Observations are written (docs/timeseries.md).
    pub rollups: bool,
}

/// A client certificate chain and key, each from a PEM file.
fn client_identity(certificate: &Path, key: &Path) -> anyhow::Result<store_postgres::ClientIdentity> {
    let pem = std::fs::read_to_string(certificate)
        .with_context(|| format!("cannot read the database client certificate {}", certificate.display()))?;
    let chain =
        pki::pem_certificates(&pem).with_context(|| format!("the client certificate {}", certificate.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", certificate.display());
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("cannot read the database client key {}", key.display()))?;
    let key_pkcs8 = pki::pem_pkcs8_key(&pem).with_context(|| format!("the client key {}", key.display()))?;
    Ok(store_postgres::ClientIdentity { chain, key_pkcs8 })
}

impl Database {
    /// Opens the store (creating the data directory for SQLite), migrations applied.
    pub async fn open(&self, durability: Durability, readers: usize) -> anyhow::Result<Arc<dyn store::Store>> {
        match &self.url {
            Some(url) => {
                let mut options = store_postgres::PostgresOptions::new(url.clone());
                options.readers = readers;
                if let Some(path) = &self.tls_ca {
                    let pem = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read the database CA file {}", path.display()))?;
                    let roots = pki::pem_certificates(&pem)
                        .with_context(|| format!("the database CA file {}", path.display()))?;
                    anyhow::ensure!(!roots.is_empty(), "{} holds no PEM certificate", path.display());
                    let client = match &self.tls_client {
                        Some((certificate, key)) => Some(client_identity(certificate, key)?),
                        None => None,
                    };
                    options.tls = store_postgres::DatabaseTls::Verified { roots, client };
                } else if self.tls_client.is_some() {
                    anyhow::bail!(
                        "a database client certificate needs --database-ca, the trust anchors of the server's"
                    );
                }
                if self.writers > 0 {
                    options.writers = self.writers;
                }
                if let Some(large) = self.large_writers {
                    options.large_writers = large;
                }
                options.rollups = self.rollups;
                let store = tokio::task::spawn_blocking(move || store_postgres::PostgresStore::open(options))
                    .await?
                    .context("cannot open the PostgreSQL database")?;
                Ok(Arc::new(store))
            }
            None => {
                std::fs::create_dir_all(&self.data_dir)
                    .with_context(|| format!("cannot create the data directory {}", self.data_dir.display()))?;
                let mut options = SqliteOptions::new(self.data_dir.join("thingbase.sqlite"));
                options.durability = durability;
                options.readers = readers;
                options.rollups = self.rollups;
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(options))
                    .await?
                    .context("cannot open the SQLite database")?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// Runs a management command directly on the database, as the server would for a hub
/// administrator (and written to the audit log as the server's). Returns what to print.
pub async fn admin(database: &Database, command: AdminCommand) -> anyhow::Result<String> {
    let store = database.open(Durability::Process, 1).await?;
    let app = app::App::new(store, store::Paging { default_top: 1, max_top: 1 });
    app.refresh_hub().await?;
    let authenticator = app::auth::Authenticator::new(app.clone());
    let server = app::Caller::server();
    let answer = match command {
        AdminCommand::CreateProject { name, open_data } => {
            let project = authenticator.create_project(&server, name, open_data).await?;
            format!("project {}", project.id)
        }
        AdminCommand::CreateUser { name, password, hub_admin } => {
            format!("user {}", authenticator.create_user(&server, name, password, hub_admin).await?)
        }
        AdminCommand::SetRole { user, project, role } => {
            authenticator.set_role(&server, user, project, role).await?;
            "done".to_owned()
        }
        AdminCommand::CreateToken { user, label, expires_in } => {
            let valid_for = expires_in.map(std::time::Duration::from_secs);
            let (id, secret) = authenticator.create_token(&server, Some(user), label, None, valid_for).await?;
            format!("token {id}: {}", secret.as_str())
        }
        AdminCommand::RevokeToken { id } => {
            authenticator.revoke_token(&server, id).await?;
            "revoked".to_owned()
        }
        AdminCommand::RetentionList => {
            let lines: Vec<String> = app
                .retention_policies(&server)
                .await?
                .iter()
                .map(|p| {
                    let days = |d: Option<u32>| d.map_or("for ever".to_owned(), |d| format!("{d} days"));
                    format!(
                        "{}: Observations {}, rollups {}",
                        app::retention::scope_json(p.scope),
                        days(p.raw_days),
                        days(p.rollup_days)
                    )
                })
                .collect();
            if lines.is_empty() { "no retention policies".to_owned() } else { lines.join("\n") }
        }
        AdminCommand::RetentionSet { scope, raw_days, rollup_days } => {
            app.set_retention(&server, scope, raw_days, rollup_days).await?;
            "done".to_owned()
        }
        AdminCommand::RetentionClear { scope } => {
            app.clear_retention(&server, scope).await?;
            "cleared".to_owned()
        }
        AdminCommand::RetentionRun => {
            let report = app.apply_retention(model::Instant::now()).await?;
            format!(
                "{} series with a policy; {} Observations and {} rollups deleted",
                report.series, report.observations_deleted, report.rollups_deleted
            )
        }
    };
    app.shutdown();
    Ok(answer)
}

/// What `thingbase device check` is given.
#[derive(Debug)]
pub struct DeviceCheck {
    pub urn: String,
    pub sealing_key: Option<String>,
    pub baseline_profile: Option<PathBuf>,
}

/// Evaluates a device against the baseline profile on the database directly (as the server
/// would), recording the result.
pub async fn device_check(database: &Database, check: DeviceCheck) -> anyhow::Result<app::gate::Report> {
    let store = database.open(Durability::Process, 1).await?;
    let app = app::App::new(store, store::Paging { default_top: 1, max_top: 1 });
    let result = async {
        let sealing = tls::sealing_key(check.sealing_key.as_deref(), &database.data_dir)?;
        let profile = tls::baseline_profile(check.baseline_profile.as_deref())?;
        let trust =
            app::devices::Trust::open(app.clone(), &sealing, profile, app::devices::TrustSettings::default()).await?;
        Ok::<_, anyhow::Error>(trust.check(&app::Caller::server(), &check.urn).await?)
    }
    .await;
    app.shutdown();
    result
}

/// `thingbase ca ...`.
#[derive(Debug)]
pub enum CaCommand {
    /// The CA's chain and fingerprint.
    Show,
    /// An operator's CA (chain PEM, PKCS#8 key PEM) becomes the hub's, before the first start.
    Import { chain_pem: String, key_pem: String },
}

/// Runs a `thingbase ca` command on the database; returns what to print.
pub async fn ca(database: &Database, sealing_key: Option<&str>, command: CaCommand) -> anyhow::Result<String> {
    let store = database.open(Durability::Process, 1).await?;
    let app = app::App::new(store, store::Paging { default_top: 1, max_top: 1 });
    let result = async {
        match command {
            CaCommand::Show => match app::devices::authority_pem(&app).await? {
                Some((pem, fingerprint)) => {
                    Ok(format!("{pem}SHA-256 fingerprint of the CA certificate: {fingerprint}"))
                }
                None => anyhow::bail!("there is no CA yet: the first `thingbase serve` makes one"),
            },
            CaCommand::Import { chain_pem, key_pem } => {
                let sealing = tls::sealing_key(sealing_key, &database.data_dir)?;
                let fingerprint = app::devices::import_authority(&app, &sealing, &chain_pem, &key_pem).await?;
                Ok(format!("imported; SHA-256 fingerprint of the CA certificate: {fingerprint}"))
            }
        }
    }
    .await;
    app.shutdown();
    result
}

/// Checks the audit log's hash chain in the database (`thingbase audit verify`).
pub async fn verify_audit(database: &Database) -> anyhow::Result<app::audit::AuditCheck> {
    let store = database.open(Durability::Process, 1).await?;
    let paging = store::Paging { default_top: 1, max_top: 1 };
    let app = app::App::new(store, paging);
    let check = app.verify_audit().await?;
    app.shutdown();
    Ok(check)
}

/// One listener per address in `bind` on `port` (0: a free port per address).
async fn bind(bind: &[IpAddr], port: u16, what: &str) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(bind.len());
    for ip in bind {
        let addr = SocketAddr::new(*ip, port);
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn local_addrs(listeners: &[tokio::net::TcpListener]) -> std::io::Result<Vec<SocketAddr>> {
    listeners.iter().map(tokio::net::TcpListener::local_addr).collect()
}

/// The CoAPS listeners: one UDP socket per address in `bind`, whose devices shake hands with
/// the pre-shared keys of `trust` (none without access control).
#[cfg(feature = "coap")]
async fn serve_coaps(
    config: &Config,
    trust: Option<&Arc<app::devices::Trust>>,
    app: &app::App,
    watch: &tokio::sync::watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let (Some(trust), Some(port)) = (trust, config.coaps_port) else { return Ok(Vec::new()) };
    let mut addrs = Vec::with_capacity(config.bind.len());
    for ip in &config.bind {
        let addr = SocketAddr::new(*ip, port);
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot listen for CoAP over DTLS on {addr}"))?;
        let local = socket.local_addr()?;
        tracing::info!(%local, "CoAPS listening (DTLS 1.2, PSK identity = device URN, key = its dtlsPsk)");
        let settings = coap_api::CoapSettings::default();
        let stop = tls::stopped(watch.clone());
        tasks.push(tokio::spawn(coap_api::serve(socket, app.clone(), Arc::clone(trust), settings, stop)));
        addrs.push(local);
    }
    Ok(addrs)
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config, metrics: Option<http_api::MetricsRender>) -> anyhow::Result<()> {
    let server = start(config, metrics).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests and commits");
    server.stop().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

/// Loads a CSV file of Observations into a Datastream or MultiDatastream (`thingbase
/// backfill`, see `backfill`), as the server would for a hub administrator.
pub async fn backfill(database: &Database, series: backfill::Series, file: &Path) -> anyhow::Result<backfill::Loaded> {
    let store = database.open(Durability::Process, 1).await?;
    let app = app::App::new(store, store::Paging { default_top: 1, max_top: 1 });
    let loaded = backfill::load(&app, series, file).await;
    app.shutdown();
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_client_certificate_needs_the_servers_trust_anchors() {
        let database = Database {
            data_dir: PathBuf::from("unused"),
            url: Some("postgres://thingbase@127.0.0.1:1/thingbase".into()),
            writers: 0,
            large_writers: None,
            tls_ca: None,
            tls_client: Some((PathBuf::from("node.crt"), PathBuf::from("node.key"))),
            rollups: true,
        };
        let refused = database.open(Durability::Process, 1).await.err().expect("refused before connecting");
        assert!(refused.to_string().contains("--database-ca"), "{refused}");
    }
}
