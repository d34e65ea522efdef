//! Tool policy: which agent may call which tool, whether the arguments fit the tool's JSON
//! Schema, and whether a human must approve the call first.
//!
//! An approval-required tool (freeze card, reverse transfer) does not run: [`ToolPolicy::check`]
//! returns an [`ApprovalRequest`] value that the engine turns into an interrupt. Its id is a hash
//! of conversation, agent, tool and arguments, so a resumed run asks for the same approval once.
//! Validation errors are reported without the offending values (they may be PII).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

use crate::detect::Detector;
use crate::redact;

/// A tool as the policy sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolSpec {
    /// Tool name.
    pub name: String,
    /// JSON Schema of the arguments (none: any object).
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// Why a human must approve each call, if one must.
    #[serde(default)]
    pub approval_required: Option<String>,
}

/// Serialisable configuration: tools and per-agent allow-lists.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToolPolicyConfig {
    /// Tools.
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// Agent name → tools it may call.
    #[serde(default)]
    pub agents: HashMap<String, Vec<String>>,
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum ToolPolicyError {
    /// No tool by that name.
    #[error("unknown tool {0}")]
    UnknownTool(String),
    /// The agent's allow-list does not include the tool.
    #[error("agent {agent} may not call {tool}")]
    NotAllowed {
        /// The agent.
        agent: String,
        /// The tool.
        tool: String,
    },
    /// The arguments do not fit the schema.
    #[error("arguments of {tool} are invalid: {}", errors.join("; "))]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// One message per violation (path and rule, no values).
        errors: Vec<String>,
    },
    /// A tool's schema does not compile.
    #[error("schema of {tool} is invalid: {error}")]
    BadSchema {
        /// The tool.
        tool: String,
        /// What is wrong.
        error: String,
    },
}

impl ToolPolicyError {
    /// Whether the model could fix this by calling again differently (bad arguments), as
    /// opposed to a permission problem it must not retry around.
    pub fn is_correctable(&self) -> bool {
        matches!(self, Self::InvalidArguments { .. })
    }
}

/// A call waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Stable id (same conversation, agent, tool and arguments ⇒ same id).
    pub id: String,
    /// Conversation.
    pub conversation: String,
    /// Agent that wants to call.
    pub agent: String,
    /// Tool.
    pub tool: String,
    /// Arguments with any PII masked, for display to the approver.
    pub arguments: serde_json::Value,
    /// Why approval is required.
    pub reason: String,
}

/// The policy's answer for a permitted call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolDecision {
    /// Run it.
    Allow,
    /// Ask a human first.
    RequireApproval(ApprovalRequest),
}

struct CompiledTool {
    spec: ToolSpec,
    validator: Option<jsonschema::Validator>,
}

/// The tool policy.
#[derive(Default)]
pub struct ToolPolicy {
    tools: HashMap<String, CompiledTool>,
    agents: HashMap<String, HashSet<String>>,
    detector: Detector,
}

impl std::fmt::Debug for ToolPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolPolicy")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .field("agents", &self.agents)
            .finish()
    }
}

impl ToolPolicy {
    /// Build from configuration.
    ///
    /// # Errors
    /// [`ToolPolicyError::BadSchema`] if a schema does not compile.
    pub fn from_config(config: ToolPolicyConfig) -> Result<Self, ToolPolicyError> {
        let mut p = Self::default();
        for t in config.tools {
            p.register(t)?;
        }
        for (agent, tools) in config.agents {
            p.allow(agent, tools);
        }
        Ok(p)
    }

    /// Register a tool.
    ///
    /// # Errors
    /// [`ToolPolicyError::BadSchema`] if its schema does not compile.
    pub fn register(&mut self, spec: ToolSpec) -> Result<(), ToolPolicyError> {
        let validator = spec
            .schema
            .as_ref()
            .map(|s| {
                jsonschema::validator_for(s)
                    .map_err(|e| ToolPolicyError::BadSchema { tool: spec.name.clone(), error: e.masked().to_string() })
            })
            .transpose()?;
        self.tools.insert(spec.name.clone(), CompiledTool { spec, validator });
        Ok(())
    }

    /// Let `agent` call `tools`.
    pub fn allow(&mut self, agent: impl Into<String>, tools: impl IntoIterator<Item = impl Into<String>>) {
        self.agents.entry(agent.into()).or_default().extend(tools.into_iter().map(Into::into));
    }

