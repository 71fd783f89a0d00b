//! The LLM simulator over real HTTP, as an OpenAI-compatible client (hermes uses the `openai`
//! Python SDK, streaming by default) calls it.

use reqwest::StatusCode;
use serde_json::{json, Value};
use twilight_sandbox::{serve, LlmSim, Turn};

struct Harness {
    sim: LlmSim,
    url: String,
    http: reqwest::Client,
}

async fn harness() -> Harness {
    let sim = LlmSim::new();
    let (addr, _) = serve(sim.router(), 0).await.unwrap();
    Harness { sim, url: format!("http://{addr}/compatible-mode/v1"), http: reqwest::Client::new() }
}

/// Our MCP `price` tool as hermes offers it to the model.
fn price_tool() -> Value {
    json!([{"type": "function", "function": {"name": "mcp__twilight__price", "description": "one number", "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}])
}

/// What the next turn looks like: the tool call (name, arguments, id) or the text.
#[derive(Debug, PartialEq)]
enum Said {
    Tool(String, Value, String),
    Text(String),
}

impl Harness {
    async fn raw(&self, body: Value) -> reqwest::Response {
        self.http.post(format!("{}/chat/completions", self.url)).bearer_auth("sk-anything").json(&body).send().await.unwrap()
    }

    /// One completion, streamed or not, decoded the way the OpenAI SDK accumulates it.
    async fn ask(&self, messages: Value, stream: bool) -> Said {
        let response = self.raw(json!({"model": "qwen-plus", "messages": messages, "tools": price_tool(), "stream": stream, "stream_options": {"include_usage": true}})).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-twilight-sandbox"], "llm");
        if !stream {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["model"], "sandbox-qwen");
            let message = &body["choices"][0]["message"];
            return match message["tool_calls"].as_array() {
                Some(calls) => {
                    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
                    let f = &calls[0]["function"];
                    Said::Tool(
                        f["name"].as_str().unwrap().into(),
                        serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap(),
                        calls[0]["id"].as_str().unwrap().into(),
                    )
                }
                None => Said::Text(message["content"].as_str().unwrap().into()),
            };
        }
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let text = response.text().await.unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap()).collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        assert!(chunks.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap() > 0, "usage comes last when asked for");
        let (mut content, mut name, mut arguments, mut id, mut finish) = (String::new(), String::new(), String::new(), String::new(), None);
        for chunk in chunks.iter().filter(|c| !c["choices"].as_array().unwrap().is_empty()) {
            let delta = &chunk["choices"][0]["delta"];
            content += delta["content"].as_str().unwrap_or_default();
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(call["index"], 0);
                id += call["id"].as_str().unwrap_or_default();
                name += call["function"]["name"].as_str().unwrap_or_default();
                arguments += call["function"]["arguments"].as_str().unwrap_or_default();
            }
            finish = chunk["choices"][0]["finish_reason"].as_str().map(str::to_string).or(finish);
        }
        if name.is_empty() {
            assert_eq!(finish.as_deref(), Some("stop"));
            Said::Text(content)
        } else {
            assert_eq!(finish.as_deref(), Some("tool_calls"));
            Said::Tool(name, serde_json::from_str(&arguments).unwrap(), id)
        }
    }
}

fn price_answer() -> Value {
    json!({"code": "600519.SH", "name": "贵州茅台", "metric": "pe_ttm", "value": 27.93, "unit": "ratio", "as_of": "20260430",
        "cite": {"kind": "tool", "source": "sandbox:tushare", "served_by": "twilight-drive-backend", "served_version": "0.1.0",
            "table": "daily_basic", "fetched_at": "2026-04-30T11:00:00Z", "cache_age_seconds": 0, "tool_call_id": "tc_stub_1"}})
}

#[tokio::test]
async fn the_default_rule_calls_the_price_tool_then_quotes_value_and_cite() {
    let h = harness().await;
    for stream in [false, true] {
        let question = json!([{"role": "system", "content": "You are a bot."}, {"role": "user", "content": "查 600519 的 P/E"}]);
        let Said::Tool(name, arguments, id) = h.ask(question.clone(), stream).await else { panic!("expected a tool call") };
        assert_eq!((name.as_str(), &arguments), ("mcp__twilight__price", &json!({"code": "600519", "metric": "pe_ttm"})));

        let mut messages = question.as_array().unwrap().clone();
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": json!({"result": price_answer().to_string(), "structuredContent": price_answer()}).to_string()}));
        let Said::Text(text) = h.ask(Value::Array(messages), stream).await else { panic!("expected text") };
        for part in ["27.93", "贵州茅台", "sandbox:tushare", "daily_basic", "2026-04-30T11:00:00Z", "tc_stub_1"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
    }
    assert_eq!(h.sim.requests().len(), 4);
    assert_eq!(h.sim.calls("POST /compatible-mode/v1/chat/completions"), 4);
}

#[tokio::test]
async fn scripted_turns_come_first_and_only_for_agent_requests() {
    let h = harness().await;
    h.sim.script([Turn::tool("terminal", json!({"command": "echo 42"})), Turn::final_text("The tool said: {tool_result}")]);
    let title = h
        .raw(json!({"model": "qwen-plus", "messages": [{"role": "user", "content": "name this chat"}]}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        title["choices"][0]["message"]["content"].as_str().unwrap().contains("name this chat"),
        "a request without tools leaves the script alone"
    );
    let Said::Tool(name, arguments, _) = h.ask(json!([{"role": "user", "content": "anything"}]), true).await else { panic!() };
    assert_eq!((name.as_str(), &arguments), ("terminal", &json!({"command": "echo 42"})));
    let messages =
        json!([{"role": "user", "content": "anything"}, {"role": "tool", "tool_call_id": "x", "content": "{\"output\": \"42\"}"}]);
    assert_eq!(h.ask(messages, false).await, Said::Text("The tool said: {\"output\": \"42\"}".into()));
    assert!(
        matches!(h.ask(json!([{"role": "user", "content": "hello"}]), false).await, Said::Text(t) if t.contains("hello")),
        "back to the default rule"
    );
}

#[tokio::test]
async fn keys_bodies_and_models_are_checked_like_dashscope() {
    let h = harness().await;
    let anonymous = h.http.post(format!("{}/chat/completions", h.url)).json(&json!({"messages": []})).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    assert_eq!(h.raw(json!({"model": "qwen-plus", "messages": []})).await.status(), StatusCode::BAD_REQUEST);
    let models: Value = h.http.get(format!("{}/models", h.url)).bearer_auth("k").send().await.unwrap().json().await.unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "sandbox-qwen"));
    let plain_v1 = h.http.get(h.url.replace("/compatible-mode/v1", "/v1/models")).send().await.unwrap();
    assert_eq!(plain_v1.status(), StatusCode::OK);
}
