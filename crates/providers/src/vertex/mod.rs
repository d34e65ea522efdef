//! Google Gemini: Vertex AI (`generateContent` / `streamGenerateContent?alt=sse`
//! under `projects/{p}/locations/{l}/publishers/google/models/{m}`) with
//! service-account OAuth, and the Gemini Developer API (`v1beta/models/{m}`) with an
//! API key.
//!
//! Owns the Gemini wire format (private [`wire`](self) types), the service-account
//! JWT grant and token cache ([`auth`]), and the SSE chunk decoding. It knows
//! nothing of retries or fallbacks: those are layers over any
//! [`ChatModel`](crate::ChatModel).
//!
//! Design decision: both Google surfaces are one adapter; they share the JSON and
//! differ only in URL and auth, chosen by [`GoogleAuth`].

pub mod auth;
mod client;
mod convert;
mod stream;
mod wire;

pub use auth::{AuthError, GoogleAuth, ServiceAccountKey, TokenSource};
pub use client::{DEFAULT_LOCATION, Gemini, GeminiConfig};

/// Vendor name of Vertex AI, used in errors and model ids.
pub const VENDOR_VERTEX: &str = "vertex";
/// Vendor name of the Gemini Developer API.
pub const VENDOR_GEMINI: &str = "gemini";

#[cfg(test)]
mod tests;
