//! Our tool trait: a [`ToolProvider`] offers a list of tools ([`ToolInfo`]) and calls them.
//!
//! An MCP server is one provider ([`crate::mcp::McpServer`]); in-process tools can be others. The
//! engine and the policy see only this trait, never the MCP SDK's types.

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// A tool as a provider lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolInfo {
    /// The provider's own name of the tool.
    pub name: String,
    /// What it does (for a model or an approver).
    pub description: String,
    /// JSON Schema of its arguments (an object schema).
    pub input_schema: Value,
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolOutput {
    /// The text parts of the result, joined by newlines.
    pub text: String,
    /// Structured content, when the tool returned some.
    pub structured: Option<Value>,
    /// The tool ran and reported a failure (bad input, a business error): something to tell the
    /// model or the customer, not a protocol problem.
    pub is_error: bool,
}

/// Why a call did not produce a [`ToolOutput`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// No such tool (on that provider, or in the toolbox).
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// The tool policy refused the call (not allowed, arguments invalid).
    #[error("tool policy: {0}")]
    Policy(String),
    /// A human denied the call.
    #[error("the call to `{0}` was denied by a human")]
    Denied(String),
    /// No answer in time.
    #[error("tool server `{server}` did not answer within {after:?}")]
    Timeout {
        /// The provider.
        server: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The server cannot be reached: it did not start, it died, the connection closed.
    #[error("tool server `{server}` is unavailable: {reason}")]
    Unavailable {
        /// The provider.
        server: String,
        /// What happened.
        reason: String,
    },
    /// The server answered with a protocol error (JSON-RPC error, unexpected reply).
    #[error("tool server `{server}` answered with an error: {message}")]
    Protocol {
        /// The provider.
        server: String,
        /// Its message (truncated).
        message: String,
    },
}

impl ToolError {
    /// Whether calling again later may succeed (the server was slow or down), as opposed to a
    /// call that is wrong or forbidden.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unavailable { .. })
    }
}

/// A source of tools: an MCP server, or tools built into the process.
///
/// Implementations bound every call with their own timeout and never hang: a provider whose
/// backing server is gone answers [`ToolError::Unavailable`].
pub trait ToolProvider: Send + Sync {
    /// The provider's name (tool names are qualified with it in a [`crate::Toolbox`]).
    fn name(&self) -> &str;
    /// The tools it offers now (a cached list; cheap).
    fn tools(&self) -> Vec<ToolInfo>;
    /// A counter that changes whenever [`Self::tools`] does.
    fn generation(&self) -> u64;
    /// Calls `tool` with `args` (a JSON object).
    ///
    /// # Errors
    /// [`ToolError`]: unknown tool, timeout, server unavailable, protocol error.
    fn call<'a>(&'a self, tool: &'a str, args: Value) -> BoxFuture<'a, Result<ToolOutput, ToolError>>;
}

/// Keeps at most `max` characters of a message from outside.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { s.chars().take(max).chain(['…']).collect() }
}
