//! `switchboard bench server`: the HTTP API under load, with the support graph and a fake LLM
//! that answers at once.
//!
//! Three phases:
//! 1. **Closed loop**: N clients (one keep-alive connection each) post turns back to back, 20 per
//!    conversation (then a new conversation, whose creation is not counted as a turn): the most
//!    turns per second the server sustains at each concurrency, with latency percentiles, the
//!    server's CPU per turn and the store's commits per turn.
//! 2. **Open loop**: turns are sent on a fixed schedule (default 1,000 per second), whatever the
//!    answers do, and each latency is measured from the turn's *scheduled* time (so a stall
//!    counts for every turn it delays). **API overhead** of a turn = its end-to-end latency at
//!    the client (scheduled send → last byte of the response) minus the engine's own time for
//!    the same turn, measured by the server from its call to the engine until the run's outcome
//!    (checkpoints durable) and returned in `Server-Timing: engine;dur=MS`. It is what the HTTP
//!    layer, authentication, the run and event records (one group commit after the run),
//!    serialisation, the client and the scheduler add to the engine. It is also reported counted
//!    from the moment the client actually started sending (`overhead_from_send_*`), with that
//!    send delay on its own (`send_delay_*`, the client's own lateness: a starved client, or a
//!    pacing thread woken late). The sends are paced by an OS thread (sleep precision: tens of µs)
//!    rather than the async runtime's timer, whose 1 ms granularity made every send up to a
//!    millisecond late.
//! 3. **Memory**: a server in a child process (so the client's sockets do not count) with an
//!    assistant whose fake LLM never answers within the test; N conversations each get a turn with
//!    `Accept: text/event-stream`, and the client keeps every stream open after its first event.
//!    Reported: the child's RSS before and with the N open streams, and the difference per stream.
//!
//! The server runs in this process on its own runtime (2 worker threads) for phases 1 and 2; the
//! client runs on another runtime (1 thread). On a 2-core machine they share the cores, so the
//! figures are those of a server with a co-located client.

use crate::support::{self, SupportOptions, UTTERANCES};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_engine::{Engine, EngineConfig};
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::{AppState, Assistant, Assistants, Limits};
use switchboard_store::{Records, SqliteConfig, SqliteStore};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Name of the client runtime's threads (15 characters: the kernel's limit).
const CLIENT_THREAD: &str = "sb-bench-client";
/// The memory phase's assistant: its fake LLM takes this long, longer than the phase.
const SLOW_LLM: Duration = Duration::from_secs(3600);

/// Options of `switchboard bench server`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Concurrency levels of the closed-loop phase (`0`: skip it).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Seconds per closed-loop level.
    #[arg(long, default_value_t = 5.0)]
    closed_seconds: f64,
    /// Offered rate of the open-loop phase, turns per second (0: skip it).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds of the open-loop phase.
    #[arg(long, default_value_t = 10.0)]
    open_seconds: f64,
    /// Concurrent SSE streams of the memory phase (0: skip it).
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Turns per conversation before a client opens a new one.
    #[arg(long, default_value_t = 20)]
    turns_per_conversation: usize,
    /// Commit without fsync (SQLite `synchronous=NORMAL`) instead of one fsync per group commit.
    #[arg(long)]
    no_fsync: bool,
    /// Internal: serve the memory phase as a child process, in this data directory.
    #[arg(long, hide = true)]
    serve_child: Option<PathBuf>,
}

