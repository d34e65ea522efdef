//! The [`ChatModel`] trait, its object-safe twin [`DynChatModel`], and model identity.
//!
//! `ChatModel` uses `impl Future` so generic layers compile to direct calls. When the model is
//! chosen at runtime (config, fallback chains) use [`BoxChatModel`], an `Arc<dyn DynChatModel>`
//! that also implements `ChatModel`, so layers wrap either kind.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::ProviderError;
use crate::event::EventStream;
use crate::types::{ChatRequest, ChatResponse};

/// A (provider, model) pair: the unit of routing, circuit breaking and pricing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId {
    /// The configured provider name, e.g. `openai`, `anthropic`, `internal-vllm`.
    pub provider: String,
    /// The vendor's model id, e.g. `gpt-4.1`.
    pub model: String,
}

impl ModelId {
    /// Builds an id.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        Self { provider: provider.into(), model: model.into() }
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// What a model supports natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Streaming replies.
    pub streaming: bool,
    /// Tool calling.
    pub tools: bool,
    /// Vendor-enforced JSON Schema output (otherwise the schema goes in the prompt).
    pub native_structured_output: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self { streaming: true, tools: true, native_structured_output: false }
    }
}

/// A chat model bound to one (provider, model).
///
/// # Cancel safety
/// Dropping a returned future or stream aborts the HTTP request. Cancelling `cancel` does the
/// same and makes the call return [`ProviderError::Cancelled`].
pub trait ChatModel: Send + Sync {
    /// Which (provider, model) this is.
    fn id(&self) -> &ModelId;

    /// What the model supports.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// One complete reply.
    fn chat(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<ChatResponse, ProviderError>> + Send;

    /// A streamed reply. The future resolves once the vendor accepted the request (status
    /// 200); errors after that arrive as the stream's last item.
    fn stream(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<EventStream, ProviderError>> + Send;
}

/// A boxed future, for the object-safe trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe version of [`ChatModel`]; every `ChatModel` implements it.
pub trait DynChatModel: Send + Sync {
    /// See [`ChatModel::id`].
    fn dyn_id(&self) -> &ModelId;
    /// See [`ChatModel::capabilities`].
    fn dyn_capabilities(&self) -> Capabilities;
    /// See [`ChatModel::chat`].
    fn dyn_chat(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<ChatResponse, ProviderError>>;
    /// See [`ChatModel::stream`].
    fn dyn_stream(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>>;
}

impl<M: ChatModel> DynChatModel for M {
    fn dyn_id(&self) -> &ModelId {
        self.id()
    }
    fn dyn_capabilities(&self) -> Capabilities {
        self.capabilities()
    }
    fn dyn_chat(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<ChatResponse, ProviderError>> {
        Box::pin(self.chat(req, cancel))
    }
    fn dyn_stream(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(self.stream(req, cancel))
    }
}

/// A model chosen at runtime.
pub type BoxChatModel = Arc<dyn DynChatModel>;

impl ChatModel for Arc<dyn DynChatModel> {
    fn id(&self) -> &ModelId {
        (**self).dyn_id()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).dyn_capabilities()
    }
    fn chat(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<ChatResponse, ProviderError>> + Send {
        (**self).dyn_chat(req, cancel)
    }
    fn stream(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<EventStream, ProviderError>> + Send {
        (**self).dyn_stream(req, cancel)
    }
}

impl<M: ChatModel> ChatModel for Arc<M> {
    fn id(&self) -> &ModelId {
        (**self).id()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn chat(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<ChatResponse, ProviderError>> + Send {
        (**self).chat(req, cancel)
    }
    fn stream(
        &self,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<EventStream, ProviderError>> + Send {
        (**self).stream(req, cancel)
    }
}

/// Boxes a model for runtime selection.
pub fn boxed<M: ChatModel + 'static>(model: M) -> BoxChatModel {
    Arc::new(model)
}
