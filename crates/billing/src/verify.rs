//! Checking that a response or a notification really comes from WeChat Pay: its `Wechatpay-*`
//! headers must name a key we trust, carry a fresh timestamp and a valid RSA-SHA256 signature over
//! the raw body. Anything else is rejected with an error naming what was wrong.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use sha2::Sha256;

use crate::platform::PlatformKeys;
use crate::signature::{response_message, SCHEME};

pub const HEADER_TIMESTAMP: &str = "wechatpay-timestamp";
pub const HEADER_NONCE: &str = "wechatpay-nonce";
pub const HEADER_SIGNATURE: &str = "wechatpay-signature";
pub const HEADER_SERIAL: &str = "wechatpay-serial";
pub const HEADER_SIGNATURE_TYPE: &str = "wechatpay-signature-type";

/// WeChat Pay probes merchants with deliberately invalid signatures starting with this; a merchant
/// that accepts one is not verifying.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// How far a signed timestamp may be from our clock, either way, before it is a replay risk.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or non-ASCII header {0}")]
    MissingHeader(&'static str),
    #[error("signature probe ({SIGNTEST_PREFIX}…): rejected as WeChat Pay expects")]
    Probe,
    #[error("unsupported signature type {0:?}")]
    UnsupportedType(String),
    #[error("Wechatpay-Timestamp {0:?} is not a unix time in seconds")]
    BadTimestamp(String),
    #[error("stale: signed at {timestamp}, now {now}, more than {MAX_SKEW_SECS}s apart")]
    Stale { timestamp: i64, now: i64 },
    #[error("no trusted WeChat Pay key has serial {0:?}")]
    UnknownSerial(String),
    #[error("Wechatpay-Signature is not base64")]
    BadEncoding,
    #[error("signature does not match the body")]
    BadSignature,
}

/// Verifies `body` (the raw bytes received, never re-serialised) against its signature headers.
/// `now` is a parameter so callers and tests decide the clock.
pub fn verify(keys: &dyn PlatformKeys, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<(), SignatureError> {
    let signature = header(headers, HEADER_SIGNATURE)?;
    if signature.starts_with(SIGNTEST_PREFIX) {
        return Err(SignatureError::Probe);
    }
    if let Some(kind) = headers.get(HEADER_SIGNATURE_TYPE) {
        if kind.as_bytes() != SCHEME.as_bytes() {
            return Err(SignatureError::UnsupportedType(String::from_utf8_lossy(kind.as_bytes()).into_owned()));
        }
    }
    let timestamp = header(headers, HEADER_TIMESTAMP)?;
    let nonce = header(headers, HEADER_NONCE)?;
    let serial = header(headers, HEADER_SERIAL)?;

    let signed_at: i64 = timestamp.parse().map_err(|_| SignatureError::BadTimestamp(timestamp.to_string()))?;
    // abs_diff: a hostile timestamp such as i64::MIN must not overflow.
    if now.timestamp().abs_diff(signed_at) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale { timestamp: signed_at, now: now.timestamp() });
    }
    let key = keys.key(serial).ok_or_else(|| SignatureError::UnknownSerial(serial.to_string()))?;
    let signature = BASE64.decode(signature).map_err(|_| SignatureError::BadEncoding)?;
    let signature = Signature::try_from(signature.as_slice()).map_err(|_| SignatureError::BadSignature)?;
    VerifyingKey::<Sha256>::new(key).verify(&response_message(timestamp, nonce, body), &signature).map_err(|_| SignatureError::BadSignature)
}

/// Whether `headers` carry a signature at all (WeChat Pay signs every answer it produces; a proxy's
/// error page does not).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers.contains_key(HEADER_SIGNATURE)
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, SignatureError> {
    headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).ok_or(SignatureError::MissingHeader(name))
}
