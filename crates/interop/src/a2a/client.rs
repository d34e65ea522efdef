//! The "remote agent" handler: a graph node that delegates the turn to an external A2A agent (one
//! built with Google ADK, LangGraph, ... and served over A2A).
//!
//! * What is shared is the assistant's [`ContextPolicy`]: a summary, the slots, or the full
//!   history, every text masked by the guard's detectors first (`[CARD]`, `[EMAIL]`, ...).
//! * The remote's reply streams back as the engine's `token` events, and ends up as the assistant's
//!   message in `messages`.
//! * The remote's `input-required` becomes an interrupt of our run (payload `reason:
//!   "remote_input_required"`, the remote's `question`); the value it is resumed with goes back to
//!   the remote task as the next message, for as many rounds as the remote asks.
//! * Every call has a total timeout and an idle timeout between stream events; failures that say
//!   the remote is unhealthy (timeouts, transport errors, 5xx, garbage) count against a circuit
//!   breaker (the providers' [`BreakerRegistry`]); while it is open, or when a call fails, the
//!   turn goes to the fallback node, or, without one, to a fixed apology.
//!
//! The dialect (v1.0 or v0.3) and the JSON-RPC endpoint come from the agent's card, fetched once.

use super::wire::{self, Dialect, TaskState};
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_engine::{Node, NodeContext, NodeError, NodeInput, NodeResult, State, Update};
use switchboard_guard::Detector;
use switchboard_guard::redact;
use switchboard_providers::ModelId;
use switchboard_providers::resilience::BreakerRegistry;
use switchboard_providers::sse::SseParser;
use tokio::sync::OnceCell;

/// Default total time of one delegated call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest silence between two stream events.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest reply accepted from a remote agent, in bytes.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Messages shared by the summary policy when the assistant keeps no `summary` field.
const RECENT_MESSAGES: usize = 6;

/// What the remote agent is told besides the customer's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextPolicy {
    /// The assistant's `summary` field, or, when it keeps none, the last few messages.
    Summary,
    /// The assistant's `slots` field (what the flows collected).
    Slots,
    /// Every message of the conversation.
    Full,
    /// Nothing but the message.
    None,
}

/// A remote agent's settings.
#[derive(Debug, Clone)]
pub struct RemoteAgentConfig {
    /// Our name for it (breaker key, logs, the `agent` of its messages).
    pub name: String,
    /// Its base URL: the card is at `{url}/.well-known/agent-card.json`.
    pub url: String,
    /// A bearer token for it.
    pub token: Option<switchboard_guard::Secret<String>>,
    /// What to share.
    pub context: ContextPolicy,
    /// Total time of one call.
    pub timeout: Duration,
    /// Longest silence between stream events.
    pub idle_timeout: Duration,
    /// Said to the customer when the agent is unavailable and no fallback node is set.
    pub unavailable_message: String,
    /// Emit the reply's text as token events while it arrives. Off when the caller must check the
    /// whole reply (the output guard) before the customer sees any of it.
    pub stream_tokens: bool,
}

impl RemoteAgentConfig {
    /// Settings with defaults: summary policy, default timeouts.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            unavailable_message: format!(
                "Sorry, our {name} specialist is not available right now. Please try again in a few minutes."
            ),
            name,
            url: url.into().trim_end_matches('/').to_string(),
            token: None,
            context: ContextPolicy::Summary,
            timeout: DEFAULT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            stream_tokens: true,
        }
    }
}

/// Why a delegated call failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The circuit breaker is open.
    #[error("circuit open for remote agent {0}")]
    CircuitOpen(String),
    /// No answer in time.
    #[error("remote agent timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("transport: {0}")]
    Transport(String),
    /// An HTTP error status.
    #[error("remote agent answered HTTP {0}")]
    Status(u16),
    /// A JSON-RPC error from the agent.
    #[error("remote agent error {code}: {message}")]
    Rpc {
        /// Its code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// Something that is not A2A.
    #[error("invalid response from remote agent: {0}")]
    Garbage(String),
    /// The remote task failed, was rejected or cancelled.
    #[error("remote task ended {0}")]
    TaskEnded(&'static str),
}

impl RemoteError {
    /// Whether this says the agent is unhealthy (counts against the breaker).
    pub fn is_health_failure(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transport(_) | Self::Garbage(_) => true,
            Self::Status(s) => *s >= 500 || *s == 429,
            _ => false,
        }
    }
}

