//! Neutral types to and from the Anthropic wire format, and error classification.

use serde_json::{Value, json};

use super::wire::{Block, ErrorEnvelope, Metadata, Request, RespBlock, Response, Tool, WireMessage, WireUsage};
use super::{AnthropicConfig, VENDOR};
use crate::error::ProviderError;
use crate::http::{ErrorResponse, merge_extra};
use crate::types::{ChatRequest, ChatResponse, FinishReason, Part, Role, ToolCall, ToolChoice, Usage};

/// Instruction appended to the system prompt for structured output (no native mode).
pub(super) fn schema_instruction(schema: &Value) -> String {
    format!("Reply with only a JSON document, no prose and no code fences, that satisfies this JSON Schema:\n{schema}")
}

/// Builds the JSON body for a request.
pub(super) fn request_body(cfg: &AnthropicConfig, req: &ChatRequest, stream: bool) -> Result<Value, ProviderError> {
    let mut messages: Vec<WireMessage> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        // Tool results must come first in a user message.
        let mut results = Vec::new();
        let mut others = Vec::new();
        for p in &m.parts {
            match (m.role, p) {
                (_, Part::Text { text }) => {
                    if !text.is_empty() {
                        others.push(Block::Text { text: text.clone() });
                    }
                }
                (Role::Assistant, Part::ToolCall(c)) => others.push(Block::ToolUse {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    input: if c.arguments.is_object() { c.arguments.clone() } else { json!({}) },
                }),
                (Role::User, Part::ToolResult(r)) => results.push(Block::ToolResult {
                    tool_use_id: r.call_id.clone(),
                    content: r.content.clone(),
                    is_error: r.is_error,
                }),
                _ => {
                    return Err(ProviderError::InvalidRequest(format!("a {role} message cannot contain this part")));
                }
            }
        }
        results.extend(others);
        if results.is_empty() {
            continue;
        }
        // Consecutive messages of one role are merged (the API wants alternation).
        match messages.last_mut() {
            Some(last) if last.role == role => {
                if role == "user" && results.iter().any(|b| matches!(b, Block::ToolResult { .. })) {
                    let mut merged = results;
                    merged.append(&mut last.content);
                    // Keep tool results first.
                    merged.sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
                    last.content = merged;
                } else {
                    last.content.extend(results);
                }
            }
            _ => messages.push(WireMessage { role, content: results }),
        }
    }
    let mut system = req.system.clone();
    if let Some(f) = &req.response_format {
        let instr = schema_instruction(&f.schema);
        system = Some(match system {
            Some(s) => format!("{s}\n\n{instr}"),
            None => instr,
        });
    }
    let tools: Vec<Tool<'_>> = req
        .tools
        .iter()
        .map(|t| Tool { name: &t.name, description: &t.description, input_schema: &t.parameters })
        .collect();
    let tool_choice = (!tools.is_empty()).then(|| match &req.tool_choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    });
    let wire = Request {
        model: &cfg.model,
        max_tokens: req.max_tokens.unwrap_or(cfg.default_max_tokens),
        system,
        messages,
        tools,
        tool_choice,
        temperature: req.temperature,
        stop_sequences: &req.stop,
        metadata: req.metadata.user.as_deref().map(|u| Metadata { user_id: u }),
        stream,
    };
    let mut body = serde_json::to_value(&wire)
        .map_err(|e| ProviderError::InvalidRequest(format!("cannot encode request: {e}")))?;
    merge_extra(&mut body, &req.extra);
    Ok(body)
}

/// Maps `stop_reason`.
pub(super) fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        "model_context_window_exceeded" => FinishReason::ContextWindow,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Merges a usage report into the running totals (later fields win, absent ones are kept).
pub(super) fn merge_usage(acc: &mut WireUsage, new: &WireUsage) {
    if new.input_tokens.is_some() {
        acc.input_tokens = new.input_tokens;
    }
    if new.output_tokens.is_some() {
        acc.output_tokens = new.output_tokens;
    }
    if new.cache_creation_input_tokens.is_some() {
        acc.cache_creation_input_tokens = new.cache_creation_input_tokens;
    }
    if new.cache_read_input_tokens.is_some() {
        acc.cache_read_input_tokens = new.cache_read_input_tokens;
    }
}

/// Normalises usage: Anthropic's `input_tokens` excludes cache reads and writes.
pub(super) fn usage(u: &WireUsage) -> Usage {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    Usage {
        input_tokens: u.input_tokens.unwrap_or(0) + read + write,
        output_tokens: u.output_tokens.unwrap_or(0),
        cache_read_tokens: read,
        cache_write_tokens: write,
        reasoning_tokens: 0,
    }
}

