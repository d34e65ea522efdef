//! The distributed runtime: stateless replicas share one PostgreSQL database.
//!
//! - [`queue`]: accepting a message inserts it and enqueues its run in one transaction; workers on
//!   any replica claim runs with `FOR UPDATE SKIP LOCKED`, one run per conversation at a time and
//!   in order; a sweeper re-queues runs whose lease expired; a run that keeps failing goes to a
//!   dead-letter state without holding up other conversations.
//! - [`worker`]: claims a run, takes the conversation's lease (fencing token), runs the engine on a
//!   [`FencedStore`](switchboard_store::FencedStore) so a worker that lost the lease cannot write,
//!   heartbeats the lease, writes the reply to the outbox and marks the run done in one fenced
//!   transaction.
//! - [`effects`]: the effect journal. A tool call's result is journaled under the engine's
//!   idempotency key before the step completes; a resumed run reads it instead of calling again.

pub mod effects;
pub mod queue;
pub mod worker;

pub use effects::EffectJournal;
pub use effects::EffectStats;
pub use queue::{Accepted, ClaimedRun, Queue, QueueConfig};
pub use worker::{Assistant, Executed, Worker, WorkerConfig, WorkerStats};

/// What the runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The database failed or is unreachable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The worker's lease moved on: it lost the conversation and wrote nothing.
    #[error("conversation `{0}`: lease lost (fenced off)")]
    Fenced(String),
    /// A side effect failed.
    #[error("effect `{key}` failed: {reason}")]
    Effect {
        /// Idempotency key of the effect.
        key: String,
        /// Why.
        reason: String,
    },
    /// The engine failed the run.
    #[error(transparent)]
    Engine(#[from] switchboard_engine::EngineError),
}

impl From<sqlx::Error> for RuntimeError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<switchboard_engine::StoreError> for RuntimeError {
    fn from(e: switchboard_engine::StoreError) -> Self {
        match e {
            switchboard_engine::StoreError::Fenced { conversation, .. } => Self::Fenced(conversation),
            other => Self::Unavailable(other.to_string()),
        }
    }
}
