//! Structured output: a reply that must be JSON satisfying a schema, validated here (vendors'
//! native modes are not trusted blindly, and some vendors have none), with one repair retry
//! that shows the model its own reply and the violations.

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::ProviderError;
use crate::model::ChatModel;
use crate::schema::validate;
use crate::types::{ChatRequest, ChatResponse, Message, ResponseFormat, Usage};

/// A validated structured reply.
#[derive(Debug, Clone)]
pub struct StructuredResponse {
    /// The JSON value, valid against the schema.
    pub value: Value,
    /// The reply it came from (the repaired one if a repair was needed).
    pub response: ChatResponse,
    /// Usage of every call made, repair included.
    pub usage: Usage,
    /// Whether the repair retry was needed.
    pub repaired: bool,
}

/// Extracts a JSON document from a reply, tolerating a surrounding code fence.
pub fn extract_json(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.trim_end().strip_suffix("```"))
        .unwrap_or(t)
        .trim();
    serde_json::from_str(t).map_err(|e| format!("the reply is not JSON: {e}"))
}

fn check(format: &ResponseFormat, text: &str) -> Result<Value, String> {
    let v = extract_json(text)?;
    let errors = validate(&format.schema, &v);
    if errors.is_empty() { Ok(v) } else { Err(errors.join("; ")) }
}

/// Asks `model` for a reply satisfying `format`, repairing once.
///
/// # Errors
/// The model's errors, or [`ProviderError::StructuredOutput`] when the repaired reply is still
/// invalid.
pub async fn chat_structured<M: ChatModel>(
    model: &M,
    mut req: ChatRequest,
    format: ResponseFormat,
    cancel: CancellationToken,
) -> Result<StructuredResponse, ProviderError> {
    req.response_format = Some(format.clone());
    let first = model.chat(req.clone(), cancel.clone()).await?;
    let mut usage = first.usage;
    let problem = match check(&format, &first.text) {
        Ok(value) => {
            return Ok(StructuredResponse { value, response: first, usage, repaired: false });
        }
        Err(p) => p,
    };
    tracing::warn!(model = %model.id(), problem = %problem, "structured output invalid: repairing");
    req.messages.push(Message::assistant(first.text.clone()));
    req.messages.push(Message::user(format!(
        "Your previous reply does not satisfy the required JSON Schema: {problem}. \
         Reply again with only the corrected JSON document."
    )));
    let second = model.chat(req, cancel).await?;
    usage.add(&second.usage);
    match check(&format, &second.text) {
        Ok(value) => Ok(StructuredResponse { value, response: second, usage, repaired: true }),
        Err(p) => Err(ProviderError::StructuredOutput(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_are_tolerated() {
        assert_eq!(extract_json("```json\n{\"a\":1}\n```").unwrap(), serde_json::json!({"a": 1}));
        assert!(extract_json("sure! {\"a\":1}").is_err());
    }
}
