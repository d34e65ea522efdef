//! MCP client tools: an MCP server (stdio child process or Streamable HTTP) as a
//! [`ToolProvider`], on the official `rmcp` SDK.
//!
//! * Start-up lists the server's tools (every page); the list is refreshed when the server sends
//!   `notifications/tools/list_changed` and on a fixed interval (servers of the stateless
//!   2026-07-28 era do not push notifications on every transport).
//! * Every request has a timeout: connecting (handshake or discovery), listing, calling.
//! * A server that dies (the child exits, the connection closes) fails the call in flight with
//!   [`ToolError::Unavailable`]; the next call or refresh reconnects (respawns a stdio server),
//!   no more often than once per `reconnect_backoff`. Nothing waits on a dead server.
//! * Era: the client probes `server/discover` and falls back to `initialize` (dual-era, as the
//!   protocol notes require); `rmcp` does both.
//!
//! It must not know which flow or agent calls: the policy (allow-lists, argument schemas,
//! approvals) is the [`crate::Toolbox`]'s job.

mod conn;

use crate::tool::{ToolError, ToolInfo, ToolOutput, ToolProvider, clip};
use conn::Conn;
use futures::future::BoxFuture;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use switchboard_guard::Secret;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Default limit on connecting to a server (spawn + handshake + first listing).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default limit on one tool call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval of the periodic tool-list refresh.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Default least time between two reconnection attempts.
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);
/// Longest error message kept from a server.
const MAX_MESSAGE_CHARS: usize = 300;

/// How to reach an MCP server.
#[derive(Debug, Clone)]
pub enum McpTransport {
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables.
        env: Vec<(String, String)>,
        /// Working directory (default: ours).
        cwd: Option<PathBuf>,
    },
    /// Streamable HTTP at one endpoint URL (e.g. `https://tools.example/mcp`).
    Http {
        /// The endpoint.
        url: String,
        /// A bearer token for it.
        bearer: Option<Secret<String>>,
    },
}

/// One MCP server's settings.
#[derive(Debug, Clone)]
pub struct McpServerConfig {
    /// Our name for it: tools are `{name}__{tool}` in a toolbox.
    pub name: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// Limit on connecting and on one listing.
    pub connect_timeout: Duration,
    /// Limit on one tool call.
    pub call_timeout: Duration,
    /// Periodic refresh of the tool list (`None`: only on `list_changed`).
    pub refresh_interval: Option<Duration>,
    /// Least time between two reconnection attempts.
    pub reconnect_backoff: Duration,
}

impl McpServerConfig {
    /// Settings with the default timeouts.
    pub fn new(name: impl Into<String>, transport: McpTransport) -> Self {
        Self {
            name: name.into(),
            transport,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            refresh_interval: Some(DEFAULT_REFRESH_INTERVAL),
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
        }
    }

    /// A stdio server: `command` with `args`.
    pub fn stdio(name: impl Into<String>, command: impl Into<String>, args: &[&str]) -> Self {
        let transport = McpTransport::Stdio {
            command: command.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            cwd: None,
        };
        Self::new(name, transport)
    }

    /// A Streamable HTTP server at `url`.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(name, McpTransport::Http { url: url.into(), bearer: None })
    }
}

/// The connection slot: the live connection, and when we last tried to open one.
#[derive(Default)]
struct Slot {
    conn: Option<Arc<Conn>>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

struct Inner {
    cfg: McpServerConfig,
    slot: Mutex<Slot>,
    tools: RwLock<Vec<ToolInfo>>,
    generation: AtomicU64,
    changed: Arc<Notify>,
}

/// An MCP server as a [`ToolProvider`]. Dropping it stops the refresh task and the server's
/// child process.
pub struct McpServer {
    inner: Arc<Inner>,
    _stop: DropGuard,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer").field("name", &self.inner.cfg.name).finish_non_exhaustive()
    }
}

impl McpServer {
    /// Connects and lists the tools, then keeps the list fresh in a background task.
    ///
    /// A server that cannot be reached at start-up is not fatal: it is logged, offers no tools,
    /// and is retried at each refresh and call. [`Self::last_error`] says why.
    pub async fn start(cfg: McpServerConfig) -> Self {
        let inner = Arc::new(Inner {
            cfg,
            slot: Mutex::new(Slot::default()),
            tools: RwLock::new(Vec::new()),
            generation: AtomicU64::new(0),
            changed: Arc::new(Notify::new()),
        });
        if let Err(e) = inner.refresh(true).await {
            tracing::warn!(server = %inner.cfg.name, error = %e, "MCP server unavailable at start-up");
        }
        let stop = CancellationToken::new();
        tokio::spawn(refresh_loop(Arc::downgrade(&inner), stop.clone()));
        Self { inner, _stop: stop.drop_guard() }
    }

    /// Lists the tools again now.
    ///
    /// # Errors
    /// [`ToolError::Unavailable`] or [`ToolError::Timeout`] when the server cannot be reached.
    pub async fn refresh(&self) -> Result<(), ToolError> {
        self.inner.refresh(true).await
    }

    /// Why the last connection attempt or request failed, if it did.
    pub async fn last_error(&self) -> Option<String> {
        self.inner.slot.lock().await.last_error.clone()
    }

    /// Whether a connection is open now.
    pub async fn is_connected(&self) -> bool {
        self.inner.slot.lock().await.conn.as_ref().is_some_and(|c| !c.is_closed())
    }
}

