use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use twilight_market::Fact;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::extract::ApiPath;
use crate::{ApiContext, ApiError, ApiResult};

/// What an answer cited, and what the warehouse holds for it now.
#[derive(Serialize, ToSchema)]
pub struct Trace {
    tool_call_id: String,
    user_id: Uuid,
    endpoint: String,
    served_at: DateTime<Utc>,
    /// The request as understood (normalised code, dates, metric).
    #[schema(value_type = Object)]
    request: Value,
    values: Vec<TracedValue>,
}

/// One value answered, as its citation records it, beside the warehouse's rows for it now.
#[derive(Serialize, ToSchema)]
struct TracedValue {
    /// Metric, value, unit, source, table, the upstream row's key, fetched_at, cache_age_seconds,
    /// stale (a search result: rank, title, url, published_at instead of metric and key).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    cited: Map<String, Value>,
    /// The cited source's row now (null when the warehouse no longer holds it).
    warehouse_now: Option<StoredRow>,
    /// The same row from every other source that has it.
    other_sources: Vec<StoredRow>,
}

#[derive(Serialize, ToSchema)]
struct StoredRow {
    value: Option<Fact>,
    source: String,
    fetched_at: DateTime<Utc>,
}

/// What an answer cited: who asked, when, what they asked, each value answered with its source,
/// table, row key, fetch time and age; and next to each, what the warehouse holds for that row now
/// from the cited source (`warehouse_now`) and from every other source that has it
/// (`other_sources`), so a value changed upstream since shows.
#[utoipa::path(get, path = "/admin/citations/{tool_call_id}", tag = "admin", security(("admin_token" = [])),
    params(("tool_call_id" = String, Path, pattern = "^tc_[0-9a-f]{32}$", description = "As a cite carries it")),
    responses((status = 200, description = "The answer's citation, traced", body = Trace), crate::openapi::AdminErrors),
)]
pub async fn trace(State(ctx): State<ApiContext>, ApiPath(tool_call_id): ApiPath<String>) -> ApiResult<Json<Trace>> {
    if twilight_accounts::row_id_of(&tool_call_id).is_none() {
        return Err(ApiError::invalid("tool_call_id", "a tool_call_id is tc_ and 32 hex digits, as a cite carries it"));
    }
    let citation =
        ctx.accounts.citation(&tool_call_id).await?.ok_or_else(|| ApiError::NotFound(format!("no answer cited {tool_call_id}")))?;
    let mut values = Vec::new();
    for value in citation.values.as_array().into_iter().flatten() {
        let Some(cited) = value.as_object() else { continue };
        let text = |name: &str| cited.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let (table, metric, source) = (text("table"), text("metric"), text("source"));
        let rows = match cited.get("key").and_then(Value::as_object) {
            Some(key) => ctx.market.stored_rows(&table, key).await,
            None => Vec::new(),
        };
        let (mut now, mut others) = (None, Vec::new());
        for row in rows {
            let stored = StoredRow { value: row.fact(&metric), fetched_at: row.fetched_at, source: row.source };
            if stored.source != source {
                others.push(stored);
            } else if now.is_none() {
                now = Some(stored);
            }
        }
        values.push(TracedValue { cited: cited.clone(), warehouse_now: now, other_sources: others });
    }
    Ok(Json(Trace {
        tool_call_id: citation.tool_call_id,
        user_id: citation.user_id,
        endpoint: citation.endpoint,
        served_at: citation.served_at,
        request: citation.request,
        values,
    }))
}
