//! Messaging, as hermes' weixin adapter uses it: the long-polled `getupdates` with its opaque
//! `get_updates_buf` cursor, `sendmessage`, and `getconfig` / `sendtyping` for the typing
//! indicator. Every call is a JSON POST carrying `Authorization: Bearer <bot_token>`; answers are
//! HTTP 200 with `ret` (0 = success) and, on failure, `errcode` / `errmsg` — an unknown or missing
//! token gets `-14` ("session timeout"), which hermes treats as an expired session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::media::SentMedia;
use super::{BotCredentials, ControlError, IlinkSim};
use crate::common;

/// iLink's code for an expired or unknown bot token.
const SESSION_EXPIRED: i64 = -14;
/// Messages handed out per `getupdates` answer at most.
const MAX_BATCH: usize = 100;
const ITEM_TEXT: i64 = 1;

pub fn router() -> Router<IlinkSim> {
    Router::new()
        .route("/ilink/bot/getupdates", post(get_updates))
        .route("/ilink/bot/sendmessage", post(send_message))
        .route("/ilink/bot/getconfig", post(get_config))
        .route("/ilink/bot/sendtyping", post(send_typing))
}

/// A message a bot sent, as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentMessage {
    /// Its media items (images, files), decrypted.
    pub media: Vec<SentMedia>,
    pub to_user_id: String,
    /// Echoed from the user's latest inbound message, which is what lets iLink route the reply.
    pub context_token: Option<String>,
    pub client_id: Option<String>,
    /// The text items, joined by newlines.
    pub text: String,
    /// The `item_list` exactly as sent.
    pub item_list: Value,
}

/// A message delivered to a bot by [`IlinkSim::deliver`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inbound {
    pub message_id: u64,
    /// What the bot must echo to reply to this message.
    pub context_token: String,
}

#[derive(Default)]
pub(super) struct Bots {
    by_id: HashMap<String, Bot>,
    /// `bot_token` → `ilink_bot_id`.
    tokens: HashMap<String, String>,
}

impl Bots {
    pub fn add(&mut self, owner: &str) -> BotCredentials {
        let credentials = BotCredentials {
            ilink_bot_id: format!("{}@im.bot", common::random_hex(16)),
            bot_token: format!("{}@im.bot:{}", common::random_hex(16), common::random_alphanumeric(40)),
            ilink_user_id: owner.to_string(),
        };
        self.tokens.insert(credentials.bot_token.clone(), credentials.ilink_bot_id.clone());
        let bot = Bot {
            inbox: Vec::new(),
            sent: Vec::new(),
            typing_ticket: BASE64.encode(common::random_alphanumeric(24)),
            arrived: watch::channel(()).0,
        };
        self.by_id.insert(credentials.ilink_bot_id.clone(), bot);
        credentials
    }
}

struct Bot {
    /// Every inbound message in arrival order; a cursor is an index into it.
    inbox: Vec<Value>,
    sent: Vec<SentMessage>,
    typing_ticket: String,
    arrived: watch::Sender<()>,
}

