//! The onboarding link's API, for the page a payer follows from payment to a running bot: where
//! provisioning stands and the QR code to scan, and the user's answers — the verify code WeChat
//! shows, the bot's name, a request for a fresh QR code. The link's token is the only credential:
//! unguessable, shown once to the payer, stored as a hash; no API key is involved. Pages carry it
//! in an HttpOnly, SameSite=Strict cookie instead of the URL; it stops opening anything a while
//! after the bot is running.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use twilight_accounts::{JobState, Payment, PaymentState, ProvisioningJob};
use twilight_core::token::hash_hex;
use twilight_core::RawToken;
use twilight_provision::BotName;

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::edge::ClientIp;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::PublicErrors;
use crate::{qr, ApiContext, ApiError, ApiResult};

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(status_by_cookie))
        .routes(routes!(status))
        .routes(routes!(verify_code))
        .routes(routes!(bot_name))
        .routes(routes!(refresh_qr))
}

/// The link a token opens (the JSON API lives under it); opened in a browser, it trades the token
/// for [`COOKIE`] and goes on to [`PAGE`].
pub fn url(token: &RawToken) -> String {
    format!("/onboard/{}", token.expose())
}

/// The onboarding page, whose token is in [`COOKIE`].
pub const PAGE: &str = "/onboard";
/// Where a link's token lives once its page has been opened.
pub const COOKIE: &str = "twilight_onboard";

/// The `Set-Cookie` value carrying `token` to the onboarding page: script cannot read it, no other
/// site's request carries it, and it is kept a month (an order's page is not worth more).
pub(crate) fn cookie(token: &str, secure: bool) -> ApiResult<HeaderValue> {
    let cookie = Cookie::build((COOKIE, token))
        .path(PAGE)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::days(30))
        .build();
    HeaderValue::try_from(cookie.to_string()).map_err(|_| ApiError::Internal("an onboarding token is not a header value".into()))
}

/// The token in the request's [`COOKIE`], if any.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    let values = headers.get_all(header::COOKIE).into_iter().filter_map(|value| value.to_str().ok());
    values.flat_map(Cookie::split_parse).flatten().find(|cookie| cookie.name() == COOKIE).map(|cookie| cookie.value().to_string())
}

/// What the user should do or wait for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    AwaitingPayment,
    /// The checkout ran out or was closed unpaid.
    Expired,
    /// Creating the profile and planting its secrets.
    SettingUp,
    /// Scan the QR code with WeChat.
    Scan,
    /// Type the 6-digit code WeChat shows.
    VerifyCode,
    /// The QR code ran out (or pairing was refused); ask for a new one.
    ScanAgain,
    NameBot,
    /// The bot's gateway is starting.
    Starting,
    Ready,
    Failed,
    Refunded,
}

impl Step {
    /// The wire name, as the status JSON and the page use it.
    pub fn name(self) -> &'static str {
        match self {
            Step::AwaitingPayment => "awaiting_payment",
            Step::Expired => "expired",
            Step::SettingUp => "setting_up",
            Step::Scan => "scan",
            Step::VerifyCode => "verify_code",
            Step::ScanAgain => "scan_again",
            Step::NameBot => "name_bot",
            Step::Starting => "starting",
            Step::Ready => "ready",
            Step::Failed => "failed",
            Step::Refunded => "refunded",
        }
    }
}

/// What an onboarding link leads to: the order, and its provisioning job once paid.
pub(crate) struct Link {
    pub payment: Option<Payment>,
    pub job: Option<ProvisioningJob>,
}

/// The order and job behind `token`. A client that keeps naming unknown links is refused (429)
/// before its next lookup.
pub(crate) async fn link(ctx: &ApiContext, client: ClientIp, token: &str) -> ApiResult<Link> {
    let unknown = || ApiError::NotFound("unknown onboarding link".into());
    // A token is 43 url-safe base64 characters; anything else is not worth a lookup.
    if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(unknown());
    }
    ctx.ip_limits.admit_lookup(client)?;
    let hash = hash_hex(token);
    let payment = ctx.accounts.payment_by_onboarding_token(&hash).await?;
    let job = ctx.accounts.job_by_onboarding_token(&hash).await?;
    if payment.is_none() && job.is_none() {
        ctx.ip_limits.lookup_failed(client);
        return Err(unknown());
    }
    let link = Link { payment, job };
    let done_at = ready_since(&link).and_then(|since| since.checked_add_signed(ctx.edge.onboarding_link_after_ready));
    if done_at.is_some_and(|at| at < Utc::now()) {
        return Err(ApiError::Gone("this onboarding link has done its job: the bot is running in WeChat"));
    }
    Ok(link)
}

