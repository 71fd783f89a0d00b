//! The bytes WeChat Pay v3 signatures cover, and the `Authorization` header that carries ours.
//! Both directions sign lines, each ended by `\n`: a request covers method, path with query,
//! timestamp, nonce and body; a response or notification covers timestamp, nonce and body.

use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::credentials::MerchantKey;

/// The scheme of our `Authorization` header and the only `Wechatpay-Signature-Type` we accept.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
const NONCE_LEN: usize = 32;

/// `line\n` for every line, over raw bytes (bodies are signed exactly as sent).
fn message(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// What we sign for a request: `METHOD\nPATH_WITH_QUERY\nTIMESTAMP\nNONCE\nBODY\n` (body empty for GET).
pub fn request_message(method: &str, path_with_query: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    message(&[method.as_bytes(), path_with_query.as_bytes(), timestamp.to_string().as_bytes(), nonce.as_bytes(), body])
}

/// What WeChat Pay signs for a response or a notification: `TIMESTAMP\nNONCE\nBODY\n`, with the
/// timestamp exactly as its header carried it.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    message(&[timestamp.as_bytes(), nonce.as_bytes(), body])
}

/// The identity a request is signed with.
#[derive(Debug)]
pub struct RequestSigner<'a> {
    pub mchid: &'a str,
    /// The serial number of the merchant API certificate whose key signs.
    pub serial_no: &'a str,
    pub key: &'a MerchantKey,
}

impl RequestSigner<'_> {
    /// The full `Authorization` header value for one request. Pure: the caller picks the
    /// timestamp and nonce, so the bytes can be pinned in tests.
    pub fn authorization(&self, method: &str, path_with_query: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
        let signature = self.key.sign(&request_message(method, path_with_query, timestamp, nonce, body));
        format!(
            r#"{SCHEME} mchid="{}",nonce_str="{nonce}",signature="{signature}",timestamp="{timestamp}",serial_no="{}""#,
            self.mchid, self.serial_no
        )
    }
}

/// A fresh request nonce: 32 random ASCII letters and digits.
pub fn nonce() -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(NONCE_LEN).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_end_every_line_with_a_newline() {
        assert_eq!(request_message("GET", "/v3/x?mchid=1", 1554208460, "N", b""), b"GET\n/v3/x?mchid=1\n1554208460\nN\n\n");
        assert_eq!(response_message("1554208460", "N", b"{}"), b"1554208460\nN\n{}\n");
    }

    #[test]
    fn nonces_are_32_alphanumerics_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
