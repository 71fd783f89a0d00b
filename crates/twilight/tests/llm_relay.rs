//! The LLM relay at `/llm/v1` over HTTP: completions (streamed and not) relayed to the sandbox LLM
//! with the backend's key and never the user's, one `llm` usage row per completion costing the
//! upstream's total tokens, refusals before any upstream call, upstream failures as our JSON errors,
//! the soft daily budget (seeded from the accounts DB) warning once — and, against a hand-made
//! upstream configured the production way (`[llm]`, a key file), a stream passed through while the
//! upstream is still writing it, a client that hangs up mid-stream, and the upstream's refusals.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::Notify;
use twilight::app::SANDBOX_LLM_KEY;
use twilight_accounts::{Accounts, UsageDay, UsageRecord};
use twilight_sandbox::Fault;
use uuid::Uuid;

use common::{captured_logs, Backend, TestApp};

const COMPLETIONS: &str = "/llm/v1/chat/completions";
const UPSTREAM_COMPLETIONS: &str = "POST /compatible-mode/v1/chat/completions";
const BUDGET_WARNING: &str = "daily LLM token budget exceeded";

on_both_backends!(completions_are_relayed_with_the_backends_key_and_metered, refusals_never_reach_the_upstream);

fn logs() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

fn ask(text: &str) -> Value {
    json!({"model": "qwen3.7-plus", "messages": [{"role": "system", "content": "你是张老师。"}, {"role": "user", "content": text}]})
}

async fn post_raw(app: &TestApp, key: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let mut request = app.http.post(app.url(COMPLETIONS)).header(header::CONTENT_TYPE.as_str(), "application/json").body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// A whole response body read piece by piece as the server sends it.
async fn read_all(response: &mut reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), response.chunk()).await.expect("the stream stalled").unwrap() {
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).unwrap()
}

/// The JSON payloads of the `data:` events of an SSE body, `[DONE]` excluded.
fn events(sse: &str) -> Vec<Value> {
    sse.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect()
}

/// Today's usage of `user_id` on `endpoint` (requests, upstream points).
fn today(rows: &[UsageDay], endpoint: &str) -> (i64, i64) {
    let day = Utc::now().format("%Y-%m-%d").to_string();
    rows.iter().find(|r| r.endpoint == endpoint && r.day == day).map_or((0, 0), |r| (r.requests, r.upstream_cost_pts))
}

async fn usage_today(accounts: &dyn Accounts, user_id: &str) -> Vec<UsageDay> {
    let midnight = Utc::now().date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    accounts.usage_by_day(user_id.parse().unwrap(), midnight).await.unwrap()
}

