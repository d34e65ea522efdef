//! The effect journal: exactly-once side effects across crashes.
//!
//! A side effect (a tool call that freezes a card, opens a ticket) is named by the engine's
//! idempotency key ([`NodeContext::idempotency_key`](switchboard_engine::NodeContext::idempotency_key):
//! conversation, checkpoint, task index and node, call index). Before calling, the worker journals
//! the key as started under its lease token; after, it journals the result. Both journal writes
//! are fenced. A resumed run that finds a result returns it without calling again; one that finds
//! a start without a result (the worker died in between) first asks the downstream system whether
//! the effect with that key happened (`lookup`), and calls only if it did not. The key is also
//! passed to the call so that downstream systems can deduplicate on their own.

use crate::RuntimeError;
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use switchboard_store::FencedStore;

/// Counters of what the journal did.
#[derive(Debug, Default)]
pub struct EffectStats {
    /// Effects called.
    pub calls: AtomicU64,
    /// Results read back from the journal instead of calling.
    pub hits: AtomicU64,
    /// Effects started earlier but never journaled, found downstream by key.
    pub recovered: AtomicU64,
}

/// The journal, bound to a worker's fenced view (for its lease tokens).
#[derive(Clone)]
pub struct EffectJournal {
    pool: PgPool,
    fences: Arc<FencedStore>,
    stats: Arc<EffectStats>,
}

async fn check_lease(tx: &mut sqlx::PgConnection, conversation: &str, token: i64) -> Result<(), RuntimeError> {
    let current: Option<i64> = sqlx::query_scalar("SELECT token FROM leases WHERE conversation = $1 FOR SHARE")
        .bind(conversation)
        .fetch_optional(&mut *tx)
        .await?;
    if current != Some(token) {
        return Err(RuntimeError::Fenced(conversation.to_string()));
    }
    Ok(())
}

impl EffectJournal {
    /// A journal writing under the fences of `fences`.
    pub fn new(fences: Arc<FencedStore>) -> Self {
        Self { pool: fences.inner().pool().clone(), fences, stats: Arc::new(EffectStats::default()) }
    }

    /// What the journal did so far.
    pub fn stats(&self) -> &EffectStats {
        &self.stats
    }

    /// Runs the effect named `key` of `conversation` at most once (see the module docs).
    /// `lookup(key)` asks the downstream system for the result of an effect with that key, if it
    /// happened; `call(key)` performs it.
    ///
    /// # Errors
    /// [`RuntimeError::Fenced`] when this worker lost the conversation (then it must not go on);
    /// [`RuntimeError::Effect`] when the call or lookup failed; [`RuntimeError::Unavailable`].
    pub async fn run<L, LF, C, CF>(
        &self,
        conversation: &str,
        key: &str,
        lookup: L,
        call: C,
    ) -> Result<String, RuntimeError>
    where
        L: FnOnce(String) -> LF,
        LF: Future<Output = Result<Option<String>, String>>,
        C: FnOnce(String) -> CF,
        CF: Future<Output = Result<String, String>>,
    {
        let token =
            self.fences.fence_of(conversation).map_err(|_| RuntimeError::Fenced(conversation.to_string()))?.token;
        let mut tx = self.pool.begin().await?;
        check_lease(&mut tx, conversation, token).await?;
        let row: Option<(i64, Option<String>)> =
            sqlx::query_as("SELECT token, result FROM rt_effects WHERE key = $1 FOR UPDATE")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        let takeover = match row {
            Some((_, Some(result))) => {
                tx.commit().await?;
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(result);
            }
            Some((_, None)) => {
                sqlx::query("UPDATE rt_effects SET token = $2 WHERE key = $1")
                    .bind(key)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?;
                true
            }
            None => {
                sqlx::query("INSERT INTO rt_effects (key, conversation, token) VALUES ($1, $2, $3)")
                    .bind(key)
                    .bind(conversation)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?;
                false
            }
        };
        tx.commit().await?;
        let effect_err = |reason: String| RuntimeError::Effect { key: key.to_string(), reason };
        let found = if takeover { lookup(key.to_string()).await.map_err(effect_err)? } else { None };
        let result = match found {
            Some(r) => {
                self.stats.recovered.fetch_add(1, Ordering::Relaxed);
                r
            }
            None => {
                self.stats.calls.fetch_add(1, Ordering::Relaxed);
                call(key.to_string()).await.map_err(effect_err)?
            }
        };
        let mut tx = self.pool.begin().await?;
        check_lease(&mut tx, conversation, token).await?;
        sqlx::query("UPDATE rt_effects SET result = $2, finished_at = clock_timestamp() WHERE key = $1 AND token = $3")
            .bind(key)
            .bind(&result)
            .bind(token)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result)
    }
}
