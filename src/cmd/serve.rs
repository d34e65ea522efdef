//! `switchboard serve`: the HTTP API on the embedded SQLite store, or (with a database URL) as
//! one of several replicas sharing a PostgreSQL database and, optionally, Redis.
//!
//! Config in two stages (STYLE.md "Config"): a serde [`RawConfig`] from one TOML file, then
//! `SWITCHBOARD_*` environment overrides, then command-line flags, validated by
//! [`Config::from_raw`] into typed values with errors that name the setting. With no config at
//! all it runs on `./data/switchboard.sqlite` and prints a generated admin key at first start.

use crate::support::{self, SupportOptions};
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchboard_assistant::{AssistantOptions, ExchangeAssistant, Runtime};
use switchboard_engine::{CheckpointStore, ContextStore, Engine, EngineConfig, Graph};
use switchboard_interop::a2a::client::{RemoteAgent, RemoteAgentConfig};
use switchboard_providers::resilience::{BreakerConfig, BreakerRegistry};
use switchboard_server::auth::jwt::{JwksSource, JwtConfig, JwtVerifier};
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::erasure::{self, Retention};
use switchboard_server::{AppState, Assistant, Assistants, DistConfig, Distributed, Limits, RateLimit};
use switchboard_store::{AuditLog, FencedStore, PgConfig, PgStore, Records, SqliteConfig, SqliteStore};

/// Default listen address.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Default data directory.
const DEFAULT_DATA_DIR: &str = "data";
/// The database file inside the data directory.
const DB_FILE: &str = "switchboard.sqlite";
/// Default per-key rate limit (requests per second, burst).
const DEFAULT_RATE_LIMIT: (f64, u32) = (100.0, 200);
/// Default folder of assistant configs.
const DEFAULT_ASSISTANTS_DIR: &str = "assistants";
/// The reference assistant, served as the default.
const REFERENCE_ASSISTANT: &str = "exchange-support";

/// The tenant of the admin key generated at first start.
const FIRST_TENANT: &str = "default";

/// Options of `switchboard serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// A TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, HOST:PORT (overrides the config and SWITCHBOARD_ADDR).
    #[arg(long)]
    addr: Option<String>,
    /// Data directory (overrides the config and SWITCHBOARD_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL: run as a replica on this database instead of SQLite (overrides the config
    /// and SWITCHBOARD_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// Redis URL for cross-replica events, cancels and rate limits (overrides the config and
    /// SWITCHBOARD_REDIS_URL; only with a database URL).
    #[arg(long)]
    redis_url: Option<String>,
}

/// The config file as written (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    addr: Option<String>,
    data_dir: Option<PathBuf>,
    max_body_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
    shutdown_deadline_ms: Option<u64>,
    /// Fake LLM latency of the demo support assistant.
    llm_latency_ms: Option<u64>,
    /// fsync every commit of the SQLite store.
    fsync: Option<bool>,
    /// Sustained requests per second per API key (0: unlimited).
    rate_limit_per_second: Option<f64>,
    /// Burst per API key.
    rate_limit_burst: Option<u32>,
    /// CORS origins (`*`: any).
    cors_origins: Option<Vec<String>>,
    /// JWT bearer tokens (off when absent).
    jwt: Option<RawJwt>,
    /// External A2A agents, each served as an assistant that delegates every turn to it.
    remote_agents: Option<Vec<RawRemoteAgent>>,
    /// Where assistant configs live (`<dir>/exchange-support/assistant.toml`).
    assistants_dir: Option<PathBuf>,
    /// How long conversations are kept after their last activity (kept forever when absent).
    retention: Option<RawRetention>,
    /// Vendor LLMs of the reference assistant.
    llm: Option<RawLlm>,
    /// PostgreSQL URL: replicas share it (SQLite in `data_dir` when absent).
    database_url: Option<String>,
    /// PostgreSQL schema of every table (created if missing; the server's search path when absent).
    database_schema: Option<String>,
    /// Redis URL (optional, with `database_url`).
    redis_url: Option<String>,
    /// Prefix of Redis keys and channels (the replicas of one service share it).
    redis_prefix: Option<String>,
    /// Turns a replica executes at once (with `database_url`).
    worker_concurrency: Option<usize>,
    /// Recording of turns as cassettes (for `switchboard eval export` / `eval replay`).
    recording: Option<RawRecording>,
}

/// The `[recording]` table: `enabled = true` (or `SWITCHBOARD_RECORDING=on`) stores every turn's
/// LLM and tool calls and its outcome with the conversation (redacted, erased with it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecording {
    enabled: Option<bool>,
}

