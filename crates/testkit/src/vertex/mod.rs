//! Fake Google Gemini: Vertex AI paths (bearer tokens from the fake's own OAuth
//! endpoint) and Gemini Developer API paths (`x-goog-api-key`).
//!
//! Written from the vendor documentation, sharing nothing with the adapter:
//! - `POST /{v1|v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`
//!   and `:streamGenerateContent?alt=sse`, which need `Authorization: Bearer` with a
//!   token from `POST /token` (RS256 JWT-bearer grant, see [`token`]);
//! - `POST /{v1beta|v1|v1alpha}/models/{m}:generateContent` (and streaming), which need
//!   an API key (`x-goog-api-key` or `?key=`);
//! - `GET /_fake/vertex/service-account.json`: a key file for the bundled test account
//!   whose `token_uri` is this server, so any Google client can authenticate offline;
//! - `POST /_fake/vertex/token-lifetime` (`{"seconds": N}`) and `GET /_fake/vertex/tokens`
//!   to test token caching.
//!
//! Replies carry a base64 `thoughtSignature` on function calls; for `gemini-3*` models a replayed
//! function call without one is refused with 400, as the service does. Streams are
//! `data:` events with CRLF line ends and no terminator.

pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Value, json};

use crate::body::{StreamFault, StreamPlan, never_body, stream_body};
use crate::script::{Fault, Reply, ScriptedUsage, count_tokens, tokens};
use crate::server::FakeState;
use token::TokenIssuer;

/// The project id of the bundled test service account.
pub const TEST_PROJECT: &str = "fake-project";
static SEQ: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    Vertex,
    Developer,
}

pub(crate) fn routes() -> Router<Arc<FakeState>> {
    let issuer = Arc::new(TokenIssuer::new(false));
    let (i1, i2, i3, i4, i5) = (issuer.clone(), issuer.clone(), issuer.clone(), issuer.clone(), issuer);
    Router::new()
        .route(
            "/token",
            post(move |headers: HeaderMap, raw: Bytes| {
                let issuer = i1.clone();
                async move { token_endpoint(&issuer, &headers, &raw) }
            }),
        )
        .route(
            "/{version}/projects/{project}/locations/{location}/publishers/google/models/{target}",
            post(
                move |State(state): State<Arc<FakeState>>,
                      Path((version, _p, _l, target)): Path<(String, String, String, String)>,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap,
                      raw: Bytes| {
                    let issuer = i2.clone();
                    async move {
                        if version != "v1" && version != "v1beta1" {
                            return google_error(404, "NOT_FOUND", "Unknown API version.", None);
                        }
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or("");
                        state.record(&method, &uri, &headers, &raw);
                        if !issuer.is_valid(auth.trim()) {
                            return google_error(
                                401,
                                "UNAUTHENTICATED",
                                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                                None,
                            );
                        }
                        generate(&state, Surface::Vertex, &target, &uri, &raw).await
                    }
                },
            ),
        )
        .route(
            "/{version}/models/{target}",
            post(
                move |State(state): State<Arc<FakeState>>,
                      Path((version, target)): Path<(String, String)>,
                      method: Method,
                      uri: Uri,
                      headers: HeaderMap,
                      raw: Bytes| async move {
                    if !matches!(version.as_str(), "v1" | "v1beta" | "v1alpha") {
                        return google_error(404, "NOT_FOUND", "Unknown API version.", None);
                    }
                    state.record(&method, &uri, &headers, &raw);
                    let header_key = headers
                        .get("x-goog-api-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let query_key = uri
                        .query()
                        .unwrap_or("")
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("key="))
                        .unwrap_or("");
                    if header_key.trim().is_empty() && query_key.is_empty() {
                        return google_error(
                            403,
                            "PERMISSION_DENIED",
                            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                            None,
                        );
                    }
                    generate(&state, Surface::Developer, &target, &uri, &raw).await
                },
            ),
        )
        .route(
            "/_fake/vertex/service-account.json",
            get(move |headers: HeaderMap| async move {
                let host = headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("127.0.0.1");
                let json = token::test_service_account_json(&format!("http://{host}/token"), TEST_PROJECT);
                ([("content-type", "application/json")], json)
            }),
        )
        .route(
            "/_fake/vertex/token-lifetime",
            post(move |axum::Json(v): axum::Json<Value>| {
                let issuer = i3.clone();
                async move {
                    let secs = v["seconds"].as_u64().unwrap_or(3599);
                    issuer.set_lifetime(Duration::from_secs(secs));
                    axum::Json(json!({ "seconds": secs }))
                }
            }),
        )
        .route(
            "/_fake/vertex/tokens",
            get(move || {
                let issuer = i4.clone();
                async move { axum::Json(json!({ "issued": issuer.issued_count() })) }
            }),
        )
        .route(
            "/_fake/vertex/check-token",
            post(move |raw: Bytes| {
                let issuer = i5.clone();
                async move {
                    let t = String::from_utf8_lossy(&raw).trim().to_owned();
                    axum::Json(json!({ "valid": issuer.is_valid(&t) }))
                }
            }),
        )
}

