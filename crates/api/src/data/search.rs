use axum::extract::State;
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use twilight_core::Cite;
use twilight_search::{SearchRequest, CITE_TABLE};
use utoipa::{IntoParams, ToSchema};

use super::{citation, tool_call_id, Answer};
use crate::extract::ApiQuery;
use crate::{ApiContext, ApiError, ApiResult};

/// The inputs of `/search` and the MCP `search` tool; validated by our own code so that errors
/// name the field. Doc comments are the descriptions the model reads.
#[derive(Deserialize, JsonSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// What to look for, 1–200 characters, e.g. `600519 业绩公告 2026` or `宁德时代 最新 研报`.
    #[schemars(required, with = "String")]
    #[param(required = true, value_type = String, min_length = 1, max_length = 200, example = "600519 业绩公告")]
    query: Option<String>,
    /// Only pages published since then: a date `YYYY-MM-DD`, or a span back from today such as
    /// `7d`, `2w`, `1m`, `1y`. Leave it out for any date.
    since: Option<String>,
    /// How many results, 1–20; default 10.
    #[schemars(with = "Option<u8>", range(min = 1, max = 20))]
    #[param(value_type = Option<u8>, minimum = 1, maximum = 20)]
    max_results: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchBody {
    query: String,
    since: Option<String>,
    results: Vec<SearchResult>,
}

#[derive(Serialize, ToSchema)]
struct SearchResult {
    title: String,
    url: String,
    snippet: String,
    published_at: Option<String>,
    fetched_at: chrono::DateTime<Utc>,
    cite: Cite,
}

/// Web pages for a query, each cited by the provider that answered and the page's URL.
#[utoipa::path(get, path = "/search", tag = "data", params(SearchParams), security(("user_key" = [])), responses(
    (status = 200, description = "The pages found, newest providers' answers first", body = SearchBody),
    crate::openapi::DataErrors,
))]
pub async fn get(State(ctx): State<ApiContext>, ApiQuery(params): ApiQuery<SearchParams>) -> ApiResult<Answer<SearchBody>> {
    search(&ctx, params).await
}

/// Web pages for a query, each with its cite (`source` the provider that answered, `url` the
/// page): the operation behind `/search` and the MCP `search` tool.
pub async fn search(ctx: &ApiContext, params: SearchParams) -> ApiResult<Answer<SearchBody>> {
    let max_results = match &params.max_results {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(ApiError::invalid("max_results", format!("max_results must be a number from 1 to 20, not {other}"))),
    };
    let now = Utc::now();
    let request =
        SearchRequest::parse(params.query.as_deref(), params.since.as_deref(), max_results.as_deref(), twilight_core::china_today(now))?;
    let served = ctx.search.search(&request).await?;
    let found = &served.found;
    let tool_call_id = tool_call_id();
    let results: Vec<SearchResult> = found
        .hits
        .iter()
        .map(|hit| SearchResult {
            title: hit.title.clone(),
            url: hit.url.clone(),
            snippet: hit.snippet.clone(),
            published_at: hit.published_at.map(|at| at.to_rfc3339()),
            fetched_at: found.fetched_at,
            cite: Cite { url: Some(hit.url.clone()), ..Cite::tool(&found.source, CITE_TABLE, found.fetched_at, now, tool_call_id.clone()) },
        })
        .collect();
    // What was asked, and which providers were asked how, so a trace shows why this one served.
    let asked = json!({
        "query": request.query,
        "since": request.since,
        "max_results": request.max_results,
        "providers": found.attempts.iter().map(|(provider, outcome)| json!({ "provider": provider, "outcome": outcome })).collect::<Vec<_>>(),
    });
    let values: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(rank, result)| {
            json!({
                "rank": rank + 1,
                "title": result.title,
                "url": result.url,
                "published_at": result.published_at,
                "source": result.cite.source,
                "table": CITE_TABLE,
                "fetched_at": result.fetched_at,
                "cache_age_seconds": result.cite.cache_age_seconds,
                "cached": served.cached,
            })
        })
        .collect();
    let citation = citation(tool_call_id, &asked, &values)?;
    Ok(Answer {
        body: SearchBody { query: request.query, since: request.since.map(|d| d.to_string()), results },
        cost_pts: served.cost_pts(),
        citation,
    })
}
