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
    an_expired_subscription_answers_402_with_its_renewal_link,
    admins_list_and_inspect_users_and_revoke_admin_tokens,
    every_response_carries_its_request_id_and_the_security_headers,
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
    let cases: [(&str, u16, &str, Option<&str>); 16] = [
        ("/price", 400, "invalid_input", Some("code")),
        ("/price?code=a%20b", 400, "invalid_input", Some("code")),
        ("/price?code=6005190", 400, "invalid_input", Some("code")),
        ("/price?code=%E8%8C%85%E5%8F%B0", 400, "invalid_input", Some("code")),
        // Not an A-share but spelt like a symbol Yahoo might list: Yahoo says it does not.
        ("/price?code=abc", 404, "not_found", None),
        ("/price?code=600519.XX", 404, "not_found", None),
        ("/fundamentals?code=AAPL", 400, "invalid_input", Some("code")),
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
    for path in [
        "/price?code=600519.SH&trade_date=20260430",
        "/price?code=600519.SH&trade_date=20260430",
        "/price?code=bad",
        "/fundamentals?code=000001.SZ",
    ] {
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
    let response = app
        .http
        .post(app.url("/admin/users"))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
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
    let sim = app.running.sandbox.as_ref().unwrap().market.tushare.clone();

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

    // Upstream down: cached keys still answer; an uncached day is TDX's, saying so; with TDX down
    // too, a clear 503 (Tushare's breaker is open after its first failure).
    sim.set_mode(twilight_sandbox::TushareMode::Down);
    assert_eq!(app.get(cached, Some(&key)).await.0, 200);
    let (status, _, body) = app.get("/price?code=000001.SZ&trade_date=20260430", Some(&key)).await;
    assert_eq!(
        (status, body["cite"]["source"].as_str(), body["cite"]["fallback_from"].as_str()),
        (200, Some("sandbox:tdx"), Some("tushare")),
        "{body}"
    );
    app.running.sandbox.as_ref().unwrap().market.tdx.set_mode(twilight_sandbox::TdxMode::Drop);
    // (The stand-in kept TDX's two weeks before that day; a day before those is fetched anew.)
    let (status, _, body) = app.get("/price?code=000001.SZ&trade_date=20260331", Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{body}");
    let (status, _, health) = app.get("/healthz", None).await;
    assert_eq!(status, 200, "an upstream outage is reported, not fatal: {health}");
    assert!(health["checks"]["upstreams"]["tushare"]["last_error"].is_string(), "{health}");
    app.stop().await;
}

/// A user created through the admin API whose paid period ends at `paid_until`.
async fn paying_user(app: &TestApp, paid_until: chrono::DateTime<chrono::Utc>) -> (uuid::Uuid, String) {
    let body = json!({"plan": "pro", "rate_limit_per_min": 60, "paid_until": paid_until});
    let (status, body) = app.post("/admin/users", Some(&app.admin_token), body).await;
    assert_eq!(status, 201, "{body}");
    (body["user"]["user_id"].as_str().unwrap().parse().unwrap(), body["api_key"].as_str().unwrap().to_string())
}

async fn an_expired_subscription_answers_402_with_its_renewal_link(app: TestApp) {
    let price = "/price?code=600519.SH&trade_date=20260430";
    let now = chrono::Utc::now();
    // The embedded default's grace is three days: a period that ended two days ago still serves.
    let (_, in_grace) = paying_user(&app, now - chrono::Duration::days(2)).await;
    assert_eq!(app.get(price, Some(&in_grace)).await.0, 200);

    // Ended four days ago: refused at once from the cached key entry, before any scheduler ran,
    // on the data plane and the LLM relay alike, with the link the bot shows its owner.
    let (lapsed_id, lapsed) = paying_user(&app, now - chrono::Duration::days(4)).await;
    let (status, _, body) = app.get(price, Some(&lapsed)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("subscription_expired")), "{body}");
    let renew_url = body["error"]["renew_url"].as_str().expect("a renewal link").to_string();
    let code = app.running.accounts.user(lapsed_id).await.unwrap().unwrap().renewal_code;
    assert_eq!(renew_url, app.url(&format!("/renew/{code}")));
    let (status, _, body) = app.get("/llm/v1/models", Some(&lapsed)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("subscription_expired")), "{body}");

    // Time passes (a simulated clock for the scheduler's pass): the lifecycle expires both; the
    // cached entry of the key still in grace is dropped through the revocation epoch.
    let lifecycle = app.config.lifecycle();
    let report = lifecycle.run_once(&*app.running.accounts, now + chrono::Duration::days(2)).await.unwrap();
    assert_eq!(report, twilight::scheduler::LifecycleReport { expired: 2, retired: 0 });
    let started = Instant::now();
    while app.get(price, Some(&in_grace)).await.0 != 402 {
        assert!(started.elapsed() < Duration::from_secs(2), "expiry not noticed within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The renewal page names the plan and the end of the period, and its button places a renewal.
    let page = app.http.get(&renew_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"data-plan="pro""#) && html.contains(r#"data-expired="true""#), "{html}");
    assert!(html.contains(&twilight_core::china_minute(now - chrono::Duration::days(4))), "{html}");
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let placed = no_redirects.post(&renew_url).form(&[("lang", "en")]).send().await.unwrap();
    assert_eq!(placed.status(), 303);
    assert_eq!(placed.headers()["location"].to_str().unwrap(), "/onboard?lang=en");
    assert!(placed.headers()["set-cookie"].to_str().unwrap().starts_with("twilight_onboard="));
    assert_eq!(no_redirects.get(app.url("/renew/0123456789abcdef0123456789abcdef")).send().await.unwrap().status(), 404);
    assert_eq!(no_redirects.get(app.url("/renew/junk")).send().await.unwrap().status(), 404);
    app.stop().await;
}

async fn admins_list_and_inspect_users_and_revoke_admin_tokens(app: TestApp) {
    let admin = Some(app.admin_token.as_str());
    let (alpha_id, alpha_key) = app.user(60).await;
    let (lapsed_id, _) = paying_user(&app, chrono::Utc::now() - chrono::Duration::days(10)).await;
    app.config.lifecycle().run_once(&*app.running.accounts, chrono::Utc::now()).await.unwrap();

    let (status, _, body) = app.get("/admin/users", admin).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [lapsed_id.to_string().as_str(), alpha_id.as_str()], "newest first");
    let (_, _, body) = app.get("/admin/users?status=expired", admin).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 1);
    assert_eq!(body["users"][0]["status"], "expired");
    let (_, _, body) = app.get("/admin/users?limit=1&offset=1", admin).await;
    assert_eq!(body["users"][0]["user_id"].as_str(), Some(alpha_id.as_str()));
    for (query, field) in [("status=gold", "status"), ("limit=0", "limit"), ("limit=501", "limit"), ("offset=-1", "offset")] {
        let (status, _, body) = app.get(&format!("/admin/users?{query}"), admin).await;
        assert_eq!((status, body["error"]["field"].as_str()), (400, Some(field)), "{query}: {body}");
    }
    let (status, _, body) = app.get("/admin/users", Some(&alpha_key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));

    // One user: the expiry's suspend job is open, no bot, no payment.
    let (status, _, body) = app.get(&format!("/admin/users/{lapsed_id}"), admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["user"]["status"].as_str(), body["user"]["plan"].as_str()), (Some("expired"), Some("pro")));
    assert_eq!(body["open_jobs"][0]["kind"], "suspend");
    assert_eq!((body["profile"].is_null(), body["last_payment"].is_null()), (true, true));
    assert_eq!(app.get("/admin/users/not-a-uuid", admin).await.0, 400);
    assert_eq!(app.get(&format!("/admin/users/{}", uuid::Uuid::new_v4()), admin).await.0, 404);

    // Admin tokens are listed by hash and revoked by it, at once.
    let second = twilight_core::RawToken::generate();
    app.running.accounts.insert_admin_token(&second.hash(), "second").await.unwrap();
    assert_eq!(app.get("/admin/users", Some(second.expose())).await.0, 200);
    let (_, _, body) = app.get("/admin/tokens", admin).await;
    let hashes: Vec<&str> = body["tokens"].as_array().unwrap().iter().map(|t| t["token_hash"].as_str().unwrap()).collect();
    assert!(hashes.contains(&second.hash().as_str()) && hashes.contains(&twilight_core::token::hash_hex(&app.admin_token).as_str()));
    assert!(!body.to_string().contains(second.expose()), "a listing never shows a token");
    let revoke = format!("/admin/tokens/{}/revoke", second.hash());
    let (status, body) = app.post(&revoke, admin, json!({})).await;
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)));
    let (status, _, body) = app.get("/admin/users", Some(second.expose())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("revoked_key")));
    assert_eq!(app.post(&revoke, admin, json!({})).await.0, 404);
    let (status, body) = app.post("/admin/tokens/xyz/revoke", admin, json!({})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("token_hash")));

    // /healthz reports each host's gateways as its provisioner last counted them: one down, or a
    // count gone stale, says so there without failing the data plane.
    let (_, _, health) = app.get("/healthz", None).await;
    assert_eq!(health["checks"]["gateways"], json!({"ok": true, "hosts": []}));
    let census = |running, minutes_ago| twilight_accounts::GatewayCensus {
        host: "gw-1".into(),
        expected: 2,
        running,
        gateway_slots: 10,
        observed_at: chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
    };
    for (running, minutes_ago, ok) in [(1, 0, false), (2, 0, true), (2, 10, false)] {
        app.running.accounts.record_gateway_census(&census(running, minutes_ago)).await.unwrap();
        let (status, _, health) = app.get("/healthz", None).await;
        let gateways = &health["checks"]["gateways"];
        assert_eq!((status, gateways["ok"].as_bool()), (200, Some(ok)), "{gateways}");
        assert_eq!((gateways["hosts"][0]["expected"].as_i64(), gateways["hosts"][0]["running"].as_i64()), (Some(2), Some(running.into())));
    }
    app.stop().await;
}