/// The `[retention]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetention {
    /// Days every tenant's conversations are kept after their last activity.
    days: Option<f64>,
    /// Per-tenant days, overriding `days`.
    #[serde(default)]
    tenants: std::collections::HashMap<String, f64>,
    /// Tenants whose conversations are kept until deleted, whatever `days` says.
    #[serde(default)]
    exempt_tenants: Vec<String>,
    /// Seconds between retention passes (default 3600).
    interval_secs: Option<u64>,
}

impl RawRetention {
    fn validate(self) -> anyhow::Result<(Retention, Duration)> {
        let days = |name: String, d: f64| -> anyhow::Result<Duration> {
            if !d.is_finite() || d <= 0.0 || d > 36_500.0 {
                bail!("{name} must be a number of days between 0 (exclusive) and 36500, got {d}");
            }
            Ok(Duration::from_secs_f64(d * 86_400.0))
        };
        let mut r = Retention {
            default_ttl: self.days.map(|d| days("retention.days".into(), d)).transpose()?,
            ..Default::default()
        };
        for (t, d) in self.tenants {
            let ttl = days(format!("retention.tenants.{t}"), d)?;
            r.tenants.insert(t, Some(ttl));
        }
        for t in self.exempt_tenants {
            if r.tenants.contains_key(&t) {
                bail!("retention: tenant `{t}` is both exempt and given days");
            }
            r.tenants.insert(t, None);
        }
        let every = match self.interval_secs {
            None => Duration::from_secs(3600),
            Some(s) if (1..=86_400).contains(&s) => Duration::from_secs(s),
            Some(s) => bail!("retention.interval_secs must be between 1 and 86400, got {s}"),
        };
        Ok((r, every))
    }
}

/// The `[llm]` table: vendor LLMs of the reference assistant. Its providers are added to (or
/// replace) the `[providers]` of `assistant.toml`; a model is used when its provider's key is in
/// the environment. `enabled = false` (or `SWITCHBOARD_LLM=off`) keeps the assistant offline.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLlm {
    enabled: Option<bool>,
    #[serde(default)]
    providers: std::collections::BTreeMap<String, switchboard_providers::config::ProviderEntry>,
    #[serde(default)]
    prices: switchboard_providers::cost::PriceTable,
}

/// The `[jwt]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    issuer: Option<String>,
    audience: Option<String>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    tenant_claim: Option<String>,
    scope_claim: Option<String>,
    leeway_secs: Option<u64>,
    jwks_timeout_ms: Option<u64>,
    jwks_refresh_min_secs: Option<u64>,
    jwks_cache_secs: Option<u64>,
}

impl RawJwt {
    /// `SWITCHBOARD_JWT_*` overrides.
    fn env(slot: &mut Option<RawJwt>) -> anyhow::Result<()> {
        let mut j = slot.take().unwrap_or_default();
        env_override("SWITCHBOARD_JWT_ISSUER", &mut j.issuer)?;
        env_override("SWITCHBOARD_JWT_AUDIENCE", &mut j.audience)?;
        env_override("SWITCHBOARD_JWT_JWKS_FILE", &mut j.jwks_file)?;
        env_override("SWITCHBOARD_JWT_JWKS_URL", &mut j.jwks_url)?;
        env_override("SWITCHBOARD_JWT_TENANT_CLAIM", &mut j.tenant_claim)?;
        env_override("SWITCHBOARD_JWT_SCOPE_CLAIM", &mut j.scope_claim)?;
        env_override("SWITCHBOARD_JWT_LEEWAY_SECS", &mut j.leeway_secs)?;
        env_override("SWITCHBOARD_JWT_JWKS_TIMEOUT_MS", &mut j.jwks_timeout_ms)?;
        env_override("SWITCHBOARD_JWT_JWKS_REFRESH_MIN_SECS", &mut j.jwks_refresh_min_secs)?;
        env_override("SWITCHBOARD_JWT_JWKS_CACHE_SECS", &mut j.jwks_cache_secs)?;
        let empty = j.issuer.is_none()
            && j.audience.is_none()
            && j.jwks_file.is_none()
            && j.jwks_url.is_none()
            && j.tenant_claim.is_none()
            && j.scope_claim.is_none()
            && j.leeway_secs.is_none()
            && j.jwks_timeout_ms.is_none()
            && j.jwks_refresh_min_secs.is_none()
            && j.jwks_cache_secs.is_none();
        *slot = (!empty).then_some(j);
        Ok(())
    }

