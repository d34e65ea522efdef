//! Conversion between the neutral types and Bedrock Converse wire types, and the
//! mapping of Bedrock errors to [`ProviderError`].

use std::collections::BTreeMap;

use serde_json::json;

use super::VENDOR;
use super::wire;
use crate::error::ProviderError;
use crate::http::ErrorResponse;
use crate::types::{ChatRequest, ChatResponse, FinishReason, Part, Role, ToolCall, ToolChoice, Usage};

/// Builds the Converse body (without `extra`, which the client merges last).
pub(crate) fn request(req: &ChatRequest) -> wire::ConverseRequest {
    let mut messages: Vec<wire::Message> = Vec::new();
    for m in &req.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let blocks = m.parts.iter().map(block);
        // Bedrock requires alternating roles: merge consecutive turns of one role.
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(wire::Message { role: role.to_owned(), content: blocks.collect() }),
        }
    }
    // Converse has no "none" choice: with no tool history the tools are left out; with
    // history Bedrock requires `toolConfig`, so they are sent and the model chooses.
    let history_has_tools =
        req.messages.iter().any(|m| m.parts.iter().any(|p| matches!(p, Part::ToolCall(_) | Part::ToolResult(_))));
    let send_tools = !req.tools.is_empty() && (req.tool_choice != ToolChoice::None || history_has_tools);
    let tool_config = send_tools.then(|| wire::ToolConfig {
        tools: req
            .tools
            .iter()
            .map(|t| wire::Tool {
                tool_spec: wire::ToolSpec {
                    name: t.name.clone(),
                    description: (!t.description.is_empty()).then(|| t.description.clone()),
                    input_schema: wire::InputSchema { json: t.parameters.clone() },
                },
            })
            .collect(),
        tool_choice: match &req.tool_choice {
            ToolChoice::Auto => Some(json!({"auto": {}})),
            ToolChoice::Required => Some(json!({"any": {}})),
            ToolChoice::Tool(name) => Some(json!({"tool": {"name": name}})),
            ToolChoice::None => None,
        },
    });
    let md = &req.metadata;
    let mut request_metadata: BTreeMap<String, String> = md.tags.clone();
    for (k, v) in [("tenant", &md.tenant), ("conversation", &md.conversation), ("user", &md.user)] {
        if let Some(v) = v {
            request_metadata.insert(k.to_owned(), v.clone());
        }
    }
    wire::ConverseRequest {
        messages,
        system: req.system.iter().filter(|s| !s.is_empty()).map(|s| wire::SystemBlock { text: s.clone() }).collect(),
        inference_config: wire::InferenceConfig {
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            top_p: None,
            stop_sequences: req.stop.clone(),
        },
        tool_config,
        additional_model_request_fields: None,
        request_metadata: (!request_metadata.is_empty()).then_some(request_metadata),
    }
}

fn block(part: &Part) -> wire::ContentBlock {
    match part {
        Part::Text { text } => wire::ContentBlock::Text(text.clone()),
        Part::ToolCall(c) => wire::ContentBlock::ToolUse(wire::ToolUse {
            tool_use_id: c.id.clone(),
            name: c.name.clone(),
            // Bedrock requires an object; a model that called with no arguments gets `{}`.
            input: if c.arguments.is_object() { c.arguments.clone() } else { json!({}) },
        }),
        Part::ToolResult(r) => wire::ContentBlock::ToolResult(wire::ToolResult {
            tool_use_id: r.call_id.clone(),
            content: vec![wire::ToolResultContent::Text(r.content.clone())],
            status: Some(if r.is_error { "error" } else { "success" }.to_owned()),
        }),
    }
}

