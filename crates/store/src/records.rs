//! The server's records in SQLite: API keys (hashed), conversation metadata, runs and their
//! events, feedback. Every row has a tenant and every read filters by it, so no query of one tenant
//! can return another's row.
//!
//! It shares the database file with [`crate::SqliteStore`] and its writer: every write here is a
//! small transaction-safe unit applied by that writer inside its group commit, so the file has a
//! single writer (no busy waits between two), and the writes of concurrent turns, checkpoints
//! included, share one commit. A turn costs two of these writes whatever its length:
//! [`Records::start_run`] (the run and the conversation's status) and [`Records::finish_run`] (the
//! run's events, its result and the conversation's status, in one transaction).

pub use crate::postgres::records::PgRecords;
use crate::sqlite::{SqlWrite, Writer, exec};
use crate::{SqliteConfig, SqliteStore};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_engine::StoreError;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// An API key as stored (its hash only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Key id (not secret).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Scopes, e.g. `chat`, `desk`, `admin`.
    pub scopes: Vec<String>,
    /// Unix time, ms.
    pub created_at_ms: i64,
}

/// A conversation's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    /// Id (also the engine's conversation key).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Assistant name.
    pub assistant: String,
    /// The customer, when known.
    pub customer_id: Option<String>,
    /// Free-form metadata object.
    pub metadata: Value,
    /// `idle`, `running`, `interrupted` or `failed`.
    pub status: String,
    /// Unix time, ms.
    pub created_at_ms: i64,
    /// Unix time, ms.
    pub updated_at_ms: i64,
}

/// Filters and page of a conversation listing (newest first).
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only this customer's.
    pub customer_id: Option<String>,
    /// Only with this status.
    pub status: Option<String>,
    /// Created at or after (ms).
    pub created_after_ms: Option<i64>,
    /// Created before (ms).
    pub created_before_ms: Option<i64>,
    /// Continue after this `(created_at_ms, id)` (the last item of the previous page).
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: u32,
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Run id (the engine's).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Conversation id.
    pub conversation_id: String,
    /// `message` or `resume`.
    pub kind: String,
    /// `running`, or the final status.
    pub status: String,
    /// The final result, when finished.
    pub result: Option<Value>,
    /// The error, when failed.
    pub error: Option<String>,
    /// Unix time, ms.
    pub created_at_ms: i64,
    /// Unix time, ms.
    pub finished_at_ms: Option<i64>,
}

/// One persisted event of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Position in the run, from 1.
    pub seq: u64,
    /// Event name.
    pub event: String,
    /// JSON payload.
    pub data: String,
}

/// Feedback on a message.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRecord {
    /// Feedback id.
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The rated message, when given.
    pub message_id: Option<String>,
    /// Rating.
    pub rating: i64,
    /// Comment.
    pub comment: Option<String>,
    /// Unix time, ms.
    pub created_at_ms: i64,
}

/// How a run ended, with its events: written in one transaction.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// Run id.
    pub run_id: String,
    /// Final status.
    pub status: String,
    /// The final result, when it has one.
    pub result: Option<Value>,
    /// The error, when failed.
    pub error: Option<String>,
    /// Unix time, ms.
    pub finished_at_ms: i64,
    /// All the run's events, in order (seq 1, 2, ...).
    pub events: Vec<Arc<EventRecord>>,
    /// The run's conversation.
    pub conversation_id: String,
    /// The conversation's status from now on.
    pub conversation_status: String,
}

/// What deleting a conversation removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Run records.
    pub runs: u64,
    /// Run events.
    pub events: u64,
    /// Feedback records.
    pub feedback: u64,
    /// Idempotency keys of its turns.
    pub idempotency_keys: u64,
    /// Recorded turns (cassettes).
    pub cassette_turns: u64,
}

