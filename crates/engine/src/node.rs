//! Nodes: async functions of the state that return an update or a [`Command`].

use crate::error::NodeError;
use crate::events::{EventKind, EventSink};
use crate::state::{State, Update};
use futures::future::BoxFuture;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where to go after a node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goto {
    /// Run this node in the next step.
    Node(String),
    /// Run this node in the next step with a per-item input (map-style fan-out).
    Send {
        /// The node to run.
        node: String,
        /// Its input, available as [`NodeContext::item`].
        item: Value,
    },
    /// Nothing more from this branch.
    End,
}

impl Goto {
    /// Shorthand for [`Goto::Node`] (`END` maps to [`Goto::End`]).
    pub fn node(name: impl Into<String>) -> Self {
        let name = name.into();
        if name == crate::END { Self::End } else { Self::Node(name) }
    }
    /// Shorthand for [`Goto::Send`].
    pub fn send(node: impl Into<String>, item: Value) -> Self {
        Self::Send { node: node.into(), item }
    }
}

/// The targets a conditional edge chose.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Branch(pub Vec<Goto>);

impl From<&str> for Branch {
    fn from(s: &str) -> Self {
        Self(vec![Goto::node(s)])
    }
}
impl From<String> for Branch {
    fn from(s: String) -> Self {
        Self(vec![Goto::node(s)])
    }
}
impl From<Goto> for Branch {
    fn from(g: Goto) -> Self {
        Self(vec![g])
    }
}
impl From<Vec<Goto>> for Branch {
    fn from(v: Vec<Goto>) -> Self {
        Self(v)
    }
}

/// An update together with explicit routing, overriding the node's edges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Command {
    /// Writes to apply.
    pub update: Update,
    /// Where to go next (empty: follow the node's edges).
    pub goto: Vec<Goto>,
}

/// What a node returns.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOutput {
    /// Writes; routing follows the graph's edges.
    Update(Update),
    /// Writes and explicit routing.
    Command(Command),
}

impl From<Update> for NodeOutput {
    fn from(u: Update) -> Self {
        Self::Update(u)
    }
}
impl From<Command> for NodeOutput {
    fn from(c: Command) -> Self {
        Self::Command(c)
    }
}

/// What a node sees besides the state.
#[derive(Clone)]
pub struct NodeContext {
    pub(crate) conversation_id: Arc<str>,
    pub(crate) run_id: Arc<str>,
    pub(crate) node: Arc<str>,
    pub(crate) task_id: Arc<str>,
    pub(crate) item: Option<Value>,
    pub(crate) resume: Option<Value>,
    pub(crate) attempt: u32,
    pub(crate) events: EventSink,
    pub(crate) cancel: CancellationToken,
    pub(crate) customer_id: Option<Arc<str>>,
}

impl NodeContext {
    /// The conversation id.
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }
    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
    /// This node's name, with its subgraph namespace (`agent/tool_call`).
    pub fn node(&self) -> &str {
        &self.node
    }
    /// The customer the conversation belongs to, if known.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer_id.as_deref()
    }
    /// The per-item input of a map-style fan-out ([`Goto::Send`]).
    pub fn item(&self) -> Option<&Value> {
        self.item.as_ref()
    }
    /// Which attempt this is (1 on the first try).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// A cancellation token for long waits inside the node.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }
    /// A key that is the same every time this task runs (also after a crash and resume), for the
    /// `n`-th side effect of the task: pass it to tools so downstream systems can deduplicate.
    pub fn idempotency_key(&self, n: u32) -> String {
        format!("{}:{}:{n}", self.conversation_id, self.task_id)
    }
    /// Pauses the run for a value from outside (e.g. a human's approval).
    ///
    /// The first time, returns `Err(NodeError::Interrupted(payload))`: return it with `?`. When the
    /// run is resumed, the node runs again from the start and this call returns the resume value.
    /// Side effects before this call therefore run again: guard them with [`Self::idempotency_key`].
    ///
    /// # Errors
    /// [`NodeError::Interrupted`] until a resume value is available.
    pub fn interrupt(&self, payload: Value) -> Result<Value, NodeError> {
        match &self.resume {
            Some(v) => Ok(v.clone()),
            None => Err(NodeError::Interrupted(payload)),
        }
    }
    /// Streams an LLM token delta to subscribers.
    pub fn emit_token(&self, delta: &str) {
        self.events.note_token();
        if self.events.active() {
            self.events.emit(EventKind::Token { node: self.node.to_string(), delta: delta.to_string() });
        }
    }
    /// Streams a custom event to subscribers.
    pub fn emit_custom(&self, value: Value) {
        if self.events.active() {
            self.events.emit(EventKind::Custom { node: self.node.to_string(), value });
        }
    }
    pub(crate) fn child(&self, node: &str) -> Self {
        let mut c = self.clone();
        c.node = format!("{}/{node}", self.node).into();
        c.task_id = format!("{}/{node}", self.task_id).into();
        c
    }
}

/// The input of a node.
pub struct NodeInput {
    /// A read-only view of the state at the start of the step.
    pub state: Arc<State>,
    /// Everything else.
    pub ctx: NodeContext,
}

/// The result of running a node.
pub type NodeResult = Result<NodeOutput, NodeError>;

/// A step of a graph. Implemented for every `Fn(NodeInput) -> impl Future<Output = NodeResult>`.
pub trait Node: Send + Sync {
    /// Runs the node.
    fn run(&self, input: NodeInput) -> BoxFuture<'static, NodeResult>;
}

impl<F, Fut> Node for F
where
    F: Fn(NodeInput) -> Fut + Send + Sync,
    Fut: Future<Output = NodeResult> + Send + 'static,
{
    fn run(&self, input: NodeInput) -> BoxFuture<'static, NodeResult> {
        Box::pin(self(input))
    }
}

/// How often and how patiently a node is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Growth of the wait per attempt.
    pub multiplier: f64,
    /// Upper bound of the wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Retries up to `max_attempts` in total with the default backoff.
    pub fn attempts(max_attempts: u32) -> Self {
        Self { max_attempts: max_attempts.max(1), ..Self::default() }
    }
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let f = self.multiplier.powi(attempt.saturating_sub(1) as i32);
        self.initial_backoff.mul_f64(f).min(self.max_backoff)
    }
}

/// Per-node execution options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOptions {
    /// Limit on one attempt's duration.
    pub timeout: Option<Duration>,
    /// Retry policy for retryable failures and timeouts.
    pub retry: RetryPolicy,
}
