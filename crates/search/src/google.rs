//! Google Programmable Search (the Custom Search JSON API), the first fallback. Closed to new
//! customers and announced to end on 2027-01-01: leaving it out of `search.order` removes it.

use async_trait::async_trait;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::provider::{client, send, text, Endpoint, Page, Provider, ProviderError, RawHit, Reply};
use crate::SearchRequest;

/// The API returns at most 10 results per call.
const MAX_NUM: usize = 10;

pub struct GoogleCse {
    endpoint: Endpoint,
    /// The search engine ID (`cx`); not a secret.
    engine_id: String,
    http: reqwest::Client,
}

impl GoogleCse {
    pub fn new(endpoint: Endpoint, engine_id: String) -> Self {
        GoogleCse { http: client(&endpoint), endpoint, engine_id }
    }
}

#[async_trait]
impl Provider for GoogleCse {
    fn name(&self) -> &'static str {
        "google_cse"
    }

    async fn search(&self, request: &SearchRequest) -> Result<Page, ProviderError> {
        let url = format!("{}/customsearch/v1", self.endpoint.base_url.trim_end_matches('/'));
        let num = request.max_results.min(MAX_NUM).to_string();
        let mut query = vec![
            ("key", self.endpoint.key.expose_secret().to_string()),
            ("cx", self.engine_id.clone()),
            ("q", request.query.clone()),
            ("num", num),
        ];
        if let Some(since) = request.since {
            let days = (twilight_core::china_today(Utc::now()) - since).num_days().max(1);
            query.push(("dateRestrict", format!("d{days}")));
        }
        let reply = send(self.http.get(url).query(&query)).await?;
        if let Some(error) = error(&reply) {
            return Err(error);
        }
        Ok(Page { hits: read(&reply.body), sandbox: reply.sandbox })
    }
}

/// Google's errors: `{"error":{"code","message","errors":[{"reason"}]}}`; a spent daily quota is a
/// 403 (or 429) whose reason says so.
fn error(reply: &Reply) -> Option<ProviderError> {
    let error = &reply.body["error"];
    let reasons: Vec<&str> = error["errors"].as_array().into_iter().flatten().filter_map(|e| e["reason"].as_str()).collect();
    let message = format!("HTTP {} {} ({})", reply.status.as_u16(), text(error, "message"), reasons.join(", "));
    if reasons.iter().any(|r| matches!(*r, "dailyLimitExceeded" | "quotaExceeded" | "billingNotEnabled")) {
        return Some(ProviderError::Quota { message });
    }
    reply.status_error(message)
}

/// The results; an answer without `items` has none. The publication date, when the page declares
/// one, is in its metatags; otherwise Google often starts the snippet with it (`Apr 30, 2026 ...`).
fn read(body: &Value) -> Vec<RawHit> {
    let items = body["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let metatags = &item["pagemap"]["metatags"][0];
            let declared = ["article:published_time", "og:updated_time", "pubdate"].iter().find_map(|tag| metatags[*tag].as_str());
            let snippet = text(item, "snippet");
            let (dated, rest) = match snippet.split_once(" ... ") {
                Some((date, rest)) if crate::clean::parse_published(date).is_some() => (Some(date.to_string()), rest.to_string()),
                _ => (None, snippet.clone()),
            };
            RawHit { title: text(item, "title"), url: text(item, "link"), snippet: rest, published: declared.map(str::to_string).or(dated) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::reply;
    use serde_json::json;

    #[test]
    fn reads_items_and_their_dates() {
        let body = json!({"kind": "customsearch#search", "items": [
            {"title": "A", "link": "https://example.com/a", "snippet": "Apr 30, 2026 ... 营业收入 &amp; 净利润", "displayLink": "example.com"},
            {"title": "B", "link": "https://example.com/b", "snippet": "plain", "pagemap": {"metatags": [{"article:published_time": "2026-05-01T08:00:00Z"}]}}
        ]});
        let hits = read(&body);
        assert_eq!((hits[0].published.as_deref(), hits[0].snippet.as_str()), (Some("Apr 30, 2026"), "营业收入 &amp; 净利润"));
        assert_eq!(hits[1].published.as_deref(), Some("2026-05-01T08:00:00Z"));
        assert!(read(&json!({"searchInformation": {"totalResults": "0"}})).is_empty());
    }

    #[test]
    fn classifies_failures() {
        let body = |reason: &str| json!({"error": {"code": 403, "message": "m", "errors": [{"reason": reason, "domain": "usageLimits"}]}});
        assert!(matches!(error(&reply(403, body("dailyLimitExceeded"))), Some(ProviderError::Quota { .. })));
        assert!(matches!(error(&reply(403, body("accessNotConfigured"))), Some(ProviderError::Refused { .. })));
        assert!(matches!(error(&reply(429, body("rateLimitExceeded"))), Some(ProviderError::Throttled { .. })));
        assert!(matches!(error(&reply(500, Value::Null)), Some(ProviderError::Unavailable { .. })));
        assert!(error(&reply(200, json!({"items": []}))).is_none());
    }
}
