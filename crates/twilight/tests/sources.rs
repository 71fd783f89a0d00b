//! Two sources of one close: TDX's bars beside Tushare's, compared in the `/price` cite, recorded
//! where they disagree beyond rounding, and reported by `twilight check-sources`.

mod common;

use std::process::Command;

use chrono::NaiveDate;
use serde_json::{json, Value};
use twilight_market::{Backfill, BackfillPlan};
use twilight_sandbox::TdxMode;

use common::{Backend, TestApp};

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

/// TDX's bar of 600519.SH on `day`, as the sandbox TDX server answers it now.
async fn backfill_day(app: &TestApp, day: NaiveDate) {
    let sims = &app.running.sandbox.as_ref().unwrap().market;
    let pool = twilight_tdx::TdxPool::new(app.config.tdx_pool(vec![sims.tdx_addr.clone()]));
    let backfill = Backfill::new(pool, app.running.market.warehouse(), "sandbox:tdx");
    let plan = BackfillPlan { codes: vec!["600519.SH".parse().unwrap()], since: day, through: day, concurrency: 1 };
    assert_eq!(backfill.run(&plan, |_| {}).await.unwrap().rows, 1);
}

#[tokio::test]
async fn a_close_tdx_disagrees_with_is_cited_as_differing_and_recorded() {
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    let (_, key) = app.user(1_000).await;
    let tdx = &app.running.sandbox.as_ref().unwrap().market.tdx;
    tdx.set_mode(TdxMode::Differ(0.005));
    backfill_day(&app, d(2026, 4, 29)).await;
    tdx.set_mode(TdxMode::Differ(0.02));
    backfill_day(&app, d(2026, 4, 30)).await;

    let price = |query: &'static str| {
        let (app, key) = (&app, &key);
        async move {
            let (status, _, body) = app.get(&format!("/price?code=600519.SH&{query}"), Some(key)).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let matched = price("trade_date=20260429").await;
    assert_eq!(matched["cite"]["agreement"], json!({"tdx": "match"}), "0.005 % is rounding: {matched}");
    let differs = price("trade_date=20260430").await;
    let agreement = &differs["cite"]["agreement"];
    assert_eq!(agreement["tdx"], "differs", "{differs}");
    let (close, tdx_close) = (differs["value"].as_f64().unwrap(), agreement["tdx_value"].as_f64().unwrap());
    assert!((agreement["diff_pct"].as_f64().unwrap() - 0.02).abs() < 0.001, "{agreement}");
    assert!(((tdx_close / close - 1.0) * 100.0 - 0.02).abs() < 0.001, "{agreement}");
    assert_eq!(differs["cite"]["source"], "sandbox:tushare", "the answer is Tushare's; TDX's is beside it");

    for query in ["trade_date=20260428", "trade_date=20260430&metric=pe_ttm", "trade_date=20260430&metric=vol"] {
        let body = price(query).await;
        assert!(body["cite"].get("agreement").is_none(), "no other source states {query} alike: {body}");
    }

    let recorded: (i64, f64, String) = app
        .running
        .market
        .warehouse()
        .read(|c| {
            c.query_row("SELECT count(*), max(diff_pct), max(other_source) FROM source_disagreements", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .unwrap();
    assert_eq!(recorded, (1, agreement["diff_pct"].as_f64().unwrap(), "sandbox:tdx".to_string()), "one disagreement recorded");

    // The operator's report reads the warehouse once serve has let go of it.
    let data_dir = app.data_dir();
    let stopped = app.stop_server().await;
    let output = Command::new(env!("CARGO_BIN_EXE_twilight"))
        .env("TWILIGHT_DATA_DIR", &data_dir)
        .env_remove("TWILIGHT_CONFIG")
        .args(["check-sources", "--since", "2026-04-01"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let found = &lines[0]["disagreement"];
    assert_eq!(
        (found["ts_code"].as_str(), found["trade_date"].as_str(), found["field"].as_str()),
        (Some("600519.SH"), Some("2026-04-30"), Some("close"))
    );
    assert_eq!((found["value"].as_f64(), found["other_value"].as_f64()), (Some(close), Some(tdx_close)));
    assert_eq!((&lines[1]["compared"], &lines[1]["disagreements"]), (&json!(2), &json!(1)), "two days both hold, one differs");
    stopped.cleanup().await;
}