/// A remote task that asked for input: the customer's next message continues it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingTask {
    /// The remote task's id.
    pub task_id: String,
    /// Its context id.
    pub context_id: String,
}

/// What a delegated turn produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Delegated {
    /// The remote's reply (already streamed as tokens).
    Reply(String),
    /// The remote asks the customer something before it can go on.
    InputRequired {
        /// What it asks.
        question: String,
        /// Text it streamed before asking (usually empty; the question itself when it sent the
        /// question as an artifact).
        partial: String,
        /// The task to continue (absent when the remote named none).
        task: Option<PendingTask>,
    },
}

/// The result of one exchange with the remote agent.
#[derive(Debug, Clone, PartialEq)]
struct Exchange {
    state: TaskState,
    reply: String,
    question: Option<String>,
    task_id: Option<String>,
    context_id: Option<String>,
}

/// The JSON-RPC endpoint and dialect of an agent, from its card.
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    dialect: Dialect,
}

/// A remote A2A agent as a node.
pub struct RemoteAgent {
    cfg: RemoteAgentConfig,
    http: reqwest::Client,
    breaker: BreakerRegistry,
    breaker_id: ModelId,
    detector: Detector,
    fallback: Option<Arc<dyn Node>>,
    endpoint: OnceCell<Endpoint>,
    /// Remote task waiting for input, by our conversation (its id comes back on resume).
    waiting: Mutex<HashMap<String, PendingTask>>,
}

