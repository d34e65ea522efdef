//! The MCP servers of the agents' tools (`[[mcp_servers]]`): started at the first turn that needs
//! one (an assistant is built in synchronous code; the servers need the async runtime), then
//! shared by every conversation. Each server is a provider of a [`Toolbox`] that applies the tool
//! policy: the server's allow-list and approval-required tools, each agent's `{server}__...`
//! tools as its allow-list, arguments validated against the tool's schema. A server that does not
//! start offers no tools (its failure is logged); one that dies mid-call fails that call, and the
//! next call starts it again.

use std::sync::Arc;
use switchboard_tools::Toolbox;
use switchboard_tools::config::ToolsConfig;
use switchboard_tools::mcp::McpServer;
use tokio::sync::OnceCell;

/// The configured servers and, once started, their toolbox.
pub(crate) struct McpTools {
    config: ToolsConfig,
    started: OnceCell<(Toolbox, Vec<Arc<McpServer>>)>,
}

impl McpTools {
    pub(crate) fn new(config: ToolsConfig) -> Self {
        Self { config, started: OnceCell::new() }
    }

    /// The toolbox, starting the servers the first time (bounded by their connect timeouts).
    pub(crate) async fn toolbox(&self) -> &Toolbox {
        // The servers are kept with the toolbox so that they live as long as the assistant.
        &self.started.get_or_init(|| self.config.start()).await.0
    }
}
