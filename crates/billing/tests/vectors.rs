//! Cross-checks against an independent implementation: `vectors/make_vectors.py` (Python's
//! `cryptography`) made the keys, signatures and ciphertext in `vectors/wechatpay_vectors.json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use twilight_billing::{
    decrypt, request_message, response_message, verify, ApiV3Key, DecryptError, Event, EventKind, MerchantKey, NotifyError,
    PaymentProcessor, RequestSigner, SignatureError, StaticPublicKey, TradeState, Transaction, WechatPayClient, WechatPayConfig,
};

#[derive(Deserialize)]
struct Vectors {
    mchid: String,
    appid: String,
    merchant: Merchant,
    platform: Platform,
    api_v3_key: String,
    requests: Vec<RequestVector>,
    notification: NotificationVector,
    resource: ResourceVector,
}

#[derive(Deserialize)]
struct Merchant {
    serial_no: String,
    private_key_pkcs8_pem: String,
    private_key_pkcs1_pem: String,
}

#[derive(Deserialize)]
struct Platform {
    public_key_id: String,
    private_key_pkcs8_pem: String,
    public_key_pem: String,
}

#[derive(Deserialize)]
struct RequestVector {
    method: String,
    path: String,
    timestamp: i64,
    nonce: String,
    body: String,
    message: String,
    signature: String,
}

#[derive(Deserialize)]
struct NotificationVector {
    headers: BTreeMap<String, String>,
    body: String,
    message: String,
}

#[derive(Deserialize)]
struct ResourceVector {
    nonce: String,
    associated_data: String,
    ciphertext: String,
    plaintext: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("vectors/wechatpay_vectors.json")).expect("the committed vectors parse")
}

