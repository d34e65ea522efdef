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

#[cfg(test)]
mod tests;