/// Since when the link's bot has been running (or, for a renewal of a running bot, paid).
fn ready_since(link: &Link) -> Option<DateTime<Utc>> {
    if step(link) != Step::Ready {
        return None;
    }
    link.job.as_ref().map(|job| job.updated_at).or_else(|| link.payment.as_ref().and_then(|payment| payment.paid_at))
}

pub(crate) fn step(link: &Link) -> Step {
    let now = Utc::now();
    if let Some(payment) = &link.payment {
        match payment.status {
            PaymentState::Refunded => return Step::Refunded,
            PaymentState::Closed => return Step::Expired,
            PaymentState::Pending if payment.expires_at.is_some_and(|at| at <= now) => return Step::Expired,
            PaymentState::Pending => return Step::AwaitingPayment,
            PaymentState::Paid => {}
        }
    }
    // A paid renewal of a running bot enqueues nothing: there is nothing to set up.
    let Some(job) = &link.job else {
        return if link.payment.is_some() { Step::Ready } else { Step::SettingUp };
    };
    match job.state {
        JobState::AwaitingScan => match (job.pairing_status.as_deref(), &job.pairing_qr) {
            (Some("need_verifycode" | "verify_code_wrong"), _) => Step::VerifyCode,
            (_, None) => Step::ScanAgain,
            _ => Step::Scan,
        },
        JobState::AwaitingUser => Step::ScanAgain,
        JobState::Paired => Step::NameBot,
        JobState::BotNamed | JobState::GatewayRunning => Step::Starting,
        JobState::Active | JobState::Done => Step::Ready,
        JobState::Failed | JobState::Cancelled => Step::Failed,
        JobState::Created | JobState::ProfileCreated | JobState::SecretsPlanted => Step::SettingUp,
    }
}

/// Whether the user's bot, set up, has greeted them in WeChat (the done page says so).
pub(crate) async fn welcomed(ctx: &ApiContext, link: &Link, step: Step) -> ApiResult<bool> {
    let Some(job) = link.job.as_ref().filter(|_| step == Step::Ready) else { return Ok(false) };
    Ok(ctx.accounts.profile_for_user(job.user_id).await?.is_some_and(|profile| profile.welcomed_at.is_some()))
}

/// Where an onboarding link stands. Never a token, key or internal error.
#[derive(Serialize, ToSchema)]
pub struct LinkStatus {
    step: Step,
    /// The order the link was given for (none for a link an operator handed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<LinkOrder>,
    /// Once paid: the provisioning job's progress (no fields before).
    #[serde(flatten)]
    job: LinkJob,
}

#[derive(Serialize, ToSchema)]
struct LinkOrder {
    order_id: uuid::Uuid,
    out_trade_no: String,
    /// In the currency's minor unit (fen).
    amount: i64,
    currency: String,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema, Default)]
struct LinkJob {
    /// iLink's pairing state: `wait`, `scaned`, `need_verifycode`, `confirmed`, `expired`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pairing_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bot_name: Option<String>,
    /// A failed attempt is being tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    retrying: Option<bool>,
    /// The bot has greeted its owner in WeChat.
    #[serde(skip_serializing_if = "Option::is_none")]
    welcomed: Option<bool>,
    /// While pairing: the QR code to scan, as an SVG document, and what it encodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    qr_svg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qr_content: Option<String>,
}

/// The link's step, the QR code to scan (as SVG) while pairing, and whether a failed attempt is
/// being retried.
#[utoipa::path(get, path = "/onboard/{token}/status", tag = "onboarding", params(("token" = String, Path, description = "The onboarding link's token")), responses(
    (status = 200, description = "Where the link stands", body = LinkStatus),
    PublicErrors,
))]
async fn status(State(ctx): State<ApiContext>, client: ClientIp, ApiPath(token): ApiPath<String>) -> ApiResult<Json<LinkStatus>> {
    status_of(&ctx, client, &token).await
}

/// The same for the onboarding page, whose token is in its cookie.
#[utoipa::path(get, path = "/onboard/status", tag = "onboarding", params(("twilight_onboard" = Option<String>, Cookie, description = "Set when the link was opened")), responses(
    (status = 200, description = "Where the link stands", body = LinkStatus),
    PublicErrors,
))]
async fn status_by_cookie(State(ctx): State<ApiContext>, client: ClientIp, headers: HeaderMap) -> ApiResult<Json<LinkStatus>> {
    let token = cookie_token(&headers).ok_or_else(|| ApiError::NotFound("no onboarding link was opened in this browser".into()))?;
    status_of(&ctx, client, &token).await
}

