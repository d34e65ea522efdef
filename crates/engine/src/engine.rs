//! The engine: one writer per conversation, the run loop of supersteps, interrupts and resume,
//! double-text strategies, checkpoint encoding and time travel.
//!
//! Each conversation has a gate (an async mutex) that a run holds from start to finish, and a
//! cached head: the state at the latest checkpoint, so a turn never re-reads what it just wrote.
//! The cache is dropped whenever a run fails, and reloaded from the store on next use.

use crate::checkpoint::{CheckpointBody, CheckpointRecord, CheckpointStore, ContextStore, PendingWrite, WriteAck};
use crate::error::{EngineError, NodeError, StoreError};
use crate::events::{EventKind, EventSink};
use crate::graph::{Graph, NodeKind, NodeSpec, TaskSpec};
use crate::ids::new_run_id;
use crate::node::{Goto, NodeContext, NodeInput, NodeOutput, NodeResult};
use crate::state::{Patch, Reducer, Scope, State, Update, apply_patch};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, warn};

/// When checkpoint writes must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Each step waits for its checkpoint before the next step starts.
    Sync,
    /// A checkpoint is written while the next step runs; the run reports its result only after
    /// every checkpoint it wrote is durable. (LangGraph's default "async" mode.)
    Async,
}

/// What happens when a message arrives while a run of the same conversation is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoubleText {
    /// Refuse the new message with [`EngineError::Busy`].
    Reject,
    /// Run it after the current run.
    Enqueue,
    /// Stop the current run at its next step boundary (keeping its progress), then run it.
    Interrupt,
    /// Cancel the current run and discard its progress, then run it from where that run began.
    Rollback,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A full snapshot every this many checkpoints of a branch (deltas in between).
    pub snapshot_every: u32,
    /// Largest encoded state a conversation may reach.
    pub max_state_bytes: usize,
    /// When checkpoints must be durable.
    pub durability: Durability,
    /// Default double-text strategy.
    pub double_text: DoubleText,
    /// Buffered events per run for slow subscribers.
    pub event_capacity: usize,
    /// Owner of assistant-scoped fields.
    pub assistant_id: String,
    /// Conversations whose head stays cached in memory.
    pub max_cached_conversations: usize,
    /// Other processes write to the store too (replicas): reads of a conversation's state and
    /// interrupts reload its head from the store unless a run of it is in flight here.
    pub shared_store: bool,
}

/// Default of [`EngineConfig::snapshot_every`].
pub const DEFAULT_SNAPSHOT_EVERY: u32 = 100;
/// Default of [`EngineConfig::max_state_bytes`] (4 MiB).
pub const DEFAULT_MAX_STATE_BYTES: usize = 4 << 20;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            durability: Durability::Async,
            double_text: DoubleText::Enqueue,
            event_capacity: 256,
            assistant_id: "default".into(),
            max_cached_conversations: 100_000,
            shared_store: false,
        }
    }
}

/// What a run processes.
#[derive(Debug, Clone)]
pub enum Input {
    /// New input (typically the customer's message) applied as the run's first checkpoint.
    Message(Update),
    /// The value a pending interrupt asked for.
    Resume(Value),
    /// Continue pending tasks (after a crash, or after a fork).
    Continue,
}

/// Per-run options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The conversation's customer (owner of customer-scoped fields).
    pub customer_id: Option<String>,
    /// Overrides the engine's default double-text strategy.
    pub double_text: Option<DoubleText>,
    /// A new message drops a pending interrupt instead of failing with [`EngineError::InterruptPending`].
    pub supersede_interrupt: bool,
    /// Emit a `values` event with the full state after each step.
    pub stream_values: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Reached END.
    Completed,
    /// Waiting for a resume value.
    Interrupted,
    /// Cancelled (progress up to the last checkpoint is kept).
    Cancelled,
    /// Stopped at a step boundary for a newer message (double-text `interrupt`).
    Superseded,
    /// Cancelled and discarded for a newer message (double-text `rollback`).
    RolledBack,
}

impl RunStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// A pending interrupt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InterruptInfo {
    /// The interrupted task.
    pub task_id: String,
    /// Its node.
    pub node: String,
    /// What it asked.
    pub payload: Value,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Run id.
    pub run_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// How it ended.
    pub status: RunStatus,
    /// The conversation's latest checkpoint.
    pub checkpoint_id: Option<u64>,
    /// The state at that checkpoint.
    pub state: Arc<State>,
    /// Pending interrupts (when interrupted).
    pub interrupts: Vec<InterruptInfo>,
    /// Supersteps taken.
    pub steps: u32,
}

/// A checkpoint as listed for time travel.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckpointInfo {
    /// Id.
    pub id: u64,
    /// Parent id.
    pub parent: Option<u64>,
    /// Writing run.
    pub run_id: String,
    /// Step within the run (-1 input, -2 fork).
    pub step: i64,
    /// Unix time, ms.
    pub created_at_ms: i64,
    /// Full snapshot or delta.
    pub snapshot: bool,
    /// Nodes of the next step (empty: idle).
    pub next: Vec<String>,
    /// Encoded size.
    pub bytes: usize,
}

/// A run in flight.
pub struct RunHandle {
    run_id: Arc<str>,
    events: EventSink,
    join: tokio::task::JoinHandle<Result<RunOutcome, EngineError>>,
}

impl RunHandle {
    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
    /// A new subscriber to the run's events (from now on).
    pub fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Event>> {
        self.events.subscribe()
    }
    /// Drops the run at once, with no cleanup, as if the process died (for crash tests and hard
    /// shutdowns); what was checkpointed stays, and [`Input::Continue`] resumes it.
    pub fn abort(self) {
        self.join.abort();
    }
    /// Waits for the run to end.
    ///
    /// # Errors
    /// What the run failed with.
    pub async fn wait(self) -> Result<RunOutcome, EngineError> {
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(EngineError::Node {
                node: "(run)".into(),
                source: NodeError::failed(if e.is_cancelled() { "run task aborted" } else { "run task panicked" }),
            }),
        }
    }
}

#[derive(Clone)]
struct RunControl {
    run_id: Arc<str>,
    cancel: CancellationToken,
    stop: CancellationToken,
    rollback: Arc<AtomicBool>,
}