    /// Validates the table.
    fn validate(self) -> anyhow::Result<JwtConfig> {
        let issuer =
            self.issuer.filter(|s| !s.trim().is_empty()).context("jwt.issuer is required (the `iss` to accept)")?;
        let audience =
            self.audience.filter(|s| !s.trim().is_empty()).context("jwt.audience is required (the `aud` to accept)")?;
        let source = match (self.jwks_file, self.jwks_url) {
            (Some(f), None) => JwksSource::File(f),
            (None, Some(u)) if u.starts_with("https://") || u.starts_with("http://") => JwksSource::Url(u),
            (None, Some(u)) => bail!("jwt.jwks_url {u:?} is not an http(s) URL"),
            (Some(_), Some(_)) => bail!("jwt: set one of jwks_file and jwks_url, not both"),
            (None, None) => bail!("jwt: one of jwks_file and jwks_url is required"),
        };
        let mut c = JwtConfig::new(issuer, audience, source);
        for (name, v, slot) in [
            ("tenant_claim", self.tenant_claim, &mut c.tenant_claim),
            ("scope_claim", self.scope_claim, &mut c.scope_claim),
        ] {
            match v {
                Some(v) if v.trim().is_empty() => bail!("jwt.{name} must not be empty"),
                Some(v) => *slot = v,
                None => {}
            }
        }
        if let Some(l) = self.leeway_secs {
            if l > 300 {
                bail!("jwt.leeway_secs must be at most 300, got {l}");
            }
            c.leeway = Duration::from_secs(l);
        }
        match self.jwks_timeout_ms {
            Some(0) => bail!("jwt.jwks_timeout_ms must be greater than 0"),
            Some(ms) => c.fetch_timeout = Duration::from_millis(ms),
            None => {}
        }
        if let Some(s) = self.jwks_refresh_min_secs {
            c.refresh_min_interval = Duration::from_secs(s);
        }
        match self.jwks_cache_secs {
            Some(0) => bail!("jwt.jwks_cache_secs must be greater than 0"),
            Some(s) => c.cache_ttl = Duration::from_secs(s),
            None => {}
        }
        Ok(c)
    }
}

/// One `[[remote_agents]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteAgent {
    /// The assistant's name (and the agent's name in breaker state and logs).
    name: String,
    /// The agent's base URL (its card is at `{url}/.well-known/agent-card.json`).
    url: String,
    /// `summary` (default), `slots`, `full` or `none`.
    context: Option<switchboard_interop::a2a::client::ContextPolicy>,
    timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    /// The environment variable that holds a bearer token for the agent.
    token_env: Option<String>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) llm_latency: Duration,
    pub(crate) fsync: bool,
    pub(crate) jwt: Option<JwtConfig>,
    pub(crate) remote_agents: Vec<RemoteAgentConfig>,
    pub(crate) assistants_dir: PathBuf,
    /// Retention policy and how often it runs.
    pub(crate) retention: (Retention, Duration),
    /// Vendor LLM providers of the reference assistant (`None`: offline).
    pub(crate) llm: Option<switchboard_providers::config::ProvidersConfig>,
    pub(crate) postgres: Option<PgSettings>,
    /// Record turns as cassettes.
    pub(crate) recording: bool,
}

/// Where replicas share their state.
#[derive(Debug, Clone)]
pub(crate) struct PgSettings {
    pub(crate) database_url: String,
    pub(crate) schema: Option<String>,
    pub(crate) redis_url: Option<String>,
    pub(crate) redis_prefix: String,
    pub(crate) worker_concurrency: usize,
}

fn env_override<T: std::str::FromStr>(name: &str, slot: &mut Option<T>) -> anyhow::Result<()>
where
    T::Err: std::fmt::Display,
{
    if let Ok(v) = std::env::var(name) {
        *slot = Some(v.parse::<T>().map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}"))?);
    }
    Ok(())
}

/// An on/off environment value.
pub(crate) fn on_off(name: &str, v: &str) -> anyhow::Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => bail!("{name}={v:?}: expected on or off"),
    }
}

