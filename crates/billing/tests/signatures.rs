//! Signing and verification round trips with RSA-2048 keys generated here, and every way a
//! signature must be refused.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::header::HeaderMap;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::RsaPrivateKey;
use sha2::Sha256;
use twilight_billing::{
    request_message, response_message, verify, KeyError, KeyRing, MerchantKey, RequestSigner, SignatureError, StaticPublicKey,
    MAX_SKEW_SECS,
};

const KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
const BODY: &[u8] = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#;

/// Generated once per test binary: RSA-2048 generation takes seconds in a debug build.
fn key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap())
}

fn signed_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 4, 0, 0).unwrap()
}

/// Headers as WeChat Pay would send with `body`, signed by [`key`] at [`signed_at`].
fn signed_headers(body: &[u8]) -> HeaderMap {
    let (timestamp, nonce) = (signed_at().timestamp().to_string(), "c5ac7061fccab6bf3e254dcf98995b8c");
    let signature = MerchantKey::from_key(key().clone()).unwrap().sign(&response_message(&timestamp, nonce, body));
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("wechatpay-timestamp", timestamp.as_str()),
        ("wechatpay-nonce", nonce),
        ("wechatpay-signature", &signature),
        ("wechatpay-serial", KEY_ID),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    headers
}

fn trusted() -> StaticPublicKey {
    StaticPublicKey::new(KEY_ID, key().to_public_key()).unwrap()
}

#[test]
fn a_signed_body_verifies_within_five_minutes_either_way() {
    let headers = signed_headers(BODY);
    for skew in [0, MAX_SKEW_SECS, -MAX_SKEW_SECS] {
        assert_eq!(verify(&trusted(), &headers, BODY, signed_at() + Duration::seconds(skew)), Ok(()), "skew {skew}");
    }
    let mut typed = headers.clone();
    typed.insert("wechatpay-signature-type", "WECHATPAY2-SHA256-RSA2048".parse().unwrap());
    assert_eq!(verify(&trusted(), &typed, BODY, signed_at()), Ok(()));
}

#[test]
fn tampering_with_body_timestamp_or_nonce_fails() {
    let headers = signed_headers(BODY);
    let mut body = BODY.to_vec();
    body[3] = b'C';
    assert_eq!(verify(&trusted(), &headers, &body, signed_at()), Err(SignatureError::BadSignature));
    assert_eq!(verify(&trusted(), &headers, b"", signed_at()), Err(SignatureError::BadSignature));

    let mut later = headers.clone();
    later.insert("wechatpay-timestamp", (signed_at().timestamp() + 1).to_string().parse().unwrap());
    assert_eq!(verify(&trusted(), &later, BODY, signed_at()), Err(SignatureError::BadSignature));

    let mut renonced = headers.clone();
    renonced.insert("wechatpay-nonce", "c5ac7061fccab6bf3e254dcf98995b8d".parse().unwrap());
    assert_eq!(verify(&trusted(), &renonced, BODY, signed_at()), Err(SignatureError::BadSignature));
}

#[test]
fn a_stale_timestamp_fails_in_both_directions() {
    let headers = signed_headers(BODY);
    let at = signed_at().timestamp();
    for now in [signed_at() + Duration::seconds(MAX_SKEW_SECS + 1), signed_at() - Duration::seconds(MAX_SKEW_SECS + 1)] {
        assert_eq!(verify(&trusted(), &headers, BODY, now), Err(SignatureError::Stale { timestamp: at, now: now.timestamp() }));
    }
    // Exactly at the edge is still fresh, and absurd timestamps are stale rather than an overflow.
    assert_eq!(verify(&trusted(), &headers, BODY, signed_at() + Duration::seconds(MAX_SKEW_SECS)), Ok(()));
    for absurd in [i64::MIN, i64::MAX] {
        let mut hostile = headers.clone();
        hostile.insert("wechatpay-timestamp", absurd.to_string().parse().unwrap());
        assert!(matches!(verify(&trusted(), &hostile, BODY, signed_at()), Err(SignatureError::Stale { .. })));
    }
}