impl std::fmt::Debug for RemoteAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAgent").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl RemoteAgent {
    /// A remote agent with its own breaker state in `breaker` (shared by every node that
    /// delegates to the same agent name).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(cfg: RemoteAgentConfig, breaker: BreakerRegistry) -> Result<Self, RemoteError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RemoteError::Transport(e.to_string()))?;
        Ok(Self {
            breaker_id: ModelId::new("a2a", cfg.name.clone()),
            cfg,
            http,
            breaker,
            detector: Detector::default(),
            fallback: None,
            endpoint: OnceCell::new(),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// The node the turn goes to when the agent is unavailable.
    pub fn with_fallback(mut self, node: impl Node + 'static) -> Self {
        self.fallback = Some(Arc::new(node));
        self
    }

    /// This agent as a graph node.
    pub fn into_node(self) -> impl Node + 'static {
        let me = Arc::new(self);
        move |input: NodeInput| {
            let me = me.clone();
            async move { me.run(input).await }
        }
    }

    fn mask(&self, text: &str) -> String {
        redact::mask(text, &self.detector.detect(text))
    }

    fn mask_json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(a) => a.iter().map(|x| self.mask_json(x)).collect(),
            Value::Object(o) => {
                o.iter().map(|(k, x)| (k.clone(), self.mask_json(x))).collect::<serde_json::Map<_, _>>().into()
            }
            other => other.clone(),
        }
    }

    /// The context the policy shares, masked.
    fn context(&self, state: &State) -> Option<Value> {
        let line = |m: &Value| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            crate::turn::message_text(m).map(|t| json!({"role": role, "text": self.mask(&t)}))
        };
        let messages = state.get_array("messages");
        // The last message is the one we send as the message itself.
        let earlier = &messages[..messages.len().saturating_sub(1)];
        match self.cfg.context {
            ContextPolicy::None => None,
            ContextPolicy::Full => Some(json!({"history": earlier.iter().filter_map(line).collect::<Vec<_>>()})),
            ContextPolicy::Slots => Some(json!({"slots": self.mask_json(state.get("slots").unwrap_or(&json!({})))})),
            ContextPolicy::Summary => match state.get_str("summary") {
                Some(s) => Some(json!({"summary": self.mask(s)})),
                None => {
                    let recent = &earlier[earlier.len().saturating_sub(RECENT_MESSAGES)..];
                    Some(json!({"recent": recent.iter().filter_map(line).collect::<Vec<_>>()}))
                }
            },
        }
    }

    async fn endpoint(&self) -> Result<Endpoint, RemoteError> {
        self.endpoint.get_or_try_init(|| self.discover()).await.cloned()
    }

    /// Reads the agent's card and picks its JSON-RPC interface.
    async fn discover(&self) -> Result<Endpoint, RemoteError> {
        let url = format!("{}/.well-known/agent-card.json", self.cfg.url);
        let resp = tokio::time::timeout(self.cfg.idle_timeout, self.http.get(&url).send())
            .await
            .map_err(|_| RemoteError::Timeout(self.cfg.idle_timeout))?
            .map_err(|e| RemoteError::Transport(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(RemoteError::Status(resp.status().as_u16()));
        }
        let body = tokio::time::timeout(self.cfg.idle_timeout, resp.bytes())
            .await
            .map_err(|_| RemoteError::Timeout(self.cfg.idle_timeout))?
            .map_err(|e| RemoteError::Transport(e.to_string()))?;
        let card: Value =
            serde_json::from_slice(&body).map_err(|e| RemoteError::Garbage(format!("agent card: {e}")))?;
        endpoint_from_card(&card).ok_or_else(|| RemoteError::Garbage("the agent card has no JSON-RPC interface".into()))
    }

    /// Our name for the agent.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// One delegated turn: sends `text` (masked), with the context the policy shares from `state`
    /// (nothing more when `continuing` a task that asked for input), under the breaker and the
    /// timeouts. The reply streams as `token` events of `ctx` while it arrives.
    ///
    /// # Errors
    /// [`RemoteError`] when the agent is unavailable, fails, or answers something that is not A2A
    /// (health failures also count against the breaker).
    pub async fn delegate(
        &self,
        ctx: &NodeContext,
        state: &State,
        text: &str,
        continuing: Option<&PendingTask>,
    ) -> Result<Delegated, RemoteError> {
        let conv = ctx.conversation_id();
        let permit =
            self.breaker.admit(&self.breaker_id).map_err(|_| RemoteError::CircuitOpen(self.cfg.name.clone()))?;
        let context = if continuing.is_none() { self.context(state) } else { None };
        let r = tokio::time::timeout(self.cfg.timeout, self.exchange(ctx, conv, text, context, continuing))
            .await
            .unwrap_or(Err(RemoteError::Timeout(self.cfg.timeout)));
        let ex = match r {
            Ok(ex) => {
                permit.succeeded();
                ex
            }
            Err(e) => {
                if e.is_health_failure() {
                    permit.failed();
                }
                return Err(e);
            }
        };
        match ex.state {
            TaskState::InputRequired | TaskState::AuthRequired => {
                let question = ex.question.unwrap_or_else(|| ex.reply.clone());
                let task = match (ex.task_id, ex.context_id) {
                    (Some(task_id), Some(context_id)) => Some(PendingTask { task_id, context_id }),
                    _ => None,
                };
                Ok(Delegated::InputRequired { question, partial: ex.reply, task })
            }
            TaskState::Completed | TaskState::Working | TaskState::Submitted | TaskState::Unknown => {
                if ex.reply.is_empty() {
                    return Err(RemoteError::Garbage("the remote agent finished without a reply".into()));
                }
                Ok(Delegated::Reply(ex.reply))
            }
            TaskState::Failed | TaskState::Rejected | TaskState::Canceled => {
                Err(RemoteError::TaskEnded(ex.state.v03()))
            }
        }
    }

    async fn run(&self, input: NodeInput) -> NodeResult {
        let conv = input.ctx.conversation_id().to_string();
        // Resumed after the remote asked for input: the value is the customer's answer.
        let answer = input.ctx.interrupt(Value::Null).ok();
        let (text, continuing) = match &answer {
            Some(v) => {
                let t = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).get(&conv).cloned();
                (t, waiting)
            }
            None => {
                let last =
                    input.state.get_array("messages").last().and_then(crate::turn::message_text).unwrap_or_default();
                (last, None)
            }
        };
        let r = self.delegate(&input.ctx, &input.state, &text, continuing.as_ref()).await;
        match r {
            Ok(Delegated::InputRequired { question, task, .. }) => {
                let remote_task_id = task.as_ref().map(|t| t.task_id.clone());
                if let Some(t) = task {
                    self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(conv, t);
                }
                Err(NodeError::Interrupted(json!({
                    "reason": "remote_input_required", "agent": self.cfg.name, "question": question,
                    "remote_task_id": remote_task_id,
                })))
            }
            Ok(Delegated::Reply(reply)) => {
                self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&conv);
                Ok(Update::new()
                    .set("messages", json!({"role": "assistant", "content": reply, "agent": self.cfg.name}))
                    .into())
            }
            Err(e) => {
                if matches!(e, RemoteError::TaskEnded(_)) {
                    self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&conv);
                }
                self.fall_back(input, &e).await
            }
        }
    }

    async fn fall_back(&self, input: NodeInput, why: &RemoteError) -> NodeResult {
        tracing::warn!(agent = %self.cfg.name, error = %why, "remote agent unavailable: falling back");
        if let Some(f) = &self.fallback {
            return f.run(input).await;
        }
        Ok(Update::new()
            .set("messages", json!({"role": "assistant", "content": self.cfg.unavailable_message, "agent": self.cfg.name, "fallback": true}))
            .into())
    }

    /// One `SendStreamingMessage` exchange.
    async fn exchange(
        &self,
        ctx: &NodeContext,
        conv: &str,
        text: &str,
        context: Option<Value>,
        continuing: Option<&PendingTask>,
    ) -> Result<Exchange, RemoteError> {
        let ep = self.endpoint().await?;
        let d = ep.dialect;
        let mut parts = vec![wire::text_part(d, &self.mask(text))];
        if let Some(c) = context {
            parts.push(match d {
                Dialect::V1 => json!({"data": c, "metadata": {"switchboard": "context"}}),
                Dialect::V03 => json!({"kind": "data", "data": c, "metadata": {"switchboard": "context"}}),
            });
        }
        // The same task of the same run sends the same message id: the remote can deduplicate a retry.
        let mut message = json!({"messageId": ctx.idempotency_key(0), "parts": parts});
        match d {
            Dialect::V1 => message["role"] = json!("ROLE_USER"),
            Dialect::V03 => {
                message["role"] = json!("user");
                message["kind"] = json!("message");
            }
        }
        match continuing {
            Some(t) => {
                message["taskId"] = json!(t.task_id);
                message["contextId"] = json!(t.context_id);
            }
            None => message["contextId"] = json!(format!("sb-{conv}")),
        }
        let method = match d {
            Dialect::V1 => "SendStreamingMessage",
            Dialect::V03 => "message/stream",
        };
        let body =
            json!({"jsonrpc": "2.0", "id": ctx.idempotency_key(1), "method": method, "params": {"message": message}});
        let mut req = self
            .http
            .post(&ep.url)
            .header("accept", "text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if d == Dialect::V1 {
            req = req.header("a2a-version", "1.0");
        }
        if let Some(t) = &self.cfg.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = tokio::time::timeout(self.cfg.idle_timeout, req.send())
            .await
            .map_err(|_| RemoteError::Timeout(self.cfg.idle_timeout))?
            .map_err(|e| RemoteError::Transport(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(RemoteError::Status(status.as_u16()));
        }
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut acc = Accumulator { stream: self.cfg.stream_tokens, ..Accumulator::default() };
        if !sse {
            // A plain JSON-RPC answer: an upfront error, or a non-streaming agent.
            let bytes = tokio::time::timeout(self.cfg.idle_timeout, resp.bytes())
                .await
                .map_err(|_| RemoteError::Timeout(self.cfg.idle_timeout))?
                .map_err(|e| RemoteError::Transport(e.to_string()))?;
            acc.event(ctx, &bytes)?;
            return acc.finish();
        }
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(self.cfg.idle_timeout, body.next()).await {
                Err(_) => return Err(RemoteError::Timeout(self.cfg.idle_timeout)),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(RemoteError::Transport(e.to_string())),
                Ok(Some(Ok(c))) => c,
            };
            parser.feed(&chunk, &mut events).map_err(|e| RemoteError::Garbage(e.to_string()))?;
            for e in events.drain(..) {
                if e.data.is_empty() {
                    continue;
                }
                acc.event(ctx, e.data.as_bytes())?;
                if acc.done {
                    return acc.finish();
                }
            }
        }
        acc.finish()
    }
}

