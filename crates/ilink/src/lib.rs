#![forbid(unsafe_code)]
//! The iLink bot pairing client: what our onboarding page drives to turn a WeChat scan into a bot
//! for the paying user (`protocols/ilink.md`). It speaks exactly what hermes-agent 0.19.0's
//! `qr_login` speaks (`gateway/platforms/weixin.py`), so the credentials it yields are the ones the
//! user's hermes gateway will run with:
//!
//! 1. [`IlinkClient::get_bot_qrcode`] — `GET /ilink/bot/get_bot_qrcode?bot_type=3` gives a poll key
//!    and the content to render as a QR code;
//! 2. [`IlinkClient::poll_status`] — `GET /ilink/bot/get_qrcode_status?qrcode=…[&verify_code=…]`,
//!    long-polled, until [`PairingStatus::Confirmed`] hands over the bot token.
//!
//! Both calls carry only `iLink-App-Id` and `iLink-App-ClientVersion`, as hermes' do: the login
//! endpoints take no `X-WECHAT-UIN` and no `Authorization`.
//!
//! Once paired, [`IlinkClient::send_text`] lets our side speak as the bot (its greeting, renewal
//! reminders) exactly as hermes' gateway sends a message of its own accord.

use std::time::Duration;

use base64::Engine;
use reqwest::{RequestBuilder, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

/// Tencent's iLink API.
pub const DEFAULT_BASE_URL: &str = "https://ilinkai.weixin.qq.com";
/// `iLink-App-Id` of every hermes request.
pub const APP_ID: &str = "bot";
/// `iLink-App-ClientVersion`: hermes' channel version 2.2.0 as `major << 16 | minor << 8 | patch`.
pub const APP_CLIENT_VERSION: u32 = (2 << 16) | (2 << 8);
/// `base_info.channel_version` of hermes' bot calls.
pub const CHANNEL_VERSION: &str = "2.2.0";
/// The bot type hermes (and the official plugin) ask for.
pub const BOT_TYPE: &str = "3";
/// `message_type` of a message the bot sends, `message_state` of a complete one, `type` of a text item.
const MESSAGE_TYPE_BOT: i64 = 2;
const MESSAGE_STATE_FINISH: i64 = 2;
const ITEM_TEXT: i64 = 1;
/// How long iLink holds a status poll when nothing changes.
pub const DEFAULT_LONG_POLL_HOLD: Duration = Duration::from_secs(35);
/// Added to the hold for the request timeout, so a held answer arrives before we give up.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
/// Timeout of the plain (not held) QR code request.
const API_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a pairing call failed. Never carries a bot token.
#[derive(Debug, thiserror::Error)]
pub enum IlinkError {
    #[error("invalid iLink base URL {0:?}")]
    InvalidBaseUrl(String),
    #[error("iLink request failed: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("iLink answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("iLink answered ret={ret} errcode={errcode}: {errmsg}")]
    Api { ret: i64, errcode: i64, errmsg: String },
    #[error("unexpected iLink answer: {0}")]
    Decode(String),
    #[error("unknown QR code status {0:?}")]
    UnknownStatus(String),
    #[error("iLink confirmed the login without {0}")]
    IncompleteCredentials(&'static str),
}

impl From<reqwest::Error> for IlinkError {
    fn from(error: reqwest::Error) -> Self {
        // The URL names the poll key; keep it out of logs all the same.
        IlinkError::Transport(error.without_url())
    }
}

/// A QR code to show the user, and where to ask about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    /// iLink's `qrcode`: the key to poll the status with.
    pub poll_key: String,
    /// iLink's `qrcode_img_content`: the text (a URL) to render as the QR image.
    pub img_content: String,
    /// Where status polls go; moves when iLink answers `scaned_but_redirect`. Persist it with the
    /// key when a pairing outlives the process.
    pub poll_base: Url,
}

/// One answer of `get_qrcode_status`.
#[derive(Debug)]
pub enum PairingStatus {
    /// Not scanned yet (also what a poll that outlived its timeout reads as, like hermes does).
    Wait,
    /// Scanned; waiting for the user to confirm on the phone.
    Scanned,
    /// The phone shows a 6-digit code the user must type into our page; poll again with it.
    NeedVerifyCode,
    /// Too many wrong codes: fetch a new QR code.
    VerifyCodeBlocked,
    /// Keep polling on `host`; [`IlinkClient::poll_status`] has already moved [`QrCode::poll_base`].
    ScannedButRedirect { host: String },
    /// Fetch a new QR code.
    Expired,
    /// This WeChat account is already bound to a bot; no new credentials.
    BindedRedirect,
    /// Paired. `base_url` is where the bot's API lives from now on; `ilink_user_id` is the user who
    /// scanned (the one to allow-list).
    Confirmed { bot_token: SecretString, ilink_bot_id: String, base_url: String, ilink_user_id: String },
}

/// A client for iLink's login endpoints. Cheap to clone; one serves any number of pairings.
#[derive(Debug, Clone)]
pub struct IlinkClient {
    http: reqwest::Client,
    base_url: Url,
    hold: Duration,
}

impl IlinkClient {
    /// A client for the iLink API at `base_url` ([`DEFAULT_BASE_URL`] in production, a simulator
    /// in tests).
    pub fn new(base_url: &str) -> Result<Self, IlinkError> {
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| IlinkError::InvalidBaseUrl(base_url.to_string()))?;
        Ok(IlinkClient { http: reqwest::Client::new(), base_url, hold: DEFAULT_LONG_POLL_HOLD })
    }

    /// Expect status polls to be held this long (the request timeout is a little longer).
    pub fn with_long_poll_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// A fresh QR code for one pairing.
    pub async fn get_bot_qrcode(&self) -> Result<QrCode, IlinkError> {
        let url = endpoint(&self.base_url, "ilink/bot/get_bot_qrcode");
        let body = self.get(url, &[("bot_type", BOT_TYPE)], API_TIMEOUT).await?;
        let field = |name: &'static str| {
            body[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| IlinkError::Decode(format!("get_bot_qrcode answer without {name}")))
        };
        Ok(QrCode { poll_key: field("qrcode")?, img_content: field("qrcode_img_content")?, poll_base: self.base_url.clone() })
    }

    /// One long poll of `qr`'s status, with the code the user typed once one is needed. A poll that
    /// times out reads as [`PairingStatus::Wait`]; on `scaned_but_redirect` the next poll of `qr`
    /// goes to the named host (same scheme as the configured base URL, so a simulator on plain HTTP
    /// works; production is https, as hermes assumes).
    pub async fn poll_status(&self, qr: &mut QrCode, verify_code: Option<&str>) -> Result<PairingStatus, IlinkError> {
        let url = endpoint(&qr.poll_base, "ilink/bot/get_qrcode_status");
        let mut query = vec![("qrcode", qr.poll_key.as_str())];
        query.extend(verify_code.map(|code| ("verify_code", code)));
        let body = match self.get(url, &query, self.hold + TIMEOUT_MARGIN).await {
            Err(IlinkError::Transport(e)) if e.is_timeout() => return Ok(PairingStatus::Wait),
            other => other?,
        };
        let text = |name: &str| body[name].as_str().unwrap_or_default().to_string();
        let status = match body["status"].as_str().unwrap_or("wait") {
            "wait" => PairingStatus::Wait,
            "scaned" => PairingStatus::Scanned,
            "need_verifycode" => PairingStatus::NeedVerifyCode,
            "verify_code_blocked" => PairingStatus::VerifyCodeBlocked,
            "expired" => PairingStatus::Expired,
            "binded_redirect" => PairingStatus::BindedRedirect,
            "scaned_but_redirect" => {
                let host = text("redirect_host");
                qr.poll_base = redirected(&qr.poll_base, &host)?;
                PairingStatus::ScannedButRedirect { host }
            }
            "confirmed" => {
                let bot_token = text("bot_token");
                let ilink_bot_id = text("ilink_bot_id");
                if bot_token.is_empty() {
                    return Err(IlinkError::IncompleteCredentials("bot_token"));
                }
                if ilink_bot_id.is_empty() {
                    return Err(IlinkError::IncompleteCredentials("ilink_bot_id"));
                }
                let base_url = Some(text("baseurl"))
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| self.base_url.as_str().trim_end_matches('/').to_string());
                PairingStatus::Confirmed { bot_token: bot_token.into(), ilink_bot_id, base_url, ilink_user_id: text("ilink_user_id") }
            }
            other => return Err(IlinkError::UnknownStatus(other.to_string())),
        };
        Ok(status)
    }

    /// Sends `text` from a paired bot to `to_user_id` (the user who scanned), the way hermes'
    /// gateway sends a message nobody asked for: `POST <bot_base>/ilink/bot/sendmessage` with the
    /// bot's token, a finished bot message, no `context_token`.
    pub async fn send_text(&self, bot_base: &str, bot_token: &SecretString, to_user_id: &str, text: &str) -> Result<(), IlinkError> {
        let base = Url::parse(bot_base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| IlinkError::InvalidBaseUrl(bot_base.to_string()))?;
        let message = json!({
            "msg": {
                "from_user_id": "",
                "to_user_id": to_user_id,
                "client_id": format!("twilight-{:032x}", rand::random::<u128>()),
                "message_type": MESSAGE_TYPE_BOT,
                "message_state": MESSAGE_STATE_FINISH,
                "item_list": [{"type": ITEM_TEXT, "text_item": {"text": text}}],
            },
            "base_info": {"channel_version": CHANNEL_VERSION},
        });
        let uin = base64::engine::general_purpose::STANDARD.encode(rand::random::<u32>().to_string());
        let request = self
            .http
            .post(endpoint(&base, "ilink/bot/sendmessage"))
            .header("AuthorizationType", "ilink_bot_token")
            .header("Authorization", format!("Bearer {}", bot_token.expose_secret()))
            .header("X-WECHAT-UIN", uin)
            .json(&message);
        self.call(request, API_TIMEOUT).await.map(drop)
    }

    /// A GET with iLink's app headers; see [`IlinkClient::call`].
    async fn get(&self, url: Url, query: &[(&str, &str)], timeout: Duration) -> Result<Value, IlinkError> {
        self.call(self.http.get(url).query(query), timeout).await
    }

    /// Sends `request` with iLink's app headers; the JSON answer, refused when not HTTP 2xx or when
    /// it carries a non-zero `ret` / `errcode`.
    async fn call(&self, request: RequestBuilder, timeout: Duration) -> Result<Value, IlinkError> {
        let response = request
            .header("iLink-App-Id", APP_ID)
            .header("iLink-App-ClientVersion", APP_CLIENT_VERSION.to_string())
            .timeout(timeout)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            return Err(IlinkError::Http { status: status.as_u16(), body });
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| IlinkError::Decode(format!("not JSON: {e}")))?;
        let code = |name: &str| body[name].as_i64().unwrap_or(0);
        if code("ret") != 0 || code("errcode") != 0 {
            let errmsg = body["errmsg"].as_str().unwrap_or_default().to_string();
            return Err(IlinkError::Api { ret: code("ret"), errcode: code("errcode"), errmsg });
        }
        Ok(body)
    }
}

