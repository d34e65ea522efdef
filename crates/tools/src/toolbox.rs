//! The toolbox: every provider's tools under qualified names (`{provider}__{tool}`), behind the
//! tool policy of `switchboard-guard` (allow-lists per agent or flow, JSON-Schema validation of
//! arguments against the tool's own `inputSchema`, approval-required tools).
//!
//! Key design decision: the policy is rebuilt from the providers' current lists whenever one of
//! them changes ([`ToolProvider::generation`]), so a tool that appears after a `list_changed`
//! is validated against its schema, and one that disappears is refused as unknown. An approval is
//! the engine's interrupt ([`Toolbox::call_in_node`]): the tool does not run until the run is
//! resumed with `{"approve": true}`.

use crate::tool::{ToolError, ToolInfo, ToolOutput, ToolProvider};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use switchboard_engine::{NodeContext, NodeError};
use switchboard_guard::tool::{ToolDecision, ToolPolicy, ToolPolicyError, ToolSpec};

/// Separates the provider's name from the tool's in a qualified name.
pub const SEPARATOR: &str = "__";

/// What the policy says about one provider's tools.
#[derive(Debug, Clone, Default)]
pub struct ProviderRules {
    /// The provider's tools that are offered at all (`None`: every tool it lists).
    pub allow: Option<Vec<String>>,
    /// Tools (the provider's names) that need a human's approval before each call, with the
    /// reason shown to the approver.
    pub approval_required: BTreeMap<String, String>,
}

/// A tool as the toolbox offers it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OfferedTool {
    /// Qualified name, `{provider}__{tool}`.
    pub name: String,
    /// The provider's description and schema.
    #[serde(flatten)]
    pub info: ToolInfo,
    /// Whether a call waits for a human.
    pub approval_required: bool,
}

struct Entry {
    provider: Arc<dyn ToolProvider>,
    rules: ProviderRules,
}

struct Compiled {
    generations: Vec<u64>,
    policy: Arc<ToolPolicy>,
    offered: Vec<OfferedTool>,
}

/// Tools from several providers under one policy.
#[derive(Default)]
pub struct Toolbox {
    entries: Vec<Entry>,
    /// Agent (or flow) → qualified tool names it may call; `{provider}__*` means all of them.
    agents: HashMap<String, Vec<String>>,
    compiled: RwLock<Option<Arc<Compiled>>>,
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.provider.name()).collect();
        f.debug_struct("Toolbox").field("providers", &names).field("agents", &self.agents).finish()
    }
}

/// Splits a qualified name into provider and tool.
pub fn split_name(qualified: &str) -> Option<(&str, &str)> {
    qualified.split_once(SEPARATOR).filter(|(p, t)| !p.is_empty() && !t.is_empty())
}

impl Toolbox {
    /// An empty toolbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider with its rules.
    pub fn with_provider(mut self, provider: Arc<dyn ToolProvider>, rules: ProviderRules) -> Self {
        self.entries.push(Entry { provider, rules });
        self
    }

    /// Lets `agent` (an agent or a flow) call `tools`: qualified names, or `{provider}__*`.
    pub fn allow(mut self, agent: impl Into<String>, tools: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.agents.entry(agent.into()).or_default().extend(tools.into_iter().map(Into::into));
        self
    }

    fn compiled(&self) -> Arc<Compiled> {
        let generations: Vec<u64> = self.entries.iter().map(|e| e.provider.generation()).collect();
        if let Some(c) = self.compiled.read().unwrap_or_else(|p| p.into_inner()).as_ref()
            && c.generations == generations
        {
            return c.clone();
        }
        let mut policy = ToolPolicy::default();
        let mut offered = Vec::new();
        for e in &self.entries {
            for info in e.provider.tools() {
                if e.rules.allow.as_ref().is_some_and(|a| !a.contains(&info.name)) {
                    continue;
                }
                let name = format!("{}{SEPARATOR}{}", e.provider.name(), info.name);
                let approval = e.rules.approval_required.get(&info.name).cloned();
                let spec = ToolSpec {
                    name: name.clone(),
                    schema: Some(info.input_schema.clone()),
                    approval_required: approval.clone(),
                };
                if let Err(err) = policy.register(spec) {
                    // A tool whose arguments cannot be checked is not offered.
                    tracing::warn!(tool = %name, error = %err, "MCP tool skipped: its input schema does not compile");
                    continue;
                }
                offered.push(OfferedTool { name, info, approval_required: approval.is_some() });
            }
        }
        for (agent, tools) in &self.agents {
            let mut names = Vec::new();
            for t in tools {
                match t.strip_suffix('*').and_then(|p| p.strip_suffix(SEPARATOR)) {
                    Some(provider) => names.extend(
                        offered
                            .iter()
                            .filter(|o| split_name(&o.name).is_some_and(|(p, _)| p == provider))
                            .map(|o| o.name.clone()),
                    ),
                    None => names.push(t.clone()),
                }
            }
            policy.allow(agent.clone(), names);
        }
        let c = Arc::new(Compiled { generations, policy: Arc::new(policy), offered });
        *self.compiled.write().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        c
    }

