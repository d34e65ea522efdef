//! One open connection to an MCP server: the `rmcp` client service over a child process or
//! Streamable HTTP, and the conversion of its types into ours.

use super::{McpServerConfig, McpTransport};
use crate::tool::{ToolInfo, ToolOutput};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, JsonObject, ProtocolVersion,
    ServerNotification, SubscriptionFilter,
};
use rmcp::service::{MaybeSendFuture, NotificationContext, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt as _, RoleClient};
use serde_json::Value;
use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use tokio::sync::Notify;

/// Our side of the session: says who we are and wakes the refresh task on `list_changed`.
#[derive(Clone)]
pub(super) struct Handler {
    changed: Arc<Notify>,
}

impl ClientHandler for Handler {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + MaybeSendFuture + '_ {
        self.changed.notify_one();
        std::future::ready(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("switchboard", env!("CARGO_PKG_VERSION")))
    }
}

/// A live session.
pub(super) struct Conn {
    service: RunningService<RoleClient, Handler>,
    /// The `subscriptions/listen` stream of a stateless-era server (it ends with the session).
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.abort();
        }
    }
}

/// Servers of the stateless 2026-07-28 era push `list_changed` only on a `subscriptions/listen`
/// stream (servers of the handshake era send it on the session, to [`Handler`]). Opened when the
/// server says it can notify; it ends when the session does.
async fn listen_for_changes(peer: rmcp::service::Peer<RoleClient>, changed: Arc<Notify>) {
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let mut sub = match peer.listen(filter).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "MCP server offers no subscriptions/listen; relying on session notifications");
            return;
        }
    };
    while let Ok(Some(n)) = sub.next().await {
        if matches!(n, ServerNotification::ToolListChangedNotification(_)) {
            changed.notify_one();
        }
    }
}

impl Conn {
    /// Spawns or connects, then runs the lifecycle (discovery, or the `initialize` handshake for
    /// servers of the older era).
    pub(super) async fn open(cfg: &McpServerConfig, changed: Arc<Notify>) -> Result<Self, String> {
        let handler = Handler { changed: changed.clone() };
        let lifecycle = ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::LATEST],
            legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
        };
        let service = match &cfg.transport {
            McpTransport::Stdio { command, args, env, cwd } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env.iter().map(|(k, v)| (k, v))).kill_on_drop(true);
                if let Some(d) = cwd {
                    cmd.current_dir(d);
                }
                // The server's stderr is its log: keep it out of our stdout, but do not let a full
                // pipe block it.
                let (child, _stderr) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| format!("cannot start `{command}`: {e}"))?;
                handler.serve_with_lifecycle(child, lifecycle).await.map_err(|e| e.to_string())?
            }
            McpTransport::Http { url, bearer } => {
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(b) = bearer {
                    config = config.auth_header(b.expose().clone());
                }
                let transport = StreamableHttpClientTransport::from_config(config);
                handler.serve_with_lifecycle(transport, lifecycle).await.map_err(|e| e.to_string())?
            }
        };
        let modern = service.peer().peer_info().is_some_and(|i| {
            i.protocol_version >= ProtocolVersion::LATEST
                && i.capabilities.tools.as_ref().is_some_and(|t| t.list_changed == Some(true))
        });
        let listener = modern.then(|| tokio::spawn(listen_for_changes(service.peer().clone(), changed)));
        Ok(Self { service, listener })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.service.is_closed() || self.service.peer().is_transport_closed()
    }

    pub(super) async fn list_tools(&self) -> Result<Vec<ToolInfo>, rmcp::ServiceError> {
        let tools = self.service.peer().list_all_tools().await?;
        Ok(tools
            .into_iter()
            .map(|t| ToolInfo {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect())
    }

    pub(super) async fn call_tool(&self, tool: &str, args: JsonObject) -> Result<ToolOutput, rmcp::ServiceError> {
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args);
        let r = self.service.peer().call_tool(params).await?;
        let text: Vec<String> = r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
        Ok(ToolOutput { text: text.join("\n"), structured: r.structured_content, is_error: r.is_error == Some(true) })
    }
}
