//! The merchant client against the WeChat Pay simulator over real HTTP: orders, queries, closes and
//! refunds, notifications through a webhook that verifies with our parser, and answers refused
//! when they are not signed by the key we trust.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use twilight_billing::{
    ApiV3Key, ErrorCode, Event, EventKind, MerchantKey, NotifyError, Order, PaymentError, PaymentProcessor, PaymentStatus, RefundRequest,
    RefundStatus, SignatureError, StaticPublicKey, TradeState, WechatPayClient, WechatPayConfig, WechatPayError,
};
use twilight_sandbox::wechatpay::Delivery;
use twilight_sandbox::{serve, NotifyFault, RecordingWebhook, SandboxKeys, WechatPaySim};

const MCHID: &str = "1900000109";
const APPID: &str = "wxd678efh567hg6787";
const WAIT: Duration = Duration::from_secs(10);

fn keys() -> &'static SandboxKeys {
    SandboxKeys::shared()
}

struct Harness {
    sim: WechatPaySim,
    client: Arc<WechatPayClient>,
    webhook: RecordingWebhook,
}

impl Harness {
    /// A simulator signing with `platform_key`, and a client trusting the genuine platform key and
    /// signing with `merchant_key`, whose webhook answers 204 when our parser accepts, else 400.
    async fn with_keys(platform_key: &rsa::RsaPrivateKey, merchant_key: &rsa::RsaPrivateKey) -> Harness {
        let mut sim_config = keys().sim_config(MCHID, APPID);
        sim_config.platform_key = platform_key.clone();
        let sim = WechatPaySim::new(sim_config);
        sim.set_retry_scale(0.001);
        let (addr, _task) = serve(sim.router(), 0).await.unwrap();

        let cell: Arc<OnceLock<Arc<WechatPayClient>>> = Arc::default();
        let parser = cell.clone();
        let webhook = RecordingWebhook::start(move |delivery: &Delivery| match parser.get().map(|client| parse(client, delivery)) {
            Some(Ok(_)) => StatusCode::NO_CONTENT,
            _ => StatusCode::BAD_REQUEST,
        })
        .await
        .unwrap();
        let client = Arc::new(
            WechatPayClient::new(WechatPayConfig {
                mchid: MCHID.into(),
                appid: APPID.into(),
                merchant_serial: keys().merchant_serial.clone(),
                merchant_key: MerchantKey::from_key(merchant_key.clone()).unwrap(),
                api_v3_key: ApiV3Key::new(&keys().api_v3_key).unwrap(),
                platform_keys: Arc::new(StaticPublicKey::new(&keys().platform_key_id, keys().platform_key.to_public_key()).unwrap()),
                notify_url: webhook.url().into(),
                base_url: format!("http://{addr}"),
                timeout: Duration::from_secs(10),
            })
            .unwrap(),
        );
        cell.set(client.clone()).unwrap();
        Harness { sim, client, webhook }
    }

    async fn start() -> Harness {
        Self::with_keys(&keys().platform_key, &keys().merchant_key).await
    }

    fn processor(&self) -> Arc<dyn PaymentProcessor> {
        self.client.clone()
    }

    /// Waits for `n` delivery attempts and parses what the webhook received.
    async fn notifications(&self, n: usize) -> Vec<Result<twilight_billing::Notification, NotifyError>> {
        self.sim.wait_for_attempts(n, WAIT).await;
        self.webhook.received().iter().map(|d| parse(&self.client, d)).collect()
    }
}

fn parse(client: &WechatPayClient, delivery: &Delivery) -> Result<twilight_billing::Notification, NotifyError> {
    client.parse_notification(&delivery.headers, &delivery.body, Utc::now())
}

fn order(no: &str) -> Order {
    Order {
        out_trade_no: no.into(),
        description: "Twilight Drive 月度订阅".into(),
        amount_fen: 19800,
        currency: "CNY".into(),
        time_expire: Some(Utc::now() + chrono::Duration::minutes(30)),
        attach: Some("user=42".into()),
    }
}

fn refund(no: &str, refund_no: &str, fen: i64) -> RefundRequest {
    RefundRequest {
        out_trade_no: no.into(),
        out_refund_no: refund_no.into(),
        reason: Some("用户申请退款".into()),
        refund_fen: fen,
        total_fen: 19800,
        currency: "CNY".into(),
    }
}

