//! The data plane end to end over HTTP: real accounts DB (SQLite and Postgres), real DuckDB warehouse,
//! sandbox Tushare behind the production client.

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use serde_json::json;

on_both_backends!(
    auth_classes_and_revocation,
    revocation_by_another_process_is_noticed,
    price_has_a_cite_and_is_cached,
    concurrent_and_sequential_misses_make_one_upstream_call,
    rate_limit_answers_429_with_retry_after,
    malformed_input_gets_a_json_error_naming_the_problem,
    latest_price_and_fundamentals,
    every_answered_request_is_metered,
    health_and_admin_validation,
    cached_answers_survive_an_outage_and_never_wait_for_other_fills,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_when_the_accounts_db_is_gone() {
    let Some(app) = TestApp::start(common::Backend::Postgres).await else { return };
    assert_eq!(app.get("/healthz", None).await.0, 200);
    app.drop_postgres().await;
    let (status, _, health) = app.get("/healthz", None).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["ok"], false);
    assert_eq!(health["checks"]["accounts"]["ok"], false);
    assert_eq!(health["checks"]["warehouse"]["ok"], true);
    app.stop().await;
}

async fn auth_classes_and_revocation(app: TestApp) {
    let (user_id, key) = app.user(60).await;
    let price = "/price?code=600519.SH&trade_date=20260430";

    let (status, headers, body) = app.get(price, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("missing_token")));
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, body) = app.get(price, Some("not-a-key")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")));

    let (status, _, body) = app.get(price, Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.post("/admin/users", Some(&key), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    let (status, _, body) = app.get(price, Some(&app.admin_token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));

    // The key is cached now; revoking through the API must still take effect on the very next request.
    let (status, body) = app.post(&format!("/admin/users/{user_id}/keys/revoke"), Some(&app.admin_token), json!({})).await;
    assert_eq!((status, body["revoked"].as_i64()), (200, Some(1)));
    let (status, _, body) = app.get(price, Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("revoked_key")));
    app.stop().await;
}

async fn revocation_by_another_process_is_noticed(app: TestApp) {
    let (user_id, key) = app.user(60).await;
    let price = "/price?code=600519.SH&trade_date=20260430";
    assert_eq!(app.get(price, Some(&key)).await.0, 200);
    // The CLI revokes through its own connection; the server only learns of it through the epoch.
    let other = twilight_accounts::SqlAccounts::connect(&app.config.accounts_url()).await.unwrap();
    use twilight_accounts::Accounts;
    assert_eq!(other.revoke_user_keys(user_id.parse().unwrap()).await.unwrap(), 1);
    let started = Instant::now();
    loop {
        let (status, _, _) = app.get(price, Some(&key)).await;
        if status == 403 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "revocation not noticed within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

async fn price_has_a_cite_and_is_cached(app: TestApp) {
    let (_, key) = app.user(60).await;
    let (status, _, body) = app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], "600519.SH");
    assert_eq!(body["name"], "贵州茅台");
    assert_eq!(body["metric"], "close");
    assert_eq!(body["as_of"], "20260430");
    let close = body["value"].as_f64().unwrap();
    assert!((500.0..5000.0).contains(&close), "{close}");
    let cite = &body["cite"];
    assert_eq!(cite["kind"], "tool");
    assert_eq!(cite["source"], "sandbox:tushare");
    assert_eq!(cite["served_by"], "twilight-drive-backend");
    assert_eq!(cite["table"], "daily");
    assert!(cite["tool_call_id"].as_str().unwrap().starts_with("tc_"));
    assert_eq!(app.tushare_calls("daily"), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    for spelling in ["600519.SH", "sh600519", "600519", "SH600519"] {
        let (status, _, again) = app.get(&format!("/price?code={spelling}&trade_date=20260430"), Some(&key)).await;
        assert_eq!(status, 200);
        assert_eq!(again["value"], body["value"]);
        assert!(again["cite"]["cache_age_seconds"].as_i64().unwrap() >= 1, "{again}");
        assert_ne!(again["cite"]["tool_call_id"], cite["tool_call_id"]);
    }
    assert_eq!(app.tushare_calls("daily"), 1, "cached answers must not call upstream");

    let (status, _, pe) = app.get("/price?code=600519.SH&trade_date=20260430&metric=pe_ttm", Some(&key)).await;
    assert_eq!(status, 200, "{pe}");
    assert_eq!(pe["cite"]["table"], "daily_basic");
    assert!(pe["value"].as_f64().unwrap() > 0.0);
    assert_eq!(app.tushare_calls("daily_basic"), 1);
    app.stop().await;
}

async fn concurrent_and_sequential_misses_make_one_upstream_call(app: TestApp) {
    let (_, key) = app.user(1000).await;
    // Warm the calendar and stock list so only the day row is missing.
    assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 200);
    let before = app.tushare_calls("daily");
    let path = "/price?code=000001.SZ&trade_date=20260429";
    let answers = futures::future::join_all((0..32).map(|_| app.get(path, Some(&key)))).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    assert!(answers.windows(2).all(|w| w[0].2["value"] == w[1].2["value"]));
    assert_eq!(app.tushare_calls("daily") - before, 1, "32 concurrent misses → one upstream call");
    for _ in 0..10 {
        assert_eq!(app.get(path, Some(&key)).await.0, 200);
    }
    assert_eq!(app.tushare_calls("daily") - before, 1, "sequential repeats → no further call");
    app.stop().await;
}

async fn rate_limit_answers_429_with_retry_after(app: TestApp) {
    let path = "/price?code=600519.SH&trade_date=20260430";
    let (_, warm) = app.user(60).await;
    assert_eq!(app.get(path, Some(&warm)).await.0, 200, "fills the cache, so the timed burst below is fast");

    // A bucket of 60 that refills one token a second: a burst of N requests in t seconds may see at
    // most 60 + ceil(t) successes, and the first rejection comes no earlier than request 61.
    let (_, key) = app.user(60).await;
    let started = Instant::now();
    let mut successes = 0;
    let (headers, body) = loop {
        let (status, headers, body) = app.get(path, Some(&key)).await;
        match status {
            200 => successes += 1,
            429 => break (headers, body),
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(successes <= 200, "no 429 after 200 requests");
    };
    let allowed = 60 + started.elapsed().as_secs_f64().ceil() as usize;
    assert!((60..=allowed).contains(&successes), "{successes} successes, at most {allowed} allowed");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another key has its own bucket.
    assert_eq!(app.get(path, Some(&warm)).await.0, 200);
    app.stop().await;
}

async fn malformed_input_gets_a_json_error_naming_the_problem(app: TestApp) {
    let (_, key) = app.user(1000).await;
    let cases: [(&str, u16, &str, Option<&str>); 13] = [
        ("/price", 400, "invalid_input", Some("code")),
        ("/price?code=abc", 400, "invalid_input", Some("code")),
        ("/price?code=6005190", 400, "invalid_input", Some("code")),
        ("/price?code=600519.XX", 400, "invalid_input", Some("code")),
        ("/price?code=699999.SH", 404, "not_found", None),
        ("/price?code=600519&trade_date=2026-13-01", 400, "invalid_input", Some("trade_date")),
        ("/price?code=600519&trade_date=29991231", 400, "invalid_input", Some("trade_date")),
        ("/price?code=600519&trade_date=20260502", 400, "not_trading_day", Some("trade_date")),
        ("/price?code=600519&trade_date=19950104", 404, "not_found", None),
        ("/price?code=600519&metric=beta", 400, "invalid_input", Some("metric")),
        ("/price?code=600519&colour=red", 400, "invalid_input", None),
        ("/fundamentals?code=600519&period=20260415", 400, "invalid_input", Some("period")),
        ("/reports/search?q=x", 501, "not_implemented", None),
    ];
    for (path, status, code, field) in cases {
        let (got, headers, body) = app.get(path, Some(&key)).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(headers["content-type"], "application/json", "{path}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(body["error"]["field"].as_str(), field, "{path}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, _, body) = app.get("/price?code=600519&trade_date=20260502", Some(&key)).await;
    assert_eq!(body["error"]["applies"], "20260430", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("20260430"));
    assert_eq!(app.tushare_calls("daily"), 0, "rejected input must not reach upstream");
    app.stop().await;
}

async fn latest_price_and_fundamentals(app: TestApp) {
    let (_, key) = app.user(1000).await;
    let (status, _, body) = app.get("/price?code=600519", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    let as_of = body["as_of"].as_str().unwrap().to_string();
    let today = twilight_core::china_today(chrono::Utc::now());
    assert!(as_of <= twilight_core::compact(today) && as_of.as_str() > "20260101", "{as_of}");

    let (status, _, body) = app.get("/fundamentals?code=600519.SH", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    let period = body["as_of"].as_str().unwrap();
    assert!(twilight_core::is_quarter_end(twilight_core::parse_date(period).unwrap()));
    let claims = body["claims"].as_array().unwrap();
    let claim = |m: &str| claims.iter().find(|c| c["metric"] == m).unwrap_or_else(|| panic!("no {m} in {body}"));
    assert!(claim("eps")["value"].as_f64().unwrap() > 0.0);
    assert_eq!(claim("eps")["cite"]["table"], "fina_indicator");
    assert_eq!(claim("pe_ttm")["cite"]["table"], "daily_basic");
    assert_eq!(claim("pe_ttm")["cite"]["source"], "sandbox:tushare");
    assert!(claim("pe_ttm")["value"].as_f64().unwrap() > 0.0);

    let (status, _, older) = app.get("/fundamentals?code=600519.SH&period=20241231", Some(&key)).await;
    assert_eq!(status, 200, "{older}");
    assert_eq!(older["as_of"], "20241231");
    app.stop().await;
}

async fn every_answered_request_is_metered(app: TestApp) {
    let (user_id, key) = app.user(1000).await;
    let mut answered = 0;
    for path in ["/price?code=600519.SH&trade_date=20260430", "/price?code=600519.SH&trade_date=20260430", "/price?code=bad", "/fundamentals?code=000001.SZ"] {
        app.get(path, Some(&key)).await;
        answered += 1;
    }
    // Not metered: no key, a wrong key, health.
    app.get("/price?code=600519", None).await;
    app.get("/price?code=600519", Some("wrong")).await;
    app.get("/healthz", None).await;
    let (status, _, usage) = app.get(&format!("/admin/users/{user_id}/usage"), Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{usage}");
    let user: uuid::Uuid = user_id.parse().unwrap();
    let stopped = app.stop_server().await; // graceful shutdown flushes the usage buffer
    let accounts = stopped.accounts.clone();
    assert_eq!(accounts.usage_count(user).await.unwrap(), answered);
    let rows = accounts.usage_by_day(user, chrono::Utc::now() - chrono::Duration::days(1)).await.unwrap();
    let price = rows.iter().find(|r| r.endpoint == "/price").unwrap();
    assert_eq!(price.requests, 3);
    assert!(price.upstream_cost_pts >= 1, "the first /price paid for its fill");
    assert!(rows.iter().any(|r| r.endpoint == "/fundamentals" && r.upstream_cost_pts >= 1));
    stopped.cleanup().await;
}

async fn health_and_admin_validation(app: TestApp) {
    let (status, _, health) = app.get("/healthz", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["ok"], true);
    assert!(health["version"].is_string());
    assert_eq!(health["checks"]["accounts"]["ok"], true);
    assert_eq!(health["checks"]["warehouse"]["ok"], true);

    let admin = Some(app.admin_token.as_str());
    let (status, body) = app.post("/admin/users", admin, json!({"plan": "gold"})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("plan")));
    let (status, body) = app.post("/admin/users", admin, json!({"rate_limit_per_min": 0})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("rate_limit_per_min")));
    let (status, body) = app.post("/admin/users", admin, json!({"email": "nope"})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("email")));
    let (status, body) = app.post("/admin/users", admin, json!({"surprise": 1})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_input")));
    let response = app.http.post(app.url("/admin/users")).bearer_auth(&app.admin_token).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_input");
    let (status, _) = app.post(&format!("/admin/users/{}/keys/revoke", uuid::Uuid::new_v4()), admin, json!({})).await;
    assert_eq!(status, 404);
    let (status, _, body) = app.get("/admin/users/not-a-uuid/usage", admin).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("user_id")));
    let (status, _, _) = app.get("/no/such/thing", None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn cached_answers_survive_an_outage_and_never_wait_for_other_fills(app: TestApp) {
    let (_, key) = app.user(1000).await;
    let cached = "/price?code=600519.SH&trade_date=20260430";
    let (_, _, before) = app.get(cached, Some(&key)).await;
    let sim = app.running.sandbox.as_ref().unwrap().tushare.clone();

    // While one fill hangs on a slow upstream, an answer for another key comes straight back.
    sim.set_mode(twilight_sandbox::TushareMode::Slow(Duration::from_secs(3)));
    let slow = {
        let (http, url, key) = (app.http.clone(), app.url("/price?code=000858.SZ&trade_date=20260430"), key.clone());
        tokio::spawn(async move { http.get(url).bearer_auth(key).send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, again) = app.get(cached, Some(&key)).await;
    assert_eq!(status, 200);
    assert!(!slow.is_finished(), "the cached answer came back while the other fill was still waiting");
    assert_eq!(again["value"], before["value"]);
    assert_eq!(slow.await.unwrap(), 200);

    // Upstream down: cached keys still answer, uncached ones get a clear 502.
    sim.set_mode(twilight_sandbox::TushareMode::Down);
    assert_eq!(app.get(cached, Some(&key)).await.0, 200);
    let (status, _, body) = app.get("/price?code=000001.SZ&trade_date=20260430", Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_error")), "{body}");
    let (status, _, health) = app.get("/healthz", None).await;
    assert_eq!(status, 200, "an upstream outage is reported, not fatal: {health}");
    assert!(health["checks"]["upstreams"]["tushare"]["last_error"].is_string(), "{health}");
    app.stop().await;
}
