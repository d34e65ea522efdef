//! Deleting customer data: one conversation (the API's delete), every conversation of one customer
//! (the right to erasure), and conversations idle for longer than their tenant's retention (a
//! background job). All three erase the same things — the engine's checkpoints and pending writes,
//! the conversation record, its runs, events, feedback and idempotency keys — and each leaves a
//! record in the hash-chained audit log with counts only, never content.

use crate::error::ApiError;
use crate::state::{AppState, now_ms};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use switchboard_engine::EngineError;
use switchboard_store::AuditEvent;
use switchboard_store::records::{ConversationFilter, ConversationRecord};

/// What erasing conversations deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// Checkpoints (and their pending writes) of the engine.
    pub checkpoints: u64,
    /// Messages in the conversation state.
    pub messages: u64,
    /// Run records.
    pub runs: u64,
    /// Run events.
    pub events: u64,
    /// Feedback records.
    pub feedback: u64,
    /// Idempotency keys.
    pub idempotency_keys: u64,
    /// Recorded turns (cassettes).
    pub cassette_turns: u64,
}

impl Erased {
    fn add(&mut self, o: Erased) {
        self.checkpoints += o.checkpoints;
        self.messages += o.messages;
        self.runs += o.runs;
        self.events += o.events;
        self.feedback += o.feedback;
        self.idempotency_keys += o.idempotency_keys;
        self.cassette_turns += o.cassette_turns;
    }
}

/// Erases one conversation (engine state first, then the records); `None` when the records were
/// already gone (a concurrent delete).
pub(crate) async fn erase_conversation(
    state: &AppState,
    conv: &ConversationRecord,
) -> Result<Option<Erased>, ApiError> {
    let (checkpoints, messages) = match state.inner.assistants.get(&conv.assistant) {
        Some(a) => {
            // Counted from the state as it was just before the erase.
            let messages = match a.engine.state(&conv.id).await {
                Ok(s) => s.get_array("messages").len() as u64,
                Err(EngineError::UnknownConversation(_)) => 0,
                Err(e) => return Err(e.into()),
            };
            (a.engine.delete(&conv.id).await? as u64, messages)
        }
        None => (0, 0),
    };
    let Some(d) = state.records().delete_conversation(&conv.tenant, &conv.id).await? else { return Ok(None) };
    Ok(Some(Erased {
        checkpoints,
        messages,
        runs: d.runs,
        events: d.events,
        feedback: d.feedback,
        idempotency_keys: d.idempotency_keys,
        cassette_turns: d.cassette_turns,
    }))
}

/// What [`erase_customer`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CustomerErasure {
    /// The customer.
    pub customer_id: String,
    /// Conversations erased.
    pub conversations: u64,
    /// What they held.
    pub deleted: Erased,
}

/// Erases every conversation of one customer of a tenant, then records it in the audit log.
///
/// # Errors
/// Store or engine failures (what was erased before the failure stays erased; calling again
/// finishes the job).
pub async fn erase_customer(
    state: &AppState,
    tenant: &str,
    customer_id: &str,
    actor: &str,
) -> Result<CustomerErasure, ApiError> {
    let mut out = CustomerErasure { customer_id: customer_id.to_string(), ..Default::default() };
    loop {
        let filter =
            ConversationFilter { customer_id: Some(customer_id.to_string()), limit: 100, ..Default::default() };
        let page = state.records().list_conversations(tenant, &filter).await?;
        if page.is_empty() {
            break;
        }
        for conv in &page {
            if let Some(e) = erase_conversation(state, conv).await? {
                out.conversations += 1;
                out.deleted.add(e);
            }
        }
    }
    state
        .audit(
            AuditEvent::new(tenant, actor, "customer.erase", customer_id)
                .with_details(json!({"conversations": out.conversations, "deleted": out.deleted})),
        )
        .await?;
    Ok(out)
}

/// How long conversations are kept after their last activity: a default and per-tenant overrides
/// (`None`: kept until deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Every tenant without an override.
    pub default_ttl: Option<Duration>,
    /// Per tenant; `None` keeps that tenant's conversations forever.
    pub tenants: HashMap<String, Option<Duration>>,
}

impl Retention {
    /// The TTL of one tenant.
    pub fn ttl(&self, tenant: &str) -> Option<Duration> {
        self.tenants.get(tenant).copied().unwrap_or(self.default_ttl)
    }

    /// Whether any tenant has a TTL.
    pub fn is_enabled(&self) -> bool {
        self.default_ttl.is_some() || self.tenants.values().any(Option::is_some)
    }

    fn shortest(&self) -> Option<Duration> {
        self.tenants.values().copied().chain([self.default_ttl]).flatten().min()
    }
}

/// What one retention pass erased, by tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Purge {
    /// Conversations erased per tenant.
    pub conversations: HashMap<String, u64>,
    /// What they held, per tenant.
    pub deleted: HashMap<String, Erased>,
}

impl Purge {
    /// Conversations erased in all.
    pub fn total(&self) -> u64 {
        self.conversations.values().sum()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One retention pass at `now` (Unix ms): erases every conversation whose last activity is older
/// than its tenant's TTL and is not running, then records one audit entry per tenant touched.
///
/// # Errors
/// Store or engine failures (the pass can simply run again).
pub async fn purge_expired(state: &AppState, policy: &Retention, now: i64) -> Result<Purge, ApiError> {
    let mut purge = Purge::default();
    let Some(shortest) = policy.shortest() else { return Ok(purge) };
    let mut after: Option<(i64, String)> = None;
    loop {
        let page =
            state.records().conversations_idle_before(now.saturating_sub(ms(shortest)), after.clone(), 200).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.updated_at_ms, last.id.clone()));
        for conv in &page {
            let Some(ttl) = policy.ttl(&conv.tenant) else { continue };
            if conv.updated_at_ms >= now.saturating_sub(ms(ttl)) || conv.status == "running" {
                continue;
            }
            if let Some(e) = erase_conversation(state, conv).await? {
                *purge.conversations.entry(conv.tenant.clone()).or_default() += 1;
                purge.deleted.entry(conv.tenant.clone()).or_default().add(e);
            }
        }
    }
    let mut tenants: Vec<_> = purge.conversations.iter().collect();
    tenants.sort();
    for (tenant, n) in tenants {
        let ttl_days = policy.ttl(tenant).map(|d| d.as_secs_f64() / 86_400.0);
        state
            .audit(
                AuditEvent::new(tenant.as_str(), "system:retention", "retention.purge", tenant.as_str()).with_details(
                    json!({"conversations": n, "ttl_days": ttl_days, "deleted": purge.deleted.get(tenant)}),
                ),
            )
            .await?;
    }
    Ok(purge)
}

/// Runs [`purge_expired`] every `every` until the server's shutdown starts; failures are logged
/// and retried at the next tick.
pub async fn retention_loop(state: AppState, policy: Retention, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.inner.closing.cancelled() => return,
            _ = tick.tick() => {}
        }
        match purge_expired(&state, &policy, now_ms()).await {
            Ok(p) if p.total() > 0 => {
                tracing::info!(conversations = p.total(), "retention: erased expired conversations")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying at the next tick"),
        }
    }
}
