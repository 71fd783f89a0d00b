//! The production Tushare client against the sandbox simulator, over real HTTP.

use std::time::Duration;

use serde_json::{Map, Value};
use twilight_market::{MarketError, TushareClient, TushareConfig};
use twilight_sandbox::{TushareMode, TushareSim};

const TOKEN: &str = "client-test-token";

async fn sandbox() -> (TushareSim, String) {
    let sim = TushareSim::new(TOKEN);
    let (addr, _) = twilight_sandbox::serve(sim.router(), 0).await.unwrap();
    (sim, format!("http://{addr}"))
}

fn client(base_url: &str, token: &str, timeout: Duration, throttle_backoff: Vec<Duration>) -> TushareClient {
    TushareClient::new(TushareConfig { base_url: base_url.into(), token: token.to_string().into(), timeout, throttle_backoff }).unwrap()
}

fn params(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect()
}

#[tokio::test]
async fn follows_has_more_until_the_answer_is_complete() {
    let (sim, url) = sandbox().await;
    let tushare = client(&url, TOKEN, Duration::from_secs(10), vec![]);
    let whole = tushare.query("stock_basic", params(&[("list_status", "L")]), &["ts_code", "name"]).await.unwrap();
    assert_eq!(sim.calls_for("stock_basic"), 1);
    assert!(whole.table.len() >= 5_000, "{}", whole.table.len());
    assert_eq!(whole.source, "sandbox:tushare");
    assert_eq!(whole.cost_pts, 1);

    sim.set_page_size(Some(1_000));
    let paged = tushare.query("stock_basic", params(&[("list_status", "L")]), &["ts_code", "name"]).await.unwrap();
    let pages = whole.table.len().div_ceil(1_000) as u64;
    assert_eq!(sim.calls_for("stock_basic") - 1, pages);
    assert_eq!(paged.cost_pts as u64, pages);
    assert_eq!(paged.table, whole.table, "pages concatenate to the unpaged answer");
}

#[tokio::test]
async fn error_codes_become_actionable_errors() {
    let (sim, url) = sandbox().await;
    let bad_token = client(&url, "wrong", Duration::from_secs(10), vec![]);
    let err = bad_token.query("daily", params(&[("ts_code", "600519.SH")]), &[]).await.unwrap_err();
    assert!(matches!(err, MarketError::UpstreamAuth { .. }), "{err:?}");
    assert!(!err.to_string().contains("wrong"), "the token never appears in errors: {err}");

    let tushare = client(&url, TOKEN, Duration::from_secs(10), vec![]);
    let err = tushare.query("no_such_api", Map::new(), &[]).await.unwrap_err();
    assert!(matches!(err, MarketError::UpstreamPermission { .. }), "{err:?}");

    sim.set_mode(TushareMode::Down);
    let err = tushare.query("daily", params(&[("ts_code", "600519.SH")]), &[]).await.unwrap_err();
    assert!(matches!(&err, MarketError::Upstream { message, .. } if message.contains("503")), "{err:?}");
}

#[tokio::test]
async fn throttling_is_retried_after_the_backoff_then_reported() {
    let (sim, url) = sandbox().await;
    sim.set_mode(TushareMode::Throttled);
    let tushare = client(&url, TOKEN, Duration::from_secs(10), vec![Duration::from_millis(20), Duration::from_millis(40)]);
    let err = tushare.query("daily", params(&[("ts_code", "600519.SH")]), &[]).await.unwrap_err();
    assert!(matches!(err, MarketError::Throttled { .. }), "{err:?}");
    assert_eq!(sim.calls_for("daily"), 3, "one call and two retries");

    // A throttle that lifts during the backoff is invisible to the caller.
    sim.set_mode(TushareMode::Throttled);
    let waiting =
        tokio::spawn(async move { tushare.query("daily", params(&[("ts_code", "600519.SH"), ("trade_date", "20260430")]), &[]).await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    sim.set_mode(TushareMode::Normal);
    let fetched = waiting.await.unwrap().unwrap();
    assert_eq!(fetched.table.len(), 1);
}

#[tokio::test]
async fn a_slow_upstream_times_out() {
    let (sim, url) = sandbox().await;
    sim.set_mode(TushareMode::Slow(Duration::from_secs(5)));
    let tushare = client(&url, TOKEN, Duration::from_millis(200), vec![]);
    let err = tushare.query("trade_cal", Map::new(), &[]).await.unwrap_err();
    assert!(matches!(err, MarketError::Timeout { .. }), "{err:?}");
}
