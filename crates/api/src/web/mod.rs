//! The pages people see: the landing page with its pricing cards, and the onboarding page an order
//! leads to (pay → set up → pair WeChat → name the bot → done). Server-rendered (askama), Chinese
//! first with an English switch, no external assets; a small script only reloads the page when the
//! step changes, so every step also works — by self-refresh and plain forms — without JavaScript.
//! The page never shows a token or key: only QR codes, the order number and the bot's name.

mod texts;

use std::fmt;

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use base64::Engine;
use chrono::Utc;
use serde::Deserialize;
use twilight_accounts::{Plan, User, UserStatus};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::edge::ClientIp;
use crate::extract::ApiPath;
use crate::onboarding::{self, Step};
use crate::{qr, ApiContext, ApiError};
pub use texts::Texts;

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(landing))
        .routes(routes!(buy))
        .routes(routes!(renew_page, renew))
        .routes(routes!(onboard_page, onboard_form))
        .routes(routes!(open_link))
        .routes(routes!(site_css))
        .routes(routes!(onboard_js))
}

/// What a page answers: the page itself, or a page saying what went wrong; a form that worked
/// goes on to the next page.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described: the handlers answer rendered pages.
enum PageAnswers {
    #[response(status = 200, description = "The page", content_type = "text/html")]
    Page(String),
    #[response(status = 303, description = "Done; on to the onboarding page (the link's token in an HttpOnly cookie)", headers(("Location" = String), ("Set-Cookie" = String)))]
    Next,
    #[response(status = 400, description = "A form field is missing or wrong; the page says which", content_type = "text/html")]
    BadRequest(String),
    #[response(status = 404, description = "No such link", content_type = "text/html")]
    NotFound(String),
    #[response(status = 410, description = "The onboarding link has done its job", content_type = "text/html")]
    Gone(String),
    #[response(status = 422, description = "The plan is shown but not sold yet", content_type = "text/html")]
    NotSold(String),
    #[response(status = 429, description = "Too many orders or unknown links from this client", content_type = "text/html", headers(("Retry-After" = u64)))]
    TooMany(String),
    #[response(status = 503, description = "Payments are unavailable", content_type = "text/html")]
    Unavailable(String),
}

/// The landing page's stylesheet.
#[utoipa::path(get, path = "/static/site.css", tag = "pages", responses((status = 200, description = "The stylesheet", content_type = "text/css", body = String)))]
async fn site_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../static/site.css"))
}

/// The onboarding page's script: it reloads the page when the step changes.
#[utoipa::path(get, path = "/static/onboard.js", tag = "pages", responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
async fn onboard_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../static/onboard.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// The page language: `?lang=` wins, then the browser's Accept-Language, then Chinese.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    fn parse(code: &str) -> Option<Lang> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Lang {
        if let Some(lang) = query.and_then(Lang::parse) {
            return lang;
        }
        let accepted = headers.get(header::ACCEPT_LANGUAGE).and_then(|value| value.to_str().ok()).unwrap_or("");
        let mut best: Option<(f32, Lang)> = None;
        for part in accepted.split(',') {
            let mut pieces = part.split(';');
            let Some(lang) = pieces.next().and_then(Lang::parse) else { continue };
            let quality = pieces.find_map(|p| p.trim().strip_prefix("q=")).and_then(|q| q.parse().ok()).unwrap_or(1.0);
            // Strictly greater: among equals the browser's first choice stands.
            if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
                best = Some((quality, lang));
            }
        }
        best.map_or(Lang::Zh, |(_, lang)| lang)
    }

    fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        })
    }
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// `zh` (default) or `en`; else the browser's `Accept-Language`.
    lang: Option<String>,
}

/// What every page's frame needs.
struct Frame {
    t: &'static Texts,
    lang: Lang,
    lang_switch: String,
    sandbox: bool,
}

impl Frame {
    fn new(ctx: &ApiContext, lang: Lang, path: &str) -> Frame {
        Frame { t: Texts::of(lang), lang, lang_switch: format!("{path}?lang={}", lang.other()), sandbox: ctx.sandbox_links.is_some() }
    }
}

#[derive(Template)]
#[template(path = "landing.html")]
struct Landing {
    t: &'static Texts,
    lang: Lang,
    lang_switch: String,
    sandbox: bool,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    t: &'static Texts,
    lang: Lang,
    lang_switch: String,
    sandbox: bool,
    message: String,
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => ApiError::Internal(format!("page did not render: {error}")).into_response(),
    }
}

