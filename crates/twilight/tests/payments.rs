//! Buying Pro end to end against the sandbox WeChat Pay, through the real server: checkout, the
//! simulator's signed and encrypted notifications (duplicated, out of order, lost), forged ones
//! posted straight at the webhook, reconciliation and refunds — on SQLite and Postgres.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use twilight_accounts::{JobKind, PaymentState, UserStatus};
use twilight_sandbox::NotifyFault;
use uuid::Uuid;

use common::{rows, Backend, TestApp};

const WAIT: Duration = Duration::from_secs(20);

on_both_backends!(
    a_paid_order_becomes_one_user_and_one_job_even_when_delivered_100_times,
    lite_unknown_and_malformed_checkouts_are_refused_and_write_nothing,
    forged_stale_foreign_and_mismatched_notifications_write_nothing,
    a_lost_notification_is_settled_by_reconciliation_and_expired_orders_close,
    a_refund_ends_the_service_and_a_late_payment_notification_changes_nothing,
);

async fn checkout(app: &TestApp) -> Value {
    let (status, order) = app.post("/checkout", None, json!({"plan": "pro"})).await;
    assert_eq!(status, 201, "{order}");
    order
}

async fn stage(app: &TestApp, order: &Value) -> String {
    let (status, _, view) = app.get(order["status_url"].as_str().unwrap(), None).await;
    assert_eq!(status, 200, "{view}");
    view["stage"].as_str().unwrap().to_string()
}

/// Polls the order until it reaches `want`.
async fn wait_for_stage(app: &TestApp, order: &Value, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = stage(app, order).await;
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "order stayed {now}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_paid_order_becomes_one_user_and_one_job_even_when_delivered_100_times(app: TestApp) {
    let order = checkout(&app).await;
    assert_eq!((order["amount"].as_i64(), order["currency"].as_str()), (Some(19_800), Some("CNY")));
    assert_eq!((order["plan"].as_str(), order["stage"].as_str()), (Some("pro"), Some("pending")));
    assert!(order["code_url"].as_str().unwrap().starts_with("weixin://wxpay/bizpayurl?pr="), "{order}");
    assert!(order["qr_svg"].as_str().unwrap().contains("<svg"));
    assert!(order["onboarding_url"].as_str().unwrap().starts_with("/onboard/"));
    assert!(order["sandbox_pay_url"].as_str().unwrap().ends_with(order["out_trade_no"].as_str().unwrap()));
    let expires_at: DateTime<Utc> = order["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((expires_at - Utc::now()).num_minutes() >= 29, "{order}");
    // What the payer's page polls shows no secrets.
    let (_, _, view) = app.get(order["status_url"].as_str().unwrap(), None).await;
    for secret in ["onboarding", "user_id", "processor_ref", "code_url", "token"] {
        assert!(!view.to_string().contains(secret), "{secret} in {view}");
    }
    let before = app.dump().await;

    let sim = app.wechatpay();
    sim.set_fault(NotifyFault::DuplicateDelivery(100));
    let out_trade_no = order["out_trade_no"].as_str().unwrap();
    sim.pay(out_trade_no, None).await.unwrap();
    let attempts = sim.wait_for_attempts(100, WAIT).await;
    assert_eq!(attempts.len(), 100);
    assert!(attempts.iter().all(|a| a.accepted()), "{:?}", attempts.iter().find(|a| !a.accepted()));

    let after = app.dump().await;
    assert_eq!(rows(&after, "users"), rows(&before, "users") + 1);
    assert_eq!(rows(&after, "provisioning_jobs"), 1);
    assert_eq!(rows(&after, "payments"), 1);
    let payment = app.running.accounts.payment_by_out_trade_no(out_trade_no).await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentState::Paid);
    let user = app.running.accounts.user(payment.user_id.unwrap()).await.unwrap().unwrap();
    assert_eq!((user.status, user.plan.as_str()), (UserStatus::Active, "pro"));
    let jobs = app.running.accounts.jobs_for_user(user.user_id).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].kind, JobKind::Provision);
    assert_eq!(stage(&app, &order).await, "paid");
    // No raw onboarding token is stored: only its hash.
    let token = order["onboarding_url"].as_str().unwrap().trim_start_matches("/onboard/");
    assert!(!after.contains(token));
    app.stop().await;
}

