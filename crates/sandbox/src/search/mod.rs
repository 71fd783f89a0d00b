//! The three web search providers behind `/search`, on their real routes and in their real answer
//! shapes (see `shared/protocols/search.md`): DashScope (plugin and generation routes), Google
//! Programmable Search and Bocha. Results are deterministic per query, name the sandbox stock a
//! code in the query belongs to, live under `*.sandbox.invalid` and say in their snippet that a
//! simulator wrote them. Throttle, quota, outage and empty modes switch per simulator.

mod results;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::common::{self, random_hex};
use results::Doc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    DashScope,
    Google,
    Bocha,
}

impl SearchKind {
    pub const ALL: [SearchKind; 3] = [SearchKind::DashScope, SearchKind::Google, SearchKind::Bocha];

    /// The provider's name as our search crate and cites write it.
    pub fn name(self) -> &'static str {
        match self {
            SearchKind::DashScope => "dashscope",
            SearchKind::Google => "google_cse",
            SearchKind::Bocha => "bocha",
        }
    }
}

/// How the simulator answers its search route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchMode {
    #[default]
    Normal,
    /// The provider's rate-limit error.
    Throttled,
    /// The provider's spent-quota (or spent-balance) error.
    Quota,
    /// HTTP 503 with an empty body.
    Down,
    /// A well-formed answer with no results.
    Empty,
    /// Sleeps this long, then answers normally.
    Slow(Duration),
}

/// One provider's simulator; clones share state.
#[derive(Clone)]
pub struct SearchSim {
    inner: Arc<Inner>,
}

struct Inner {
    kind: SearchKind,
    key: String,
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    mode: SearchMode,
    calls: u64,
    answered: u64,
    queries: Vec<String>,
}

impl SearchSim {
    /// A simulator of `kind` that accepts `key`.
    pub fn new(kind: SearchKind, key: &str) -> Self {
        SearchSim { inner: Arc::new(Inner { kind, key: key.to_string(), state: Mutex::default() }) }
    }

    pub fn router(&self) -> Router {
        let routes = match self.inner.kind {
            SearchKind::DashScope => Router::new()
                .route("/api/v1/indices/plugin/web_search", post(dashscope_plugin))
                .route("/api/v1/services/aigc/text-generation/generation", post(dashscope_generation)),
            SearchKind::Google => Router::new().route("/customsearch/v1", get(google)),
            SearchKind::Bocha => Router::new().route("/v1/web-search", post(bocha)),
        };
        let calls = self.clone();
        let routes = routes
            .route("/_sandbox/calls", get(move || async move { Json(json!({"calls": calls.calls(), "answered": calls.answered()})) }));
        common::label(routes, self.inner.kind.name()).with_state(self.clone())
    }

    pub fn set_mode(&self, mode: SearchMode) {
        self.state().mode = mode;
    }

    /// Searches received, whatever their outcome.
    pub fn calls(&self) -> u64 {
        self.state().calls
    }

    /// Searches answered with a result list (empty ones included): what the provider bills.
    pub fn answered(&self) -> u64 {
        self.state().answered
    }

    /// Every query received, oldest first.
    pub fn queries(&self) -> Vec<String> {
        self.state().queries.clone()
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts the call and decides its fate: `Err` is the fault's answer, `Ok(empty)` says whether
    /// the result list is to be empty.
    async fn admit(&self, query: &str, key_ok: bool) -> Result<bool, Response> {
        let mode = {
            let mut state = self.state();
            state.calls += 1;
            state.queries.push(query.to_string());
            state.mode
        };
        match mode {
            SearchMode::Down => return Err(StatusCode::SERVICE_UNAVAILABLE.into_response()),
            SearchMode::Slow(pause) => tokio::time::sleep(pause).await,
            _ => {}
        }
        if !key_ok {
            return Err(self.failure(StatusCode::UNAUTHORIZED));
        }
        match mode {
            SearchMode::Throttled => Err(self.failure(StatusCode::TOO_MANY_REQUESTS)),
            SearchMode::Quota => Err(self.failure(StatusCode::FORBIDDEN)),
            _ => {
                self.state().answered += 1;
                Ok(mode == SearchMode::Empty)
            }
        }
    }

    /// The provider's own error answer for a rejected key (401), a rate limit (429) or a spent
    /// quota (403).
    fn failure(&self, status: StatusCode) -> Response {
        let request_id = random_hex(32);
        let (status, body) = match (self.inner.kind, status.as_u16()) {
            (SearchKind::DashScope, 401) => {
                (status, json!({"code": "InvalidApiKey", "message": "Invalid API-key provided.", "request_id": request_id}))
            }
            (SearchKind::DashScope, 429) => (
                status,
                json!({"errorType": "THROTTLING.userQPSLimit", "code": "Throttling.RateQuota", "message": "Requests rate limit exceeded, please try again later.", "request_id": request_id}),
            ),
            (SearchKind::DashScope, _) => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"code": "Throttling.AllocationQuota", "message": "Free allocated quota exceeded.", "request_id": request_id}),
            ),
            (SearchKind::Google, code) => {
                let (status, reason, message) = match code {
                    401 => (StatusCode::BAD_REQUEST, "badRequest", "API key not valid. Please pass a valid API key."),
                    429 => (status, "rateLimitExceeded", "Rate Limit Exceeded"),
                    _ => (status, "dailyLimitExceeded", "This API has a daily limit of 100 queries; it has been reached."),
                };
                let domain = if status == StatusCode::BAD_REQUEST { "global" } else { "usageLimits" };
                (
                    status,
                    json!({"error": {"code": status.as_u16(), "message": message, "errors": [{"message": message, "domain": domain, "reason": reason}]}}),
                )
            }
            (SearchKind::Bocha, code) => {
                let message = match code {
                    401 => "Invalid API KEY",
                    429 => "请求过于频繁，请稍后再试",
                    _ => "余额不足，请充值后再试",
                };
                (status, json!({"code": code, "log_id": request_id, "msg": message, "data": null}))
            }
        };
        (status, Json(body)).into_response()
    }
}

