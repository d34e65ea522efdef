//! [`Retry`]: exponential backoff with full jitter, honouring the vendor's `retry-after`.
//!
//! Only errors that say [`ProviderError::is_retryable`] are retried, and for streams only
//! before the first content event reached the caller (see [`super::prime`]): none of the
//! vendors has an idempotency key, so a retry after output started would bill and show the
//! customer a second answer.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{prime, sleep_or_cancel};
use crate::error::ProviderError;
use crate::event::EventStream;
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse};

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff cap for the first retry; doubles each time.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// A `retry-after` longer than this is not waited for: the error is returned (so a
    /// fallback can act at once).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based) after `error`, or `None` to give up.
    pub fn delay(&self, attempt: u32, error: &ProviderError) -> Option<Duration> {
        if attempt >= self.max_retries || !error.is_retryable() {
            return None;
        }
        if let Some(ra) = error.retry_after() {
            return (ra <= self.max_retry_after).then_some(ra);
        }
        let cap = self.base_delay.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX)).min(self.max_delay);
        // Full jitter: uniform in [0, cap].
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(fastrand::u64(0..=nanos)))
    }
}

/// The retry layer.
#[derive(Debug, Clone)]
pub struct Retry<M> {
    inner: M,
    policy: RetryPolicy,
}

impl<M> Retry<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }
}

impl<M: ChatModel> ChatModel for Retry<M> {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let mut attempt = 0;
        loop {
            match self.inner.chat(req.clone(), cancel.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) => match self.policy.delay(attempt, &e) {
                    Some(d) => {
                        tracing::warn!(switchboard.llm.event = "retry", model = %self.inner.id(), attempt, delay_ms = d.as_millis() as u64, error = %e, "retrying model call");
                        sleep_or_cancel(d, &cancel).await?;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let mut attempt = 0;
        loop {
            let r = match self.inner.stream(req.clone(), cancel.clone()).await {
                Ok(s) => prime(s).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(s) => return Ok(s),
                Err(e) => match self.policy.delay(attempt, &e) {
                    Some(d) => {
                        tracing::warn!(switchboard.llm.event = "retry", model = %self.inner.id(), attempt, delay_ms = d.as_millis() as u64, error = %e, "retrying model stream");
                        sleep_or_cancel(d, &cancel).await?;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::collect;
    use crate::resilience::scripted::{Scripted, Step};
    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_then_succeeds_honouring_retry_after() {
        let m = Scripted::new([
            Step::Status(429, Some(Duration::from_secs(3))),
            Step::Status(503, None),
            Step::Reply("fine"),
        ]);
        let r = Retry::new(m, RetryPolicy::default());
        let start = tokio::time::Instant::now();
        let out = r.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        assert_eq!(out.text, "fine");
        assert_eq!(r.inner.calls(), 3);
        let waited = start.elapsed();
        // 3 s from retry-after, plus at most 500 ms of jittered backoff.
        assert!(waited >= Duration::from_secs(3) && waited <= Duration::from_millis(3500), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_non_retryable() {
        let m = Scripted::new([Step::Status(400, None), Step::Reply("never")]);
        let r = Retry::new(m, RetryPolicy::default());
        let e = r.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap_err();
        assert_eq!(e.status(), Some(400));
        assert_eq!(r.inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries() {
        let m = Scripted::new([
            Step::Status(500, None),
            Step::Status(500, None),
            Step::Status(500, None),
            Step::Reply("late"),
        ]);
        let r = Retry::new(m, RetryPolicy::default());
        let e = r.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap_err();
        assert_eq!(e.status(), Some(500));
        assert_eq!(r.inner.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn too_long_retry_after_is_not_waited_for() {
        let m = Scripted::new([Step::Status(429, Some(Duration::from_secs(600)))]);
        let r = Retry::new(m, RetryPolicy::default());
        assert!(r.chat(ChatRequest::user("x"), CancellationToken::new()).await.is_err());
        assert_eq!(r.inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stream_retried_only_before_first_token() {
        // Fails before any content: retried.
        let m = Scripted::new([Step::StreamFailFirst(503), Step::Reply("second try")]);
        let r = Retry::new(m, RetryPolicy::default());
        let s = r.stream(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        assert_eq!(collect(s, "t").await.unwrap().text, "second try");
        assert_eq!(r.inner.calls(), 2);

        // Fails after a token: the error goes to the caller, no retry.
        let m = Scripted::new([Step::StreamFailAfter { after_text: 1, status: 503 }, Step::Reply("never")]);
        let r = Retry::new(m, RetryPolicy::default());
        let mut s = r.stream(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        assert!(s.next().await.unwrap().is_ok());
        assert_eq!(s.next().await.unwrap().unwrap_err().status(), Some(503));
        assert_eq!(r.inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_interrupts_backoff() {
        let m = Scripted::new([Step::Status(429, Some(Duration::from_secs(20)))]);
        let r = Retry::new(m, RetryPolicy::default());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.cancel();
        });
        let e = r.chat(ChatRequest::user("x"), cancel).await.unwrap_err();
        assert!(matches!(e, ProviderError::Cancelled));
    }

    #[test]
    fn full_jitter_stays_under_the_cap() {
        let p = RetryPolicy::default();
        let e = crate::resilience::scripted::api(500, None);
        for attempt in 0..2 {
            for _ in 0..200 {
                let d = p.delay(attempt, &e).unwrap();
                assert!(d <= p.base_delay * 2u32.pow(attempt));
            }
        }
        assert!(p.delay(2, &e).is_none());
    }
}
