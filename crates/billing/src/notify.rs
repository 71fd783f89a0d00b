//! Notifications WeChat Pay posts to our `notify_url`: verified over the raw body, then decrypted,
//! then checked to be addressed to us. What remains for the caller is the business check (the
//! `out_trade_no` is ours, `amount.total` is what we charged) and an idempotent record; duplicates
//! and out-of-order delivery are normal.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::config::WechatPayConfig;
use crate::model::{Refund, RefundStatus, TradeState, Transaction};
use crate::resource::{DecryptError, EncryptedResource};
use crate::verify::{verify, SignatureError};

pub const TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";
pub const REFUND_SUCCESS: &str = "REFUND.SUCCESS";

/// A verified, decrypted notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// WeChat Pay's id of this notification; the same across retries and duplicates.
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub summary: String,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TransactionSuccess(Transaction),
    RefundSuccess(Refund),
    /// A verified event we do not act on (`REFUND.ABNORMAL`, …); its resource is left encrypted.
    Other(String),
}

/// Why a notification was refused. Every variant should be answered with a 4xx and
/// `{"code":"FAIL","message":<Display>}`, so WeChat Pay retries a genuine one later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Not verifiably from WeChat Pay: missing headers, a signing probe, an unknown serial, a stale
    /// timestamp or a bad signature.
    #[error("notification signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("malformed notification: {0}")]
    Malformed(String),
    #[error("notification resource: {0}")]
    Decrypt(#[from] DecryptError),
    /// Verified and decrypted, but for another merchant or app: a configuration mix-up.
    #[error("notification is for {field} {got:?}, not ours")]
    ForeignMerchant { field: &'static str, got: String },
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(default)]
    create_time: String,
    event_type: String,
    #[serde(default)]
    summary: String,
    resource: EncryptedResource,
}

pub(crate) fn parse(config: &WechatPayConfig, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Notification, NotifyError> {
    verify(config.platform_keys.as_ref(), headers, body, now)?;
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| NotifyError::Malformed(format!("body: {e}")))?;
    let event = match envelope.event_type.as_str() {
        TRANSACTION_SUCCESS => {
            let transaction: Transaction = decrypt(config, &envelope.resource)?;
            ours("mchid", &config.mchid, &transaction.mchid)?;
            ours("appid", &config.appid, &transaction.appid)?;
            if transaction.trade_state != TradeState::Success {
                return Err(NotifyError::Malformed(format!("{TRANSACTION_SUCCESS} with trade_state {:?}", transaction.trade_state)));
            }
            Event::TransactionSuccess(transaction)
        }
        REFUND_SUCCESS => {
            let refund: Refund = decrypt(config, &envelope.resource)?;
            if let Some(mchid) = &refund.mchid {
                ours("mchid", &config.mchid, mchid)?;
            }
            if refund.refund_status != RefundStatus::Success {
                return Err(NotifyError::Malformed(format!("{REFUND_SUCCESS} with refund_status {:?}", refund.refund_status)));
            }
            Event::RefundSuccess(refund)
        }
        other => Event::Other(other.to_string()),
    };
    Ok(Notification {
        id: envelope.id,
        create_time: envelope.create_time,
        event_type: envelope.event_type,
        summary: envelope.summary,
        event,
    })
}

fn decrypt<T: DeserializeOwned>(config: &WechatPayConfig, resource: &EncryptedResource) -> Result<T, NotifyError> {
    let plaintext = resource.decrypt(&config.api_v3_key)?;
    serde_json::from_slice(&plaintext).map_err(|e| NotifyError::Malformed(format!("decrypted resource: {e}")))
}

fn ours(field: &'static str, expected: &str, got: &str) -> Result<(), NotifyError> {
    if got != expected {
        return Err(NotifyError::ForeignMerchant { field, got: got.to_string() });
    }
    Ok(())
}
