//! `tresor serve`: the server's flags and environment variables (the contract's "Running the
//! server"), start-up over the embedded store or over PostgreSQL (the root key checked before
//! anything is migrated or written), this process's node registration (which also sets the
//! share of the rate limits this server enforces), the background loops, and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use secrecy::ExposeSecret as _;
use tracing::{info, warn};
use tresor_backend_postgres::PostgresBackend;
use tresor_backend_sqlite::{GroupCommitSnapshot, ReadOnlyKeys, SqliteBackend, SqliteOptions};
use tresor_core::CoreError;
use tresor_core::backend::Backend;
use tresor_core::key_provider::{EnvKeyProvider, FileKeyProvider, KeyProvider};
use tresor_core::model::Limits;
use tresor_core::service::{NODE_HEARTBEAT, RootKeyCheck, Service, live_node_count};
use tresor_crypto::{CryptoError, RootKeyRing};
use tresor_server::ratelimit::{Cidr, Rate, RateLimitConfig, RateLimits};
use tresor_server::{AppState, ExtraMetrics, ListenConfig, Metrics, TlsFiles};

use crate::database::{self, DatabaseArgs, DatabaseUrl, describe};

/// Flags of `tresor serve`; each has the environment variable the contract names.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TRESOR_LISTEN", default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,
    /// Directory of the embedded store. With --database-url it holds only the bootstrap admin
    /// token, if this server is the one that creates it (none is made when TRESOR_ADMIN_TOKEN is
    /// set).
    #[arg(long, env = "TRESOR_DATA_DIR", default_value = "./tresor-data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Root key file (`tresor keygen FILE` makes one; a file given here is never created).
    /// Default: DIR/root.key, created on the first start of an empty data directory, never
    /// beside an existing store. With --database-url it must be given (or TRESOR_MASTER_KEY):
    /// the same file on every server; it is never generated or stored in the database.
    #[arg(long, env = "TRESOR_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Public base URL of this server, for the OAuth callback.
    #[arg(long, env = "TRESOR_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long)]
    pub insecure_http: bool,
    /// Seconds a proxied request (and a call to a token endpoint) may take.
    #[arg(long, env = "TRESOR_PROXY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub proxy_timeout: u64,
    /// Largest upstream answer the proxy accepts, in bytes.
    #[arg(long, env = "TRESOR_PROXY_MAX_RESPONSE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub proxy_max_response_bytes: usize,
    /// Days an audit event is kept before it is purged.
    #[arg(long, env = "TRESOR_AUDIT_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_retention_days: u32,
    /// MiB the embedded store sets aside (`audit.reserve`) so that, once the disk is full and
    /// writes answer 507, the audit events of reads can still be written; 0 for none.
    #[arg(long, env = "TRESOR_AUDIT_RESERVE_MIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub audit_reserve_mib: u64,
    /// Live records each installation (and each app's shared store) may hold; a write past it
    /// answers 403 `quota_exceeded`. Off unless set.
    #[arg(long, env = "TRESOR_QUOTA_RECORDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub quota_records: Option<u64>,
    /// Stored bytes (keys, sealed values and descriptions) each installation (and each app's
    /// shared store) may hold; a write past it answers 403 `quota_exceeded`. Off unless set.
    #[arg(long, env = "TRESOR_QUOTA_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub quota_bytes: Option<u64>,
    /// Log format.
    #[arg(long, env = "TRESOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Requests per second each installation may make, over all servers together (answered
    /// 429 `rate_limited` with `Retry-After` beyond). Off when unset.
    #[arg(long, env = "TRESOR_RATE_LIMIT_PER_INSTALLATION", value_name = "R", value_parser = positive_rate)]
    pub rate_limit_per_installation: Option<f64>,
    /// Requests an installation may make at once above its rate. Default: one second's worth
    /// (at least 1).
    #[arg(long, env = "TRESOR_RATE_LIMIT_BURST", value_name = "N", requires = "rate_limit_per_installation", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,
    /// Failed authentications per minute a client address may make; beyond, its requests that
    /// carry credentials are answered 429 before the token is checked. Off when unset
    /// (recommended: 60, with --trusted-proxy set when a proxy sits in front).
    #[arg(long, env = "TRESOR_AUTH_FAILURE_LIMIT_PER_ADDRESS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failure_limit_per_address: Option<u32>,
    /// Requests per minute a client address may make to the OAuth callback. Off when unset
    /// (recommended: 30).
    #[arg(long, env = "TRESOR_OAUTH_CALLBACK_LIMIT_PER_ADDRESS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub oauth_callback_limit_per_address: Option<u32>,
    /// A proxy (address or CIDR block) whose `X-Forwarded-For` names the client; repeatable
    /// (comma-separated in the variable). Without one, the peer's address is the client's.
    #[arg(long = "trusted-proxy", env = "TRESOR_TRUSTED_PROXIES", value_name = "CIDR", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<Cidr>,
}

