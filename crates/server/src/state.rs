//! What every handler shares: the assistants (name → engine), the records, limits, the live
//! event fan-out of runs in flight, and the shutdown machinery.

use crate::auth::jwt::JwtVerifier;
use crate::turns::Live;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_engine::{Engine, Update};
use switchboard_store::records::ApiKeyRecord;
use switchboard_store::{AuditEvent, AuditLog, Records};
use switchboard_telemetry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Turns a customer's message (text and metadata) into the assistant's input update.
pub type InputFn = Arc<dyn Fn(&str, &Value) -> Update + Send + Sync>;

/// One assistant the server can run. The server knows nothing of its graph beyond
/// [`switchboard_engine::Graph::describe`], its input function, and the convention that the
/// conversation's messages are in a `messages` field.
#[derive(Clone)]
pub struct Assistant {
    /// Human-readable description.
    pub description: String,
    /// Version string.
    pub version: String,
    /// The engine that runs its graph.
    pub engine: Engine,
    /// How a customer message becomes input.
    pub input: InputFn,
}

/// The assistants, by name, with a default.
#[derive(Clone)]
pub struct Assistants {
    default: String,
    map: BTreeMap<String, Arc<Assistant>>,
    resume: BTreeMap<String, ResumeFn>,
    recorders: BTreeMap<String, Arc<dyn TurnRecorder>>,
}

/// Records the turns of an assistant's conversations (cassettes, for `switchboard eval replay`).
/// The server calls it at the end of every successful turn it runs in process and stores what
/// it returns with the conversation (deleted with it).
pub trait TurnRecorder: Send + Sync {
    /// The turn to store (JSON, already redacted), from the input the run processed, the
    /// conversation's state before and after it and the payloads of the interrupts pending
    /// after it; `None` when the turn is not one to record (a desk action, a failed turn).
    fn record(
        &self,
        conversation: &str,
        input: &switchboard_engine::Input,
        before: &Value,
        after: &Value,
        interrupts: &[Value],
        latency: Duration,
    ) -> Option<Value>;

    /// Drops what was logged for a conversation's turn that will not be recorded.
    fn discard(&self, conversation: &str);
}

/// Turns a customer's message into the value that resumes a pending interrupt, for assistants
/// whose flows keep listening while they wait (e.g. an approval that a "cancel" or a correction
/// must reach).
pub type ResumeFn = Arc<dyn Fn(&str, &Value) -> Value + Send + Sync>;

impl Assistants {
    /// A registry whose default (and first) assistant is `name`.
    pub fn new(name: impl Into<String>, assistant: Assistant) -> Self {
        let name = name.into();
        let mut map = BTreeMap::new();
        map.insert(name.clone(), Arc::new(assistant));
        Self { default: name, map, resume: BTreeMap::new(), recorders: BTreeMap::new() }
    }
    /// Messages to a conversation of assistant `name` that waits on an interrupt resume it with
    /// `f(text, metadata)` instead of being refused with 409 `interrupt_pending`.
    pub fn with_message_resume(mut self, name: impl Into<String>, f: ResumeFn) -> Self {
        self.resume.insert(name.into(), f);
        self
    }
    /// The message-resume function of an assistant, if it has one.
    pub fn message_resume(&self, name: &str) -> Option<&ResumeFn> {
        self.resume.get(name)
    }
    /// Records the turns of assistant `name` with `r`.
    pub fn with_recorder(mut self, name: impl Into<String>, r: Arc<dyn TurnRecorder>) -> Self {
        self.recorders.insert(name.into(), r);
        self
    }
    /// The recorder of an assistant, when its turns are recorded.
    pub fn recorder(&self, name: &str) -> Option<&Arc<dyn TurnRecorder>> {
        self.recorders.get(name)
    }
    /// Adds another assistant.
    pub fn with(mut self, name: impl Into<String>, assistant: Assistant) -> Self {
        self.map.insert(name.into(), Arc::new(assistant));
        self
    }
    /// The default assistant's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }
    /// An assistant by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Assistant>> {
        self.map.get(name)
    }
    /// All, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Assistant>)> {
        self.map.iter()
    }
}

/// A per-key token bucket: `per_second` requests on average, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Largest burst.
    pub burst: u32,
}

/// Limits and timeouts of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Origins allowed by CORS (`*` for any; empty: no CORS headers, browsers on other origins
    /// are refused).
    pub cors_origins: Vec<String>,
    /// Per-API-key rate limit (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a request may take before a response starts (streams are not cut).
    pub request_timeout: Duration,
    /// How long shutdown lets runs in flight finish before cancelling them.
    pub shutdown_deadline: Duration,
}

