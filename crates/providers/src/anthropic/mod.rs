//! Anthropic Messages adapter: content blocks, `tool_use` / `tool_result`, every SSE event type
//! (mid-stream `error` and `ping` included) and the prompt-cache usage fields.
//!
//! Structured output has no native mode here: the schema goes into the system prompt and
//! [`crate::structured`] validates and repairs the reply.

mod convert;
mod stream;
mod wire;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ProviderError;
use crate::event::EventStream;
use crate::http;
use crate::model::{ChatModel, ModelId};
use crate::secret::Secret;
use crate::types::{ChatRequest, ChatResponse};

/// Vendor name in errors.
pub const VENDOR: &str = "anthropic";
/// Anthropic's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header value.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; used when the request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Configuration of one Anthropic model.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Provider name for routing, breaking and pricing (default `anthropic`).
    pub provider: String,
    /// The model id, e.g. `claude-sonnet-4-5`.
    pub model: String,
    /// Base URL without the version segment.
    pub base_url: String,
    /// The `x-api-key`.
    pub api_key: Option<Secret>,
    /// `anthropic-beta` flags.
    pub beta: Vec<String>,
    /// `max_tokens` when the request sets none.
    pub default_max_tokens: u32,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Limit for a whole non-streamed call, and for a stream's response headers.
    pub request_timeout: Duration,
}

impl AnthropicConfig {
    /// Defaults, with `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` read from the environment.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            provider: VENDOR.into(),
            model: model.into(),
            base_url: std::env::var("ANTHROPIC_BASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_BASE_URL.into()),
            api_key: Secret::from_env("ANTHROPIC_API_KEY"),
            beta: Vec::new(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            connect_timeout: http::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: http::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the base URL.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<Secret>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the provider name.
    pub fn provider(mut self, name: impl Into<String>) -> Self {
        self.provider = name.into();
        self
    }
}

/// An Anthropic chat model.
#[derive(Debug, Clone)]
pub struct AnthropicModel {
    cfg: AnthropicConfig,
    id: ModelId,
    client: reqwest::Client,
    url: String,
}

impl AnthropicModel {
    /// Builds the model and its HTTP client.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] when the HTTP client cannot be built.
    pub fn new(cfg: AnthropicConfig) -> Result<Self, ProviderError> {
        let client = http::client(cfg.connect_timeout)?;
        Ok(Self::with_client(cfg, client))
    }

    /// Builds the model on a shared HTTP client (connection pool).
    pub fn with_client(cfg: AnthropicConfig, client: reqwest::Client) -> Self {
        Self {
            id: ModelId::new(cfg.provider.clone(), cfg.model.clone()),
            url: http::join_url(&cfg.base_url, "v1/messages"),
            cfg,
            client,
        }
    }

    #[tracing::instrument(name = "vendor.http", skip_all, fields(
        vendor = VENDOR,
        model = %self.cfg.model,
        provider = %self.cfg.provider,
        stream,
    ))]
    async fn send(
        &self,
        req: &ChatRequest,
        stream: bool,
        cancel: &CancellationToken,
    ) -> Result<reqwest::Response, ProviderError> {
        let body = convert::request_body(&self.cfg, req, stream)?;
        let mut rb = self.client.post(&self.url).header("anthropic-version", API_VERSION).json(&body);
        if let Some(key) = &self.cfg.api_key {
            rb = rb.header("x-api-key", key.expose());
        }
        if !self.cfg.beta.is_empty() {
            rb = rb.header("anthropic-beta", self.cfg.beta.join(","));
        }
        let resp = http::send(VENDOR, rb, self.cfg.request_timeout, stream, cancel).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let e = http::error_response(resp, "request-id", cancel).await;
        Err(convert::error(e))
    }
}

impl ChatModel for AnthropicModel {
    fn id(&self) -> &ModelId {
        &self.id
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let resp = self.send(&req, false, &cancel).await?;
        let wire: wire::Response = http::json_body(VENDOR, resp, self.cfg.request_timeout, &cancel).await?;
        Ok(convert::response(wire))
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let resp = self.send(&req, true, &cancel).await?;
        Ok(http::sse_stream(VENDOR, resp, stream::Decoder::default(), cancel))
    }
}
