//! [`Fallback`]: a chain of models (e.g. Bedrock Claude -> Anthropic -> internal), tried in
//! order. It switches only on errors that are about the model being unavailable
//! ([`ProviderError::should_fall_back`]) and, for streams, only before the first content event
//! reached the caller; after that, errors go to the caller.

use tokio_util::sync::CancellationToken;

use super::prime;
use crate::error::ProviderError;
use crate::event::EventStream;
use crate::model::{BoxChatModel, Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse};

/// The fallback layer.
#[derive(Clone)]
pub struct Fallback {
    chain: Vec<BoxChatModel>,
    id: ModelId,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("chain", &self.chain.iter().map(|m| m.id().to_string()).collect::<Vec<_>>())
            .finish()
    }
}

impl Fallback {
    /// A chain; its id is `fallback/<first model's id>`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] for an empty chain.
    pub fn new(chain: Vec<BoxChatModel>) -> Result<Self, ProviderError> {
        let first = chain.first().ok_or_else(|| ProviderError::InvalidRequest("empty fallback chain".into()))?;
        let id = ModelId::new("fallback", first.id().to_string());
        Ok(Self { chain, id })
    }

    /// The models, in order.
    pub fn chain(&self) -> &[BoxChatModel] {
        &self.chain
    }
}

impl ChatModel for Fallback {
    fn id(&self) -> &ModelId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        self.chain[0].capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let last = self.chain.len() - 1;
        for (i, m) in self.chain.iter().enumerate() {
            match m.chat(req.clone(), cancel.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) if i < last && e.should_fall_back() && !cancel.is_cancelled() => {
                    tracing::warn!(switchboard.llm.event = "fallback", from = %m.id(), to = %self.chain[i + 1].id(), error = %e, "falling back");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last model returns")
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let last = self.chain.len() - 1;
        for (i, m) in self.chain.iter().enumerate() {
            let r = match m.stream(req.clone(), cancel.clone()).await {
                Ok(s) => prime(s).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(s) => return Ok(s),
                Err(e) if i < last && e.should_fall_back() && !cancel.is_cancelled() => {
                    tracing::warn!(switchboard.llm.event = "fallback", from = %m.id(), to = %self.chain[i + 1].id(), error = %e, "falling back");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last model returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::collect;
    use crate::model::boxed;
    use crate::resilience::scripted::{Scripted, Step};
    use futures::StreamExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn switches_before_the_first_token_only() {
        let a = Arc::new(Scripted::named(
            "a",
            [Step::StreamFailFirst(503), Step::StreamFailAfter { after_text: 2, status: 503 }],
        ));
        let b = Arc::new(Scripted::named("b", [Step::Reply("from b"), Step::Reply("never")]));
        let f = Fallback::new(vec![boxed(a.clone()), boxed(b.clone())]).unwrap();
        // First: a fails before any token, b answers.
        let s = f.stream(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        assert_eq!(collect(s, "t").await.unwrap().text, "from b");
        // Second: a fails after two tokens; the caller gets the error, b is not asked.
        let mut s = f.stream(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        assert!(s.next().await.unwrap().is_ok());
        assert!(s.next().await.unwrap().is_ok());
        assert_eq!(s.next().await.unwrap().unwrap_err().status(), Some(503));
        assert_eq!((a.calls(), b.calls()), (2, 1));
    }

    #[tokio::test]
    async fn chat_falls_back_on_unavailable_not_on_bad_request() {
        let a = Arc::new(Scripted::named("a", [Step::Status(529, None), Step::Status(400, None)]));
        let b = Arc::new(Scripted::named("b", [Step::Reply("b1"), Step::Reply("b2")]));
        let f = Fallback::new(vec![boxed(a.clone()), boxed(b.clone())]).unwrap();
        assert_eq!(f.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap().text, "b1");
        let e = f.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap_err();
        assert_eq!(e.status(), Some(400));
        assert_eq!(b.calls(), 1);
    }
}
