//! QR pairing: a QR code's life from `wait` to `confirmed` (or one of the ways it ends otherwise),
//! the long-polled status answer, and the phone's actions that move it along.
//!
//! A status poll is answered at once when the pairing has news for the poller (a status it has
//! not been told yet, a finished pairing, a wrong code) and otherwise held until something happens,
//! the hold runs out, or the QR code expires.

use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{BotCredentials, ControlError, IlinkSim};
use crate::common;

pub fn router() -> Router<IlinkSim> {
    Router::new()
        // hermes 0.19 GETs; newer openclaw plugins POST `{"local_token_list":[]}`.
        .route("/ilink/bot/get_bot_qrcode", get(new_qrcode).post(new_qrcode))
        .route("/ilink/bot/get_qrcode_status", get(status))
}

/// Where a pairing stands (serialized as the wire `status`; `scaned_but_redirect` is not a stage but
/// the answer to a poll on the wrong host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Stage {
    #[serde(rename = "wait")]
    Wait,
    #[serde(rename = "scaned")]
    Scanned,
    #[serde(rename = "need_verifycode")]
    NeedVerifyCode,
    #[serde(rename = "verify_code_blocked")]
    VerifyCodeBlocked,
    #[serde(rename = "expired")]
    Expired,
    #[serde(rename = "binded_redirect")]
    BindedRedirect,
    #[serde(rename = "confirmed")]
    Confirmed,
}

impl Stage {
    /// The `status` value iLink answers with (its spelling, `scaned` included).
    pub fn wire(self) -> &'static str {
        match self {
            Stage::Wait => "wait",
            Stage::Scanned => "scaned",
            Stage::NeedVerifyCode => "need_verifycode",
            Stage::VerifyCodeBlocked => "verify_code_blocked",
            Stage::Expired => "expired",
            Stage::BindedRedirect => "binded_redirect",
            Stage::Confirmed => "confirmed",
        }
    }

    /// Nothing more happens to a finished pairing; the client needs a new QR code (or is done).
    pub fn finished(self) -> bool {
        matches!(self, Stage::VerifyCodeBlocked | Stage::Expired | Stage::BindedRedirect | Stage::Confirmed)
    }
}

/// What a test, the scan page or a browser test sees of a pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairingView {
    pub qrcode: String,
    pub stage: Stage,
    pub scanned_by: Option<String>,
    /// The 6-digit code the phone shows, once one is required.
    pub verify_code: Option<String>,
    pub redirect_host: Option<String>,
    /// The new bot, once confirmed.
    pub ilink_bot_id: Option<String>,
}

pub(super) struct Pairing {
    qrcode: String,
    expires_at: Instant,
    stage: Stage,
    scanned_by: Option<String>,
    verify_code: Option<String>,
    wrong_codes: u32,
    redirect_host: Option<String>,
    credentials: Option<BotCredentials>,
    /// The stage last answered to a poll: a poll holds only while there is nothing newer.
    last_answered: Option<Stage>,
    changed: watch::Sender<()>,
}

impl Pairing {
    fn new(qrcode: String, expires_at: Instant) -> Self {
        Pairing {
            qrcode,
            expires_at,
            stage: Stage::Wait,
            scanned_by: None,
            verify_code: None,
            wrong_codes: 0,
            redirect_host: None,
            credentials: None,
            last_answered: None,
            changed: watch::channel(()).0,
        }
    }

    fn view(&self) -> PairingView {
        PairingView {
            qrcode: self.qrcode.clone(),
            stage: self.stage,
            scanned_by: self.scanned_by.clone(),
            verify_code: self.verify_code.clone(),
            redirect_host: self.redirect_host.clone(),
            ilink_bot_id: self.credentials.as_ref().map(|c| c.ilink_bot_id.clone()),
        }
    }

    fn expire_if_due(&mut self, now: Instant) {
        if !self.stage.finished() && now >= self.expires_at {
            self.stage = Stage::Expired;
        }
    }

