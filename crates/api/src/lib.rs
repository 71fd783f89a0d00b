#![forbid(unsafe_code)]
//! The HTTP surface: data plane, admin API, payments, onboarding, health. Every route is listed in `router`.

pub mod admin;
pub mod auth;
pub mod data;
pub mod error;
pub mod extract;
pub mod limit;
pub mod llm;
pub mod mcp;
pub mod onboarding;
pub mod payments;
pub mod qr;
pub mod usage;
pub mod web;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use twilight_accounts::Accounts;
use twilight_market::Market;

pub use error::{ApiError, ApiResult};

/// The one state every handler shares. Cloned per request by axum, so it is one `Arc`: cloning the
/// fields one by one (and the sandbox links' strings) showed up at ~4 % of CPU in the benchmark.
#[derive(Clone)]
pub struct ApiContext(Arc<Shared>);

impl std::ops::Deref for ApiContext {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`ApiContext`] shares.
pub struct Shared {
    pub accounts: Arc<dyn Accounts>,
    pub market: Arc<Market>,
    pub auth: Arc<auth::Authenticator>,
    pub limits: Arc<limit::RateLimits>,
    pub usage: usage::UsageSink,
    /// Checkout and the payment webhook; `None` when no processor is configured.
    pub payments: Option<Arc<payments::Payments>>,
    /// The LLM relay; `None` when no upstream is configured (its endpoints answer 503).
    pub llm: Option<Arc<llm::Relay>>,
    /// Where the sandbox's stand-ins for the payer's and the pairing user's phone live; `Some`
    /// only in sandbox mode, where the pages link to them (labelled as the sandbox).
    pub sandbox_links: Option<SandboxLinks>,
}

/// The sandbox's pages that play the phone: the WeChat Pay payer and the iLink scanner.
#[derive(Clone, Debug)]
pub struct SandboxLinks {
    /// Base URL of the sandbox WeChat Pay.
    pub wechatpay: String,
    /// Base URL of the sandbox iLink.
    pub ilink: String,
}

impl SandboxLinks {
    pub fn pay_url(&self, out_trade_no: &str) -> String {
        format!("{}/sandbox/pay/{out_trade_no}", self.wechatpay)
    }

    /// The scan page for a pairing QR code's content (`…?qrcode=<id>` or `…/<id>`).
    pub fn scan_url(&self, qr_content: &str) -> Option<String> {
        let id = qr_content.rsplit(['/', '=']).next().filter(|id| !id.is_empty())?;
        Some(format!("{}/sandbox/ilink/scan/{id}", self.ilink))
    }
}

impl ApiContext {
    /// Wires the shared pieces; starts the usage writer task (call inside a tokio runtime).
    /// `payments`, `llm` and `sandbox_links` are `None` where there is no processor, no LLM upstream
    /// or no sandbox.
    pub fn new(
        accounts: Arc<dyn Accounts>,
        market: Arc<Market>,
        payments: Option<Arc<payments::Payments>>,
        llm: Option<Arc<llm::Relay>>,
        sandbox_links: Option<SandboxLinks>,
        subscriptions: auth::SubscriptionPolicy,
    ) -> Self {
        ApiContext(Arc::new(Shared {
            auth: Arc::new(auth::Authenticator::new(accounts.clone(), subscriptions)),
            limits: Arc::new(limit::RateLimits::default()),
            usage: usage::UsageSink::start(accounts.clone()),
            accounts,
            market,
            payments,
            llm,
            sandbox_links,
        }))
    }

}

pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .merge(data::router(ctx.clone()))
        .merge(mcp::router(ctx.clone()))
        .merge(llm::router(ctx.clone()))
        .merge(admin::router(ctx.clone()))
        .merge(payments::router())
        .merge(onboarding::router())
        .merge(web::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::Protocol { status: StatusCode::METHOD_NOT_ALLOWED, message: "method not allowed on this endpoint".into() }
        })
        .layer(CatchPanicLayer::custom(|_| ApiError::Panic.into_response()))
        .layer(TraceLayer::new_for_http())
        .with_state(ctx)
}
