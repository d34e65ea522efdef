//! The assistant as an engine graph.
//!
//! ```text
//! START → ingest ─(route)→ flow | faq | smalltalk | clarify | out_of_scope | handoff | repair | guard | silent | resume
//!                          every handler → respond ─(approval pending?)→ approval → respond … → END
//! ```
//!
//! `ingest` reads the input event (a customer message already redacted by the input guard, or a
//! desk event), applies repair (human, restart, cancel), lets the active flow take the message
//! when it fits, and otherwise asks the router. Handlers write a `draft`; `respond` runs the
//! output guard over it, streams it as tokens and appends it to `messages`. A flow that needs a
//! human's approval sets `pending_approval`; `approval` then pauses on an engine interrupt, and
//! every desk or customer event that arrives while it waits resumes it, is handled, and pauses
//! again, until the approval is granted or denied.

use crate::backend::ToolBackend;
use crate::config::{AssistantSpec, HandlerKind};
use crate::faq::HelpCentre;
use crate::flows::{self, ApprovalRequest, FlowCx, Frame, fill};
use crate::handoff::{Desk, Handoff};
use crate::nlu::{Repair, RepairAct};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use switchboard_engine::{
    Command, END, Field, Goto, Graph, GraphBuilder, GraphError, NodeError, NodeInput, NodeResult, Reducer, START,
    Schema, State, Update,
};
use switchboard_guard::output::OutputPolicy;
use switchboard_router::{Outcome, Router};

mod agent;
pub(crate) mod mcp;
mod remote;

/// Handler nodes `ingest` may route to.
pub const ROUTES: &[&str] = &[
    "flow",
    "faq",
    "smalltalk",
    "clarify",
    "out_of_scope",
    "handoff",
    "repair",
    "guard",
    "silent",
    "resume",
    "agent",
    "remote",
];

/// The intent of a request for a human, named in the routing trace when a repair pattern decides it.
pub const HUMAN_INTENT: &str = "human_agent";

/// Fields of the state.
pub fn schema() -> Result<Schema, GraphError> {
    let mut b = Schema::builder()
        .field(Field::new("messages").reducer(Reducer::Messages))
        .field(Field::new("routing_trace").reducer(Reducer::Append))
        .field(Field::new("tool_calls").reducer(Reducer::Append))
        .field(Field::new("approvals").reducer(Reducer::Append))
        .field(Field::new("llm_calls").reducer(Reducer::Append))
        .field(Field::new("turn").reducer(Reducer::Counter))
        .field(Field::new("flows").default_value(json!([])))
        .field(Field::new("draft").default_value(json!([])))
        .field(Field::new("misunderstandings").default_value(json!(0)));
    for f in [
        "event",
        "route",
        "routing",
        "intent",
        "handler",
        "slots",
        "pending_approval",
        "handoff",
        "customer",
        "faq",
        "notice",
        "agent",
        "llm_usage",
        "remote",
        "streamed",
    ] {
        b = b.field(Field::new(f));
    }
    b.build()
}

pub(crate) struct Inner {
    pub(crate) spec: AssistantSpec,
    pub(crate) backend: Arc<dyn ToolBackend>,
    pub(crate) router: Arc<Router>,
    pub(crate) help: HelpCentre,
    pub(crate) repair: Repair,
    /// `[[clarify]]` rules, compiled.
    pub(crate) clarify_rules: Vec<(regex::Regex, [String; 2])>,
    pub(crate) output: OutputPolicy,
    pub(crate) desk: Arc<Desk>,
    /// Vendor LLMs of the agents and the FAQ (`None`: offline).
    pub(crate) models: Option<Arc<crate::llm::Models>>,
    /// MCP servers of the agents' tools (`None`: no `[[mcp_servers]]`).
    pub(crate) mcp: Option<Arc<mcp::McpTools>>,
    /// Remote A2A agents that have a URL, by name (`[remote_agents]` without one are absent).
    pub(crate) remotes: std::collections::BTreeMap<String, Arc<switchboard_interop::a2a::client::RemoteAgent>>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn stack(s: &State) -> Vec<Frame> {
    s.get("flows").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
}

fn customer_of(i: &NodeInput) -> String {
    i.ctx
        .customer_id()
        .map(str::to_string)
        .or_else(|| i.state.get_str("customer").map(str::to_string))
        .unwrap_or_default()
}

fn vars(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect()
}

/// What a handler node writes, gathered before it becomes an update.
#[derive(Default)]
struct Out {
    draft: Vec<String>,
    update: Update,
    handler: Option<String>,
}

impl Out {
    fn say(&mut self, s: impl Into<String>) {
        self.draft.push(s.into());
    }
    fn finish(mut self) -> Update {
        self.update.push("draft", json!(self.draft));
        if let Some(h) = self.handler {
            self.update.push("handler", json!(h));
        }
        self.update
    }
}

impl Inner {
    fn flow_spec(&self, name: &str) -> Option<&crate::config::FlowSpec> {
        self.spec.flows.get(name)
    }

