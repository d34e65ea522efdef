//! Behaviour of the engine: graphs, runs, interrupts, double-texting, crash resume, time travel,
//! schema migration, limits and failures.
#![allow(clippy::unwrap_used, missing_docs)]

use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use switchboard_engine::*;

fn user(text: &str) -> Update {
    Update::new().set("messages", json!({"role": "user", "text": text}))
}

fn schema() -> Arc<Schema> {
    Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("intent"))
            .field(Field::new("log").reducer(Reducer::Append))
            .field(Field::new("turns").reducer(Reducer::Counter))
            .build()
            .unwrap(),
    )
}

fn reply(text: impl Into<String>) -> Update {
    Update::new().set("messages", json!({"role": "assistant", "text": text.into()})).set("turns", 1)
}

fn last_text(s: &State) -> String {
    s.get_array("messages").last().and_then(|m| m["text"].as_str()).unwrap_or_default().to_string()
}

/// classify -> (cards | faq) -> END
fn support_graph() -> Graph {
    GraphBuilder::new(schema())
        .node("classify", |i: NodeInput| async move {
            let t = last_text(&i.state);
            let intent = if t.contains("card") { "cards" } else { "faq" };
            Ok(Update::new().set("intent", intent).set("log", "classify").into())
        })
        .node("cards", |_i: NodeInput| async move { Ok(reply("card frozen").into()) })
        .node("faq", |_i: NodeInput| async move { Ok(reply("see the help centre").into()) })
        .edge(START, "classify")
        .conditional("classify", |s: &State| s.get_str("intent").unwrap_or("faq").to_string(), &["cards", "faq"])
        .edge("cards", END)
        .edge("faq", END)
        .build()
        .unwrap()
}

fn engine(graph: Graph, store: Arc<dyn CheckpointStore>) -> Engine {
    Engine::new(graph, store, EngineConfig::default())
}

#[tokio::test]
async fn routes_and_keeps_history_across_turns() {
    let e = engine(support_graph(), Arc::new(MemoryStore::new()));
    let out = e.invoke("c1", user("my card is lost")).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    assert_eq!(last_text(&out.state), "card frozen");
    let out = e.invoke("c1", user("what are the fees")).await.unwrap();
    assert_eq!(last_text(&out.state), "see the help centre");
    assert_eq!(out.state.get_array("messages").len(), 4);
    assert_eq!(out.state.get("turns"), Some(&json!(2)));
    // input + classify + agent per turn
    let h = e.history("c1", None, 100).await.unwrap();
    assert_eq!(h.len(), 6);
    assert!(h.windows(2).all(|w| w[0].id > w[1].id));
    assert!(h.last().unwrap().snapshot);
    assert!(!h[0].snapshot, "later checkpoints are deltas");
}

#[tokio::test]
async fn graph_validation_errors_are_typed() {
    let noop = |_i: NodeInput| async move { Ok(Update::new().into()) };
    let e = GraphBuilder::new(schema()).node("a", noop).edge(START, "a").edge("a", "b").build().err().unwrap();
    assert!(matches!(e, GraphError::UnknownNode { ref unknown, .. } if unknown == "b"), "{e}");
    let e = GraphBuilder::new(schema()).node("a", noop).edge("a", END).build().err().unwrap();
    assert_eq!(e, GraphError::NoEntry);
    let e = GraphBuilder::new(schema())
        .node("a", noop)
        .node("b", noop)
        .edge(START, "a")
        .edge("a", END)
        .edge("b", END)
        .build()
        .err()
        .unwrap();
    assert_eq!(e, GraphError::Unreachable("b".into()));
    let e = GraphBuilder::new(schema()).node("a", noop).edge(START, "a").build().err().unwrap();
    assert_eq!(e, GraphError::MissingEdge("a".into()));
    let e = GraphBuilder::new(schema()).node("a", noop).node("a", noop).build().err().unwrap();
    assert_eq!(e, GraphError::DuplicateNode("a".into()));
    let e = GraphBuilder::new(schema()).node(END, noop).build().err().unwrap();
    assert!(matches!(e, GraphError::InvalidNodeName(_)));
    assert!(e.to_string().contains("not a valid node name"));
}

