//! Every cited number can be traced after the fact: an answer's tool_call_id leads to who asked,
//! what they asked, what was answered and from which upstream row, and to what the warehouse
//! holds for that row now — over the admin API and the `twilight admin trace` command.

mod common;

use std::process::Command;

use serde_json::Value;

use common::TestApp;

on_both_backends!(answers_are_traced_by_their_tool_call_id);

async fn answers_are_traced_by_their_tool_call_id(app: TestApp) {
    let (user_id, key) = app.user(1_000).await;
    let (_, _, price) = app.get("/price?code=sh600519&trade_date=2026-04-30", Some(&key)).await;
    let (_, _, fundamentals) = app.get("/fundamentals?code=600519", Some(&key)).await;
    let price_id = price["cite"]["tool_call_id"].as_str().unwrap();
    let fundamentals_id = fundamentals["claims"][0]["cite"]["tool_call_id"].as_str().unwrap();
    // tc_ and a UUIDv7: 32 hex digits, later answers sort after earlier ones.
    assert!(price_id.len() == 35 && price_id[3..].bytes().all(|b| b.is_ascii_hexdigit()), "{price_id}");
    assert!(fundamentals_id > price_id, "{fundamentals_id} sorts before {price_id}");

    let traced = app.citation(price_id).await;
    assert_eq!((traced["user_id"].as_str(), traced["endpoint"].as_str()), (Some(user_id.as_str()), Some("/price")), "{traced}");
    assert_eq!(traced["request"]["code"], "600519.SH", "the request as understood: {traced}");
    assert_eq!(traced["request"]["trade_date"], "20260430");
    let value = &traced["values"][0];
    assert_eq!((&value["metric"], &value["value"]), (&Value::from("close"), &price["value"]), "{traced}");
    assert_eq!((value["source"].as_str(), value["table"].as_str()), (Some("sandbox:tushare"), Some("daily")));
    assert_eq!(value["key"], serde_json::json!({"ts_code": "600519.SH", "trade_date": "20260430"}));
    assert_eq!(value["fetched_at"], price["cite"]["fetched_at"]);
    assert_eq!(value["warehouse_now"]["value"], price["value"], "what the warehouse holds now: {traced}");
    assert_eq!(value["other_sources"], serde_json::json!([]), "no other source has that day yet");

    // Once TDX's bars of that day are backfilled, the trace shows what that source says too.
    let sims = &app.running.sandbox.as_ref().unwrap().market;
    let pool = twilight_tdx::TdxPool::new(app.config.tdx_pool(vec![sims.tdx_addr.clone()]));
    let backfill = twilight_market::Backfill::new(pool, app.running.market.warehouse(), "sandbox:tdx");
    let day = chrono::NaiveDate::from_ymd_opt(2026, 4, 30).unwrap();
    let plan = twilight_market::BackfillPlan { codes: vec!["600519.SH".parse().unwrap()], since: day, through: day, concurrency: 1 };
    assert_eq!(backfill.run(&plan, |_| {}).await.unwrap().rows, 1);
    let traced = app.citation(price_id).await;
    let other = &traced["values"][0]["other_sources"][0];
    assert_eq!((other["source"].as_str(), &other["value"]), (Some("sandbox:tdx"), &price["value"]), "{traced}");
    assert_eq!(traced["values"][0]["warehouse_now"]["source"], "sandbox:tushare", "the cited source's row stays the one cited");

    let traced = app.citation(fundamentals_id).await;
    let claims = fundamentals["claims"].as_array().unwrap();
    let values = traced["values"].as_array().unwrap();
    assert_eq!(values.len(), claims.len());
    for (claim, value) in claims.iter().zip(values) {
        assert_eq!((&value["metric"], &value["value"]), (&claim["metric"], &claim["value"]), "{traced}");
        assert_eq!(value["warehouse_now"]["value"], claim["value"], "{value}");
    }
    let eps = values.iter().find(|v| v["metric"] == "eps").unwrap();
    assert_eq!(eps["key"]["end_date"], fundamentals["as_of"], "a report is keyed by its period: {eps}");

    let (status, _, body) = app.get("/admin/citations/tc_0000000000000000000000000000ffff", Some(&app.admin_token)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _, body) = app.get("/admin/citations/not-an-id", Some(&app.admin_token)).await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("tool_call_id")));
    assert_eq!(app.get(&format!("/admin/citations/{price_id}"), Some(&key)).await.0, 403);

    // The operator's commands read the same record from the accounts DB, and prune it with the
    // usage rows once its retention is over.
    let admin = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_twilight"))
            .env("TWILIGHT_DATA_DIR", app.data_dir())
            .env("TWILIGHT_ACCOUNTS_URL", app.config.accounts_url())
            .env_remove("TWILIGHT_CONFIG")
            .arg("admin")
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let printed = admin(&["trace", price_id]);
    assert_eq!((&printed["tool_call_id"], &printed["values"][0]["value"]), (&Value::from(price_id), &price["value"]));
    let today = chrono::Utc::now().date_naive();
    assert_eq!(admin(&["prune", "--before", &today.to_string()]), serde_json::json!({"usage_rows": 0, "citations": 0}));
    let tomorrow = (today + chrono::Duration::days(1)).to_string();
    assert_eq!(admin(&["prune", "--before", &tomorrow]), serde_json::json!({"usage_rows": 2, "citations": 2}));
    let (status, _, _) = app.get(&format!("/admin/citations/{price_id}"), Some(&app.admin_token)).await;
    assert_eq!(status, 404);
    app.stop().await;
}