    /// The tools `agent` may call (to offer the model only those).
    pub fn tools_for(&self, agent: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .agents
            .get(agent)
            .map(|s| s.iter().map(String::as_str).filter(|t| self.tools.contains_key(*t)).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Check a call.
    ///
    /// # Errors
    /// Unknown tool, not on the agent's allow-list, or arguments not matching the schema.
    pub fn check(
        &self,
        conversation: &str,
        agent: &str,
        tool: &str,
        args: &serde_json::Value,
    ) -> Result<ToolDecision, ToolPolicyError> {
        let t = self.tools.get(tool).ok_or_else(|| ToolPolicyError::UnknownTool(tool.to_owned()))?;
        if !self.agents.get(agent).is_some_and(|a| a.contains(tool)) {
            tracing::warn!(agent, tool, "tool call outside the agent's allow-list");
            return Err(ToolPolicyError::NotAllowed { agent: agent.to_owned(), tool: tool.to_owned() });
        }
        if let Some(v) = &t.validator {
            let errors: Vec<String> =
                v.iter_errors(args).map(|e| format!("{}: {}", e.instance_path(), e.masked())).collect();
            if !errors.is_empty() {
                return Err(ToolPolicyError::InvalidArguments { tool: tool.to_owned(), errors });
            }
        }
        let Some(reason) = &t.spec.approval_required else {
            return Ok(ToolDecision::Allow);
        };
        let mut h = Sha256::new();
        for part in [conversation, agent, tool, &args.to_string()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let id: String = h.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect();
        Ok(ToolDecision::RequireApproval(ApprovalRequest {
            id: format!("appr_{id}"),
            conversation: conversation.to_owned(),
            agent: agent.to_owned(),
            tool: tool.to_owned(),
            arguments: self.mask_json(args),
            reason: reason.clone(),
        }))
    }

    fn mask_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(redact::mask(s, &self.detector.detect(s))),
            Value::Array(a) => a.iter().map(|x| self.mask_json(x)).collect(),
            Value::Object(o) => {
                o.iter().map(|(k, x)| (k.clone(), self.mask_json(x))).collect::<serde_json::Map<_, _>>().into()
            }
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> ToolPolicy {
        let config: ToolPolicyConfig = serde_json::from_value(json!({
            "tools": [
                {"name": "lookup_transfer", "schema": {
                    "type": "object", "required": ["transfer_id"], "additionalProperties": false,
                    "properties": {"transfer_id": {"type": "string", "pattern": "^tr_[a-z0-9]{6,}$"}}}},
                {"name": "freeze_card", "approval_required": "freezing a card blocks the customer's payments",
                 "schema": {"type": "object", "required": ["card"], "properties": {"card": {"type": "string"}}}}
            ],
            "agents": {"support": ["lookup_transfer", "freeze_card"], "faq": []}
        }))
        .unwrap();
        ToolPolicy::from_config(config).unwrap()
    }

    #[test]
    fn allow_list_schema_and_approval() {
        let p = policy();
        assert_eq!(
            p.check("c1", "support", "lookup_transfer", &json!({"transfer_id": "tr_abc123"})).unwrap(),
            ToolDecision::Allow
        );
        assert!(matches!(
            p.check("c1", "faq", "lookup_transfer", &json!({"transfer_id": "tr_abc123"})),
            Err(ToolPolicyError::NotAllowed { .. })
        ));
        assert!(matches!(p.check("c1", "support", "drop_tables", &json!({})), Err(ToolPolicyError::UnknownTool(_))));
        let err = p.check("c1", "support", "lookup_transfer", &json!({"transfer_id": "723.910.967-47"})).unwrap_err();
        assert!(err.is_correctable());
        assert!(!err.to_string().contains("723.910"), "{err}");

        let args = json!({"card": "4111 1111 1111 1111"});
        let ToolDecision::RequireApproval(a) = p.check("c1", "support", "freeze_card", &args).unwrap() else {
            panic!("approval expected")
        };
        assert_eq!(a.arguments, json!({"card": "[CARD]"}));
        assert!(a.id.starts_with("appr_"));
        let ToolDecision::RequireApproval(b) = p.check("c1", "support", "freeze_card", &args).unwrap() else {
            panic!("approval expected")
        };
        assert_eq!(a.id, b.id);
        assert_eq!(p.tools_for("support"), ["freeze_card", "lookup_transfer"]);
    }

    #[test]
    fn bad_schema_is_reported() {
        let r = ToolPolicy::from_config(ToolPolicyConfig {
            tools: vec![ToolSpec { name: "x".into(), schema: Some(json!({"type": 12})), approval_required: None }],
            agents: HashMap::new(),
        });
        assert!(matches!(r, Err(ToolPolicyError::BadSchema { .. })));
    }
}
