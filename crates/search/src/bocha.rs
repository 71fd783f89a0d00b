//! Bocha (博查) web search, the third provider: built for LLM apps and strong on Chinese sources.

use async_trait::async_trait;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::provider::{client, send, text, Endpoint, Page, Provider, ProviderError, RawHit, Reply};
use crate::SearchRequest;

pub struct Bocha {
    endpoint: Endpoint,
    http: reqwest::Client,
}

impl Bocha {
    pub fn new(endpoint: Endpoint) -> Self {
        Bocha { http: client(&endpoint), endpoint }
    }
}

#[async_trait]
impl Provider for Bocha {
    fn name(&self) -> &'static str {
        "bocha"
    }

    async fn search(&self, request: &SearchRequest) -> Result<Page, ProviderError> {
        let url = format!("{}/v1/web-search", self.endpoint.base_url.trim_end_matches('/'));
        let freshness = match request.since {
            Some(since) => format!("{since}..{}", twilight_core::china_today(Utc::now())),
            None => "noLimit".into(),
        };
        let body = json!({"query": request.query, "freshness": freshness, "summary": true, "count": request.max_results});
        let reply = send(self.http.post(url).bearer_auth(self.endpoint.key.expose_secret()).json(&body)).await?;
        if let Some(error) = error(&reply) {
            return Err(error);
        }
        let pages = reply.body["data"]["webPages"]["value"].as_array().cloned().unwrap_or_default();
        Ok(Page { hits: pages.iter().map(read).collect(), sandbox: reply.sandbox })
    }
}

/// Bocha repeats the HTTP status in the body's `code` (a number or a string): 403 is a spent
/// balance, 429 a rate limit.
fn error(reply: &Reply) -> Option<ProviderError> {
    let body = &reply.body;
    let code =
        body["code"].as_i64().or_else(|| body["code"].as_str().and_then(|c| c.parse().ok())).unwrap_or(i64::from(reply.status.as_u16()));
    let message = format!("code {code}: {}", [text(body, "msg"), text(body, "message")].concat());
    match code {
        200 if reply.status.is_success() => None,
        403 => Some(ProviderError::Quota { message }),
        429 => Some(ProviderError::Throttled { retry_after: reply.retry_after, message }),
        _ => reply.status_error(message.clone()).or(Some(ProviderError::Unavailable { message })),
    }
}

fn read(page: &Value) -> RawHit {
    // `summary` is the longer text Bocha writes for LLM use; the snippet is the fallback.
    let summary = text(page, "summary");
    RawHit {
        title: text(page, "name"),
        url: text(page, "url"),
        snippet: if summary.is_empty() { text(page, "snippet") } else { summary },
        published: page["datePublished"].as_str().map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::reply;

    #[test]
    fn reads_web_pages() {
        let page = json!({"name": "茅台年报", "url": "https://example.com/c", "snippet": "s", "summary": "", "siteName": "x", "datePublished": "2026-04-30T10:00:00+08:00"});
        let hit = read(&page);
        assert_eq!(
            (hit.title.as_str(), hit.snippet.as_str(), hit.published.as_deref()),
            ("茅台年报", "s", Some("2026-04-30T10:00:00+08:00"))
        );
    }

    #[test]
    fn classifies_failures() {
        assert!(error(&reply(200, json!({"code": 200, "data": {}}))).is_none());
        assert!(matches!(error(&reply(403, json!({"code": "403", "msg": "余额不足"}))), Some(ProviderError::Quota { .. })));
        assert!(matches!(error(&reply(200, json!({"code": 403, "msg": "余额不足"}))), Some(ProviderError::Quota { .. })));
        assert!(matches!(error(&reply(429, json!({"code": 429, "msg": "rate"}))), Some(ProviderError::Throttled { .. })));
        assert!(matches!(error(&reply(401, json!({"code": 401, "msg": "bad key"}))), Some(ProviderError::Refused { .. })));
        assert!(matches!(error(&reply(502, Value::Null)), Some(ProviderError::Unavailable { .. })));
        assert!(matches!(error(&reply(200, json!({"code": 500, "msg": "x"}))), Some(ProviderError::Unavailable { .. })));
    }
}
