use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::extract::{ApiJson, ApiPath};
use crate::{ApiContext, ApiError, ApiResult};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    reason: Option<String>,
}

/// `POST /admin/orders/{order_id}/refund` — asks the processor for a full refund (202: it is
/// recorded, and the user's service ended, when the processor's refund notification arrives).
pub async fn refund(
    State(ctx): State<ApiContext>,
    ApiPath(order_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RefundRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.reason.as_deref().is_some_and(|reason| reason.chars().count() > 80) {
        return Err(ApiError::invalid("reason", "reason must be at most 80 characters"));
    }
    let receipt = ctx.payments()?.billing.refund(order_id, body.reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "refund_id": receipt.refund_id, "out_refund_no": receipt.out_refund_no, "status": receipt.status })),
    ))
}