struct Head {
    loaded: bool,
    state: Arc<State>,
    id: Option<u64>,
    max_id: u64,
    next: Vec<TaskSpec>,
    interrupts: Vec<InterruptInfo>,
    chain_len: u32,
    force_snapshot: bool,
    field_bytes: Vec<usize>,
    rollback_to: Option<Option<u64>>,
    /// Checkpoints written through this head, and their encoded bytes (for the turn's span).
    written: (u64, u64),
}

impl Head {
    fn fresh(graph: &Graph) -> Self {
        Self {
            loaded: false,
            state: Arc::new(State::new(graph.schema.clone())),
            id: None,
            max_id: 0,
            next: Vec::new(),
            interrupts: Vec::new(),
            chain_len: 0,
            force_snapshot: false,
            field_bytes: vec![0; graph.schema.fields.len()],
            rollback_to: None,
            written: (0, 0),
        }
    }
}

struct Conv {
    gate: Arc<tokio::sync::Mutex<Head>>,
    active: Mutex<Option<RunControl>>,
}

/// The outcome of one task, as kept in pending writes.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum TaskOutcome {
    Done {
        u: Vec<(String, Value)>,
        g: Vec<Goto>,
    },
    Interrupted {
        node: String,
        payload: Value,
    },
    /// The run was cancelled or superseded here: its pending tasks are dropped, not resumed.
    Stopped,
}

const STOPPED_TASK: &str = "__stopped__";

struct Inner {
    graph: Arc<Graph>,
    store: Arc<dyn CheckpointStore>,
    context: Option<Arc<dyn ContextStore>>,
    config: EngineConfig,
    convs: Mutex<HashMap<String, Arc<Conv>>>,
    runs: Mutex<HashMap<String, RunControl>>,
    closing: CancellationToken,
    refusing: AtomicBool,
}