#[tokio::test]
async fn parallel_fan_out_merges_in_declaration_order() {
    let g = GraphBuilder::new(schema())
        .node("split", |_i: NodeInput| async move { Ok(Update::new().into()) })
        .node("slow", |_i: NodeInput| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Update::new().set("log", "slow").into())
        })
        .node("fast", |_i: NodeInput| async move { Ok(Update::new().set("log", "fast").into()) })
        .node("join", |i: NodeInput| async move {
            let n = i.state.get_array("log").len();
            Ok(Update::new().set("intent", format!("joined {n}")).into())
        })
        .edge(START, "split")
        .edge("split", "slow")
        .edge("split", "fast")
        .edge("slow", "join")
        .edge("fast", "join")
        .edge("join", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let out = e.invoke("c", user("x")).await.unwrap();
    // slow finished last but was declared first: merge order is deterministic.
    assert_eq!(out.state.get("log"), Some(&json!(["slow", "fast"])));
    // join ran once, after both.
    assert_eq!(out.state.get_str("intent"), Some("joined 2"));
}

#[tokio::test]
async fn map_fan_out_gives_each_task_its_item() {
    let g = GraphBuilder::new(schema())
        .node("plan", |_i: NodeInput| async move { Ok(Update::new().into()) })
        .node("work", |i: NodeInput| async move {
            let n = i.ctx.item().and_then(Value::as_i64).unwrap();
            Ok(Update::new().set("log", n * n).into())
        })
        .edge(START, "plan")
        .conditional("plan", |_s: &State| (1..=4).map(|n| Goto::send("work", json!(n))).collect::<Vec<_>>(), &["work"])
        .edge("work", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let out = e.invoke("c", user("x")).await.unwrap();
    assert_eq!(out.state.get("log"), Some(&json!([1, 4, 9, 16])));
}

#[tokio::test]
async fn parallel_writes_to_a_replace_field_conflict() {
    let g = GraphBuilder::new(schema())
        .node("a", |_i: NodeInput| async move { Ok(Update::new().set("intent", "a").into()) })
        .node("b", |_i: NodeInput| async move { Ok(Update::new().set("intent", "b").into()) })
        .edge(START, "a")
        .edge(START, "b")
        .edge("a", END)
        .edge("b", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let err = e.invoke("c", user("x")).await.unwrap_err();
    assert!(matches!(err, EngineError::ConflictingUpdate { ref field, .. } if field == "intent"), "{err}");
}

#[tokio::test]
async fn command_goto_overrides_edges_and_step_limit_fails_cleanly() {
    let g = GraphBuilder::new(schema())
        .node("loop", |_i: NodeInput| async move {
            Ok(Command { update: Update::new().set("turns", 1), goto: vec![Goto::node("loop")] }.into())
        })
        .may_goto("loop", &["loop"])
        .edge(START, "loop")
        .step_limit(5)
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let e = engine(g, store.clone());
    let err = e.invoke("c", user("x")).await.unwrap_err();
    assert!(matches!(err, EngineError::StepLimit { limit: 5, .. }), "{err}");
    // progress up to the limit is checkpointed
    let s = e.state("c").await.unwrap();
    assert_eq!(s.get("turns"), Some(&json!(5)));
}

#[tokio::test]
async fn node_timeout_and_retry_policy() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let g = GraphBuilder::new(schema())
        .node_with(
            "flaky",
            move |_i: NodeInput| {
                let c = c.clone();
                async move {
                    match c.fetch_add(1, Ordering::SeqCst) {
                        0 => Err(NodeError::retryable("vendor 503")),
                        1 => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            Ok(Update::new().into())
                        }
                        _ => Ok(reply("ok").into()),
                    }
                }
            },
            NodeOptions {
                timeout: Some(Duration::from_millis(50)),
                retry: RetryPolicy { initial_backoff: Duration::from_millis(1), ..RetryPolicy::attempts(3) },
            },
        )
        .node_with(
            "never",
            |_i: NodeInput| async move { Err(NodeError::failed("bad request")) },
            NodeOptions { timeout: None, retry: RetryPolicy::attempts(5) },
        )
        .edge(START, "flaky")
        .conditional("flaky", |s: &State| if last_text(s) == "ok" { END } else { "never" }, &["never", END])
        .edge("never", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let out = e.invoke("c", user("x")).await.unwrap();
    assert_eq!(last_text(&out.state), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "failure, timeout, success");
}

#[tokio::test]
async fn permanent_failure_is_not_retried_and_leaves_state_unchanged() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let g = GraphBuilder::new(schema())
        .node_with(
            "broken",
            move |_i: NodeInput| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Err(NodeError::failed("bad request"))
                }
            },
            NodeOptions { timeout: None, retry: RetryPolicy::attempts(5) },
        )
        .edge(START, "broken")
        .edge("broken", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let err = e.invoke("c", user("x")).await.unwrap_err();
    assert!(matches!(err, EngineError::Node { ref node, .. } if node == "broken"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_node_is_a_typed_failure() {
    let g = GraphBuilder::new(schema())
        .node("boom", |_i: NodeInput| async move {
            let v: Vec<u8> = Vec::new();
            let _ = v[3];
            Ok(Update::new().into())
        })
        .edge(START, "boom")
        .edge("boom", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let err = e.invoke("c", user("x")).await.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
}

fn approval_graph(effects: Arc<AtomicUsize>) -> Graph {
    GraphBuilder::new(schema())
        .node("freeze", move |i: NodeInput| {
            let effects = effects.clone();
            async move {
                let answer = i.ctx.interrupt(json!({"question": "approve freezing card 4242?"}))?;
                if answer == json!(true) {
                    effects.fetch_add(1, Ordering::SeqCst);
                    Ok(reply("card 4242 is frozen").into())
                } else {
                    Ok(reply("ok, I did not freeze it").into())
                }
            }
        })
        .edge(START, "freeze")
        .edge("freeze", END)
        .build()
        .unwrap()
}

#[tokio::test]
async fn interrupt_pauses_durably_and_resumes_in_another_engine() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let effects = Arc::new(AtomicUsize::new(0));
    let e = engine(approval_graph(effects.clone()), store.clone());
    let out = e.invoke("c", user("freeze my card")).await.unwrap();
    assert_eq!(out.status, RunStatus::Interrupted);
    assert_eq!(out.interrupts[0].payload["question"], "approve freezing card 4242?");
    assert_eq!(effects.load(Ordering::SeqCst), 0);
    // a new message while waiting is refused unless it supersedes the interrupt
    assert!(matches!(e.invoke("c", user("hello?")).await, Err(EngineError::InterruptPending(_))));
    // a fresh engine (another process) sees the pending interrupt and resumes it
    let e2 = engine(approval_graph(effects.clone()), store);
    assert_eq!(e2.pending_interrupts("c").await.unwrap().len(), 1);
    let out = e2.resume("c", json!(true)).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    assert_eq!(last_text(&out.state), "card 4242 is frozen");
    assert_eq!(effects.load(Ordering::SeqCst), 1);
    assert!(matches!(e2.resume("c", json!(true)).await, Err(EngineError::NothingToResume(_))));
}

#[tokio::test]
async fn a_new_message_can_supersede_a_pending_interrupt() {
    let e = engine(approval_graph(Arc::new(AtomicUsize::new(0))), Arc::new(MemoryStore::new()));
    e.invoke("c", user("freeze")).await.unwrap();
    let opts = RunOptions { supersede_interrupt: true, ..Default::default() };
    let out = e.start("c", Input::Message(user("again")), opts).await.unwrap().wait().await.unwrap();
    assert_eq!(out.status, RunStatus::Interrupted, "the new message reaches the approval node again");
    assert_eq!(out.state.get_array("messages").len(), 2);
}

/// A node that waits until released, so tests can send a second message mid-run.
fn slow_graph(gate: Arc<tokio::sync::Notify>, started: Arc<tokio::sync::Notify>) -> Graph {
    GraphBuilder::new(schema())
        .node("first", |i: NodeInput| async move {
            Ok(Update::new().set("log", format!("first:{}", last_text(&i.state))).into())
        })
        .node("wait", move |i: NodeInput| {
            let gate = gate.clone();
            let started = started.clone();
            async move {
                let t = last_text(&i.state);
                if t.starts_with("slow") {
                    started.notify_one();
                    gate.notified().await;
                }
                Ok(Update::new().set("log", format!("wait:{t}")).into())
            }
        })
        .node("answer", |i: NodeInput| async move { Ok(reply(format!("re:{}", last_text(&i.state))).into()) })
        .edge(START, "first")
        .edge("first", "wait")
        .edge("wait", "answer")
        .edge("answer", END)
        .build()
        .unwrap()
}

async fn double_text(
    strategy: DoubleText,
) -> (Result<RunOutcome, EngineError>, Result<RunOutcome, EngineError>, Engine) {
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let cfg = EngineConfig { double_text: strategy, ..Default::default() };
    let e = Engine::new(slow_graph(gate.clone(), started.clone()), Arc::new(MemoryStore::new()), cfg);
    let h1 = e.start("c", Input::Message(user("slow one")), RunOptions::default()).await.unwrap();
    started.notified().await;
    let second = e.start("c", Input::Message(user("fast two")), RunOptions::default()).await;
    // let the first run's node finish
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.notify_one();
    let r1 = h1.wait().await;
    let r2 = match second {
        Ok(h) => h.wait().await,
        Err(err) => Err(err),
    };
    (r1, r2, e)
}

#[tokio::test]
async fn double_text_reject() {
    let (r1, r2, _) = double_text(DoubleText::Reject).await;
    assert!(matches!(r2, Err(EngineError::Busy { .. })));
    let o = r1.unwrap();
    assert_eq!(o.status, RunStatus::Completed);
    assert_eq!(last_text(&o.state), "re:slow one");
}

#[tokio::test]
async fn double_text_enqueue() {
    let (r1, r2, e) = double_text(DoubleText::Enqueue).await;
    assert_eq!(r1.unwrap().status, RunStatus::Completed);
    let o = r2.unwrap();
    assert_eq!(o.status, RunStatus::Completed);
    let texts: Vec<_> = o.state.get_array("messages").iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["slow one", "re:slow one", "fast two", "re:fast two"]);
    assert_eq!(e.state("c").await.unwrap().get("turns"), Some(&json!(2)));
}

#[tokio::test]
async fn double_text_interrupt_keeps_progress_of_the_first_run() {
    let (r1, r2, _) = double_text(DoubleText::Interrupt).await;
    assert_eq!(r1.unwrap().status, RunStatus::Superseded);
    let o = r2.unwrap();
    let texts: Vec<_> = o.state.get_array("messages").iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    // the first run stopped after its `wait` step: its progress stays, it never answered
    assert_eq!(texts, ["slow one", "fast two", "re:fast two"]);
    assert_eq!(
        o.state.get("log"),
        Some(&json!(["first:slow one", "wait:slow one", "first:fast two", "wait:fast two"]))
    );
}

#[tokio::test]
async fn double_text_rollback_discards_the_first_run() {
    let (r1, r2, e) = double_text(DoubleText::Rollback).await;
    assert_eq!(r1.unwrap().status, RunStatus::RolledBack);
    let o = r2.unwrap();
    let texts: Vec<_> = o.state.get_array("messages").iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["fast two", "re:fast two"]);
    assert_eq!(o.state.get("log"), Some(&json!(["first:fast two", "wait:fast two"])));
    // the discarded run's checkpoints stay in history as an abandoned branch
    let h = e.history("c", None, 100).await.unwrap();
    assert!(h.iter().any(|c| c.parent.is_none() && c.step == -1 && c.id > 1), "new branch has its own root");
}

#[tokio::test]
async fn cancel_stops_a_run_and_keeps_its_checkpoints() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let e = engine(slow_graph(gate, started.clone()), Arc::new(MemoryStore::new()));
    let h = e.start("c", Input::Message(user("slow")), RunOptions::default()).await.unwrap();
    started.notified().await;
    e.cancel(h.run_id()).unwrap();
    let o = h.wait().await.unwrap();
    assert_eq!(o.status, RunStatus::Cancelled);
    assert_eq!(o.state.get("log"), Some(&json!(["first:slow"])));
    assert!(matches!(e.cancel("run_nope"), Err(EngineError::UnknownRun(_))));
}

