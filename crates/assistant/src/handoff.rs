//! The human handoff lifecycle and the desk's queue.
//!
//! `bot-active → handoff-requested → queued → agent-assigned → agent-active → returned-to-bot`.
//! The conversation's state holds its [`Handoff`] (so it is checkpointed, forked and replayed
//! with the conversation); the [`Desk`] is an index over the conversations that wait for or are
//! with a human, kept in step by the graph after every run, which the desk endpoints read.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Where a conversation is in the handoff lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HandoffStatus {
    /// The bot answers.
    #[default]
    BotActive,
    /// A human was asked for.
    HandoffRequested,
    /// Waiting in the desk's queue.
    Queued,
    /// An agent claimed it.
    AgentAssigned,
    /// The agent has written to the customer.
    AgentActive,
    /// The agent handed it back; the bot answers again.
    ReturnedToBot,
}

impl HandoffStatus {
    /// A human owns the conversation or is about to.
    pub fn with_human(self) -> bool {
        matches!(self, Self::HandoffRequested | Self::Queued | Self::AgentAssigned | Self::AgentActive)
    }
    /// Kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BotActive => "bot-active",
            Self::HandoffRequested => "handoff-requested",
            Self::Queued => "queued",
            Self::AgentAssigned => "agent-assigned",
            Self::AgentActive => "agent-active",
            Self::ReturnedToBot => "returned-to-bot",
        }
    }
}

/// One transition, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The new status.
    pub status: HandoffStatus,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// A conversation's handoff state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// Current status.
    pub status: HandoffStatus,
    /// `urgent`, `high`, `normal` or `low`.
    pub priority: Option<String>,
    /// Why (`customer_request`, `fraud_report`, `approval`, ...).
    pub reason: Option<String>,
    /// What the human needs to know.
    pub summary: Option<String>,
    /// When it entered the queue.
    pub queued_at_ms: Option<i64>,
    /// When the SLA for a first human response runs out.
    pub sla_due_ms: Option<i64>,
    /// The agent who claimed it.
    pub assigned_to: Option<String>,
    /// The agent's first message, Unix ms (SLA met when `<= sla_due_ms`).
    pub first_response_at_ms: Option<i64>,
    /// The flow to resume when handed back.
    pub resume_flow: Option<String>,
    /// Every transition.
    #[serde(default)]
    pub history: Vec<Transition>,
    /// It has been handed to a human at least once for a reason other than an approval.
    #[serde(default)]
    pub escalated: bool,
}

/// A transition that is not allowed from the current status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a conversation that is {from}")]
pub struct BadTransition {
    /// What was attempted.
    pub action: &'static str,
    /// The status it was in.
    pub from: &'static str,
}

const PRIORITY_RANK: &[&str] = &["urgent", "high", "normal", "low"];

/// Rank of a priority (0 is the most urgent).
pub fn priority_rank(p: &str) -> usize {
    PRIORITY_RANK.iter().position(|x| *x == p).unwrap_or(PRIORITY_RANK.len())
}

impl Handoff {
    /// Reads it from a state value (`null`: bot-active).
    pub fn from_value(v: Option<&serde_json::Value>) -> Self {
        v.and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default()
    }

    /// As a state value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn go(&mut self, status: HandoffStatus, now: i64) {
        self.status = status;
        self.history.push(Transition { status, at_ms: now });
    }

    /// Asks for a human and queues the conversation. Asking again while queued keeps the
    /// earlier queue time and raises the priority if the new reason is more urgent.
    pub fn request(
        &mut self,
        reason: &str,
        priority: &str,
        sla_ms: u64,
        summary: String,
        resume_flow: Option<String>,
        now: i64,
    ) {
        if self.status.with_human() {
            let more_urgent = self.priority.as_deref().is_none_or(|p| priority_rank(priority) < priority_rank(p));
            if more_urgent {
                self.priority = Some(priority.into());
                self.sla_due_ms = Some(self.queued_at_ms.unwrap_or(now) + sla_ms as i64);
            }
            // A queue entry that was only waiting for an approval becomes a real handoff.
            if more_urgent || self.reason.as_deref() == Some("approval") {
                self.reason = Some(reason.into());
            }
            self.summary = Some(summary);
            return;
        }
        self.go(HandoffStatus::HandoffRequested, now);
        self.priority = Some(priority.into());
        self.reason = Some(reason.into());
        self.summary = Some(summary);
        self.resume_flow = resume_flow;
        self.assigned_to = None;
        self.first_response_at_ms = None;
        self.go(HandoffStatus::Queued, now);
        self.queued_at_ms = Some(now);
        self.sla_due_ms = Some(now + sla_ms as i64);
    }

    /// An agent claims it.
    ///
    /// # Errors
    /// When it is not queued (or already assigned to someone else).
    pub fn claim(&mut self, agent: &str, now: i64) -> Result<(), BadTransition> {
        match self.status {
            HandoffStatus::Queued | HandoffStatus::HandoffRequested => {
                self.assigned_to = Some(agent.into());
                self.go(HandoffStatus::AgentAssigned, now);
                Ok(())
            }
            HandoffStatus::AgentAssigned | HandoffStatus::AgentActive if self.assigned_to.as_deref() == Some(agent) => {
                Ok(())
            }
            s => Err(BadTransition { action: "claim", from: s.as_str() }),
        }
    }

    /// The agent wrote to the customer.
    ///
    /// # Errors
    /// When no agent has claimed it.
    pub fn agent_message(&mut self, now: i64) -> Result<(), BadTransition> {
        match self.status {
            HandoffStatus::AgentAssigned => {
                self.first_response_at_ms.get_or_insert(now);
                self.go(HandoffStatus::AgentActive, now);
                Ok(())
            }
            HandoffStatus::AgentActive => Ok(()),
            s => Err(BadTransition { action: "send an agent message in", from: s.as_str() }),
        }
    }

    /// The agent hands the conversation back to the bot.
    ///
    /// # Errors
    /// When no agent has claimed it.
    pub fn hand_back(&mut self, now: i64) -> Result<(), BadTransition> {
        match self.status {
            HandoffStatus::AgentAssigned | HandoffStatus::AgentActive => {
                self.go(HandoffStatus::ReturnedToBot, now);
                Ok(())
            }
            s => Err(BadTransition { action: "hand back", from: s.as_str() }),
        }
    }

    /// An approval-only queue entry is resolved without a human taking over: back to the bot.
    pub fn approval_resolved(&mut self, now: i64) {
        if self.status == HandoffStatus::Queued && self.reason.as_deref() == Some("approval") {
            self.go(HandoffStatus::BotActive, now);
        }
    }
}

