//! What Tushare does not list — US tickers, Hong Kong, FX — priced by Yahoo Finance through the
//! same `/price` (and so the same MCP `price` tool), with Yahoo's cite; A-shares stay Tushare's
//! whichever spelling names them.

mod common;

use serde_json::Value;
use twilight_sandbox::YahooMode;

use common::{Backend, TestApp};

async fn get_ok(app: &TestApp, path: &str, key: &str) -> Value {
    let (status, _, body) = app.get(path, Some(key)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn us_hong_kong_and_fx_symbols_are_priced_by_yahoo() {
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    let (_, key) = app.user(1_000).await;
    let yahoo = &app.running.sandbox.as_ref().unwrap().market.yahoo;

    let aapl = get_ok(&app, "/price?code=aapl", &key).await;
    assert_eq!(
        (aapl["code"].as_str(), aapl["name"].as_str(), aapl["unit"].as_str()),
        (Some("AAPL"), Some("Apple Inc."), Some("USD")),
        "{aapl}"
    );
    assert!(aapl["value"].as_f64().unwrap() > 100.0);
    let cite = &aapl["cite"];
    assert_eq!((cite["source"].as_str(), cite["table"].as_str()), (Some("sandbox:yahoo"), Some("yahoo_daily")), "{aapl}");
    let as_of = aapl["as_of"].as_str().unwrap().to_string();

    for (code, normalised, unit) in [("00700", "0700.HK", "HKD"), ("0700.HK", "0700.HK", "HKD"), ("USDCNY=X", "USDCNY=X", "CNY")] {
        let body = get_ok(&app, &format!("/price?code={code}"), &key).await;
        assert_eq!((body["code"].as_str(), body["unit"].as_str()), (Some(normalised), Some(unit)), "{body}");
    }

    // The day just answered, by date and for other metrics: from what the first call kept.
    let calls = yahoo.calls();
    let close = get_ok(&app, &format!("/price?code=AAPL&trade_date={as_of}"), &key).await;
    assert_eq!(close["value"], aapl["value"]);
    let change = get_ok(&app, &format!("/price?code=AAPL&trade_date={as_of}&metric=pct_chg"), &key).await;
    assert_eq!(change["unit"], "%");
    assert!(change["value"].as_f64().unwrap().abs() < 20.0, "{change}");
    let vol = get_ok(&app, &format!("/price?code=AAPL&trade_date={as_of}&metric=vol"), &key).await;
    assert_eq!(vol["unit"], "shares");
    assert_eq!(yahoo.calls(), calls, "no new chart call for a day the warehouse holds");

    // Clear refusals, naming what is wrong.
    let (status, _, body) = app.get("/price?code=AAPL&metric=pe_ttm", Some(&key)).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("metric")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Yahoo"), "{body}");
    let (status, _, body) = app.get("/price?code=ZZZZ", Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("ZZZZ"), "{body}");

    // An A-share in Yahoo's spelling is still Tushare's.
    let moutai = get_ok(&app, "/price?code=600519.SS", &key).await;
    assert_eq!((moutai["code"].as_str(), moutai["cite"]["source"].as_str()), (Some("600519.SH"), Some("sandbox:tushare")));

    // The answer is traceable like any other.
    let traced = app.citation(aapl["cite"]["tool_call_id"].as_str().unwrap()).await;
    let value = &traced["values"][0];
    assert_eq!(value["key"], serde_json::json!({"symbol": "AAPL", "trade_date": as_of}), "{traced}");
    assert_eq!(value["warehouse_now"]["value"], aapl["value"]);

    // Throttled: 429 is a failure of the source, left alone for the breaker window.
    yahoo.set_mode(YahooMode::Throttled);
    let (status, _, body) = app.get("/price?code=BABA", Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("upstream_throttled")), "{body}");
    let before = yahoo.calls();
    let (status, headers, body) = app.get("/price?code=BABA", Some(&key)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(yahoo.calls(), before, "not asked again within the window");
    app.stop().await;
}