/// Runs conversations through a graph, checkpointing every step.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Engine {
    /// An engine over a graph and a checkpoint store.
    pub fn new(graph: Graph, store: Arc<dyn CheckpointStore>, config: EngineConfig) -> Self {
        Self::build(graph, store, None, config)
    }

    /// An engine that also keeps customer- and assistant-scoped fields in a context store.
    pub fn with_context(
        graph: Graph,
        store: Arc<dyn CheckpointStore>,
        context: Arc<dyn ContextStore>,
        config: EngineConfig,
    ) -> Self {
        Self::build(graph, store, Some(context), config)
    }

    fn build(
        graph: Graph,
        store: Arc<dyn CheckpointStore>,
        context: Option<Arc<dyn ContextStore>>,
        config: EngineConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                graph: Arc::new(graph),
                store,
                context,
                config,
                convs: Mutex::new(HashMap::new()),
                runs: Mutex::new(HashMap::new()),
                closing: CancellationToken::new(),
                refusing: AtomicBool::new(false),
            }),
        }
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.inner.graph
    }

    /// Runs one message to the end (or an interrupt) with default options.
    ///
    /// # Errors
    /// See [`EngineError`].
    pub async fn invoke(&self, conversation: &str, input: Update) -> Result<RunOutcome, EngineError> {
        self.start(conversation, Input::Message(input), RunOptions::default()).await?.wait().await
    }

    /// Resumes a pending interrupt with a value and waits for the run.
    ///
    /// # Errors
    /// [`EngineError::NothingToResume`] when nothing waits; otherwise as [`Self::invoke`].
    pub async fn resume(&self, conversation: &str, value: Value) -> Result<RunOutcome, EngineError> {
        self.start(conversation, Input::Resume(value), RunOptions::default()).await?.wait().await
    }

    /// Starts a run; it executes in the background, in order with other runs of the conversation.
    ///
    /// # Errors
    /// [`EngineError::Busy`] with the `reject` strategy while a run is in flight;
    /// [`EngineError::ShuttingDown`] after [`Self::shutdown`].
    pub async fn start(&self, conversation: &str, input: Input, opts: RunOptions) -> Result<RunHandle, EngineError> {
        if self.inner.refusing.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let slot = self.inner.slot(conversation);
        let strategy = opts.double_text.unwrap_or(self.inner.config.double_text);
        let run_id: Arc<str> = new_run_id().into();
        let events = EventSink::new(run_id.clone(), self.inner.config.event_capacity);
        let ready = match slot.gate.clone().try_lock_owned() {
            Ok(g) => Some(g),
            Err(_) => {
                let active = lock(&slot.active).clone();
                match (&input, strategy) {
                    (Input::Resume(_) | Input::Continue, _) | (_, DoubleText::Enqueue) => {}
                    (_, DoubleText::Reject) => {
                        return Err(EngineError::Busy {
                            conversation: conversation.to_string(),
                            run_id: active.map(|a| a.run_id.to_string()).unwrap_or_default(),
                        });
                    }
                    (_, DoubleText::Interrupt) => {
                        if let Some(a) = active {
                            a.stop.cancel();
                        }
                    }
                    (_, DoubleText::Rollback) => {
                        if let Some(a) = active {
                            a.rollback.store(true, Ordering::SeqCst);
                            a.cancel.cancel();
                        }
                    }
                }
                None
            }
        };
        let control = RunControl {
            run_id: run_id.clone(),
            cancel: self.inner.closing.child_token(),
            stop: CancellationToken::new(),
            rollback: Arc::new(AtomicBool::new(false)),
        };
        lock(&self.inner.runs).insert(run_id.to_string(), control.clone());
        let inner = self.inner.clone();
        let conv = conversation.to_string();
        let ev = events.clone();
        // The turn's span: a child of the caller's (the HTTP request), parent of every node's.
        // Its outcome fields are recorded when the run ends (see `Inner::run`).
        let span = tracing::info_span!(
            "switchboard.run",
            otel.name = "turn",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            gen_ai.conversation.id = %conv,
            switchboard.run.id = %run_id,
            switchboard.run.status = tracing::field::Empty,
            switchboard.handler = tracing::field::Empty,
            switchboard.ttft_ms = tracing::field::Empty,
            switchboard.checkpoint.count = tracing::field::Empty,
            switchboard.checkpoint.bytes = tracing::field::Empty,
            switchboard.conversation.new = tracing::field::Empty,
        );
        let join = tokio::spawn(
            async move {
                let gate = match ready {
                    Some(g) => g,
                    None => slot.gate.clone().lock_owned().await,
                };
                inner.run(slot, gate, conv, input, opts, control, ev).await
            }
            .instrument(span),
        );
        Ok(RunHandle { run_id, events, join })
    }

    /// Cancels a run in flight; its progress up to the last checkpoint is kept.
    ///
    /// # Errors
    /// [`EngineError::UnknownRun`] when no such run is active.
    pub fn cancel(&self, run_id: &str) -> Result<(), EngineError> {
        match lock(&self.inner.runs).get(run_id) {
            Some(c) => {
                c.cancel.cancel();
                Ok(())
            }
            None => Err(EngineError::UnknownRun(run_id.to_string())),
        }
    }

    /// Drops the cached head of a conversation so that its next use reloads it from the store
    /// (another process may have written to it since). Does nothing while a run of it is in flight.
    pub fn forget(&self, conversation: &str) {
        let mut convs = lock(&self.inner.convs);
        if convs.get(conversation).is_some_and(|c| Arc::strong_count(c) == 1) {
            convs.remove(conversation);
        }
    }

    /// Ids of the runs in flight.
    pub fn active_runs(&self) -> Vec<String> {
        lock(&self.inner.runs).keys().cloned().collect()
    }

    /// The conversation's current state (from the cache when no run is in flight, else from the
    /// store's latest durable checkpoint).
    ///
    /// # Errors
    /// [`EngineError::UnknownConversation`] when nothing is stored.
    pub async fn state(&self, conversation: &str) -> Result<Arc<State>, EngineError> {
        if self.inner.config.shared_store {
            self.forget(conversation);
        }
        let slot = self.inner.slot(conversation);
        if let Ok(mut head) = slot.gate.clone().try_lock_owned() {
            self.inner.ensure_loaded(&mut head, conversation).await?;
            return match head.id {
                Some(_) => Ok(head.state.clone()),
                None => Err(EngineError::UnknownConversation(conversation.to_string())),
            };
        }
        let latest = self
            .inner
            .store
            .latest(conversation)
            .await?
            .ok_or_else(|| EngineError::UnknownConversation(conversation.to_string()))?;
        Ok(Arc::new(self.state_at(conversation, latest.id).await?))
    }

    /// Interrupts waiting for a resume value.
    ///
    /// # Errors
    /// Store failures.
    pub async fn pending_interrupts(&self, conversation: &str) -> Result<Vec<InterruptInfo>, EngineError> {
        if self.inner.config.shared_store {
            self.forget(conversation);
        }
        let slot = self.inner.slot(conversation);
        let mut head = slot.gate.clone().lock_owned().await;
        self.inner.ensure_loaded(&mut head, conversation).await?;
        Ok(head.interrupts.clone())
    }

    /// The state at one checkpoint.
    ///
    /// # Errors
    /// [`EngineError::UnknownCheckpoint`], or a corrupt / future-schema checkpoint.
    pub async fn state_at(&self, conversation: &str, id: u64) -> Result<State, EngineError> {
        let chain = self.inner.chain(conversation, id).await?;
        Ok(self.inner.materialize(conversation, &chain)?.state)
    }

    /// Checkpoints newest first (ids below `before` when given).
    ///
    /// # Errors
    /// Store failures, corrupt payloads.
    pub async fn history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CheckpointInfo>, EngineError> {
        let recs = self.inner.store.history(conversation, before, limit).await?;
        recs.into_iter()
            .map(|r| {
                let body = decode_body(&r)?;
                Ok(CheckpointInfo {
                    id: r.id,
                    parent: r.parent,
                    run_id: r.run_id,
                    step: r.step,
                    created_at_ms: r.created_at_ms,
                    snapshot: r.snapshot,
                    next: body.next.iter().map(|t| t.node().to_string()).collect(),
                    bytes: r.payload.len(),
                })
            })
            .collect()
    }

    /// Time travel: makes an earlier checkpoint the head of a new branch (the old branch stays
    /// intact), optionally applying an update; returns the new checkpoint's id. Pending tasks of
    /// that checkpoint run on the next [`Input::Continue`] or message.
    ///
    /// # Errors
    /// [`EngineError::UnknownCheckpoint`], reducer and store errors.
    pub async fn fork(&self, conversation: &str, from: u64, update: Option<Update>) -> Result<u64, EngineError> {
        let inner = &self.inner;
        let slot = inner.slot(conversation);
        let mut head = slot.gate.clone().lock_owned().await;
        inner.ensure_loaded(&mut head, conversation).await?;
        let chain = inner.chain(conversation, from).await?;
        let m = inner.materialize(conversation, &chain)?;
        head.state = Arc::new(m.state);
        head.id = Some(from);
        head.next = m.next;
        head.interrupts.clear();
        head.field_bytes = m.field_bytes;
        head.force_snapshot = true;
        let mut patches = Vec::new();
        let id = head.max_id + 1;
        if let Some(u) = update {
            let r = Arc::make_mut(&mut head.state).apply(u, id, &mut patches);
            if let Err(e) = r {
                head.loaded = false;
                return Err(e.into());
            }
        }
        let next = head.next.clone();
        let run_id = new_run_id();
        let mut acks = Vec::new();
        let res = inner.write_checkpoint(&mut head, conversation, &run_id, -2, &patches, next, &mut acks).await;
        let res = match res {
            Ok(id) => futures::future::try_join_all(acks).await.map(|_| id).map_err(EngineError::from),
            Err(e) => Err(e),
        };
        if res.is_err() {
            head.loaded = false;
        }
        res
    }

    /// Deletes a conversation's checkpoints (cancelling a run in flight); returns how many records went.
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete(&self, conversation: &str) -> Result<u64, EngineError> {
        let slot = self.inner.slot(conversation);
        if let Some(a) = lock(&slot.active).clone() {
            a.cancel.cancel();
        }
        let mut head = slot.gate.clone().lock_owned().await;
        let n = self.inner.store.delete_conversation(conversation).await?;
        *head = Head::fresh(&self.inner.graph);
        drop(head);
        lock(&self.inner.convs).remove(conversation);
        Ok(n)
    }

    /// Stops accepting runs, lets runs in flight finish until `deadline`, then cancels the rest
    /// (their progress up to the last checkpoint is kept). Returns how many runs were cancelled.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        let inner = &self.inner;
        inner.refusing.store(true, Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        while start.elapsed() < deadline && !lock(&inner.runs).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = lock(&inner.runs).len();
        inner.closing.cancel();
        while !lock(&inner.runs).is_empty() && start.elapsed() < deadline + Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        left
    }
}

