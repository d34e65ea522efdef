//! The runs queue in PostgreSQL.

use crate::RuntimeError;
use sqlx::{PgPool, Row};
use std::time::Duration;
use switchboard_store::Lease;

/// Queue settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long a lease lasts without a heartbeat (a dead worker's runs are re-queued after it).
    pub lease_ttl: Duration,
    /// Failed executions after which a run goes to the dead-letter state.
    pub max_failures: i32,
    /// Claims after which a run goes to the dead-letter state (a run that keeps killing or
    /// stalling its worker never reports a failure; this bounds it).
    pub max_claims: i32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { lease_ttl: Duration::from_secs(10), max_failures: 3, max_claims: 10 }
    }
}

/// A message taken in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `rt_messages.id`.
    pub message_id: i64,
    /// `rt_runs.id`.
    pub run_id: i64,
    /// The same client key was accepted before; nothing new was enqueued.
    pub duplicate: bool,
}

/// A run claimed by a worker, with the conversation's lease.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// `rt_runs.id`.
    pub id: i64,
    /// The conversation.
    pub conversation: String,
    /// `rt_messages.id` of its message.
    pub message_id: i64,
    /// The message body as accepted.
    pub body: String,
    /// Claims so far, this one included.
    pub attempts: i32,
    /// The checkpoint where an earlier attempt applied the message (then the run continues from
    /// the store instead of applying it again).
    pub input_checkpoint: Option<i64>,
    /// The lease this attempt holds.
    pub lease: Lease,
}

/// The runs queue.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    config: QueueConfig,
}

impl Queue {
    /// A queue over the runtime tables of a database (migrated by `PgStore::open`).
    pub fn new(pool: PgPool, config: QueueConfig) -> Self {
        Self { pool, config }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Takes a message in: stores it and enqueues its run in one statement (one transaction), so
    /// an acknowledged message always has a run. A client key seen before enqueues nothing.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`]: nothing was accepted.
    pub async fn accept(&self, conversation: &str, client_key: &str, body: &str) -> Result<Accepted, RuntimeError> {
        let row = sqlx::query(
            "WITH m AS (INSERT INTO rt_messages (conversation, client_key, body) VALUES ($1, $2, $3) \
               ON CONFLICT (conversation, client_key) DO NOTHING RETURNING id) \
             INSERT INTO rt_runs (conversation, message_id) SELECT $1, id FROM m RETURNING message_id, id",
        )
        .bind(conversation)
        .bind(client_key)
        .bind(body)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = row {
            return Ok(Accepted { message_id: r.try_get(0)?, run_id: r.try_get(1)?, duplicate: false });
        }
        let r = sqlx::query(
            "SELECT m.id, r.id FROM rt_messages m JOIN rt_runs r ON r.message_id = m.id \
             WHERE m.conversation = $1 AND m.client_key = $2 ORDER BY r.id LIMIT 1",
        )
        .bind(conversation)
        .bind(client_key)
        .fetch_one(&self.pool)
        .await?;
        Ok(Accepted { message_id: r.try_get(0)?, run_id: r.try_get(1)?, duplicate: true })
    }

    /// Claims the oldest runnable run for `owner` and takes its conversation's lease, in one
    /// transaction. A run is runnable when it is queued, no earlier run of its conversation is
    /// queued or running, and no other owner holds a live lease on the conversation. Runs locked by
    /// other claimers are skipped (`FOR UPDATE SKIP LOCKED`), so claimers never wait on each other.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`].
    pub async fn claim(&self, owner: &str) -> Result<Option<ClaimedRun>, RuntimeError> {
        loop {
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query(
                "SELECT r.id, r.conversation, r.message_id, r.attempts, r.input_checkpoint, m.body \
                 FROM rt_runs r JOIN rt_messages m ON m.id = r.message_id \
                 WHERE r.status = 'queued' \
                   AND NOT EXISTS (SELECT 1 FROM rt_runs p WHERE p.conversation = r.conversation AND p.id < r.id \
                                   AND p.status IN ('queued', 'running')) \
                   AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.conversation = r.conversation \
                                   AND l.owner IS NOT NULL AND l.owner <> $1 AND l.expires_at > clock_timestamp()) \
                 ORDER BY r.id LIMIT 1 FOR UPDATE OF r SKIP LOCKED",
            )
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let id: i64 = row.try_get(0)?;
            let conversation: String = row.try_get(1)?;
            let attempts: i32 = row.try_get::<i32, _>(3)? + 1;
            if attempts > self.config.max_claims {
                sqlx::query(
                    "UPDATE rt_runs SET status = 'dead', owner = NULL, finished_at = clock_timestamp(), \
                     error = coalesce(error, '') || 'claimed too often (worker lost each time)' WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                continue;
            }
            let lease = Lease::acquire_on(&mut tx, &conversation, owner, self.config.lease_ttl).await?;
            let Some(lease) = lease else {
                tx.rollback().await?;
                return Ok(None);
            };
            sqlx::query(
                "UPDATE rt_runs SET status = 'running', owner = $2, attempts = $3, lease_token = $4, \
                 claimed_at = clock_timestamp() WHERE id = $1",
            )
            .bind(id)
            .bind(owner)
            .bind(attempts)
            .bind(lease.token)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Some(ClaimedRun {
                id,
                conversation,
                message_id: row.try_get(2)?,
                body: row.try_get(5)?,
                attempts,
                input_checkpoint: row.try_get(4)?,
                lease,
            }));
        }
    }

    /// Locks the run and its lease row (in the claim's order) and checks the run still carries
    /// this lease's token, which is still the conversation's.
    async fn lock_fenced(tx: &mut sqlx::PgConnection, run: &ClaimedRun) -> Result<(), RuntimeError> {
        let run_token: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT lease_token FROM rt_runs WHERE id = $1 AND status IN ('running', 'queued') FOR UPDATE",
        )
        .bind(run.id)
        .fetch_optional(&mut *tx)
        .await?;
        let lease_token: Option<i64> =
            sqlx::query_scalar("SELECT token FROM leases WHERE conversation = $1 FOR UPDATE")
                .bind(&run.conversation)
                .fetch_optional(&mut *tx)
                .await?;
        if run_token.flatten() != Some(run.lease.token) || lease_token != Some(run.lease.token) {
            return Err(RuntimeError::Fenced(run.conversation.clone()));
        }
        Ok(())
    }