/// Converts a complete response.
pub(super) fn response(resp: Response) -> ChatResponse {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in resp.content {
        match b {
            RespBlock::Text { text: t } => text.push_str(&t),
            RespBlock::ToolUse { id, name, input } => {
                tool_calls.push(ToolCall { id, name, arguments: if input.is_null() { json!({}) } else { input } })
            }
            RespBlock::Other => {}
        }
    }
    ChatResponse {
        id: resp.id,
        model: resp.model,
        text,
        tool_calls,
        finish_reason: resp.stop_reason.as_deref().map(finish_reason).unwrap_or(FinishReason::Stop),
        usage: usage(&resp.usage),
    }
}

/// The status an error type stands for (mid-stream errors have no HTTP status of their own).
pub(super) fn status_of(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Classifies an error answer or a mid-stream `error` event.
pub(super) fn error(e: ErrorResponse) -> ProviderError {
    let env: ErrorEnvelope = serde_json::from_str(&e.body).unwrap_or_default();
    let message = if env.error.message.is_empty() {
        if e.body.is_empty() { format!("HTTP {}", e.status) } else { e.body.chars().take(300).collect() }
    } else {
        env.error.message
    };
    let kind = if env.error.kind.is_empty() { "unknown".to_owned() } else { env.error.kind };
    if e.status == 400 && message.starts_with("prompt is too long") {
        return ProviderError::ContextOverflow { vendor: VENDOR, message };
    }
    let spend_limit = e.body.contains("enforced_spend_limit_reached");
    let retryable = match e.should_retry_header {
        Some(v) => v,
        None => matches!(e.status, 408 | 409 | 429 | 500..=599) && !spend_limit,
    };
    ProviderError::Api {
        vendor: VENDOR,
        status: e.status,
        kind,
        message,
        retryable,
        retry_after: e.retry_after,
        request_id: e.request_id.or(env.request_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Message, ResponseFormat, ToolResult};

    #[test]
    fn tool_round_trip_shape() {
        let cfg = AnthropicConfig::new("claude-test");
        let req = ChatRequest {
            system: Some("terse".into()),
            messages: vec![
                Message::user("weather?"),
                Message {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Text { text: "Checking.".into() },
                        Part::ToolCall(ToolCall {
                            id: "toolu_01".into(),
                            name: "get_weather".into(),
                            arguments: json!({"city": "Paris"}),
                        }),
                    ],
                },
                Message::tool_results([ToolResult {
                    call_id: "toolu_01".into(),
                    content: "18C".into(),
                    is_error: false,
                }]),
                Message::user("and tomorrow?"),
            ],
            response_format: Some(ResponseFormat { name: "w".into(), schema: json!({"type": "object"}) }),
            ..ChatRequest::default()
        };
        let body = request_body(&cfg, &req, false).unwrap();
        assert_eq!(body["max_tokens"], json!(1024));
        assert!(body["system"].as_str().unwrap().starts_with("terse\n\nReply with only a JSON"));
        assert_eq!(body["messages"][1]["content"][1]["input"], json!({"city": "Paris"}));
        // The tool result and the following user text are merged, result first.
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(body["messages"][2]["content"][0]["type"], json!("tool_result"));
        assert_eq!(body["messages"][2]["content"][1]["text"], json!("and tomorrow?"));
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn stop_reasons() {
        for (raw, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("pause_turn", FinishReason::Stop),
            ("tool_use", FinishReason::ToolCalls),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::ContextWindow),
            ("refusal", FinishReason::ContentFilter),
            ("brand_new_reason", FinishReason::Other("brand_new_reason".into())),
        ] {
            assert_eq!(finish_reason(raw), want, "{raw}");
        }
    }

    #[test]
    fn usage_includes_cache_tokens() {
        let u = usage(&WireUsage {
            input_tokens: Some(10),
            output_tokens: Some(3),
            cache_creation_input_tokens: Some(100),
            cache_read_input_tokens: Some(1000),
        });
        assert_eq!((u.input_tokens, u.cache_read_tokens, u.cache_write_tokens), (1110, 1000, 100));
    }

    #[test]
    fn errors() {
        let mk = |status, body: &str| {
            error(ErrorResponse {
                status,
                retry_after: None,
                request_id: None,
                should_retry_header: None,
                body: body.into(),
            })
        };
        let e = mk(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
        assert!(e.is_retryable());
        assert!(matches!(&e, ProviderError::Api { request_id: Some(r), .. } if r == "req_1"));
        let e = mk(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 1 > 0"}}"#,
        );
        assert!(matches!(e, ProviderError::ContextOverflow { .. }));
        assert!(!mk(401, "{}").is_retryable());
    }
}
