//! `bench providers`: what the provider layer costs, measured against a zero-latency fake.
//!
//! - **Overhead per call**: the same non-streamed request sent (a) by a bare `reqwest` client
//!   that only reads the bytes, (b) through the OpenAI adapter, (c) through the adapter wrapped
//!   in the production stack (timeout, breaker, retry, metering). Calls are interleaved so
//!   drift hits all three alike; overhead is the difference of percentiles.
//! - **Streaming throughput**: text-delta events per second through the adapter for one long
//!   streamed reply with no pacing.
//! - **Memory per 1,000 concurrent streams**: resident memory of this process before and while
//!   N streams are open (each has received its first event and is held open by a paced fake).
//!
//! The fake runs as a separate process (the `switchboard fake-llm` binary) when one is given,
//! so its memory and file descriptors are not counted here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use switchboard_providers::cost::{Budgets, Metered, PriceTable};
use switchboard_providers::openai::{OpenAiConfig, OpenAiModel};
use switchboard_providers::resilience::{BreakerRegistry, ChatModelExt, RetryPolicy, TimeoutPolicy};
use switchboard_providers::{CancellationToken, ChatModel, ChatRequest, StreamEvent};

use crate::script::{Reply, Scenario};
use crate::server::{FakeServer, FakeState};
use crate::vendor::Vendor;

/// Bench settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `switchboard` binary to run the fake from; in-process when `None`.
    pub fake_binary: Option<std::path::PathBuf>,
    /// Measured calls per variant.
    pub calls: usize,
    /// Tokens in the streamed reply.
    pub stream_tokens: usize,
    /// Concurrent stream counts to try.
    pub concurrency: Vec<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { fake_binary: None, calls: 2_000, stream_tokens: 50_000, concurrency: vec![1_000, 10_000] }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// The per-call overhead section.
#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    /// Measured calls per variant.
    pub calls: usize,
    /// Bare HTTP round trip.
    pub raw_http: Percentiles,
    /// Through the adapter.
    pub adapter: Percentiles,
    /// Through the adapter and the resilience + metering stack.
    pub full_stack: Percentiles,
    /// adapter - raw, at p50 and p99.
    pub adapter_overhead: Percentiles,
    /// full stack - raw, at p50 and p99.
    pub full_stack_overhead: Percentiles,
    /// Percentiles of the per-iteration difference adapter - raw (same iteration, back to
    /// back); noisier than it looks on a shared machine, shown for completeness.
    pub adapter_minus_raw_paired: Percentiles,
    /// The resilience + metering stack (timeout, breaker, retry, fallback, metering, limits)
    /// over an in-memory model that answers at once: the layers' own cost, no network.
    pub layers_only: Percentiles,
}

/// The streaming section.
#[derive(Debug, Clone, Serialize)]
pub struct Streaming {
    /// Text-delta events received.
    pub tokens: usize,
    /// Wall time.
    pub seconds: f64,
    /// Events per second through the adapter.
    pub tokens_per_second: f64,
}

/// One concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct Concurrency {
    /// Streams attempted.
    pub streams: usize,
    /// Streams that delivered their first event.
    pub opened: usize,
    /// Streams that failed to open, with the first error.
    pub failed: usize,
    /// First error seen, if any.
    pub first_error: Option<String>,
    /// Seconds until every stream was open (or failed).
    pub open_seconds: f64,
    /// Resident memory added while the streams were open, in KiB.
    pub rss_delta_kib: u64,
    /// That, per 1,000 open streams.
    pub kib_per_1000_streams: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Per-call overhead.
    pub overhead: Overhead,
    /// Streaming throughput.
    pub streaming: Streaming,
    /// Concurrent streams.
    pub concurrency: Vec<Concurrency>,
    /// Worker threads of the client runtime.
    pub client_threads: usize,
    /// Where the fake ran.
    pub fake: &'static str,
}

/// Errors running the bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The fake could not be started.
    #[error("fake: {0}")]
    Fake(String),
    /// A model call failed where it must not.
    #[error("call failed: {0}")]
    Call(#[from] switchboard_providers::ProviderError),
    /// HTTP to the fake failed.
    #[error("http: {0}")]
    Http(String),
}

/// The fake, in a child process or in-process.
enum Fake {
    Child(Child, String),
    InProcess(FakeServer),
}

