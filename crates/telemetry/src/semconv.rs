//! Attribute and span names: the OpenTelemetry GenAI semantic conventions where they cover what
//! we record, `switchboard.*` for the rest. Instrumented code uses these names as `tracing` field
//! names (dotted names are allowed there).

/// The GenAI operation: `chat`, `execute_tool`, `invoke_agent`, `embeddings`.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// The vendor: `openai`, `anthropic`, `aws.bedrock`, `gcp.vertex_ai`, `gcp.gemini`.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// The model asked for.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// The model that answered.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// Why generation stopped.
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// Input (prompt) tokens.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// Output (completion) tokens.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// Tool name of an `execute_tool` span.
pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
/// Tool call id.
pub const GEN_AI_TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
/// Conversation id.
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
/// Agent name of an `invoke_agent` span.
pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
/// The prompt messages (content: captured only when enabled, always redacted).
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// The generated messages (content).
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// System instructions (content).
pub const GEN_AI_SYSTEM_INSTRUCTIONS: &str = "gen_ai.system_instructions";
/// Tool call arguments (content).
pub const GEN_AI_TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
/// Tool call result (content).
pub const GEN_AI_TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";
/// Cost of an LLM call in US dollars (not in the conventions yet).
pub const SWITCHBOARD_COST_USD: &str = "switchboard.cost.usd";
/// The customer's message of a turn (content).
pub const SWITCHBOARD_MESSAGE_TEXT: &str = "switchboard.message.text";
/// Run id of a turn.
pub const SWITCHBOARD_RUN_ID: &str = "switchboard.run.id";
/// Graph node name.
pub const SWITCHBOARD_NODE: &str = "switchboard.node";
/// Engine step number.
pub const SWITCHBOARD_STEP: &str = "switchboard.step";
/// The routing outcome: `intent`, `clarify`, `out_of_scope`.
pub const SWITCHBOARD_ROUTE_OUTCOME: &str = "switchboard.route.outcome";
/// The chosen intent.
pub const SWITCHBOARD_ROUTE_INTENT: &str = "switchboard.route.intent";
/// Confidence of the chosen intent.
pub const SWITCHBOARD_ROUTE_CONFIDENCE: &str = "switchboard.route.confidence";
/// The ladder rung that decided.
pub const SWITCHBOARD_ROUTE_RUNG: &str = "switchboard.route.rung";
/// Top candidates as `intent=score` pairs.
pub const SWITCHBOARD_ROUTE_CANDIDATES: &str = "switchboard.route.candidates";
/// The out-of-scope threshold in force.
pub const SWITCHBOARD_ROUTE_THRESHOLD: &str = "switchboard.route.threshold";
/// Why the router decided so.
pub const SWITCHBOARD_ROUTE_REASON: &str = "switchboard.route.reason";
/// Guard check kind: `input`, `output`, `tool`.
pub const SWITCHBOARD_GUARD_CHECK: &str = "switchboard.guard.check";
/// Guard verdict.
pub const SWITCHBOARD_GUARD_VERDICT: &str = "switchboard.guard.verdict";

/// Attributes that carry message content: dropped unless content capture is on, redacted when
/// it is.
pub const CONTENT_ATTRIBUTES: &[&str] = &[
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_SYSTEM_INSTRUCTIONS,
    GEN_AI_TOOL_CALL_ARGUMENTS,
    GEN_AI_TOOL_CALL_RESULT,
    SWITCHBOARD_MESSAGE_TEXT,
];

/// `tracing` fields that steer the OpenTelemetry span rather than become attributes, as in the
/// `tracing-opentelemetry` convention: the span's name, its kind (`client`, `server`,
/// `internal`, `producer`, `consumer`) and its status (`error`, `ok`).
pub const OTEL_NAME: &str = "otel.name";
/// See [`OTEL_NAME`].
pub const OTEL_KIND: &str = "otel.kind";
/// See [`OTEL_NAME`].
pub const OTEL_STATUS_CODE: &str = "otel.status_code";
/// A description of the error status.
pub const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";
