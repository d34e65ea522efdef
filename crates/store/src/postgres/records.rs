//! The server's records in PostgreSQL: the same rows and operations as the SQLite ones
//! ([`crate::Records`] dispatches here), plus what replicas need to share turns: enqueuing a turn
//! with its run record in one transaction, events written while a run executes (fenced by the
//! conversation's lease), cancellation requests, and the end of dead-lettered runs.

use super::{corrupt, unavailable};
use crate::records::{
    ApiKeyRecord, CassetteRecord, Claim, ConversationFilter, ConversationRecord, Deleted, EventRecord, FeedbackRecord,
    RunEnd, RunRecord,
};
use crate::records::{CASSETTE_COLS, CassetteRow, cassette};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use switchboard_engine::StoreError;

const CONV_COLS: &str = "id, tenant, assistant, customer_id, metadata, status, created_at, updated_at";
const RUN_COLS: &str = "id, tenant, conversation_id, kind, status, result, error, created_at, finished_at";

/// Age after which an idempotency claim without a run may be taken over.
pub const STALE_CLAIM_MS: i64 = 10_000;

/// The body of the terminal event of a run that went to the dead-letter state.
pub const DEAD_LETTER_ERROR: &str =
    r#"{"error":{"code":"internal","message":"the turn failed repeatedly and was set aside (dead letter)"}}"#;

fn conv(r: &PgRow) -> Result<ConversationRecord, StoreError> {
    let meta: String = r.try_get(4).map_err(corrupt)?;
    Ok(ConversationRecord {
        id: r.try_get(0).map_err(corrupt)?,
        tenant: r.try_get(1).map_err(corrupt)?,
        assistant: r.try_get(2).map_err(corrupt)?,
        customer_id: r.try_get(3).map_err(corrupt)?,
        metadata: serde_json::from_str(&meta).map_err(corrupt)?,
        status: r.try_get(5).map_err(corrupt)?,
        created_at_ms: r.try_get(6).map_err(corrupt)?,
        updated_at_ms: r.try_get(7).map_err(corrupt)?,
    })
}

fn run(r: &PgRow) -> Result<RunRecord, StoreError> {
    let result: Option<String> = r.try_get(5).map_err(corrupt)?;
    Ok(RunRecord {
        id: r.try_get(0).map_err(corrupt)?,
        tenant: r.try_get(1).map_err(corrupt)?,
        conversation_id: r.try_get(2).map_err(corrupt)?,
        kind: r.try_get(3).map_err(corrupt)?,
        status: r.try_get(4).map_err(corrupt)?,
        result: result.map(|s| serde_json::from_str(&s)).transpose().map_err(corrupt)?,
        error: r.try_get(6).map_err(corrupt)?,
        created_at_ms: r.try_get(7).map_err(corrupt)?,
        finished_at_ms: r.try_get(8).map_err(corrupt)?,
    })
}

/// A turn to enqueue: its run record (status `queued`) and the job the worker executes.
#[derive(Debug, Clone)]
pub struct Enqueue {
    /// The run record.
    pub run: RunRecord,
    /// What the worker needs (opaque here).
    pub job: String,
    /// The idempotency key (of the run's tenant) that claimed this turn: it is linked to the run
    /// in the same transaction, so a replica dying in between cannot leave it dangling.
    pub idempotency_key: Option<String>,
}

/// The server's records in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgRecords {
    pool: PgPool,
}

async fn insert_events(c: &mut PgConnection, run_id: &str, events: &[EventRecord]) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    let n = sqlx::query(
        "INSERT INTO srv_run_events (run_id, seq, event, data) \
         SELECT $1, s, e, d FROM UNNEST($2::bigint[], $3::text[], $4::text[]) AS u(s, e, d) \
         ON CONFLICT (run_id, seq) DO NOTHING",
    )
    .bind(run_id)
    .bind(&seqs)
    .bind(&names)
    .bind(&data)
    .execute(&mut *c)
    .await
    .map_err(unavailable)?
    .rows_affected();
    Ok(n)
}

async fn set_status(c: &mut PgConnection, id: &str, status: &str, now_ms: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query("UPDATE srv_conversations SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status)
        .bind(now_ms)
        .bind(id)
        .execute(&mut *c)
        .await
        .map_err(unavailable)?
        .rows_affected())
}

