//! The five flows: deterministic, slot-filling, with validation, confirmations, tools (some of
//! which need a human's approval) and repair (corrections of slots already given).
//!
//! A flow is a state machine over a [`Frame`] (its slots, what it is waiting for, scratch data)
//! kept on the conversation's flow stack. Its texts come from the config (`[flows.NAME.messages]`,
//! checked at load by [`required_messages`]); its logic is here.

use crate::backend::{ToolBackend, ToolCall};
use crate::config::FlowSpec;
use crate::nlu::{Repair, extract};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One flow on the stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Flow name.
    pub flow: String,
    /// Filled slots.
    #[serde(default)]
    pub slots: Map<String, Value>,
    /// `slot:<name>`, `confirm:<what>`, `approval`, or nothing.
    #[serde(default)]
    pub awaiting: Option<String>,
    /// The intent that started it.
    #[serde(default)]
    pub intent: Option<String>,
}

/// A tool call that must be approved by a human before it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Approval id (stable for the same flow, tool and arguments).
    pub id: String,
    /// Tool.
    pub tool: String,
    /// Arguments.
    pub args: Value,
    /// The flow that asked.
    pub flow: String,
    /// Why, for the approver.
    pub summary: String,
}

/// What a flow step produced.
#[derive(Debug, Default)]
pub struct FlowOut {
    /// Replies, in order.
    pub replies: Vec<String>,
    /// Tool calls made (`{name, args, result|error, idempotency_key}`).
    pub tool_calls: Vec<Value>,
    /// Ask a human to approve this call.
    pub approval: Option<ApprovalRequest>,
    /// Hand the conversation to a human for this reason.
    pub handoff: Option<String>,
    /// The flow is finished (pop it).
    pub done: bool,
}

/// Everything a flow step sees.
pub struct FlowCx<'a> {
    /// The flow's config.
    pub spec: &'a FlowSpec,
    /// The customer's (redacted) message of this turn, if any.
    pub text: &'a str,
    /// The customer.
    pub customer: &'a str,
    /// The back end.
    pub backend: &'a dyn ToolBackend,
    /// Repair patterns (yes / no).
    pub repair: &'a Repair,
    /// Idempotency-key prefix of this task (`ctx.idempotency_key(0)`); calls append their number.
    pub key_prefix: String,
    /// The conversation.
    pub conversation: &'a str,
    /// Output.
    pub out: FlowOut,
}

/// Message keys each flow needs in its config.
pub fn required_messages(flow: &str) -> &'static [&'static str] {
    match flow {
        "card_freeze" => &[
            "unknown_card",
            "already_frozen",
            "approval_pending",
            "frozen",
            "offer_replacement",
            "replacement_ordered",
            "no_replacement",
            "denied",
        ],
        "transfer_status" => &["recent", "pending", "completed", "failed", "not_found"],
        "crypto_deposit_missing" => {
            &["confirming", "credited", "wrong_network", "recovery_ticket", "no_ticket", "not_found"]
        }
        "account_access" => &["ticket_opened"],
        "fraud_report" => &["reported"],
        _ => &[],
    }
}

/// Replaces `{name}` with values from `vars` (strings as is, other values as JSON).
pub fn fill(template: &str, vars: &Map<String, Value>) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out = out.replace(&format!("{{{k}}}"), &s);
    }
    out
}

