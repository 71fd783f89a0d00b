//! The LLM relay at `/llm/v1`: an OpenAI-compatible front of the upstream model service (DashScope's
//! compatible mode; the sandbox LLM in sandbox mode), so a user's bot calls its model with the
//! user's own revocable key and no profile holds the backend's upstream key.
//!
//! `POST /llm/v1/chat/completions` is authenticated like the data plane (401/403), rate limited
//! from a bucket of its own per key (an agent turn makes several model calls; they must not eat the
//! data lookups' bucket), checked (JSON object, an allowed `model`, `messages`, at most
//! [`MAX_BODY_BYTES`]) and forwarded with the backend's key; the answer — status, content type and
//! body, a streamed one chunk by chunk — is relayed. Every request past the limiter is one usage
//! row, endpoint `llm`, whose `upstream_cost_pts` are the upstream's `usage.total_tokens` (0 for
//! refusals and upstream failures); a streamed request is made to carry its usage in its last chunk
//! (`stream_options.include_usage`), read as the events pass, and metered when the stream ends or
//! the client goes away. The tokens also feed the soft daily [`Budget`]. `GET /llm/v1/models` is
//! relayed too (metered as `llm:models`).

mod budget;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use budget::Budget;
use stream::{Meter, Metered};

use crate::auth::UserKey;
use crate::limit::RateLimits;
use crate::{ApiContext, ApiError, ApiResult};

/// The largest request body relayed (413 above it); a long agent conversation stays well under it.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// The usage_log endpoint of a chat completion.
pub const COMPLETION_ENDPOINT: &str = "llm";
/// The usage_log endpoint of a model listing.
pub const MODELS_ENDPOINT: &str = "llm:models";
/// Longest upstream error message passed on to the client.
const MAX_DETAIL_CHARS: usize = 300;

/// How the relay reaches its upstream.
#[derive(Clone)]
pub struct RelayConfig {
    /// The upstream's OpenAI-compatible base URL, e.g. `https://dashscope.aliyuncs.com/compatible-mode/v1`;
    /// `/chat/completions` and `/models` are appended.
    pub base_url: String,
    /// The backend's upstream key: sent upstream only, never shown or logged.
    pub api_key: SecretString,
    /// The longest wait for the upstream: to connect, for its answer to begin, and between two
    /// pieces of it (a streamed answer may run longer in all).
    pub timeout: Duration,
    /// Tokens per user per UTC day before a warning is logged (a soft budget; 0: no warning).
    pub daily_token_budget: u64,
    /// Models a user may ask for; empty allows any.
    pub allowed_models: Vec<String>,
    /// Relayed requests per minute per key, in a bucket of its own.
    pub rate_limit_per_min: u32,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("daily_token_budget", &self.daily_token_budget)
            .field("allowed_models", &self.allowed_models)
            .field("rate_limit_per_min", &self.rate_limit_per_min)
            .finish()
    }
}

/// Why a relay could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RelaySetupError {
    #[error("llm.base_url {0:?} is not an http:// or https:// URL")]
    BaseUrl(String),
    #[error("the LLM API key is not usable in an HTTP header")]
    ApiKey,
    #[error("building the LLM HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The relay's upstream client, its own rate limits and the daily budget; shared by the handlers.