fn api_code(error: &WechatPayError) -> Option<&ErrorCode> {
    match error {
        WechatPayError::Api { code, .. } => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn an_order_is_placed_paid_notified_and_refunded() {
    let h = Harness::start().await;
    let processor = h.processor();
    let order = order("TD1001");
    let checkout = processor.create_checkout(&order).await.unwrap();
    assert!(checkout.code_url.starts_with("weixin://wxpay/bizpayurl?pr="), "{checkout:?}");
    assert_eq!((checkout.processor, checkout.expires_at), ("wechatpay", order.time_expire));
    assert_eq!(processor.create_checkout(&order).await.unwrap(), checkout, "placing it again is idempotent");

    let unpaid = h.client.query_order("TD1001").await.unwrap();
    assert_eq!((unpaid.trade_state, unpaid.transaction_id.as_deref()), (TradeState::Notpay, None));
    assert_eq!(unpaid.attach.as_deref(), Some("user=42"));
    assert_eq!(processor.query("TD1001").await.unwrap(), PaymentStatus::Pending);

    let transaction_id = h.sim.pay("TD1001", None).await.unwrap();
    let notifications = h.notifications(1).await;
    let Ok(notification) = &notifications[0] else { panic!("{notifications:?}") };
    let Event::TransactionSuccess(paid) = &notification.event else { panic!("{notification:?}") };
    assert_eq!((paid.out_trade_no.as_str(), paid.transaction_id.as_deref()), ("TD1001", Some(transaction_id.as_str())));
    assert_eq!(paid.amount.total, 19800);
    assert!(h.sim.notify_attempts()[0].accepted(), "our webhook took it");

    let PaymentStatus::Paid(status) = processor.query("TD1001").await.unwrap() else { panic!("not paid") };
    assert_eq!(
        (status.transaction_id.as_str(), status.amount.amount, status.amount.currency.as_str()),
        (transaction_id.as_str(), 19800, "CNY")
    );
    assert!((Utc::now() - status.paid_at).num_seconds().abs() < 60);

    assert_eq!(api_code(&h.client.close_order("TD1001").await.unwrap_err()), Some(&ErrorCode::OrderPaid));
    assert_eq!(processor.close("TD1001").await, Err(PaymentError::AlreadyPaid));

    let receipt = processor.refund(&refund("TD1001", "RF1001", 19800)).await.unwrap();
    assert_eq!((receipt.out_refund_no.as_str(), receipt.status), ("RF1001", RefundStatus::Processing));
    let notifications = h.notifications(2).await;
    let Ok(notification) = &notifications[1] else { panic!("{notifications:?}") };
    let Event::RefundSuccess(refunded) = &notification.event else { panic!("{notification:?}") };
    assert_eq!(
        (refunded.refund_id.as_str(), refunded.refund_status, refunded.amount.refund),
        (receipt.refund_id.as_str(), RefundStatus::Success, 19800)
    );
    let event = processor.verify_notification(&h.webhook.received()[1].headers, &h.webhook.received()[1].body, Utc::now()).unwrap();
    assert!(matches!(event.kind, EventKind::Refunded(ref r) if r.out_trade_no == "TD1001" && r.amount.amount == 19800), "{event:?}");
    assert_eq!(processor.query("TD1001").await.unwrap(), PaymentStatus::Refunded);
}

#[tokio::test]
async fn a_closed_order_stays_closed() {
    let h = Harness::start().await;
    let processor = h.processor();
    processor.create_checkout(&order("TD1002")).await.unwrap();
    processor.close("TD1002").await.unwrap();
    processor.close("TD1002").await.unwrap();
    assert_eq!(h.client.query_order("TD1002").await.unwrap().trade_state, TradeState::Closed);
    assert_eq!(processor.query("TD1002").await.unwrap(), PaymentStatus::Closed);
    assert_eq!(processor.create_checkout(&order("TD1002")).await, Err(PaymentError::AlreadyClosed));
    assert!(h.sim.pay("TD1002", None).await.is_err());
}

#[tokio::test]
async fn wechat_pay_errors_map_to_their_codes() {
    let h = Harness::start().await;
    let error = h.client.query_order("TD404404").await.unwrap_err();
    assert!(matches!(error, WechatPayError::Api { status: 404, code: ErrorCode::OrderNotExist, .. }), "{error}");
    assert_eq!(h.processor().query("TD404404").await, Err(PaymentError::NotFound));

    h.client.create_native_order(&order("TD1003")).await.unwrap();
    let changed = Order { amount_fen: 100, ..order("TD1003") };
    assert_eq!(api_code(&h.client.create_native_order(&changed).await.unwrap_err()), Some(&ErrorCode::OutTradeNoUsed));
    assert_eq!(h.processor().create_checkout(&changed).await, Err(PaymentError::DuplicateOrder));

    let calls = h.sim.calls("POST /v3/pay/transactions/native");
    for bad in [Order { out_trade_no: "TD 1".into(), ..order("x") }, Order { amount_fen: 0, ..order("TD1004") }] {
        let error = h.client.create_native_order(&bad).await.unwrap_err();
        assert!(matches!(error, WechatPayError::InvalidRequest(_)), "{error}");
    }
    assert!(matches!(h.client.refund(&refund("TD1003", "bad refund no", 1)).await, Err(WechatPayError::InvalidRequest(_))));
    assert_eq!(h.sim.calls("POST /v3/pay/transactions/native"), calls, "invalid requests are never sent");
}

#[tokio::test]
async fn answers_signed_with_another_key_are_refused() {
    // The simulator signs with a key that is not the one we trust under its PUB_KEY_ID.
    let h = Harness::with_keys(&keys().merchant_key, &keys().merchant_key).await;
    let error = h.client.create_native_order(&order("TD1005")).await.unwrap_err();
    assert!(matches!(error, WechatPayError::Unverified { status: 200, source: SignatureError::BadSignature }), "{error}");
    assert!(matches!(h.processor().query("TD1005").await, Err(PaymentError::Untrusted(_))));
}

#[tokio::test]
async fn requests_signed_with_the_wrong_merchant_key_are_refused() {
    let h = Harness::with_keys(&keys().platform_key, &keys().platform_key).await;
    let error = h.client.create_native_order(&order("TD1006")).await.unwrap_err();
    assert!(matches!(error, WechatPayError::Api { status: 401, code: ErrorCode::SignError, .. }), "{error}");
}

#[tokio::test]
async fn our_webhook_refuses_the_signing_probe_and_takes_the_notification() {
    let h = Harness::start().await;
    h.sim.set_fault(NotifyFault::SignTestProbe);
    h.client.create_native_order(&order("TD1007")).await.unwrap();
    h.sim.pay("TD1007", None).await.unwrap();
    let notifications = h.notifications(2).await;
    assert_eq!(notifications[0], Err(NotifyError::Signature(SignatureError::Probe)));
    assert!(matches!(notifications[1], Ok(ref n) if n.event_type == "TRANSACTION.SUCCESS"));
    let outcomes: Vec<_> = h.sim.notify_attempts().into_iter().map(|a| (a.probe, a.outcome)).collect();
    assert_eq!(outcomes, [(true, Ok(400)), (false, Ok(204))]);
}

#[tokio::test]
async fn duplicates_share_an_id_and_stale_deliveries_are_refused() {
    let h = Harness::start().await;
    h.sim.set_fault(NotifyFault::DuplicateDelivery(2));
    h.client.create_native_order(&order("TD1008")).await.unwrap();
    h.sim.pay("TD1008", None).await.unwrap();
    let notifications = h.notifications(2).await;
    let ids: Vec<_> = notifications.iter().map(|n| n.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the id is the idempotency key");

    let delivery = &h.webhook.received()[0];
    let later = Utc::now() + chrono::Duration::minutes(6);
    assert!(matches!(
        h.client.parse_notification(&delivery.headers, &delivery.body, later),
        Err(NotifyError::Signature(SignatureError::Stale { .. }))
    ));
}

#[tokio::test]
async fn reconciliation_finds_a_payment_that_was_never_notified() {
    let h = Harness::start().await;
    h.sim.set_fault(NotifyFault::NeverDeliver);
    h.client.create_native_order(&order("TD1009")).await.unwrap();
    h.sim.pay("TD1009", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.webhook.received().is_empty());
    assert!(matches!(h.processor().query("TD1009").await.unwrap(), PaymentStatus::Paid(_)));
}