impl FlowCx<'_> {
    fn msg(&self, key: &str, vars: &Map<String, Value>) -> String {
        fill(self.spec.messages.get(key).map_or(key, String::as_str), vars)
    }

    fn say(&mut self, key: &str, vars: &Map<String, Value>) {
        let m = self.msg(key, vars);
        self.out.replies.push(m);
    }

    /// Runs a tool now and records the call.
    pub fn tool(&mut self, name: &str, args: Value) -> Result<Value, String> {
        let key = format!("{}:{}", self.key_prefix, self.out.tool_calls.len());
        let call = ToolCall {
            name: name.into(),
            customer_id: self.customer.into(),
            args: args.clone(),
            idempotency_key: Some(key.clone()),
            conversation_id: Some(self.conversation.to_string()),
        };
        // One `execute_tool` span per call: tool metrics and traces come from it. Arguments and
        // results are content: the telemetry layer drops them unless capture is on, then redacts.
        let span = switchboard_telemetry::spans::tool(name, &key);
        let res = span.in_scope(|| self.backend.call(&call));
        span.record("gen_ai.tool.call.arguments", args.to_string().as_str());
        match &res {
            Ok(v) => {
                span.record("gen_ai.tool.call.result", v.to_string().as_str());
            }
            Err(e) => switchboard_telemetry::spans::fail(&span, &e.to_string()),
        }
        drop(span);
        let mut rec = json!({"name": name, "args": args, "idempotency_key": key});
        match &res {
            Ok(v) => rec["result"] = v.clone(),
            Err(e) => rec["error"] = json!(e.to_string()),
        }
        self.out.tool_calls.push(rec);
        res.map_err(|e| e.to_string())
    }

    /// Fills empty slots from the text; returns the first missing required slot, after asking for it.
    fn collect(&mut self, frame: &mut Frame) -> bool {
        for s in &self.spec.slots {
            if !frame.slots.contains_key(&s.name)
                && let Some(v) = extract(s.extractor.get_ref(), self.text)
            {
                frame.slots.insert(s.name.clone(), json!(v));
            }
        }
        // Bitcoin only travels on its own network.
        if frame.slots.get("asset").and_then(Value::as_str) == Some("BTC")
            && !frame.slots.contains_key("network")
            && self.spec.slots.iter().any(|s| s.name == "network")
        {
            frame.slots.insert("network".into(), json!("bitcoin"));
        }
        let asked_before = frame.awaiting.clone();
        for s in &self.spec.slots {
            if !s.optional && !frame.slots.contains_key(&s.name) {
                let awaiting = format!("slot:{}", s.name);
                // Asked already and the answer did not fit: say so before asking again.
                if asked_before.as_deref() == Some(awaiting.as_str()) && !self.text.is_empty() {
                    self.out.replies.push(s.invalid.clone());
                }
                self.out.replies.push(s.prompt.clone());
                frame.awaiting = Some(awaiting);
                return false;
            }
        }
        frame.awaiting = None;
        true
    }

    fn slot(frame: &Frame, name: &str) -> String {
        frame.slots.get(name).and_then(Value::as_str).unwrap_or_default().to_string()
    }

    fn approval(&self, frame: &Frame, tool: &str, args: Value, summary: String) -> ApprovalRequest {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("{}|{}|{tool}|{args}|{}", frame.flow, self.customer, self.key_prefix));
        let id: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
        ApprovalRequest { id: format!("apr_{id}"), tool: tool.into(), args, flow: frame.flow.clone(), summary }
    }

    fn needs_approval(&self, tool: &str) -> bool {
        self.spec.approval_required.iter().any(|t| t.get_ref() == tool)
    }
}

/// Applies a correction: slots of the flow whose extractor finds a different value in the text.
/// Returns the corrected `(slot, value)` pairs.
pub fn corrections(spec: &FlowSpec, frame: &mut Frame, text: &str) -> Vec<(String, String)> {
    let mut changed = Vec::new();
    for s in &spec.slots {
        if s.extractor.get_ref() == "text" {
            continue;
        }
        if let (Some(old), Some(new)) =
            (frame.slots.get(&s.name).and_then(Value::as_str), extract(s.extractor.get_ref(), text))
            && old != new
        {
            frame.slots.insert(s.name.clone(), json!(new));
            changed.push((s.name.clone(), new));
        }
    }
    changed
}

