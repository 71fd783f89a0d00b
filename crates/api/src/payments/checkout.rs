use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use twilight_accounts::Plan;
use twilight_billing::OrderView;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::edge::ClientIp;
use crate::extract::{ApiJson, ApiPath};
use crate::{onboarding, qr, ApiContext, ApiError, ApiResult};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// `pro` is sold; `lite` is shown but not sold yet (422).
    #[schema(value_type = Plan)]
    plan: String,
    /// To renew an existing user instead of creating one: their renewal code (from their renewal
    /// link) or the onboarding token of their earlier order.
    renew: Option<String>,
}

/// An order as its payer's page polls it.
#[derive(Serialize, ToSchema)]
pub struct Order {
    #[serde(flatten)]
    view: OrderView,
    /// Where to poll the order's stage.
    status_url: String,
}

/// A placed order, with what the payer needs to pay it and go on.
#[derive(Serialize, ToSchema)]
pub struct Checkout {
    #[serde(flatten)]
    order: Order,
    /// What the payment QR code encodes (`weixin://wxpay/bizpayurl?pr=…`).
    code_url: String,
    /// That QR code as an SVG document.
    qr_svg: String,
    /// The onboarding link to follow once paid; shown this once.
    onboarding_url: String,
    /// Only against the sandbox: the page that plays the payer's phone.
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox_pay_url: Option<String>,
}

/// Places an order and answers what the payer's page shows: the QR to pay, the amount, when it
/// expires, where to poll, and the onboarding link to go on to once paid.
#[utoipa::path(post, path = "/checkout", tag = "payments", request_body = CheckoutRequest, responses(
    (status = 201, description = "The order, ready to pay", body = Checkout),
    (status = 502, description = "The processor refused the order", body = crate::error::ErrorBody),
    crate::openapi::PublicErrors,
))]
pub async fn create(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    ApiJson(body): ApiJson<CheckoutRequest>,
) -> ApiResult<(StatusCode, Json<Checkout>)> {
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
    let sandbox_pay_url = ctx.sandbox_links.as_ref().map(|sandbox| sandbox.pay_url(&view.out_trade_no));
    Ok((
        StatusCode::CREATED,
        Json(Checkout {
            qr_svg: qr::svg(&placed.code_url)?,
            code_url: placed.code_url,
            onboarding_url: onboarding::url(&placed.onboarding_token),
            sandbox_pay_url,
            order: Order::of(view),
        }),
    ))
}

/// The order's stage (pending → paid → provisioning → ready, or expired, closed, failed,
/// refunded) for the payer's page to poll.
#[utoipa::path(get, path = "/orders/{order_id}", tag = "payments", params(("order_id" = Uuid, Path)), responses(
    (status = 200, description = "The order", body = Order),
    crate::openapi::PublicErrors,
))]
pub async fn order(State(ctx): State<ApiContext>, ApiPath(order_id): ApiPath<Uuid>) -> ApiResult<Json<Order>> {
    let view = ctx.payments()?.billing.order(order_id, Utc::now()).await?;
    let view = view.ok_or_else(|| ApiError::NotFound(format!("no order {order_id}")))?;
    Ok(Json(Order::of(view)))
}

impl Order {
    fn of(view: OrderView) -> Order {
        Order { status_url: format!("/orders/{}", view.order_id), view }
    }
}
