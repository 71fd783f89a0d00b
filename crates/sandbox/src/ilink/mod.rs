//! An iLink bot simulator (WeChat's personal-account bot channel) speaking what hermes-agent's
//! weixin adapter and our pairing client speak (`protocols/ilink.md`, checked against
//! `gateway/platforms/weixin.py` of hermes-agent 0.19.0):
//!
//! - pairing: `GET|POST /ilink/bot/get_bot_qrcode?bot_type=3` and the long-polled
//!   `GET /ilink/bot/get_qrcode_status?qrcode=…[&verify_code=…]` ([`pairing`]);
//! - messaging: `POST /ilink/bot/{getupdates,sendmessage,getconfig,sendtyping}` with
//!   `Authorization: Bearer <bot_token>`, answers carrying `ret`/`errcode`/`errmsg` ([`messaging`]);
//! - media: `POST /ilink/bot/getuploadurl` and the CDN's `POST /c2c/upload`, AES-128-ECB ([`media`]).
//!
//! The phone's side — scanning, confirming, the 6-digit code, a user messaging the bot — is driven
//! by tests through methods here, and by a person or a browser test through the page
//! `/sandbox/ilink/scan/{qrcode}` and JSON under `/_sandbox/ilink/…` ([`control`]).

mod control;
mod media;
mod messaging;
mod pairing;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use serde::Serialize;

use crate::common::{self, Fault, Switchboard};
pub use media::SentMedia;
pub use messaging::{Inbound, SentMessage};
pub use pairing::{PairingView, Stage};

/// Timing and limits; tests shorten the holds and the QR lifetime.
#[derive(Debug, Clone)]
pub struct IlinkSimConfig {
    /// How long `get_qrcode_status` holds when nothing changed (the real one ~35 s; hermes' client
    /// gives up at 35 s, so the default stays just under it and answers rather than times out).
    pub status_hold: Duration,
    /// How long `getupdates` holds when no message is waiting (same reasoning as `status_hold`).
    pub updates_hold: Duration,
    /// A QR code not confirmed within this long answers `expired` (the real one ~5 minutes).
    pub qr_ttl: Duration,
    /// Wrong verification codes accepted before the pairing turns `verify_code_blocked`.
    pub max_wrong_codes: u32,
}

impl Default for IlinkSimConfig {
    fn default() -> Self {
        IlinkSimConfig {
            status_hold: Duration::from_secs(30),
            updates_hold: Duration::from_secs(30),
            qr_ttl: Duration::from_secs(300),
            max_wrong_codes: 3,
        }
    }
}

/// What a confirmed pairing hands the bot's operator: the bot's identity, its secret token, and
/// the WeChat user who scanned (the one person who should be able to talk to the bot).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct BotCredentials {
    pub ilink_bot_id: String,
    pub bot_token: String,
    pub ilink_user_id: String,
}

impl std::fmt::Debug for BotCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotCredentials")
            .field("ilink_bot_id", &self.ilink_bot_id)
            .field("bot_token", &"[redacted]")
            .field("ilink_user_id", &self.ilink_user_id)
            .finish()
    }
}

/// Why a control action (the phone's side, or a test hook) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no QR code {0}")]
    UnknownQrCode(String),
    #[error("no bot {0}")]
    UnknownBot(String),
    #[error("QR code is {0:?}; {1}")]
    WrongStage(Stage, &'static str),
    #[error("the verification code has not been entered yet")]
    CodeNotVerified,
}

/// The simulator; clones share state.
#[derive(Clone)]
pub struct IlinkSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: IlinkSimConfig,
    switchboard: Switchboard,
    state: Mutex<SimState>,
    /// Woken whenever a bot sends a message.
    sent: tokio::sync::Notify,
}

#[derive(Default)]
struct SimState {
    pairings: HashMap<String, pairing::Pairing>,
    bots: messaging::Bots,
    uploads: media::Uploads,
    /// WeChat users whose account is already bound to a bot: confirming answers `binded_redirect`.
    bound_users: HashSet<String>,
}

impl IlinkSim {
    pub fn new(config: IlinkSimConfig) -> Self {
        IlinkSim {
            inner: Arc::new(Inner {
                config,
                switchboard: Switchboard::default(),
                state: Mutex::new(SimState::default()),
                sent: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The iLink API under `/ilink/bot/`, counted at `GET /_sandbox/calls` and subject to
    /// [`Self::set_fault`]; the scan page under `/sandbox/ilink/scan/{qrcode}` and the control JSON
    /// under `/_sandbox/ilink/`, which never fail.
    pub fn router(&self) -> Router {
        let api = pairing::router().merge(messaging::router()).merge(media::api_router()).merge(media::cdn_router());
        common::label(self.inner.switchboard.instrument(api).merge(control::router()), "ilink").with_state(self.clone())
    }

    /// How the `/ilink/bot/` routes misbehave from now on.
    pub fn set_fault(&self, fault: Fault) {
        self.inner.switchboard.set_fault(fault);
    }

    /// Requests received on `route`, written `METHOD /path` as routed, e.g.
    /// `POST /ilink/bot/getupdates`; unrouted paths count under their raw path.
    pub fn calls(&self, route: &str) -> u64 {
        self.inner.switchboard.calls(route)
    }

    /// A bot owned by `owner` (the WeChat user who would have scanned), without a pairing: for
    /// tests about messaging only.
    pub fn add_bot(&self, owner: &str) -> BotCredentials {
        self.state().bots.add(owner)
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A WeChat user id as iLink spells them (`o9cq8…@im.wechat`).
fn new_wechat_user() -> String {
    format!("o9cq8{}@im.wechat", common::random_alphanumeric(23))
}