/// Default of [`Limits::max_body_bytes`] (256 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 << 10;
/// Default of [`Limits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Limits::shutdown_deadline`].
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            rate_limit: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) assistants: Assistants,
    pub(crate) records: Records,
    pub(crate) limits: Limits,
    /// Runs in flight: their live event logs.
    pub(crate) live: Mutex<HashMap<String, Arc<Live>>>,
    /// The tasks that record runs.
    pub(crate) tasks: TaskTracker,
    /// Cancelled when streams must end (the end of shutdown).
    pub(crate) closing: CancellationToken,
    /// The metrics `/metrics` renders.
    pub(crate) metrics: Registry,
    /// Rate-limit buckets by key id: (tokens, last refill).
    pub(crate) buckets: Mutex<HashMap<String, (f64, Instant)>>,
    /// API keys found recently, by hash, with when they were read.
    pub(crate) keys: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
    /// JWT bearer verification, when configured.
    pub(crate) jwt: Option<Arc<JwtVerifier>>,
    /// The hash-chained audit log, when configured.
    pub(crate) audit: Option<AuditLog>,
    /// Replicas on PostgreSQL: the shared runs queue, workers, Redis (`None`: turns run here).
    pub(crate) dist: Option<Arc<crate::dist::Distributed>>,
}

/// How long a key read from the store is trusted without reading it again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most keys cached (the cache is emptied when full).
const KEY_CACHE_MAX: usize = 10_000;

/// The server's shared state.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

