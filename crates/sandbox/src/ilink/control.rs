//! The phone's side, which real iLink keeps inside the WeChat app, for people and browser tests:
//!
//! - `GET /sandbox/ilink/scan/{qrcode}` — a page (clearly marked as a sandbox) with buttons to
//!   scan, confirm, ask for a verification code (then shown big) or expire; the buttons `POST` the
//!   same path with the form field `action` (and optionally `wechat_user`) and land back on it;
//! - JSON under `/_sandbox/ilink/`: `GET qrcodes/{qrcode}`, `POST qrcodes/{qrcode}/{action}` with
//!   `action` one of `scan` (body `{"wechat_user"}` optional), `verify_code`, `confirm`, `expire`,
//!   `redirect` (body `{"host"}`); `POST users/{user}/bound`; `POST bots` (`{"owner"}`);
//!   `POST bots/{bot_id}/messages` (`{"from_user_id","text"}`); `GET bots/{bot_id}/sent`.
//!
//! Refusals answer 404 (unknown QR code, bot or action), 400 (missing field) or 409 (wrong stage)
//! with `{"error": "…"}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{new_wechat_user, ControlError, IlinkSim, PairingView, Stage};
use crate::common::{escape_html, sandbox_page};

pub fn router() -> Router<IlinkSim> {
    Router::new()
        .route("/sandbox/ilink/scan/{qrcode}", get(page).post(page_action))
        .route("/_sandbox/ilink/qrcodes/{qrcode}", get(view))
        .route("/_sandbox/ilink/qrcodes/{qrcode}/{action}", post(json_action))
        .route("/_sandbox/ilink/users/{user}/bound", post(bound))
        .route("/_sandbox/ilink/bots", post(add_bot))
        .route("/_sandbox/ilink/bots/{bot_id}/messages", post(deliver))
        .route("/_sandbox/ilink/bots/{bot_id}/sent", get(sent))
}

/// A refused control request.
struct Refusal(StatusCode, String);

