//! The reference assistant: customer support for a crypto exchange, running offline on the
//! embedded defaults (and with a vendor LLM when one is configured).
//!
//! It owns the assistant's declarative config ([`config`], `assistants/exchange-support/assistant.toml`),
//! the fake exchange its tools run against ([`backend`]), the flows ([`flows`]), the help centre
//! ([`faq`]), the router's training and cache ([`routing`]), the human handoff lifecycle
//! ([`handoff`]), the agent desk's HTTP endpoints ([`desk`]), what a turn did ([`observed`]) and
//! the recording and replay of turns as cassettes ([`cassette`]). [`graph`] compiles all of it into
//! one engine graph; [`Runtime`] is what clients (the terminal chat, tests, the desk) drive.
//!
//! It must not know how the engine stores checkpoints or how the server authenticates beyond its
//! public API. Key design decision: the config deserializes into public structs
//! ([`config::AssistantSpec`]), so anything the file says can be said in Rust, and both go through
//! the same validation.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod assistant;
pub mod backend;
pub mod cassette;
pub mod config;
pub mod desk;
pub mod faq;
pub mod flows;
pub mod graph;
pub mod handoff;
pub mod llm;
pub mod nlu;
pub mod observed;
pub mod routing;

pub use assistant::{AssistantError, AssistantOptions, ExchangeAssistant, Runtime, TurnView};
pub use backend::{FakeExchange, ToolBackend, ToolCall, ToolError};
pub use config::{AssistantSpec, ConfigError};
pub use handoff::{Desk, Handoff, HandoffStatus};