    /// The question a frame is waiting on, to ask again after a digression.
    fn current_prompt(&self, f: &Frame) -> String {
        let Some(spec) = self.flow_spec(&f.flow) else { return String::new() };
        let msg = |k: &str| fill(spec.messages.get(k).map_or("", String::as_str), &f.slots);
        match f.awaiting.as_deref() {
            Some(a) if a.starts_with("slot:") => spec
                .slots
                .iter()
                .find(|s| a == format!("slot:{}", s.name))
                .map(|s| s.prompt.clone())
                .unwrap_or_default(),
            Some("confirm:replacement") => msg("offer_replacement"),
            Some("confirm:recovery") => "Shall I open a recovery request for it? (yes / no)".into(),
            Some("approval") => msg("approval_pending"),
            _ => spec.slots.first().map(|s| s.prompt.clone()).unwrap_or_default(),
        }
    }

    fn resume_line(&self, f: &Frame) -> Option<String> {
        let spec = self.flow_spec(&f.flow)?;
        let prompt = self.current_prompt(f);
        Some(fill(&self.spec.replies.resume_flow, &vars(&[("flow", json!(spec.label)), ("prompt", json!(prompt))])))
    }

    fn sla_ms(&self, priority: &str) -> u64 {
        self.spec.handoff.sla_ms.get(priority).copied().unwrap_or(15 * 60 * 1000)
    }

    fn priority_for(&self, reason: &str) -> String {
        self.spec.handoff.priority.get(reason).cloned().unwrap_or_else(|| "normal".into())
    }