impl ServeArgs {
    /// The storage quotas of `--quota-records` and `--quota-bytes`.
    fn quota(&self) -> tresor_core::backend::Quota {
        tresor_core::backend::Quota {
            max_records: self.quota_records,
            max_bytes: self.quota_bytes,
        }
    }
}

/// A rate in requests per second: a positive, finite number.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a positive number of requests per second"
        )),
    }
}

fn trusted_proxy(s: &str) -> Result<Cidr, String> {
    Cidr::parse(s)
}

/// The limits of the flags.
fn rate_limit_config(args: &ServeArgs) -> RateLimitConfig {
    RateLimitConfig {
        per_installation: args.rate_limit_per_installation.map(|r| Rate {
            per_second: r,
            burst: args.rate_limit_burst.unwrap_or_else(|| {
                // One second's worth; the float is positive and finite (checked above).
                let b = r.ceil();
                if b >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    (b as u32).max(1)
                }
            }),
        }),
        auth_failures_per_address: args.auth_failure_limit_per_address.map(Rate::per_minute),
        oauth_callbacks_per_address: args.oauth_callback_limit_per_address.map(Rate::per_minute),
        trusted_proxies: args.trusted_proxies.clone(),
    }
}

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How often expired records are purged, and how many per transaction.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);
const PURGE_BATCH: usize = 1000;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    disable_core_dumps();
    if args.tls_cert.is_none() && !args.listen.ip().is_loopback() && !args.insecure_http {
        bail!(
            "refusing plain HTTP on the non-loopback address {}: give --tls-cert and --tls-key, \
             or --insecure-http if TLS ends in front of this server",
            args.listen
        );
    }

    let (storage, mut root) = match &args.database.database_url {
        Some(url) => open_postgres(&args, url).await?,
        None => open_embedded(&args).await?,
    };
    let root_locked = match Arc::get_mut(&mut root) {
        Some(ring) => ring.lock_in_memory(),
        None => Err(std::io::Error::other("the root key ring is shared")),
    };
    info!(versions = ?root.version_ids(), newest = root.active_id(), "root key loaded");

    let env_admin = std::env::var("TRESOR_ADMIN_TOKEN").ok();
    let mut service = Service::open(
        storage.backend(),
        root,
        Limits::default(),
        env_admin.as_deref(),
    )
    .await
    .map_err(|e| anyhow!("{}", storage.scrub(&describe(&e))))?;
    service.set_key_provider(key_provider(&args));
    // Over PostgreSQL, TRESOR_ADMIN_TOKEN (the same on every server) is admin access enough:
    // no plaintext token needs to be written to this machine's disk.
    let bootstrap = match (&storage, &env_admin) {
        (Storage::Postgres { .. }, Some(_)) => None,
        _ => service.bootstrap_admin_token().await.map_err(|e| {
            anyhow!(
                "creating the bootstrap admin token: {}",
                storage.scrub(&describe(&e))
            )
        })?,
    };
    if let Some(issued) = bootstrap {
        let dir = &args.data_dir;
        create_private_dir(dir)?;
        let path = dir.join(ADMIN_TOKEN_FILE);
        write_private_file(
            &path,
            format!("{}\n", issued.token.expose_secret()).as_bytes(),
        )?;
        warn!(
            path = %path.display(),
            token_id = %issued.token_id,
            "wrote the bootstrap admin token (the one plaintext token on disk); move it somewhere safe"
        );
    }

    report_key_pages(root_locked, service.lock_keys_in_memory());
    let shredded =
        crate::shredded::ShreddedList::beside_key(args.master_key_file.as_deref(), &args.data_dir);
    info!(path = %shredded.path().display(), "recording destroyed namespace keys in the shredded list");
    service.record_shredded_in(Arc::new(shredded));
    let service = Arc::new(service);
    service.register_node().await.map_err(|e| {
        anyhow!(
            "registering this server in the node registry: {}",
            storage.scrub(&describe(&e))
        )
    })?;
    let node_count = Arc::new(AtomicUsize::new(0));
    let rate_limits = Arc::new(RateLimits::new(rate_limit_config(&args)));
    // Only one process serves an embedded store (its lock file): a registration left by a
    // process that was killed must not halve the limits after a quick restart.
    let shared_limits = match storage {
        Storage::Postgres { .. } => Some(rate_limits.clone()),
        Storage::Embedded { .. } => None,
    };
    count_nodes(&service, &node_count, shared_limits.as_deref()).await;
    // Resumes a root key re-wrap that a crash interrupted, and follows a rotation made while
    // this server was down.
    if let Err(e) = service.refresh_root_keys().await {
        warn!(error = %storage.scrub(&describe(&e)), "checking the root key rotation failed");
    }
    info!(limits = ?rate_limits, "rate limits");
    info!(
        node_id = service.node_id(),
        backend = storage.name(),
        "registered this server"
    );

    let metrics = Arc::new(Metrics::new().context("creating metrics")?);
    let state = AppState {
        service: service.clone(),
        metrics,
        extra_metrics: Some(storage.extra_metrics(node_count.clone())),
        proxy_limits: tresor_server::proxy::forward::ProxyLimits {
            timeout: Duration::from_secs(args.proxy_timeout),
            max_response_bytes: args.proxy_max_response_bytes,
        },
        public_url: args.public_url.clone().unwrap_or_else(|| {
            let scheme = if args.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", args.listen)
        }),
        rate_limits,
        last_backup_file: match storage {
            Storage::Embedded { .. } => {
                Some(args.data_dir.join(crate::cli_backup::LAST_BACKUP_FILE))
            }
            Storage::Postgres { .. } => None,
        },
    };

    let retention = Duration::from_secs(u64::from(args.audit_retention_days) * 86_400);
    let purger = tokio::spawn(purge_loop(service.clone(), retention));
    // Its own task, so that a long purge never delays the heartbeat.
    let heartbeat = tokio::spawn(heartbeat_loop(service.clone(), node_count, shared_limits));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let served = tresor_server::serve(
        state,
        ListenConfig {
            addr: args.listen,
            tls,
        },
        shutdown_signal(),
        SHUTDOWN_GRACE,
    )
    .await;
    purger.abort();
    heartbeat.abort();
    match service.unregister_node().await {
        Ok(_) => info!(node_id = service.node_id(), "unregistered this server"),
        Err(e) => {
            warn!(node_id = service.node_id(), error = %storage.scrub(&describe(&e)), "unregistering this server failed")
        }
    }
    // Every queued write and audit event is committed before the process exits.
    storage.shutdown().await;
    served.with_context(|| format!("serving on {}", args.listen))?;
    info!("stopped");
    Ok(())
}