pub struct Relay {
    config: RelayConfig,
    base_url: String,
    /// `Bearer <backend key>`, marked sensitive.
    authorization: HeaderValue,
    client: reqwest::Client,
    limits: RateLimits,
    pub budget: Budget,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(config: RelayConfig) -> Result<Relay, RelaySetupError> {
        let base_url = config.base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(RelaySetupError::BaseUrl(config.base_url));
        }
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", config.api_key.expose_secret().trim())).map_err(|_| RelaySetupError::ApiKey)?;
        authorization.set_sensitive(true);
        let client =
            reqwest::Client::builder().connect_timeout(config.timeout.min(Duration::from_secs(10))).read_timeout(config.timeout).build()?;
        Ok(Relay { budget: Budget::new(config.daily_token_budget), limits: RateLimits::default(), base_url, authorization, client, config })
    }

    fn check_model(&self, model: &str) -> ApiResult<()> {
        let allowed = &self.config.allowed_models;
        if allowed.is_empty() || allowed.iter().any(|m| m == model) {
            return Ok(());
        }
        Err(ApiError::invalid("model", format!("model {model:?} is not available here; use one of: {}", allowed.join(", "))))
    }

    /// Sends one request upstream with the backend's key; an error status becomes our error.
    async fn send(&self, request: reqwest::RequestBuilder) -> ApiResult<reqwest::Response> {
        let response = request.header(AUTHORIZATION, self.authorization.clone()).send().await.map_err(unreachable_upstream)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refusal(response).await)
        }
    }

    /// Relays a checked completion request. A streamed answer comes back with the meter inside its
    /// body; otherwise the meter is finished here.
    async fn complete(&self, request: Value, meter: &mut Meter) -> ApiResult<Response> {
        let streamed = request["stream"].as_bool() == Some(true);
        let upstream = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, if streamed { "text/event-stream" } else { "application/json" })
            .body(serde_json::to_vec(&request).map_err(|e| ApiError::Internal(e.to_string()))?);
        let response = self.send(upstream).await?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        if content_type.as_ref().and_then(|t| t.to_str().ok()).is_some_and(|t| t.starts_with("text/event-stream")) {
            let meter = std::mem::replace(meter, Meter::done());
            let body = Body::from_stream(Metered::new(response.bytes_stream(), meter, status.as_u16()));
            let mut relayed = relayed(status, content_type, body);
            relayed.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return Ok(relayed);
        }
        let body = response.bytes().await.map_err(unreachable_upstream)?;
        let tokens = serde_json::from_slice::<Value>(&body).ok().and_then(|answer| answer["usage"]["total_tokens"].as_u64()).unwrap_or(0);
        meter.finish(status.as_u16(), tokens);
        Ok(relayed(status, content_type, Body::from(body)))
    }

    async fn models(&self) -> ApiResult<Response> {
        let response = self.send(self.client.get(format!("{}/models", self.base_url)).header(ACCEPT, "application/json")).await?;
        let (status, content_type) = (response.status(), response.headers().get(CONTENT_TYPE).cloned());
        let body = response.bytes().await.map_err(unreachable_upstream)?;
        Ok(relayed(status, content_type, Body::from(body)))
    }
}

pub fn router(ctx: ApiContext) -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(completions))
        .routes(routes!(models))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(ctx, admit))
}

/// Auth → the relay's own rate limit, before any body is read; the key and the relay go to the handler.
async fn admit(State(ctx): State<ApiContext>, mut request: Request, next: Next) -> ApiResult<Response> {
    let key = ctx.auth.user(request.headers(), ctx.client_of(&request)).await?;
    let relay = ctx.llm.clone().ok_or(ApiError::Unavailable("the LLM relay is not configured on this server"))?;
    relay.limits.check_per_min(&key, relay.config.rate_limit_per_min)?;
    request.extensions_mut().insert(key);
    request.extensions_mut().insert(relay);
    Ok(next.run(request).await)
}

/// An OpenAI chat-completions request, as the relay checks it; every other field goes upstream as
/// sent.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only described: the relay reads the body as JSON and passes it on.
struct ChatRequest {
    /// One of the models the relay allows (`GET /llm/v1/models`).
    model: String,
    /// The conversation; not empty.
    #[schema(min_items = 1)]
    messages: Vec<serde_json::Map<String, Value>>,
    /// Stream the answer as server-sent events (the relay asks for the usage chunk).
    stream: Option<bool>,
}

/// What a relayed request may be refused with, besides the upstream's own client errors.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only described: the variants are answered as `ApiError`s.
enum RelayErrors {
    #[response(status = 400, description = "Not a chat-completions request, or a model the relay does not allow (`field` names it)")]
    BadRequest(crate::error::ErrorBody),
    #[response(status = 401, description = "No API key, or one nobody issued")]
    Unauthorized(crate::error::ErrorBody),
    #[response(status = 402, description = "The key's subscription has expired")]
    PaymentRequired(crate::error::ErrorBody),
    #[response(status = 403, description = "The key has been revoked")]
    Forbidden(crate::error::ErrorBody),
    #[response(status = 413, description = "The body is too large")]
    TooLarge(crate::error::ErrorBody),
    #[response(status = 429, description = "The relay's rate limit or the user's daily token budget", headers(("Retry-After" = u64)))]
    RateLimited(crate::error::ErrorBody),
    #[response(status = 502, description = "The upstream failed")]
    BadGateway(crate::error::ErrorBody),
    #[response(status = 503, description = "The relay is not configured, or the upstream is down")]
    Unavailable(crate::error::ErrorBody),
    #[response(status = 504, description = "The upstream did not answer in time")]
    Timeout(crate::error::ErrorBody),
}

