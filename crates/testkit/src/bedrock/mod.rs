//! Fake AWS Bedrock Runtime: `POST /model/{modelId}/converse` and `/converse-stream`.
//!
//! Written from the service documentation, sharing nothing with the adapter:
//! - auth is SigV4 checked by an independent verifier ([`sigv4`]) against the test
//!   key pair [`TEST_ACCESS_KEY_ID`]/[`TEST_SECRET_ACCESS_KEY`] (signing name
//!   `bedrock`, path double-encoded), or a Bedrock API key (`Authorization: Bearer …`);
//! - bodies are validated like the service does (roles, alternation, tool results
//!   answering the previous turn's tool uses, `toolConfig` present when tools appear);
//! - streams are binary event-stream frames ([`frames`]) with the service's random
//!   `"p"` padding; errors are restJson1 (`x-amzn-ErrorType` + `{"message"}`) before
//!   the stream, `:message-type=exception` frames after it.

pub mod frames;
pub mod sigv4;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::body::{StreamFault, StreamPlan, never_body, stream_body};
use crate::script::{Fault, Reply, ScriptedUsage, count_tokens, tokens};
use crate::server::FakeState;

/// The access key id the fake accepts (with [`TEST_SECRET_ACCESS_KEY`]).
pub const TEST_ACCESS_KEY_ID: &str = "AKIDSWITCHBOARDFAKE";
/// The secret key of the fake's test credentials. Not a real AWS key.
pub const TEST_SECRET_ACCESS_KEY: &str = "switchboard-fake/secret+key/for-local-tests-only";

const REQUEST_ID: &str = "5b1a3c2e-fake-4d6b-9e1f-bedrock00001";
static SEQ: AtomicU64 = AtomicU64::new(1);

pub(crate) fn routes() -> Router<Arc<FakeState>> {
    Router::new()
        .route("/model/{model_id}/converse", post(converse))
        .route("/model/{model_id}/converse-stream", post(converse_stream))
}

fn error(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({ "message": message })),
    )
        .into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(kind) {
        h.insert("x-amzn-errortype", v);
    }
    h.insert("x-amzn-requestid", HeaderValue::from_static(REQUEST_ID));
    if let Some(s) = retry_after {
        h.insert("retry-after", HeaderValue::from(s));
    }
    resp
}

fn status_fault(status: u16, retry_after: Option<u64>, message: Option<&str>) -> Response {
    let (kind, default_msg) = match status {
        401 => ("UnrecognizedClientException", "The security token included in the request is invalid."),
        400 => ("ValidationException", "Malformed input request, please reformat your input and try again."),
        403 => ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
        404 => ("ResourceNotFoundException", "The requested resource could not be found."),
        408 => ("ModelTimeoutException", "Model has timed out in processing the request."),
        424 => ("ModelErrorException", "The model returned an error."),
        429 => ("ThrottlingException", "Too many requests, please wait before trying again."),
        503 => ("ServiceUnavailableException", "Bedrock is unable to process your request."),
        _ => ("InternalServerException", "The server encountered an internal error."),
    };
    error(status, kind, message.unwrap_or(default_msg), retry_after)
}

fn authenticate(method: &Method, uri: &Uri, headers: &HeaderMap, raw: &[u8]) -> Result<(), Box<Response>> {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(error(403, "MissingAuthenticationTokenException", "Missing Authentication Token", None)));
    };
    if let Some(key) = auth.strip_prefix("Bearer ") {
        return if key.trim().is_empty() {
            Err(Box::new(error(403, "AccessDeniedException", "Invalid API Key format", None)))
        } else {
            Ok(())
        };
    }
    let keys = sigv4::SigV4Keys {
        keys: vec![(TEST_ACCESS_KEY_ID.to_owned(), TEST_SECRET_ACCESS_KEY.to_owned())],
        service: "bedrock".to_owned(),
        max_skew_secs: 300,
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    match keys.verify(method.as_str(), uri.path(), uri.query().unwrap_or(""), &pairs, raw, now) {
        Ok(_) => Ok(()),
        Err(e @ sigv4::SigV4Failure::UnknownKey) => {
            Err(Box::new(error(403, "UnrecognizedClientException", &e.to_string(), None)))
        }
        Err(e @ sigv4::SigV4Failure::Mismatch) => {
            Err(Box::new(error(403, "InvalidSignatureException", &e.to_string(), None)))
        }
        Err(e) => Err(Box::new(error(403, "InvalidSignatureException", &e.to_string(), None))),
    }
}

