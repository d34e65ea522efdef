//! One OpenTelemetry GenAI span per vendor call.
//!
//! [`Traced`] wraps an adapter and opens a `chat {model}` span (kind client) with the GenAI
//! semantic-convention attributes: `gen_ai.operation.name`, `gen_ai.provider.name`,
//! `gen_ai.request.model`, and when the call ends `gen_ai.response.model`,
//! `gen_ai.response.finish_reasons`, `gen_ai.usage.input_tokens` / `output_tokens` and the cost
//! (`switchboard.cost.usd`, when a price table is given). A stream's span lasts until the
//! stream ends or is dropped. Message content is put in the span only when asked for
//! ([`Traced::with_content`]); the telemetry layer drops or redacts it again on export.
//!
//! It sits directly around the adapter, so every retry and every model of a fallback chain is
//! its own span, as the conventions ask.

use std::sync::Arc;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::cost::PriceTable;
use crate::error::ProviderError;
use crate::event::{EventStream, StreamEvent};
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse, FinishReason, Usage};

/// The `gen_ai.provider.name` of a configured provider kind.
pub fn provider_name(kind: &str) -> &'static str {
    match kind {
        "openai" => "openai",
        "anthropic" => "anthropic",
        "bedrock" => "aws.bedrock",
        "vertex" => "gcp.vertex_ai",
        "gemini" => "gcp.gemini",
        _ => "other",
    }
}

/// Wraps a model in GenAI spans.
#[derive(Debug, Clone)]
pub struct Traced<M> {
    inner: M,
    provider: &'static str,
    prices: Option<Arc<PriceTable>>,
    content: bool,
}

impl<M: ChatModel> Traced<M> {
    /// Spans for `inner`, whose vendor is `provider` (a `gen_ai.provider.name` value).
    pub fn new(inner: M, provider: &'static str) -> Self {
        Self { inner, provider, prices: None, content: false }
    }
    /// Records each call's cost from this table.
    pub fn with_prices(mut self, prices: Arc<PriceTable>) -> Self {
        self.prices = Some(prices);
        self
    }
    /// Puts the request and reply messages in the span (as `gen_ai.input.messages` /
    /// `gen_ai.output.messages`).
    pub fn with_content(mut self, on: bool) -> Self {
        self.content = on;
        self
    }

    fn span(&self, req: &ChatRequest) -> tracing::Span {
        let id = self.inner.id();
        let span = tracing::info_span!(
            "gen_ai.chat",
            otel.name = %format_args!("chat {}", id.model),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = self.provider,
            gen_ai.request.model = %id.model,
            gen_ai.conversation.id = Empty,
            gen_ai.response.model = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gen_ai.input.messages = Empty,
            gen_ai.output.messages = Empty,
            switchboard.cost.usd = Empty,
            switchboard.ttft_ms = Empty,
            error.type = Empty,
        );
        if let Some(c) = &req.metadata.conversation {
            span.record("gen_ai.conversation.id", c.as_str());
        }
        if self.content
            && let Ok(m) = serde_json::to_string(&req.messages)
        {
            span.record("gen_ai.input.messages", m.as_str());
        }
        span
    }
}

fn finish_reason(f: &FinishReason) -> String {
    serde_json::to_value(f).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{f:?}"))
}

fn record_usage(span: &tracing::Span, id: &ModelId, prices: Option<&PriceTable>, usage: &Usage) {
    span.record("gen_ai.usage.input_tokens", usage.input_tokens);
    span.record("gen_ai.usage.output_tokens", usage.output_tokens);
    if let Some(p) = prices {
        span.record("switchboard.cost.usd", p.cost_micros(id, usage) as f64 / 1e6);
    }
}

fn record_error(span: &tracing::Span, e: &ProviderError) {
    span.record("otel.status_code", "error");
    span.record("otel.status_description", e.to_string().as_str());
    span.record("error.type", e.kind_name());
}

impl<M: ChatModel> ChatModel for Traced<M> {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let span = self.span(&req);
        let r = self.inner.chat(req, cancel).instrument(span.clone()).await;
        match &r {
            Ok(resp) => {
                if let Some(m) = &resp.model {
                    span.record("gen_ai.response.model", m.as_str());
                }
                span.record("gen_ai.response.finish_reasons", finish_reason(&resp.finish_reason).as_str());
                record_usage(&span, self.inner.id(), self.prices.as_deref(), &resp.usage);
                if self.content
                    && let Ok(m) = serde_json::to_string(&resp.to_message())
                {
                    span.record("gen_ai.output.messages", m.as_str());
                }
            }
            Err(e) => record_error(&span, e),
        }
        r
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let span = self.span(&req);
        let s = match self.inner.stream(req, cancel).instrument(span.clone()).await {
            Ok(s) => s,
            Err(e) => {
                record_error(&span, &e);
                return Err(e);
            }
        };
        let id = self.inner.id().clone();
        let prices = self.prices.clone();
        let content = self.content;
        let mut text = String::new();
        let started = std::time::Instant::now();
        let mut first = true;
        Ok(Box::pin(s.map(move |ev| {
            // The closure owns the span: it closes when the stream is dropped.
            let span = &span;
            if first && matches!(&ev, Ok(StreamEvent::TextDelta { .. } | StreamEvent::ToolCallDelta { .. })) {
                first = false;
                span.record("switchboard.ttft_ms", started.elapsed().as_secs_f64() * 1000.0);
            }
            match &ev {
                Ok(StreamEvent::Start { model: Some(m), .. }) => {
                    span.record("gen_ai.response.model", m.as_str());
                }
                Ok(StreamEvent::TextDelta { text: t }) if content => text.push_str(t),
                Ok(StreamEvent::Usage(u)) => record_usage(span, &id, prices.as_deref(), u),
                Ok(StreamEvent::Finish { reason }) => {
                    span.record("gen_ai.response.finish_reasons", finish_reason(reason).as_str());
                    if content {
                        span.record("gen_ai.output.messages", text.as_str());
                    }
                }
                Err(e) => record_error(span, e),
                _ => {}
            }
            ev
        })))
    }
}