/// The backend this process serves from, and what belongs to it alone.
enum Storage {
    /// The embedded store; the lock file is held as long as the process serves.
    Embedded {
        backend: Arc<SqliteBackend>,
        _lock: std::fs::File,
    },
    Postgres {
        backend: Arc<PostgresBackend>,
        url: DatabaseUrl,
    },
}

impl Storage {
    fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Storage::Embedded { backend, .. } => backend.clone(),
            Storage::Postgres { backend, .. } => backend.clone(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Storage::Embedded { .. } => "sqlite",
            Storage::Postgres { .. } => "postgres",
        }
    }

    /// Driver messages can quote the connection string: never its password.
    fn scrub(&self, text: &str) -> String {
        match self {
            Storage::Embedded { .. } => text.to_owned(),
            Storage::Postgres { url, .. } => url.scrub(text),
        }
    }

    /// The metric families beyond the HTTP ones: the node count, and the group-commit
    /// histogram of the embedded store (PostgreSQL commits each request on its own: no such
    /// numbers, and no placeholders either).
    fn extra_metrics(&self, node_count: Arc<AtomicUsize>) -> ExtraMetrics {
        let group_commit = match self {
            Storage::Embedded { backend, .. } => Some(backend.clone()),
            Storage::Postgres { .. } => None,
        };
        Arc::new(move || {
            let mut out = nodes_metric(node_count.load(Ordering::Relaxed));
            if let Some(backend) = &group_commit {
                out.push_str(&group_commit_metrics(&backend.batch_sizes()));
            }
            out
        })
    }

    /// Commits what is queued (audit events of reads) and closes the storage.
    async fn shutdown(&self) {
        match self {
            Storage::Embedded { backend, .. } => backend.shutdown().await,
            Storage::Postgres { backend, .. } => backend.shutdown().await,
        }
    }
}