fn error_page(frame: Frame, status: StatusCode, message: &str) -> Response {
    let Frame { t, lang, lang_switch, sandbox } = frame;
    (status, render(&ErrorPage { t, lang, lang_switch, sandbox, message: message.into() })).into_response()
}

/// The page for a client over its limit: 429, and when to come back.
fn too_many(frame: Frame, retry_after_secs: u64) -> Response {
    let t = frame.t;
    let mut page = error_page(frame, StatusCode::TOO_MANY_REQUESTS, t.error_too_many);
    page.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.into());
    page
}

/// What the product is and the two plans.
#[utoipa::path(get, path = "/", tag = "pages", params(PageQuery), responses(PageAnswers))]
async fn landing(State(ctx): State<ApiContext>, query: Result<Query<PageQuery>, QueryRejection>, headers: HeaderMap) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let Frame { t, lang, lang_switch, sandbox } = Frame::new(&ctx, Lang::negotiate(query.lang.as_deref(), &headers), "/");
    render(&Landing { t, lang, lang_switch, sandbox })
}

#[derive(Deserialize, ToSchema)]
struct BuyForm {
    #[schema(value_type = Plan)]
    plan: String,
    /// `zh` or `en`.
    lang: Option<String>,
}

/// The Pro card's form: places the order and sends the buyer to its onboarding page, which shows
/// the QR code to pay. Mistakes answer a page saying what went wrong.
#[utoipa::path(post, path = "/buy", tag = "pages", request_body(content = BuyForm, content_type = "application/x-www-form-urlencoded"), responses(PageAnswers))]
async fn buy(State(ctx): State<ApiContext>, client: ClientIp, headers: HeaderMap, form: Result<Form<BuyForm>, FormRejection>) -> Response {
    let lang_field = form.as_ref().ok().and_then(|f| f.lang.clone());
    let frame = Frame::new(&ctx, Lang::negotiate(lang_field.as_deref(), &headers), "/");
    let t = frame.t;
    let Ok(Form(form)) = form else { return error_page(frame, StatusCode::BAD_REQUEST, t.error_try_again) };
    checkout(&ctx, client, frame, &form.plan, None).await
}

/// Places an order for `plan` (renewing the user behind `renew`, if given) and sends the payer to
/// its onboarding page, which shows the QR code to pay; a failure answers a page saying so.
async fn checkout(ctx: &ApiContext, client: ClientIp, frame: Frame, plan: &str, renew: Option<&str>) -> Response {
    let t = frame.t;
    let placed = async {
        let payments = ctx.payments()?;
        let plan: Plan = plan.parse().map_err(|_| ApiError::invalid("plan", "unknown plan"))?;
        ctx.ip_limits.order(client)?;
        Ok::<_, ApiError>(payments.billing.checkout(plan, renew, Utc::now()).await?)
    }
    .await;
    match placed {
        Ok(placed) => {
            let next = Redirect::to(&format!("{}?lang={}", onboarding::PAGE, frame.lang)).into_response();
            with_onboarding_cookie(ctx, placed.onboarding_token.expose(), next)
        }
        Err(ApiError::RateLimited { retry_after_secs }) => too_many(frame, retry_after_secs),
        Err(error) => {
            let status = error.status_code();
            let message = match status {
                StatusCode::UNPROCESSABLE_ENTITY => t.coming_soon,
                StatusCode::SERVICE_UNAVAILABLE => t.error_unavailable,
                s if s.is_client_error() => t.error_try_again,
                _ => {
                    tracing::error!(%error, "checkout from the landing page failed");
                    t.error_unavailable
                }
            };
            error_page(frame, status, message)
        }
    }
}

#[derive(Template)]
#[template(path = "renew.html")]
struct RenewPage {
    t: &'static Texts,
    lang: Lang,
    lang_switch: String,
    sandbox: bool,
    code: String,
    plan: String,
    paid_until: Option<String>,
    expired: bool,
}

/// The user a renewal link names; a malformed code is not worth a lookup.
async fn renewing(ctx: &ApiContext, client: ClientIp, code: &str) -> Result<Option<User>, ApiError> {
    if code.len() != 32 || !code.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Ok(None);
    }
    ctx.ip_limits.admit_lookup(client)?;
    let user = ctx.accounts.user_by_renewal_code(code).await?;
    if user.is_none() {
        ctx.ip_limits.lookup_failed(client);
    }
    Ok(user)
}

