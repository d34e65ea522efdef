//! Interoperability of Switchboard with other agent frameworks and clients:
//!
//! * [`openai`]: an OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`, so any
//!   OpenAI client library can chat with an assistant;
//! * [`a2a`]: every assistant as an A2A agent (Agent Card, JSON-RPC, SSE), and the "remote agent"
//!   handler that delegates a turn to an external A2A agent (ADK, LangGraph, ...).
//!
//! It must not know how an assistant works inside: like the server, it sees assistants through
//! [`switchboard_server::AppState`] and runs turns through the server's recorded turn machinery, so
//! a turn that arrives over A2A or the OpenAI facade is stored, streamed and resumable exactly like
//! a native one.
//!
//! Key design decision: [`routes`] is a plain axum router over the server's state, merged into the
//! app with [`switchboard_server::app_with`], so every protocol endpoint sits behind the same
//! middleware (request ids, body limit, timeout, metrics) as the native API.

pub mod a2a;
pub mod openai;
mod turn;

use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;
use switchboard_server::AppState;

/// The protocol endpoints over the server's state: OpenAI-compatible chat completions and models,
/// the A2A agent cards and JSON-RPC endpoints.
pub fn routes(state: AppState) -> Router<AppState> {
    let a2a = Arc::new(a2a::server::A2a::new(state.clone()));
    let a2a_routes = Router::new()
        .route("/.well-known/agent-card.json", get(a2a::server::default_card))
        .route("/.well-known/agent.json", get(a2a::server::default_card))
        .route("/a2a/{assistant}/.well-known/agent-card.json", get(a2a::server::assistant_card))
        .route("/a2a/{assistant}/.well-known/agent.json", get(a2a::server::assistant_card))
        .route("/a2a/{assistant}", post(a2a::server::rpc))
        .layer(axum::Extension(a2a));
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .merge(a2a_routes)
}
