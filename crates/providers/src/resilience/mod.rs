//! Resilience layers: each wraps any [`ChatModel`] and is itself a `ChatModel`, so policies
//! compose like tower layers and apply to every vendor alike.
//!
//! | layer | file | what it does |
//! |---|---|---|
//! | [`Timeout`] | `timeout.rs` | total deadline, time to first event, idle gap between events |
//! | [`Retry`] | `retry.rs` | exponential backoff with full jitter, honours `retry-after`; only retryable errors, only before the first streamed token |
//! | [`CircuitBreaker`] | `breaker.rs` | per (provider, model): opens after N consecutive health failures, half-open probes |
//! | [`Fallback`] | `fallback.rs` | tries the next model of a chain, only before the first token |
//! | [`ConcurrencyLimit`] | `limit.rs` | at most N calls (streams included) in flight |
//! | [`TenantRateLimit`] | `limit.rs` | a token bucket per tenant |
//!
//! A typical stack, outermost first: `Fallback[ Retry( CircuitBreaker( Timeout( adapter ))) , ... ]`,
//! with the concurrency and tenant limits outside the fallback. Connect timeouts live in the
//! adapters' HTTP clients. Cancellation is the `CancellationToken` every call takes: each
//! layer stops waiting (backoff sleeps, permits) when it fires, and dropping the adapter's
//! future or stream aborts the HTTP request.
//!
//! "Before the first token" is made precise by [`prime`]: a stream is handed to the caller
//! only after its first content event (text, tool call or finish) arrived; an error before
//! that is treated like a failed call (retried, counted, fallen back from), an error after it
//! goes to the caller untouched.

mod breaker;
mod fallback;
mod limit;
mod retry;
mod timeout;

pub use breaker::{BreakerConfig, BreakerRegistry, BreakerState, CircuitBreaker, Permit as BreakerPermit};
pub use fallback::Fallback;
pub use limit::{ConcurrencyLimit, TenantLimiter, TenantRateLimit};
pub use retry::{Retry, RetryPolicy};
pub use timeout::{Timeout, TimeoutPolicy};

use futures::StreamExt;

use crate::error::ProviderError;
use crate::event::EventStream;
use crate::model::{BoxChatModel, ChatModel, boxed};

/// Waits for a stream's first content event (buffering any non-content events before it) and
/// returns a stream that replays them. An error before the first content event is returned
/// as the call's error.
///
/// # Errors
/// The stream's error, when it fails before delivering content.
pub async fn prime(mut stream: EventStream) -> Result<EventStream, ProviderError> {
    let mut buffered = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(ev)) => {
                let content = ev.is_content();
                buffered.push(Ok(ev));
                if content {
                    break;
                }
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(Box::pin(futures::stream::iter(buffered).chain(stream)))
}

/// Builder-style helpers to wrap a model in layers.
pub trait ChatModelExt: ChatModel + Sized {
    /// Wraps in a [`Timeout`].
    fn with_timeout(self, policy: TimeoutPolicy) -> Timeout<Self> {
        Timeout::new(self, policy)
    }
    /// Wraps in a [`Retry`].
    fn with_retry(self, policy: RetryPolicy) -> Retry<Self> {
        Retry::new(self, policy)
    }
    /// Wraps in a [`CircuitBreaker`] whose state lives in `registry`.
    fn with_breaker(self, registry: BreakerRegistry) -> CircuitBreaker<Self> {
        CircuitBreaker::new(self, registry)
    }
    /// Wraps in a [`ConcurrencyLimit`] of `max` calls.
    fn with_concurrency_limit(self, max: usize) -> ConcurrencyLimit<Self> {
        ConcurrencyLimit::new(self, max)
    }
    /// Wraps in a [`TenantRateLimit`].
    fn with_tenant_limit(self, limiter: TenantLimiter) -> TenantRateLimit<Self> {
        TenantRateLimit::new(self, limiter)
    }
    /// Boxes for runtime selection (fallback chains, config).
    fn boxed(self) -> BoxChatModel
    where
        Self: 'static,
    {
        boxed(self)
    }
}

impl<M: ChatModel> ChatModelExt for M {}

/// Sleeps unless cancelled.
pub(crate) async fn sleep_or_cancel(
    d: std::time::Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), ProviderError> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(ProviderError::Cancelled),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod scripted;
