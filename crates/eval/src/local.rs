//! The in-process driver: the reference assistant's [`Runtime`] on an in-memory engine store, with
//! a fresh copy of the fake exchange's seed data for every scenario.

use crate::check::Observed;
use crate::run::{Driver, DriverError};
use crate::scenario::{Action, Scenario};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use switchboard_assistant::{ExchangeAssistant, FakeExchange, Runtime, ToolBackend, ToolCall, ToolError};
use switchboard_engine::MemoryStore;

/// The back end of an in-process run: the seeded fake exchange, replaced by a fresh seeded copy
/// when a scenario starts, so one scenario's freeze never leaks into the next. (Scenarios run
/// one at a time.)
#[derive(Debug)]
pub struct Reseeded {
    current: Mutex<FakeExchange>,
}

impl Default for Reseeded {
    fn default() -> Self {
        Self { current: Mutex::new(FakeExchange::seeded()) }
    }
}

impl Reseeded {
    fn exchange(&self) -> FakeExchange {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Starts again from the seed data.
    pub fn reseed(&self) {
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = FakeExchange::seeded();
    }
}

impl ToolBackend for Reseeded {
    fn call(&self, call: &ToolCall) -> Result<Value, ToolError> {
        self.exchange().call(call)
    }
    fn tool_names(&self) -> Vec<String> {
        self.exchange().tool_names()
    }
}

/// Runs scenarios in this process. Build each assistant with
/// `AssistantOptions::backend = Some(driver.backend())` so its tools reach the reseeded exchange.
pub struct InProcess {
    backend: Arc<Reseeded>,
    runtimes: BTreeMap<String, Runtime>,
    next: AtomicU64,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess").field("assistants", &self.runtimes.keys().collect::<Vec<_>>()).finish()
    }
}

impl Default for InProcess {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcess {
    /// A driver with no assistant yet.
    pub fn new() -> Self {
        Self { backend: Arc::new(Reseeded::default()), runtimes: BTreeMap::new(), next: AtomicU64::new(1) }
    }

    /// The back end every assistant of this driver must use.
    pub fn backend(&self) -> Arc<Reseeded> {
        self.backend.clone()
    }

    /// Adds an assistant under the name scenarios use, on an in-memory engine store.
    pub fn add(&mut self, name: &str, assistant: ExchangeAssistant) {
        let engine = assistant.engine(Arc::new(MemoryStore::new()));
        self.runtimes.insert(name.to_string(), Runtime::new(assistant, engine));
    }
}

/// A conversation of the in-process driver.
#[derive(Debug)]
pub struct LocalConversation {
    runtime: Runtime,
    id: String,
    customer: Option<String>,
}

impl LocalConversation {
    /// Its conversation id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

async fn state_json(rt: &Runtime, conv: &str) -> Value {
    rt.engine.state(conv).await.map(|s| s.to_json()).unwrap_or(Value::Null)
}

impl Driver for InProcess {
    type Conversation = LocalConversation;

    async fn open(&self, scenario: &Scenario) -> Result<LocalConversation, DriverError> {
        let runtime =
            self.runtimes.get(&scenario.assistant).cloned().ok_or_else(|| {
                DriverError(format!("assistant `{}` is not available in process", scenario.assistant))
            })?;
        self.backend.reseed();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(LocalConversation { runtime, id: format!("scenario_{n}"), customer: scenario.customer.clone() })
    }

    async fn play(&self, c: &mut LocalConversation, action: Action<'_>) -> Result<Observed, DriverError> {
        let before = state_json(&c.runtime, &c.id).await;
        let customer = c.customer.as_deref();
        let started = Instant::now();
        let view = match action {
            Action::Say(text) => c.runtime.say(&c.id, customer, text).await.map_err(DriverError::msg)?,
            Action::Approve(approve) => {
                let pending = c.runtime.pending_approvals(&c.id).await.map_err(DriverError::msg)?;
                let id = pending
                    .first()
                    .and_then(|p| p["id"].as_str())
                    .ok_or_else(|| DriverError("no approval is pending".into()))?
                    .to_string();
                c.runtime.approve(&c.id, customer, &id, approve, "scenario").await.map_err(DriverError::msg)?
            }
        };
        let latency = started.elapsed();
        let interrupts: Vec<Value> = view.interrupts.iter().map(|i| i.payload.clone()).collect();
        Ok(Observed::from_states(&before, &view.state.to_json(), &interrupts, latency))
    }
}
