//! The PostgreSQL store: the conformance suite, the engine on it, leases and fenced writes.
//! Each test works in a schema of its own (DATABASE_URL, else the local server), dropped after.
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use switchboard_engine::*;
use switchboard_store::postgres::{ScratchSchema, database_url};
use switchboard_store::{Fence, FencedStore, Lease, PgStore, conformance};

async fn fresh(prefix: &str) -> (Arc<PgStore>, ScratchSchema) {
    let url = database_url();
    let schema = ScratchSchema::new(&url, prefix);
    let store = PgStore::open(&url, schema.config()).await.expect("open PostgreSQL (is DATABASE_URL reachable?)");
    (Arc::new(store), schema)
}

fn graph(delay: Duration) -> Graph {
    let schema = Arc::new(Schema::builder().field(Field::new("messages").reducer(Reducer::Messages)).build().unwrap());
    GraphBuilder::new(schema)
        .node("agent", move |i: NodeInput| async move {
            tokio::time::sleep(delay).await;
            let text = i.state.get_array("messages").last().unwrap()["text"].as_str().unwrap().to_string();
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
async fn postgres_store_conforms() {
    let (s, schema) = fresh("conf").await;
    conformance::checkpoint_store(s.as_ref()).await;
    conformance::context_store(s.as_ref()).await;
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_records_keep_and_erase_recorded_turns() {
    let (s, schema) = fresh("replay_cassettes").await;
    let records = switchboard_store::Records::on_postgres(s.pool().clone());
    conformance::cassette_records(&records).await;
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_applies_no_migration_twice() {
    let url = database_url();
    let schema = ScratchSchema::new(&url, "reopen");
    {
        let s = PgStore::open(&url, schema.config()).await.unwrap();
        s.put(conformance_record("c", 1)).await.unwrap();
    }
    let s = PgStore::open(&url, schema.config()).await.unwrap();
    assert_eq!(s.latest("c").await.unwrap().map(|r| r.id), Some(1));
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test]
async fn open_errors_are_typed() {
    let cfg = switchboard_store::PgConfig { acquire_timeout: Duration::from_secs(2), ..Default::default() };
    let err = PgStore::open("postgres://nobody@127.0.0.1:1/none", cfg).await.err();
    assert!(matches!(err, Some(StoreError::Unavailable(_))), "{err:?}");
    let bad = switchboard_store::PgConfig { schema: Some("x; DROP TABLE y".into()), ..Default::default() };
    assert!(matches!(PgStore::open(&database_url(), bad).await.err(), Some(StoreError::Unavailable(_))));
}

fn conformance_record(conv: &str, id: u64) -> CheckpointRecord {
    CheckpointRecord {
        conversation_id: conv.into(),
        id,
        parent: id.checked_sub(1).filter(|p| *p > 0),
        run_id: "r".into(),
        step: -1,
        created_at_ms: 1,
        schema_version: 1,
        snapshot: id == 1,
        payload: b"{}".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_on_postgres_and_survives_a_new_store() {
    let (s, schema) = fresh("engine").await;
    let e = Engine::with_context(graph(Duration::ZERO), s.clone(), s.clone(), EngineConfig::default());
    let mut tasks = Vec::new();
    for c in 0..50 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for t in 0..3 {
                e.invoke(&format!("c{c}"), user(&format!("m{t}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (commits, writes) = s.writer_stats();
    assert!(writes >= 300, "every checkpoint went through the writers ({writes})");
    assert!(commits < writes, "concurrent writes shared commits ({commits} commits for {writes} writes)");
    let other = Arc::new(PgStore::open(&database_url(), schema.config()).await.unwrap());
    let e2 = Engine::new(graph(Duration::ZERO), other.clone(), EngineConfig::default());
    let msgs = e2.state("c7").await.unwrap().get_array("messages").to_vec();
    assert_eq!(msgs.len(), 6);
    assert_eq!(msgs[5]["text"], json!("echo m2"));
    drop((e, e2, s, other));
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_exclude_and_tokens_only_grow() {
    let (s, schema) = fresh("lease").await;
    let ttl = Duration::from_millis(300);
    let a = s.acquire_lease("c", "A", ttl).await.unwrap().expect("free lease");
    assert_eq!(a.token, 1);
    assert!(s.acquire_lease("c", "B", ttl).await.unwrap().is_none(), "held by A");
    assert!(a.renew(&s, ttl).await.unwrap());
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let b = s.acquire_lease("c", "B", ttl).await.unwrap().expect("expired lease is taken over");
    assert_eq!(b.token, 2);
    assert!(!a.renew(&s, ttl).await.unwrap(), "A lost it");
    assert!(!a.release(&s).await.unwrap(), "A cannot release B's lease");
    assert!(b.release(&s).await.unwrap());
    let a2 = s.acquire_lease("c", "A", ttl).await.unwrap().expect("released lease is free");
    assert_eq!(a2.token, 3, "a release never lets a token be reused");
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_token_is_refused_without_failing_the_batch() {
    let (s, schema) = fresh("fence").await;
    let ttl = Duration::from_secs(30);
    let l = s.acquire_lease("c", "A", ttl).await.unwrap().unwrap();
    let m = s.acquire_lease("d", "A", ttl).await.unwrap().unwrap();
    s.put_fenced(conformance_record("c", 1), Fence { token: l.token, input_of_run: None }).await.unwrap();
    // Pipelined in one batch: a stale write of `c`, a good write of `d`, an unfenced one.
    let stale = s.put_fenced(conformance_record("c", 2), Fence { token: l.token - 1, input_of_run: None });
    let good = s.put_fenced(conformance_record("d", 1), Fence { token: m.token, input_of_run: None });
    let plain = s.put(conformance_record("e", 1));
    let e = stale.await.expect_err("stale");
    assert!(matches!(e, StoreError::Fenced { ref conversation, token: 0 } if conversation == "c"), "{e:?}");
    good.await.unwrap();
    plain.await.unwrap();
    assert_eq!(s.latest("c").await.unwrap().map(|r| r.id), Some(1), "nothing of the stale write landed");
    let w = s.put_writes_fenced("c", 1, vec![], Fence { token: 99, input_of_run: None }).await;
    assert!(matches!(w, Err(StoreError::Fenced { .. })), "pending writes are fenced too");
    let none = s.put_fenced(conformance_record("z", 1), Fence { token: 1, input_of_run: None }).await;
    assert!(matches!(none, Err(StoreError::Fenced { .. })), "no lease row: refused");
    drop(s);
    schema.drop_now().await.unwrap();
}

/// Two workers race for one conversation: A holds the lease and runs slow turns; its lease
/// expires (no heartbeat) and B takes over. A's writes from then on are refused at commit, its run
/// fails with a typed error, and nothing it wrote after the takeover is in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_race_and_the_stale_one_lands_nothing() {
    let (s, schema) = fresh("race").await;
    let ttl = Duration::from_millis(400);
    let fa = Arc::new(FencedStore::new(s.clone()));
    let fb = Arc::new(FencedStore::new(s.clone()));
    let a = Engine::new(graph(Duration::from_millis(600)), fa.clone(), EngineConfig::default());
    let b = Engine::new(graph(Duration::ZERO), fb.clone(), EngineConfig::default());

    let la: Lease = s.acquire_lease("c", "A", ttl).await.unwrap().unwrap();
    fa.fence("c", Fence { token: la.token, input_of_run: None });
    // A's turn: the input checkpoint lands at once, the agent step takes longer than the lease.
    let run_a = a.start("c", Input::Message(user("from A")), RunOptions::default()).await.unwrap();
    let a_run_id = run_a.run_id().to_string();
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    let lb = s.acquire_lease("c", "B", ttl * 10).await.unwrap().expect("B takes the expired lease");
    assert!(lb.token > la.token);
    fb.fence("c", Fence { token: lb.token, input_of_run: None });
    let err = run_a.wait().await.expect_err("A's step write is refused");
    assert!(matches!(err, EngineError::Store(StoreError::Fenced { .. })), "typed: {err}");

    // B continues the conversation from what is durable: A's input, then its own turn.
    b.forget("c");
    let out = b.invoke("c", user("from B")).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    let hist = s.history("c", None, 100).await.unwrap();
    let from_a: Vec<i64> = hist.iter().filter(|r| r.run_id == a_run_id).map(|r| r.step).collect();
    assert_eq!(from_a, vec![-1], "only A's input checkpoint (written under its live lease) landed");
    let texts: Vec<String> = out.state.get_array("messages").iter().map(|m| m["text"].to_string()).collect();
    assert_eq!(texts.iter().filter(|t| t.contains("echo from A")).count(), 1, "A's turn was finished once, by B");

    // A tries again with its stale token: refused, and nothing lands.
    a.forget("c");
    let before = s.latest("c").await.unwrap().unwrap().id;
    let again = a.invoke("c", user("A again")).await.expect_err("stale");
    assert!(matches!(again, EngineError::Store(StoreError::Fenced { .. })));
    assert_eq!(s.latest("c").await.unwrap().unwrap().id, before);
    drop((a, b, fa, fb, s));
    schema.drop_now().await.unwrap();
}