impl RawConfig {
    /// Reads the file (when given), then applies `SWITCHBOARD_*` overrides.
    pub(crate) fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut raw: RawConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("config {}", p.display()))?
            }
            None => RawConfig::default(),
        };
        env_override("SWITCHBOARD_ADDR", &mut raw.addr)?;
        env_override("SWITCHBOARD_DATA_DIR", &mut raw.data_dir)?;
        env_override("SWITCHBOARD_MAX_BODY_BYTES", &mut raw.max_body_bytes)?;
        env_override("SWITCHBOARD_REQUEST_TIMEOUT_MS", &mut raw.request_timeout_ms)?;
        env_override("SWITCHBOARD_SHUTDOWN_DEADLINE_MS", &mut raw.shutdown_deadline_ms)?;
        env_override("SWITCHBOARD_LLM_LATENCY_MS", &mut raw.llm_latency_ms)?;
        env_override("SWITCHBOARD_FSYNC", &mut raw.fsync)?;
        env_override("SWITCHBOARD_ASSISTANTS_DIR", &mut raw.assistants_dir)?;
        env_override("SWITCHBOARD_DATABASE_URL", &mut raw.database_url)?;
        env_override("SWITCHBOARD_DATABASE_SCHEMA", &mut raw.database_schema)?;
        env_override("SWITCHBOARD_REDIS_URL", &mut raw.redis_url)?;
        env_override("SWITCHBOARD_REDIS_PREFIX", &mut raw.redis_prefix)?;
        env_override("SWITCHBOARD_WORKER_CONCURRENCY", &mut raw.worker_concurrency)?;
        env_override("SWITCHBOARD_RATE_LIMIT_PER_SECOND", &mut raw.rate_limit_per_second)?;
        env_override("SWITCHBOARD_RATE_LIMIT_BURST", &mut raw.rate_limit_burst)?;
        if let Ok(v) = std::env::var("SWITCHBOARD_CORS_ORIGINS") {
            raw.cors_origins = Some(v.split(',').map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect());
        }
        RawJwt::env(&mut raw.jwt)?;
        if let Ok(v) = std::env::var("SWITCHBOARD_RETENTION_DAYS") {
            let d = v.parse::<f64>().map_err(|e| anyhow::anyhow!("SWITCHBOARD_RETENTION_DAYS={v:?}: {e}"))?;
            raw.retention.get_or_insert_with(RawRetention::default).days = Some(d);
        }
        if let Ok(v) = std::env::var("SWITCHBOARD_LLM") {
            raw.llm.get_or_insert_with(RawLlm::default).enabled = Some(on_off("SWITCHBOARD_LLM", &v)?);
        }
        if let Ok(v) = std::env::var("SWITCHBOARD_RECORDING") {
            raw.recording.get_or_insert_with(RawRecording::default).enabled =
                Some(on_off("SWITCHBOARD_RECORDING", &v)?);
        }
        Ok(raw)
    }
}

impl Config {
    /// Validates a raw config into typed values.
    pub(crate) fn from_raw(raw: RawConfig) -> anyhow::Result<Self> {
        let addr_text = raw.addr.unwrap_or_else(|| DEFAULT_ADDR.into());
        let addr: SocketAddr =
            addr_text.parse().map_err(|e| anyhow::anyhow!("addr {addr_text:?} is not HOST:PORT ({e})"))?;
        let d = Limits::default();
        let positive_ms = |name: &str, v: Option<u64>, default: Duration| -> anyhow::Result<Duration> {
            match v {
                None => Ok(default),
                Some(0) => bail!("{name} must be greater than 0"),
                Some(ms) => Ok(Duration::from_millis(ms)),
            }
        };
        let max_body_bytes = match raw.max_body_bytes {
            None => d.max_body_bytes,
            Some(n) if (1024..=64 << 20).contains(&n) => n as usize,
            Some(n) => bail!("max_body_bytes must be between 1024 and 67108864, got {n}"),
        };
        let per_second = raw.rate_limit_per_second.unwrap_or(DEFAULT_RATE_LIMIT.0);
        if !per_second.is_finite() || per_second < 0.0 {
            bail!("rate_limit_per_second must be 0 (unlimited) or positive, got {per_second}");
        }
        let burst = raw.rate_limit_burst.unwrap_or(DEFAULT_RATE_LIMIT.1);
        if burst == 0 {
            bail!("rate_limit_burst must be at least 1");
        }
        let rate_limit = (per_second > 0.0).then_some(RateLimit { per_second, burst });
        let cors_origins = raw.cors_origins.unwrap_or_default();
        for o in &cors_origins {
            let ok = o == "*" || ((o.starts_with("http://") || o.starts_with("https://")) && !o.ends_with('/'));
            if !ok {
                bail!("cors_origins: {o:?} is not `*` or an origin like `https://app.example` (no path)");
            }
        }
        let mut remote_agents: Vec<RemoteAgentConfig> = Vec::new();
        for r in raw.remote_agents.unwrap_or_default() {
            let valid_name = !r.name.is_empty()
                && r.name.len() <= 64
                && r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name || r.name == "support" || remote_agents.iter().any(|a| a.name == r.name) {
                bail!("remote_agents: name {:?} must be unique, not `support`, and 1-64 of [A-Za-z0-9_-]", r.name);
            }
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                bail!("remote_agents.{}: url {:?} is not an http(s) URL", r.name, r.url);
            }
            let mut a = RemoteAgentConfig::new(&r.name, &r.url);
            if let Some(c) = r.context {
                a.context = c;
            }
            a.timeout = positive_ms("remote_agents.timeout_ms", r.timeout_ms, a.timeout)?;
            a.idle_timeout = positive_ms("remote_agents.idle_timeout_ms", r.idle_timeout_ms, a.idle_timeout)?;
            if let Some(var) = r.token_env {
                let token =
                    std::env::var(&var).map_err(|_| anyhow::anyhow!("remote_agents.{}: ${var} is not set", r.name))?;
                a.token = Some(switchboard_guard::Secret::new(token));
            }
            remote_agents.push(a);
        }
        let postgres = match raw.database_url {
            None if raw.redis_url.is_some() => {
                bail!("redis_url needs database_url (Redis links replicas on PostgreSQL)")
            }
            None => None,
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    bail!("database_url must be a postgres:// URL");
                }
                if let Some(r) = &raw.redis_url
                    && !(r.starts_with("redis://") || r.starts_with("rediss://"))
                {
                    bail!("redis_url must be a redis:// URL");
                }
                let worker_concurrency = raw.worker_concurrency.unwrap_or(16);
                if !(1..=1024).contains(&worker_concurrency) {
                    bail!("worker_concurrency must be between 1 and 1024, got {worker_concurrency}");
                }
                Some(PgSettings {
                    database_url: url,
                    schema: raw.database_schema,
                    redis_url: raw.redis_url,
                    redis_prefix: raw.redis_prefix.unwrap_or_else(|| "switchboard".into()),
                    worker_concurrency,
                })
            }
        };
        let recording = raw.recording.and_then(|r| r.enabled).unwrap_or(false);
        Ok(Self {
            recording,
            postgres,
            addr,
            data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            limits: Limits {
                cors_origins,
                rate_limit,
                max_body_bytes,
                request_timeout: positive_ms("request_timeout_ms", raw.request_timeout_ms, d.request_timeout)?,
                shutdown_deadline: positive_ms("shutdown_deadline_ms", raw.shutdown_deadline_ms, d.shutdown_deadline)?,
            },
            llm_latency: Duration::from_millis(raw.llm_latency_ms.unwrap_or(0)),
            fsync: raw.fsync.unwrap_or(true),
            jwt: raw.jwt.map(RawJwt::validate).transpose()?,
            remote_agents,
            assistants_dir: raw.assistants_dir.unwrap_or_else(|| DEFAULT_ASSISTANTS_DIR.into()),
            retention: raw.retention.unwrap_or_default().validate()?,
            llm: match raw.llm.unwrap_or_default() {
                RawLlm { enabled: Some(false), .. } => None,
                RawLlm { providers, prices, .. } => {
                    for (name, p) in &providers {
                        if let Some(u) = &p.base_url
                            && !(u.starts_with("http://") || u.starts_with("https://"))
                        {
                            bail!("llm.providers.{name}.base_url {u:?} is not an http(s) URL");
                        }
                    }
                    Some(switchboard_providers::config::ProvidersConfig { providers, prices })
                }
            },
        })
    }

    /// The database file.
    pub(crate) fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }
}

