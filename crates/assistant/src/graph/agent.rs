//! The `agent` node (an `[agents.NAME]` answering with a vendor LLM) and the generated FAQ.
//!
//! The agent gets its instructions, the context its policy allows (`summary`: the handoff
//! summary; `slots_only`: the active flow's slots; `full_history`: every message), the best
//! help-centre passages, and its tools. Everything sent is the guard-redacted text (customer
//! messages are stored redacted; [`Models::mask`] runs over the rest). It then loops: the model
//! answers or calls tools, which run on the back end for the conversation's customer, bounded by
//! `[policies.budgets]` (tool calls per turn, LLM tokens per conversation). A tool that needs a
//! human's approval is not run: the run is saved in the state (`agent`), the approval interrupt
//! takes over, and once a human decides, the node resumes the model with the outcome.
//!
//! Any failure (every model down, a budget spent, an empty reply) hands the turn to the agent's
//! `offline` handler with a note in `routing_trace` and `llm_calls`: a turn never fails because
//! of an LLM. Each call is recorded in `llm_calls` (model, tokens, cost, latency) and the
//! conversation's totals in `llm_usage`.

use super::{Inner, Out, customer_of, stack, vars};
use crate::backend::ToolCall as BackendCall;
use crate::config::{AgentSpec, ContextPolicy};
use crate::flows::{ApprovalRequest, fill};
use crate::llm::{Answer, ModelSlot, Models, tool_definition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_engine::{Command, Goto, NodeInput, NodeResult, State, Update};
use switchboard_providers::{ChatRequest, Message, Role, ToolCall, ToolChoice, ToolResult};

/// The MCP tools an agent may call this turn (see [`super::mcp`]).
pub(super) struct McpView<'a> {
    toolbox: Option<&'a switchboard_tools::Toolbox>,
    offered: Vec<switchboard_tools::OfferedTool>,
}

impl McpView<'_> {
    fn offers(&self, tool: &str) -> Option<&switchboard_tools::OfferedTool> {
        self.offered.iter().find(|o| o.name == tool)
    }
}

/// A run waiting for a human's approval of one tool call.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PausedRun {
    agent: String,
    request: ChatRequest,
    /// Results of the other calls of the same model reply.
    results: Vec<ToolResult>,
    call: ToolCall,
    approval_id: String,
    tool_calls_used: u32,
    /// Set by the approval node: `{"approved": bool, "by": ...}`.
    #[serde(default)]
    decision: Option<Value>,
}

/// How a run ended.
enum Step {
    Final(String),
    Paused(Box<PausedRun>, ApprovalRequest),
}

/// Conversation totals in `llm_usage`.
fn usage_of(s: &State) -> Value {
    s.get("llm_usage").filter(|v| v.is_object()).cloned().unwrap_or_else(
        || json!({"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cost_usd": 0.0, "calls": 0}),
    )
}

fn add_usage(total: &mut Value, a: &Answer) {
    let u = &a.response.usage;
    let add = |v: &mut Value, k: &str, n: u64| v[k] = json!(v[k].as_u64().unwrap_or(0) + n);
    add(total, "input_tokens", u.input_tokens);
    add(total, "output_tokens", u.output_tokens);
    add(total, "total_tokens", u.total());
    add(total, "calls", 1);
    total["cost_usd"] = json!(total["cost_usd"].as_f64().unwrap_or(0.0) + a.cost_micros as f64 / 1e6);
}

