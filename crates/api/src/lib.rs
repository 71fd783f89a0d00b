#![forbid(unsafe_code)]
//! The HTTP surface: data plane, admin API, payments, onboarding, health. Every route is listed in `router`.

pub mod admin;
pub mod auth;
pub mod data;
pub mod edge;
pub mod error;
pub mod extract;
pub mod limit;
pub mod llm;
pub mod mcp;
pub mod observe;
pub mod onboarding;
pub mod openapi;
pub mod payments;
pub mod qr;
pub mod usage;
pub mod web;

use std::sync::Arc;

use std::any::Any;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use twilight_accounts::Accounts;
use twilight_market::Market;
use twilight_search::Searcher;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::{ApiError, ApiResult};

/// A UUIDv7 from the thread's RNG: time-ordered, so ids land at the end of a B-tree index and sort
/// by when they were made. (`Uuid::now_v7` and `new_v4` read the OS RNG, a syscall per request.)
pub(crate) fn time_ordered_id() -> uuid::Uuid {
    let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid()
}

/// Request ids for requests that come without one: time-ordered UUIDs from the thread's RNG
/// (tower-http's `MakeRequestUuid` reads the OS RNG on every request).
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&time_ordered_id().to_string()).ok().map(RequestId::new)
    }
}

/// The header a request's id travels in, both ways.
const REQUEST_ID: &str = "x-request-id";

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
    /// Web search for `/search` and the `search` tool.
    pub search: Arc<Searcher>,
    pub auth: Arc<auth::Authenticator>,
    pub limits: Arc<limit::RateLimits>,
    pub edge: edge::EdgePolicy,
    pub ip_limits: Arc<limit::IpLimits>,
    pub usage: usage::UsageSink,
    /// Checkout and the payment webhook; `None` when no processor is configured.
    pub payments: Option<Arc<payments::Payments>>,
    /// The LLM relay; `None` when no upstream is configured (its endpoints answer 503).
    pub llm: Option<Arc<llm::Relay>>,
    /// Where the sandbox's stand-ins for the payer's and the pairing user's phone live; `Some`
    /// only in sandbox mode, where the pages link to them (labelled as the sandbox).
    pub sandbox_links: Option<SandboxLinks>,
    /// On a serving host fed by a warehouse primary: what it serves, for `/healthz`.
    pub replica: Option<Arc<twilight_market::replica::Replica>>,
    /// The font `/chart` and the `chart` tool draw with.
    pub chart_fonts: Arc<twilight_chart::Fonts>,
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

/// What [`ApiContext::new`] wires together. `payments`, `llm` and `sandbox_links` are `None`
/// where there is no processor, no LLM upstream or no sandbox.
pub struct ApiParts {
    pub accounts: Arc<dyn Accounts>,
    pub market: Arc<Market>,
    pub search: Arc<Searcher>,
    pub payments: Option<Arc<payments::Payments>>,
    pub llm: Option<Arc<llm::Relay>>,
    pub sandbox_links: Option<SandboxLinks>,
    pub subscriptions: auth::SubscriptionPolicy,
    pub edge: edge::EdgePolicy,
    /// Where usage rows wait while the accounts DB is unreachable.
    pub usage_spill: std::path::PathBuf,
    pub replica: Option<Arc<twilight_market::replica::Replica>>,
    pub chart_fonts: Arc<twilight_chart::Fonts>,
}

impl ApiContext {
    /// Wires the shared pieces; starts the usage writer task (call inside a tokio runtime).
    pub fn new(parts: ApiParts) -> Self {
        let ApiParts { accounts, market, search, payments, llm, sandbox_links, subscriptions, edge, usage_spill, replica, chart_fonts } =
            parts;
        let ip_limits = Arc::new(limit::IpLimits::new(edge.ip_quotas.clone()));
        ApiContext(Arc::new(Shared {
            auth: Arc::new(auth::Authenticator::new(accounts.clone(), subscriptions, ip_limits.clone())),
            limits: Arc::new(limit::RateLimits::default()),
            edge,
            ip_limits,
            usage: usage::UsageSink::start(accounts.clone(), usage_spill),
            accounts,
            market,
            search,
            payments,
            llm,
            sandbox_links,
            replica,
            chart_fonts,
        }))
    }

    /// Where `request` came from (see [`edge::EdgePolicy::client_ip`]).
    pub(crate) fn client_of(&self, request: &Request<Body>) -> edge::ClientIp {
        self.edge.client_ip(request.extensions(), request.headers())
    }
}

/// Headers every response carries unless it sets its own: no framing, no MIME sniffing, no
/// `Referer` (an onboarding URL is a capability), only our own scripts and styles (the pages have no
/// inline ones; QR codes are `data:` images), and no caching (static assets say otherwise).
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

pub fn router(ctx: ApiContext) -> Router {
    // Installed before the first request, so nothing recorded is lost.
    observe::handle();
    let body_limit = ctx.edge.body_limit;
    let (routes, document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(data::router(ctx.clone()))
        .merge(mcp::router(ctx.clone()))
        .merge(llm::router(ctx.clone()))
        .merge(admin::router(ctx.clone()))
        .merge(payments::router())
        .merge(onboarding::router())
        .merge(web::router())
        .split_for_parts();
    let document: Arc<str> = document.to_json().expect("the OpenAPI document serialises").into();
    let router = routes
        .route("/openapi.json", get(move || openapi::serve(document.clone())))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::Protocol { status: StatusCode::METHOD_NOT_ALLOWED, message: "method not allowed on this endpoint".into() }
        })
        .route_layer(middleware::from_fn(observe::track))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(ctx.clone(), edge::deadline))
        .layer(CatchPanicLayer::custom(panicked));
    let router = SECURITY_HEADERS
        .into_iter()
        .fold(router, |router, (name, value)| router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))));
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
        .with_state(ctx)
}

/// The span every log line of a request carries: its id (`X-Request-Id`, ours unless the caller
/// sent one), method and route; [`auth::Authenticator::user`] fills in the user once known (never
/// the key).
fn request_span(request: &Request<Body>) -> Span {
    let request_id = request.headers().get(REQUEST_ID).and_then(|id| id.to_str().ok()).unwrap_or_default();
    let route = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    tracing::info_span!("request", request_id, method = %request.method(), route, user_id = tracing::field::Empty)
}

/// A handler panicked: the payload goes to the log (with the request's span), the caller gets
/// the plain internal error.
fn panicked(payload: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal(format!("handler panicked: {}", panic_message(payload.as_ref()))).into_response()
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(message), _) => message,
        (_, Some(message)) => message,
        _ => "a payload that is not text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_are_read_and_never_shown() {
        assert_eq!(panic_message(&"index out of bounds"), "index out of bounds");
        assert_eq!(panic_message(&String::from("owned message")), "owned message");
        assert_eq!(panic_message(&42_u8), "a payload that is not text");
        let response = panicked(Box::new(String::from("secret detail")));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
