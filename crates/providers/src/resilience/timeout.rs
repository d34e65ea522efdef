//! [`Timeout`]: total deadline, time to first event, and idle gap between stream events.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::prime;
use crate::error::{ProviderError, TimeoutPhase};
use crate::event::EventStream;
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse};

/// Name used as the vendor of timeouts raised by this layer.
const LAYER: &str = "timeout-layer";

/// Limits; `None` disables one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// The whole call, streams included.
    pub total: Option<Duration>,
    /// Until the first content event of a stream (or the whole non-streamed call).
    pub first_event: Option<Duration>,
    /// Between two stream events (a stalled stream).
    pub idle: Option<Duration>,
}

impl Default for TimeoutPolicy {
    fn default() -> Self {
        Self {
            total: Some(Duration::from_secs(300)),
            first_event: Some(Duration::from_secs(60)),
            idle: Some(Duration::from_secs(30)),
        }
    }
}

/// The timeout layer.
#[derive(Debug, Clone)]
pub struct Timeout<M> {
    inner: M,
    policy: TimeoutPolicy,
}

impl<M> Timeout<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, policy: TimeoutPolicy) -> Self {
        Self { inner, policy }
    }
}

fn err(phase: TimeoutPhase, after: Duration) -> ProviderError {
    ProviderError::Timeout { vendor: LAYER, phase, after }
}

/// The earliest of an optional deadline and now + optional duration.
fn first_deadline(a: Option<Instant>, b: Option<Duration>) -> Option<(Instant, bool)> {
    let b = b.map(|d| Instant::now() + d);
    match (a, b) {
        (Some(a), Some(b)) if b < a => Some((b, false)),
        (Some(a), _) => Some((a, true)),
        (None, Some(b)) => Some((b, false)),
        (None, None) => None,
    }
}

impl<M: ChatModel> ChatModel for Timeout<M> {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let limit = match (self.policy.total, self.policy.first_event) {
            (Some(t), _) => Some((t, TimeoutPhase::Total)),
            (None, Some(f)) => Some((f, TimeoutPhase::FirstByte)),
            (None, None) => None,
        };
        match limit {
            Some((d, phase)) => {
                tokio::time::timeout(d, self.inner.chat(req, cancel)).await.unwrap_or_else(|_| Err(err(phase, d)))
            }
            None => self.inner.chat(req, cancel).await,
        }
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let policy = self.policy;
        let total_deadline = policy.total.map(|d| Instant::now() + d);
        let open = async {
            let s = self.inner.stream(req, cancel).await?;
            prime(s).await
        };
        let stream = match first_deadline(total_deadline, policy.first_event) {
            Some((at, is_total)) => match tokio::time::timeout_at(at, open).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(if is_total {
                        err(TimeoutPhase::Total, policy.total.unwrap_or_default())
                    } else {
                        err(TimeoutPhase::FirstByte, policy.first_event.unwrap_or_default())
                    });
                }
            },
            None => open.await?,
        };
        struct St {
            s: EventStream,
            done: bool,
        }
        let out = futures::stream::unfold(St { s: stream, done: false }, move |mut st| async move {
            if st.done {
                return None;
            }
            let next = match first_deadline(total_deadline, policy.idle) {
                Some((at, is_total)) => match tokio::time::timeout_at(at, st.s.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        st.done = true;
                        let e = if is_total {
                            err(TimeoutPhase::Total, policy.total.unwrap_or_default())
                        } else {
                            err(TimeoutPhase::Idle, policy.idle.unwrap_or_default())
                        };
                        return Some((Err(e), st));
                    }
                },
                None => st.s.next().await,
            };
            match next {
                Some(item) => {
                    st.done = item.is_err();
                    Some((item, st))
                }
                None => None,
            }
        });
        Ok(Box::pin(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::scripted::{Scripted, Step};

    #[tokio::test(start_paused = true)]
    async fn stalled_stream_hits_idle_timeout() {
        let m = Scripted::new([Step::StreamStall { after_text: 2 }]);
        let t = Timeout::new(
            m,
            TimeoutPolicy {
                total: None,
                first_event: Some(Duration::from_secs(5)),
                idle: Some(Duration::from_secs(2)),
            },
        );
        let mut s = t.stream(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        let mut texts = 0;
        let mut last = None;
        while let Some(ev) = s.next().await {
            match ev {
                Ok(_) => texts += 1,
                Err(e) => last = Some(e),
            }
        }
        assert_eq!(texts, 2);
        assert!(matches!(last, Some(ProviderError::Timeout { phase: TimeoutPhase::Idle, .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_chat_hits_total() {
        let m = Scripted::new([Step::Delay(Duration::from_secs(100))]);
        let t = Timeout::new(m, TimeoutPolicy { total: Some(Duration::from_secs(10)), ..TimeoutPolicy::default() });
        let e = t.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap_err();
        assert!(matches!(e, ProviderError::Timeout { phase: TimeoutPhase::Total, .. }));
        assert!(e.is_retryable());
    }
}
