//! The `thingbase` command line: `thingbase serve` and its settings. Every flag has a
//! `THINGBASE_*` environment fallback; unknown flags are errors.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "thingbase",
    version,
    about = "An open IoT hub: the OGC SensorThings API v1.1 on an embedded database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the server (SensorThings API at http://<bind>:<http-port>/v1.1).
    Serve(Box<Serve>),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Projects, on the database under --data-dir (also while the server runs).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Users and their roles, on the database under --data-dir.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens, on the database under --data-dir.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The hub's certificate authority, on the database under --data-dir.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Devices, on the database under --data-dir.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Retention policies (how long Observations and rollups are kept), on the database under
    /// --data-dir; see docs/timeseries.md.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Writes every table of the database as JSON Lines (one snapshot; see docs/postgres.md),
    /// to move to another backend or keep as a backup.
    Export {
        /// The file to write (standard output when absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Loads historical Observations from a CSV file into one Datastream or MultiDatastream, in
    /// batches through the Data Array path (docs/timeseries.md). The header names the columns:
    /// phenomenonTime, result, resultTime, resultQuality, validTime, parameters,
    /// FeatureOfInterest/id.
    Backfill {
        /// The CSV file (`-` for standard input).
        file: PathBuf,
        #[arg(long, conflicts_with = "multi_datastream", required_unless_present = "multi_datastream")]
        datastream: Option<i64>,
        #[arg(long)]
        multi_datastream: Option<i64>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Loads an export into an empty database (a new SQLite directory or PostgreSQL database,
    /// before its first `serve`), in one transaction.
    Import {
        /// The export to read (`-` for standard input).
        file: PathBuf,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand, Debug)]
enum RetentionCommand {
    /// Lists the policies.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Sets the policy of a project, Datastream or MultiDatastream (its own comes before its
    /// project's).
    Set {
        #[command(flatten)]
        scope: RetentionTarget,
        /// Days Observations are kept (absent: for ever).
        #[arg(long)]
        raw_days: Option<u32>,
        /// Days rollups are kept (absent: for ever).
        #[arg(long)]
        rollup_days: Option<u32>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Removes a policy.
    Clear {
        #[command(flatten)]
        scope: RetentionTarget,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Applies every policy now (the server does so every --retention-interval seconds).
    Run {
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct RetentionTarget {
    #[arg(long)]
    project: Option<i64>,
    #[arg(long)]
    datastream: Option<i64>,
    #[arg(long)]
    multi_datastream: Option<i64>,
}

impl RetentionTarget {
    fn scope(&self) -> store::statistics::RetentionScope {
        use store::statistics::RetentionScope;
        match (self.project, self.datastream, self.multi_datastream) {
            (Some(id), _, _) => RetentionScope::Project(id),
            (_, Some(id), _) => RetentionScope::Datastream(id),
            (_, _, id) => RetentionScope::MultiDatastream(id.unwrap_or_default()),
        }
    }
}

#[derive(clap::Args, Debug)]
struct DataDir {
    /// Where the database file lives.
    #[arg(long, env = "THINGBASE_DATA_DIR", default_value = "thingbase-data")]
    data_dir: PathBuf,
    /// A PostgreSQL/PostGIS database (`postgres://user@host:port/db`) instead of the SQLite
    /// file under --data-dir.
    #[arg(long = "database", env = "THINGBASE_DATABASE_URL")]
    database_url: Option<String>,
    /// Trust anchors (PEM) for TLS to PostgreSQL: every connection then uses TLS and checks
    /// the server's certificate and host name.
    #[arg(long, env = "THINGBASE_DATABASE_CA")]
    database_ca: Option<PathBuf>,
    /// A client certificate (PEM: the certificate, then any issuers) that the connections to
    /// PostgreSQL show when it asks for one (its `cert` authentication); needs --database-ca
    /// and --database-key.
    #[arg(long, env = "THINGBASE_DATABASE_CERT", requires = "database_key")]
    database_cert: Option<PathBuf>,
    /// The PKCS#8 private key (PEM) of --database-cert.
    #[arg(long, env = "THINGBASE_DATABASE_KEY", requires = "database_cert")]
    database_key: Option<PathBuf>,
}

impl DataDir {
    fn database(self) -> thingbase::Database {
        thingbase::Database {
            data_dir: self.data_dir,
            url: self.database_url,
            writers: 0,
            large_writers: None,
            tls_ca: self.database_ca,
            tls_client: self.database_cert.zip(self.database_key),
            rollups: true,
        }
    }
}

#[derive(Subcommand, Debug)]
enum ProjectCommand {
    /// Creates a project and prints its id.
    Create {
        name: String,
        /// Make its reads public.
        #[arg(long)]
        open_data: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Creates a user and prints its id; the password, if any, comes from THINGBASE_PASSWORD.
    Create {
        name: String,
        /// May do everything in every project.
        #[arg(long)]
        hub_admin: bool,
        #[arg(long, env = "THINGBASE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Gives a user a role in a project (viewer, contributor, editor, admin), or `none`.
    Role {
        user: i64,
        project: i64,
        role: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Makes an API token for a user and prints it (once).
    Create {
        user: i64,
        #[arg(long, default_value = "made with thingbase token create")]
        label: String,
        /// Seconds until it expires; never by default.
        #[arg(long)]
        expires_in: Option<u64>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revokes a token (a running server notices within seconds).
    Revoke {
        id: i64,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Prints the CA certificate chain (PEM) and its SHA-256 fingerprint, for devices to check
    /// what /.well-known/est/cacerts serves.
    Show {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Makes an operator's CA (e.g. an intermediate of their own PKI) the hub's, before the
    /// first start: its certificate chain (PEM, the CA first) and its PKCS#8 private key (PEM).
    Import {
        #[arg(long)]
        certificate: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// The key that seals the CA (64 hex digits); else sealing.key in --data-dir.
        #[arg(long, env = "THINGBASE_SEALING_KEY", hide_env_values = true)]
        sealing_key: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// Evaluates a device against the baseline profile now, records the result (its state may
    /// change) and prints the conformance report; exits with 1 when it fails.
    Check {
        /// The device's RFC 9039 URN, e.g. urn:dev:mac:0024befffe804ff1.
        urn: String,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The key that seals the CA (64 hex digits); else sealing.key in --data-dir.
        #[arg(long, env = "THINGBASE_SEALING_KEY", hide_env_values = true)]
        sealing_key: Option<String>,
        /// The baseline profile file (the shipped default when absent).
        #[arg(long, env = "THINGBASE_BASELINE_PROFILE")]
        baseline_profile: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Checks that no entry of the audit log was changed, removed or reordered; exits with 1
    /// and names the first broken entry if one was.
    Verify {
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Durability {
    /// A crash of the process loses nothing acknowledged (SQLite synchronous=NORMAL with WAL).
    Process,
    /// A power loss loses nothing acknowledged either (synchronous=FULL); slower.
    PowerLoss,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum AuthFlag {
    /// No access control: everyone acts as the server. For loopback use (a laptop, a test).
    Off,
    /// Deny by default: API tokens (Bearer) or users (Basic), roles per project.
    Required,
}

#[derive(clap::Args, Debug)]
struct Serve {
    /// Where the database file lives; created if missing.
    #[arg(long, env = "THINGBASE_DATA_DIR", default_value = "thingbase-data")]
    data_dir: PathBuf,
    /// A PostgreSQL/PostGIS database (`postgres://user@host:port/db`) instead of the embedded
    /// SQLite file under --data-dir; its schema is created or migrated on start.
    #[arg(long = "database", env = "THINGBASE_DATABASE_URL")]
    database_url: Option<String>,
    /// Writer connections to PostgreSQL, each committing the writes of its share of the
    /// Datastreams (those of one Datastream in order): more commit the Observations of many
    /// Datastreams side by side, but the publishes one MQTT connection has in flight together
    /// to different Datastreams may then be stored in another order than sent.
    #[arg(long, env = "THINGBASE_DATABASE_WRITERS", default_value_t = 2)]
    database_writers: usize,
    /// Writer connections to PostgreSQL for large writes (Data Array requests of 1,000 rows
    /// or more, backfills), each committing one at a time beside the --database-writers, so
    /// that the database works on several at once; 0 leaves them to the --database-writers
    #[arg(long, env = "THINGBASE_DATABASE_LARGE_WRITERS", default_value_t = 2)]
    database_large_writers: usize,
    /// Trust anchors (PEM) for TLS to PostgreSQL: every connection then uses TLS and checks
    /// the server's certificate and host name (as libpq's sslmode=verify-full).
    #[arg(long, env = "THINGBASE_DATABASE_CA")]
    database_ca: Option<PathBuf>,
    /// A client certificate (PEM: the certificate, then any issuers) that the connections to
    /// PostgreSQL show when it asks for one (its `cert` authentication); needs --database-ca
    /// and --database-key.
    #[arg(long, env = "THINGBASE_DATABASE_CERT", requires = "database_key")]
    database_cert: Option<PathBuf>,
    /// The PKCS#8 private key (PEM) of --database-cert.
    #[arg(long, env = "THINGBASE_DATABASE_KEY", requires = "database_cert")]
    database_key: Option<PathBuf>,
    /// Addresses to listen on (repeat or comma-separate; IPv4 and IPv6). By default every IPv4
    /// interface (0.0.0.0) with access control on, and loopback only (127.0.0.1) with
    /// `--auth off`.
    #[arg(long, env = "THINGBASE_BIND", value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// The HTTP port (0 picks a free one).
    #[arg(long, env = "THINGBASE_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// The MQTT port of the embedded broker (SensorThings topics under v1.1/; 0 picks a free one).
    #[arg(long, env = "THINGBASE_MQTT_PORT", default_value_t = 1883)]
    mqtt_port: u16,
    /// The HTTPS port: the whole API over TLS, with mutual TLS for devices and EST enrollment
    /// at /.well-known/est (with access control on; 0 picks a free one).
    #[arg(long, env = "THINGBASE_HTTPS_PORT", default_value_t = 8443)]
    https_port: u16,
    /// The MQTTS port: MQTT over TLS, for devices with certificates or secrets (with access
    /// control on; 0 picks a free one).
    #[arg(long, env = "THINGBASE_MQTTS_PORT", default_value_t = 8883)]
    mqtts_port: u16,
    /// The CoAPS port (UDP): CoAP over DTLS 1.2 for devices with a secret, PSK identity = the
    /// device's URN, key = its dtlsPsk (with access control on; 0 picks a free one). Needs a
    /// build with the `coap` feature; ignored without it.
    #[arg(long, env = "THINGBASE_COAPS_PORT", default_value_t = 5684)]
    coaps_port: u16,
    /// DNS names or addresses the hub's TLS certificate is also for (besides localhost);
    /// repeat or comma-separate. The first is the host name the resolver gives devices.
    #[arg(long, env = "THINGBASE_TLS_NAMES", value_delimiter = ',')]
    tls_name: Vec<String>,
    /// The key that seals the CA's private key in the database (64 hex digits; give every
    /// node of a database the same). Else sealing.key in --data-dir, made on the first start.
    #[arg(long, env = "THINGBASE_SEALING_KEY", hide_env_values = true)]
    sealing_key: Option<String>,
    /// The admission gate's baseline profile (a JSON file, see docs/devices.md); the shipped
    /// default when absent.
    #[arg(long, env = "THINGBASE_BASELINE_PROFILE")]
    baseline_profile: Option<PathBuf>,
    /// The longest a read request may take to its complete answer, in milliseconds (0: no
    /// limit); one that would take longer is a 503 before any of it is sent.
    #[arg(long, env = "THINGBASE_QUERY_TIME_BUDGET_MS", default_value_t = 30_000)]
    query_time_budget_ms: u64,
    /// The most entities one answer may hold, counting expanded ones (0: no limit); a request
    /// that could return more ($top times its $expand's $top) is a 400 before it runs.
    #[arg(long, env = "THINGBASE_QUERY_ROW_BUDGET", default_value_t = 5_000_000)]
    query_row_budget: u64,
    /// Keep rollups per minute, hour and day as Observations are written, for fast aggregates.
    /// Off, aggregates are computed from the Observations, and the rollups of what was written
    /// meanwhile are built again once they are on.
    #[arg(long, env = "THINGBASE_ROLLUPS", default_value = "on", value_parser = ["on", "off"])]
    rollups: String,
    /// Seconds between two applications of the retention policies.
    #[arg(long, env = "THINGBASE_RETENTION_INTERVAL", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    retention_interval: u64,
    /// Days a device certificate is valid.
    #[arg(long, env = "THINGBASE_CERTIFICATE_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=3650))]
    certificate_days: u64,
    /// The largest MQTT packet a client may send, in bytes; larger ones end the connection
    /// ("packet too large").
    #[arg(long, env = "THINGBASE_MQTT_MAX_PACKET_BYTES", default_value_t = 256 * 1024)]
    mqtt_max_packet_bytes: u32,
    /// QoS 1 messages in flight per MQTT connection and direction (announced to MQTT 5
    /// clients as the Receive Maximum).
    #[arg(long, env = "THINGBASE_MQTT_MAX_INFLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    mqtt_max_inflight: u16,
    /// Messages an MQTT session holds for its client (offline, or behind the inflight window);
    /// more are dropped and counted in mqtt_messages_dropped_total.
    #[arg(long, env = "THINGBASE_MQTT_MAX_QUEUED_MESSAGES", default_value_t = 1000)]
    mqtt_max_queued_messages: usize,
    /// Open MQTT connections; one more is refused with "server busy".
    #[arg(long, env = "THINGBASE_MQTT_MAX_CONNECTIONS", default_value_t = 10_000)]
    mqtt_max_connections: usize,
    /// The longest an offline persistent MQTT session is kept, in seconds.
    #[arg(long, env = "THINGBASE_MQTT_MAX_SESSION_EXPIRY", default_value_t = 24 * 60 * 60)]
    mqtt_max_session_expiry: u64,
    /// Send each new subscription to a SensorThings topic its current state (the entity, the
    /// property, or the newest Observation) as the topic's retained message.
    #[arg(long, env = "THINGBASE_MQTT_LATEST_ON_SUBSCRIBE", default_value_t = false)]
    mqtt_latest_on_subscribe: bool,
    /// An external MQTT 5 broker to bridge to, as HOST[:PORT] (default port 1883): device
    /// publishes to SensorThings topics are taken from there (a shared subscription to v1.1/#)
    /// and change notifications are published there, beside the embedded broker.
    #[arg(long, env = "THINGBASE_MQTT_BRIDGE", value_parser = parse_broker_address)]
    mqtt_bridge: Option<(String, u16)>,
    /// The client id at the external broker; give each Thingbase node its own.
    #[arg(long, env = "THINGBASE_MQTT_BRIDGE_CLIENT_ID", default_value = "thingbase")]
    mqtt_bridge_client_id: String,
    /// The user name at the external broker.
    #[arg(long, env = "THINGBASE_MQTT_BRIDGE_USERNAME", requires = "mqtt_bridge_password")]
    mqtt_bridge_username: Option<String>,
    /// The password at the external broker (prefer the environment variable to the flag).
    #[arg(long, env = "THINGBASE_MQTT_BRIDGE_PASSWORD", hide_env_values = true, requires = "mqtt_bridge_username")]
    mqtt_bridge_password: Option<String>,
    /// The Thingbase API token the bridge acts with when access control is on (prefer the
    /// environment variable to the flag).
    #[arg(long, env = "THINGBASE_MQTT_BRIDGE_TOKEN", hide_env_values = true)]
    mqtt_bridge_token: Option<String>,
    /// The shared-subscription group the Thingbase nodes of one hub join at the external broker.
    #[arg(long, env = "THINGBASE_MQTT_BRIDGE_SHARE_GROUP", default_value = "thingbase")]
    mqtt_bridge_share_group: String,
    /// Access control of HTTP and MQTT: deny by default. The first start prints a one-time
    /// setup token unless THINGBASE_ADMIN_TOKEN provides the admin's token. `off` lets everyone
    /// act as the server and keeps the server on loopback.
    #[arg(long, env = "THINGBASE_AUTH", value_enum, default_value = "required")]
    auth: AuthFlag,
    /// A token for the `admin` user (tbt_ and 64 hex digits), for automated set-ups; prefer the
    /// environment variable to the flag.
    #[arg(long, env = "THINGBASE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Requests per second one address may send without working credentials (anonymous reads
    /// of open data, failed sign-ins), twice as many at once; more get 429. 0: unlimited.
    #[arg(long, env = "THINGBASE_UNAUTHENTICATED_RATE", default_value_t = 20.0)]
    unauthenticated_rate: f64,
    /// Requests per second one user or token may send, twice as many at once; more get 429.
    /// 0: unlimited.
    #[arg(long, env = "THINGBASE_PRINCIPAL_RATE", default_value_t = 0.0)]
    principal_rate: f64,
    /// Entities per page when a request gives no $top.
    #[arg(long, env = "THINGBASE_DEFAULT_TOP", default_value_t = 100)]
    default_top: u64,
    /// The largest page a request may ask for with $top.
    #[arg(long, env = "THINGBASE_MAX_TOP", default_value_t = 10_000)]
    max_top: u64,
    /// The largest request body in bytes; larger ones are refused with 413.
    #[arg(long, env = "THINGBASE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// The URL clients reach the server at (for self links behind a proxy), e.g.
    /// https://sensors.example.org. By default links follow the request's Host header.
    #[arg(long, env = "THINGBASE_PUBLIC_URL")]
    public_url: Option<String>,
    /// What an acknowledged write survives.
    #[arg(long, env = "THINGBASE_DURABILITY", value_enum, default_value = "process")]
    durability: Durability,
    /// Reader connections (parallel reads).
    #[arg(long, env = "THINGBASE_READERS", default_value_t = 4)]
    readers: usize,
    /// Log format.
    #[arg(long, env = "THINGBASE_LOG_FORMAT", value_enum, default_value = "pretty")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `thingbase=debug,info`.
    #[arg(long, env = "THINGBASE_LOG", default_value = "info")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Project(ProjectCommand::Create { name, open_data, dir }) => {
            admin(dir, thingbase::AdminCommand::CreateProject { name, open_data })
        }
        Command::User(UserCommand::Create { name, hub_admin, password, dir }) => {
            admin(dir, thingbase::AdminCommand::CreateUser { name, password, hub_admin })
        }
        Command::User(UserCommand::Role { user, project, role, dir }) => {
            let role = match role.as_str() {
                "none" => None,
                other => Some(access::Role::parse(other).ok_or_else(|| {
                    anyhow::anyhow!("`{other}` is not a role: viewer, contributor, editor, admin or none")
                })?),
            };
            admin(dir, thingbase::AdminCommand::SetRole { user, project, role })
        }
        Command::Token(TokenCommand::Create { user, label, expires_in, dir }) => {
            admin(dir, thingbase::AdminCommand::CreateToken { user, label, expires_in })
        }
        Command::Token(TokenCommand::Revoke { id, dir }) => admin(dir, thingbase::AdminCommand::RevokeToken { id }),
        Command::Retention(RetentionCommand::List { dir }) => admin(dir, thingbase::AdminCommand::RetentionList),
        Command::Retention(RetentionCommand::Set { scope, raw_days, rollup_days, dir }) => {
            admin(dir, thingbase::AdminCommand::RetentionSet { scope: scope.scope(), raw_days, rollup_days })
        }
        Command::Retention(RetentionCommand::Clear { scope, dir }) => {
            admin(dir, thingbase::AdminCommand::RetentionClear { scope: scope.scope() })
        }
        Command::Retention(RetentionCommand::Run { dir }) => admin(dir, thingbase::AdminCommand::RetentionRun),
        Command::Export { output, dir } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let store = runtime.block_on(dir.database().open(store_sqlite::Durability::Process, 1))?;
            let moved = match &output {
                Some(path) => {
                    let file =
                        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
                    thingbase::transfer::export(&store, &mut std::io::BufWriter::new(file))
                }
                None => thingbase::transfer::export(&store, &mut std::io::BufWriter::new(std::io::stdout().lock())),
            };
            store.shutdown();
            let moved = moved?;
            eprintln!("exported {} rows of {} tables", moved.rows, moved.tables);
            Ok(())
        }
        Command::Backfill { file, datastream, multi_datastream, dir } => {
            let series = match (datastream, multi_datastream) {
                (Some(id), _) => thingbase::backfill::Series::Datastream(id),
                (None, id) => thingbase::backfill::Series::MultiDatastream(id.unwrap_or_default()),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let loaded = runtime.block_on(thingbase::backfill(&dir.database(), series, &file))?;
            for (line, reason) in &loaded.refused {
                eprintln!("line {line}: {reason}");
            }
            println!(
                "{} Observations loaded, {} rows refused, in {:.2} s",
                loaded.observations, loaded.refused_count, loaded.seconds
            );
            if loaded.refused_count > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Import { file, dir } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let store = runtime.block_on(dir.database().open(store_sqlite::Durability::Process, 1))?;
            let moved = if file.as_os_str() == "-" {
                thingbase::transfer::import(&store, &mut std::io::stdin().lock())
            } else {
                let opened = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
                thingbase::transfer::import(&store, &mut std::io::BufReader::new(opened))
            };
            store.shutdown();
            let moved = moved?;
            eprintln!("imported {} rows of {} tables", moved.rows, moved.tables);
            Ok(())
        }
        Command::Ca(command) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let (dir, sealing_key, command) = match command {
                CaCommand::Show { dir } => (dir, None, thingbase::CaCommand::Show),
                CaCommand::Import { certificate, key, sealing_key, dir } => {
                    let read = |p: &PathBuf| {
                        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
                    };
                    let command = thingbase::CaCommand::Import { chain_pem: read(&certificate)?, key_pem: read(&key)? };
                    (dir, sealing_key, command)
                }
            };
            println!("{}", runtime.block_on(thingbase::ca(&dir.database(), sealing_key.as_deref(), command))?);
            Ok(())
        }
        Command::Device(DeviceCommand::Check { urn, json, sealing_key, baseline_profile, dir }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let check = thingbase::DeviceCheck { urn, sealing_key, baseline_profile };
            let report = runtime.block_on(thingbase::device_check(&dir.database(), check))?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { dir }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let check = runtime.block_on(thingbase::verify_audit(&dir.database()))?;
            match check.first_broken {
                None => {
                    println!("audit log intact: {} entries", check.entries);
                    Ok(())
                }
                Some(id) => {
                    println!("audit log broken at entry {id} ({} entries before it are intact)", check.entries);
                    std::process::exit(1);
                }
            }
        }
        Command::Serve(serve) => {
            let serve = *serve;
            init_logging(serve.log_format, &serve.log)?;
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("cannot install metrics: {e}"))?;
            let render: http_api::MetricsRender = std::sync::Arc::new(move || handle.render());
            let config = thingbase::Config {
                data_dir: serve.data_dir,
                database_url: serve.database_url,
                database_writers: serve.database_writers,
                database_large_writers: Some(serve.database_large_writers),
                database_ca: serve.database_ca,
                database_client: serve.database_cert.zip(serve.database_key),
                bind: match (serve.bind.is_empty(), serve.auth) {
                    (false, _) => serve.bind,
                    (true, AuthFlag::Required) => vec![IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)],
                    (true, AuthFlag::Off) => vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
                },
                http_port: serve.http_port,
                mqtt_port: serve.mqtt_port,
                mqtt_limits: broker::BrokerConfig {
                    max_packet_size: serve.mqtt_max_packet_bytes,
                    max_inflight: serve.mqtt_max_inflight,
                    max_queued_messages: serve.mqtt_max_queued_messages,
                    max_connections: serve.mqtt_max_connections,
                    max_session_expiry: std::time::Duration::from_secs(serve.mqtt_max_session_expiry),
                    ..broker::BrokerConfig::default()
                },
                mqtt: mqtt_api::MqttSettings {
                    latest_on_subscribe: serve.mqtt_latest_on_subscribe,
                    bridge: serve.mqtt_bridge.map(|(host, port)| mqtt_api::BridgeConfig {
                        host,
                        port,
                        client_id: serve.mqtt_bridge_client_id,
                        username: serve.mqtt_bridge_username,
                        password: serve.mqtt_bridge_password,
                        share_group: serve.mqtt_bridge_share_group,
                        token: serve.mqtt_bridge_token,
                    }),
                },
                auth: match serve.auth {
                    AuthFlag::Off => thingbase::Auth::Off,
                    AuthFlag::Required => thingbase::Auth::Required { admin_token: serve.admin_token },
                },
                unauthenticated_rate: serve.unauthenticated_rate,
                principal_rate: serve.principal_rate,
                default_top: serve.default_top,
                max_top: serve.max_top,
                max_body_bytes: serve.max_body_bytes,
                public_url: serve.public_url,
                durability: match serve.durability {
                    Durability::Process => store_sqlite::Durability::Process,
                    Durability::PowerLoss => store_sqlite::Durability::PowerLoss,
                },
                readers: serve.readers,
                https_port: Some(serve.https_port),
                mqtts_port: Some(serve.mqtts_port),
                coaps_port: Some(serve.coaps_port),
                tls_names: serve.tls_name,
                sealing_key: serve.sealing_key,
                baseline_profile: serve.baseline_profile,
                certificate_validity: std::time::Duration::from_secs(serve.certificate_days * 24 * 3600),
                retention_interval: std::time::Duration::from_secs(serve.retention_interval),
                query_budget: app::Budget {
                    time: (serve.query_time_budget_ms > 0)
                        .then(|| std::time::Duration::from_millis(serve.query_time_budget_ms)),
                    rows: (serve.query_row_budget > 0).then_some(serve.query_row_budget),
                    count: None,
                },
                rollups: serve.rollups == "on",
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(thingbase::run(config, Some(render)))
        }
    }
}

/// `host`, `host:port`, `[v6 address]` or `[v6 address]:port`; the port defaults to 1883.
fn parse_broker_address(text: &str) -> Result<(String, u16), String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').ok_or("an IPv6 address needs its closing `]`")?;
            (host, after.strip_prefix(':'))
        }
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
        return Err(format!("`{text}` is not HOST[:PORT]"));
    }
    let port = match port {
        Some(port) => port.parse().map_err(|_| format!("`{port}` is not a port number"))?,
        None => 1883,
    };
    Ok((host.to_owned(), port))
}

/// Runs one management command on the database and prints its answer.
fn admin(dir: DataDir, command: thingbase::AdminCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let answer = runtime.block_on(thingbase::admin(&dir.database(), command))?;
    println!("{answer}");
    Ok(())
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
