//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that owns one connection and commits whatever writes are
//! waiting in a single transaction (group commit): with `synchronous=FULL`, a thousand concurrent
//! conversations share one fsync instead of queueing for a thousand. Reads use a small pool of
//! reader connections, which WAL lets run beside the writer. If a batch fails, its writes are retried
//! one transaction each, so one bad write never takes the others down with it.
//!
//! The writer is a plain OS thread with a `rusqlite` connection (the same SQLite library sqlx links),
//! not an async connection: a batch's statements (BEGIN, the checkpoints, the server's records,
//! COMMIT) run back to back on that thread, where an async connection would hand every statement to
//! its worker thread and wait for the answer — two thread wake-ups per statement, which on a busy
//! machine were most of the store's CPU and a good part of a turn's latency.

use crate::migrate;
use async_trait::async_trait;
use rusqlite::{OpenFlags, OptionalExtension as _, TransactionBehavior};
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchboard_engine::{CheckpointRecord, CheckpointStore, ContextStore, PendingWrite, Scope, StoreError, WriteAck};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Times the writer yields its core to other threads while it gathers a batch.
const LINGER_YIELDS: usize = 3;

/// How the SQLite file is opened.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// fsync every commit (`synchronous=FULL`); `false` uses `NORMAL` (WAL: durable up to the last
    /// checkpoint of the WAL on power loss, never corrupt).
    pub fsync: bool,
    /// Reader connections.
    pub readers: u32,
    /// How long a statement waits for a lock.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self { fsync: true, readers: 4, busy_timeout: Duration::from_secs(5) }
    }
}

enum Op {
    Put(CheckpointRecord),
    Writes {
        conversation: String,
        checkpoint: u64,
        writes: Vec<PendingWrite>,
    },
    Context {
        scope: Scope,
        owner: String,
        values: Map<String, Value>,
    },
    DeleteOwner {
        scope: Scope,
        owner: String,
    },
    Delete {
        conversation: String,
    },
    /// A write to other tables of the same file (the server's records).
    External(Box<dyn SqlWrite>),
}

/// A write to other tables of the file, applied by the store's writer inside its group-commit
/// transaction: the file keeps one writer (no lock contention, no busy waits between two
/// writers), and concurrent writes of any kind share one commit (and one fsync).
pub(crate) trait SqlWrite: Send + Sync + 'static {
    /// Runs the write's statements on the writer's connection, inside its transaction (on the
    /// writer's thread: it must not block on anything but SQLite); if it fails, the batch is
    /// retried write by write, so it must be safe to apply again.
    fn apply(&self, conn: &rusqlite::Connection) -> Result<u64, StoreError>;
}

/// A handle on a store's writer, for [`SqlWrite`]s.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// A writer with no database behind it: every write fails as unavailable.
    pub(crate) fn detached() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        Self { tx }
    }

    /// Applies a write in the next group commit; resolves once it is committed.
    pub(crate) async fn write(&self, w: impl SqlWrite) -> Result<u64, StoreError> {
        let (ack, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.tx.send(Job { op: Op::External(Box::new(w)), ack }) {
            let _ = job.ack.send(Err(unavailable("sqlite writer has stopped")));
        }
        rx.await.map_err(|_| unavailable("sqlite writer has stopped"))?
    }
}

struct Job {
    op: Op,
    ack: oneshot::Sender<Result<u64, StoreError>>,
}

/// Checkpoints and scoped context in a SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
    tx: mpsc::UnboundedSender<Job>,
    path: PathBuf,
    stats: Arc<WriterStats>,
}

/// What the writer did so far.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Committed transactions.
    pub commits: AtomicU64,
    /// Writes in them.
    pub writes: AtomicU64,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn scope_name(s: Scope) -> &'static str {
    match s {
        Scope::Conversation => "conversation",
        Scope::Customer => "customer",
        Scope::Assistant => "assistant",
        Scope::Temporary => "temporary",
    }
}

