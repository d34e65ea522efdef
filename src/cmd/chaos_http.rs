//! `switchboard chaos --http`: the same fault harness, with the customers going through the HTTP
//! API. Each replica is the server (`switchboard_server` with the distributed runtime on
//! PostgreSQL and Redis) serving the chaos graph as the assistant `chaos`; a customer creates a
//! conversation and posts numbered messages, each with an `Idempotency-Key`, to a random replica;
//! when the replica dies under it (or answers 503, or 409 "in progress") it retries the same key on
//! another one until it gets the reply. A message counts as acknowledged once a replica answered
//! it with its result; the invariants are then checked as in the database mode.

use super::chaos::{ReplicaArgs, Rng, graph};
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_engine::{Engine, EngineConfig, Update};
use switchboard_runtime::{EffectJournal, QueueConfig};
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::{AppState, Assistant, Assistants, DistConfig, Distributed, Limits};
use switchboard_store::{FencedStore, PgConfig, PgStore, Records};
use tokio_util::sync::CancellationToken;

/// The assistant's name in the replicas.
pub(crate) const ASSISTANT: &str = "chaos";

/// The id a customer gives message `seq` in its metadata: what the tool records in the ledger.
pub(crate) fn effect_id(customer: usize, seq: u64) -> i64 {
    (customer as i64 + 1) * 1_000_000 + seq as i64
}

/// `switchboard chaos-replica --http-port P`: the HTTP server on the shared runtime; exits when
/// its parent is gone.
pub(crate) async fn replica(args: ReplicaArgs, port: u16) -> anyhow::Result<()> {
    let parent = nix::unistd::getppid();
    let cfg = PgConfig {
        schema: Some(args.schema.clone()),
        max_connections: 16,
        acquire_timeout: Duration::from_secs(2),
        ..PgConfig::default()
    };
    let store = Arc::new(PgStore::open(&args.database_url, cfg).await?);
    let fenced = Arc::new(FencedStore::new(store.clone()));
    let journal = EffectJournal::new(fenced.clone());
    let ecfg = EngineConfig { assistant_id: ASSISTANT.into(), shared_store: true, ..EngineConfig::default() };
    let g = graph(Some(journal), Some(store.pool().clone()), args.step_ms, args.unsafe_skip_journal)?;
    let worker_engine = Engine::new(g, fenced.clone(), ecfg.clone());
    // The API's engine only reads (state, interrupts): its tool never runs.
    let api_engine = Engine::new(graph(None, None, 0, false)?, store.clone(), ecfg);
    let input: switchboard_server::InputFn = Arc::new(|text: &str, meta: &Value| {
        Update::new().set("log", json!({"role": "user", "msg": meta["msg"], "seq": meta["seq"], "text": text}))
    });
    let assistant = Assistant {
        description: "chaos graph: fake LLM, journaled tool, reply".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        engine: api_engine,
        input,
    };
    let lease_ttl = Duration::from_millis(args.lease_ms.max(100));
    let dist_config = DistConfig {
        owner: args.owner.clone(),
        concurrency: args.concurrency.max(1),
        idle_poll: Duration::from_millis(100),
        sweep_every: lease_ttl / 4,
        queue: QueueConfig { lease_ttl, ..QueueConfig::default() },
        redis_url: args.redis_url.clone(),
        redis_prefix: format!("chaos:{}", args.schema),
        ..DistConfig::default()
    };
    let engines = HashMap::from([(ASSISTANT.to_string(), worker_engine)]);
    let dist = Distributed::new(&store, fenced, engines, dist_config).map_err(anyhow::Error::msg)?;
    let records = Records::on_postgres(store.pool().clone());
    let limits = Limits { shutdown_deadline: Duration::from_millis(200), ..Limits::default() };
    let state = AppState::new(Assistants::new(ASSISTANT, assistant), records, limits).with_distributed(dist);
    switchboard_server::dist::start(&state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("port {port}"))?;
    let orphaned = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if nix::unistd::getppid() != parent {
                return;
            }
        }
    };
    switchboard_server::run(listener, state, orphaned).await?;
    Ok(())
}