#[tokio::test]
async fn events_stream_updates_tokens_and_custom() {
    let g = GraphBuilder::new(schema())
        .node("agent", |i: NodeInput| async move {
            for t in ["Hel", "lo"] {
                i.ctx.emit_token(t);
            }
            i.ctx.emit_custom(json!({"tool": "lookup"}));
            Ok(reply("Hello").into())
        })
        .edge(START, "agent")
        .edge("agent", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let h = e
        .start("c", Input::Message(user("hi")), RunOptions { stream_values: true, ..Default::default() })
        .await
        .unwrap();
    let mut a = h.subscribe().unwrap();
    let mut b = h.subscribe().unwrap();
    let out = h.wait().await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    let mut kinds = Vec::new();
    while let Ok(ev) = a.try_recv() {
        kinds.push(serde_json::to_value(&ev).unwrap()["event"].as_str().unwrap().to_string());
    }
    let mut n_b = 0;
    while b.try_recv().is_ok() {
        n_b += 1;
    }
    assert_eq!(n_b, kinds.len(), "every subscriber sees every event");
    for k in ["token", "custom", "update", "values", "run_finished"] {
        assert!(kinds.iter().any(|x| x == k), "missing {k} in {kinds:?}");
    }
}

#[tokio::test]
async fn subgraph_runs_in_its_namespace() {
    let inner = GraphBuilder::new(schema())
        .node("think", |_i: NodeInput| async move { Ok(Update::new().set("log", "think").into()) })
        .node("say", |i: NodeInput| async move {
            assert_eq!(i.ctx.node(), "cards_agent/say");
            let n = i.state.get_array("log").len();
            Ok(reply(format!("after {n} thoughts")).into())
        })
        .edge(START, "think")
        .edge("think", "say")
        .edge("say", END)
        .build()
        .unwrap();
    let g = GraphBuilder::new(schema())
        .subgraph("cards_agent", inner)
        .edge(START, "cards_agent")
        .edge("cards_agent", END)
        .build()
        .unwrap();
    let e = engine(g, Arc::new(MemoryStore::new()));
    let out = e.invoke("c", user("hi")).await.unwrap();
    assert_eq!(last_text(&out.state), "after 1 thoughts");
    assert_eq!(out.steps, 1, "the subgraph is one step of its parent");
}

/// A store whose writes can be made to fail.
struct FlakyStore {
    inner: MemoryStore,
    fail: AtomicBool,
}

#[async_trait]
impl CheckpointStore for FlakyStore {
    fn put(&self, r: CheckpointRecord) -> WriteAck {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Unavailable("disk full".into())) });
        }
        self.inner.put(r)
    }
    async fn latest(&self, c: &str) -> Result<Option<CheckpointRecord>, StoreError> {
        self.inner.latest(c).await
    }
    async fn get(&self, c: &str, id: u64) -> Result<Option<CheckpointRecord>, StoreError> {
        self.inner.get(c, id).await
    }
    async fn history(&self, c: &str, b: Option<u64>, l: usize) -> Result<Vec<CheckpointRecord>, StoreError> {
        self.inner.history(c, b, l).await
    }
    fn put_writes(&self, c: &str, cp: u64, w: Vec<PendingWrite>) -> WriteAck {
        self.inner.put_writes(c, cp, w)
    }
    async fn pending_writes(&self, c: &str, cp: u64) -> Result<Vec<PendingWrite>, StoreError> {
        self.inner.pending_writes(c, cp).await
    }
    async fn delete_conversation(&self, c: &str) -> Result<u64, StoreError> {
        self.inner.delete_conversation(c).await
    }
}

