//! The tresor HTTP server: the router of the contract (records, batch, administration,
//! operations), authentication at the edge, the one mapping of domain errors to HTTP, metrics,
//! the OpenAPI document, TLS on the listener and graceful shutdown.

mod admin;
mod context;
mod credentials;
mod error;
#[cfg(feature = "failpoints")]
mod failpoints;
mod metrics;
mod oauth;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
mod records;
mod render;
mod request;

/// The parsers of request bodies and request parts, reachable for the fuzz targets of
/// `crates/tresor-fuzz`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::records::{parse_batch_op, parse_put_body};
    pub use crate::request::{decode_key, parse_query};
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use tresor_core::ErrorCode;
use tresor_core::model::StoreKind;
use tresor_core::service::Service;

pub use context::Ctx;
pub use error::ApiError;
pub use metrics::Metrics;

/// Renders extra metric families (e.g. the backend's group-commit batch sizes) in the text
/// format.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub metrics: Arc<Metrics>,
    pub extra_metrics: Option<ExtraMetrics>,
    /// Time and size caps of the request proxy.
    pub proxy_limits: proxy::forward::ProxyLimits,
    /// The server's public base URL (the OAuth redirect URI is built on it).
    pub public_url: String,
    /// Rate limits and the trusted proxies whose `X-Forwarded-For` names the client.
    pub rate_limits: Arc<ratelimit::RateLimits>,
    /// Where `tresor backup` records the last backup of the embedded store
    /// (`DIR/last-backup.json`), shown by `GET /v1/admin/status`; `None` over PostgreSQL.
    pub last_backup_file: Option<PathBuf>,
}

/// How to listen.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json));

    for store in StoreKind::ALL {
        let name = store.as_str();
        let st = state.clone();
        let key: MethodRouter<AppState> = {
            let h = move |req: Request| {
                let st = st.clone();
                async move { records::key_route(st, store, req).await }
            };
            get(h.clone())
                .head(h.clone())
                .put(h.clone())
                .patch(h.clone())
                .delete(h)
        };
        let st = state.clone();
        let ops = post(move |req: Request| {
            let st = st.clone();
            async move { records::ops_route(st, store, req).await }
        });
        let st = state.clone();
        let list = get(move |req: Request| {
            let st = st.clone();
            async move { records::list_route(st, store, req).await }
        });
        let st = state.clone();
        let empty = any(move |req: Request| {
            let st = st.clone();
            async move { records::empty_key_route(st, store, req).await }
        });
        r = r
            .route(&format!("/v1/{name}"), list)
            .route(&format!("/v1/{name}/"), empty)
            .route(&format!("/v1/{name}/{{key}}"), key)
            .route(&format!("/v1/{name}/{{key}}/ops"), ops);
    }

    let st = state.clone();
    r = r.route(
        "/v1/batch",
        post(move |req: Request| {
            let st = st.clone();
            async move { records::batch_route(st, req).await }
        }),
    );

    use admin::Resource as R;
    let admin_routes: [(&str, R, &[&str]); 13] = [
        ("/v1/admin/apps", R::Apps, &["GET"]),
        ("/v1/admin/apps/{id}", R::App, &["GET", "PUT", "DELETE"]),
        ("/v1/admin/accounts", R::Accounts, &["GET"]),
        (
            "/v1/admin/accounts/{id}",
            R::Account,
            &["GET", "PUT", "DELETE"],
        ),
        ("/v1/admin/installations", R::Installations, &["GET"]),
        (
            "/v1/admin/installations/{id}",
            R::Installation,
            &["GET", "PUT", "DELETE"],
        ),
        (
            "/v1/admin/installations/{id}/tokens",
            R::InstallationTokens,
            &["POST"],
        ),
        (
            "/v1/admin/installations/{id}/rotate-key",
            R::InstallationRotateKey,
            &["POST"],
        ),
        ("/v1/admin/tokens/{id}", R::Token, &["DELETE"]),
        ("/v1/admin/audit", R::Audit, &["GET"]),
        ("/v1/admin/keys", R::Keys, &["GET"]),
        ("/v1/admin/keys/rotate", R::KeysRotate, &["POST"]),
        ("/v1/admin/status", R::Status, &["GET"]),
    ];
    for (path, resource, methods) in admin_routes {
        let st = state.clone();
        let h = move |req: Request| {
            let st = st.clone();
            async move { admin::route(st, resource, req).await }
        };
        let mut mr: MethodRouter<AppState> = MethodRouter::new();
        for m in methods {
            mr = match *m {
                "GET" => mr.get(h.clone()),
                "PUT" => mr.put(h.clone()),
                "POST" => mr.post(h.clone()),
                _ => mr.delete(h.clone()),
            };
        }
        r = r.route(path, mr);
    }

    let st = state.clone();
    let cred = move |req: Request| {
        let st = st.clone();
        async move { credentials::credential_route(st, req).await }
    };
    let st = state.clone();
    let cred_list = move |req: Request| {
        let st = st.clone();
        async move { credentials::credential_list_route(st, req).await }
    };
    let st = state.clone();
    let proxy = move |req: Request| {
        let st = st.clone();
        async move { credentials::request_route(st, req).await }
    };
    let st = state.clone();
    let flow_start = move |req: Request| {
        let st = st.clone();
        async move { oauth::start_route(st, req).await }
    };
    let st = state.clone();
    let flow = move |req: Request| {
        let st = st.clone();
        async move { oauth::flow_route(st, req).await }
    };
    let st = state.clone();
    let callback = move |req: Request| {
        let st = st.clone();
        async move { oauth::callback_route(st, req).await }
    };
    r = r
        .route("/v1/oauth/flows", post(flow_start))
        .route("/v1/oauth/flows/{id}", get(flow.clone()))
        .route("/v1/oauth/flows/{id}/complete", post(flow))
        .route("/v1/oauth/callback", get(callback));
    let st = state.clone();
    let provider = move |req: Request| {
        let st = st.clone();
        async move { credentials::provider_route(st, req).await }
    };
    r = r
        .route("/v1/credentials", get(cred_list))
        .route(
            "/v1/credentials/{key}",
            get(cred.clone()).put(cred.clone()).delete(cred.clone()),
        )
        // An empty key: 400 after authentication and scope, as on the record stores.
        .route(
            "/v1/credentials/",
            get(cred.clone()).put(cred.clone()).delete(cred),
        )
        .route("/v1/credentials/{key}/request", post(proxy))
        .route("/v1/admin/providers", get(provider.clone()))
        .route(
            "/v1/admin/providers/{name}",
            get(provider.clone()).put(provider.clone()).delete(provider),
        );

    #[cfg(feature = "failpoints")]
    {
        let st = state.clone();
        r = r.route(
            "/v1/admin/failpoints/{name}",
            axum::routing::any(move |req: Request| failpoints::route(st.clone(), req)),
        );
    }

    r.fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::stamp,
        ))
        .with_state(state)
}

