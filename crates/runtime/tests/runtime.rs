//! The runs queue, workers, leases and the effect journal against a real PostgreSQL (DATABASE_URL,
//! else the local server); each test in a schema of its own, dropped after.
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use switchboard_engine::*;
use switchboard_runtime::queue::ClaimedRun;
use switchboard_runtime::*;
use switchboard_store::postgres::{ScratchSchema, database_url};
use switchboard_store::{Fence, FencedStore, PgStore};
use tokio_util::sync::CancellationToken;

async fn fresh(prefix: &str) -> (Arc<PgStore>, ScratchSchema) {
    let url = database_url();
    let schema = ScratchSchema::new(&url, prefix);
    (Arc::new(PgStore::open(&url, schema.config()).await.unwrap()), schema)
}

fn queue(s: &PgStore, ttl: Duration) -> Queue {
    Queue::new(s.pool().clone(), QueueConfig { lease_ttl: ttl, ..QueueConfig::default() })
}

struct Echo;
impl Assistant for Echo {
    fn input(&self, run: &ClaimedRun) -> Update {
        Update::new().set("log", json!({"role": "user", "text": run.body, "msg": run.message_id}))
    }
    fn reply(&self, run: &ClaimedRun, state: &State) -> Option<String> {
        state
            .get_array("log")
            .iter()
            .rev()
            .find(|m| m["role"] == "assistant" && m["msg"] == json!(run.message_id))
            .map(|m| m["text"].as_str().unwrap_or_default().to_string())
    }
}

/// A graph that fails on "poison" and otherwise calls one journaled effect, then replies.
fn graph(journal: EffectJournal, calls: Arc<AtomicU32>) -> Graph {
    let schema = Arc::new(Schema::builder().field(Field::new("log").reducer(Reducer::Append)).build().unwrap());
    GraphBuilder::new(schema)
        .node("agent", move |i: NodeInput| {
            let journal = journal.clone();
            let calls = calls.clone();
            async move {
                let last = i.state.get_array("log").last().cloned().unwrap();
                let text = last["text"].as_str().unwrap().to_string();
                if text == "poison" {
                    return Err(NodeError::failed("poison message"));
                }
                let key = i.ctx.idempotency_key(0);
                let res = journal
                    .run(
                        i.ctx.conversation_id(),
                        &key,
                        |_| async { Ok(None) },
                        |k| async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            Ok(format!("done:{k}"))
                        },
                    )
                    .await
                    .map_err(|e| NodeError::failed(e.to_string()))?;
                Ok(Update::new()
                    .set("log", json!({"role": "assistant", "text": format!("re {text} ({res})"), "msg": last["msg"]}))
                    .into())
            }
        })
        .edge(START, "agent")
        .edge("agent", END)
        .build()
        .unwrap()
}

fn worker(s: &Arc<PgStore>, owner: &str, ttl: Duration, calls: Arc<AtomicU32>) -> (Arc<Worker>, EffectJournal) {
    let fenced = Arc::new(FencedStore::new(s.clone()));
    let journal = EffectJournal::new(fenced.clone());
    let engine = Engine::new(graph(journal.clone(), calls), fenced.clone(), EngineConfig::default());
    let cfg = WorkerConfig { owner: owner.into(), concurrency: 4, ..WorkerConfig::default() };
    (Arc::new(Worker::new(queue(s, ttl), fenced, engine, Arc::new(Echo), cfg)), journal)
}

