//! `GET /metrics`: Prometheus text for an admin token only, counting requests by route and status,
//! upstream calls by source, row-cache hits and misses, rate-limit rejections and the usage buffer,
//! with the accounts DB's states (provisioning jobs, orders, gateways) read at scrape time.

mod common;

use common::{Backend, TestApp};

/// The value of the sample of `name` whose labels include every one of `labels` (`key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|label| rest.contains(label))).then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_upstreams_caches_limits_and_states_for_an_admin() {
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    let (_, key) = app.user(1).await;
    assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 200);
    assert_eq!(app.get("/price?code=600519.SH&trade_date=20260430", Some(&key)).await.0, 429, "one a minute");
    app.running.accounts.create_order(common::pro_order("TWMETRICS0001")).await.unwrap();
    // The other upstream clients count their calls in the same metric: a web search, a TDX request.
    let (_, searcher) = app.user(60).await;
    let (status, _, body) = app.get("/search?query=%E8%8C%85%E5%8F%B0", Some(&searcher)).await;
    assert_eq!(status, 200, "{body}");
    let sims = &app.running.sandbox.as_ref().unwrap().market;
    let pool = twilight_tdx::TdxPool::new(app.config.tdx_pool(vec![sims.tdx_addr.clone()]));
    assert!(pool.security_count(twilight_tdx::Market::Shanghai).await.unwrap() > 0);

    // Not public: no token, a user's key, and an admin token.
    let url = app.url("/metrics");
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(app.http.get(&url).bearer_auth(&key).send().await.unwrap().status(), 403);
    let response = app.http.get(&url).bearer_auth(&app.admin_token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    eprintln!("{text}");

    let at_least_one = |name: &str, labels: &[&str]| {
        let value = sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"));
        assert!(value >= 1.0, "{name} {labels:?} = {value}");
    };
    at_least_one("twilight_http_requests_total", &[r#"route="/price""#, r#"status="200""#, r#"method="GET""#]);
    at_least_one("twilight_http_requests_total", &[r#"route="/price""#, r#"status="429""#]);
    at_least_one("twilight_http_request_duration_seconds_count", &[r#"route="/price""#]);
    at_least_one("twilight_rate_limited_total", &[]);
    at_least_one("twilight_upstream_calls_total", &[r#"source="tushare""#, r#"outcome="ok""#]);
    at_least_one("twilight_upstream_call_duration_seconds_count", &[r#"source="tushare""#]);
    at_least_one("twilight_upstream_calls_total", &[r#"source="dashscope""#, r#"outcome="ok""#]);
    at_least_one("twilight_upstream_calls_total", &[r#"source="tdx""#, r#"outcome="ok""#]);
    at_least_one("twilight_upstream_call_duration_seconds_count", &[r#"source="tdx""#]);
    at_least_one("twilight_cache_lookups_total", &[r#"cache="day_rows""#, r#"result="miss""#]);
    assert!(sample(&text, "twilight_usage_pending_rows", &[]).is_some(), "{text}");
    assert_eq!(sample(&text, "twilight_orders", &[r#"state="pending""#]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "twilight_orders", &[r#"state="paid""#]), Some(0.0), "every state is stated");
    assert_eq!(sample(&text, "twilight_provisioning_jobs", &[r#"state="awaiting_scan""#]), Some(0.0), "{text}");
    app.stop().await;
}
