//! The audit log: an append-only, hash-chained record of what operators and the system did to
//! customer data and credentials (keys created, approvals resolved, conversations deleted,
//! customers erased, retention purges).
//!
//! Each record carries the hash of the previous one, and its own hash covers every field and that
//! link, so editing, inserting or deleting a record anywhere but at the very end breaks the chain
//! at that point; [`AuditLog::verify`] walks it and names the first broken record. Truncating the
//! tail cannot be seen from the log alone: operators who need that anchor the head hash elsewhere
//! (`switchboard audit verify` prints it).
//!
//! One chain per database. On SQLite an append is one write of the store's single writer (so appends
//! are serial by construction and share the group commit); on PostgreSQL it is a transaction under
//! a transaction-scoped advisory lock, so replicas append one at a time.

use crate::SqliteStore;
use crate::sqlite::{SqlWrite, Writer, exec};
use rusqlite::OptionalExtension as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row, SqlitePool};
use std::sync::{Arc, Mutex};
use switchboard_engine::StoreError;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Advisory lock key of the PostgreSQL chain (an arbitrary constant: "audit" in ASCII).
const PG_LOCK: i64 = 0x0061_7564_6974;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// What happened, before it is chained.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// The tenant whose data or credentials it concerns (`*` for the whole service).
    pub tenant: String,
    /// Who did it: `key:<id>`, `jwt:<sub>`, `cli`, `system:retention`…
    pub actor: String,
    /// Dotted verb, e.g. `key.create`, `conversation.delete`, `customer.erase`.
    pub action: String,
    /// What it was done to (a key id, conversation id, customer id).
    pub subject: String,
    /// Counts and other non-personal details (never message content).
    pub details: Value,
}

impl AuditEvent {
    /// An event with empty details.
    pub fn new(
        tenant: impl Into<String>,
        actor: impl Into<String>,
        action: impl Into<String>,
        subject: impl Into<String>,
    ) -> Self {
        Self {
            tenant: tenant.into(),
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            details: Value::Object(Default::default()),
        }
    }

    /// The same event with these details.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// A chained record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Unix time, ms.
    pub at_ms: i64,
    /// The event.
    pub event: AuditEvent,
    /// The details exactly as hashed (a JSON text).
    pub details_text: String,
    /// Hash of the previous record ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// The hash of a record: SHA-256 over a JSON array of its position, time, the event's fields, the
/// details text exactly as stored, and the previous record's hash, in hex.
pub fn record_hash(seq: i64, at_ms: i64, event: &AuditEvent, details_text: &str, prev_hash: &str) -> String {
    let e = event;
    let canonical =
        serde_json::json!([seq, at_ms, e.tenant, e.actor, e.action, e.subject, details_text, prev_hash]).to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Hash of the last record ([`GENESIS`] for an empty log).
    pub head: String,
    /// The first record that does not check out, with the reason; `None` when the chain is whole.
    pub broken: Option<(i64, String)>,
}

impl Verification {
    /// Whether the chain is whole.
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Clone)]
enum Backend {
    Sqlite { pool: SqlitePool, writer: Writer },
    Postgres(PgPool),
}

/// The audit log of one database.
#[derive(Clone)]
pub struct AuditLog {
    backend: Backend,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("AuditLog").field("backend", &kind).finish()
    }
}

/// Reads the chain's head on `$conn` (inside the caller's transaction or lock), chains the event
/// after it and inserts it; evaluates to the record. `$values` are the backend's nine placeholders.
macro_rules! append_on {
    ($conn:expr, $values:literal, $at_ms:expr, $event:expr, $details_text:expr) => {{
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional($conn)
            .await
            .map_err(unavailable)?;
        let (prev_seq, prev_hash) = match head {
            Some(r) => (r.try_get::<i64, _>(0).map_err(corrupt)?, r.try_get::<String, _>(1).map_err(corrupt)?),
            None => (0, GENESIS.to_string()),
        };
        let rec = chain(prev_seq + 1, $at_ms, $event, $details_text, prev_hash);
        sqlx::query(concat!(
            "INSERT INTO audit_log (seq, at_ms, tenant, actor, action, subject, details, prev_hash, hash) VALUES (",
            $values,
            ")"
        ))
        .bind(rec.seq)
        .bind(rec.at_ms)
        .bind(&rec.event.tenant)
        .bind(&rec.event.actor)
        .bind(&rec.event.action)
        .bind(&rec.event.subject)
        .bind(&rec.details_text)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .execute($conn)
        .await
        .map_err(unavailable)?;
        rec
    }};
}

/// One append through the SQLite writer; `out` receives the record.
struct Append {
    event: AuditEvent,
    details_text: String,
    at_ms: i64,
    out: Arc<Mutex<Option<AuditRecord>>>,
}

