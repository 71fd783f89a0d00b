use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiContext;

/// The answer WeChat Pay expects when a notification is not taken: it delivers it again later.
#[derive(Serialize, ToSchema)]
pub struct NotifyFailure {
    /// Always `FAIL`.
    code: &'static str,
    message: String,
}

/// What a notification is answered.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only described: `notify` answers these itself.
pub enum NotifyAnswers {
    #[response(status = 204, description = "Recorded (or recorded before)")]
    Recorded,
    #[response(status = 400, description = "Not a genuine notification: malformed, stale, or its signature or encryption does not verify")]
    Invalid(NotifyFailure),
    #[response(status = 404, description = "It names an order or refund we never placed")]
    Unknown(NotifyFailure),
    #[response(status = 409, description = "It contradicts what is recorded (an amount that differs)")]
    Contradicts(NotifyFailure),
    #[response(status = 413, description = "The body is too large")]
    TooLarge(crate::error::ErrorBody),
    #[response(status = 500, description = "Verified but not recorded; WeChat Pay delivers it again")]
    NotRecorded(NotifyFailure),
    #[response(status = 503, description = "Payments are not configured on this server")]
    Unconfigured(NotifyFailure),
}

/// WeChat Pay's notification: 204 only once the event is durably recorded; anything else is
/// answered in WeChat Pay's own error shape, `{"code":"FAIL","message":…}`, with nothing written,
/// so a genuine event is delivered again later.
#[utoipa::path(post, path = "/payments/wechat/notify", tag = "payments",
    request_body(content = Object, description = "WeChat Pay's signed notification (`Wechatpay-Signature` and its headers); its resource is AES-256-GCM encrypted"),
    responses(NotifyAnswers),
)]
pub async fn notify(State(ctx): State<ApiContext>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(payments) = ctx.payments.as_ref() else {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "payments are not configured on this server");
    };
    match payments.billing.handle_notification(&headers, &body, Utc::now()).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(rejection) => {
            tracing::warn!(status = rejection.status, reason = %rejection.message, "payment notification refused");
            let status = StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::BAD_REQUEST);
            fail(status, &rejection.message)
        }
    }
}

/// The same webhook under the path of the original spec.
#[utoipa::path(post, path = "/admin/payments/webhook", tag = "payments",
    request_body(content = Object, description = "As `/payments/wechat/notify` takes it"),
    responses(NotifyAnswers),
)]
pub async fn notify_at_spec_path(state: State<ApiContext>, headers: HeaderMap, body: Bytes) -> Response {
    notify(state, headers, body).await
}

fn fail(status: StatusCode, message: &str) -> Response {
    (status, Json(NotifyFailure { code: "FAIL", message: message.to_string() })).into_response()
}