fn token_endpoint(issuer: &TokenIssuer, headers: &HeaderMap, raw: &[u8]) -> Response {
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let form = String::from_utf8_lossy(raw);
    match issuer.exchange(&form, &format!("http://{host}/token")) {
        Ok((access_token, expires_in)) => (
            StatusCode::OK,
            [("cache-control", "no-cache, no-store")],
            axum::Json(json!({"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"})),
        )
            .into_response(),
        Err(e) => {
            (StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), axum::Json(e.body)).into_response()
        }
    }
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn error_json(code: u16, status: &str, message: &str, retry_after: Option<u64>) -> Value {
    let mut err = json!({"code": code, "message": message, "status": status});
    if let Some(s) = retry_after {
        err["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{s}s"),
        }]);
    }
    json!({ "error": err })
}

fn google_error(code: u16, status: &str, message: &str, retry_after: Option<u64>) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(error_json(code, status, message, retry_after)),
    )
        .into_response()
}

fn status_fault(code: u16, retry_after: Option<u64>, message: Option<&str>) -> Response {
    let default = match code {
        400 => "Request contains an invalid argument.",
        401 => "Request had invalid authentication credentials.",
        403 => "Permission denied on resource project.",
        404 => "Requested entity was not found.",
        429 => "Resource exhausted. Please try again later.",
        503 => "The model is overloaded. Please try again later.",
        504 => "Deadline expired before operation could complete.",
        _ => "Internal error encountered.",
    };
    google_error(code, status_name(code), message.unwrap_or(default), retry_after)
}

/// Validates a `generateContent` body as the service does.
fn validate(body: &Value, model: &str) -> Result<(), Box<Response>> {
    let bad = |m: &str| Err(Box::new(google_error(400, "INVALID_ARGUMENT", m, None)));
    let Some(contents) = body["contents"].as_array().filter(|c| !c.is_empty()) else {
        return bad("* GenerateContentRequest.contents: contents is not specified\n");
    };
    let data_fields =
        ["text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult"];
    let needs_signature = model.starts_with("gemini-3");
    for (i, c) in contents.iter().enumerate() {
        let role = c["role"].as_str().unwrap_or("user");
        if role != "user" && role != "model" {
            return bad(&format!("Please use a valid role: user, model. (contents[{i}].role = {role:?})"));
        }
        let Some(parts) = c["parts"].as_array().filter(|p| !p.is_empty()) else {
            return bad(&format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"));
        };
        for (j, p) in parts.iter().enumerate() {
            let n = data_fields.iter().filter(|f| p.get(**f).is_some()).count();
            if n != 1 {
                return bad(&format!(
                    "* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof field 'data' must have one initialized field\n"
                ));
            }
            if let Some(fc) = p.get("functionCall") {
                if role != "model" {
                    return bad(
                        "Please ensure that function call turn comes immediately after a user turn or after a function response turn.",
                    );
                }
                if !fc["name"].is_string() {
                    return bad(&format!(
                        "* GenerateContentRequest.contents[{i}].parts[{j}].function_call.name: Name is required.\n"
                    ));
                }
                if needs_signature && !p["thoughtSignature"].is_string() {
                    return bad(&format!(
                        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly. Additional data, function call `default_api:{}` , position {}.",
                        fc["name"].as_str().unwrap_or(""),
                        i + 1
                    ));
                }
            }
            if let Some(fr) = p.get("functionResponse")
                && (!fr["name"].is_string() || !fr["response"].is_object())
            {
                return bad(&format!(
                    "* GenerateContentRequest.contents[{i}].parts[{j}].function_response: name and response (an object) are required.\n"
                ));
            }
        }
    }
    let gc = &body["generationConfig"];
    if let Some(m) = gc.get("maxOutputTokens")
        && m.as_u64().is_none_or(|n| n < 1)
    {
        return bad("* GenerateContentRequest.generation_config.max_output_tokens: must be positive\n");
    }
    if let Some(t) = gc.get("temperature")
        && !t.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t))
    {
        return bad("* GenerateContentRequest.generation_config.temperature: must be in [0.0, 2.0]\n");
    }
    Ok(())
}

fn finish_reason(reply: &Reply) -> String {
    match reply.finish_reason.as_deref() {
        None => "STOP".to_owned(),
        Some("stop" | "end_turn" | "tool_calls" | "tool_use") => "STOP".to_owned(),
        Some("length" | "max_tokens") => "MAX_TOKENS".to_owned(),
        Some("content_filter" | "safety") => "SAFETY".to_owned(),
        Some(other) => other.to_ascii_uppercase(),
    }
}

fn usage_json(u: &ScriptedUsage) -> Value {
    let mut v = json!({
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": u.output_tokens.saturating_sub(u.reasoning_tokens),
        "totalTokenCount": u.input_tokens + u.output_tokens,
    });
    if u.cache_read_tokens > 0 {
        v["cachedContentTokenCount"] = json!(u.cache_read_tokens);
    }
    if u.reasoning_tokens > 0 {
        v["thoughtsTokenCount"] = json!(u.reasoning_tokens);
    }
    v
}