/// The embedded store, in the order that writes nothing until the root key is known to fit:
/// the key loaded (or found missing on a first start), the data directory's lock taken if it
/// has one, the key checked against the database through a read-only view of the file. Every
/// refusal up to there leaves the directory as it was, byte for byte (no directory, lock file,
/// key file, `-wal` or migration is created). Only then are the directory, the lock file and,
/// on the very first start, `DIR/root.key` created, and the database opened and migrated.
async fn open_embedded(args: &ServeArgs) -> anyhow::Result<(Storage, Arc<RootKeyRing>)> {
    let dir = &args.data_dir;
    let (key, held) = check_before_writing(args).await.with_context(|| {
        format!(
            "refusing to start on the data directory {}, nothing was written",
            dir.display()
        )
    })?;
    create_private_dir(dir)?;
    let lock = match held {
        Some(lock) => lock,
        None => lock_data_dir(dir)?,
    };
    let root = Arc::new(match key {
        EmbeddedKey::Loaded(ring, _) => ring,
        EmbeddedKey::FirstStart(path) => {
            let ring = RootKeyRing::generate_file(&path)
                .map_err(|e| anyhow!("creating the root key {}: {e}", path.display()))?;
            warn!(
                path = %path.display(),
                "created a root key next to the data; production keys belong elsewhere (--master-key-file)"
            );
            ring
        }
    });
    let backend = Arc::new(
        SqliteBackend::open(
            dir,
            SqliteOptions {
                audit_reserve_bytes: args.audit_reserve_mib << 20,
                quota: args.quota(),
                ..SqliteOptions::default()
            },
        )
        .map_err(|e| anyhow!("{}", describe(&e)))
        .with_context(|| format!("opening the embedded store in {}", dir.display()))?,
    );
    Ok((
        Storage::Embedded {
            backend,
            _lock: lock,
        },
        root,
    ))
}

/// PostgreSQL, in the order that keeps a shared database safe: the root key must be supplied;
/// connect; when the database already holds a store, check the key against it before
/// migrating or writing anything; then migrate (under the migration lock, so that servers may
/// start together).
async fn open_postgres(
    args: &ServeArgs,
    url: &DatabaseUrl,
) -> anyhow::Result<(Storage, Arc<RootKeyRing>)> {
    let root = Arc::new(load_supplied_root_key(args)?);
    let backend = database::connect_with_quota(url, &args.database, args.quota()).await?;
    let version = backend
        .schema_version()
        .await
        .map_err(|e| url.error("reading the database schema version", &e))?;
    if version > 0 {
        match Service::check_root_key(&backend, &root).await {
            Ok(RootKeyCheck::Matches) => info!("root key matches the database"),
            Ok(RootKeyCheck::NewStore) => {}
            Err(e) => {
                backend.shutdown().await;
                let why = key_refusal(&e);
                bail!(
                    "refusing to start on {url}, nothing was written: {}",
                    url.scrub(&why)
                );
            }
        }
    }
    let report = backend
        .migrate()
        .await
        .map_err(|e| url.error(&format!("migrating {url}"), &e))?;
    if report.applied.is_empty() {
        info!(database = %url, schema_version = report.version, "database schema is current");
    } else {
        info!(database = %url, applied = ?report.applied, schema_version = report.version, "migrated the database schema");
    }
    Ok((
        Storage::Postgres {
            backend: Arc::new(backend),
            url: url.clone(),
        },
        root,
    ))
}

/// Where this server loads its root key versions from again while serving (a rotation reloads
/// them): the same source, in the same order, as at start.
fn key_provider(args: &ServeArgs) -> Arc<dyn KeyProvider> {
    if let Some(path) = &args.master_key_file {
        return Arc::new(FileKeyProvider::new(path));
    }
    if std::env::var_os("TRESOR_MASTER_KEY").is_some() {
        return Arc::new(EnvKeyProvider::new("TRESOR_MASTER_KEY"));
    }
    Arc::new(FileKeyProvider::new(args.data_dir.join(ROOT_KEY_FILE)))
}

