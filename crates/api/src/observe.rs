//! Prometheus metrics. Anything in the process records through the `metrics` facade (requests here,
//! upstream calls and row caches in `market`, usage in `usage`); `GET /metrics`, for an admin token,
//! renders them with the states read from the accounts DB at that moment (provisioning jobs, orders,
//! gateways), so one scrape of `serve` sees the provisioner's and the scheduler's work too.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use twilight_accounts::{JobState, PaymentState};

use crate::{ApiContext, ApiError};

/// Latency buckets, in seconds: a warehouse hit takes about a millisecond, an upstream fill up to
/// the request deadline.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The process's recorder, installed on first use. Several apps in one test process share it; a
/// recorder someone else installed first leaves this one rendering only what it is given.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics shows only the accounts DB's states");
        }
        handle
    })
}

/// Counts every routed request by route, method and status, and times it by route.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("twilight_http_request_duration_seconds", "route" => route.clone()).record(started.elapsed().as_secs_f64());
    metrics::counter!("twilight_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
    response
}

/// Prometheus metrics: requests, latency, caches, upstreams, rate limits, metering, provisioning,
/// gateways, payments, scheduler jobs.
#[utoipa::path(get, path = "/metrics", tag = "admin", security(("admin_token" = [])), responses(
    (status = 200, description = "The Prometheus text format", content_type = "text/plain", body = String),
    crate::openapi::AdminErrors,
))]
pub async fn render(State(ctx): State<ApiContext>) -> Result<Response, ApiError> {
    let handle = handle();
    let tallies = ctx.accounts.tallies().await?;
    // Every known state is set, so one that empties reads 0 rather than its last count.
    for state in JobState::ALL {
        let n = tallies.jobs.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        metrics::gauge!("twilight_provisioning_jobs", "state" => state.as_str()).set(n as f64);
    }
    for state in PaymentState::ALL {
        let n = tallies.payments.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        metrics::gauge!("twilight_orders", "state" => state.as_str()).set(n as f64);
    }
    for census in ctx.accounts.gateway_census().await? {
        metrics::gauge!("twilight_gateways_running", "host" => census.host.clone()).set(f64::from(census.running));
        metrics::gauge!("twilight_gateways_expected", "host" => census.host).set(f64::from(census.expected));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response())
}
