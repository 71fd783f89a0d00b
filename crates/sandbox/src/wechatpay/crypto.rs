//! WeChat Pay's side of the cryptography: checking a merchant's `Authorization`, signing answers
//! and notifications with the platform key, encrypting notification resources with the APIv3 key.

use crate::common::random_alphanumeric;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{json, Value};
use sha2::Sha256;

use super::WechatPaySim;

pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// Requests signed further than this from the simulator's clock are refused, as WeChat Pay does.
const MAX_SKEW_SECS: i64 = 5 * 60;
const RESOURCE_NONCE_LEN: usize = 12;

/// `line\n` for every line: what every signature in either direction covers.
fn message(lines: &[&[u8]]) -> Vec<u8> {
    lines.iter().flat_map(|line| line.iter().copied().chain([b'\n'])).collect()
}

/// The headers that make a body verifiable as WeChat Pay's.
pub struct SignedHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignedHeaders {
    pub fn apply(self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("wechatpay-timestamp", self.timestamp),
            ("wechatpay-nonce", self.nonce),
            ("wechatpay-signature", self.signature),
            ("wechatpay-serial", self.serial),
        ] {
            headers.insert(name, value.parse().expect("header values are ASCII"));
        }
    }
}

impl WechatPaySim {
    /// Signs `body` now, over `TIMESTAMP\nNONCE\nBODY\n`.
    pub(super) fn sign_body(&self, body: &[u8]) -> SignedHeaders {
        self.sign_body_at(body, Utc::now())
    }

    /// Signs `body` as if at `at`.
    pub(super) fn sign_body_at(&self, body: &[u8], at: DateTime<Utc>) -> SignedHeaders {
        let timestamp = at.timestamp().to_string();
        let nonce = random_alphanumeric(32);
        let signature = self.inner.platform_signer.sign(&message(&[timestamp.as_bytes(), nonce.as_bytes(), body]));
        SignedHeaders { timestamp, nonce, signature: BASE64.encode(signature.to_bytes()), serial: self.inner.platform_key_id.clone() }
    }

    /// Checks a request's `Authorization` over `METHOD\nPATH_WITH_QUERY\nTIMESTAMP\nNONCE\nBODY\n`;
    /// the error says what a merchant would need to fix.
    pub(super) fn verify_request(&self, method: &str, path_with_query: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or("缺少 Authorization 头")?;
        let params = header
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| format!("Authorization 认证类型不是 {SCHEME}"))?;
        let field = |name: &str| {
            params
                .split(',')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| *key == name)
                .and_then(|(_, value)| value.strip_prefix('"')?.strip_suffix('"'))
                .ok_or_else(|| format!("Authorization 缺少 {name}"))
        };
        let (mchid, nonce, signature, timestamp, serial) =
            (field("mchid")?, field("nonce_str")?, field("signature")?, field("timestamp")?, field("serial_no")?);
        if mchid != self.inner.mchid {
            return Err(format!("商户号 {mchid} 与签名商户不符"));
        }
        if serial != self.inner.merchant_serial {
            return Err(format!("商户证书序列号 {serial} 有误"));
        }
        let signed_at: i64 = timestamp.parse().map_err(|_| format!("timestamp {timestamp:?} 不是整数秒"))?;
        if (Utc::now().timestamp() - signed_at).abs() > MAX_SKEW_SECS {
            return Err(format!("timestamp {timestamp} 与当前时间相差超过 5 分钟"));
        }
        let signature =
            BASE64.decode(signature).ok().and_then(|s| Signature::try_from(s.as_slice()).ok()).ok_or("签名不是合法的 base64")?;
        VerifyingKey::<Sha256>::new(self.inner.merchant_key.clone())
            .verify(&message(&[method.as_bytes(), path_with_query.as_bytes(), timestamp.as_bytes(), nonce.as_bytes(), body]), &signature)
            .map_err(|_| "错误的签名，验签失败".to_string())
    }

    /// A notification `resource`: `plaintext` under AEAD_AES_256_GCM with a fresh 12-character
    /// nonce and `associated_data` as AAD, the tag appended to the ciphertext.
    pub(super) fn encrypt_resource(&self, original_type: &str, associated_data: &str, plaintext: &[u8]) -> Value {
        let nonce = random_alphanumeric(RESOURCE_NONCE_LEN);
        let cipher = Aes256Gcm::new((&*self.inner.api_v3_key).into());
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(nonce.as_bytes()), Payload { msg: plaintext, aad: associated_data.as_bytes() })
            .expect("AES-GCM encrypts any message of sane length");
        json!({
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": BASE64.encode(ciphertext),
            "associated_data": associated_data,
            "original_type": original_type,
            "nonce": nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ends_each_line_with_a_newline() {
        assert_eq!(super::message(&[b"POST", b"/v3/x", b""]), b"POST\n/v3/x\n\n");
    }
}
