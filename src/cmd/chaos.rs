//! `switchboard chaos`: the fault harness of the distributed runtime.
//!
//! Starts N replica processes (`switchboard chaos-replica`, hidden) on this machine against one
//! PostgreSQL database (a schema of its own, dropped afterwards), drives M simulated customers that
//! send numbered messages in bursts and wait for the replies, SIGKILLs replicas at random moments
//! and restarts them, then checks from the database and the tool's ledger that no acknowledged
//! message was lost, no reply or side effect happened twice, and no conversation went out of order;
//! and reports how long each orphaned turn took to finish after the kill.
//!
//! The replicas run a three-step graph: a fake LLM that plans a tool call, the tool (it records a
//! side effect in the `chaos_ledger` table through the effect journal, keyed by the engine's
//! idempotency key) and the reply. Each step takes a few random milliseconds so that kills land
//! mid-turn, between effect and checkpoint, between checkpoint and reply.
//!
//! With `--http` the replicas are HTTP servers (the distributed runtime of `serve`, on PostgreSQL
//! and Redis) and the customers go through the API; see [`super::chaos_http`].

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard_engine::{
    END, Engine, EngineConfig, Field, Graph, GraphBuilder, NodeError, NodeInput, Reducer, START, Schema, State, Update,
};
use switchboard_runtime::queue::ClaimedRun;
use switchboard_runtime::{Assistant, EffectJournal, Queue, QueueConfig, Worker, WorkerConfig};
use switchboard_store::postgres::{ScratchSchema, database_url};
use switchboard_store::{FencedStore, PgConfig, PgStore};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Options of `switchboard chaos`.
#[derive(Debug, clap::Args)]
pub(crate) struct ChaosArgs {
    /// Replica processes.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Simulated customers (one conversation each).
    #[arg(long, default_value_t = 10)]
    customers: usize,
    /// SIGKILLs to deliver (each followed by a restart of the killed replica).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// PostgreSQL (default: DATABASE_URL, else the local server's `test` database).
    #[arg(long)]
    database_url: Option<String>,
    /// Redis for the replicas' event fan-out, cancels and rate limits (with `--http`).
    #[arg(long)]
    redis_url: Option<String>,
    /// Customers go through the HTTP API of server replicas instead of writing to the queue.
    #[arg(long)]
    http: bool,
    /// Lease time-to-live in milliseconds (an orphaned turn is picked up after about this long).
    #[arg(long, default_value_t = 1500)]
    lease_ms: u64,
    /// Milliseconds between kills are drawn from [gap/2, 3*gap/2].
    #[arg(long, default_value_t = 500)]
    kill_gap_ms: u64,
    /// Most milliseconds a graph step takes (fake LLM and tool latency).
    #[arg(long, default_value_t = 6)]
    step_ms: u64,
    /// Runs each replica executes at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Random seed (default: from the clock); printed so a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds the customers wait for outstanding replies after the last kill.
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
    /// Keep the schema (printed) instead of dropping it, to inspect a failed run.
    #[arg(long)]
    keep_schema: bool,
    /// Replica logs (stderr) go to this process's stderr instead of nowhere.
    #[arg(long)]
    verbose: bool,
    /// Self-check of the harness: replicas call the tool without the effect journal, so kills
    /// between a side effect and its step's checkpoint must show up as duplicate effects.
    #[arg(long, hide = true)]
    unsafe_skip_journal: bool,
}

/// Options of the hidden `switchboard chaos-replica`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplicaArgs {
    #[arg(long)]
    pub(crate) database_url: String,
    #[arg(long)]
    pub(crate) schema: String,
    #[arg(long)]
    pub(crate) owner: String,
    #[arg(long)]
    pub(crate) lease_ms: u64,
    #[arg(long)]
    pub(crate) step_ms: u64,
    #[arg(long)]
    pub(crate) concurrency: usize,
    #[arg(long)]
    pub(crate) unsafe_skip_journal: bool,
    /// Serve the HTTP API on this loopback port (the server's distributed runtime).
    #[arg(long)]
    pub(crate) http_port: Option<u16>,
    #[arg(long)]
    pub(crate) redis_url: Option<String>,
}

