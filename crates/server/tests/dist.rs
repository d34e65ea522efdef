//! Replicas on one PostgreSQL database (a scratch schema) and Redis: two in-process servers, each
//! with its own pool, store and workers, as two `serve` processes would have.
//!
//! Needs the local PostgreSQL (`DATABASE_URL`) and Redis (`REDIS_URL`).

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_engine::{
    CheckpointStore, ContextStore, END, Engine, EngineConfig, Field, GraphBuilder, NodeError, NodeInput, Reducer,
    START, Schema, Update,
};
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::{AppState, Assistant, Assistants, DistConfig, Distributed, Limits, RateLimit, app};
use switchboard_store::postgres::{ScratchSchema, database_url};
use switchboard_store::{FencedStore, PgConfig, PgStore, Records};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn last_text(i: &NodeInput) -> String {
    i.state
        .get_array("messages")
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["text"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Two nodes; "slow" makes each take 300 ms, "poison" makes the second fail every time.
fn engine<S: CheckpointStore + ContextStore + 'static>(store: Arc<S>) -> Engine {
    let schema = Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("seen"))
            .build()
            .unwrap(),
    );
    let graph = GraphBuilder::new(schema)
        .node("first", |i: NodeInput| async move {
            let text = last_text(&i);
            if text.contains("slow") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(Update::new().set("seen", text).into())
        })
        .node("second", |i: NodeInput| async move {
            let text = last_text(&i);
            if text.contains("slow") {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if text.contains("poison") {
                return Err(NodeError::Failed { message: "poisoned message".into(), retryable: false });
            }
            Ok(Update::new().set("messages", json!({"role": "assistant", "text": format!("echo: {text}")})).into())
        })
        .edge(START, "first")
        .edge("first", "second")
        .edge("second", END)
        .build()
        .unwrap();
    let config = EngineConfig { assistant_id: "echo".into(), shared_store: true, ..EngineConfig::default() };
    Engine::with_context(graph, store.clone(), store, config)
}

struct Replica {
    state: AppState,
    app: Router,
}

struct Options {
    redis: Option<String>,
    prefix: String,
    workers: bool,
    poll_with_redis: Duration,
    rate_limit: Option<RateLimit>,
}

impl Options {
    fn new(redis: Option<String>, prefix: &str, workers: bool) -> Self {
        Self { redis, prefix: prefix.into(), workers, poll_with_redis: Duration::from_secs(1), rate_limit: None }
    }
}

async fn replica(url: &str, schema: &ScratchSchema, o: Options) -> Replica {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
    let config = PgConfig { acquire_timeout: Duration::from_secs(1), ..schema.config() };
    let store = Arc::new(PgStore::open(url, config).await.unwrap());
    let fenced = Arc::new(FencedStore::new(store.clone()));
    let input: switchboard_server::InputFn =
        Arc::new(|text: &str, _meta: &Value| Update::new().set("messages", json!({"role": "user", "text": text})));
    let assistants = Assistants::new(
        "echo",
        Assistant { description: "echoes".into(), version: "1".into(), engine: engine(store.clone()), input },
    );
    let mut workers = HashMap::new();
    workers.insert("echo".to_string(), engine(fenced.clone()));
    let dist_config = DistConfig {
        redis_url: o.redis,
        redis_prefix: o.prefix,
        poll_with_redis: o.poll_with_redis,
        concurrency: 4,
        ..DistConfig::default()
    };
    let dist = Distributed::new(&store, fenced, workers, dist_config).unwrap();
    let limits = Limits { rate_limit: o.rate_limit, ..Limits::default() };
    let state = AppState::new(assistants, Records::on_postgres(store.pool().clone()), limits).with_distributed(dist);
    if o.workers {
        switchboard_server::dist::start(&state);
    } else {
        // Started and stopped: this replica's workers claim nothing (as if they had died).
        switchboard_server::dist::start(&state);
        state.distributed().unwrap().stop_workers(Duration::from_secs(1)).await;
    }
    Replica { app: app(state.clone()), state }
}

