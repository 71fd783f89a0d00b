//! The edge of the real server: per-IP limits on what anyone can call (orders, onboarding answers,
//! failed lookups), believed `X-Forwarded-For` only from a trusted proxy, the request deadline, the
//! body limit, and a shutdown that cannot be stalled by a request that never ends.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use twilight_sandbox::{NotifyFault, TushareMode};

use common::{rows, Backend, TestApp};

async fn post_from(app: &TestApp, path: &str, forwarded_for: Option<&str>, body: Value) -> (StatusCode, Option<u64>, Value) {
    let mut request = app.http.post(app.url(path)).json(&body);
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    let response = request.send().await.unwrap();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status(), retry_after, response.json().await.unwrap_or(Value::Null))
}

async fn one_ip_places_the_configured_number_of_orders(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |config| {
        config.edge.orders_per_ip_per_hour = 7;
        config.edge.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let mut placed = 0;
    for _ in 0..100 {
        let (status, retry_after, body) = post_from(&app, "/checkout", None, json!({"plan": "pro"})).await;
        match status {
            StatusCode::CREATED => placed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                let wait = retry_after.expect("Retry-After on a 429");
                assert!((1..=3600 / 7 + 1).contains(&wait), "one order's worth of an hour: {wait}");
            }
            other => panic!("checkout answered {other}: {body}"),
        }
    }
    assert_eq!(placed, 7);
    assert_eq!(rows(&app.dump().await, "payments"), 7);
    assert_eq!(app.wechatpay().calls("POST /v3/pay/transactions/native"), 7);

    // The landing page's form is the same order: refused with a page saying so.
    let response = app.http.post(app.url("/buy")).form(&[("plan", "pro"), ("lang", "en")]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("Too many tries"));

    // Behind the trusted proxy another client has its own quota; a forged hop to the left of the
    // proxy's own does not buy anyone a new one.
    let (status, _, body) = post_from(&app, "/checkout", Some("203.0.113.5"), json!({"plan": "pro"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for forged in 0..8 {
        let chain = format!("198.51.100.{forged}, 203.0.113.6");
        post_from(&app, "/checkout", Some(&chain), json!({"plan": "pro"})).await;
    }
    let (status, _, _) = post_from(&app, "/checkout", Some("203.0.113.6"), json!({"plan": "pro"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rows(&app.dump().await, "payments"), 7 + 1 + 7);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_one_ip_places_the_configured_number_of_orders() {
    one_ip_places_the_configured_number_of_orders(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_ip_places_the_configured_number_of_orders() {
    one_ip_places_the_configured_number_of_orders(Backend::Postgres).await;
}

/// Reconciliation reads every pending order a page at a time (more than one page here), and
/// deletes closed unpaid ones once their retention is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_pages_through_every_pending_order_and_prunes_closed_ones() {
    let Some(app) = TestApp::start_with(Backend::Postgres, |config| config.edge.orders_per_ip_per_hour = 1_000).await else { return };
    app.wechatpay().set_fault(NotifyFault::NeverDeliver);
    let orders = 230;
    for _ in 0..orders {
        assert_eq!(post_from(&app, "/checkout", None, json!({"plan": "pro"})).await.0, StatusCode::CREATED);
    }
    let billing = &app.running.payments.as_ref().unwrap().billing;
    let report = billing.reconcile(Utc::now() + chrono::Duration::minutes(31)).await.unwrap();
    assert_eq!((report.checked, report.closed, report.failed, report.pruned), (orders, orders, 0, 0));
    assert_eq!(rows(&app.dump().await, "payments"), orders);
    let report = billing.reconcile(Utc::now() + chrono::Duration::days(31)).await.unwrap();
    assert_eq!((report.checked, report.pruned), (0, orders as u64));
    assert_eq!(rows(&app.dump().await, "payments"), 0);
    app.stop().await;
}

/// Unknown bearer tokens and onboarding links cost a lookup each; once an IP has spent its
/// failures it is refused before the next lookup, other IPs are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_lookups_get_an_ip_refused_before_the_database() {
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| {
        config.edge.failed_lookups_per_ip_per_min = 5;
        config.edge.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await
    else {
        return;
    };
    let (_, key) = app.user(1_000).await;
    assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 200);
    for guess in 0..3 {
        let (status, _, body) = app.get("/price?code=600519.SH", Some(&format!("guess-{guess}"))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")));
    }
    let unknown_link = format!("/onboard/{}/status", "A".repeat(43));
    for _ in 0..2 {
        assert_eq!(app.get(&unknown_link, None).await.0, 404);
    }
    // The sixth failure in the minute finds the bucket empty: from then on, no more lookups.
    assert_eq!(app.get("/price?code=600519.SH", Some("guess-6")).await.0, 401);
    let (status, headers, body) = app.get("/price?code=600519.SH", Some("guess-7")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(app.get(&unknown_link, None).await.0, 429);
    // The key already known is served from memory: no lookup, no refusal.
    assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 200);
    // Another client behind the proxy is still only told its token is unknown.
    let response = app
        .http
        .get(app.url("/price?code=600519.SH"))
        .bearer_auth("guess-x")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Onboarding answers are limited per IP before anything is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_posts_are_limited_per_ip() {
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| config.edge.onboarding_posts_per_ip_per_min = 3).await else { return };
    let (_, _, order) = post_from(&app, "/checkout", None, json!({"plan": "pro"})).await;
    let verify = format!("{}/verify-code", order["onboarding_url"].as_str().unwrap());
    for _ in 0..3 {
        // Not paid yet: WeChat has asked for no code.
        let (status, _, body) = post_from(&app, &verify, None, json!({"code": "123456"})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    let (status, retry_after, body) = post_from(&app, &verify, None, json!({"code": "123456"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert!(retry_after.is_some_and(|wait| (1..=20).contains(&wait)), "{retry_after:?}");
    app.stop().await;
}

/// A request that runs past the deadline is answered 504 at the deadline; a body past the limit
/// is refused 413 unread; both in the JSON error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_and_the_body_limit_hold() {
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| {
        config.edge.request_deadline_secs = 1;
        config.edge.body_limit_bytes = 1024;
    })
    .await
    else {
        return;
    };
    let (_, key) = app.user(1_000).await;
    app.running.sandbox.as_ref().unwrap().market.tushare.set_mode(TushareMode::Slow(Duration::from_secs(5)));
    let started = Instant::now();
    let (status, headers, body) = app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await;
    let took = started.elapsed();
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("deadline_exceeded")), "{body}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    assert!(headers.contains_key("x-request-id") && headers.contains_key("content-security-policy"));

    let big = json!({"plan": "pro", "renew": "x".repeat(4096)});
    let (status, _, body) = post_from(&app, "/checkout", None, big).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{body}");
    assert_eq!(rows(&app.dump().await, "payments"), 0);
    app.stop().await;
}

/// A request still running at shutdown is cut off after the drain deadline; every usage row of
/// the requests answered before is written all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_for_its_deadline_then_flushes_usage() {
    let Some(app) = TestApp::start_with(Backend::Postgres, |config| {
        config.edge.request_deadline_secs = 60;
        config.edge.shutdown_drain_secs = 1;
    })
    .await
    else {
        return;
    };
    let (user_id, key) = app.user(1_000).await;
    let answered = 25;
    for _ in 0..answered {
        assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 200);
    }
    app.running.sandbox.as_ref().unwrap().market.tushare.set_mode(TushareMode::Slow(Duration::from_secs(30)));
    let hanging = tokio::spawn({
        let request = app.http.get(app.url("/price?code=000001.SZ&trade_date=20260429")).bearer_auth(&key);
        async move { request.send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let stopped = app.stop_server().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "shutdown took {took:?} with a 1 s drain");
    let user = user_id.parse().unwrap();
    assert_eq!(stopped.accounts.usage_count(user).await.unwrap(), answered);
    hanging.abort();
    stopped.cleanup().await;
}

/// An onboarding link opened in a browser trades its token for an HttpOnly, SameSite=Strict cookie
/// and goes on to a token-free page; a while after the bot runs, the link opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarding_link_moves_into_a_cookie_and_retires_once_the_bot_runs() {
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| config.edge.onboarding_link_secs_after_ready = 1).await else { return };
    let (_, _, order) = post_from(&app, "/checkout", None, json!({"plan": "pro"})).await;
    let link = order["onboarding_url"].as_str().unwrap();
    let token = link.trim_start_matches("/onboard/");
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let opened = browser.get(app.url(&format!("{link}?lang=en"))).send().await.unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    let set_cookie = opened.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in
        [format!("twilight_onboard={token}"), "HttpOnly".into(), "SameSite=Strict".into(), "Path=/onboard".into(), "Max-Age=2592000".into()]
    {
        assert!(set_cookie.contains(&attribute), "{attribute} missing from {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain http in the sandbox: {set_cookie}");
    assert_eq!(opened.headers()["referrer-policy"], "no-referrer");
    let html = opened.text().await.unwrap();
    assert!(html.contains(r#"<meta http-equiv="refresh" content="0; url=/onboard?lang=en">"#), "{html}");
    assert!(!html.contains(token));

    let cookie = format!("twilight_onboard={token}");
    let page = browser.get(app.url("/onboard?lang=en")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"data-step="awaiting_payment""#) && html.contains(r#"data-status-url="/onboard/status""#), "{html}");
    assert!(!html.contains(token), "the page shows its token");
    assert_eq!(browser.get(app.url("/onboard")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let status: Value = browser.get(app.url("/onboard/status")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["step"], "awaiting_payment");
    let answered =
        browser.post(app.url("/onboard")).header("cookie", &cookie).form(&[("action", "refresh_qr"), ("lang", "en")]).send().await.unwrap();
    assert_eq!((answered.status(), answered.headers()["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/onboard?lang=en"));

    // Paid, and the bot comes up (as the provisioner would mark it): the page says ready…
    app.wechatpay().pay(order["out_trade_no"].as_str().unwrap(), None).await.unwrap();
    let accounts = &app.running.accounts;
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        if let Some(job) =
            accounts.claim_job("edge-test", "edge-host", Utc::now(), Utc::now() + chrono::Duration::minutes(1)).await.unwrap()
        {
            break job;
        }
        assert!(Instant::now() < deadline, "the payment made no job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let active = twilight_accounts::JobUpdate {
        state: twilight_accounts::JobState::Active,
        attempts: 0,
        last_error: None,
        next_attempt_at: Utc::now(),
    };
    assert!(accounts.update_job(job.job_id, "edge-test", &active, None).await.unwrap());
    let status: Value = browser.get(app.url("/onboard/status")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["step"], "ready");
    // …and a while later neither the link nor the cookie opens anything.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, _, body) = app.get(&format!("{link}/status"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (410, Some("gone")));
    let page = browser.get(app.url(&format!("{link}?lang=en"))).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    assert!(page.headers().get("set-cookie").is_none());
    assert!(page.text().await.unwrap().contains("has done its job"));
    assert_eq!(browser.get(app.url("/onboard")).header("cookie", &cookie).send().await.unwrap().status(), StatusCode::GONE);
    app.stop().await;
}
