//! Intent router: text → intent with a calibrated confidence, or out of scope, or "which of
//! these two did you mean?".
//!
//! The ladder, in order: compliance [`rules`]; a multinomial logistic-regression head over
//! sentence-transformer embeddings (all-MiniLM-L6-v2 by default, run by ONNX Runtime through
//! `ort`, or by candle — see [`encoder::bert`]) and hashed n-gram
//! TF-IDF features, mixed with a vote of the nearest training examples
//! ([`head::Neighbours`]); run-time prototype intents; an out-of-scope test on a score that
//! combines the top confidence with the similarity to the nearest in-scope examples, fitted on
//! held-out data for a target in-scope rejection rate; a clarify margin; and an optional
//! [`llm::LlmFallback`]. Every [`Decision`] records its candidates, scores, thresholds and the
//! rung that decided.
//!
//! The encoder's top layers can be fine-tuned on the training data first ([`finetune`]); the
//! artifact then carries its own encoder.
//!
//! This crate knows nothing of conversations or HTTP. Training and evaluation run in-process
//! ([`train::train`], [`eval::evaluate`]); a trained router is a directory ([`artifact`]).
//! Heavy work is synchronous; [`AsyncRouter`] moves it to the blocking pool and micro-batches
//! concurrent requests.

pub mod artifact;
pub mod batcher;
pub mod data;
pub mod decision;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod fetch;
pub mod finetune;
pub mod head;
pub mod llm;
pub mod report;
pub mod router;
pub mod rules;
pub mod train;

pub use batcher::{AsyncRouter, BatchConfig};
pub use decision::{Candidate, Decision, Outcome, Rung, Thresholds};
pub use error::{Result, RouterError};
pub use router::Router;
