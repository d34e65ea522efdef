//! Fake Anthropic Messages server (`POST /v1/messages`), streaming included.
//!
//! Written from the vendor's documentation: content blocks (`text`, `tool_use`), the full SSE
//! event sequence (`message_start`, `content_block_start/delta/stop`, `message_delta` with
//! cumulative usage, `message_stop`, `ping`, mid-stream `error`), prompt-cache usage fields,
//! and error bodies `{"type":"error","error":{...},"request_id":...}` including 529.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::body::{StreamFault, StreamPlan, never_body, stream_body};
use crate::script::{Fault, ScriptedUsage, count_tokens, tokens};
use crate::server::FakeState;

const REQUEST_ID: &str = "req_fake_anthropic";

pub(crate) fn routes() -> Router<Arc<FakeState>> {
    Router::new().route("/v1/messages", post(messages))
}

fn error(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": REQUEST_ID});
    let mut resp =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert("request-id", HeaderValue::from_static(REQUEST_ID));
    if let Some(s) = retry_after {
        h.insert("retry-after", HeaderValue::from(s));
    }
    resp
}

fn status_fault(status: u16, retry_after: Option<u64>, message: Option<&str>) -> Response {
    let (kind, default_msg) = match status {
        400 => ("invalid_request_error", "Invalid request."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => ("permission_error", "Your API key does not have permission."),
        404 => ("not_found_error", "Not found."),
        413 => ("request_too_large", "Request exceeds the maximum allowed size."),
        429 => ("rate_limit_error", "Number of requests has exceeded your rate limit."),
        529 => ("overloaded_error", "Overloaded"),
        _ => ("api_error", "Internal server error"),
    };
    error(status, kind, message.unwrap_or(default_msg), retry_after)
}

// A rejection is the whole HTTP answer; it is built once per bad request, so its size is moot.
#[allow(clippy::result_large_err)]
fn validate(headers: &HeaderMap, body: &Value) -> Result<(), Response> {
    // `x-api-key` per the API reference; newer official SDKs send `Authorization: Bearer`.
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .or_else(|| headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
        .unwrap_or("");
    if key.is_empty() {
        return Err(error(401, "authentication_error", "x-api-key header is required", None));
    }
    if headers.get("anthropic-version").is_none() {
        return Err(error(400, "invalid_request_error", "anthropic-version: header is required", None));
    }
    let bad = |m: &str| Err(error(400, "invalid_request_error", m, None));
    if !body["model"].is_string() {
        return bad("model: Field required");
    }
    if !body["max_tokens"].is_u64() {
        return bad("max_tokens: Field required");
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return bad("messages: at least one message is required");
    };
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role != "user" && role != "assistant" {
            return bad(&format!("messages.{i}.role: Input should be 'user' or 'assistant'"));
        }
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(_) => Vec::new(),
            Value::Array(a) => a.clone(),
            _ => return bad(&format!("messages.{i}.content: Field required")),
        };
        if role == "user" {
            let mut seen_other = false;
            for b in &blocks {
                if b["type"] == "tool_result" {
                    let id = b["tool_use_id"].as_str().unwrap_or("");
                    if seen_other || !pending.iter().any(|p| p == id) {
                        return bad(&format!(
                            "messages.{i}: tool_result block(s) must follow a tool_use with the same id and come first"
                        ));
                    }
                } else {
                    seen_other = true;
                }
            }
            pending.clear();
        } else {
            for b in &blocks {
                if b["type"] == "tool_use" {
                    if !b["input"].is_object() {
                        return bad(&format!("messages.{i}: tool_use.input must be an object"));
                    }
                    pending.push(b["id"].as_str().unwrap_or("").to_owned());
                }
            }
        }
    }
    Ok(())
}