/// The link a bot shows its owner (in a reminder, or when their subscription has run out): the
/// plan, until when it runs, and a button to pay another month.
#[utoipa::path(get, path = "/renew/{code}", tag = "pages", params(("code" = String, Path, description = "The user's renewal code"), PageQuery), responses(PageAnswers))]
async fn renew_page(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    ApiPath(code): ApiPath<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let frame = Frame::new(&ctx, Lang::negotiate(query.lang.as_deref(), &headers), &format!("/renew/{code}"));
    let user = match renewing(&ctx, client, &code).await {
        Ok(Some(user)) => user,
        other => return no_renewal(frame, other.err()),
    };
    let Frame { t, lang, lang_switch, sandbox } = frame;
    let expired = user.status == UserStatus::Expired || user.paid_until.is_some_and(|until| until < Utc::now());
    let paid_until = user.paid_until.map(twilight_core::china_minute);
    render(&RenewPage { t, lang, lang_switch, sandbox, code, plan: user.plan.to_string(), paid_until, expired })
}

#[derive(Deserialize, ToSchema)]
struct RenewForm {
    /// `zh` or `en`.
    lang: Option<String>,
}

/// Places the renewal order for the user's plan and goes on to pay it.
#[utoipa::path(post, path = "/renew/{code}", tag = "pages", params(("code" = String, Path, description = "The user's renewal code")),
    request_body(content = RenewForm, content_type = "application/x-www-form-urlencoded"), responses(PageAnswers))]
async fn renew(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    ApiPath(code): ApiPath<String>,
    headers: HeaderMap,
    form: Result<Form<RenewForm>, FormRejection>,
) -> Response {
    let lang_field = form.as_ref().ok().and_then(|f| f.lang.clone());
    let frame = Frame::new(&ctx, Lang::negotiate(lang_field.as_deref(), &headers), &format!("/renew/{code}"));
    match renewing(&ctx, client, &code).await {
        Ok(Some(user)) => checkout(&ctx, client, frame, user.plan.as_str(), Some(&code)).await,
        other => no_renewal(frame, other.err()),
    }
}

/// The page for a renewal link that names nobody (`error` is `None`) or could not be looked up.
fn no_renewal(frame: Frame, error: Option<ApiError>) -> Response {
    let t = frame.t;
    match error {
        None => error_page(frame, StatusCode::NOT_FOUND, t.renew_unknown),
        Some(ApiError::RateLimited { retry_after_secs }) => too_many(frame, retry_after_secs),
        Some(error) => {
            tracing::error!(%error, "renewal link lookup failed");
            error_page(frame, StatusCode::INTERNAL_SERVER_ERROR, t.error_unavailable)
        }
    }
}