    /// The answer to a poll arriving on `host` (with the code the user typed, if any), or `None`
    /// to keep holding. `hold_over` forces an answer.
    fn poll(&mut self, host: &str, code: Option<&str>, max_wrong_codes: u32, hold_over: bool) -> Option<Value> {
        if let Some(redirect_host) = self.redirect_host.as_deref().filter(|h| *h != host) {
            return Some(json!({"status": "scaned_but_redirect", "redirect_host": redirect_host}));
        }
        let mut wrong_code = false;
        if let (Stage::NeedVerifyCode, Some(code)) = (self.stage, code) {
            if self.verify_code.as_deref() == Some(code) {
                self.stage = Stage::Scanned;
            } else {
                wrong_code = true;
                self.wrong_codes += 1;
                if self.wrong_codes >= max_wrong_codes {
                    self.stage = Stage::VerifyCodeBlocked;
                }
            }
        }
        let news = self.last_answered != Some(self.stage) || self.stage.finished();
        if !(news || wrong_code || hold_over) {
            return None;
        }
        self.last_answered = Some(self.stage);
        Some(match (&self.credentials, self.stage) {
            (Some(c), Stage::Confirmed) => json!({
                "status": "confirmed",
                "bot_token": c.bot_token,
                "ilink_bot_id": c.ilink_bot_id,
                "baseurl": format!("http://{host}"),
                "ilink_user_id": c.ilink_user_id,
            }),
            (_, stage) => json!({"status": stage.wire()}),
        })
    }

    fn require_stage(&self, allowed: &[Stage], why: &'static str) -> Result<(), ControlError> {
        if allowed.contains(&self.stage) {
            Ok(())
        } else {
            Err(ControlError::WrongStage(self.stage, why))
        }
    }
}

/// The host a request was sent to: a redirected pairing only answers on its new host, and answers
/// name URLs on the host the client used.
fn host(headers: &HeaderMap) -> String {
    headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string()
}

async fn new_qrcode(State(sim): State<IlinkSim>, headers: HeaderMap) -> Json<Value> {
    let qrcode = common::random_hex(32);
    let pairing = Pairing::new(qrcode.clone(), Instant::now() + sim.inner.config.qr_ttl);
    sim.state().pairings.insert(qrcode.clone(), pairing);
    let img_content = format!("http://{}/sandbox/ilink/scan/{qrcode}", host(&headers));
    Json(json!({"qrcode": qrcode, "qrcode_img_content": img_content}))
}

#[derive(Deserialize)]
struct StatusQuery {
    #[serde(default)]
    qrcode: String,
    verify_code: Option<String>,
}

async fn status(State(sim): State<IlinkSim>, headers: HeaderMap, Query(query): Query<StatusQuery>) -> Json<Value> {
    let host = host(&headers);
    let hold_until = Instant::now() + sim.inner.config.status_hold;
    let mut code = query.verify_code.filter(|c| !c.is_empty());
    loop {
        let (mut changed, wake_at) = {
            let mut state = sim.state();
            // An unknown (or forgotten) QR code reads as expired, which sends clients for a new one.
            let Some(pairing) = state.pairings.get_mut(&query.qrcode) else {
                return Json(json!({"status": "expired"}));
            };
            let changed = pairing.changed.subscribe();
            let now = Instant::now();
            pairing.expire_if_due(now);
            if let Some(answer) = pairing.poll(&host, code.take().as_deref(), sim.inner.config.max_wrong_codes, now >= hold_until) {
                return Json(answer);
            }
            (changed, hold_until.min(pairing.expires_at))
        };
        let _ = tokio::time::timeout_at(wake_at.into(), changed.changed()).await;
    }
}

