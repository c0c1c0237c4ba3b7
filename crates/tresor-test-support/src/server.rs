//! Spawns the real `tresor` binary on a free loopback port over a throwaway data directory,
//! and talks to it over HTTP: the harness of the black-box tests.
//!
//! # Backends
//!
//! [`TestServer::start`], [`TestServer::start_with`] and [`TestServer::start_tls`] run the
//! server on the embedded store (SQLite in its data directory), unless [`on_postgres`] says
//! otherwise: when the variable `TRESOR_TEST_BACKEND` is `postgres`, or when the running test
//! executable's file name starts with `postgres_` (cargo names a test binary after its file,
//! `tests/postgres_contract.rs` → `postgres_contract-<hash>`), each server gets a fresh database
//! on the throwaway PostgreSQL of [`crate::postgres`] (`--database-url`), a new root key file
//! (`--master-key-file`; the server never generates one for a database) and a random admin token
//! (`TRESOR_ADMIN_TOKEN`, unless the test gives its own). The data directory is still created
//! and holds `server.log`, but the store is not in it. [`TestServer::start_cluster`] always
//! uses PostgreSQL: several servers on one database.
//!
//! # Exact command lines
//!
//! [`TestServer::start_exact`] (and [`TestServer::spawn_exact`], which does not wait) run the
//! binary with exactly the arguments and environment the test gives, for tests about the start
//! itself (its flags, its refusals, its messages): nothing is added, neither `--data-dir` nor
//! `--database-url` nor a root key nor an admin token, whatever [`on_postgres`] says.
//! [`crate::process::run`] runs such a command line to its end instead.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::{Process, flag_value};

/// Set to `postgres` to run every [`TestServer`] on PostgreSQL (or `sqlite`, the default).
pub const BACKEND_ENV: &str = "TRESOR_TEST_BACKEND";

/// Whether servers of this test process run on PostgreSQL: `TRESOR_TEST_BACKEND=postgres`, or a
/// test executable whose file name starts with `postgres_`. Panics on any other value of the
/// variable than `postgres`, `sqlite` or empty, rather than silently testing the wrong thing.
pub fn on_postgres() -> bool {
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("postgres") => return true,
        Ok("sqlite" | "") | Err(std::env::VarError::NotPresent) => {}
        Ok(other) => panic!("{BACKEND_ENV}={other}: expected `postgres` or `sqlite`"),
        Err(e) => panic!("{BACKEND_ENV}: {e}"),
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("postgres_"))
        })
        .unwrap_or(false)
}

/// Which store a [`TestServer`] runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// The embedded store in [`TestServer::data_dir`].
    Sqlite,
    /// A PostgreSQL database (shared by the servers of one [`TestServer::start_cluster`]).
    Postgres { database_url: String },
}

/// What servers on one PostgreSQL database share: the database, the root key file (and the
/// directory that keeps it) and the admin token.
#[derive(Clone)]
struct PgSetup {
    database_url: String,
    key_file: PathBuf,
    _keys: Arc<tempfile::TempDir>,
    admin_token: String,
}

impl PgSetup {
    /// A fresh database, a new key file, and `admin_token` or a random one.
    async fn new(admin_token: Option<String>) -> PgSetup {
        let database_url = crate::postgres::fresh_database().await;
        let keys = tempfile::Builder::new()
            .prefix("tresor-test-keys-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let key_file = keys.path().join("root.key");
        tresor_crypto::RootKeyRing::generate_file(&key_file)
            .unwrap_or_else(|e| panic!("root key {}: {e}", key_file.display()));
        PgSetup {
            database_url,
            key_file,
            _keys: Arc::new(keys),
            admin_token: admin_token.unwrap_or_else(random_admin_token),
        }
    }
}

/// 32 random bytes, hex: 64 printable characters, as `TRESOR_ADMIN_TOKEN` requires (≥ 32).
fn random_admin_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap_or_else(|_| panic!("no randomness"));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("test-admin-{hex}")
}

/// A running `tresor serve`.
pub struct TestServer {
    bin: PathBuf,
    /// Keeps the data directory alive as long as the server (and its restarts).
    data: tempfile::TempDir,
    process: Option<Process>,
    pub addr: String,
    pub admin_token: String,
    pub http: reqwest::Client,
    /// What follows the automatic flags; for an exact server, the whole argument list.
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    scheme: &'static str,
    /// Set when the server runs on PostgreSQL (set up here; not for an exact server).
    pg: Option<PgSetup>,
    /// Whether `args` is the whole command line ([`TestServer::start_exact`]).
    exact: bool,
    /// The length of the log when the process was last spawned: what follows is this launch's.
    log_at_spawn: usize,
}

