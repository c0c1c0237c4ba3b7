//! A throwaway PostgreSQL for the tests: one cluster per test process, started lazily on first
//! use from the installed server binaries, and a fresh, empty database for every caller.
//!
//! - The binaries are found with `pg_config --bindir`, then the newest
//!   `/usr/lib/postgresql/*/bin`, then `PATH`. The cluster is `initdb`'d into a new temporary
//!   directory and started with `pg_ctl` on a free loopback port (another port is tried when the
//!   start fails), with durability off (`fsync=off`): it only has to outlive a test run.
//! - PostgreSQL refuses to run as root. When the tests run as root, the directory is handed to
//!   the `postgres` system user and `initdb`/`pg_ctl` run through `runuser -u postgres --`; as any
//!   other user they run directly.
//! - The cluster never outlives the test process: a watchdog shell, started before `initdb`,
//!   blocks reading a pipe whose only writer is this process. When the process ends — normally,
//!   by a panic, or by `kill -9` — the pipe closes and the watchdog stops the server
//!   (`pg_ctl stop -m immediate`) and removes the directory. It runs in its own process group, so
//!   a Ctrl-C on the test run does not kill it before it has cleaned up.
//! - With `TRESOR_TEST_DATABASE_URL` set (for example
//!   `postgres://postgres:pw@db.example:5432/postgres`), no cluster is started: that server is
//!   used instead (without TLS), and the databases are created on it (and left there, named
//!   `tresor_t_<pid>_<n>`).
//! - [`tls_cluster`] (one per process) and [`start_tls_cluster`] (one per call) start a
//!   separate cluster the same way that accepts only TLS and a password, with a certificate
//!   signed by a test CA: see [`TlsCluster`]. It never uses `TRESOR_TEST_DATABASE_URL`.
//!
//! Nothing here skips: when neither the binaries nor the variable are there, the caller panics
//! with a message that says what to install.
//!
//! Tests run on many threads and many tokio runtimes (one per `#[tokio::test]`, dropped at its
//! end), so the cluster is started synchronously (std processes, blocking waits) and no
//! connection is kept in a static: every call opens its own connection on the caller's runtime.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Set to a PostgreSQL URL to use that server instead of starting a throwaway one.
pub const DATABASE_URL_ENV: &str = "TRESOR_TEST_DATABASE_URL";

/// The one PostgreSQL server of this test process.
enum Server {
    /// A cluster this process started (and its watchdog removes).
    Local(LocalCluster),
    /// The server of `TRESOR_TEST_DATABASE_URL`: the URL of its maintenance database.
    External(url::Url),
}

struct LocalCluster {
    port: u16,
    dir: PathBuf,
    version: String,
    /// The write end of the watchdog's pipe: closed (and the cluster stopped) when the process
    /// ends. Never written to.
    _watchdog: ChildStdin,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU64 = AtomicU64::new(0);

/// How many ports are tried before giving up on starting the cluster.
const START_ATTEMPTS: usize = 5;

fn server() -> &'static Server {
    match SERVER.get_or_init(open_server) {
        Ok(s) => s,
        Err(msg) => panic!("{msg}"),
    }
}

fn open_server() -> Result<Server, String> {
    if let Ok(raw) = std::env::var(DATABASE_URL_ENV) {
        let url =
            url::Url::parse(&raw).map_err(|e| format!("{DATABASE_URL_ENV} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "{DATABASE_URL_ENV} must be a postgres:// or postgresql:// URL, not {}://…",
                url.scheme()
            ));
        }
        return Ok(Server::External(url));
    }
    LocalCluster::start().map(Server::Local)
}

/// What the tests run against, for logs: the version and address of the throwaway cluster, or
/// the (password-redacted) `TRESOR_TEST_DATABASE_URL`. Starts the cluster if needed.
pub fn server_description() -> String {
    match server() {
        Server::Local(c) => format!(
            "{} (throwaway cluster on 127.0.0.1:{} in {})",
            c.version,
            c.port,
            c.dir.display()
        ),
        Server::External(url) => format!("{DATABASE_URL_ENV}={}", redacted(url)),
    }
}