impl Fake {
    async fn start(binary: Option<&std::path::Path>) -> Result<Self, BenchError> {
        match binary {
            Some(bin) => {
                let mut child = Command::new(bin)
                    .args(["fake-llm", "--vendor", "openai", "--addr", "127.0.0.1:0", "--no-record"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| BenchError::Fake(e.to_string()))?;
                let stdout = child.stdout.take().ok_or_else(|| BenchError::Fake("no stdout".into()))?;
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map_err(|e| BenchError::Fake(e.to_string()))?;
                let url = line
                    .trim()
                    .strip_prefix("listening on ")
                    .ok_or_else(|| BenchError::Fake(format!("unexpected output {line:?}")))?
                    .to_owned();
                Ok(Self::Child(child, url))
            }
            None => {
                let server =
                    FakeServer::start_with(Arc::new(FakeState::without_recording(Vendor::OpenAi)), "127.0.0.1:0")
                        .await
                        .map_err(|e| BenchError::Fake(e.to_string()))?;
                Ok(Self::InProcess(server))
            }
        }
    }

    fn base_url(&self) -> String {
        match self {
            Self::Child(_, url) => url.clone(),
            Self::InProcess(s) => s.base_url(),
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Self::Child(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Percentiles { p50_us: at(0.50), p99_us: at(0.99), mean_us: v.iter().sum::<f64>() / v.len() as f64 }
}

fn diff(a: &Percentiles, b: &Percentiles) -> Percentiles {
    Percentiles { p50_us: a.p50_us - b.p50_us, p99_us: a.p99_us - b.p99_us, mean_us: a.mean_us - b.mean_us }
}

/// Resident set size of this process in KiB (Linux; 0 elsewhere).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn script(client: &reqwest::Client, base: &str, scenarios: &[Scenario]) -> Result<(), BenchError> {
    client
        .post(format!("{base}/_fake/script"))
        .json(scenarios)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| BenchError::Http(e.without_url().to_string()))?;
    Ok(())
}

fn model(base: &str, client: reqwest::Client) -> OpenAiModel {
    let mut cfg = OpenAiConfig::new("gpt-bench").base_url(format!("{base}/v1")).api_key("sk-bench");
    cfg.request_timeout = Duration::from_secs(120);
    OpenAiModel::with_client(cfg, client)
}

/// Runs the bench.
///
/// # Errors
/// [`BenchError`] when the fake cannot be started or a call that must succeed fails.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let fake = Fake::start(opts.fake_binary.as_deref()).await?;
    let base = fake.base_url();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| BenchError::Http(e.to_string()))?;