impl PgRecords {
    /// The records over a pool whose database has the server's tables.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn insert_key(&self, key: &ApiKeyRecord, key_hash: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO srv_api_keys (id, tenant, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(key_hash)
            .bind(key.scopes.join(","))
            .bind(key.created_at_ms)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query("SELECT id, tenant, scopes, created_at FROM srv_api_keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            let scopes: String = r.try_get(2).map_err(corrupt)?;
            Ok(ApiKeyRecord {
                id: r.try_get(0).map_err(corrupt)?,
                tenant: r.try_get(1).map_err(corrupt)?,
                scopes: scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                created_at_ms: r.try_get(3).map_err(corrupt)?,
            })
        })
        .transpose()
    }

    pub(crate) async fn count_keys(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM srv_api_keys").fetch_one(&self.pool).await.map_err(unavailable)?;
        Ok(n as u64)
    }

    pub(crate) async fn insert_conversation(&self, v: &ConversationRecord) -> Result<(), StoreError> {
        sqlx::query(&format!("INSERT INTO srv_conversations ({CONV_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
            .bind(&v.id)
            .bind(&v.tenant)
            .bind(&v.assistant)
            .bind(&v.customer_id)
            .bind(v.metadata.to_string())
            .bind(&v.status)
            .bind(v.created_at_ms)
            .bind(v.updated_at_ms)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn conversation(&self, tenant: &str, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {CONV_COLS} FROM srv_conversations WHERE tenant = $1 AND id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(conv).transpose()
    }

    pub(crate) async fn list_conversations(
        &self,
        tenant: &str,
        f: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let mut sql = format!("SELECT {CONV_COLS} FROM srv_conversations WHERE tenant = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if f.customer_id.is_some() {
            sql.push_str(&format!(" AND customer_id = ${}", next()));
        }
        if f.status.is_some() {
            sql.push_str(&format!(" AND status = ${}", next()));
        }
        if f.created_after_ms.is_some() {
            sql.push_str(&format!(" AND created_at >= ${}", next()));
        }
        if f.created_before_ms.is_some() {
            sql.push_str(&format!(" AND created_at < ${}", next()));
        }
        if f.after.is_some() {
            let (a, b) = (next(), next());
            sql.push_str(&format!(" AND (created_at < ${a} OR (created_at = ${a} AND id < ${b}))"));
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${}", next()));
        let mut q = sqlx::query(&sql).bind(tenant);
        if let Some(c) = &f.customer_id {
            q = q.bind(c);
        }
        if let Some(s) = &f.status {
            q = q.bind(s);
        }
        if let Some(t) = f.created_after_ms {
            q = q.bind(t);
        }
        if let Some(t) = f.created_before_ms {
            q = q.bind(t);
        }
        if let Some((t, id)) = &f.after {
            q = q.bind(t).bind(id);
        }
        let rows = q.bind(i64::from(f.limit)).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(conv).collect()
    }

    pub(crate) async fn conversations_idle_before(
        &self,
        before_ms: i64,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let (t, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {CONV_COLS} FROM srv_conversations WHERE updated_at < $1 \
             AND (updated_at > $2 OR (updated_at = $2 AND id > $3)) ORDER BY updated_at, id LIMIT $4"
        ))
        .bind(before_ms)
        .bind(t)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(conv).collect()
    }

    pub(crate) async fn set_conversation_status(&self, id: &str, status: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut c = self.pool.acquire().await.map_err(unavailable)?;
        set_status(&mut c, id, status, now_ms).await.map(drop)
    }

    pub(crate) async fn delete_conversation(&self, tenant: &str, id: &str) -> Result<Option<Deleted>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let gone = sqlx::query("DELETE FROM srv_conversations WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        if gone == 0 {
            return Ok(None);
        }
        let mut counts = [0u64; 5];
        let sqls = [
            "DELETE FROM srv_run_events WHERE run_id IN \
             (SELECT id FROM srv_runs WHERE tenant = $1 AND conversation_id = $2)",
            "DELETE FROM srv_runs WHERE tenant = $1 AND conversation_id = $2",
            "DELETE FROM srv_idempotency WHERE tenant = $1 AND conversation_id = $2",
            "DELETE FROM srv_feedback WHERE tenant = $1 AND conversation_id = $2",
            "DELETE FROM srv_cassettes WHERE tenant = $1 AND conversation_id = $2",
        ];
        for (n, sql) in counts.iter_mut().zip(sqls) {
            *n = sqlx::query(sql).bind(tenant).bind(id).execute(&mut *tx).await.map_err(unavailable)?.rows_affected();
        }
        tx.commit().await.map_err(unavailable)?;
        let [events, runs, idempotency_keys, feedback, cassette_turns] = counts;
        Ok(Some(Deleted { runs, events, feedback, idempotency_keys, cassette_turns }))
    }

    pub(crate) async fn append_cassette_turn(&self, t: &CassetteRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO srv_cassettes (tenant, conversation_id, seq, assistant, customer_id, turn, created_at) \
             VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM srv_cassettes WHERE conversation_id = $2), \
             $3, $4, $5, $6)",
        )
        .bind(&t.tenant)
        .bind(&t.conversation_id)
        .bind(&t.assistant)
        .bind(&t.customer_id)
        .bind(t.turn.to_string())
        .bind(t.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn cassette_turns(&self, conversations: &[String]) -> Result<Vec<CassetteRecord>, StoreError> {
        let sql = format!(
            "SELECT {CASSETTE_COLS} FROM srv_cassettes \
             WHERE cardinality($1::text[]) = 0 OR conversation_id = ANY($1) ORDER BY conversation_id, seq"
        );
        let rows: Vec<CassetteRow> =
            sqlx::query_as(&sql).bind(conversations).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.into_iter().map(cassette).collect()
    }

    pub(crate) async fn start_run(&self, r: &RunRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        insert_run(&mut tx, r).await?;
        set_status(&mut tx, &r.conversation_id, "running", r.created_at_ms).await?;
        tx.commit().await.map_err(unavailable)
    }

    pub(crate) async fn finish_run(&self, end: RunEnd) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        Self::finish_run_in(&mut tx, &end).await?;
        tx.commit().await.map_err(unavailable)
    }

    /// Records how a run ended inside the caller's transaction: its events (those not written
    /// yet), its result, its conversation's status.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn finish_run_in(c: &mut PgConnection, end: &RunEnd) -> Result<(), StoreError> {
        let events: Vec<EventRecord> = end.events.iter().map(|e| (**e).clone()).collect();
        insert_events(c, &end.run_id, &events).await?;
        sqlx::query("UPDATE srv_runs SET status = $1, result = $2, error = $3, finished_at = $4 WHERE id = $5")
            .bind(&end.status)
            .bind(end.result.as_ref().map(Value::to_string))
            .bind(&end.error)
            .bind(end.finished_at_ms)
            .bind(&end.run_id)
            .execute(&mut *c)
            .await
            .map_err(unavailable)?;
        set_status(c, &end.conversation_id, &end.conversation_status, end.finished_at_ms).await?;
        Ok(())
    }

    pub(crate) async fn run(&self, tenant: &str, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLS} FROM srv_runs WHERE tenant = $1 AND id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(run).transpose()
    }

    /// Events of a run after `after_seq`, in order.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn events_after(&self, run_id: &str, after_seq: u64) -> Result<Vec<EventRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, event, data FROM srv_run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq")
                .bind(run_id)
                .bind(after_seq as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(EventRecord {
                    seq: r.try_get::<i64, _>(0).map_err(corrupt)? as u64,
                    event: r.try_get(1).map_err(corrupt)?,
                    data: r.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }

    pub(crate) async fn claim_idempotency(
        &self,
        tenant: &str,
        key: &str,
        body_hash: &str,
        conversation_id: &str,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        // A claim that never got its run (its replica died before enqueuing) is taken over after
        // STALE_CLAIM_MS; a claim's run is linked in the enqueuing transaction, so no run is lost.
        let inserted = sqlx::query(
            "INSERT INTO srv_idempotency AS i (tenant, key, body_hash, conversation_id, run_id, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (tenant, key) DO UPDATE \
             SET body_hash = excluded.body_hash, conversation_id = excluded.conversation_id, \
               created_at = excluded.created_at \
             WHERE i.run_id IS NULL AND i.created_at < excluded.created_at - $6",
        )
        .bind(tenant)
        .bind(key)
        .bind(body_hash)
        .bind(conversation_id)
        .bind(now_ms)
        .bind(STALE_CLAIM_MS)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 1 {
            return Ok(Claim::New);
        }
        let row = sqlx::query("SELECT body_hash, run_id FROM srv_idempotency WHERE tenant = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        match row {
            Some(r) => Ok(Claim::Existing {
                body_hash: r.try_get(0).map_err(corrupt)?,
                run_id: r.try_get(1).map_err(corrupt)?,
            }),
            None => Ok(Claim::Existing { body_hash: String::new(), run_id: None }),
        }
    }

    pub(crate) async fn set_idempotency_run(&self, tenant: &str, key: &str, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE srv_idempotency SET run_id = $1 WHERE tenant = $2 AND key = $3")
            .bind(run_id)
            .bind(tenant)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn release_idempotency(&self, tenant: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM srv_idempotency WHERE tenant = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn insert_feedback(&self, f: &FeedbackRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO srv_feedback (id, tenant, conversation_id, message_id, rating, comment, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&f.id)
        .bind(&f.tenant)
        .bind(&f.conversation_id)
        .bind(&f.message_id)
        .bind(f.rating)
        .bind(&f.comment)
        .bind(f.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    // ---- shared turns ----

    /// Takes a turn in: its run record (`queued`), the conversation's status, the message and its
    /// runtime run, in one transaction. Once this returns the turn is durable and any replica's
    /// worker may execute it. Returns the runtime run's id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]: nothing was stored.
    pub async fn enqueue(&self, e: &Enqueue) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        insert_run(&mut tx, &e.run).await?;
        set_status(&mut tx, &e.run.conversation_id, "running", e.run.created_at_ms).await?;
        let id: i64 = sqlx::query_scalar(
            "WITH m AS (INSERT INTO rt_messages (conversation, client_key, body) VALUES ($1, $2, $3) RETURNING id) \
             INSERT INTO rt_runs (conversation, message_id, ref) SELECT $1, id, $2 FROM m RETURNING id",
        )
        .bind(&e.run.conversation_id)
        .bind(&e.run.id)
        .bind(&e.job)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(key) = &e.idempotency_key {
            sqlx::query("UPDATE srv_idempotency SET run_id = $1 WHERE tenant = $2 AND key = $3")
                .bind(&e.run.id)
                .bind(&e.run.tenant)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(id)
    }

    /// Marks a queued or claimed run `running` (its first event is on its way).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn mark_running(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE srv_runs SET status = 'running' WHERE id = $1 AND status = 'queued'")
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The last event seq of a run (0 when none), so a run taken over continues the numbering.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn last_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM srv_run_events WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Appends events of a running run, only while `token` is the conversation's lease (a worker
    /// that lost the conversation writes nothing). `false` when fenced off.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn append_events_fenced(
        &self,
        run_id: &str,
        conversation: &str,
        token: i64,
        events: &[EventRecord],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let current: Option<i64> = sqlx::query_scalar("SELECT token FROM leases WHERE conversation = $1 FOR SHARE")
            .bind(conversation)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if current != Some(token) {
            return Ok(false);
        }
        insert_events(&mut tx, run_id, events).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    /// Cancels a run that no worker has claimed yet: its runtime run is set aside and `end` is
    /// recorded, in one transaction (`true`). Otherwise (it is executing, or over) only the
    /// request is recorded, for the worker that runs it (`false`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn cancel(&self, end: &RunEnd) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let queued: Option<i64> =
            sqlx::query_scalar("SELECT id FROM rt_runs WHERE ref = $1 AND status = 'queued' FOR UPDATE SKIP LOCKED")
                .bind(&end.run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let Some(rt) = queued else {
            sqlx::query("UPDATE srv_runs SET cancel_requested = true WHERE id = $1")
                .bind(&end.run_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(false);
        };
        sqlx::query("UPDATE rt_runs SET status = 'cancelled', finished_at = clock_timestamp() WHERE id = $1")
            .bind(rt)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        Self::finish_run_in(&mut tx, end).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    /// Whether a cancel was requested for a run.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn cancel_requested(&self, run_id: &str) -> Result<bool, StoreError> {
        let v: Option<bool> = sqlx::query_scalar("SELECT cancel_requested FROM srv_runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(v.unwrap_or(false))
    }

    /// Ends the records of runs whose runtime run went to the dead-letter state without them
    /// (claimed too often): status `failed` and a terminal `error` event. Returns their ids.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn end_dead_runs(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let rows = sqlx::query(
            "SELECT s.id, s.conversation_id FROM srv_runs s JOIN rt_runs r ON r.ref = s.id \
             WHERE r.status = 'dead' AND s.status IN ('queued', 'running') FOR UPDATE OF s SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get(0).map_err(corrupt)?;
            let conversation: String = r.try_get(1).map_err(corrupt)?;
            sqlx::query(
                "INSERT INTO srv_run_events (run_id, seq, event, data) \
                 SELECT $1, coalesce(max(seq), 0) + 1, 'error', $2 FROM srv_run_events WHERE run_id = $1",
            )
            .bind(&id)
            .bind(DEAD_LETTER_ERROR)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            sqlx::query("UPDATE srv_runs SET status = 'failed', error = 'dead letter', finished_at = $2 WHERE id = $1")
                .bind(&id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            set_status(&mut tx, &conversation, "failed", now_ms).await?;
            ids.push(id);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(ids)
    }
}

async fn insert_run(c: &mut PgConnection, r: &RunRecord) -> Result<(), StoreError> {
    sqlx::query(&format!("INSERT INTO srv_runs ({RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
        .bind(&r.id)
        .bind(&r.tenant)
        .bind(&r.conversation_id)
        .bind(&r.kind)
        .bind(&r.status)
        .bind(r.result.as_ref().map(Value::to_string))
        .bind(&r.error)
        .bind(r.created_at_ms)
        .bind(r.finished_at_ms)
        .execute(&mut *c)
        .await
        .map_err(unavailable)?;
    Ok(())
}