async fn status_of(ctx: &ApiContext, client: ClientIp, token: &str) -> ApiResult<Json<LinkStatus>> {
    let link = link(ctx, client, token).await?;
    let step = step(&link);
    let order = link.payment.as_ref().map(|payment| LinkOrder {
        order_id: payment.payment_id,
        out_trade_no: payment.out_trade_no.clone(),
        amount: payment.amount_cents,
        currency: payment.currency.clone(),
        expires_at: payment.expires_at,
    });
    let job = match &link.job {
        None => LinkJob::default(),
        Some(job) => {
            let pairing_qr = match step {
                Step::Scan | Step::VerifyCode => job.pairing_qr.clone(),
                _ => None,
            };
            LinkJob {
                pairing_status: job.pairing_status.clone(),
                bot_name: job.bot_name.clone(),
                retrying: Some(job.attempts > 0 && step != Step::Failed),
                welcomed: Some(welcomed(ctx, &link, step).await?),
                qr_svg: pairing_qr.as_deref().map(qr::svg).transpose()?,
                qr_content: pairing_qr,
            }
        }
    };
    Ok(Json(LinkStatus { step, order, job }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyCode {
    /// The 6 digits WeChat shows.
    #[schema(pattern = "^[0-9]{6}$")]
    code: String,
}

/// Passes the verify code WeChat shows on to the pairing.
#[utoipa::path(post, path = "/onboard/{token}/verify-code", tag = "onboarding", params(("token" = String, Path)), request_body = VerifyCode, responses(
    (status = 202, description = "Passed on; the status says what came of it"),
    PublicErrors,
))]
async fn verify_code(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    ApiPath(token): ApiPath<String>,
    ApiJson(body): ApiJson<VerifyCode>,
) -> ApiResult<StatusCode> {
    submit_verify_code(&ctx, client, &token, &body.code).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Passes the verify code typed on the page on to the pairing (the JSON endpoint and the form).
pub(crate) async fn submit_verify_code(ctx: &ApiContext, client: ClientIp, token: &str, code: &str) -> ApiResult<()> {
    ctx.ip_limits.onboarding_post(client)?;
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid("code", "the verify code is the 6 digits WeChat shows"));
    }
    let link = link(ctx, client, token).await?;
    let job = expect_step(&link, &[Step::VerifyCode, Step::Scan], "WeChat has not asked for a verify code")?;
    ctx.accounts.set_verify_code(job.job_id, Some(code)).await?;
    ctx.accounts.wake_job(job.job_id).await?;
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Name {
    /// The bot's name, e.g. `张老师`.
    name: String,
}

/// Names the bot once it is paired (and renames it later: the persona is rewritten from the
/// template).
#[utoipa::path(post, path = "/onboard/{token}/bot-name", tag = "onboarding", params(("token" = String, Path)), request_body = Name, responses(
    (status = 202, description = "Taken; the bot starts under this name"),
    PublicErrors,
))]
async fn bot_name(
    State(ctx): State<ApiContext>,
    client: ClientIp,
    ApiPath(token): ApiPath<String>,
    ApiJson(body): ApiJson<Name>,
) -> ApiResult<StatusCode> {
    submit_bot_name(&ctx, client, &token, &body.name).await?;
    Ok(StatusCode::ACCEPTED)
}

pub(crate) async fn submit_bot_name(ctx: &ApiContext, client: ClientIp, token: &str, name: &str) -> ApiResult<()> {
    ctx.ip_limits.onboarding_post(client)?;
    let name = BotName::parse(name).map_err(|error| ApiError::invalid("name", error.to_string()))?;
    let link = link(ctx, client, token).await?;
    let job = expect_step(&link, &[Step::NameBot], "the bot can be named once it is paired with WeChat")?;
    ctx.accounts.set_bot_name(job.job_id, name.as_str()).await?;
    ctx.accounts.wake_job(job.job_id).await?;
    Ok(())
}

/// Asks for a fresh QR code after the last one ran out.
#[utoipa::path(post, path = "/onboard/{token}/qr/refresh", tag = "onboarding", params(("token" = String, Path)), responses(
    (status = 202, description = "A new QR code is on its way; the status shows it"),
    PublicErrors,
))]
async fn refresh_qr(State(ctx): State<ApiContext>, client: ClientIp, ApiPath(token): ApiPath<String>) -> ApiResult<StatusCode> {
    request_new_qr(&ctx, client, &token).await?;
    Ok(StatusCode::ACCEPTED)
}

pub(crate) async fn request_new_qr(ctx: &ApiContext, client: ClientIp, token: &str) -> ApiResult<()> {
    ctx.ip_limits.onboarding_post(client)?;
    let link = link(ctx, client, token).await?;
    let job = expect_step(&link, &[Step::ScanAgain], "the current QR code is still valid")?;
    ctx.accounts.wake_job(job.job_id).await?;
    Ok(())
}

/// The link's job, if the link is at one of `steps`; else 409 saying why not.
fn expect_step<'a>(link: &'a Link, steps: &[Step], why: &'static str) -> ApiResult<&'a ProvisioningJob> {
    match &link.job {
        Some(job) if steps.contains(&step(link)) => Ok(job),
        _ => Err(ApiError::Conflict(why)),
    }
}
