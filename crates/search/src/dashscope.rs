//! DashScope web search (Alibaba Cloud Model Studio), the default provider. Two routes, chosen by
//! config: the plugin endpoint (`/api/v1/indices/plugin/web_search`, snippets and dates; what Qwen
//! Code used, undocumented) and the documented one, a `qwen-plus` generation with
//! `enable_search` whose `search_info` lists the sources (titles and URLs only, and it costs
//! tokens).

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::provider::{client, send, text, Endpoint, Page, Provider, ProviderError, RawHit, Reply};
use crate::SearchRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DashScopeRoute {
    Plugin,
    Generation,
}

pub struct DashScope {
    endpoint: Endpoint,
    route: DashScopeRoute,
    http: reqwest::Client,
}

impl DashScope {
    pub fn new(endpoint: Endpoint, route: DashScopeRoute) -> Self {
        DashScope { http: client(&endpoint), endpoint, route }
    }
}

#[async_trait]
impl Provider for DashScope {
    fn name(&self) -> &'static str {
        "dashscope"
    }

    async fn search(&self, request: &SearchRequest) -> Result<Page, ProviderError> {
        let base = self.endpoint.base_url.trim_end_matches('/');
        let (path, body) = match self.route {
            DashScopeRoute::Plugin => {
                ("/api/v1/indices/plugin/web_search", json!({"uq": request.query, "page": 1, "rows": request.max_results}))
            }
            DashScopeRoute::Generation => (
                "/api/v1/services/aigc/text-generation/generation",
                json!({
                    "model": "qwen-plus",
                    "input": {"messages": [{"role": "user", "content": request.query}]},
                    "parameters": {
                        "enable_search": true,
                        "search_options": {"forced_search": true, "enable_source": true, "search_strategy": "turbo"},
                        "result_format": "message",
                    },
                }),
            ),
        };
        let http = self.http.post(format!("{base}{path}")).bearer_auth(self.endpoint.key.expose_secret()).json(&body);
        let reply = send(http).await?;
        if let Some(error) = error(&reply) {
            return Err(error);
        }
        let hits = match self.route {
            DashScopeRoute::Plugin => read_plugin(&reply.body)?,
            DashScopeRoute::Generation => read_generation(&reply.body)?,
        };
        Ok(Page { hits, sandbox: reply.sandbox })
    }
}

/// DashScope names its errors in `code` (`Throttling.RateQuota`, `Arrearage`) or, on the plugin
/// route, `errorType` (`THROTTLING.userQPSLimit`); the plugin route also answers 200 with a
/// non-zero `status`.
fn error(reply: &Reply) -> Option<ProviderError> {
    let body = &reply.body;
    let code = [body["errorType"].as_str(), body["code"].as_str()].into_iter().flatten().next().unwrap_or_default();
    let message = format!("HTTP {} {code} {}", reply.status.as_u16(), text(body, "message")).trim().to_string();
    let lower = code.to_ascii_lowercase();
    if ["allocationquota", "arrearage", "freetieronly", "quotaexhausted"].iter().any(|quota| lower.contains(quota)) {
        return Some(ProviderError::Quota { message });
    }
    if lower.starts_with("throttling") {
        return Some(ProviderError::Throttled { retry_after: reply.retry_after, message });
    }
    if let Some(error) = reply.status_error(message) {
        return Some(error);
    }
    match body["status"].as_i64() {
        Some(status) if status != 0 => Some(ProviderError::Unavailable { message: format!("status {status}: {}", text(body, "message")) }),
        _ => None,
    }
}

fn undecodable(what: &str) -> ProviderError {
    ProviderError::Unavailable { message: format!("answer without {what}") }
}

fn read_plugin(body: &Value) -> Result<Vec<RawHit>, ProviderError> {
    let docs = body["data"]["docs"].as_array().ok_or_else(|| undecodable("data.docs"))?;
    Ok(docs
        .iter()
        .map(|doc| RawHit {
            title: text(doc, "title"),
            url: text(doc, "url"),
            snippet: text(doc, "snippet"),
            published: doc["timestamp_format"].as_str().map(str::to_string),
        })
        .collect())
}

fn read_generation(body: &Value) -> Result<Vec<RawHit>, ProviderError> {
    let output = body["output"].as_object().ok_or_else(|| undecodable("output"))?;
    let sources = output.get("search_info").and_then(|info| info["search_results"].as_array()).cloned().unwrap_or_default();
    Ok(sources
        .iter()
        .map(|source| RawHit {
            title: text(source, "title"),
            url: text(source, "url"),
            snippet: text(source, "site_name"),
            published: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::reply;

    #[test]
    fn reads_the_plugin_answer() {
        let body = json!({"status": 0, "data": {"docs": [
            {"title": "贵州茅台：2026年一季度报告", "url": "https://example.com/a", "snippet": "<em>营业收入</em>", "timestamp_format": "2026-04-30 10:00:00", "hostname": "example.com", "_score": 0.9}
        ]}});
        assert!(error(&reply(200, body.clone())).is_none());
        let hits = read_plugin(&body).unwrap();
        assert_eq!(hits[0].published.as_deref(), Some("2026-04-30 10:00:00"));
        assert_eq!(hits[0].snippet, "<em>营业收入</em>");
    }

    #[test]
    fn reads_the_generation_sources() {
        let body = json!({"output": {"choices": [], "search_info": {"search_results": [
            {"index": 1, "title": "茅台公告", "url": "https://example.com/b", "site_name": "上交所", "icon": ""}
        ]}}, "usage": {"total_tokens": 900}});
        let hits = read_generation(&body).unwrap();
        assert_eq!((hits[0].url.as_str(), hits[0].snippet.as_str()), ("https://example.com/b", "上交所"));
    }

    #[test]
    fn classifies_failures() {
        let throttled = reply(429, json!({"errorType": "THROTTLING.userQPSLimit", "message": "qps"}));
        assert!(matches!(error(&throttled), Some(ProviderError::Throttled { .. })));
        let rate = reply(429, json!({"code": "Throttling.RateQuota", "message": "rate"}));
        assert!(matches!(error(&rate), Some(ProviderError::Throttled { .. })));
        let quota = reply(429, json!({"code": "Throttling.AllocationQuota", "message": "free tier used up"}));
        assert!(matches!(error(&quota), Some(ProviderError::Quota { .. })));
        assert!(matches!(error(&reply(400, json!({"code": "Arrearage"}))), Some(ProviderError::Quota { .. })));
        assert!(matches!(error(&reply(401, json!({"code": "InvalidApiKey"}))), Some(ProviderError::Refused { .. })));
        assert!(matches!(error(&reply(503, Value::Null)), Some(ProviderError::Unavailable { .. })));
        assert!(matches!(error(&reply(200, json!({"status": 1001, "message": "busy"}))), Some(ProviderError::Unavailable { .. })));
    }
}