impl SqlWrite for Append {
    fn apply(&self, c: &rusqlite::Connection) -> Result<u64, StoreError> {
        // Inside the writer's transaction, so the head read here is still the head at commit.
        let head: Option<(i64, String)> = c
            .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(corrupt)?;
        let (prev_seq, prev_hash) = head.unwrap_or_else(|| (0, GENESIS.to_string()));
        let rec = chain(prev_seq + 1, self.at_ms, &self.event, &self.details_text, prev_hash);
        let e = &rec.event;
        exec(
            c,
            "INSERT INTO audit_log (seq, at_ms, tenant, actor, action, subject, details, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rusqlite::params![
                rec.seq,
                rec.at_ms,
                e.tenant,
                e.actor,
                e.action,
                e.subject,
                rec.details_text,
                rec.prev_hash,
                rec.hash
            ],
        )?;
        *self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rec);
        Ok(1)
    }
}

fn chain(seq: i64, at_ms: i64, event: &AuditEvent, details_text: &str, prev_hash: String) -> AuditRecord {
    let hash = record_hash(seq, at_ms, event, details_text, &prev_hash);
    AuditRecord { seq, at_ms, event: event.clone(), details_text: details_text.to_string(), prev_hash, hash }
}

const COLS: &str = "seq, at_ms, tenant, actor, action, subject, details, prev_hash, hash";

macro_rules! record_from_row {
    ($r:expr) => {{
        let r = $r;
        let details_text: String = r.try_get(6).map_err(corrupt)?;
        AuditRecord {
            seq: r.try_get(0).map_err(corrupt)?,
            at_ms: r.try_get(1).map_err(corrupt)?,
            event: AuditEvent {
                tenant: r.try_get(2).map_err(corrupt)?,
                actor: r.try_get(3).map_err(corrupt)?,
                action: r.try_get(4).map_err(corrupt)?,
                subject: r.try_get(5).map_err(corrupt)?,
                details: serde_json::from_str(&details_text).unwrap_or(Value::Null),
            },
            details_text,
            prev_hash: r.try_get(7).map_err(corrupt)?,
            hash: r.try_get(8).map_err(corrupt)?,
        }
    }};
}

impl AuditLog {
    /// The log in a SQLite store's file, appended through the store's writer.
    pub fn on_store(store: &SqliteStore) -> Self {
        Self { backend: Backend::Sqlite { pool: store.readers(), writer: store.writer() } }
    }

    /// The log in a PostgreSQL database whose migrations have been applied (e.g. by
    /// [`crate::PgStore::open`]).
    pub fn on_postgres(pool: PgPool) -> Self {
        Self { backend: Backend::Postgres(pool) }
    }

    /// Appends an event at the end of the chain; returns the chained record.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be written.
    pub async fn append(&self, event: AuditEvent) -> Result<AuditRecord, StoreError> {
        let details_text = event.details.to_string();
        let at_ms = now_ms();
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let out = Arc::new(Mutex::new(None));
                writer.write(Append { event, details_text, at_ms, out: out.clone() }).await?;
                let rec = out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                rec.ok_or_else(|| unavailable("audit append was not applied"))
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(unavailable)?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let rec = append_on!(&mut *tx, "$1, $2, $3, $4, $5, $6, $7, $8, $9", at_ms, &event, &details_text);
                tx.commit().await.map_err(unavailable)?;
                Ok(rec)
            }
        }
    }

    /// Records with `seq` greater than `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn page(&self, after: i64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        match &self.backend {
            Backend::Sqlite { pool, .. } => {
                let rows = sqlx::query(&format!("SELECT {COLS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?;
                for r in rows {
                    out.push(record_from_row!(r));
                }
            }
            Backend::Postgres(pool) => {
                let rows = sqlx::query(&format!("SELECT {COLS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?;
                for r in rows {
                    out.push(record_from_row!(r));
                }
            }
        }
        Ok(out)
    }

    /// Walks the whole chain, page by page, recomputing every hash and link.
    ///
    /// # Errors
    /// Store failures (a broken chain is not an error: see [`Verification::broken`]).
    pub async fn verify(&self) -> Result<Verification, StoreError> {
        let mut checked = 0u64;
        let mut expect_seq = 1i64;
        let mut prev = GENESIS.to_string();
        loop {
            let page = self.page(expect_seq - 1, 1000).await?;
            if page.is_empty() {
                return Ok(Verification { records: checked, head: prev, broken: None });
            }
            for r in page {
                let broken =
                    |why: String| Ok(Verification { records: checked, head: prev.clone(), broken: Some((r.seq, why)) });
                if r.seq != expect_seq {
                    return broken(format!("expected record {expect_seq} next, found {} (records missing)", r.seq));
                }
                if r.prev_hash != prev {
                    return broken("its prev_hash is not the previous record's hash".into());
                }
                let h = record_hash(r.seq, r.at_ms, &r.event, &r.details_text, &r.prev_hash);
                if h != r.hash {
                    return broken("its contents do not match its hash (edited)".into());
                }
                prev = r.hash;
                checked += 1;
                expect_seq += 1;
            }
        }
    }
}
