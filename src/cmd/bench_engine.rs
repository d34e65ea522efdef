//! `switchboard bench engine`: the peer harness's support graph on our engine, measured the way
//! `shared/bench/peers/langgraph_bench.py` measures LangGraph, one JSON line per case.

use crate::support::{self, SupportOptions, Turn};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_engine::{CheckpointStore, Engine, EngineConfig, MemoryStore};
use switchboard_store::postgres::{ScratchSchema, database_url};
use switchboard_store::{PgStore, SqliteConfig, SqliteStore};

/// Which checkpoint store to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreKind {
    /// In process memory.
    Memory,
    /// A SQLite file (WAL; fsync on unless --no-fsync).
    Sqlite,
    /// PostgreSQL (--database-url or DATABASE_URL; a throwaway schema, dropped afterwards).
    Postgres,
}

/// Which case to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Case {
    /// Sequential turns round-robin over conversations, LLM latency 0.
    Seq,
    /// Many conversations at once, each turn waiting on a slow fake LLM.
    Conc,
    /// Both, each in a fresh process (so peak RSS belongs to one case).
    All,
}

/// Options of `switchboard bench engine`.
#[derive(Debug, clap::Args)]
pub(crate) struct EngineBenchArgs {
    /// Checkpoint store.
    #[arg(long, value_enum, default_value = "memory")]
    store: StoreKind,
    /// Case to run.
    #[arg(long, value_enum, default_value = "all")]
    case: Case,
    /// Print one JSON line per case (otherwise a readable summary).
    #[arg(long)]
    json: bool,
    /// Turns exported by the peers' `export_workload.py` (100 x 20); each turn's routing is checked
    /// against LangGraph's. Without it, a workload of the same utterances is generated.
    #[arg(long)]
    workload: Option<PathBuf>,
    /// Conversations of the sequential case (without --workload).
    #[arg(long, default_value_t = 100)]
    conversations: usize,
    /// Turns per conversation of the sequential case (without --workload).
    #[arg(long, default_value_t = 20)]
    turns: usize,
    /// Conversations of the concurrency case.
    #[arg(long, default_value_t = 1000)]
    conc_conversations: usize,
    /// Turns per conversation of the concurrency case.
    #[arg(long, default_value_t = 5)]
    conc_turns: usize,
    /// Fake LLM latency of the concurrency case, in milliseconds.
    #[arg(long, default_value_t = 200)]
    llm_ms: u64,
    /// Directory for the SQLite file (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// SQLite with synchronous=NORMAL instead of FULL.
    #[arg(long)]
    no_fsync: bool,
    /// PostgreSQL for `--store postgres` (default: DATABASE_URL, else the local server).
    #[arg(long)]
    database_url: Option<String>,
    /// Worker threads of the async runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Usage {
    cpu: Duration,
    max_rss_kib: i64,
}

fn usage() -> Usage {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            Usage { cpu: tv(u.user_time()) + tv(u.system_time()), max_rss_kib: u.max_rss() }
        }
        Err(_) => Usage { cpu: Duration::ZERO, max_rss_kib: 0 },
    }
}