/// Whether the text gives the flow something to work with (a slot value, or a yes / no to the
/// question it asked).
pub fn consumes(spec: &FlowSpec, frame: &Frame, text: &str, repair: &Repair) -> bool {
    match frame.awaiting.as_deref() {
        Some(a) if a.starts_with("confirm:") => repair.yes_no(text).is_some(),
        // An attempt at the slot asked for counts even when it is malformed: the flow says so.
        Some("slot:tx_hash") if text.contains("0x") || text.to_lowercase().contains("hash") => true,
        Some("slot:last4") if text.chars().any(|c| c.is_ascii_digit()) => true,
        _ => {
            spec.slots.iter().any(|s| s.extractor.get_ref() != "text" && extract(s.extractor.get_ref(), text).is_some())
                || frame.awaiting.as_deref().is_some_and(|a| {
                    spec.slots.iter().any(|s| s.extractor.get_ref() == "text" && a == format!("slot:{}", s.name))
                })
        }
    }
}

/// One step of a flow on the customer's text (`text` empty: the flow was just started or resumed
/// and should ask its next question).
pub fn step(cx: &mut FlowCx<'_>, frame: &mut Frame) {
    match frame.flow.as_str() {
        "card_freeze" => card_freeze(cx, frame),
        "transfer_status" => transfer_status(cx, frame),
        "crypto_deposit_missing" => crypto_deposit(cx, frame),
        "account_access" => account_access(cx, frame),
        "fraud_report" => fraud_report(cx, frame),
        other => {
            cx.out.replies.push(format!("(no implementation for flow {other})"));
            cx.out.done = true;
        }
    }
}

/// After a human approved or denied a call the flow asked for.
pub fn after_approval(cx: &mut FlowCx<'_>, frame: &mut Frame, req: &ApprovalRequest, approved: bool) {
    let mut vars = frame.slots.clone();
    if !approved {
        cx.say("denied", &vars);
        cx.out.done = true;
        return;
    }
    match cx.tool(&req.tool, req.args.clone()) {
        Ok(result) => {
            if let Value::Object(m) = result {
                vars.extend(m);
            }
            if frame.flow == "card_freeze" {
                cx.say("frozen", &vars);
                cx.say("offer_replacement", &vars);
                frame.awaiting = Some("confirm:replacement".into());
            } else {
                cx.out.done = true;
            }
        }
        Err(e) => {
            cx.out.replies.push(format!("I could not complete that: {e}."));
            cx.out.done = true;
        }
    }
}

