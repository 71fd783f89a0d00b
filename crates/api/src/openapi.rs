//! The OpenAPI document served at `/openapi.json`. Each module registers its routes through
//! utoipa-axum from the same `#[utoipa::path]` annotations the document is made of, so a route
//! cannot be served without being described, nor described at a path it is not served at.

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::error::ErrorBody;

/// The security scheme of the data plane, the MCP tools and the LLM relay: a user's API key.
pub const USER_KEY: &str = "user_key";
/// The security scheme of `/admin/*` and `/metrics`: an admin token, a class apart from user keys.
pub const ADMIN_TOKEN: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Twilight Drive",
        description = "A stock-research analyst on WeChat: the data plane a user's bot calls (market data, \
            charts, web search, MCP tools, an LLM relay), checkout and onboarding for payers, and the \
            operators' admin API. Every error answers `{\"error\":{\"code\",\"message\"[,\"field\"]}}`; \
            every data answer carries a `cite`."
    ),
    paths(crate::mcp::transport),
    modifiers(&Credentials),
    components(schemas(ErrorBody, crate::payments::NotifyFailure)),
    tags(
        (name = "data", description = "Market data, charts and web search, each answer cited; a user key"),
        (name = "agent", description = "The MCP tools and the LLM relay a user's bot is configured with; a user key"),
        (name = "payments", description = "Checkout, the order's stage, and WeChat Pay's signed notification"),
        (name = "onboarding", description = "The payer's onboarding link: pairing the bot with WeChat and naming it"),
        (name = "pages", description = "The HTML pages and their assets"),
        (name = "admin", description = "Operators: users, keys, tokens, orders, provisioning, citations, metrics"),
        (name = "health", description = "Liveness and the deep checks"),
    )
)]
pub struct ApiDoc;

struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bearer = |description: &str| {
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build())
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(USER_KEY, bearer("A user's API key, as provisioning plants it in their bot's profile"));
        components.add_security_scheme(ADMIN_TOKEN, bearer("An admin token (`twilight admin create-admin-token`)"));
    }
}

/// What a data-plane request may be refused with, besides its own answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described: the variants are answered as `ApiError`s.
pub enum DataErrors {
    #[response(
        status = 400,
        description = "A parameter is missing or malformed (`field` names it), or the day asked was not a trading day (`not_trading_day`, with `applies`)"
    )]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No API key, or one nobody issued", headers(("WWW-Authenticate" = String)))]
    Unauthorized(ErrorBody),
    #[response(status = 402, description = "The key's subscription has expired (`renew_url` says where to renew)")]
    PaymentRequired(ErrorBody),
    #[response(status = 403, description = "The key has been revoked")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "No such stock, symbol or period")]
    NotFound(ErrorBody),
    #[response(status = 429, description = "The key's rate limit (or, after failed keys, the client's)", headers(("Retry-After" = u64)))]
    RateLimited(ErrorBody),
    #[response(status = 502, description = "The upstream refused or failed")]
    BadGateway(ErrorBody),
    #[response(status = 503, description = "The upstream is down or throttled and the warehouse does not hold the answer", headers(("Retry-After" = u64)))]
    Unavailable(ErrorBody),
    #[response(status = 504, description = "No answer in time")]
    Timeout(ErrorBody),
}

/// What an admin request may be refused with, besides its own answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described: the variants are answered as `ApiError`s.
pub enum AdminErrors {
    #[response(status = 400, description = "A parameter or body field is malformed (`field` names it)")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No admin token, or one nobody issued", headers(("WWW-Authenticate" = String)))]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "A user key, or a revoked admin token")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "Nothing with that id")]
    NotFound(ErrorBody),
    #[response(status = 409, description = "The request does not fit the resource's state")]
    Conflict(ErrorBody),
    #[response(status = 413, description = "The body is too large")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "The body is not `application/json`")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 429, description = "Too many failed credentials from this client", headers(("Retry-After" = u64)))]
    RateLimited(ErrorBody),
}

/// What a payer's request (checkout, order, onboarding link) may be refused with.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described: the variants are answered as `ApiError`s.
pub enum PublicErrors {
    #[response(status = 400, description = "A parameter or body field is malformed (`field` names it)")]
    BadRequest(ErrorBody),
    #[response(status = 404, description = "No such order or onboarding link")]
    NotFound(ErrorBody),
    #[response(status = 409, description = "Not at this step: the link's state does not allow it yet (or any more)")]
    Conflict(ErrorBody),
    #[response(status = 410, description = "The onboarding link has done its job")]
    Gone(ErrorBody),
    #[response(status = 413, description = "The body is too large")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "The body is not `application/json`")]
    UnsupportedMediaType(ErrorBody),
    #[response(status = 422, description = "The plan is shown but not sold yet")]
    PlanUnavailable(ErrorBody),
    #[response(status = 429, description = "Too many orders or unknown links from this client", headers(("Retry-After" = u64)))]
    RateLimited(ErrorBody),
    #[response(status = 503, description = "Payments are not configured, or the processor is unavailable")]
    Unavailable(ErrorBody),
}

/// A string parameter that is one of `names`, `default` when left out.
pub(crate) fn one_of_names<'a>(names: impl IntoIterator<Item = &'a str>, default: &str) -> utoipa::openapi::Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names)).default(Some(default.into())).build()
}

/// A PNG image, as `/chart` answers it.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Only described: the handler answers the bytes themselves.
pub struct Png(Vec<u8>);

/// `GET /openapi.json`: the document, made once at startup.
pub(crate) async fn serve(document: std::sync::Arc<str>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document.to_string()).into_response()
}
