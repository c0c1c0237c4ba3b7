//! `tresor serve`: the server's flags and environment variables (the contract's "Running the
//! server"), start-up of the embedded store, and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use secrecy::ExposeSecret as _;
use tracing::{info, warn};
use tresor_backend_sqlite::{GroupCommitSnapshot, SqliteBackend, SqliteOptions};
use tresor_core::backend::Backend;
use tresor_core::model::Limits;
use tresor_core::service::Service;
use tresor_crypto::RootKeyRing;
use tresor_server::{AppState, ExtraMetrics, ListenConfig, Metrics, TlsFiles};

/// Flags of `tresor serve`; each has the environment variable the contract names.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TRESOR_LISTEN", default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,
    /// Directory of the embedded store (ignored with --database-url).
    #[arg(long, env = "TRESOR_DATA_DIR", default_value = "./tresor-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…) to use instead of the embedded store.
    #[arg(long, env = "TRESOR_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Root key file (`tresor keygen FILE` makes one). Default: DIR/root.key, created on first start.
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
    /// Log format.
    #[arg(long, env = "TRESOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How often expired records are purged, and how many per transaction.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);
const PURGE_BATCH: usize = 1000;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    disable_core_dumps();
    if args.database_url.is_some() {
        bail!(
            "--database-url: the PostgreSQL backend is not available yet in this release; \
             run without it to use the embedded store"
        );
    }
    if args.tls_cert.is_none() && !args.listen.ip().is_loopback() && !args.insecure_http {
        bail!(
            "refusing plain HTTP on the non-loopback address {}: give --tls-cert and --tls-key, \
             or --insecure-http if TLS ends in front of this server",
            args.listen
        );
    }

    let dir = &args.data_dir;
    let fresh = !dir.join(DB_FILE).exists();
    create_private_dir(dir)?;
    let _lock = lock_data_dir(dir)?;
    let root = Arc::new(load_root_key(&args, fresh)?);
    info!(versions = ?root.version_ids(), active = root.active_id(), "root key loaded");

    let backend = Arc::new(
        SqliteBackend::open(dir, SqliteOptions::default())
            .with_context(|| format!("opening the embedded store in {}", dir.display()))?,
    );
    let env_admin = std::env::var("TRESOR_ADMIN_TOKEN").ok();
    let service = Service::open(
        backend.clone() as Arc<dyn Backend>,
        root,
        Limits::default(),
        env_admin.as_deref(),
    )
    .await
    .map_err(|e| anyhow!("{}", e.public_message()))?;
    if let Some(issued) = service
        .bootstrap_admin_token()
        .await
        .map_err(|e| anyhow!("creating the bootstrap admin token: {}", e.public_message()))?
    {
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

    let service = Arc::new(service);
    let metrics = Arc::new(Metrics::new().context("creating metrics")?);
    let stats_backend = backend.clone();
    let extra: ExtraMetrics = Arc::new(move || group_commit_metrics(&stats_backend.batch_sizes()));
    let state = AppState {
        service: service.clone(),
        metrics,
        extra_metrics: Some(extra),
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
    };

    let retention = Duration::from_secs(u64::from(args.audit_retention_days) * 86_400);
    let purger = tokio::spawn(purge_loop(service.clone(), retention));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(listen = %args.listen, "tresor serving on {scheme}://{}", args.listen);
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
    // Every queued write and audit event is committed before the process exits.
    backend.shutdown().await;
    served.with_context(|| format!("serving on {}", args.listen))?;
    info!("stopped");
    Ok(())
}

const DB_FILE: &str = "tresor.db";
const ROOT_KEY_FILE: &str = "root.key";
const ADMIN_TOKEN_FILE: &str = "admin.token";

fn load_root_key(args: &ServeArgs, fresh: bool) -> anyhow::Result<RootKeyRing> {
    if let Some(path) = &args.master_key_file {
        return RootKeyRing::load_file(path)
            .map_err(|e| anyhow!("root key file {}: {e}", path.display()));
    }
    if let Ok(b64) = std::env::var("TRESOR_MASTER_KEY") {
        return RootKeyRing::from_base64(&b64).map_err(|e| anyhow!("TRESOR_MASTER_KEY: {e}"));
    }
    let path = args.data_dir.join(ROOT_KEY_FILE);
    if path.exists() {
        return RootKeyRing::load_file(&path)
            .map_err(|e| anyhow!("root key file {}: {e}", path.display()));
    }
    if !fresh {
        bail!(
            "the data directory {} holds a store but no root key ({} is missing): give \
             --master-key-file or TRESOR_MASTER_KEY",
            args.data_dir.display(),
            path.display()
        );
    }
    let ring = RootKeyRing::generate_file(&path)
        .map_err(|e| anyhow!("creating the root key {}: {e}", path.display()))?;
    warn!(
        path = %path.display(),
        "created a root key next to the data; production keys belong elsewhere (--master-key-file)"
    );
    Ok(ring)
}

/// One server per data directory: a second one would share the SQLite file but not the
/// writer, and its start-up (bootstrap token, root key creation) could race the first.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
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

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
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

/// Secrets live in this process's memory; a core dump would write them to disk.
fn disable_core_dumps() {
    let limit = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Core, limit) {
        warn!(error = %e, "could not disable core dumps");
    }
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
    out.push_str("# HELP tresor_group_commit_failed_total Transactions whose commit failed.\n");
    out.push_str("# TYPE tresor_group_commit_failed_total counter\n");
    out.push_str(&format!(
        "tresor_group_commit_failed_total {}\n",
        s.failed_commits_total
    ));
    out.push_str("# HELP tresor_audit_events_committed_total Audit events written.\n");
    out.push_str("# TYPE tresor_audit_events_committed_total counter\n");
    out.push_str(&format!(
        "tresor_audit_events_committed_total {}\n",
        s.audit_events_committed_total
    ));
    out
}
