//! Fake OpenAI Chat Completions server (`POST /v1/chat/completions`), streaming included.
//!
//! Written from the vendor's documentation: non-streamed `chat.completion` objects, streamed
//! `chat.completion.chunk`s with tool-call deltas by `index`, the extra usage chunk with empty
//! `choices` when `stream_options.include_usage` is set, and `data: [DONE]`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::body::{StreamFault, StreamPlan, never_body, stream_body};
use crate::script::{Fault, Reply, Scenario, ScriptedUsage, count_tokens, tokens};
use crate::server::FakeState;

pub(crate) fn routes() -> Router<Arc<FakeState>> {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/models", get(models))
}

async fn models() -> axum::Json<Value> {
    axum::Json(json!({"object": "list", "data": [
        {"id": "gpt-fake", "object": "model", "created": 0, "owned_by": "switchboard"}
    ]}))
}

fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

fn error(status: u16, retry_after: Option<u64>, body: Value) -> Response {
    let mut resp =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert("x-request-id", HeaderValue::from_static("req_fake_openai"));
    if let Some(s) = retry_after {
        h.insert("retry-after", HeaderValue::from(s));
    }
    resp
}

fn status_fault(status: u16, retry_after: Option<u64>, message: Option<&str>) -> Response {
    let (kind, code, default_msg) = match status {
        400 => ("invalid_request_error", None, "Invalid request."),
        401 => ("invalid_request_error", Some("invalid_api_key"), "Incorrect API key provided."),
        403 => ("invalid_request_error", None, "Forbidden."),
        404 => ("invalid_request_error", Some("model_not_found"), "The model does not exist."),
        429 => ("requests", Some("rate_limit_exceeded"), "Rate limit reached for requests. Please try again later."),
        503 => ("server_error", None, "The engine is currently overloaded."),
        _ => ("server_error", None, "The server had an error while processing your request."),
    };
    error(status, retry_after, error_body(message.unwrap_or(default_msg), kind, None, code))
}

/// Checks the request the way the real API does, for the faults a client can cause.
// A rejection is the whole HTTP answer; it is built once per bad request, so its size is moot.
#[allow(clippy::result_large_err)]
fn validate(headers: &HeaderMap, body: &Value) -> Result<(), Response> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !auth.starts_with("Bearer ") || auth.len() <= "Bearer ".len() {
        return Err(status_fault(401, None, Some("You didn't provide an API key.")));
    }
    let bad = |msg: &str, param: &str| error(400, None, error_body(msg, "invalid_request_error", Some(param), None));
    if !body.is_object() {
        return Err(bad("We could not parse the JSON body of your request.", "body"));
    }
    if !body["model"].is_string() {
        return Err(bad("you must provide a model parameter", "model"));
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Err(bad("'messages' must contain at least one message", "messages"));
    };
    let mut open_calls: Vec<String> = Vec::new();
    for m in messages {
        match m["role"].as_str() {
            Some("system" | "developer" | "user") => {}
            Some("assistant") => {
                if let Some(calls) = m["tool_calls"].as_array() {
                    for c in calls {
                        let args = c["function"]["arguments"].as_str();
                        if args.is_none() || c["id"].as_str().is_none() {
                            return Err(bad("tool_calls need an id and string function.arguments", "messages"));
                        }
                        open_calls.push(c["id"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                if !open_calls.iter().any(|c| c == id) {
                    return Err(bad(
                        "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        "messages",
                    ));
                }
            }
            _ => return Err(bad("invalid role", "messages")),
        }
    }
    Ok(())
}

struct Rendered {
    id: String,
    model: String,
    created: u64,
    finish: String,
    usage: Value,
}

fn render_usage(u: ScriptedUsage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn call_id(i: usize, explicit: Option<&String>) -> String {
    explicit.cloned().unwrap_or_else(|| format!("call_fake{i:04}"))
}

fn prepare(reply: &Reply, body: &Value, seq: u64) -> Rendered {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let finish = reply
        .finish_reason
        .clone()
        .unwrap_or_else(|| if reply.tool_calls.is_empty() { "stop".into() } else { "tool_calls".into() });
    let usage = reply.usage.unwrap_or_else(|| {
        let out = tokens(&reply.text).len() as u64
            + reply.tool_calls.iter().map(|c| 1 + count_tokens(&c.arguments)).sum::<u64>();
        ScriptedUsage {
            input_tokens: count_tokens(&body["messages"]).max(1),
            output_tokens: out,
            ..ScriptedUsage::default()
        }
    });
    Rendered {
        id: format!("chatcmpl-fake{seq}"),
        model: body["model"].as_str().unwrap_or("gpt-fake").to_owned(),
        created,
        finish,
        usage: render_usage(usage),
    }
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn chat(
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
            return error(
                400,
                None,
                error_body(
                    "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.",
                    "invalid_request_error",
                    Some("messages"),
                    Some("context_length_exceeded"),
                ),
            );
        }
        _ => {}
    }
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let r = prepare(&scenario.reply, &body, seq);
    if body["stream"].as_bool() == Some(true) {
        let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
        stream(&scenario, &r, include_usage)
    } else {
        complete(&scenario, &r)
    }
}

fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-request-id", HeaderValue::from_static("req_fake_openai"));
    resp
}

fn complete(scenario: &Scenario, r: &Rendered) -> Response {
    let reply = &scenario.reply;
    let tool_calls: Vec<Value> = reply
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": call_id(i, c.id.as_ref()), "type": "function",
                "function": {"name": c.name, "arguments": c.arguments.to_string()}})
        })
        .collect();
    let mut message = json!({
        "role": "assistant",
        "content": if reply.text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(reply.text) },
        "refusal": null,
        "annotations": [],
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls);
    }
    let full = json!({
        "id": r.id, "object": "chat.completion", "created": r.created, "model": r.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": r.finish}],
        "usage": r.usage, "service_tier": "default", "system_fingerprint": "fp_fake",
    });
    let text = full.to_string();
    match &scenario.fault {
        Some(Fault::Stall { .. }) => {
            let mut resp = Response::new(never_body());
            resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            resp
        }
        Some(Fault::Malformed { .. }) => {
            let cut = &text[..text.len() / 2];
            let mut resp = Response::new(Body::from(cut.to_owned()));
            resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            resp
        }
        Some(Fault::Disconnect { .. }) | Some(Fault::Truncate { .. }) => {
            let half = Bytes::from(text[..text.len() / 2].to_owned());
            let plan = StreamPlan {
                frames: vec![half],
                fault: Some(StreamFault::Disconnect { after: 1 }),
                ..StreamPlan::default()
            };
            let mut resp = Response::new(stream_body(plan));
            resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            resp
        }
        _ => {
            let mut resp = Response::new(Body::from(text));
            let h = resp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert("x-request-id", HeaderValue::from_static("req_fake_openai"));
            resp
        }
    }
}

fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Splits a string into pieces of about `n` characters.
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

fn stream(scenario: &Scenario, r: &Rendered, include_usage: bool) -> Response {
    let reply = &scenario.reply;
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": r.id, "object": "chat.completion.chunk", "created": r.created,
            "model": r.model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        frame(&c)
    };
    let mut frames = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null)];
    for t in tokens(&reply.text) {
        frames.push(chunk(json!({"content": t}), Value::Null));
    }
    for (i, c) in reply.tool_calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{"index": i, "id": call_id(i, c.id.as_ref()), "type": "function",
                "function": {"name": c.name, "arguments": ""}}]}),
            Value::Null,
        ));
        for p in pieces(&c.arguments.to_string(), 8) {
            frames.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}), Value::Null));
        }
    }
    frames.push(chunk(json!({}), json!(r.finish)));
    if include_usage {
        frames.push(frame(&json!({"id": r.id, "object": "chat.completion.chunk", "created": r.created,
            "model": r.model, "system_fingerprint": "fp_fake", "choices": [], "usage": r.usage})));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let fault = match &scenario.fault {
        Some(Fault::Stall { after_events }) => Some(StreamFault::Stall { after: *after_events }),
        Some(Fault::Disconnect { after_events }) => Some(StreamFault::Disconnect { after: *after_events }),
        Some(Fault::Truncate { after_events }) => Some(StreamFault::Truncate { after: *after_events }),
        Some(Fault::Malformed { after_events }) => Some(StreamFault::Inject {
            after: *after_events,
            frame: Bytes::from_static(
                b"data: {\"id\":\"chatcmpl-fake\",\"choices\":[{\"index\":0,\"delta\":{\"content\n\n",
            ),
        }),
        Some(Fault::StreamError { after_events }) => Some(StreamFault::Inject {
            after: *after_events,
            frame: frame(&error_body(
                "The server had an error while processing your request.",
                "server_error",
                None,
                None,
            )),
        }),
        _ => None,
    };
    sse_response(stream_body(StreamPlan {
        frames,
        frame_delay: Duration::from_millis(scenario.token_delay_ms),
        split_writes: scenario.split_writes,
        keepalive: scenario.keepalive.then(|| Bytes::from_static(b": keep-alive\n\n")),
        fault,
    }))
}
