use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use twilight_core::cite::SERVED_VERSION;

use crate::ApiContext;

/// `GET /healthz`: shallow `ok` plus deep checks; 503 when a critical dependency (accounts DB,
/// warehouse) is down; a warehouse that reads but cannot write says `degraded`. Upstream outages are reported but not critical: the warehouse still answers.
/// So are the users' gateways, per host, as each provisioner last counted them: down or stale
/// counts say `ok: false` there without failing the data plane.
pub async fn healthz(State(ctx): State<ApiContext>) -> (StatusCode, Json<Value>) {
    let accounts = match ctx.accounts.ping().await {
        Ok(()) => json!({ "ok": true, "backend": ctx.accounts.backend() }),
        Err(e) => {
            tracing::error!(error = %e, "health: accounts DB unreachable");
            json!({ "ok": false, "backend": ctx.accounts.backend(), "error": "unreachable" })
        }
    };
    let mut warehouse = match ctx.market.row_counts().await {
        Ok(counts) => {
            json!({ "ok": true, "rows": counts.into_iter().map(|(t, n)| (t.to_string(), Value::from(n))).collect::<Map<_, _>>() })
        }
        Err(e) => {
            tracing::error!(error = %e, "health: warehouse unreadable");
            json!({ "ok": false, "error": "unreadable" })
        }
    };
    // Writes failing (a full disk): answers still come, from upstream data nobody keeps.
    let trouble = ctx.market.warehouse_health();
    warehouse["degraded"] = trouble.degraded_since.is_some().into();
    if let Some(since) = trouble.degraded_since {
        warehouse["degraded_since"] = json!(since);
        warehouse["last_error"] = json!(trouble.last_error);
    }
    if let Some(replica) = &ctx.replica {
        warehouse["replica"] = replica_check(&replica.status());
    }
    let upstreams: Map<String, Value> = ctx
        .market
        .health()
        .into_iter()
        .map(|(source, health)| (source.to_string(), serde_json::to_value(health).unwrap_or_default()))
        .collect();
    let gateways = gateways(&ctx).await;
    let jobs = scheduled_jobs(&ctx).await;
    // Not critical either: the market data answers without it.
    let providers = ctx.search.status();
    let search = json!({ "ok": providers.iter().any(|p| p.state == "ready"), "providers": providers });
    let ok = accounts["ok"] == true && warehouse["ok"] == true;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let checks = json!({ "accounts": accounts, "warehouse": warehouse, "upstreams": upstreams, "gateways": gateways, "search": search, "jobs": jobs });
    (status, Json(json!({ "ok": ok, "version": SERVED_VERSION, "checks": checks })))
}

/// What a serving host's replica serves, and how far behind the primary's publication it is: the
/// age of the snapshot served (null before the first swap).
fn replica_check(status: &twilight_market::replica::ReplicaStatus) -> Value {
    let lag_secs = status.serving.as_ref().map(|m| (chrono::Utc::now() - m.created_at).num_seconds());
    json!({
        "serving": status.serving.as_ref().map(|m| &m.file),
        "published_at": status.serving.as_ref().map(|m| m.created_at),
        "swapped_at": status.swapped_at,
        "swaps": status.swaps,
        "lag_secs": lag_secs,
        "last_error": status.last_error,
    })
}

/// The scheduler's leased jobs (the warehouse fills), by name: when each last worked and failed,
/// failures in a row, and whether a process runs it now. Not critical: the warehouse answers what
/// it holds, and misses are fetched.
async fn scheduled_jobs(ctx: &ApiContext) -> Value {
    match ctx.accounts.scheduled_jobs().await {
        Ok(jobs) => {
            let now = chrono::Utc::now();
            let by_name: Map<String, Value> = jobs
                .into_iter()
                .map(|job| {
                    let running = job.holder.is_some() && job.lease_until.is_some_and(|until| until > now);
                    let state = json!({
                        "ok": job.failures == 0,
                        "last_success_at": job.last_success_at,
                        "last_failure_at": job.last_failure_at,
                        "last_error": job.last_error,
                        "failures": job.failures,
                        "running": running,
                    });
                    (job.job, state)
                })
                .collect();
            Value::Object(by_name)
        }
        Err(e) => {
            tracing::error!(error = %e, "health: scheduled jobs unreadable");
            json!({ "ok": false, "error": "unreadable" })
        }
    }
}

/// A census older than this means its provisioner stopped counting (it counts every minute).
const CENSUS_STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(3);

/// Gateways running vs expected, per host.
async fn gateways(ctx: &ApiContext) -> Value {
    match ctx.accounts.gateway_census().await {
        Ok(hosts) => {
            let now = chrono::Utc::now();
            let fresh = |observed_at| now - observed_at <= CENSUS_STALE_AFTER;
            let ok = hosts.iter().all(|host| host.running >= host.expected && fresh(host.observed_at));
            let hosts: Vec<Value> = hosts
                .iter()
                .map(|host| json!({ "host": host.host, "expected": host.expected, "running": host.running, "observed_at": host.observed_at, "stale": !fresh(host.observed_at) }))
                .collect();
            json!({ "ok": ok, "hosts": hosts })
        }
        Err(e) => {
            tracing::error!(error = %e, "health: gateway census unreadable");
            json!({ "ok": false, "error": "unreadable" })
        }
    }
}
