//! The declarative assistant config (`assistant.toml`) and its validation.
//!
//! The file deserializes into [`AssistantSpec`], a plain public struct: everything the file can
//! express can be built from Rust too, and both go through [`AssistantSpec::validate`]. Errors
//! name the file, the line and the column ([`ConfigError`]): TOML syntax errors come with the
//! span the parser reports, semantic errors (a route to an unknown handler, a tool the back end
//! does not offer) with the span of the offending value.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A config error with its location.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Built-in handlers besides flows and agents.
pub const BUILTIN_HANDLERS: &[&str] = &["faq", "handoff", "smalltalk", "out_of_scope"];

/// Flow implementations this crate ships (the `[flows.NAME]` tables must use these names).
pub const FLOW_KINDS: &[&str] =
    &["card_freeze", "transfer_status", "crypto_deposit_missing", "account_access", "fraud_report"];

fn span0() -> std::ops::Range<usize> {
    0..0
}

/// `[assistant]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Name the server registers it under.
    pub name: String,
    /// Human-readable description.
    pub description: String,
    /// Version string.
    pub version: String,
}

/// `[data]`: files relative to the config's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Labelled utterances (`text,category` CSV) the router is trained on.
    pub router_data: Vec<String>,
    /// Folder of help-centre articles (`*.md` with front matter).
    pub help_dir: String,
}

/// Which intents of the data the router learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentSelection {
    /// Every intent in the data.
    All,
    /// Only intents named in `[routes]`.
    Routed,
}

/// `[router]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    /// Examples kept per intent (seeded sample); bounds training time.
    pub max_examples_per_intent: usize,
    /// Which intents to learn.
    pub intents: IntentSelection,
    /// Width of the hashed n-gram block.
    pub lexical_dim: usize,
    /// Use the sentence encoder when its model is installed.
    pub use_sentence_encoder: bool,
    /// Engine of the sentence encoder: `ort` (ONNX Runtime, the default) or `candle`. Without
    /// it, `SWITCHBOARD_ENCODER_BACKEND` decides, else ort. ONNX Runtime falls back to candle
    /// with a warning when it is not installed.
    #[serde(default)]
    pub encoder_backend: Option<switchboard_router::encoder::EncoderBackend>,
    /// Clarify below this top-two margin.
    pub clarify_margin: f32,
    /// Fraction of in-scope held-out items the out-of-scope threshold may reject.
    pub target_rejection: f32,
    /// Ship the compliance rules (fraud, stolen card, account takeover, recovery-phrase scams).
    pub compliance_rules: bool,
    /// Keep the training examples' embeddings for the neighbour vote and the out-of-scope score
    /// (default true; only with the sentence encoder).
    #[serde(default = "yes")]
    pub neighbours: bool,
}

fn yes() -> bool {
    true
}

/// One slot of a flow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    /// Slot name.
    pub name: String,
    /// Extractor: `last4`, `transfer_id`, `tx_hash`, `asset`, `network`, `text`.
    pub extractor: Spanned<String>,
    /// Question asked when it is missing.
    pub prompt: String,
    /// Said when the answer does not fit.
    pub invalid: String,
    /// The flow can go on without it.
    #[serde(default)]
    pub optional: bool,
}

/// `[flows.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// What the flow does, in the customer's words ("freezing a card").
    pub label: String,
    /// Slots, in the order they are asked.
    #[serde(default)]
    pub slots: Vec<SlotSpec>,
    /// Tools the flow may call.
    pub tools: Vec<Spanned<String>>,
    /// Tools that need a human's approval (an engine interrupt) before they run.
    #[serde(default)]
    pub approval_required: Vec<Spanned<String>>,
    /// Message templates (`{slot}` and tool-result fields are substituted).
    #[serde(default)]
    pub messages: BTreeMap<String, String>,
}

/// How much of the conversation an agent receives when the conversation is transferred to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextPolicy {
    /// All messages.
    FullHistory,
    /// The handoff summary only.
    Summary,
    /// The active flow's slots only.
    SlotsOnly,
}

/// `[agents.NAME]`: an LLM agent (used only when one of its models is available, see
/// [`crate::llm`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// System instructions.
    pub instructions: String,
    /// Tools it may call.
    #[serde(default)]
    pub tools: Vec<Spanned<String>>,
    /// Tools that need a human's approval before they run (besides those any flow marks so).
    #[serde(default)]
    pub approval_required: Vec<Spanned<String>>,
    /// Model chain, first to last (`provider:model` or `provider/model`, the provider being a
    /// `[providers.NAME]` table or the built-in `openai` / `anthropic`); fallbacks in order.
    pub models: Vec<String>,
    /// What context it receives.
    pub context: ContextPolicy,
    /// Handler used when no model is reachable (offline).
    pub offline: Spanned<String>,
}

