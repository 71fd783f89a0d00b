//! A Tushare outage over a warehouse older than its refresh age: answers come from the warehouse,
//! marked stale with their true age, and the dead upstream is asked once per breaker window.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use twilight_market::Warehouse;
use twilight_sandbox::{Fault, TdxMode, TushareMode};

use common::{Backend, TestApp};

const BREAKER_SECS: u64 = 2;
/// How far the test ages every stored row: past the one-day refresh age of reference data.
const AGED_SECS: i64 = 2 * 24 * 3600;

fn total_calls(app: &TestApp) -> u64 {
    ["stock_basic", "trade_cal", "daily", "daily_basic", "fina_indicator"].iter().map(|api| app.tushare_calls(api)).sum()
}

/// Breaker windows begun since `start`: the most upstream attempts one dead source may cost.
fn windows_begun(start: Instant) -> u64 {
    start.elapsed().as_secs() / BREAKER_SECS + 1
}

async fn get_ok(app: &TestApp, path: &str, key: &str) -> Value {
    let (status, _, body) = app.get(path, Some(key)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tushare_outage_over_an_aged_warehouse_answers_stale_and_asks_once_per_window() {
    // A first server fills the warehouse, which then ages two days on the shelf.
    let Some(first) = TestApp::start(Backend::Sqlite).await else { return };
    let (_, key) = first.user(1_000).await;
    let fresh = get_ok(&first, "/price?code=600519.SH", &key).await;
    assert_eq!(fresh["cite"]["stale"], false, "{fresh}");
    get_ok(&first, "/price?code=000001.SZ&trade_date=20260429", &key).await;
    get_ok(&first, "/fundamentals?code=600519.SH", &key).await;
    let warehouse_path = first.config.warehouse_path();
    let data_dir = first.data_dir();
    let stopped = first.stop_server().await;
    {
        let warehouse = Warehouse::open(&warehouse_path).unwrap();
        let tables: Vec<&str> = warehouse.row_counts().unwrap().into_iter().map(|(table, _)| table).collect();
        let aging: String =
            tables.iter().map(|table| format!("UPDATE {table} SET fetched_at = fetched_at - INTERVAL {AGED_SECS} SECOND;")).collect();
        warehouse.read(|conn| conn.execute_batch(&aging)).unwrap();
    }

    // A second server on that warehouse, and Tushare is down.
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| {
        config.data_dir = data_dir.clone();
        config.warehouse_path = Some(warehouse_path.clone());
        config.tushare.breaker_secs = BREAKER_SECS;
    })
    .await
    else {
        return;
    };
    app.running.sandbox.as_ref().unwrap().market.tushare.set_mode(TushareMode::Down);
    app.running.sandbox.as_ref().unwrap().market.aktools.set_fault(Fault::Down);

    let before = total_calls(&app);
    let outage_began = Instant::now();
    let price = get_ok(&app, "/price?code=600519.SH", &key).await;
    assert_eq!((price["cite"]["stale"].as_bool(), price["value"].clone()), (Some(true), fresh["value"].clone()), "{price}");
    assert!(price["cite"]["cache_age_seconds"].as_i64().unwrap() >= AGED_SECS, "{price}");
    assert_eq!(price["cite"]["source"], "sandbox:tushare");
    // Not stored for the latest day, and TDX down too: the newest row the warehouse has, with the
    // day it is for.
    let tdx = &app.running.sandbox.as_ref().unwrap().market.tdx;
    tdx.set_mode(TdxMode::Drop);
    let last_row = get_ok(&app, "/price?code=000001.SZ", &key).await;
    assert_eq!((last_row["as_of"].as_str(), last_row["cite"]["stale"].as_bool()), (Some("20260429"), Some(true)), "{last_row}");
    assert_eq!(last_row["cite"]["source"], "sandbox:tushare");
    let fundamentals = get_ok(&app, "/fundamentals?code=600519.SH", &key).await;
    let claims = fundamentals["claims"].as_array().unwrap();
    assert!(!claims.is_empty() && claims.iter().all(|claim| claim["cite"]["stale"] == true), "{fundamentals}");
    assert!(claims.iter().any(|claim| claim["metric"] == "industry"), "AKTools down too: the kept profile, stale: {fundamentals}");
    // A day neither the warehouse nor TDX can give cannot be made up: refused at once, saying when
    // to come back.
    let (status, headers, body) = app.get("/price?code=000001.SZ&trade_date=20260428", Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{body}");
    assert_eq!(headers["retry-after"], BREAKER_SECS.to_string().as_str());
    tdx.set_mode(TdxMode::Normal);
    for _ in 0..10 {
        get_ok(&app, "/price?code=600519.SH", &key).await;
    }
    // Fourteen requests, one attempt per window begun: a slow machine may have started a second.
    let attempts = total_calls(&app) - before;
    assert!((1..=windows_begun(outage_began)).contains(&attempts), "{attempts} attempts in {:?}", outage_began.elapsed());

    tokio::time::sleep(Duration::from_millis(BREAKER_SECS * 1000 + 300)).await;
    for _ in 0..10 {
        get_ok(&app, "/price?code=600519.SH", &key).await;
    }
    let attempts = total_calls(&app) - before;
    assert!((2..=windows_begun(outage_began)).contains(&attempts), "{attempts} attempts in {:?}", outage_began.elapsed());

    // TDX back (its failure above rested it for a second), Tushare not: a day never stored is TDX's,
    // marked so; a valuation TDX does not have is not.
    let latest = get_ok(&app, "/price?code=000001.SZ", &key).await;
    let cite = &latest["cite"];
    assert_eq!((cite["source"].as_str(), cite["fallback_from"].as_str()), (Some("sandbox:tdx"), Some("tushare")), "{latest}");
    assert!(latest["as_of"].as_str().unwrap() > "20260429", "TDX's last closed session: {latest}");
    let standing_in = get_ok(&app, "/price?code=000001.SZ&trade_date=20260427", &key).await;
    assert_eq!(
        (standing_in["cite"]["source"].as_str(), standing_in["cite"]["fallback_from"].as_str()),
        (Some("sandbox:tdx"), Some("tushare"))
    );
    let (status, _, _) = app.get("/price?code=000001.SZ&trade_date=20260427&metric=pe_ttm", Some(&key)).await;
    assert_eq!(status, 503);

    // Tushare is back: after the window the stock list is refreshed and answers are fresh again.
    app.running.sandbox.as_ref().unwrap().market.tushare.set_mode(TushareMode::Normal);
    tokio::time::sleep(Duration::from_millis(BREAKER_SECS * 1000 + 300)).await;
    let price = get_ok(&app, "/price?code=600519.SH", &key).await;
    assert_eq!(price["cite"]["stale"], false, "{price}");
    let back = get_ok(&app, "/price?code=000001.SZ&trade_date=20260427", &key).await;
    assert_eq!((back["cite"]["source"].as_str(), back["value"].clone()), (Some("sandbox:tushare"), standing_in["value"].clone()), "{back}");
    assert!(back["cite"].get("fallback_from").is_none());
    assert_eq!(back["cite"]["agreement"], serde_json::json!({"tdx": "match"}), "TDX's bar kept beside Tushare's");
    let (_, _, health) = app.get("/healthz", None).await;
    assert!(health["checks"]["upstreams"]["tushare"]["last_error"].is_string(), "{health}");
    app.stop().await;
    stopped.cleanup().await;
}
