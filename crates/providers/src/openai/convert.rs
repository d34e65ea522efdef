//! Neutral types to and from the OpenAI wire format, and error classification.

use serde_json::{Value, json};

use super::wire::{
    ErrorEnvelope, Request, Response, StreamOptions, Tool, ToolFunction, WireFunction, WireMessage, WireToolCall,
    WireUsage,
};
use super::{MaxTokensField, OpenAiConfig, VENDOR};
use crate::error::ProviderError;
use crate::http::{ErrorResponse, merge_extra};
use crate::types::{ChatRequest, ChatResponse, FinishReason, Part, Role, ToolCall, ToolChoice, Usage};

/// Builds the JSON body for a request.
pub(super) fn request_body(cfg: &OpenAiConfig, req: &ChatRequest, stream: bool) -> Result<Value, ProviderError> {
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        messages.push(WireMessage::System { content: system.clone() });
    }
    for m in &req.messages {
        match m.role {
            Role::User => {
                // Tool results first (each its own `tool` message), then any text.
                let mut text = String::new();
                for p in &m.parts {
                    match p {
                        Part::ToolResult(r) => messages.push(WireMessage::Tool {
                            tool_call_id: r.call_id.clone(),
                            content: if r.is_error { format!("Error: {}", r.content) } else { r.content.clone() },
                        }),
                        Part::Text { text: t } => text.push_str(t),
                        Part::ToolCall(_) => {
                            return Err(ProviderError::InvalidRequest(
                                "a user message cannot contain a tool call".into(),
                            ));
                        }
                    }
                }
                if !text.is_empty() {
                    messages.push(WireMessage::User { content: text });
                }
            }
            Role::Assistant => {
                let mut text = String::new();
                let mut tool_calls = Vec::new();
                for p in &m.parts {
                    match p {
                        Part::Text { text: t } => text.push_str(t),
                        Part::ToolCall(c) => tool_calls.push(WireToolCall {
                            id: c.id.clone(),
                            kind: "function",
                            function: WireFunction { name: c.name.clone(), arguments: c.arguments.to_string() },
                        }),
                        Part::ToolResult(_) => {
                            return Err(ProviderError::InvalidRequest(
                                "an assistant message cannot contain a tool result".into(),
                            ));
                        }
                    }
                }
                messages.push(WireMessage::Assistant {
                    content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
                    tool_calls,
                });
            }
        }
    }
    let tools: Vec<Tool<'_>> = req
        .tools
        .iter()
        .map(|t| Tool {
            kind: "function",
            function: ToolFunction { name: &t.name, description: &t.description, parameters: &t.parameters },
        })
        .collect();
    let tool_choice = (!tools.is_empty()).then(|| match &req.tool_choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    });
    let response_format = req.response_format.as_ref().map(|f| {
        json!({"type": "json_schema", "json_schema": {
            "name": f.name, "schema": f.schema, "strict": cfg.strict_schemas}})
    });
    let (max_completion_tokens, max_tokens) = match cfg.max_tokens_field {
        MaxTokensField::MaxCompletionTokens => (req.max_tokens, None),
        MaxTokensField::MaxTokens => (None, req.max_tokens),
    };
    let wire = Request {
        model: &cfg.model,
        messages,
        tools,
        tool_choice,
        temperature: req.temperature,
        max_completion_tokens,
        max_tokens,
        stop: &req.stop,
        response_format,
        user: req.metadata.user.as_deref(),
        stream,
        stream_options: (stream && cfg.include_usage).then_some(StreamOptions { include_usage: true }),
    };
    let mut body = serde_json::to_value(&wire)
        .map_err(|e| ProviderError::InvalidRequest(format!("cannot encode request: {e}")))?;
    merge_extra(&mut body, &req.extra);
    Ok(body)
}

/// Maps `finish_reason`.
pub(super) fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Maps usage.
pub(super) fn usage(u: &WireUsage) -> Usage {
    Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cache_read_tokens: u.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
        cache_write_tokens: 0,
        reasoning_tokens: u.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
    }
}

/// Tool call arguments: a JSON-encoded string per the spec, an object from some servers.
pub(super) fn arguments(raw: &Value) -> Result<Value, ProviderError> {
    match raw {
        Value::String(s) if s.trim().is_empty() => Ok(json!({})),
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| ProviderError::protocol(VENDOR, format!("tool call arguments are not JSON: {e}"))),
        Value::Null => Ok(json!({})),
        other => Ok(other.clone()),
    }
}

/// Converts a complete response.
pub(super) fn response(resp: Response) -> Result<ChatResponse, ProviderError> {
    let Some(choice) = resp.choices.into_iter().next() else {
        return Err(ProviderError::protocol(VENDOR, "response has no choices"));
    };
    let mut tool_calls = Vec::new();
    for (i, c) in choice.message.tool_calls.unwrap_or_default().into_iter().enumerate() {
        tool_calls.push(ToolCall {
            id: c.id.unwrap_or_else(|| format!("call_{i}")),
            name: c.function.name,
            arguments: arguments(&c.function.arguments)?,
        });
    }
    let mut finish = choice.finish_reason.as_deref().map(finish_reason).unwrap_or(FinishReason::Stop);
    if finish == FinishReason::Stop && !tool_calls.is_empty() {
        finish = FinishReason::ToolCalls;
    }
    if choice.message.refusal.is_some() && choice.message.content.is_none() {
        finish = FinishReason::ContentFilter;
    }
    Ok(ChatResponse {
        id: resp.id,
        model: resp.model,
        text: choice.message.content.unwrap_or_default(),
        tool_calls,
        finish_reason: finish,
        usage: resp.usage.as_ref().map(usage).unwrap_or_default(),
    })
}