/// An assistant that delegates every turn to `agent`: `START -> delegate -> END` over a
/// `messages` field (the customer's messages in, the agent's replies out).
///
/// # Errors
/// Never for this fixed shape; typed for the builder's sake.
pub fn delegating_graph(agent: RemoteAgent) -> Result<switchboard_engine::Graph, switchboard_engine::GraphError> {
    use switchboard_engine::{END, Field, GraphBuilder, Reducer, START, Schema};
    let schema = Arc::new(Schema::builder().field(Field::new("messages").reducer(Reducer::Messages)).build()?);
    GraphBuilder::new(schema).node("delegate", agent.into_node()).edge(START, "delegate").edge("delegate", END).build()
}

/// The JSON-RPC endpoint of a card: the first JSON-RPC entry of `supportedInterfaces` (v1.0),
/// else the v0.3 top-level `url`.
fn endpoint_from_card(card: &Value) -> Option<Endpoint> {
    if let Some(list) = card.get("supportedInterfaces").and_then(Value::as_array) {
        for i in list {
            let binding = i.get("protocolBinding").and_then(Value::as_str).unwrap_or("");
            if !binding.eq_ignore_ascii_case("JSONRPC") {
                continue;
            }
            let Some(url) = i.get("url").and_then(Value::as_str) else { continue };
            let version = i.get("protocolVersion").and_then(Value::as_str).unwrap_or("1.0");
            let dialect = if version.starts_with("0.") { Dialect::V03 } else { Dialect::V1 };
            return Some(Endpoint { url: url.to_string(), dialect });
        }
    }
    let url = card.get("url").and_then(Value::as_str)?;
    let transport = card.get("preferredTransport").and_then(Value::as_str).unwrap_or("JSONRPC");
    transport.eq_ignore_ascii_case("JSONRPC").then(|| Endpoint { url: url.to_string(), dialect: Dialect::V03 })
}