#[tokio::test]
async fn a_failed_checkpoint_write_leaves_the_previous_state_intact() {
    let store = Arc::new(FlakyStore { inner: MemoryStore::new(), fail: AtomicBool::new(false) });
    let e = engine(support_graph(), store.clone());
    e.invoke("c", user("card lost")).await.unwrap();
    let before = e.history("c", None, 10).await.unwrap()[0].id;
    store.fail.store(true, Ordering::SeqCst);
    let err = e.invoke("c", user("fees?")).await.unwrap_err();
    assert!(matches!(err, EngineError::Store(StoreError::Unavailable(_))), "{err}");
    store.fail.store(false, Ordering::SeqCst);
    assert_eq!(e.history("c", None, 10).await.unwrap()[0].id, before);
    let s = e.state("c").await.unwrap();
    assert_eq!(s.get_array("messages").len(), 2, "the failed turn left nothing behind");
    let out = e.invoke("c", user("fees?")).await.unwrap();
    assert_eq!(out.state.get_array("messages").len(), 4);
}

#[tokio::test]
async fn oversized_state_is_refused_without_a_partial_write() {
    let cfg = EngineConfig { max_state_bytes: 400, ..Default::default() };
    let e = Engine::new(support_graph(), Arc::new(MemoryStore::new()), cfg);
    e.invoke("c", user("card")).await.unwrap();
    let n = e.history("c", None, 100).await.unwrap().len();
    let err = e.invoke("c", user(&"x".repeat(1000))).await.unwrap_err();
    assert!(matches!(err, EngineError::StateTooLarge { limit: 400, .. }), "{err}");
    assert_eq!(e.history("c", None, 100).await.unwrap().len(), n);
    assert_eq!(e.state("c").await.unwrap().get_array("messages").len(), 2);
}

