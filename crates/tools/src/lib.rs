//! Tools for flows and agents: our tool trait ([`ToolProvider`]), MCP servers as providers
//! ([`mcp::McpServer`], stdio and Streamable HTTP through the official `rmcp` SDK), and the
//! [`Toolbox`] that puts them behind the tool policy (allow-lists, argument validation against
//! each tool's JSON Schema, approval-required tools that pause the run on an engine interrupt).
//!
//! [`config`] reads the tools config (`[[mcp_servers]]`, `[tool_access]`).
//!
//! It must not know about vendors or HTTP servers: a model sees the tools through
//! [`Toolbox::tools_for`], a graph node calls them through [`Toolbox::call_in_node`].
//!
//! Key design decision: nothing here can hang a conversation. Every request to a tool server has
//! a timeout, a server that dies fails the call in flight with a typed [`ToolError`] (the node
//! decides the fallback), and the next call reconnects (respawning a stdio server).

pub mod config;
pub mod mcp;
mod tool;
mod toolbox;

pub use tool::{ToolError, ToolInfo, ToolOutput, ToolProvider};
pub use toolbox::{OfferedTool, ProviderRules, SEPARATOR, Toolbox, split_name};
