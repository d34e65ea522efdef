//! The shared store: PostgreSQL through a connection pool.
//!
//! Writes go through writer tasks (one per shard of conversations, so a conversation's writes stay
//! ordered) that commit whatever writes are waiting in one transaction (group commit), as the SQLite
//! store does: a thousand concurrent conversations share one commit round trip instead of queueing
//! for a thousand. Reads go straight to the pool. A write may carry a lease's fencing token
//! ([`Fence`]); it is checked inside the committing transaction against the conversation's lease
//! row (locked `FOR SHARE`, so a lease cannot change hands between the check and the commit), and a
//! stale one fails with [`StoreError::Fenced`] without touching the other writes of the batch.

mod fenced;
mod lease;
pub mod records;
mod scratch;

pub use fenced::FencedStore;
pub use lease::Lease;
pub use scratch::{ScratchSchema, database_url};

use crate::migrate;
use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchboard_engine::{CheckpointRecord, CheckpointStore, ContextStore, PendingWrite, Scope, StoreError, WriteAck};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Times a writer yields to other tasks while it gathers a batch.
const LINGER_YIELDS: usize = 3;

/// How the database is reached.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Pooled connections for reads and leases (writers take theirs from the same pool).
    pub max_connections: u32,
    /// Writer tasks; a conversation always goes to the same one.
    pub writers: usize,
    /// Schema for every table (created if missing); `None` uses the server's search path.
    pub schema: Option<String>,
    /// How long to wait for a connection (also the connect timeout).
    pub acquire_timeout: Duration,
    /// Server-side limit of one statement.
    pub statement_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            max_connections: 8,
            writers: 2,
            schema: None,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(15),
        }
    }
}

/// A lease's fencing token carried by a write, and what else the write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The token of the writer's lease.
    pub token: i64,
    /// A runtime run (`rt_runs.id`) whose `input_checkpoint` is set, in the same transaction, to
    /// the first input checkpoint (step -1) written under this fence.
    pub input_of_run: Option<i64>,
}

enum Op {
    Put(CheckpointRecord, Option<Fence>),
    Writes { conversation: String, checkpoint: u64, writes: Vec<PendingWrite>, fence: Option<Fence> },
    Context { scope: Scope, owner: String, values: Map<String, Value> },
    DeleteOwner { scope: Scope, owner: String },
    Delete { conversation: String },
}

impl Op {
    fn fence(&self) -> Option<(&str, Fence)> {
        match self {
            Op::Put(r, Some(f)) => Some((&r.conversation_id, *f)),
            Op::Writes { conversation, fence: Some(f), .. } => Some((conversation, *f)),
            _ => None,
        }
    }
    fn shard_key(&self) -> &str {
        match self {
            Op::Put(r, _) => &r.conversation_id,
            Op::Writes { conversation, .. } | Op::Delete { conversation } => conversation,
            Op::Context { owner, .. } | Op::DeleteOwner { owner, .. } => owner,
        }
    }
}

struct Job {
    op: Op,
    ack: oneshot::Sender<Result<u64, StoreError>>,
}

/// What the writers did so far.
#[derive(Debug, Default)]
struct Stats {
    commits: AtomicU64,
    writes: AtomicU64,
}