impl AppState {
    /// State over assistants and records.
    pub fn new(assistants: Assistants, records: Records, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                assistants,
                records,
                limits,
                live: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                closing: CancellationToken::new(),
                buckets: Mutex::new(HashMap::new()),
                metrics: {
                    let r = Registry::new();
                    declare_metrics(&r);
                    r
                },
                keys: Mutex::new(HashMap::new()),
                jwt: None,
                audit: None,
                dist: None,
            }),
        }
    }

    /// The same state rendering `registry` at `/metrics` (the registry the process's span layer
    /// feeds, [`switchboard_telemetry::metrics::global`] in the binary); by default a registry of
    /// its own, which only the server's counters move. Call before the state is shared.
    #[must_use]
    pub fn with_metrics(mut self, registry: Registry) -> Self {
        declare_metrics(&registry);
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = registry;
        }
        self
    }

    /// The registry `/metrics` renders (e.g. for the runtime queue to set its gauges).
    pub fn metrics(&self) -> &Registry {
        &self.inner.metrics
    }

    /// State over assistants and records that also accepts JWT bearer tokens.
    pub fn with_jwt(assistants: Assistants, records: Records, limits: Limits, jwt: JwtVerifier) -> Self {
        let mut s = Self::new(assistants, records, limits);
        if let Some(inner) = Arc::get_mut(&mut s.inner) {
            inner.jwt = Some(Arc::new(jwt));
        }
        s
    }

    /// The same state, recording deletions, erasures, approvals and key changes in `log`. Call it
    /// before the state is shared (cloned).
    #[must_use]
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.audit = Some(log);
        }
        self
    }

    /// Runs turns through the shared queue of `dist` (replicas on PostgreSQL) instead of in this
    /// process. Call before the state is cloned; then [`crate::dist::start`] starts the workers.
    pub fn with_distributed(mut self, dist: crate::dist::Distributed) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.dist = Some(Arc::new(dist));
        }
        self
    }

    /// Appends to the audit log when there is one.
    ///
    /// # Errors
    /// [`crate::ApiError::Unavailable`] when the log cannot be written.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), crate::ApiError> {
        if let Some(log) = &self.inner.audit {
            log.append(event).await.map_err(|e| crate::ApiError::Unavailable(format!("audit log: {e}")))?;
        }
        Ok(())
    }

    /// The distributed runtime, when the state has one.
    pub fn distributed(&self) -> Option<&Arc<crate::dist::Distributed>> {
        self.inner.dist.as_ref()
    }

    /// The API key with this hash: from a short-lived cache (a key is read from the store at most
    /// once per [`KEY_CACHE_TTL`]), unknown hashes always from the store.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) async fn key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, switchboard_engine::StoreError> {
        if let Some((rec, at)) = lock(&self.inner.keys).get(hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(Some(rec.clone()));
        }
        let rec = self.inner.records.key_by_hash(hash).await?;
        if let Some(r) = &rec {
            let mut keys = lock(&self.inner.keys);
            if keys.len() >= KEY_CACHE_MAX {
                keys.clear();
            }
            keys.insert(hash.to_string(), (r.clone(), Instant::now()));
        }
        Ok(rec)
    }

    /// The records.
    pub fn records(&self) -> &Records {
        &self.inner.records
    }

    /// Appends a recorded turn (JSON from a [`TurnRecorder`] or the like) to a conversation's
    /// cassette. A failure is logged, not returned: the turn itself has happened.
    pub async fn store_cassette_turn(
        &self,
        (tenant, conversation): (&str, &str),
        assistant: &str,
        customer_id: Option<&str>,
        turn: Value,
    ) {
        let rec = switchboard_store::records::CassetteRecord {
            tenant: tenant.to_string(),
            conversation_id: conversation.to_string(),
            seq: 0,
            assistant: assistant.to_string(),
            customer_id: customer_id.map(str::to_string),
            turn,
            created_at_ms: now_ms(),
        };
        if let Err(e) = self.inner.records.append_cassette_turn(&rec).await {
            tracing::warn!(error = %e, conversation_id = %conversation, "could not store a recorded turn");
        }
    }

    /// The assistants.
    pub fn assistants(&self) -> &Assistants {
        &self.inner.assistants
    }

    /// The limits of the HTTP layer.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Takes one token from a key's bucket.
    ///
    /// # Errors
    /// [`crate::ApiError::RateLimited`] with the seconds until the next token.
    pub(crate) async fn take_token(&self, key_id: &str) -> Result<(), crate::ApiError> {
        let Some(limit) = self.inner.limits.rate_limit else { return Ok(()) };
        // Replicas share buckets in Redis; without it each replica counts on its own.
        if let Some(d) = &self.inner.dist
            && let Some(r) = d.take_token(key_id, limit.per_second, limit.burst).await
        {
            return r;
        }
        let now = Instant::now();
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = lock(&self.inner.buckets);
        let (tokens, last) = buckets.entry(key_id.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * limit.per_second).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - *tokens) / limit.per_second.max(f64::MIN_POSITIVE);
        Err(crate::ApiError::RateLimited { retry_after_secs: wait.ceil().max(1.0) as u64 })
    }

    /// Lets runs in flight finish (or checkpoint and cancel them at the deadline), waits until
    /// their results are recorded, then ends open streams. Returns how many runs were cancelled.
    pub async fn drain(&self) -> usize {
        let deadline = self.inner.limits.shutdown_deadline;
        let mut cancelled = 0;
        if let Some(d) = &self.inner.dist {
            // Runs not done by the deadline are left to another replica (their lease expires).
            cancelled += d.shutdown(deadline).await;
        }
        let engines: Vec<Engine> = self.inner.assistants.iter().map(|(_, a)| a.engine.clone()).collect();
        for n in futures::future::join_all(engines.iter().map(|e| e.shutdown(deadline))).await {
            cancelled += n;
        }
        self.inner.tasks.close();
        let _ = tokio::time::timeout(deadline + Duration::from_secs(5), self.inner.tasks.wait()).await;
        self.inner.closing.cancel();
        cancelled
    }
}

/// HTTP responses by status class (metric name).
pub(crate) const HTTP_RESPONSES: &str = "switchboard_http_responses_total";
/// Turns running now (metric name).
pub(crate) const RUNS_IN_FLIGHT: &str = "switchboard_runs_in_flight";
/// Runs this replica's queue workers finished, by status (metric name).
pub(crate) const WORKER_RUNS: &str = "switchboard_worker_runs_total";

/// The metrics `/metrics` renders: the server's own (HTTP responses, runs in flight, feedback)
/// next to those the span layer derives from every turn's spans into the same registry.
pub(crate) fn declare_metrics(registry: &Registry) {
    switchboard_telemetry::MetricsSink::declare(registry);
    registry
        .counter(HTTP_RESPONSES, "HTTP responses by status class.")
        .gauge(RUNS_IN_FLIGHT, "Turns running now.")
        .counter(WORKER_RUNS, "Runs from the shared queue that this replica's workers finished, by status.");
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A random hex string of `bytes` bytes of OS entropy.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS entropy source failing is unrecoverable for a server that mints keys.
    getrandom::fill(&mut buf).expect("the OS entropy source is available");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
