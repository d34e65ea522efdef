//! Admission limits: [`ConcurrencyLimit`] (calls in flight, streams held until dropped) and
//! [`TenantRateLimit`] (a token bucket per tenant, one token per call).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ProviderError;
use crate::event::EventStream;
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse};

/// At most `max` calls in flight; further calls wait (cancellably) for a slot. A stream holds
/// its slot until it is dropped.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<M> {
    inner: M,
    sem: Arc<Semaphore>,
}

impl<M> ConcurrencyLimit<M> {
    /// Wraps `inner` with `max` slots.
    pub fn new(inner: M, max: usize) -> Self {
        Self { inner, sem: Arc::new(Semaphore::new(max)) }
    }

    /// Free slots now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    async fn permit(&self, cancel: &CancellationToken) -> Result<tokio::sync::OwnedSemaphorePermit, ProviderError> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(ProviderError::Cancelled),
            p = self.sem.clone().acquire_owned() => p.map_err(|_| ProviderError::InvalidRequest("concurrency limit closed".into())),
        }
    }
}

impl<M: ChatModel> ChatModel for ConcurrencyLimit<M> {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let _permit = self.permit(&cancel).await?;
        self.inner.chat(req, cancel).await
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let permit = self.permit(&cancel).await?;
        let s = self.inner.stream(req, cancel).await?;
        Ok(Box::pin(s.map(move |ev| {
            let _held = &permit;
            ev
        })))
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per tenant: `capacity` calls of burst, refilled at `per_second`. Calls without
/// a tenant share the bucket of the empty name.
#[derive(Debug, Clone)]
pub struct TenantLimiter {
    capacity: f64,
    per_second: f64,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl TenantLimiter {
    /// A limiter; `per_second` must be positive.
    pub fn new(capacity: u32, per_second: f64) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            per_second: if per_second > 0.0 { per_second } else { 1.0 },
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one token for `tenant`.
    ///
    /// # Errors
    /// [`ProviderError::RateLimited`] with the wait until a token is available.
    pub fn try_acquire(&self, tenant: &str) -> Result<(), ProviderError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("tenant limiter lock poisoned");
        let b = buckets.entry(tenant.to_owned()).or_insert(Bucket { tokens: self.capacity, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.per_second;
            Err(ProviderError::RateLimited {
                scope: format!("tenant {tenant}"),
                retry_in: Duration::from_secs_f64(wait),
            })
        }
    }
}

/// Refuses calls over the tenant's rate with [`ProviderError::RateLimited`].
#[derive(Debug, Clone)]
pub struct TenantRateLimit<M> {
    inner: M,
    limiter: TenantLimiter,
}

impl<M> TenantRateLimit<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, limiter: TenantLimiter) -> Self {
        Self { inner, limiter }
    }
}

impl<M: ChatModel> ChatModel for TenantRateLimit<M> {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        self.limiter.try_acquire(req.metadata.tenant.as_deref().unwrap_or(""))?;
        self.inner.chat(req, cancel).await
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        self.limiter.try_acquire(req.metadata.tenant.as_deref().unwrap_or(""))?;
        self.inner.stream(req, cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::scripted::{Scripted, Step};

    fn for_tenant(t: &str) -> ChatRequest {
        let mut r = ChatRequest::user("x");
        r.metadata.tenant = Some(t.into());
        r
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_per_tenant() {
        let m = TenantRateLimit::new(Scripted::new([]), TenantLimiter::new(2, 1.0));
        let c = CancellationToken::new;
        assert!(m.chat(for_tenant("acme"), c()).await.is_ok());
        assert!(m.chat(for_tenant("acme"), c()).await.is_ok());
        let e = m.chat(for_tenant("acme"), c()).await.unwrap_err();
        assert!(matches!(e, ProviderError::RateLimited { retry_in, .. } if retry_in <= Duration::from_secs(1)));
        // Another tenant is unaffected.
        assert!(m.chat(for_tenant("globex"), c()).await.is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(m.chat(for_tenant("acme"), c()).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_limit_holds_streams_and_waits_cancellably() {
        let m = ConcurrencyLimit::new(Scripted::new([Step::StreamStall { after_text: 1 }]), 1);
        let s = m.stream(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        assert_eq!(m.available(), 0);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            c.cancel();
        });
        let e = m.chat(ChatRequest::user("y"), cancel).await.unwrap_err();
        assert!(matches!(e, ProviderError::Cancelled));
        drop(s);
        assert_eq!(m.available(), 1);
        assert!(m.chat(ChatRequest::user("z"), CancellationToken::new()).await.is_ok());
    }
}
