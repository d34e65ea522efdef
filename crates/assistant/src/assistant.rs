//! The assistant as a whole: config + back end + router + help centre → an engine graph, and
//! [`Runtime`], the operations a chat client, a test or the desk performs on a conversation.

use crate::backend::{FakeExchange, ToolBackend};
use crate::config::{AssistantSpec, ConfigError};
use crate::faq::{FaqError, HelpCentre};
use crate::graph::{self, Inner};
use crate::handoff::{BadTransition, Desk, Handoff};
use crate::nlu::Repair;
use crate::routing::{RouterBuild, load_or_train, sentence_encoder};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use switchboard_engine::{
    CheckpointStore, ContextStore, Engine, EngineConfig, EngineError, Graph, GraphError, Input, InterruptInfo,
    RunOptions, RunStatus, State, Update, new_message_id,
};
use switchboard_guard::injection::Source;
use switchboard_guard::{EntityType, Guard};
use switchboard_router::RouterError;

/// Everything that can go wrong building or driving the assistant.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Router data, training or artifact.
    #[error("router: {0}")]
    Router(#[from] RouterError),
    /// The help centre.
    #[error("help centre: {0}")]
    Faq(#[from] FaqError),
    /// The graph.
    #[error("graph: {0}")]
    Graph(#[from] GraphError),
    /// The engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No such pending approval.
    #[error("no pending approval `{0}`")]
    UnknownApproval(String),
    /// A desk action that the handoff state does not allow.
    #[error(transparent)]
    Transition(#[from] BadTransition),
    /// A model chain that cannot be built (unknown provider kind, bad URL).
    #[error("llm: {0}")]
    Llm(String),
    /// An `[[mcp_servers]]` entry that cannot be set up (e.g. its token variable is not set).
    #[error("tools: {0}")]
    Tools(String),
    /// A remote agent that cannot be set up (bad URL from the environment, missing token).
    #[error("remote agent {0}")]
    Remote(String),
    /// Bad input (empty text, ...).
    #[error("{0}")]
    Invalid(String),
}

/// How to build the assistant.
#[derive(Clone)]
pub struct AssistantOptions {
    /// Where the trained router is cached.
    pub cache_dir: PathBuf,
    /// The back end (default: the seeded [`FakeExchange`]).
    pub backend: Option<Arc<dyn ToolBackend>>,
    /// Allow the sentence encoder (it is still used only when its model is installed and the
    /// config asks for it).
    pub sentence_encoder: bool,
    /// Vendor LLMs: `None` keeps the assistant offline whatever the environment holds; `Some`
    /// adds these providers and prices to the config's `[providers]`, and every model whose key
    /// is in the environment is used (see [`crate::llm`]).
    pub llm: Option<switchboard_providers::config::ProvidersConfig>,
    /// Records or replays every LLM and tool call (see [`crate::cassette`]); `None`: neither.
    pub tape: Option<Arc<crate::cassette::Tape>>,
}

impl AssistantOptions {
    /// Defaults with a cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self { cache_dir: cache_dir.into(), backend: None, sentence_encoder: true, llm: None, tape: None }
    }
}

/// A built assistant: its graph and the parts the graph shares.
#[derive(Clone)]
pub struct ExchangeAssistant {
    inner: Arc<Inner>,
    router: RouterBuild,
    guard: Arc<Guard>,
    tape: Option<Arc<crate::cassette::Tape>>,
}

impl std::fmt::Debug for ExchangeAssistant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeAssistant").field("name", &self.inner.spec.assistant.name).finish()
    }
}

impl ExchangeAssistant {
    /// Loads `assistant.toml` (and the data it names), trains or loads the router, builds the graph.
    ///
    /// # Errors
    /// [`AssistantError`] naming the file (and line) at fault.
    pub fn load(config: &Path, opts: AssistantOptions) -> Result<Self, AssistantError> {
        Self::from_spec(AssistantSpec::load(config)?, opts)
    }

