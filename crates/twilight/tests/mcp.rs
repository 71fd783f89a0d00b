//! The MCP tool server at /mcp, driven by a real MCP client: the Python `mcp` package from the hermes
//! venv, the same client the users' bots use. Tools are listed with usable schemas, answer what the
//! HTTP endpoints answer (value and cite), report bad input as tool errors naming the field, share
//! the key's rate limit and are metered per call; a missing, unknown, revoked or admin token is
//! refused before any MCP handling.

mod common;

use serde_json::{json, Value};

use common::{Backend, TestApp};
use twilight_sandbox::TushareMode;

on_both_backends!(tools_answer_like_the_http_endpoints_and_are_metered_per_call, refusals_happen_before_mcp_and_in_our_json_shape);

fn calls(step: &Value) -> &Vec<Value> {
    step["calls"].as_array().unwrap()
}

async fn tools_answer_like_the_http_endpoints_and_are_metered_per_call(app: TestApp) {
    let (user_id, key) = app.user(1000).await;
    let (status, _, http_price) = app.get("/price?code=600519.SH&metric=pe_ttm", Some(&key)).await;
    assert_eq!(status, 200, "{http_price}");
    let steps = json!([
        {"list": true},
        {"call": "price", "arguments": {"code": "600519.SH", "metric": "pe_ttm"}},
        {"call": "price", "arguments": {"code": "60051"}},
        {"call": "price", "arguments": {"code": "600519", "metric": "eps"}},
        {"call": "price", "arguments": {"code": "600519", "trade_date": "2026-13-45"}},
        {"call": "price", "arguments": {"code": "600519", "colour": "red"}},
        {"call": "fundamentals", "arguments": {"code": "600519"}},
        {"call": "search", "arguments": {"query": "600519 业绩公告 2026", "max_results": 5}},
        {"call": "search", "arguments": {"query": "600519", "since": "last week"}},
        {"call": "price", "arguments": {"code": "0700.HK"}},
    ]);
    let Some(seen) = common::mcp_client(&app, &key, steps).await else { return };
    assert!(seen["error"].is_null(), "{seen}");
    assert_eq!(seen["server"]["name"], "twilight-drive");
    let steps = seen["steps"].as_array().unwrap();

    // Listed with schemas the model can fill in.
    let tools = steps[0]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["price", "fundamentals", "search", "chart"]);
    assert_eq!(tools[3]["inputSchema"]["properties"]["range"]["enum"], json!(["1m", "3m", "6m", "1y", "3y", "5y"]));
    assert_eq!(tools[2]["inputSchema"]["required"], json!(["query"]));
    assert_eq!(tools[2]["annotations"]["openWorldHint"], true, "search reaches the web");
    let price = &tools[0];
    assert!(price["description"].as_str().unwrap().contains("市盈率"), "{price}");
    let schema = &price["inputSchema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["required"], json!(["code"]), "{schema}");
    assert!(schema["properties"]["metric"]["enum"].as_array().unwrap().contains(&json!("pe_ttm")), "{schema}");
    assert!(schema["properties"]["trade_date"]["pattern"].as_str().unwrap().contains(r"\d{8}"), "{schema}");
    assert!(schema["properties"]["code"]["description"].as_str().unwrap().contains("600519.SH"), "{schema}");
    assert_eq!(tools[1]["inputSchema"]["required"], json!(["code"]));
    assert_eq!(price["annotations"]["readOnlyHint"], true);

    // The same answer as HTTP (its own tool_call_id), as structured content and as text.
    let answer = &calls(&steps[1])[0];
    assert_eq!(answer["is_error"], false, "{answer}");
    let body = &answer["structured"];
    assert_eq!((&body["value"], &body["as_of"], &body["code"]), (&http_price["value"], &http_price["as_of"], &http_price["code"]));
    assert_eq!(body["cite"]["source"], "sandbox:tushare");
    assert_eq!(body["cite"]["table"], "daily_basic");
    assert!(body["cite"]["tool_call_id"].as_str().unwrap().starts_with("tc_"));
    assert_ne!(body["cite"]["tool_call_id"], http_price["cite"]["tool_call_id"]);
    // Traced like an HTTP answer, under the tool's endpoint.
    let traced = app.citation(body["cite"]["tool_call_id"].as_str().unwrap()).await;
    assert_eq!((traced["endpoint"].as_str(), &traced["values"][0]["value"]), (Some("mcp:price"), &body["value"]), "{traced}");
    assert_eq!(traced["user_id"].as_str(), Some(user_id.as_str()));
    assert_eq!(serde_json::from_str::<Value>(answer["text"].as_str().unwrap()).unwrap(), *body);

    // Bad input: a tool error carrying the HTTP error's JSON, naming the field.
    for (step, field) in [(2, Some("code")), (3, Some("metric")), (4, Some("trade_date")), (5, None)] {
        let error = &calls(&steps[step])[0];
        assert_eq!(error["is_error"], true, "{error}");
        assert_eq!(error["structured"]["error"]["code"], "invalid_input", "{error}");
        assert_eq!(error["structured"]["error"]["field"].as_str(), field, "{error}");
    }
    assert!(calls(&steps[5])[0]["structured"]["error"]["message"].as_str().unwrap().contains("colour"));
    let fundamentals = &calls(&steps[6])[0]["structured"];
    assert!(!fundamentals["claims"].as_array().unwrap().is_empty(), "{fundamentals}");
    // What the company is, as text, cited to AKShare's profile.
    let industry = fundamentals["claims"].as_array().unwrap().iter().find(|c| c["metric"] == "industry").expect("an industry claim");
    assert_eq!((industry["value"].as_str(), industry["unit"].as_str()), (Some("酿酒行业"), Some("text")), "{industry}");
    assert_eq!(
        (industry["cite"]["source"].as_str(), industry["cite"]["table"].as_str()),
        (Some("sandbox:aktools"), Some("company_profile"))
    );
    // Search: pages with their URLs in the cite, traced under the tool's endpoint; a bad span is
    // refused naming the field.
    let search = &calls(&steps[7])[0]["structured"];
    let results = search["results"].as_array().unwrap();
    assert!(!results.is_empty() && results.len() <= 5, "{search}");
    assert_eq!((results[0]["cite"]["source"].as_str(), &results[0]["cite"]["url"]), (Some("sandbox:dashscope"), &results[0]["url"]));
    let traced = app.citation(results[0]["cite"]["tool_call_id"].as_str().unwrap()).await;
    assert_eq!((traced["endpoint"].as_str(), &traced["values"][0]["url"]), (Some("mcp:search"), &results[0]["url"]), "{traced}");
    assert_eq!(calls(&steps[8])[0]["structured"]["error"]["field"], "since", "{}", steps[8]);
    // What only Yahoo lists, through the same tool.
    let tencent = &calls(&steps[9])[0]["structured"];
    assert_eq!(
        (tencent["code"].as_str(), tencent["unit"].as_str(), tencent["cite"]["source"].as_str()),
        (Some("0700.HK"), Some("HKD"), Some("sandbox:yahoo")),
        "{tencent}"
    );

    // A key of 60 a minute: its 61st call in a burst is refused with the wait (the bucket refills
    // one token a second, so a slow machine may fit in a few more first).
    let (limited_user, limited_key) = app.user(60).await;
    let Some(seen) =
        common::mcp_client(&app, &limited_key, json!([{"call": "price", "arguments": {"code": "600519.SH"}, "times": 70}])).await
    else {
        return;
    };
    let results = calls(&seen["steps"][0]);
    let answered = results.iter().take_while(|r| r["is_error"] == false).count();
    assert!((60..=65).contains(&answered), "{answered} calls before the first refusal: {seen}");
    let limited = &results[answered]["structured"]["error"];
    assert_eq!(limited["code"], "rate_limited", "{limited}");
    let wait = limited["retry_after_secs"].as_u64().unwrap();
    assert!((1..=60).contains(&wait), "{limited}");
    let metered_limited = results.iter().filter(|r| r["is_error"] == false).count() as i64;

    // One usage row per tool call that passed the limiter, errors included; listing is free.
    let user: uuid::Uuid = user_id.parse().unwrap();
    let limited_user: uuid::Uuid = limited_user.parse().unwrap();
    let stopped = app.stop_server().await;
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let rows = stopped.accounts.usage_by_day(user, since).await.unwrap();
    let count = |endpoint: &str| rows.iter().filter(|r| r.endpoint == endpoint).map(|r| r.requests).sum::<i64>();
    assert_eq!((count("/price"), count("mcp:price"), count("mcp:fundamentals"), count("mcp:search")), (1, 6, 1, 2), "{rows:?}");
    assert!(rows.iter().any(|r| r.endpoint == "mcp:fundamentals" && r.upstream_cost_pts >= 1), "the fill's cost is metered: {rows:?}");
    assert_eq!(stopped.accounts.usage_count(limited_user).await.unwrap(), metered_limited, "refused calls are not metered");
    stopped.cleanup().await;
}