/// `[remote_agents.NAME]`: an external A2A agent (Google ADK, LangGraph, any A2A server) that
/// answers some intents. It is active only when it has a URL (`url`, or the environment variable
/// `url_env` names, which wins); without one its intents go to their `[routes]` handler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAgentSpec {
    /// The agent's base URL (its card is at `{url}/.well-known/agent-card.json`).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// An environment variable holding the base URL (overrides `url` when set and not empty).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The intents it answers.
    pub intents: Vec<Spanned<String>>,
    /// What is shared besides the message: `summary` (recent turns), `slots`, `full` or `none`;
    /// every text masked by the guard.
    #[serde(default = "default_remote_context")]
    pub context: switchboard_interop::a2a::client::ContextPolicy,
    /// Total time of one delegated call, in ms.
    #[serde(default = "default_remote_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest silence between two stream events, in ms.
    #[serde(default = "default_remote_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// An environment variable holding a bearer token for the agent (required when named).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The handler (a flow or a built-in) that answers when the agent is down, hangs, fails or
    /// answers garbage.
    pub fallback: Spanned<String>,
}

fn default_remote_context() -> switchboard_interop::a2a::client::ContextPolicy {
    switchboard_interop::a2a::client::ContextPolicy::Summary
}

fn default_remote_timeout_ms() -> u64 {
    30_000
}

fn default_remote_idle_timeout_ms() -> u64 {
    10_000
}

impl RemoteAgentSpec {
    /// The URL in effect: the environment's (when `url_env` is set there), else `url`.
    pub fn resolved_url(&self) -> Option<String> {
        self.url_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .or_else(|| self.url.as_ref().map(|u| u.get_ref().clone()))
    }
}

/// Whether a URL is an http(s) URL.
pub(crate) fn is_http_url(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

/// `[replies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replies {
    /// Out of scope; `{capabilities}` is replaced by the list.
    pub out_of_scope: String,
    /// What the assistant can do.
    pub capabilities: Vec<String>,
    /// Ambiguous; `{first}` and `{second}` are intent labels.
    pub clarify: String,
    /// Said when a flow is cancelled; `{flow}` is its label.
    pub cancelled: String,
    /// Said on restart.
    pub restarted: String,
    /// Said when returning to a flow after a digression; `{flow}` and `{prompt}`.
    pub resume_flow: String,
    /// Said when a slot was corrected; `{slot}` and `{value}`.
    pub corrected: String,
    /// Said after a blocked prompt-injection attempt.
    pub injection: String,
    /// Said when a conversation is handed back to the bot with no flow to resume.
    pub welcome_back: String,
}

/// `[handoff]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffSpec {
    /// SLA per priority (`urgent`, `high`, `normal`, `low`), in ms.
    pub sla_ms: BTreeMap<String, u64>,
    /// Priority per reason (`customer_request`, `fraud_report`, `secret_shared`, `approval`,
    /// `repeated_misunderstanding`, ...).
    pub priority: BTreeMap<String, String>,
    /// Told to the customer when queued; `{minutes}` is the SLA.
    pub queued: String,
    /// Told when a message arrives while waiting.
    pub waiting: String,
    /// Told when an agent claims the conversation; `{agent}`.
    pub assigned: String,
    /// Hand off after this many consecutive out-of-scope or clarify turns (0: never).
    pub after_misunderstandings: u32,
}

/// `[policies.guard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardPolicy {
    /// Store and show customer messages with PII replaced by typed placeholders.
    pub redact_pii: bool,
    /// Refuse and warn when a secret (recovery phrase, key, code, password) is sent.
    pub block_secrets: bool,
    /// Refuse messages the injection scorer flags.
    pub block_injection: bool,
}

/// `[policies.budgets]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Tool calls allowed per turn.
    pub max_tool_calls_per_turn: u32,
    /// LLM tokens per conversation (agents and generated FAQ answers); past it, the offline
    /// handlers answer.
    pub max_llm_tokens_per_conversation: u64,
}

/// `[policies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// `reject`, `enqueue`, `interrupt` or `rollback`.
    pub double_text: Spanned<String>,
    /// Guard settings.
    pub guard: GuardPolicy,
    /// Budgets.
    pub budgets: Budgets,
}