fn call_part(c: &crate::script::ScriptedToolCall, seq: u64, i: usize) -> Value {
    let mut fc = json!({"name": c.name, "args": c.arguments});
    if let Some(id) = &c.id {
        fc["id"] = json!(id);
    }
    // Opaque bytes, base64 like the real ones (clients decode them).
    let signature = BASE64_STANDARD.encode(format!("fake-thought-signature:{seq:06}:{i:02}"));
    json!({"functionCall": fc, "thoughtSignature": signature})
}

async fn generate(state: &FakeState, surface: Surface, target: &str, uri: &Uri, raw: &[u8]) -> Response {
    let Some((model, method)) = target.split_once(':') else {
        return google_error(404, "NOT_FOUND", "Method not found.", None);
    };
    let streaming = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return google_error(404, "NOT_FOUND", "Method not found.", None),
    };
    let body: Value = match serde_json::from_slice(raw) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", None);
        }
    };
    if let Err(resp) = validate(&body, model) {
        return *resp;
    }
    let sse = uri.query().unwrap_or("").split('&').any(|kv| kv == "alt=sse");
    if streaming && !sse {
        return google_error(400, "INVALID_ARGUMENT", "This fake only streams with alt=sse.", None);
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
            return google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
                None,
            );
        }
        _ => {}
    }
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let reply = &scenario.reply;
    let usage = reply.usage.unwrap_or_else(|| ScriptedUsage {
        input_tokens: (count_tokens(&body["contents"]) + count_tokens(&body["systemInstruction"])).max(1),
        output_tokens: tokens(&reply.text).len() as u64
            + reply.tool_calls.iter().map(|c| 1 + count_tokens(&c.arguments)).sum::<u64>(),
        ..ScriptedUsage::default()
    });
    let response_id = format!("ZmFrZXJlc3Bv{seq:08}");
    let envelope = |candidate: Value, last: bool| {
        let mut v = json!({
            "candidates": [candidate],
            "modelVersion": model,
            "responseId": response_id,
        });
        if last {
            v["usageMetadata"] = usage_json(&usage);
        }
        if surface == Surface::Vertex {
            v["createTime"] = json!("2026-11-25T10:15:00.000000Z");
        }
        v
    };
    let finish = finish_reason(reply);
    if streaming {
        let ev = |v: Value| Bytes::from(format!("data: {v}\r\n\r\n"));
        let mut frames = Vec::new();
        let text_tokens = tokens(&reply.text);
        let n_text = text_tokens.len();
        for (k, t) in text_tokens.into_iter().enumerate() {
            let last = k + 1 == n_text && reply.tool_calls.is_empty();
            let mut cand = json!({"content": {"role": "model", "parts": [{"text": t}]}, "index": 0});
            if last {
                cand["finishReason"] = json!(finish);
            }
            frames.push(ev(envelope(cand, last)));
        }
        if !reply.tool_calls.is_empty() {
            let parts: Vec<Value> = reply.tool_calls.iter().enumerate().map(|(i, c)| call_part(c, seq, i)).collect();
            frames.push(ev(envelope(
                json!({"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}),
                true,
            )));
        }
        if frames.is_empty() {
            frames.push(ev(envelope(
                json!({"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": finish, "index": 0}),
                true,
            )));
        }
        let fault = match &scenario.fault {
            Some(Fault::Stall { after_events }) => Some(StreamFault::Stall { after: *after_events }),
            Some(Fault::Disconnect { after_events }) => Some(StreamFault::Disconnect { after: *after_events }),
            Some(Fault::Truncate { after_events }) => Some(StreamFault::Truncate { after: *after_events }),
            Some(Fault::Malformed { after_events }) => Some(StreamFault::Inject {
                after: *after_events,
                frame: Bytes::from_static(b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"te\r\n\r\n"),
            }),
            Some(Fault::StreamError { after_events }) => Some(StreamFault::Inject {
                after: *after_events,
                frame: ev(error_json(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", None)),
            }),
            _ => None,
        };
        let mut resp = Response::new(stream_body(StreamPlan {
            frames,
            frame_delay: Duration::from_millis(scenario.token_delay_ms),
            split_writes: scenario.split_writes,
            keepalive: scenario.keepalive.then(|| Bytes::from_static(b": keep-alive\r\n\r\n")),
            fault,
        }));
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("text/event-stream"));
        h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        return resp;
    }
    let mut parts = Vec::new();
    if !reply.text.is_empty() {
        parts.push(json!({"text": reply.text}));
    }
    parts.extend(reply.tool_calls.iter().enumerate().map(|(i, c)| call_part(c, seq, i)));
    let full =
        envelope(json!({"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}), true)
            .to_string();
    let json_resp = |body: Body| {
        let mut resp = Response::new(body);
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=UTF-8"));
        resp
    };
    match &scenario.fault {
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
