use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use twilight_core::cite::SERVED_VERSION;

use crate::ApiContext;

/// `GET /healthz`: shallow `ok` plus deep checks; 503 when a critical dependency (accounts DB,
/// warehouse) is down. Upstream outages are reported but not critical: the warehouse still answers.
pub async fn healthz(State(ctx): State<ApiContext>) -> (StatusCode, Json<Value>) {
    let accounts = match ctx.accounts.ping().await {
        Ok(()) => json!({ "ok": true, "backend": ctx.accounts.backend() }),
        Err(e) => {
            tracing::error!(error = %e, "health: accounts DB unreachable");
            json!({ "ok": false, "backend": ctx.accounts.backend(), "error": "unreachable" })
        }
    };
    let warehouse = match ctx.market.row_counts().await {
        Ok(counts) => json!({ "ok": true, "rows": counts.into_iter().map(|(t, n)| (t.to_string(), Value::from(n))).collect::<Map<_, _>>() }),
        Err(e) => {
            tracing::error!(error = %e, "health: warehouse unreadable");
            json!({ "ok": false, "error": "unreadable" })
        }
    };
    let upstreams: Map<String, Value> = ctx
        .market
        .health()
        .into_iter()
        .map(|(source, health)| (source.to_string(), serde_json::to_value(health).unwrap_or_default()))
        .collect();
    let ok = accounts["ok"] == true && warehouse["ok"] == true;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ok": ok, "version": SERVED_VERSION, "checks": { "accounts": accounts, "warehouse": warehouse, "upstreams": upstreams } })))
}
