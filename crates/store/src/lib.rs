//! Storage backends that implement the engine's traits: SQLite (the embedded default) and
//! PostgreSQL (shared by replicas, with per-conversation leases and fenced writes). Migrations live in `migrations/` and are embedded in the binary.
//!
//! This crate knows tables and transactions, not what a graph means: it stores opaque checkpoint
//! payloads keyed by conversation and id.

pub mod audit;
pub mod conformance;
mod migrate;
pub mod postgres;
pub mod records;
mod sqlite;

pub use audit::{AuditEvent, AuditLog, AuditRecord, Verification};
pub use postgres::{Fence, FencedStore, Lease, PgConfig, PgStore};
pub use records::Records;
pub use sqlite::{SqliteConfig, SqliteStore, WriterStats};
pub use switchboard_engine::MemoryStore;
