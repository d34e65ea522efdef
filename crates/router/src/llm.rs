//! The last rung: an LLM picks among the top-k intents, or none.
//!
//! The providers layer implements [`LlmFallback`]; the router only defines the structured
//! question and answer, and bounds the call with a timeout.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::decision::Candidate;

/// The question put to the LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmQuestion {
    /// The customer's message (already redacted by the caller).
    pub text: String,
    /// The intents it may choose from, best first, with the classifier's scores.
    pub candidates: Vec<Candidate>,
}

/// The LLM's structured answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "choice", content = "intent", rename_all = "snake_case")]
pub enum LlmAnswer {
    /// One of the candidates.
    Intent(String),
    /// None of them fits.
    None,
}

/// Error of an LLM fallback call; the router treats any error as "no help" and keeps its own
/// decision.
#[derive(Debug, Clone, thiserror::Error)]
#[error("llm fallback failed: {0}")]
pub struct LlmError(pub String);

/// Boxed future returned by [`LlmFallback::choose`].
pub type LlmFuture<'a> = Pin<Box<dyn Future<Output = Result<LlmAnswer, LlmError>> + Send + 'a>>;

/// Something that can choose an intent among candidates (an LLM behind the providers layer).
pub trait LlmFallback: Send + Sync {
    /// Pick one of `question.candidates` or none.
    fn choose<'a>(&'a self, question: &'a LlmQuestion) -> LlmFuture<'a>;
}
