//! Throwaway schemas: each test (or chaos run) works in a schema of its own, dropped afterwards.

use super::{PgConfig, unavailable, valid_schema};
use sqlx::{Connection, PgConnection};
use std::sync::atomic::{AtomicU64, Ordering};
use switchboard_engine::StoreError;

/// The database URL of the tests: `DATABASE_URL`, else the local server's `test` database.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own in a database; dropped (with everything in it) by [`Self::drop_now`] or,
/// failing that, when the value is dropped.
#[derive(Debug)]
pub struct ScratchSchema {
    url: String,
    name: String,
    dropped: bool,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl ScratchSchema {
    /// A fresh, unique schema name under `prefix` (the schema is created when a store opens it).
    pub fn new(url: &str, prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let prefix: String =
            prefix.to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(20).collect();
        let name = format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self { url: url.to_string(), name, dropped: false }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A store config that puts every table in this schema.
    pub fn config(&self) -> PgConfig {
        PgConfig { schema: Some(self.name.clone()), ..PgConfig::default() }
    }

    /// Drops the schema now.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn drop_now(mut self) -> Result<(), StoreError> {
        self.dropped = true;
        drop_schema(&self.url, &self.name).await
    }

    /// Keeps the schema (for inspection after a failed run).
    pub fn keep(mut self) -> String {
        self.dropped = true;
        std::mem::take(&mut self.name)
    }
}

async fn drop_schema(url: &str, name: &str) -> Result<(), StoreError> {
    if !valid_schema(name) {
        return Err(unavailable(format!("invalid schema name `{name}`")));
    }
    let mut c = PgConnection::connect(url).await.map_err(unavailable)?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&mut c).await.map_err(unavailable)?;
    c.close().await.map_err(unavailable)
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (url, name) = (self.url.clone(), self.name.clone());
        // A test that panicked: drop the schema from a thread of its own (we may be inside a runtime).
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(drop_schema(&url, &name));
            }
        })
        .join();
    }
}