    /// Builds from a spec (validated again here, so specs built in Rust get the same checks).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn from_spec(spec: AssistantSpec, opts: AssistantOptions) -> Result<Self, AssistantError> {
        spec.validate().map_err(|(_, message)| ConfigError {
            path: spec.base_dir.join("assistant.toml"),
            line: 0,
            column: 0,
            message,
        })?;
        let bert = if opts.sentence_encoder { sentence_encoder(&spec) } else { None };
        let router = load_or_train(&spec, &opts.cache_dir, bert.clone())?;
        let help = HelpCentre::load(&spec.resolve(&spec.data.help_dir), bert)?;
        let mut backend = opts.backend.unwrap_or_else(|| Arc::new(FakeExchange::seeded()));
        if let Some(tape) = &opts.tape {
            backend = tape.wrap_backend(backend);
        }
        let models = match &opts.llm {
            Some(cfg) => {
                Some(Arc::new(crate::llm::Models::build(&spec, cfg, opts.tape.as_ref()).map_err(AssistantError::Llm)?))
                    .filter(|m| !m.is_empty())
            }
            None => None,
        };
        let remotes = remote_agents(&spec)?;
        let mcp = if spec.mcp_servers.is_empty() {
            None
        } else {
            let cfg = spec.tools_config().map_err(AssistantError::Tools)?;
            Some(Arc::new(crate::graph::mcp::McpTools::new(cfg)))
        };
        let inner = Arc::new(Inner {
            remotes,
            mcp,
            repair: Repair::new(&spec.repair),
            // Patterns were checked by `validate` above.
            clarify_rules: spec
                .clarify
                .iter()
                .filter_map(|c| regex::Regex::new(&format!("(?i){}", c.pattern)).ok().map(|r| (r, c.between.clone())))
                .collect(),
            router: router.router.clone(),
            help,
            backend,
            output: Default::default(),
            desk: Arc::new(Desk::default()),
            models,
            spec,
        });
        // Built once here so that a bad graph fails at load, not at the first engine.
        graph::build(inner.clone())?;
        Ok(Self { inner, router, guard: Arc::new(Guard::default()), tape: opts.tape })
    }

    /// The config.
    pub fn spec(&self) -> &AssistantSpec {
        &self.inner.spec
    }
    /// A new instance of the engine graph.
    ///
    /// # Errors
    /// Never after a successful load (the same graph was built then).
    pub fn graph(&self) -> Result<Graph, GraphError> {
        graph::build(self.inner.clone())
    }
    /// The router and how it was obtained.
    pub fn router(&self) -> &RouterBuild {
        &self.router
    }
    /// The help centre.
    pub fn help(&self) -> &HelpCentre {
        &self.inner.help
    }
    /// The desk's queue.
    pub fn desk(&self) -> Arc<Desk> {
        self.inner.desk.clone()
    }
    /// The vendor LLMs in use (`None`: offline), per chain.
    pub fn llm(&self) -> Option<Vec<String>> {
        self.inner.models.as_ref().map(|m| m.describe())
    }
    /// The tape that records or replays its LLM and tool calls, if any.
    pub fn tape(&self) -> Option<Arc<crate::cassette::Tape>> {
        self.tape.clone()
    }
    /// The back end.
    pub fn backend(&self) -> Arc<dyn ToolBackend> {
        self.inner.backend.clone()
    }

    /// An engine over a store, with the config's double-text policy.
    pub fn engine<S: CheckpointStore + ContextStore + 'static>(&self, store: Arc<S>) -> Engine {
        self.engine_on(store, false)
    }

    /// [`Self::engine`] over a store that other processes write to too (replicas on one
    /// PostgreSQL database): see [`EngineConfig::shared_store`].
    pub fn engine_on<S: CheckpointStore + ContextStore + 'static>(&self, store: Arc<S>, shared_store: bool) -> Engine {
        let config = EngineConfig {
            assistant_id: self.inner.spec.assistant.name.clone(),
            double_text: self.inner.spec.double_text(),
            shared_store,
            ..EngineConfig::default()
        };
        let graph = self.graph().expect("the graph was built once at load, from the same parts");
        Engine::with_context(graph, store.clone(), store, config)
    }

    /// A customer's message through the input guard: the message to store (redacted) and the
    /// event the graph reads.
    pub fn customer_input(&self, text: &str) -> (Value, Value) {
        let report = self.guard.inspect(text, Source::User);
        let policy = &self.inner.spec.policies.guard;
        let to_redact: Vec<_> =
            report.entities.iter().filter(|d| policy.redact_pii || d.kind.is_secret()).cloned().collect();
        let redacted = switchboard_guard::redact::redact_numbered(text, &to_redact);
        let pan_last4 = report.entities.iter().find(|d| d.kind == EntityType::CreditCard).map(|d| {
            let digits: String = d.value(text).chars().filter(char::is_ascii_digit).collect();
            digits[digits.len().saturating_sub(4)..].to_string()
        });
        let kinds: Vec<&str> = report.entities.iter().map(|d| d.kind.name()).collect();
        let mut message = json!({"id": new_message_id(), "role": "user", "content": redacted});
        if report.has_secret() {
            message["secret"] = json!(true);
        }
        if report.injection.flagged {
            message["injection_reasons"] = json!(report.injection.reasons);
        }
        if let Some(l4) = &pan_last4 {
            message["nlu"] = json!(format!("{redacted} {l4}"));
        }
        let event = json!({
            "kind": "customer", "text": redacted, "secret": report.has_secret(), "injection": report.injection.flagged,
            "injection_score": report.injection.score, "entities": kinds, "pan_last4": pan_last4,
        });
        (message, event)
    }

    /// The server's input function: a customer message becomes the graph's input.
    pub fn input_fn(&self) -> switchboard_server::InputFn {
        let me = self.clone();
        Arc::new(move |text: &str, _meta: &Value| {
            let (message, event) = me.customer_input(text);
            Update::new().set("messages", message).set("event", event)
        })
    }

    /// How the server turns a customer message into the resume value of a pending interrupt
    /// (the same `{"event", "message"}` the assistant's own runtime sends).
    pub fn resume_fn(&self) -> switchboard_server::ResumeFn {
        let me = self.clone();
        Arc::new(move |text: &str, _meta: &Value| {
            let (message, event) = me.customer_input(text);
            json!({"event": event, "message": message})
        })
    }

    /// The server's registration of this assistant over `engine` (built with [`Self::engine`]).
    pub fn server_assistant(&self, engine: Engine) -> switchboard_server::Assistant {
        switchboard_server::Assistant {
            description: self.inner.spec.assistant.description.clone(),
            version: self.inner.spec.assistant.version.clone(),
            engine,
            input: self.input_fn(),
        }
    }

    /// Text shown to a human (agent messages, transcripts): PII masked.
    pub fn mask(&self, text: &str) -> String {
        let found = self.guard.detector().detect(text);
        switchboard_guard::redact::redact_numbered(text, &found)
    }
}