impl From<ControlError> for Refusal {
    fn from(error: ControlError) -> Self {
        let status = match error {
            ControlError::UnknownQrCode(_) | ControlError::UnknownBot(_) => StatusCode::NOT_FOUND,
            ControlError::WrongStage(..) | ControlError::CodeNotVerified => StatusCode::CONFLICT,
        };
        Refusal(status, error.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// The optional arguments of a pairing action, from a form or a JSON body.
#[derive(Deserialize, Default)]
struct ActionArgs {
    #[serde(default)]
    action: String,
    wechat_user: Option<String>,
    host: Option<String>,
}

fn apply(sim: &IlinkSim, qrcode: &str, action: &str, args: ActionArgs) -> Result<PairingView, Refusal> {
    Ok(match action {
        "scan" => {
            let user = args.wechat_user.map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).unwrap_or_else(new_wechat_user);
            sim.scan(qrcode, &user)?
        }
        "verify_code" => {
            sim.require_verify_code(qrcode)?;
            sim.pairing(qrcode)?
        }
        "confirm" => sim.confirm(qrcode)?,
        "expire" => sim.expire(qrcode)?,
        "redirect" => {
            let host = args.host.ok_or_else(|| Refusal(StatusCode::BAD_REQUEST, "redirect needs a host".into()))?;
            sim.redirect(qrcode, &host)?
        }
        other => return Err(Refusal(StatusCode::NOT_FOUND, format!("no action {other:?}"))),
    })
}

/// A JSON body, or the defaults for an empty one.
fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Refusal> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn view(State(sim): State<IlinkSim>, Path(qrcode): Path<String>) -> Result<Json<PairingView>, Refusal> {
    Ok(Json(sim.pairing(&qrcode)?))
}

async fn json_action(
    State(sim): State<IlinkSim>,
    Path((qrcode, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<PairingView>, Refusal> {
    Ok(Json(apply(&sim, &qrcode, &action, json_body(&body)?)?))
}

async fn bound(State(sim): State<IlinkSim>, Path(user): Path<String>) -> StatusCode {
    sim.mark_bound(&user);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize, Default)]
struct NewBot {
    owner: Option<String>,
}

async fn add_bot(State(sim): State<IlinkSim>, body: Bytes) -> Result<Json<super::BotCredentials>, Refusal> {
    let NewBot { owner } = json_body(&body)?;
    Ok(Json(sim.add_bot(&owner.unwrap_or_else(new_wechat_user))))
}

#[derive(Deserialize, Default)]
struct NewMessage {
    #[serde(default)]
    from_user_id: String,
    #[serde(default)]
    text: String,
}

async fn deliver(State(sim): State<IlinkSim>, Path(bot_id): Path<String>, body: Bytes) -> Result<Json<super::Inbound>, Refusal> {
    let message: NewMessage = json_body(&body)?;
    if message.from_user_id.is_empty() || message.text.is_empty() {
        return Err(Refusal(StatusCode::BAD_REQUEST, "a message needs from_user_id and text".into()));
    }
    Ok(Json(sim.deliver(&bot_id, &message.from_user_id, &message.text)?))
}

async fn sent(State(sim): State<IlinkSim>, Path(bot_id): Path<String>) -> Json<Vec<super::SentMessage>> {
    Json(sim.sent(&bot_id))
}

async fn page(State(sim): State<IlinkSim>, Path(qrcode): Path<String>) -> (StatusCode, Html<String>) {
    match sim.pairing(&qrcode) {
        Ok(view) => (StatusCode::OK, Html(shell(&pairing_page(&view)))),
        Err(error) => (StatusCode::NOT_FOUND, Html(shell(&format!("<p>{}</p>", escape_html(&error.to_string()))))),
    }
}

async fn page_action(State(sim): State<IlinkSim>, Path(qrcode): Path<String>, Form(args): Form<ActionArgs>) -> Response {
    let action = args.action.clone();
    match apply(&sim, &qrcode, &action, args) {
        Ok(_) => Redirect::to(&format!("/sandbox/ilink/scan/{qrcode}")).into_response(),
        Err(Refusal(status, message)) => {
            let back = format!(
                r#"<p class="error">{}</p><p><a href="/sandbox/ilink/scan/{}">Back</a></p>"#,
                escape_html(&message),
                escape_html(&qrcode)
            );
            (status, Html(shell(&back))).into_response()
        }
    }
}

fn button(action: &str, label: &str) -> String {
    format!(r#"<button type="submit" name="action" value="{action}" id="{action}">{label}</button>"#)
}

fn pairing_page(view: &PairingView) -> String {
    let controls = match view.stage {
        Stage::Wait => format!(
            r#"<form method="post"><label>WeChat user id (optional) <input name="wechat_user" autocomplete="off"></label><br>{}</form>"#,
            button("scan", "Scan with WeChat")
        ),
        Stage::Scanned => format!(
            r#"<form method="post">{} {} {}</form>"#,
            button("confirm", "Confirm login"),
            button("verify_code", "Ask for a verification code"),
            button("expire", "Let it expire")
        ),
        Stage::NeedVerifyCode => format!(
            r#"<p>Type this code into the page showing the QR code:</p><p class="code" id="code">{}</p><p><a href="">Refresh</a></p>"#,
            escape_html(view.verify_code.as_deref().unwrap_or_default())
        ),
        Stage::Confirmed => {
            format!(r#"<p>Logged in: bot <code id="bot">{}</code>.</p>"#, escape_html(view.ilink_bot_id.as_deref().unwrap_or_default()))
        }
        Stage::VerifyCodeBlocked | Stage::Expired | Stage::BindedRedirect => {
            "<p>Nothing more to do here; the product needs a new QR code.</p>".to_string()
        }
    };
    let scanned = view.scanned_by.as_deref().map(|u| format!("<p>Scanned by <code>{}</code></p>", escape_html(u))).unwrap_or_default();
    format!(
        r#"<h1>iLink bot login</h1>
<p>QR code <code>{qrcode}</code> · <strong id="status">{status}</strong></p>
{scanned}{controls}"#,
        qrcode = escape_html(&view.qrcode),
        status = view.stage.wire(),
    )
}

fn shell(content: &str) -> String {
    sandbox_page("iLink simulator", "SANDBOX — not WeChat", content)
}