fn usage_json(u: &ScriptedUsage, output: u64) -> Value {
    let uncached = u.input_tokens.saturating_sub(u.cache_read_tokens).saturating_sub(u.cache_write_tokens);
    json!({
        "input_tokens": uncached,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": output,
        "service_tier": "standard",
    })
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn messages(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let body = state.record(&method, &uri, &headers, &raw);
    if let Err(resp) = validate(&headers, &body) {
        return resp;
    }
    let scenario = state.next_scenario();
    if scenario.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(scenario.latency_ms)).await;
    }
    match &scenario.fault {
        Some(Fault::Status { status, retry_after, message }) => {
            return status_fault(*status, *retry_after, message.as_deref());
        }
        Some(Fault::ContextOverflow) => {
            return error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", None);
        }
        _ => {}
    }
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reply = &scenario.reply;
    let stop_reason = reply
        .finish_reason
        .clone()
        .unwrap_or_else(|| if reply.tool_calls.is_empty() { "end_turn".into() } else { "tool_use".into() });
    let usage = reply.usage.unwrap_or_else(|| ScriptedUsage {
        input_tokens: (count_tokens(&body["messages"]) + count_tokens(&body["system"])).max(1),
        output_tokens: tokens(&reply.text).len() as u64
            + reply.tool_calls.iter().map(|c| 1 + count_tokens(&c.arguments)).sum::<u64>(),
        ..ScriptedUsage::default()
    });
    let id = format!("msg_fake{seq:06}");
    let model = body["model"].as_str().unwrap_or("claude-fake").to_owned();
    let tool_id =
        |i: usize, explicit: &Option<String>| explicit.clone().unwrap_or_else(|| format!("toolu_fake{seq:04}{i:02}"));
    if body["stream"].as_bool() == Some(true) {
        let mut frames = Vec::new();
        let ev = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
        let mut start_usage = usage_json(&usage, 1);
        start_usage["output_tokens"] = json!(1);
        frames.push(ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ));
        let mut index = 0;
        if !reply.text.is_empty() {
            frames.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
            ));
            for t in tokens(&reply.text) {
                frames.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": t}}),
                ));
            }
            frames.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": index})));
            index += 1;
        }
        for (i, c) in reply.tool_calls.iter().enumerate() {
            frames.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": tool_id(i, &c.id), "name": c.name, "input": {}}}),
            ));
            let args = c.arguments.to_string();
            let chars: Vec<char> = args.chars().collect();
            for p in chars.chunks(8) {
                let p: String = p.iter().collect();
                frames.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p}}),
                ));
            }
            frames.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": index})));
            index += 1;
        }
        frames.push(ev(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": usage.output_tokens}}),
        ));
        frames.push(ev("message_stop", json!({"type": "message_stop"})));
        let fault = match &scenario.fault {
            Some(Fault::Stall { after_events }) => Some(StreamFault::Stall { after: *after_events }),
            Some(Fault::Disconnect { after_events }) => {
                Some(StreamFault::Disconnect { after: *after_events })
            }
            Some(Fault::Truncate { after_events }) => {
                Some(StreamFault::Truncate { after: *after_events })
            }
            Some(Fault::Malformed { after_events }) => Some(StreamFault::Inject {
                after: *after_events,
                frame: Bytes::from_static(
                    b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_de\n\n",
                ),
            }),
            Some(Fault::StreamError { after_events }) => Some(StreamFault::Inject {
                after: *after_events,
                frame: ev("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            }),
            _ => None,
        };
        let mut resp = Response::new(stream_body(StreamPlan {
            frames,
            frame_delay: Duration::from_millis(scenario.token_delay_ms),
            split_writes: scenario.split_writes,
            keepalive: scenario.keepalive.then(|| Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")),
            fault,
        }));
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("text/event-stream; charset=utf-8"));
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        h.insert("request-id", HeaderValue::from_static(REQUEST_ID));
        return resp;
    }
    let mut content = Vec::new();
    if !reply.text.is_empty() {
        content.push(json!({"type": "text", "text": reply.text}));
    }
    for (i, c) in reply.tool_calls.iter().enumerate() {
        content.push(json!({"type": "tool_use", "id": tool_id(i, &c.id), "name": c.name, "input": c.arguments}));
    }
    let full = json!({"id": id, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": usage_json(&usage, usage.output_tokens)});
    let text = full.to_string();
    let json_resp = |body: Body| {
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("request-id", HeaderValue::from_static(REQUEST_ID));
        resp
    };
    match &scenario.fault {
        Some(Fault::Stall { .. }) => json_resp(never_body()),
        Some(Fault::Malformed { .. }) => json_resp(Body::from(text[..text.len() / 2].to_owned())),
        Some(Fault::Disconnect { .. }) | Some(Fault::Truncate { .. }) => json_resp(stream_body(StreamPlan {
            frames: vec![Bytes::from(text[..text.len() / 2].to_owned())],
            fault: Some(StreamFault::Disconnect { after: 1 }),
            ..StreamPlan::default()
        })),
        _ => json_resp(Body::from(text)),
    }
}