/// The LLM relay: the user's bot asks the model through us, with its own key; metered in tokens.
#[utoipa::path(post, path = "/llm/v1/chat/completions", tag = "agent", security(("user_key" = [])), request_body = ChatRequest, responses(
    (status = 200, description = "The upstream's answer, as it gave it", content(
        (Object = "application/json"),
        (String = "text/event-stream"),
    )),
    RelayErrors,
))]
async fn completions(
    State(ctx): State<ApiContext>,
    Extension(key): Extension<Arc<UserKey>>,
    Extension(relay): Extension<Arc<Relay>>,
    request: Request,
) -> Response {
    let mut meter = Meter::new(relay.clone(), ctx.usage.clone(), key.clone());
    let answer = async {
        let body =
            Bytes::from_request(request, &ctx).await.map_err(|r| ApiError::Protocol { status: r.status(), message: r.body_text() })?;
        let request = checked(&relay, &body)?;
        relay.budget.seed(&*ctx.accounts, key.user_id).await;
        relay.complete(request, &mut meter).await
    };
    match answer.await {
        Ok(response) => response,
        Err(error) => {
            meter.finish(error.status_code().as_u16(), 0);
            error.into_response()
        }
    }
}

/// The models the upstream offers, as it lists them.
#[utoipa::path(get, path = "/llm/v1/models", tag = "agent", security(("user_key" = [])), responses(
    (status = 200, description = "The upstream's list", body = Object),
    RelayErrors,
))]
async fn models(
    State(ctx): State<ApiContext>,
    Extension(key): Extension<Arc<UserKey>>,
    Extension(relay): Extension<Arc<Relay>>,
) -> Response {
    let response = relay.models().await.unwrap_or_else(IntoResponse::into_response);
    ctx.usage.record_call(&key, MODELS_ENDPOINT, response.status().as_u16(), 0, None);
    response
}

/// The request as it goes upstream: a JSON object with an allowed `model` and non-empty
/// `messages`; a streamed one asks for the usage chunk. Anything else is left to the upstream.
fn checked(relay: &Relay, body: &[u8]) -> ApiResult<Value> {
    let mut request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidInput { field: None, message: format!("the body is not valid JSON: {e}") })?;
    let Some(object) = request.as_object_mut() else {
        return Err(ApiError::InvalidInput {
            field: None,
            message: "the body must be a JSON object (an OpenAI chat-completions request)".into(),
        });
    };
    match object.get("model") {
        Some(Value::String(model)) if !model.is_empty() => relay.check_model(model)?,
        _ => return Err(ApiError::invalid("model", "'model' must name a model, e.g. \"qwen3.7-plus\"")),
    }
    if object.get("messages").and_then(Value::as_array).is_none_or(|m| m.is_empty()) {
        return Err(ApiError::invalid("messages", "'messages' must be a non-empty array of chat messages"));
    }
    let streamed = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(streamed)) => *streamed,
        Some(_) => return Err(ApiError::invalid("stream", "'stream' must be true or false")),
    };
    if streamed {
        let options = object.entry("stream_options").or_insert_with(|| json!({}));
        let Some(options) = options.as_object_mut() else {
            return Err(ApiError::invalid("stream_options", "'stream_options' must be an object"));
        };
        options.insert("include_usage".into(), Value::Bool(true));
    }
    Ok(request)
}