async fn lite_unknown_and_malformed_checkouts_are_refused_and_write_nothing(app: TestApp) {
    let before = app.dump().await;
    let (status, body) = app.post("/checkout", None, json!({"plan": "lite"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!((body["error"]["code"].as_str(), body["error"]["field"].as_str()), (Some("plan_unavailable"), Some("plan")));
    assert!(body["error"]["message"].as_str().unwrap().contains("not available yet"));
    for (request, field) in [
        (json!({"plan": "gold"}), Some("plan")),
        (json!({"plan": "alpha"}), Some("plan")),
        (json!({}), None),
        (json!({"plan": "pro", "coupon": "FREE"}), None),
        (json!({"plan": "pro", "renew": "no-such-token"}), Some("renew")),
    ] {
        let (status, body) = app.post("/checkout", None, request.clone()).await;
        assert_eq!(status, 400, "{request} → {body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{request} → {body}");
    }
    let response = app.http.post(app.url("/checkout")).header("content-type", "application/json").body("{plan").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let (status, _, body) = app.get("/orders/not-a-uuid", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_input")));
    let (status, _, body) = app.get(&format!("/orders/{}", Uuid::new_v4()), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(app.dump().await, before);
    assert_eq!(app.wechatpay().calls("POST /v3/pay/transactions/native"), 0);
    app.stop().await;
}

/// A `TRANSACTION.SUCCESS` resource for `out_trade_no`, as WeChat Pay reports a paid order.
fn paid_resource(app: &TestApp, out_trade_no: &str) -> Value {
    let mut resource = app.wechatpay().transaction_json(out_trade_no).expect("the simulator has the order");
    resource["trade_state"] = "SUCCESS".into();
    resource["trade_state_desc"] = "支付成功".into();
    resource["transaction_id"] = "4200000000202611250000000001".into();
    resource["success_time"] = "2026-11-25T10:00:00+08:00".into();
    resource["payer"] = json!({"openid": "oSandboxPayer000000000000001"});
    resource["amount"]["payer_total"] = resource["amount"]["total"].clone();
    resource
}

async fn post_notification(app: &TestApp, headers: HeaderMap, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = app.http.post(app.url("/payments/wechat/notify")).headers(headers).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn forged_stale_foreign_and_mismatched_notifications_write_nothing(app: TestApp) {
    let order = checkout(&app).await;
    let out_trade_no = order["out_trade_no"].as_str().unwrap();
    let sim = app.wechatpay();
    let genuine = paid_resource(&app, out_trade_no);
    let notification = |resource: &Value, at: DateTime<Utc>| sim.signed_notification("TRANSACTION.SUCCESS", "transaction", resource, at);
    let before = app.dump().await;

    let mut cases: Vec<(&str, HeaderMap, String, u16)> = Vec::new();
    let (headers, body) = notification(&genuine, Utc::now());
    cases.push(("forged body", headers.clone(), body.replace("encrypt-resource", "encrypt-resourcE"), 400));
    let mut probe = headers.clone();
    probe.insert("wechatpay-signature", "WECHATPAY/SIGNTEST/c2lnbnRlc3Q=".parse().unwrap());
    cases.push(("SIGNTEST probe", probe, body.clone(), 400));
    let mut unknown_key = headers.clone();
    unknown_key.insert("wechatpay-serial", "PUB_KEY_ID_0000000000000000000000000000".parse().unwrap());
    cases.push(("unknown platform key", unknown_key, body.clone(), 400));
    let mut unsigned = headers.clone();
    unsigned.remove("wechatpay-signature");
    cases.push(("unsigned", unsigned, body.clone(), 400));
    let (headers, body) = notification(&genuine, Utc::now() - chrono::Duration::minutes(6));
    cases.push(("stale timestamp", headers, body, 400));
    let mut cheap = genuine.clone();
    cheap["amount"]["total"] = 1.into();
    let (headers, body) = notification(&cheap, Utc::now());
    cases.push(("wrong amount", headers, body, 409));
    let mut dollars = genuine.clone();
    dollars["amount"]["currency"] = "USD".into();
    let (headers, body) = notification(&dollars, Utc::now());
    cases.push(("wrong currency", headers, body, 409));
    let mut foreign = genuine.clone();
    foreign["mchid"] = "1230000109".into();
    let (headers, body) = notification(&foreign, Utc::now());
    cases.push(("wrong mchid", headers, body, 400));
    let mut other_app = genuine.clone();
    other_app["appid"] = "wx0000000000000000".into();
    let (headers, body) = notification(&other_app, Utc::now());
    cases.push(("wrong appid", headers, body, 400));
    let mut unknown = genuine.clone();
    unknown["out_trade_no"] = "TD20261125000000unknown01".into();
    let (headers, body) = notification(&unknown, Utc::now());
    cases.push(("unknown order", headers, body, 404));
    let mut unpaid = genuine.clone();
    unpaid["trade_state"] = "NOTPAY".into();
    let (headers, body) = notification(&unpaid, Utc::now());
    cases.push(("SUCCESS event of an unpaid order", headers, body, 400));
    // Out of order: a refund of an order not yet paid here is refused, so WeChat Pay retries it.
    let refund = json!({
        "mchid": genuine["mchid"], "out_trade_no": out_trade_no, "transaction_id": genuine["transaction_id"],
        "out_refund_no": format!("R{out_trade_no}"), "refund_id": "50000000000000000000000000001",
        "refund_status": "SUCCESS", "success_time": "2026-11-25T10:05:00+08:00",
        "amount": {"total": 19800, "refund": 19800, "payer_total": 19800, "payer_refund": 19800},
    });
    let (headers, body) = sim.signed_notification("REFUND.SUCCESS", "refund", &refund, Utc::now());
    cases.push(("refund before payment", headers, body, 409));
    let garbage = "{\"id\": not json".to_string();
    cases.push(("malformed JSON", sim.signed_headers(garbage.as_bytes(), Utc::now()), garbage, 400));

    for (name, headers, body, want) in cases {
        let (status, answer) = post_notification(&app, headers, body).await;
        assert_eq!(status, want, "{name}: {answer}");
        assert_eq!(answer["code"], "FAIL", "{name}: {answer}");
        assert!(!answer["message"].as_str().unwrap_or_default().is_empty(), "{name}");
        assert_eq!(app.dump().await, before, "{name} changed the database");
    }

    // The same notification, genuinely signed, goes through (so the refusals above were not luck).
    let (headers, body) = notification(&genuine, Utc::now());
    let (status, answer) = post_notification(&app, headers.clone(), body.clone()).await;
    assert_eq!(status, 204, "{answer}");
    assert_eq!(rows(&app.dump().await, "users"), rows(&before, "users") + 1);
    // Replayed: still one user.
    assert_eq!(post_notification(&app, headers, body).await.0, 204);
    assert_eq!(rows(&app.dump().await, "provisioning_jobs"), 1);
    app.stop().await;
}

async fn a_lost_notification_is_settled_by_reconciliation_and_expired_orders_close(app: TestApp) {
    let payments = app.running.payments.clone().expect("payments run in the sandbox");
    let sim = app.wechatpay();
    sim.set_fault(NotifyFault::NeverDeliver);
    let paid = checkout(&app).await;
    let unpaid = checkout(&app).await;
    sim.pay(paid["out_trade_no"].as_str().unwrap(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sim.notify_attempts().is_empty());
    assert_eq!(stage(&app, &paid).await, "pending");

    // Within the grace period reconciliation leaves orders to their notifications.
    let report = payments.billing.reconcile(Utc::now()).await.unwrap();
    assert_eq!(report.checked, 0);
    let report = payments.billing.reconcile(Utc::now() + chrono::Duration::minutes(2)).await.unwrap();
    assert_eq!((report.checked, report.settled, report.closed, report.failed), (2, 1, 0, 0));
    assert_eq!(stage(&app, &paid).await, "paid");
    assert_eq!(stage(&app, &unpaid).await, "pending");
    assert_eq!(rows(&app.dump().await, "provisioning_jobs"), 1);

    // Past its expiry the unpaid order is closed at WeChat Pay and here.
    let after_expiry = Utc::now() + chrono::Duration::minutes(31);
    assert_eq!(stage(&app, &unpaid).await, "pending");
    let report = payments.billing.reconcile(after_expiry).await.unwrap();
    assert_eq!((report.checked, report.settled, report.closed), (1, 0, 1));
    assert_eq!(stage(&app, &unpaid).await, "closed");
    let at_wechatpay = sim.transaction_json(unpaid["out_trade_no"].as_str().unwrap()).unwrap();
    assert_eq!(at_wechatpay["trade_state"], "CLOSED");
    assert_eq!(payments.billing.reconcile(after_expiry).await.unwrap().checked, 0);
    app.stop().await;
}

async fn a_refund_ends_the_service_and_a_late_payment_notification_changes_nothing(app: TestApp) {
    let sim = app.wechatpay();
    sim.set_retry_scale(0.001);
    sim.set_fault(NotifyFault::OutOfOrder);
    let order = checkout(&app).await;
    sim.pay(order["out_trade_no"].as_str().unwrap(), None).await.unwrap();

    // The payment notification is held back, so the order is not paid here yet: no refund.
    let refund_path = format!("/admin/orders/{}/refund", order["order_id"].as_str().unwrap());
    let (status, body) = app.post(&refund_path, Some(&app.admin_token), json!({"reason": "test"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, _) = app.post(&refund_path, None, json!({})).await;
    assert_eq!(status, 401);

    // Settle it by reconciliation, then refund: WeChat Pay's refund notification is held too.
    let payments = app.running.payments.clone().unwrap();
    payments.billing.reconcile(Utc::now() + chrono::Duration::minutes(2)).await.unwrap();
    assert_eq!(stage(&app, &order).await, "paid");
    let (status, body) = app.post(&refund_path, Some(&app.admin_token), json!({"reason": "test"})).await;
    assert_eq!(status, 202, "{body}");

    // Released newest first: the refund, then the late payment notification, which changes nothing.
    sim.release_held();
    wait_for_stage(&app, &order, "refunded").await;
    let payment = app.running.accounts.payment_by_out_trade_no(order["out_trade_no"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentState::Refunded);
    let user_id = payment.user_id.unwrap();
    assert_eq!(app.running.accounts.user(user_id).await.unwrap().unwrap().status, UserStatus::Refunded);
    let kinds: Vec<JobKind> = app.running.accounts.jobs_for_user(user_id).await.unwrap().iter().map(|job| job.kind).collect();
    assert_eq!(kinds, [JobKind::Provision, JobKind::Deprovision]);
    let attempts = sim.wait_for_attempts(2, WAIT).await;
    assert!(attempts.iter().any(|a| a.event_type == "REFUND.SUCCESS" && a.accepted()), "{attempts:?}");
    app.stop().await;
}

/// The embedded default reconciles by itself: a payment whose notification is lost still turns
/// into a user within a few scheduler ticks.
async fn the_in_process_scheduler_reconciles(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |config| {
        config.scheduler.in_process = true;
        config.scheduler.reconcile_interval_secs = 1;
        config.payments.reconcile_grace_secs = 0;
    })
    .await
    else {
        return;
    };
    app.wechatpay().set_fault(NotifyFault::NeverDeliver);
    let order = checkout(&app).await;
    app.wechatpay().pay(order["out_trade_no"].as_str().unwrap(), None).await.unwrap();
    wait_for_stage(&app, &order, "paid").await;
    assert!(app.wechatpay().notify_attempts().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_process_scheduler_reconciles() {
    the_in_process_scheduler_reconciles(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_in_process_scheduler_reconciles() {
    the_in_process_scheduler_reconciles(Backend::Postgres).await;
}