async fn completions_are_relayed_with_the_backends_key_and_metered(app: TestApp) {
    let llm = app.running.sandbox.as_ref().unwrap().llm.clone();
    // A data bucket of one request a minute: the relay's calls do not draw from it.
    let (user_id, key) = app.user(1).await;

    // Not streamed: the upstream's JSON answer as it came, usage included.
    let mut response = post_raw(&app, Some(&key), ask("查 600519 的 P/E").to_string()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()[header::CONTENT_TYPE.as_str()].to_str().unwrap().starts_with("application/json"));
    let answer: Value = serde_json::from_str(&read_all(&mut response).await).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["choices"][0]["message"]["content"].as_str().unwrap().contains("收到：查 600519 的 P/E"), "{answer}");
    let whole_tokens = answer["usage"]["total_tokens"].as_i64().unwrap();
    assert!(whole_tokens > 0);

    // Streamed: server-sent events relayed chunk by chunk, the usage chunk the relay asked for, then [DONE].
    let mut streamed = ask("你好");
    streamed["stream"] = true.into();
    let mut response = post_raw(&app, Some(&key), streamed.to_string()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()[header::CONTENT_TYPE.as_str()].to_str().unwrap().starts_with("text/event-stream"));
    let sse = read_all(&mut response).await;
    assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");
    let events = events(&sse);
    assert!(events.len() >= 4, "role, pieces of content, finish, usage: {sse}");
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains("收到：你好"), "{text}");
    let stream_tokens = events.last().unwrap()["usage"]["total_tokens"].as_i64().expect("the usage chunk comes last");
    assert_eq!(llm.requests().last().unwrap()["stream_options"]["include_usage"], true, "the relay asked for usage");

    // The model list is relayed too.
    let (status, _, models) = app.get("/llm/v1/models", Some(&key)).await;
    assert_eq!(status, 200, "{models}");
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == twilight_sandbox::llm::MODEL), "{models}");

    // The upstream saw the backend's key on every call, never the user's.
    let keys = llm.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| k == SANDBOX_LLM_KEY), "{keys:?}");
    let transcript = serde_json::to_string(&llm.requests()).unwrap();
    assert!(!transcript.contains(&key), "the user's key went upstream");

    // The data plane's own bucket is untouched: one request passes, the next is limited.
    assert_eq!(app.get("/reports/search", Some(&key)).await.0, 501);
    assert_eq!(app.get("/reports/search", Some(&key)).await.0, 429);

    // One `llm` row per completion, costing the upstream's total tokens; the listing is `llm:models`.
    let stopped = app.stop_server().await;
    let rows = usage_today(&*stopped.accounts, &user_id).await;
    assert_eq!(today(&rows, "llm"), (2, whole_tokens + stream_tokens), "{rows:?}");
    assert_eq!(today(&rows, "llm:models"), (1, 0), "{rows:?}");
    stopped.cleanup().await;
}

