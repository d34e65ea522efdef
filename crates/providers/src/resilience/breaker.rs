//! [`CircuitBreaker`]: per (provider, model), opens after consecutive health failures, lets
//! half-open probes through after a cool-down, closes on a successful probe.
//!
//! Only failures that say the model is unhealthy count ([`ProviderError::is_health_failure`]:
//! 429, 5xx, timeouts, transport and protocol errors); a 400 or a cancellation is the
//! caller's business and leaves the state alone. The state lives in a [`BreakerRegistry`]
//! keyed by [`ModelId`], so every layer instance for one model shares it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::prime;
use crate::error::ProviderError;
use crate::event::EventStream;
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse};

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive health failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe is allowed.
    pub open_for: Duration,
    /// Probes allowed at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(30), half_open_probes: 1 }
    }
}

/// The observable state of one circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; this many consecutive failures so far.
    Closed {
        /// Consecutive health failures.
        failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// When probes are allowed again.
        until: Instant,
    },
    /// Probes are in flight.
    HalfOpen {
        /// Probes in flight.
        in_flight: u32,
    },
}

/// Shared breaker state for many models.
#[derive(Debug, Clone)]
pub struct BreakerRegistry {
    cfg: BreakerConfig,
    states: Arc<Mutex<HashMap<ModelId, BreakerState>>>,
}

enum Outcome {
    Success,
    Failure,
    Neutral,
}

impl BreakerRegistry {
    /// An empty registry.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self { cfg, states: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// The state of one model's circuit.
    pub fn state(&self, id: &ModelId) -> BreakerState {
        let states = self.states.lock().expect("breaker lock poisoned");
        states.get(id).copied().unwrap_or(BreakerState::Closed { failures: 0 })
    }

    /// Admits one call to `id` outside a [`ChatModel`] (e.g. a remote agent): refused with
    /// [`ProviderError::CircuitOpen`] while the circuit is open. Report the call's outcome with
    /// [`Permit::succeeded`] or [`Permit::failed`]; a permit dropped unreported counts as neutral.
    ///
    /// # Errors
    /// [`ProviderError::CircuitOpen`].
    pub fn admit(&self, id: &ModelId) -> Result<Permit<'_>, ProviderError> {
        self.acquire(id)
    }

    fn acquire(&self, id: &ModelId) -> Result<Permit<'_>, ProviderError> {
        let mut states = self.states.lock().expect("breaker lock poisoned");
        let state = states.entry(id.clone()).or_insert(BreakerState::Closed { failures: 0 });
        let now = Instant::now();
        let probe = match *state {
            BreakerState::Closed { .. } => false,
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::HalfOpen { in_flight: 1 };
                tracing::info!(switchboard.llm.event = "breaker", switchboard.breaker.state = "half_open", model = %id, "circuit half-open: probing");
                true
            }
            BreakerState::Open { until } => {
                return Err(ProviderError::CircuitOpen {
                    provider: id.provider.clone(),
                    model: id.model.clone(),
                    retry_in: until - now,
                });
            }
            BreakerState::HalfOpen { in_flight } if in_flight < self.cfg.half_open_probes => {
                *state = BreakerState::HalfOpen { in_flight: in_flight + 1 };
                true
            }
            BreakerState::HalfOpen { .. } => {
                return Err(ProviderError::CircuitOpen {
                    provider: id.provider.clone(),
                    model: id.model.clone(),
                    retry_in: Duration::ZERO,
                });
            }
        };
        Ok(Permit { reg: self, id: id.clone(), probe, done: false })
    }

    fn record(&self, id: &ModelId, probe: bool, outcome: Outcome) {
        let mut states = self.states.lock().expect("breaker lock poisoned");
        let state = states.entry(id.clone()).or_insert(BreakerState::Closed { failures: 0 });
        let open = BreakerState::Open { until: Instant::now() + self.cfg.open_for };
        *state = match (outcome, *state) {
            (Outcome::Success, BreakerState::HalfOpen { .. }) => {
                tracing::info!(switchboard.llm.event = "breaker", switchboard.breaker.state = "closed", model = %id, "circuit closed after a successful probe");
                BreakerState::Closed { failures: 0 }
            }
            (Outcome::Success, BreakerState::Closed { .. }) => BreakerState::Closed { failures: 0 },
            (Outcome::Failure, BreakerState::HalfOpen { .. }) => {
                tracing::warn!(switchboard.llm.event = "breaker", switchboard.breaker.state = "open", model = %id, "probe failed: circuit open again");
                open
            }
            (Outcome::Failure, BreakerState::Closed { failures }) => {
                if failures + 1 >= self.cfg.failure_threshold {
                    tracing::warn!(switchboard.llm.event = "breaker", switchboard.breaker.state = "open", model = %id, failures = failures + 1, "circuit opened");
                    open
                } else {
                    BreakerState::Closed { failures: failures + 1 }
                }
            }
            (Outcome::Neutral, BreakerState::HalfOpen { in_flight }) if probe => {
                BreakerState::HalfOpen { in_flight: in_flight.saturating_sub(1) }
            }
            (_, s) => s,
        };
        // A neutral probe that leaves nothing in flight re-arms the next probe.
        if let BreakerState::HalfOpen { in_flight: 0 } = *state {
            *state = BreakerState::Open { until: Instant::now() };
        }
    }
}