/// The config of `serve` and `keys`: file, environment, then flags.
pub(crate) fn load(file: Option<&Path>, addr: Option<String>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut raw = RawConfig::load(file)?;
    if addr.is_some() {
        raw.addr = addr;
    }
    if data_dir.is_some() {
        raw.data_dir = data_dir;
    }
    Config::from_raw(raw)
}

/// The engine settings of served assistants: the server drains each run's events at once, so a
/// small per-run event buffer is enough (it is allocated for every run in flight).
pub(crate) fn engine_config() -> EngineConfig {
    EngineConfig { event_capacity: 64, ..EngineConfig::default() }
}

/// The stores engines write to: the API's (reads, fork, delete; in-process turns), and with
/// replicas the workers' fenced view, whose engines execute the queued turns.
struct Stores<S> {
    api: Arc<S>,
    worker: Option<Arc<FencedStore>>,
}

/// Worker engines by assistant name (replicas only).
type WorkerEngines = HashMap<String, Engine>;

impl<S: CheckpointStore + ContextStore + 'static> Stores<S> {
    /// The API engine of a graph, and the worker engine (built from the same recipe) with replicas.
    fn engines(
        &self,
        graph: impl Fn() -> anyhow::Result<Graph>,
        config: EngineConfig,
        workers: &mut WorkerEngines,
    ) -> anyhow::Result<Engine> {
        let shared = EngineConfig { shared_store: self.worker.is_some(), ..config };
        if let Some(w) = &self.worker {
            let engine = Engine::with_context(graph()?, w.clone(), w.clone(), shared.clone());
            workers.insert(shared.assistant_id.clone(), engine);
        }
        Ok(Engine::with_context(graph()?, self.api.clone(), self.api.clone(), shared))
    }
}