async fn unknown_route(req: Request) -> Response {
    let rid = records::ctx_of(&req).request_id;
    error::plain_error(ErrorCode::NotFound, "no such route", &rid)
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

async fn readyz(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: Request,
) -> Response {
    match st.service.ready().await {
        // The contract leaves the body open; the backend's name helps an operator of many
        // servers see what each one runs on.
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "ready",
                "backend": st.service.backend().name(),
            })),
        )
            .into_response(),
        Err(e) => {
            let rid = records::ctx_of(&req).request_id;
            error::plain_error(ErrorCode::Unavailable, &e.public_message(), &rid)
        }
    }
}

async fn metrics_text(axum::extract::State(st): axum::extract::State<AppState>) -> Response {
    let mut text = st.metrics.render();
    if let Some(extra) = &st.extra_metrics {
        text.push_str(&extra());
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

async fn openapi_json() -> Response {
    (StatusCode::OK, axum::Json(openapi::document())).into_response()
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// (up to `grace`), and returns.
///
/// "tresor serving on URL" is logged once the listener is bound, with the address it got (the
/// port the system chose for `--listen 127.0.0.1:0`), and never when binding fails.
pub async fn serve(
    state: AppState,
    listen: ListenConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(grace));
    });
    let h = handle.clone();
    let scheme = if listen.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tokio::spawn(async move {
        if let Some(addr) = h.listening().await {
            tracing::info!(listen = %addr, "tresor serving on {scheme}://{addr}");
        }
    });
    match listen.tls {
        Some(tls) => {
            let config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await?;
            axum_server::bind_rustls(listen.addr, config)
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            axum_server::bind(listen.addr)
                .handle(handle)
                .serve(app)
                .await
        }
    }
}