const COLUMNS: &str = "c.id, c.parent, c.run_id, c.step, c.created_at, c.schema_version, c.snapshot, c.payload";

fn record(conversation: &str, r: &SqliteRow) -> Result<CheckpointRecord, StoreError> {
    let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    Ok(CheckpointRecord {
        conversation_id: conversation.to_string(),
        id: r.try_get::<i64, _>(0).map_err(corrupt)? as u64,
        parent: r.try_get::<Option<i64>, _>(1).map_err(corrupt)?.map(|p| p as u64),
        run_id: r.try_get(2).map_err(corrupt)?,
        step: r.try_get(3).map_err(corrupt)?,
        created_at_ms: r.try_get(4).map_err(corrupt)?,
        schema_version: r.try_get::<i64, _>(5).map_err(corrupt)? as u32,
        snapshot: r.try_get::<i64, _>(6).map_err(corrupt)? != 0,
        payload: r.try_get(7).map_err(corrupt)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("{}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(unavailable)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if config.fsync { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout);
        let mut migrating = SqliteConnection::connect_with(&opts).await.map_err(unavailable)?;
        let migrator = migrate::migrator(migrate::SQLITE).await.map_err(unavailable)?;
        migrator.run(&mut migrating).await.map_err(unavailable)?;
        migrating.close().await.map_err(unavailable)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .acquire_timeout(config.busy_timeout)
            .connect_with(opts.read_only(true))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        let (ready_tx, ready) = oneshot::channel();
        let (file, thread_stats) = (path.clone(), stats.clone());
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || match open_writer(&file, &config) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    writer_loop(conn, rx, &thread_stats);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(unavailable)?;
        ready.await.map_err(|_| unavailable("sqlite writer did not start"))??;
        Ok(Self { pool, tx, path, stats })
    }

    /// A handle on the writer (for the records that share the file).
    pub(crate) fn writer(&self) -> Writer {
        Writer { tx: self.tx.clone() }
    }

    /// The reader pool.
    pub(crate) fn readers(&self) -> SqlitePool {
        self.pool.clone()
    }

    /// Commits and writes of the writer so far.
    pub fn writer_stats(&self) -> (u64, u64) {
        (self.stats.commits.load(Ordering::Relaxed), self.stats.writes.load(Ordering::Relaxed))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Folds the WAL into the main file (so its size reflects what is stored).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite:").map_err(unavailable)?.filename(&self.path);
        let mut c = SqliteConnection::connect_with(&opts).await.map_err(unavailable)?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut c).await.map_err(unavailable)?;
        c.close().await.map_err(unavailable)
    }

    fn submit(&self, op: Op) -> oneshot::Receiver<Result<u64, StoreError>> {
        let (ack, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.tx.send(Job { op, ack }) {
            let _ = job.ack.send(Err(unavailable("sqlite writer has stopped")));
        }
        rx
    }

    fn submit_ack(&self, op: Op) -> WriteAck {
        let rx = self.submit(op);
        Box::pin(async move { rx.await.map_err(|_| unavailable("sqlite writer has stopped"))?.map(|_| ()) })
    }

    async fn submit_wait(&self, op: Op) -> Result<u64, StoreError> {
        self.submit(op).await.map_err(|_| unavailable("sqlite writer has stopped"))?
    }
}

/// The writer's connection: the file's journal and sync settings, foreign keys on.
fn open_writer(path: &Path, config: &SqliteConfig) -> Result<rusqlite::Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(unavailable)?;
    conn.busy_timeout(config.busy_timeout).map_err(unavailable)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", if config.fsync { "FULL" } else { "NORMAL" }).map_err(unavailable)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(unavailable)?;
    // Room for every statement of a batch (the multi-row INSERTs vary with the batch's size).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The writer thread: gathers what is waiting into one batch, applies it in one transaction, acks
/// each write; ends when every sender is gone.
fn writer_loop(mut conn: rusqlite::Connection, mut rx: mpsc::UnboundedReceiver<Job>, stats: &WriterStats) {
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        // Let runs that are mid-step add their next checkpoint to this commit: a few yields cost
        // microseconds, a commit costs an fsync.
        for _ in 0..LINGER_YIELDS {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            std::thread::yield_now();
        }
        let ops: Vec<&Op> = batch.iter().map(|j| &j.op).collect();
        let n = ops.len() as u64;
        match apply(&mut conn, &mut ids, &ops) {
            Ok(results) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.writes.fetch_add(n, Ordering::Relaxed);
                for (job, r) in batch.drain(..).zip(results) {
                    let _ = job.ack.send(Ok(r));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.ack.send(Err(e));
                }
            }
            Err(e) => {
                warn!(error = %e, writes = batch.len(), "sqlite batch failed; retrying its writes one by one");
                for job in batch.drain(..) {
                    let r = apply(&mut conn, &mut ids, &[&job.op]).map(|mut v| v.pop().unwrap_or(0));
                    let _ = job.ack.send(r);
                }
            }
        }
    }
}

