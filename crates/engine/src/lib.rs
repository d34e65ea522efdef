//! The conversation engine: state and reducers, the graph of nodes and edges, the run loop,
//! interrupts and resume, checkpoints (through the [`CheckpointStore`] trait) and streaming events.
//!
//! It must not know about HTTP, SQL or any LLM vendor: stores implement [`CheckpointStore`] and
//! [`ContextStore`] in `switchboard-store`.
//!
//! Key design decision: a conversation's state is data (a document of fields with reducers), and
//! every reduction yields a reducer-independent [`Patch`]. Checkpoints store patches between
//! periodic snapshots, so a turn's storage grows with what it changed, and any checkpoint can be
//! rebuilt (time travel) without running user code.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use switchboard_engine::*;
//!
//! # tokio_test_block_on(async {
//! let schema = Arc::new(Schema::builder()
//!     .field(Field::new("messages").reducer(Reducer::Messages))
//!     .field(Field::new("turns").reducer(Reducer::Counter))
//!     .build()?);
//! let graph = GraphBuilder::new(schema)
//!     .node("echo", |input: NodeInput| async move {
//!         let last = input.state.get_array("messages").last().cloned().unwrap_or_default();
//!         Ok(Update::new()
//!             .set("messages", json!({"role": "assistant", "text": last["text"]}))
//!             .set("turns", 1)
//!             .into())
//!     })
//!     .edge(START, "echo")
//!     .edge("echo", END)
//!     .build()?;
//! let engine = Engine::new(graph, Arc::new(MemoryStore::new()), EngineConfig::default());
//! let out = engine.invoke("c1", Update::new().set("messages", json!({"role": "user", "text": "hi"}))).await?;
//! assert_eq!(out.state.get("turns"), Some(&json!(1)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod checkpoint;
mod engine;
mod error;
mod events;
mod graph;
mod ids;
mod node;
mod state;

pub use checkpoint::{
    CheckpointBody, CheckpointRecord, CheckpointStore, ContextStore, MemoryStore, PendingWrite, WriteAck,
};
pub use engine::{
    CheckpointInfo, DEFAULT_MAX_STATE_BYTES, DEFAULT_SNAPSHOT_EVERY, DoubleText, Durability, Engine, EngineConfig,
    Input, InterruptInfo, RunHandle, RunOptions, RunOutcome, RunStatus,
};
pub use error::{EngineError, GraphError, NodeError, ReducerError, StoreError};
pub use events::{Event, EventKind, EventSink};
pub use graph::{DEFAULT_STEP_LIMIT, END, Graph, GraphBuilder, START, TaskSpec};
pub use ids::new_run_id;
pub use node::{Branch, Command, Goto, Node, NodeContext, NodeInput, NodeOptions, NodeOutput, NodeResult, RetryPolicy};
pub use state::{
    CustomReduce, Field, Migration, Patch, Reducer, Schema, SchemaBuilder, Scope, State, Update, new_message_id,
};