/// `[repair]`: regular expressions (case-insensitive) for conversation repair.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairSpec {
    /// Cancel the active flow.
    pub cancel: Vec<String>,
    /// Drop every flow and start over.
    pub restart: Vec<String>,
    /// Ask for a human.
    pub human: Vec<String>,
    /// Marks a correction of a slot already given ("actually ...").
    pub correction: Vec<String>,
    /// Yes.
    pub affirm: Vec<String>,
    /// No.
    pub deny: Vec<String>,
}

/// `[[clarify]]`: a message that says something is wrong without naming what (e.g. "my money is
/// missing") gets a clarifying question between two intents, whatever the classifier guesses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClarifyRule {
    /// Regular expression (case-insensitive) over the customer's message.
    pub pattern: String,
    /// The two intents to offer (labels from `[labels]`).
    pub between: [String; 2],
}

/// `[faq]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqSpec {
    /// Below this relevance nothing is answered (out of scope instead).
    pub min_score: f32,
    /// Citation line; `{title}`.
    pub citation: String,
    /// Model chain that writes answers from the retrieved passages when one of its models is
    /// available (as [`AgentSpec::models`]); without one the answer is the best passage itself.
    #[serde(default)]
    pub models: Vec<String>,
    /// Passages given to the model.
    #[serde(default = "default_passages")]
    pub passages: usize,
}