/// Runs one statement (prepared once per connection) with these parameters; rows changed.
pub(crate) fn exec(c: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64, StoreError> {
    let mut stmt = c.prepare_cached(sql).map_err(unavailable)?;
    Ok(stmt.execute(params).map_err(unavailable)? as u64)
}

/// Applies writes in one transaction; returns a count per write.
fn apply(conn: &mut rusqlite::Connection, ids: &mut HashMap<String, i64>, ops: &[&Op]) -> Result<Vec<u64>, StoreError> {
    let mut new_ids = Vec::new();
    // Rolled back when dropped without a commit (an error below).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    let mut out = Vec::with_capacity(ops.len());
    // Checkpoints of the whole batch go in one multi-row INSERT: one statement, not one per row.
    let puts: Vec<&CheckpointRecord> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Put(r) => Some(r),
            _ => None,
        })
        .collect();
    if !puts.is_empty() {
        insert_checkpoints(&tx, ids, &mut new_ids, &puts)?;
    }
    for op in ops {
        let n = match op {
            Op::Put(_) => 1,
            Op::Writes { conversation, checkpoint, writes } => {
                let conv = conv_id(&tx, ids, &mut new_ids, conversation)?;
                for w in writes {
                    exec(
                        &tx,
                        "INSERT INTO pending_writes (conv, checkpoint, task, payload) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (conv, checkpoint, task) DO UPDATE SET payload = excluded.payload",
                        rusqlite::params![conv, *checkpoint as i64, w.task_id, w.payload],
                    )?;
                }
                writes.len() as u64
            }
            Op::Context { scope, owner, values } => {
                for (k, v) in values {
                    exec(
                        &tx,
                        "INSERT INTO scoped_context (scope, owner, field, value) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (scope, owner, field) DO UPDATE SET value = excluded.value",
                        rusqlite::params![scope_name(*scope), owner, k, v.to_string()],
                    )?;
                }
                values.len() as u64
            }
            Op::DeleteOwner { scope, owner } => exec(
                &tx,
                "DELETE FROM scoped_context WHERE scope = ?1 AND owner = ?2",
                rusqlite::params![scope_name(*scope), owner],
            )?,
            Op::Delete { conversation } => {
                let id: Option<i64> = tx
                    .prepare_cached("SELECT id FROM conversations WHERE key = ?1")
                    .and_then(|mut s| s.query_row([conversation], |r| r.get(0)).optional())
                    .map_err(unavailable)?;
                let mut n = 0;
                if let Some(id) = id {
                    // One statement per table: the parent foreign key is checked at the statement's end.
                    for sql in ["DELETE FROM pending_writes WHERE conv = ?1", "DELETE FROM checkpoints WHERE conv = ?1"]
                    {
                        n += exec(&tx, sql, [id])?;
                    }
                    exec(&tx, "DELETE FROM conversations WHERE id = ?1", [id])?;
                }
                ids.remove(conversation);
                n
            }
            Op::External(w) => w.apply(&tx)?,
        };
        out.push(n);
    }
    tx.commit().map_err(unavailable)?;
    ids.extend(new_ids);
    Ok(out)
}