/// The last customer message as stored (redacted).
pub(super) fn last_customer_text(s: &State) -> String {
    s.get_array("messages")
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Every message as the model sees it: alternating roles, starting with the customer.
fn history(models: &Models, s: &State) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    for m in s.get_array("messages") {
        let Some(text) = m["content"].as_str().filter(|t| !t.trim().is_empty()) else { continue };
        let (role, text) = match m["role"].as_str() {
            Some("user") => (Role::User, models.mask(text)),
            Some("assistant") => (Role::Assistant, models.mask(text)),
            Some("agent") => (Role::Assistant, format!("(a human colleague) {}", models.mask(text))),
            _ => continue,
        };
        if out.is_empty() && role == Role::Assistant {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => {
                let joined = format!("{}\n\n{text}", last.text());
                *last = Message { role, parts: vec![switchboard_providers::Part::Text { text: joined }] };
            }
            _ => out.push(Message { role, parts: vec![switchboard_providers::Part::Text { text }] }),
        }
    }
    if out.is_empty() {
        out.push(Message::user(models.mask(&last_customer_text(s))));
    }
    out
}

impl Inner {
    fn models(&self) -> Option<&Models> {
        self.models.as_deref()
    }

    /// Whether `agent` has an available model.
    pub(super) fn agent_online(&self, agent: &str) -> bool {
        self.models().and_then(|m| m.agent(agent)).is_some()
    }