async fn refresh_loop(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    let (changed, interval) = match inner.upgrade() {
        Some(i) => (i.changed.clone(), i.cfg.refresh_interval),
        None => return,
    };
    loop {
        let tick = async {
            match interval {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = changed.notified() => {}
            () = tick => {}
        }
        let Some(i) = inner.upgrade() else { return };
        if let Err(e) = i.refresh(false).await {
            tracing::warn!(server = %i.cfg.name, error = %e, "MCP tool list refresh failed");
        }
    }
}

impl Inner {
    fn unavailable(&self, reason: impl Into<String>) -> ToolError {
        ToolError::Unavailable { server: self.cfg.name.clone(), reason: clip(&reason.into(), MAX_MESSAGE_CHARS) }
    }

    /// The open connection, or a new one (unless the last attempt was too recent and `force` is off).
    async fn connection(&self, force: bool) -> Result<Arc<Conn>, ToolError> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = &slot.conn {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            tracing::warn!(server = %self.cfg.name, "MCP server connection closed; reconnecting");
            slot.conn = None;
        }
        if !force
            && let Some(t) = slot.last_attempt
            && t.elapsed() < self.cfg.reconnect_backoff
        {
            let why = slot.last_error.clone().unwrap_or_else(|| "the connection closed".into());
            return Err(self.unavailable(why));
        }
        slot.last_attempt = Some(Instant::now());
        let opened = tokio::time::timeout(self.cfg.connect_timeout, Conn::open(&self.cfg, self.changed.clone())).await;
        let r = match opened {
            Err(_) => Err(ToolError::Timeout { server: self.cfg.name.clone(), after: self.cfg.connect_timeout }),
            Ok(Err(e)) => Err(self.unavailable(e)),
            Ok(Ok(c)) => Ok(Arc::new(c)),
        };
        match &r {
            Ok(c) => {
                slot.conn = Some(c.clone());
                slot.last_error = None;
            }
            Err(e) => slot.last_error = Some(e.to_string()),
        }
        r
    }

    /// Forgets a connection that failed (the next use reconnects).
    async fn drop_connection(&self, conn: &Arc<Conn>, why: &str) {
        let mut slot = self.slot.lock().await;
        if slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            slot.conn = None;
            slot.last_error = Some(why.to_string());
        }
    }

    async fn refresh(&self, force: bool) -> Result<(), ToolError> {
        let conn = self.connection(force).await?;
        let listed = tokio::time::timeout(self.cfg.connect_timeout, conn.list_tools()).await;
        let tools = match listed {
            Err(_) => {
                return Err(ToolError::Timeout { server: self.cfg.name.clone(), after: self.cfg.connect_timeout });
            }
            Ok(Err(e)) => {
                let e = self.classify(e);
                if matches!(e, ToolError::Unavailable { .. }) {
                    self.drop_connection(&conn, &e.to_string()).await;
                }
                return Err(e);
            }
            Ok(Ok(t)) => t,
        };
        let mut current = self.tools.write().unwrap_or_else(|p| p.into_inner());
        if *current != tools {
            tracing::info!(server = %self.cfg.name, tools = tools.len(), "MCP tool list updated");
            *current = tools;
            self.generation.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }

    fn classify(&self, e: rmcp::ServiceError) -> ToolError {
        use rmcp::ServiceError as E;
        match e {
            E::TransportClosed | E::TransportSend(_) | E::Cancelled { .. } => self.unavailable(e.to_string()),
            E::Timeout { timeout } => ToolError::Timeout { server: self.cfg.name.clone(), after: timeout },
            E::McpError(d) => ToolError::Protocol {
                server: self.cfg.name.clone(),
                message: clip(&format!("{} ({})", d.message, d.code.0), MAX_MESSAGE_CHARS),
            },
            other => ToolError::Protocol { server: self.cfg.name.clone(), message: clip(&other.to_string(), 300) },
        }
    }

    async fn call(&self, tool: &str, args: Value) -> Result<ToolOutput, ToolError> {
        let known = self.tools.read().unwrap_or_else(|p| p.into_inner()).iter().any(|t| t.name == tool);
        if !known {
            return Err(ToolError::UnknownTool(format!("{}__{tool}", self.cfg.name)));
        }
        let Value::Object(args) = args else {
            return Err(ToolError::Policy(format!("arguments of `{tool}` must be a JSON object")));
        };
        let conn = self.connection(false).await?;
        let r = tokio::time::timeout(self.cfg.call_timeout, conn.call_tool(tool, args)).await;
        match r {
            Err(_) => {
                tracing::warn!(server = %self.cfg.name, tool, after = ?self.cfg.call_timeout, "MCP tool call timed out");
                Err(ToolError::Timeout { server: self.cfg.name.clone(), after: self.cfg.call_timeout })
            }
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => {
                let e = self.classify(e);
                if matches!(e, ToolError::Unavailable { .. }) || conn.is_closed() {
                    tracing::warn!(server = %self.cfg.name, tool, error = %e, "MCP server died during a call");
                    self.drop_connection(&conn, &e.to_string()).await;
                    return Err(self.unavailable(e.to_string()));
                }
                Err(e)
            }
        }
    }
}

impl ToolProvider for McpServer {
    fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    fn tools(&self) -> Vec<ToolInfo> {
        self.inner.tools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    fn call<'a>(&'a self, tool: &'a str, args: Value) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(self.inner.call(tool, args))
    }
}
