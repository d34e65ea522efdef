//! Streaming events of a run, fanned out to any number of subscribers.
//!
//! Events are built only while someone listens, so an unobserved run pays nothing for them.

use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

/// One event of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The run that produced it.
    pub run_id: Arc<str>,
    /// Position in the run's stream, from 1.
    pub seq: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The run began.
    RunStarted {
        /// Conversation id.
        conversation_id: String,
    },
    /// A superstep is about to run these tasks (debug).
    Step {
        /// Step number within the run.
        step: u32,
        /// Node names, in merge order.
        tasks: Vec<String>,
    },
    /// A node finished and wrote this update.
    Update {
        /// Node name.
        node: String,
        /// Its writes as a JSON object.
        update: Value,
    },
    /// The full state after a step.
    Values {
        /// All fields.
        state: Value,
    },
    /// An LLM token delta.
    Token {
        /// Node name.
        node: String,
        /// Text delta.
        delta: String,
    },
    /// A node's custom event.
    Custom {
        /// Node name.
        node: String,
        /// Payload.
        value: Value,
    },
    /// A node asked for a value; the run pauses.
    Interrupt {
        /// Node name.
        node: String,
        /// What the node asked.
        payload: Value,
    },
    /// A checkpoint was written (debug).
    Checkpoint {
        /// Its id.
        id: u64,
        /// Step within the run (-1 for the input checkpoint).
        step: i64,
    },
    /// The run ended.
    RunFinished {
        /// Final status (`completed`, `interrupted`, `cancelled`, `superseded`, `failed`).
        status: String,
        /// The error, when failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// The sending side of a run's event stream.
#[derive(Clone)]
pub struct EventSink {
    inner: Option<Arc<SinkInner>>,
}

struct SinkInner {
    run_id: Arc<str>,
    capacity: usize,
    // Created by the first subscriber: an unobserved run allocates no channel at all.
    tx: OnceLock<broadcast::Sender<Event>>,
    seq: AtomicU64,
    /// When the run emitted its first token (observed or not): the turn's time to first token.
    first_token: OnceLock<std::time::Instant>,
}

impl EventSink {
    /// A sink that drops everything.
    pub fn disabled() -> Self {
        Self { inner: None }
    }
    /// Notes that a token is being emitted (observed or not): the first one times the turn.
    pub(crate) fn note_token(&self) {
        if let Some(i) = &self.inner {
            i.first_token.get_or_init(std::time::Instant::now);
        }
    }
    /// When the first token was emitted, if one was.
    pub(crate) fn first_token(&self) -> Option<std::time::Instant> {
        self.inner.as_ref().and_then(|i| i.first_token.get().copied())
    }
    pub(crate) fn new(run_id: Arc<str>, capacity: usize) -> Self {
        Self {
            inner: Some(Arc::new(SinkInner {
                run_id,
                capacity: capacity.max(16),
                tx: OnceLock::new(),
                seq: AtomicU64::new(0),
                first_token: OnceLock::new(),
            })),
        }
    }
    /// Whether anyone listens.
    pub fn active(&self) -> bool {
        self.inner.as_ref().and_then(|i| i.tx.get()).is_some_and(|tx| tx.receiver_count() > 0)
    }
    /// A new subscriber, seeing events from now on.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Event>> {
        self.inner.as_ref().map(|i| i.tx.get_or_init(|| broadcast::channel(i.capacity).0).subscribe())
    }
    /// Sends an event to current subscribers.
    pub fn emit(&self, kind: EventKind) {
        let Some(i) = &self.inner else { return };
        let Some(tx) = i.tx.get() else { return };
        if tx.receiver_count() == 0 {
            return;
        }
        let seq = i.seq.fetch_add(1, Ordering::Relaxed) + 1;
        // No subscriber left is not an error: events are best-effort for live listeners.
        let _ = tx.send(Event { run_id: i.run_id.clone(), seq, kind });
    }
}