    /// Finishes a run: its reply goes to the outbox (at most once per message), the run is marked
    /// done and the lease released, in one transaction that commits only if the lease is still
    /// this run's.
    ///
    /// # Errors
    /// [`RuntimeError::Fenced`] when the lease moved on (nothing is written);
    /// [`RuntimeError::Unavailable`].
    pub async fn complete(&self, run: &ClaimedRun, reply: Option<&str>) -> Result<(), RuntimeError> {
        let mut tx = self.pool.begin().await?;
        self.complete_in(&mut tx, run, reply).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Self::complete`] inside the caller's transaction (which may write more, e.g. the
    /// server's run record): it commits only if the lease was still this run's.
    ///
    /// # Errors
    /// [`RuntimeError::Fenced`] when the lease moved on (the caller must roll back);
    /// [`RuntimeError::Unavailable`].
    pub async fn complete_in(
        &self,
        tx: &mut sqlx::PgConnection,
        run: &ClaimedRun,
        reply: Option<&str>,
    ) -> Result<(), RuntimeError> {
        Self::lock_fenced(&mut *tx, run).await?;
        if let Some(body) = reply {
            sqlx::query(
                "INSERT INTO rt_outbox (key, conversation, message_id, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(format!("{}:{}", run.conversation, run.message_id))
            .bind(&run.conversation)
            .bind(run.message_id)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE rt_runs SET status = 'done', owner = NULL, finished_at = clock_timestamp() WHERE id = $1")
            .bind(run.id)
            .execute(&mut *tx)
            .await?;
        release(&mut *tx, run).await
    }

    /// Records a failed execution: the run is queued again, or goes to the dead-letter state after
    /// [`QueueConfig::max_failures`]; the lease is released either way.
    ///
    /// # Errors
    /// [`RuntimeError::Fenced`] when the lease moved on; [`RuntimeError::Unavailable`].
    pub async fn fail(&self, run: &ClaimedRun, error: &str) -> Result<bool, RuntimeError> {
        let mut tx = self.pool.begin().await?;
        let dead = self.fail_in(&mut tx, run, error).await?;
        tx.commit().await?;
        Ok(dead)
    }

    /// [`Self::fail`] inside the caller's transaction (which may record more when the run goes
    /// to the dead-letter state).
    ///
    /// # Errors
    /// [`RuntimeError::Fenced`] when the lease moved on; [`RuntimeError::Unavailable`].
    pub async fn fail_in(
        &self,
        tx: &mut sqlx::PgConnection,
        run: &ClaimedRun,
        error: &str,
    ) -> Result<bool, RuntimeError> {
        Self::lock_fenced(&mut *tx, run).await?;
        let dead: bool = sqlx::query_scalar(
            "UPDATE rt_runs SET failures = failures + 1, owner = NULL, error = $2, \
               status = CASE WHEN failures + 1 >= $3 THEN 'dead' ELSE 'queued' END, \
               finished_at = CASE WHEN failures + 1 >= $3 THEN clock_timestamp() END \
             WHERE id = $1 RETURNING status = 'dead'",
        )
        .bind(run.id)
        .bind(error)
        .bind(self.config.max_failures)
        .fetch_one(&mut *tx)
        .await?;
        release(&mut *tx, run).await?;
        Ok(dead)
    }

    /// Re-queues running runs whose lease expired or moved on (their worker died or stalled).
    /// Returns their ids.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`].
    pub async fn sweep(&self) -> Result<Vec<i64>, RuntimeError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE rt_runs SET status = 'queued', owner = NULL WHERE id IN ( \
               SELECT r.id FROM rt_runs r WHERE r.status = 'running' AND NOT EXISTS ( \
                 SELECT 1 FROM leases l WHERE l.conversation = r.conversation AND l.token = r.lease_token \
                 AND l.owner IS NOT NULL AND l.expires_at > clock_timestamp()) \
               ORDER BY r.id FOR UPDATE SKIP LOCKED) \
             RETURNING id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}

async fn release(tx: &mut sqlx::PgConnection, run: &ClaimedRun) -> Result<(), RuntimeError> {
    sqlx::query(
        "UPDATE leases SET owner = NULL, expires_at = clock_timestamp() WHERE conversation = $1 AND token = $2",
    )
    .bind(&run.conversation)
    .bind(run.lease.token)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
