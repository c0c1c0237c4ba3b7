//! Prometheus metrics: requests by route template, method and status, and latency histograms
//! with explicit buckets, and the requests each kind of rate limit refused. Labels never carry a tenant id or a key: routes are templates.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::AppState;

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    rate_limited: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tresor_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "tresor_http_request_duration_seconds",
                "HTTP request latency by route and method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "tresor_rate_limited_total",
                "Requests refused with 429 by a rate limit, by the kind of limit",
            ),
            &["kind"],
        )?;
        for kind in crate::ratelimit::LimitKind::ALL {
            rate_limited.with_label_values(&[kind.as_str()]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            rate_limited,
        })
    }

    /// One request refused by a limit of `kind` (the label is the kind, never an id or address).
    pub fn count_rate_limited(&self, kind: crate::ratelimit::LimitKind) {
        self.rate_limited.with_label_values(&[kind.as_str()]).inc();
    }

    /// The text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Counts and times every request under its route template.
pub async fn track(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let request_id = req
        .extensions()
        .get::<crate::Ctx>()
        .map(|c| c.0.request_id.clone())
        .unwrap_or_default();
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed();
    let m = &state.metrics;
    m.latency
        .with_label_values(&[&route, &method])
        .observe(elapsed.as_secs_f64());
    // The route template, never the path: a path holds the key.
    tracing::debug!(
        request_id = %request_id,
        route = %route,
        method = %method,
        status = resp.status().as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    m.requests
        .with_label_values(&[&route, &method, resp.status().as_str()])
        .inc();
    resp
}