    /// The summary a human reads before taking over.
    fn summary(&self, s: &State, customer: &str, reason: &str, frames: &[Frame], approval: Option<&Value>) -> String {
        let mut parts = Vec::new();
        let who = if customer.is_empty() { "(anonymous)" } else { customer };
        parts.push(format!("Customer {who}. Reason: {}.", reason.replace('_', " ")));
        if let Some(r) = s.get("routing").filter(|r| !r.is_null())
            && let Some(intent) = r["intent"].as_str()
        {
            parts.push(format!("Last intent: {intent} ({:.2}).", r["confidence"].as_f64().unwrap_or(0.0)));
        }
        if let Some(f) = frames.last() {
            let label = self.flow_spec(&f.flow).map_or(f.flow.as_str(), |x| x.label.as_str());
            let slots: Vec<String> =
                f.slots.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string()))).collect();
            parts.push(format!("Active flow: {label} [{}].", slots.join(", ")));
        }
        if let Some(a) = approval.filter(|a| !a.is_null()) {
            parts.push(format!("Pending approval: {}.", a["summary"].as_str().unwrap_or("a tool call")));
        }
        let said: Vec<String> = s
            .get_array("messages")
            .iter()
            .filter(|m| m["role"] == "user")
            .rev()
            .take(3)
            .filter_map(|m| m["content"].as_str().map(|t| format!("\"{}\"", t.chars().take(160).collect::<String>())))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !said.is_empty() {
            parts.push(format!("Customer said: {}.", said.join(" / ")));
        }
        parts.join(" ")
    }

    fn request_handoff(
        &self,
        s: &State,
        out: &mut Out,
        customer: &str,
        reason: &str,
        frames: &[Frame],
        approval: Option<&Value>,
    ) -> Handoff {
        let mut h = Handoff::from_value(s.get("handoff"));
        let priority = self.priority_for(reason);
        let sla = self.sla_ms(&priority);
        let summary = self.summary(s, customer, reason, frames, approval);
        let was_with_human = h.status.with_human() && h.reason.as_deref() != Some("approval");
        // Containment counts a conversation as escalated once: the first time it goes to a human
        // for anything but a tool-call approval.
        let escalation = reason != "approval" && !h.escalated;
        let _span = switchboard_telemetry::spans::handoff(reason, &priority, escalation).entered();
        h.escalated |= reason != "approval";
        h.request(reason, &priority, sla, summary, frames.last().map(|f| f.flow.clone()), now_ms());
        if reason != "approval" && !was_with_human {
            out.say(fill(&self.spec.handoff.queued, &vars(&[("minutes", json!(sla.div_ceil(60_000)))])));
        }
        out.update.push("handoff", h.to_value());
        h
    }

    // ---- ingest ----

    fn ingest(&self, i: &NodeInput) -> Update {
        let s = &i.state;
        let ev = s.get("event").cloned().unwrap_or(Value::Null);
        let mut out = Out::default();
        out.update.push("event", Value::Null);
        // Every turn names its own handler (none when nothing answers, e.g. a desk event).
        out.update.push("handler", Value::Null);
        if let Some(c) = i.ctx.customer_id() {
            out.update.push("customer", json!(c));
        }
        let customer = customer_of(i);
        let mut h = Handoff::from_value(s.get("handoff"));
        let frames = stack(s);
        let kind = ev["kind"].as_str().unwrap_or("customer");
        let route = match kind {
            "claim" => {
                let agent = ev["agent"].as_str().unwrap_or("agent");
                if h.claim(agent, now_ms()).is_ok() {
                    out.say(fill(&self.spec.handoff.assigned, &vars(&[("agent", json!(agent))])));
                    out.update.push("handoff", h.to_value());
                }
                "silent"
            }
            "agent" => {
                if h.agent_message(now_ms()).is_ok() {
                    out.update.push("handoff", h.to_value());
                }
                "silent"
            }
            "handback" => {
                if h.hand_back(now_ms()).is_ok() {
                    out.update.push("handoff", h.to_value());
                }
                "resume"
            }
            "handoff_request" => {
                self.request_handoff(s, &mut out, &customer, "customer_request", &frames, s.get("pending_approval"));
                out.handler = Some("handoff".into());
                "silent"
            }
            _ => return self.ingest_customer(i, &ev, out, h, frames),
        };
        out.update.push("route", json!(route));
        out.finish()
    }

    fn record_routing(&self, out: &mut Out, s: &State, text: &str, routing: Value) {
        let mut r = routing;
        r["turn"] = json!(s.get("turn").and_then(Value::as_i64).unwrap_or(0) + 1);
        r["text"] = json!(text.chars().take(200).collect::<String>());
        if let Some(intent) = r["intent"].as_str() {
            out.update.push("intent", json!(intent));
        }
        out.update.push("routing", r.clone());
        out.update.push("routing_trace", r);
    }

    fn ingest_customer(&self, i: &NodeInput, ev: &Value, mut out: Out, h: Handoff, mut frames: Vec<Frame>) -> Update {
        let s = &i.state;
        out.update.push("turn", json!(1));
        let text = ev["text"].as_str().unwrap_or("").to_string();
        let nlu_text = match ev["pan_last4"].as_str() {
            Some(l4) => format!("{text} {l4}"),
            None => text.clone(),
        };
        let guard = &self.spec.policies.guard;
        let simple = |out: &mut Out, handler: &str, reason: &str| {
            self.record_routing(out, s, &text, json!({"outcome": "rule", "handler": handler, "reasons": [reason]}));
        };
        let mut misunderstood = false;
        let route: String = if h.status.with_human() {
            simple(&mut out, "human", "a human owns the conversation");
            out.handler = Some("human".into());
            if h.status != crate::handoff::HandoffStatus::AgentActive {
                out.say(self.spec.handoff.waiting.clone());
            }
            "silent".into()
        } else if ev["injection"].as_bool() == Some(true) && guard.block_injection {
            simple(&mut out, "guard", "prompt injection flagged");
            "guard".into()
        } else if let Some(act) = self.repair.act(&text) {
            let (handler, route) = match act {
                RepairAct::Human => ("handoff", "handoff"),
                RepairAct::Restart => ("repair", "repair"),
                RepairAct::Cancel if !frames.is_empty() => ("repair", "repair"),
                RepairAct::Cancel => ("smalltalk", "smalltalk"),
            };
            let mut routing = json!({"outcome": "rule", "handler": handler, "reasons": [format!("repair: {act:?}")]});
            if act == RepairAct::Human {
                // The rule decides the intent the router would name for it.
                routing["intent"] = json!(HUMAN_INTENT);
            }
            // Repair leaves an exchange with a remote agent that asked for input.
            out.update.push("remote", Value::Null);
            self.record_routing(&mut out, s, &text, routing);
            route.into()
        } else if let Some(agent) = self.remote_waiting(s, &mut out) {
            self.record_routing(
                &mut out,
                s,
                &text,
                json!({"outcome": "rule", "handler": agent, "reasons": ["the remote agent asked for this input"]}),
            );
            "remote".into()
        } else if let Some(top) = frames.last()
            && let Some(spec) = self.flow_spec(&top.flow)
            && !self.general_question(&text)
            && (flows::consumes(spec, top, &nlu_text, &self.repair)
                || (self.repair.is_correction(&text)
                    && !flows::corrections(spec, &mut top.clone(), &nlu_text).is_empty()))
        {
            let flow = top.flow.clone();
            simple(&mut out, &flow, "the active flow takes the message");
            "flow".into()
        } else if let Some((flow, what)) = self.entity_flow(&text).filter(|_| frames.is_empty()) {
            // A transfer id or a transaction hash names its flow better than any classifier.
            frames.push(Frame { flow: flow.into(), ..Frame::default() });
            out.update.push("flows", json!(frames));
            self.record_routing(
                &mut out,
                s,
                &text,
                json!({"outcome": "entity", "handler": flow, "reasons": [format!("the message contains a {what}")]}),
            );
            "flow".into()
        } else if let Some(rule) =
            self.clarify_rules.iter().find(|(re, _)| re.is_match(&text)).filter(|_| frames.is_empty())
        {
            misunderstood = true;
            self.record_routing(
                &mut out,
                s,
                &text,
                json!({"outcome": "clarify", "handler": "clarify", "clarify": rule.1,
                       "reasons": [format!("a vague message ({}): ask which it is", rule.0.as_str())]}),
            );
            "clarify".into()
        } else {
            let decision = self.router.route(&text);
            let (route, routing) = match decision {
                Err(e) => ("out_of_scope".to_string(), json!({"outcome": "out_of_scope", "reasons": [e.to_string()]})),
                Ok(d) => {
                    let mut routing = serde_json::to_value(&d).unwrap_or_default();
                    let remote = d.intent.as_deref().and_then(|i| self.remote_for(i));
                    let route = match d.outcome {
                        Outcome::Intent if remote.is_some() => {
                            routing["handler"] = json!(remote);
                            "remote".to_string()
                        }
                        Outcome::Intent => {
                            let intent = d.intent.clone().unwrap_or_default();
                            let mut handler = self.spec.handler_for(&intent).to_string();
                            if self.spec.handler_kind(&handler) == Some(HandlerKind::Agent)
                                && let Some(a) = self.spec.agents.get(&handler)
                                && !self.agent_online(&handler)
                            {
                                // No model of the agent is available: its offline handler answers.
                                handler = a.offline.get_ref().clone();
                            }
                            routing["handler"] = json!(handler);
                            match self.spec.handler_kind(&handler) {
                                Some(HandlerKind::Flow) if self.general_question(&text) => {
                                    // "How many confirmations does ETH need?" asks how things work,
                                    // not about the customer's own deposit: the help centre answers
                                    // (and an active flow resumes after it).
                                    routing["handler"] = json!("faq");
                                    if let Some(r) = routing["reasons"].as_array_mut() {
                                        r.push(json!("a general question: answered from the help centre"));
                                    }
                                    "faq".to_string()
                                }
                                Some(HandlerKind::Flow) => {
                                    if frames.last().is_none_or(|f| f.flow != handler) {
                                        frames.push(Frame {
                                            flow: handler.clone(),
                                            intent: Some(intent),
                                            ..Frame::default()
                                        });
                                        out.update.push("flows", json!(frames));
                                    }
                                    "flow".to_string()
                                }
                                Some(HandlerKind::Agent) => "agent".to_string(),
                                _ => handler,
                            }
                        }
                        Outcome::Clarify => {
                            misunderstood = true;
                            routing["handler"] = json!("clarify");
                            if frames.is_empty() { "clarify".into() } else { "flow".into() }
                        }
                        Outcome::OutOfScope => {
                            misunderstood = true;
                            let best = self.help.search(&text, 1);
                            let answerable = best.first().is_some_and(|p| p.score >= self.spec.faq.min_score);
                            if answerable && (frames.is_empty() || self.general_question(&text)) {
                                misunderstood = false;
                                routing["handler"] = json!("faq");
                                "faq".into()
                            } else if frames.is_empty() {
                                routing["handler"] = json!("out_of_scope");
                                "out_of_scope".into()
                            } else {
                                routing["handler"] = json!(frames.last().map(|f| f.flow.clone()));
                                "flow".into()
                            }
                        }
                    };
                    (route, routing)
                }
            };
            self.record_routing(&mut out, s, &text, routing);
            route
        };
        if ev["secret"].as_bool() == Some(true) && guard.block_secrets {
            // The secret never reached the state (the input guard replaced it); warn, then
            // answer what the customer asked.
            out.update.push("notice", json!(switchboard_guard::CUSTOMER_WARNING));
        }
        let count = if misunderstood { s.get("misunderstandings").and_then(Value::as_u64).unwrap_or(0) + 1 } else { 0 };
        out.update.push("misunderstandings", json!(count));
        let limit = u64::from(self.spec.handoff.after_misunderstandings);
        let route = if limit > 0 && count >= limit && matches!(route.as_str(), "clarify" | "out_of_scope") {
            self.request_handoff(s, &mut out, &customer_of(i), "repeated_misunderstanding", &frames, None);
            out.handler = Some("handoff".into());
            "silent".to_string()
        } else {
            route
        };
        out.update.push("route", json!(route));
        out.finish()
    }

    /// A general question (see [`crate::nlu::general_question`]) the help centre can answer.
    fn general_question(&self, text: &str) -> bool {
        crate::nlu::general_question(text)
            && self.help.search(text, 1).first().is_some_and(|p| p.score >= self.spec.faq.min_score)
    }

    fn entity_flow(&self, text: &str) -> Option<(&'static str, &'static str)> {
        let has = |flow: &str| self.spec.flows.contains_key(flow);
        if crate::nlu::extract("transfer_id", text).is_some() && has("transfer_status") {
            Some(("transfer_status", "transfer id"))
        } else if crate::nlu::extract("tx_hash", text).is_some() && has("crypto_deposit_missing") {
            Some(("crypto_deposit_missing", "transaction hash"))
        } else {
            None
        }
    }

    // ---- handlers ----

    fn event_text(s: &State) -> String {
        // The ingest step cleared `event`; the text is the last customer message.
        s.get_array("messages")
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["nlu"].as_str().or(m["content"].as_str()))
            .unwrap_or("")
            .to_string()
    }

    fn run_flow(&self, i: &NodeInput) -> NodeResult {
        let s = &i.state;
        let mut frames = stack(s);
        let mut out = Out { handler: frames.last().map(|f| f.flow.clone()), ..Out::default() };
        let Some(mut frame) = frames.pop() else {
            out.say(self.out_of_scope_text());
            return Ok(out.finish().into());
        };
        let Some(spec) = self.flow_spec(&frame.flow) else {
            return Err(NodeError::failed(format!("flow `{}` is not configured", frame.flow)));
        };
        let text = Self::event_text(s);
        let corrected = flows::corrections(spec, &mut frame, &text);
        for (slot, value) in &corrected {
            out.say(fill(
                &self.spec.replies.corrected,
                &vars(&[("slot", json!(slot.replace('_', " "))), ("value", json!(value))]),
            ));
        }
        let customer = customer_of(i);
        let mut cx = FlowCx {
            spec,
            text: &text,
            customer: &customer,
            backend: self.backend.as_ref(),
            repair: &self.repair,
            key_prefix: i.ctx.idempotency_key(0),
            conversation: i.ctx.conversation_id(),
            out: flows::FlowOut::default(),
        };
        flows::step(&mut cx, &mut frame);
        let fo = cx.out;
        out.draft.extend(fo.replies);
        for c in fo.tool_calls {
            out.update.push("tool_calls", c);
        }
        out.update.push("slots", Value::Object(frame.slots.clone()));
        let mut goto = Vec::new();
        if let Some(req) = fo.approval {
            let v = serde_json::to_value(&req).unwrap_or_default();
            frames.push(frame.clone());
            self.request_handoff(s, &mut out, &customer, "approval", &frames, Some(&v));
            out.update.push("pending_approval", v);
            frames.pop();
        }
        if fo.done {
            if let Some(prev) = frames.last()
                && let Some(line) = self.resume_line(prev)
            {
                out.say(line);
            }
        } else {
            frames.push(frame);
        }
        if let Some(reason) = fo.handoff {
            self.request_handoff(s, &mut out, &customer, &reason, &frames, None);
        }
        out.update.push("flows", json!(frames));
        goto.push(Goto::node("respond"));
        Ok(Command { update: out.finish(), goto }.into())
    }

    /// Sends the turn on to `handler` (a flow or a built-in), which writes the draft: what an LLM
    /// or remote agent does when it cannot answer.
    fn hand_on(&self, s: &State, mut update: Update, handler: &str) -> Command {
        let route = match self.spec.handler_kind(handler) {
            Some(HandlerKind::Flow) => {
                let mut frames = stack(s);
                if frames.last().is_none_or(|f| f.flow != handler) {
                    frames.push(Frame { flow: handler.to_string(), ..Frame::default() });
                }
                update.push("flows", json!(frames));
                "flow".to_string()
            }
            _ => handler.to_string(),
        };
        update.push("draft", json!([]));
        Command { update, goto: vec![Goto::node(route)] }
    }

    fn out_of_scope_text(&self) -> String {
        let caps = self.spec.replies.capabilities.iter().map(|c| format!("• {c}")).collect::<Vec<_>>().join("\n");
        fill(&self.spec.replies.out_of_scope, &vars(&[("capabilities", json!(caps))]))
    }

    fn with_resume(&self, s: &State, out: &mut Out) {
        if let Some(f) = stack(s).last()
            && let Some(line) = self.resume_line(f)
        {
            out.say(line);
        }
    }

    fn faq(&self, i: &NodeInput) -> Update {
        let text = Self::event_text(&i.state);
        let mut out = Out { handler: Some("faq".into()), ..Out::default() };
        // The intent the router named for this message, if any (not an earlier turn's).
        let routing = i.state.get("routing").cloned().unwrap_or_default();
        let this_turn = i.state.get("turn").and_then(Value::as_i64);
        let intent = routing["intent"].as_str().filter(|_| routing["turn"].as_i64() == this_turn);
        match self.help.answer(&text, intent, self.spec.faq.min_score) {
            Some(p) => {
                out.say(format!(
                    "{}\n\n{}",
                    p.text,
                    fill(&self.spec.faq.citation, &vars(&[("title", json!(p.title))]))
                ));
                out.update.push("faq", json!({"article": p.article_id, "score": p.score}));
            }
            _ => {
                out.handler = Some("out_of_scope".into());
                out.say(self.out_of_scope_text());
            }
        }
        self.with_resume(&i.state, &mut out);
        out.finish()
    }

    fn smalltalk(&self, i: &NodeInput) -> Update {
        let intent = i.state.get_str("intent").unwrap_or("greeting");
        let mut out = Out { handler: Some("smalltalk".into()), ..Out::default() };
        let text = self
            .spec
            .smalltalk
            .get(intent)
            .or_else(|| self.spec.smalltalk.get("greeting"))
            .cloned()
            .unwrap_or_default();
        out.say(text);
        self.with_resume(&i.state, &mut out);
        out.finish()
    }

    fn clarify(&self, i: &NodeInput) -> Update {
        let r = i.state.get("routing").cloned().unwrap_or_default();
        let names: Vec<String> = r["clarify"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(|x| self.spec.label(x)).collect())
            .unwrap_or_default();
        let mut out = Out { handler: Some("clarify".into()), ..Out::default() };
        let (a, b) = (names.first().cloned().unwrap_or_default(), names.get(1).cloned().unwrap_or_default());
        out.say(fill(&self.spec.replies.clarify, &vars(&[("first", json!(a)), ("second", json!(b))])));
        out.finish()
    }

    fn out_of_scope(&self) -> Update {
        let mut out = Out { handler: Some("out_of_scope".into()), ..Out::default() };
        out.say(self.out_of_scope_text());
        out.finish()
    }

    fn handoff(&self, i: &NodeInput) -> Update {
        let mut out = Out { handler: Some("handoff".into()), ..Out::default() };
        let frames = stack(&i.state);
        self.request_handoff(
            &i.state,
            &mut out,
            &customer_of(i),
            "customer_request",
            &frames,
            i.state.get("pending_approval"),
        );
        out.finish()
    }

    fn repair_node(&self, i: &NodeInput) -> Update {
        let text = Self::event_text(&i.state);
        let mut frames = stack(&i.state);
        let mut out = Out { handler: Some("repair".into()), ..Out::default() };
        match self.repair.act(&text) {
            Some(RepairAct::Restart) => {
                frames.clear();
                out.update.push("slots", Value::Null);
                out.say(self.spec.replies.restarted.clone());
            }
            _ => {
                if let Some(f) = frames.pop() {
                    let label = self.flow_spec(&f.flow).map_or(f.flow.clone(), |x| x.label.clone());
                    out.say(fill(&self.spec.replies.cancelled, &vars(&[("flow", json!(label))])));
                    if let Some(prev) = frames.last()
                        && let Some(line) = self.resume_line(prev)
                    {
                        out.say(line);
                    }
                }
            }
        }
        out.update.push("flows", json!(frames));
        out.finish()
    }

    fn guard_node(&self, i: &NodeInput) -> Update {
        let mut out = Out { handler: Some("guard".into()), ..Out::default() };
        let about_secrets = i
            .state
            .get_array("messages")
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["injection_reasons"].as_array())
            .is_some_and(|r| r.iter().any(|x| x == "secret_solicitation"));
        if about_secrets {
            // "Would support ever ask for my recovery phrase?" talks about a secret without giving
            // one: the answer is the safety rule itself, not a refusal.
            out.say(switchboard_guard::output::SAFETY_MESSAGE);
        } else {
            out.say(self.spec.replies.injection.clone());
        }
        out.finish()
    }

    fn resume(&self, i: &NodeInput) -> Update {
        let mut out = Out { handler: Some("resume".into()), ..Out::default() };
        match stack(&i.state).last().and_then(|f| self.resume_line(f)) {
            Some(line) => out.say(line),
            None => out.say(self.spec.replies.welcome_back.clone()),
        }
        out.finish()
    }

    // ---- approval ----

    fn approval(&self, i: &NodeInput) -> NodeResult {
        let s = &i.state;
        let Some(pending) = s.get("pending_approval").filter(|v| !v.is_null()).cloned() else {
            return Ok(Update::new().into());
        };
        let req: ApprovalRequest =
            serde_json::from_value(pending.clone()).map_err(|e| NodeError::failed(format!("pending approval: {e}")))?;
        let payload = json!({
            "type": "approval", "id": req.id, "tool": req.tool, "args": req.args, "flow": req.flow, "summary": req.summary,
        });
        let value = i.ctx.interrupt(payload)?;
        let customer = customer_of(i);
        let mut frames = stack(s);
        let mut out = Out::default();
        let mut h = Handoff::from_value(s.get("handoff"));
        if let Some(approve) = value.get("approve").and_then(Value::as_bool) {
            if self.spec.agents.contains_key(&req.flow) {
                return Ok(self.agent_decided(s, &req, approve, value.get("by")).into());
            }
            let mut frame = frames.pop().unwrap_or_else(|| Frame { flow: req.flow.clone(), ..Frame::default() });
            let spec = self.flow_spec(&frame.flow).ok_or_else(|| NodeError::failed("approval for an unknown flow"))?;
            let mut cx = FlowCx {
                spec,
                text: "",
                customer: &customer,
                backend: self.backend.as_ref(),
                repair: &self.repair,
                key_prefix: i.ctx.idempotency_key(0),
                conversation: i.ctx.conversation_id(),
                out: flows::FlowOut::default(),
            };
            flows::after_approval(&mut cx, &mut frame, &req, approve);
            let fo = cx.out;
            out.handler = Some(frame.flow.clone());
            out.draft.extend(fo.replies);
            for c in fo.tool_calls {
                out.update.push("tool_calls", c);
            }
            out.update.push("slots", Value::Object(frame.slots.clone()));
            if !fo.done {
                frames.push(frame);
            }
            h.approval_resolved(now_ms());
            out.update.push("handoff", h.to_value());
            out.update.push("pending_approval", Value::Null);
            out.update.push("approvals", json!({"id": req.id, "approved": approve, "by": value.get("by")}));
            out.update.push("flows", json!(frames));
            return Ok(Command { update: out.finish(), goto: vec![Goto::node("respond")] }.into());
        }
        // Anything else that arrived while the approval waits: handle it, then wait again.
        let ev = value.get("event").cloned().unwrap_or(Value::Null);
        if let Some(m) = value.get("message").filter(|m| !m.is_null()) {
            out.update.push("messages", m.clone());
        }
        match ev["kind"].as_str().unwrap_or("") {
            "claim" => {
                let agent = ev["agent"].as_str().unwrap_or("agent");
                if h.claim(agent, now_ms()).is_ok() {
                    out.say(fill(&self.spec.handoff.assigned, &vars(&[("agent", json!(agent))])));
                }
                out.update.push("handoff", h.to_value());
            }
            "agent" => {
                let _ = h.agent_message(now_ms());
                out.update.push("handoff", h.to_value());
            }
            "handback" => {
                let _ = h.hand_back(now_ms());
                out.update.push("handoff", h.to_value());
            }
            "handoff_request" => {
                self.request_handoff(s, &mut out, &customer, "customer_request", &frames, Some(&pending));
            }
            _ => {
                out.update.push("turn", json!(1));
                let text = ev["text"].as_str().unwrap_or("");
                match self.repair.act(text) {
                    Some(RepairAct::Human) => {
                        out.handler = Some("handoff".into());
                        self.request_handoff(s, &mut out, &customer, "customer_request", &frames, Some(&pending));
                    }
                    Some(RepairAct::Cancel | RepairAct::Restart) => {
                        let label = frames
                            .pop()
                            .and_then(|f| self.flow_spec(&f.flow).map(|x| x.label.clone()))
                            .unwrap_or_default();
                        out.handler = Some("repair".into());
                        out.say(fill(&self.spec.replies.cancelled, &vars(&[("flow", json!(label))])));
                        h.approval_resolved(now_ms());
                        out.update.push("handoff", h.to_value());
                        out.update.push("pending_approval", Value::Null);
                        out.update.push("approvals", json!({"id": req.id, "approved": false, "by": "customer"}));
                        out.update.push("flows", json!(frames));
                    }
                    None => {
                        let mut corrected = false;
                        if let Some(mut frame) = frames.pop() {
                            out.handler = Some(frame.flow.clone());
                            if let Some(spec) = self.flow_spec(&frame.flow) {
                                let changes = flows::corrections(spec, &mut frame, text);
                                for (slot, v) in &changes {
                                    corrected = true;
                                    out.say(fill(
                                        &self.spec.replies.corrected,
                                        &vars(&[("slot", json!(slot.replace('_', " "))), ("value", json!(v))]),
                                    ));
                                }
                                if corrected {
                                    // Ask again for the corrected arguments (a new approval id).
                                    let mut new_req = req.clone();
                                    let mut args = req.args.clone();
                                    for (k, v) in &frame.slots {
                                        if args.get(k).is_some() {
                                            args[k] = v.clone();
                                        }
                                    }
                                    new_req.args = args;
                                    new_req.summary = fill(
                                        &req.summary.replace(req.args["last4"].as_str().unwrap_or("\u{0}"), "{last4}"),
                                        &frame.slots,
                                    );
                                    new_req.id = format!(
                                        "{}_{}",
                                        req.id.split('_').take(2).collect::<Vec<_>>().join("_"),
                                        now_ms() % 100_000
                                    );
                                    out.say(fill(
                                        spec.messages.get("approval_pending").map_or("", String::as_str),
                                        &frame.slots,
                                    ));
                                    out.update
                                        .push("pending_approval", serde_json::to_value(&new_req).unwrap_or_default());
                                    out.update.push("slots", Value::Object(frame.slots.clone()));
                                }
                            }
                            frames.push(frame);
                            out.update.push("flows", json!(frames));
                        }
                        if !corrected {
                            out.say(fill(
                                "A colleague still has to approve this: {summary}. You can say \"cancel\" or ask for a human.",
                                &vars(&[("summary", json!(req.summary))]),
                            ));
                        }
                    }
                }
            }
        }
        Ok(Command { update: out.finish(), goto: vec![Goto::node("respond")] }.into())
    }

    // ---- respond ----

    fn respond(&self, i: &NodeInput) -> Update {
        let s = &i.state;
        let mut draft: Vec<String> = s
            .get_array("draft")
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        let mut u = Update::new().set("draft", json!([]));
        if s.get("streamed").is_some_and(|v| !v.is_null()) {
            u.push("streamed", Value::Null);
        }
        if let Some(n) = s.get_str("notice") {
            draft.insert(0, n.to_string());
            u.push("notice", Value::Null);
        }
        if !draft.is_empty() {
            let text = draft.join("\n\n");
            let decision = self.output.check(&text);
            let checked = decision.text;
            // A remote agent's reply streamed while it arrived: stream only what follows it.
            let streamed = s.get_str("streamed").unwrap_or("");
            let unstreamed = if streamed.is_empty() { Some(checked.as_str()) } else { checked.strip_prefix(streamed) };
            for word in unstreamed.unwrap_or("").split_inclusive(' ') {
                i.ctx.emit_token(word);
            }
            let mut msg = json!({"role": "assistant", "content": checked, "handler": s.get("handler")});
            if decision.action != switchboard_guard::output::OutputAction::Allow {
                msg["guard"] = json!(decision.events);
            }
            u.push("messages", msg);
        }
        let h = Handoff::from_value(s.get("handoff"));
        let customer = i.ctx.customer_id().or_else(|| s.get_str("customer"));
        self.desk.sync(i.ctx.conversation_id(), customer, &h);
        u
    }
}