fn code_string(code: &Option<Value>) -> Option<String> {
    match code {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Classifies an error answer (status >= 400) or a mid-stream error object.
pub(super) fn error(e: ErrorResponse) -> ProviderError {
    let env: ErrorEnvelope = serde_json::from_str(&e.body).unwrap_or_default();
    let (message, kind, code) = match env.error {
        Some(w) => (w.message, w.kind, code_string(&w.code)),
        None => (env.message, env.kind, code_string(&env.code)),
    };
    let message = message.unwrap_or_else(|| {
        if e.body.is_empty() { format!("HTTP {}", e.status) } else { e.body.chars().take(300).collect() }
    });
    if code.as_deref() == Some("context_length_exceeded") || message.contains("maximum context length") {
        return ProviderError::ContextOverflow { vendor: VENDOR, message };
    }
    let quota = code.as_deref() == Some("insufficient_quota");
    let retryable = match e.should_retry_header {
        Some(v) => v && !quota,
        None => matches!(e.status, 408 | 409 | 429 | 500..=599) && !quota,
    };
    ProviderError::Api {
        vendor: VENDOR,
        status: e.status,
        kind: code.or(kind).unwrap_or_else(|| "unknown".into()),
        message,
        retryable,
        retry_after: e.retry_after,
        request_id: e.request_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Message, ToolDefinition, ToolResult};

    fn cfg() -> OpenAiConfig {
        OpenAiConfig::new("gpt-test")
    }

    fn err(status: u16, body: &str) -> ProviderError {
        error(ErrorResponse {
            status,
            retry_after: None,
            request_id: None,
            should_retry_header: None,
            body: body.into(),
        })
    }

    #[test]
    fn request_shape_with_tool_round_trip() {
        let req = ChatRequest {
            system: Some("be terse".into()),
            messages: vec![
                Message::user("weather?"),
                Message {
                    role: Role::Assistant,
                    parts: vec![Part::ToolCall(ToolCall {
                        id: "call_7".into(),
                        name: "get_weather".into(),
                        arguments: json!({"city": "Paris"}),
                    })],
                },
                Message::tool_results([ToolResult {
                    call_id: "call_7".into(),
                    content: "{\"temp_c\":18}".into(),
                    is_error: false,
                }]),
            ],
            tools: vec![ToolDefinition {
                name: "get_weather".into(),
                description: "Current weather".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: Some(5),
            stop: vec!["\n\n".into()],
            extra: [("seed".to_string(), json!(7))].into_iter().collect(),
            ..ChatRequest::default()
        };
        let body = request_body(&cfg(), &req, true).unwrap();
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "be terse"}));
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(body["messages"][2]["tool_calls"][0]["function"]["arguments"], json!("{\"city\":\"Paris\"}"));
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_7", "content": "{\"temp_c\":18}"})
        );
        assert_eq!(body["tool_choice"], json!("auto"));
        assert_eq!(body["max_completion_tokens"], json!(5));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["seed"], json!(7));
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("stop"), FinishReason::Stop);
        assert_eq!(finish_reason("function_call"), FinishReason::ToolCalls);
        assert_eq!(finish_reason("length"), FinishReason::Length);
        assert_eq!(finish_reason("content_filter"), FinishReason::ContentFilter);
        assert_eq!(finish_reason("eos"), FinishReason::Other("eos".into()));
    }

    #[test]
    fn errors_are_classified() {
        let e = err(429, r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#);
        assert!(e.is_retryable());
        assert_eq!(e.status(), Some(429));
        let e = err(429, r#"{"error":{"message":"pay","type":"insufficient_quota","code":"insufficient_quota"}}"#);
        assert!(!e.is_retryable());
        let e = err(400, r#"{"error":{"message":"too long","code":"context_length_exceeded"}}"#);
        assert!(matches!(e, ProviderError::ContextOverflow { .. }));
        let e = err(500, r#"{"object":"error","message":"flat vllm","type":"InternalServerError"}"#);
        assert!(e.is_retryable() && e.to_string().contains("flat vllm"));
        assert!(!err(401, "").is_retryable());
    }

    #[test]
    fn stop_after_tool_calls_means_tool_calls() {
        let r: Response = serde_json::from_value(json!({"choices": [{"finish_reason": "stop",
            "message": {"content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}}]}))
        .unwrap();
        let r = response(r).unwrap();
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.tool_calls[0].id, "call_0");
        assert_eq!(r.tool_calls[0].arguments, json!({"a": 1}));
    }
}