/// Checkpoints, scoped context and leases in PostgreSQL.
pub struct PgStore {
    pool: PgPool,
    writers: Vec<mpsc::UnboundedSender<Job>>,
    stats: Arc<Stats>,
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
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

fn record(conversation: &str, r: &PgRow) -> Result<CheckpointRecord, StoreError> {
    Ok(CheckpointRecord {
        conversation_id: conversation.to_string(),
        id: r.try_get::<i64, _>(0).map_err(corrupt)? as u64,
        parent: r.try_get::<Option<i64>, _>(1).map_err(corrupt)?.map(|p| p as u64),
        run_id: r.try_get(2).map_err(corrupt)?,
        step: r.try_get(3).map_err(corrupt)?,
        created_at_ms: r.try_get(4).map_err(corrupt)?,
        schema_version: r.try_get::<i32, _>(5).map_err(corrupt)? as u32,
        snapshot: r.try_get(6).map_err(corrupt)?,
        payload: r.try_get(7).map_err(corrupt)?,
    })
}

/// Connection options for a URL and config (statement timeout, schema search path).
///
/// # Errors
/// [`StoreError::Unavailable`] for a malformed URL.
pub fn connect_options(url: &str, config: &PgConfig) -> Result<PgConnectOptions, StoreError> {
    let mut opts = PgConnectOptions::from_str(url).map_err(unavailable)?;
    let timeout = format!("{}", config.statement_timeout.as_millis().max(1));
    opts = opts.options([("statement_timeout", timeout.as_str())]);
    if let Some(schema) = &config.schema {
        opts = opts.options([("search_path", schema.as_str())]);
    }
    Ok(opts)
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty() && s.len() < 60 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PgStore {
    /// Connects, creates the schema if one is configured, and applies migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database cannot be reached or migrated.
    pub async fn open(url: &str, config: PgConfig) -> Result<Self, StoreError> {
        let opts = connect_options(url, &config)?;
        if let Some(schema) = &config.schema {
            if !valid_schema(schema) {
                return Err(unavailable(format!("invalid schema name `{schema}` (use [a-z0-9_])")));
            }
            let mut c = tokio::time::timeout(config.acquire_timeout, PgConnection::connect_with(&opts))
                .await
                .map_err(|_| unavailable("timed out connecting to PostgreSQL"))?
                .map_err(unavailable)?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut c).await.map_err(unavailable)?;
            c.close().await.map_err(unavailable)?;
        }
        let writers = config.writers.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(writers as u32 + 1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(unavailable)?;
        {
            let mut c = pool.acquire().await.map_err(unavailable)?;
            // sqlx's migrator holds an advisory lock: replicas starting together migrate once.
            let migrator = migrate::migrator(migrate::POSTGRES).await.map_err(unavailable)?;
            migrator.run(&mut *c).await.map_err(unavailable)?;
        }
        let stats = Arc::new(Stats::default());
        let mut txs = Vec::with_capacity(writers);
        for _ in 0..writers {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer_loop(pool.clone(), rx, stats.clone()));
            txs.push(tx);
        }
        Ok(Self { pool, writers: txs, stats })
    }

    /// The connection pool (for the runtime's tables, which live in the same database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Commits and writes of the writers so far.
    pub fn writer_stats(&self) -> (u64, u64) {
        (self.stats.commits.load(Ordering::Relaxed), self.stats.writes.load(Ordering::Relaxed))
    }

    /// Bytes PostgreSQL holds for checkpoints and pending writes (tables, indexes, TOAST).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn checkpoint_bytes(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (pg_total_relation_size('checkpoints') + pg_total_relation_size('pending_writes'))::bigint",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(n.max(0) as u64)
    }

    /// Orders a checkpoint write that carries a fence (see [`Fence`]).
    pub fn put_fenced(&self, record: CheckpointRecord, fence: Fence) -> WriteAck {
        self.submit_ack(Op::Put(record, Some(fence)))
    }

    /// Orders a pending-writes write that carries a fence.
    pub fn put_writes_fenced(
        &self,
        conversation: &str,
        checkpoint: u64,
        writes: Vec<PendingWrite>,
        fence: Fence,
    ) -> WriteAck {
        self.submit_ack(Op::Writes { conversation: conversation.to_string(), checkpoint, writes, fence: Some(fence) })
    }

    fn submit(&self, op: Op) -> oneshot::Receiver<Result<u64, StoreError>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        op.shard_key().hash(&mut h);
        let shard = (h.finish() % self.writers.len() as u64) as usize;
        let (ack, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.writers[shard].send(Job { op, ack }) {
            let _ = job.ack.send(Err(unavailable("postgres writer has stopped")));
        }
        rx
    }

    fn submit_ack(&self, op: Op) -> WriteAck {
        let rx = self.submit(op);
        Box::pin(async move { rx.await.map_err(|_| unavailable("postgres writer has stopped"))?.map(|_| ()) })
    }