/// Builds the engine graph over the shared assistant parts.
pub(crate) fn build(inner: Arc<Inner>) -> Result<Graph, GraphError> {
    let schema = Arc::new(schema()?);
    let mut b = GraphBuilder::new(schema);
    macro_rules! node {
        ($name:expr, |$inner:ident, $i:ident| $body:expr) => {{
            let $inner = inner.clone();
            b = b.node($name, move |$i: NodeInput| {
                let $inner = $inner.clone();
                async move { $body }
            });
        }};
    }
    node!("ingest", |x, i| Ok(x.ingest(&i).into()));
    node!("flow", |x, i| x.run_flow(&i));
    node!("faq", |x, i| Ok(x.faq_node(&i).await.into()));
    node!("agent", |x, i| x.agent_node(&i).await);
    node!("remote", |x, i| x.remote_node(&i).await);
    node!("smalltalk", |x, i| Ok(x.smalltalk(&i).into()));
    node!("clarify", |x, i| Ok(x.clarify(&i).into()));
    node!("out_of_scope", |x, _i| Ok(x.out_of_scope().into()));
    node!("handoff", |x, i| Ok(x.handoff(&i).into()));
    node!("repair", |x, i| Ok(x.repair_node(&i).into()));
    node!("guard", |x, i| Ok(x.guard_node(&i).into()));
    node!("silent", |_x, _i| Ok(Update::new().into()));
    node!("resume", |x, i| Ok(x.resume(&i).into()));
    node!("approval", |x, i| x.approval(&i));
    node!("respond", |x, i| Ok(x.respond(&i).into()));
    b = b
        .edge(START, "ingest")
        .conditional("ingest", |s: &State| s.get_str("route").unwrap_or("out_of_scope").to_string(), ROUTES)
        .may_goto("flow", &["respond"])
        .may_goto("approval", &["respond", "agent"])
        .may_goto("agent", &["respond", "flow", "faq", "smalltalk", "out_of_scope", "handoff"])
        .may_goto("remote", &["respond", "flow", "faq", "smalltalk", "out_of_scope", "handoff"])
        .conditional(
            "respond",
            |s: &State| {
                if s.get("pending_approval").is_some_and(|v| !v.is_null()) {
                    "approval".to_string()
                } else {
                    END.to_string()
                }
            },
            &["approval", END],
        );
    for r in ROUTES.iter().filter(|r| !["flow", "agent", "remote"].contains(*r)) {
        b = b.edge(r, "respond");
    }
    b.build()
}
