//! `/search` over the sandbox's DashScope, Google and Bocha: cited original URLs, transparent
//! fallback on throttling, quota and outages, budgets that pass a provider over before its quota
//! error, a cache that costs nothing, and usage rows whose cost matches the calls the simulators
//! counted.

mod common;

use std::collections::HashSet;

use serde_json::Value;
use twilight_sandbox::{SearchKind, SearchMode};

use common::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_providers_fall_back_transparently_and_every_call_is_metered() {
    providers_fall_back_transparently_and_every_call_is_metered(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_providers_fall_back_transparently_and_every_call_is_metered() {
    providers_fall_back_transparently_and_every_call_is_metered(Backend::Postgres).await;
}

/// Costs per answered call in these tests (Google's free calls off, so each one shows).
const COSTS: [(SearchKind, i32); 3] = [(SearchKind::DashScope, 1), (SearchKind::Google, 4), (SearchKind::Bocha, 3)];

fn query(text: &str) -> String {
    format!("/search?query={}", urlencode(text))
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn search_ok(app: &TestApp, path: &str, key: &str) -> Value {
    let (status, _, body) = app.get(path, Some(key)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn sources(body: &Value) -> HashSet<String> {
    body["results"].as_array().unwrap().iter().map(|r| r["cite"]["source"].as_str().unwrap().to_string()).collect()
}

async fn providers_fall_back_transparently_and_every_call_is_metered(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |config| {
        config.search.google_cse.free_per_day = 0;
        for (kind, cost) in COSTS {
            match kind {
                SearchKind::DashScope => config.search.dashscope.cost_pts = cost,
                SearchKind::Google => config.search.google_cse.cost_pts = cost,
                SearchKind::Bocha => config.search.bocha.cost_pts = cost,
            }
        }
    })
    .await
    else {
        return;
    };
    let (user_id, key) = app.user(1_000).await;

    // DashScope answers, each result cited with its original URL; snippets are plain text, dates
    // one format, and the page DashScope listed twice is there once.
    let body = search_ok(&app, &format!("{}&max_results=10", query("600519 业绩公告 2026")), &key).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 9, "ten asked, one duplicate merged: {body}");
    let urls: HashSet<&str> = results.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(urls.len(), results.len());
    for result in results {
        let cite = &result["cite"];
        assert_eq!((cite["source"].as_str(), cite["url"].as_str()), (Some("sandbox:dashscope"), result["url"].as_str()), "{result}");
        assert_eq!((cite["table"].as_str(), cite["served_by"].as_str()), (Some("web_search"), Some("twilight-drive-backend")));
        assert!(result["url"].as_str().unwrap().contains(".sandbox.invalid/dashscope/"), "{result}");
        let snippet = result["snippet"].as_str().unwrap();
        assert!(!snippet.contains('<') && !snippet.contains("&amp;") && snippet.contains('&'), "{snippet}");
        assert!(snippet.contains("沙盒模拟"), "a simulator says so: {snippet}");
        let published = chrono::DateTime::parse_from_rfc3339(result["published_at"].as_str().unwrap()).unwrap();
        assert_eq!(published.offset().local_minus_utc(), 8 * 3600);
    }
    assert!(results[0]["title"].as_str().unwrap().starts_with("贵州茅台（600519）"), "{body}");
    let first_id = results[0]["cite"]["tool_call_id"].as_str().unwrap().to_string();

    // The same search again, spelt differently: from the cache, at no cost, no upstream call.
    let again = search_ok(&app, &format!("{}&max_results=10", query("  600519   业绩公告 2026 ")), &key).await;
    assert_eq!(again["results"].as_array().unwrap().len(), 9);
    assert_eq!(app.search_sim(SearchKind::DashScope).calls(), 1);

    // DashScope throttled → Google answers; Google out of quota → Bocha; the answers say who served.
    app.search_sim(SearchKind::DashScope).set_mode(SearchMode::Throttled);
    let body = search_ok(&app, &query("宁德时代 研报"), &key).await;
    assert_eq!(sources(&body), HashSet::from(["sandbox:google_cse".to_string()]), "{body}");
    app.search_sim(SearchKind::Google).set_mode(SearchMode::Quota);
    let body = search_ok(&app, &query("比亚迪 销量"), &key).await;
    assert_eq!(sources(&body), HashSet::from(["sandbox:bocha".to_string()]), "{body}");
    assert_eq!(app.search_sim(SearchKind::DashScope).calls(), 2, "the throttled provider is left alone for its window");
    assert_eq!(app.search_sim(SearchKind::Google).calls(), 2);

    // Every provider down: 503 saying search is unavailable, with when to come back.
    app.search_sim(SearchKind::Bocha).set_mode(SearchMode::Down);
    let (status, headers, body) = app.get(&query("招商银行 分红"), Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("search_unavailable")), "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1 && body["error"]["retry_after_secs"] == retry_after, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("bocha") && message.contains("google_cse"), "{message}");

    // What an admin reads: each provider's state and today's counts.
    let (status, _, admin) = app.get("/admin/search", Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{admin}");
    let state = |name: &str| admin["providers"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!((state("dashscope")["state"].as_str(), state("dashscope")["calls_today"].as_u64()), (Some("open"), Some(2)), "{admin}");
    assert_eq!(state("google_cse")["state"], "exhausted");
    assert_eq!((state("bocha")["state"].as_str(), state("bocha")["answered_today"].as_u64()), (Some("open"), Some(1)));
    let (_, _, health) = app.get("/healthz", None).await;
    assert_eq!(health["checks"]["search"]["ok"], false, "{health}");
    assert_eq!(app.get("/admin/search", Some(&key)).await.0, 403, "a user key cannot read it");

    // The search is traced like every cited answer.
    let traced = app.citation(&first_id).await;
    assert_eq!((traced["endpoint"].as_str(), traced["user_id"].as_str()), (Some("/search"), Some(user_id.as_str())), "{traced}");
    assert_eq!(traced["request"]["query"], "600519 业绩公告 2026");
    assert_eq!(traced["request"]["providers"][0]["outcome"], "answered");
    assert_eq!(traced["values"].as_array().unwrap().len(), 9);

    // Usage: every request metered, and its cost is exactly what the simulators' answered calls cost.
    let expected_cost: i64 = COSTS.iter().map(|(kind, cost)| app.search_sim(*kind).answered() as i64 * i64::from(*cost)).sum();
    assert_eq!(expected_cost, 1 + 4 + 3);
    let user: uuid::Uuid = user_id.parse().unwrap();
    let stopped = app.stop_server().await;
    let rows = stopped.accounts.usage_by_day(user, chrono::Utc::now() - chrono::Duration::days(1)).await.unwrap();
    let search: Vec<_> = rows.iter().filter(|r| r.endpoint == "/search").collect();
    assert_eq!(search.iter().map(|r| r.requests).sum::<i64>(), 5, "{rows:?}");
    assert_eq!(search.iter().map(|r| r.upstream_cost_pts).sum::<i64>(), expected_cost, "{rows:?}");
    stopped.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_passes_the_provider_over_without_calling_it() {
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| config.search.dashscope.daily_budget = 1).await else { return };
    let (_, key) = app.user(1_000).await;
    assert_eq!(sources(&search_ok(&app, &query("贵州茅台"), &key).await), HashSet::from(["sandbox:dashscope".to_string()]));
    assert_eq!(sources(&search_ok(&app, &query("五粮液"), &key).await), HashSet::from(["sandbox:google_cse".to_string()]));
    assert_eq!(app.search_sim(SearchKind::DashScope).calls(), 1, "over its budget, DashScope is not asked");
    let (_, _, admin) = app.get("/admin/search", Some(&app.admin_token)).await;
    assert_eq!(admin["providers"][0]["state"], "over_budget", "{admin}");

    // Nothing found by anyone is an answer, not an error; the empty providers were each asked once.
    for kind in [SearchKind::Google, SearchKind::Bocha] {
        app.search_sim(kind).set_mode(SearchMode::Empty);
    }
    let body = search_ok(&app, &query("没有结果的查询"), &key).await;
    assert_eq!(body["results"], serde_json::json!([]), "{body}");
    assert_eq!((app.search_sim(SearchKind::Google).calls(), app.search_sim(SearchKind::Bocha).calls()), (2, 1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_past_its_timeout_passes_the_search_on() {
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| config.search.timeout_secs = 1).await else { return };
    let (_, key) = app.user(1_000).await;
    app.search_sim(SearchKind::DashScope).set_mode(SearchMode::Slow(std::time::Duration::from_millis(2_500)));
    let started = std::time::Instant::now();
    let body = search_ok(&app, &query("长江电力 分红"), &key).await;
    assert_eq!(sources(&body), HashSet::from(["sandbox:google_cse".to_string()]), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_millis(2_500), "answered without waiting out DashScope");
    let (_, _, admin) = app.get("/admin/search", Some(&app.admin_token)).await;
    assert_eq!(admin["providers"][0]["last_error_message"], "unavailable: timed out", "{admin}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field_and_asks_no_provider() {
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    let (_, key) = app.user(1_000).await;
    let long = "长".repeat(201);
    for (path, field) in [
        ("/search".to_string(), Some("query")),
        ("/search?query=%20%20".to_string(), Some("query")),
        (query(&long), Some("query")),
        (format!("{}&since=yesterday", query("茅台")), Some("since")),
        (format!("{}&since=2999-01-01", query("茅台")), Some("since")),
        (format!("{}&max_results=0", query("茅台")), Some("max_results")),
        (format!("{}&max_results=21", query("茅台")), Some("max_results")),
        (format!("{}&colour=red", query("茅台")), None),
    ] {
        let (status, _, body) = app.get(&path, Some(&key)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str(), body["error"]["field"].as_str()),
            (400, Some("invalid_input"), field),
            "{path}: {body}"
        );
    }
    assert_eq!(app.get(&query("茅台"), None).await.0, 401);
    let asked: u64 = [SearchKind::DashScope, SearchKind::Google, SearchKind::Bocha].iter().map(|k| app.search_sim(*k).calls()).sum();
    assert_eq!(asked, 0);
    // `since` narrows: 2026-04-20 keeps the pages dated from then on (the sandbox dates its pages
    // back from 2026-04-30, five days apart).
    let body = search_ok(&app, &format!("{}&since=2026-04-20", query("600519 公告")), &key).await;
    let dates: Vec<&str> = body["results"].as_array().unwrap().iter().map(|r| r["published_at"].as_str().unwrap()).collect();
    assert!(!dates.is_empty() && dates.iter().all(|d| *d >= "2026-04-20"), "{body}");
    assert_eq!(body["since"], "2026-04-20");
    app.stop().await;
}

#[test]
fn providers_without_keys_are_skipped_and_reported_and_google_leaves_by_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = twilight::cfg::Config::load(None).unwrap();
    config.sandbox.enabled = false;
    config.data_dir = dir.path().to_path_buf();
    let bocha_key = dir.path().join("bocha.key");
    std::fs::write(&bocha_key, "sk-bocha\n").unwrap();
    config.search.bocha.key_file = Some(bocha_key);
    let searcher = twilight::app::searcher(&config, None).unwrap();
    let status: Vec<(&str, &str)> = searcher.status().iter().map(|p| (p.name, p.state)).collect();
    assert_eq!(status, [("bocha", "ready"), ("dashscope", "not_configured"), ("google_cse", "not_configured")]);
    let reasons: Vec<String> = searcher.status().iter().filter_map(|p| p.reason.clone()).collect();
    assert!(reasons[0].contains("TWILIGHT_DASHSCOPE_API_KEY") && reasons[1].contains("TWILIGHT_GOOGLE_CSE_KEY"), "{reasons:?}");

    config.search.order = vec!["dashscope".into(), "bocha".into()];
    let names: Vec<&str> = twilight::app::searcher(&config, None).unwrap().status().iter().map(|p| p.name).collect();
    assert_eq!(names, ["bocha", "dashscope"], "google_cse is gone");
    config.search.order.push("altavista".into());
    assert!(twilight::app::searcher(&config, None).is_err());
}