async fn every_response_carries_its_request_id_and_the_security_headers(app: TestApp) {
    common::captured_logs();
    let (_, headers, _) = app.get("/healthz", None).await;
    let minted = headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(minted).is_ok(), "{minted}");
    // A caller's id is kept and sent back, errors included.
    let echoed = app.http.get(app.url("/no-such-page")).header("x-request-id", "trace-abc-123").send().await.unwrap();
    assert_eq!((echoed.status().as_u16(), echoed.headers()["x-request-id"].to_str().unwrap()), (404, "trace-abc-123"));

    // Every response carries the security headers; static assets keep their own caching.
    for path in ["/", "/healthz", "/no-such-page", "/renew/0123456789abcdef0123456789abcdef", "/static/site.css"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(header("content-security-policy").contains("script-src 'self'"), "{path}");
        assert_eq!(
            (header("x-frame-options"), header("x-content-type-options"), header("referrer-policy")),
            ("DENY".into(), "nosniff".into(), "no-referrer".into()),
            "{path}"
        );
        let caching = if path.starts_with("/static/") { "public, max-age=3600" } else { "no-store" };
        assert_eq!(header("cache-control"), caching, "{path}");
    }

    // A data request's log lines name the request, its route and its user, never the key.
    let (user_id, key) = app.user(60).await;
    let request_id = format!("trace-{}", uuid::Uuid::new_v4().simple());
    let answered = app
        .http
        .get(app.url("/price?code=600519.SH&trade_date=20260430"))
        .bearer_auth(&key)
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let logs = String::from_utf8_lossy(&common::captured_logs().lock().unwrap()).into_owned();
    let lines: Vec<&str> = logs.lines().filter(|line| line.contains(&request_id)).collect();
    assert!(!lines.is_empty(), "no log line carries the request id");
    assert!(lines.iter().any(|line| line.contains(&user_id) && line.contains("/price")), "{lines:?}");
    assert!(!logs.contains(&key), "a key reached the logs");
    app.stop().await;
}
