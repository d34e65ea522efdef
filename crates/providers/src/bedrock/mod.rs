//! AWS Bedrock Runtime: the Converse and ConverseStream APIs.
//!
//! Owns the Bedrock wire format ([`wire`](self) types stay private), SigV4 signing
//! with `aws-sigv4` (or a Bedrock API key as a bearer token), credentials from the
//! environment or the shared credentials file, and decoding of the binary
//! `application/vnd.amazon.eventstream` stream. It knows nothing of retries or
//! fallbacks: those are layers over any [`ChatModel`](crate::ChatModel).
//!
//! Design decision: no AWS SDK client. The Converse API is two POSTs; the SDK would
//! add a second HTTP stack. Only the signer and the frame codec come from AWS crates.

mod client;
mod convert;
pub mod credentials;
mod eventstream;
mod sign;
mod stream;
mod wire;

pub use client::{Bedrock, BedrockConfig};
pub use credentials::{AwsCredentials, BedrockAuth, CredentialsError};

/// Vendor name used in errors and model ids.
pub const VENDOR: &str = "bedrock";

/// Builds a Bedrock model for a configured provider (`kind = "bedrock"`).
///
/// `base_url` overrides the regional endpoint; `api_key_env`, when set, names a variable
/// holding a Bedrock API key (bearer). Otherwise credentials and region come from the
/// environment and the AWS shared files, as [`BedrockConfig::from_env`] reads them.
///
/// # Errors
/// [`ProviderError::InvalidRequest`](crate::ProviderError::InvalidRequest) when no region
/// or credentials are found.
pub fn from_entry(
    name: &str,
    entry: &crate::config::ProviderEntry,
    model: &str,
) -> Result<Bedrock, crate::ProviderError> {
    let invalid = |e: CredentialsError| crate::ProviderError::InvalidRequest(format!("provider {name}: {e}"));
    let mut cfg = BedrockConfig::from_env().map_err(invalid)?;
    if let Some(var) = &entry.api_key_env {
        let key = crate::Secret::from_env(var)
            .ok_or_else(|| crate::ProviderError::InvalidRequest(format!("provider {name}: {var} is not set")))?;
        cfg.auth = BedrockAuth::ApiKey(key);
    }
    if let Some(url) = &entry.base_url {
        cfg.endpoint = Some(url.clone());
    }
    if let Some(ms) = entry.connect_timeout_ms {
        cfg.connect_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = entry.request_timeout_ms {
        cfg.request_timeout = std::time::Duration::from_millis(ms);
    }
    Ok(Bedrock::new(model, cfg)?.with_provider_name(name))
}

#[cfg(test)]
mod tests;