#[tokio::test]
async fn crash_mid_step_resumes_without_redoing_finished_nodes() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    let hang = Arc::new(AtomicBool::new(true));
    let build = |counts: Arc<[AtomicUsize; 3]>, hang: Arc<AtomicBool>| {
        let (c0, c1, c2) = (counts.clone(), counts.clone(), counts);
        GraphBuilder::new(schema())
            .node("prepare", move |_i: NodeInput| {
                let c = c0.clone();
                async move {
                    c[0].fetch_add(1, Ordering::SeqCst);
                    Ok(Update::new().set("log", "prepare").into())
                }
            })
            .node("lookup", move |_i: NodeInput| {
                let c = c1.clone();
                async move {
                    c[1].fetch_add(1, Ordering::SeqCst);
                    Ok(Update::new().set("log", "lookup").into())
                }
            })
            .node("llm", move |_i: NodeInput| {
                let c = c2.clone();
                let hang = hang.clone();
                async move {
                    c[2].fetch_add(1, Ordering::SeqCst);
                    if hang.load(Ordering::SeqCst) {
                        futures::future::pending::<()>().await;
                    }
                    Ok(reply("done").into())
                }
            })
            .edge(START, "prepare")
            .edge("prepare", "lookup")
            .edge("prepare", "llm")
            .edge("lookup", END)
            .edge("llm", END)
            .build()
            .unwrap()
    };
    let e1 = engine(build(counts.clone(), hang.clone()), store.clone());
    let h = e1.start("c", Input::Message(user("hi")), RunOptions::default()).await.unwrap();
    while counts[1].load(Ordering::SeqCst) == 0 || counts[2].load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.abort(); // the process dies mid-step
    drop(e1);
    hang.store(false, Ordering::SeqCst);
    let e2 = engine(build(counts.clone(), hang), store);
    let out = e2.start("c", Input::Continue, RunOptions::default()).await.unwrap().wait().await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    assert_eq!(counts[0].load(Ordering::SeqCst), 1, "prepare is not redone");
    assert_eq!(counts[1].load(Ordering::SeqCst), 1, "lookup finished before the crash and is not redone");
    assert_eq!(counts[2].load(Ordering::SeqCst), 2, "llm was in flight and runs again");
    assert_eq!(out.state.get("log"), Some(&json!(["prepare", "lookup"])));
    assert_eq!(last_text(&out.state), "done");
    // a message arriving on a conversation with an unfinished run finishes that run first
}