async fn refusals_happen_before_mcp_and_in_our_json_shape(app: TestApp) {
    let (user_id, key) = app.user(60).await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}});
    let post = |token: Option<&str>, body: String, content_type: &str| {
        let mut request = app
            .http
            .post(app.url("/mcp"))
            .header("content-type", content_type)
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // A live key speaks MCP.
    let response = post(Some(&key), initialize.to_string(), "application/json").await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["serverInfo"]["name"], "twilight-drive", "{body}");

    // Tokens are checked first, in the data plane's words.
    let admin = app.admin_token.clone();
    for (token, status, code) in
        [(None, 401, "missing_token"), (Some("not-a-key"), 401, "invalid_token"), (Some(admin.as_str()), 403, "forbidden")]
    {
        let response = post(token, initialize.to_string(), "application/json").await.unwrap();
        assert_eq!(response.status(), status);
        if status == 401 {
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], code);
    }

    // What the transport refuses is JSON too.
    let response = post(Some(&key), "hello".into(), "text/plain").await.unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "unsupported_media_type");
    let response = app.http.get(app.url("/mcp")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "method_not_allowed");
    let response = post(Some(&key), format!("[{}]", "1,".repeat(40_000)), "application/json").await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");

    // A revoked key: refused over plain HTTP and by the real client, before any tool runs.
    let (status, body) = app.post(&format!("/admin/users/{user_id}/keys/revoke"), Some(&app.admin_token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let response = post(Some(&key), initialize.to_string(), "application/json").await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "revoked_key");
    let Some(seen) = common::mcp_client(&app, &key, json!([{"call": "price", "arguments": {"code": "600519"}}])).await else { return };
    assert_eq!(seen["status"], 403, "{seen}");

    let user: uuid::Uuid = user_id.parse().unwrap();
    let stopped = app.stop_server().await;
    assert_eq!(stopped.accounts.usage_count(user).await.unwrap(), 0, "no tool ran, nothing was metered");
    stopped.cleanup().await;
}

/// Tushare down: the tool answers a day's close from TDX, saying so in the cite, as `/price` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tushare_outage_is_answered_from_tdx_through_the_tool_too() {
    let Some(app) = TestApp::start(Backend::Sqlite).await else { return };
    let (_, key) = app.user(1000).await;
    // The stock list and calendar are read while Tushare is up.
    let (status, _, body) = app.get("/price?code=600519.SH", Some(&key)).await;
    assert_eq!(status, 200, "{body}");
    app.running.sandbox.as_ref().unwrap().market.tushare.set_mode(TushareMode::Down);
    let steps = json!([{"call": "price", "arguments": {"code": "000001.SZ", "trade_date": "20260430"}}]);
    let Some(seen) = common::mcp_client(&app, &key, steps).await else { return };
    let answer = &calls(&seen["steps"][0])[0]["structured"];
    let cite = &answer["cite"];
    assert_eq!((cite["source"].as_str(), cite["fallback_from"].as_str()), (Some("sandbox:tdx"), Some("tushare")), "{answer}");
    assert_eq!(answer["as_of"], "20260430");
    assert!(answer["value"].as_f64().unwrap() > 0.0, "{answer}");
    app.stop().await;
}