struct Materialized {
    state: State,
    next: Vec<TaskSpec>,
    chain_len: u32,
    migrated: bool,
    field_bytes: Vec<usize>,
}

fn decode_body(r: &CheckpointRecord) -> Result<CheckpointBody, EngineError> {
    serde_json::from_slice(&r.payload).map_err(|e| EngineError::CorruptCheckpoint {
        conversation: r.conversation_id.clone(),
        id: r.id,
        reason: e.to_string(),
    })
}

fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    // Serialising a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

impl Inner {
    fn slot(&self, conversation: &str) -> Arc<Conv> {
        let mut convs = lock(&self.convs);
        if let Some(c) = convs.get(conversation) {
            return c.clone();
        }
        if convs.len() >= self.config.max_cached_conversations {
            convs.retain(|_, c| Arc::strong_count(c) > 1);
        }
        let c = Arc::new(Conv {
            gate: Arc::new(tokio::sync::Mutex::new(Head::fresh(&self.graph))),
            active: Mutex::new(None),
        });
        convs.insert(conversation.to_string(), c.clone());
        c
    }

    async fn chain(&self, conversation: &str, id: u64) -> Result<Vec<CheckpointRecord>, EngineError> {
        if self.store.get(conversation, id).await?.is_none() {
            return Err(EngineError::UnknownCheckpoint { conversation: conversation.to_string(), id });
        }
        Ok(self.store.chain(conversation, id).await?)
    }

    fn materialize(&self, conversation: &str, chain: &[CheckpointRecord]) -> Result<Materialized, EngineError> {
        let schema = &self.graph.schema;
        let corrupt = |id: u64, reason: &str| EngineError::CorruptCheckpoint {
            conversation: conversation.to_string(),
            id,
            reason: reason.to_string(),
        };
        let first = chain.first().ok_or_else(|| corrupt(0, "empty checkpoint chain"))?;
        if !first.snapshot {
            return Err(corrupt(first.id, "chain does not start with a snapshot"));
        }
        let version = first.schema_version;
        for r in chain {
            if r.schema_version > schema.version {
                return Err(EngineError::FutureSchema {
                    conversation: conversation.to_string(),
                    id: r.id,
                    found: r.schema_version,
                    supported: schema.version,
                });
            }
            if r.schema_version != version {
                return Err(corrupt(r.id, "schema version changes inside a delta chain"));
            }
        }
        let mut map = Map::new();
        let mut next = Vec::new();
        for r in chain {
            let body = decode_body(r)?;
            if let Some(values) = body.values {
                map = values;
            }
            for p in &body.patches {
                apply_patch(map.entry(p.field().to_string()).or_insert(Value::Null), p)
                    .map_err(|e| corrupt(r.id, &e.to_string()))?;
            }
            next = body.next;
        }
        let migrated = version < schema.version;
        for v in version..schema.version {
            let m = schema
                .migration(v)
                .ok_or_else(|| EngineError::Migration { from: v, reason: "no migration registered".into() })?;
            m(&mut map).map_err(|reason| EngineError::Migration { from: v, reason })?;
        }
        let mut state = State::new(schema.clone());
        let last = chain.last().map_or(0, |r| r.id);
        let mut field_bytes = vec![0; schema.fields.len()];
        for (i, f) in schema.fields.iter().enumerate() {
            if f.scope != Scope::Conversation {
                continue;
            }
            if let Some(v) = map.remove(f.name.as_ref()) {
                field_bytes[i] = serde_json::to_vec(&v).map_or(0, |b| b.len());
                state.values[i] = v;
                state.versions[i] = last;
            }
        }
        Ok(Materialized { state, next, chain_len: chain.len() as u32 - 1, migrated, field_bytes })
    }

    async fn ensure_loaded(&self, head: &mut Head, conversation: &str) -> Result<(), EngineError> {
        if head.loaded {
            return Ok(());
        }
        let rollback_to = head.rollback_to.take();
        let Some(latest) = self.store.latest(conversation).await? else {
            *head = Head::fresh(&self.graph);
            head.loaded = true;
            return Ok(());
        };
        let target = match rollback_to {
            Some(None) => {
                // Rolled back to before the first checkpoint: the branch starts afresh.
                *head = Head::fresh(&self.graph);
                head.max_id = latest.id;
                head.loaded = true;
                return Ok(());
            }
            Some(Some(id)) => id,
            None => latest.id,
        };
        let chain = self.store.chain(conversation, target).await?;
        let m = self.materialize(conversation, &chain)?;
        let mut interrupts = Vec::new();
        let mut stopped = false;
        if !m.next.is_empty() {
            for w in self.store.pending_writes(conversation, target).await? {
                match serde_json::from_slice(&w.payload) {
                    Ok(TaskOutcome::Interrupted { node, payload }) => {
                        interrupts.push(InterruptInfo { task_id: w.task_id, node, payload })
                    }
                    Ok(TaskOutcome::Stopped) => stopped = true,
                    _ => {}
                }
            }
        }
        if stopped {
            interrupts.clear();
        }
        *head = Head {
            loaded: true,
            state: Arc::new(m.state),
            id: Some(target),
            max_id: latest.id,
            next: if stopped || (rollback_to.is_some() && interrupts.is_empty()) { Vec::new() } else { m.next },
            interrupts,
            chain_len: m.chain_len,
            force_snapshot: m.migrated,
            field_bytes: m.field_bytes,
            rollback_to: None,
            written: head.written,
        };
        Ok(())
    }