    /// The MCP tools `agent` may call (started at the first use of any).
    async fn mcp_view(&self, agent: &str) -> McpView<'_> {
        let toolbox = match &self.mcp {
            Some(m) => Some(m.toolbox().await),
            None => None,
        };
        let offered = toolbox.map(|t| t.tools_for(agent)).unwrap_or_default();
        McpView { toolbox, offered }
    }

    /// Tools of `agent` that only run after a human's approval.
    fn needs_approval(&self, agent: &AgentSpec, mcp: &McpView<'_>, tool: &str) -> bool {
        mcp.offers(tool).is_some_and(|o| o.approval_required)
            || agent.approval_required.iter().any(|t| t.get_ref() == tool)
            || self.spec.flows.values().any(|f| f.approval_required.iter().any(|t| t.get_ref() == tool))
    }

    fn passages_block(&self, question: &str) -> (String, Vec<crate::faq::Passage>) {
        let found: Vec<_> = self
            .help
            .search(question, self.spec.faq.passages)
            .into_iter()
            .filter(|p| p.score >= self.spec.faq.min_score)
            .collect();
        let block = found
            .iter()
            .enumerate()
            .map(|(n, p)| format!("[{}] {}: {}", n + 1, p.title, p.text))
            .collect::<Vec<_>>()
            .join("\n");
        (block, found)
    }

    /// The first request of a turn: instructions, context per policy, passages, tools.
    fn agent_request(
        &self,
        models: &Models,
        s: &State,
        (conversation, customer): (&str, &str),
        (name, a): (&str, &AgentSpec),
        mcp: &McpView<'_>,
    ) -> ChatRequest {
        let question = last_customer_text(s);
        let frames = stack(s);
        let mut system = format!(
            "{}\n\nThe customer's personal data is replaced by typed placeholders in brackets (like [PHONE_1]); never ask \
             for it. Use only the help-centre passages, the context and tool results given here; if they do not \
             answer the question, say so and offer a human colleague. Reply in plain text, briefly.",
            a.instructions
        );
        let (passages, _) = self.passages_block(&question);
        if !passages.is_empty() {
            system.push_str(&format!("\n\nHelp-centre passages:\n{passages}"));
        }
        let messages = match a.context {
            ContextPolicy::FullHistory => history(models, s),
            ContextPolicy::Summary => {
                let summary = self.summary(s, customer, &format!("transferred to {name}"), &frames, None);
                system.push_str(&format!("\n\nConversation summary: {}", models.mask(&summary)));
                vec![Message::user(models.mask(&question))]
            }
            ContextPolicy::SlotsOnly => {
                let slots = frames.last().map(|f| Value::Object(f.slots.clone())).unwrap_or_else(|| json!({}));
                system.push_str(&format!("\n\nKnown details: {}", models.mask(&slots.to_string())));
                vec![Message::user(models.mask(&question))]
            }
        };
        let mut tools: Vec<_> = a.tools.iter().filter_map(|t| tool_definition(t.get_ref())).collect();
        tools.extend(mcp.offered.iter().map(|o| switchboard_providers::ToolDefinition {
            name: o.name.clone(),
            description: o.info.description.clone(),
            parameters: o.info.input_schema.clone(),
        }));
        let mut meta = switchboard_providers::RequestMetadata::default();
        meta.tags.insert("agent".into(), name.into());
        meta.conversation = Some(conversation.to_string());
        ChatRequest {
            system: Some(system),
            messages,
            tools,
            max_tokens: Some(800),
            metadata: meta,
            ..Default::default()
        }
    }

    /// Runs the model-and-tools loop until a final answer, a pause for approval, or a failure
    /// (the reason, for the fallback note).
    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        i: &NodeInput,
        models: &Models,
        chain: &[ModelSlot],
        name: &str,
        a: &AgentSpec,
        mut req: ChatRequest,
        mut used: u32,
        out: &mut Out,
        usage: &mut Value,
        mcp: &McpView<'_>,
    ) -> Result<Step, String> {
        let budgets = &self.spec.policies.budgets;
        let customer = customer_of(i);
        let turn = i.state.get("turn").and_then(Value::as_i64).unwrap_or(0);
        let mut force_final = false;
        for _ in 0..budgets.max_tool_calls_per_turn + 2 {
            let spent = usage["total_tokens"].as_u64().unwrap_or(0);
            if spent >= budgets.max_llm_tokens_per_conversation {
                return Err(format!(
                    "LLM token budget spent ({spent} of {} tokens)",
                    budgets.max_llm_tokens_per_conversation
                ));
            }
            if force_final {
                req.tool_choice = ToolChoice::None;
            }
            let answer = models
                .chat(chain, &req, i.ctx.cancellation())
                .await
                .map_err(|f| format!("no model answered: {}", f.join("; ")))?;
            add_usage(usage, &answer);
            let mut rec = answer.record(name);
            rec["turn"] = json!(turn);
            out.update.push("llm_calls", rec);
            let r = answer.response;
            if r.tool_calls.is_empty() {
                let text = r.text.trim();
                return if text.is_empty() {
                    Err("the model's reply was empty".into())
                } else {
                    Ok(Step::Final(text.into()))
                };
            }
            if force_final {
                return Err(format!(
                    "the model kept calling tools after the budget of {} tool calls per turn",
                    budgets.max_tool_calls_per_turn
                ));
            }
            req.messages.push(r.to_message());
            let mut results = Vec::new();
            let mut paused: Option<(ToolCall, ApprovalRequest)> = None;
            for call in &r.tool_calls {
                let err = |content: String| ToolResult { call_id: call.id.clone(), content, is_error: true };
                if paused.is_some() {
                    results.push(err("not run: another action is waiting for a human's approval".into()));
                } else if used >= budgets.max_tool_calls_per_turn {
                    force_final = true;
                    results.push(err(
                        "not run: the tool-call budget of this turn is spent; answer with what you have".into()
                    ));
                } else if !(a.tools.iter().any(|t| t.get_ref() == &call.name) || mcp.offers(&call.name).is_some()) {
                    results.push(err(format!("unknown tool `{}`", call.name)));
                } else if self.needs_approval(a, mcp, &call.name) {
                    used += 1;
                    let id = format!("ap_{name}_{}", i.ctx.idempotency_key(used).replace([':', '/'], "_"));
                    let summary = format!("{} {} for customer {customer} (asked by {name})", call.name, call.arguments);
                    let approval = ApprovalRequest {
                        id,
                        tool: call.name.clone(),
                        args: call.arguments.clone(),
                        flow: name.into(),
                        summary,
                    };
                    paused = Some((call.clone(), approval));
                } else {
                    used += 1;
                    let key = format!("{}:agent:{used}", i.ctx.idempotency_key(0));
                    results.push(self.agent_tool(out, (&customer, name), call, key, mcp, i).await);
                }
            }
            if let Some((call, approval)) = paused {
                let run = PausedRun {
                    agent: name.into(),
                    request: req,
                    results,
                    call,
                    approval_id: approval.id.clone(),
                    tool_calls_used: used,
                    decision: None,
                };
                return Ok(Step::Paused(Box::new(run), approval));
            }
            req.messages.push(Message::tool_results(results));
        }
        Err("too many model rounds in one turn".into())
    }

    /// Runs one tool for the customer and records it like a flow's call: an MCP tool on its
    /// server (a server that is down, dies or times out is an error result for the model, never a
    /// stuck turn), any other on the back end.
    async fn agent_tool(
        &self,
        out: &mut Out,
        (customer, agent): (&str, &str),
        call: &ToolCall,
        key: String,
        mcp: &McpView<'_>,
        i: &NodeInput,
    ) -> ToolResult {
        if let (Some(tb), Some(_)) = (mcp.toolbox, mcp.offers(&call.name)) {
            let conv = i.ctx.conversation_id();
            let res = tb.call_approved(conv, agent, &call.name, call.arguments.clone()).await;
            let mut rec = json!({"name": call.name, "args": call.arguments, "by": "agent", "via": "mcp"});
            let result = match res {
                Ok(o) => {
                    rec["result"] = json!(o.text);
                    if o.is_error {
                        rec["error"] = json!(o.text);
                    }
                    ToolResult { call_id: call.id.clone(), content: o.text, is_error: o.is_error }
                }
                Err(e) => {
                    tracing::warn!(tool = %call.name, error = %e, "MCP tool call failed");
                    rec["error"] = json!(e.to_string());
                    ToolResult { call_id: call.id.clone(), content: e.to_string(), is_error: true }
                }
            };
            out.update.push("tool_calls", rec);
            return result;
        }
        let bc = BackendCall {
            name: call.name.clone(),
            customer_id: customer.into(),
            args: call.arguments.clone(),
            idempotency_key: Some(key.clone()),
            conversation_id: Some(i.ctx.conversation_id().to_string()),
        };
        let res = self.backend.call(&bc);
        let mut rec = json!({"name": call.name, "args": call.arguments, "idempotency_key": key, "by": "agent"});
        let result = match &res {
            Ok(v) => {
                rec["result"] = v.clone();
                ToolResult { call_id: call.id.clone(), content: v.to_string(), is_error: false }
            }
            Err(e) => {
                rec["error"] = json!(e.to_string());
                ToolResult { call_id: call.id.clone(), content: e.to_string(), is_error: true }
            }
        };
        out.update.push("tool_calls", rec);
        result
    }

    /// The `agent` node.
    pub(super) async fn agent_node(&self, i: &NodeInput) -> NodeResult {
        let s = &i.state;
        let paused: Option<PausedRun> = s
            .get("agent")
            .filter(|v| !v.is_null())
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .filter(|r: &PausedRun| r.decision.is_some());
        let name = match &paused {
            Some(r) => r.agent.clone(),
            None => s.get("routing").and_then(|r| r["handler"].as_str()).unwrap_or("").to_string(),
        };
        let mut out = Out { handler: Some(name.clone()), ..Out::default() };
        out.update.push("agent", Value::Null);
        let (Some(a), Some(models)) = (self.spec.agents.get(&name), self.models()) else {
            return Ok(self.agent_fallback(s, out, &name, "the agent is not configured").into());
        };
        let Some(chain) = models.agent(&name) else {
            return Ok(self.agent_fallback(s, out, &name, "no model of the agent is available").into());
        };
        let mcp = self.mcp_view(&name).await;
        let mut usage = usage_of(s);
        let customer = customer_of(i);
        let (req, used) = match paused {
            Some(mut run) => {
                let decision = run.decision.take().unwrap_or_default();
                let result = if decision["approved"].as_bool() == Some(true) {
                    let key = format!("{}:{}", i.ctx.conversation_id(), run.approval_id);
                    self.agent_tool(&mut out, (&customer, &name), &run.call, key, &mcp, i).await
                } else {
                    ToolResult {
                        call_id: run.call.id.clone(),
                        content: "not run: a human colleague did not approve this action".into(),
                        is_error: true,
                    }
                };
                let mut results = run.results;
                results.push(result);
                let mut req = run.request;
                req.messages.push(Message::tool_results(results));
                (req, run.tool_calls_used)
            }
            None => (self.agent_request(models, s, (i.ctx.conversation_id(), &customer), (&name, a), &mcp), 0),
        };
        let step = self.drive(i, models, chain, &name, a, req, used, &mut out, &mut usage, &mcp).await;
        out.update.push("llm_usage", usage);
        match step {
            Ok(Step::Final(text)) => {
                out.say(text);
                self.with_resume(s, &mut out);
            }
            Ok(Step::Paused(run, approval)) => {
                let v = serde_json::to_value(&approval).unwrap_or_default();
                let frames = stack(s);
                self.request_handoff(s, &mut out, &customer, "approval", &frames, Some(&v));
                out.say(fill(
                    "I've asked a colleague to approve this: {summary}. I'll confirm here once it's decided.",
                    &vars(&[("summary", json!(format!("{} {}", approval.tool, approval.args)))]),
                ));
                out.update.push("pending_approval", v);
                out.update.push("agent", serde_json::to_value(&*run).unwrap_or_default());
            }
            Err(reason) => return Ok(self.agent_fallback(s, out, &name, &reason).into()),
        }
        Ok(Command { update: out.finish(), goto: vec![Goto::node("respond")] }.into())
    }

    /// Hands the turn to the agent's offline handler, noting why.
    fn agent_fallback(&self, s: &State, mut out: Out, name: &str, reason: &str) -> Command {
        let offline = self.spec.agents.get(name).map_or("out_of_scope".to_string(), |a| a.offline.get_ref().clone());
        tracing::warn!(agent = name, offline = %offline, reason, "LLM agent falls back to its offline handler");
        let note = json!({
            "outcome": "fallback", "handler": offline, "agent": name, "reasons": [reason],
            "turn": s.get("turn").and_then(Value::as_i64).unwrap_or(0),
        });
        out.update.push("routing_trace", note.clone());
        out.update.push("llm_calls", note);
        self.hand_on(s, out.update, &offline)
    }

    /// The approval node's hook: a human decided on an agent's tool call; the agent resumes.
    pub(super) fn agent_decided(&self, s: &State, req: &ApprovalRequest, approve: bool, by: Option<&Value>) -> Command {
        let mut h = crate::handoff::Handoff::from_value(s.get("handoff"));
        h.approval_resolved(super::now_ms());
        let mut run = s.get("agent").cloned().unwrap_or(Value::Null);
        if run.is_object() {
            run["decision"] = json!({"approved": approve, "by": by});
        }
        let update = Update::new()
            .set("handoff", h.to_value())
            .set("pending_approval", Value::Null)
            .set("approvals", json!({"id": req.id, "approved": approve, "by": by}))
            .set("agent", run);
        Command { update, goto: vec![Goto::node("agent")] }
    }

    /// The `faq` node: a generated answer grounded in the retrieved passages when a model is
    /// available, else (or on any failure) the extractive answer.
    pub(super) async fn faq_node(&self, i: &NodeInput) -> Update {
        let s = &i.state;
        let Some((models, chain)) = self.models().and_then(|m| m.faq().map(|c| (m, c))) else {
            return self.faq(i);
        };
        let question = Self::event_text(s);
        let (block, passages) = self.passages_block(&question);
        let mut usage = usage_of(s);
        let budget = self.spec.policies.budgets.max_llm_tokens_per_conversation;
        if passages.is_empty() {
            return self.faq(i);
        }
        let failed = |reason: String| {
            let mut u = self.faq(i);
            u.push(
                "llm_calls",
                json!({"outcome": "fallback", "handler": "faq", "mode": "extractive", "reasons": [reason]}),
            );
            u
        };
        if usage["total_tokens"].as_u64().unwrap_or(0) >= budget {
            return failed(format!("LLM token budget spent ({budget} tokens)"));
        }
        let system = "You answer customers of a crypto exchange using ONLY the numbered help-centre passages \
                      below. Do not add facts that are not in them. If they do not answer the question, say you \
                      don't know and offer a human colleague. Mark each passage you used with its number in \
                      square brackets, like [1]. Reply in plain text, briefly.";
        let req = ChatRequest {
            system: Some(format!("{system}\n\nPassages:\n{block}")),
            messages: vec![Message::user(models.mask(&last_customer_text(s)))],
            max_tokens: Some(600),
            metadata: switchboard_providers::RequestMetadata {
                conversation: Some(i.ctx.conversation_id().to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = match models.chat(chain, &req, i.ctx.cancellation()).await {
            Ok(a) => a,
            Err(f) => return failed(format!("no model answered: {}", f.join("; "))),
        };
        add_usage(&mut usage, &answer);
        let mut rec = answer.record("faq");
        rec["turn"] = json!(s.get("turn").and_then(Value::as_i64).unwrap_or(0));
        let (text, cited) = strip_citations(answer.response.text.trim(), passages.len());
        if text.is_empty() {
            let mut u = failed("the model's reply was empty".into());
            u.push("llm_calls", rec);
            u.push("llm_usage", usage);
            return u;
        }
        let cited = if cited.is_empty() { vec![0] } else { cited };
        let mut titles: Vec<&str> = Vec::new();
        for n in &cited {
            if !titles.contains(&passages[*n].title.as_str()) {
                titles.push(&passages[*n].title);
            }
        }
        let citation =
            titles.iter().map(|t| fill(&self.spec.faq.citation, &vars(&[("title", json!(t))]))).collect::<Vec<_>>();
        let mut out = Out { handler: Some("faq".into()), ..Out::default() };
        out.say(format!("{text}\n\n{}", citation.join(" ")));
        let top = &passages[cited[0]];
        out.update.push(
            "faq",
            json!({"article": top.article_id, "score": top.score, "generated": true, "model": answer.model,
                   "articles": cited.iter().map(|n| passages[*n].article_id.clone()).collect::<Vec<_>>()}),
        );
        out.update.push("llm_calls", rec);
        out.update.push("llm_usage", usage);
        self.with_resume(s, &mut out);
        out.finish()
    }
}

/// Removes `[n]` markers (1-based, up to `n_passages`) and returns the 0-based passages cited.
fn strip_citations(text: &str, n_passages: usize) -> (String, Vec<usize>) {
    let mut cited = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find(']');
        let nums = end.map(|e| &after[..e]).filter(|inner| {
            !inner.is_empty()
                && inner.split(',').all(|x| x.trim().parse::<usize>().is_ok_and(|n| (1..=n_passages).contains(&n)))
        });
        match (nums, end) {
            (Some(inner), Some(e)) => {
                for x in inner.split(',') {
                    let n = x.trim().parse::<usize>().unwrap_or(1) - 1;
                    if !cited.contains(&n) {
                        cited.push(n);
                    }
                }
                while out.ends_with(' ') {
                    out.pop();
                }
                rest = &after[e + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out.trim().to_string(), cited)
}

#[cfg(test)]
mod tests {
    use super::strip_citations;

    #[test]
    fn citation_markers_are_parsed_and_removed() {
        let (t, c) = strip_citations("Fees are 1% [2]. Limits apply [1, 2].", 3);
        assert_eq!(t, "Fees are 1%. Limits apply.");
        assert_eq!(c, vec![1, 0]);
        let (t, c) = strip_citations("Keep [CARD_1] and [9] as they are", 3);
        assert_eq!(t, "Keep [CARD_1] and [9] as they are");
        assert!(c.is_empty());
    }
}
