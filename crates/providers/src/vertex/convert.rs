//! Conversion between the neutral types and Gemini wire types, and the mapping of
//! Google errors to [`ProviderError`].
//!
//! Gemini function calls may come without ids, and Gemini 3 requires each call's
//! opaque `thoughtSignature` to be echoed back. Both are carried in the neutral
//! [`ToolCall::id`], so a conversation replayed from a checkpoint on any replica still
//! sends the signature back:
//! - vendor id and signature: `"{id}#{signature}"`; vendor id only: `"{id}#"`;
//! - signature only (the usual case): the signature itself (base64, never `#`);
//! - neither: a local `"call_…"` id that is never sent to Gemini.

use serde_json::{Value, json};

use super::wire;
use crate::error::ProviderError;
use crate::http::ErrorResponse;
use crate::types::{ChatRequest, ChatResponse, FinishReason, Part, Role, ToolCall, ToolChoice, Usage};

const SEPARATOR: char = '#';
const LOCAL_PREFIX: &str = "call_";

/// Splits a neutral call id into the vendor's id and the thought signature.
fn split_id(id: &str) -> (Option<&str>, Option<&str>) {
    fn non_empty(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    if let Some((vendor_id, sig)) = id.split_once(SEPARATOR) {
        (non_empty(vendor_id), non_empty(sig))
    } else if id.starts_with(LOCAL_PREFIX) {
        (None, None)
    } else {
        (None, non_empty(id))
    }
}

/// Builds the neutral id of the `n`-th call of a reply.
pub(crate) fn call_id(call: &wire::FunctionCall, signature: Option<&str>, response_key: &str, n: usize) -> String {
    let vendor_id = call.id.as_deref().filter(|i| !i.is_empty());
    let signature = signature.filter(|s| !s.is_empty() && !s.contains(SEPARATOR));
    match (vendor_id, signature) {
        (Some(id), sig) => format!("{id}{SEPARATOR}{}", sig.unwrap_or("")),
        (None, Some(sig)) if !sig.starts_with(LOCAL_PREFIX) => sig.to_owned(),
        _ => format!("{LOCAL_PREFIX}{response_key}_{n}"),
    }
}

/// Builds the request body (without `extra`, merged by the client).
///
/// # Errors
/// [`ProviderError::InvalidRequest`] if a tool result answers no known call.
pub(crate) fn request(req: &ChatRequest, vertex: bool) -> Result<wire::GenerateContentRequest, ProviderError> {
    // Gemini's functionResponse needs the function name: find it from the call id.
    let mut names: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for m in &req.messages {
        for p in &m.parts {
            if let Part::ToolCall(c) = p {
                names.insert(c.id.as_str(), c.name.as_str());
            }
        }
    }
    let mut contents: Vec<wire::Content> = Vec::new();
    for m in &req.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::with_capacity(m.parts.len());
        for p in &m.parts {
            parts.push(match p {
                Part::Text { text } => wire::Part { text: Some(text.clone()), ..wire::Part::default() },
                Part::ToolCall(c) => {
                    let (vendor_id, sig) = split_id(&c.id);
                    wire::Part {
                        function_call: Some(wire::FunctionCall {
                            id: vendor_id.map(str::to_owned),
                            name: c.name.clone(),
                            args: if c.arguments.is_null() { json!({}) } else { c.arguments.clone() },
                        }),
                        thought_signature: sig.map(str::to_owned),
                        ..wire::Part::default()
                    }
                }
                Part::ToolResult(r) => {
                    let name = names.get(r.call_id.as_str()).ok_or_else(|| {
                        ProviderError::InvalidRequest(format!(
                            "tool result {:?} answers no tool call in the conversation",
                            r.call_id
                        ))
                    })?;
                    let (vendor_id, _) = split_id(&r.call_id);
                    // The response must be an object: JSON objects pass through,
                    // anything else is wrapped.
                    let parsed: Option<Value> = serde_json::from_str(&r.content).ok();
                    let key = if r.is_error { "error" } else { "output" };
                    let response = match parsed {
                        Some(v @ Value::Object(_)) if !r.is_error => v,
                        Some(v) => json!({ key: v }),
                        None => json!({ key: r.content }),
                    };
                    wire::Part {
                        function_response: Some(wire::FunctionResponse {
                            id: vendor_id.map(str::to_owned),
                            name: (*name).to_owned(),
                            response,
                        }),
                        ..wire::Part::default()
                    }
                }
            });
        }
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(wire::Content { role: Some(role.to_owned()), parts }),
        }
    }
    let tools = if req.tools.is_empty() {
        Vec::new()
    } else {
        vec![wire::Tool {
            function_declarations: req
                .tools
                .iter()
                .map(|t| wire::FunctionDeclaration {
                    name: t.name.clone(),
                    description: (!t.description.is_empty()).then(|| t.description.clone()),
                    parameters_json_schema: t.parameters.clone(),
                })
                .collect(),
        }]
    };
    let tool_config = (!req.tools.is_empty()).then(|| {
        let cfg = match &req.tool_choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        json!({ "functionCallingConfig": cfg })
    });
    let (mime, schema) = match &req.response_format {
        Some(f) => (Some("application/json".to_owned()), Some(f.schema.clone())),
        None => (None, None),
    };
    let md = &req.metadata;
    let labels = if vertex {
        let mut l = std::collections::BTreeMap::new();
        for (k, v) in [("tenant", &md.tenant), ("conversation", &md.conversation)] {
            if let Some(v) = v {
                l.insert(k.to_owned(), label_value(v));
            }
        }
        (!l.is_empty()).then_some(l)
    } else {
        None
    };
    Ok(wire::GenerateContentRequest {
        contents,
        system_instruction: req.system.as_ref().filter(|s| !s.is_empty()).map(|s| wire::Content {
            role: None,
            parts: vec![wire::Part { text: Some(s.clone()), ..wire::Part::default() }],
        }),
        tools,
        tool_config,
        generation_config: wire::GenerationConfig {
            temperature: req.temperature,
            top_p: None,
            max_output_tokens: req.max_tokens,
            stop_sequences: req.stop.clone(),
            response_mime_type: mime,
            response_json_schema: schema,
        },
        labels,
    })
}