impl IlinkSim {
    /// The phone scans `qrcode` as `wechat_user` (who becomes the bot's `ilink_user_id`).
    pub fn scan(&self, qrcode: &str, wechat_user: &str) -> Result<PairingView, ControlError> {
        self.act(qrcode, |pairing, _| {
            pairing.require_stage(&[Stage::Wait], "only a fresh QR code can be scanned")?;
            pairing.stage = Stage::Scanned;
            pairing.scanned_by = Some(wechat_user.to_string());
            Ok(())
        })
    }

    /// The phone asks for a verification code: the pairing answers `need_verifycode` until a poll
    /// carries this code. Returns the 6-digit code the phone shows.
    pub fn require_verify_code(&self, qrcode: &str) -> Result<String, ControlError> {
        let view = self.act(qrcode, |pairing, _| {
            pairing.require_stage(&[Stage::Scanned], "a code is asked for after a scan")?;
            pairing.stage = Stage::NeedVerifyCode;
            pairing.verify_code = Some(format!("{:06}", rand::random::<u32>() % 1_000_000));
            Ok(())
        })?;
        Ok(view.verify_code.expect("just set"))
    }

    /// The user confirms on the phone: a new bot is created and the next poll answers `confirmed`
    /// with its credentials, or `binded_redirect` when this WeChat user is already bound.
    pub fn confirm(&self, qrcode: &str) -> Result<PairingView, ControlError> {
        self.act(qrcode, |pairing, state| {
            if pairing.stage == Stage::NeedVerifyCode {
                return Err(ControlError::CodeNotVerified);
            }
            pairing.require_stage(&[Stage::Scanned], "confirming needs a scan")?;
            let user = pairing.scanned_by.clone().expect("a scanned pairing has a user");
            if state.bound_users.contains(&user) {
                pairing.stage = Stage::BindedRedirect;
            } else {
                pairing.credentials = Some(state.bots.add(&user));
                pairing.stage = Stage::Confirmed;
            }
            Ok(())
        })
    }

    /// The QR code runs out now instead of at its TTL.
    pub fn expire(&self, qrcode: &str) -> Result<PairingView, ControlError> {
        self.act(qrcode, |pairing, _| {
            if pairing.stage.finished() {
                return Err(ControlError::WrongStage(pairing.stage, "a finished pairing cannot expire"));
            }
            pairing.stage = Stage::Expired;
            Ok(())
        })
    }

    /// From now on the pairing answers only on `host` (`127.0.0.1:<port>`, where the same router
    /// is also served); polls elsewhere get `scaned_but_redirect` naming it.
    pub fn redirect(&self, qrcode: &str, host: &str) -> Result<PairingView, ControlError> {
        self.act(qrcode, |pairing, _| {
            pairing.redirect_host = Some(host.to_string());
            Ok(())
        })
    }

    /// `wechat_user` already has a bot: their next confirm answers `binded_redirect`.
    pub fn mark_bound(&self, wechat_user: &str) {
        self.state().bound_users.insert(wechat_user.to_string());
    }

    pub fn pairing(&self, qrcode: &str) -> Result<PairingView, ControlError> {
        self.act(qrcode, |_, _| Ok(()))
    }

    /// Applies `change` to the pairing and wakes its pollers.
    fn act(
        &self,
        qrcode: &str,
        change: impl FnOnce(&mut Pairing, &mut PairingContext<'_>) -> Result<(), ControlError>,
    ) -> Result<PairingView, ControlError> {
        let mut guard = self.state();
        let state = &mut *guard;
        let pairing = state.pairings.get_mut(qrcode).ok_or_else(|| ControlError::UnknownQrCode(qrcode.to_string()))?;
        pairing.expire_if_due(Instant::now());
        change(pairing, &mut PairingContext { bots: &mut state.bots, bound_users: &state.bound_users })?;
        pairing.changed.send_replace(());
        Ok(pairing.view())
    }
}

/// The rest of the simulator a pairing action may touch.
struct PairingContext<'a> {
    bots: &'a mut super::messaging::Bots,
    bound_users: &'a std::collections::HashSet<String>,
}