#[tokio::test]
async fn time_travel_forks_a_branch_and_keeps_the_old_one() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let e = engine(support_graph(), store);
    e.invoke("c", user("card lost")).await.unwrap();
    e.invoke("c", user("fees")).await.unwrap();
    let h = e.history("c", None, 100).await.unwrap();
    let end_of_turn1 = h.iter().filter(|c| c.next.is_empty()).map(|c| c.id).min().unwrap();
    let old_head = h[0].id;
    let fork = e.fork("c", end_of_turn1, None).await.unwrap();
    assert!(fork > old_head);
    let out = e.invoke("c", user("my card again")).await.unwrap();
    let texts: Vec<_> =
        out.state.get_array("messages").iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["card lost", "card frozen", "my card again", "card frozen"]);
    // the old branch is intact
    let old = e.state_at("c", old_head).await.unwrap();
    assert_eq!(last_text(&old), "see the help centre");
    // replaying from the input checkpoint of turn 2 re-runs its pending tasks
    let input2 = h.iter().filter(|c| c.step == -1).map(|c| c.id).max().unwrap();
    e.fork("c", input2, Some(Update::new().set("log", "edited"))).await.unwrap();
    let out = e.start("c", Input::Continue, RunOptions::default()).await.unwrap().wait().await.unwrap();
    assert_eq!(last_text(&out.state), "see the help centre");
    assert!(matches!(e.fork("c", 9999, None).await, Err(EngineError::UnknownCheckpoint { id: 9999, .. })));
}