/// Validates a Converse body the way the service does.
fn validate(body: &Value) -> Result<(), Box<Response>> {
    let bad = |m: &str| Err(Box::new(error(400, "ValidationException", m, None)));
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return bad("The messages field is required and must not be empty.");
    };
    let tools_defined = body["toolConfig"]["tools"].as_array().is_some_and(|t| !t.is_empty());
    let mut pending: Vec<String> = Vec::new();
    let mut last_role = "";
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role != "user" && role != "assistant" {
            return bad(&format!(
                "1 validation error detected: Value at 'messages.{}.member.role' failed to satisfy constraint: \
                 Member must satisfy enum value set: [user, assistant]",
                i + 1
            ));
        }
        if i == 0 && role != "user" {
            return bad(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            );
        }
        if role == last_role {
            return bad(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.",
            );
        }
        last_role = role;
        let Some(blocks) = m["content"].as_array() else {
            return bad(&format!("messages.{i}.content must be a list of content blocks"));
        };
        let mut answered: Vec<String> = Vec::new();
        for b in blocks {
            let Some(obj) = b.as_object().filter(|o| o.len() == 1) else {
                return bad("A content block must have exactly one member set.");
            };
            let (kind, val) = obj.iter().next().expect("one member checked above");
            match (role, kind.as_str()) {
                (_, "text") if val.is_string() => {}
                ("assistant", "toolUse") => {
                    if !tools_defined {
                        return bad(
                            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
                        );
                    }
                    if !val["input"].is_object() || !val["name"].is_string() {
                        return bad("toolUse requires toolUseId, name and an input object.");
                    }
                    pending.push(val["toolUseId"].as_str().unwrap_or("").to_owned());
                }
                ("user", "toolResult") => {
                    if !tools_defined {
                        return bad(
                            "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
                        );
                    }
                    let id = val["toolUseId"].as_str().unwrap_or("");
                    if !pending.iter().any(|p| p == id) {
                        return bad(
                            "The toolResult blocks must match the toolUse blocks of the previous assistant turn.",
                        );
                    }
                    if !val["content"].is_array() {
                        return bad("toolResult.content must be a list.");
                    }
                    answered.push(id.to_owned());
                }
                (_, "image" | "document" | "video" | "reasoningContent" | "cachePoint" | "guardContent") => {}
                _ => {
                    return bad(&format!("Unsupported content block {kind:?} in a {role} message."));
                }
            }
        }
        if role == "user" {
            if !pending.is_empty() && answered.len() != pending.len() {
                return bad("Expected toolResult blocks for every toolUse of the previous turn.");
            }
            pending.clear();
        }
    }
    if let Some(max) = body["inferenceConfig"].get("maxTokens")
        && max.as_u64().is_none_or(|n| n < 1)
    {
        return bad("inferenceConfig.maxTokens must be at least 1.");
    }
    Ok(())
}

struct Prepared {
    reply: Reply,
    stop_reason: String,
    usage: ScriptedUsage,
    seq: u64,
}

impl Prepared {
    fn tool_id(&self, i: usize, explicit: &Option<String>) -> String {
        explicit.clone().unwrap_or_else(|| format!("tooluse_fake{:04}{i:02}", self.seq))
    }

    fn usage_json(&self) -> Value {
        let u = &self.usage;
        let uncached = u.input_tokens.saturating_sub(u.cache_read_tokens).saturating_sub(u.cache_write_tokens);
        json!({
            "inputTokens": uncached,
            "outputTokens": u.output_tokens,
            "totalTokens": uncached + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens,
            "cacheReadInputTokens": u.cache_read_tokens,
            "cacheWriteInputTokens": u.cache_write_tokens,
        })
    }
}

/// Common front half: record, authenticate, validate, take the scenario, apply
/// latency and status faults.
async fn prepare(
    state: &FakeState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(Prepared, Option<Fault>, u64, bool, bool), Box<Response>> {
    let body = state.record(method, uri, headers, raw);
    authenticate(method, uri, headers, raw)?;
    if !body.is_object() {
        return Err(Box::new(error(400, "SerializationException", "Request body is not valid JSON.", None)));
    }
    validate(&body)?;
    let scenario = state.next_scenario();
    if scenario.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(scenario.latency_ms)).await;
    }
    match &scenario.fault {
        Some(Fault::Status { status, retry_after, message }) => {
            return Err(Box::new(status_fault(*status, *retry_after, message.as_deref())));
        }
        Some(Fault::ContextOverflow) => {
            return Err(Box::new(error(400, "ValidationException", "Input is too long for requested model.", None)));
        }
        _ => {}
    }
    let reply = scenario.reply.clone();
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
    let prepared = Prepared { reply, stop_reason, usage, seq: SEQ.fetch_add(1, Ordering::Relaxed) };
    Ok((prepared, scenario.fault, scenario.token_delay_ms, scenario.split_writes, scenario.keepalive))
}