fn default_passages() -> usize {
    3
}

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantSpec {
    /// `[assistant]`.
    pub assistant: Meta,
    /// `[data]`.
    pub data: DataSpec,
    /// `[router]`.
    pub router: RouterSpec,
    /// Intent → handler (a flow, an agent, or a built-in).
    pub routes: BTreeMap<String, Spanned<String>>,
    /// Handler of routed intents not named in `[routes]`.
    pub default_handler: Spanned<String>,
    /// Human-readable intent names for clarifying questions.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Replies of the `smalltalk` handler, by intent.
    pub smalltalk: BTreeMap<String, String>,
    /// Fixed replies.
    pub replies: Replies,
    /// Flows.
    pub flows: BTreeMap<String, FlowSpec>,
    /// LLM agents.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSpec>,
    /// LLM providers the model chains name (`[providers.NAME]`: `kind`, `base_url`, `api_key_env`,
    /// ...). A provider is used only when its key is in the environment; `openai` and
    /// `anthropic` exist without a table.
    #[serde(default)]
    pub providers: BTreeMap<String, switchboard_providers::config::ProviderEntry>,
    /// MCP servers whose tools LLM agents may call (`[[mcp_servers]]`, the tables of
    /// [`switchboard_tools::config`]: `name`, `command` or `url`, `allow`, `approval_required`,
    /// timeouts). An agent names them in its `tools` as `{server}__{tool}` or `{server}__*`.
    #[serde(default)]
    pub mcp_servers: Vec<switchboard_tools::config::RawMcpServer>,
    /// External A2A agents that answer some intents (see [`RemoteAgentSpec`]).
    #[serde(default)]
    pub remote_agents: BTreeMap<String, RemoteAgentSpec>,
    /// FAQ settings.
    pub faq: FaqSpec,
    /// Handoff rules.
    pub handoff: HandoffSpec,
    /// Policies.
    pub policies: Policies,
    /// Repair patterns.
    pub repair: RepairSpec,
    /// Vague messages that always get a clarifying question.
    #[serde(default)]
    pub clarify: Vec<ClarifyRule>,
    /// The folder the file was read from (data paths are relative to it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl AssistantSpec {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError`] with the file, line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        let mut spec = Self::parse(&text, path)?;
        spec.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(spec)
    }

    /// Parses and validates TOML text (`path` is only used in errors).
    ///
    /// # Errors
    /// [`ConfigError`] with the line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let spec: Self = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ConfigError { path: path.to_path_buf(), line, column, message: e.message().trim().to_string() }
        })?;
        spec.validate().map_err(|(span, message)| {
            let (line, column) = if span == span0() { (0, 0) } else { line_col(text, span.start) };
            ConfigError { path: path.to_path_buf(), line, column, message }
        })?;
        Ok(spec)
    }

    /// What kind of handler a name is.
    pub fn handler_kind(&self, name: &str) -> Option<HandlerKind> {
        if self.flows.contains_key(name) {
            Some(HandlerKind::Flow)
        } else if self.agents.contains_key(name) {
            Some(HandlerKind::Agent)
        } else if BUILTIN_HANDLERS.contains(&name) {
            Some(HandlerKind::Builtin)
        } else {
            None
        }
    }

    /// The handler of an intent.
    pub fn handler_for(&self, intent: &str) -> &str {
        self.routes.get(intent).map_or(self.default_handler.get_ref().as_str(), |h| h.get_ref().as_str())
    }

    /// A human-readable label of an intent.
    pub fn label(&self, intent: &str) -> String {
        self.labels.get(intent).cloned().unwrap_or_else(|| intent.replace('_', " "))
    }

    /// Checks cross-references; on failure, the span of the offending value and a message.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), (std::ops::Range<usize>, String)> {
        let tools = crate::backend::TOOL_NAMES;
        for (intent, h) in
            self.routes.iter().map(|(i, h)| (i.as_str(), h)).chain([("default_handler", &self.default_handler)])
        {
            if self.handler_kind(h.get_ref()).is_none() {
                return Err((
                    h.span(),
                    format!(
                        "`{intent}` routes to unknown handler `{}` (flows: {:?}, agents: {:?}, built-ins: {BUILTIN_HANDLERS:?})",
                        h.get_ref(),
                        self.flows.keys().collect::<Vec<_>>(),
                        self.agents.keys().collect::<Vec<_>>()
                    ),
                ));
            }
        }
        for (name, f) in &self.flows {
            if !FLOW_KINDS.contains(&name.as_str()) {
                let span = f.tools.first().map_or(span0(), Spanned::span);
                return Err((span, format!("flow `{name}` has no implementation (known flows: {FLOW_KINDS:?})")));
            }
            for t in f.tools.iter().chain(&f.approval_required) {
                if !tools.contains(&t.get_ref().as_str()) {
                    return Err((
                        t.span(),
                        format!("flow `{name}`: unknown tool `{}` (tools: {tools:?})", t.get_ref()),
                    ));
                }
            }
            for t in &f.approval_required {
                if !f.tools.iter().any(|x| x.get_ref() == t.get_ref()) {
                    return Err((
                        t.span(),
                        format!("flow `{name}`: `{}` needs approval but is not in its tools", t.get_ref()),
                    ));
                }
            }
            for s in &f.slots {
                if !crate::nlu::EXTRACTORS.contains(&s.extractor.get_ref().as_str()) {
                    return Err((
                        s.extractor.span(),
                        format!(
                            "flow `{name}`, slot `{}`: unknown extractor `{}` (known: {:?})",
                            s.name,
                            s.extractor.get_ref(),
                            crate::nlu::EXTRACTORS
                        ),
                    ));
                }
            }
            for key in crate::flows::required_messages(name) {
                if !f.messages.contains_key(*key) {
                    let span = f.tools.first().map_or(span0(), Spanned::span);
                    return Err((span, format!("flow `{name}` lacks the message `{key}` in [flows.{name}.messages]")));
                }
            }
        }
        for (name, a) in &self.agents {
            for t in &a.tools {
                if !tools.contains(&t.get_ref().as_str()) && self.mcp_server_of(t.get_ref()).is_none() {
                    return Err((
                        t.span(),
                        format!(
                            "agent `{name}`: unknown tool `{}` (back-end tools: {tools:?}; MCP tools: `<server>__<tool>` or `<server>__*` of an [[mcp_servers]] entry)",
                            t.get_ref()
                        ),
                    ));
                }
            }
            for t in &a.approval_required {
                if !a.tools.iter().any(|x| x.get_ref() == t.get_ref()) {
                    return Err((
                        t.span(),
                        format!("agent `{name}`: `{}` needs approval but is not in its tools", t.get_ref()),
                    ));
                }
            }
            if a.models.is_empty() {
                return Err((a.offline.span(), format!("agent `{name}` names no model")));
            }
            crate::llm::check_chain(&a.models, &self.providers)
                .map_err(|e| (a.offline.span(), format!("agent `{name}`: {e}")))?;
            if !matches!(self.handler_kind(a.offline.get_ref()), Some(HandlerKind::Builtin | HandlerKind::Flow)) {
                return Err((
                    a.offline.span(),
                    format!("agent `{name}`: offline handler `{}` is not a flow or built-in", a.offline.get_ref()),
                ));
            }
        }
        self.validate_remote_agents()?;
        crate::llm::check_chain(&self.faq.models, &self.providers).map_err(|e| (span0(), format!("faq: {e}")))?;
        if self.faq.passages == 0 {
            return Err((span0(), "faq.passages must be at least 1".into()));
        }
        let dt = &self.policies.double_text;
        if !["reject", "enqueue", "interrupt", "rollback"].contains(&dt.get_ref().as_str()) {
            return Err((
                dt.span(),
                format!("double_text `{}` is not reject, enqueue, interrupt or rollback", dt.get_ref()),
            ));
        }
        for (reason, p) in &self.handoff.priority {
            if !self.handoff.sla_ms.contains_key(p) {
                return Err((
                    span0(),
                    format!("handoff priority of `{reason}` is `{p}`, which has no entry in sla_ms"),
                ));
            }
        }
        for c in &self.clarify {
            if let Err(e) = regex::Regex::new(&c.pattern) {
                return Err((span0(), format!("clarify pattern {:?} does not compile: {e}", c.pattern)));
            }
            if let Some(i) = c.between.iter().find(|i| !self.labels.contains_key(*i)) {
                return Err((
                    span0(),
                    format!("clarify pattern {:?}: intent `{i}` has no entry in [labels]", c.pattern),
                ));
            }
        }
        let r = &self.repair;
        for p in r.cancel.iter().chain(&r.restart).chain(&r.human).chain(&r.correction).chain(&r.affirm).chain(&r.deny)
        {
            if let Err(e) = regex::Regex::new(p) {
                return Err((span0(), format!("repair pattern {p:?} does not compile: {e}")));
            }
        }
        if !(0.0..1.0).contains(&self.router.target_rejection) {
            return Err((span0(), "router.target_rejection must be in [0, 1)".into()));
        }
        if self.router.max_examples_per_intent == 0 {
            return Err((span0(), "router.max_examples_per_intent must be at least 1".into()));
        }
        Ok(())
    }

    /// The `[[mcp_servers]]` entry a qualified tool name (`{server}__{tool}`) belongs to.
    pub fn mcp_server_of(&self, tool: &str) -> Option<&switchboard_tools::config::RawMcpServer> {
        let (server, _) = switchboard_tools::split_name(tool)?;
        self.mcp_servers.iter().find(|m| m.name == server)
    }

    /// The validated MCP config: every server, and each agent's MCP tools as its allow-list.
    ///
    /// # Errors
    /// The first invalid server setting, named (`mcp_servers.NAME...`).
    pub fn tools_config(&self) -> Result<switchboard_tools::config::ToolsConfig, String> {
        let tool_access = self
            .agents
            .iter()
            .map(|(name, a)| {
                let mcp = a.tools.iter().map(|t| t.get_ref().clone()).filter(|t| self.mcp_server_of(t).is_some());
                (name.clone(), mcp.collect::<Vec<_>>())
            })
            .filter(|(_, t)| !t.is_empty())
            .collect();
        let raw = switchboard_tools::config::RawToolsConfig { mcp_servers: self.mcp_servers.clone(), tool_access };
        switchboard_tools::config::ToolsConfig::from_raw(raw).map_err(|e| e.0)
    }

    fn validate_remote_agents(&self) -> Result<(), (std::ops::Range<usize>, String)> {
        let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, r) in &self.remote_agents {
            let at = r.fallback.span();
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name || self.handler_kind(name).is_some() {
                return Err((
                    at,
                    format!(
                        "remote agent `{name}`: the name must be 1-64 of [A-Za-z0-9_-] and not a flow, agent or built-in"
                    ),
                ));
            }
            if let Some(u) = &r.url
                && !is_http_url(u.get_ref())
            {
                return Err((u.span(), format!("remote agent `{name}`: url {:?} is not an http(s) URL", u.get_ref())));
            }
            if r.intents.is_empty() {
                return Err((at, format!("remote agent `{name}` names no intent")));
            }
            for i in &r.intents {
                if let Some(other) = claimed.insert(i.get_ref(), name) {
                    return Err((
                        i.span(),
                        format!("intent `{}` is delegated to both `{other}` and `{name}`", i.get_ref()),
                    ));
                }
            }
            if r.timeout_ms == 0 || r.idle_timeout_ms == 0 {
                return Err((at, format!("remote agent `{name}`: timeout_ms and idle_timeout_ms must be positive")));
            }
            if !matches!(self.handler_kind(r.fallback.get_ref()), Some(HandlerKind::Builtin | HandlerKind::Flow)) {
                return Err((
                    at,
                    format!("remote agent `{name}`: fallback `{}` is not a flow or built-in", r.fallback.get_ref()),
                ));
            }
        }
        Ok(())
    }

    /// The double-text strategy.
    pub fn double_text(&self) -> switchboard_engine::DoubleText {
        use switchboard_engine::DoubleText as D;
        match self.policies.double_text.get_ref().as_str() {
            "reject" => D::Reject,
            "interrupt" => D::Interrupt,
            "rollback" => D::Rollback,
            _ => D::Enqueue,
        }
    }

    /// A data path resolved against the config's folder.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        self.base_dir.join(rel)
    }
}

/// What a handler name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    /// A `[flows.NAME]`.
    Flow,
    /// An `[agents.NAME]`.
    Agent,
    /// One of [`BUILTIN_HANDLERS`].
    Builtin,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
