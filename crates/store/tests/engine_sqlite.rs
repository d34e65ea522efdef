//! The engine on SQLite: durability across restarts, interrupts across processes, group commit.
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::json;
use std::sync::Arc;
use switchboard_engine::*;
use switchboard_store::{SqliteConfig, SqliteStore};

fn graph() -> Graph {
    let schema = Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("approved"))
            .build()
            .unwrap(),
    );
    GraphBuilder::new(schema)
        .node("agent", |i: NodeInput| async move {
            let text = i.state.get_array("messages").last().unwrap()["text"].as_str().unwrap().to_string();
            if text.contains("freeze") {
                let ok = i.ctx.interrupt(json!({"approve": "freeze card 4242"}))?;
                return Ok(Update::new()
                    .set("approved", ok.clone())
                    .set("messages", json!({"role": "assistant", "text": format!("approved={ok}")}))
                    .into());
            }
            Ok(Update::new().set("messages", json!({"role": "assistant", "text": format!("echo {text}")})).into())
        })
        .edge(START, "agent")
        .edge("agent", END)
        .build()
        .unwrap()
}

fn user(t: &str) -> Update {
    Update::new().set("messages", json!({"role": "user", "text": t}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.sqlite");
    {
        let store = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).await.unwrap());
        let e = Engine::new(graph(), store, EngineConfig::default());
        for i in 0..5 {
            e.invoke("c", user(&format!("hello {i}"))).await.unwrap();
        }
        let out = e.invoke("c", user("freeze my card")).await.unwrap();
        assert_eq!(out.status, RunStatus::Interrupted);
    }
    let store = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).await.unwrap());
    let e = Engine::new(graph(), store, EngineConfig::default());
    assert_eq!(e.state("c").await.unwrap().get_array("messages").len(), 11);
    assert_eq!(e.pending_interrupts("c").await.unwrap().len(), 1);
    let out = e.resume("c", json!(true)).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    assert_eq!(out.state.get("approved"), Some(&json!(true)));
    let hist = e.history("c", None, 100).await.unwrap();
    assert_eq!(hist.len(), 12, "two checkpoints per turn; the interrupted step wrote none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_conversations_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("sb.sqlite"), SqliteConfig::default()).await.unwrap());
    let e = Engine::new(graph(), store.clone(), EngineConfig::default());
    let mut tasks = Vec::new();
    for c in 0..200 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for t in 0..3 {
                e.invoke(&format!("c{c}"), user(&format!("msg {t}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for c in [0, 77, 199] {
        let s = e.state_at(&format!("c{c}"), 6).await.unwrap();
        assert_eq!(s.get_array("messages").len(), 6);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_write_in_a_batch_does_not_fail_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("sb.sqlite"), SqliteConfig::default()).await.unwrap();
    let rec = |conv: &str, id: u64| CheckpointRecord {
        conversation_id: conv.into(),
        id,
        parent: None,
        run_id: "r".into(),
        step: 0,
        created_at_ms: 0,
        schema_version: 1,
        snapshot: true,
        payload: b"{}".to_vec(),
    };
    store.put(rec("x", 1)).await.unwrap();
    // Ordered together, so they share a transaction; the duplicate must not take the others down.
    let a = store.put(rec("a", 1));
    let dup = store.put(rec("x", 1));
    let b = store.put(rec("b", 1));
    assert!(a.await.is_ok());
    assert!(matches!(dup.await, Err(StoreError::Conflict { .. })));
    assert!(b.await.is_ok());
    assert!(store.get("a", 1).await.unwrap().is_some());
    assert!(store.get("b", 1).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_step_resumes_from_sqlite_without_redoing_finished_nodes() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.sqlite");
    let done = Arc::new(AtomicUsize::new(0));
    let hang = Arc::new(AtomicBool::new(true));
    let build = |done: Arc<AtomicUsize>, hang: Arc<AtomicBool>| {
        let schema = Arc::new(
            Schema::builder()
                .field(Field::new("messages").reducer(Reducer::Messages))
                .field(Field::new("log").reducer(Reducer::Append))
                .build()
                .unwrap(),
        );
        GraphBuilder::new(schema)
            .node("lookup", move |_i: NodeInput| {
                let done = done.clone();
                async move {
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok(Update::new().set("log", "looked up").into())
                }
            })
            .node("llm", move |_i: NodeInput| {
                let hang = hang.clone();
                async move {
                    if hang.load(Ordering::SeqCst) {
                        futures::future::pending::<()>().await;
                    }
                    Ok(Update::new().set("messages", json!({"role": "assistant", "text": "done"})).into())
                }
            })
            .edge(START, "lookup")
            .edge(START, "llm")
            .edge("lookup", END)
            .edge("llm", END)
            .build()
            .unwrap()
    };
    {
        let store = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).await.unwrap());
        let e = Engine::new(build(done.clone(), hang.clone()), store, EngineConfig::default());
        let h = e.start("c", Input::Message(user("hi")), RunOptions::default()).await.unwrap();
        while done.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        // Give the finished task's pending write time to commit, then die.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        h.abort();
    }
    hang.store(false, Ordering::SeqCst);
    let store = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).await.unwrap());
    let e = Engine::new(build(done.clone(), hang), store, EngineConfig::default());
    // The next message first finishes the interrupted turn, then runs.
    let out = e.invoke("c", user("again")).await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 2, "lookup ran once per turn, not again for the crashed turn");
    let texts: Vec<_> =
        out.state.get_array("messages").iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["hi", "done", "again", "done"]);
    assert_eq!(out.state.get("log"), Some(&json!(["looked up", "looked up"])));
}
