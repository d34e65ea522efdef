//! Checkpoints and the store traits the engine writes them through.
//!
//! A checkpoint is either a full snapshot of the conversation-scoped fields or a delta (the
//! [`Patch`]es of one step) on top of its parent. The engine decides which; a store only keeps
//! records and answers by conversation and id. Writes are *ordered when called* and the returned
//! [`WriteAck`] resolves when they are durable, so the engine can overlap a write with the next step.

use crate::error::StoreError;
use crate::graph::TaskSpec;
use crate::state::{Patch, Scope};
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Resolves when a write is durable.
pub type WriteAck = BoxFuture<'static, Result<(), StoreError>>;

/// One stored checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    /// Conversation id.
    pub conversation_id: String,
    /// Id, increasing within the conversation (a fork takes the next free id).
    pub id: u64,
    /// The checkpoint this one follows (`None` for the first).
    pub parent: Option<u64>,
    /// The run that wrote it.
    pub run_id: String,
    /// Step within the run (-1: the input checkpoint).
    pub step: i64,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    /// Schema version of the state it encodes.
    pub schema_version: u32,
    /// Whether `payload` is a full snapshot (else a delta on `parent`).
    pub snapshot: bool,
    /// Encoded body (JSON; see [`CheckpointBody`]).
    pub payload: Vec<u8>,
}

/// The decoded payload of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointBody {
    /// Tasks of the next step (empty when the run finished).
    #[serde(rename = "n", default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<TaskSpec>,
    /// Full values (snapshots only).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Map<String, Value>>,
    /// Changes since the parent (deltas only).
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
}

/// A finished or interrupted task of a step whose checkpoint is not written yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWrite {
    /// Deterministic task id (`checkpoint:index:node`).
    pub task_id: String,
    /// Encoded outcome (engine-defined JSON).
    pub payload: Vec<u8>,
}

/// Where the engine keeps checkpoints. Every implementation passes the conformance suite in
/// `switchboard-store`.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// Orders the write of a checkpoint now; the future resolves when it is durable.
    /// Fails with [`StoreError::Conflict`] if the id exists, and refuses a delta whose parent is missing.
    fn put(&self, record: CheckpointRecord) -> WriteAck;

    /// The checkpoint with the highest id.
    async fn latest(&self, conversation: &str) -> Result<Option<CheckpointRecord>, StoreError>;

    /// One checkpoint.
    async fn get(&self, conversation: &str, id: u64) -> Result<Option<CheckpointRecord>, StoreError>;

    /// The checkpoints from the nearest snapshot ancestor of `id` up to `id`, oldest first.
    async fn chain(&self, conversation: &str, id: u64) -> Result<Vec<CheckpointRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cur = Some(id);
        while let Some(i) = cur {
            let r = self.get(conversation, i).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("{conversation}: checkpoint {i} is missing from a chain"))
            })?;
            let snapshot = r.snapshot;
            cur = r.parent;
            out.push(r);
            if snapshot {
                out.reverse();
                return Ok(out);
            }
        }
        Err(StoreError::Corrupt(format!("{conversation}: checkpoint {id} has no snapshot ancestor")))
    }

    /// Checkpoints newest first, with ids below `before` when given.
    async fn history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError>;

    /// Orders the write of finished tasks' outcomes for the step that follows `checkpoint`
    /// (a task id written again replaces the earlier outcome).
    fn put_writes(&self, conversation: &str, checkpoint: u64, writes: Vec<PendingWrite>) -> WriteAck;

    /// The outcomes written for the step that follows `checkpoint`.
    async fn pending_writes(&self, conversation: &str, checkpoint: u64) -> Result<Vec<PendingWrite>, StoreError>;

    /// Deletes every checkpoint and pending write of a conversation; returns how many records went.
    async fn delete_conversation(&self, conversation: &str) -> Result<u64, StoreError>;
}

/// Where customer- and assistant-scoped fields live (shared across conversations).
#[async_trait]
pub trait ContextStore: Send + Sync + 'static {
    /// All fields stored for an owner (a customer id or an assistant id).
    async fn load(&self, scope: Scope, owner: &str) -> Result<Map<String, Value>, StoreError>;
    /// Upserts fields for an owner.
    async fn save(&self, scope: Scope, owner: &str, values: Map<String, Value>) -> Result<(), StoreError>;
    /// Deletes everything stored for an owner; returns how many fields went.
    async fn delete_owner(&self, scope: Scope, owner: &str) -> Result<u64, StoreError>;
}

