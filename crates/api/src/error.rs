//! One error type for every endpoint, turned into one JSON shape in one place:
//! `{"error":{"code":"invalid_input","message":"…","field":"code"}}`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use twilight_accounts::AccountsError;
use twilight_billing::{BillingError, PaymentError};
use twilight_market::MarketError;
use twilight_search::SearchError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token: send 'Authorization: Bearer <key>'")]
    MissingToken,
    #[error("unknown bearer token")]
    UnknownToken,
    #[error("this key has been revoked")]
    Revoked,
    #[error("{0}")]
    Forbidden(&'static str),
    /// The key's user has not paid for the current period (its grace included); `renew_url` is
    /// their renewal page, for the bot to show them.
    #[error("the subscription has expired; renew at {renew_url}")]
    SubscriptionExpired { renew_url: String },
    #[error("{message}")]
    InvalidInput { field: Option<&'static str>, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A link that has done its job and no longer opens anything.
    #[error("{0}")]
    Gone(&'static str),
    /// The request does not fit the resource's current state.
    #[error("{0}")]
    Conflict(&'static str),
    /// The request ran past the edge's deadline.
    #[error("no answer within {} s; try again", .0.as_secs())]
    DeadlineExceeded(std::time::Duration),
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    NotImplemented(&'static str),
    /// A part this server does not run (payments without a processor configured).
    #[error("{0}")]
    Unavailable(&'static str),
    /// A failure of ours (a panic included); the detail is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// A request the protocol layer refused before any handler saw it (wrong method, media type,
    /// size), with the refusal's own status and words.
    #[error("{message}")]
    Protocol { status: StatusCode, message: String },
    /// A relayed upstream (the LLM) refused the request, failed or timed out; `status` is what we
    /// answer with (its client errors pass through, its failures are 502/503/504).
    #[error("{message}")]
    Upstream { status: StatusCode, message: String, retry_after_secs: Option<u64> },
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// Never holds `BillingError::Accounts`: `From` files those under `Accounts`.
    #[error(transparent)]
    Billing(BillingError),
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidInput { field: Some(field), message: message.into() }
    }

    pub(crate) fn status_code(&self) -> StatusCode {
        use MarketError as M;
        match self {
            ApiError::MissingToken | ApiError::UnknownToken => StatusCode::UNAUTHORIZED,
            ApiError::Revoked | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::SubscriptionExpired { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Protocol { status, .. } | ApiError::Upstream { status, .. } => *status,
            ApiError::Market(e) => match e {
                M::InvalidInput { .. } | M::NotTradingDay { .. } => StatusCode::BAD_REQUEST,
                M::NotFound(_) => StatusCode::NOT_FOUND,
                M::Throttled { .. } | M::SourceDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
                M::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                M::UpstreamAuth { .. } | M::UpstreamPermission { .. } | M::Upstream { .. } => StatusCode::BAD_GATEWAY,
                M::Warehouse(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Search(SearchError::InvalidInput { .. }) => StatusCode::BAD_REQUEST,
            ApiError::Search(SearchError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Accounts(e) => match e {
                AccountsError::NotFound(_) => StatusCode::NOT_FOUND,
                AccountsError::Conflict(_) | AccountsError::Rejected(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Billing(e) => match e {
                BillingError::PlanUnavailable(_) => StatusCode::UNPROCESSABLE_ENTITY,
                BillingError::PlanNotSold(_) | BillingError::UnknownRenewal => StatusCode::BAD_REQUEST,
                BillingError::Processor(p) if p.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
                BillingError::Processor(_) => StatusCode::BAD_GATEWAY,
                BillingError::Accounts(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// A stable, machine-readable code for clients (the agent's skill branches on it).
    fn code(&self) -> &'static str {
        use MarketError as M;
        match self {
            ApiError::MissingToken => "missing_token",
            ApiError::UnknownToken => "invalid_token",
            ApiError::Revoked => "revoked_key",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::SubscriptionExpired { .. } => "subscription_expired",
            ApiError::InvalidInput { .. } => "invalid_input",
            ApiError::NotFound(_) => "not_found",
            ApiError::Gone(_) => "gone",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::DeadlineExceeded(_) => "deadline_exceeded",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Protocol { status, .. } => match *status {
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::NOT_ACCEPTABLE => "not_acceptable",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ => "invalid_request",
            },
            ApiError::Upstream { status, .. } => match *status {
                StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
                StatusCode::TOO_MANY_REQUESTS => "upstream_throttled",
                s if s.is_client_error() => "upstream_rejected",
                _ => "upstream_error",
            },
            ApiError::Market(e) => match e {
                M::InvalidInput { .. } => "invalid_input",
                M::NotTradingDay { .. } => "not_trading_day",
                M::NotFound(_) => "not_found",
                M::Throttled { .. } => "upstream_throttled",
                M::SourceDown { .. } => "upstream_unavailable",
                M::Timeout { .. } => "upstream_timeout",
                M::UpstreamAuth { .. } | M::UpstreamPermission { .. } | M::Upstream { .. } => "upstream_error",
                M::Warehouse(_) => "internal",
            },
            ApiError::Search(SearchError::InvalidInput { .. }) => "invalid_input",
            ApiError::Search(SearchError::Unavailable { .. }) => "search_unavailable",
            ApiError::Accounts(e) => match e {
                AccountsError::NotFound(_) => "not_found",
                AccountsError::Conflict(_) | AccountsError::Rejected(_) => "conflict",
                _ => "internal",
            },
            ApiError::Billing(e) => match e {
                BillingError::PlanUnavailable(_) => "plan_unavailable",
                BillingError::PlanNotSold(_) | BillingError::UnknownRenewal => "invalid_input",
                BillingError::Processor(PaymentError::Unavailable(_)) => "payment_unavailable",
                BillingError::Processor(_) => "payment_error",
                BillingError::Accounts(_) => "internal",
            },
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidInput { field, .. } => *field,
            ApiError::Market(MarketError::InvalidInput { field, .. }) => Some(field),
            ApiError::Market(MarketError::NotTradingDay { .. }) => Some("trade_date"),
            ApiError::Search(SearchError::InvalidInput { field, .. }) => Some(field),
            ApiError::Billing(BillingError::PlanUnavailable(_) | BillingError::PlanNotSold(_)) => Some("plan"),
            ApiError::Billing(BillingError::UnknownRenewal) => Some("renew"),
            _ => None,
        }
    }
}

/// The JSON every error answers with, over HTTP and as an MCP tool error alike.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_input`, `missing_token`, `rate_limited`, `not_found`, …
    pub code: &'static str,
    pub message: String,
    /// The parameter or body field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// For `not_trading_day`: the last trading day before the one asked, `YYYYMMDD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applies: Option<String>,
    /// For `rate_limited` and `search_unavailable`: when to try again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// For `subscription_expired`: the user's renewal page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_url: Option<String>,
}

impl ErrorBody {
    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl ApiError {
    /// What this error answers, `{"error":{"code","message"[,"field"]…}}`. Internal details are
    /// logged here, never shown; upstream and client errors are safe to explain.
    pub(crate) fn body(&self) -> ErrorBody {
        let status = self.status_code();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
            "internal error; it has been logged".to_string()
        } else {
            if status.is_server_error() {
                tracing::warn!(error = %self, "upstream error");
            }
            self.to_string()
        };
        if let ApiError::RateLimited { .. } = self {
            metrics::counter!("twilight_rate_limited_total").increment(1);
        }
        let applies = match self {
            ApiError::Market(MarketError::NotTradingDay { previous: Some(previous), .. }) => Some(twilight_core::compact(*previous)),
            _ => None,
        };
        let retry_after_secs = match self {
            ApiError::RateLimited { retry_after_secs } | ApiError::Search(SearchError::Unavailable { retry_after_secs, .. }) => {
                Some(*retry_after_secs)
            }
            _ => None,
        };
        let renew_url = match self {
            ApiError::SubscriptionExpired { renew_url } => Some(renew_url.clone()),
            _ => None,
        };
        ErrorBody { error: ErrorDetail { code: self.code(), message, field: self.field(), applies, retry_after_secs, renew_url } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status_code(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::MissingToken | ApiError::UnknownToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } | ApiError::Upstream { retry_after_secs: Some(retry_after_secs), .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Market(MarketError::Throttled { .. }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            ApiError::Market(MarketError::SourceDown { retry_after_secs, .. })
            | ApiError::Search(SearchError::Unavailable { retry_after_secs, .. }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidInput { field: None, message: rejection.body_text() }
    }
}

impl From<BillingError> for ApiError {
    fn from(error: BillingError) -> Self {
        match error {
            BillingError::Accounts(e) => ApiError::Accounts(e),
            other => ApiError::Billing(other),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::InvalidInput { field: None, message: rejection.body_text() }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            status @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => {
                ApiError::Protocol { status, message: rejection.body_text() }
            }
            _ => ApiError::InvalidInput { field: None, message: rejection.body_text() },
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<twilight_chart::ChartError> for ApiError {
    fn from(error: twilight_chart::ChartError) -> ApiError {
        use twilight_chart::ChartError as C;
        match error {
            C::InvalidInput { field, message } => ApiError::invalid(field, message),
            C::Market(error) => ApiError::Market(error),
            C::NoFont(why) => {
                tracing::error!(%why, "charts cannot be drawn");
                ApiError::Unavailable("charts are unavailable on this server: no font with Chinese is installed")
            }
            C::Render(why) => ApiError::Internal(why),
        }
    }
}