/// Entry point.
pub(crate) fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.serve_child {
        return serve_child(dir, !args.no_fsync);
    }
    let fsync = !args.no_fsync;
    let out = Output { json: args.json };
    out.line(
        json!({"bench": "server", "case": "machine", "cores": num_cores(), "load_avg": load_avg(), "fsync": fsync}),
        format!(
            "machine: {} cores, load average {}, fsync {}",
            num_cores(),
            load_avg(),
            if fsync { "on" } else { "off" }
        ),
    );
    args.concurrency.retain(|&n| n > 0);
    if !args.concurrency.is_empty() || args.rate > 0 {
        let dir = tempfile::tempdir().context("temporary data directory")?;
        let server = InProcess::start(dir.path(), fsync)?;
        let client = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(CLIENT_THREAD)
            .enable_all()
            .build()?;
        client.block_on(async {
            let c = Client::new(server.addr, &server.key)?;
            for &n in &args.concurrency {
                closed_loop(&c, &server, n, args.closed_seconds, args.turns_per_conversation, &out).await?;
            }
            if args.rate > 0 {
                open_loop(&c, &server, args.rate, args.open_seconds, args.turns_per_conversation, &out).await?;
            }
            anyhow::Ok(())
        })?;
        drop(client);
        server.stop();
    }
    if args.streams > 0 {
        memory(args.streams, fsync, &out)?;
    }
    Ok(())
}

struct Output {
    json: bool,
}

impl Output {
    fn line(&self, v: Value, text: String) {
        if self.json {
            println!("{v}");
        } else {
            println!("{text}");
        }
    }
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-minute load average.
fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The server's state on a fresh store: `support` (fake LLM answering at once, no human handoff,
/// so every turn completes) and, with `slow`, `support-slow` (fake LLM taking [`SLOW_LLM`]).
async fn server_state(dir: &Path, fsync: bool, slow: bool) -> anyhow::Result<(AppState, Arc<SqliteStore>, String)> {
    let path = dir.join("bench.sqlite");
    let store = Arc::new(SqliteStore::open(&path, SqliteConfig { fsync, ..SqliteConfig::default() }).await?);
    let records = Records::on_store(&store);
    let assistant = |latency: Duration| -> anyhow::Result<Assistant> {
        let graph = support::graph(SupportOptions { llm_latency: latency, handoff_interrupt: false })?;
        let config = EngineConfig { assistant_id: "support".into(), ..super::serve::engine_config() };
        let input: switchboard_server::InputFn = Arc::new(|text: &str, _: &Value| support::user_message(text));
        Ok(Assistant {
            description: "support graph, fake LLM".into(),
            version: "bench".into(),
            engine: Engine::with_context(graph, store.clone(), store.clone(), config),
            input,
        })
    };
    let mut assistants = Assistants::new("support", assistant(Duration::ZERO)?);
    if slow {
        assistants = assistants.with("support-slow", assistant(SLOW_LLM)?);
    }
    let (key, _) = create_key(&records, "bench", &[Scope::Chat]).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    // No rate limit: the bench is the only client.
    let limits = Limits { rate_limit: None, ..Limits::default() };
    Ok((AppState::new(assistants, records, limits), store, key))
}

/// The server on its own runtime and threads in this process.
struct InProcess {
    addr: SocketAddr,
    key: String,
    store: Arc<SqliteStore>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    fn start(dir: &Path, fsync: bool) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("sb-bench-server")
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let started = async {
                    let (state, store, key) = server_state(&dir, fsync, false).await?;
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    anyhow::Ok((state, store, key, listener))
                }
                .await;
                let (state, store, key, listener) = match started {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(Ok((listener.local_addr()?, key, store)));
                switchboard_server::run(listener, state, async {
                    let _ = stop_rx.await;
                })
                .await?;
                anyhow::Ok(())
            })
        });
        let (addr, key, store) = ready_rx.recv().context("the server thread stopped")??;
        Ok(Self { addr, key, store, stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// CPU time (user + system) of this process and of the client's threads.
fn cpu_times() -> (Duration, Duration) {
    let ticks = |stat: &str| -> u64 {
        // Fields after the command name (which may contain spaces): utime and stime are 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    // Linux reports these in clock ticks of 1/100 s on every supported architecture.
    let to = |t: u64| Duration::from_millis(t * 10);
    let total = std::fs::read_to_string("/proc/self/stat").map(|s| ticks(&s)).unwrap_or(0);
    let mut client = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() == CLIENT_THREAD {
                client += std::fs::read_to_string(t.path().join("stat")).map(|s| ticks(&s)).unwrap_or(0);
            }
        }
    }
    (to(total), to(client))
}

/// The HTTP client of phases 1 and 2.
struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
}