/// `path` under `base`, whatever path `base` has.
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}/{path}", base.path().trim_end_matches('/')));
    url
}

/// The base URL to continue polling at after a redirect to `host` (`name[:port]` only).
fn redirected(current: &Url, host: &str) -> Result<Url, IlinkError> {
    let bad = || IlinkError::Decode(format!("scaned_but_redirect to an invalid host {host:?}"));
    if host.is_empty() || host.contains(['/', '@', '?', '#', '\\']) {
        return Err(bad());
    }
    Url::parse(&format!("{}://{host}", current.scheme())).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_redirects() {
        let base = Url::parse("https://ilinkai.weixin.qq.com").unwrap();
        assert_eq!(endpoint(&base, "ilink/bot/get_bot_qrcode").as_str(), "https://ilinkai.weixin.qq.com/ilink/bot/get_bot_qrcode");
        let nested = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(endpoint(&nested, "ilink/bot/x").as_str(), "http://127.0.0.1:9/prefix/ilink/bot/x");
        assert_eq!(redirected(&base, "sh.ilinkai.weixin.qq.com").unwrap().as_str(), "https://sh.ilinkai.weixin.qq.com/");
        assert_eq!(redirected(&nested, "127.0.0.1:10").unwrap().as_str(), "http://127.0.0.1:10/");
        for hostile in ["", "evil.com/path", "user@evil.com", "a?b"] {
            assert!(redirected(&base, hostile).is_err(), "{hostile}");
        }
        assert!(IlinkClient::new("ftp://x").is_err() && IlinkClient::new("not a url").is_err());
        assert_eq!(APP_CLIENT_VERSION, 131_584);
    }
}
