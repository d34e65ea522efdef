//! Test kit: wire-faithful fake LLM vendor servers and the adapter conformance suite.
//!
//! Each fake speaks one vendor's exact wire format (streaming included), is scriptable
//! ([`Scenario`]: replies, tool calls, latency, token pacing) and injects faults ([`Fault`]:
//! error statuses with `retry-after`, stalls, malformed chunks, mid-stream errors, cut
//! connections). Every request is recorded for assertions. With no script a fake answers every
//! request with a short default reply, so `switchboard fake-llm` works for offline development.
//!
//! The fakes share nothing with the adapters in `switchboard-providers`: their wire types are
//! written separately from the vendor documentation, so an adapter bug cannot hide behind a
//! matching fake bug. The official vendor SDKs are the final judge (`tests/python/providers`).
//!
//! Control endpoints on every fake: `POST /_fake/script` (a JSON array of scenarios, appended),
//! `GET /_fake/requests` (recorded requests), `POST /_fake/reset`.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bench;
pub mod body;
pub mod conformance;
pub mod python;
pub mod script;
pub mod server;
pub mod vendor;

#[cfg(test)]
mod tests;

mod anthropic;
pub mod bedrock;
mod openai;
pub mod vertex;

pub use script::{Fault, RecordedRequest, Reply, Scenario, ScriptedToolCall, ScriptedUsage};
pub use server::{FakeError, FakeServer, FakeState, router, serve};
pub use vendor::Vendor;
