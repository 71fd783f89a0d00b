use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::extract::{ApiJson, ApiPath};
use crate::{ApiContext, ApiError, ApiResult};

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Shown to the payer by WeChat Pay; at most 80 characters.
    #[schema(max_length = 80)]
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RefundAccepted {
    refund_id: String,
    out_refund_no: String,
    /// WeChat Pay's refund status: `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`.
    #[schema(value_type = String)]
    status: twilight_billing::RefundStatus,
}

/// Asks the processor for a full refund (202: it is recorded, and the user's service ended, when
/// the processor's refund notification arrives).
#[utoipa::path(post, path = "/admin/orders/{order_id}/refund", tag = "admin", security(("admin_token" = [])),
    params(("order_id" = Uuid, Path)),
    request_body = RefundRequest,
    responses(
        (status = 202, description = "The processor took the refund", body = RefundAccepted),
        (status = 502, description = "The processor refused it", body = crate::error::ErrorBody),
        (status = 503, description = "Payments are not configured, or the processor is unavailable", body = crate::error::ErrorBody),
        crate::openapi::AdminErrors,
    ),
)]
pub async fn refund(
    State(ctx): State<ApiContext>,
    ApiPath(order_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RefundRequest>,
) -> ApiResult<(StatusCode, Json<RefundAccepted>)> {
    if body.reason.as_deref().is_some_and(|reason| reason.chars().count() > 80) {
        return Err(ApiError::invalid("reason", "reason must be at most 80 characters"));
    }
    let receipt = ctx.payments()?.billing.refund(order_id, body.reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RefundAccepted { refund_id: receipt.refund_id, out_refund_no: receipt.out_refund_no, status: receipt.status }),
    ))
}