    async fn submit_wait(&self, op: Op) -> Result<u64, StoreError> {
        self.submit(op).await.map_err(|_| unavailable("postgres writer has stopped"))?
    }
}

async fn writer_loop(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Job>, stats: Arc<Stats>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
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
            tokio::task::yield_now().await;
        }
        let ops: Vec<&Op> = batch.iter().map(|j| &j.op).collect();
        let n = ops.len() as u64;
        match apply(&pool, &ops).await {
            Ok(results) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.writes.fetch_add(n, Ordering::Relaxed);
                for (job, r) in batch.drain(..).zip(results) {
                    let _ = job.ack.send(r);
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.ack.send(Err(e));
                }
            }
            Err(e) => {
                warn!(error = %e, writes = batch.len(), "postgres batch failed; retrying its writes one by one");
                for job in batch.drain(..) {
                    let r = match apply(&pool, &[&job.op]).await {
                        Ok(mut v) => v.pop().unwrap_or(Ok(0)),
                        Err(e) => Err(e),
                    };
                    let _ = job.ack.send(r);
                }
            }
        }
    }
}

fn db_error(e: sqlx::Error, single: Option<&CheckpointRecord>) -> StoreError {
    match (&e, single) {
        (sqlx::Error::Database(d), Some(r)) if d.is_foreign_key_violation() => {
            StoreError::Unavailable(format!("parent checkpoint {:?} of {} does not exist", r.parent, r.id))
        }
        _ => unavailable(e),
    }
}

