//! Errors of the engine, the graph builder, nodes and stores.
//!
//! One variant per case a caller acts on; every message says what is wrong and where.

use serde_json::Value;
use std::time::Duration;

/// An error while building a graph: the graph is refused, nothing runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A node was declared twice.
    #[error("node `{0}` is declared more than once")]
    DuplicateNode(String),
    /// A node name is reserved or empty.
    #[error("`{0}` is not a valid node name (empty, reserved, or contains '/')")]
    InvalidNodeName(String),
    /// An edge names a node that does not exist.
    #[error("edge {from} -> {to}: unknown node `{unknown}`")]
    UnknownNode {
        /// Source of the edge.
        from: String,
        /// Target of the edge.
        to: String,
        /// The name that is not a node.
        unknown: String,
    },
    /// Nothing leaves START.
    #[error("the graph has no entry: add an edge from START")]
    NoEntry,
    /// A node cannot be reached from START.
    #[error("node `{0}` cannot be reached from START")]
    Unreachable(String),
    /// A node has no way out (no edge, branch or declared goto).
    #[error("node `{0}` has no outgoing edge: add an edge (to END if it finishes the turn)")]
    MissingEdge(String),
    /// A field named by the schema is declared twice.
    #[error("state field `{0}` is declared more than once")]
    DuplicateField(String),
    /// The step limit must be at least one.
    #[error("step limit must be at least 1")]
    ZeroStepLimit,
}

/// Why a node did not produce an update.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The node asked a human (or the caller) for a value; the run pauses durably.
    #[error("interrupted")]
    Interrupted(Value),
    /// The node failed; `retryable` says whether its retry policy may run it again.
    #[error("{message}")]
    Failed {
        /// What went wrong, for logs and the caller.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
    },
    /// The node ran longer than its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The run was cancelled while the node ran.
    #[error("cancelled")]
    Cancelled,
}

impl NodeError {
    /// A permanent failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed { message: message.into(), retryable: false }
    }
    /// A failure that the node's retry policy may retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Failed { message: message.into(), retryable: true }
    }
    /// Whether a retry policy may run the node again after this error.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Failed { retryable: true, .. } | Self::Timeout(_))
    }
}

/// An error from a reducer applying an update to a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct ReducerError {
    /// The field being updated.
    pub field: String,
    /// Why the update does not fit the field's reducer.
    pub reason: String,
}

/// An error from a checkpoint or context store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A checkpoint with this id already exists (another writer got there first).
    #[error("checkpoint {id} of conversation `{conversation}` already exists")]
    Conflict {
        /// Conversation id.
        conversation: String,
        /// Checkpoint id.
        id: u64,
    },
    /// The backend is unreachable or failed; the write did not happen.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back.
    #[error("corrupt data in store: {0}")]
    Corrupt(String),
    /// The write carried a lease's fencing token and the conversation's lease has moved on to a
    /// newer token (or the writer holds none): the writer lost the conversation; nothing was written.
    #[error("write to conversation `{conversation}` fenced off: lease token {token} is stale")]
    Fenced {
        /// Conversation id.
        conversation: String,
        /// The stale token the write carried (0: none).
        token: u64,
    },
}

/// Everything a caller of the engine can be told.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such conversation (nothing stored under this id).
    #[error("unknown conversation `{0}`")]
    UnknownConversation(String),
    /// No such checkpoint in this conversation.
    #[error("conversation `{conversation}` has no checkpoint {id}")]
    UnknownCheckpoint {
        /// Conversation id.
        conversation: String,
        /// Checkpoint id asked for.
        id: u64,
    },
    /// No such run is active.
    #[error("no active run `{0}`")]
    UnknownRun(String),
    /// A run is in flight and the conversation's double-text strategy is `reject`.
    #[error("conversation `{conversation}` is busy with run {run_id}")]
    Busy {
        /// Conversation id.
        conversation: String,
        /// The run in flight.
        run_id: String,
    },
    /// The conversation waits for a resume value; a new message would drop it.
    #[error("conversation `{0}` has a pending interrupt: resume it, or start with supersede_interrupt")]
    InterruptPending(String),
    /// Resume was called but nothing is waiting.
    #[error("conversation `{0}` has nothing to resume")]
    NothingToResume(String),
    /// A node failed after its retries.
    #[error("node `{node}` failed: {source}")]
    Node {
        /// The node's name (with its subgraph namespace).
        node: String,
        /// The last error.
        source: NodeError,
    },
    /// A node or branch routed to a node that does not exist.
    #[error("node `{from}` routed to unknown node `{to}`")]
    BadRoute {
        /// Where the route came from.
        from: String,
        /// The unknown target.
        to: String,
    },
    /// An update did not fit a field.
    #[error(transparent)]
    Reducer(#[from] ReducerError),
    /// An update wrote a field the schema does not have.
    #[error("node `{node}` wrote unknown state field `{field}`")]
    UnknownField {
        /// The writing node.
        node: String,
        /// The unknown field.
        field: String,
    },
    /// Two parallel nodes wrote one `replace` field in the same step.
    #[error("nodes {nodes:?} wrote field `{field}` in the same step; give it a reducer")]
    ConflictingUpdate {
        /// The field.
        field: String,
        /// The nodes that wrote it.
        nodes: Vec<String>,
    },
    /// The run went through more supersteps than the graph allows.
    #[error("step limit of {limit} reached in conversation `{conversation}`; progress is checkpointed")]
    StepLimit {
        /// Conversation id.
        conversation: String,
        /// The limit.
        limit: u32,
    },
    /// The state grew beyond the configured limit; the step was not checkpointed.
    #[error("state of conversation `{conversation}` would be {bytes} bytes, over the limit of {limit}")]
    StateTooLarge {
        /// Conversation id.
        conversation: String,
        /// Size the state would have had.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A checkpoint was written by a newer schema than this assistant knows.
    #[error("checkpoint {id} of `{conversation}` has schema version {found}; this build supports up to {supported}")]
    FutureSchema {
        /// Conversation id.
        conversation: String,
        /// Checkpoint id.
        id: u64,
        /// Version found in the checkpoint.
        found: u32,
        /// Version of the running schema.
        supported: u32,
    },
    /// A schema migration is missing or failed.
    #[error("cannot migrate state from schema version {from}: {reason}")]
    Migration {
        /// The version being migrated from.
        from: u32,
        /// What went wrong.
        reason: String,
    },
    /// A checkpoint cannot be decoded.
    #[error("checkpoint {id} of `{conversation}` is corrupt: {reason}")]
    CorruptCheckpoint {
        /// Conversation id.
        conversation: String,
        /// Checkpoint id.
        id: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The engine is shutting down.
    #[error("engine is shutting down")]
    ShuttingDown,
}