async fn count(s: &PgStore, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(s.pool()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_is_atomic_and_idempotent() {
    let (s, schema) = fresh("accept").await;
    let q = queue(&s, Duration::from_secs(5));
    let a = q.accept("c", "k1", "hello").await.unwrap();
    assert!(!a.duplicate);
    let again = q.accept("c", "k1", "hello").await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.message_id, again.run_id), (a.message_id, a.run_id));
    q.accept("d", "k1", "same key, other conversation").await.unwrap();
    assert_eq!(count(&s, "SELECT count(*) FROM rt_messages").await, 2);
    assert_eq!(count(&s, "SELECT count(*) FROM rt_runs").await, 2, "every accepted message has exactly one run");
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_conversation_at_a_time_in_order() {
    let (s, schema) = fresh("order").await;
    let q = queue(&s, Duration::from_secs(5));
    let a1 = q.accept("a", "1", "a1").await.unwrap();
    let a2 = q.accept("a", "2", "a2").await.unwrap();
    let b1 = q.accept("b", "1", "b1").await.unwrap();
    let first = q.claim("w1").await.unwrap().unwrap();
    assert_eq!(first.id, a1.run_id);
    let second = q.claim("w2").await.unwrap().unwrap();
    assert_eq!(second.id, b1.run_id, "a2 waits for a1");
    assert!(q.claim("w3").await.unwrap().is_none());
    q.complete(&first, Some("r1")).await.unwrap();
    let third = q.claim("w3").await.unwrap().unwrap();
    assert_eq!(third.id, a2.run_id);
    assert!(third.lease.token > first.lease.token, "each run takes a newer token");
    assert!(matches!(q.complete(&first, Some("again")).await, Err(RuntimeError::Fenced(_))));
    assert_eq!(count(&s, "SELECT count(*) FROM rt_outbox").await, 1);
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_requeues_expired_runs_and_the_stale_worker_is_fenced() {
    let (s, schema) = fresh("sweep").await;
    let ttl = Duration::from_millis(200);
    let q = queue(&s, ttl);
    q.accept("c", "1", "m").await.unwrap();
    let stale = q.claim("dead-worker").await.unwrap().unwrap();
    assert!(q.sweep().await.unwrap().is_empty(), "a live lease is left alone");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(q.sweep().await.unwrap(), vec![stale.id]);
    let fresh_claim = q.claim("w2").await.unwrap().unwrap();
    assert_eq!((fresh_claim.id, fresh_claim.attempts), (stale.id, 2));
    assert!(matches!(q.complete(&stale, Some("late")).await, Err(RuntimeError::Fenced(_))));
    assert!(matches!(q.fail(&stale, "late").await, Err(RuntimeError::Fenced(_))));
    q.complete(&fresh_claim, Some("ok")).await.unwrap();
    let body: String = sqlx::query_scalar("SELECT body FROM rt_outbox").fetch_one(s.pool()).await.unwrap();
    assert_eq!(body, "ok");
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_answer_every_message_once_in_order_and_poison_is_dead_lettered() {
    let (s, schema) = fresh("workers").await;
    let ttl = Duration::from_secs(5);
    let calls = Arc::new(AtomicU32::new(0));
    let q = queue(&s, ttl);
    for c in 0..10 {
        for m in 0..4 {
            q.accept(&format!("c{c}"), &m.to_string(), &format!("c{c} m{m}")).await.unwrap();
        }
    }
    q.accept("p", "0", "poison").await.unwrap();
    let stop = CancellationToken::new();
    let (w1, _) = worker(&s, "w1", ttl, calls.clone());
    let (w2, _) = worker(&s, "w2", ttl, calls.clone());
    let t1 = tokio::spawn(w1.clone().run(stop.clone()));
    let t2 = tokio::spawn(w2.clone().run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(&s, "SELECT count(*) FROM rt_runs WHERE status IN ('queued', 'running')").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "runs did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    t1.await.unwrap();
    t2.await.unwrap();
    assert_eq!(count(&s, "SELECT count(*) FROM rt_runs WHERE status = 'done'").await, 40);
    let (status, failures): (String, i32) =
        sqlx::query_as("SELECT status, failures FROM rt_runs WHERE conversation = 'p'")
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert_eq!((status.as_str(), failures), ("dead", 3), "a poison run is dead-lettered after 3 attempts");
    assert_eq!(calls.load(Ordering::SeqCst), 40, "one effect per message");
    assert_eq!(count(&s, "SELECT count(*) FROM rt_outbox").await, 40);
    let bad_order = count(
        &s,
        "SELECT count(*) FROM (SELECT message_id < lag(message_id) OVER (PARTITION BY conversation ORDER BY id) AS bad \
         FROM rt_outbox) x WHERE bad",
    )
    .await;
    assert_eq!(bad_order, 0, "replies of a conversation are in message order");
    let replies: Vec<String> = sqlx::query_scalar("SELECT body FROM rt_outbox WHERE conversation = 'c3' ORDER BY id")
        .fetch_all(s.pool())
        .await
        .unwrap();
    assert_eq!(replies.len(), 4);
    assert!(replies[2].starts_with("re c3 m2 (done:c3:"), "{}", replies[2]);
    drop(s);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_effect_journal_calls_once_recovers_by_lookup_and_is_fenced() {
    let (s, schema) = fresh("journal").await;
    let fenced = Arc::new(FencedStore::new(s.clone()));
    let journal = EffectJournal::new(fenced.clone());
    let calls = Arc::new(AtomicU32::new(0));
    let call = |calls: Arc<AtomicU32>| {
        move |k: String| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(format!("r:{k}"))
        }
    };
    let no_lookup = |_k: String| async { Ok::<Option<String>, String>(None) };

    let unfenced = journal.run("c", "k0", no_lookup, call(calls.clone())).await;
    assert!(matches!(unfenced, Err(RuntimeError::Fenced(_))), "no lease, no effect");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let l1 = s.acquire_lease("c", "w1", Duration::from_secs(30)).await.unwrap().unwrap();
    fenced.fence("c", Fence { token: l1.token, input_of_run: None });
    assert_eq!(journal.run("c", "k1", no_lookup, call(calls.clone())).await.unwrap(), "r:k1");
    assert_eq!(journal.run("c", "k1", no_lookup, call(calls.clone())).await.unwrap(), "r:k1");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the second run read the journal");
    assert_eq!(journal.stats().hits.load(Ordering::Relaxed), 1);

    // A worker died between starting an effect and journaling its result: the next one asks
    // downstream by key before calling.
    sqlx::query("INSERT INTO rt_effects (key, conversation, token) VALUES ('k2', 'c', $1)")
        .bind(l1.token)
        .execute(s.pool())
        .await
        .unwrap();
    let r = journal.run("c", "k2", |k| async move { Ok(Some(format!("found:{k}"))) }, call(calls.clone())).await;
    assert_eq!(r.unwrap(), "found:k2");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "found downstream, not called again");

    // The lease moves on: the old token can neither start nor record an effect.
    l1.release(&s).await.unwrap();
    let l2 = s.acquire_lease("c", "w2", Duration::from_secs(30)).await.unwrap().unwrap();
    assert!(l2.token > l1.token);
    let stale = journal.run("c", "k3", no_lookup, call(calls.clone())).await;
    assert!(matches!(stale, Err(RuntimeError::Fenced(_))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop((journal, fenced, s));
    schema.drop_now().await.unwrap();
}
