//! An OpenAI-compatible chat-completions endpoint standing in for Qwen on DashScope, so a real
//! hermes gateway can run a whole turn offline. Served at `POST /v1/chat/completions` and at
//! DashScope's `POST /compatible-mode/v1/chat/completions` (hermes' `alibaba` provider appends
//! `/chat/completions` to `DASHSCOPE_BASE_URL`), with `GET …/models` beside each.
//!
//! What it answers is decided by [`reply`]: a queue of scripted [`Turn`]s for agent requests (those
//! offering `tools`), else a deterministic rule that looks a P/E up with our MCP `price` tool
//! and quotes the result. Answers come as one JSON object, or as server-sent events when the
//! request says `stream: true` (hermes streams by default), tool-call deltas included.

mod reply;
mod wire;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::common::{self, Fault, Switchboard};
pub use reply::Turn;

/// The model every answer names, so a transcript shows it came from the simulator.
pub const MODEL: &str = "sandbox-qwen";

/// The simulator; clones share state.
#[derive(Clone, Default)]
pub struct LlmSim {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    switchboard: Switchboard,
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    script: VecDeque<Turn>,
    requests: Vec<Value>,
    /// The bearer token of every chat-completions and models request, oldest first.
    keys: Vec<String>,
    next_id: u64,
}

impl LlmSim {
    pub fn new() -> Self {
        Self::default()
    }

    /// The chat-completions and models routes under `/v1` and `/compatible-mode/v1`, counted at
    /// `GET /_sandbox/calls` and subject to [`Self::set_fault`].
    pub fn router(&self) -> Router {
        let mut api = Router::new();
        for base in ["/v1", "/compatible-mode/v1"] {
            api = api.route(&format!("{base}/chat/completions"), post(completions)).route(&format!("{base}/models"), get(models));
        }
        common::label(self.inner.switchboard.instrument(api), "llm").with_state(self.clone())
    }

    /// Queues turns to answer the next agent requests with, in order; once they are used up the
    /// default rule answers again.
    pub fn script(&self, turns: impl IntoIterator<Item = Turn>) {
        self.state().script.extend(turns);
    }

    /// Every chat-completions request body received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.state().requests.clone()
    }

    /// The bearer token (`Authorization: Bearer <key>`) of every chat-completions and models
    /// request received so far, oldest first; empty for a request without one.
    pub fn keys(&self) -> Vec<String> {
        self.state().keys.clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.inner.switchboard.set_fault(fault);
    }

    /// Requests received on `route`, e.g. `POST /compatible-mode/v1/chat/completions`.
    pub fn calls(&self, route: &str) -> u64 {
        self.inner.switchboard.calls(route)
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// OpenAI's error shape, which DashScope's compatible mode copies.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    (status, Json(body)).into_response()
}

/// The request's bearer token (empty without one), recorded for [`LlmSim::keys`].
fn bearer(sim: &LlmSim, headers: &HeaderMap) -> String {
    let key =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default().to_string();
    sim.state().keys.push(key.clone());
    key
}

async fn completions(State(sim): State<LlmSim>, headers: HeaderMap, body: Bytes) -> Response {
    let key = bearer(&sim, &headers);
    if key.trim().is_empty() {
        return error(StatusCode::UNAUTHORIZED, "invalid_api_key", "Incorrect API key provided.");
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request @ Value::Object(_)) => request,
        _ => return error(StatusCode::BAD_REQUEST, "invalid_parameter_error", "The request body is not a JSON object."),
    };
    let Some(messages) = request["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_parameter_error", "messages must be a non-empty array.");
    };
    let offers_tools = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let (reply, id) = {
        let mut state = sim.state();
        state.requests.push(request.clone());
        state.next_id += 1;
        let scripted = if offers_tools { state.script.pop_front() } else { None };
        (reply::answer(scripted, messages, &request["tools"]), state.next_id)
    };
    let streamed = request["stream"].as_bool() == Some(true);
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    wire::respond(&reply, id, messages, streamed, include_usage)
}

async fn models(State(sim): State<LlmSim>, headers: HeaderMap) -> Json<Value> {
    bearer(&sim, &headers);
    let model = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "twilight-sandbox"});
    Json(json!({"object": "list", "data": [model(MODEL), model("qwen-plus"), model("qwen-max")]}))
}
