//! The tools config: MCP servers and who may call what, as written in TOML, then validated into
//! [`McpServerConfig`]s, [`ProviderRules`] and allow-lists.
//!
//! ```toml
//! [[mcp_servers]]
//! name = "bank"                                   # tools are `bank__<tool>`
//! command = ["python3", "bank_tools.py"]          # stdio: the program and its arguments
//! # url = "https://tools.example/mcp"             # or Streamable HTTP
//! # token_env = "BANK_MCP_TOKEN"                  # bearer token for `url`, from this variable
//! env = { LOG_LEVEL = "warning" }                 # extra environment of a stdio server
//! allow = ["get_balance", "freeze_account"]       # tools offered (default: all it lists)
//! approval_required = { freeze_account = "freezing blocks all payments" }
//! call_timeout_ms = 30000
//! connect_timeout_ms = 15000
//! refresh_interval_ms = 300000                    # 0: only on notifications/tools/list_changed
//!
//! [tool_access]                                   # agent or flow -> tools it may call
//! support = ["bank__*"]
//! faq = ["bank__get_balance"]
//! ```

use crate::mcp::{McpServer, McpServerConfig, McpTransport};
use crate::toolbox::{ProviderRules, SEPARATOR, Toolbox};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One `[[mcp_servers]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    /// Our name for it.
    pub name: String,
    /// A stdio server: program and arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A Streamable HTTP server's endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding a bearer token for `url`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Extra environment variables of a stdio server.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Tools offered (default: all).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Tool → why a human must approve each call.
    #[serde(default)]
    pub approval_required: BTreeMap<String, String>,
    /// Limit on one call, ms.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
    /// Limit on connecting and listing, ms.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Periodic refresh of the tool list, ms (0: only on `list_changed`).
    #[serde(default)]
    pub refresh_interval_ms: Option<u64>,
}

/// The whole tools config as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToolsConfig {
    /// MCP servers.
    #[serde(default)]
    pub mcp_servers: Vec<RawMcpServer>,
    /// Agent or flow → qualified tool names (or `{server}__*`).
    #[serde(default)]
    pub tool_access: BTreeMap<String, Vec<String>>,
}

/// A config error naming the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// One validated server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// How to run and reach it.
    pub config: McpServerConfig,
    /// What the policy says about its tools.
    pub rules: ProviderRules,
}

/// The validated tools config.
#[derive(Debug, Clone, Default)]
pub struct ToolsConfig {
    /// Servers, in order.
    pub servers: Vec<ServerSpec>,
    /// Agent or flow → tools.
    pub access: BTreeMap<String, Vec<String>>,
}

fn ms(name: &str, field: &str, v: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(0) => Err(ConfigError(format!("mcp_servers.{name}.{field} must be greater than 0"))),
        Some(n) => Ok(Duration::from_millis(n)),
    }
}

impl ToolsConfig {
    /// Parses TOML text.
    ///
    /// # Errors
    /// TOML errors and every invalid setting, named.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawToolsConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Validates a raw config.
    ///
    /// # Errors
    /// The first invalid setting, named.
    pub fn from_raw(raw: RawToolsConfig) -> Result<Self, ConfigError> {
        let mut servers: Vec<ServerSpec> = Vec::new();
        for r in raw.mcp_servers {
            let name = r.name.clone();
            let valid = !name.is_empty()
                && name.len() <= 64
                && !name.contains(SEPARATOR)
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid || servers.iter().any(|s| s.config.name == name) {
                return Err(ConfigError(format!(
                    "mcp_servers: name {name:?} must be unique, 1-64 of [A-Za-z0-9_-], without `{SEPARATOR}`"
                )));
            }
            let transport = match (r.command, r.url) {
                (Some(cmd), None) => {
                    let mut it = cmd.into_iter();
                    let command = it
                        .next()
                        .filter(|c| !c.trim().is_empty())
                        .ok_or_else(|| ConfigError(format!("mcp_servers.{name}.command must name a program")))?;
                    if r.token_env.is_some() {
                        return Err(ConfigError(format!("mcp_servers.{name}.token_env needs `url`, not `command`")));
                    }
                    McpTransport::Stdio { command, args: it.collect(), env: r.env.into_iter().collect(), cwd: None }
                }
                (None, Some(url)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError(format!("mcp_servers.{name}.url {url:?} is not an http(s) URL")));
                    }
                    if !r.env.is_empty() {
                        return Err(ConfigError(format!("mcp_servers.{name}.env is for `command` servers")));
                    }
                    let bearer =
                        match r.token_env {
                            Some(var) => Some(switchboard_guard::Secret::new(std::env::var(&var).map_err(|_| {
                                ConfigError(format!("mcp_servers.{name}.token_env: ${var} is not set"))
                            })?)),
                            None => None,
                        };
                    McpTransport::Http { url, bearer }
                }
                _ => return Err(ConfigError(format!("mcp_servers.{name}: set exactly one of `command` and `url`"))),
            };
            let mut config = McpServerConfig::new(name.clone(), transport);
            config.call_timeout = ms(&name, "call_timeout_ms", r.call_timeout_ms, config.call_timeout)?;
            config.connect_timeout = ms(&name, "connect_timeout_ms", r.connect_timeout_ms, config.connect_timeout)?;
            config.refresh_interval = match r.refresh_interval_ms {
                None => config.refresh_interval,
                Some(0) => None,
                Some(n) => Some(Duration::from_millis(n)),
            };
            if let Some(allow) = &r.allow
                && let Some(t) = r.approval_required.keys().find(|t| !allow.contains(t))
            {
                return Err(ConfigError(format!(
                    "mcp_servers.{name}.approval_required: `{t}` is not in `allow`, so it is never offered"
                )));
            }
            servers.push(ServerSpec {
                config,
                rules: ProviderRules { allow: r.allow, approval_required: r.approval_required },
            });
        }
        for (agent, tools) in &raw.tool_access {
            for t in tools {
                let server = crate::toolbox::split_name(t).map(|(s, _)| s);
                if !server.is_some_and(|s| servers.iter().any(|x| x.config.name == s)) {
                    return Err(ConfigError(format!(
                        "tool_access.{agent}: `{t}` is not `<server>__<tool>` or `<server>__*` of a declared server"
                    )));
                }
            }
        }
        Ok(Self { servers, access: raw.tool_access })
    }

    /// Starts every server (listing its tools) and builds the toolbox over them.
    pub async fn start(&self) -> (Toolbox, Vec<Arc<McpServer>>) {
        let started = futures::future::join_all(self.servers.iter().map(|s| McpServer::start(s.config.clone()))).await;
        let mut tb = Toolbox::new();
        let mut servers = Vec::new();
        for (spec, server) in self.servers.iter().zip(started) {
            let server = Arc::new(server);
            tb = tb.with_provider(server.clone(), spec.rules.clone());
            servers.push(server);
        }
        for (agent, tools) in &self.access {
            tb = tb.allow(agent.clone(), tools.clone());
        }
        (tb, servers)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_full_config_validates() {
        let c = ToolsConfig::parse(
            r#"
[[mcp_servers]]
name = "bank"
command = ["python3", "bank.py", "stdio"]
env = { A = "1" }
allow = ["get_balance", "freeze_account"]
approval_required = { freeze_account = "blocks payments" }
call_timeout_ms = 5000
refresh_interval_ms = 0

[[mcp_servers]]
name = "kb"
url = "https://kb.example/mcp"

[tool_access]
support = ["bank__*", "kb__search"]
"#,
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        let bank = &c.servers[0];
        assert_eq!(bank.config.call_timeout, Duration::from_secs(5));
        assert_eq!(bank.config.refresh_interval, None);
        assert!(
            matches!(&bank.config.transport, McpTransport::Stdio { command, args, .. } if command == "python3" && args.len() == 2)
        );
        assert_eq!(bank.rules.approval_required["freeze_account"], "blocks payments");
        assert!(
            matches!(&c.servers[1].config.transport, McpTransport::Http { url, bearer: None } if url.ends_with("/mcp"))
        );
    }

    #[test]
    fn bad_configs_are_named() {
        let err = |t: &str| ToolsConfig::parse(t).unwrap_err().0;
        assert!(err("[[mcp_servers]]\nname = \"a\"").contains("exactly one of"));
        assert!(err("[[mcp_servers]]\nname = \"a\"\ncommand = []").contains("must name a program"));
        assert!(err("[[mcp_servers]]\nname = \"a__b\"\ncommand = [\"x\"]").contains("without `__`"));
        assert!(err("[[mcp_servers]]\nname = \"a\"\nurl = \"ftp://x\"").contains("http(s)"));
        assert!(
            err("[[mcp_servers]]\nname = \"a\"\ncommand = [\"x\"]\ncall_timeout_ms = 0").contains("call_timeout_ms")
        );
        assert!(
            err("[[mcp_servers]]\nname = \"a\"\ncommand = [\"x\"]\nallow = []\napproval_required = { t = \"r\" }")
                .contains("not in `allow`")
        );
        assert!(
            err("[[mcp_servers]]\nname = \"a\"\ncommand = [\"x\"]\n[tool_access]\nfaq = [\"b__t\"]")
                .contains("tool_access.faq")
        );
        assert!(err("[[mcp_servers]]\nname = \"a\"\ncommand = [\"x\"]\ncolour = 1").contains("colour"));
        assert!(
            err("[[mcp_servers]]\nname = \"a\"\nurl = \"http://x\"\ntoken_env = \"SB_TEST_SURELY_UNSET_VAR\"")
                .contains("is not set")
        );
    }
}
