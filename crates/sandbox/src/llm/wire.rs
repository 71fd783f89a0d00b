//! A reply as OpenAI's chat-completions wire format: one `chat.completion` object, or a stream of
//! `chat.completion.chunk` server-sent events ending in `data: [DONE]` — role first, then content
//! or the tool call (name and id first, arguments after, as OpenAI and DashScope split them), a
//! chunk with `finish_reason`, and the usage chunk when `stream_options.include_usage` asks.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::reply::Reply;
use super::MODEL;

pub fn respond(reply: &Reply, id: u64, messages: &[Value], streamed: bool, include_usage: bool) -> Response {
    let completion_id = format!("chatcmpl-sandbox-{id}");
    let created = chrono::Utc::now().timestamp();
    let usage = usage(messages, reply);
    let (message, finish_reason) = match reply {
        Reply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Reply::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": tool_call_id(id), "type": "function", "function": {"name": name, "arguments": arguments}}
            ]}),
            "tool_calls",
        ),
    };
    if !streamed {
        return Json(json!({
            "id": completion_id, "object": "chat.completion", "created": created, "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut chunks = Vec::new();
    match reply {
        Reply::Text(text) => {
            chunks.push(chunk(json!({"role": "assistant", "content": ""}), None));
            chunks.extend(pieces(text, 3).map(|piece| chunk(json!({"content": piece}), None)));
        }
        Reply::ToolCall { name, arguments } => {
            let start = json!([{"index": 0, "id": tool_call_id(id), "type": "function", "function": {"name": name, "arguments": ""}}]);
            chunks.push(chunk(json!({"role": "assistant", "content": null, "tool_calls": start}), None));
            chunks.extend(
                pieces(arguments, 2).map(|piece| chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), None)),
            );
        }
    }
    chunks.push(chunk(json!({}), Some(finish_reason)));
    if include_usage {
        chunks.push(json!({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL, "choices": [], "usage": usage}));
    }
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    ([(CONTENT_TYPE, "text/event-stream; charset=utf-8")], body).into_response()
}

fn tool_call_id(id: u64) -> String {
    format!("call_sandbox_{id}")
}

/// `text` in up to `n` consecutive pieces, split on character boundaries.
fn pieces(text: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n).max(1);
    (0..chars.len()).step_by(size).map(move |i| chars[i..(i + size).min(chars.len())].iter().collect())
}

/// A rough token count (four bytes a token), so clients that account usage see plausible figures.
fn usage(messages: &[Value], reply: &Reply) -> Value {
    let prompt = messages.iter().map(|m| m.to_string().len()).sum::<usize>() / 4 + 1;
    let completion = match reply {
        Reply::Text(text) => text.len(),
        Reply::ToolCall { name, arguments } => name.len() + arguments.len(),
    } / 4
        + 1;
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_text() {
        assert_eq!(pieces("贵州茅台 28.5", 3).collect::<String>(), "贵州茅台 28.5");
        assert_eq!(pieces("", 3).count(), 0);
        assert_eq!(pieces("ab", 3).count(), 2);
    }
}
