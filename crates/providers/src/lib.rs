//! The LLM provider layer: one [`ChatModel`] trait over every vendor Switchboard talks to.
//!
//! What this crate owns:
//! - vendor-neutral request, response and stream-event types ([`types`], [`event`]) and one
//!   shared [`Accumulator`] that assembles a streamed turn, so every adapter agrees on what a
//!   complete tool call is;
//! - a typed [`ProviderError`] that always says which vendor, which status and whether a retry
//!   can help;
//! - thin adapters over `reqwest` + `serde`, one module per vendor, each behind a cargo feature;
//!   their wire types stay private to the vendor module;
//! - composable resilience layers ([`resilience`]): timeouts, retries with backoff and jitter,
//!   circuit breaker, fallback chains, concurrency limits, per-tenant token buckets;
//! - usage normalisation, a price table and budgets ([`cost`]).
//!
//! What it must not know: the engine's conversation state, HTTP serving, storage.
//!
//! Key design decision: adapters only translate; everything that is policy (retrying, falling
//! back, limiting, costing) is a layer that wraps any [`ChatModel`], so the same policy applies
//! to every vendor and can be tested once against scripted models.
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "bedrock")]
pub mod bedrock;
pub mod config;
pub mod cost;
pub mod error;
pub mod event;
mod http;
pub mod model;
pub mod resilience;
pub mod schema;
pub mod secret;
pub mod sse;
pub mod structured;
pub mod trace;
pub mod types;
#[cfg(feature = "vertex")]
pub mod vertex;

#[cfg(feature = "anthropic")]
pub mod anthropic;
#[cfg(feature = "openai")]
pub mod openai;

pub use error::ProviderError;
pub use event::{Accumulator, EventStream, StreamEvent};
pub use model::{BoxChatModel, Capabilities, ChatModel, DynChatModel, ModelId};
pub use secret::Secret;
pub use tokio_util::sync::CancellationToken;
pub use types::{
    ChatRequest, ChatResponse, FinishReason, Message, Part, RequestMetadata, ResponseFormat, Role, ToolCall,
    ToolChoice, ToolDefinition, ToolResult, Usage,
};
