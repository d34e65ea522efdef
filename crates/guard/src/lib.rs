//! Guardrails for the support assistant: PII and secret detection with real validators,
//! redaction into typed placeholders backed by an encrypted per-conversation vault,
//! prompt-injection scoring, and output / tool policy.
//!
//! It must not know about storage engines, HTTP or vendors: the vault talks to a [`vault::VaultStore`]
//! trait, the injection scorer to an [`injection::InjectionClassifier`] trait.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod detect;
pub mod entity;
pub mod eval;
pub mod injection;
pub mod redact;
pub mod secret;
pub mod vault;

pub use detect::{Detector, DetectorConfig, detect};
pub use entity::{Detection, EntityType, Tier};
pub use secret::Secret;