/// The remote agents that have a URL, built (one breaker registry for them all: three health
/// failures in a row open an agent's circuit for 30 s).
fn remote_agents(
    spec: &AssistantSpec,
) -> Result<std::collections::BTreeMap<String, Arc<switchboard_interop::a2a::client::RemoteAgent>>, AssistantError> {
    use switchboard_interop::a2a::client::{RemoteAgent, RemoteAgentConfig};
    use switchboard_providers::resilience::{BreakerConfig, BreakerRegistry};
    let breakers = BreakerRegistry::new(BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() });
    let mut out = std::collections::BTreeMap::new();
    for (name, r) in &spec.remote_agents {
        let Some(url) = r.resolved_url() else {
            tracing::info!(agent = %name, "remote agent has no URL: its intents go to their [routes] handlers");
            continue;
        };
        if !crate::config::is_http_url(&url) {
            return Err(AssistantError::Remote(format!("{name}: url {url:?} is not an http(s) URL")));
        }
        let mut cfg = RemoteAgentConfig::new(name, url);
        cfg.context = r.context;
        cfg.timeout = std::time::Duration::from_millis(r.timeout_ms);
        cfg.idle_timeout = std::time::Duration::from_millis(r.idle_timeout_ms);
        // The reply reaches the customer only after the output guard (`respond`), which streams it.
        cfg.stream_tokens = false;
        if let Some(var) = &r.api_key_env {
            let token = std::env::var(var)
                .map_err(|_| AssistantError::Remote(format!("{name}: api_key_env ${var} is not set")))?;
            cfg.token = Some(switchboard_guard::Secret::new(token));
        }
        let agent =
            RemoteAgent::new(cfg, breakers.clone()).map_err(|e| AssistantError::Remote(format!("{name}: {e}")))?;
        out.insert(name.clone(), Arc::new(agent));
    }
    Ok(out)
}