async fn refusals_never_reach_the_upstream(app: TestApp) {
    let llm = app.running.sandbox.as_ref().unwrap().llm.clone();
    let (user_id, key) = app.user(60).await;
    let body = ask("hi").to_string();

    // Keys: none or unknown → 401 with a Bearer challenge; an admin token → 403.
    let response = post_raw(&app, None, body.clone()).await;
    assert_eq!((response.status().as_u16(), response.headers()["www-authenticate"].to_str().unwrap()), (401, "Bearer"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "missing_token", "{error}");
    assert_eq!(post_raw(&app, Some("tw_not-a-key"), body.clone()).await.status(), 401);
    let response = post_raw(&app, Some(&app.admin_token), body.clone()).await;
    assert_eq!(response.status(), 403);
    assert_eq!(app.get("/llm/v1/models", Some(&app.admin_token)).await.0, 403);

    // Malformed requests: 400 naming the problem; too large: 413. All JSON.
    let refused = |status: u16, code: &'static str, field: Option<&'static str>| {
        move |response: (u16, Value)| {
            assert_eq!(response.0, status, "{}", response.1);
            assert_eq!(response.1["error"]["code"], code, "{}", response.1);
            assert_eq!(response.1["error"]["field"].as_str(), field, "{}", response.1);
            response.1["error"]["message"].as_str().unwrap().to_string()
        }
    };
    let send = |body: Vec<u8>| {
        let app = &app;
        let key = key.clone();
        async move {
            let response = post_raw(app, Some(&key), body).await;
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let message = refused(400, "invalid_input", None)(send(b"{\"model\": \"qwen3.7-plus\", \"messages\": [".to_vec()).await);
    assert!(message.contains("not valid JSON"), "{message}");
    let message = refused(400, "invalid_input", Some("model"))(
        send(json!({"model": "qwen3.7-max", "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes()).await,
    );
    assert!(message.contains("qwen3.7-max") && message.contains("qwen3.7-plus"), "{message}");
    refused(400, "invalid_input", Some("messages"))(send(json!({"model": "qwen3.7-plus"}).to_string().into_bytes()).await);
    let mut huge = ask("hi");
    huge["messages"][1]["content"] = "x".repeat(2 * 1024 * 1024).into();
    refused(413, "payload_too_large", None)(send(huge.to_string().into_bytes()).await);
    assert_eq!(llm.calls(UPSTREAM_COMPLETIONS), 0, "nothing refused went upstream");

    // A revoked key: 403, also mid-conversation.
    assert_eq!(post_raw(&app, Some(&key), body.clone()).await.status(), 200);
    let (status, revoked) = app.post(&format!("/admin/users/{user_id}/keys/revoke"), Some(&app.admin_token), json!({})).await;
    assert_eq!(status, 200, "{revoked}");
    let response = post_raw(&app, Some(&key), body.clone()).await;
    assert_eq!(response.status(), 403);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "revoked_key");
    assert_eq!(llm.calls(UPSTREAM_COMPLETIONS), 1);

    // Refusals after auth are metered at no cost; those before it are not metered.
    let stopped = app.stop_server().await;
    let rows = usage_today(&*stopped.accounts, &user_id).await;
    let (requests, cost) = today(&rows, "llm");
    assert_eq!(requests, 5, "four refused, one answered: {rows:?}");
    assert!(cost > 0);
    stopped.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_down_or_slow_is_a_json_5xx() {
    let app = TestApp::start_with(Backend::Sqlite, |config| config.llm.timeout_secs = 1).await.unwrap();
    let llm = app.running.sandbox.as_ref().unwrap().llm.clone();
    let (user_id, key) = app.user(60).await;

    llm.set_fault(Fault::Down);
    let (status, down) = app.post(COMPLETIONS, Some(&key), ask("hi")).await;
    assert_eq!((status, down["error"]["code"].as_str()), (503, Some("upstream_error")), "{down}");
    let mut streamed = ask("hi");
    streamed["stream"] = true.into();
    let (status, down) = app.post(COMPLETIONS, Some(&key), streamed).await;
    assert_eq!((status, down["error"]["code"].as_str()), (503, Some("upstream_error")), "a stream that never began: {down}");

    llm.set_fault(Fault::Slow(Duration::from_secs(3)));
    let (status, slow) = app.post(COMPLETIONS, Some(&key), ask("hi")).await;
    assert_eq!((status, slow["error"]["code"].as_str()), (504, Some("upstream_timeout")), "{slow}");
    let (status, _, slow) = app.get("/llm/v1/models", Some(&key)).await;
    assert_eq!((status, slow["error"]["code"].as_str()), (504, Some("upstream_timeout")), "{slow}");

    llm.set_fault(Fault::None);
    assert_eq!(app.post(COMPLETIONS, Some(&key), ask("hi")).await.0, 200, "it recovers");

    let stopped = app.stop_server().await;
    let rows = usage_today(&*stopped.accounts, &user_id).await;
    let (requests, _) = today(&rows, "llm");
    assert_eq!(requests, 4, "failures are metered too: {rows:?}");
    stopped.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_budget_warns_once_when_crossed_counting_earlier_usage() {
    budget_warns_once_when_crossed_counting_earlier_usage(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_budget_warns_once_when_crossed_counting_earlier_usage() {
    budget_warns_once_when_crossed_counting_earlier_usage(Backend::Postgres).await;
}

/// A user who spent most of today's budget before this server started (rows in the accounts DB)
/// crosses it with the next completion: one warning naming user, tokens and budget, and no second
/// one. Another user well under the budget is not warned about. Nothing is refused.
async fn budget_warns_once_when_crossed_counting_earlier_usage(backend: Backend) {
    const BUDGET: i64 = 10_000;
    captured_logs();
    let Some(app) = TestApp::start_with(backend, |config| config.llm.daily_token_budget = BUDGET as u64).await else {
        return;
    };
    let (spender, key) = app.user(60).await;
    let (thrifty, thrifty_key) = app.user(60).await;
    let spender_id: Uuid = spender.parse().unwrap();
    let earlier = BUDGET - 5;
    let before_today = Utc::now().date_naive().and_time(chrono::NaiveTime::MIN).and_utc() - chrono::Duration::hours(1);
    let row = |endpoint: &str, occurred_at, cost| UsageRecord {
        row_id: uuid::Uuid::new_v4(),
        user_id: spender_id,
        key_hash: "earlier".into(),
        endpoint: endpoint.into(),
        occurred_at,
        upstream_cost_pts: cost,
        status: 200,
        citation: None,
    };
    // Today's earlier completions count; yesterday's and other endpoints' do not.
    let seeded = [row("llm", Utc::now(), earlier as i32), row("llm", before_today, 50_000), row("/price", Utc::now(), 50_000)];
    app.running.accounts.record_usage(&seeded).await.unwrap();

    let (status, first) = app.post(COMPLETIONS, Some(&key), ask("第一问")).await;
    assert_eq!(status, 200, "{first}");
    let first_tokens = first["usage"]["total_tokens"].as_i64().unwrap();
    assert!(first_tokens > 5, "this completion crosses the budget");
    let (status, second) = app.post(COMPLETIONS, Some(&key), ask("第二问")).await;
    assert_eq!(status, 200, "a soft budget refuses nothing: {second}");
    assert_eq!(app.post(COMPLETIONS, Some(&thrifty_key), ask("一问")).await.0, 200);

    let warnings: Vec<Value> = logs()
        .lines()
        .filter(|l| l.contains(BUDGET_WARNING))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["fields"]["user_id"] == spender.as_str() || l["fields"]["user_id"] == thrifty.as_str())
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, for the spender only: {warnings:?}");
    let fields = &warnings[0]["fields"];
    assert_eq!(warnings[0]["level"], "WARN");
    assert_eq!(
        (fields["user_id"].as_str(), fields["tokens"].as_i64(), fields["budget"].as_i64()),
        (Some(spender.as_str()), Some(earlier + first_tokens), Some(BUDGET))
    );
    app.stop().await;
}

/// A hand-made OpenAI-compatible upstream whose behaviour the requested model picks.
#[derive(Clone, Default)]
struct Upstream {
    /// (Authorization, body) of every request.
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    /// Lets a held stream go on.
    release: Arc<Notify>,
}

const HELD_TOKENS: u64 = 77;
const PLAIN_TOKENS: u64 = 11;

fn chunk(content: &str) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    ))
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": "invalid_request_error", "code": "x"}}))).into_response()
}

async fn upstream_completions(State(upstream): State<Upstream>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    upstream.seen.lock().unwrap().push((auth, body.clone()));
    let model = body["model"].as_str().unwrap_or_default().to_string();
    match model.as_str() {
        "hold" | "hold-then-cut" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(chunk("第一段"))).await;
                upstream.release.notified().await;
                let _ = tx.send(Ok(chunk("第二段"))).await;
                if model == "hold" {
                    let usage = json!({"choices": [], "usage": {"prompt_tokens": 70, "completion_tokens": 7, "total_tokens": HELD_TOKENS}});
                    let _ = tx.send(Ok(Bytes::from(format!("data: {usage}\n\ndata: [DONE]\n\n")))).await;
                }
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(stream)).into_response()
        }
        "refuse-key" => openai_error(StatusCode::UNAUTHORIZED, "Incorrect API key provided: sk-ba***st"),
        "busy" => {
            let mut response = openai_error(StatusCode::TOO_MANY_REQUESTS, "Requests rate limit exceeded");
            response.headers_mut().insert(header::RETRY_AFTER, "7".parse().unwrap());
            response
        }
        "too-long" => openai_error(StatusCode::BAD_REQUEST, "Range of input length should be [1, 30720]"),
        "boom" => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        _ => Json(json!({"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "好"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": PLAIN_TOKENS}}))
        .into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_upstream_streams_through_and_its_refusals_are_ours() {
    captured_logs();
    let upstream = Upstream::default();
    let router = Router::new()
        .route("/v1/chat/completions", post(upstream_completions))
        .route("/v1/models", get(|| async { Json(json!({"object": "list", "data": [{"id": "qwen3.7-plus", "object": "model"}]})) }))
        .with_state(upstream.clone());
    let (addr, _task) = twilight_sandbox::serve(router, 0).await.unwrap();

    // Configured the production way: no sandbox, the upstream and its key file in [llm].
    let secrets = tempfile::tempdir().unwrap();
    let backend_key = format!("sk-backend-{}", Uuid::new_v4().simple());
    std::fs::write(secrets.path().join("llm-key"), format!("{backend_key}\n")).unwrap();
    std::fs::write(secrets.path().join("tushare-token"), "unused").unwrap();
    let app = TestApp::start_with(Backend::Sqlite, |config| {
        config.sandbox.enabled = false;
        config.provisioner.in_process = false;
        config.tushare.token_file = Some(secrets.path().join("tushare-token"));
        config.llm.base_url = format!("http://{addr}/v1/");
        config.llm.api_key_file = Some(secrets.path().join("llm-key"));
        config.llm.allowed_models = Vec::new();
    })
    .await
    .unwrap();
    let (user_id, key) = app.user(60).await;
    let request =
        |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string();

    // The first event reaches the client while the upstream is still holding the rest back.
    let mut response = post_raw(&app, Some(&key), request("hold", true)).await;
    assert_eq!(response.status(), 200);
    let first =
        tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.expect("the first event was held back").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("第一段"));
    upstream.release.notify_one();
    let rest = read_all(&mut response).await;
    assert!(rest.contains("第二段") && rest.ends_with("data: [DONE]\n\n"), "{rest}");

    // A client that hangs up mid-stream is still metered (with the usage seen: none yet).
    let mut response = post_raw(&app, Some(&key), request("hold-then-cut", true)).await;
    assert!(String::from_utf8_lossy(&response.chunk().await.unwrap().unwrap()).contains("第一段"));
    drop(response);
    upstream.release.notify_one();

    // Not streamed; then the upstream's refusals as our JSON errors.
    let response = post_raw(&app, Some(&key), request("plain", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["usage"]["total_tokens"], PLAIN_TOKENS);
    let refusal = |model: &'static str| {
        let app = &app;
        let key = key.clone();
        async move {
            let response = post_raw(app, Some(&key), request(model, false)).await;
            let retry_after = response.headers().get(header::RETRY_AFTER.as_str()).map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), retry_after, response.json::<Value>().await.unwrap())
        }
    };
    let (status, _, body) = refusal("refuse-key").await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_error")), "{body}");
    assert!(!body.to_string().contains("sk-ba"), "the upstream's words about our key are not passed on: {body}");
    let (status, retry_after, body) = refusal("busy").await;
    assert_eq!((status, retry_after.as_deref(), body["error"]["code"].as_str()), (429, Some("7"), Some("upstream_throttled")), "{body}");
    let (status, _, body) = refusal("too-long").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("upstream_rejected")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Range of input length"), "the caller learns what was wrong: {body}");
    let (status, _, body) = refusal("boom").await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_error")), "{body}");
    let (status, _, models) = app.get("/llm/v1/models", Some(&key)).await;
    assert_eq!((status, models["data"][0]["id"].as_str()), (200, Some("qwen3.7-plus")));

    // Every upstream call carried the backend's key from the key file, and never the user's.
    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 7);
    assert!(seen.iter().all(|(auth, _)| *auth == format!("Bearer {backend_key}")), "{seen:?}");
    assert!(!serde_json::to_string(&seen.iter().map(|(_, body)| body).collect::<Vec<_>>()).unwrap().contains(&key));
    assert!(seen.iter().filter(|(_, body)| body["stream"] == true).all(|(_, body)| body["stream_options"]["include_usage"] == true));

    let stopped = app.stop_server().await;
    let rows = usage_today(&*stopped.accounts, &user_id).await;
    assert_eq!(today(&rows, "llm"), (7, (HELD_TOKENS + PLAIN_TOKENS) as i64), "the cut stream costs what it reported: nothing; {rows:?}");
    let logs = logs();
    assert!(!logs.contains(&backend_key), "the backend key is in the logs");
    assert!(!logs.contains(&key), "the user's key is in the logs");
    stopped.cleanup().await;
}