impl Default for BreakerRegistry {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

/// A call's admission; records a neutral outcome if dropped unrecorded (cancelled caller).
#[derive(Debug)]
pub struct Permit<'a> {
    reg: &'a BreakerRegistry,
    id: ModelId,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    /// The call succeeded: closes a half-open circuit, resets the failure count.
    pub fn succeeded(mut self) {
        self.done = true;
        self.reg.record(&self.id, self.probe, Outcome::Success);
    }

    /// The call failed in a way that says the callee is unhealthy (timeout, 5xx, garbage).
    pub fn failed(mut self) {
        self.done = true;
        self.reg.record(&self.id, self.probe, Outcome::Failure);
    }

    fn finish<T>(mut self, r: &Result<T, ProviderError>) {
        self.done = true;
        let outcome = match r {
            Ok(_) => Outcome::Success,
            Err(e) if e.is_health_failure() => Outcome::Failure,
            Err(_) => Outcome::Neutral,
        };
        self.reg.record(&self.id, self.probe, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.reg.record(&self.id, self.probe, Outcome::Neutral);
        }
    }
}

/// The circuit breaker layer.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<M> {
    inner: M,
    registry: BreakerRegistry,
}

impl<M> CircuitBreaker<M> {
    /// Wraps `inner`, keeping state in `registry`.
    pub fn new(inner: M, registry: BreakerRegistry) -> Self {
        Self { inner, registry }
    }

    /// The registry holding the state.
    pub fn registry(&self) -> &BreakerRegistry {
        &self.registry
    }
}

impl<M: ChatModel> ChatModel for CircuitBreaker<M> {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        let permit = self.registry.acquire(self.inner.id())?;
        let r = self.inner.chat(req, cancel).await;
        permit.finish(&r);
        r
    }

    /// A stream counts as a success once its first content event arrived.
    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let permit = self.registry.acquire(self.inner.id())?;
        let r = match self.inner.stream(req, cancel).await {
            Ok(s) => prime(s).await,
            Err(e) => Err(e),
        };
        permit.finish(&r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::scripted::{Scripted, Step};

    #[tokio::test(start_paused = true)]
    async fn opens_within_five_failures_and_closes_after_a_probe() {
        let steps = std::iter::repeat_n(Step::Status(503, None), 5).chain([Step::Reply("back")]);
        let reg = BreakerRegistry::new(BreakerConfig::default());
        let b = CircuitBreaker::new(Scripted::new(steps), reg.clone());
        let id = b.id().clone();
        for i in 0..5 {
            assert!(matches!(reg.state(&id), BreakerState::Closed { failures } if failures == i));
            let e = b.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap_err();
            assert_eq!(e.status(), Some(503));
        }
        assert!(matches!(reg.state(&id), BreakerState::Open { .. }));
        // Open: refused without calling the model.
        let e = b.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap_err();
        assert!(matches!(e, ProviderError::CircuitOpen { .. }));
        assert_eq!(b.inner.calls(), 5);
        // After the cool-down one probe goes through and closes the circuit.
        tokio::time::advance(Duration::from_secs(31)).await;
        let r = b.chat(ChatRequest::user("x"), CancellationToken::new()).await.unwrap();
        assert_eq!(r.text, "back");
        assert_eq!(reg.state(&id), BreakerState::Closed { failures: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_client_errors_do_not_count() {
        let reg = BreakerRegistry::new(BreakerConfig { failure_threshold: 2, ..BreakerConfig::default() });
        let b = CircuitBreaker::new(
            Scripted::new([
                Step::Status(400, None),
                Step::Status(400, None),
                Step::Status(400, None),
                Step::Status(500, None),
                Step::Status(500, None),
                Step::Status(500, None),
            ]),
            reg.clone(),
        );
        let id = b.id().clone();
        for _ in 0..3 {
            let _ = b.chat(ChatRequest::user("x"), CancellationToken::new()).await;
        }
        assert_eq!(reg.state(&id), BreakerState::Closed { failures: 0 });
        for _ in 0..2 {
            let _ = b.chat(ChatRequest::user("x"), CancellationToken::new()).await;
        }
        assert!(matches!(reg.state(&id), BreakerState::Open { .. }));
        tokio::time::advance(Duration::from_secs(31)).await;
        let _ = b.chat(ChatRequest::user("x"), CancellationToken::new()).await;
        assert!(matches!(reg.state(&id), BreakerState::Open { .. }));
        assert_eq!(b.inner.calls(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_count_too() {
        let reg = BreakerRegistry::new(BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() });
        let b = CircuitBreaker::new(Scripted::new([Step::StreamFailFirst(500)]), reg.clone());
        assert!(b.stream(ChatRequest::user("x"), CancellationToken::new()).await.is_err());
        assert!(matches!(reg.state(b.id()), BreakerState::Open { .. }));
    }
}