async fn call(app: &Router, method: &str, uri: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {key}"));
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn key(r: &Replica) -> String {
    create_key(r.state.records(), "acme", &[Scope::Admin]).await.unwrap().0
}

async fn conversation(r: &Replica, key: &str) -> String {
    let (s, v) = call(&r.app, "POST", "/v1/conversations", key, Some(json!({"assistant": "echo"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Posts a message with `Accept: text/event-stream` and returns the SSE events as they arrive:
/// `(event name, data, arrival time)`, until the terminal one.
async fn stream(app: &Router, key: &str, conv: &str, text: &str) -> Vec<(String, Value, Instant)> {
    let req = Request::builder()
        .method("POST")
        .uri(format!("/v1/conversations/{conv}/messages"))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(Body::from(json!({"text": text}).to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame()).await.expect("stream stalled");
        let Some(frame) = frame else { break };
        let Ok(data) = frame.unwrap().into_data() else { continue };
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if name.is_empty() {
                continue;
            }
            let terminal = name == "result" || name == "error";
            out.push((name, serde_json::from_str(&data).unwrap_or(Value::Null), Instant::now()));
            if terminal {
                return out;
            }
        }
    }
    out
}

async fn metric(app: &Router, key: &str, name: &str) -> u64 {
    let req = Request::builder().uri("/metrics").header("authorization", format!("Bearer {key}"));
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

const COMPLETED: &str = "switchboard_worker_runs_total{status=\"completed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_posted_to_one_replica_is_executed_by_another() {
    let url = database_url();
    let schema = ScratchSchema::new(&url, "dist_handoff");
    let a = replica(&url, &schema, Options::new(None, "unused", false)).await;
    let b = replica(&url, &schema, Options::new(None, "unused", true)).await;
    let k = key(&a).await;
    let conv = conversation(&a, &k).await;
    for i in 0..3 {
        let (s, v) = call(
            &a.app,
            "POST",
            &format!("/v1/conversations/{conv}/messages"),
            &k,
            Some(json!({"text": format!("hi {i}")})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["reply"]["text"], format!("echo: hi {i}"));
        // The run record and its events are in the shared database, readable from either replica.
        let run = v["run_id"].as_str().unwrap();
        let (s, r) = call(&b.app, "GET", &format!("/v1/runs/{run}"), &k, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(r["status"], "completed");
    }
    // A ran nothing: B's worker did every turn.
    assert_eq!(metric(&a.app, &k, COMPLETED).await, 0);
    assert_eq!(metric(&b.app, &k, COMPLETED).await, 3);
    // The state read through A is the one B's worker wrote (A's engine does not serve a stale cache).
    let (_, st) = call(&a.app, "GET", &format!("/v1/conversations/{conv}/state"), &k, None).await;
    assert_eq!(st["values"]["messages"].as_array().unwrap().len(), 6, "{st}");
    let (_, c) = call(&a.app, "GET", &format!("/v1/conversations/{conv}"), &k, None).await;
    assert_eq!(c["status"], "idle", "{c}");
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_on_one_replica_follows_a_run_on_another_through_redis() {
    let url = database_url();
    let schema = ScratchSchema::new(&url, "dist_redis");
    let prefix = format!("sbtest:{}", schema.name());
    // Streams read the database only every 30 s while Redis is up: events that arrive sooner came
    // with a Redis wake-up from the other replica.
    let slow_poll = |workers| Options {
        poll_with_redis: Duration::from_secs(30),
        ..Options::new(Some(redis_url()), &prefix, workers)
    };
    let a = replica(&url, &schema, slow_poll(false)).await;
    let b = replica(&url, &schema, slow_poll(true)).await;
    let k = key(&a).await;
    let conv = conversation(&a, &k).await;
    let t = Instant::now();
    while !a.state.distributed().unwrap().redis_up() {
        assert!(t.elapsed() < Duration::from_secs(5), "the Redis subscriber did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let events = stream(&a.app, &k, &conv, "slow hello").await;
    let (last, data, at) = events.last().unwrap();
    assert_eq!(last, "result", "{events:?}");
    assert_eq!(data["reply"]["text"], "echo: slow hello");
    assert!(events.iter().any(|(n, _, _)| n != "result"), "node events are streamed too: {events:?}");
    // The run takes 600 ms; the stream ends well before the database poll would have caught up.
    assert!(at.duration_since(t0) < Duration::from_secs(5), "took {:?}", at.duration_since(t0));
    // Seqs of the SSE ids are consecutive: nothing lost, nothing twice.
    assert_eq!(metric(&a.app, &k, COMPLETED).await, 0);
    assert_eq!(metric(&b.app, &k, COMPLETED).await, 1);

    // A cancel sent to A reaches the run executing on B.
    let (st, posted) = {
        let app = a.app.clone();
        let (k2, conv2) = (k.clone(), conv.clone());
        let h = tokio::spawn(async move {
            call(&app, "POST", &format!("/v1/conversations/{conv2}/messages"), &k2, Some(json!({"text": "slow again"})))
                .await
        });
        // Wait until B runs it, then cancel through A.
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let run = loop {
            let (_, list) = call(&a.app, "GET", &format!("/v1/conversations/{conv}"), &k, None).await;
            if list["status"] == "running" {
                let rows: Vec<(String,)> = sqlx::query_as(&format!(
                    "SELECT id FROM {}.srv_runs WHERE conversation_id = $1 AND status = 'running'",
                    schema.name()
                ))
                .bind(&conv)
                .fetch_all(&pool)
                .await
                .unwrap();
                if let Some((id,)) = rows.into_iter().next() {
                    break id;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (s, v) = call(&a.app, "POST", &format!("/v1/runs/{run}/cancel"), &k, None).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        h.await.unwrap()
    };
    assert_eq!(st, StatusCode::OK, "{posted}");
    assert_eq!(posted["status"], "cancelled", "{posted}");
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_streams_poll_the_database_and_lose_nothing() {
    let url = database_url();
    let schema = ScratchSchema::new(&url, "dist_noredis");
    // A port nothing listens on: Redis is down for both replicas.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("redis://127.0.0.1:{closed}");
    let limited = |workers| Options {
        rate_limit: Some(RateLimit { per_second: 1000.0, burst: 1000 }),
        ..Options::new(Some(dead.clone()), "x", workers)
    };
    let a = replica(&url, &schema, limited(false)).await;
    let b = replica(&url, &schema, limited(true)).await;
    let k = key(&a).await;
    let conv = conversation(&a, &k).await;
    for i in 0..3 {
        let events = stream(&a.app, &k, &conv, &format!("slow {i}")).await;
        let (last, data, _) = events.last().unwrap();
        assert_eq!(last, "result", "{events:?}");
        assert_eq!(data["reply"]["text"], format!("echo: slow {i}"));
    }
    assert!(!a.state.distributed().unwrap().redis_up());
    // Every acknowledged message has its reply, in order.
    let (_, st) = call(&a.app, "GET", &format!("/v1/conversations/{conv}/state"), &k, None).await;
    let texts: Vec<&str> =
        st["values"]["messages"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["slow 0", "echo: slow 0", "slow 1", "echo: slow 1", "slow 2", "echo: slow 2"]);
    assert_eq!(metric(&b.app, &k, COMPLETED).await, 3);
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_is_dead_lettered_without_blocking_other_conversations() {
    let url = database_url();
    let schema = ScratchSchema::new(&url, "dist_poison");
    let a = replica(&url, &schema, Options::new(None, "x", true)).await;
    let k = key(&a).await;
    let bad = conversation(&a, &k).await;
    let good = conversation(&a, &k).await;
    let app = a.app.clone();
    let (k2, bad2) = (k.clone(), bad.clone());
    let poisoned = tokio::spawn(async move {
        call(&app, "POST", &format!("/v1/conversations/{bad2}/messages"), &k2, Some(json!({"text": "poison"}))).await
    });
    let (s, v) =
        call(&a.app, "POST", &format!("/v1/conversations/{good}/messages"), &k, Some(json!({"text": "fine"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = tokio::time::timeout(Duration::from_secs(20), poisoned).await.unwrap().unwrap();
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (status, failures): (String, i32) =
        sqlx::query_as(&format!("SELECT status, failures FROM {}.rt_runs WHERE conversation = $1", schema.name()))
            .bind(&bad)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), failures), ("dead", 3));
    let (_, c) = call(&a.app, "GET", &format!("/v1/conversations/{bad}"), &k, None).await;
    assert_eq!(c["status"], "failed");
    schema.drop_now().await.unwrap();
}

/// A TCP proxy to PostgreSQL that the test stops (closing every connection) and starts again on
/// the same port: the database "goes away" for this replica only.
struct Proxy {
    port: u16,
    stop: Mutex<CancellationToken>,
}

impl Proxy {
    async fn start(upstream: String) -> Arc<Self> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = Arc::new(Self { port: l.local_addr().unwrap().port(), stop: Mutex::new(CancellationToken::new()) });
        p.clone().serve(l, upstream);
        p
    }

    fn serve(self: Arc<Self>, l: TcpListener, upstream: String) {
        let stop = self.stop.lock().unwrap().clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    r = l.accept() => r.unwrap(),
                    () = stop.cancelled() => return,
                };
                let (upstream, stop) = (upstream.clone(), stop.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
    }

    fn down(&self) {
        self.stop.lock().unwrap().cancel();
    }

    async fn up(self: &Arc<Self>, upstream: String) {
        *self.stop.lock().unwrap() = CancellationToken::new();
        let l = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.clone().serve(l, upstream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_refuses_messages_with_503_and_recovers() {
    let url = database_url();
    let schema = ScratchSchema::new(&url, "dist_pgdown");
    // postgres://user@host:port/db: the proxy takes the place of host:port.
    let at = url.find('@').map_or(url.find("//").unwrap() + 2, |i| i + 1);
    let end = at + url[at..].find('/').unwrap();
    let mut upstream = url[at..end].to_string();
    if !upstream.contains(':') {
        upstream.push_str(":5432");
    }
    let proxy = Proxy::start(upstream.clone()).await;
    let via = format!("{}127.0.0.1:{}{}", &url[..at], proxy.port, &url[end..]);
    let a = replica(&via, &schema, Options::new(None, "x", true)).await;
    let k = key(&a).await;
    let conv = conversation(&a, &k).await;
    let post = |text: &str| {
        let (app, k, conv) = (a.app.clone(), k.clone(), conv.clone());
        let text = text.to_string();
        async move {
            let req = Request::builder()
                .method("POST")
                .uri(format!("/v1/conversations/{conv}/messages"))
                .header("authorization", format!("Bearer {k}"))
                .header("content-type", "application/json")
                .body(Body::from(json!({"text": text}).to_string()))
                .unwrap();
            app.oneshot(req).await.unwrap()
        }
    };
    assert_eq!(post("before").await.status(), StatusCode::OK);

    proxy.down();
    let resp = post("during").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    let ready = || {
        let app = a.app.clone();
        async move { app.oneshot(Request::builder().uri("/readyz").body(Body::empty()).unwrap()).await.unwrap().status() }
    };
    assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE);

    proxy.up(upstream).await;
    let back = Instant::now();
    while ready().await != StatusCode::OK {
        assert!(back.elapsed() < Duration::from_secs(10), "not ready 10 s after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = post("after").await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The refused message was never accepted: the conversation has exactly the two others.
    let (_, st) = call(&a.app, "GET", &format!("/v1/conversations/{conv}/state"), &k, None).await;
    let texts: Vec<&str> =
        st["values"]["messages"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["before", "echo: before", "after", "echo: after"]);
    schema.drop_now().await.unwrap();
}
