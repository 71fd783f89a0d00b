//! The WeChat Pay simulator driven over real HTTP. Requests are signed, and answers and
//! notifications verified and decrypted, by code written here against `rsa` and `aes-gcm`
//! directly, independent of both the simulator's own crypto and the product's client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::Utc;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::Sha256;
use twilight_sandbox::wechatpay::Delivery;
use twilight_sandbox::{serve, NotifyFault, PayError, RecordingWebhook, SandboxKeys, WechatPaySim};

const MCHID: &str = "1900000109";
const APPID: &str = "wxd678efh567hg6787";
const WAIT: Duration = Duration::from_secs(10);

fn keys() -> &'static SandboxKeys {
    SandboxKeys::shared()
}

struct Harness {
    sim: WechatPaySim,
    url: String,
    http: reqwest::Client,
    webhook: RecordingWebhook,
}

impl Harness {
    /// A simulator with retries scaled to milliseconds and a webhook answering with `answer`.
    async fn start(answer: impl Fn(&Delivery) -> StatusCode + Send + Sync + 'static) -> Harness {
        let sim = WechatPaySim::new(keys().sim_config(MCHID, APPID));
        sim.set_retry_scale(0.001);
        let (addr, _task) = serve(sim.router(), 0).await.unwrap();
        let webhook = RecordingWebhook::start(answer).await.unwrap();
        Harness { sim, url: format!("http://{addr}"), http: reqwest::Client::new(), webhook }
    }

    async fn accepting() -> Harness {
        Self::start(|_| StatusCode::NO_CONTENT).await
    }

    /// A request signed with `key` as the merchant; the answer's status, headers and JSON body.
    async fn call_signed_by(&self, key: &RsaPrivateKey, method: &str, path: &str, body: Option<Value>) -> (StatusCode, HeaderMap, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .header("authorization", authorization(key, method, path, &body))
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(body);
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.bytes().await.unwrap();
        assert!(verifies(&headers, &bytes), "every /v3 answer is signed by the platform key ({status})");
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, body) = self.call_signed_by(&keys().merchant_key, method, path, body).await;
        (status, body)
    }

    fn order(&self, no: &str, total: i64) -> Value {
        json!({
            "appid": APPID, "mchid": MCHID, "description": "Twilight Drive 月度订阅", "out_trade_no": no,
            "notify_url": self.webhook.url(), "amount": {"total": total, "currency": "CNY"},
        })
    }

    async fn create(&self, no: &str) -> String {
        let (status, body) = self.call("POST", "/v3/pay/transactions/native", Some(self.order(no, 19800))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["code_url"].as_str().unwrap().to_string()
    }

    async fn query(&self, no: &str) -> (StatusCode, Value) {
        self.call("GET", &format!("/v3/pay/transactions/out-trade-no/{no}?mchid={MCHID}"), None).await
    }

    async fn refund(&self, no: &str, refund_no: &str, refund: i64) -> (StatusCode, Value) {
        let body = json!({"out_trade_no": no, "out_refund_no": refund_no, "amount": {"refund": refund, "total": 19800, "currency": "CNY"}});
        self.call("POST", "/v3/refund/domestic/refunds", Some(body)).await
    }
}