/// An answer: status, headers and the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The contract error code, if the body is an error.
    pub fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

impl TestServer {
    /// Starts the binary over a fresh temporary directory, on the embedded store or, when
    /// [`on_postgres`], on a fresh PostgreSQL database (see the module documentation).
    pub async fn start(bin: &Path) -> TestServer {
        TestServer::start_with(bin, &[], &[]).await
    }

    /// [`TestServer::start`] with more flags and environment variables.
    pub async fn start_with(bin: &Path, extra_args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        TestServer::start_inner(bin, extra_args, envs, None).await
    }

    /// Starts with `--tls-cert`/`--tls-key` and a client that trusts only `ca_pem`.
    pub async fn start_tls(bin: &Path, cert: &Path, key: &Path, ca_pem: &[u8]) -> TestServer {
        let cert = cert.to_string_lossy().into_owned();
        let key = key.to_string_lossy().into_owned();
        let args = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
        TestServer::start_inner(bin, &args, &[], Some(ca_pem)).await
    }

    async fn start_inner(
        bin: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        ca_pem: Option<&[u8]>,
    ) -> TestServer {
        let pg = if on_postgres() {
            Some(PgSetup::new(env_admin_token(envs)).await)
        } else {
            None
        };
        let mut s = TestServer::new(bin, extra_args, envs, ca_pem, pg);
        s.launch().await;
        if s.pg.is_none() {
            s.admin_token = std::fs::read_to_string(s.data_dir().join("admin.token"))
                .unwrap_or_else(|e| panic!("admin.token: {e}"))
                .trim()
                .to_owned();
        }
        s
    }

    /// Starts `bin` with exactly `args` and `envs` (see the module documentation) and waits until
    /// it is ready (`/readyz`). `args` must hold `--listen ADDR`: where the server is reached.
    /// `admin_token` is the token [`TestServer::admin`] uses; by default `TRESOR_ADMIN_TOKEN`
    /// of `envs`, else none. [`TestServer::data_dir`] holds only the log: the store is wherever
    /// `args` say. [`TestServer::launch`] starts the same command line again.
    pub async fn start_exact(
        bin: &Path,
        args: &[impl AsRef<OsStr>],
        envs: &[(&str, &str)],
        admin_token: Option<&str>,
    ) -> TestServer {
        let mut s = TestServer::spawn_exact(bin, args, envs, admin_token);
        s.wait_ready().await;
        s
    }

    /// [`TestServer::start_exact`] without waiting: call [`TestServer::wait_ready`] before
    /// talking to it (several servers can so start at the same moment).
    pub fn spawn_exact(
        bin: &Path,
        args: &[impl AsRef<OsStr>],
        envs: &[(&str, &str)],
        admin_token: Option<&str>,
    ) -> TestServer {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let addr = flag_value(&args, "--listen")
            .unwrap_or_else(|| panic!("an exact command line needs --listen: {args:?}"));
        let admin_token = admin_token
            .map(str::to_owned)
            .or_else(|| env_admin_token(envs))
            .unwrap_or_default();
        let mut s = TestServer::new(bin, &[], envs, None, None);
        s.args = args;
        s.exact = true;
        s.addr = addr;
        s.admin_token = admin_token;
        s.spawn();
        s
    }

    /// Starts `n` servers on one fresh PostgreSQL database (always PostgreSQL, whatever
    /// [`on_postgres`] says), one after the other so that the first one creates the schema.
    /// They share the root key file and the admin token (`TRESOR_ADMIN_TOKEN` from `envs`, or a
    /// random one); each has its own port and data directory (for its log). Restarting,
    /// killing or terminating one leaves the others running.
    pub async fn start_cluster(
        bin: &Path,
        n: usize,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Vec<TestServer> {
        let pg = PgSetup::new(env_admin_token(envs)).await;
        let mut servers = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = TestServer::new(bin, extra_args, envs, None, Some(pg.clone()));
            s.launch().await;
            servers.push(s);
        }
        servers
    }