fn v2_schema() -> Arc<Schema> {
    Arc::new(
        Schema::builder()
            .version(2)
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("intent_name"))
            .field(Field::new("log").reducer(Reducer::Append))
            .field(Field::new("turns").reducer(Reducer::Counter))
            .migration(1, |m| {
                let v = m.remove("intent").unwrap_or(Value::Null);
                m.insert("intent_name".into(), v);
                Ok(())
            })
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn a_conversation_saved_under_v1_resumes_under_v2() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    let e1 = engine(support_graph(), store.clone());
    e1.invoke("c", user("card lost")).await.unwrap();
    let g2 = GraphBuilder::new(v2_schema())
        .node("agent", |i: NodeInput| async move {
            let prev = i.state.get_str("intent_name").unwrap_or("none").to_string();
            Ok(reply(format!("previous intent {prev}")).into())
        })
        .edge(START, "agent")
        .edge("agent", END)
        .build()
        .unwrap();
    let e2 = engine(g2, store.clone());
    let out = e2.invoke("c", user("and now?")).await.unwrap();
    assert_eq!(last_text(&out.state), "previous intent cards");
    assert_eq!(out.state.get_array("messages").len(), 4);
    // the first checkpoint written under v2 is a full snapshot
    let latest = store.latest("c").await.unwrap().unwrap();
    assert_eq!(latest.schema_version, 2);
    let chain = store.chain("c", latest.id).await.unwrap();
    assert!(chain.iter().all(|r| r.schema_version == 2));
    // and the old engine refuses the future schema with a clear error
    let e1b = engine(support_graph(), store);
    let err = e1b.invoke("c", user("x")).await.unwrap_err();
    assert!(matches!(err, EngineError::FutureSchema { found: 2, supported: 1, .. }), "{err}");
}

