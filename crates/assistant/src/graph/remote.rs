//! The `remote` node: an intent delegated to an external A2A agent (`[remote_agents.NAME]`).
//!
//! The turn goes to the agent through [`RemoteAgent::delegate`]: the context its policy shares,
//! masked by the guard; the whole reply goes through `respond` (the output guard) like any draft,
//! and only the checked text is streamed to the customer (nothing of the agent's raw text is).
//! When the agent asks for input, the `remote` field remembers its task, and the customer's next
//! message goes back to it (unless a repair pattern takes the conversation elsewhere) until it
//! completes. When the agent is unavailable (circuit open, timeout, transport error, garbage, a
//! failed task), its `fallback` handler answers and the routing trace notes why.

use super::{Inner, Out};
use serde_json::{Value, json};
use switchboard_engine::{Command, Goto, NodeInput, NodeResult, State};
use switchboard_interop::a2a::client::{Delegated, PendingTask};

impl Inner {
    /// The active remote agent an intent is delegated to.
    pub(super) fn remote_for(&self, intent: &str) -> Option<&str> {
        self.spec
            .remote_agents
            .iter()
            .find(|(name, r)| self.remotes.contains_key(*name) && r.intents.iter().any(|i| i.get_ref() == intent))
            .map(|(name, _)| name.as_str())
    }

    /// The remote agent waiting for the customer's answer, if it is still active (a stale wait, of
    /// an agent no longer configured, is dropped).
    pub(super) fn remote_waiting(&self, s: &State, out: &mut Out) -> Option<String> {
        let agent = s.get("remote").filter(|v| !v.is_null())?["agent"].as_str().map(str::to_string);
        match agent {
            Some(a) if self.remotes.contains_key(&a) => Some(a),
            _ => {
                out.update.push("remote", Value::Null);
                None
            }
        }
    }

    /// The `remote` node.
    pub(super) async fn remote_node(&self, i: &NodeInput) -> NodeResult {
        let s = &i.state;
        let pending = s.get("remote").filter(|v| !v.is_null());
        let name = match pending {
            Some(p) => p["agent"].as_str().unwrap_or_default().to_string(),
            None => s.get("routing").and_then(|r| r["handler"].as_str()).unwrap_or_default().to_string(),
        };
        let continuing: Option<PendingTask> = pending.and_then(|p| serde_json::from_value(p["task"].clone()).ok());
        let mut out = Out { handler: Some(name.clone()), ..Out::default() };
        out.update.push("remote", Value::Null);
        let Some(agent) = self.remotes.get(&name) else {
            return Ok(self.remote_fallback(s, out, &name, "the remote agent is not configured").into());
        };
        // The customer's message as stored (redacted by the input guard; not the `nlu` text,
        // which carries a card's last digits for the extractors).
        let text = super::agent::last_customer_text(s);
        match agent.delegate(&i.ctx, s, &text, continuing.as_ref()).await {
            Ok(Delegated::Reply(reply)) => {
                out.say(reply);
                self.with_resume(s, &mut out);
            }
            Ok(Delegated::InputRequired { question, partial, task }) => {
                if !partial.is_empty() {
                    out.say(partial.clone());
                }
                if question != partial {
                    out.say(question.clone());
                }
                out.update.push("remote", json!({"agent": name, "task": task, "question": question}));
            }
            Err(e) => return Ok(self.remote_fallback(s, out, &name, &e.to_string()).into()),
        }
        Ok(Command { update: out.finish(), goto: vec![Goto::node("respond")] }.into())
    }

    /// Hands the turn to the remote agent's fallback handler, noting why in the routing trace.
    fn remote_fallback(&self, s: &State, mut out: Out, name: &str, reason: &str) -> Command {
        let fallback =
            self.spec.remote_agents.get(name).map_or("out_of_scope".to_string(), |r| r.fallback.get_ref().clone());
        tracing::warn!(agent = name, fallback = %fallback, reason, "remote agent unavailable: its fallback answers");
        out.update.push(
            "routing_trace",
            json!({
                "outcome": "fallback", "handler": fallback, "remote_agent": name, "reasons": [reason],
                "turn": s.get("turn").and_then(Value::as_i64).unwrap_or(0),
            }),
        );
        self.hand_on(s, out.update, &fallback)
    }
}