/// The root key of a server over PostgreSQL: given by the operator, never generated here
/// (each server would make its own) and never stored in the database.
fn load_supplied_root_key(args: &ServeArgs) -> anyhow::Result<RootKeyRing> {
    if let Some(path) = &args.master_key_file {
        return load_key_file(path);
    }
    if let Ok(b64) = std::env::var("TRESOR_MASTER_KEY") {
        return RootKeyRing::from_base64(&b64).map_err(|e| anyhow!("TRESOR_MASTER_KEY: {e}"));
    }
    bail!(
        "the root key is missing: with --database-url it must be supplied, because the server \
         never generates it or stores it in the database; give --master-key-file FILE (or \
         TRESOR_MASTER_KEY_FILE), the same file on every server, or TRESOR_MASTER_KEY \
         (`tresor keygen FILE` makes a key file for a new database)"
    )
}

pub(crate) const DB_FILE: &str = "tresor.db";
pub(crate) const ROOT_KEY_FILE: &str = "root.key";
const ADMIN_TOKEN_FILE: &str = "admin.token";
pub(crate) const LOCK_FILE: &str = "lock";

/// Where the embedded store's root key comes from.
enum EmbeddedKey {
    /// Given (`--master-key-file`, `TRESOR_MASTER_KEY`) or found at `DIR/root.key`, with
    /// where it came from, for the messages.
    Loaded(RootKeyRing, String),
    /// The very first start: no key anywhere and no store yet, so `DIR/root.key` is created
    /// (the quick start relies on it). Never when a database exists: a new key would open
    /// none of its records.
    FirstStart(PathBuf),
}

/// Everything the embedded start checks before its first write: the root key, the lock of a
/// data directory that has one (a running server refuses us before we read its file), and the
/// key against the store. The lock, if taken, is handed on.
async fn check_before_writing(
    args: &ServeArgs,
) -> anyhow::Result<(EmbeddedKey, Option<std::fs::File>)> {
    let dir = &args.data_dir;
    let has_store = dir.join(DB_FILE).exists();
    let key = embedded_root_key(args, has_store)?;
    let held = lock_existing_data_dir(dir)?;
    if let EmbeddedKey::Loaded(root, source) = &key {
        check_embedded_key(dir, root)
            .await
            .with_context(|| format!("checking the root key from {source} against the store"))?;
    }
    Ok((key, held))
}

fn embedded_root_key(args: &ServeArgs, has_store: bool) -> anyhow::Result<EmbeddedKey> {
    if let Some(path) = &args.master_key_file {
        return load_key_file(path).map(|ring| EmbeddedKey::Loaded(ring, key_file_source(path)));
    }
    if let Ok(b64) = std::env::var("TRESOR_MASTER_KEY") {
        return RootKeyRing::from_base64(&b64)
            .map(|ring| EmbeddedKey::Loaded(ring, "TRESOR_MASTER_KEY".to_owned()))
            .map_err(|e| anyhow!("TRESOR_MASTER_KEY: {e}"));
    }
    let path = args.data_dir.join(ROOT_KEY_FILE);
    // symlink_metadata: a dangling link is a key file that is missing, not one to create.
    if std::fs::symlink_metadata(&path).is_ok() {
        return load_key_file(&path).map(|ring| EmbeddedKey::Loaded(ring, key_file_source(&path)));
    }
    if has_store {
        bail!(
            "the data directory holds a store but its root key {} is missing; a new key would \
             open none of its records, so none is generated: restore the key file from its \
             backup, or give the store's key with --master-key-file FILE (or TRESOR_MASTER_KEY)",
            path.display()
        );
    }
    Ok(EmbeddedKey::FirstStart(path))
}

fn key_file_source(path: &Path) -> String {
    format!("the file {}", path.display())
}

