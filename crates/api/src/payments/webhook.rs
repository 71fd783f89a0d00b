use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use crate::ApiContext;

/// `POST /payments/wechat/notify` (also `/admin/payments/webhook`) — WeChat Pay's notification.
/// 204 only once the event is durably recorded; anything else is answered in WeChat Pay's own
/// error shape, `{"code":"FAIL","message":…}`, with nothing written, so a genuine event is
/// delivered again later.
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

fn fail(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "code": "FAIL", "message": message }))).into_response()
}
