//! Test support only: a throwaway PostgreSQL cluster for the tests of one process, and a fresh
//! PostGIS-enabled database per test. Used as a dev-dependency; it needs nothing but the
//! standard library, the PostgreSQL server binaries and `psql`.
//!
//! Lifecycle:
//!
//! - The first [`cluster`] call in a process starts the cluster; every later call, from any
//!   thread, gets the same one (or the same error). It finds the binaries (`THINGBASE_PG_BIN`,
//!   else the highest version under `/usr/lib/postgresql/*/bin`), runs `initdb` into
//!   `<temp dir>/thingbase-pg-<pid>/data` (as the `postgres` user when the tests run as root,
//!   since PostgreSQL refuses to run as root), and starts the server on a free port of
//!   127.0.0.1 with its socket in the same directory, never on 5432. It then makes the
//!   template database every test database is copied from, with PostGIS created once.
//! - [`Cluster::database`] drops and recreates one database from that template, so a test
//!   pays a file copy rather than the creation of the extension.
//! - The server never outlives the test process. Statics have no destructors and a killed
//!   test binary runs none anyway, so the server is started under a small shell watchdog whose
//!   stdin is a pipe held open only by the test process. When the process ends, however it
//!   ends, the kernel closes the pipe; the watchdog then stops the server (fast shutdown) and
//!   removes the directory. Only a process killed during `initdb`, before the watchdog exists,
//!   leaves its directory behind.
//!
//! The server runs with durability off (`fsync`, `synchronous_commit` and `full_page_writes`
//! are all off): a crash loses the cluster, which is thrown away anyway. Never copy these
//! settings to a real server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The superuser `initdb` creates; tests connect as it over TCP, trusted without a password.
const SUPERUSER: &str = "postgres";
const HOST: &str = "127.0.0.1";
/// The database every test database is copied from; it has PostGIS.
const TEMPLATE: &str = "thingbase_template";
/// Databases [`Cluster::database`] must not drop: the server's own and the template.
const RESERVED: [&str; 4] = ["postgres", "template0", "template1", TEMPLATE];
const INSTALL: &str = "install the Debian packages `postgresql` and `postgresql-15-postgis-3` \
    (or `postgresql-postgis`, which follows the default version), as `cargo xtask ci` does, \
    or set THINGBASE_PG_BIN to a PostgreSQL bin directory";
/// How long the server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(60);
/// Attempts at starting the server: another process may take the free port found for it
/// before the server binds it.
const ATTEMPTS: usize = 5;

/// The watchdog (`sh -c`; `$1` is the cluster directory, the rest the server command line).
/// Its stdin, kept as fd 3, is the lifeline; the server gets no copy. End of file on it means
/// the test process is gone: stop the server and remove the directory. A line on it means the
/// server stopped by itself before accepting connections and the directory is reused for
/// another attempt. The shell exits when the server does, which is how a failed start is
/// noticed. Ctrl-C reaches the server too, but not the watcher, which ignores SIGINT as every
/// asynchronous list of a non-interactive shell does, so the directory still goes.
const WATCHDOG: &str = r#"
root=$1
shift
exec 3<&0 </dev/null
"$@" >"$root/postgres.log" 2>&1 3<&- &
server=$!
{
    if read -r _ <&3; then exit; fi
    kill -INT "$server" 2>/dev/null
    while kill -0 "$server" 2>/dev/null; do sleep 0.1; done
    rm -rf "$root"
} &
wait "$server"
"#;

/// The cluster of this test process.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    port: u16,
    /// The write end of the watchdog's stdin, which only has to stay open for as long as the
    /// process lives.
    lifeline: ChildStdin,
}

/// The cluster of this test process, started by the first call.
///
/// Fails with a message saying what to install when PostgreSQL or PostGIS is missing, and
/// with the server's log when it does not start.
pub fn cluster() -> Result<&'static Cluster, String> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(false)).as_ref().map_err(Clone::clone)
}

/// A second cluster of this process for benchmarks: durable as a production server is (fsync
/// and synchronous commit on, the defaults) and with memory for a benchmark's data
/// (`shared_buffers` 1 GB, larger WAL between checkpoints), so that what it measures is what
/// a real deployment would see.
pub fn durable_cluster() -> Result<&'static Cluster, String> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(true)).as_ref().map_err(Clone::clone)
}