/// A small deterministic generator (xorshift64*), enough for picking kill times and victims.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn schema() -> Arc<Schema> {
    #[allow(clippy::expect_used)]
    Arc::new(
        Schema::builder()
            .field(Field::new("log").reducer(Reducer::Append))
            .field(Field::new("plan"))
            .field(Field::new("effect"))
            .field(Field::new("messages").reducer(Reducer::Messages))
            .build()
            .expect("the chaos schema is valid"),
    )
}

async fn jitter(step_ms: u64) {
    if step_ms > 0 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        tokio::time::sleep(Duration::from_micros(u64::from(nanos) % (step_ms * 1000))).await;
    }
}

/// The replicas' graph: fake LLM → tool (journaled side effect in the ledger) → reply.
pub(crate) fn graph(
    journal: Option<EffectJournal>,
    pool: Option<sqlx::PgPool>,
    step_ms: u64,
    skip_journal: bool,
) -> anyhow::Result<Graph> {
    let g = GraphBuilder::new(schema())
        .node("llm", move |i: NodeInput| async move {
            jitter(step_ms).await;
            let last = i.state.get_array("log").last().cloned().unwrap_or_default();
            Ok(Update::new().set("plan", json!({"tool": "freeze_card", "msg": last["msg"], "seq": last["seq"]})).into())
        })
        .node("tool", move |i: NodeInput| {
            let journal = journal.clone();
            let pool = pool.clone();
            async move {
                let (Some(journal), Some(pool)) = (journal, pool) else {
                    return Err(NodeError::failed("the tool runs only in a replica"));
                };
                jitter(step_ms).await;
                let plan = i.state.get("plan").cloned().unwrap_or_default();
                let conv = i.ctx.conversation_id().to_string();
                let msg = plan["msg"].as_i64().unwrap_or_default();
                let key = i.ctx.idempotency_key(0);
                let (p1, p2) = (pool.clone(), pool);
                let c1 = conv.clone();
                let lookup = |k: String| async move {
                    let id: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM chaos_ledger WHERE key = $1 ORDER BY id LIMIT 1")
                            .bind(k)
                            .fetch_optional(&p1)
                            .await
                            .map_err(|e| e.to_string())?;
                    Ok(id.map(|id| format!("ledger#{id}")))
                };
                let call = |k: String| async move {
                    jitter(step_ms).await;
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO chaos_ledger (key, conversation, message_id) VALUES ($1, $2, $3) RETURNING id",
                    )
                    .bind(k)
                    .bind(c1)
                    .bind(msg)
                    .fetch_one(&p2)
                    .await
                    .map_err(|e| e.to_string())?;
                    Ok::<_, String>(format!("ledger#{id}"))
                };
                let result = if skip_journal {
                    call(key).await.map_err(NodeError::failed)?
                } else {
                    journal.run(&conv, &key, lookup, call).await.map_err(|e| NodeError::failed(e.to_string()))?
                };
                Ok(Update::new().set("effect", json!({"msg": msg, "result": result})).into())
            }
        })
        .node("reply", move |i: NodeInput| async move {
            jitter(step_ms).await;
            let plan = i.state.get("plan").cloned().unwrap_or_default();
            let effect = i.state.get("effect").cloned().unwrap_or_default();
            let text = format!("reply to message {} ({})", plan["seq"], effect["result"].as_str().unwrap_or("?"));
            Ok(Update::new()
                .set("log", json!({"role": "assistant", "msg": plan["msg"], "seq": plan["seq"], "text": text}))
                .set("messages", json!({"role": "assistant", "text": text}))
                .into())
        })
        .edge(START, "llm")
        .edge("llm", "tool")
        .edge("tool", "reply")
        .edge("reply", END)
        .build()?;
    Ok(g)
}