/// `WECHATPAY2-SHA256-RSA2048 …` over `METHOD\nPATH\nTIMESTAMP\nNONCE\nBODY\n`.
fn authorization(key: &RsaPrivateKey, method: &str, path: &str, body: &str) -> String {
    let (timestamp, nonce) = (Utc::now().timestamp(), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS");
    let message = format!("{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n");
    let signature = BASE64.encode(SigningKey::<Sha256>::new(key.clone()).sign(message.as_bytes()).to_bytes());
    format!(
        r#"WECHATPAY2-SHA256-RSA2048 mchid="{MCHID}",nonce_str="{nonce}",signature="{signature}",timestamp="{timestamp}",serial_no="{}""#,
        keys().merchant_serial
    )
}

/// Whether `body` is signed by the platform key: `TIMESTAMP\nNONCE\nBODY\n` under the serial we expect.
fn verifies(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if header("wechatpay-serial") != keys().platform_key_id {
        return false;
    }
    let mut message = format!("{}\n{}\n", header("wechatpay-timestamp"), header("wechatpay-nonce")).into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    let Some(signature) = BASE64.decode(header("wechatpay-signature")).ok().and_then(|s| Signature::try_from(s.as_slice()).ok()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(keys().platform_key.to_public_key()).verify(&message, &signature).is_ok()
}

/// A notification's verified envelope and its decrypted resource.
fn open(delivery: &Delivery) -> (Value, Value) {
    assert!(verifies(&delivery.headers, &delivery.body), "notification signature");
    assert_eq!(delivery.headers["wechatpay-signature-type"], "WECHATPAY2-SHA256-RSA2048");
    let envelope: Value = serde_json::from_slice(&delivery.body).unwrap();
    let resource = &envelope["resource"];
    assert_eq!(resource["algorithm"], "AEAD_AES_256_GCM");
    let nonce = resource["nonce"].as_str().unwrap();
    assert_eq!(nonce.len(), 12);
    let ciphertext = BASE64.decode(resource["ciphertext"].as_str().unwrap()).unwrap();
    let aad = resource["associated_data"].as_str().unwrap();
    let plaintext = Aes256Gcm::new(&keys().api_v3_key.into())
        .decrypt(Nonce::from_slice(nonce.as_bytes()), Payload { msg: &ciphertext, aad: aad.as_bytes() })
        .expect("the resource decrypts with the APIv3 key");
    (envelope.clone(), serde_json::from_slice(&plaintext).unwrap())
}

fn statuses(sim: &WechatPaySim) -> Vec<Result<u16, String>> {
    sim.notify_attempts().into_iter().map(|a| a.outcome).collect()
}

#[tokio::test]
async fn a_wrongly_signed_request_is_refused_with_sign_error() {
    let h = Harness::accepting().await;
    let order = h.order("TD0001", 19800);
    let (status, headers, body) = h.call_signed_by(&keys().platform_key, "POST", "/v3/pay/transactions/native", Some(order.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "SIGN_ERROR", "{body}");
    assert_eq!(headers["x-twilight-sandbox"], "wechatpay");

    // Signed over one body, sent with another.
    let response = h
        .http
        .post(format!("{}/v3/pay/transactions/native", h.url))
        .header("authorization", authorization(&keys().merchant_key, "POST", "/v3/pay/transactions/native", &order.to_string()))
        .header("content-type", "application/json")
        .body(h.order("TD0001", 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let unsigned = h.http.get(format!("{}/v3/pay/transactions/out-trade-no/TD0001?mchid={MCHID}", h.url)).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unsigned.json::<Value>().await.unwrap()["code"], "SIGN_ERROR");

    assert_eq!(h.sim.calls("POST /v3/pay/transactions/native"), 2, "refused calls count too");
    assert_eq!(h.query("TD0001").await.0, StatusCode::NOT_FOUND, "nothing was placed");
}

#[tokio::test]
async fn orders_are_idempotent_per_body_and_queryable() {
    let h = Harness::accepting().await;
    let code_url = h.create("TD0002").await;
    assert!(code_url.starts_with("weixin://wxpay/bizpayurl?pr="), "{code_url}");
    assert_eq!(h.create("TD0002").await, code_url, "same body, same code_url");

    let (status, body) = h.call("POST", "/v3/pay/transactions/native", Some(h.order("TD0002", 100))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("OUT_TRADE_NO_USED")));

    let (status, body) = h.query("TD0002").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["trade_state"], "NOTPAY");
    assert_eq!((body["appid"].as_str(), body["mchid"].as_str()), (Some(APPID), Some(MCHID)));
    assert_eq!(body["amount"]["total"], 19800);
    assert!(body.get("transaction_id").is_none() && body.get("payer").is_none(), "{body}");

    let (status, body) = h.query("TD0404").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("ORDER_NOT_EXIST")));

    for (no, total, notify_url) in
        [("bad no", 19800, h.webhook.url()), ("TD0003", 0, h.webhook.url()), ("TD0003", 19800, "http://example.com/notify")]
    {
        let mut order = h.order(no, total);
        order["notify_url"] = json!(notify_url);
        let (status, body) = h.call("POST", "/v3/pay/transactions/native", Some(order)).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PARAM_ERROR")), "{no} {total} {notify_url}: {body}");
    }
    let mut foreign = h.order("TD0003", 19800);
    foreign["appid"] = json!("wx0000000000000000");
    assert_eq!(h.call("POST", "/v3/pay/transactions/native", Some(foreign)).await.1["code"], "APPID_MCHID_NOT_MATCH");

    assert_eq!(h.sim.calls("POST /v3/pay/transactions/native"), 7);
    assert_eq!(h.sim.calls("GET /v3/pay/transactions/out-trade-no/{out_trade_no}"), 2);
    let counters: Value = h.http.get(format!("{}/_sandbox/calls", h.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(counters["POST /v3/pay/transactions/native"], 7);
}

#[tokio::test]
async fn a_payment_notification_verifies_and_decrypts_independently() {
    let h = Harness::accepting().await;
    h.create("TD0010").await;
    let transaction_id = h.sim.pay("TD0010", Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")).await.unwrap();
    let attempts = h.sim.wait_for_attempts(1, WAIT).await;
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].accepted() && !attempts[0].probe);
    assert_eq!((attempts[0].event_type.as_str(), attempts[0].out_trade_no.as_str()), ("TRANSACTION.SUCCESS", "TD0010"));

    let received = h.webhook.received();
    assert_eq!(received.len(), 1);
    let (envelope, transaction) = open(&received[0]);
    assert_eq!(envelope["id"], attempts[0].notify_id.as_str());
    assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(envelope["resource_type"], "encrypt-resource");
    assert_eq!(envelope["resource"]["original_type"], "transaction");
    assert_eq!(envelope["resource"]["associated_data"], "transaction");
    assert_eq!(transaction["trade_state"], "SUCCESS");
    assert_eq!(transaction["transaction_id"], transaction_id.as_str());
    assert_eq!(transaction["out_trade_no"], "TD0010");
    assert_eq!(transaction["payer"]["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert_eq!((transaction["amount"]["total"].as_i64(), transaction["amount"]["payer_total"].as_i64()), (Some(19800), Some(19800)));
    assert!(transaction["success_time"].as_str().unwrap().ends_with("+08:00"), "{transaction}");

    let (_, queried) = h.query("TD0010").await;
    assert_eq!(queried, transaction, "the query answer is the notification's resource");
    assert_eq!(h.sim.pay("TD0010", None).await, Err(PayError::AlreadyPaid("TD0010".into())));
    let (status, body) = h.call("POST", "/v3/pay/transactions/out-trade-no/TD0010/close", Some(json!({"mchid": MCHID}))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("ORDERPAID")));
    let (status, body) = h.call("POST", "/v3/pay/transactions/native", Some(h.order("TD0010", 19800))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("ORDERPAID")));
}

#[tokio::test]
async fn deliveries_are_retried_until_a_2xx() {
    let answered = Arc::new(AtomicUsize::new(0));
    let script = [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK];
    let counter = answered.clone();
    let h = Harness::start(move |_| script[counter.fetch_add(1, Ordering::SeqCst).min(2)]).await;
    h.create("TD0020").await;
    h.sim.pay("TD0020", None).await.unwrap();
    h.sim.wait_for_attempts(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(statuses(&h.sim), [Ok(500), Ok(503), Ok(200)], "stops at the first 2xx");
    assert_eq!(h.sim.notify_attempts().iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    let bodies: Vec<_> = h.webhook.received().into_iter().map(|d| d.body).collect();
    assert!(bodies.len() == 3 && bodies.iter().all(|b| *b == bodies[0]), "a retry resends the same notification");
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried_with_the_error_recorded() {
    let h = Harness::accepting().await;
    let mut order = h.order("TD0021", 19800);
    // Nothing listens on the discard port of the loopback interface.
    order["notify_url"] = json!("http://127.0.0.1:9/notify");
    assert_eq!(h.call("POST", "/v3/pay/transactions/native", Some(order)).await.0, StatusCode::OK);
    h.sim.pay("TD0021", None).await.unwrap();
    let attempts = h.sim.wait_for_attempts(2, WAIT).await;
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.outcome.is_err() && !a.accepted()), "{attempts:?}");
}

#[tokio::test]
async fn never_deliver_sends_nothing_but_the_query_knows() {
    let h = Harness::accepting().await;
    h.sim.set_fault(NotifyFault::NeverDeliver);
    h.create("TD0030").await;
    h.sim.pay("TD0030", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.webhook.received().is_empty());
    assert!(h.sim.notify_attempts().is_empty());
    assert_eq!(h.query("TD0030").await.1["trade_state"], "SUCCESS");
}

#[tokio::test]
async fn duplicate_delivery_arrives_n_times() {
    let h = Harness::accepting().await;
    h.sim.set_fault(NotifyFault::DuplicateDelivery(3));
    h.create("TD0040").await;
    h.sim.pay("TD0040", None).await.unwrap();
    h.sim.wait_for_attempts(3, WAIT).await;
    let received = h.webhook.received();
    assert_eq!(received.len(), 3);
    let ids: Vec<Value> = received.iter().map(|d| open(d).0["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[tokio::test]
async fn a_signing_probe_precedes_the_genuine_notification() {
    let probe = |d: &Delivery| d.headers["wechatpay-signature"].to_str().unwrap().starts_with("WECHATPAY/SIGNTEST/");
    let h = Harness::start(move |d| if probe(d) { StatusCode::BAD_REQUEST } else { StatusCode::NO_CONTENT }).await;
    h.sim.set_fault(NotifyFault::SignTestProbe);
    h.create("TD0050").await;
    h.sim.pay("TD0050", None).await.unwrap();
    let attempts = h.sim.wait_for_attempts(2, WAIT).await;
    assert_eq!(attempts.iter().map(|a| (a.probe, a.outcome.clone())).collect::<Vec<_>>(), [(true, Ok(400)), (false, Ok(204))]);
    let received = h.webhook.received();
    assert!(probe(&received[0]) && !verifies(&received[0].headers, &received[0].body), "the probe never verifies");
    assert_eq!(open(&received[1]).1["trade_state"], "SUCCESS");
}

#[tokio::test]
async fn out_of_order_delivers_a_refund_before_its_payment() {
    let h = Harness::accepting().await;
    h.sim.set_fault(NotifyFault::OutOfOrder);
    h.create("TD0060").await;
    h.sim.pay("TD0060", None).await.unwrap();
    assert_eq!(h.refund("TD0060", "RF0060", 19800).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.webhook.received().is_empty(), "held until released");

    h.sim.release_held();
    h.sim.wait_for_attempts(2, WAIT).await;
    let events: Vec<Value> = h.webhook.received().iter().map(|d| open(d).0["event_type"].clone()).collect();
    assert_eq!(events, ["REFUND.SUCCESS", "TRANSACTION.SUCCESS"]);
}

#[tokio::test]
async fn delayed_delivery_waits_first() {
    let h = Harness::accepting().await;
    h.sim.set_fault(NotifyFault::Delayed(Duration::from_millis(600)));
    h.create("TD0070").await;
    h.sim.pay("TD0070", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.webhook.received().is_empty());
    assert_eq!(h.sim.wait_for_attempts(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn close_and_refund_follow_the_protocol() {
    let h = Harness::accepting().await;
    h.create("TD0080").await;
    let close = |no: &str| format!("/v3/pay/transactions/out-trade-no/{no}/close");
    let (status, _) = h.call("POST", &close("TD0080"), Some(json!({"mchid": MCHID}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.call("POST", &close("TD0080"), Some(json!({"mchid": MCHID}))).await.0, StatusCode::NO_CONTENT, "closing twice is fine");
    assert_eq!(h.query("TD0080").await.1["trade_state"], "CLOSED");
    assert_eq!(h.sim.pay("TD0080", None).await, Err(PayError::Closed("TD0080".into())));
    assert_eq!(h.call("POST", "/v3/pay/transactions/native", Some(h.order("TD0080", 19800))).await.1["code"], "ORDER_CLOSED");
    assert_eq!(h.call("POST", &close("TD0404"), Some(json!({"mchid": MCHID}))).await.0, StatusCode::NOT_FOUND);

    h.create("TD0081").await;
    assert_eq!(h.refund("TD0081", "RF0081", 5000).await.1["code"], "INVALID_REQUEST", "an unpaid order has nothing to refund");
    h.sim.pay("TD0081", None).await.unwrap();
    h.sim.wait_for_attempts(1, WAIT).await;

    let (status, refund) = h.refund("TD0081", "RF0081", 5000).await;
    assert_eq!(status, StatusCode::OK, "{refund}");
    assert_eq!((refund["status"].as_str(), refund["amount"]["refund"].as_i64()), (Some("PROCESSING"), Some(5000)));
    let attempts = h.sim.wait_for_attempts(2, WAIT).await;
    assert_eq!(attempts[1].event_type, "REFUND.SUCCESS");
    let (envelope, resource) = open(&h.webhook.received()[1]);
    assert_eq!(
        (envelope["resource"]["associated_data"].as_str(), envelope["resource"]["original_type"].as_str()),
        (Some("refund"), Some("refund"))
    );
    assert_eq!((resource["refund_status"].as_str(), resource["refund_id"].as_str()), (Some("SUCCESS"), refund["refund_id"].as_str()));
    assert_eq!((resource["mchid"].as_str(), resource["amount"]["refund"].as_i64()), (Some(MCHID), Some(5000)));
    assert_eq!(h.query("TD0081").await.1["trade_state"], "REFUND");

    let (_, again) = h.refund("TD0081", "RF0081", 5000).await;
    assert_eq!(
        (again["refund_id"].clone(), again["status"].as_str()),
        (refund["refund_id"].clone(), Some("SUCCESS")),
        "a repeat is the same refund"
    );
    assert_eq!(h.refund("TD0081", "RF0081", 4000).await.1["code"], "INVALID_REQUEST", "same refund number, different amount");
    assert_eq!(h.refund("TD0081", "RF0082", 14801).await.1["code"], "INVALID_REQUEST", "more than is left");
    assert_eq!(h.refund("TD0081", "RF0082", 14800).await.0, StatusCode::OK, "the rest");
}

#[tokio::test]
async fn the_pay_page_is_labelled_sandbox_and_pays() {
    let h = Harness::accepting().await;
    h.create("TD0090").await;
    let page = h.http.get(format!("{}/sandbox/pay/TD0090", h.url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-twilight-sandbox"], "wechatpay");
    let html = page.text().await.unwrap();
    assert!(html.contains("SANDBOX — no real money") && html.contains("¥198.00") && html.contains("NOTPAY"), "{html}");

    let paid =
        h.http.post(format!("{}/sandbox/pay/TD0090", h.url)).form(&[("openid", "oPAGE000000000000000000000000")]).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    assert!(paid.text().await.unwrap().contains("Paid"));
    assert_eq!(h.query("TD0090").await.1["payer"]["openid"], "oPAGE000000000000000000000000");
    assert_eq!(h.sim.wait_for_attempts(1, WAIT).await.len(), 1);

    let again = h.http.post(format!("{}/sandbox/pay/TD0090", h.url)).form(&[("openid", "")]).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(h.http.get(format!("{}/sandbox/pay/TD0404", h.url)).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}