/// Vertex label values: lowercase letters, digits, `_` and `-`, at most 63 characters.
fn label_value(v: &str) -> String {
    v.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(63)
        .collect()
}

/// Maps a `finishReason`; function calls turn a `STOP` into [`FinishReason::ToolCalls`].
pub(crate) fn finish_reason(s: &str, has_tool_calls: bool) -> FinishReason {
    match s {
        "STOP" if has_tool_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "MODEL_ARMOR" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "OTHER" => FinishReason::Error,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Normalises usage.
pub(crate) fn usage(u: &wire::UsageMetadata) -> Usage {
    Usage {
        input_tokens: u.prompt_token_count,
        output_tokens: u.candidates_token_count + u.thoughts_token_count,
        cache_read_tokens: u.cached_content_token_count,
        cache_write_tokens: 0,
        reasoning_tokens: u.thoughts_token_count,
    }
}

/// Text and tool calls of a candidate's parts (thought parts are skipped).
pub(crate) fn parts_output(parts: &[wire::Part], response_key: &str, first_call: usize) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts {
        if p.thought == Some(true) {
            continue;
        }
        if let Some(t) = &p.text {
            text.push_str(t);
        }
        if let Some(fc) = &p.function_call {
            calls.push(ToolCall {
                id: call_id(fc, p.thought_signature.as_deref(), response_key, first_call + calls.len()),
                name: fc.name.clone(),
                arguments: if fc.args.is_null() { json!({}) } else { fc.args.clone() },
            });
        }
    }
    (text, calls)
}

/// Converts a non-streamed reply.
///
/// # Errors
/// [`ProviderError::Protocol`] if there is no candidate and no block reason.
pub(crate) fn response(
    vendor: &'static str,
    resp: wire::GenerateContentResponse,
    model: &str,
) -> Result<ChatResponse, ProviderError> {
    let key = response_key(resp.response_id.as_deref());
    let usage_v = resp.usage_metadata.as_ref().map(usage).unwrap_or_default();
    let Some(cand) = resp.candidates.into_iter().next() else {
        if resp.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            return Ok(ChatResponse {
                id: resp.response_id,
                model: Some(model.to_owned()),
                text: String::new(),
                tool_calls: Vec::new(),
                finish_reason: FinishReason::ContentFilter,
                usage: usage_v,
            });
        }
        return Err(ProviderError::protocol(vendor, "reply has no candidates"));
    };
    let parts = cand.content.map(|c| c.parts).unwrap_or_default();
    let (text, tool_calls) = parts_output(&parts, &key, 0);
    let finish = cand
        .finish_reason
        .as_deref()
        .map(|f| finish_reason(f, !tool_calls.is_empty()))
        .unwrap_or(FinishReason::Other("none".into()));
    Ok(ChatResponse {
        id: resp.response_id,
        model: Some(model.to_owned()),
        text,
        tool_calls,
        finish_reason: finish,
        usage: usage_v,
    })
}

/// A short key that makes synthetic call ids unique per reply.
pub(crate) fn response_key(response_id: Option<&str>) -> String {
    match response_id {
        Some(id) if !id.is_empty() => id.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect(),
        _ => format!("{:08x}", fastrand::u32(..)),
    }
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Maps a `google.rpc.Status` (from an HTTP error or a mid-stream `error` event).
pub(crate) fn status_error(
    vendor: &'static str,
    http_status: u16,
    detail: &wire::ErrorDetail,
    header_retry_after: Option<std::time::Duration>,
    request_id: Option<String>,
) -> ProviderError {
    let status = if detail.code != 0 { detail.code } else { http_status };
    let lower = detail.message.to_ascii_lowercase();
    if status == 400
        && (lower.contains("exceeds the maximum number of tokens")
            || (lower.contains("token count") && lower.contains("exceeds")))
    {
        return ProviderError::ContextOverflow { vendor, message: detail.message.clone() };
    }
    ProviderError::Api {
        vendor,
        status,
        kind: if detail.status.is_empty() { "UNKNOWN".to_owned() } else { detail.status.clone() },
        message: detail.message.clone(),
        retryable: retryable(status),
        retry_after: detail.retry_delay().or(header_retry_after),
        request_id,
    }
}

/// Maps an HTTP error reply.
pub(crate) fn http_error(vendor: &'static str, e: ErrorResponse) -> ProviderError {
    match serde_json::from_str::<wire::ErrorBody>(&e.body) {
        Ok(b) => status_error(vendor, e.status, &b.error, e.retry_after, e.request_id),
        Err(_) => ProviderError::Api {
            vendor,
            status: e.status,
            kind: "UNKNOWN".to_owned(),
            message: e.body.chars().take(200).collect(),
            retryable: retryable(e.status),
            retry_after: e.retry_after,
            request_id: e.request_id,
        },
    }
}
