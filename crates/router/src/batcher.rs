//! Async routing: micro-batching of concurrent requests on a bounded blocking pool, with an
//! LRU cache of features for repeated texts and the optional LLM fallback.
//!
//! Requests queue on a channel. A collector task takes the first waiting request, then keeps
//! collecting for at most [`BatchConfig::max_wait`] or until [`BatchConfig::max_batch`] items,
//! and hands the batch to `spawn_blocking` under a semaphore so that at most
//! [`BatchConfig::max_concurrent`] encoder passes run at once. The async runtime's threads
//! never run the transformer.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use lru::LruCache;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::decision::{Decision, Outcome, Rung};
use crate::encoder::Features;
use crate::error::{Result, RouterError};
use crate::llm::{LlmAnswer, LlmFallback, LlmQuestion};
use crate::router::Router;

/// Settings of the async router.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Most items in one encoder pass.
    pub max_batch: usize,
    /// Longest wait for more items after the first.
    pub max_wait: Duration,
    /// Encoder passes running at once.
    pub max_concurrent: usize,
    /// Entries in the feature cache (0 disables it).
    pub cache_size: usize,
    /// Limit for one request (queueing and encoding).
    pub request_timeout: Duration,
    /// Limit for one LLM fallback call.
    pub llm_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            max_concurrent: 2,
            cache_size: 4096,
            request_timeout: Duration::from_secs(30),
            llm_timeout: Duration::from_secs(10),
        }
    }
}

type Reply = oneshot::Sender<Result<Arc<Features>>>;

/// A router for async callers: batched, cached, bounded.
pub struct AsyncRouter {
    router: Arc<Router>,
    tx: mpsc::Sender<(String, Reply)>,
    cache: Option<Mutex<LruCache<String, Arc<Features>>>>,
    llm: Option<Arc<dyn LlmFallback>>,
    cfg: BatchConfig,
}

impl std::fmt::Debug for AsyncRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRouter").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl AsyncRouter {
    /// Start the collector task on the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn new(router: Arc<Router>, cfg: BatchConfig) -> Self {
        let (tx, rx) = mpsc::channel(cfg.max_batch.max(1) * 64);
        tokio::spawn(collect(Arc::clone(&router), rx, cfg));
        let cache = NonZeroUsize::new(cfg.cache_size).map(|n| Mutex::new(LruCache::new(n)));
        Self { router, tx, cache, llm: None, cfg }
    }

    /// Use an LLM for low-confidence and clarify decisions.
    pub fn with_llm_fallback(mut self, llm: Arc<dyn LlmFallback>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// The synchronous router underneath.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Features of one text, from the cache or through the batcher.
    ///
    /// # Errors
    /// [`RouterError::Timeout`], [`RouterError::BatcherClosed`], encoder failures.
    pub async fn features(&self, text: &str) -> Result<Arc<Features>> {
        if let Some(c) = &self.cache {
            let mut guard = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(f) = guard.get(text) {
                return Ok(Arc::clone(f));
            }
        }
        let (reply, rx) = oneshot::channel();
        let fut = async {
            self.tx.send((text.to_owned(), reply)).await.map_err(|_| RouterError::BatcherClosed)?;
            rx.await.map_err(|_| RouterError::BatcherClosed)?
        };
        let f = tokio::time::timeout(self.cfg.request_timeout, fut)
            .await
            .map_err(|_| RouterError::Timeout { what: "routing request", after: self.cfg.request_timeout })??;
        if let Some(c) = &self.cache {
            let mut guard = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.put(text.to_owned(), Arc::clone(&f));
        }
        Ok(f)
    }

    /// Route one text through the ladder, with the LLM fallback when configured.
    ///
    /// # Errors
    /// As [`AsyncRouter::features`], and [`RouterError::EmptyText`].
    pub async fn route(&self, text: &str) -> Result<Decision> {
        let span = crate::decision::route_span();
        let d = self.route_inner(text).instrument(span.clone()).await?;
        d.record_on(&span);
        Ok(d)
    }

    async fn route_inner(&self, text: &str) -> Result<Decision> {
        if text.trim().is_empty() {
            return Err(RouterError::EmptyText);
        }
        if let Some(d) = self.router.rule_decision(text) {
            return Ok(d);
        }
        let f = self.features(text).await?;
        let mut d = self.router.decide(&f);
        if let Some(llm) = &self.llm
            && matches!(d.outcome, Outcome::OutOfScope | Outcome::Clarify)
        {
            self.ask_llm(llm.as_ref(), text, &mut d).await;
        }
        Ok(d)
    }

    async fn ask_llm(&self, llm: &dyn LlmFallback, text: &str, d: &mut Decision) {
        let oos = self.router.artifact().manifest.oos_label.clone();
        let candidates: Vec<_> = d.candidates.iter().filter(|c| Some(&c.intent) != oos.as_ref()).cloned().collect();
        let q = LlmQuestion { text: text.to_owned(), candidates };
        match tokio::time::timeout(self.cfg.llm_timeout, llm.choose(&q)).await {
            Ok(Ok(LlmAnswer::Intent(i))) if q.candidates.iter().any(|c| c.intent == i) => {
                d.reasons.push(format!("llm fallback chose {i} among the top {}", q.candidates.len()));
                d.confidence = q.candidates.iter().find(|c| c.intent == i).map_or(0.0, |c| c.score);
                d.intent = Some(i);
                d.outcome = Outcome::Intent;
                d.rung = Rung::LlmFallback;
                d.clarify.clear();
            }
            Ok(Ok(LlmAnswer::Intent(i))) => {
                d.reasons.push(format!("llm fallback answered {i:?}, not a candidate: ignored"));
            }
            Ok(Ok(LlmAnswer::None)) => {
                d.reasons.push("llm fallback chose none of the candidates".into());
                d.intent = None;
                d.outcome = Outcome::OutOfScope;
                d.rung = Rung::LlmFallback;
                d.clarify.clear();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "llm fallback failed; keeping the ladder's decision");
                d.reasons.push(format!("llm fallback failed ({e}); kept the ladder's decision"));
            }
            Err(_) => {
                tracing::warn!(after = ?self.cfg.llm_timeout, "llm fallback timed out");
                d.reasons.push(format!(
                    "llm fallback timed out after {:?}; kept the ladder's decision",
                    self.cfg.llm_timeout
                ));
            }
        }
    }
}

async fn collect(router: Arc<Router>, mut rx: mpsc::Receiver<(String, Reply)>, cfg: BatchConfig) {
    let sem = Arc::new(Semaphore::new(cfg.max_concurrent.max(1)));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + cfg.max_wait;
        while batch.len() < cfg.max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            return;
        };
        let router = Arc::clone(&router);
        tokio::spawn(async move {
            let (texts, replies): (Vec<String>, Vec<Reply>) = batch.into_iter().unzip();
            let result = tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                router.featurizer().featurize(&refs)
            })
            .await;
            drop(permit);
            match result {
                Ok(Ok(feats)) => {
                    for (r, f) in replies.into_iter().zip(feats) {
                        let _ = r.send(Ok(Arc::new(f)));
                    }
                }
                Ok(Err(e)) => {
                    let msg = e.to_string();
                    for r in replies {
                        let _ = r.send(Err(RouterError::Tokenizer(msg.clone())));
                    }
                }
                Err(_) => {
                    for r in replies {
                        let _ = r.send(Err(RouterError::BatcherClosed));
                    }
                }
            }
        });
    }
}
