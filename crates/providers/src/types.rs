//! Vendor-neutral request and response types.
//!
//! These are what the engine and every layer see; each vendor module converts them to and from
//! its private wire types. Anything a vendor supports that is not modelled here goes through
//! [`ChatRequest::extra`], merged verbatim into the vendor's request body.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who said a message. The system prompt is not a message: it is [`ChatRequest::system`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The customer or the calling application; tool results travel in user messages.
    User,
    /// The model.
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call the model made (assistant messages only).
    ToolCall(ToolCall),
    /// The result of a tool call, sent back to the model (user messages only).
    ToolResult(ToolResult),
}

/// A message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said, in order.
    pub parts: Vec<Part>,
}

impl Message {
    /// A user message with one text part.
    pub fn user(text: impl Into<String>) -> Self {
        Self { role: Role::User, parts: vec![Part::Text { text: text.into() }] }
    }

    /// An assistant message with one text part.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self { role: Role::Assistant, parts: vec![Part::Text { text: text.into() }] }
    }

    /// A user message carrying tool results.
    pub fn tool_results(results: impl IntoIterator<Item = ToolResult>) -> Self {
        Self { role: Role::User, parts: results.into_iter().map(Part::ToolResult).collect() }
    }

    /// The concatenated text parts.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The vendor's call id, echoed back in the [`ToolResult`].
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, parsed as JSON (always an object for well-behaved models).
    pub arguments: serde_json::Value,
}

/// The result of running a tool, sent back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The [`ToolCall::id`] this answers.
    pub call_id: String,
    /// The result as text (usually JSON).
    pub content: String,
    /// Whether the tool failed; the model sees the content as an error message.
    #[serde(default)]
    pub is_error: bool,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Name, `[a-zA-Z0-9_-]{1,64}` for every vendor.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Tool(String),
}

/// A JSON Schema the reply must satisfy (structured output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFormat {
    /// A short name for the schema (OpenAI requires one).
    pub name: String,
    /// The JSON Schema.
    pub schema: serde_json::Value,
}

/// Per-request metadata: who the call is for. Used by layers (tenant rate limits, budgets) and
/// forwarded to vendors that accept a user id; never contains message content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMetadata {
    /// The tenant (customer organisation) the call is billed to.
    pub tenant: Option<String>,
    /// The conversation the call belongs to.
    pub conversation: Option<String>,
    /// An opaque end-user id (sent as OpenAI `user` / Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Free-form tags for tracing.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A vendor-neutral chat request. The model is not part of the request: a [`crate::ChatModel`]
/// is bound to one (provider, model) pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The system prompt.
    pub system: Option<String>,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
    /// Tool choice; only sent when `tools` is not empty.
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Structured output: the reply must be JSON satisfying this schema.
    pub response_format: Option<ResponseFormat>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Maximum output tokens.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Who the call is for.
    #[serde(default)]
    pub metadata: RequestMetadata,
    /// Escape hatch: a JSON object merged verbatim into the vendor request body (top level).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatRequest {
    /// A request with one user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self { messages: vec![Message::user(text)], ..Self::default() }
    }
}

/// Why the model stopped, normalised across vendors (see the protocol fact sheet, 0.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The model wants tool results.
    ToolCalls,
    /// The output token limit was reached.
    Length,
    /// The context window was exhausted.
    ContextWindow,
    /// A safety or content filter stopped the output.
    ContentFilter,
    /// The vendor reports a model-side error (malformed tool use and the like).
    Error,
    /// A reason this crate does not know, kept verbatim.
    Other(String),
}

/// Token usage, normalised: `input_tokens` counts every prompt token including cached ones;
/// `cache_read_tokens` and `cache_write_tokens` say how many of those were cache hits or writes.
/// `output_tokens` includes reasoning tokens; `reasoning_tokens` says how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, cached or not.
    pub input_tokens: u64,
    /// All output tokens, reasoning included.
    pub output_tokens: u64,
    /// Prompt tokens read from the vendor's prompt cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the vendor's prompt cache.
    pub cache_write_tokens: u64,
    /// Output tokens spent on reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Adds another call's usage (used when a call is repaired or retried).
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The vendor's response id, when it sends one.
    pub id: Option<String>,
    /// The model that answered, as the vendor reports it.
    pub model: Option<String>,
    /// The reply text (all text parts joined).
    pub text: String,
    /// Complete tool calls, in the order the model made them.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// Token usage; zero when the vendor did not report it.
    pub usage: Usage,
}

impl ChatResponse {
    /// The reply as an assistant [`Message`], ready to append to the conversation.
    pub fn to_message(&self) -> Message {
        let mut parts = Vec::new();
        if !self.text.is_empty() {
            parts.push(Part::Text { text: self.text.clone() });
        }
        parts.extend(self.tool_calls.iter().cloned().map(Part::ToolCall));
        Message { role: Role::Assistant, parts }
    }
}