/// One measured turn.
#[derive(Clone, Copy)]
struct Sample {
    /// End to end, at the client.
    e2e: Duration,
    /// The engine's time, from `Server-Timing`.
    engine: Duration,
    /// How late the client started sending, after the turn's scheduled time (zero-ish in the
    /// closed loop).
    send_delay: Duration,
}

impl Client {
    fn new(addr: SocketAddr, key: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { http, base: format!("http://{addr}"), auth: format!("Bearer {key}") })
    }

    async fn conversation(&self) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/v1/conversations", self.base))
            .header("authorization", &self.auth)
            .json(&json!({}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating a conversation: {}", r.status());
        }
        let v: Value = r.json().await?;
        v["id"].as_str().map(str::to_string).context("no conversation id")
    }

    /// Posts a turn; `Err` for a transport error or a non-2xx answer.
    async fn turn(&self, conv: &str, text: &str, since: Instant) -> anyhow::Result<Sample> {
        let send_delay = since.elapsed();
        let r = self
            .http
            .post(format!("{}/v1/conversations/{conv}/messages", self.base))
            .header("authorization", &self.auth)
            .json(&json!({"text": text}))
            .send()
            .await?;
        let status = r.status();
        let engine = r
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("dur=").nth(1))
            .and_then(|d| d.split([',', ';']).next()?.trim().parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1000.0));
        let body = r.bytes().await?;
        let e2e = since.elapsed();
        if !status.is_success() {
            bail!("turn: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(Sample { e2e, engine: engine.context("no Server-Timing header")?, send_delay })
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Percentiles (ms) of latency, engine time and overhead.
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
    engine_p50: f64,
    engine_p99: f64,
    overhead_p50: f64,
    overhead_p99: f64,
    send_delay_p50: f64,
    send_delay_p99: f64,
    /// Overhead counted from the moment the client sent (without its send delay).
    sent_overhead_p50: f64,
    sent_overhead_p99: f64,
}

impl Stats {
    fn of(samples: &[Sample]) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let sorted = |f: &dyn Fn(&Sample) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let e2e = sorted(&|s| ms(s.e2e));
        let engine = sorted(&|s| ms(s.engine));
        let overhead = sorted(&|s| ms(s.e2e.saturating_sub(s.engine)));
        let send_delay = sorted(&|s| ms(s.send_delay));
        let sent_overhead = sorted(&|s| ms(s.e2e.saturating_sub(s.send_delay).saturating_sub(s.engine)));
        Self {
            n: samples.len(),
            p50: pct(&e2e, 0.50),
            p99: pct(&e2e, 0.99),
            max: e2e.last().copied().unwrap_or(f64::NAN),
            engine_p50: pct(&engine, 0.50),
            engine_p99: pct(&engine, 0.99),
            overhead_p50: pct(&overhead, 0.50),
            overhead_p99: pct(&overhead, 0.99),
            send_delay_p50: pct(&send_delay, 0.50),
            send_delay_p99: pct(&send_delay, 0.99),
            sent_overhead_p50: pct(&sent_overhead, 0.50),
            sent_overhead_p99: pct(&sent_overhead, 0.99),
        }
    }
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Server-side costs over a phase: CPU (the process minus the client's threads) and store commits.
struct Costs {
    cpu: (Duration, Duration),
    writer: (u64, u64),
    at: Instant,
}

impl Costs {
    fn start(server: &InProcess) -> Self {
        Self { cpu: cpu_times(), writer: server.store.writer_stats(), at: Instant::now() }
    }
    /// (server CPU µs per turn, commits per turn, writes per turn, client CPU µs per turn, seconds).
    fn per_turn(&self, server: &InProcess, turns: usize) -> (f64, f64, f64, f64, f64) {
        let (total, client) = cpu_times();
        let (commits, writes) = server.store.writer_stats();
        let n = turns.max(1) as f64;
        let server_cpu = total.saturating_sub(self.cpu.0).saturating_sub(client.saturating_sub(self.cpu.1));
        (
            server_cpu.as_secs_f64() * 1e6 / n,
            (commits - self.writer.0) as f64 / n,
            (writes - self.writer.1) as f64 / n,
            client.saturating_sub(self.cpu.1).as_secs_f64() * 1e6 / n,
            self.at.elapsed().as_secs_f64(),
        )
    }
}

async fn closed_loop(
    c: &Client,
    server: &InProcess,
    clients: usize,
    seconds: f64,
    per_conv: usize,
    out: &Output,
) -> anyhow::Result<()> {
    let c = Arc::new(Client { http: c.http.clone(), base: c.base.clone(), auth: c.auth.clone() });
    let load = load_avg();
    let costs = Costs::start(server);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..clients {
        let c = c.clone();
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            let mut conv = String::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                if i.is_multiple_of(per_conv.max(1)) {
                    conv = c.conversation().await?;
                }
                let text = UTTERANCES[(w * 7 + i) % UTTERANCES.len()];
                match c.turn(&conv, text, Instant::now()).await {
                    Ok(s) => samples.push(s),
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            anyhow::Ok((samples, errors))
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (s, e) = r??;
        samples.extend(s);
        errors += e;
    }
    let (cpu_us, commits, writes, client_us, secs) = costs.per_turn(server, samples.len() + errors);
    let s = Stats::of(&samples);
    let tps = s.n as f64 / secs;
    out.line(
        json!({"bench": "server", "case": "closed_loop", "concurrency": clients, "seconds": r2(secs), "turns": s.n,
            "errors": errors, "turns_per_s": r2(tps), "p50_ms": r2(s.p50), "p99_ms": r2(s.p99), "max_ms": r2(s.max),
            "engine_p50_ms": r2(s.engine_p50), "overhead_p50_ms": r2(s.overhead_p50), "overhead_p99_ms": r2(s.overhead_p99),
            "server_cpu_us_per_turn": cpu_us.round(), "client_cpu_us_per_turn": client_us.round(),
            "commits_per_turn": r2(commits), "store_writes_per_turn": r2(writes), "load_avg_before": load}),
        format!(
            "closed loop, {clients:>3} clients: {tps:>6.0} turns/s ({} turns, {errors} errors); latency p50 {:.2} ms, p99 {:.2} ms; \
             engine p50 {:.2} ms; overhead p50 {:.2} ms, p99 {:.2} ms; server CPU {:.0} us/turn (client {:.0}); \
             {:.2} commits and {:.2} store writes per turn; load avg {load}",
            s.n, s.p50, s.p99, s.engine_p50, s.overhead_p50, s.overhead_p99, cpu_us, client_us, commits, writes
        ),
    );
    Ok(())
}

async fn open_loop(
    c: &Client,
    server: &InProcess,
    rate: u32,
    seconds: f64,
    per_conv: usize,
    out: &Output,
) -> anyhow::Result<()> {
    let total = (f64::from(rate) * seconds).round() as usize;
    // Enough conversations that each gets `per_conv` turns, spaced far apart in time.
    let n_conv = total.div_ceil(per_conv.max(1)).max(1);
    let c = Arc::new(Client { http: c.http.clone(), base: c.base.clone(), auth: c.auth.clone() });
    let mut convs = Vec::with_capacity(n_conv);
    for chunk in (0..n_conv).collect::<Vec<_>>().chunks(64) {
        let made = futures::future::try_join_all(chunk.iter().map(|_| c.conversation())).await?;
        convs.extend(made);
    }
    let convs = Arc::new(convs);
    // Warm the connection pool (one connection per request in flight) before the clock starts.
    futures::future::try_join_all((0..64).map(|i| c.turn(&convs[i % convs.len()], "hello", Instant::now()))).await?;
    let load = load_avg();
    let costs = Costs::start(server);
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // The sends are paced by a thread of their own, which sleeps with the OS timer's precision
    // (tens of µs) and spawns each turn on the client runtime at its time: the runtime's own timer
    // has a 1 ms granularity, which would make every send up to a millisecond late.
    let runtime = tokio::runtime::Handle::current();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let pacer = {
        let (c, convs, samples, errors) = (c.clone(), convs.clone(), samples.clone(), errors.clone());
        std::thread::Builder::new().name(CLIENT_THREAD.into()).spawn(move || {
            let mut late = 0usize;
            for i in 0..total {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if now > due + Duration::from_millis(1) {
                    late += 1;
                } else if due > now {
                    std::thread::sleep(due - now);
                }
                let (c, convs, samples, errors, done) =
                    (c.clone(), convs.clone(), samples.clone(), errors.clone(), done_tx.clone());
                runtime.spawn(async move {
                    let conv = &convs[i % convs.len()];
                    let text = UTTERANCES[i % UTTERANCES.len()];
                    // Measured from the scheduled time: a late send counts against the latency.
                    match c.turn(conv, text, due).await {
                        Ok(s) => lock(&samples).push(s),
                        Err(_) => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    let _ = done.send(());
                });
            }
            late
        })?
    };
    for _ in 0..total {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    let late = pacer.join().map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    let samples = std::mem::take(&mut *lock(&samples));
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let (cpu_us, commits, writes, client_us, secs) = costs.per_turn(server, samples.len() + errors);
    let s = Stats::of(&samples);
    let achieved = s.n as f64 / secs;
    out.line(
        json!({"bench": "server", "case": "open_loop", "offered_per_s": rate, "seconds": r2(secs), "turns": s.n,
            "errors": errors, "achieved_per_s": r2(achieved), "late_sends": late,
            "p50_ms": r2(s.p50), "p99_ms": r2(s.p99), "max_ms": r2(s.max),
            "engine_p50_ms": r2(s.engine_p50), "engine_p99_ms": r2(s.engine_p99),
            "overhead_p50_ms": r2(s.overhead_p50), "overhead_p99_ms": r2(s.overhead_p99),
            "send_delay_p50_ms": r2(s.send_delay_p50), "send_delay_p99_ms": r2(s.send_delay_p99),
            "overhead_from_send_p50_ms": r2(s.sent_overhead_p50), "overhead_from_send_p99_ms": r2(s.sent_overhead_p99),
            "server_cpu_us_per_turn": cpu_us.round(), "client_cpu_us_per_turn": client_us.round(),
            "commits_per_turn": r2(commits), "store_writes_per_turn": r2(writes), "load_avg_before": load}),
        format!(
            "open loop, {rate} turns/s offered for {seconds} s: {achieved:.0} turns/s done ({} turns, {errors} errors, {late} sends late); \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; engine p50 {:.2} ms, p99 {:.2} ms; \
             API overhead p50 {:.2} ms, p99 {:.2} ms (from the send: p50 {:.2} ms, p99 {:.2} ms; send delay p50 {:.2} ms, p99 {:.2} ms); \
             server CPU {:.0} us/turn (client {:.0}); {:.2} commits per turn; load avg {load}",
            s.n, s.p50, s.p99, s.max, s.engine_p50, s.engine_p99, s.overhead_p50, s.overhead_p99, s.sent_overhead_p50,
            s.sent_overhead_p99, s.send_delay_p50, s.send_delay_p99, cpu_us, client_us, commits
        ),
    );
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raises the open-files limit to at least `want` (the hard limit too, when allowed).
fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(soft);
    }
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return Ok(want);
    }
    let new = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard)?;
    Ok(new)
}

/// Resident set size of a process, bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// The memory phase's server: serves until its standard input closes.
fn serve_child(dir: &Path, fsync: bool) -> anyhow::Result<()> {
    raise_nofile(65_536)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let (state, _store, key) = server_state(dir, fsync, true).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("ready {} {key}", listener.local_addr()?);
        use std::io::Write as _;
        std::io::stdout().flush()?;
        // When the parent closes our standard input, exit at once: the slow runs would keep a
        // graceful shutdown waiting, and the parent is done with us.
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
        switchboard_server::run(listener, state, std::future::pending()).await?;
        anyhow::Ok(())
    })
}