fn relayed(status: StatusCode, content_type: Option<HeaderValue>, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

/// The upstream could not be reached, or did not answer in time (504).
fn unreachable_upstream(error: reqwest::Error) -> ApiError {
    if error.is_timeout() {
        return ApiError::Upstream {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: "the model service did not answer in time".into(),
            retry_after_secs: None,
        };
    }
    tracing::warn!(error = %error, "the LLM upstream cannot be reached");
    ApiError::Upstream { status: StatusCode::BAD_GATEWAY, message: "the model service cannot be reached".into(), retry_after_secs: None }
}

/// An upstream error status as our error: its client errors are the caller's (relayed with the
/// upstream's message), a refused backend key is ours (502, logged), throttling is 429 and an
/// unavailable upstream 503, anything else 502.
async fn refusal(response: reqwest::Response) -> ApiError {
    let status = response.status();
    let retry_after_secs = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()?.trim().parse().ok());
    let body = response.bytes().await.unwrap_or_default();
    let detail = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|e| {
            e["error"]["message"].as_str().or_else(|| e["message"].as_str()).map(|m| m.chars().take(MAX_DETAIL_CHARS).collect::<String>())
        })
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let (status, message, retry_after_secs) = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            tracing::error!(
                upstream_status = status.as_u16(),
                "the LLM upstream refused the relay's key; check llm.api_key_file / TWILIGHT_LLM_API_KEY"
            );
            (StatusCode::BAD_GATEWAY, "the model service refused this server's credentials".to_string(), None)
        }
        StatusCode::TOO_MANY_REQUESTS => (status, format!("the model service is busy: {detail}"), Some(retry_after_secs.unwrap_or(5))),
        s if s.is_client_error() => (s, format!("the model service refused the request: {detail}"), None),
        StatusCode::SERVICE_UNAVAILABLE => (status, "the model service is unavailable".to_string(), retry_after_secs),
        _ => (StatusCode::BAD_GATEWAY, format!("the model service failed with HTTP {}", status.as_u16()), None),
    };
    ApiError::Upstream { status, message, retry_after_secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(allowed: &[&str]) -> Relay {
        Relay::new(RelayConfig {
            base_url: "http://127.0.0.1:9/v1/".into(),
            api_key: "sk-backend".to_string().into(),
            timeout: Duration::from_secs(1),
            daily_token_budget: 10,
            allowed_models: allowed.iter().map(|m| m.to_string()).collect(),
            rate_limit_per_min: 60,
        })
        .unwrap()
    }

    fn field(error: ApiError) -> Option<&'static str> {
        match error {
            ApiError::InvalidInput { field, .. } => field,
            other => panic!("not invalid input: {other:?}"),
        }
    }

    #[test]
    fn requests_are_checked_before_they_go_upstream() {
        let relay = relay(&["qwen3.7-plus"]);
        assert_eq!(relay.base_url, "http://127.0.0.1:9/v1");
        assert!(!format!("{relay:?}").contains("sk-backend"));
        let ok = checked(&relay, br#"{"model":"qwen3.7-plus","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert!(ok.get("stream_options").is_none());
        let streamed = checked(
            &relay,
            br#"{"model":"qwen3.7-plus","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(streamed["stream_options"], json!({"x": 1, "include_usage": true}));

        assert_eq!(field(checked(&relay, b"{not json").unwrap_err()), None);
        assert_eq!(field(checked(&relay, b"[1]").unwrap_err()), None);
        assert_eq!(field(checked(&relay, br#"{"model":"qwen3.7-max","messages":[{"role":"user"}]}"#).unwrap_err()), Some("model"));
        assert_eq!(field(checked(&relay, br#"{"messages":[{"role":"user"}]}"#).unwrap_err()), Some("model"));
        assert_eq!(field(checked(&relay, br#"{"model":"qwen3.7-plus","messages":[]}"#).unwrap_err()), Some("messages"));
        assert_eq!(field(checked(&relay, br#"{"model":"qwen3.7-plus","messages":[{}],"stream":"yes"}"#).unwrap_err()), Some("stream"));
        assert!(
            checked(&super::tests::relay(&[]), br#"{"model":"anything","messages":[{}]}"#).is_ok(),
            "an empty allowlist allows any model"
        );
    }

    #[test]
    fn a_bad_base_url_is_refused() {
        let config = RelayConfig { base_url: "dashscope.aliyuncs.com".into(), ..relay(&[]).config };
        assert!(matches!(Relay::new(config), Err(RelaySetupError::BaseUrl(_))));
    }
}