struct Customers;
impl Assistant for Customers {
    fn input(&self, run: &ClaimedRun) -> Update {
        let body: Value = serde_json::from_str(&run.body).unwrap_or_default();
        Update::new()
            .set("log", json!({"role": "user", "msg": run.message_id, "seq": body["seq"], "text": body["text"]}))
    }
    fn reply(&self, run: &ClaimedRun, state: &State) -> Option<String> {
        state
            .get_array("log")
            .iter()
            .rev()
            .find(|m| m["role"] == "assistant" && m["msg"] == json!(run.message_id))
            .and_then(|m| m["text"].as_str().map(str::to_string))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// `switchboard chaos-replica`: one worker process; exits when its parent is gone.
pub(crate) fn replica(args: ReplicaArgs) -> anyhow::Result<()> {
    if let Some(port) = args.http_port {
        return runtime()?.block_on(super::chaos_http::replica(args, port));
    }
    runtime()?.block_on(async move {
        let parent = nix::unistd::getppid();
        let cfg = PgConfig { schema: Some(args.schema.clone()), max_connections: 12, ..PgConfig::default() };
        let store = Arc::new(PgStore::open(&args.database_url, cfg).await?);
        let fenced = Arc::new(FencedStore::new(store.clone()));
        let journal = EffectJournal::new(fenced.clone());
        let g = graph(Some(journal), Some(store.pool().clone()), args.step_ms, args.unsafe_skip_journal)?;
        let engine = Engine::new(g, fenced.clone(), EngineConfig::default());
        let lease_ttl = Duration::from_millis(args.lease_ms.max(100));
        let queue = Queue::new(store.pool().clone(), QueueConfig { lease_ttl, ..QueueConfig::default() });
        let wcfg = WorkerConfig {
            owner: args.owner,
            concurrency: args.concurrency.max(1),
            idle_poll: Duration::from_millis(20),
            sweep_every: lease_ttl / 4,
        };
        let worker = Arc::new(Worker::new(queue, fenced, engine, Arc::new(Customers), wcfg));
        let stop = CancellationToken::new();
        let watchdog = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if nix::unistd::getppid() != parent {
                    watchdog.cancel();
                    return;
                }
            }
        });
        worker.run(stop).await;
        anyhow::Ok(())
    })
}

struct Replica {
    child: Child,
    owner: String,
    /// Its HTTP port (`--http`), the same across restarts.
    port: Option<u16>,
}

struct Kill {
    /// Database clock at the kill (seconds since the epoch).
    at: f64,
    /// Runs the killed replica held.
    runs: Vec<i64>,
}

#[derive(Default)]
struct Acked {
    /// (conversation, message id, seq, the message id its side effect is recorded under)
    messages: Vec<(String, i64, u64, i64)>,
}