fn pct(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let k = (sorted_ms.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (k.floor() as usize, (k.ceil() as usize).min(sorted_ms.len() - 1));
    sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (k - lo as f64)
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Runs the benchmark.
pub(crate) fn run(args: EngineBenchArgs) -> anyhow::Result<()> {
    if args.case == Case::All {
        let exe = std::env::current_exe().context("locating the switchboard binary")?;
        for case in ["seq", "conc"] {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["bench", "engine", "--case", case, "--store"]);
            cmd.arg(store_name(&args));
            if let Some(u) = &args.database_url {
                cmd.arg("--database-url").arg(u);
            }
            cmd.args(["--conversations", &args.conversations.to_string(), "--turns", &args.turns.to_string()]);
            cmd.args(["--conc-conversations", &args.conc_conversations.to_string()]);
            cmd.args(["--conc-turns", &args.conc_turns.to_string(), "--llm-ms", &args.llm_ms.to_string()]);
            cmd.args(["--threads", &args.threads.to_string()]);
            if let Some(w) = &args.workload {
                cmd.arg("--workload").arg(w);
            }
            if let Some(d) = &args.dir {
                cmd.arg("--dir").arg(d);
            }
            if args.no_fsync {
                cmd.arg("--no-fsync");
            }
            if args.json {
                cmd.arg("--json");
            }
            let status = cmd.status().context("running a benchmark case")?;
            if !status.success() {
                bail!("benchmark case {case} failed ({status})");
            }
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    let result = rt.block_on(async {
        match args.case {
            Case::Seq => seq(&args).await,
            Case::Conc => conc(&args).await,
            Case::All => unreachable!("handled above"),
        }
    })?;
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    let mismatches = result["routing_mismatches"].as_u64().unwrap_or(0);
    if mismatches > 0 {
        bail!("{mismatches} turns were routed differently from LangGraph");
    }
    Ok(())
}

struct Bench {
    engine: Engine,
    memory: Option<Arc<MemoryStore>>,
    sqlite: Option<Arc<SqliteStore>>,
    postgres: Option<(Arc<PgStore>, ScratchSchema)>,
    _dir: Option<tempfile::TempDir>,
}

impl Bench {
    fn commits(&self) -> u64 {
        self.sqlite.as_ref().map_or(0, |s| s.writer_stats().0)
            + self.postgres.as_ref().map_or(0, |p| p.0.writer_stats().0)
    }
    async fn bytes(&self) -> anyhow::Result<u64> {
        Ok(match (&self.sqlite, &self.postgres) {
            (Some(s), _) => file_bytes(s).await?,
            (None, Some((p, _))) => p.checkpoint_bytes().await?,
            _ => 0,
        })
    }
    async fn finish(self) -> anyhow::Result<()> {
        let Bench { engine, postgres, .. } = self;
        drop(engine);
        if let Some((store, schema)) = postgres {
            drop(store);
            schema.drop_now().await?;
        }
        Ok(())
    }
}

async fn open(args: &EngineBenchArgs, opts: SupportOptions, tag: &str) -> anyhow::Result<Bench> {
    let graph = support::graph(opts)?;
    let config = EngineConfig::default();
    match args.store {
        StoreKind::Memory => {
            let store = Arc::new(MemoryStore::new());
            let engine = Engine::new(graph, store.clone() as Arc<dyn CheckpointStore>, config);
            Ok(Bench { engine, memory: Some(store), sqlite: None, postgres: None, _dir: None })
        }
        StoreKind::Sqlite => {
            let (dir, tmp) = match &args.dir {
                Some(d) => (d.clone(), None),
                None => {
                    let t = tempfile::tempdir()?;
                    (t.path().to_path_buf(), Some(t))
                }
            };
            let path = dir.join(format!("bench-{tag}-{}.sqlite", std::process::id()));
            let cfg = SqliteConfig { fsync: !args.no_fsync, ..SqliteConfig::default() };
            let store = Arc::new(SqliteStore::open(&path, cfg).await?);
            let engine = Engine::new(graph, store.clone() as Arc<dyn CheckpointStore>, config);
            Ok(Bench { engine, memory: None, sqlite: Some(store), postgres: None, _dir: tmp })
        }
        StoreKind::Postgres => {
            let url = args.database_url.clone().unwrap_or_else(database_url);
            let schema = ScratchSchema::new(&url, &format!("bench_{tag}"));
            let store = Arc::new(PgStore::open(&url, schema.config()).await?);
            let engine = Engine::new(graph, store.clone() as Arc<dyn CheckpointStore>, config);
            Ok(Bench { engine, memory: None, sqlite: None, postgres: Some((store, schema)), _dir: None })
        }
    }
}

async fn file_bytes(store: &SqliteStore) -> anyhow::Result<u64> {
    store.checkpoint_wal().await?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wal = PathBuf::from(format!("{}-wal", store.path().display()));
    Ok(size(store.path()) + size(&wal))
}

fn store_name(args: &EngineBenchArgs) -> &'static str {
    match args.store {
        StoreKind::Memory => "memory",
        StoreKind::Sqlite => "sqlite",
        StoreKind::Postgres => "postgres",
    }
}

async fn seq(args: &EngineBenchArgs) -> anyhow::Result<Value> {
    let (turns, exported) = match &args.workload {
        Some(p) => (support::read_workload(p)?, true),
        None => (support::generate_workload(args.conversations, args.turns), false),
    };
    let b = open(args, SupportOptions::default(), "seq").await?;
    for i in 0..50 {
        let text = support::UTTERANCES[i % support::UTTERANCES.len()];
        b.engine.invoke(&format!("warm-{}", i % 5), support::user_message(text)).await?;
    }
    let bytes_before = b.bytes().await?;
    let commits_before = b.commits();
    let per_conv = turns.iter().map(|t| t.turn + 1).max().unwrap_or(0);
    let mut lat = Vec::with_capacity(turns.len());
    let (mut first, mut last) = (Vec::new(), Vec::new());
    let mut mismatches = 0usize;
    let u0 = usage();
    let t0 = Instant::now();
    for Turn { thread_id, turn, text, intent, agent } in &turns {
        let s = Instant::now();
        let out = b.engine.invoke(thread_id, support::user_message(text)).await?;
        let ms = s.elapsed().as_secs_f64() * 1e3;
        lat.push(ms);
        if *turn < 5 {
            first.push(ms);
        } else if *turn + 5 >= per_conv {
            last.push(ms);
        }
        if let (Some(i), Some(a)) = (intent, agent)
            && (out.state.get_str("intent") != Some(i) || out.state.get_str("last_agent") != Some(a))
        {
            mismatches += 1;
        }
    }
    let wall = t0.elapsed();
    let u1 = usage();
    let commits = b.commits() - commits_before;
    let n_conv = turns.iter().map(|t| &t.thread_id).collect::<std::collections::HashSet<_>>().len().max(1);
    // Every conversation ends with two messages per turn.
    let sample = &turns[turns.len() - 1].thread_id;
    let msgs = b.engine.state(sample).await?.get_array("messages").len();
    // Checkpoints written per turn, counted from one conversation's history.
    let checkpoints = b.engine.history(sample, None, usize::MAX).await?.len();
    if msgs != 2 * per_conv {
        bail!("conversation {sample} has {msgs} messages, expected {}", 2 * per_conv);
    }
    let storage = match &b.memory {
        Some(m) => {
            let total: usize = turns
                .iter()
                .map(|t| t.thread_id.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|c| m.payload_bytes(c))
                .sum();
            total as f64 / n_conv as f64
        }
        None => (b.bytes().await?.saturating_sub(bytes_before)) as f64 / n_conv as f64,
    };
    b.finish().await?;
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    first.sort_by(f64::total_cmp);
    last.sort_by(f64::total_cmp);
    let cpu = (u1.cpu - u0.cpu).as_secs_f64();
    Ok(json!({
        "case": format!("engine_seq_{}", store_name(args)),
        "store": store_name(args),
        "fsync": args.store == StoreKind::Postgres || (args.store == StoreKind::Sqlite && !args.no_fsync),
        "turns": turns.len(),
        "n_threads": n_conv,
        "wall_s": round(wall.as_secs_f64(), 4),
        "turns_per_s": round(turns.len() as f64 / wall.as_secs_f64(), 1),
        "cpu_us_per_turn": round(cpu / turns.len() as f64 * 1e6, 1),
        "p50_ms": round(pct(&sorted, 50.0), 4),
        "p99_ms": round(pct(&sorted, 99.0), 4),
        "p50_turns1to5_ms": round(pct(&first, 50.0), 4),
        "p50_turns16to20_ms": round(pct(&last, 50.0), 4),
        "peak_rss_mib": round(u1.max_rss_kib as f64 / 1024.0, 1),
        "checkpoint_bytes_per_conversation": storage.round(),
        "checkpoints_per_turn": round(checkpoints as f64 / per_conv.max(1) as f64, 2),
        "commits_per_turn": round(commits as f64 / turns.len() as f64, 2),
        "workload": if exported { "exported" } else { "generated" },
        "routing_checked": if exported { turns.len() } else { 0 },
        "routing_mismatches": mismatches,
    }))
}

async fn conc(args: &EngineBenchArgs) -> anyhow::Result<Value> {
    let opts = SupportOptions { llm_latency: Duration::from_millis(args.llm_ms), ..Default::default() };
    let b = open(args, opts, "conc").await?;
    let engine = b.engine.clone();
    // Warm the code paths on throwaway conversations.
    for i in 0..5 {
        engine.invoke(&format!("warm-{i}"), support::user_message("hello there")).await?;
    }
    let commits_before = b.commits();
    let u0 = usage();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(args.conc_conversations);
    for c in 0..args.conc_conversations {
        let engine = engine.clone();
        let turns = args.conc_turns;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(turns);
            let mut failed = 0usize;
            for t in 0..turns {
                let text = support::UTTERANCES[(c * 7 + t * 3) % support::UTTERANCES.len()];
                let s = Instant::now();
                match engine.invoke(&format!("conc-{c}"), support::user_message(text)).await {
                    Ok(_) => lat.push(s.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        tracing::warn!(error = %e, "turn failed");
                        failed += 1;
                    }
                }
            }
            (lat, failed)
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failed += f;
    }
    let wall = t0.elapsed();
    let u1 = usage();
    let commits = b.commits() - commits_before;
    let n = args.conc_conversations * args.conc_turns;
    lat.sort_by(f64::total_cmp);
    drop(engine);
    b.finish().await?;
    Ok(json!({
        "case": format!("engine_conc_{}", store_name(args)),
        "store": store_name(args),
        "fsync": args.store == StoreKind::Postgres || (args.store == StoreKind::Sqlite && !args.no_fsync),
        "conversations": args.conc_conversations,
        "turns": n,
        "llm_ms": args.llm_ms,
        "ideal_wall_s": round(args.conc_turns as f64 * args.llm_ms as f64 / 1e3, 3),
        "wall_s": round(wall.as_secs_f64(), 4),
        "turns_per_s": round(n as f64 / wall.as_secs_f64(), 1),
        "cpu_us_per_turn": round((u1.cpu - u0.cpu).as_secs_f64() / n as f64 * 1e6, 1),
        "p50_ms": round(pct(&lat, 50.0), 3),
        "p99_ms": round(pct(&lat, 99.0), 3),
        "peak_rss_mib": round(u1.max_rss_kib as f64 / 1024.0, 1),
        "failed_turns": failed,
        "commits": commits,
    }))
}
