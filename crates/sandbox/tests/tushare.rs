//! The Tushare simulator driven over real HTTP, as the product's client and the official Python
//! client talk to it.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};
use twilight_sandbox::{calendar, serve, TushareMode, TushareSim};

const TOKEN: &str = "sandbox-test-token";
const RATE_MSG_500: &str = "抱歉，您每分钟最多访问该接口500次，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。";

/// Thursday 2026-04-30, 17:00 in Shanghai: that day's bars are out.
fn after_close() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 30, 9, 0, 0).unwrap()
}

struct Sandbox {
    sim: TushareSim,
    url: String,
    http: reqwest::Client,
}

impl Sandbox {
    async fn start() -> Sandbox {
        let sim = TushareSim::new(TOKEN);
        sim.set_now(Some(after_close()));
        let (addr, _task) = serve(sim.router(), 0).await.unwrap();
        Sandbox { sim, url: format!("http://{addr}"), http: reqwest::Client::new() }
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.url)).header("content-type", "application/json").body(body).send().await.unwrap()
    }

    /// The envelope of `api_name` called the way the official client does.
    async fn call(&self, api_name: &str, params: Value, fields: &str) -> Value {
        let body = json!({"api_name": api_name, "token": TOKEN, "params": params, "fields": fields});
        let response = self.post(&format!("/dataapi/{api_name}"), body.to_string()).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Rows of a successful call.
    async fn rows(&self, api_name: &str, params: Value, fields: &str) -> Vec<Map<String, Value>> {
        let envelope = self.call(api_name, params, fields).await;
        assert_eq!(envelope["code"], 0, "{envelope}");
        rows(&envelope)
    }
}

/// `fields` zipped with each item.
fn rows(envelope: &Value) -> Vec<Map<String, Value>> {
    let fields: Vec<String> = serde_json::from_value(envelope["data"]["fields"].clone()).unwrap();
    let items = envelope["data"]["items"].as_array().unwrap();
    items
        .iter()
        .map(|item| {
            let item = item.as_array().unwrap();
            assert_eq!(item.len(), fields.len());
            fields.iter().cloned().zip(item.iter().cloned()).collect()
        })
        .collect()
}

fn f(row: &Map<String, Value>, field: &str) -> f64 {
    row[field].as_f64().unwrap_or_else(|| panic!("{field} in {row:?}"))
}

fn s<'a>(row: &'a Map<String, Value>, field: &str) -> &'a str {
    row[field].as_str().unwrap_or_else(|| panic!("{field} in {row:?}"))
}

fn day(yyyymmdd: &str) -> NaiveDate {
    NaiveDate::parse_from_str(yyyymmdd, "%Y%m%d").unwrap()
}

