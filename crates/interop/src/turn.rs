//! What every protocol adapter shares: finding (or creating) the caller's conversation, running a
//! turn through the server's recorded turn machinery, and reading a turn's result in neutral terms
//! (reply text, question of an interrupt, routing metadata).
//!
//! Key design decision: a message sent to a conversation that waits on an interrupt answers that
//! interrupt (the protocols' "input required" exchange), so a protocol client can never leave a
//! conversation stuck behind a question only another API could answer.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_engine::{EngineError, Input};
use switchboard_server::turns::{self, Started};
use switchboard_server::{ApiError, AppState};
use switchboard_store::records::ConversationRecord;

/// Longest conversation key a client may send (header, `user` field, A2A context id).
pub(crate) const MAX_KEY_LEN: usize = 256;

/// State fields copied into the routing metadata of a reply, when the assistant has them.
const ROUTING_FIELDS: &[&str] =
    &["intent", "confidence", "route", "handler", "last_agent", "handoff", "routing", "active_flow"];

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The id of the conversation a client names with `key` (a header, the `user` field, an A2A
/// context id): stable, per tenant and assistant, so the same key continues the same conversation
/// and another tenant's identical key never reaches it.
fn derived_id(tenant: &str, assistant: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, assistant, key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("conv_x{hex}")
}

fn fresh_id() -> String {
    // A run id is random enough for a conversation id and saves a dependency.
    format!("conv_{}", switchboard_engine::new_run_id().trim_start_matches("run_"))
}

/// Finds the conversation `key` names for this tenant and assistant, creating it on first use; with
/// no key, a new conversation. A key that is the id of one of the tenant's conversations of this
/// assistant continues that conversation (so conversations made with the native API can be used).
///
/// # Errors
/// A key that is empty or too long, a conversation of another assistant, store failures.
pub(crate) async fn conversation(
    state: &AppState,
    tenant: &str,
    assistant: &str,
    key: Option<&str>,
    metadata: Value,
) -> Result<ConversationRecord, ApiError> {
    let records = state.records();
    let id = match key {
        None => fresh_id(),
        Some(k) if k.trim().is_empty() || k.len() > MAX_KEY_LEN => {
            return Err(ApiError::BadRequest(format!("a conversation key is 1 to {MAX_KEY_LEN} characters")));
        }
        Some(k) => match records.conversation(tenant, k).await? {
            Some(c) if c.assistant == assistant => return Ok(c),
            Some(c) => {
                return Err(ApiError::Conflict(format!(
                    "conversation `{k}` belongs to assistant `{}`, not `{assistant}`",
                    c.assistant
                )));
            }
            None => derived_id(tenant, assistant, k),
        },
    };
    if let Some(c) = records.conversation(tenant, &id).await? {
        return Ok(c);
    }
    let now = now_ms();
    let rec = ConversationRecord {
        id: id.clone(),
        tenant: tenant.to_string(),
        assistant: assistant.to_string(),
        customer_id: None,
        metadata,
        status: "idle".into(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    match records.insert_conversation(&rec).await {
        Ok(()) => Ok(rec),
        // Two first requests with the same key raced: the other one created it.
        Err(e) => records.conversation(tenant, &id).await?.ok_or(ApiError::Store(e)),
    }
}

/// Starts a turn with the customer's `text`: the answer to a pending interrupt if the conversation
/// waits on one, else a new message.
///
/// # Errors
/// An unknown assistant, engine refusals (busy, shutting down), store failures.
pub(crate) async fn say(state: &AppState, conv: &ConversationRecord, text: &str) -> Result<Started, ApiError> {
    let assistant = state
        .assistants()
        .get(&conv.assistant)
        .ok_or_else(|| ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)))?
        .clone();
    let pending = match assistant.engine.pending_interrupts(&conv.id).await {
        Ok(p) => !p.is_empty(),
        Err(EngineError::UnknownConversation(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let input = if pending {
        Input::Resume(Value::String(text.to_string()))
    } else {
        Input::Message((assistant.input)(text, &json!({})))
    };
    turns::start(state, conv, input, if pending { "resume" } else { "message" }).await
}

/// The text of a message in the `messages` field (`content` or `text`, a string or text parts).
pub(crate) fn message_text(m: &Value) -> Option<String> {
    let c = m.get("content").filter(|c| !c.is_null()).or_else(|| m.get("text"))?;
    match c {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let t: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
            (!t.is_empty()).then(|| t.join(""))
        }
        _ => None,
    }
}

/// What an interrupt asks, as text for a protocol client.
pub(crate) fn question(payload: &Value) -> String {
    for k in ["question", "message", "prompt", "text"] {
        if let Some(s) = payload.get(k).and_then(Value::as_str) {
            return s.to_string();
        }
    }
    match payload.get("reason").and_then(Value::as_str) {
        Some(r) => format!("The conversation is waiting for input ({r})."),
        None => "The conversation is waiting for input.".to_string(),
    }
}

/// A turn's result (the server's `TurnResult` as JSON) in neutral terms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// `completed`, `interrupted`, `cancelled`, `superseded`, `rolled_back` or `failed`.
    pub(crate) status: String,
    /// The assistant's reply, when it wrote one.
    pub(crate) reply: Option<String>,
    /// What a pending interrupt asks, when interrupted.
    pub(crate) question: Option<String>,
    /// The error message, when failed.
    pub(crate) error: Option<String>,
}

impl Outcome {
    /// From the `result` (a `TurnResult`) or `error` (an error body) of a run.
    pub(crate) fn from_result(result: &Value) -> Self {
        let status = result.get("status").and_then(Value::as_str).unwrap_or("failed").to_string();
        let question =
            result.get("interrupts").and_then(Value::as_array).and_then(|i| i.first()).map(|i| question(&i["payload"]));
        Self {
            reply: result.get("reply").and_then(message_text),
            question: if status == "interrupted" { question } else { None },
            error: None,
            status,
        }
    }

    /// From an error.
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self { status: "failed".into(), reply: None, question: None, error: Some(message.into()) }
    }

    /// From the outcome of [`Started::result`].
    pub(crate) fn from_turn(r: Result<Result<turns::TurnResult, ApiError>, impl std::fmt::Debug>) -> Self {
        match r {
            Ok(Ok(t)) => Self::from_result(&serde_json::to_value(&t).unwrap_or(Value::Null)),
            Ok(Err(e)) => Self::failed(e.body()["error"]["message"].as_str().unwrap_or("the turn failed")),
            Err(_) => Self::failed("the turn's recorder stopped"),
        }
    }

    /// From a recorded terminal event (`result` or `error`).
    pub(crate) fn from_event(event: &str, data: &str) -> Self {
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if event == "result" {
            Self::from_result(&v)
        } else {
            Self::failed(v["error"]["message"].as_str().unwrap_or("the turn failed"))
        }
    }

    /// The text to show the client: the reply, else the interrupt's question, else the error.
    pub(crate) fn text(&self) -> String {
        self.reply.clone().or_else(|| self.question.clone()).or_else(|| self.error.clone()).unwrap_or_default()
    }
}

/// The routing metadata of a conversation after a turn: the routing fields of its state.
pub(crate) async fn routing(state: &AppState, conv: &ConversationRecord) -> Value {
    let Some(a) = state.assistants().get(&conv.assistant) else { return json!({}) };
    let Ok(s) = a.engine.state(&conv.id).await else { return json!({}) };
    let mut out = serde_json::Map::new();
    for f in ROUTING_FIELDS {
        if let Some(v) = s.get(f).filter(|v| !v.is_null()) {
            out.insert((*f).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn derived_ids_are_per_tenant_and_assistant() {
        let a = derived_id("acme", "support", "chat-1");
        assert_eq!(a, derived_id("acme", "support", "chat-1"));
        assert_ne!(a, derived_id("globex", "support", "chat-1"));
        assert_ne!(a, derived_id("acme", "billing", "chat-1"));
        assert!(a.starts_with("conv_x") && a.len() == 6 + 32);
    }

    #[test]
    fn texts_and_questions() {
        assert_eq!(message_text(&json!({"role": "assistant", "content": "hi"})).as_deref(), Some("hi"));
        assert_eq!(message_text(&json!({"text": "yo"})).as_deref(), Some("yo"));
        assert_eq!(
            message_text(&json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}))
                .as_deref(),
            Some("ab")
        );
        assert_eq!(message_text(&json!({"content": 3})), None);
        assert_eq!(question(&json!({"question": "Which card?"})), "Which card?");
        assert_eq!(question(&json!({"reason": "handoff"})), "The conversation is waiting for input (handoff).");
        let o = Outcome::from_result(&json!({
            "status": "interrupted", "reply": null,
            "interrupts": [{"task_id": "t", "node": "n", "payload": {"question": "Which card?"}}]
        }));
        assert_eq!((o.status.as_str(), o.text().as_str()), ("interrupted", "Which card?"));
        let o = Outcome::from_event("error", r#"{"error":{"code":"internal","message":"boom"}}"#);
        assert_eq!((o.status.as_str(), o.text().as_str()), ("failed", "boom"));
    }
}