    /// Every tool offered (after the providers' allow-lists).
    pub fn tools(&self) -> Vec<OfferedTool> {
        self.compiled().offered.clone()
    }

    /// The tools `agent` may call (to offer a model only those).
    pub fn tools_for(&self, agent: &str) -> Vec<OfferedTool> {
        let c = self.compiled();
        let allowed = c.policy.tools_for(agent);
        c.offered.iter().filter(|o| allowed.contains(&o.name.as_str())).cloned().collect()
    }

    /// Checks a call against the policy.
    ///
    /// # Errors
    /// [`ToolError::UnknownTool`], or [`ToolError::Policy`] (not allowed, invalid arguments).
    pub fn check(&self, conversation: &str, agent: &str, tool: &str, args: &Value) -> Result<ToolDecision, ToolError> {
        self.compiled().policy.check(conversation, agent, tool, args).map_err(|e| match e {
            ToolPolicyError::UnknownTool(t) => ToolError::UnknownTool(t),
            other => ToolError::Policy(other.to_string()),
        })
    }

    /// Runs a call the policy already allowed (or a human approved).
    async fn invoke(&self, tool: &str, args: Value) -> Result<ToolOutput, ToolError> {
        let (provider, name) = split_name(tool).ok_or_else(|| ToolError::UnknownTool(tool.to_string()))?;
        let e = self
            .entries
            .iter()
            .find(|e| e.provider.name() == provider)
            .ok_or_else(|| ToolError::UnknownTool(tool.to_string()))?;
        e.provider.call(name, args).await
    }

    /// Checks and runs a call outside a graph run; an approval-required tool is refused here
    /// (there is no run to pause).
    ///
    /// # Errors
    /// Policy refusals, and every [`ToolError`] of the provider.
    pub async fn call(
        &self,
        conversation: &str,
        agent: &str,
        tool: &str,
        args: Value,
    ) -> Result<ToolOutput, ToolError> {
        match self.check(conversation, agent, tool, &args)? {
            ToolDecision::Allow => self.invoke(tool, args).await,
            ToolDecision::RequireApproval(a) => {
                Err(ToolError::Policy(format!("`{}` needs a human's approval ({})", a.tool, a.reason)))
            }
        }
    }

    /// Runs a call whose approval (if the tool needs one) was obtained by the caller's own
    /// approval flow: the rest of the policy (allow-list, arguments) is checked again.
    ///
    /// # Errors
    /// Policy refusals, and every [`ToolError`] of the provider.
    pub async fn call_approved(
        &self,
        conversation: &str,
        agent: &str,
        tool: &str,
        args: Value,
    ) -> Result<ToolOutput, ToolError> {
        self.check(conversation, agent, tool, &args)?;
        self.invoke(tool, args).await
    }

    /// Checks and runs a call from inside a graph node. An approval-required tool pauses the run
    /// with an interrupt (payload `{"type": "approval", "id", "tool", "args", "reason", "agent"}`,
    /// arguments masked); when the run is resumed with `{"approve": true}` (optionally with the
    /// approval's `id`) the node runs again, reaches this call, and the tool runs.
    ///
    /// The outer `Result` is the interrupt: propagate it with `?`. The inner one is the call's
    /// outcome, for the node to turn into a reply or a fallback.
    ///
    /// # Errors
    /// [`NodeError::Interrupted`] while the approval is pending.
    pub async fn call_in_node(
        &self,
        ctx: &NodeContext,
        agent: &str,
        tool: &str,
        args: Value,
    ) -> Result<Result<ToolOutput, ToolError>, NodeError> {
        let decision = match self.check(ctx.conversation_id(), agent, tool, &args) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        if let ToolDecision::RequireApproval(a) = decision {
            let payload = json!({
                "type": "approval", "id": a.id, "tool": a.tool, "args": a.arguments, "reason": a.reason, "agent": a.agent,
            });
            let answer = ctx.interrupt(payload)?;
            let approved = answer.as_bool().or_else(|| answer.get("approve").and_then(Value::as_bool)).unwrap_or(false);
            if let Some(id) = answer.get("id").and_then(Value::as_str)
                && id != a.id
            {
                return Ok(Err(ToolError::Policy(format!("the approval {id} is for another call than {}", a.id))));
            }
            if !approved {
                return Ok(Err(ToolError::Denied(tool.to_string())));
            }
            tracing::info!(tool, approval = %a.id, by = ?answer.get("by"), "approved tool call runs");
        }
        Ok(self.invoke(tool, args).await)
    }
}