/// One recorded turn of a conversation (see `switchboard_assistant::cassette`).
#[derive(Debug, Clone, PartialEq)]
pub struct CassetteRecord {
    /// Owning tenant.
    pub tenant: String,
    /// Conversation id.
    pub conversation_id: String,
    /// Position in the conversation, from 1 (assigned when stored).
    pub seq: i64,
    /// Assistant name.
    pub assistant: String,
    /// The customer, when known.
    pub customer_id: Option<String>,
    /// The turn (redacted JSON).
    pub turn: Value,
    /// Unix time, ms.
    pub created_at_ms: i64,
}

pub(crate) const CASSETTE_COLS: &str = "tenant, conversation_id, seq, assistant, customer_id, turn, created_at";

/// A recorded turn's columns ([`CASSETTE_COLS`]), as both databases return them.
pub(crate) type CassetteRow = (String, String, i64, String, Option<String>, String, i64);

pub(crate) fn cassette(
    (tenant, conversation_id, seq, assistant, customer_id, turn, created_at_ms): CassetteRow,
) -> Result<CassetteRecord, StoreError> {
    let turn = serde_json::from_str(&turn).map_err(corrupt)?;
    Ok(CassetteRecord { tenant, conversation_id, seq, assistant, customer_id, turn, created_at_ms })
}

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now this request's.
    New,
    /// The key was taken by an earlier request.
    Existing {
        /// The hash of that request's body.
        body_hash: String,
        /// Its run, once started.
        run_id: Option<String>,
    },
}

/// The server's records, in SQLite (one process) or PostgreSQL (shared by replicas).
#[derive(Clone)]
pub struct Records {
    pool: SqlitePool,
    writer: Writer,
    pg: Option<PgRecords>,
    turn_cache: Arc<TurnCache>,
}

/// Conversations by `(tenant, id)` for [`Records::conversation_for_turn`], on SQLite only (one
/// process owns the file, and every delete goes through [`Records::delete_conversation`]).
/// Bounded: emptied when it reaches [`TURN_CACHE_MAX`] entries.
/// `deletes` counts deletions, so that a record read before a delete committed is not cached after it.
#[derive(Default)]
struct TurnCache {
    map: Mutex<std::collections::HashMap<(String, String), ConversationRecord>>,
    deletes: std::sync::atomic::AtomicU64,
}

/// Entries of the turn cache before it is emptied (a few hundred bytes each).
const TURN_CACHE_MAX: usize = 65_536;

