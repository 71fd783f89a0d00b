//! The merchant's own secrets: the API private key that signs every request, and the APIv3 key that
//! decrypts notification resources. Both are loaded from a file or a string, held in memory that is
//! wiped on drop, and never shown by `Debug` or in an error message.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Every key in WeChat Pay v3 (`WECHATPAY2-SHA256-RSA2048`) is RSA-2048.
const KEY_BITS: usize = 2048;
const API_V3_KEY_LEN: usize = 32;

/// Why a key could not be loaded. Messages name the file and the problem, never the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {what} from {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("{what} is not a PEM RSA key ({expected})")]
    Pem { what: &'static str, expected: &'static str },
    #[error("{what} has {bits} bits; WeChat Pay v3 uses RSA-2048")]
    Size { what: &'static str, bits: usize },
    #[error("the APIv3 key must be exactly 32 bytes, got {0}")]
    ApiV3KeyLength(usize),
    #[error("a WeChat Pay public key id starts with PUB_KEY_ID_, got {0:?}")]
    PublicKeyId(String),
}

/// The merchant API private key (`apiclient_key.pem`). Signing with it is what proves a request
/// comes from us; it is wiped from memory when dropped.
pub struct MerchantKey {
    signing: SigningKey<Sha256>,
    public: RsaPublicKey,
}

impl MerchantKey {
    const WHAT: &'static str = "merchant private key";

    /// From PEM text: PKCS#8 (`BEGIN PRIVATE KEY`, what the merchant platform hands out) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| KeyError::Pem { what: Self::WHAT, expected: "PKCS#8 BEGIN PRIVATE KEY or PKCS#1 BEGIN RSA PRIVATE KEY" })?;
        Self::from_key(key)
    }

    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read_secret(Self::WHAT, path)?)
    }

    pub fn from_key(key: RsaPrivateKey) -> Result<Self, KeyError> {
        let public = key.to_public_key();
        check_size(Self::WHAT, &public)?;
        Ok(MerchantKey { signing: SigningKey::new(key), public })
    }

    /// What WeChat Pay verifies our requests with (and what a simulator needs).
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// base64(RSA-SHA256 PKCS#1 v1.5 signature of `message`). Deterministic: the same key and
    /// message always give the same signature.
    pub fn sign(&self, message: &[u8]) -> String {
        BASE64.encode(self.signing.sign(message).to_bytes())
    }
}

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MerchantKey([redacted])")
    }
}

/// The 32-byte APIv3 key set on the merchant platform; the AES-256-GCM key of every encrypted
/// resource WeChat Pay sends.
pub struct ApiV3Key(SecretBox<[u8; API_V3_KEY_LEN]>);

impl ApiV3Key {
    /// `key` as given (the platform shows it as 32 ASCII characters).
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; API_V3_KEY_LEN] = key.try_into().map_err(|_| KeyError::ApiV3KeyLength(key.len()))?;
        Ok(ApiV3Key(SecretBox::new(Box::new(bytes))))
    }

    /// The key from a file, ignoring surrounding whitespace (a trailing newline, typically).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::new(read_secret("APIv3 key", path)?.trim().as_bytes())
    }

    pub(crate) fn expose(&self) -> &[u8; API_V3_KEY_LEN] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key([redacted])")
    }
}

/// A WeChat Pay (platform) public key from PEM: SPKI (`BEGIN PUBLIC KEY`, as the merchant platform
/// downloads it) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, KeyError> {
    const WHAT: &str = "WeChat Pay public key";
    let key = RsaPublicKey::from_public_key_pem(pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
        .map_err(|_| KeyError::Pem { what: WHAT, expected: "BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY" })?;
    check_size(WHAT, &key)?;
    Ok(key)
}

pub(crate) fn check_size(what: &'static str, key: &RsaPublicKey) -> Result<(), KeyError> {
    match key.n().bits() {
        KEY_BITS => Ok(()),
        bits => Err(KeyError::Size { what, bits }),
    }
}

/// A secret file's text, wiped when dropped.
fn read_secret(what: &'static str, path: &Path) -> Result<Zeroizing<String>, KeyError> {
    std::fs::read_to_string(path).map(Zeroizing::new).map_err(|source| KeyError::Read { what, path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_v3_key_must_be_32_bytes_and_debug_hides_it() {
        assert!(matches!(ApiV3Key::new(b"short"), Err(KeyError::ApiV3KeyLength(5))));
        let key = ApiV3Key::new(b"0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{key:?}"), "ApiV3Key([redacted])");
    }

    #[test]
    fn a_bad_pem_error_shows_no_key_text() {
        let pem = "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBC\n-----END PRIVATE KEY-----\n";
        let message = MerchantKey::from_pem(pem).unwrap_err().to_string();
        assert!(message.contains("merchant private key"), "{message}");
        assert!(!message.contains("TUlJ"), "{message}");
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let message = ApiV3Key::from_file(Path::new("/nonexistent/apiv3.key")).unwrap_err().to_string();
        assert!(message.contains("APIv3 key") && message.contains("/nonexistent/apiv3.key"), "{message}");
    }
}