fn bearer_is(headers: &HeaderMap, key: &str) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) == Some(key)
}

/// A count the client asked for, within the provider's limits.
fn count(value: &Value, default: usize, max: usize) -> usize {
    value.as_u64().map_or(default, |n| (n as usize).clamp(1, max))
}

async fn dashscope_plugin(State(sim): State<SearchSim>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let query = body["uq"].as_str().unwrap_or_default().to_string();
    let empty = match sim.admit(&query, bearer_is(&headers, &sim.inner.key)).await {
        Ok(empty) => empty,
        Err(response) => return response,
    };
    let docs: Vec<Value> = results::for_query(&query, "dashscope", if empty { 0 } else { count(&body["rows"], 10, 20) })
        .into_iter()
        .map(|doc: Doc| {
            json!({"title": doc.title, "url": doc.url, "snippet": doc.snippet_html(), "timestamp_format": doc.published.format("%Y-%m-%d %H:%M:%S").to_string(),
                   "hostname": doc.site, "_score": doc.score})
        })
        .collect();
    Json(json!({"status": 0, "message": "success", "request_id": random_hex(32), "data": {"total": docs.len(), "docs": docs}}))
        .into_response()
}

async fn dashscope_generation(State(sim): State<SearchSim>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let query = body["input"]["messages"][0]["content"].as_str().unwrap_or_default().to_string();
    let empty = match sim.admit(&query, bearer_is(&headers, &sim.inner.key)).await {
        Ok(empty) => empty,
        Err(response) => return response,
    };
    let sources: Vec<Value> = results::for_query(&query, "dashscope", if empty { 0 } else { 8 })
        .into_iter()
        .enumerate()
        .map(|(i, doc)| json!({"index": i + 1, "title": doc.title, "url": doc.url, "site_name": doc.site, "icon": ""}))
        .collect();
    let answer = "（沙盒模拟）以下是与问题相关的网页来源。";
    Json(json!({
        "output": {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": answer}}], "search_info": {"search_results": sources}},
        "usage": {"input_tokens": 900, "output_tokens": 20, "total_tokens": 920},
        "request_id": random_hex(32),
    }))
    .into_response()
}

async fn google(State(sim): State<SearchSim>, Query(params): Query<std::collections::HashMap<String, String>>) -> Response {
    let query = params.get("q").cloned().unwrap_or_default();
    let key_ok = params.get("key") == Some(&sim.inner.key) && params.get("cx").is_some_and(|cx| !cx.is_empty());
    let empty = match sim.admit(&query, key_ok).await {
        Ok(empty) => empty,
        Err(response) => return response,
    };
    let num = params.get("num").and_then(|n| n.parse::<usize>().ok()).unwrap_or(10).clamp(1, 10);
    let docs = results::for_query(&query, "google_cse", if empty { 0 } else { num });
    let mut body = json!({
        "kind": "customsearch#search",
        "queries": {"request": [{"searchTerms": query, "count": docs.len(), "startIndex": 1}]},
        "searchInformation": {"searchTime": 0.21, "totalResults": docs.len().to_string()},
    });
    if !docs.is_empty() {
        let items: Vec<Value> = docs
            .iter()
            .map(|doc| {
                json!({"kind": "customsearch#result", "title": doc.title, "link": doc.url, "displayLink": doc.site,
                       "snippet": format!("{} ... {}", doc.published.format("%b %-d, %Y"), doc.snippet_entities()),
                       "pagemap": {"metatags": [{"og:title": doc.title}]}})
            })
            .collect();
        body["items"] = Value::Array(items);
    }
    Json(body).into_response()
}

async fn bocha(State(sim): State<SearchSim>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let query = body["query"].as_str().unwrap_or_default().to_string();
    let empty = match sim.admit(&query, bearer_is(&headers, &sim.inner.key)).await {
        Ok(empty) => empty,
        Err(response) => return response,
    };
    let pages: Vec<Value> = results::for_query(&query, "bocha", if empty { 0 } else { count(&body["count"], 10, 50) })
        .into_iter()
        .map(|doc| {
            json!({"id": null, "name": doc.title, "url": doc.url, "displayUrl": doc.url, "snippet": doc.snippet, "summary": doc.snippet,
                   "siteName": doc.site, "datePublished": doc.published.format("%Y-%m-%dT%H:%M:%S+08:00").to_string(), "dateLastCrawled": doc.published.format("%Y-%m-%dT%H:%M:%SZ").to_string()})
        })
        .collect();
    Json(json!({"code": 200, "log_id": random_hex(16), "msg": null, "data": {"_type": "SearchResponse", "queryContext": {"originalQuery": query},
        "webPages": {"webSearchUrl": "", "totalEstimatedMatches": pages.len(), "value": pages}}}))
    .into_response()
}