#[tokio::test]
async fn answers_are_columnar_with_the_fields_asked_for_in_order() {
    let sb = Sandbox::start().await;
    let envelope = sb
        .call(
            "daily",
            json!({"ts_code": "600519.SH", "start_date": "20260401", "end_date": "20260430"}),
            "close,trade_date,ts_code,nonsense",
        )
        .await;
    assert_eq!(envelope["code"], 0);
    assert_eq!(envelope["msg"], "");
    assert!(envelope["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(envelope["data"]["fields"], json!(["close", "trade_date", "ts_code"]));
    assert_eq!(envelope["data"]["has_more"], false);
    let rows = rows(&envelope);
    let expected: Vec<NaiveDate> = calendar::open_days(day("20260401"), day("20260430")).rev().collect();
    let dates: Vec<NaiveDate> = rows.iter().map(|r| day(s(r, "trade_date"))).collect();
    assert_eq!(dates, expected, "open days only, latest first");
    assert!(rows.iter().all(|r| s(r, "ts_code") == "600519.SH" && f(r, "close") > 1000.0));

    let all = sb.rows("daily", json!({"ts_code": "600519.SH", "trade_date": "20260430"}), "").await;
    let keys: Vec<&String> = all[0].keys().collect();
    assert_eq!(keys.len(), 11, "every default field: {keys:?}");
}

#[tokio::test]
async fn request_ids_are_unique() {
    let sb = Sandbox::start().await;
    let a = sb.call("trade_cal", json!({"start_date": "20260401", "end_date": "20260402"}), "").await;
    let b = sb.call("trade_cal", json!({"start_date": "20260401", "end_date": "20260402"}), "").await;
    assert_ne!(a["request_id"], b["request_id"]);
    assert_eq!(a["data"], b["data"]);
}

#[tokio::test]
async fn every_route_and_every_outcome_carries_the_sandbox_header() {
    let sb = Sandbox::start().await;
    let body = json!({"api_name": "trade_cal", "token": TOKEN, "params": {"start_date": "20260430", "end_date": "20260430"}}).to_string();
    for path in ["/", "/trade_cal", "/dataapi/trade_cal"] {
        let response = sb.post(path, body.clone()).await;
        assert_eq!(response.headers()["x-twilight-sandbox"], "tushare", "{path}");
        let envelope: Value = response.json().await.unwrap();
        assert_eq!(envelope["data"]["items"], json!([["SSE", "20260430", 1, "20260429"]]), "{path}");
    }
    let error = sb.post("/", "{}").await;
    assert_eq!(error.headers()["x-twilight-sandbox"], "tushare");
    sb.sim.set_mode(TushareMode::Down);
    assert_eq!(sb.post("/", body).await.headers()["x-twilight-sandbox"], "tushare");
}

#[tokio::test]
async fn the_api_named_in_the_path_wins_over_the_body() {
    let sb = Sandbox::start().await;
    let body = json!({"api_name": "no_such_api", "token": TOKEN, "params": {"cal_date": "x"}, "fields": ""}).to_string();
    let envelope: Value = sb.post("/dataapi/trade_cal", body).await.json().await.unwrap();
    assert_eq!(envelope["code"], 0, "{envelope}");
    assert_eq!(sb.sim.calls_for("trade_cal"), 1);
    assert_eq!(sb.sim.calls_for("no_such_api"), 0);
}

#[tokio::test]
async fn a_bad_or_missing_token_is_40101() {
    let sb = Sandbox::start().await;
    for body in [
        json!({"api_name": "daily", "token": "wrong", "params": {}}),
        json!({"api_name": "daily", "params": {}}),
        json!({"api_name": "daily", "token": 42, "params": {}}),
    ] {
        let response = sb.post("/", body.to_string()).await;
        assert_eq!(response.status(), StatusCode::OK, "errors are HTTP 200");
        let envelope: Value = response.json().await.unwrap();
        assert_eq!(envelope["code"], 40101);
        assert_eq!(envelope["msg"], "您的token不对，请确认。");
        assert_eq!(envelope["data"], Value::Null);
    }
}

#[tokio::test]
async fn apis_not_served_are_refused_like_missing_permissions() {
    let sb = Sandbox::start().await;
    for api in ["hk_daily", "no_such_api"] {
        let envelope = sb.call(api, json!({}), "").await;
        assert_eq!(envelope["code"], 40203);
        assert_eq!(envelope["msg"], "抱歉，您没有访问该接口的权限，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。");
    }
}

#[tokio::test]
async fn malformed_params_and_bodies_are_minus_2001() {
    let sb = Sandbox::start().await;
    for (api, params, named) in [
        ("daily", json!({"trade_date": "2026-04-30"}), "trade_date"),
        ("daily", json!({"ts_code": "600519.SH", "start_date": "2026043"}), "start_date"),
        ("daily_basic", json!({"trade_date": "20261340"}), "trade_date"),
        ("trade_cal", json!({"is_open": "yes"}), "is_open"),
        ("daily", json!({"trade_date": "20260430", "limit": "ten"}), "limit"),
        ("fina_indicator", json!({"period": "20251231"}), "ts_code"),
    ] {
        let envelope = sb.call(api, params.clone(), "").await;
        assert_eq!(envelope["code"], -2001, "{api} {params}");
        assert!(envelope["msg"].as_str().unwrap().contains(named), "{envelope}");
    }
    let response = sb.post("/dataapi/daily", "{not json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["code"], -2001);
}

#[tokio::test]
async fn unknown_params_are_ignored_and_numbers_accepted() {
    let sb = Sandbox::start().await;
    let plain = sb.rows("daily", json!({"ts_code": "000001.SZ", "trade_date": "20260430"}), "").await;
    let official = sb.rows("daily", json!({"ts_code": "000001.SZ", "trade_date": 20260430, "ts_type_name": "x", "offset": 0}), "").await;
    assert_eq!(plain.len(), 1);
    assert_eq!(plain, official);
}

#[tokio::test]
async fn throttled_mode_and_the_per_minute_limit_give_40203() {
    let sb = Sandbox::start().await;
    sb.sim.set_mode(TushareMode::Throttled);
    let envelope = sb.call("trade_cal", json!({}), "").await;
    assert_eq!((envelope["code"].clone(), envelope["msg"].clone()), (json!(40203), json!(RATE_MSG_500)));
    sb.sim.set_mode(TushareMode::Normal);

    sb.sim.set_rate_limit_per_min(3);
    let params = json!({"start_date": "20260430", "end_date": "20260430"});
    for _ in 0..3 {
        assert_eq!(sb.call("trade_cal", params.clone(), "").await["code"], 0);
    }
    let over = sb.call("trade_cal", params.clone(), "").await;
    assert_eq!(over["code"], 40203);
    assert_eq!(over["msg"], "抱歉，您每分钟最多访问该接口3次，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。");
    assert_eq!(sb.call("stock_basic", json!({"ts_code": "600519.SH"}), "").await["code"], 0, "limits are per API");
}

#[tokio::test]
async fn down_answers_503_with_an_empty_body_and_slow_answers_late() {
    let sb = Sandbox::start().await;
    sb.sim.set_mode(TushareMode::Down);
    let response = sb.post("/dataapi/daily", json!({"api_name": "daily", "token": TOKEN}).to_string()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.bytes().await.unwrap().is_empty());

    sb.sim.set_mode(TushareMode::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    let envelope = sb.call("trade_cal", json!({"start_date": "20260430", "end_date": "20260430"}), "").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(envelope["code"], 0);
}

#[tokio::test]
async fn call_counters_count_every_request_per_api() {
    let sb = Sandbox::start().await;
    assert_eq!(sb.sim.calls(), 0);
    sb.call("daily", json!({"ts_code": "600519.SH", "trade_date": "20260430"}), "").await;
    sb.call("daily", json!({"ts_code": "000001.SZ", "trade_date": "20260430"}), "").await;
    sb.call("trade_cal", json!({"start_date": "20260430", "end_date": "20260430"}), "").await;
    sb.post("/", json!({"api_name": "daily", "token": "wrong"}).to_string()).await;
    assert_eq!(sb.sim.calls(), 4);
    assert_eq!(sb.sim.calls_for("daily"), 3);
    assert_eq!(sb.sim.calls_for("trade_cal"), 1);
    assert_eq!(sb.sim.calls_for("daily_basic"), 0);
    let clone = sb.sim.clone();
    assert_eq!(clone.calls(), 4, "clones share state");

    let counts: Value = sb.http.get(format!("{}/_sandbox/calls", sb.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(counts, json!({"total": 4, "by_api": {"daily": 3, "trade_cal": 1}}));
    assert_eq!(sb.sim.calls(), 4, "reading the counters is not a call");
}

/// Pages `api` with `offset` until `has_more` is false; returns the rows and the page count.
async fn all_pages(sb: &Sandbox, api: &str, params: Value) -> (Vec<Map<String, Value>>, usize) {
    let mut collected = Vec::new();
    for page in 1.. {
        let mut paged = params.clone();
        paged["offset"] = json!(collected.len());
        let envelope = sb.call(api, paged, "").await;
        assert_eq!(envelope["code"], 0, "{envelope}");
        collected.extend(rows(&envelope));
        if envelope["data"]["has_more"] == false {
            return (collected, page);
        }
        assert!(page < 100, "runaway has_more");
    }
    unreachable!()
}

#[tokio::test]
async fn has_more_pages_add_up_to_the_unpaged_answer() {
    let sb = Sandbox::start().await;
    for (api, params) in [
        ("daily", json!({"ts_code": "600519.SH,000001.SZ", "start_date": "20260101", "end_date": "20260430"})),
        ("fina_indicator", json!({"ts_code": "600519.SH"})),
        ("trade_cal", json!({"start_date": "20260101", "end_date": "20260331"})),
    ] {
        sb.sim.set_page_size(None);
        let whole = sb.call(api, params.clone(), "").await;
        assert_eq!(whole["data"]["has_more"], false, "{api}");
        let whole = rows(&whole);
        sb.sim.set_page_size(Some(7));
        let (paged, pages) = all_pages(&sb, api, params).await;
        assert_eq!(paged, whole, "{api}");
        assert_eq!(pages, whole.len().div_ceil(7).max(1), "{api}: {} rows", whole.len());
    }
}

#[tokio::test]
async fn limit_caps_a_page_and_the_api_cap_applies_without_it() {
    let sb = Sandbox::start().await;
    let limited = sb.call("daily", json!({"ts_code": "600519.SH", "limit": 5}), "trade_date").await;
    assert_eq!(rows(&limited).len(), 5);
    assert_eq!(limited["data"]["has_more"], true);
    assert_eq!(rows(&limited)[0]["trade_date"], "20260430", "latest first");
    let capped = sb.call("fina_indicator", json!({"ts_code": "000001.SZ"}), "end_date").await;
    assert_eq!(rows(&capped).len(), 100, "fina_indicator returns at most 100 rows a call");
    assert_eq!(capped["data"]["has_more"], true);
}

#[tokio::test]
async fn whole_market_daily_for_a_trading_day_and_nothing_for_a_sunday() {
    let sb = Sandbox::start().await;
    let started = Instant::now();
    let envelope = sb.call("daily", json!({"trade_date": "20260430"}), "").await;
    let elapsed = started.elapsed();
    let rows = rows(&envelope);
    assert!(rows.len() >= 5000, "{}", rows.len());
    assert_eq!(envelope["data"]["has_more"], false);
    assert!(elapsed < Duration::from_secs(3), "whole market took {elapsed:?}");
    for r in &rows {
        let (open, high, low, close, pre) = (f(r, "open"), f(r, "high"), f(r, "low"), f(r, "close"), f(r, "pre_close"));
        assert!(low <= open.min(close) && open.max(close) <= high, "{r:?}");
        assert!((f(r, "change") - (close - pre)).abs() < 0.006, "{r:?}");
        assert!((f(r, "pct_chg") - (close - pre) / pre * 100.0).abs() < 0.001, "{r:?}");
        let limit = match &s(r, "ts_code")[..3] {
            "688" => 20.0,
            _ if s(r, "ts_code").ends_with(".BJ") => 30.0,
            _ => 10.0,
        };
        assert!(f(r, "pct_chg").abs() <= limit, "{r:?}");
        assert!(f(r, "vol") > 0.0 && f(r, "amount") > 0.0, "{r:?}");
    }
    let sunday = sb.rows("daily", json!({"trade_date": "20260426"}), "").await;
    assert!(sunday.is_empty());
    let holiday = sb.rows("daily", json!({"trade_date": "20260501"}), "").await;
    assert!(holiday.is_empty(), "Labour Day");
}

#[tokio::test]
async fn a_days_bars_appear_at_16_00_shanghai_and_never_ahead_of_time() {
    let sb = Sandbox::start().await;
    let params = json!({"ts_code": "600519.SH", "trade_date": "20260430"});
    sb.sim.set_now(Some(Utc.with_ymd_and_hms(2026, 4, 30, 7, 59, 0).unwrap()));
    assert!(sb.rows("daily", params.clone(), "").await.is_empty(), "15:59 Shanghai");
    assert!(sb.rows("daily_basic", params.clone(), "").await.is_empty());
    assert_eq!(sb.rows("adj_factor", params.clone(), "").await.len(), 1, "adjustment factors are out before the open");
    sb.sim.set_now(Some(Utc.with_ymd_and_hms(2026, 4, 30, 8, 0, 0).unwrap()));
    assert_eq!(sb.rows("daily", params, "").await.len(), 1, "16:00 Shanghai");
    let latest = sb.rows("daily", json!({"ts_code": "600519.SH", "start_date": "20260401", "end_date": "20261231"}), "trade_date").await;
    assert_eq!(latest[0]["trade_date"], "20260430");
}

#[tokio::test]
async fn two_simulators_give_identical_data() {
    let (a, b) = (Sandbox::start().await, Sandbox::start().await);
    for (api, params) in [
        ("daily", json!({"trade_date": "20250609"})),
        ("daily_basic", json!({"ts_code": "600519.SH,300750.SZ", "start_date": "20250101"})),
        ("fina_indicator", json!({"ts_code": "000001.SZ"})),
        ("stock_basic", json!({})),
        ("adj_factor", json!({"ts_code": "601398.SH"})),
    ] {
        let (x, y) = (a.call(api, params.clone(), "").await, b.call(api, params, "").await);
        assert_eq!(x["data"], y["data"], "{api}");
        assert!(!x["data"]["items"].as_array().unwrap().is_empty(), "{api}");
    }
}

#[tokio::test]
async fn pre_close_is_the_previous_sessions_close_across_a_holiday() {
    let sb = Sandbox::start().await;
    let rows =
        sb.rows("daily", json!({"ts_code": "600519.SH,000001.SZ,300750.SZ", "start_date": "20240201", "end_date": "20240229"}), "").await;
    for code in ["600519.SH", "000001.SZ", "300750.SZ"] {
        let bars: Vec<_> = rows.iter().filter(|r| s(r, "ts_code") == code).collect();
        let before = bars.iter().find(|r| s(r, "trade_date") == "20240208").unwrap();
        let after = bars.iter().find(|r| s(r, "trade_date") == "20240219").unwrap();
        assert_eq!(f(after, "pre_close"), f(before, "close"), "{code} across Spring Festival");
        for pair in bars.windows(2) {
            assert_eq!(f(pair[0], "pre_close"), f(pair[1], "close"), "{code}: latest first, each pre_close the next row's close");
        }
    }
}

#[tokio::test]
async fn trading_starts_at_listing() {
    let sb = Sandbox::start().await;
    let rows = sb.rows("daily", json!({"ts_code": "688981.SH", "start_date": "20200701", "end_date": "20200731"}), "trade_date").await;
    assert_eq!(rows.last().unwrap()["trade_date"], "20200716", "SMIC's STAR listing day");
    let first_days = sb.rows("adj_factor", json!({"ts_code": "600519.SH", "start_date": "20010801", "end_date": "20010831"}), "").await;
    let oldest = first_days.last().unwrap();
    assert_eq!((s(oldest, "trade_date"), f(oldest, "adj_factor")), ("20010827", 1.0));
    let factors = sb.rows("adj_factor", json!({"ts_code": "600519.SH"}), "").await;
    assert!(factors.windows(2).all(|w| f(&w[0], "adj_factor") >= f(&w[1], "adj_factor")), "factors only step up over time");
    assert!(f(&factors[0], "adj_factor") > 1.5, "two decades of dividends");
}

#[tokio::test]
async fn pe_ttm_is_the_close_over_trailing_eps_as_announced() {
    let sb = Sandbox::start().await;
    for code in ["600519.SH", "000001.SZ", "000333.SZ"] {
        let basic = &sb.rows("daily_basic", json!({"ts_code": code, "trade_date": "20260430"}), "").await[0];
        let reports = sb.rows("fina_indicator", json!({"ts_code": code, "end_date": "20260430"}), "").await;
        let latest = &reports[0];
        let eps_of = |end: String| f(reports.iter().find(|r| s(r, "end_date") == end).unwrap(), "eps");
        let end = s(latest, "end_date");
        let (year, quarter_end) = (end[..4].parse::<i32>().unwrap(), &end[4..]);
        let ttm = if quarter_end == "1231" {
            f(latest, "eps")
        } else {
            f(latest, "eps") + eps_of(format!("{}1231", year - 1)) - eps_of(format!("{}{quarter_end}", year - 1))
        };
        let pe_ttm = f(basic, "pe_ttm");
        let expected = f(basic, "close") / ttm;
        assert!((pe_ttm / expected - 1.0).abs() < 0.002, "{code}: pe_ttm {pe_ttm}, close/ttm eps {expected}");
        let mv = f(basic, "close") * f(basic, "total_share");
        assert!((f(basic, "total_mv") / mv - 1.0).abs() < 1e-6, "{code}");
    }
    let moutai = &sb.rows("daily_basic", json!({"ts_code": "600519.SH", "trade_date": "20260430"}), "pe_ttm,total_share").await[0];
    assert!((20.0..=30.0).contains(&f(moutai, "pe_ttm")), "{moutai:?}");
    assert_eq!(f(moutai, "total_share"), 125_619.78);
    let loss = &sb.rows("daily_basic", json!({"ts_code": "601012.SH", "trade_date": "20260430"}), "pe,pe_ttm").await[0];
    assert_eq!((loss["pe"].clone(), loss["pe_ttm"].clone()), (Value::Null, Value::Null), "no P/E for a loss");
}

/// What an empty `fields` returns is Tushare's documented default set, in its order, with figures
/// that agree with each other; a bank leaves industrial ratios blank.
#[tokio::test]
async fn fina_indicator_answers_tushare_s_default_columns() {
    let sb = Sandbox::start().await;
    let envelope = sb.call("fina_indicator", json!({"ts_code": "600519.SH", "period": "20251231"}), "").await;
    let fields: Vec<String> = serde_json::from_value(envelope["data"]["fields"].clone()).unwrap();
    assert_eq!(fields.len(), 109);
    assert_eq!(&fields[..5], ["ts_code", "ann_date", "end_date", "eps", "dt_eps"]);
    assert_eq!(fields.last().unwrap(), "update_flag");
    for documented in ["total_revenue_ps", "profit_dedt", "gross_margin", "cash_ratio", "q_roe", "q_op_qoq", "equity_yoy"] {
        assert!(fields.iter().any(|f| f == documented), "{documented} is a default column");
    }
    assert!(!fields.iter().any(|f| f == "invturn_days"), "invturn_days is shown only when asked for");
    let row = &rows(&envelope)[0];
    let blank: Vec<&String> = fields.iter().filter(|f| row[f.as_str()].is_null()).collect();
    let net_cash = f(row, "netdebt") <= 0.0;
    assert_eq!(blank.len(), usize::from(net_cash), "only a ratio over a non-positive net debt may be blank: {blank:?}");
    assert_eq!(net_cash, row["tangibleasset_to_netdebt"].is_null());
    let d2a = f(row, "debt_to_assets");
    assert!((f(row, "assets_to_eqt") - 1.0 / (1.0 - d2a / 100.0)).abs() < 1e-3, "{row:?}");
    assert!((f(row, "cogs_of_sales") + f(row, "grossprofit_margin") - 100.0).abs() < 1e-3);
    assert!((f(row, "roe_yearly") - f(row, "roe")).abs() < 1e-3, "an annual report's roe is yearly already");
    assert!(f(row, "profit_dedt") > 0.0 && f(row, "gross_margin") > f(row, "profit_dedt"));

    let bank = &sb.rows("fina_indicator", json!({"ts_code": "000001.SZ", "period": "20251231"}), "").await[0];
    for blank in ["gross_margin", "grossprofit_margin", "current_ratio", "cash_ratio", "ar_turn"] {
        assert!(bank[blank].is_null(), "a bank reports no {blank}");
    }
    let asked = &sb.rows("fina_indicator", json!({"ts_code": "600519.SH", "period": "20251231"}), "ts_code,invturn_days").await[0];
    assert!(asked["invturn_days"].as_f64().unwrap() > 0.0, "{asked:?}");
}

#[tokio::test]
async fn reports_are_quarterly_and_never_announced_after_today() {
    let sb = Sandbox::start().await;
    let reports = sb.rows("fina_indicator", json!({"ts_code": "300750.SZ"}), "").await;
    assert!(reports.len() > 20);
    let today = day("20260430");
    for pair in reports.windows(2) {
        assert!(s(&pair[0], "end_date") > s(&pair[1], "end_date"), "latest period first");
    }
    for r in &reports {
        let (ann, end) = (day(s(r, "ann_date")), day(s(r, "end_date")));
        assert!(ann <= today, "{r:?}");
        assert!(["0331", "0630", "0930", "1231"].contains(&&s(r, "end_date")[4..]), "{r:?}");
        assert!((15..=110).contains(&(ann - end).num_days()), "{r:?}");
        assert!(end >= day("20180611") - chrono::Days::new(92), "no reports long before listing: {r:?}");
    }
    let one = sb.rows("fina_indicator", json!({"ts_code": "300750.SZ", "period": "20241231"}), "").await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["end_date"], "20241231");
    let by_ann = sb.rows("fina_indicator", json!({"ts_code": "300750.SZ", "start_date": "20250101", "end_date": "20251231"}), "").await;
    let periods: Vec<&str> = by_ann.iter().map(|r| s(r, "end_date")).collect();
    assert_eq!(periods, ["20250930", "20250630", "20250331", "20241231"], "start/end filter the announcement date");
}

#[tokio::test]
async fn trade_cal_lists_every_day_latest_first() {
    let sb = Sandbox::start().await;
    let rows = sb.rows("trade_cal", json!({"exchange": "SSE", "start_date": "20240207", "end_date": "20240220"}), "").await;
    assert_eq!(rows.len(), 14);
    assert_eq!(s(&rows[0], "cal_date"), "20240220");
    let by_date = |d: &str| rows.iter().find(|r| s(r, "cal_date") == d).unwrap();
    assert_eq!(by_date("20240209")["is_open"], 0);
    assert_eq!(by_date("20240208")["is_open"], 1);
    assert_eq!(by_date("20240219")["pretrade_date"], "20240208");
    assert_eq!(by_date("20240210")["pretrade_date"], "20240208", "closed days carry it too");
    let open =
        sb.rows("trade_cal", json!({"exchange": "", "start_date": "20240201", "end_date": "20240229", "is_open": "1"}), "cal_date").await;
    assert_eq!(open.len(), 15);
    let szse =
        sb.rows("trade_cal", json!({"exchange": "SZSE", "start_date": "20240201", "end_date": "20240229", "is_open": 1}), "cal_date").await;
    assert_eq!(szse, open);
    let future = sb.rows("trade_cal", json!({"start_date": "20261225", "end_date": "20270110"}), "cal_date").await;
    assert_eq!(s(&future[0], "cal_date"), "20261231", "the calendar runs to the end of the current year");
}

#[tokio::test]
async fn stock_basic_lists_the_market() {
    let sb = Sandbox::start().await;
    let all = sb.rows("stock_basic", json!({"list_status": "L"}), "").await;
    assert!((5000..=5600).contains(&all.len()), "{}", all.len());
    let moutai = all.iter().find(|r| r["ts_code"] == "600519.SH").unwrap();
    assert_eq!(
        Value::Object(moutai.clone()),
        json!({"ts_code": "600519.SH", "symbol": "600519", "name": "贵州茅台", "area": "贵州", "industry": "白酒", "market": "主板", "list_date": "20010827"})
    );
    let star = sb.rows("stock_basic", json!({"market": "科创板"}), "ts_code,exchange").await;
    assert!(star.len() > 300 && star.iter().all(|r| s(r, "ts_code").starts_with("688") && r["exchange"] == "SSE"));
    let bse = sb.rows("stock_basic", json!({"exchange": "BSE"}), "ts_code,market").await;
    assert!(bse.len() > 100 && bse.iter().all(|r| s(r, "ts_code").ends_with(".BJ") && r["market"] == "北交所"));
    assert!(sb.rows("stock_basic", json!({"list_status": "D"}), "").await.is_empty());
}
