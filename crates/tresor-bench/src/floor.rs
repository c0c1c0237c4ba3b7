//! The floor of the PostgreSQL backend: a minimal axum + tokio-postgres service that answers
//! the generator's `GET` and `PUT /v1/{store}/{key}` with the baseline's own statements (the
//! point SELECT and the durable UPSERT that pgbench runs, see [`crate::baseline`]) on the
//! baseline's `records` table, through a deadpool pool of prepared statements, and does
//! nothing else: no authentication, no encryption, no audit, no versions or preconditions.
//! Whatever tresor over PostgreSQL costs beyond it is tresor's own work.
//!
//! It runs as a child process (`tresor-bench pg-floor`, hidden) so that its CPU time and RSS
//! are read like a server's.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::client::{Conn, Req, Target};
use crate::server::{free_port, terminate};

const SELECT: &str = "SELECT version, created_at, updated_at, expires_at, value, description \
                      FROM records WHERE ns = 1 AND store = 1 AND key = $1";
const UPSERT: &str = "INSERT INTO records (ns, store, key, version, created_at, updated_at, \
                      expires_at, value, description) VALUES (1, 1, $1, 1, $2, $2, NULL, $3, NULL) \
                      ON CONFLICT (ns, store, key) DO UPDATE SET version = records.version + 1, \
                      updated_at = excluded.updated_at, value = excluded.value RETURNING version";

/// Serves until killed (the body of `tresor-bench pg-floor`).
pub async fn serve(listen: SocketAddr, database_url: &str, pool_size: usize) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .context("the database URL is not a PostgreSQL connection string")?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .build()?;
    pool.get()
        .await
        .context("connecting to PostgreSQL")?
        .simple_query("SELECT 1")
        .await?;
    let app = Router::new()
        .route("/v1/{store}/{key}", get(read).put(write))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn read(State(pool): State<Pool>, UrlPath((_, key)): UrlPath<(String, String)>) -> Response {
    let result = async {
        let client = pool.get().await?;
        let stmt = client.prepare_cached(SELECT).await?;
        let row = client.query_opt(&stmt, &[&key.as_bytes()]).await?;
        anyhow::Ok(row.map(|r| r.get::<_, Vec<u8>>(4)))
    };
    match result.await {
        Ok(Some(value)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn write(
    State(pool): State<Pool>,
    UrlPath((_, key)): UrlPath<(String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let client = pool.get().await?;
        let stmt = client.prepare_cached(UPSERT).await?;
        let row = client
            .query_one(&stmt, &[&key.as_bytes(), &now, &body.as_ref()])
            .await?;
        anyhow::Ok(row.get::<_, i64>(0))
    };
    match result.await {
        Ok(version) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"version":{version}}}"#),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A running floor service, a child of this process.
pub struct Floor {
    child: Child,
    pub url: String,
}

impl Floor {
    /// Starts `tresor-bench pg-floor` against `database_url` and waits until it answers a GET
    /// of the baseline's key `k0`.
    pub async fn start(database_url: &str, pool_size: usize) -> anyhow::Result<Floor> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let port = free_port()?;
        let child = Command::new(&exe)
            .args(["--threads", "2", "pg-floor", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--pool")
            .arg(pool_size.to_string())
            .env("TRESOR_BENCH_FLOOR_DATABASE_URL", database_url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} pg-floor", exe.display()))?;
        let mut floor = Floor {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        floor.wait_ready(&exe).await?;
        Ok(floor)
    }

    async fn wait_ready(&mut self, exe: &Path) -> anyhow::Result<()> {
        let target = Target::parse(&self.url).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} pg-floor exited with {status}", exe.display());
            }
            if let Ok(mut conn) = Conn::connect(&target).await
                && let Ok((200, _)) = conn
                    .send(&Req::new(http::Method::GET, "/v1/secrets/k0".parse()?))
                    .await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the floor service was not ready within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child, Duration::from_secs(5))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child, Duration::from_secs(2));
    }
}