#[derive(Default)]
struct MemConversation {
    checkpoints: BTreeMap<u64, CheckpointRecord>,
    writes: HashMap<u64, Vec<PendingWrite>>,
}

/// Checkpoints and context in process memory (tests, benchmarks, demos).
#[derive(Default)]
pub struct MemoryStore {
    conversations: Mutex<HashMap<String, MemConversation>>,
    context: Mutex<HashMap<(Scope, String), Map<String, Value>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    /// Total payload bytes held for a conversation (checkpoints and pending writes).
    pub fn payload_bytes(&self, conversation: &str) -> usize {
        let g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        g.get(conversation).map_or(0, |c| {
            c.checkpoints.values().map(|r| r.payload.len() + r.run_id.len() + 40).sum::<usize>()
                + c.writes.values().flatten().map(|w| w.payload.len() + w.task_id.len()).sum::<usize>()
        })
    }
}

fn ready(r: Result<(), StoreError>) -> WriteAck {
    Box::pin(futures::future::ready(r))
}

#[async_trait]
impl CheckpointStore for MemoryStore {
    fn put(&self, record: CheckpointRecord) -> WriteAck {
        let mut g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        let conv = g.entry(record.conversation_id.clone()).or_default();
        if conv.checkpoints.contains_key(&record.id) {
            return ready(Err(StoreError::Conflict { conversation: record.conversation_id, id: record.id }));
        }
        if let Some(p) = record.parent {
            if !conv.checkpoints.contains_key(&p) {
                return ready(Err(StoreError::Unavailable(format!(
                    "parent checkpoint {p} of {} does not exist",
                    record.id
                ))));
            }
        } else if !record.snapshot {
            return ready(Err(StoreError::Corrupt("a delta checkpoint needs a parent".into())));
        }
        conv.checkpoints.insert(record.id, record);
        ready(Ok(()))
    }

    async fn latest(&self, conversation: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        let g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(conversation).and_then(|c| c.checkpoints.values().next_back().cloned()))
    }

    async fn get(&self, conversation: &str, id: u64) -> Result<Option<CheckpointRecord>, StoreError> {
        let g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(conversation).and_then(|c| c.checkpoints.get(&id).cloned()))
    }

    async fn history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        let g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(conversation).map_or_else(Vec::new, |c| {
            c.checkpoints.range(..before.unwrap_or(u64::MAX)).rev().take(limit).map(|(_, r)| r.clone()).collect()
        }))
    }

    fn put_writes(&self, conversation: &str, checkpoint: u64, writes: Vec<PendingWrite>) -> WriteAck {
        let mut g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        let list = g.entry(conversation.to_string()).or_default().writes.entry(checkpoint).or_default();
        for w in writes {
            list.retain(|x| x.task_id != w.task_id);
            list.push(w);
        }
        ready(Ok(()))
    }

    async fn pending_writes(&self, conversation: &str, checkpoint: u64) -> Result<Vec<PendingWrite>, StoreError> {
        let g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(conversation).and_then(|c| c.writes.get(&checkpoint).cloned()).unwrap_or_default())
    }

    async fn delete_conversation(&self, conversation: &str) -> Result<u64, StoreError> {
        let mut g = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.remove(conversation)
            .map_or(0, |c| (c.checkpoints.len() + c.writes.values().map(Vec::len).sum::<usize>()) as u64))
    }
}

#[async_trait]
impl ContextStore for MemoryStore {
    async fn load(&self, scope: Scope, owner: &str) -> Result<Map<String, Value>, StoreError> {
        let g = self.context.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.get(&(scope, owner.to_string())).cloned().unwrap_or_default())
    }
    async fn save(&self, scope: Scope, owner: &str, values: Map<String, Value>) -> Result<(), StoreError> {
        let mut g = self.context.lock().unwrap_or_else(|p| p.into_inner());
        g.entry((scope, owner.to_string())).or_default().extend(values);
        Ok(())
    }
    async fn delete_owner(&self, scope: Scope, owner: &str) -> Result<u64, StoreError> {
        let mut g = self.context.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.remove(&(scope, owner.to_string())).map_or(0, |m| m.len() as u64))
    }
}
