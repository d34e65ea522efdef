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
    /// Where assistant configs live (`<dir>/exchange-support/assistant.toml`).
    assistants_dir: Option<PathBuf>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) llm_latency: Duration,
    pub(crate) fsync: bool,
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

/// The demo support graph, served as `support`.
fn support_assistant(config: &Config, store: Arc<SqliteStore>) -> anyhow::Result<Assistant> {
    let opts = SupportOptions { llm_latency: config.llm_latency, handoff_interrupt: true };
    let graph = support::graph(opts)?;
    let engine_config = EngineConfig { assistant_id: "support".into(), ..EngineConfig::default() };
    let engine = Engine::with_context(graph, store.clone(), store, engine_config);
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
        return Ok((Assistants::new("support", support), switchboard_assistant::desk::DeskRoutes::new()));
    }
    let opts = AssistantOptions::new(config.data_dir.join("cache"));
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
    let engine = exchange.engine(store);
    let desk = switchboard_assistant::desk::routes(Runtime::new(exchange.clone(), engine.clone()));
    let assistants = Assistants::new(REFERENCE_ASSISTANT, exchange.server_assistant(engine)).with("support", support);
    Ok((assistants, desk))
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
    let records = Records::open(&path, SqliteConfig::default().busy_timeout).await?;
    if records.count_keys().await? == 0 {
        let (key, _) = create_key(&records, FIRST_TENANT, &[Scope::Admin])
            .await
            .map_err(|e| anyhow::anyhow!("creating the first admin key: {e}"))?;
        println!("First start: created an admin key for tenant `{FIRST_TENANT}` (shown once, store it now):");
        println!("{key}");
    }
    let (assistants, desk) = assistants(&config, store).await?;
    let state = AppState::new(assistants, records, config.limits.clone());
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
    switchboard_server::run_with(listener, state, desk, shutdown).await?;
    println!("Switchboard stopped");
    Ok(())
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
}
