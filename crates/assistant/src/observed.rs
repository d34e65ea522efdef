//! What one turn of a conversation did, read from the conversation's state before and after it.
//!
//! Key design decision: everything is derived from the engine state's JSON (the `values` the
//! server's `/state` endpoint returns) plus the pending interrupts, so the scenario runner (in
//! process and over HTTP), the recorder of cassettes and their replay observe a turn through the
//! same code and compare exactly the same things.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// What one turn did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The assistant's new messages.
    pub replies: Vec<String>,
    /// The router's top intent for this message (`None` when no router or rule named one).
    pub intent: Option<String>,
    /// The handler of the last new reply.
    pub handler: Option<String>,
    /// This turn's routing decision, as recorded in the state.
    pub routing: Option<Value>,
    /// The slots after the turn.
    pub slots: Value,
    /// Tool calls made by the turn (`{name, args, result | error}`).
    pub tool_calls: Vec<Value>,
    /// The turn asked for a human (a handoff for a reason other than an approval).
    pub handoff: bool,
    /// Handoff status after the turn (`bot-active`, `queued`, ...).
    pub handoff_status: String,
    /// Kinds of the interrupts pending after the turn (`approval`).
    pub interrupts: Vec<String>,
    /// Wall-clock time of the turn as the runner saw it.
    #[serde(default)]
    pub latency_ms: f64,
}

fn array<'a>(state: &'a Value, key: &str) -> &'a [Value] {
    state.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The conversation is with a human (or waiting for one) for a reason other than an approval.
fn with_human(state: &Value) -> bool {
    let h = &state["handoff"];
    let status = h["status"].as_str().unwrap_or("bot-active");
    matches!(status, "handoff-requested" | "queued" | "agent-assigned" | "agent-active")
        && h["reason"].as_str() != Some("approval")
}

impl Observed {
    /// Derives what the turn did from the state before it (`Value::Null` for a new
    /// conversation), the state after it, and the interrupts' payloads pending after it.
    pub fn from_states(before: &Value, after: &Value, interrupts: &[Value], latency: Duration) -> Self {
        let new_messages = array(after, "messages").get(array(before, "messages").len()..).unwrap_or_default();
        let replies: Vec<&Value> = new_messages.iter().filter(|m| m["role"] == "assistant").collect();
        let routing = array(after, "routing_trace").get(array(before, "routing_trace").len()).cloned();
        let intent = routing.as_ref().and_then(|r| r["intent"].as_str()).map(str::to_string);
        Self {
            replies: replies.iter().filter_map(|m| m["content"].as_str()).map(str::to_string).collect(),
            intent,
            handler: replies.last().and_then(|m| m["handler"].as_str()).map(str::to_string),
            routing,
            slots: after.get("slots").cloned().unwrap_or(Value::Null),
            tool_calls: array(after, "tool_calls")
                .get(array(before, "tool_calls").len()..)
                .unwrap_or_default()
                .to_vec(),
            handoff: with_human(after) && !with_human(before),
            handoff_status: after["handoff"]["status"].as_str().unwrap_or("bot-active").to_string(),
            interrupts: interrupts.iter().filter_map(|p| p["type"].as_str()).map(str::to_string).collect(),
            latency_ms: latency.as_secs_f64() * 1000.0,
        }
    }

    /// The replies as one text (what the reply patterns are matched against).
    pub fn reply_text(&self) -> String {
        self.replies.join("\n")
    }

    /// The names of the tools called.
    pub fn tool_names(&self) -> Vec<&str> {
        self.tool_calls.iter().filter_map(|c| c["name"].as_str()).collect()
    }
}