/// Creates a new, empty database (`tresor_t_<pid>_<n>`) and returns its URL, for example
/// `postgres://postgres@127.0.0.1:41234/tresor_t_4711_0`. The first call in a process starts the
/// cluster (blocking this thread for a few seconds). Needs a tokio runtime; panics, saying what
/// is missing, when there is no PostgreSQL to use.
pub async fn fresh_database() -> String {
    let base = match server() {
        Server::Local(c) => local_url(c.port, "postgres"),
        Server::External(url) => url.clone(),
    };
    let client = connect(base.as_str()).await;
    for _ in 0..1000 {
        let name = format!(
            "tresor_t_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        match create_database(&client, &name).await {
            Ok(()) => {
                let mut url = base.clone();
                url.set_path(&format!("/{name}"));
                return url.into();
            }
            // Left behind on a shared server by an earlier process with the same pid.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => panic!(
                "CREATE DATABASE {name} on {}: {}",
                redacted(&base),
                describe_error(&e)
            ),
        }
    }
    panic!(
        "no free database name tresor_t_{}_* on {}",
        std::process::id(),
        redacted(&base)
    )
}

/// How long [`create_database`] keeps retrying while the template database is in use.
const TEMPLATE_BUSY_RETRIES: u32 = 50;

/// `CREATE DATABASE name`, retried while PostgreSQL answers `55006 object_in_use` ("source
/// database "template1" is being accessed by other users"). Copying the template needs it to
/// have no other session (an autovacuum worker counts), and the server waits only 5 s for them
/// to leave. A CI run failed once here with "db error", which hid the code; this is the one
/// refusal of `CREATE DATABASE` with a fresh name that goes away by itself.
async fn create_database(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    let mut tries = 0;
    loop {
        match client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
        {
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && tries < TEMPLATE_BUSY_RETRIES =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// A PostgreSQL error with the server's code, message and detail: `tokio_postgres::Error`'s
/// `Display` says only "db error".
fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// [`fresh_database`] for code without a runtime (or inside one that must not be blocked on):
/// runs it on a helper thread with its own runtime.
pub fn fresh_database_blocking() -> String {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
            .block_on(fresh_database())
    })
    .join()
    .unwrap_or_else(|_| panic!("creating a test database failed (see the panic above)"))
}

/// Opens a connection (without TLS) on the caller's runtime; the connection task ends when the
/// client is dropped.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let shown = url::Url::parse(url)
        .map(|u| redacted(&u))
        .unwrap_or_else(|_| "<not a URL>".to_owned());
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {shown}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn local_url(port: u16, database: &str) -> url::Url {
    let text = format!("postgres://postgres@127.0.0.1:{port}/{database}");
    url::Url::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.into()
}

/// What sets one cluster apart from another: how `initdb` sets up authentication, and more
/// server options for `pg_ctl -o`.
struct ClusterSetup {
    /// `initdb`'s authentication arguments (`-A trust` for the shared cluster).
    auth: Vec<String>,
    /// More server options (`-c name=value …`), or empty.
    options: String,
}

impl LocalCluster {
    fn start() -> Result<LocalCluster, String> {
        LocalCluster::start_with(|_, _| {
            Ok(ClusterSetup {
                auth: vec!["-A".to_owned(), "trust".to_owned()],
                options: String::new(),
            })
        })
    }

    /// Starts a cluster; `prepare(dir, as_postgres)` runs once `dir` exists (owned by the user
    /// the server runs as) and the watchdog watches it, before `initdb`, and says how the
    /// cluster is set up. Files it writes into `dir` are removed with it.
    fn start_with(
        prepare: impl FnOnce(&Path, bool) -> Result<ClusterSetup, String>,
    ) -> Result<LocalCluster, String> {
        let bindir = find_bindir()?;
        let as_postgres = rustix::process::geteuid().is_root();
        if as_postgres {
            check_postgres_user()?;
        }
        let dir = tempfile::Builder::new()
            .prefix("tresor-pg-")
            .tempdir_in(temp_base(as_postgres)?)
            .map_err(|e| format!("creating the PostgreSQL test directory: {e}"))?
            .keep();
        // From here on, the watchdog removes `dir` when this process ends, whatever happens.
        if as_postgres {
            run(
                Command::new("chown").arg("postgres").arg(&dir),
                "chown postgres",
                &dir,
            )?;
        }
        let data = dir.join("data");
        let pg_ctl = bindir.join("pg_ctl");
        let watchdog = spawn_watchdog(&pg_ctl, &data, &dir, as_postgres)?;
        let setup = prepare(&dir, as_postgres)?;

        run(
            pg_command(&bindir.join("initdb"), as_postgres, &dir)
                .arg("-D")
                .arg(&data)
                .args(&setup.auth)
                .args(["-U", "postgres", "--no-sync"])
                .args(["-E", "UTF8", "--locale=C"]),
            "initdb",
            &dir,
        )?;
        let log = dir.join("postgres.log");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = crate::server::free_port();
            let mut options = format!(
                "-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
                sock = dir.display()
            );
            if !setup.options.is_empty() {
                options.push(' ');
                options.push_str(&setup.options);
            }
            let started = run(
                pg_command(&pg_ctl, as_postgres, &dir)
                    .args(["-w", "-t", "60", "-D"])
                    .arg(&data)
                    .args(["-o", &options, "-l"])
                    .arg(&log)
                    .arg("start"),
                "pg_ctl start",
                &dir,
            );
            match started {
                Ok(()) => {
                    let version = command_output(Command::new(&pg_ctl).arg("--version"))
                        .map(|v| v.replace("pg_ctl (PostgreSQL)", "PostgreSQL"))
                        .unwrap_or_else(|_| "PostgreSQL".to_owned());
                    return Ok(LocalCluster {
                        port,
                        dir,
                        version: version.trim().to_owned(),
                        _watchdog: watchdog,
                    });
                }
                Err(e) => {
                    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = format!("{e}\nserver log {}:\n{server_log}", log.display());
                    // A port taken meanwhile is the expected failure: try another one.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(format!(
            "could not start the throwaway PostgreSQL after {START_ATTEMPTS} attempts: \
             {last_error}"
        ))
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bindir() -> Result<PathBuf, String> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = command_output(Command::new("pg_config").arg("--bindir")) {
        let d = PathBuf::from(out.trim());
        if has_tools(&d) {
            return Ok(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, d)| has_tools(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_tools(d))
    {
        return Ok(d);
    }
    Err(format!(
        "the PostgreSQL tests need a PostgreSQL server: no initdb/pg_ctl found (not in \
         `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH). Install the server \
         (Debian/Ubuntu: `apt-get install -y postgresql`) or set {DATABASE_URL_ENV} to a server \
         this test may create databases on (postgres://USER:PASSWORD@HOST:PORT/postgres)."
    ))
}

fn check_postgres_user() -> Result<(), String> {
    match command_output(Command::new("id").args(["-u", "postgres"])) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "the tests run as root, and PostgreSQL refuses to run as root: it is started as the \
             `postgres` user through runuser, but that user does not exist ({e}). Install the \
             `postgresql` package (it creates the user), run the tests as a normal user, or set \
             {DATABASE_URL_ENV}."
        )),
    }
}

/// Where the cluster directory goes: the temporary directory, or `/tmp` when that one is not
/// usable (not reachable by the `postgres` user when running as root, or a path too long for a
/// Unix socket, or with characters that `pg_ctl -o` would have to quote).
fn temp_base(as_postgres: bool) -> Result<PathBuf, String> {
    let usable = |p: &Path| {
        let plain = p.to_str().is_some_and(|s| {
            s.len() < 60
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        });
        plain && (!as_postgres || traversable_by_others(p))
    };
    let tmp = std::env::temp_dir();
    if usable(&tmp) {
        return Ok(tmp);
    }
    let fallback = PathBuf::from("/tmp");
    if usable(&fallback) {
        return Ok(fallback);
    }
    Err(format!(
        "no directory for the throwaway PostgreSQL: neither {} nor /tmp is usable{}",
        tmp.display(),
        if as_postgres {
            " (each must be traversable by the postgres user: o+x on every parent)"
        } else {
            ""
        }
    ))
}

fn traversable_by_others(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.ancestors().all(|a| {
        a.as_os_str().is_empty()
            || std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

/// `bin`, run as the `postgres` user when this process is root, in `dir`, with no `PG*`
/// variable of the caller's environment leaking in.
fn pg_command(bin: &Path, as_postgres: bool, dir: &Path) -> Command {
    let mut c = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.current_dir(dir);
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
    ] {
        c.env_remove(var);
    }
    c
}

/// Runs `cmd` to completion with its output in a file of `dir` (never a pipe: a daemon it starts
/// could keep a pipe open), and returns that output in the error when it fails.
fn run(cmd: &mut Command, what: &str, dir: &Path) -> Result<(), String> {
    let out_path = dir.join(format!("{}.out", what.replace(' ', "-")));
    let out = File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", out_path.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| format!("{what}: could not run {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        return Ok(());
    }
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    Err(format!("{what} failed ({status}):\n{output}"))
}

/// Runs a short command and returns its stdout, or why it failed.
fn command_output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts the shell that stops the cluster in `data` and removes `dir` once this process is
/// gone: it waits for end-of-file on its stdin, whose write end only this process holds (std
/// opens pipes close-on-exec, so no other child inherits it).
fn spawn_watchdog(
    pg_ctl: &Path,
    data: &Path,
    dir: &Path,
    as_postgres: bool,
) -> Result<ChildStdin, String> {
    use std::os::unix::process::CommandExt as _;
    const SCRIPT: &str = r#"
trap '' INT HUP
cat >/dev/null 2>&1
if [ -f "$2/postmaster.pid" ]; then
  if [ "$4" = 1 ]; then
    runuser -u postgres -- "$1" stop -D "$2" -m immediate -w >/dev/null 2>&1
  else
    "$1" stop -D "$2" -m immediate -w >/dev/null 2>&1
  fi
fi
rm -rf "$3"
"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("tresor-pg-watchdog")
        .arg(pg_ctl)
        .arg(data)
        .arg(dir)
        .arg(if as_postgres { "1" } else { "0" })
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the PostgreSQL watchdog (sh): {e}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| "the PostgreSQL watchdog has no stdin".to_owned())
}

// ---- A TLS-only cluster ----

/// The names the TLS cluster's certificate is issued for.
const TLS_CERT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A throwaway cluster of its own (never the shared one, never `TRESOR_TEST_DATABASE_URL`)
/// that accepts TLS only, for the tests of TLS to the database:
///
/// - `ssl=on`, with a server certificate for `localhost` and `127.0.0.1` signed by a test CA
///   made here with rcgen ([`TlsCluster::ca_file`]);
/// - its `pg_hba.conf` has only `hostssl` lines (127.0.0.1 and ::1) with `scram-sha-256`: a
///   connection without TLS, or over the Unix socket, is refused, and the `postgres` user must
///   give its password ([`TlsCluster::password`], random, in every URL built here);
/// - it is stopped and its directory removed by the same watchdog as the shared cluster when
///   the process ends, or as soon as the `TlsCluster` is dropped.
///
/// A second CA, unrelated to the server's certificate, is written next to the first
/// ([`TlsCluster::unrelated_ca_file`]), for tests that must be refused.
pub struct TlsCluster {
    cluster: LocalCluster,
    password: String,
    ca_file: PathBuf,
    unrelated_ca_file: PathBuf,
    ca_der: Vec<u8>,
}

static TLS_CLUSTER: OnceLock<Result<TlsCluster, String>> = OnceLock::new();

/// The TLS cluster of this test process, started (blocking this thread for a few seconds) on
/// first use. Panics, saying what is missing, when it cannot be started.
pub fn tls_cluster() -> &'static TlsCluster {
    match TLS_CLUSTER.get_or_init(TlsCluster::start) {
        Ok(c) => c,
        Err(msg) => panic!("{msg}"),
    }
}

/// Starts a new TLS cluster owned by the caller (stopped when it is dropped). Panics, saying
/// what is missing, when it cannot be started.
pub fn start_tls_cluster() -> TlsCluster {
    TlsCluster::start().unwrap_or_else(|msg| panic!("{msg}"))
}

impl TlsCluster {
    /// Starts a new TLS cluster (see the type's documentation).
    pub fn start() -> Result<TlsCluster, String> {
        let password = format!("tls-test-pw-{}", random_hex(16));
        let mut files = None;
        let cluster = LocalCluster::start_with(|dir, as_postgres| {
            let made = write_tls_files(dir, as_postgres, &password)?;
            let setup = ClusterSetup {
                auth: vec![
                    "-A".to_owned(),
                    "scram-sha-256".to_owned(),
                    format!("--pwfile={}", made.pwfile.display()),
                ],
                options: format!(
                    "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c hba_file={} \
                     -c password_encryption=scram-sha-256",
                    made.cert.display(),
                    made.key.display(),
                    made.hba.display()
                ),
            };
            files = Some(made);
            Ok(setup)
        })
        .map_err(|e| format!("the TLS PostgreSQL test cluster: {e}"))?;
        let files = files.ok_or_else(|| "the TLS files were not written".to_owned())?;
        Ok(TlsCluster {
            cluster,
            password,
            ca_file: files.ca,
            unrelated_ca_file: files.unrelated_ca,
            ca_der: files.ca_der,
        })
    }

    /// The loopback port (of 127.0.0.1) it listens on.
    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// The password of its `postgres` superuser.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// PEM of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// PEM of a CA that signed nothing of this cluster.
    pub fn unrelated_ca_file(&self) -> &Path {
        &self.unrelated_ca_file
    }

    /// Its version and address, for logs.
    pub fn description(&self) -> String {
        format!(
            "{} (TLS-only throwaway cluster on 127.0.0.1:{} in {})",
            self.cluster.version,
            self.cluster.port,
            self.cluster.dir.display()
        )
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/DATABASE?sslmode=require`.
    pub fn url(&self, database: &str) -> String {
        self.url_via("127.0.0.1", database)
    }

    /// The URL of `database` with `host` as the server's name (what the certificate is checked
    /// against) and `sslmode=require`. A `host` that is not an IP address gets
    /// `hostaddr=127.0.0.1`, so the connection goes to this cluster whatever the name
    /// resolves to (or whether it resolves at all): `url_via("localhost", …)` matches the
    /// certificate, `url_via("db.invalid", …)` does not.
    pub fn url_via(&self, host: &str, database: &str) -> String {
        let mut url = format!(
            "postgres://postgres:{}@{host}:{}/{database}?sslmode=require",
            self.password, self.cluster.port
        );
        if host.parse::<std::net::IpAddr>().is_err() {
            url.push_str("&hostaddr=127.0.0.1");
        }
        url
    }

    /// Creates a new, empty database on this cluster (over verified TLS) and returns its
    /// [`TlsCluster::url`]. Needs a tokio runtime.
    pub async fn fresh_database(&self) -> String {
        let client = self.connect(&self.url("postgres")).await;
        let name = format!(
            "tresor_t_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        create_database(&client, &name).await.unwrap_or_else(|e| {
            panic!(
                "CREATE DATABASE {name} on {}: {}",
                self.description(),
                describe_error(&e)
            )
        });
        self.url(&name)
    }

    /// Opens a connection to `url` over TLS, the certificate verified against the test CA only
    /// (rustls, as the backend does); the connection task ends when the client is dropped.
    pub async fn connect(&self, url: &str) -> tokio_postgres::Client {
        let shown = url::Url::parse(url)
            .map(|u| redacted(&u))
            .unwrap_or_else(|_| "<not a URL>".to_owned());
        let (client, connection) = tokio_postgres::connect(url, self.tls_connector())
            .await
            .unwrap_or_else(|e| panic!("connecting to {shown} over TLS: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// A tokio-postgres TLS connector that trusts only the test CA.
    pub fn tls_connector(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.ca_der.clone()))
            .unwrap_or_else(|e| panic!("the test CA: {e}"));
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("TLS configuration: {e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    }
}

/// The files of a TLS cluster, in its directory.
struct TlsFiles {
    ca: PathBuf,
    ca_der: Vec<u8>,
    unrelated_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    pwfile: PathBuf,
    hba: PathBuf,
}

/// Makes the test CA, the server's certificate and key, an unrelated CA, the password file for
/// `initdb` and the TLS-only `pg_hba.conf`, in `dir`; what the server reads is handed to the
/// `postgres` user when it runs as that user (the key stays 0600: PostgreSQL insists).
fn write_tls_files(dir: &Path, as_postgres: bool, password: &str) -> Result<TlsFiles, String> {
    let tls = |e: rcgen::Error| format!("making the test certificates: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params("tresor test database CA")?, ca_key)
        .map_err(tls)?;
    let unrelated_key = rcgen::KeyPair::generate().map_err(tls)?;
    let unrelated =
        rcgen::CertifiedIssuer::self_signed(ca_params("tresor test unrelated CA")?, unrelated_key)
            .map_err(tls)?;

    let server_key = rcgen::KeyPair::generate().map_err(tls)?;
    let names: Vec<String> = TLS_CERT_NAMES.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).map_err(tls)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &ca).map_err(tls)?;

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        ca_der: ca.der().to_vec(),
        unrelated_ca: dir.join("unrelated-ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        pwfile: dir.join("pwfile"),
        hba: dir.join("pg_hba_tls.conf"),
    };
    write_file(&files.ca, ca.pem().as_bytes(), 0o644)?;
    write_file(&files.unrelated_ca, unrelated.pem().as_bytes(), 0o644)?;
    write_file(&files.cert, server_cert.pem().as_bytes(), 0o644)?;
    write_file(&files.key, server_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&files.pwfile, format!("{password}\n").as_bytes(), 0o600)?;
    write_file(
        &files.hba,
        b"# TLS only: every connection is TCP over TLS and gives a password.\n\
          hostssl all all 127.0.0.1/32 scram-sha-256\n\
          hostssl all all ::1/128 scram-sha-256\n",
        0o644,
    )?;
    if as_postgres {
        run(
            Command::new("chown")
                .arg("postgres")
                .arg(&files.cert)
                .arg(&files.key)
                .arg(&files.pwfile)
                .arg(&files.hba),
            "chown tls files",
            dir,
        )?;
    }
    Ok(files)
}

fn ca_params(name: &str) -> Result<rcgen::CertificateParams, String> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("making the test certificates: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Creates `path` (which must not exist) with `mode` and `contents`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).unwrap_or_else(|_| panic!("no randomness"));
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fresh_databases_are_separate() {
        let a = fresh_database().await;
        let b = fresh_database().await;
        assert_ne!(a, b);
        assert!(a.starts_with("postgres"), "{a}");
        let ca = connect(&a).await;
        let cb = connect(&b).await;
        for c in [&ca, &cb] {
            let row = c
                .query_one("SELECT 1", &[])
                .await
                .unwrap_or_else(|e| panic!("SELECT 1: {e}"));
            assert_eq!(row.get::<_, i32>(0), 1);
        }
        ca.batch_execute("CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (7)")
            .await
            .unwrap_or_else(|e| panic!("create in a: {e}"));
        let n: i64 = ca
            .query_one("SELECT count(*) FROM only_in_a", &[])
            .await
            .unwrap_or_else(|e| panic!("count in a: {e}"))
            .get(0);
        assert_eq!(n, 1);
        let err = cb
            .query_one("SELECT count(*) FROM only_in_a", &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("a table of {a} is visible in {b}"));
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
            "{err}"
        );
        eprintln!("ran on {}", server_description());
    }

    /// PostgreSQL waits only 5 s for other sessions to leave the template before it refuses
    /// `CREATE DATABASE`; a session held on `template1` for 6 s (as an autovacuum worker on a
    /// loaded machine can) must not fail the test that asked for a database.
    #[tokio::test]
    async fn a_busy_template_is_waited_for() {
        let mut template = match server() {
            Server::Local(c) => local_url(c.port, "postgres"),
            Server::External(url) => url.clone(),
        };
        template.set_path("/template1");
        let busy = connect(template.as_str()).await;
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            drop(busy);
        });
        let url = fresh_database().await;
        release
            .await
            .unwrap_or_else(|e| panic!("releasing template1: {e}"));
        let row = connect(&url)
            .await
            .query_one("SELECT 1", &[])
            .await
            .unwrap_or_else(|e| panic!("SELECT 1 on {url}: {e}"));
        assert_eq!(row.get::<_, i32>(0), 1);
    }

    #[test]
    fn fresh_database_without_a_runtime() {
        let url = fresh_database_blocking();
        assert!(url.contains("/tresor_t_"), "{url}");
    }

    #[test]
    fn urls_name_the_database_and_hide_passwords() {
        let u = local_url(5432, "tresor_t_1_2");
        assert_eq!(
            u.as_str(),
            "postgres://postgres@127.0.0.1:5432/tresor_t_1_2"
        );
        let mut ext = url::Url::parse("postgres://u:secret@db:5432/postgres?sslmode=disable")
            .unwrap_or_else(|e| panic!("{e}"));
        ext.set_path("/tresor_t_1_3");
        assert_eq!(
            ext.as_str(),
            "postgres://u:secret@db:5432/tresor_t_1_3?sslmode=disable"
        );
        assert!(!redacted(&ext).contains("secret"));
    }
}
