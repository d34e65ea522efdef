//! A per-worker view of the store whose checkpoint writes carry the worker's lease tokens.

use super::{Fence, PgStore};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use switchboard_engine::{CheckpointRecord, CheckpointStore, ContextStore, PendingWrite, Scope, StoreError, WriteAck};

/// Wraps a [`PgStore`] for one worker: the worker registers the lease token of each conversation
/// it runs ([`Self::fence`]) and every checkpoint and pending write of that conversation carries
/// it. A write for a conversation with no registered token is refused as fenced off. Reads and
/// context writes pass through.
pub struct FencedStore {
    inner: Arc<PgStore>,
    fences: Mutex<HashMap<String, Fence>>,
}

impl FencedStore {
    /// A view with no conversation registered.
    pub fn new(inner: Arc<PgStore>) -> Self {
        Self { inner, fences: Mutex::new(HashMap::new()) }
    }

    /// The underlying store.
    pub fn inner(&self) -> &Arc<PgStore> {
        &self.inner
    }

    /// Registers the fence for a conversation's writes (replacing an earlier one).
    pub fn fence(&self, conversation: &str, fence: Fence) {
        self.lock().insert(conversation.to_string(), fence);
    }

    /// Forgets a conversation's fence: its writes are refused until one is registered again.
    pub fn unfence(&self, conversation: &str) {
        self.lock().remove(conversation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fence>> {
        self.fences.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fence registered for a conversation.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] (token 0) when none is.
    pub fn fence_of(&self, conversation: &str) -> Result<Fence, StoreError> {
        self.lock()
            .get(conversation)
            .copied()
            .ok_or_else(|| StoreError::Fenced { conversation: conversation.to_string(), token: 0 })
    }
}

fn refused(e: StoreError) -> WriteAck {
    Box::pin(futures::future::ready(Err(e)))
}

#[async_trait]
impl CheckpointStore for FencedStore {
    fn put(&self, record: CheckpointRecord) -> WriteAck {
        match self.fence_of(&record.conversation_id) {
            Ok(f) => self.inner.put_fenced(record, f),
            Err(e) => refused(e),
        }
    }
    async fn latest(&self, conversation: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        self.inner.latest(conversation).await
    }
    async fn get(&self, conversation: &str, id: u64) -> Result<Option<CheckpointRecord>, StoreError> {
        self.inner.get(conversation, id).await
    }
    async fn chain(&self, conversation: &str, id: u64) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.inner.chain(conversation, id).await
    }
    async fn history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.inner.history(conversation, before, limit).await
    }
    fn put_writes(&self, conversation: &str, checkpoint: u64, writes: Vec<PendingWrite>) -> WriteAck {
        match self.fence_of(conversation) {
            Ok(f) => self.inner.put_writes_fenced(conversation, checkpoint, writes, f),
            Err(e) => refused(e),
        }
    }
    async fn pending_writes(&self, conversation: &str, checkpoint: u64) -> Result<Vec<PendingWrite>, StoreError> {
        self.inner.pending_writes(conversation, checkpoint).await
    }
    async fn delete_conversation(&self, conversation: &str) -> Result<u64, StoreError> {
        self.fence_of(conversation)?;
        self.inner.delete_conversation(conversation).await
    }
}

#[async_trait]
impl ContextStore for FencedStore {
    async fn load(&self, scope: Scope, owner: &str) -> Result<Map<String, Value>, StoreError> {
        self.inner.load(scope, owner).await
    }
    async fn save(&self, scope: Scope, owner: &str, values: Map<String, Value>) -> Result<(), StoreError> {
        self.inner.save(scope, owner, values).await
    }
    async fn delete_owner(&self, scope: Scope, owner: &str) -> Result<u64, StoreError> {
        self.inner.delete_owner(scope, owner).await
    }
}
