//! Encrypted resources: what a notification (and a platform certificate download) carries instead
//! of plaintext. AEAD_AES_256_GCM under the APIv3 key, a 12-byte ASCII nonce, the ASCII
//! `associated_data` as AAD, and base64 ciphertext with the 16-byte tag at its end.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;

use crate::credentials::ApiV3Key;

pub const ALGORITHM: &str = "AEAD_AES_256_GCM";
const NONCE_LEN: usize = 12;

/// A `resource` object as WeChat Pay sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: Option<String>,
    #[serde(default)]
    pub original_type: Option<String>,
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("unsupported resource algorithm {0:?} (expected {ALGORITHM})")]
    Algorithm(String),
    #[error("resource nonce must be {NONCE_LEN} bytes, got {0}")]
    NonceLength(usize),
    #[error("resource ciphertext is not base64")]
    Encoding,
    #[error("resource does not authenticate: wrong APIv3 key, or nonce, AAD or ciphertext altered")]
    Authentication,
}

impl EncryptedResource {
    pub fn decrypt(&self, key: &ApiV3Key) -> Result<Vec<u8>, DecryptError> {
        if self.algorithm != ALGORITHM {
            return Err(DecryptError::Algorithm(self.algorithm.clone()));
        }
        decrypt(key, &self.nonce, self.associated_data.as_deref().unwrap_or(""), &self.ciphertext)
    }
}

/// The plaintext of one resource; any alteration of nonce, AAD or ciphertext fails the tag check.
pub fn decrypt(key: &ApiV3Key, nonce: &str, associated_data: &str, ciphertext_b64: &str) -> Result<Vec<u8>, DecryptError> {
    if nonce.len() != NONCE_LEN {
        return Err(DecryptError::NonceLength(nonce.len()));
    }
    let ciphertext = BASE64.decode(ciphertext_b64).map_err(|_| DecryptError::Encoding)?;
    let cipher = Aes256Gcm::new(key.expose().into());
    cipher
        .decrypt(Nonce::from_slice(nonce.as_bytes()), Payload { msg: &ciphertext, aad: associated_data.as_bytes() })
        .map_err(|_| DecryptError::Authentication)
}