impl Vectors {
    fn headers(&self) -> HeaderMap {
        self.notification
            .headers
            .iter()
            .map(|(name, value)| (HeaderName::try_from(name.as_str()).unwrap(), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    /// Shortly after Python signed.
    fn now(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.requests[0].timestamp + 10, 0).unwrap()
    }

    fn platform_keys(&self) -> StaticPublicKey {
        StaticPublicKey::from_pem(&self.platform.public_key_id, &self.platform.public_key_pem).unwrap()
    }

    fn api_v3_key(&self) -> ApiV3Key {
        ApiV3Key::new(self.api_v3_key.as_bytes()).unwrap()
    }

    fn client(&self) -> WechatPayClient {
        WechatPayClient::new(WechatPayConfig {
            mchid: self.mchid.clone(),
            appid: self.appid.clone(),
            merchant_serial: self.merchant.serial_no.clone(),
            merchant_key: MerchantKey::from_pem(&self.merchant.private_key_pkcs8_pem).unwrap(),
            api_v3_key: self.api_v3_key(),
            platform_keys: Arc::new(self.platform_keys()),
            notify_url: "https://example.com/wechatpay/notify".into(),
            base_url: twilight_billing::DEFAULT_BASE_URL.into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }
}

#[test]
fn our_signer_reproduces_pythons_request_signatures_byte_for_byte() {
    let v = vectors();
    for pem in [&v.merchant.private_key_pkcs8_pem, &v.merchant.private_key_pkcs1_pem] {
        let key = MerchantKey::from_pem(pem).unwrap();
        for r in &v.requests {
            let message = request_message(&r.method, &r.path, r.timestamp, &r.nonce, r.body.as_bytes());
            assert_eq!(String::from_utf8(message.clone()).unwrap(), r.message, "{} {}", r.method, r.path);
            assert_eq!(key.sign(&message), r.signature, "PKCS#1 v1.5 is deterministic: {} {}", r.method, r.path);

            let signer = RequestSigner { mchid: &v.mchid, serial_no: &v.merchant.serial_no, key: &key };
            assert_eq!(
                signer.authorization(&r.method, &r.path, r.timestamp, &r.nonce, r.body.as_bytes()),
                format!(
                    r#"WECHATPAY2-SHA256-RSA2048 mchid="{}",nonce_str="{}",signature="{}",timestamp="{}",serial_no="{}""#,
                    v.mchid, r.nonce, r.signature, r.timestamp, v.merchant.serial_no
                )
            );
        }
    }
}

#[test]
fn our_verifier_accepts_pythons_notification_signature() {
    let v = vectors();
    let headers = v.headers();
    let message = response_message(
        &v.notification.headers["Wechatpay-Timestamp"],
        &v.notification.headers["Wechatpay-Nonce"],
        v.notification.body.as_bytes(),
    );
    assert_eq!(String::from_utf8(message.clone()).unwrap(), v.notification.message);
    assert_eq!(verify(&v.platform_keys(), &headers, v.notification.body.as_bytes(), v.now()), Ok(()));

    // Signing the same message with Python's platform key gives Python's signature.
    let platform_as_signer = MerchantKey::from_pem(&v.platform.private_key_pkcs8_pem).unwrap();
    assert_eq!(platform_as_signer.sign(&message), v.notification.headers["Wechatpay-Signature"]);
}

#[test]
fn our_decryptor_recovers_pythons_plaintext() {
    let v = vectors();
    let r = &v.resource;
    let plaintext = decrypt(&v.api_v3_key(), &r.nonce, &r.associated_data, &r.ciphertext).unwrap();
    assert_eq!(String::from_utf8(plaintext).unwrap(), r.plaintext);
    let transaction: Transaction = serde_json::from_str(&r.plaintext).unwrap();
    assert_eq!(transaction.trade_state, TradeState::Success);
}

#[test]
fn pythons_notification_parses_end_to_end() {
    let v = vectors();
    let client = v.client();
    let notification = client.parse_notification(&v.headers(), v.notification.body.as_bytes(), v.now()).unwrap();
    assert_eq!(notification.event_type, "TRANSACTION.SUCCESS");
    let Event::TransactionSuccess(transaction) = &notification.event else { panic!("{notification:?}") };
    assert_eq!(transaction.out_trade_no, "TD20240501150000ab12");
    assert_eq!(transaction.transaction_id.as_deref(), Some("4200002216202405011234567890"));
    assert_eq!(transaction.payer.as_ref().map(|p| p.openid.as_str()), Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"));
    assert_eq!((transaction.amount.total, transaction.amount.payer_total), (19800, Some(19800)));

    let event = client.verify_notification(&v.headers(), v.notification.body.as_bytes(), v.now()).unwrap();
    assert_eq!(event.id, "EV-2018022511223320873");
    let EventKind::Paid(paid) = event.kind else { panic!("{:?}", event.kind) };
    assert_eq!(paid.paid_at, Utc.with_ymd_and_hms(2024, 5, 1, 6, 59, 58).unwrap());
    assert_eq!((paid.amount.amount, paid.amount.currency.as_str()), (19800, "CNY"));
}

#[test]
fn a_flipped_byte_fails() {
    let v = vectors();
    let keys = v.platform_keys();
    let mut body = v.notification.body.clone().into_bytes();
    body[10] ^= 0x01;
    assert_eq!(verify(&keys, &v.headers(), &body, v.now()), Err(SignatureError::BadSignature));

    let mut signature = BASE64.decode(&v.notification.headers["Wechatpay-Signature"]).unwrap();
    signature[100] ^= 0x80;
    let mut headers = v.headers();
    headers.insert("wechatpay-signature", BASE64.encode(signature).parse().unwrap());
    assert_eq!(verify(&keys, &headers, v.notification.body.as_bytes(), v.now()), Err(SignatureError::BadSignature));

    let r = &v.resource;
    let mut ciphertext = BASE64.decode(&r.ciphertext).unwrap();
    for at in [0, ciphertext.len() - 1] {
        ciphertext[at] ^= 0x01;
        assert_eq!(
            decrypt(&v.api_v3_key(), &r.nonce, &r.associated_data, &BASE64.encode(&ciphertext)),
            Err(DecryptError::Authentication),
            "byte {at}"
        );
        ciphertext[at] ^= 0x01;
    }
    assert_eq!(decrypt(&v.api_v3_key(), &r.nonce, "refund", &r.ciphertext), Err(DecryptError::Authentication), "other AAD");
    let other_key = ApiV3Key::new(&[b'k'; 32]).unwrap();
    assert_eq!(decrypt(&other_key, &r.nonce, &r.associated_data, &r.ciphertext), Err(DecryptError::Authentication), "other key");

    let client = v.client();
    let tampered = v.notification.body.replacen("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESs", 1);
    assert_eq!(
        client.parse_notification(&v.headers(), tampered.as_bytes(), v.now()),
        Err(NotifyError::Signature(SignatureError::BadSignature))
    );
}

#[test]
fn keys_load_from_files_and_never_show_in_debug() {
    let v = vectors();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, api_v3_file) = (dir.path().join("apiclient_key.pem"), dir.path().join("apiv3.key"));
    std::fs::write(&key_file, &v.merchant.private_key_pkcs8_pem).unwrap();
    std::fs::write(&api_v3_file, format!("{}\n", v.api_v3_key)).unwrap();
    let key = MerchantKey::from_pem_file(&key_file).unwrap();
    let r = &v.requests[0];
    assert_eq!(key.sign(&request_message(&r.method, &r.path, r.timestamp, &r.nonce, r.body.as_bytes())), r.signature);
    let api_v3_key = ApiV3Key::from_file(&api_v3_file).unwrap();
    let plaintext = decrypt(&api_v3_key, &v.resource.nonce, &v.resource.associated_data, &v.resource.ciphertext).unwrap();
    assert_eq!(plaintext, v.resource.plaintext.as_bytes());

    let shown = format!("{key:?} {api_v3_key:?} {:?}", v.client());
    let pem_body = v.merchant.private_key_pkcs8_pem.lines().nth(1).unwrap();
    assert!(!shown.contains(pem_body) && !shown.contains(&v.api_v3_key), "{shown}");
    assert!(shown.contains("[redacted]") && shown.contains(&v.mchid), "{shown}");
}