/// Opens one stream: a turn with `Accept: text/event-stream`, read up to its first event.
async fn open_stream(
    addr: SocketAddr,
    source: std::net::Ipv4Addr,
    key: &str,
    conv: &str,
) -> anyhow::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    let mut s = tokio::time::timeout(Duration::from_secs(30), sock.connect(addr)).await??;
    s.set_nodelay(true)?;
    let body = r#"{"text":"I lost my card"}"#;
    let req = format!(
        "POST /v1/conversations/{conv}/messages HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {key}\r\n\
         accept: text/event-stream\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed before the first event");
            }
            buf.extend_from_slice(&chunk[..n]);
            if !buf.starts_with(b"HTTP/1.1 200") && buf.len() >= 12 {
                bail!("{}", String::from_utf8_lossy(&buf).lines().next().unwrap_or(""));
            }
            if buf.windows(7).any(|w| w == b"\nevent:") || buf.windows(6).any(|w| w == b"event:") {
                return anyhow::Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await??;
    Ok(s)
}

fn memory(streams: usize, fsync: bool, out: &Output) -> anyhow::Result<()> {
    let limit = raise_nofile(streams as u64 + 4096)?;
    if limit < streams as u64 + 256 {
        bail!("the open-files limit is {limit}: too low for {streams} streams");
    }
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe().context("locating the switchboard binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["bench", "server", "--serve-child"])
        .arg(dir.path())
        .args(if fsync { &[][..] } else { &["--no-fsync"][..] })
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the server child")?;
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some("ready"), Some(addr), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        let _ = child.kill();
        bail!("the server child did not start: {line:?}");
    };
    let addr: SocketAddr = addr.parse()?;
    let key = key.to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let result = rt.block_on(async {
        let c = Arc::new(Client::new(addr, &key)?);
        let mut convs = Vec::with_capacity(streams);
        for chunk in (0..streams).collect::<Vec<_>>().chunks(64) {
            let made = futures::future::try_join_all(chunk.iter().map(|_| async {
                let r = c
                    .http
                    .post(format!("{}/v1/conversations", c.base))
                    .header("authorization", &c.auth)
                    .json(&json!({"assistant": "support-slow"}))
                    .send()
                    .await?;
                let v: Value = r.json().await?;
                v["id"].as_str().map(str::to_string).context("no conversation id")
            }))
            .await?;
            convs.extend(made);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss(pid)?;
        let load = load_avg();
        let t0 = Instant::now();
        let key = Arc::new(key);
        let open = futures::stream::iter(convs.into_iter().enumerate().map(|(i, conv)| {
            let key = key.clone();
            // Several loopback source addresses, so the client never runs out of ports.
            let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8);
            async move { open_stream(addr, source, &key, &conv).await }
        }));
        use futures::StreamExt as _;
        let results: Vec<_> = open.buffer_unordered(256).collect().await;
        let open_secs = t0.elapsed().as_secs_f64();
        let mut held = Vec::with_capacity(streams);
        let mut first_error = None;
        for r in results {
            match r {
                Ok(s) => held.push(s),
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let with = rss(pid)?;
        let opened = held.len();
        let delta = with.saturating_sub(before);
        let per = delta as f64 / opened.max(1) as f64;
        let mib = |b: u64| r2(b as f64 / (1 << 20) as f64);
        out.line(
            json!({"bench": "server", "case": "sse_memory", "streams": streams, "opened": opened,
                "open_seconds": r2(open_secs), "rss_before_mib": mib(before), "rss_with_streams_mib": mib(with),
                "rss_delta_mib": mib(delta), "bytes_per_stream": per.round(), "first_error": first_error,
                "load_avg_before": load}),
            format!(
                "memory: {opened} of {streams} SSE streams open (in {open_secs:.1} s); server RSS {:.1} MiB before, {:.1} MiB with them: \
                 +{:.1} MiB, {:.0} bytes per stream (turn in flight, its event log, the stream, the connection); load avg {load}{}",
                mib(before),
                mib(with),
                mib(delta),
                per,
                first_error.as_ref().map(|e| format!(" (first error: {e})")).unwrap_or_default()
            ),
        );
        drop(held);
        anyhow::Ok(())
    });
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}
