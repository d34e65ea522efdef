//! Migrations embedded in the binary and applied with sqlx's migrator at open.

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use std::borrow::Cow;

/// `(version, description, sql)` of each migration, in order.
pub(crate) type Embedded = &'static [(i64, &'static str, &'static str)];

/// SQLite migrations.
pub(crate) const SQLITE: Embedded = &[
    (1, "checkpoints", include_str!("../migrations/sqlite/0001_checkpoints.sql")),
    (2, "server", include_str!("../migrations/sqlite/0002_server.sql")),
    (3, "audit", include_str!("../migrations/sqlite/0003_audit.sql")),
    (4, "cassettes", include_str!("../migrations/sqlite/0004_cassettes.sql")),
];

/// PostgreSQL migrations.
pub(crate) const POSTGRES: Embedded = &[
    (1, "checkpoints", include_str!("../migrations/postgres/0001_checkpoints.sql")),
    (2, "runtime", include_str!("../migrations/postgres/0002_runtime.sql")),
    (3, "server", include_str!("../migrations/postgres/0003_server.sql")),
    (4, "audit", include_str!("../migrations/postgres/0004_audit.sql")),
    (5, "cassettes", include_str!("../migrations/postgres/0005_cassettes.sql")),
];

#[derive(Debug)]
struct Source(Embedded);

impl MigrationSource<'static> for Source {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(*v, Cow::Borrowed(*d), MigrationType::Simple, Cow::Borrowed(*sql), false)
                })
                .collect())
        })
    }
}

pub(crate) async fn migrator(set: Embedded) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Source(set)).await
}
