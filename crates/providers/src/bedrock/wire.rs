//! Bedrock Converse wire types (restJson1), private to the adapter.
//!
//! Requests are built exactly; responses are read leniently: unknown fields are
//! ignored and unknown content-block kinds are skipped, since AWS adds members.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Body of `POST /model/{modelId}/converse` and `/converse-stream`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConverseRequest {
    pub(crate) messages: Vec<Message>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) system: Vec<SystemBlock>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    pub(crate) inference_config: InferenceConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) additional_model_request_fields: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// A system prompt block.
#[derive(Debug, Serialize)]
pub(crate) struct SystemBlock {
    pub(crate) text: String,
}

/// Sampling settings; absent fields are left to the model's defaults.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InferenceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_p: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) stop_sequences: Vec<String>,
}

impl InferenceConfig {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

/// One conversation turn.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) content: Vec<ContentBlock>,
}

/// A single-key union content block. Unknown kinds deserialise to `Other`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum ContentBlock {
    Text(String),
    ToolUse(ToolUse),
    ToolResult(ToolResult),
    ReasoningContent(Value),
    #[serde(untagged)]
    Other(Value),
}

/// A tool call made by the model.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolUse {
    pub(crate) tool_use_id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) input: Value,
}

/// The result of a tool call, sent back in a user turn.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolResult {
    pub(crate) tool_use_id: String,
    pub(crate) content: Vec<ToolResultContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<String>,
}

/// A tool result item: text or JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum ToolResultContent {
    Text(String),
    Json(Value),
    #[serde(untagged)]
    Other(Value),
}

/// Tool definitions and the choice mode.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolConfig {
    pub(crate) tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_choice: Option<Value>,
}

/// `{"toolSpec": …}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Tool {
    pub(crate) tool_spec: ToolSpec,
}

/// A tool's name, description and JSON Schema.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolSpec {
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    pub(crate) input_schema: InputSchema,
}

/// `{"json": <schema>}`.
#[derive(Debug, Serialize)]
pub(crate) struct InputSchema {
    pub(crate) json: Value,
}

/// Reply of `/converse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConverseResponse {
    pub(crate) output: Option<Output>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) usage: Option<Usage>,
}

/// `{"message": …}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Output {
    pub(crate) message: Option<Message>,
}

/// Token counts.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Usage {
    #[serde(default)]
    pub(crate) input_tokens: u64,
    #[serde(default)]
    pub(crate) output_tokens: u64,
    #[serde(default)]
    pub(crate) cache_read_input_tokens: u64,
    #[serde(default)]
    pub(crate) cache_write_input_tokens: u64,
}

/// An error body: `{"message": …}` and maybe `__type`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default, alias = "Message")]
    pub(crate) message: Option<String>,
    #[serde(default, rename = "__type")]
    pub(crate) kind: Option<String>,
}

/// `contentBlockStart` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlockStart {
    pub(crate) content_block_index: u32,
    #[serde(default)]
    pub(crate) start: Option<StartKind>,
}

/// What a started block is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartKind {
    pub(crate) tool_use: Option<ToolUseStart>,
}

/// A tool call's id and name, announced before its input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolUseStart {
    pub(crate) tool_use_id: String,
    pub(crate) name: String,
}

/// `contentBlockDelta` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlockDelta {
    pub(crate) content_block_index: u32,
    pub(crate) delta: Delta,
}

/// A delta: text or a tool input fragment (`reasoningContent` deltas are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Delta {
    pub(crate) text: Option<String>,
    pub(crate) tool_use: Option<ToolUseDelta>,
}

/// A fragment of a tool call's JSON input.
#[derive(Debug, Deserialize)]
pub(crate) struct ToolUseDelta {
    #[serde(default)]
    pub(crate) input: String,
}

/// `contentBlockStop` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlockStop {
    pub(crate) content_block_index: u32,
}

/// `messageStop` payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageStop {
    pub(crate) stop_reason: String,
}

/// `metadata` payload.
#[derive(Debug, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) usage: Option<Usage>,
}
