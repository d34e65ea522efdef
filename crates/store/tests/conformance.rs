//! Every store passes the same conformance suite.
#![allow(missing_docs)]

use switchboard_store::{MemoryStore, SqliteConfig, SqliteStore, conformance};

#[tokio::test]
async fn memory_store_conforms() {
    let s = MemoryStore::new();
    conformance::checkpoint_store(&s).await;
    conformance::context_store(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SqliteStore::open(dir.path().join("sb.sqlite"), SqliteConfig::default()).await.expect("open");
    conformance::checkpoint_store(&s).await;
    conformance::context_store(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sb.sqlite");
    {
        let s = SqliteStore::open(&path, SqliteConfig::default()).await.expect("open");
        conformance::checkpoint_store(&s).await;
    }
    let s = SqliteStore::open(&path, SqliteConfig::default()).await.expect("reopen applies no migration twice");
    use switchboard_engine::CheckpointStore;
    assert_eq!(s.latest("conformance-b").await.expect("latest").map(|r| r.id), Some(1));
}

#[tokio::test]
async fn sqlite_open_errors_are_typed() {
    let err = SqliteStore::open("/proc/definitely/not/here.sqlite", SqliteConfig::default()).await.err();
    assert!(matches!(err, Some(switchboard_engine::StoreError::Unavailable(_))));
}
