//! The hash-chained audit log on SQLite and PostgreSQL: appends chain, concurrent appends stay one
//! chain, and every kind of tampering (edit, delete in the middle, reorder, forged re-hash without
//! the link) is found by `verify` at the right record.
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::json;
use std::time::Duration;
use switchboard_store::audit::GENESIS;
use switchboard_store::postgres::{ScratchSchema, database_url};
use switchboard_store::{AuditEvent, AuditLog, PgStore, SqliteConfig, SqliteStore};

fn event(i: usize) -> AuditEvent {
    AuditEvent::new("acme", "key:k1", "conversation.delete", format!("conv_{i}")).with_details(json!({"messages": i}))
}

async fn sqlite() -> (AuditLog, SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SqliteConfig { fsync: false, readers: 2, busy_timeout: Duration::from_secs(5) };
    let store = SqliteStore::open(dir.path().join("a.sqlite"), cfg).await.unwrap();
    (AuditLog::on_store(&store), store, dir)
}

async fn sqlite_exec(path: &std::path::Path, sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

#[tokio::test]
async fn an_empty_log_verifies_with_the_genesis_head() {
    let (log, _s, _d) = sqlite().await;
    let v = log.verify().await.unwrap();
    assert!(v.is_ok());
    assert_eq!((v.records, v.head.as_str()), (0, GENESIS));
}

#[tokio::test]
async fn sqlite_appends_chain_and_concurrent_appends_stay_one_chain() {
    let (log, _s, _d) = sqlite().await;
    let first = log.append(event(0)).await.unwrap();
    assert_eq!((first.seq, first.prev_hash.as_str()), (1, GENESIS));
    let second = log.append(event(1)).await.unwrap();
    assert_eq!(second.prev_hash, first.hash);
    let tasks: Vec<_> = (2..40)
        .map(|i| {
            tokio::spawn({
                let l = log.clone();
                async move { l.append(event(i)).await }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let v = log.verify().await.unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 40);
    let last = log.page(39, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(v.head, last[0].hash);
    assert!(last[0].event.details["messages"].as_u64().is_some());
}

#[tokio::test]
async fn sqlite_tampering_is_found_at_the_record_that_was_touched() {
    let (log, store, _d) = sqlite().await;
    for i in 0..6 {
        log.append(event(i)).await.unwrap();
    }
    let path = store.path().to_path_buf();
    // Edit a field: record 3 no longer matches its hash.
    sqlite_exec(&path, "UPDATE audit_log SET subject = 'conv_x' WHERE seq = 3").await;
    let v = log.verify().await.unwrap();
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(3), "{v:?}");
    assert!(v.broken.unwrap().1.contains("edited"));
    assert_eq!(v.records, 2);
    sqlite_exec(&path, "UPDATE audit_log SET subject = 'conv_2' WHERE seq = 3").await;
    assert!(log.verify().await.unwrap().is_ok());

    // Delete a record in the middle: the gap is found where it is.
    sqlite_exec(&path, "DELETE FROM audit_log WHERE seq = 4").await;
    let v = log.verify().await.unwrap();
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(5), "{v:?}");
    assert!(v.broken.unwrap().1.contains("missing"));
}

#[tokio::test]
async fn sqlite_a_forged_record_with_a_fresh_hash_breaks_the_next_link() {
    let (log, store, _d) = sqlite().await;
    for i in 0..4 {
        log.append(event(i)).await.unwrap();
    }
    // A forger rewrites record 2 and recomputes its own hash; record 3 still points at the old one.
    let r2 = log.page(1, 1).await.unwrap().remove(0);
    let mut e = r2.event.clone();
    e.subject = "conv_forged".into();
    let forged = switchboard_store::audit::record_hash(2, r2.at_ms, &e, &r2.details_text, &r2.prev_hash);
    sqlite_exec(
        store.path(),
        &format!("UPDATE audit_log SET subject = 'conv_forged', hash = '{forged}' WHERE seq = 2"),
    )
    .await;
    let v = log.verify().await.unwrap();
    assert_eq!(v.broken.as_ref().map(|b| b.0), Some(3), "{v:?}");
    assert!(v.broken.unwrap().1.contains("prev_hash"));
}

#[tokio::test]
async fn postgres_replicas_append_to_one_chain() {
    let url = database_url();
    let schema = ScratchSchema::new(&url, "audit");
    let a = PgStore::open(&url, schema.config()).await.expect("open PostgreSQL (is DATABASE_URL reachable?)");
    let b = PgStore::open(&url, schema.config()).await.unwrap();
    let (la, lb) = (AuditLog::on_postgres(a.pool().clone()), AuditLog::on_postgres(b.pool().clone()));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let l = if i % 2 == 0 { la.clone() } else { lb.clone() };
        tasks.push(tokio::spawn(async move { l.append(event(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let v = la.verify().await.unwrap();
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 30);
    sqlx::query("UPDATE audit_log SET actor = 'cli' WHERE seq = 17").execute(a.pool()).await.unwrap();
    let v = lb.verify().await.unwrap();
    assert_eq!(v.broken.map(|b| b.0), Some(17));
    schema.drop_now().await.unwrap();
}