async fn converse(
    State(state): State<Arc<FakeState>>,
    Path(_model_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (p, fault, _, _, _) = match prepare(&state, &method, &uri, &headers, &raw).await {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let mut content = Vec::new();
    if !p.reply.text.is_empty() {
        content.push(json!({"text": p.reply.text}));
    }
    for (i, c) in p.reply.tool_calls.iter().enumerate() {
        content.push(json!({"toolUse": {"toolUseId": p.tool_id(i, &c.id), "name": c.name, "input": c.arguments}}));
    }
    let full = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": p.stop_reason,
        "usage": p.usage_json(),
        "metrics": {"latencyMs": 1},
    })
    .to_string();
    let json_resp = |body: Body| {
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-amzn-requestid", HeaderValue::from_static(REQUEST_ID));
        resp
    };
    match fault {
        Some(Fault::Stall { .. }) => json_resp(never_body()),
        Some(Fault::Malformed { .. }) => json_resp(Body::from(full[..full.len() / 2].to_owned())),
        Some(Fault::Disconnect { .. } | Fault::Truncate { .. }) => json_resp(stream_body(StreamPlan {
            frames: vec![Bytes::from(full[..full.len() / 2].to_owned())],
            fault: Some(StreamFault::Disconnect { after: 1 }),
            ..StreamPlan::default()
        })),
        Some(Fault::StreamError { .. }) => status_fault(500, None, None),
        _ => json_resp(Body::from(full)),
    }
}

async fn converse_stream(
    State(state): State<Arc<FakeState>>,
    Path(_model_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let (p, fault, token_delay_ms, split_writes, _keepalive) =
        match prepare(&state, &method, &uri, &headers, &raw).await {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
    // Padding length varies per frame, as the service's does.
    let pad = |n: usize| 1 + (n * 7 + p.seq as usize) % 23;
    let mut frames = vec![frames::event_frame("messageStart", json!({"role": "assistant"}), pad(0))];
    let mut index = 0u32;
    if !p.reply.text.is_empty() {
        for t in tokens(&p.reply.text) {
            let n = frames.len();
            frames.push(frames::event_frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": {"text": t}}),
                pad(n),
            ));
        }
        let n = frames.len();
        frames.push(frames::event_frame("contentBlockStop", json!({"contentBlockIndex": index}), pad(n)));
        index += 1;
    }
    for (i, c) in p.reply.tool_calls.iter().enumerate() {
        let n = frames.len();
        frames.push(frames::event_frame(
            "contentBlockStart",
            json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": p.tool_id(i, &c.id), "name": c.name}}}),
            pad(n),
        ));
        let args = c.arguments.to_string();
        let chars: Vec<char> = args.chars().collect();
        for piece in chars.chunks(8) {
            let piece: String = piece.iter().collect();
            let n = frames.len();
            frames.push(frames::event_frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}),
                pad(n),
            ));
        }
        let n = frames.len();
        frames.push(frames::event_frame("contentBlockStop", json!({"contentBlockIndex": index}), pad(n)));
        index += 1;
    }
    let n = frames.len();
    frames.push(frames::event_frame("messageStop", json!({"stopReason": p.stop_reason}), pad(n)));
    let n = frames.len();
    frames.push(frames::event_frame("metadata", json!({"usage": p.usage_json(), "metrics": {"latencyMs": 1}}), pad(n)));
    let stream_fault = match fault {
        Some(Fault::Stall { after_events }) => Some(StreamFault::Stall { after: after_events }),
        Some(Fault::Disconnect { after_events }) => Some(StreamFault::Disconnect { after: after_events }),
        Some(Fault::Truncate { after_events }) => Some(StreamFault::Truncate { after: after_events }),
        Some(Fault::Malformed { after_events }) => {
            let victim = frames.get(after_events).cloned().unwrap_or_else(|| frames[0].clone());
            Some(StreamFault::Inject { after: after_events, frame: frames::corrupt_crc(&victim) })
        }
        Some(Fault::StreamError { after_events }) => Some(StreamFault::Inject {
            after: after_events,
            frame: frames::exception_frame(
                "serviceUnavailableException",
                "The service is unavailable. Please try again later.",
            ),
        }),
        _ => None,
    };
    let mut resp = Response::new(stream_body(StreamPlan {
        frames,
        frame_delay: Duration::from_millis(token_delay_ms),
        split_writes,
        keepalive: None,
        fault: stream_fault,
    }));
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/vnd.amazon.eventstream"));
    h.insert("x-amzn-requestid", HeaderValue::from_static(REQUEST_ID));
    resp
}
