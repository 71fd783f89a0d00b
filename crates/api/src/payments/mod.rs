//! Buying the product: checkout (a WeChat Pay QR to scan), the order's stage for the payer's page
//! to poll, and the processor's notification webhook. None of these take an API key: the order id
//! and the onboarding token are the payer's capabilities, the webhook is verified by signature.

mod checkout;
mod webhook;

pub use webhook::NotifyFailure;

use std::sync::Arc;

use twilight_billing::Billing;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiContext, ApiError};

/// Selling through one processor; absent when payments are not configured.
pub struct Payments {
    pub billing: Billing,
}

/// The path WeChat Pay posts to, as configured in `notify_url`.
pub const NOTIFY_PATH: &str = "/payments/wechat/notify";
/// The same webhook under the path of the original spec.
pub const SPEC_NOTIFY_PATH: &str = "/admin/payments/webhook";

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(checkout::create))
        .routes(routes!(checkout::order))
        .routes(routes!(webhook::notify))
        .routes(routes!(webhook::notify_at_spec_path))
}

impl ApiContext {
    pub(crate) fn payments(&self) -> Result<&Arc<Payments>, ApiError> {
        self.payments.as_ref().ok_or(ApiError::Unavailable("payments are not configured on this server"))
    }
}