/// `get_updates_buf` is opaque to clients; here it names the bot and how many messages it has had.
/// Empty, foreign or garbled cursors start from the first message.
fn decode_cursor(bot_id: &str, cursor: &str) -> usize {
    let decoded = BASE64.decode(cursor).ok().and_then(|bytes| String::from_utf8(bytes).ok()).unwrap_or_default();
    decoded.strip_prefix(bot_id).and_then(|rest| rest.strip_prefix('|')).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn encode_cursor(bot_id: &str, seen: usize) -> String {
    BASE64.encode(format!("{bot_id}|{seen}"))
}

pub(super) fn failure(ret: i64, errmsg: &str) -> Json<Value> {
    Json(json!({"ret": ret, "errcode": ret, "errmsg": errmsg}))
}

/// The bot named by the bearer token and the parsed body, or the answer refusing the call.
pub(super) fn authorize<T: DeserializeOwned>(sim: &IlinkSim, headers: &HeaderMap, body: &Bytes) -> Result<(String, T), Json<Value>> {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
    let bot_id = sim.state().bots.tokens.get(token).cloned().ok_or_else(|| failure(SESSION_EXPIRED, "session timeout"))?;
    let request = serde_json::from_slice(body).map_err(|e| failure(-1, &format!("invalid request body: {e}")))?;
    Ok((bot_id, request))
}

#[derive(Deserialize)]
struct GetUpdates {
    #[serde(default)]
    get_updates_buf: String,
}

async fn get_updates(State(sim): State<IlinkSim>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let (bot_id, request): (String, GetUpdates) = match authorize(&sim, &headers, &body) {
        Ok(call) => call,
        Err(refusal) => return refusal,
    };
    let hold_until = Instant::now() + sim.inner.config.updates_hold;
    let seen = decode_cursor(&bot_id, &request.get_updates_buf);
    loop {
        let mut arrived = {
            let state = sim.state();
            let bot = &state.bots.by_id[&bot_id];
            let arrived = bot.arrived.subscribe();
            let seen = seen.min(bot.inbox.len());
            if seen < bot.inbox.len() || Instant::now() >= hold_until {
                let msgs: Vec<&Value> = bot.inbox[seen..].iter().take(MAX_BATCH).collect();
                let cursor = encode_cursor(&bot_id, seen + msgs.len());
                return Json(json!({"ret": 0, "msgs": msgs, "get_updates_buf": cursor}));
            }
            arrived
        };
        let _ = tokio::time::timeout_at(hold_until.into(), arrived.changed()).await;
    }
}

#[derive(Deserialize)]
struct SendMessage {
    msg: OutgoingMessage,
}

#[derive(Deserialize)]
struct OutgoingMessage {
    #[serde(default)]
    to_user_id: String,
    context_token: Option<String>,
    client_id: Option<String>,
    #[serde(default)]
    item_list: Vec<Value>,
}

async fn send_message(State(sim): State<IlinkSim>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let (bot_id, SendMessage { msg }): (String, SendMessage) = match authorize(&sim, &headers, &body) {
        Ok(call) => call,
        Err(refusal) => return refusal,
    };
    if msg.to_user_id.is_empty() || msg.item_list.is_empty() {
        return failure(-1, "msg needs to_user_id and a non-empty item_list");
    }
    let texts: Vec<&str> = msg
        .item_list
        .iter()
        .filter(|item| item["type"].as_i64() == Some(ITEM_TEXT))
        .filter_map(|item| item["text_item"]["text"].as_str())
        .collect();
    let media = match sim.state().uploads.resolve(&msg.item_list) {
        Ok(media) => media,
        Err(why) => return failure(-1, &why),
    };
    let sent = SentMessage {
        media,
        to_user_id: msg.to_user_id,
        context_token: msg.context_token,
        client_id: msg.client_id,
        text: texts.join("\n"),
        item_list: Value::Array(msg.item_list),
    };
    sim.state().bots.by_id.get_mut(&bot_id).expect("authorized bot exists").sent.push(sent);
    sim.inner.sent.notify_waiters();
    Json(json!({"ret": 0}))
}

#[derive(Deserialize)]
struct GetConfig {
    #[serde(default)]
    ilink_user_id: String,
}

async fn get_config(State(sim): State<IlinkSim>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let (bot_id, request): (String, GetConfig) = match authorize(&sim, &headers, &body) {
        Ok(call) => call,
        Err(refusal) => return refusal,
    };
    if request.ilink_user_id.is_empty() {
        return failure(-1, "ilink_user_id is required");
    }
    let ticket = sim.state().bots.by_id[&bot_id].typing_ticket.clone();
    Json(json!({"ret": 0, "typing_ticket": ticket}))
}

#[derive(Deserialize)]
struct SendTyping {
    #[serde(default)]
    typing_ticket: String,
}

async fn send_typing(State(sim): State<IlinkSim>, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let (bot_id, request): (String, SendTyping) = match authorize(&sim, &headers, &body) {
        Ok(call) => call,
        Err(refusal) => return refusal,
    };
    if sim.state().bots.by_id[&bot_id].typing_ticket != request.typing_ticket {
        return failure(-1, "invalid typing_ticket");
    }
    Json(json!({"ret": 0}))
}

impl IlinkSim {
    /// `from_user_id` sends `text` to the bot: the next `getupdates` hands it out with a fresh
    /// `context_token`.
    pub fn deliver(&self, bot_id: &str, from_user_id: &str, text: &str) -> Result<Inbound, ControlError> {
        let mut state = self.state();
        let bot = state.bots.by_id.get_mut(bot_id).ok_or_else(|| ControlError::UnknownBot(bot_id.to_string()))?;
        let inbound = Inbound { message_id: rand::random::<u64>() >> 1, context_token: common::random_alphanumeric(44) };
        bot.inbox.push(json!({
            "seq": bot.inbox.len() + 1,
            "message_id": inbound.message_id,
            "from_user_id": from_user_id,
            "to_user_id": bot_id,
            "client_id": format!("wx-{}", common::random_hex(16)),
            "create_time_ms": chrono::Utc::now().timestamp_millis(),
            "session_id": "",
            "message_type": 1,
            "message_state": 2,
            "context_token": inbound.context_token,
            "item_list": [{"type": ITEM_TEXT, "text_item": {"text": text}}],
        }));
        bot.arrived.send_replace(());
        Ok(inbound)
    }

    /// Every message the bot sent so far, oldest first (none for an unknown bot).
    pub fn sent(&self, bot_id: &str) -> Vec<SentMessage> {
        self.state().bots.by_id.get(bot_id).map(|bot| bot.sent.clone()).unwrap_or_default()
    }

    /// Waits until the bot has sent at least `n` messages or `within` passes, then returns all of
    /// them.
    pub async fn wait_for_sent(&self, bot_id: &str, n: usize, within: Duration) -> Vec<SentMessage> {
        let _ = tokio::time::timeout(within, async {
            loop {
                let sent = self.inner.sent.notified();
                tokio::pin!(sent);
                sent.as_mut().enable();
                if self.sent(bot_id).len() >= n {
                    return;
                }
                sent.await;
            }
        })
        .await;
        self.sent(bot_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_belong_to_one_bot() {
        let cursor = encode_cursor("a@im.bot", 7);
        assert_eq!(decode_cursor("a@im.bot", &cursor), 7);
        assert_eq!(decode_cursor("b@im.bot", &cursor), 0);
        assert_eq!(decode_cursor("a@im.bot", ""), 0);
        assert_eq!(decode_cursor("a@im.bot", "%%%"), 0);
    }
}
