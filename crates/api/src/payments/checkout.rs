use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use twilight_accounts::Plan;
use twilight_billing::OrderView;
use uuid::Uuid;

use crate::edge::ClientIp;
use crate::extract::{ApiJson, ApiPath};
use crate::{onboarding, qr, ApiContext, ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    plan: String,
    /// The onboarding token of an earlier order, to renew that user instead of creating one.
    renew: Option<String>,
}

/// `POST /checkout` — places an order and answers what the payer's page shows: the QR to pay,
/// the amount, when it expires, where to poll, and the onboarding link to go on to once paid.
pub async fn create(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    ApiJson(body): ApiJson<CheckoutRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let payments = ctx.payments()?;
    let plan: Plan =
        body.plan.parse().map_err(|_| ApiError::invalid("plan", format!("unknown plan '{}'; one of: pro, lite", body.plan)))?;
    let renew = body.renew.as_deref().map(str::trim).filter(|token| !token.is_empty());
    ctx.ip_limits.order(client)?;
    let now = Utc::now();
    let placed = payments.billing.checkout(plan, renew, now).await?;
    let view = payments
        .billing
        .order(placed.payment.payment_id, now)
        .await?
        .ok_or_else(|| ApiError::Internal("the order just placed cannot be read back".into()))?;
    let mut answer = order_json(&view);
    answer["code_url"] = placed.code_url.clone().into();
    answer["qr_svg"] = qr::svg(&placed.code_url)?.into();
    answer["onboarding_url"] = onboarding::url(&placed.onboarding_token).into();
    if let Some(sandbox) = &ctx.sandbox_links {
        answer["sandbox_pay_url"] = sandbox.pay_url(&view.out_trade_no).into();
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /orders/{order_id}` — the order's stage (pending → paid → provisioning → ready, or
/// expired, closed, failed, refunded) for the payer's page to poll.
pub async fn order(State(ctx): State<ApiContext>, ApiPath(order_id): ApiPath<Uuid>) -> ApiResult<Json<Value>> {
    let view = ctx.payments()?.billing.order(order_id, Utc::now()).await?;
    let view = view.ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))?;
    Ok(Json(order_json(&view)))
}

fn order_json(view: &OrderView) -> Value {
    let mut value = serde_json::to_value(view).unwrap_or_else(|_| json!({}));
    value["status_url"] = format!("/orders/{}", view.order_id).into();
    value
}