fn card_freeze(cx: &mut FlowCx<'_>, frame: &mut Frame) {
    if frame.awaiting.as_deref() == Some("confirm:replacement") {
        let vars = frame.slots.clone();
        match cx.repair.yes_no(cx.text) {
            Some(true) => {
                let last4 = FlowCx::slot(frame, "last4");
                match cx.tool("order_replacement_card", json!({"last4": last4})) {
                    Ok(Value::Object(r)) => {
                        let mut v = vars;
                        v.extend(r);
                        cx.say("replacement_ordered", &v);
                    }
                    Ok(_) => {}
                    Err(e) => cx.out.replies.push(format!("I could not order a replacement: {e}.")),
                }
                cx.out.done = true;
            }
            Some(false) => {
                cx.say("no_replacement", &vars);
                cx.out.done = true;
            }
            None => cx.say("offer_replacement", &vars),
        }
        return;
    }
    if !cx.collect(frame) {
        return;
    }
    let last4 = FlowCx::slot(frame, "last4");
    let status = match cx.tool("get_card_status", json!({"last4": last4})) {
        Ok(s) => s,
        Err(_) => {
            let cards = match cx.tool("get_card_status", json!({})) {
                Ok(v) => v["cards"]
                    .as_array()
                    .map(|cs| cs.iter().filter_map(|c| c["last4"].as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                Err(_) => String::new(),
            };
            let mut vars = frame.slots.clone();
            vars.insert("cards".into(), json!(cards));
            cx.say("unknown_card", &vars);
            frame.slots.remove("last4");
            frame.awaiting = Some("slot:last4".into());
            return;
        }
    };
    let vars = frame.slots.clone();
    if status["status"] == "frozen" {
        cx.say("already_frozen", &vars);
        cx.say("offer_replacement", &vars);
        frame.awaiting = Some("confirm:replacement".into());
        return;
    }
    let args = json!({"last4": last4});
    if cx.needs_approval("freeze_card") {
        let req = cx.approval(
            frame,
            "freeze_card",
            args,
            format!("Freeze the card ending {last4} (customer reports it lost or stolen)"),
        );
        cx.say("approval_pending", &vars);
        frame.awaiting = Some("approval".into());
        cx.out.approval = Some(req);
    } else {
        let req = ApprovalRequest {
            id: String::new(),
            tool: "freeze_card".into(),
            args,
            flow: frame.flow.clone(),
            summary: String::new(),
        };
        after_approval(cx, frame, &req, true);
    }
}

fn transfer_vars(frame: &Frame, t: &Value) -> Map<String, Value> {
    let mut vars = frame.slots.clone();
    if let Value::Object(m) = t {
        vars.extend(m.clone());
    }
    let created = t["created_at_ms"].as_i64().unwrap_or(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let days = (now - created) / (24 * 3600 * 1000);
    let when = match days {
        0 => "today".to_string(),
        1 => "yesterday".to_string(),
        n => format!("{n} days ago"),
    };
    vars.insert("created".into(), json!(when));
    vars
}

fn transfer_status(cx: &mut FlowCx<'_>, frame: &mut Frame) {
    if let Some(id) = extract("transfer_id", cx.text) {
        frame.slots.insert("transfer_id".into(), json!(id));
    }
    let Some(id) = frame.slots.get("transfer_id").and_then(Value::as_str).map(str::to_string) else {
        if frame.awaiting.as_deref() == Some("slot:transfer_id") {
            if let Some(s) = cx.spec.slots.iter().find(|s| s.name == "transfer_id") {
                cx.out.replies.push(s.invalid.clone());
            }
            cx.out.done = true;
            return;
        }
        match cx.tool("list_recent_transfers", json!({"limit": 5})) {
            Ok(v) => {
                let list = v["transfers"]
                    .as_array()
                    .map(|ts| {
                        ts.iter()
                            .map(|t| {
                                format!(
                                    "{}: {} {} to {}, {}",
                                    t["transfer_id"].as_str().unwrap_or("?"),
                                    t["amount"].as_str().unwrap_or("?"),
                                    t["currency"].as_str().unwrap_or(""),
                                    t["counterparty"].as_str().unwrap_or("?"),
                                    t["status"].as_str().unwrap_or("?")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                let mut vars = frame.slots.clone();
                vars.insert("transfers".into(), json!(list));
                cx.say("recent", &vars);
                frame.awaiting = Some("slot:transfer_id".into());
            }
            Err(e) => {
                cx.out.replies.push(format!("I could not list your transfers: {e}."));
                cx.out.done = true;
            }
        }
        return;
    };
    match cx.tool("get_transfer_status", json!({"transfer_id": id})) {
        Ok(t) => {
            let vars = transfer_vars(frame, &t);
            let key = match t["status"].as_str() {
                Some("pending") => "pending",
                Some("completed") => "completed",
                _ => "failed",
            };
            cx.say(key, &vars);
        }
        Err(_) => cx.say("not_found", &frame.slots.clone()),
    }
    frame.awaiting = None;
    cx.out.done = true;
}

fn crypto_deposit(cx: &mut FlowCx<'_>, frame: &mut Frame) {
    if frame.awaiting.as_deref() == Some("confirm:recovery") {
        let vars = frame.slots.clone();
        match cx.repair.yes_no(cx.text) {
            Some(true) => {
                let summary = format!(
                    "Recover {} sent on {} to an address on {} (tx {})",
                    FlowCx::slot(frame, "asset"),
                    FlowCx::slot(frame, "sent_network"),
                    FlowCx::slot(frame, "address_network"),
                    FlowCx::slot(frame, "tx_hash")
                );
                match cx.tool(
                    "create_ticket",
                    json!({"category": "deposit_recovery", "summary": summary, "priority": "normal"}),
                ) {
                    Ok(Value::Object(r)) => {
                        let mut v = vars;
                        v.extend(r);
                        cx.say("recovery_ticket", &v);
                    }
                    Ok(_) => {}
                    Err(e) => cx.out.replies.push(format!("I could not open a ticket: {e}.")),
                }
                cx.out.done = true;
            }
            Some(false) => {
                cx.say("no_ticket", &vars);
                cx.out.done = true;
            }
            None => cx.say("wrong_network", &vars),
        }
        return;
    }
    if !cx.collect(frame) {
        return;
    }
    let hash = FlowCx::slot(frame, "tx_hash");
    match cx.tool("get_deposit_status", json!({"tx_hash": hash})) {
        Ok(d) => {
            let mut vars = frame.slots.clone();
            if let Value::Object(m) = &d {
                vars.extend(m.clone());
            }
            vars.insert("sent_network".into(), d["network"].clone());
            vars.insert("fee".into(), d["recovery"]["fee"].clone());
            vars.insert("days".into(), d["recovery"]["business_days"].clone());
            let remaining = d["required_confirmations"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(d["confirmations"].as_u64().unwrap_or(0));
            vars.insert("remaining".into(), json!(remaining));
            match d["status"].as_str() {
                Some("confirming") => {
                    cx.say("confirming", &vars);
                    cx.out.done = true;
                }
                Some("wrong_network") => {
                    frame.slots.insert("sent_network".into(), d["network"].clone());
                    frame.slots.insert("address_network".into(), d["address_network"].clone());
                    cx.say("wrong_network", &vars);
                    frame.awaiting = Some("confirm:recovery".into());
                }
                _ => {
                    cx.say("credited", &vars);
                    cx.out.done = true;
                }
            }
        }
        Err(_) => {
            cx.say("not_found", &frame.slots.clone());
            cx.out.done = true;
        }
    }
}

fn account_access(cx: &mut FlowCx<'_>, frame: &mut Frame) {
    let lower = cx.text.to_lowercase();
    let kind = match frame.intent.as_deref() {
        Some("two_factor_reset") => "two_factor_reset",
        Some("account_locked") => "account_locked",
        _ if ["2fa", "authenticator", "two-factor", "two factor", "code"].iter().any(|w| lower.contains(w)) => {
            "two_factor_reset"
        }
        _ => "account_locked",
    };
    let (summary, priority) = match kind {
        "two_factor_reset" => ("Customer asks for a 2FA reset (identity check by secure link)", "normal"),
        _ => ("Customer cannot access a locked account (identity check by secure link)", "high"),
    };
    frame.slots.insert("issue".into(), json!(kind));
    match cx.tool("create_ticket", json!({"category": "account_access", "summary": summary, "priority": priority})) {
        Ok(Value::Object(r)) => {
            let mut vars = frame.slots.clone();
            vars.extend(r);
            cx.say("ticket_opened", &vars);
        }
        Ok(_) => {}
        Err(e) => cx.out.replies.push(format!("I could not open a ticket: {e}.")),
    }
    cx.out.done = true;
}

fn fraud_report(cx: &mut FlowCx<'_>, frame: &mut Frame) {
    if !frame.slots.contains_key("details") && cx.text.trim().len() >= 3 {
        frame.slots.insert("details".into(), json!(cx.text.trim()));
    }
    let details = FlowCx::slot(frame, "details");
    let summary = format!("Fraud report: {}", details.chars().take(300).collect::<String>());
    match cx.tool("create_ticket", json!({"category": "fraud", "summary": summary, "priority": "urgent"})) {
        Ok(Value::Object(r)) => {
            let mut vars = frame.slots.clone();
            vars.extend(r);
            cx.say("reported", &vars);
        }
        Ok(_) => {}
        Err(e) => cx.out.replies.push(format!("I could not open a ticket: {e}.")),
    }
    cx.out.handoff = Some("fraud_report".into());
    cx.out.done = true;
}