/// `response` setting the onboarding cookie to `token`.
fn with_onboarding_cookie(ctx: &ApiContext, token: &str, mut response: Response) -> Response {
    match onboarding::cookie(token, ctx.edge.secure_cookies) {
        Ok(cookie) => {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(error) => error.into_response(),
    }
}

#[derive(Template)]
#[template(path = "continue.html")]
struct ContinuePage {
    t: &'static Texts,
    lang: Lang,
    lang_switch: String,
    sandbox: bool,
    next: String,
}

/// An onboarding link (from the checkout API, or bookmarked): its token moves into the cookie and
/// the browser goes on to the token-free page. It goes on by a refresh
/// of this page rather than a redirect: a navigation started on our own page carries a
/// SameSite=Strict cookie even when the link was followed from another site.
#[utoipa::path(get, path = "/onboard/{token}", tag = "pages", params(("token" = String, Path, description = "The onboarding link's token"), PageQuery), responses(PageAnswers))]
async fn open_link(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    ApiPath(token): ApiPath<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::negotiate(query.ok().and_then(|q| q.0.lang).as_deref(), &headers);
    let frame = Frame::new(&ctx, lang, onboarding::PAGE);
    if let Err(error) = onboarding::link(&ctx, client, &token).await {
        return link_refused(frame, error);
    }
    let Frame { t, lang, lang_switch, sandbox } = frame;
    let next = format!("{}?lang={lang}", onboarding::PAGE);
    with_onboarding_cookie(&ctx, &token, render(&ContinuePage { t, lang, lang_switch, sandbox, next }))
}

/// The page for an onboarding link that opens nothing (unknown, done, or asked too often).
fn link_refused(frame: Frame, error: ApiError) -> Response {
    let t = frame.t;
    match error {
        ApiError::NotFound(_) => error_page(frame, StatusCode::NOT_FOUND, t.error_not_found),
        ApiError::Gone(_) => error_page(frame, StatusCode::GONE, t.link_done),
        ApiError::RateLimited { retry_after_secs } => too_many(frame, retry_after_secs),
        error => error.into_response(),
    }
}

#[derive(Template)]
#[template(path = "onboard.html")]
struct OnboardPage {
    t: &'static Texts,
    lang: Lang,
    lang_switch: String,
    sandbox: bool,
    step: String,
    progress: usize,
    auto_refresh: bool,
    page_url: String,
    status_url: String,
    pairing_status: String,
    qr_content: String,
    qr_image: Option<String>,
    amount: String,
    out_trade_no: String,
    expires_at: Option<String>,
    remaining: String,
    sandbox_pay_url: Option<String>,
    sandbox_scan_url: Option<String>,
    bot_name: Option<String>,
    /// The bot has greeted its owner in WeChat.
    welcomed: bool,
    retrying: bool,
    error: Option<&'static str>,
}

/// The order's page from payment to a running bot, for the link opened last in this browser (its
/// cookie).
#[utoipa::path(get, path = "/onboard", tag = "pages", params(PageQuery), responses(PageAnswers))]
async fn onboard_page(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    query: Result<Query<PageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::negotiate(query.ok().and_then(|q| q.0.lang).as_deref(), &headers);
    let token = onboarding::cookie_token(&headers).unwrap_or_default();
    show_onboarding(&ctx, client, &token, lang, None).await
}

async fn show_onboarding(ctx: &ApiContext, client: ClientIp, token: &str, lang: Lang, error: Option<&'static str>) -> Response {
    let page_url = onboarding::PAGE.to_string();
    let frame = Frame::new(ctx, lang, &page_url);
    let link = match onboarding::link(ctx, client, token).await {
        Ok(link) => link,
        Err(error) => return link_refused(frame, error),
    };
    let step = onboarding::step(&link);
    let welcomed = match onboarding::welcomed(ctx, &link, step).await {
        Ok(welcomed) => welcomed,
        Err(error) => return error.into_response(),
    };
    let job = link.job.as_ref();
    let qr_text = match step {
        Step::AwaitingPayment => link.payment.as_ref().and_then(|p| p.code_url.clone()),
        Step::Scan | Step::VerifyCode => job.and_then(|j| j.pairing_qr.clone()),
        _ => None,
    };
    let qr_image = match qr_text.as_deref().map(qr::svg).transpose() {
        Ok(svg) => svg.map(|svg| format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(svg))),
        Err(error) => return error.into_response(),
    };
    let sandbox_links = ctx.sandbox_links.as_ref();
    let payment = link.payment.as_ref();
    let expires_at = payment.and_then(|p| p.expires_at);
    let Frame { t, lang, lang_switch, sandbox } = frame;
    let page = OnboardPage {
        t,
        lang,
        lang_switch,
        sandbox,
        step: step.name().to_string(),
        progress: match step {
            Step::AwaitingPayment | Step::Expired => 0,
            Step::SettingUp | Step::Scan | Step::VerifyCode | Step::ScanAgain => 1,
            Step::NameBot | Step::Starting => 2,
            Step::Ready | Step::Failed | Step::Refunded => 3,
        },
        auto_refresh: matches!(step, Step::AwaitingPayment | Step::SettingUp | Step::Scan | Step::Starting),
        status_url: format!("{page_url}/status"),
        pairing_status: job.and_then(|j| j.pairing_status.clone()).unwrap_or_default(),
        qr_content: if matches!(step, Step::Scan | Step::VerifyCode) { qr_text.clone().unwrap_or_default() } else { String::new() },
        qr_image,
        amount: payment.map(|p| money(p.amount_cents, &p.currency)).unwrap_or_default(),
        out_trade_no: payment.map(|p| p.out_trade_no.clone()).unwrap_or_default(),
        expires_at: expires_at.map(|at| at.to_rfc3339()),
        remaining: expires_at.map(|at| remaining(at - Utc::now())).unwrap_or_default(),
        sandbox_pay_url: sandbox_links.zip(payment).map(|(links, p)| links.pay_url(&p.out_trade_no)),
        sandbox_scan_url: sandbox_links.zip(qr_text.filter(|_| step != Step::AwaitingPayment)).and_then(|(links, qr)| links.scan_url(&qr)),
        bot_name: job.and_then(|j| j.bot_name.clone()),
        welcomed,
        retrying: job.is_some_and(|j| j.attempts > 0) && step != Step::Failed,
        error,
        page_url,
    };
    render(&page)
}

/// `12345` fen CNY → `¥123.45`.
fn money(minor: i64, currency: &str) -> String {
    let symbol = match currency {
        "CNY" => "¥",
        "USD" => "$",
        other => other,
    };
    format!("{symbol}{}.{:02}", minor / 100, minor % 100)
}

