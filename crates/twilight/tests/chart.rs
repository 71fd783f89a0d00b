//! Charts from the warehouse, served as `GET /chart` (a PNG with its cite in headers) and as the MCP
//! `chart` tool (an image block and a text cite): the missing sessions of a range come from one
//! upstream call per (code, table) and then never again; bad input names its field; both are
//! metered and traced like every data answer.

mod common;

use serde_json::{json, Value};

use common::{Backend, TestApp};

/// Width and height from a PNG's IHDR, after checking its signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

async fn chart(app: &TestApp, key: &str, query: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = app.http.get(app.url(&format!("/chart?{query}"))).bearer_auth(key).send().await.unwrap();
    (response.status().as_u16(), response.headers().clone(), response.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_is_drawn_from_the_warehouse_and_cited() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let (user_id, key) = app.user(1000).await;

    let (status, headers, png) = chart(&app, &key, "code=600519.SH").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(png_size(&png), (1080, 720));
    assert!(png.len() <= 200 * 1024, "{} bytes", png.len());
    let cite: Value = serde_json::from_str(headers["x-cite"].to_str().unwrap()).unwrap();
    assert_eq!((cite["source"].as_str(), cite["table"].as_str()), (Some("sandbox:tushare"), Some("daily")), "{cite}");
    let range = headers["x-chart-range"].to_str().unwrap();
    let (from, through) = range.split_once("..").unwrap();
    let days = (twilight_core::parse_date(through).unwrap() - twilight_core::parse_date(from).unwrap()).num_days();
    assert!((350..=366).contains(&days), "a year: {range}");
    // The year's missing sessions came from one range call; drawing it again calls nothing.
    assert_eq!(app.tushare_calls("daily"), 1);
    let (status, _, again) = chart(&app, &key, "code=600519&range=1y").await;
    assert_eq!((status, app.tushare_calls("daily")), (200, 1));
    assert_eq!(png_size(&again), (1080, 720));
    // A shorter range of the same code is already stored.
    assert_eq!(chart(&app, &key, "code=600519.SH&range=3m").await.0, 200);
    assert_eq!(app.tushare_calls("daily"), 1);

    // The cite traces to who asked and the last value drawn, with the row it was read from.
    let traced = app.citation(cite["tool_call_id"].as_str().unwrap()).await;
    assert_eq!((traced["endpoint"].as_str(), traced["user_id"].as_str()), (Some("/chart"), Some(user_id.as_str())), "{traced}");
    assert_eq!(traced["request"], json!({"code": "600519.SH", "metric": "close", "range": "1y", "compare": []}));
    let last = &traced["values"][0];
    assert_eq!((last["key"]["ts_code"].as_str(), last["key"]["trade_date"].as_str()), (Some("600519.SH"), Some(through)), "{last}");
    assert_eq!(last["warehouse_now"]["value"], last["value"], "{last}");

    // Compared with three codes, and a valuation over five years from daily_basic.
    let (status, headers, png) = chart(&app, &key, "code=600519.SH&compare=000858.SZ,000001.SZ,600036.SH&range=1y").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert_eq!(png_size(&png), (1080, 720));
    assert_eq!(app.tushare_calls("daily"), 4, "one range call per compared code");
    assert!(headers.get("x-cite").is_some());
    let (status, headers, _) = chart(&app, &key, "code=600519.SH&metric=pe_ttm&range=5y").await;
    assert_eq!(status, 200);
    assert_eq!((app.tushare_calls("daily_basic"), app.tushare_calls("daily")), (1, 4));
    let cite: Value = serde_json::from_str(headers["x-cite"].to_str().unwrap()).unwrap();
    assert_eq!(cite["table"], "daily_basic");

    // What Yahoo prices: one chart call for the range, then the warehouse.
    let yahoo = &app.running.sandbox.as_ref().unwrap().market.yahoo;
    let (status, headers, png) = chart(&app, &key, "code=AAPL&range=3m").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    let cite: Value = serde_json::from_str(headers["x-cite"].to_str().unwrap()).unwrap();
    assert_eq!((cite["source"].as_str(), cite["table"].as_str()), (Some("sandbox:yahoo"), Some("yahoo_daily")), "{cite}");
    let charted = yahoo.calls();
    assert_eq!(chart(&app, &key, "code=AAPL&range=1m").await.0, 200);
    assert_eq!(yahoo.calls(), charted, "a month of a stored quarter needs no call");

    // Bad input: 400 naming the field, and nothing drawn or fetched.
    for (query, field) in [
        ("metric=close", "code"),
        ("code=60051", "code"),
        ("code=600519.SH&metric=eps", "metric"),
        ("code=600519.SH&metric=vol", "metric"),
        ("code=600519.SH&range=2w", "range"),
        ("code=600519.SH&compare=000858.SZ,000001.SZ,600036.SH,601318.SH", "compare"),
        ("code=600519.SH&compare=60051", "compare"),
        ("code=600519.SH&colour=red", ""),
    ] {
        let (status, headers, body) = chart(&app, &key, query).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, headers["content-type"].to_str().unwrap()), (400, "application/json"), "{query}: {body}");
        assert_eq!(body["error"]["field"].as_str().unwrap_or_default(), field, "{query}: {body}");
    }
    assert_eq!((app.tushare_calls("daily"), app.tushare_calls("daily_basic")), (4, 1));
    // Auth as on every data endpoint.
    assert_eq!(app.http.get(app.url("/chart?code=600519.SH")).send().await.unwrap().status(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_listing_is_charted_from_its_first_day_with_a_note() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let (_, key) = app.user(1000).await;
    // A stock listed within the last five years, not in its first month.
    let market = &app.running.market;
    let today = chrono::Utc::now().date_naive();
    let window = (today - chrono::Months::new(59))..(today - chrono::Months::new(24));
    let mut recent = None;
    for code in market.listed().await.unwrap() {
        if market.stock(code).await.unwrap().list_date.is_some_and(|listed| window.contains(&listed)) {
            recent = Some(code.to_string());
            break;
        }
    }
    let code = recent.expect("the sandbox lists stocks until 2024");
    let code = code.as_str();
    let (status, headers, png) = chart(&app, &key, &format!("code={code}&range=5y")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    let notes = headers["x-chart-notes"].to_str().unwrap();
    assert!(notes.contains(code) && notes.contains("was listed on"), "{notes}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_tool_answers_an_image_and_its_cite() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let (_, key) = app.user(1000).await;
    let steps = json!([
        {"call": "chart", "arguments": {"code": "600519.SH", "range": "6m", "compare": "000858.SZ"}},
        {"call": "chart", "arguments": {"code": "600519.SH", "range": "10y"}},
    ]);
    let Some(seen) = common::mcp_client(&app, &key, steps).await else { return };
    let drawn = &seen["steps"][0]["calls"][0];
    assert_eq!(drawn["is_error"], false, "{drawn}");
    let image = &drawn["images"][0];
    assert_eq!(image["mime"], "image/png", "{drawn}");
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(image["data"].as_str().unwrap()).unwrap();
    assert_eq!(png_size(&png), (1080, 720));
    let cite: Value = serde_json::from_str(drawn["text"].as_str().unwrap()).unwrap();
    assert_eq!((cite["range"].as_str(), cite["lines"].as_array().unwrap().len()), (Some("6m"), 2), "{cite}");
    assert_eq!(cite["cite"]["source"], "sandbox:tushare");
    let traced = app.citation(cite["cite"]["tool_call_id"].as_str().unwrap()).await;
    assert_eq!(traced["endpoint"], "mcp:chart");
    let refused = &seen["steps"][1]["calls"][0];
    assert_eq!((refused["is_error"].as_bool(), refused["structured"]["error"]["field"].as_str()), (Some(true), Some("range")), "{refused}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_tushare_is_down_tdx_bars_draw_the_chart() {
    let app = TestApp::start(Backend::Sqlite).await.unwrap();
    let (_, key) = app.user(1000).await;
    // The stock list and the calendar are stored by a first answer; then Tushare goes down.
    assert_eq!(app.get("/price?code=600519.SH", Some(&key)).await.0, 200);
    let market = &app.running.sandbox.as_ref().unwrap().market;
    market.tushare.set_mode(twilight_sandbox::TushareMode::Down);
    let (status, headers, png) = chart(&app, &key, "code=000001.SZ&range=3m").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    assert_eq!(png_size(&png), (1080, 720));
    let cite: Value = serde_json::from_str(headers["x-cite"].to_str().unwrap()).unwrap();
    assert_eq!((cite["source"].as_str(), cite["table"].as_str()), (Some("sandbox:tdx"), Some("daily")), "{cite}");
    // Kept: drawn again from the warehouse, with no TDX call.
    let tdx_calls = market.tdx.data_calls();
    assert_eq!(chart(&app, &key, "code=000001.SZ&range=1m").await.0, 200);
    assert_eq!(market.tdx.data_calls(), tdx_calls);
    // A valuation has no stand-in: refused as the source being down, naming it.
    let (status, _, body) = chart(&app, &key, "code=000858.SZ&metric=pe_ttm").await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{body}");
    app.stop().await;
}