/// Folds the events of a stream into an [`Exchange`].
#[derive(Debug, Default)]
struct Accumulator {
    state: Option<TaskState>,
    reply: String,
    status_text: Option<String>,
    task_id: Option<String>,
    context_id: Option<String>,
    done: bool,
    /// The artifact being received, and how many bytes of `reply` it holds.
    artifact: Option<String>,
    current: usize,
    /// Whether text is emitted as token events while it arrives.
    stream: bool,
}

impl Accumulator {
    fn event(&mut self, ctx: &NodeContext, data: &[u8]) -> Result<(), RemoteError> {
        let v: Value = serde_json::from_slice(data).map_err(|e| RemoteError::Garbage(format!("not JSON: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(RemoteError::Rpc {
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err.get("message").and_then(Value::as_str).unwrap_or("").chars().take(200).collect(),
            });
        }
        let r = v.get("result").ok_or_else(|| RemoteError::Garbage("a JSON-RPC response without result".into()))?;
        // v1.0 wraps the one-of; v0.3 tags it with `kind`.
        let (kind, body) = match r.get("kind").and_then(Value::as_str) {
            Some(k) => (k, r),
            None => ["task", "message", "statusUpdate", "artifactUpdate"]
                .into_iter()
                .find_map(|k| r.get(k).map(|b| (k, b)))
                .ok_or_else(|| RemoteError::Garbage("a stream result of no known kind".into()))?,
        };
        let s = |b: &Value, k: &str| b.get(k).and_then(Value::as_str).map(str::to_string);
        match kind {
            "task" => {
                self.task_id = s(body, "id").or(self.task_id.take());
                self.context_id = s(body, "contextId").or(self.context_id.take());
                if let Some(arts) = body.get("artifacts").and_then(Value::as_array)
                    && self.reply.is_empty()
                {
                    let t: String = arts.iter().map(|a| wire::parts_text(&a["parts"])).collect();
                    self.push(ctx, &t)?;
                }
                self.status(&body["status"]);
            }
            "message" => {
                let t = wire::parts_text(&body["parts"]);
                self.push(ctx, &t)?;
                self.context_id = s(body, "contextId").or(self.context_id.take());
                self.state = Some(TaskState::Completed);
                self.done = true;
            }
            "statusUpdate" | "status-update" => {
                self.task_id = s(body, "taskId").or(self.task_id.take());
                self.context_id = s(body, "contextId").or(self.context_id.take());
                self.status(&body["status"]);
                if body.get("final").and_then(Value::as_bool) == Some(true) {
                    self.done = true;
                }
            }
            "artifactUpdate" | "artifact-update" => {
                self.task_id = s(body, "taskId").or(self.task_id.take());
                let t = wire::parts_text(&body["artifact"]["parts"]);
                let id = body["artifact"]["artifactId"].as_str().unwrap_or("").to_string();
                let append = body.get("append").and_then(Value::as_bool) == Some(true);
                if append || self.artifact.as_deref() != Some(id.as_str()) {
                    if self.artifact.as_deref() != Some(id.as_str()) {
                        self.current = 0;
                    }
                    self.artifact = Some(id);
                    self.push(ctx, &t)?;
                } else {
                    // The same artifact again without `append`: its new content replaces the old.
                    // Stream only what extends what was already streamed.
                    let start = self.reply.len() - self.current;
                    let old = self.reply.split_off(start);
                    self.current = 0;
                    match t.strip_prefix(old.as_str()) {
                        Some(rest) => {
                            self.reply.push_str(&old);
                            self.current = old.len();
                            self.push(ctx, rest)?;
                        }
                        None => {
                            self.current = t.len();
                            self.reply.push_str(&t);
                        }
                    }
                }
            }
            other => return Err(RemoteError::Garbage(format!("unknown stream result kind `{other}`"))),
        }
        Ok(())
    }