impl Cluster {
    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the server's postmaster (its backends are its children), from the
    /// `postmaster.pid` of its data directory.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid_file = std::fs::read_to_string(self.root.join("data").join("postmaster.pid")).ok()?;
        pid_file.lines().next()?.trim().parse().ok()
    }

    /// Creates the database `name` afresh (dropping one of that name, and its connections),
    /// with PostGIS already created, and returns its connection URL,
    /// `postgres://postgres@127.0.0.1:<port>/<name>`.
    ///
    /// `name` is lowercased and every character outside `[a-z0-9_]` becomes `_`; a name longer
    /// than PostgreSQL's 63 bytes is cut and ends in a hash of the whole, so distinct long
    /// names stay distinct. Tests running in parallel must pass distinct names (their own,
    /// say); creating databases from several threads at once is fine.
    pub fn database(&self, name: &str) -> Result<String, String> {
        let name = database_name(name)?;
        self.psql(
            &self.url("postgres"),
            &[
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                &format!("CREATE DATABASE \"{name}\" TEMPLATE {TEMPLATE}"),
            ],
        )?;
        Ok(self.url(&name))
    }

    /// Turns TLS on for TCP connections to the cluster with this server certificate and key
    /// (PEM), without a restart; clients that do not ask for TLS still connect without it.
    pub fn enable_tls(&self, certificate_pem: &str, key_pem: &str) -> Result<(), String> {
        let dir = self.root.join("tls");
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (certificate, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&certificate, certificate_pem).map_err(|e| format!("cannot write the certificate: {e}"))?;
        std::fs::write(&key, key_pem).map_err(|e| format!("cannot write the key: {e}"))?;
        // The server refuses a key others can read.
        run(Command::new("chmod").arg("600").arg(&key))?;
        if running_as_root()? {
            run(Command::new("chown").arg("-R").arg(format!("{SUPERUSER}:{SUPERUSER}")).arg(&dir))?;
        }
        let quote = |p: &Path| p.display().to_string().replace('\'', "''");
        self.psql(
            &self.url("postgres"),
            &[
                &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", quote(&certificate)),
                &format!("ALTER SYSTEM SET ssl_key_file = '{}'", quote(&key)),
                "ALTER SYSTEM SET ssl = on",
                "SELECT pg_reload_conf()",
            ],
        )?;
        // The reload is asynchronous: wait until the server says TLS is on.
        for _ in 0..100 {
            if self.psql(&self.url("postgres"), &["SHOW ssl"]).unwrap_or_default().trim() == "on" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the server did not turn TLS on".into())
    }

    /// Makes the role `user` (a superuser) log in over TLS only, with a client certificate that
    /// `ca_pem` signed and whose common name is `user` (`cert` authentication), without a
    /// restart; other roles are left as they were. Needs [`Cluster::enable_tls`] first.
    pub fn require_client_certificates(&self, ca_pem: &str, user: &str) -> Result<(), String> {
        if user.is_empty() || !user.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(format!("{user:?}: a role name of lowercase letters and underscores, please"));
        }
        let ca = self.root.join("tls").join("client-ca.crt");
        std::fs::write(&ca, ca_pem).map_err(|e| format!("cannot write the client CA: {e}"))?;
        let hba = self.root.join("data").join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).map_err(|e| format!("cannot read {}: {e}", hba.display()))?;
        let first = format!("hostssl all {user} {HOST}/32 cert\nhost all {user} {HOST}/32 reject\n");
        if !rules.starts_with(&first) {
            std::fs::write(&hba, format!("{first}{rules}"))
                .map_err(|e| format!("cannot write {}: {e}", hba.display()))?;
        }
        if running_as_root()? {
            run(Command::new("chown").arg(format!("{SUPERUSER}:{SUPERUSER}")).arg(&ca).arg(&hba))?;
        }
        let quote = |p: &Path| p.display().to_string().replace('\'', "''");
        self.psql(
            &self.url("postgres"),
            &[
                &format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN \
                     CREATE ROLE {user} LOGIN SUPERUSER; END IF; END $$"
                ),
                &format!("ALTER SYSTEM SET ssl_ca_file = '{}'", quote(&ca)),
                "SELECT pg_reload_conf()",
            ],
        )?;
        // The reload is asynchronous: wait until a plain connection as `user` is refused.
        let plain = format!("{}?sslmode=disable", self.url_as(user, "postgres"));
        for _ in 0..100 {
            if self.psql(&plain, &["SELECT 1"]).is_err() && self.psql(&self.url("postgres"), &["SELECT 1"]).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("the server did not take the client certificate rules".into())
    }

    /// `postgres://<user>@127.0.0.1:<port>/<database>`, for a role other than the superuser.
    pub fn url_as(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@{HOST}:{}/{database}", self.port)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@{HOST}:{}/{database}", self.port)
    }

    /// Runs `statements` with `psql` against the database at `url`, each in its own
    /// transaction, and returns what they print, unaligned and without headers.
    pub(crate) fn psql(&self, url: &str, statements: &[&str]) -> Result<String, String> {
        let mut command = self.psql_command(url);
        for statement in statements {
            command.arg("-c").arg(statement);
        }
        run(&mut command)
    }

    /// `psql` for the database at `url`, stopping at the first error.
    pub(crate) fn psql_command(&self, url: &str) -> Command {
        let mut command = tool(&self.bin, "psql");
        command.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]);
        command
    }

    fn start(durable: bool) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        check_postgis(&bin)?;
        let as_postgres = running_as_root()?;
        let kind = if durable { "durable-" } else { "" };
        let root = std::env::temp_dir().join(format!("thingbase-pg-{kind}{}", std::process::id()));
        // Left by an earlier process that had the same id.
        let _ = std::fs::remove_dir_all(&root);
        let started = Cluster::init(&bin, &root, as_postgres).and_then(|()| {
            let mut failures = Vec::new();
            for _ in 0..ATTEMPTS {
                match Cluster::launch(&bin, &root, as_postgres, durable)? {
                    Ok(cluster) => return Ok(cluster),
                    Err(log) => failures.push(log),
                }
            }
            Err(format!("the PostgreSQL server did not start; its log:\n{}", failures.join("\n")))
        });
        let cluster = match started {
            Ok(cluster) => cluster,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        // On failure the cluster is dropped, which closes the lifeline: the watchdog stops the
        // server and removes the directory.
        cluster.make_template()?;
        Ok(cluster)
    }

    fn init(bin: &Path, root: &Path, as_postgres: bool) -> Result<(), String> {
        let socket = root.join("socket");
        std::fs::create_dir_all(&socket).map_err(|e| format!("cannot create {}: {e}", socket.display()))?;
        if as_postgres {
            run(Command::new("chown").arg("-R").arg(format!("{SUPERUSER}:{SUPERUSER}")).arg(root))?;
        }
        let mut initdb = command(as_postgres, &bin.join("initdb"));
        initdb.current_dir(root).arg("-D").arg(root.join("data"));
        initdb.args(["--auth=trust", "-U", SUPERUSER, "--encoding=UTF8", "--locale=C"]);
        // A cluster that lives for one test run needs no fsync of its files.
        initdb.args(["--no-sync", "--no-instructions"]);
        run(&mut initdb).map(drop)
    }

    /// Starts the server on a free port: `Ok(Err(log))` when it stopped before accepting
    /// connections (the port was taken, say), `Err` when waiting for it failed.
    fn launch(bin: &Path, root: &Path, as_postgres: bool, durable: bool) -> Result<Result<Cluster, String>, String> {
        let port = free_port()?;
        let mut watchdog = command(as_postgres, Path::new("sh"));
        watchdog.current_dir(root).arg("-c").arg(WATCHDOG).arg("sh").arg(root).arg(bin.join("postgres"));
        watchdog.arg("-D").arg(root.join("data")).arg("-k").arg(root.join("socket"));
        watchdog.arg("-p").arg(port.to_string());
        let settings: &[&str] = if durable {
            &["shared_buffers=1GB", "max_wal_size=4GB", "checkpoint_timeout=15min", "work_mem=32MB"]
        } else {
            &["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        };
        // More settings for a diagnosis (`shared_preload_libraries=pg_stat_statements`, say).
        let extra = std::env::var("THINGBASE_PG_SETTINGS").unwrap_or_default();
        let extra = extra.split_whitespace();
        for setting in ["listen_addresses=127.0.0.1", "max_connections=200"]
            .into_iter()
            .chain(settings.iter().copied())
            .chain(extra)
        {
            watchdog.arg("-c").arg(setting);
        }
        let mut child = watchdog
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the PostgreSQL watchdog `sh`: {e}"))?;
        let lifeline = child.stdin.take().ok_or("the watchdog has no stdin")?;
        let mut cluster = Cluster { bin: bin.to_owned(), root: root.to_owned(), port, lifeline };
        match cluster.wait_until_ready(&mut child, root)? {
            Ready::Accepting => Ok(Ok(cluster)),
            Ready::Stopped(log) => {
                // The directory stays for the next attempt. Should the line not get through,
                // closing the lifeline removes it, and the next attempt fails too.
                let _ = writeln!(cluster.lifeline, "abandoned");
                Ok(Err(log))
            }
        }
    }

    fn wait_until_ready(&self, watchdog: &mut Child, root: &Path) -> Result<Ready, String> {
        let deadline = Instant::now() + STARTUP;
        let log = || std::fs::read_to_string(root.join("postgres.log")).unwrap_or_default();
        loop {
            let mut probe = tool(&self.bin, "pg_isready");
            probe.args(["-q", "-h", HOST, "-U", SUPERUSER, "-p", &self.port.to_string()]);
            if probe.status().map_err(|e| format!("cannot run pg_isready: {e}"))?.success() {
                // Whoever took the port first answers too; only our own server will do.
                let ours = root.join("data");
                let serving = self.psql(&self.url("postgres"), &["SHOW data_directory"]).unwrap_or_default();
                if Path::new(serving.trim()) == ours {
                    return Ok(Ready::Accepting);
                }
            }
            if watchdog.try_wait().map_err(|e| format!("cannot wait for the watchdog: {e}"))?.is_some() {
                return Ok(Ready::Stopped(log()));
            }
            if Instant::now() > deadline {
                return Err(format!("PostgreSQL did not accept connections within {STARTUP:?}; its log:\n{}", log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn make_template(&self) -> Result<(), String> {
        self.psql(&self.url("postgres"), &[&format!("CREATE DATABASE {TEMPLATE}")])?;
        self.psql(&self.url(TEMPLATE), &["CREATE EXTENSION postgis"])
            .map_err(|e| format!("cannot create the PostGIS extension ({e}); {INSTALL}"))?;
        // Copying a database needs it to have no connections; refusing them makes sure.
        self.psql(
            &self.url("postgres"),
            &[&format!("ALTER DATABASE {TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")],
        )
        .map(drop)
    }
}

enum Ready {
    Accepting,
    Stopped(String),
}

fn database_name(name: &str) -> Result<String, String> {
    let mut sanitized: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '_' })
        .collect();
    if sanitized.len() > 63 {
        // Distinct long names (counters often come last) must stay distinct when cut.
        let hash =
            sanitized.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        sanitized.truncate(46);
        sanitized.push_str(&format!("_{hash:016x}"));
    }
    if sanitized.is_empty() || RESERVED.contains(&sanitized.as_str()) {
        return Err(format!("`{name}` cannot be the name of a test database"));
    }
    Ok(sanitized)
}

/// The PostgreSQL bin directory: `THINGBASE_PG_BIN`, else the highest version installed the
/// Debian way.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("THINGBASE_PG_BIN") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            return Err(format!("THINGBASE_PG_BIN is {}, which has no initdb", dir.display()));
        }
        return Ok(dir);
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten();
    versions
        .filter(|entry| entry.path().join("bin/initdb").is_file())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): {INSTALL}"))
}

/// Fails early, before a server is started, when the extension files are missing.
fn check_postgis(bin: &Path) -> Result<(), String> {
    // Without pg_config the check is left to CREATE EXTENSION, whose error says the same.
    let Ok(sharedir) = run(tool(bin, "pg_config").arg("--sharedir")) else { return Ok(()) };
    let control = Path::new(sharedir.trim()).join("extension/postgis.control");
    if control.is_file() {
        Ok(())
    } else {
        Err(format!("PostGIS is not installed for {} (no {}): {INSTALL}", bin.display(), control.display()))
    }
}

fn running_as_root() -> Result<bool, String> {
    Ok(run(Command::new("id").arg("-u"))?.trim() == "0")
}

/// A port of 127.0.0.1 that nothing listens on now (the kernel's choice, so never 5432 while
/// something else has it).
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind((HOST, 0)).map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("cannot find a free port: {e}"))
}

/// `program`, run as the `postgres` user when `as_postgres`.
fn command(as_postgres: bool, program: &Path) -> Command {
    let mut command = if as_postgres {
        let mut runuser = Command::new("runuser");
        runuser.args(["-u", SUPERUSER, "--"]).arg(program);
        runuser
    } else {
        Command::new(program)
    };
    without_libpq_environment(&mut command);
    command
}

/// A client tool from `bin`, or from the PATH when `bin` lacks it.
fn tool(bin: &Path, name: &str) -> Command {
    let path = bin.join(name);
    let mut command = Command::new(if path.is_file() { path } else { PathBuf::from(name) });
    without_libpq_environment(&mut command);
    command
}

/// Removes the caller's `PG*` variables (`PGOPTIONS`, `PGSSLMODE`, `PGDATA`, ...), which would
/// otherwise reach the tools and the server.
fn without_libpq_environment(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            command.env_remove(key);
        }
    }
}

/// Runs `command` and returns its stdout, or its stderr in the error.
fn run(command: &mut Command) -> Result<String, String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("{command:?} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim()))
    }
}

#[cfg(test)]
mod tests;