/// A free loopback port for a replica slot (kept across its restarts).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Creates the customers' API key in the shared database.
pub(crate) async fn api_key(store: &PgStore) -> anyhow::Result<String> {
    let records = Records::on_postgres(store.pool().clone());
    let (key, _) = create_key(&records, "chaos", &[Scope::Chat]).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(key)
}

/// Waits until every replica answers `/readyz`.
pub(crate) async fn wait_ready(urls: &[String], within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + within;
    for u in urls {
        loop {
            if let Ok(r) = client.get(format!("{u}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("replica {u} did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// What a customer got acknowledged: `(conversation, server run id, seq, effect id)`.
pub(crate) type AckedRuns = Vec<(String, String, u64, i64)>;

/// Shared counters of the customers.
#[derive(Default)]
pub(crate) struct Counters {
    /// Requests retried (connection lost, 503, 409 in progress).
    pub(crate) retries: AtomicU64,
    /// Some reply did not come within the drain time.
    pub(crate) timed_out: AtomicBool,
}

/// One customer: a conversation, then numbered messages until `stop`, each retried with its
/// idempotency key until a replica answers it.
pub(crate) async fn customer(
    c: usize,
    urls: Arc<Vec<String>>,
    key: String,
    mut rng: Rng,
    stop: CancellationToken,
    drain: Duration,
    counters: Arc<Counters>,
) -> AckedRuns {
    let mut acked = AckedRuns::new();
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(30)).build() else { return acked };
    let auth = format!("Bearer {key}");
    let mut conv = None;
    let deadline = Instant::now() + drain;
    while conv.is_none() {
        let u = &urls[rng.below(urls.len() as u64) as usize];
        let r = client
            .post(format!("{u}/v1/conversations"))
            .header("authorization", &auth)
            .json(&json!({"assistant": ASSISTANT}));
        if let Ok(resp) = r.send().await
            && resp.status().is_success()
            && let Ok(v) = resp.json::<Value>().await
        {
            conv = v["id"].as_str().map(str::to_string);
        }
        if conv.is_none() {
            if Instant::now() > deadline {
                counters.timed_out.store(true, Ordering::Relaxed);
                return acked;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let conv = conv.unwrap_or_default();
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        seq += 1;
        let idem = format!("{conv}:{seq}");
        let body = json!({
            "text": format!("message {seq} from customer {c}"),
            "metadata": {"seq": seq, "msg": effect_id(c, seq)},
        });
        let deadline = Instant::now() + drain;
        loop {
            let u = &urls[rng.below(urls.len() as u64) as usize];
            let sent = client
                .post(format!("{u}/v1/conversations/{conv}/messages"))
                .header("authorization", &auth)
                .header("idempotency-key", &idem)
                .json(&body)
                .send()
                .await;
            if let Ok(resp) = sent
                && resp.status().is_success()
                && let Ok(v) = resp.json::<Value>().await
                && let Some(run) = v["run_id"].as_str()
            {
                acked.push((conv.clone(), run.to_string(), seq, effect_id(c, seq)));
                break;
            }
            counters.retries.fetch_add(1, Ordering::Relaxed);
            if Instant::now() > deadline {
                counters.timed_out.store(true, Ordering::Relaxed);
                return acked;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    acked
}

/// The runtime message ids of acknowledged runs (`rt_runs.ref` is the server run id).
pub(crate) async fn message_ids(pool: &sqlx::PgPool, acked: &AckedRuns) -> anyhow::Result<HashMap<String, i64>> {
    let refs: Vec<&str> = acked.iter().map(|(_, r, _, _)| r.as_str()).collect();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT ref, message_id FROM rt_runs WHERE ref = ANY($1)").bind(&refs).fetch_all(pool).await?;
    Ok(rows.into_iter().collect())
}
