//! What a company is, from AKShare through AKTools: `/fundamentals` states its industry, registered
//! name, market and main business as text claims cited to `company_profile`; kept for a day, so a
//! second answer asks AKTools nothing; AKTools down never fails the answer.

mod common;

use serde_json::{json, Value};
use twilight_sandbox::Fault;

use common::{Backend, TestApp};

fn claim<'a>(answer: &'a Value, metric: &str) -> Option<&'a Value> {
    answer["claims"].as_array().unwrap().iter().find(|c| c["metric"] == metric)
}

async fn fundamentals(app: &TestApp, code: &str, key: &str) -> Value {
    let (status, _, body) = app.get(&format!("/fundamentals?code={code}"), Some(key)).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fundamentals_say_what_the_company_is_cited_to_its_profile() {
    let Some(app) = TestApp::start_with(Backend::Sqlite, |config| config.tushare.breaker_secs = 60).await else { return };
    let (_, key) = app.user(1_000).await;
    let aktools = &app.running.sandbox.as_ref().unwrap().market.aktools;

    let moutai = fundamentals(&app, "600519.SH", &key).await;
    let industry = claim(&moutai, "industry").expect("an industry claim");
    assert_eq!((industry["value"].as_str(), industry["unit"].as_str()), (Some("酿酒行业"), Some("text")), "{industry}");
    let cite = &industry["cite"];
    assert_eq!(
        (cite["source"].as_str(), cite["table"].as_str(), cite["stale"].as_bool()),
        (Some("sandbox:aktools"), Some("company_profile"), Some(false))
    );
    let today = twilight_core::compact(twilight_core::china_today(chrono::Utc::now()));
    assert_eq!(industry["period"], today.as_str(), "a profile holds as of the day it was read");
    let text = |metric: &str| claim(&moutai, metric).and_then(|c| c["value"].as_str().map(str::to_string));
    assert_eq!(text("company_name").as_deref(), Some("贵州茅台酒股份有限公司"));
    assert_eq!(text("csrc_industry").as_deref(), Some("酒、饮料和精制茶制造业"));
    assert_eq!(text("market").as_deref(), Some("上交所主板"));
    assert!(text("main_business").is_some_and(|b| b.contains("白酒")), "{moutai}");
    assert!(claim(&moutai, "website").is_none(), "a line the profile does not state is left out");
    assert!(claim(&moutai, "roe").is_some_and(|roe| roe["value"].is_number()), "the numbers stay numbers: {moutai}");
    assert_eq!(aktools.calls(), 2, "one call per AKShare function");

    // Kept: asked again, AKTools is not.
    let again = fundamentals(&app, "600519", &key).await;
    assert_eq!(claim(&again, "industry").unwrap()["value"], "酿酒行业");
    assert_eq!(aktools.calls(), 2);
    let rows = app.running.market.row_counts().await.unwrap();
    assert!(rows.contains(&("company_profile", 1)), "{rows:?}");

    // Traceable: the citation names the row, and the warehouse's value of it now.
    let traced = app.citation(cite["tool_call_id"].as_str().unwrap()).await;
    let value = traced["values"].as_array().unwrap().iter().find(|v| v["metric"] == "industry").unwrap().clone();
    assert_eq!(value["key"], json!({"ts_code": "600519.SH"}), "{traced}");
    assert_eq!(value["warehouse_now"]["value"], "酿酒行业", "{traced}");

    // AKTools down, nothing kept for this code: the numbers answer without a profile, and AKTools
    // is left alone for the breaker window.
    aktools.set_fault(Fault::Down);
    let bank = fundamentals(&app, "000001.SZ", &key).await;
    assert!(claim(&bank, "industry").is_none() && claim(&bank, "roe").is_some(), "{bank}");
    let calls = aktools.calls();
    fundamentals(&app, "000858.SZ", &key).await;
    assert_eq!(aktools.calls(), calls, "the breaker keeps a dead AKTools from costing every answer a call");
    let (_, _, health) = app.get("/healthz", None).await;
    assert!(health["checks"]["upstreams"]["aktools"]["last_error"].is_string(), "{health}");
    app.stop().await;
}