fn spawn_replica(args: &ChaosArgs, url: &str, schema: &str, owner: &str, port: Option<u16>) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["chaos-replica", "--database-url", url, "--schema", schema, "--owner", owner])
        .args(["--lease-ms", &args.lease_ms.to_string(), "--step-ms", &args.step_ms.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(args.unsafe_skip_journal.then_some("--unsafe-skip-journal"))
        .args(port.map(|p| ["--http-port".to_string(), p.to_string()]).into_iter().flatten())
        .args(args.redis_url.iter().flat_map(|r| ["--redis-url".to_string(), r.clone()]))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(if args.verbose { std::process::Stdio::inherit() } else { std::process::Stdio::null() })
        .kill_on_drop(true);
    Ok(cmd.spawn()?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// `switchboard chaos`.
pub(crate) fn run(args: ChaosArgs) -> anyhow::Result<()> {
    if args.replicas == 0 || args.customers == 0 {
        bail!("--replicas and --customers must be at least 1");
    }
    let violations = runtime()?.block_on(chaos(args))?;
    if violations > 0 {
        bail!("{violations} invariant violation(s)");
    }
    Ok(())
}

async fn chaos(args: ChaosArgs) -> anyhow::Result<u64> {
    let url = args.database_url.clone().unwrap_or_else(database_url);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    let scratch = ScratchSchema::new(&url, "chaos");
    let cfg = PgConfig { schema: Some(scratch.name().to_string()), ..PgConfig::default() };
    let store = Arc::new(PgStore::open(&url, cfg).await.context("PostgreSQL (--database-url / DATABASE_URL)")?);
    let pool = store.pool().clone();
    sqlx::query(
        "CREATE TABLE chaos_ledger (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, conversation TEXT NOT NULL, \
         message_id BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
    )
    .execute(&pool)
    .await?;
    eprintln!(
        "chaos: seed={seed} replicas={} customers={} kills={} lease_ms={} schema={}{}",
        args.replicas,
        args.customers,
        args.kills,
        args.lease_ms,
        scratch.name(),
        match (args.http, &args.redis_url) {
            (true, Some(_)) => " (customers through HTTP; Redis)",
            (true, None) => " (customers through HTTP; no Redis)",
            (false, _) => "",
        }
    );
    let started = Instant::now();
    let mut replicas = Vec::with_capacity(args.replicas);
    for i in 0..args.replicas {
        let owner = format!("r{i}g0");
        let port = if args.http { Some(super::chaos_http::free_port()?) } else { None };
        replicas.push(Replica { child: spawn_replica(&args, &url, scratch.name(), &owner, port)?, owner, port });
    }
    let urls: Arc<Vec<String>> =
        Arc::new(replicas.iter().filter_map(|r| r.port).map(|p| format!("http://127.0.0.1:{p}")).collect());
    let api_key = if args.http {
        super::chaos_http::wait_ready(&urls, Duration::from_secs(60)).await?;
        Some(super::chaos_http::api_key(&store).await?)
    } else {
        None
    };
    let http_counters = Arc::new(super::chaos_http::Counters::default());
    let mut http_customers = Vec::new();

    // Customers: bursts of 1-3 numbered messages, then wait for every reply so far.
    let queue = Queue::new(pool.clone(), QueueConfig::default());
    let stop = CancellationToken::new();
    let timed_out = Arc::new(AtomicBool::new(false));
    let accept_errors = Arc::new(AtomicU64::new(0));
    let mut customers = Vec::new();
    for c in 0..args.customers {
        if let Some(key) = &api_key {
            let rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let drain = Duration::from_secs(args.drain_secs);
            http_customers.push(tokio::spawn(super::chaos_http::customer(
                c,
                urls.clone(),
                key.clone(),
                rng,
                stop.clone(),
                drain,
                http_counters.clone(),
            )));
            continue;
        }
        let (queue, pool, stop, timed_out, errors) =
            (queue.clone(), pool.clone(), stop.clone(), timed_out.clone(), accept_errors.clone());
        let drain = Duration::from_secs(args.drain_secs);
        let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        customers.push(tokio::spawn(async move {
            let conv = format!("cust-{c}");
            let mut acked = Acked::default();
            let mut seq = 0u64;
            while !stop.is_cancelled() {
                for _ in 0..=rng.below(3) {
                    seq += 1;
                    let body = json!({"seq": seq, "text": format!("message {seq} from {conv}")}).to_string();
                    loop {
                        match queue.accept(&conv, &seq.to_string(), &body).await {
                            Ok(a) => {
                                acked.messages.push((conv.clone(), a.message_id, seq, a.message_id));
                                break;
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
                let deadline = Instant::now() + drain;
                loop {
                    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rt_outbox WHERE conversation = $1")
                        .bind(&conv)
                        .fetch_one(&pool)
                        .await
                        .unwrap_or(0);
                    if n as usize >= acked.messages.len() {
                        break;
                    }
                    if Instant::now() > deadline {
                        timed_out.store(true, Ordering::Relaxed);
                        return acked;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            acked
        }));
    }

    // The killer.
    let mut rng = Rng(seed);
    let mut kills: Vec<Kill> = Vec::with_capacity(args.kills);
    let mut generation = vec![0u32; args.replicas];
    for _ in 0..args.kills {
        let gap = args.kill_gap_ms / 2 + rng.below(args.kill_gap_ms.max(1));
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let i = rng.below(args.replicas as u64) as usize;
        let victim = &mut replicas[i];
        victim.child.start_kill()?; // SIGKILL
        let _ = victim.child.wait().await;
        let at: f64 =
            sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8").fetch_one(&pool).await?;
        let runs: Vec<i64> = sqlx::query_scalar("SELECT id FROM rt_runs WHERE status = 'running' AND owner = $1")
            .bind(&victim.owner)
            .fetch_all(&pool)
            .await?;
        kills.push(Kill { at, runs });
        generation[i] += 1;
        victim.owner = format!("r{i}g{}", generation[i]);
        tokio::time::sleep(Duration::from_millis(50 + rng.below(200))).await;
        victim.child = spawn_replica(&args, &url, scratch.name(), &victim.owner, victim.port)?;
    }
    stop.cancel();
    let mut acked: Vec<(String, i64, u64, i64)> = Vec::new();
    for c in customers {
        acked.extend(c.await?.messages);
    }
    let mut http_acked = Vec::new();
    for c in http_customers {
        http_acked.extend(c.await?);
    }
    if args.http {
        let ids = super::chaos_http::message_ids(&pool, &http_acked).await?;
        for (conv, run, seq, effect) in http_acked {
            // A run the database does not know was acknowledged and lost: id 0 is never answered.
            acked.push((conv, ids.get(&run).copied().unwrap_or(0), seq, effect));
        }
        accept_errors.fetch_add(http_counters.retries.load(Ordering::Relaxed), Ordering::Relaxed);
        if http_counters.timed_out.load(Ordering::Relaxed) {
            timed_out.store(true, Ordering::Relaxed);
        }
    }
    let run_secs = started.elapsed().as_secs_f64();
    for r in &mut replicas {
        let _ = r.child.start_kill();
        let _ = r.child.wait().await;
    }

    let report = check(&store, &acked, &kills).await?;
    let violations = report.lost + report.duplicated + report.duplicate_effects + report.reordered;
    eprintln!(
        "chaos: {} acknowledged messages from {} customers in {run_secs:.1} s; runs done={} dead={}; \
         accept retries={}; ledger rows={}",
        acked.len(),
        args.customers,
        report.done,
        report.dead,
        accept_errors.load(Ordering::Relaxed),
        report.ledger_rows
    );
    eprintln!(
        "chaos: {} of {} kills orphaned {} turns; recovery p50={:.2}s p99={:.2}s max={:.2}s (lease {} ms)",
        kills.iter().filter(|k| !k.runs.is_empty()).count(),
        kills.len(),
        kills.iter().map(|k| k.runs.len()).sum::<usize>(),
        percentile(&report.recoveries, 50.0),
        percentile(&report.recoveries, 99.0),
        report.recoveries.last().copied().unwrap_or(0.0),
        args.lease_ms
    );
    if timed_out.load(Ordering::Relaxed) {
        eprintln!("chaos: some replies did not arrive within --drain-secs");
    }
    for d in report.details.iter().take(20) {
        eprintln!("chaos: violation: {d}");
    }
    drop(store);
    if violations > 0 || args.keep_schema {
        eprintln!("chaos: schema kept for inspection: {}", scratch.keep());
    } else {
        scratch.drop_now().await?;
    }
    println!(
        "kills={} lost={} duplicated={} duplicate_effects={} reordered={} recovery_p99_s={:.2}",
        kills.len(),
        report.lost,
        report.duplicated,
        report.duplicate_effects,
        report.reordered,
        percentile(&report.recoveries, 99.0)
    );
    Ok(violations)
}

#[derive(Default)]
struct Report {
    lost: u64,
    duplicated: u64,
    duplicate_effects: u64,
    reordered: u64,
    done: i64,
    dead: i64,
    ledger_rows: i64,
    /// Seconds from a kill until each turn it orphaned finished, sorted.
    recoveries: Vec<f64>,
    details: Vec<String>,
}

/// Checks the invariants from the database, the ledger and the conversations' states.
async fn check(store: &Arc<PgStore>, acked: &[(String, i64, u64, i64)], kills: &[Kill]) -> anyhow::Result<Report> {
    let pool = store.pool();
    let mut r = Report::default();
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM rt_runs GROUP BY status").fetch_all(pool).await?;
    for (s, n) in counts {
        match s.as_str() {
            "done" => r.done = n,
            "dead" => r.dead = n,
            _ => {}
        }
    }
    r.ledger_rows = sqlx::query_scalar("SELECT count(*) FROM chaos_ledger").fetch_one(pool).await?;

    // Lost: an acknowledged message without exactly-one reply in the outbox, or without a side effect.
    let outbox: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT conversation, message_id, id FROM rt_outbox").fetch_all(pool).await?;
    let replied: HashMap<i64, i64> = outbox.iter().map(|(_, m, id)| (*m, *id)).collect();
    let effects: Vec<(i64, i64)> =
        sqlx::query_as("SELECT message_id, count(*) FROM chaos_ledger GROUP BY message_id").fetch_all(pool).await?;
    let effects: HashMap<i64, i64> = effects.into_iter().collect();
    for (conv, msg, seq, effect) in acked {
        if !replied.contains_key(msg) {
            r.lost += 1;
            r.details.push(format!("{conv} message {seq} (id {msg}) acknowledged, never answered"));
        } else if !effects.contains_key(effect) {
            r.lost += 1;
            r.details.push(format!("{conv} message {seq} answered without its side effect"));
        }
    }
    // Duplicate side effects: one idempotency key recorded more than once in the ledger.
    let dups: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, count(*) FROM chaos_ledger GROUP BY key HAVING count(*) > 1")
            .fetch_all(pool)
            .await?;
    for (k, n) in dups {
        r.duplicate_effects += (n - 1) as u64;
        r.details.push(format!("side effect {k} ran {n} times"));
    }
    let per_msg: i64 = effects.values().map(|n| (n - 1).max(0)).sum();
    if per_msg as u64 > r.duplicate_effects {
        r.details.push(format!("{} messages caused more than one side effect", per_msg as u64 - r.duplicate_effects));
        r.duplicate_effects = per_msg as u64;
    }

    // Replies and order from each conversation's durable state: u1 a1 u2 a2 ... exactly.
    let engine = Engine::new(graph(None, None, 0, false)?, store.clone(), EngineConfig::default());
    let mut by_conv: HashMap<&str, Vec<u64>> = HashMap::new();
    for (conv, _, seq, _) in acked {
        by_conv.entry(conv.as_str()).or_default().push(*seq);
    }
    for (conv, seqs) in &by_conv {
        let state = engine.state(conv).await.ok();
        let log = state.as_ref().map_or(&[][..], |s| s.get_array("log"));
        let mut replies: HashMap<u64, u64> = HashMap::new();
        let mut inputs: HashMap<u64, u64> = HashMap::new();
        let mut order = Vec::new();
        for m in log {
            let seq = m["seq"].as_u64().unwrap_or(0);
            let role = m["role"].as_str().unwrap_or("");
            *(if role == "assistant" { &mut replies } else { &mut inputs }).entry(seq).or_default() += 1;
            order.push((role.to_string(), seq));
        }
        for (seq, n) in replies.iter().chain(inputs.iter()) {
            if *n > 1 {
                r.duplicated += n - 1;
                r.details.push(format!("{conv}: message {seq} answered or applied {n} times"));
            }
        }
        // Expected: for each acknowledged seq in order, the message then its reply.
        let mut expected = Vec::new();
        for s in seqs {
            expected.push(("user".to_string(), *s));
            expected.push(("assistant".to_string(), *s));
        }
        // Order of first appearances (duplicates are counted above), over what both sides have.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<(String, u64)> = order.iter().filter(|x| seen.insert((*x).clone())).cloned().collect();
        let got: Vec<_> = firsts.iter().filter(|x| expected.contains(x)).collect();
        let want: Vec<_> = expected.iter().filter(|x| firsts.contains(x)).collect();
        if got != want {
            r.reordered += 1;
            r.details.push(format!("{conv}: state out of order: {order:?}"));
        }
    }
    // Replies in the outbox come in message order per conversation.
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT message_id < lag(message_id) OVER (PARTITION BY conversation ORDER BY id) AS bad \
         FROM rt_outbox) x WHERE bad",
    )
    .fetch_one(pool)
    .await?;
    if bad > 0 {
        r.reordered += bad as u64;
        r.details.push(format!("{bad} outbox replies out of message order"));
    }

    // Recovery: from each kill until each turn it orphaned finished.
    for k in kills.iter().filter(|k| !k.runs.is_empty()) {
        let finished: Vec<Option<f64>> =
            sqlx::query_scalar("SELECT extract(epoch FROM finished_at)::float8 FROM rt_runs WHERE id = ANY($1)")
                .bind(&k.runs)
                .fetch_all(pool)
                .await?;
        for f in finished.into_iter().flatten() {
            r.recoveries.push((f - k.at).max(0.0));
        }
    }
    r.recoveries.sort_by(f64::total_cmp);
    Ok(r)
}
