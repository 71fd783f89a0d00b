//! The AKTools simulator over real HTTP, as AKTools answers: records with AKShare's column names,
//! FastAPI's 500 where AKShare raises, AKTools' 404 for a name AKShare lacks.

use reqwest::StatusCode;
use serde_json::Value;
use twilight_sandbox::{serve, AktoolsSim, Fault, SANDBOX_HEADER};

async fn call(url: &str, path: &str) -> (StatusCode, Option<String>, String) {
    let response = reqwest::get(format!("{url}{path}")).await.unwrap();
    let label = response.headers().get(SANDBOX_HEADER).map(|v| v.to_str().unwrap().to_string());
    (response.status(), label, response.text().await.unwrap())
}

#[tokio::test]
async fn both_functions_answer_akshare_records_and_failures_answer_as_aktools_does() {
    let sim = AktoolsSim::new();
    let (addr, _) = serve(sim.router(), 0).await.unwrap();
    let url = format!("http://{addr}");

    let (status, label, body) = call(&url, "/api/public/stock_individual_info_em?symbol=600519").await;
    assert_eq!((status, label.as_deref()), (StatusCode::OK, Some("aktools")));
    let items: Vec<Value> = serde_json::from_str(&body).unwrap();
    let item = |name: &str| items.iter().find(|i| i["item"] == name).map(|i| i["value"].clone()).unwrap_or(Value::Null);
    assert_eq!(items.len(), 9, "{body}");
    assert_eq!(item("行业"), "酿酒行业");
    assert_eq!((item("股票代码"), item("股票简称")), ("600519".into(), "贵州茅台".into()));
    assert_eq!(item("上市时间"), 20010827);
    let (total_mv, latest, shares) = (item("总市值").as_f64().unwrap(), item("最新").as_f64().unwrap(), item("总股本").as_f64().unwrap());
    assert!((total_mv / (latest * shares) - 1.0).abs() < 1e-6, "market value is price × shares, in yuan: {body}");

    let (status, _, body) = call(&url, "/api/public/stock_profile_cninfo?symbol=000001").await;
    assert_eq!(status, StatusCode::OK);
    let records: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&body).unwrap();
    assert_eq!((records.len(), records[0].len()), (1, 26), "{body}");
    assert_eq!(records[0]["公司名称"], "平安银行股份有限公司");
    assert_eq!((records[0]["所属行业"].as_str(), records[0]["所属市场"].as_str()), (Some("货币金融服务"), Some("深交所主板")));

    // A code nobody lists: Eastmoney's function raises, CNINFO's answers nothing.
    assert_eq!(call(&url, "/api/public/stock_individual_info_em?symbol=999999").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(call(&url, "/api/public/stock_profile_cninfo?symbol=999999").await.2, "[]");
    assert_eq!(call(&url, "/api/public/stock_profile_cninfo").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _, body) = call(&url, "/api/public/os_system?symbol=ls").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].as_str().unwrap().contains("未找到该接口"), "{body}");

    sim.set_fault(Fault::Down);
    assert_eq!(call(&url, "/api/public/stock_individual_info_em?symbol=600519").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.calls(), 7);
}
