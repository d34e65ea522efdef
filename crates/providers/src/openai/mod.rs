//! OpenAI Chat Completions adapter, for OpenAI and every server speaking its format (vLLM,
//! llama.cpp server, Ollama's `/v1`, LiteLLM, gateways): the base URL and auth are configurable.
//!
//! Split as `wire` (private serde types), `convert` (neutral <-> wire, error classification)
//! and `stream` (SSE chunks to events); this file is the client.

mod convert;
mod stream;
mod wire;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ProviderError;
use crate::event::EventStream;
use crate::http;
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::secret::Secret;
use crate::types::{ChatRequest, ChatResponse};

/// Vendor name in errors.
pub const VENDOR: &str = "openai";
/// OpenAI's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Which field carries the output token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_completion_tokens` (OpenAI; reasoning models reject `max_tokens`).
    #[default]
    MaxCompletionTokens,
    /// `max_tokens` (vLLM, llama.cpp, Ollama and most compat servers).
    MaxTokens,
}

/// Configuration of one OpenAI-compatible model.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Provider name for routing, breaking and pricing (default `openai`).
    pub provider: String,
    /// The model id sent in requests.
    pub model: String,
    /// Base URL including the version segment, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Bearer key; local servers may need none.
    pub api_key: Option<Secret>,
    /// `OpenAI-Organization` header.
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    pub project: Option<String>,
    /// Which max-tokens field to send.
    pub max_tokens_field: MaxTokensField,
    /// Ask for the usage chunk when streaming (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Send `strict: true` with JSON Schema response formats.
    pub strict_schemas: bool,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Limit for a whole non-streamed call, and for a stream's response headers.
    pub request_timeout: Duration,
}

impl OpenAiConfig {
    /// Defaults for OpenAI itself, with `OPENAI_API_KEY` and `OPENAI_BASE_URL` read from the
    /// environment when set.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            provider: VENDOR.into(),
            model: model.into(),
            base_url: std::env::var("OPENAI_BASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_BASE_URL.into()),
            api_key: Secret::from_env("OPENAI_API_KEY"),
            organization: None,
            project: None,
            max_tokens_field: MaxTokensField::default(),
            include_usage: true,
            strict_schemas: false,
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

/// An OpenAI-compatible chat model.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    cfg: OpenAiConfig,
    id: ModelId,
    client: reqwest::Client,
    url: String,
}

impl OpenAiModel {
    /// Builds the model and its HTTP client.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] when the HTTP client cannot be built.
    pub fn new(cfg: OpenAiConfig) -> Result<Self, ProviderError> {
        let client = http::client(cfg.connect_timeout)?;
        Ok(Self::with_client(cfg, client))
    }

    /// Builds the model on a shared HTTP client (connection pool).
    pub fn with_client(cfg: OpenAiConfig, client: reqwest::Client) -> Self {
        Self {
            id: ModelId::new(cfg.provider.clone(), cfg.model.clone()),
            url: http::join_url(&cfg.base_url, "chat/completions"),
            cfg,
            client,
        }
    }

    fn post(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let mut rb = self.client.post(&self.url).json(body);
        if let Some(key) = &self.cfg.api_key {
            rb = rb.bearer_auth(key.expose());
        }
        if let Some(org) = &self.cfg.organization {
            rb = rb.header("OpenAI-Organization", org);
        }
        if let Some(p) = &self.cfg.project {
            rb = rb.header("OpenAI-Project", p);
        }
        rb
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
        let resp = http::send(VENDOR, self.post(&body), self.cfg.request_timeout, stream, cancel).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let e = http::error_response(resp, "x-request-id", cancel).await;
        Err(convert::error(e))
    }
}

impl ChatModel for OpenAiModel {
    fn id(&self) -> &ModelId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { streaming: true, tools: true, native_structured_output: true }
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let resp = self.send(&req, false, &cancel).await?;
        let wire: wire::Response = http::json_body(VENDOR, resp, self.cfg.request_timeout, &cancel).await?;
        convert::response(wire)
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let resp = self.send(&req, true, &cancel).await?;
        Ok(http::sse_stream(VENDOR, resp, stream::Decoder::default(), cancel))
    }
}