/// What one operation on a conversation did.
#[derive(Debug, Clone)]
pub struct TurnView {
    /// How the run ended.
    pub status: RunStatus,
    /// New assistant messages.
    pub replies: Vec<String>,
    /// Routing decision of this turn (if the router or a rule decided).
    pub routing: Option<Value>,
    /// The intent in the state after the turn.
    pub intent: Option<String>,
    /// The handler of the last reply.
    pub handler: Option<String>,
    /// The active (or just finished) flow's slots.
    pub slots: Value,
    /// Tool calls made by this operation.
    pub tool_calls: Vec<Value>,
    /// Handoff state after the turn.
    pub handoff: Handoff,
    /// Pending interrupts.
    pub interrupts: Vec<InterruptInfo>,
    /// The state after the turn.
    pub state: Arc<State>,
}

/// The assistant running on an engine.
#[derive(Clone)]
pub struct Runtime {
    /// The assistant.
    pub assistant: ExchangeAssistant,
    /// Its engine.
    pub engine: Engine,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("assistant", &self.assistant).finish()
    }
}

impl Runtime {
    /// A runtime over an engine built with [`ExchangeAssistant::engine`].
    pub fn new(assistant: ExchangeAssistant, engine: Engine) -> Self {
        Self { assistant, engine }
    }

    async fn snapshot(&self, conv: &str) -> (usize, usize, usize) {
        match self.engine.state(conv).await {
            Ok(s) => {
                (s.get_array("messages").len(), s.get_array("tool_calls").len(), s.get_array("routing_trace").len())
            }
            Err(_) => (0, 0, 0),
        }
    }

    /// Approvals waiting for a human.
    ///
    /// # Errors
    /// Store failures.
    pub async fn pending_approvals(&self, conv: &str) -> Result<Vec<Value>, AssistantError> {
        Ok(self
            .engine
            .pending_interrupts(conv)
            .await?
            .into_iter()
            .filter(|i| i.payload["type"] == "approval")
            .map(|i| i.payload)
            .collect())
    }