/// Reads a root key file, saying plainly what is wrong with it (never a byte of it).
pub(crate) fn load_key_file(path: &Path) -> anyhow::Result<RootKeyRing> {
    RootKeyRing::load_file(path).map_err(|e| match e {
        CryptoError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => anyhow!(
            "the root key file {} does not exist; a key file that is given is never created \
             (at a wrong path, a new key would open nothing): check the path, or make a key \
             for a new store with `tresor keygen FILE`",
            path.display()
        ),
        CryptoError::KeyFile(msg) => {
            let shown = path.display().to_string();
            let what = msg
                .strip_prefix(&shown)
                .and_then(|m| m.strip_prefix(": "))
                .unwrap_or(&msg);
            anyhow!(
                "the root key file {shown} is damaged or not a tresor root key file: {what}; \
                 restore it from its backup"
            )
        }
        other => anyhow!("cannot read the root key file {}: {other}", path.display()),
    })
}

/// Checks the key against the embedded store through a read-only view of its file; a
/// directory without a migrated database has nothing to check against.
pub(crate) async fn check_embedded_key(dir: &Path, root: &RootKeyRing) -> anyhow::Result<()> {
    let view = ReadOnlyKeys::open(dir).map_err(|e| {
        anyhow!(
            "reading {} to check the root key: {}",
            dir.join(DB_FILE).display(),
            describe(&e)
        )
    })?;
    let Some(view) = view else {
        return Ok(());
    };
    match Service::check_root_key(&view, root).await {
        Ok(RootKeyCheck::Matches) => {
            info!("root key matches the store");
            Ok(())
        }
        Ok(RootKeyCheck::NewStore) => Ok(()),
        Err(e) => Err(anyhow!("{}", key_refusal(&e))),
    }
}

/// Why [`Service::check_root_key`] refused a key, as the operator reads it.
fn key_refusal(e: &CoreError) -> String {
    match e {
        CoreError::Unavailable(why) => why.clone(),
        other => describe(other),
    }
}

/// One server per data directory: a second one would share the SQLite file but not the
/// writer, and its start-up (bootstrap token, root key creation) could race the first.
pub(crate) fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    hold_lock(file, dir, &path)
}

/// The lock of a data directory that has a lock file already, without creating one: `None`
/// when there is none (then no server runs there either).
fn lock_existing_data_dir(dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let path = dir.join(LOCK_FILE);
    match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(file) => hold_lock(file, dir, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

fn hold_lock(file: std::fs::File, dir: &Path, path: &Path) -> anyhow::Result<std::fs::File> {
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another tresor serve is using {} (its lock file {} is held)",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// Secrets live in this process's memory; a core dump would write them to disk. Also marks the
/// process not dumpable (`PR_SET_DUMPABLE` 0), which keeps other processes of the same user
/// from attaching a debugger or reading `/proc/PID/mem`; nothing in tresor reads its own
/// `/proc/self` files, which this makes root-owned.
fn disable_core_dumps() {
    let limit = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Core, limit) {
        warn!(error = %e, "could not disable core dumps");
    }
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        warn!(error = %e, "could not mark the process not dumpable");
    }
}

/// Says once, loudly, which keys are not locked in memory (they could be written to swap). The
/// server keeps running either way.
fn report_key_pages(root: std::io::Result<()>, service: std::io::Result<()>) {
    let mut refused = Vec::new();
    let mut why = None;
    for (keys, result) in [
        ("the root key ring", root),
        ("the token pepper and the system key", service),
    ] {
        if let Err(e) = result {
            refused.push(keys);
            why.get_or_insert(e);
        }
    }
    match why {
        None => info!(
            "key pages locked in memory (root key ring, token pepper, system key); \
             cached namespace keys are not locked"
        ),
        Some(e) => warn!(
            error = %e,
            memlock_limit = %memlock_limit(),
            "SECURITY: could not lock key pages in memory; {} may be written to swap. \
             Raise the locked-memory limit for this process (a few pages are enough: \
             `ulimit -l 64`, LimitMEMLOCK=64K in a systemd unit, `--ulimit memlock=65536` \
             for docker) or grant it CAP_IPC_LOCK",
            refused.join(" and ")
        ),
    }
}

/// `RLIMIT_MEMLOCK` as "soft/hard" bytes, for the warning.
fn memlock_limit() -> String {
    let l = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
    format!("{}/{}", show(l.current), show(l.maximum))
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRESOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second subscriber (tests that call run twice) is harmless; ignore the error.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    info!("shutting down: finishing in-flight requests");
}

/// Purges expired records and audit events past retention, a bounded batch per transaction so
/// the writer is never held for long.
async fn purge_loop(service: Arc<Service>, audit_retention: Duration) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tick.tick().await;
        loop {
            match service.purge_expired(PURGE_BATCH).await {
                Ok(n) if n == PURGE_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "purging expired records failed");
                    break;
                }
            }
        }
        loop {
            match service.purge_audit(audit_retention, PURGE_BATCH).await {
                Ok(n) if n == PURGE_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "purging old audit events failed");
                    break;
                }
            }
        }
    }
}