/// The demo support graph, served as `support`.
fn support_assistant<S: CheckpointStore + ContextStore + 'static>(
    config: &Config,
    stores: &Stores<S>,
    workers: &mut WorkerEngines,
) -> anyhow::Result<Assistant> {
    let opts = SupportOptions { llm_latency: config.llm_latency, handoff_interrupt: true };
    let engine_config = EngineConfig { assistant_id: "support".into(), ..engine_config() };
    let engine = stores.engines(|| support::graph(opts.clone()), engine_config, workers)?;
    let input: switchboard_server::InputFn = Arc::new(|text: &str, _meta: &Value| support::user_message(text));
    Ok(Assistant {
        description: "Demo support assistant: keyword router over five agents, with a human handoff".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        engine,
        input,
    })
}

/// The assistants this binary serves: the reference assistant `exchange-support` (default) when
/// its config is found, and the demo graph as `support`; plus the desk routes of the reference
/// assistant, and (replicas) the worker engines.
async fn assistants<S: CheckpointStore + ContextStore + 'static>(
    config: &Config,
    stores: &Stores<S>,
) -> anyhow::Result<(Assistants, switchboard_assistant::desk::DeskRoutes, WorkerEngines)> {
    let mut workers = WorkerEngines::new();
    let support = support_assistant(config, stores, &mut workers)?;
    let path = config.assistants_dir.join(REFERENCE_ASSISTANT).join("assistant.toml");
    if !path.is_file() {
        tracing::warn!(path = %path.display(), "reference assistant config not found; serving only the demo `support` assistant");
        eprintln!("warning: {} not found; serving only the demo `support` assistant", path.display());
        let assistants = with_remote_agents(config, stores, Assistants::new("support", support), &mut workers)?;
        return Ok((assistants, switchboard_assistant::desk::DeskRoutes::new(), workers));
    }
    let mut opts = AssistantOptions::new(router_cache_dir(&config.data_dir));
    opts.llm = config.llm.clone();
    let tape = config.recording.then(switchboard_assistant::cassette::Tape::recorder);
    opts.tape = tape.clone();
    let exchange = tokio::task::spawn_blocking(move || ExchangeAssistant::load(&path, opts)).await??;
    let r = exchange.router();
    println!(
        "Router for {REFERENCE_ASSISTANT}: {} in {:.1} s ({} examples, {} intents, {})",
        if r.cached { "loaded from cache" } else { "trained" },
        r.seconds,
        r.examples,
        r.intents,
        if r.sentence_encoder { "sentence encoder + lexical features" } else { "lexical features only" }
    );
    match exchange.llm() {
        Some(chains) => println!("LLM for {REFERENCE_ASSISTANT}: {}", chains.join("; ")),
        None => println!("LLM for {REFERENCE_ASSISTANT}: none (offline; set a provider's API key to use one)"),
    }
    let shared = stores.worker.is_some();
    if let Some(w) = &stores.worker {
        workers.insert(REFERENCE_ASSISTANT.to_string(), exchange.engine_on(w.clone(), true));
    }
    let engine = exchange.engine_on(stores.api.clone(), shared);
    let desk = switchboard_assistant::desk::routes(Runtime::new(exchange.clone(), engine.clone()));
    let mut assistants = Assistants::new(REFERENCE_ASSISTANT, exchange.server_assistant(engine.clone()))
        .with_message_resume(REFERENCE_ASSISTANT, exchange.resume_fn())
        .with("support", support);
    if let Some(tape) = tape {
        println!("Recording turns of {REFERENCE_ASSISTANT} as cassettes (switchboard eval export)");
        assistants = assistants.with_recorder(REFERENCE_ASSISTANT, tape);
    }
    let assistants = with_remote_agents(config, stores, assistants, &mut workers)?;
    Ok((assistants, desk, workers))
}

/// Adds one assistant per `[[remote_agents]]` entry: each delegates every turn to its A2A agent.
fn with_remote_agents<S: CheckpointStore + ContextStore + 'static>(
    config: &Config,
    stores: &Stores<S>,
    mut assistants: Assistants,
    workers: &mut WorkerEngines,
) -> anyhow::Result<Assistants> {
    let input: switchboard_server::InputFn = Arc::new(|text: &str, _meta: &Value| support::user_message(text));
    let breakers = BreakerRegistry::new(BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() });
    for r in &config.remote_agents {
        let graph = || {
            let agent =
                RemoteAgent::new(r.clone(), breakers.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", r.name))?;
            Ok(switchboard_interop::a2a::client::delegating_graph(agent)?)
        };
        let engine_config = EngineConfig { assistant_id: r.name.clone(), ..engine_config() };
        let engine = stores.engines(graph, engine_config, workers)?;
        let description = format!("Delegates every turn to the A2A agent at {}", r.url);
        let version = env!("CARGO_PKG_VERSION").into();
        assistants = assistants.with(r.name.clone(), Assistant { description, version, engine, input: input.clone() });
    }
    Ok(assistants)
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut raw = RawConfig::load(args.config.as_deref())?;
    if args.addr.is_some() {
        raw.addr = args.addr;
    }
    if args.data_dir.is_some() {
        raw.data_dir = args.data_dir;
    }
    if args.database_url.is_some() {
        raw.database_url = args.database_url;
    }
    if args.redis_url.is_some() {
        raw.redis_url = args.redis_url;
    }
    let config = Config::from_raw(raw)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(config))
}

