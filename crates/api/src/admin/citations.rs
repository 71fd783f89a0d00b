use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::extract::ApiPath;
use crate::{ApiContext, ApiError, ApiResult};

/// `GET /admin/citations/{tool_call_id}` — what an answer cited: who asked, when, what they asked,
/// each value answered with its source, table, row key, fetch time and age; and next to each,
/// what the warehouse holds for that row now from the cited source (`warehouse_now`) and from every
/// other source that has it (`other_sources`), so a value changed upstream since shows.
pub async fn trace(State(ctx): State<ApiContext>, ApiPath(tool_call_id): ApiPath<String>) -> ApiResult<Json<Value>> {
    if twilight_accounts::row_id_of(&tool_call_id).is_none() {
        return Err(ApiError::invalid("tool_call_id", "a tool_call_id is tc_ and 32 hex digits, as a cite carries it"));
    }
    let citation =
        ctx.accounts.citation(&tool_call_id).await?.ok_or_else(|| ApiError::NotFound(format!("no answer cited {tool_call_id}")))?;
    let mut values = citation.values.as_array().cloned().unwrap_or_default();
    for value in &mut values {
        let table = value["table"].as_str().unwrap_or_default().to_string();
        let metric = value["metric"].as_str().unwrap_or_default().to_string();
        let source = value["source"].as_str().unwrap_or_default().to_string();
        let rows = match value["key"].as_object() {
            Some(key) => ctx.market.stored_rows(&table, key).await,
            None => Vec::new(),
        };
        let (cited, others): (Vec<_>, Vec<_>) = rows
            .iter()
            .map(|row| (row.source.as_str(), json!({ "value": row.fact(&metric), "source": row.source, "fetched_at": row.fetched_at })))
            .partition(|(row_source, _)| *row_source == source);
        value["warehouse_now"] = cited.into_iter().next().map_or(Value::Null, |(_, row)| row);
        value["other_sources"] = others.into_iter().map(|(_, row)| row).collect();
    }
    Ok(Json(json!({
        "tool_call_id": citation.tool_call_id,
        "user_id": citation.user_id,
        "endpoint": citation.endpoint,
        "served_at": citation.served_at,
        "request": citation.request,
        "values": values,
    })))
}