    fn status(&mut self, status: &Value) {
        let Some(st) = status.get("state").and_then(Value::as_str) else { return };
        let st = TaskState::parse(st);
        self.state = Some(st);
        if let Some(m) = status.get("message") {
            let t = wire::parts_text(&m["parts"]);
            if !t.is_empty() {
                self.status_text = Some(t);
            }
        }
        if st.is_terminal() || st.is_interrupted() {
            self.done = true;
        }
    }

    fn push(&mut self, ctx: &NodeContext, t: &str) -> Result<(), RemoteError> {
        if t.is_empty() {
            return Ok(());
        }
        if self.reply.len() + t.len() > MAX_REPLY_BYTES {
            return Err(RemoteError::Garbage(format!("a reply over {MAX_REPLY_BYTES} bytes")));
        }
        self.reply.push_str(t);
        self.current += t.len();
        if self.stream {
            ctx.emit_token(t);
        }
        Ok(())
    }

    fn finish(self) -> Result<Exchange, RemoteError> {
        let state = self.state.ok_or_else(|| RemoteError::Garbage("the stream ended without a task state".into()))?;
        if !(self.done || state.is_terminal() || state.is_interrupted()) {
            return Err(RemoteError::Garbage("the stream ended before the task did".into()));
        }
        let mut reply = self.reply;
        let mut question = None;
        if state.is_interrupted() {
            question = self.status_text;
        } else if reply.is_empty() && state == TaskState::Completed {
            reply = self.status_text.unwrap_or_default();
        }
        Ok(Exchange { state, reply, question, task_id: self.task_id, context_id: self.context_id })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_endpoint_comes_from_either_card_shape() {
        let v1 = json!({"supportedInterfaces": [
            {"url": "http://a/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            {"url": "http://a/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]});
        let e = endpoint_from_card(&v1).unwrap();
        assert_eq!((e.url.as_str(), e.dialect), ("http://a/rpc", Dialect::V1));
        let v03 = json!({"url": "http://b/", "protocolVersion": "0.3.0"});
        let e = endpoint_from_card(&v03).unwrap();
        assert_eq!((e.url.as_str(), e.dialect), ("http://b/", Dialect::V03));
        assert!(endpoint_from_card(&json!({"url": "http://c", "preferredTransport": "GRPC"})).is_none());
    }

    #[test]
    fn health_failures_are_classified() {
        assert!(RemoteError::Timeout(Duration::from_secs(1)).is_health_failure());
        assert!(RemoteError::Status(503).is_health_failure());
        assert!(!RemoteError::Status(401).is_health_failure());
        assert!(!RemoteError::Rpc { code: -32602, message: String::new() }.is_health_failure());
    }
}