#[test]
fn a_signing_probe_fails_with_its_own_error() {
    let mut headers = signed_headers(BODY);
    headers.insert("wechatpay-signature", "WECHATPAY/SIGNTEST/dGVzdA==".parse().unwrap());
    assert_eq!(verify(&trusted(), &headers, BODY, signed_at()), Err(SignatureError::Probe));
}

#[test]
fn unknown_serials_encodings_types_and_missing_headers_fail() {
    let headers = signed_headers(BODY);
    let mut other_serial = headers.clone();
    other_serial.insert("wechatpay-serial", "PUB_KEY_ID_0999".parse().unwrap());
    assert_eq!(verify(&trusted(), &other_serial, BODY, signed_at()), Err(SignatureError::UnknownSerial("PUB_KEY_ID_0999".into())));

    let mut not_base64 = headers.clone();
    not_base64.insert("wechatpay-signature", "not*base64".parse().unwrap());
    assert_eq!(verify(&trusted(), &not_base64, BODY, signed_at()), Err(SignatureError::BadEncoding));

    let mut sm2 = headers.clone();
    sm2.insert("wechatpay-signature-type", "WECHATPAY2-SM2-WITH-SM3".parse().unwrap());
    assert_eq!(verify(&trusted(), &sm2, BODY, signed_at()), Err(SignatureError::UnsupportedType("WECHATPAY2-SM2-WITH-SM3".into())));

    for name in ["wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial"] {
        let mut missing = headers.clone();
        missing.remove(name);
        assert_eq!(verify(&trusted(), &missing, BODY, signed_at()), Err(SignatureError::MissingHeader(name)));
    }
}

#[test]
fn a_key_ring_verifies_by_serial() {
    let headers = signed_headers(BODY);
    let ring = KeyRing::new().with("5157F09EFDC096DE15EBE81A47057A7232F1B8E1", key().to_public_key()).unwrap();
    assert_eq!(verify(&ring, &headers, BODY, signed_at()), Err(SignatureError::UnknownSerial(KEY_ID.into())));
    let ring = ring.with(KEY_ID, key().to_public_key()).unwrap();
    assert_eq!(verify(&ring, &headers, BODY, signed_at()), Ok(()));
}

#[test]
fn the_authorization_header_carries_a_signature_over_the_request() {
    let merchant = MerchantKey::from_key(key().clone()).unwrap();
    let signer = RequestSigner { mchid: "1900000109", serial_no: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", key: &merchant };
    let body = br#"{"mchid":"1900000109"}"#;
    let header = signer.authorization(
        "POST",
        "/v3/pay/transactions/out-trade-no/TD0001/close",
        1554208460,
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        body,
    );
    let fields = header.strip_prefix("WECHATPAY2-SHA256-RSA2048 ").expect("the scheme comes first");
    let field =
        |name: &str| fields.split(',').find_map(|kv| kv.strip_prefix(&format!("{name}=\""))?.strip_suffix('"')).unwrap().to_string();
    assert_eq!((field("mchid"), field("timestamp")), ("1900000109".into(), "1554208460".into()));
    assert_eq!(field("serial_no"), "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
    assert_eq!(field("nonce_str"), "593BEC0C930BF1AFEB40B4A08C8FB242");

    // Checked with `rsa` directly, not with our verifier.
    let signature = Signature::try_from(BASE64.decode(field("signature")).unwrap().as_slice()).unwrap();
    let message =
        request_message("POST", "/v3/pay/transactions/out-trade-no/TD0001/close", 1554208460, "593BEC0C930BF1AFEB40B4A08C8FB242", body);
    assert!(VerifyingKey::<Sha256>::new(key().to_public_key()).verify(&message, &signature).is_ok());
    assert!(VerifyingKey::<Sha256>::new(key().to_public_key()).verify(&message[1..], &signature).is_err());
}

#[test]
fn keys_of_the_wrong_size_or_id_are_refused() {
    let small = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    assert!(matches!(MerchantKey::from_key(small.clone()), Err(KeyError::Size { bits: 1024, .. })));
    assert!(matches!(StaticPublicKey::new(KEY_ID, small.to_public_key()), Err(KeyError::Size { bits: 1024, .. })));
    assert!(matches!(
        StaticPublicKey::new("5157F09EFDC096DE15EBE81A47057A7232F1B8E1", key().to_public_key()),
        Err(KeyError::PublicKeyId(_))
    ));
}