/// Rows per INSERT statement (9 parameters each, well under SQLite's parameter limit).
const ROWS_PER_INSERT: usize = 256;

/// Whether an error is a violated constraint of this extended kind.
fn violates(e: &rusqlite::Error, extended: std::ffi::c_int) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == extended)
}

fn insert_checkpoints(
    tx: &rusqlite::Connection,
    ids: &HashMap<String, i64>,
    new_ids: &mut Vec<(String, i64)>,
    puts: &[&CheckpointRecord],
) -> Result<(), StoreError> {
    let mut convs = Vec::with_capacity(puts.len());
    for r in puts {
        convs.push(conv_id(tx, ids, new_ids, &r.conversation_id)?);
    }
    for (chunk, conv_chunk) in puts.chunks(ROWS_PER_INSERT).zip(convs.chunks(ROWS_PER_INSERT)) {
        let mut sql = String::from(
            "INSERT INTO checkpoints (conv, id, parent, run_id, step, created_at, schema_version, snapshot, payload) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?,?,?,?,?)");
        }
        let run = || -> rusqlite::Result<usize> {
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut i = 0;
            let mut bind = |v: &dyn rusqlite::ToSql| -> rusqlite::Result<()> {
                i += 1;
                stmt.raw_bind_parameter(i, v)
            };
            for (r, conv) in chunk.iter().zip(conv_chunk) {
                bind(conv)?;
                bind(&(r.id as i64))?;
                bind(&r.parent.map(|p| p as i64))?;
                bind(&r.run_id)?;
                bind(&r.step)?;
                bind(&r.created_at_ms)?;
                bind(&i64::from(r.schema_version))?;
                bind(&i64::from(r.snapshot))?;
                bind(&r.payload)?;
            }
            stmt.raw_execute()
        };
        run().map_err(|e| {
            let one = chunk.len() == 1;
            if one
                && (violates(&e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
                    || violates(&e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE))
            {
                StoreError::Conflict { conversation: chunk[0].conversation_id.clone(), id: chunk[0].id }
            } else if one && violates(&e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) {
                StoreError::Unavailable(format!(
                    "parent checkpoint {:?} of {} does not exist",
                    chunk[0].parent, chunk[0].id
                ))
            } else {
                unavailable(e)
            }
        })?;
    }
    Ok(())
}

fn conv_id(
    tx: &rusqlite::Connection,
    ids: &HashMap<String, i64>,
    new_ids: &mut Vec<(String, i64)>,
    key: &str,
) -> Result<i64, StoreError> {
    if let Some(id) = ids.get(key) {
        return Ok(*id);
    }
    if let Some((_, id)) = new_ids.iter().find(|(k, _)| k == key) {
        return Ok(*id);
    }
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO conversations (key, created_at) VALUES (?1, unixepoch()) \
             ON CONFLICT (key) DO UPDATE SET key = excluded.key RETURNING id",
        )
        .and_then(|mut s| s.query_row([key], |r| r.get(0)))
        .map_err(unavailable)?;
    new_ids.push((key.to_string(), id));
    Ok(id)
}

#[async_trait]
impl CheckpointStore for SqliteStore {
    fn put(&self, record: CheckpointRecord) -> WriteAck {
        self.submit_ack(Op::Put(record))
    }

