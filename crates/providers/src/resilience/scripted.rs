//! A scripted in-memory model for layer tests (tower's `tests/retry` style): each call takes
//! the next step; when the script runs out every call succeeds with "ok".

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ProviderError;
use crate::event::{EventStream, StreamEvent};
use crate::model::{ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse, FinishReason, Usage};

#[derive(Debug, Clone)]
pub(crate) enum Step {
    Reply(&'static str),
    /// An API error with this status; retryable as a vendor would say.
    Status(u16, Option<Duration>),
    Delay(Duration),
    StreamStall {
        after_text: usize,
    },
    StreamFailAfter {
        after_text: usize,
        status: u16,
    },
    StreamFailFirst(u16),
}

pub(crate) fn api(status: u16, retry_after: Option<Duration>) -> ProviderError {
    ProviderError::Api {
        vendor: "scripted",
        status,
        kind: "scripted".into(),
        message: format!("scripted {status}"),
        retryable: matches!(status, 408 | 409 | 429 | 500..=599),
        retry_after,
        request_id: None,
    }
}

#[derive(Debug)]
pub(crate) struct Scripted {
    id: ModelId,
    steps: Mutex<VecDeque<Step>>,
    pub(crate) calls: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self::named("scripted", steps)
    }

    pub(crate) fn named(provider: &str, steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            id: ModelId::new(provider, "m"),
            steps: Mutex::new(steps.into_iter().collect()),
            calls: AtomicUsize::new(0),
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn next(&self) -> Step {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.steps.lock().unwrap().pop_front().unwrap_or(Step::Reply("ok"))
    }

    fn reply(&self, text: &str) -> ChatResponse {
        ChatResponse {
            id: None,
            model: Some(self.id.provider.clone()),
            text: text.into(),
            tool_calls: vec![],
            finish_reason: FinishReason::Stop,
            usage: Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() },
        }
    }
}

fn text_events(n: usize) -> Vec<Result<StreamEvent, ProviderError>> {
    (0..n).map(|i| Ok(StreamEvent::text(format!("t{i} ")))).collect()
}

impl ChatModel for Scripted {
    fn id(&self) -> &ModelId {
        &self.id
    }

    async fn chat(&self, _req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        match self.next() {
            Step::Reply(t) => Ok(self.reply(t)),
            Step::Status(s, ra) => Err(api(s, ra)),
            Step::StreamFailAfter { status, .. } | Step::StreamFailFirst(status) => Err(api(status, None)),
            Step::Delay(d) => {
                tokio::select! {
                    _ = cancel.cancelled() => Err(ProviderError::Cancelled),
                    _ = tokio::time::sleep(d) => Ok(self.reply("ok")),
                }
            }
            Step::StreamStall { .. } => {
                cancel.cancelled().await;
                Err(ProviderError::Cancelled)
            }
        }
    }

    async fn stream(&self, _req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let finish = || {
            vec![
                Ok(StreamEvent::Usage(Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() })),
                Ok(StreamEvent::Finish { reason: FinishReason::Stop }),
            ]
        };
        match self.next() {
            Step::Reply(t) => {
                let mut v = vec![Ok(StreamEvent::text(t))];
                v.extend(finish());
                Ok(Box::pin(futures::stream::iter(v)))
            }
            Step::Status(s, ra) => Err(api(s, ra)),
            Step::Delay(d) => {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(ProviderError::Cancelled),
                    _ = tokio::time::sleep(d) => {}
                }
                let mut v = text_events(1);
                v.extend(finish());
                Ok(Box::pin(futures::stream::iter(v)))
            }
            Step::StreamStall { after_text } => {
                use futures::StreamExt;
                Ok(Box::pin(futures::stream::iter(text_events(after_text)).chain(futures::stream::pending())))
            }
            Step::StreamFailAfter { after_text, status } => {
                let mut v = text_events(after_text);
                v.push(Err(api(status, None)));
                Ok(Box::pin(futures::stream::iter(v)))
            }
            Step::StreamFailFirst(status) => Ok(Box::pin(futures::stream::iter(vec![
                Ok(StreamEvent::Start { id: None, model: None }),
                Err(api(status, None)),
            ]))),
        }
    }
}
