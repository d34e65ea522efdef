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

/// Builds a Gemini model for a configured provider: `kind = "vertex"` (service-account
/// key file from `GOOGLE_APPLICATION_CREDENTIALS`, project `GOOGLE_CLOUD_PROJECT` or the
/// key's, location `GOOGLE_CLOUD_LOCATION`) or `kind = "gemini"` (API key from
/// `api_key_env`, default `GEMINI_API_KEY`, then `GOOGLE_API_KEY`).
///
/// # Errors
/// [`ProviderError::InvalidRequest`](crate::ProviderError::InvalidRequest) when the key or
/// key file is missing or unusable.
pub fn from_entry(
    name: &str,
    entry: &crate::config::ProviderEntry,
    model: &str,
) -> Result<Gemini, crate::ProviderError> {
    let invalid = |e: String| crate::ProviderError::InvalidRequest(format!("provider {name}: {e}"));
    let mut cfg = if entry.kind == "gemini" {
        let key = match &entry.api_key_env {
            Some(var) => crate::Secret::from_env(var),
            None => crate::Secret::from_env("GEMINI_API_KEY").or_else(|| crate::Secret::from_env("GOOGLE_API_KEY")),
        }
        .ok_or_else(|| invalid("no Gemini API key in the environment".into()))?;
        GeminiConfig::api_key(key)
    } else {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let path = var("GOOGLE_APPLICATION_CREDENTIALS")
            .ok_or_else(|| invalid("GOOGLE_APPLICATION_CREDENTIALS is not set".into()))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("cannot read the service-account key file: {e}")))?;
        GeminiConfig::vertex_service_account(
            &text,
            var("GOOGLE_CLOUD_PROJECT"),
            var("GOOGLE_CLOUD_LOCATION").unwrap_or_else(|| DEFAULT_LOCATION.to_owned()),
        )
        .map_err(|e| invalid(e.to_string()))?
    };
    if let Some(url) = &entry.base_url {
        cfg.endpoint = Some(url.clone());
    }
    if let Some(ms) = entry.connect_timeout_ms {
        cfg.connect_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = entry.request_timeout_ms {
        cfg.request_timeout = std::time::Duration::from_millis(ms);
    }
    Ok(Gemini::new(model, cfg)?.with_provider_name(name))
}

#[cfg(test)]
mod tests;