/// A row of the desk's queue (the JSON of `GET /v1/desk/queue`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueItem {
    /// Conversation.
    pub conversation_id: String,
    /// Customer.
    pub customer_id: Option<String>,
    /// Priority.
    pub priority: String,
    /// Reason.
    pub reason: String,
    /// Summary for the human.
    pub summary: String,
    /// Handoff status.
    pub status: String,
    /// Queued at, Unix ms.
    pub queued_at_ms: i64,
    /// SLA due, Unix ms.
    pub sla_due_ms: i64,
    /// Claimed by.
    pub assigned_to: Option<String>,
}

/// The conversations waiting for or with a human.
#[derive(Debug, Default)]
pub struct Desk {
    items: Mutex<BTreeMap<String, QueueItem>>,
    /// Set once the queue has been rebuilt from the stored conversations (see
    /// [`crate::desk::restore_queue`]).
    restored: tokio::sync::OnceCell<()>,
}

impl Desk {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, QueueItem>> {
        self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings a conversation's row in line with its handoff state.
    pub fn sync(&self, conversation_id: &str, customer_id: Option<&str>, h: &Handoff) {
        let mut items = self.lock();
        if !h.status.with_human() {
            items.remove(conversation_id);
            return;
        }
        items.insert(
            conversation_id.to_string(),
            QueueItem {
                conversation_id: conversation_id.to_string(),
                customer_id: customer_id.map(str::to_string),
                priority: h.priority.clone().unwrap_or_else(|| "normal".into()),
                reason: h.reason.clone().unwrap_or_default(),
                summary: h.summary.clone().unwrap_or_default(),
                status: h.status.as_str().to_string(),
                queued_at_ms: h.queued_at_ms.unwrap_or(0),
                sla_due_ms: h.sla_due_ms.unwrap_or(0),
                assigned_to: h.assigned_to.clone(),
            },
        );
    }

    /// The queue: most urgent first, then the earliest SLA.
    pub fn queue(&self) -> Vec<QueueItem> {
        let mut v: Vec<QueueItem> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| {
            priority_rank(&a.priority).cmp(&priority_rank(&b.priority)).then(a.sla_due_ms.cmp(&b.sla_due_ms))
        });
        v
    }

    /// One row.
    pub fn get(&self, conversation_id: &str) -> Option<QueueItem> {
        self.lock().get(conversation_id).cloned()
    }

    /// Runs `restore` the first time it is called (concurrent callers wait for that one run; a
    /// failed run is retried by the next caller).
    pub async fn restore_once<F, E>(&self, restore: F) -> Result<(), E>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        self.restored.get_or_try_init(|| restore).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lifecycle_and_bad_transitions() {
        let mut h = Handoff::default();
        assert!(h.claim("a", 1).is_err());
        h.request("customer_request", "normal", 900_000, "s".into(), Some("card_freeze".into()), 10);
        assert_eq!(h.status, HandoffStatus::Queued);
        assert_eq!(h.sla_due_ms, Some(900_010));
        h.request("fraud_report", "urgent", 120_000, "s2".into(), None, 20);
        assert_eq!(h.priority.as_deref(), Some("urgent"));
        assert_eq!(h.sla_due_ms, Some(120_010));
        assert!(h.hand_back(30).is_err());
        h.claim("agent_bea", 40).unwrap();
        assert!(h.claim("agent_other", 41).is_err());
        h.agent_message(50).unwrap();
        h.hand_back(60).unwrap();
        let statuses: Vec<&str> = h.history.iter().map(|t| t.status.as_str()).collect();
        assert_eq!(statuses, ["handoff-requested", "queued", "agent-assigned", "agent-active", "returned-to-bot"]);
        assert_eq!(h.first_response_at_ms, Some(50));
    }
}
