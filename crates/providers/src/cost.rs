//! Usage and cost: a price table from config, cost per call in micro-dollars, and budgets per
//! tenant and per conversation that refuse calls once spent ([`ProviderError::BudgetExceeded`]).
//!
//! Prices are USD per million tokens, which is numerically micro-dollars per token, so a cost
//! is `tokens x price` rounded once at the end. Cached reads and writes have their own prices
//! (falling back to the input price); reasoning tokens are output tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::ProviderError;
use crate::event::{EventStream, StreamEvent};
use crate::model::{Capabilities, ChatModel, ModelId};
use crate::types::{ChatRequest, ChatResponse, RequestMetadata, Usage};

/// Prices of one model, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Uncached input.
    pub input_per_mtok: f64,
    /// Output (reasoning included).
    pub output_per_mtok: f64,
    /// Input read from the prompt cache; the input price when absent.
    #[serde(default)]
    pub cache_read_per_mtok: Option<f64>,
    /// Input written to the prompt cache; the input price when absent.
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    /// The cost of `usage` in micro-dollars.
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let uncached =
            usage.input_tokens.saturating_sub(usage.cache_read_tokens).saturating_sub(usage.cache_write_tokens);
        let micros = uncached as f64 * self.input_per_mtok
            + usage.cache_read_tokens as f64 * self.cache_read_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.cache_write_tokens as f64 * self.cache_write_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.output_tokens as f64 * self.output_per_mtok;
        if micros.is_finite() && micros > 0.0 { micros.round() as u64 } else { 0 }
    }
}

/// Prices keyed by `provider/model`; `provider/*` matches any model of a provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

impl PriceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a price (`key` is `provider/model` or `provider/*`).
    pub fn insert(&mut self, key: impl Into<String>, price: Price) {
        self.prices.insert(key.into(), price);
    }

    /// Parses a JSON object `{"provider/model": {"input_per_mtok": .., ..}}`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidRequest`] on malformed JSON.
    pub fn from_json(text: &str) -> Result<Self, ProviderError> {
        serde_json::from_str(text).map_err(|e| ProviderError::InvalidRequest(format!("price table: {e}")))
    }

    /// The price of a model.
    pub fn get(&self, id: &ModelId) -> Option<&Price> {
        self.prices.get(&id.to_string()).or_else(|| self.prices.get(&format!("{}/*", id.provider)))
    }

    /// The cost of a call, 0 when the model has no price (logged once per call).
    pub fn cost_micros(&self, id: &ModelId, usage: &Usage) -> u64 {
        match self.get(id) {
            Some(p) => p.cost_micros(usage),
            None => {
                tracing::debug!(model = %id, "no price for model: cost counted as 0");
                0
            }
        }
    }
}

/// What a budget applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    /// All calls of a tenant.
    Tenant(String),
    /// All calls of a conversation.
    Conversation(String),
}

impl std::fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tenant(t) => write!(f, "tenant {t}"),
            Self::Conversation(c) => write!(f, "conversation {c}"),
        }
    }
}

/// Spending limits and what was spent, in micro-dollars. Shared (clone is cheap).
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    per_tenant: Option<u64>,
    per_conversation: Option<u64>,
    spent: Arc<Mutex<HashMap<BudgetScope, u64>>>,
}

impl Budgets {
    /// Limits; `None` means unlimited.
    pub fn new(per_tenant: Option<u64>, per_conversation: Option<u64>) -> Self {
        Self { per_tenant, per_conversation, spent: Arc::default() }
    }

    fn scopes(&self, meta: &RequestMetadata) -> Vec<(BudgetScope, u64)> {
        let mut v = Vec::with_capacity(2);
        if let (Some(t), Some(limit)) = (&meta.tenant, self.per_tenant) {
            v.push((BudgetScope::Tenant(t.clone()), limit));
        }
        if let (Some(c), Some(limit)) = (&meta.conversation, self.per_conversation) {
            v.push((BudgetScope::Conversation(c.clone()), limit));
        }
        v
    }

    /// Refuses a call whose tenant or conversation has spent its budget.
    ///
    /// # Errors
    /// [`ProviderError::BudgetExceeded`] naming the spent budget.
    pub fn check(&self, meta: &RequestMetadata) -> Result<(), ProviderError> {
        let spent = self.spent.lock().expect("budget lock poisoned");
        for (scope, limit) in self.scopes(meta) {
            let s = spent.get(&scope).copied().unwrap_or(0);
            if s >= limit {
                return Err(ProviderError::BudgetExceeded {
                    scope: scope.to_string(),
                    limit_micros: limit,
                    spent_micros: s,
                });
            }
        }
        Ok(())
    }

    /// Records a call's cost against its tenant and conversation.
    pub fn charge(&self, meta: &RequestMetadata, micros: u64) {
        let mut spent = self.spent.lock().expect("budget lock poisoned");
        if let Some(t) = &meta.tenant {
            *spent.entry(BudgetScope::Tenant(t.clone())).or_insert(0) += micros;
        }
        if let Some(c) = &meta.conversation {
            *spent.entry(BudgetScope::Conversation(c.clone())).or_insert(0) += micros;
        }
    }

    /// Spent so far in a scope.
    pub fn spent(&self, scope: &BudgetScope) -> u64 {
        self.spent.lock().expect("budget lock poisoned").get(scope).copied().unwrap_or(0)
    }
}

