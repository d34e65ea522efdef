//! Scripts for the fakes: what to answer ([`Reply`]), how fast, and which [`Fault`] to inject.
//!
//! Scenarios are vendor-neutral and serde-serialisable, so tests in any language can post them
//! to a running fake (`POST /_fake/script`); each vendor module renders them in its wire format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The text a fake answers with when nothing is scripted.
pub const DEFAULT_REPLY: &str = "Hello from the Switchboard fake server.";

/// A tool call the fake's "model" makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptedToolCall {
    /// Call id; generated in the vendor's style when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments object.
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Token counts the fake reports; computed from the texts when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptedUsage {
    /// Prompt tokens (cached included, as the vendors count them).
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens read from cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Prompt tokens written to cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Reasoning tokens.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// What the fake model says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Reply text (may be empty when there are tool calls).
    #[serde(default)]
    pub text: String,
    /// Tool calls, after the text.
    #[serde(default)]
    pub tool_calls: Vec<ScriptedToolCall>,
    /// The vendor's raw finish/stop reason; derived from the reply when absent.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Usage to report.
    #[serde(default)]
    pub usage: Option<ScriptedUsage>,
}

impl Default for Reply {
    fn default() -> Self {
        Self::text(DEFAULT_REPLY)
    }
}

impl Reply {
    /// A plain text reply.
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: text.into(), tool_calls: Vec::new(), finish_reason: None, usage: None }
    }

    /// A reply that calls one tool.
    pub fn tool_call(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self {
            text: String::new(),
            tool_calls: vec![ScriptedToolCall { id: None, name: name.into(), arguments }],
            finish_reason: None,
            usage: None,
        }
    }
}

/// A fault to inject instead of, or in the middle of, the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this HTTP status and the vendor's error body (429, 500, 503, Anthropic
    /// 529 ...), with a `retry-after` header when given.
    Status {
        /// HTTP status.
        status: u16,
        /// Seconds for `retry-after`.
        #[serde(default)]
        retry_after: Option<u64>,
        /// Error message; a vendor-typical one when absent.
        #[serde(default)]
        message: Option<String>,
    },
    /// A 400 saying the prompt is too long, in the vendor's exact words and codes.
    ContextOverflow,
    /// Streams: stop sending after this many events and keep the connection open.
    /// Non-streamed requests: never answer.
    Stall {
        /// Events sent before the stall.
        #[serde(default)]
        after_events: usize,
    },
    /// Streams: after this many events send a chunk that is not valid JSON.
    /// Non-streamed: a 200 whose body is not valid JSON.
    Malformed {
        /// Events sent before the bad chunk.
        #[serde(default)]
        after_events: usize,
    },
    /// Streams: after this many events send the vendor's mid-stream error event.
    StreamError {
        /// Events sent before the error.
        #[serde(default)]
        after_events: usize,
    },
    /// Cut the connection abruptly after this many events (non-streamed: mid-body).
    Disconnect {
        /// Events sent before the cut.
        #[serde(default)]
        after_events: usize,
    },
    /// End the stream cleanly but without the vendor's terminator after this many events.
    Truncate {
        /// Events sent before the end.
        #[serde(default)]
        after_events: usize,
    },
}

/// One scripted answer: consumed by one request, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// What the model says.
    #[serde(default)]
    pub reply: Reply,
    /// A fault to inject.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Delay before the response headers, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Delay between stream events, in milliseconds.
    #[serde(default)]
    pub token_delay_ms: u64,
    /// Split every stream event across two writes (cutting a UTF-8 character when possible).
    #[serde(default)]
    pub split_writes: bool,
    /// Send a keep-alive (comment or ping) before every event.
    #[serde(default)]
    pub keepalive: bool,
}

impl Scenario {
    /// A scenario answering with this reply.
    pub fn reply(reply: Reply) -> Self {
        Self { reply, ..Self::default() }
    }

    /// A scenario injecting this fault.
    pub fn fault(fault: Fault) -> Self {
        Self { fault: Some(fault), ..Self::default() }
    }
}

/// A request the fake received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`null` when it was not JSON).
    pub body: serde_json::Value,
}

/// Splits text into token-like pieces (a word with its leading space, or a punctuation mark),
/// which the fakes stream one per event and count for usage.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        let boundary = ch.is_whitespace() || (!ch.is_alphanumeric() && ch != '\'');
        if boundary && !cur.trim().is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
        if !ch.is_whitespace() && !ch.is_alphanumeric() && ch != '\'' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A rough token count of a JSON request body (every string's tokens), for default usage.
pub fn count_tokens(value: &serde_json::Value) -> u64 {
    match value {
        serde_json::Value::String(s) => tokens(s).len() as u64,
        serde_json::Value::Array(a) => a.iter().map(count_tokens).sum(),
        serde_json::Value::Object(o) => o.values().map(count_tokens).sum(),
        _ => 0,
    }
}