fn remaining(left: chrono::TimeDelta) -> String {
    let seconds = left.num_seconds().max(0);
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

#[derive(Deserialize, ToSchema)]
struct OnboardForm {
    /// `verify_code`, `bot_name` or `refresh_qr`.
    action: String,
    /// For `verify_code`: the 6 digits WeChat shows.
    code: Option<String>,
    /// For `bot_name`: the bot's name.
    name: Option<String>,
    /// `zh` or `en`.
    lang: Option<String>,
}

/// The page's forms (verify code, bot name, new QR code), doing what the JSON endpoints do, then
/// back to the page; a mistake shows the page again saying what to fix.
#[utoipa::path(post, path = "/onboard", tag = "pages", request_body(content = OnboardForm, content_type = "application/x-www-form-urlencoded"), responses(PageAnswers))]
async fn onboard_form(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    headers: HeaderMap,
    form: Result<Form<OnboardForm>, FormRejection>,
) -> Response {
    let token = onboarding::cookie_token(&headers).unwrap_or_default();
    let lang_field = form.as_ref().ok().and_then(|f| f.lang.clone());
    let lang = Lang::negotiate(lang_field.as_deref(), &headers);
    let t = Texts::of(lang);
    let Ok(Form(form)) = form else {
        return with_status(StatusCode::BAD_REQUEST, show_onboarding(&ctx, client, &token, lang, Some(t.error_try_again)).await);
    };
    let done = match form.action.as_str() {
        "verify_code" => onboarding::submit_verify_code(&ctx, client, &token, form.code.as_deref().unwrap_or("")).await,
        "bot_name" => onboarding::submit_bot_name(&ctx, client, &token, form.name.as_deref().unwrap_or("")).await,
        "refresh_qr" => onboarding::request_new_qr(&ctx, client, &token).await,
        _ => Err(ApiError::invalid("action", "unknown action")),
    };
    match done {
        // A conflict means the step moved on meanwhile: the page shows where things stand now.
        Ok(()) | Err(ApiError::Conflict(_)) => Redirect::to(&format!("{}?lang={lang}", onboarding::PAGE)).into_response(),
        Err(error @ ApiError::InvalidInput { .. }) => {
            let message = match &error {
                ApiError::InvalidInput { field: Some("code"), .. } => t.code_invalid,
                ApiError::InvalidInput { field: Some("name"), .. } => t.name_invalid,
                _ => t.error_try_again,
            };
            with_status(StatusCode::BAD_REQUEST, show_onboarding(&ctx, client, &token, lang, Some(message)).await)
        }
        Err(error) => link_refused(Frame::new(&ctx, lang, "/"), error),
    }
}

/// `response` with `status`, unless it already is an error of its own.
fn with_status(status: StatusCode, mut response: Response) -> Response {
    if response.status().is_success() {
        *response.status_mut() = status;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_query_wins_then_the_browser_then_chinese() {
        assert_eq!(Lang::negotiate(Some("en"), &accept("zh-CN")), Lang::En);
        assert_eq!(Lang::negotiate(Some("xx"), &accept("en-US,en;q=0.9")), Lang::En);
        assert_eq!(Lang::negotiate(None, &accept("fr-FR, en;q=0.8, zh;q=0.9")), Lang::Zh);
        assert_eq!(Lang::negotiate(None, &accept("de, en-GB;q=0.5")), Lang::En);
        assert_eq!(Lang::negotiate(None, &accept("en;q=0, de")), Lang::Zh);
        assert_eq!(Lang::negotiate(None, &HeaderMap::new()), Lang::Zh);
    }

    #[test]
    fn money_and_time_left() {
        assert_eq!(money(19800, "CNY"), "¥198.00");
        assert_eq!(money(4905, "USD"), "$49.05");
        assert_eq!(remaining(chrono::TimeDelta::seconds(905)), "15:05");
        assert_eq!(remaining(chrono::TimeDelta::seconds(-3)), "0:00");
    }

    #[test]
    fn landing_renders_both_plans_in_both_languages() {
        for (lang, buy, soon) in [(Lang::Zh, "购买专业版", "即将推出"), (Lang::En, "Buy Pro", "Coming soon")] {
            let t = Texts::of(lang);
            let html = Landing { t, lang, lang_switch: "/".into(), sandbox: false }.render().unwrap();
            assert!(html.contains(buy) && html.contains("¥198") && html.contains("$49"), "{html}");
            assert!(html.contains(&format!("id=\"buy-lite\" disabled>{soon}")), "{html}");
            assert!(!html.contains("sandbox-banner"));
        }
    }
}