#[tokio::test]
async fn missing_migration_and_corrupt_checkpoints_are_typed_errors() {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::new());
    engine(support_graph(), store.clone()).invoke("c", user("hi")).await.unwrap();
    let s3 = Arc::new(
        Schema::builder().version(3).field(Field::new("messages").reducer(Reducer::Messages)).build().unwrap(),
    );
    let g3 = GraphBuilder::new(s3)
        .node("a", |_i: NodeInput| async move { Ok(Update::new().into()) })
        .edge(START, "a")
        .edge("a", END)
        .build()
        .unwrap();
    let err = engine(g3, store.clone()).invoke("c", user("x")).await.unwrap_err();
    assert!(matches!(err, EngineError::Migration { from: 1, .. }), "{err}");

    let latest = store.latest("c").await.unwrap().unwrap();
    store
        .put(CheckpointRecord {
            id: latest.id + 1,
            parent: Some(latest.id),
            payload: b"{not json".to_vec(),
            snapshot: false,
            ..latest
        })
        .await
        .unwrap();
    let err = engine(support_graph(), store).invoke("c", user("x")).await.unwrap_err();
    assert!(matches!(err, EngineError::CorruptCheckpoint { .. }), "{err}");
}

#[tokio::test]
async fn scoped_context_is_shared_per_customer_and_temporary_is_not_kept() {
    let schema = Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("language").scope(Scope::Customer))
            .field(Field::new("seen").scope(Scope::Temporary).reducer(Reducer::Counter))
            .field(Field::new("turns").reducer(Reducer::Counter))
            .build()
            .unwrap(),
    );
    let g = GraphBuilder::new(schema)
        .node("a", |i: NodeInput| async move {
            let lang = i.state.get_str("language").unwrap_or("unknown").to_string();
            let seen = i.state.get("seen").cloned().unwrap_or_default();
            let mut u = reply(format!("lang={lang} seen={seen}"));
            if lang == "unknown" {
                u = u.set("language", "pt-BR");
            }
            Ok(u.set("seen", 1).into())
        })
        .edge(START, "a")
        .edge("a", END)
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let e = Engine::with_context(g, store.clone(), store.clone(), EngineConfig::default());
    let opts = || RunOptions { customer_id: Some("cust_001".into()), ..Default::default() };
    let o = e.start("c1", Input::Message(user("hi")), opts()).await.unwrap().wait().await.unwrap();
    assert_eq!(last_text(&o.state), "lang=unknown seen=0");
    // another conversation of the same customer sees the customer-scoped value; temporary starts fresh
    let o = e.start("c2", Input::Message(user("hi")), opts()).await.unwrap().wait().await.unwrap();
    assert_eq!(last_text(&o.state), "lang=pt-BR seen=0");
    let o = e.start("c2", Input::Message(user("again")), opts()).await.unwrap().wait().await.unwrap();
    assert_eq!(last_text(&o.state), "lang=pt-BR seen=0");
    // customer fields are not in checkpoints
    let latest = store.latest("c1").await.unwrap().unwrap();
    let chain = store.chain("c1", latest.id).await.unwrap();
    assert!(chain.iter().all(|r| !String::from_utf8_lossy(&r.payload).contains("pt-BR")));
}

#[tokio::test]
async fn delete_removes_everything_and_unknown_conversations_are_reported() {
    let e = engine(support_graph(), Arc::new(MemoryStore::new()));
    e.invoke("c", user("hi")).await.unwrap();
    assert!(e.delete("c").await.unwrap() >= 3);
    assert!(matches!(e.state("c").await, Err(EngineError::UnknownConversation(_))));
    assert!(e.history("c", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn shutdown_refuses_new_runs() {
    let e = engine(support_graph(), Arc::new(MemoryStore::new()));
    e.invoke("c", user("hi")).await.unwrap();
    assert_eq!(e.shutdown(Duration::from_millis(100)).await, 0);
    assert!(matches!(e.invoke("c", user("hi")).await, Err(EngineError::ShuttingDown)));
}

#[tokio::test]
async fn storage_grows_with_what_changed() {
    let store = Arc::new(MemoryStore::new());
    let e = engine(support_graph(), store.clone());
    let mut sizes = Vec::new();
    for i in 0..30 {
        e.invoke("c", user(&format!("question number {i} about my card"))).await.unwrap();
        sizes.push(store.payload_bytes("c"));
    }
    let early = sizes[5] - sizes[4];
    let late = sizes[28] - sizes[27];
    assert!(late <= early + 16, "per-turn storage must not grow with history: {early} vs {late}");
}