    async fn latest(&self, conversation: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM checkpoints c JOIN conversations v ON c.conv = v.id \
             WHERE v.key = ?1 ORDER BY c.id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql).bind(conversation).fetch_optional(&self.pool).await.map_err(unavailable)?;
        row.map(|r| record(conversation, &r)).transpose()
    }

    async fn get(&self, conversation: &str, id: u64) -> Result<Option<CheckpointRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM checkpoints c JOIN conversations v ON c.conv = v.id WHERE v.key = ?1 AND c.id = ?2"
        );
        let row = sqlx::query(&sql)
            .bind(conversation)
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| record(conversation, &r)).transpose()
    }

    async fn chain(&self, conversation: &str, id: u64) -> Result<Vec<CheckpointRecord>, StoreError> {
        let sql = format!(
            "WITH RECURSIVE cv(id) AS (SELECT id FROM conversations WHERE key = ?1), \
             chain(id, parent, snapshot, depth) AS ( \
               SELECT c.id, c.parent, c.snapshot, 0 FROM checkpoints c, cv WHERE c.conv = cv.id AND c.id = ?2 \
               UNION ALL \
               SELECT c.id, c.parent, c.snapshot, chain.depth + 1 FROM checkpoints c, cv, chain \
               WHERE c.conv = cv.id AND c.id = chain.parent AND chain.snapshot = 0) \
             SELECT {COLUMNS} FROM checkpoints c, cv, chain WHERE c.conv = cv.id AND c.id = chain.id \
             ORDER BY chain.depth DESC"
        );
        let rows =
            sqlx::query(&sql).bind(conversation).bind(id as i64).fetch_all(&self.pool).await.map_err(unavailable)?;
        let out = rows.iter().map(|r| record(conversation, r)).collect::<Result<Vec<_>, _>>()?;
        match out.first() {
            Some(first) if first.snapshot => Ok(out),
            Some(_) => Err(StoreError::Corrupt(format!("{conversation}: checkpoint {id} has no snapshot ancestor"))),
            None => Err(StoreError::Corrupt(format!("{conversation}: checkpoint {id} is missing"))),
        }
    }

    async fn history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM checkpoints c JOIN conversations v ON c.conv = v.id \
             WHERE v.key = ?1 AND c.id < ?2 ORDER BY c.id DESC LIMIT ?3"
        );
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let rows = sqlx::query(&sql)
            .bind(conversation)
            .bind(before)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| record(conversation, r)).collect()
    }

    fn put_writes(&self, conversation: &str, checkpoint: u64, writes: Vec<PendingWrite>) -> WriteAck {
        self.submit_ack(Op::Writes { conversation: conversation.to_string(), checkpoint, writes })
    }

    async fn pending_writes(&self, conversation: &str, checkpoint: u64) -> Result<Vec<PendingWrite>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.task, p.payload FROM pending_writes p JOIN conversations v ON p.conv = v.id \
             WHERE v.key = ?1 AND p.checkpoint = ?2 ORDER BY p.task",
        )
        .bind(conversation)
        .bind(checkpoint as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(PendingWrite {
                    task_id: r.try_get(0).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    payload: r.try_get(1).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn delete_conversation(&self, conversation: &str) -> Result<u64, StoreError> {
        self.submit_wait(Op::Delete { conversation: conversation.to_string() }).await
    }
}

#[async_trait]
impl ContextStore for SqliteStore {
    async fn load(&self, scope: Scope, owner: &str) -> Result<Map<String, Value>, StoreError> {
        let rows = sqlx::query("SELECT field, value FROM scoped_context WHERE scope = ?1 AND owner = ?2")
            .bind(scope_name(scope))
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut m = Map::new();
        for r in rows {
            let k: String = r.try_get(0).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let v: String = r.try_get(1).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            m.insert(k, serde_json::from_str(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(m)
    }

    async fn save(&self, scope: Scope, owner: &str, values: Map<String, Value>) -> Result<(), StoreError> {
        self.submit_wait(Op::Context { scope, owner: owner.to_string(), values }).await.map(|_| ())
    }

    async fn delete_owner(&self, scope: Scope, owner: &str) -> Result<u64, StoreError> {
        self.submit_wait(Op::DeleteOwner { scope, owner: owner.to_string() }).await
    }
}
