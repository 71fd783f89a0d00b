//! The one trait every search provider implements, and the HTTP plumbing they share.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use secrecy::SecretString;
use twilight_core::cite::SANDBOX_HEADER;

use crate::SearchRequest;

/// One result as a provider wrote it: snippets may hold HTML, dates are in the provider's format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawHit {
    pub title: String,
    pub url: String,
    pub snippet: String,
    pub published: Option<String>,
}

/// One provider's answer to one search.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub hits: Vec<RawHit>,
    /// A simulator answered (it said so in its `X-Twilight-Sandbox` header).
    pub sandbox: bool,
}

/// Why a provider gave no answer; each kind moves the search on to the next provider.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Too many requests for now: left alone for `retry_after` (or the breaker window).
    #[error("throttled: {message}")]
    Throttled { retry_after: Option<Duration>, message: String },
    /// Today's quota or the account's balance is spent: left alone until tomorrow.
    #[error("quota exhausted: {message}")]
    Quota { message: String },
    /// 5xx, a timeout, a broken connection or an answer we cannot read.
    #[error("unavailable: {message}")]
    Unavailable { message: String },
    /// Refused for a reason of ours (a bad key or parameter): left alone for a window, and loud.
    #[error("refused: {message}")]
    Refused { message: String },
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The name cites and counters use: `dashscope`, `google_cse`, `bocha`.
    fn name(&self) -> &'static str;
    async fn search(&self, request: &SearchRequest) -> Result<Page, ProviderError>;
}

/// Where a provider is reached and with what key.
#[derive(Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub key: SecretString,
    pub timeout: Duration,
}

/// What came back over HTTP, before the provider reads its protocol out of it.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub sandbox: bool,
    pub body: serde_json::Value,
}

pub(crate) fn client(endpoint: &Endpoint) -> reqwest::Client {
    reqwest::Client::builder().timeout(endpoint.timeout).build().expect("a reqwest client with rustls builds")
}

/// Sends `request`; transport failures and timeouts are [`ProviderError::Unavailable`], and a
/// body that is not JSON is read as `null` (the status still says what happened).
pub(crate) async fn send(request: RequestBuilder) -> Result<Reply, ProviderError> {
    // `without_url`: Google's key travels in the query string.
    let unavailable = |e: reqwest::Error| ProviderError::Unavailable {
        message: if e.is_timeout() { "timed out".into() } else { e.without_url().to_string() },
    };
    let response = request.send().await.map_err(unavailable)?;
    let headers = response.headers().clone();
    let status = response.status();
    let bytes = response.bytes().await.map_err(unavailable)?;
    Ok(Reply {
        status,
        retry_after: retry_after(&headers),
        sandbox: headers.contains_key(SANDBOX_HEADER),
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok().map(Duration::from_secs)
}

impl Reply {
    /// The error for a status every provider reads the same way; `None` for 2xx.
    pub(crate) fn status_error(&self, message: String) -> Option<ProviderError> {
        let status = self.status;
        if status.is_success() {
            None
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Some(ProviderError::Throttled { retry_after: self.retry_after, message })
        } else if status.is_server_error() {
            Some(ProviderError::Unavailable { message })
        } else {
            Some(ProviderError::Refused { message })
        }
    }
}

/// A reply as a provider's tests read it.
#[cfg(test)]
pub(crate) fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply { status: StatusCode::from_u16(status).expect("a valid status"), retry_after: None, sandbox: false, body }
}

/// A string field of a JSON object, empty when absent.
pub(crate) fn text(value: &serde_json::Value, field: &str) -> String {
    value[field].as_str().unwrap_or_default().to_string()
}