/// Maps a `stopReason`.
pub(crate) fn finish_reason(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        "model_context_window_exceeded" => FinishReason::ContextWindow,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        "malformed_model_output" | "malformed_tool_use" => FinishReason::Error,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Normalises usage: `input` counts cached tokens too, as everywhere in this crate.
pub(crate) fn usage(u: &wire::Usage) -> Usage {
    Usage {
        input_tokens: u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_input_tokens,
        cache_write_tokens: u.cache_write_input_tokens,
        reasoning_tokens: 0,
    }
}

/// Converts a `/converse` reply.
///
/// # Errors
/// [`ProviderError::Protocol`] if the reply has no message or a tool call without an object input.
pub(crate) fn response(
    resp: wire::ConverseResponse,
    request_id: Option<String>,
    model: &str,
) -> Result<ChatResponse, ProviderError> {
    let message = resp
        .output
        .and_then(|o| o.message)
        .ok_or_else(|| ProviderError::protocol(VENDOR, "reply has no output.message"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in message.content {
        match b {
            wire::ContentBlock::Text(t) => text.push_str(&t),
            wire::ContentBlock::ToolUse(u) => {
                tool_calls.push(ToolCall { id: u.tool_use_id, name: u.name, arguments: u.input })
            }
            _ => {}
        }
    }
    let stop = resp.stop_reason.ok_or_else(|| ProviderError::protocol(VENDOR, "reply has no stopReason"))?;
    Ok(ChatResponse {
        id: request_id,
        model: Some(model.to_owned()),
        text,
        tool_calls,
        finish_reason: finish_reason(&stop),
        usage: resp.usage.as_ref().map(usage).unwrap_or_default(),
    })
}

/// Whether a retry can help: throttling, timeouts and server errors, whatever the
/// type name says; other 4xx never.
fn retryable(status: u16, kind: &str) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
        || matches!(kind, "ThrottlingException" | "ModelNotReadyException")
}

/// Cuts `x-amzn-ErrorType: ThrottlingException:http://…` and `__type: com.amazon…#Name`
/// down to the bare name.
fn bare_type(raw: &str) -> &str {
    let raw = raw.split(':').next().unwrap_or(raw);
    raw.rsplit('#').next().unwrap_or(raw).trim()
}

/// Maps an HTTP error reply.
pub(crate) fn http_error(e: ErrorResponse, error_type_header: Option<&str>) -> ProviderError {
    let body: Option<wire::ErrorBody> = serde_json::from_str(&e.body).ok();
    let kind = error_type_header
        .map(bare_type)
        .filter(|k| !k.is_empty())
        .or_else(|| body.as_ref().and_then(|b| b.kind.as_deref()).map(bare_type))
        .unwrap_or("UnknownError")
        .to_owned();
    let message = body.and_then(|b| b.message).unwrap_or_else(|| e.body.chars().take(200).collect());
    let lower = message.to_ascii_lowercase();
    if e.status == 400
        && kind == "ValidationException"
        && (lower.contains("too long") || lower.contains("context window") || lower.contains("too many input tokens"))
    {
        return ProviderError::ContextOverflow { vendor: VENDOR, message };
    }
    ProviderError::Api {
        vendor: VENDOR,
        status: e.status,
        retryable: retryable(e.status, &kind),
        kind,
        message,
        retry_after: e.retry_after,
        request_id: e.request_id,
    }
}

/// Maps an `:message-type=exception` frame received after the 200.
pub(crate) fn stream_exception(exception_type: &str, payload: &[u8]) -> ProviderError {
    let message = serde_json::from_slice::<wire::ErrorBody>(payload).ok().and_then(|b| b.message).unwrap_or_default();
    let (status, kind) = match exception_type {
        "throttlingException" => (429, "ThrottlingException"),
        "validationException" => (400, "ValidationException"),
        "internalServerException" => (500, "InternalServerException"),
        "serviceUnavailableException" => (503, "ServiceUnavailableException"),
        "modelStreamErrorException" => (424, "ModelStreamErrorException"),
        other => (500, other),
    };
    ProviderError::Api {
        vendor: VENDOR,
        status,
        retryable: retryable(status, kind),
        kind: kind.to_owned(),
        message,
        retry_after: None,
        request_id: None,
    }
}
