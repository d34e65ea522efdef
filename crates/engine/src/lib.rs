//! The conversation engine: state and reducers, the graph of nodes and edges, the run loop,
//! interrupts and resume, checkpoints (through the [`CheckpointStore`] trait) and streaming events.
//!
//! It must not know about HTTP, SQL or any LLM vendor.