    async fn load_context(&self, head: &mut Head, customer: Option<&str>) -> Result<(), EngineError> {
        let schema = self.graph.schema.clone();
        let has = |s: Scope| schema.fields.iter().any(|f| f.scope == s);
        let has_temp = has(Scope::Temporary);
        let mut loads = Vec::new();
        if let Some(ctx) = &self.context {
            if has(Scope::Assistant) {
                loads.push((Scope::Assistant, ctx.load(Scope::Assistant, &self.config.assistant_id).await?));
            }
            if let (true, Some(c)) = (has(Scope::Customer), customer) {
                loads.push((Scope::Customer, ctx.load(Scope::Customer, c).await?));
            }
        }
        if loads.is_empty() && !has_temp {
            return Ok(());
        }
        let state = Arc::make_mut(&mut head.state);
        state.reset_temporary();
        for (scope, mut values) in loads {
            for (i, f) in schema.fields.iter().enumerate() {
                if f.scope == scope {
                    state.values[i] = values.remove(f.name.as_ref()).unwrap_or_else(|| f.default.clone());
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        self: Arc<Self>,
        slot: Arc<Conv>,
        mut head: OwnedMutexGuard<Head>,
        conversation: String,
        input: Input,
        opts: RunOptions,
        control: RunControl,
        events: EventSink,
    ) -> Result<RunOutcome, EngineError> {
        *lock(&slot.active) = Some(control.clone());
        let started = std::time::Instant::now();
        events.emit(EventKind::RunStarted { conversation_id: conversation.clone() });
        let mut acks = Vec::new();
        let mut steps = 0;
        let loaded = self.ensure_loaded(&mut head, &conversation).await;
        let base = head.id;
        let written_before = head.written;
        let new_conversation = loaded.is_ok() && base.is_none();
        let result = match loaded {
            Ok(()) => {
                self.run_inner(&mut head, &conversation, input, &opts, &control, &events, &mut acks, &mut steps).await
            }
            Err(e) => Err(e),
        };
        if let (Ok(RunStatus::Cancelled | RunStatus::Superseded), Some(cp)) = (&result, head.id)
            && !head.next.is_empty()
            && !control.rollback.load(Ordering::SeqCst)
        {
            let payload = serde_json::to_vec(&TaskOutcome::Stopped).unwrap_or_default();
            let stopped = vec![PendingWrite { task_id: STOPPED_TASK.into(), payload }];
            acks.push(self.store.put_writes(&conversation, cp, stopped));
            head.next.clear();
            head.interrupts.clear();
        }
        let durable = futures::future::try_join_all(acks).await;
        let result = match (result, durable) {
            (Ok(s), Ok(_)) => Ok(s),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(EngineError::Store(e)),
        };
        let rolled_back = control.rollback.load(Ordering::SeqCst);
        if rolled_back {
            // The next run starts from where this one began; this run's checkpoints stay in history.
            head.loaded = false;
            head.rollback_to = Some(base);
        } else if result.is_err() {
            head.loaded = false;
        }
        *lock(&slot.active) = None;
        lock(&self.runs).remove(&*control.run_id);
        let result = result.map(|status| RunOutcome {
            run_id: control.run_id.to_string(),
            conversation_id: conversation.clone(),
            status: if rolled_back { RunStatus::RolledBack } else { status },
            checkpoint_id: head.id,
            state: head.state.clone(),
            interrupts: head.interrupts.clone(),
            steps,
        });
        record_run_span(&result, &head, written_before, new_conversation, &events, started);
        match &result {
            Ok(o) => events.emit(EventKind::RunFinished { status: o.status.as_str().into(), error: None }),
            Err(e) => {
                debug!(conversation_id = %conversation, error = %e, "run failed");
                events.emit(EventKind::RunFinished { status: "failed".into(), error: Some(e.to_string()) });
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_inner(
        &self,
        head: &mut Head,
        conversation: &str,
        input: Input,
        opts: &RunOptions,
        control: &RunControl,
        events: &EventSink,
        acks: &mut Vec<WriteAck>,
        steps: &mut u32,
    ) -> Result<RunStatus, EngineError> {
        self.ensure_loaded(head, conversation).await?;
        self.load_context(head, opts.customer_id.as_deref()).await?;
        let run_id = control.run_id.clone();
        let mut resume = None;
        let mut recovering = false;
        match input {
            Input::Message(update) => {
                if !head.next.is_empty() {
                    if !head.interrupts.is_empty() {
                        if !opts.supersede_interrupt {
                            return Err(EngineError::InterruptPending(conversation.to_string()));
                        }
                        head.interrupts.clear();
                    } else {
                        // A run died mid-turn: finish it before taking the new message.
                        warn!(conversation_id = %conversation, "resuming an unfinished run before the new message");
                        let status =
                            self.supersteps(head, conversation, opts, control, events, acks, None, true, steps).await?;
                        if status != RunStatus::Completed {
                            return Ok(status);
                        }
                    }
                }
                let id = head.max_id + 1;
                let mut patches = Vec::new();
                if events.active() {
                    events.emit(EventKind::Update { node: "__input__".into(), update: update.to_json() });
                }
                let changed = scoped_changes(&self.graph, &update);
                Arc::make_mut(&mut head.state)
                    .apply(update, id, &mut patches)
                    .map_err(|e| field_error(&self.graph, "__input__", e))?;
                let next = self.graph.entry_tasks(&head.state)?;
                self.write_checkpoint(head, conversation, &run_id, -1, &patches, next, acks).await?;
                self.save_context(head, changed, opts).await?;
            }
            Input::Resume(v) => {
                if head.interrupts.is_empty() {
                    return Err(EngineError::NothingToResume(conversation.to_string()));
                }
                resume = Some(v);
                recovering = true;
            }
            Input::Continue => {
                if head.next.is_empty() {
                    return Err(EngineError::NothingToResume(conversation.to_string()));
                }
                recovering = true;
            }
        }
        self.supersteps(head, conversation, opts, control, events, acks, resume, recovering, steps).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn supersteps(
        &self,
        head: &mut Head,
        conversation: &str,
        opts: &RunOptions,
        control: &RunControl,
        events: &EventSink,
        acks: &mut Vec<WriteAck>,
        mut resume: Option<Value>,
        mut recovering: bool,
        steps: &mut u32,
    ) -> Result<RunStatus, EngineError> {
        let graph = self.graph.clone();
        let conv: Arc<str> = conversation.into();
        let customer: Option<Arc<str>> = opts.customer_id.as_deref().map(Into::into);
        let mut step: u32 = 0;
        loop {
            if head.next.is_empty() {
                return Ok(RunStatus::Completed);
            }
            if control.cancel.is_cancelled() {
                return Ok(RunStatus::Cancelled);
            }
            if control.stop.is_cancelled() {
                return Ok(RunStatus::Superseded);
            }
            if step >= graph.step_limit {
                return Err(EngineError::StepLimit { conversation: conversation.to_string(), limit: graph.step_limit });
            }
            step += 1;
            *steps += 1;
            let cp = head.id.ok_or_else(|| EngineError::UnknownConversation(conversation.to_string()))?;
            let tasks = std::mem::take(&mut head.next);
            if events.active() {
                events.emit(EventKind::Step { step, tasks: tasks.iter().map(|t| t.node().to_string()).collect() });
            }
            let mut done: HashMap<String, TaskOutcome> = HashMap::new();
            if recovering {
                for w in self.store.pending_writes(conversation, cp).await? {
                    if let Ok(o) = serde_json::from_slice::<TaskOutcome>(&w.payload) {
                        done.insert(w.task_id, o);
                    }
                }
                recovering = false;
            }
            let resume_value = resume.take();
            let multi = tasks.len() > 1;
            let snapshot = head.state.clone();
            let mut futs = Vec::with_capacity(tasks.len());
            for (i, t) in tasks.iter().enumerate() {
                let task_id = format!("{cp}:{i}:{}", t.node());
                let spec = graph
                    .node(t.node())
                    .ok_or_else(|| EngineError::BadRoute { from: "(checkpoint)".into(), to: t.node().to_string() })?;
                let mut resume_for_task = None;
                match done.remove(&task_id) {
                    Some(TaskOutcome::Done { u, g }) => {
                        let update = Update { writes: u.into_iter().map(|(k, v)| (k.into(), v)).collect() };
                        let out = NodeOutput::Command(crate::Command { update, goto: g });
                        futs.push(futures::future::ready((task_id, Ok(out), None)).boxed());
                        continue;
                    }
                    Some(TaskOutcome::Interrupted { .. }) => resume_for_task = resume_value.clone(),
                    Some(TaskOutcome::Stopped) | None => {}
                }
                let ctx = NodeContext {
                    conversation_id: conv.clone(),
                    run_id: control.run_id.clone(),
                    node: spec.name.clone(),
                    task_id: task_id.clone().into(),
                    item: match t {
                        TaskSpec::Item { i, .. } => Some(i.clone()),
                        TaskSpec::Plain(_) => None,
                    },
                    resume: resume_for_task,
                    attempt: 1,
                    events: events.clone(),
                    cancel: control.cancel.child_token(),
                    customer_id: customer.clone(),
                };
                let store = self.store.clone();
                let fut = execute(spec, snapshot.clone(), ctx);
                let conv_s = conversation.to_string();
                futs.push(
                    async move {
                        let res = fut.await;
                        // In a parallel step, each finished task is kept so a crash does not redo it.
                        let ack = match (&res, multi) {
                            (Ok(out), true) => {
                                let (u, g) = match out {
                                    NodeOutput::Update(u) => (u, &[][..]),
                                    NodeOutput::Command(c) => (&c.update, &c.goto[..]),
                                };
                                let payload = serde_json::to_vec(&TaskOutcome::Done {
                                    u: u.writes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
                                    g: g.to_vec(),
                                })
                                .unwrap_or_default();
                                Some(store.put_writes(
                                    &conv_s,
                                    cp,
                                    vec![PendingWrite { task_id: task_id.clone(), payload }],
                                ))
                            }
                            _ => None,
                        };
                        (task_id, res, ack)
                    }
                    .boxed(),
                );
            }
            drop(snapshot);
            let results = tokio::select! {
                biased;
                _ = control.cancel.cancelled() => return Ok(RunStatus::Cancelled),
                r = futures::future::join_all(futs) => r,
            };
            let mut outputs = Vec::with_capacity(results.len());
            let mut interrupts = Vec::new();
            let mut failure = None;
            for ((task_id, res, ack), t) in results.into_iter().zip(&tasks) {
                if let Some(a) = ack {
                    acks.push(a);
                }
                match res {
                    Ok(out) => outputs.push((t.node().to_string(), out)),
                    Err(NodeError::Interrupted(payload)) => {
                        interrupts.push(InterruptInfo { task_id, node: t.node().to_string(), payload })
                    }
                    Err(e) => {
                        if failure.is_none() {
                            failure = Some((t.node().to_string(), e));
                        }
                    }
                }
            }
            if failure.is_some() || !interrupts.is_empty() {
                // The step does not complete: its checkpoint stays the head, with the same tasks next.
                head.next = tasks;
                if !interrupts.is_empty() {
                    let writes = interrupts
                        .iter()
                        .map(|i| PendingWrite {
                            task_id: i.task_id.clone(),
                            payload: serde_json::to_vec(&TaskOutcome::Interrupted {
                                node: i.node.clone(),
                                payload: i.payload.clone(),
                            })
                            .unwrap_or_default(),
                        })
                        .collect();
                    acks.push(self.store.put_writes(conversation, cp, writes));
                    for i in &interrupts {
                        events.emit(EventKind::Interrupt { node: i.node.clone(), payload: i.payload.clone() });
                    }
                    head.interrupts = interrupts;
                }
                if let Some((node, source)) = failure {
                    return Err(EngineError::Node { node, source });
                }
                return Ok(RunStatus::Interrupted);
            }
            head.interrupts.clear();
            let id = head.max_id + 1;
            if multi {
                check_conflicts(&graph, &outputs)?;
            }
            let mut patches = Vec::new();
            let mut gotos = Vec::with_capacity(outputs.len());
            let mut changed = Map::new();
            {
                let state = Arc::make_mut(&mut head.state);
                for (node, out) in outputs {
                    let (update, goto) = match out {
                        NodeOutput::Update(u) => (u, Vec::new()),
                        NodeOutput::Command(c) => (c.update, c.goto),
                    };
                    if events.active() {
                        events.emit(EventKind::Update { node: node.clone(), update: update.to_json() });
                    }
                    changed.extend(scoped_changes(&graph, &update));
                    state.apply(update, id, &mut patches).map_err(|e| field_error(&graph, &node, e))?;
                    gotos.push((node, goto));
                }
            }
            let mut next = Vec::new();
            for (node, goto) in &gotos {
                graph.successors(node, goto, &head.state, &mut next)?;
            }
            let run_id = control.run_id.clone();
            self.write_checkpoint(head, conversation, &run_id, i64::from(step) - 1, &patches, next, acks).await?;
            // Scoped fields take their value after the whole step.
            let changed =
                changed.into_iter().filter_map(|(k, _)| head.state.get(&k).map(|v| (k.clone(), v.clone()))).collect();
            self.save_context(head, changed, opts).await?;
            if opts.stream_values && events.active() {
                events.emit(EventKind::Values { state: head.state.to_json() });
            }
        }
    }

    async fn save_context(
        &self,
        head: &Head,
        changed: Map<String, Value>,
        opts: &RunOptions,
    ) -> Result<(), EngineError> {
        let Some(ctx) = &self.context else { return Ok(()) };
        if changed.is_empty() {
            return Ok(());
        }
        let schema = &head.state.schema;
        let mut customer = Map::new();
        let mut assistant = Map::new();
        for (k, v) in changed {
            match schema.index(&k).map(|i| schema.fields[i].scope) {
                Some(Scope::Customer) => {
                    customer.insert(k, v);
                }
                Some(Scope::Assistant) => {
                    assistant.insert(k, v);
                }
                _ => {}
            }
        }
        if !assistant.is_empty() {
            ctx.save(Scope::Assistant, &self.config.assistant_id, assistant).await?;
        }
        if let (false, Some(c)) = (customer.is_empty(), &opts.customer_id) {
            ctx.save(Scope::Customer, c, customer).await?;
        }
        Ok(())
    }

    /// Encodes and orders the write of the next checkpoint; advances the head.
    #[allow(clippy::too_many_arguments)]
    async fn write_checkpoint(
        &self,
        head: &mut Head,
        conversation: &str,
        run_id: &str,
        step: i64,
        patches: &[Patch],
        next: Vec<TaskSpec>,
        acks: &mut Vec<WriteAck>,
    ) -> Result<u64, EngineError> {
        let id = head.max_id + 1;
        let snapshot =
            head.id.is_none() || head.force_snapshot || head.chain_len + 1 >= self.config.snapshot_every.max(1);
        let schema = head.state.schema.clone();
        let mut buf = Vec::with_capacity(128 + patches.len() * 64);
        buf.push(b'{');
        if !next.is_empty() {
            buf.extend_from_slice(b"\"n\":");
            serde_json::to_writer(&mut buf, &next).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            buf.push(b',');
        }
        let mut field_bytes = head.field_bytes.clone();
        if snapshot {
            buf.extend_from_slice(b"\"s\":{");
            let mut first = true;
            for (i, f) in schema.fields.iter().enumerate() {
                if f.scope != Scope::Conversation {
                    continue;
                }
                if !first {
                    buf.push(b',');
                }
                first = false;
                write_json_str(&mut buf, &f.name);
                buf.push(b':');
                let start = buf.len();
                serde_json::to_writer(&mut buf, &head.state.values[i])
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                field_bytes[i] = buf.len() - start;
            }
            buf.push(b'}');
        } else {
            buf.extend_from_slice(b"\"p\":[");
            for (k, p) in patches.iter().enumerate() {
                if k > 0 {
                    buf.push(b',');
                }
                let start = buf.len();
                serde_json::to_writer(&mut buf, p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if let Some(i) = schema.index(p.field()) {
                    let n = buf.len() - start;
                    match p {
                        Patch::Set { .. } => field_bytes[i] = n,
                        _ => field_bytes[i] += n,
                    }
                }
            }
            buf.push(b']');
        }
        if buf.last() == Some(&b',') {
            buf.pop();
        }
        buf.push(b'}');
        let total: usize = field_bytes.iter().sum();
        if total > self.config.max_state_bytes {
            return Err(EngineError::StateTooLarge {
                conversation: conversation.to_string(),
                bytes: total,
                limit: self.config.max_state_bytes,
            });
        }
        let record = CheckpointRecord {
            conversation_id: conversation.to_string(),
            id,
            parent: head.id,
            run_id: run_id.to_string(),
            step,
            created_at_ms: now_ms(),
            schema_version: schema.version,
            snapshot,
            payload: buf,
        };
        head.written = (head.written.0 + 1, head.written.1 + record.payload.len() as u64);
        let ack = self.store.put(record);
        match self.config.durability {
            Durability::Sync => ack.await?,
            Durability::Async => acks.push(ack),
        }
        head.id = Some(id);
        head.max_id = id;
        head.next = next;
        head.field_bytes = field_bytes;
        head.force_snapshot = false;
        head.chain_len = if snapshot { 0 } else { head.chain_len + 1 };
        Ok(id)
    }
}

fn field_error(graph: &Graph, node: &str, e: crate::error::ReducerError) -> EngineError {
    if graph.schema.index(&e.field).is_none() {
        EngineError::UnknownField { node: node.to_string(), field: e.field }
    } else {
        EngineError::Reducer(e)
    }
}

fn scoped_changes(graph: &Graph, update: &Update) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, _) in &update.writes {
        if let Some(i) = graph.schema.index(k)
            && matches!(graph.schema.fields[i].scope, Scope::Customer | Scope::Assistant)
        {
            m.insert(k.to_string(), Value::Null);
        }
    }
    m
}

fn check_conflicts(graph: &Graph, outputs: &[(String, NodeOutput)]) -> Result<(), EngineError> {
    let mut writers: HashMap<&str, Vec<&str>> = HashMap::new();
    for (node, out) in outputs {
        let u = match out {
            NodeOutput::Update(u) => u,
            NodeOutput::Command(c) => &c.update,
        };
        for (k, _) in &u.writes {
            let list = writers.entry(k.as_ref()).or_default();
            if !list.contains(&node.as_str()) {
                list.push(node);
            }
        }
    }
    for (field, nodes) in writers {
        let replace =
            graph.schema.index(field).is_some_and(|i| matches!(graph.schema.fields[i].reducer, Reducer::Replace));
        if replace && nodes.len() > 1 {
            return Err(EngineError::ConflictingUpdate {
                field: field.to_string(),
                nodes: nodes.into_iter().map(String::from).collect(),
            });
        }
    }
    Ok(())
}

/// Records a run's outcome on its `turn` span (the current span of the run's task): its status,
/// the handler that answered (the graph's `handler` field, when it has one: the convention the
/// metrics read "turns by handler" from), the time to its first streamed token, the checkpoints
/// it wrote, and whether it was the conversation's first.
fn record_run_span(
    result: &Result<RunOutcome, EngineError>,
    head: &Head,
    written_before: (u64, u64),
    new_conversation: bool,
    events: &EventSink,
    started: std::time::Instant,
) {
    let span = tracing::Span::current();
    match result {
        Ok(o) => {
            span.record("switchboard.run.status", o.status.as_str());
            if let Some(h) = o.state.get_str("handler") {
                span.record("switchboard.handler", h);
            }
        }
        Err(e) => {
            span.record("switchboard.run.status", "failed");
            span.record("otel.status_code", "error");
            span.record("otel.status_description", e.to_string().as_str());
        }
    }
    if let Some(t) = events.first_token() {
        span.record("switchboard.ttft_ms", t.saturating_duration_since(started).as_secs_f64() * 1000.0);
    }
    span.record("switchboard.checkpoint.count", head.written.0.saturating_sub(written_before.0));
    span.record("switchboard.checkpoint.bytes", head.written.1.saturating_sub(written_before.1));
    span.record("switchboard.conversation.new", new_conversation);
}

/// Runs one node with its timeout and retry policy; a panic becomes a failure.
fn execute(spec: &NodeSpec, state: Arc<State>, mut ctx: NodeContext) -> BoxFuture<'static, NodeResult> {
    let options = spec.options.clone();
    let kind = match &spec.kind {
        NodeKind::Func(f) => Ok(f.clone()),
        NodeKind::Subgraph(g) => Err(g.clone()),
    };
    let span = tracing::info_span!(
        "switchboard.node",
        otel.name = %format_args!("node {}", ctx.node),
        switchboard.node = %ctx.node,
        switchboard.attempts = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    let traced = span.clone();
    let fut = async move {
        let mut attempt = 1;
        loop {
            ctx.attempt = attempt;
            let fut = match &kind {
                Ok(f) => f.run(NodeInput { state: state.clone(), ctx: ctx.clone() }),
                Err(g) => run_subgraph(g.clone(), state.clone(), ctx.clone()),
            };
            let fut = AssertUnwindSafe(fut).catch_unwind();
            let res = match options.timeout {
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r,
                    Err(_) => Ok(Err(NodeError::Timeout(t))),
                },
                None => fut.await,
            };
            let res = res.unwrap_or_else(|_| Err(NodeError::failed(format!("node `{}` panicked", ctx.node))));
            match res {
                Err(e) if e.is_retryable() && attempt < options.retry.max_attempts => {
                    warn!(node = %ctx.node, attempt, error = %e, "node failed, retrying");
                    tokio::select! {
                        _ = ctx.cancel.cancelled() => return Err(NodeError::Cancelled),
                        _ = tokio::time::sleep(options.retry.backoff(attempt)) => {}
                    }
                    attempt += 1;
                }
                r => {
                    traced.record("switchboard.attempts", attempt);
                    // A node that pauses on an interrupt has not failed.
                    if let Err(e) = &r
                        && !matches!(e, NodeError::Interrupted(_))
                    {
                        traced.record("otel.status_code", "error");
                        traced.record("otel.status_description", e.to_string().as_str());
                    }
                    return r;
                }
            }
        }
    };
    Box::pin(fut.instrument(span))
}

/// Runs a subgraph inside one node of its parent; its writes, in order, become the node's update.
fn run_subgraph(graph: Arc<Graph>, state: Arc<State>, ctx: NodeContext) -> BoxFuture<'static, NodeResult> {
    Box::pin(async move {
        let mut local = state;
        let mut collected = Update::new();
        let mut tasks = graph.entry_tasks(&local).map_err(|e| NodeError::failed(e.to_string()))?;
        let mut steps = 0;
        while !tasks.is_empty() {
            steps += 1;
            if steps > graph.step_limit {
                return Err(NodeError::failed(format!("subgraph `{}` reached its step limit", ctx.node)));
            }
            let mut futs = Vec::with_capacity(tasks.len());
            for (i, t) in tasks.iter().enumerate() {
                let spec =
                    graph.node(t.node()).ok_or_else(|| NodeError::failed(format!("unknown node {}", t.node())))?;
                let mut c = ctx.child(t.node());
                c.task_id = format!("{}:{steps}:{i}", c.task_id).into();
                c.item = match t {
                    TaskSpec::Item { i, .. } => Some(i.clone()),
                    TaskSpec::Plain(_) => None,
                };
                futs.push(execute(spec, local.clone(), c));
            }
            let outs = futures::future::join_all(futs).await;
            let mut gotos = Vec::new();
            {
                let st = Arc::make_mut(&mut local);
                for (out, t) in outs.into_iter().zip(&tasks) {
                    let (update, goto) = match out? {
                        NodeOutput::Update(u) => (u, Vec::new()),
                        NodeOutput::Command(c) => (c.update, c.goto),
                    };
                    if ctx.events.active() {
                        ctx.events.emit(EventKind::Update {
                            node: format!("{}/{}", ctx.node, t.node()),
                            update: update.to_json(),
                        });
                    }
                    st.apply(update.clone(), 0, &mut Vec::new()).map_err(|e| NodeError::failed(e.to_string()))?;
                    collected.extend(update);
                    gotos.push((t.node().to_string(), goto));
                }
            }
            let mut next = Vec::new();
            for (node, goto) in &gotos {
                graph.successors(node, goto, &local, &mut next).map_err(|e| NodeError::failed(e.to_string()))?;
            }
            tasks = next;
        }
        Ok(NodeOutput::Update(collected))
    })
}