    async fn run(
        &self,
        conv: &str,
        customer: Option<&str>,
        event: Value,
        message: Option<Value>,
        on_token: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<TurnView, AssistantError> {
        let before = self.snapshot(conv).await;
        let waiting = !self.engine.pending_interrupts(conv).await?.is_empty();
        let input = if waiting {
            Input::Resume(json!({"event": event, "message": message}))
        } else {
            let mut u = Update::new().set("event", event);
            if let Some(m) = message {
                u.push("messages", m);
            }
            Input::Message(u)
        };
        self.execute(conv, customer, input, before, on_token).await
    }

    async fn execute(
        &self,
        conv: &str,
        customer: Option<&str>,
        input: Input,
        before: (usize, usize, usize),
        on_token: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<TurnView, AssistantError> {
        let opts = RunOptions { customer_id: customer.map(str::to_string), ..RunOptions::default() };
        let handle = self.engine.start(conv, input, opts).await?;
        let outcome = match (on_token, handle.subscribe()) {
            (Some(cb), Some(mut rx)) => {
                let wait = tokio::spawn(handle.wait());
                loop {
                    match rx.recv().await {
                        Ok(ev) => {
                            if let switchboard_engine::EventKind::Token { delta, .. } = &ev.kind {
                                cb(delta);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                }
                wait.await.map_err(|e| AssistantError::Invalid(format!("run task failed: {e}")))??
            }
            _ => handle.wait().await?,
        };
        let s = outcome.state.clone();
        let msgs = s.get_array("messages");
        let replies = msgs
            .iter()
            .skip(before.0)
            .filter(|m| m["role"] == "assistant")
            .filter_map(|m| m["content"].as_str().map(str::to_string))
            .collect();
        let routing = s.get_array("routing_trace").get(before.2).cloned();
        Ok(TurnView {
            status: outcome.status,
            replies,
            routing,
            intent: s.get_str("intent").map(str::to_string),
            handler: msgs
                .iter()
                .skip(before.0)
                .rev()
                .find(|m| m["role"] == "assistant")
                .and_then(|m| m["handler"].as_str())
                .map(str::to_string),
            slots: s.get("slots").cloned().unwrap_or(Value::Null),
            tool_calls: s.get_array("tool_calls").iter().skip(before.1).cloned().collect(),
            handoff: Handoff::from_value(s.get("handoff")),
            interrupts: outcome.interrupts,
            state: s,
        })
    }

    /// A customer's message.
    ///
    /// # Errors
    /// Empty text; engine failures.
    pub async fn say(&self, conv: &str, customer: Option<&str>, text: &str) -> Result<TurnView, AssistantError> {
        self.say_streaming(conv, customer, text, None).await
    }

    /// A customer's message, with the reply's tokens passed to `on_token` as they are produced.
    ///
    /// # Errors
    /// Empty text; engine failures.
    pub async fn say_streaming(
        &self,
        conv: &str,
        customer: Option<&str>,
        text: &str,
        on_token: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<TurnView, AssistantError> {
        if text.trim().is_empty() {
            return Err(AssistantError::Invalid("empty message".into()));
        }
        let (message, event) = self.assistant.customer_input(text);
        self.run(conv, customer, event, Some(message), on_token).await
    }

    /// The customer (or a client command) asks for a human.
    ///
    /// # Errors
    /// Engine failures.
    pub async fn request_handoff(&self, conv: &str, customer: Option<&str>) -> Result<TurnView, AssistantError> {
        self.run(conv, customer, json!({"kind": "handoff_request"}), None, None).await
    }

    async fn handoff_now(&self, conv: &str) -> Result<Handoff, AssistantError> {
        Ok(Handoff::from_value(self.engine.state(conv).await?.get("handoff")))
    }

    /// An agent claims the conversation.
    ///
    /// # Errors
    /// [`AssistantError::Transition`] when it is not waiting for a human.
    pub async fn claim(&self, conv: &str, customer: Option<&str>, agent: &str) -> Result<TurnView, AssistantError> {
        self.handoff_now(conv).await?.claim(agent, 0)?;
        self.run(conv, customer, json!({"kind": "claim", "agent": agent}), None, None).await
    }

    /// An agent writes to the customer (PII masked in the transcript).
    ///
    /// # Errors
    /// [`AssistantError::Transition`] when no agent has claimed it; empty text.
    pub async fn agent_message(
        &self,
        conv: &str,
        customer: Option<&str>,
        agent: &str,
        text: &str,
    ) -> Result<TurnView, AssistantError> {
        if text.trim().is_empty() {
            return Err(AssistantError::Invalid("empty message".into()));
        }
        self.handoff_now(conv).await?.agent_message(0)?;
        let checked = self.assistant.inner.output.check(&self.assistant.mask(text)).text;
        let message = json!({"id": new_message_id(), "role": "agent", "content": checked, "author": agent});
        self.run(conv, customer, json!({"kind": "agent", "agent": agent}), Some(message), None).await
    }

    /// The agent hands the conversation back; the bot resumes the flow it was in.
    ///
    /// # Errors
    /// [`AssistantError::Transition`] when no agent has claimed it.
    pub async fn hand_back(&self, conv: &str, customer: Option<&str>, agent: &str) -> Result<TurnView, AssistantError> {
        self.handoff_now(conv).await?.hand_back(0)?;
        self.run(conv, customer, json!({"kind": "handback", "agent": agent}), None, None).await
    }

    /// A human approves or denies a pending tool call.
    ///
    /// # Errors
    /// [`AssistantError::UnknownApproval`]; engine failures.
    pub async fn approve(
        &self,
        conv: &str,
        customer: Option<&str>,
        approval_id: &str,
        approve: bool,
        by: &str,
    ) -> Result<TurnView, AssistantError> {
        let pending = self.pending_approvals(conv).await?;
        if !pending.iter().any(|p| p["id"] == approval_id) {
            return Err(AssistantError::UnknownApproval(approval_id.into()));
        }
        let before = self.snapshot(conv).await;
        self.execute(conv, customer, Input::Resume(json!({"approve": approve, "by": by})), before, None).await
    }
}