    fn new(
        bin: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        ca_pem: Option<&[u8]>,
        pg: Option<PgSetup>,
    ) -> TestServer {
        let data = tempfile::Builder::new()
            .prefix("tresor-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut admin_token = String::new();
        if let Some(pg) = &pg {
            admin_token = pg.admin_token.clone();
            if env_admin_token_of(&envs).is_none() {
                envs.push(("TRESOR_ADMIN_TOKEN".into(), admin_token.clone()));
            }
        }
        TestServer {
            bin: bin.to_path_buf(),
            data,
            process: None,
            addr: String::new(),
            admin_token,
            http: http_client(ca_pem),
            args: extra_args.iter().map(OsString::from).collect(),
            envs,
            scheme: if ca_pem.is_some() { "https" } else { "http" },
            pg,
            exact: false,
            log_at_spawn: 0,
        }
    }

    /// Which store this server runs on (for an exact server: what its `--database-url` says).
    pub fn backend(&self) -> StorageBackend {
        let url = match &self.pg {
            Some(pg) => Some(pg.database_url.clone()),
            None if self.exact => flag_value(&self.args, "--database-url"),
            None => None,
        };
        match url {
            Some(database_url) => StorageBackend::Postgres { database_url },
            None => StorageBackend::Sqlite,
        }
    }

    /// The root key file a server on PostgreSQL was given (shared by a cluster's servers);
    /// `None` on the embedded store (its key is `DIR/root.key`) and for an exact server.
    pub fn key_file(&self) -> Option<PathBuf> {
        self.pg.as_ref().map(|pg| pg.key_file.clone())
    }

    /// The server's data directory, which holds its log (`server.log`); for an exact server,
    /// only the log.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Starts (or restarts) the process and waits until it answers: on a new free port, or for
    /// an exact server, with its command line as it was given.
    pub async fn launch(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    fn spawn(&mut self) {
        let args = if self.exact {
            self.args.clone()
        } else {
            self.addr = format!("127.0.0.1:{}", free_port());
            let mut args: Vec<OsString> = vec!["serve".into(), "--listen".into()];
            args.push(self.addr.clone().into());
            args.push("--data-dir".into());
            args.push(self.data.path().into());
            if let Some(pg) = &self.pg {
                args.push("--database-url".into());
                args.push(pg.database_url.clone().into());
                args.push("--master-key-file".into());
                args.push(pg.key_file.clone().into());
            }
            args.extend(self.args.iter().cloned());
            args
        };
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let log = self.data_dir().join("server.log");
        self.log_at_spawn = self.log().len();
        self.process = Some(Process::spawn(&self.bin, &args, &envs, &log));
    }

    /// Restarts the process over the same data directory (or database), as
    /// [`TestServer::launch`] does, and waits until `/readyz` answers 200: the store is open and
    /// reachable. Returns the time from the spawn until then (for crash tests, after
    /// [`TestServer::kill9`]).
    pub async fn relaunch_until_ready(&mut self) -> Duration {
        let started = Instant::now();
        self.spawn();
        self.wait_for("/readyz").await;
        started.elapsed()
    }

    /// Waits (a minute at the most) until the server answers `/healthz`, or for an exact
    /// server `/readyz`; panics with its log if it exits before.
    pub async fn wait_ready(&mut self) {
        let path = if self.exact { "/readyz" } else { "/healthz" };
        self.wait_for(path).await;
    }

    /// Waits (a minute at the most) until `path` answers a success; panics with the log if the
    /// process exits before. A server on a port of its choosing that exits because something
    /// else took that port first (see [`free_port`]) is started again on another, up to
    /// [`PORT_TAKEN_RETRIES`] times.
    async fn wait_for(&mut self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut respawned = 0;
        loop {
            if let Ok(r) = self.http.get(self.url(path)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.process.as_mut().and_then(Process::exited) {
                let port_taken = self
                    .log()
                    .get(self.log_at_spawn..)
                    .is_some_and(|this_launch| this_launch.contains("Address already in use"));
                if !self.exact && respawned < PORT_TAKEN_RETRIES && port_taken {
                    respawned += 1;
                    self.spawn();
                    continue;
                }
                panic!("tresor exited early ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tresor did not start; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's stdout and stderr so far (of all its launches).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("server.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.kill9();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.process.as_mut()?.terminate()
    }

    /// Any request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut headers = Vec::new();
        if body.is_some() {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            headers.push(("content-type", ct.to_owned()));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.raw(method, path, token, &headers, bytes).await
    }

    /// A request with explicit headers and raw body bytes.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("method: {e}"));
        let mut rb = self.http.request(m, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, v.as_str());
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.call(method, path, Some(&self.admin_token), body).await
    }

    /// Every audit event that `query` (for example `installation_id=inst-a`, or empty) selects,
    /// oldest first: follows `next_cursor` through pages of 1,000, so a busy test cannot miss the
    /// events past the first page.
    pub async fn audit_events(&self, query: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/v1/admin/audit?limit=1000".to_owned();
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(cursor) = &after {
                let cursor: String =
                    url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
                path.push_str(&format!("&after={cursor}"));
            }
            let r = self.admin("GET", &path, None).await;
            assert_eq!(r.status, 200, "GET {path}: {r:?}");
            let items = r.body["items"].as_array().cloned().unwrap_or_default();
            // An empty page ends the walk even with a cursor, so a bad cursor cannot loop.
            let empty = items.is_empty();
            events.extend(items);
            match r.body["next_cursor"].as_str() {
                Some(cursor) if !empty => after = Some(cursor.to_owned()),
                _ => return events,
            }
        }
    }

    /// Registers an app (scopes), an account, and installs; returns the installation token.
    pub async fn install(
        &self,
        app: &str,
        scopes: &[&str],
        account: &str,
        installation: &str,
    ) -> String {
        let r = self
            .admin(
                "PUT",
                &format!("/v1/admin/apps/{app}"),
                Some(&json!({ "scopes": scopes })),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "put app: {r:?}");
        let r = self
            .admin("PUT", &format!("/v1/admin/accounts/{account}"), None)
            .await;
        assert!(r.status == 201 || r.status == 200, "put account: {r:?}");
        let r = self
            .admin(
                "PUT",
                &format!("/v1/admin/installations/{installation}"),
                Some(&json!({ "app_id": app, "account_id": account })),
            )
            .await;
        assert_eq!(r.status, 201, "install: {r:?}");
        r.body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {r:?}"))
            .to_owned()
    }
}

/// The `TRESOR_ADMIN_TOKEN` a test passes, if any.
fn env_admin_token(envs: &[(&str, &str)]) -> Option<String> {
    envs.iter()
        .rev()
        .find(|(k, _)| *k == "TRESOR_ADMIN_TOKEN")
        .map(|(_, v)| v.to_string())
}

fn env_admin_token_of(envs: &[(String, String)]) -> Option<&str> {
    envs.iter()
        .rev()
        .find(|(k, _)| k == "TRESOR_ADMIN_TOKEN")
        .map(|(_, v)| v.as_str())
}

fn http_client(ca_pem: Option<&[u8]>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(pem) = ca_pem {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).unwrap_or_else(|e| panic!("test CA: {e}"));
        b = b.tls_certs_only(certs);
    }
    b.build().unwrap_or_else(|e| panic!("http client: {e}"))
}

/// How often [`TestServer`] starts a server again on a new port when its port was taken.
const PORT_TAKEN_RETRIES: u32 = 5;

/// Every port [`free_port`] has handed out in this process.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that was free a moment ago, and that this process has not been given before.
///
/// The port is only reserved in the sense that no other caller in this process gets it: a
/// server binds it after it has opened its store, long after this returns, and parallel tests
/// that were handed the same port would reach each other's servers (one CI run's fault test got
/// 401 from a stranger's server that way). The kernel may still give it to someone else's
/// `bind(0)` or outgoing connection in between; [`TestServer`] then starts its server again on
/// another port.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("free port: {e}"));
        if HANDED_OUT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
    panic!("no loopback port left that this process has not handed out before")
}

impl TestServer {
    /// Sends `request_target` byte for byte (HTTP clients normalize dot segments, so keys like
    /// `%2E%2E` need this) and returns the status code.
    pub async fn raw_target_status(
        &self,
        method: &str,
        request_target: &str,
        token: &str,
        body: &str,
    ) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let req = format!(
            "{method} {request_target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text}"))
    }
}

/// `PRAGMA integrity_check` on an embedded store (`tresor.db`) as a kill or a crash left it,
/// through a read-only connection: `Ok` when SQLite says `ok`.
pub fn integrity_check(db: &Path) -> Result<(), String> {
    let c = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("open {}: {e}", db.display()))?;
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| format!("integrity_check: {e}"))?;
    if rows == ["ok"] {
        Ok(())
    } else {
        Err(format!("integrity_check: {rows:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's `bind(0)` repeats itself: 3,000 calls on this machine gave 2,700 distinct
    /// ports. Without the record of what was handed out, this fails.
    #[test]
    fn free_port_never_hands_out_a_port_twice() {
        let ports: Vec<u16> = (0..3000).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