/// Prices every call, charges budgets, and refuses calls over budget. Streams are charged
/// with the last usage they reported when they end or are dropped (an aborted stream is
/// charged for what the vendor counted so far).
#[derive(Debug, Clone)]
pub struct Metered<M> {
    inner: M,
    prices: Arc<PriceTable>,
    budgets: Budgets,
}

impl<M> Metered<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, prices: Arc<PriceTable>, budgets: Budgets) -> Self {
        Self { inner, prices, budgets }
    }

    /// The budgets this layer charges.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }
}

struct StreamCharge {
    id: ModelId,
    meta: RequestMetadata,
    prices: Arc<PriceTable>,
    budgets: Budgets,
    usage: Usage,
}

impl Drop for StreamCharge {
    fn drop(&mut self) {
        let cost = self.prices.cost_micros(&self.id, &self.usage);
        self.budgets.charge(&self.meta, cost);
        tracing::info!(model = %self.id, gen_ai.usage.input_tokens = self.usage.input_tokens,
            gen_ai.usage.output_tokens = self.usage.output_tokens, cost_micros = cost, "stream charged");
    }
}

impl<M: ChatModel> ChatModel for Metered<M> {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        self.budgets.check(&req.metadata)?;
        let meta = req.metadata.clone();
        let r = self.inner.chat(req, cancel).await?;
        let cost = self.prices.cost_micros(self.inner.id(), &r.usage);
        self.budgets.charge(&meta, cost);
        tracing::info!(model = %self.inner.id(), gen_ai.usage.input_tokens = r.usage.input_tokens,
            gen_ai.usage.output_tokens = r.usage.output_tokens, cost_micros = cost, "call charged");
        Ok(r)
    }

    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        self.budgets.check(&req.metadata)?;
        let mut charge = StreamCharge {
            id: self.inner.id().clone(),
            meta: req.metadata.clone(),
            prices: self.prices.clone(),
            budgets: self.budgets.clone(),
            usage: Usage::default(),
        };
        let s = self.inner.stream(req, cancel).await?;
        Ok(Box::pin(s.map(move |ev| {
            // Borrow the whole guard so the closure owns it (not just its `usage` field).
            let guard = &mut charge;
            if let Ok(StreamEvent::Usage(u)) = &ev {
                guard.usage = *u;
            }
            ev
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::scripted::{Scripted, Step};

    #[test]
    fn cost_in_micro_dollars_with_cache_prices() {
        let p = Price {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
            cache_read_per_mtok: Some(0.3),
            cache_write_per_mtok: Some(3.75),
        };
        let u = Usage {
            input_tokens: 1_000_000 + 200_000 + 100_000,
            output_tokens: 10_000,
            cache_read_tokens: 200_000,
            cache_write_tokens: 100_000,
            reasoning_tokens: 0,
        };
        // 3.00 + 0.06 + 0.375 + 0.15 USD
        assert_eq!(p.cost_micros(&u), 3_585_000);
    }

    #[test]
    fn price_table_from_json_with_wildcard() {
        let t = PriceTable::from_json(
            r#"{"openai/gpt-4.1": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
                "internal/*": {"input_per_mtok": 0.0, "output_per_mtok": 0.0}}"#,
        )
        .unwrap();
        let u = Usage { input_tokens: 500, output_tokens: 100, ..Usage::default() };
        assert_eq!(t.cost_micros(&ModelId::new("openai", "gpt-4.1"), &u), 1_800);
        assert_eq!(t.cost_micros(&ModelId::new("internal", "llama"), &u), 0);
        assert!(t.get(&ModelId::new("openai", "other")).is_none());
    }

    #[tokio::test]
    async fn budget_exceeded_after_spending() {
        let mut t = PriceTable::new();
        t.insert(
            "scripted/*",
            Price {
                input_per_mtok: 100.0,
                output_per_mtok: 100.0,
                cache_read_per_mtok: None,
                cache_write_per_mtok: None,
            },
        );
        // Each scripted call uses 15 tokens = 1500 micro-USD.
        let budgets = Budgets::new(Some(2_000), None);
        let m = Metered::new(
            Scripted::new([Step::Reply("a"), Step::Reply("b"), Step::Reply("c")]),
            Arc::new(t),
            budgets.clone(),
        );
        let mut req = ChatRequest::user("x");
        req.metadata.tenant = Some("acme".into());
        m.chat(req.clone(), CancellationToken::new()).await.unwrap();
        m.chat(req.clone(), CancellationToken::new()).await.unwrap();
        assert_eq!(budgets.spent(&BudgetScope::Tenant("acme".into())), 3_000);
        let e = m.chat(req.clone(), CancellationToken::new()).await.unwrap_err();
        assert!(matches!(e, ProviderError::BudgetExceeded { limit_micros: 2_000, spent_micros: 3_000, .. }));
        // Streams are charged too, on drop.
        let mut other = req.clone();
        other.metadata.tenant = Some("globex".into());
        let s = m.stream(other, CancellationToken::new()).await.unwrap();
        let _ = crate::event::collect(s, "t").await.unwrap();
        assert_eq!(budgets.spent(&BudgetScope::Tenant("globex".into())), 1_500);
    }
}