/// Applies writes in one transaction. The outer error fails the whole batch (nothing committed);
/// an inner one (a conflict, a stale fence) fails only its write.
async fn apply(pool: &PgPool, ops: &[&Op]) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
    let mut out: Vec<Option<Result<u64, StoreError>>> = (0..ops.len()).map(|_| None).collect();
    let single_put = match ops {
        [Op::Put(r, _)] => Some(r),
        _ => None,
    };
    let mut tx = pool.begin().await.map_err(unavailable)?;

    // Fences first: lock the lease rows in a fixed order and refuse stale writes.
    let mut fenced: Vec<&str> = ops.iter().filter_map(|o| o.fence().map(|(c, _)| c)).collect();
    if !fenced.is_empty() {
        fenced.sort_unstable();
        fenced.dedup();
        let rows = sqlx::query(
            "SELECT conversation, token FROM leases WHERE conversation = ANY($1) ORDER BY conversation FOR SHARE",
        )
        .bind(&fenced)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut current: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for r in rows {
            current.insert(r.try_get(0).map_err(corrupt)?, r.try_get(1).map_err(corrupt)?);
        }
        for (i, op) in ops.iter().enumerate() {
            if let Some((conv, f)) = op.fence()
                && current.get(conv) != Some(&f.token)
            {
                out[i] = Some(Err(StoreError::Fenced { conversation: conv.to_string(), token: f.token as u64 }));
            }
        }
    }

    // Conversation ids of every write that still goes ahead, in one round trip.
    let mut keys: Vec<&str> = ops
        .iter()
        .zip(&out)
        .filter(|(_, r)| r.is_none())
        .filter_map(|(o, _)| match o {
            Op::Put(r, _) => Some(r.conversation_id.as_str()),
            Op::Writes { conversation, .. } => Some(conversation.as_str()),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(keys.len());
    if !keys.is_empty() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let rows = sqlx::query(
            "INSERT INTO conversations (key, created_at) SELECT k, $2 FROM UNNEST($1::text[]) AS k \
             ON CONFLICT (key) DO UPDATE SET key = excluded.key RETURNING key, id",
        )
        .bind(&keys)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        for r in rows {
            ids.insert(r.try_get(0).map_err(corrupt)?, r.try_get(1).map_err(corrupt)?);
        }
    }
    let conv_of = |k: &str| ids.get(k).copied().ok_or_else(|| corrupt(format!("no id for conversation {k}")));

    // Checkpoints of the batch in one statement; an id that exists is a conflict of its write only.
    let puts: Vec<(usize, &CheckpointRecord, Option<Fence>)> = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| out[*i].is_none())
        .filter_map(|(i, o)| match o {
            Op::Put(r, f) => Some((i, r, *f)),
            _ => None,
        })
        .collect();
    if !puts.is_empty() {
        let mut conv = Vec::with_capacity(puts.len());
        for (_, r, _) in &puts {
            conv.push(conv_of(&r.conversation_id)?);
        }
        let id: Vec<i64> = puts.iter().map(|(_, r, _)| r.id as i64).collect();
        let parent: Vec<Option<i64>> = puts.iter().map(|(_, r, _)| r.parent.map(|p| p as i64)).collect();
        let run: Vec<&str> = puts.iter().map(|(_, r, _)| r.run_id.as_str()).collect();
        let step: Vec<i64> = puts.iter().map(|(_, r, _)| r.step).collect();
        let created: Vec<i64> = puts.iter().map(|(_, r, _)| r.created_at_ms).collect();
        let version: Vec<i32> = puts.iter().map(|(_, r, _)| r.schema_version as i32).collect();
        let snapshot: Vec<bool> = puts.iter().map(|(_, r, _)| r.snapshot).collect();
        let payload: Vec<&[u8]> = puts.iter().map(|(_, r, _)| r.payload.as_slice()).collect();
        let rows = sqlx::query(
            "INSERT INTO checkpoints (conv, id, parent, run_id, step, created_at, schema_version, snapshot, payload) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], \
             $7::int[], $8::bool[], $9::bytea[]) ON CONFLICT (conv, id) DO NOTHING RETURNING conv, id",
        )
        .bind(&conv)
        .bind(&id)
        .bind(&parent)
        .bind(&run)
        .bind(&step)
        .bind(&created)
        .bind(&version)
        .bind(&snapshot)
        .bind(&payload)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error(e, single_put))?;
        let mut inserted = std::collections::HashSet::with_capacity(rows.len());
        for r in rows {
            inserted.insert((r.try_get::<i64, _>(0).map_err(corrupt)?, r.try_get::<i64, _>(1).map_err(corrupt)?));
        }
        let mut tagged: Vec<(i64, i64)> = Vec::new();
        for (k, (i, r, f)) in puts.iter().enumerate() {
            if inserted.remove(&(conv[k], r.id as i64)) {
                out[*i] = Some(Ok(1));
                if let Some(run) = f.and_then(|f| f.input_of_run).filter(|_| r.step == -1) {
                    tagged.push((run, r.id as i64));
                }
            } else {
                out[*i] = Some(Err(StoreError::Conflict { conversation: r.conversation_id.clone(), id: r.id }));
            }
        }
        for (run, cp) in tagged {
            sqlx::query("UPDATE rt_runs SET input_checkpoint = $2 WHERE id = $1 AND input_checkpoint IS NULL")
                .bind(run)
                .bind(cp)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
    }

    for (i, op) in ops.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let n = match op {
            Op::Put(..) => 1,
            Op::Writes { conversation, checkpoint, writes, .. } => {
                let conv = conv_of(conversation)?;
                // One statement per write set; a task repeated within it keeps its last outcome.
                let mut last: HashMap<&str, &[u8]> = HashMap::with_capacity(writes.len());
                for w in writes {
                    last.insert(&w.task_id, &w.payload);
                }
                let (tasks, payloads): (Vec<&str>, Vec<&[u8]>) = last.into_iter().unzip();
                sqlx::query(
                    "INSERT INTO pending_writes (conv, checkpoint, task, payload) \
                     SELECT $1, $2, t, p FROM UNNEST($3::text[], $4::bytea[]) AS u(t, p) \
                     ON CONFLICT (conv, checkpoint, task) DO UPDATE SET payload = excluded.payload",
                )
                .bind(conv)
                .bind(*checkpoint as i64)
                .bind(&tasks)
                .bind(&payloads)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                writes.len() as u64
            }
            Op::Context { scope, owner, values } => {
                let (fields, vals): (Vec<&str>, Vec<String>) =
                    values.iter().map(|(k, v)| (k.as_str(), v.to_string())).unzip();
                sqlx::query(
                    "INSERT INTO scoped_context (scope, owner, field, value) \
                     SELECT $1, $2, f, v FROM UNNEST($3::text[], $4::text[]) AS u(f, v) \
                     ON CONFLICT (scope, owner, field) DO UPDATE SET value = excluded.value",
                )
                .bind(scope_name(*scope))
                .bind(owner)
                .bind(&fields)
                .bind(&vals)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                values.len() as u64
            }
            Op::DeleteOwner { scope, owner } => {
                sqlx::query("DELETE FROM scoped_context WHERE scope = $1 AND owner = $2")
                    .bind(scope_name(*scope))
                    .bind(owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected()
            }
            Op::Delete { conversation } => {
                let id: Option<i64> = sqlx::query_scalar("SELECT id FROM conversations WHERE key = $1")
                    .bind(conversation)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let mut n = 0;
                if let Some(id) = id {
                    for sql in ["DELETE FROM pending_writes WHERE conv = $1", "DELETE FROM checkpoints WHERE conv = $1"]
                    {
                        n += sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(unavailable)?.rows_affected();
                    }
                    sqlx::query("DELETE FROM conversations WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                n
            }
        };
        out[i] = Some(Ok(n));
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(out.into_iter().map(|r| r.unwrap_or(Ok(0))).collect())
}

#[async_trait]
impl CheckpointStore for PgStore {
    fn put(&self, record: CheckpointRecord) -> WriteAck {
        self.submit_ack(Op::Put(record, None))
    }

    async fn latest(&self, conversation: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM checkpoints c JOIN conversations v ON c.conv = v.id WHERE v.key = $1 \
             ORDER BY c.id DESC LIMIT 1"
        );
        let row = sqlx::query(&sql).bind(conversation).fetch_optional(&self.pool).await.map_err(unavailable)?;
        row.map(|r| record(conversation, &r)).transpose()
    }

    async fn get(&self, conversation: &str, id: u64) -> Result<Option<CheckpointRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM checkpoints c JOIN conversations v ON c.conv = v.id WHERE v.key = $1 AND c.id = $2"
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
            "WITH RECURSIVE cv(id) AS (SELECT id FROM conversations WHERE key = $1), \
             chain(id, parent, snapshot, depth) AS ( \
               SELECT c.id, c.parent, c.snapshot, 0 FROM checkpoints c, cv WHERE c.conv = cv.id AND c.id = $2 \
               UNION ALL \
               SELECT c.id, c.parent, c.snapshot, chain.depth + 1 FROM checkpoints c, cv, chain \
               WHERE c.conv = cv.id AND c.id = chain.parent AND NOT chain.snapshot) \
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
             WHERE v.key = $1 AND c.id < $2 ORDER BY c.id DESC LIMIT $3"
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
        self.submit_ack(Op::Writes { conversation: conversation.to_string(), checkpoint, writes, fence: None })
    }

    async fn pending_writes(&self, conversation: &str, checkpoint: u64) -> Result<Vec<PendingWrite>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.task, p.payload FROM pending_writes p JOIN conversations v ON p.conv = v.id \
             WHERE v.key = $1 AND p.checkpoint = $2 ORDER BY p.task",
        )
        .bind(conversation)
        .bind(checkpoint as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(PendingWrite { task_id: r.try_get(0).map_err(corrupt)?, payload: r.try_get(1).map_err(corrupt)? })
            })
            .collect()
    }

    async fn delete_conversation(&self, conversation: &str) -> Result<u64, StoreError> {
        self.submit_wait(Op::Delete { conversation: conversation.to_string() }).await
    }
}

#[async_trait]
impl ContextStore for PgStore {
    async fn load(&self, scope: Scope, owner: &str) -> Result<Map<String, Value>, StoreError> {
        let rows = sqlx::query("SELECT field, value FROM scoped_context WHERE scope = $1 AND owner = $2")
            .bind(scope_name(scope))
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut m = Map::new();
        for r in rows {
            let k: String = r.try_get(0).map_err(corrupt)?;
            let v: String = r.try_get(1).map_err(corrupt)?;
            m.insert(k, serde_json::from_str(&v).map_err(corrupt)?);
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
