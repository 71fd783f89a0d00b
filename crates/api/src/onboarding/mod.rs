//! The onboarding link's API, for the page a payer follows from payment to a running bot: where
//! provisioning stands and the QR code to scan, and the user's answers — the verify code WeChat
//! shows, the bot's name, a request for a fresh QR code. The link's token is the only credential:
//! unguessable, shown once to the payer, stored as a hash; no API key is involved.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use twilight_accounts::{JobState, Payment, PaymentState, ProvisioningJob};
use twilight_core::token::hash_hex;
use twilight_core::RawToken;
use twilight_provision::BotName;

use crate::extract::{ApiJson, ApiPath};
use crate::{qr, ApiContext, ApiError, ApiResult};

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/onboard/{token}/status", get(status))
        .route("/onboard/{token}/verify-code", post(verify_code))
        .route("/onboard/{token}/bot-name", post(bot_name))
        .route("/onboard/{token}/qr/refresh", post(refresh_qr))
}

/// The page a link's token opens (the JSON API lives under it).
pub fn url(token: &RawToken) -> String {
    format!("/onboard/{}", token.expose())
}

/// What the user should do or wait for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

pub(crate) async fn link(ctx: &ApiContext, token: &str) -> ApiResult<Link> {
    let unknown = || ApiError::NotFound("unknown onboarding link".into());
    // A token is 43 url-safe base64 characters; anything else is not worth a lookup.
    if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(unknown());
    }
    let hash = hash_hex(token);
    let payment = ctx.accounts.payment_by_onboarding_token(&hash).await?;
    let job = ctx.accounts.job_by_onboarding_token(&hash).await?;
    if payment.is_none() && job.is_none() {
        return Err(unknown());
    }
    Ok(Link { payment, job })
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

/// `GET /onboard/{token}/status` — the step, the QR code to scan (as SVG) while pairing, and
/// whether a failed attempt is being retried. Never a token, key or internal error.
async fn status(State(ctx): State<ApiContext>, ApiPath(token): ApiPath<String>) -> ApiResult<Json<Value>> {
    let link = link(&ctx, &token).await?;
    let step = step(&link);
    let mut answer = json!({ "step": step.name() });
    if let Some(payment) = &link.payment {
        answer["order"] = json!({
            "order_id": payment.payment_id,
            "out_trade_no": payment.out_trade_no,
            "amount": payment.amount_cents,
            "currency": payment.currency,
            "expires_at": payment.expires_at,
        });
    }
    if let Some(job) = &link.job {
        answer["pairing_status"] = json!(job.pairing_status);
        answer["bot_name"] = json!(job.bot_name);
        answer["retrying"] = json!(job.attempts > 0 && step != Step::Failed);
        answer["welcomed"] = welcomed(&ctx, &link, step).await?.into();
        if let (Step::Scan | Step::VerifyCode, Some(content)) = (step, &job.pairing_qr) {
            answer["qr_svg"] = qr::svg(content)?.into();
            answer["qr_content"] = content.clone().into();
        }
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyCode {
    code: String,
}

/// `POST /onboard/{token}/verify-code {"code":"123456"}` — passes the code on to the pairing.
async fn verify_code(State(ctx): State<ApiContext>, ApiPath(token): ApiPath<String>, ApiJson(body): ApiJson<VerifyCode>) -> ApiResult<StatusCode> {
    submit_verify_code(&ctx, &token, &body.code).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Passes the verify code typed on the page on to the pairing (the JSON endpoint and the form).
pub(crate) async fn submit_verify_code(ctx: &ApiContext, token: &str, code: &str) -> ApiResult<()> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid("code", "the verify code is the 6 digits WeChat shows"));
    }
    let link = link(ctx, token).await?;
    let job = expect_step(&link, &[Step::VerifyCode, Step::Scan], "WeChat has not asked for a verify code")?;
    ctx.accounts.set_verify_code(job.job_id, Some(code)).await?;
    ctx.accounts.wake_job(job.job_id).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    name: String,
}

/// `POST /onboard/{token}/bot-name {"name":"张老师"}` — names the bot once it is paired (and
/// renames it later: the persona is rewritten from the template).
async fn bot_name(State(ctx): State<ApiContext>, ApiPath(token): ApiPath<String>, ApiJson(body): ApiJson<Name>) -> ApiResult<StatusCode> {
    submit_bot_name(&ctx, &token, &body.name).await?;
    Ok(StatusCode::ACCEPTED)
}

pub(crate) async fn submit_bot_name(ctx: &ApiContext, token: &str, name: &str) -> ApiResult<()> {
    let name = BotName::parse(name).map_err(|error| ApiError::invalid("name", error.to_string()))?;
    let link = link(ctx, token).await?;
    let job = expect_step(&link, &[Step::NameBot], "the bot can be named once it is paired with WeChat")?;
    ctx.accounts.set_bot_name(job.job_id, name.as_str()).await?;
    ctx.accounts.wake_job(job.job_id).await?;
    Ok(())
}

/// `POST /onboard/{token}/qr/refresh` — asks for a fresh QR code after the last one ran out.
async fn refresh_qr(State(ctx): State<ApiContext>, ApiPath(token): ApiPath<String>) -> ApiResult<StatusCode> {
    request_new_qr(&ctx, &token).await?;
    Ok(StatusCode::ACCEPTED)
}

pub(crate) async fn request_new_qr(ctx: &ApiContext, token: &str) -> ApiResult<()> {
    let link = link(ctx, token).await?;
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