/// Completes at SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives right after start-up is not missed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(pg) = config.postgres.clone() {
        return serve_postgres(config, pg).await;
    }
    let path = config.db_path();
    let store = Arc::new(
        SqliteStore::open(&path, SqliteConfig { fsync: config.fsync, ..SqliteConfig::default() })
            .await
            .with_context(|| format!("opening {}", path.display()))?,
    );
    let records = Records::on_store(&store);
    let audit = AuditLog::on_store(&store);
    first_key(&records, &audit).await?;
    let (assistants, desk, _) = assistants(&config, &Stores { api: store, worker: None }).await?;
    let state = app_state(&config, assistants, records, audit).await?;
    listen(&config, state, desk, &path.display().to_string()).await
}

/// A replica on PostgreSQL: the server's records there, turns through the shared queue.
async fn serve_postgres(config: Config, pg: PgSettings) -> anyhow::Result<()> {
    let pg_config = PgConfig {
        schema: pg.schema.clone(),
        max_connections: (pg.worker_concurrency as u32 / 2).clamp(8, 64),
        acquire_timeout: Duration::from_secs(2),
        ..PgConfig::default()
    };
    let store = Arc::new(
        PgStore::open(&pg.database_url, pg_config).await.map_err(|e| anyhow::anyhow!("opening PostgreSQL: {e}"))?,
    );
    let records = Records::on_postgres(store.pool().clone());
    let audit = AuditLog::on_postgres(store.pool().clone());
    first_key(&records, &audit).await?;
    let fenced = Arc::new(FencedStore::new(store.clone()));
    let (assistants, desk, workers) =
        assistants(&config, &Stores { api: store.clone(), worker: Some(fenced.clone()) }).await?;
    let dist_config = DistConfig {
        concurrency: pg.worker_concurrency,
        redis_url: pg.redis_url.clone(),
        redis_prefix: pg.redis_prefix.clone(),
        ..DistConfig::default()
    };
    let dist = Distributed::new(&store, fenced, workers, dist_config).map_err(anyhow::Error::msg)?;
    let state = app_state(&config, assistants, records, audit).await?.with_distributed(dist);
    switchboard_server::dist::start(&state);
    let what = format!(
        "PostgreSQL{}{}",
        pg.schema.map(|s| format!(" schema {s}")).unwrap_or_default(),
        if pg.redis_url.is_some() { " + Redis" } else { "" }
    );
    listen(&config, state, desk, &what).await
}

/// Creates and prints an admin key at first start (no key in the store yet).
async fn first_key(records: &Records, audit: &AuditLog) -> anyhow::Result<()> {
    if records.count_keys().await? == 0 {
        let (key, rec) = create_key(records, FIRST_TENANT, &[Scope::Admin])
            .await
            .map_err(|e| anyhow::anyhow!("creating the first admin key: {e}"))?;
        audit.append(super::keys::created(&rec, "system:first-start")).await?;
        println!("First start: created an admin key for tenant `{FIRST_TENANT}` (shown once, store it now):");
        println!("{key}");
    }
    Ok(())
}

/// The server state over the records, with the audit log (builder calls on the result must come
/// before it is cloned).
async fn app_state(
    config: &Config,
    assistants: Assistants,
    records: Records,
    audit: AuditLog,
) -> anyhow::Result<AppState> {
    let state = match &config.jwt {
        Some(j) => {
            let v = JwtVerifier::new(j.clone()).await.map_err(anyhow::Error::msg)?;
            AppState::with_jwt(assistants, records, config.limits.clone(), v)
        }
        None => AppState::new(assistants, records, config.limits.clone()),
    };
    Ok(state.with_audit(audit).with_metrics(switchboard_telemetry::metrics::global().clone()))
}

