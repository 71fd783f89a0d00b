//! Bearer tokens: 32 random bytes, url-safe base64 (like Python's `secrets.token_urlsafe(32)`).
//! Only the sha256 hex of a token is ever stored; the raw token lives in zeroized memory until handed over.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A raw token. Its `Debug` never shows the value, so it cannot leak through a log line or a panic.
pub struct RawToken(Zeroizing<String>);

impl RawToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> RawToken {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        RawToken(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())))
    }

    /// The secret itself: call only where it must leave memory (a one-time response, a secret store).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The sha256 hex that identifies this token at rest.
    pub fn hash(&self) -> String {
        hash_hex(&self.0)
    }
}

impl std::fmt::Debug for RawToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawToken([redacted])")
    }
}

/// sha256 of a presented token.
pub fn digest(raw: &str) -> [u8; 32] {
    Sha256::digest(raw.as_bytes()).into()
}

pub fn hash_hex(raw: &str) -> String {
    hex::encode(digest(raw))
}

/// Whether a stored hex hash belongs to `digest`, compared in constant time.
pub fn matches(stored_hex: &str, digest: &[u8; 32]) -> bool {
    let mut stored = [0u8; 32];
    hex::decode_to_slice(stored_hex, &mut stored).is_ok() && bool::from(stored.ct_eq(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_chars_and_unique() {
        let a = RawToken::generate();
        let b = RawToken::generate();
        assert_eq!(a.expose().len(), 43);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn hash_is_sha256_hex_and_matches_in_constant_time() {
        // sha256("abc"), a published test vector.
        assert_eq!(hash_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(matches(&hash_hex("abc"), &digest("abc")));
        assert!(!matches(&hash_hex("abd"), &digest("abc")));
        assert!(!matches("not hex", &digest("abc")));
    }
}