    // --- Overhead per call -------------------------------------------------------------
    let adapter = model(&base, client.clone());
    let stack = Metered::new(
        model(&base, client.clone())
            .with_timeout(TimeoutPolicy::default())
            .with_breaker(BreakerRegistry::default())
            .with_retry(RetryPolicy::default()),
        Arc::new(PriceTable::new()),
        Budgets::new(Some(u64::MAX), None),
    );
    let req = ChatRequest {
        system: Some("You are a support assistant.".into()),
        max_tokens: Some(64),
        ..ChatRequest::user("Where is my withdrawal?")
    };
    let raw_body = serde_json::json!({"model": "gpt-bench", "max_completion_tokens": 64, "stream": false,
        "messages": [{"role": "system", "content": "You are a support assistant."},
                     {"role": "user", "content": "Where is my withdrawal?"}]});
    let raw_url = format!("{base}/v1/chat/completions");
    let raw_call = || async {
        let r = client
            .post(&raw_url)
            .bearer_auth("sk-bench")
            .json(&raw_body)
            .send()
            .await
            .map_err(|e| BenchError::Http(e.without_url().to_string()))?;
        r.bytes().await.map_err(|e| BenchError::Http(e.without_url().to_string()))?;
        Ok::<_, BenchError>(())
    };
    let warmup = (opts.calls / 10).max(50);
    for _ in 0..warmup {
        raw_call().await?;
        adapter.chat(req.clone(), CancellationToken::new()).await?;
        stack.chat(req.clone(), CancellationToken::new()).await?;
    }
    let (mut raw, mut ad, mut full) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..opts.calls {
        let t = Instant::now();
        raw_call().await?;
        raw.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        adapter.chat(req.clone(), CancellationToken::new()).await?;
        ad.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        stack.chat(req.clone(), CancellationToken::new()).await?;
        full.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let paired: Vec<f64> = ad.iter().zip(&raw).map(|(a, r)| a - r).collect();
    let (raw, ad, full) = (percentiles(raw), percentiles(ad), percentiles(full));
    let layers_only = layers_only(opts.calls * 10).await?;
    let overhead = Overhead {
        calls: opts.calls,
        adapter_minus_raw_paired: percentiles(paired),
        layers_only,
        adapter_overhead: diff(&ad, &raw),
        full_stack_overhead: diff(&full, &raw),
        raw_http: raw,
        adapter: ad,
        full_stack: full,
    };

    // --- Streaming throughput ----------------------------------------------------------
    let text: String = (0..opts.stream_tokens).map(|i| format!(" w{i}")).collect();
    script(&client, &base, &[Scenario::reply(Reply::text(text))]).await?;
    let t = Instant::now();
    let mut s = adapter.stream(req.clone(), CancellationToken::new()).await?;
    let mut tokens = 0;
    while let Some(ev) = s.next().await {
        if let StreamEvent::TextDelta { .. } = ev? {
            tokens += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let streaming = Streaming { tokens, seconds: secs, tokens_per_second: tokens as f64 / secs };

    // --- Concurrent streams ------------------------------------------------------------
    let mut concurrency = Vec::new();
    for &n in &opts.concurrency {
        concurrency.push(concurrent(&client, &base, &req, n).await?);
    }
    Ok(BenchReport {
        overhead,
        streaming,
        concurrency,
        client_threads: tokio::runtime::Handle::current().metrics().num_workers(),
        fake: if opts.fake_binary.is_some() { "child process" } else { "in process" },
    })
}

/// A model that answers at once, to time the layers alone.
struct InstantModel {
    id: switchboard_providers::ModelId,
    reply: switchboard_providers::ChatResponse,
}

impl ChatModel for InstantModel {
    fn id(&self) -> &switchboard_providers::ModelId {
        &self.id
    }

    async fn chat(
        &self,
        _req: ChatRequest,
        _cancel: CancellationToken,
    ) -> Result<switchboard_providers::ChatResponse, switchboard_providers::ProviderError> {
        Ok(self.reply.clone())
    }

    async fn stream(
        &self,
        _req: ChatRequest,
        _cancel: CancellationToken,
    ) -> Result<switchboard_providers::EventStream, switchboard_providers::ProviderError> {
        Ok(Box::pin(futures::stream::iter([Ok(StreamEvent::Finish {
            reason: switchboard_providers::FinishReason::Stop,
        })])))
    }
}

async fn layers_only(calls: usize) -> Result<Percentiles, BenchError> {
    use switchboard_providers::resilience::{Fallback, TenantLimiter};
    let instant = InstantModel {
        id: switchboard_providers::ModelId::new("instant", "m"),
        reply: switchboard_providers::ChatResponse {
            id: Some("r".into()),
            model: Some("m".into()),
            text: "Your withdrawal is on its way.".into(),
            tool_calls: Vec::new(),
            finish_reason: switchboard_providers::FinishReason::Stop,
            usage: switchboard_providers::Usage { input_tokens: 20, output_tokens: 8, ..Default::default() },
        },
    };
    let mut prices = PriceTable::new();
    prices.insert(
        "instant/*",
        switchboard_providers::cost::Price {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
            cache_read_per_mtok: None,
            cache_write_per_mtok: None,
        },
    );
    let chain = Fallback::new(vec![
        instant
            .with_timeout(TimeoutPolicy::default())
            .with_breaker(BreakerRegistry::default())
            .with_retry(RetryPolicy::default())
            .boxed(),
    ])?;
    let stack = Metered::new(chain, Arc::new(prices), Budgets::new(Some(u64::MAX), Some(u64::MAX)))
        .with_concurrency_limit(1024)
        .with_tenant_limit(TenantLimiter::new(u32::MAX, 1e12));
    let mut req = ChatRequest::user("Where is my withdrawal?");
    req.metadata.tenant = Some("acme".into());
    req.metadata.conversation = Some("c1".into());
    for _ in 0..calls / 10 {
        stack.chat(req.clone(), CancellationToken::new()).await?;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        stack.chat(req.clone(), CancellationToken::new()).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(percentiles(times))
}

async fn concurrent(
    client: &reqwest::Client,
    base: &str,
    req: &ChatRequest,
    n: usize,
) -> Result<Concurrency, BenchError> {
    // Each stream: 40 tokens one second apart, so all stay open while we measure.
    let text: String = (0..40).map(|i| format!(" t{i}")).collect();
    let scenarios: Vec<Scenario> =
        (0..n).map(|_| Scenario { token_delay_ms: 1_000, ..Scenario::reply(Reply::text(text.clone())) }).collect();
    for batch in scenarios.chunks(1_000) {
        script(client, base, batch).await?;
    }
    // A fresh client so pooled connections from earlier phases do not blur the numbers.
    let stream_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| BenchError::Http(e.to_string()))?;
    let m = Arc::new(model(base, stream_client));
    let before = rss_kib();
    let hold = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let m = m.clone();
        let tx = tx.clone();
        let hold = hold.clone();
        let req = req.clone();
        tasks.spawn(async move {
            match m.stream(req, hold.clone()).await {
                Ok(mut s) => match s.next().await {
                    Some(Ok(_)) => {
                        let _ = tx.send(Ok(())).await;
                        hold.cancelled().await;
                        drop(s);
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e.to_string())).await;
                    }
                    None => {
                        let _ = tx.send(Err("empty stream".into())).await;
                    }
                },
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                }
            }
        });
    }
    drop(tx);
    let (mut opened, mut failed, mut first_error) = (0, 0, None);
    while opened + failed < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(Ok(()))) => opened += 1,
            Ok(Some(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Ok(None) => break,
            Err(_) => {
                first_error.get_or_insert_with(|| "timed out waiting for streams to open".into());
                break;
            }
        }
    }
    let open_seconds = t.elapsed().as_secs_f64();
    let during = rss_kib();
    hold.cancel();
    while tasks.join_next().await.is_some() {}
    let delta = during.saturating_sub(before);
    Ok(Concurrency {
        streams: n,
        opened,
        failed: n - opened,
        first_error,
        open_seconds,
        rss_delta_kib: delta,
        kib_per_1000_streams: if opened > 0 { delta as f64 * 1000.0 / opened as f64 } else { 0.0 },
    })
}