impl TurnCache {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), ConversationRecord>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, tenant: &str, id: &str) -> Option<ConversationRecord> {
        self.map().get(&(tenant.to_string(), id.to_string())).cloned()
    }

    fn put(&self, c: &ConversationRecord) {
        Self::insert(&mut self.map(), c);
    }

    /// Caches a record read when the delete count was `epoch`, unless a delete began since (the
    /// record could then be a deleted conversation's).
    fn put_read_at(&self, epoch: u64, c: &ConversationRecord) {
        let mut m = self.map();
        if self.epoch() == epoch {
            Self::insert(&mut m, c);
        }
    }

    fn insert(m: &mut std::collections::HashMap<(String, String), ConversationRecord>, c: &ConversationRecord) {
        if m.len() >= TURN_CACHE_MAX {
            m.clear();
        }
        m.insert((c.tenant.clone(), c.id.clone()), c.clone());
    }

    fn forget(&self, tenant: &str, id: &str) {
        self.deletes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.map().remove(&(tenant.to_string(), id.to_string()));
    }

    fn epoch(&self) -> u64 {
        self.deletes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

const CONV_COLS: &str = "id, tenant, assistant, customer_id, metadata, status, created_at, updated_at";
const RUN_COLS: &str = "id, tenant, conversation_id, kind, status, result, error, created_at, finished_at";

fn conv(r: &SqliteRow) -> Result<ConversationRecord, StoreError> {
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

fn run(r: &SqliteRow) -> Result<RunRecord, StoreError> {
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

/// The writes of the records, applied by the store's writer.
enum Write {
    Key(ApiKeyRecord, String),
    Conversation(ConversationRecord),
    Status { id: String, status: String, now_ms: i64 },
    StartRun(RunRecord),
    FinishRun(RunEnd),
    Delete { tenant: String, id: String, out: Arc<Mutex<Option<Deleted>>> },
    Claim { tenant: String, key: String, body_hash: String, conversation_id: String, now_ms: i64 },
    IdempotencyRun { tenant: String, key: String, run_id: String },
    Release { tenant: String, key: String },
    Feedback(FeedbackRecord),
    Cassette(CassetteRecord),
}

fn set_status(c: &rusqlite::Connection, id: &str, status: &str, now_ms: i64) -> Result<u64, StoreError> {
    exec(
        c,
        "UPDATE srv_conversations SET status = ?, updated_at = ? WHERE id = ?",
        rusqlite::params![status, now_ms, id],
    )
}

impl SqlWrite for Write {
    fn apply(&self, c: &rusqlite::Connection) -> Result<u64, StoreError> {
        match self {
            Write::Key(key, hash) => exec(
                c,
                "INSERT INTO srv_api_keys (id, tenant, key_hash, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
                rusqlite::params![key.id, key.tenant, hash, key.scopes.join(","), key.created_at_ms],
            ),
            Write::Conversation(v) => exec(
                c,
                &format!("INSERT INTO srv_conversations ({CONV_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                rusqlite::params![
                    v.id,
                    v.tenant,
                    v.assistant,
                    v.customer_id,
                    v.metadata.to_string(),
                    v.status,
                    v.created_at_ms,
                    v.updated_at_ms
                ],
            ),
            Write::Status { id, status, now_ms } => set_status(c, id, status, *now_ms),
            Write::StartRun(r) => {
                let n = exec(
                    c,
                    &format!("INSERT INTO srv_runs ({RUN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    rusqlite::params![
                        r.id,
                        r.tenant,
                        r.conversation_id,
                        r.kind,
                        r.status,
                        r.result.as_ref().map(Value::to_string),
                        r.error,
                        r.created_at_ms,
                        r.finished_at_ms
                    ],
                )?;
                set_status(c, &r.conversation_id, "running", r.created_at_ms)?;
                Ok(n)
            }
            Write::FinishRun(end) => {
                // Applying it again (a batch retried write by write) must not duplicate events.
                let mut stmt = c
                    .prepare_cached(
                        "INSERT OR REPLACE INTO srv_run_events (run_id, seq, event, data) VALUES (?, ?, ?, ?)",
                    )
                    .map_err(unavailable)?;
                for e in &end.events {
                    stmt.execute(rusqlite::params![end.run_id, e.seq as i64, e.event, e.data]).map_err(unavailable)?;
                }
                let n = exec(
                    c,
                    "UPDATE srv_runs SET status = ?, result = ?, error = ?, finished_at = ? WHERE id = ?",
                    rusqlite::params![
                        end.status,
                        end.result.as_ref().map(Value::to_string),
                        end.error,
                        end.finished_at_ms,
                        end.run_id
                    ],
                )?;
                set_status(c, &end.conversation_id, &end.conversation_status, end.finished_at_ms)?;
                Ok(n)
            }
            Write::Delete { tenant, id, out } => {
                let gone = exec(c, "DELETE FROM srv_conversations WHERE tenant = ? AND id = ?", [tenant, id])?;
                if gone == 0 {
                    *out.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Ok(0);
                }
                let events = exec(
                    c,
                    "DELETE FROM srv_run_events WHERE run_id IN \
                     (SELECT id FROM srv_runs WHERE tenant = ? AND conversation_id = ?)",
                    [tenant, id],
                )?;
                let runs = exec(c, "DELETE FROM srv_runs WHERE tenant = ? AND conversation_id = ?", [tenant, id])?;
                let idempotency_keys =
                    exec(c, "DELETE FROM srv_idempotency WHERE tenant = ? AND conversation_id = ?", [tenant, id])?;
                let feedback =
                    exec(c, "DELETE FROM srv_feedback WHERE tenant = ? AND conversation_id = ?", [tenant, id])?;
                let cassette_turns =
                    exec(c, "DELETE FROM srv_cassettes WHERE tenant = ? AND conversation_id = ?", [tenant, id])?;
                *out.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Deleted { runs, events, feedback, idempotency_keys, cassette_turns });
                Ok(gone)
            }
            Write::Claim { tenant, key, body_hash, conversation_id, now_ms } => exec(
                c,
                "INSERT OR IGNORE INTO srv_idempotency (tenant, key, body_hash, conversation_id, run_id, created_at) \
                 VALUES (?, ?, ?, ?, NULL, ?)",
                rusqlite::params![tenant, key, body_hash, conversation_id, now_ms],
            ),
            Write::IdempotencyRun { tenant, key, run_id } => {
                exec(c, "UPDATE srv_idempotency SET run_id = ? WHERE tenant = ? AND key = ?", [run_id, tenant, key])
            }
            Write::Release { tenant, key } => {
                exec(c, "DELETE FROM srv_idempotency WHERE tenant = ? AND key = ?", [tenant, key])
            }
            Write::Feedback(f) => exec(
                c,
                "INSERT INTO srv_feedback (id, tenant, conversation_id, message_id, rating, comment, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                rusqlite::params![
                    f.id,
                    f.tenant,
                    f.conversation_id,
                    f.message_id,
                    f.rating,
                    f.comment,
                    f.created_at_ms
                ],
            ),
            Write::Cassette(t) => exec(
                c,
                "INSERT INTO srv_cassettes (tenant, conversation_id, seq, assistant, customer_id, turn, created_at) \
                 VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM srv_cassettes WHERE conversation_id = ?), \
                 ?, ?, ?, ?)",
                rusqlite::params![
                    t.tenant,
                    t.conversation_id,
                    t.conversation_id,
                    t.assistant,
                    t.customer_id,
                    t.turn.to_string(),
                    t.created_at_ms
                ],
            ),
        }
    }
}

impl Records {
    /// Opens the records in a SQLite file (creating it and applying migrations if needed), with a
    /// store of their own (fsync on). A process that also runs an engine on the file should use
    /// [`Records::on_store`] instead, so the file has one writer.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>, busy_timeout: Duration) -> Result<Self, StoreError> {
        let store = SqliteStore::open(path, SqliteConfig { fsync: true, readers: 2, busy_timeout }).await?;
        Ok(Self::on_store(&store))
    }

    /// The records in a store's file, written by the store's writer (in its group commits) and
    /// read through its reader pool. They keep working after the store handle is dropped.
    pub fn on_store(store: &SqliteStore) -> Self {
        Self { pool: store.readers(), writer: store.writer(), pg: None, turn_cache: Arc::default() }
    }

    /// The records in a PostgreSQL database (migrated by [`crate::PgStore::open`]).
    pub fn on_postgres(pool: sqlx::PgPool) -> Self {
        // The SQLite side is never used: an in-memory pool that is never connected.
        let lazy = SqlitePool::connect_lazy("sqlite::memory:").unwrap_or_else(|_| unreachable!("a valid URL"));
        Self {
            pool: lazy.clone(),
            writer: Writer::detached(),
            pg: Some(PgRecords::new(pool)),
            turn_cache: Arc::default(),
        }
    }

    /// The PostgreSQL side, when the records are there.
    pub fn postgres(&self) -> Option<&PgRecords> {
        self.pg.as_ref()
    }

    async fn write(&self, w: Write) -> Result<u64, StoreError> {
        self.writer.write(w).await
    }

    /// Whether the database answers.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.ping().await;
        }

        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }

    /// Stores a key's hash.
    ///
    /// # Errors
    /// Store failures (a duplicate hash is [`StoreError::Unavailable`]).
    pub async fn insert_key(&self, key: &ApiKeyRecord, key_hash: &str) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.insert_key(key, key_hash).await;
        }

        self.write(Write::Key(key.clone(), key_hash.to_string())).await.map(drop)
    }

    /// The key with this hash.
    ///
    /// # Errors
    /// Store failures.
    pub async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.key_by_hash(key_hash).await;
        }

        let row = sqlx::query("SELECT id, tenant, scopes, created_at FROM srv_api_keys WHERE key_hash = ?")
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

    /// How many keys exist (all tenants).
    ///
    /// # Errors
    /// Store failures.
    pub async fn count_keys(&self) -> Result<u64, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.count_keys().await;
        }

        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM srv_api_keys").fetch_one(&self.pool).await.map_err(unavailable)?;
        Ok(n as u64)
    }

    /// Stores a new conversation.
    ///
    /// # Errors
    /// Store failures.
    pub async fn insert_conversation(&self, c: &ConversationRecord) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.insert_conversation(c).await;
        }

        self.write(Write::Conversation(c.clone())).await?;
        self.turn_cache.put(c);
        Ok(())
    }

    /// The conversation a turn runs in: [`Records::conversation`], served on SQLite from an
    /// in-memory cache so that a turn does not wait for a read. Only the fields that never change
    /// are meant to be used (`id`, `tenant`, `assistant`, `customer_id`, `metadata`, `created_at_ms`);
    /// `status` and `updated_at_ms` may be stale. On PostgreSQL (shared by replicas, any of which
    /// may delete the conversation) it always reads.
    ///
    /// # Errors
    /// Store failures.
    pub async fn conversation_for_turn(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        if self.pg.is_none()
            && let Some(c) = self.turn_cache.get(tenant, id)
        {
            return Ok(Some(c));
        }
        let epoch = self.turn_cache.epoch();
        let c = self.conversation(tenant, id).await?;
        if self.pg.is_none()
            && let Some(c) = &c
        {
            self.turn_cache.put_read_at(epoch, c);
        }
        Ok(c)
    }

    /// A tenant's conversation.
    ///
    /// # Errors
    /// Store failures.
    pub async fn conversation(&self, tenant: &str, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.conversation(tenant, id).await;
        }

        let row = sqlx::query(&format!("SELECT {CONV_COLS} FROM srv_conversations WHERE tenant = ? AND id = ?"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(conv).transpose()
    }

    /// A page of a tenant's conversations, newest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_conversations(
        &self,
        tenant: &str,
        f: &ConversationFilter,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.list_conversations(tenant, f).await;
        }

        let mut sql = format!("SELECT {CONV_COLS} FROM srv_conversations WHERE tenant = ?");
        if f.customer_id.is_some() {
            sql.push_str(" AND customer_id = ?");
        }
        if f.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if f.created_after_ms.is_some() {
            sql.push_str(" AND created_at >= ?");
        }
        if f.created_before_ms.is_some() {
            sql.push_str(" AND created_at < ?");
        }
        if f.after.is_some() {
            sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
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
            q = q.bind(t).bind(t).bind(id);
        }
        let rows = q.bind(i64::from(f.limit)).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(conv).collect()
    }

    /// A page of every tenant's conversations whose last activity is before `before_ms`, oldest
    /// activity first, continuing after `after` (`(updated_at_ms, id)` of the previous page's last
    /// item): what a retention pass walks.
    ///
    /// # Errors
    /// Store failures.
    pub async fn conversations_idle_before(
        &self,
        before_ms: i64,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.conversations_idle_before(before_ms, after, limit).await;
        }
        let (t, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {CONV_COLS} FROM srv_conversations WHERE updated_at < ? \
             AND (updated_at > ? OR (updated_at = ? AND id > ?)) ORDER BY updated_at, id LIMIT ?"
        ))
        .bind(before_ms)
        .bind(t)
        .bind(t)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(conv).collect()
    }

    /// Sets a conversation's status.
    ///
    /// # Errors
    /// Store failures.
    pub async fn set_conversation_status(&self, id: &str, status: &str, now_ms: i64) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.set_conversation_status(id, status, now_ms).await;
        }

        self.write(Write::Status { id: id.to_string(), status: status.to_string(), now_ms }).await.map(drop)
    }

    /// Deletes a tenant's conversation record with its runs, events, idempotency keys and
    /// feedback, in one transaction; `None` when the tenant has no such conversation.
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete_conversation(&self, tenant: &str, id: &str) -> Result<Option<Deleted>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.delete_conversation(tenant, id).await;
        }

        let out = Arc::new(Mutex::new(None));
        self.turn_cache.forget(tenant, id);
        let written =
            self.write(Write::Delete { tenant: tenant.to_string(), id: id.to_string(), out: out.clone() }).await;
        // Forgotten again after the commit: a turn that read it meanwhile must not put it back.
        self.turn_cache.forget(tenant, id);
        written?;
        let d = *out.lock().unwrap_or_else(|p| p.into_inner());
        Ok(d)
    }

    /// Appends a recorded turn to its conversation's cassette (its `seq` is assigned here).
    ///
    /// # Errors
    /// Store failures.
    pub async fn append_cassette_turn(&self, t: &CassetteRecord) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.append_cassette_turn(t).await;
        }

        self.write(Write::Cassette(t.clone())).await.map(drop)
    }

    /// Recorded turns, ordered by conversation and position: of the given conversations (of any
    /// tenant), or of every conversation when `conversations` is empty.
    ///
    /// # Errors
    /// Store failures; a row that does not parse is [`StoreError::Corrupt`].
    pub async fn cassette_turns(&self, conversations: &[String]) -> Result<Vec<CassetteRecord>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.cassette_turns(conversations).await;
        }

        // The ids as one JSON array parameter, filtered in SQL (as PostgreSQL does with an array).
        let ids = serde_json::to_string(conversations).map_err(unavailable)?;
        let sql = format!(
            "SELECT {CASSETTE_COLS} FROM srv_cassettes \
             WHERE json_array_length(?1) = 0 OR conversation_id IN (SELECT value FROM json_each(?1)) \
             ORDER BY conversation_id, seq"
        );
        let rows: Vec<CassetteRow> = sqlx::query_as(&sql).bind(ids).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.into_iter().map(cassette).collect()
    }

    /// Records a run that started and marks its conversation `running`, in one transaction.
    ///
    /// # Errors
    /// Store failures.
    pub async fn start_run(&self, r: &RunRecord) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.start_run(r).await;
        }

        self.write(Write::StartRun(r.clone())).await.map(drop)
    }

    /// Records how a run ended: its events, its result and its conversation's status, in one
    /// transaction (durable when this returns, with the store's fsync setting).
    ///
    /// # Errors
    /// Store failures.
    pub async fn finish_run(&self, end: RunEnd) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.finish_run(end).await;
        }

        self.write(Write::FinishRun(end)).await.map(drop)
    }

    /// A tenant's run.
    ///
    /// # Errors
    /// Store failures.
    pub async fn run(&self, tenant: &str, id: &str) -> Result<Option<RunRecord>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.run(tenant, id).await;
        }

        let row = sqlx::query(&format!("SELECT {RUN_COLS} FROM srv_runs WHERE tenant = ? AND id = ?"))
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
    /// Store failures.
    pub async fn events_after(&self, run_id: &str, after_seq: u64) -> Result<Vec<EventRecord>, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.events_after(run_id, after_seq).await;
        }

        let rows = sqlx::query("SELECT seq, event, data FROM srv_run_events WHERE run_id = ? AND seq > ? ORDER BY seq")
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

    /// Claims an idempotency key for a request with this body hash (atomic: of two concurrent
    /// claims exactly one is [`Claim::New`]).
    ///
    /// # Errors
    /// Store failures.
    pub async fn claim_idempotency(
        &self,
        tenant: &str,
        key: &str,
        body_hash: &str,
        conversation_id: &str,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        if let Some(pg) = &self.pg {
            return pg.claim_idempotency(tenant, key, body_hash, conversation_id, now_ms).await;
        }

        let inserted = self
            .write(Write::Claim {
                tenant: tenant.to_string(),
                key: key.to_string(),
                body_hash: body_hash.to_string(),
                conversation_id: conversation_id.to_string(),
                now_ms,
            })
            .await?;
        if inserted == 1 {
            return Ok(Claim::New);
        }
        let row = sqlx::query("SELECT body_hash, run_id FROM srv_idempotency WHERE tenant = ? AND key = ?")
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
            // Released between the two statements: the caller may simply retry.
            None => Ok(Claim::Existing { body_hash: String::new(), run_id: None }),
        }
    }

    /// Records the run an idempotency key started.
    ///
    /// # Errors
    /// Store failures.
    pub async fn set_idempotency_run(&self, tenant: &str, key: &str, run_id: &str) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.set_idempotency_run(tenant, key, run_id).await;
        }

        self.write(Write::IdempotencyRun {
            tenant: tenant.to_string(),
            key: key.to_string(),
            run_id: run_id.to_string(),
        })
        .await
        .map(drop)
    }

    /// Frees an idempotency key (its request failed before or during its turn).
    ///
    /// # Errors
    /// Store failures.
    pub async fn release_idempotency(&self, tenant: &str, key: &str) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.release_idempotency(tenant, key).await;
        }

        self.write(Write::Release { tenant: tenant.to_string(), key: key.to_string() }).await.map(drop)
    }

    /// Stores feedback.
    ///
    /// # Errors
    /// Store failures.
    pub async fn insert_feedback(&self, f: &FeedbackRecord) -> Result<(), StoreError> {
        if let Some(pg) = &self.pg {
            return pg.insert_feedback(f).await;
        }

        self.write(Write::Feedback(f.clone())).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn c(id: &str, tenant: &str, t: i64) -> ConversationRecord {
        ConversationRecord {
            id: id.into(),
            tenant: tenant.into(),
            assistant: "a".into(),
            customer_id: Some(format!("cust-{}", t % 2)),
            metadata: json!({"n": t}),
            status: "idle".into(),
            created_at_ms: t,
            updated_at_ms: t,
        }
    }

    #[tokio::test]
    async fn conversations_are_tenant_scoped_and_paged() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path().join("x.sqlite"), Duration::from_secs(5)).await.unwrap();
        for t in 0..5 {
            r.insert_conversation(&c(&format!("c{t}"), "t1", t)).await.unwrap();
        }
        r.insert_conversation(&c("other", "t2", 3)).await.unwrap();
        assert!(r.conversation("t2", "c1").await.unwrap().is_none());
        assert_eq!(r.conversation("t1", "c1").await.unwrap().unwrap().metadata, json!({"n": 1}));
        let mut f = ConversationFilter { limit: 2, ..Default::default() };
        let mut seen = Vec::new();
        loop {
            let page = r.list_conversations("t1", &f).await.unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            f.after = Some((last.created_at_ms, last.id.clone()));
            seen.extend(page.into_iter().map(|c| c.id));
        }
        assert_eq!(seen, ["c4", "c3", "c2", "c1", "c0"]);
        let f = ConversationFilter { customer_id: Some("cust-1".into()), limit: 10, ..Default::default() };
        let ids: Vec<_> = r.list_conversations("t1", &f).await.unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["c3", "c1"]);
        assert!(r.delete_conversation("t2", "c1").await.unwrap().is_none());
        assert!(r.delete_conversation("t1", "c1").await.unwrap().is_some());
        assert!(r.conversation("t1", "c1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_turn_cache_is_tenant_scoped_and_forgets_deleted_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sqlite");
        let r = Records::open(&path, Duration::from_secs(5)).await.unwrap();
        r.insert_conversation(&c("c1", "t1", 1)).await.unwrap();
        assert_eq!(r.conversation_for_turn("t1", "c1").await.unwrap().unwrap().assistant, "a");
        assert!(r.conversation_for_turn("t2", "c1").await.unwrap().is_none());
        // A record read from the file (not created through this handle) is cached as well.
        let other = Records::open(&path, Duration::from_secs(5)).await.unwrap();
        assert!(other.conversation_for_turn("t1", "c1").await.unwrap().is_some());
        assert!(r.delete_conversation("t1", "c1").await.unwrap().is_some());
        assert!(r.conversation_for_turn("t1", "c1").await.unwrap().is_none());
        assert!(r.turn_cache.get("t1", "c1").is_none());
    }

    #[tokio::test]
    async fn recorded_turns_conform() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path().join("x.sqlite"), Duration::from_secs(5)).await.unwrap();
        crate::conformance::cassette_records(&r).await;
    }
}
