//! `switchboard serve`: the HTTP API on the embedded SQLite store.
//!
//! Config in two stages (STYLE.md "Config"): a serde [`RawConfig`] from one TOML file, then
//! `SWITCHBOARD_*` environment overrides, then command-line flags, validated by
//! [`Config::from_raw`] into typed values with errors that name the setting. With no config at
//! all it runs on `./data/switchboard.sqlite` and prints a generated admin key at first start.

use crate::support::{self, SupportOptions};
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use switchboard_assistant::{AssistantOptions, ExchangeAssistant, Runtime};
use switchboard_engine::{Engine, EngineConfig};
use switchboard_interop::a2a::client::{RemoteAgent, RemoteAgentConfig};
use switchboard_providers::resilience::{BreakerConfig, BreakerRegistry};
use switchboard_server::auth::jwt::{JwksSource, JwtConfig, JwtVerifier};
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::{AppState, Assistant, Assistants, Limits, RateLimit};
use switchboard_store::{Records, SqliteConfig, SqliteStore};

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
        env_override("SWITCHBOARD_RATE_LIMIT_PER_SECOND", &mut raw.rate_limit_per_second)?;
        env_override("SWITCHBOARD_RATE_LIMIT_BURST", &mut raw.rate_limit_burst)?;
        if let Ok(v) = std::env::var("SWITCHBOARD_CORS_ORIGINS") {
            raw.cors_origins = Some(v.split(',').map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect());
        }
        RawJwt::env(&mut raw.jwt)?;
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
        Ok(Self {
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

/// The demo support graph, served as `support`.
fn support_assistant(config: &Config, store: Arc<SqliteStore>) -> anyhow::Result<Assistant> {
    let opts = SupportOptions { llm_latency: config.llm_latency, handoff_interrupt: true };
    let graph = support::graph(opts)?;
    let engine_config = EngineConfig { assistant_id: "support".into(), ..engine_config() };
    let engine = Engine::with_context(graph, store.clone(), store.clone(), engine_config);
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
/// assistant.
async fn assistants(
    config: &Config,
    store: Arc<SqliteStore>,
) -> anyhow::Result<(Assistants, switchboard_assistant::desk::DeskRoutes)> {
    let support = support_assistant(config, store.clone())?;
    let path = config.assistants_dir.join(REFERENCE_ASSISTANT).join("assistant.toml");
    if !path.is_file() {
        tracing::warn!(path = %path.display(), "reference assistant config not found; serving only the demo `support` assistant");
        eprintln!("warning: {} not found; serving only the demo `support` assistant", path.display());
        let assistants = with_remote_agents(config, &store, Assistants::new("support", support))?;
        return Ok((assistants, switchboard_assistant::desk::DeskRoutes::new()));
    }
    let opts = AssistantOptions::new(router_cache_dir(&config.data_dir));
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
    let engine = exchange.engine(store.clone());
    let desk = switchboard_assistant::desk::routes(Runtime::new(exchange.clone(), engine.clone()));
    let assistants = Assistants::new(REFERENCE_ASSISTANT, exchange.server_assistant(engine.clone()))
        .with_message_resume(REFERENCE_ASSISTANT, exchange.resume_fn())
        .with("support", support);
    let assistants = with_remote_agents(config, &store, assistants)?;
    Ok((assistants, desk))
}

/// Adds one assistant per `[[remote_agents]]` entry: each delegates every turn to its A2A agent.
fn with_remote_agents(
    config: &Config,
    store: &Arc<SqliteStore>,
    mut assistants: Assistants,
) -> anyhow::Result<Assistants> {
    let input: switchboard_server::InputFn = Arc::new(|text: &str, _meta: &Value| support::user_message(text));
    let breakers = BreakerRegistry::new(BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() });
    for r in &config.remote_agents {
        let agent = RemoteAgent::new(r.clone(), breakers.clone()).map_err(|e| anyhow::anyhow!("{}: {e}", r.name))?;
        let graph = switchboard_interop::a2a::client::delegating_graph(agent)?;
        let engine_config = EngineConfig { assistant_id: r.name.clone(), ..engine_config() };
        let engine = Engine::with_context(graph, store.clone(), store.clone(), engine_config);
        let description = format!("Delegates every turn to the A2A agent at {}", r.url);
        let version = env!("CARGO_PKG_VERSION").into();
        assistants = assistants.with(r.name.clone(), Assistant { description, version, engine, input: input.clone() });
    }
    Ok(assistants)
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(args.config.as_deref(), args.addr, args.data_dir)?;
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
    let path = config.db_path();
    let store = Arc::new(
        SqliteStore::open(&path, SqliteConfig { fsync: config.fsync, ..SqliteConfig::default() })
            .await
            .with_context(|| format!("opening {}", path.display()))?,
    );
    let records = Records::on_store(&store);
    if records.count_keys().await? == 0 {
        let (key, _) = create_key(&records, FIRST_TENANT, &[Scope::Admin])
            .await
            .map_err(|e| anyhow::anyhow!("creating the first admin key: {e}"))?;
        println!("First start: created an admin key for tenant `{FIRST_TENANT}` (shown once, store it now):");
        println!("{key}");
    }
    let (assistants, desk) = assistants(&config, store).await?;
    let state = match &config.jwt {
        Some(j) => {
            let v = JwtVerifier::new(j.clone()).await.map_err(anyhow::Error::msg)?;
            AppState::with_jwt(assistants, records, config.limits.clone(), v)
        }
        None => AppState::new(assistants, records, config.limits.clone()),
    }
    .with_metrics(switchboard_telemetry::metrics::global().clone());
    let listener =
        tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    tracing::info!(%addr, data = %path.display(), "serving");
    println!("Switchboard listening on http://{addr} (data: {})", path.display());
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