async fn listen(
    config: &Config,
    state: AppState,
    desk: switchboard_assistant::desk::DeskRoutes,
    data: &str,
) -> anyhow::Result<()> {
    let (retention, every) = config.retention.clone();
    if retention.is_enabled() {
        tokio::spawn(erasure::retention_loop(state.clone(), retention, every));
    }
    let listener =
        tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    tracing::info!(%addr, %data, "serving");
    println!("Switchboard listening on http://{addr} (data: {data})");
    println!("  customer chat  http://{addr}/chat");
    println!("  agent desk     http://{addr}/desk");
    println!("  inspector      http://{addr}/inspector");
    println!("  API            http://{addr}/v1  (OpenAPI: http://{addr}/openapi.json)");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    // The native API with the desk and the protocol adapters (OpenAI-compatible, A2A) under the same middleware.
    let router = switchboard_server::app_with(state.clone(), switchboard_interop::routes(state.clone()).merge(desk));
    switchboard_server::run_router(listener, state, router, shutdown).await?;
    println!("Switchboard stopped");
    Ok(())
}

/// Where trained assistant routers are cached (keyed by a hash of their data and settings, so one
/// cache serves every data directory): `SWITCHBOARD_CACHE_DIR`, else the user's cache directory
/// (`$XDG_CACHE_HOME` or `~/.cache`) under `switchboard/routers`, else `<data-dir>/cache`.
pub(crate) fn router_cache_dir(data_dir: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("SWITCHBOARD_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")));
    match base {
        Some(b) => b.join("switchboard").join("routers"),
        None => data_dir.join("cache"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_is_validated_with_clear_errors() {
        let ok: RawConfig = toml::from_str("addr = \"0.0.0.0:9000\"\nrequest_timeout_ms = 500").unwrap();
        let c = Config::from_raw(ok).unwrap();
        assert_eq!(c.addr.port(), 9000);
        assert_eq!(c.limits.request_timeout, Duration::from_millis(500));
        assert_eq!(c.db_path(), Path::new("data").join(DB_FILE));
        let bad: RawConfig = toml::from_str("addr = \"nope\"").unwrap();
        assert!(Config::from_raw(bad).unwrap_err().to_string().contains("addr \"nope\""));
        let bad: RawConfig = toml::from_str("request_timeout_ms = 0").unwrap();
        assert!(Config::from_raw(bad).unwrap_err().to_string().contains("request_timeout_ms"));
        let bad: RawConfig = toml::from_str("max_body_bytes = 1").unwrap();
        assert!(Config::from_raw(bad).unwrap_err().to_string().contains("max_body_bytes"));
        assert!(toml::from_str::<RawConfig>("adr = \"x\"").unwrap_err().to_string().contains("adr"));
    }

    #[test]
    fn retention_is_validated() {
        let c = Config::from_raw(
            toml::from_str("[retention]\ndays = 30\nexempt_tenants = [\"legal\"]\n[retention.tenants]\nacme = 0.5")
                .unwrap(),
        )
        .unwrap();
        let (r, every) = c.retention;
        assert_eq!(every, Duration::from_secs(3600));
        assert_eq!(r.ttl("other"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(r.ttl("acme"), Some(Duration::from_secs(43_200)));
        assert_eq!(r.ttl("legal"), None);
        assert!(!Config::from_raw(RawConfig::default()).unwrap().retention.0.is_enabled());
        let err = |t: &str| Config::from_raw(toml::from_str(t).unwrap()).unwrap_err().to_string();
        assert!(err("[retention]\ndays = 0").contains("retention.days"));
        assert!(err("[retention]\ninterval_secs = 0").contains("interval_secs"));
        assert!(err("[retention]\nexempt_tenants = [\"a\"]\n[retention.tenants]\na = 1").contains("both exempt"));
    }

    #[test]
    fn jwt_config_is_validated() {
        let ok: RawConfig = toml::from_str(
            "[jwt]\nissuer = \"https://idp\"\naudience = \"sb\"\njwks_url = \"http://127.0.0.1:1/jwks\"",
        )
        .unwrap();
        let c = Config::from_raw(ok).unwrap().jwt.unwrap();
        assert_eq!(c.tenant_claim, "tenant");
        assert_eq!(c.scope_claim, "scope");
        assert_eq!(c.source, JwksSource::Url("http://127.0.0.1:1/jwks".into()));
        let err = |t: &str| Config::from_raw(toml::from_str(t).unwrap()).unwrap_err().to_string();
        assert!(err("[jwt]\naudience = \"sb\"\njwks_file = \"k.json\"").contains("jwt.issuer"));
        assert!(err("[jwt]\nissuer = \"i\"\njwks_file = \"k.json\"").contains("jwt.audience"));
        assert!(err("[jwt]\nissuer = \"i\"\naudience = \"a\"").contains("jwks_file and jwks_url"));
        assert!(err("[jwt]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"ftp://x\"").contains("http(s)"));
        assert!(
            err("[jwt]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"k\"\nleeway_secs = 9999").contains("leeway")
        );
        assert!(
            toml::from_str::<RawConfig>("[jwt]\nissuer = \"i\"\nalg = \"HS256\"")
                .unwrap_err()
                .to_string()
                .contains("alg")
        );
    }
}