/// Refreshes this process's registration every [`NODE_HEARTBEAT`], and with it the node count
/// of the metrics and the share of the rate limits this server enforces (over PostgreSQL).
async fn heartbeat_loop(
    service: Arc<Service>,
    node_count: Arc<AtomicUsize>,
    limits: Option<Arc<RateLimits>>,
) {
    let mut tick = tokio::time::interval(NODE_HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the registration was made just before.
    tick.tick().await;
    loop {
        tick.tick().await;
        // First reload the key file (a version added or retired), so that the registration
        // shows what this server holds now.
        if let Err(e) = service.refresh_root_keys().await {
            warn!(error = %e, "checking the root key rotation failed");
        }
        if let Err(e) = service.register_node().await {
            warn!(error = %e, node_id = service.node_id(), "refreshing the node registration failed");
        }
        count_nodes(&service, &node_count, limits.as_deref()).await;
    }
}

/// Counts the registered servers for the metrics, and the live ones for the limits: each of N
/// live servers enforces 1/N of every rate limit.
async fn count_nodes(service: &Service, node_count: &AtomicUsize, limits: Option<&RateLimits>) {
    match service.nodes().await {
        Ok(nodes) => {
            node_count.store(nodes.len(), Ordering::Relaxed);
            if let Some(limits) = limits {
                limits.set_nodes(live_node_count(&nodes));
            }
        }
        Err(e) => warn!(error = %e, "listing the registered servers failed"),
    }
}

/// The node count as a Prometheus gauge.
fn nodes_metric(count: usize) -> String {
    format!(
        "# HELP tresor_nodes Servers registered on this store, as of this server's last heartbeat.\n\
         # TYPE tresor_nodes gauge\n\
         tresor_nodes {count}\n"
    )
}

/// The group-commit batch sizes as a Prometheus histogram.
fn group_commit_metrics(s: &GroupCommitSnapshot) -> String {
    let mut out = String::new();
    out.push_str("# HELP tresor_group_commit_batch_size Requests committed per transaction (one fsync each).\n");
    out.push_str("# TYPE tresor_group_commit_batch_size histogram\n");
    for (bound, count) in s.cumulative_buckets() {
        out.push_str(&format!(
            "tresor_group_commit_batch_size_bucket{{le=\"{bound}\"}} {count}\n"
        ));
    }
    out.push_str(&format!(
        "tresor_group_commit_batch_size_bucket{{le=\"+Inf\"}} {}\n",
        s.commits_total
    ));
    out.push_str(&format!(
        "tresor_group_commit_batch_size_sum {}\n",
        s.batch_size_sum
    ));
    out.push_str(&format!(
        "tresor_group_commit_batch_size_count {}\n",
        s.commits_total
    ));
    let counters = [
        (
            "tresor_group_commit_failed_total",
            "Transactions whose commit failed.",
            s.failed_commits_total,
        ),
        (
            "tresor_audit_events_committed_total",
            "Audit events written.",
            s.audit_events_committed_total,
        ),
        (
            "tresor_sqlite_checkpoints_total",
            "WAL checkpoints run off the writer thread.",
            s.checkpoints_total,
        ),
        (
            "tresor_sqlite_checkpoints_failed_total",
            "WAL checkpoints that failed.",
            s.failed_checkpoints_total,
        ),
    ];
    for (name, help, value) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP tresor_sqlite_disk_full 1 while the disk is full: writes answer 507 until space returns.\n\
         # TYPE tresor_sqlite_disk_full gauge\n\
         tresor_sqlite_disk_full {}\n",
        u8::from(s.disk_full)
    ));
    out.push_str(&format!(
        "# HELP tresor_sqlite_writer_stopped 1 once a storage failure (an I/O error at commit) \
         stopped all writes: restart the server after checking the disk.\n\
         # TYPE tresor_sqlite_writer_stopped gauge\n\
         tresor_sqlite_writer_stopped {}\n",
        u8::from(s.writer_stopped)
    ));
    out
}
