//! Vendor LLMs for the assistant's agents and generated FAQ answers.
//!
//! Model chains are written `provider:model` (or `provider/model`, as `switchboard-providers`
//! writes them); the provider is a `[providers.NAME]` table of `assistant.toml`, overridden or
//! extended by the server's config, or one of the built-ins `openai` and `anthropic` (the
//! vendors' public endpoints). A model of a chain is **available** when its provider's key is in
//! the environment (the variable `api_key_env` names, else `OPENAI_API_KEY` /
//! `ANTHROPIC_API_KEY`); a keyless local server is made available by naming any set variable.
//! Models without a key are left out of the chain; an agent with no available model is offline
//! and its `offline` handler answers, exactly as when no LLM is configured at all.
//!
//! Each available model is built with [`build_chain`] (GenAI span, timeout, circuit breaker,
//! retry) and the chain is walked here rather than by `Fallback`, so the caller learns which
//! model answered (for the cost) and why the others did not (for the trace).

use crate::cassette::Mode;
use crate::config::AssistantSpec;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_guard::Guard;
use switchboard_providers::config::{ChainPolicy, ProviderEntry, ProvidersConfig, build_chain};
use switchboard_providers::cost::PriceTable;
use switchboard_providers::resilience::{BreakerConfig, BreakerRegistry, RetryPolicy, TimeoutPolicy};
use switchboard_providers::{BoxChatModel, CancellationToken, ChatModel, ChatRequest, ChatResponse, ModelId};

/// Provider kinds that exist without a `[providers.NAME]` table.
pub const BUILTIN_PROVIDERS: &[&str] = &["openai", "anthropic"];

/// Splits `provider:model` or `provider/model`.
pub fn parse_model_ref(s: &str) -> Option<(&str, &str)> {
    let (p, m) = match (s.find(':'), s.find('/')) {
        (Some(a), Some(b)) => s.split_at(a.min(b)),
        (Some(a), None) | (None, Some(a)) => s.split_at(a),
        (None, None) => return None,
    };
    let m = &m[1..];
    (!p.trim().is_empty() && !m.trim().is_empty()).then_some((p, m))
}

/// Checks a chain's syntax and that its providers exist.
///
/// # Errors
/// The first malformed entry or unknown provider.
pub fn check_chain(chain: &[String], providers: &BTreeMap<String, ProviderEntry>) -> Result<(), String> {
    for item in chain {
        let (p, _) = parse_model_ref(item).ok_or_else(|| format!("model {item:?} is not provider:model"))?;
        if !providers.contains_key(p) && !BUILTIN_PROVIDERS.contains(&p) {
            return Err(format!(
                "model {item:?}: unknown provider `{p}` (declare [providers.{p}] or use {BUILTIN_PROVIDERS:?})"
            ));
        }
    }
    Ok(())
}

/// The variable that holds a provider's key.
fn key_var(entry: &ProviderEntry) -> Option<String> {
    entry.api_key_env.clone().or_else(|| match entry.kind.as_str() {
        "openai" => Some("OPENAI_API_KEY".into()),
        "anthropic" => Some("ANTHROPIC_API_KEY".into()),
        _ => None,
    })
}

/// One model of a chain.
#[derive(Clone)]
pub struct ModelSlot {
    /// `provider/model`.
    pub name: String,
    id: ModelId,
    model: BoxChatModel,
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The reply.
    pub response: ChatResponse,
    /// `provider/model` that answered.
    pub model: String,
    /// Cost in micro-dollars (0 without a price).
    pub cost_micros: u64,
    /// Wall time of the successful call.
    pub latency_ms: u64,
    /// Why earlier models of the chain did not answer.
    pub failures: Vec<String>,
}

impl Answer {
    /// The trace record of this call.
    pub fn record(&self, handler: &str) -> Value {
        let u = &self.response.usage;
        json!({
            "handler": handler, "model": self.model, "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens, "total_tokens": u.total(), "cost_usd": self.cost_micros as f64 / 1e6,
            "latency_ms": self.latency_ms, "tool_calls": self.response.tool_calls.len(),
            "finish_reason": self.response.finish_reason, "failures": self.failures,
        })
    }
}

/// The models of one assistant: a chain per agent and one for the FAQ.
pub struct Models {
    agents: BTreeMap<String, Vec<ModelSlot>>,
    faq: Vec<ModelSlot>,
    prices: PriceTable,
    skipped: Vec<String>,
    guard: Guard,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models").field("agents", &self.agents).field("faq", &self.faq).finish()
    }
}

impl Models {
    /// Builds the chains of `spec` with `overrides` (the server's `[llm.providers]` and prices)
    /// on top of the file's `[providers]`, each model behind `tape` when given (a replaying
    /// tape also keeps the models it answers for when their key is missing).
    ///
    /// # Errors
    /// A provider whose adapter cannot be built (unknown kind, bad URL).
    pub fn build(
        spec: &AssistantSpec,
        overrides: &ProvidersConfig,
        tape: Option<&Arc<crate::cassette::Tape>>,
    ) -> Result<Self, String> {
        let mut cfg = ProvidersConfig { providers: spec.providers.clone(), prices: overrides.prices.clone() };
        for p in BUILTIN_PROVIDERS {
            cfg.providers.entry((*p).to_string()).or_insert_with(|| ProviderEntry::of_kind(*p));
        }
        for (k, v) in &overrides.providers {
            cfg.providers.insert(k.clone(), v.clone());
        }
        let policy = ChainPolicy {
            timeout: TimeoutPolicy {
                total: Some(Duration::from_secs(60)),
                first_event: Some(Duration::from_secs(30)),
                idle: Some(Duration::from_secs(30)),
            },
            retry: RetryPolicy {
                max_retries: 1,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(2),
                max_retry_after: Duration::from_secs(2),
            },
            breakers: Some(BreakerRegistry::new(BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() })),
        };
        let mut skipped = Vec::new();
        let mut build = |chain: &[String]| -> Result<Vec<ModelSlot>, String> {
            let mut slots = Vec::new();
            for item in chain {
                let Some((p, m)) = parse_model_ref(item) else { continue };
                let Some(entry) = cfg.providers.get(p) else {
                    skipped.push(format!("{item}: unknown provider"));
                    continue;
                };
                let name = format!("{p}/{m}");
                match key_var(entry) {
                    _ if tape.is_some_and(|t| t.serves_model(&name)) => {}
                    _ if tape.is_some_and(|t| t.mode() == Mode::Replay { live: false }) => {
                        skipped.push(format!("{item}: not called in the cassettes (replay without --live)"));
                        continue;
                    }
                    Some(var) if std::env::var(&var).is_ok_and(|v| !v.is_empty()) => {}
                    Some(var) => {
                        skipped.push(format!("{item}: ${var} is not set"));
                        continue;
                    }
                    None => {
                        skipped.push(format!("{item}: [providers.{p}] names no api_key_env"));
                        continue;
                    }
                }
                let mut model =
                    build_chain(&cfg, std::slice::from_ref(&name), &policy).map_err(|e| format!("{item}: {e}"))?;
                if let Some(t) = tape {
                    model = t.wrap_model(&name, model);
                }
                slots.push(ModelSlot { id: ModelId::new(p, m), name, model });
            }
            Ok(slots)
        };
        let mut agents = BTreeMap::new();
        for (name, a) in &spec.agents {
            let slots = build(&a.models)?;
            if !slots.is_empty() {
                agents.insert(name.clone(), slots);
            }
        }
        let faq = build(&spec.faq.models)?;
        Ok(Self { agents, faq, prices: cfg.prices, skipped, guard: Guard::default() })
    }

    /// Whether no chain has an available model (the assistant runs offline).
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.faq.is_empty()
    }

    /// An agent's available models, if any.
    pub fn agent(&self, name: &str) -> Option<&[ModelSlot]> {
        self.agents.get(name).map(Vec::as_slice).filter(|c| !c.is_empty())
    }

    /// The FAQ's available models, if any.
    pub fn faq(&self) -> Option<&[ModelSlot]> {
        Some(self.faq.as_slice()).filter(|c| !c.is_empty())
    }

    /// One line per chain (`help_agent: anthropic/claude-haiku-4-5 → openai/gpt-4o-mini`), then
    /// why models were left out.
    pub fn describe(&self) -> Vec<String> {
        let names = |c: &[ModelSlot]| c.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(" → ");
        let mut out: Vec<String> = self.agents.iter().map(|(a, c)| format!("{a}: {}", names(c))).collect();
        if !self.faq.is_empty() {
            out.push(format!("faq: {}", names(&self.faq)));
        }
        for s in &self.skipped {
            let line = format!("not used: {s}");
            if !out.contains(&line) {
                out.push(line);
            }
        }
        out
    }

    /// Text as it may leave the process: PII the detector finds replaced by typed placeholders
    /// (customer messages are already stored redacted; this catches anything else).
    pub fn mask(&self, text: &str) -> String {
        let found = self.guard.detector().detect(text);
        switchboard_guard::redact::redact_numbered(text, &found)
    }

    /// Asks the chain's models in order until one answers.
    ///
    /// # Errors
    /// Why each model failed (timeouts, vendor errors, open breakers).
    pub async fn chat(
        &self,
        chain: &[ModelSlot],
        req: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<Answer, Vec<String>> {
        let mut failures = Vec::new();
        for slot in chain {
            let started = Instant::now();
            match slot.model.chat(req.clone(), cancel.child_token()).await {
                Ok(response) => {
                    let cost_micros = self.prices.cost_micros(&slot.id, &response.usage);
                    return Ok(Answer {
                        response,
                        model: slot.name.clone(),
                        cost_micros,
                        latency_ms: started.elapsed().as_millis() as u64,
                        failures,
                    });
                }
                Err(e) => failures.push(format!("{}: {e}", slot.name)),
            }
        }
        Err(failures)
    }
}

/// The model-facing definition of a back-end tool (the customer is never an argument: every
/// call runs for the conversation's customer).
pub fn tool_definition(name: &str) -> Option<switchboard_providers::ToolDefinition> {
    let last4 = json!({"type": "string", "pattern": "^[0-9]{4}$", "description": "Last 4 digits of the card"});
    let (description, properties, required): (&str, Value, &[&str]) = match name {
        "freeze_card" => ("Freeze one of the customer's cards.", json!({"last4": last4}), &["last4"]),
        "unfreeze_card" => ("Unfreeze one of the customer's cards.", json!({"last4": last4}), &["last4"]),
        "order_replacement_card" => {
            ("Order a replacement for one of the customer's cards.", json!({"last4": last4}), &["last4"])
        }
        "get_card_status" => {
            ("Status of one card, or of every card when last4 is omitted.", json!({"last4": last4}), &[])
        }
        "get_transfer_status" => (
            "Status of one of the customer's transfers.",
            json!({"transfer_id": {"type": "string", "description": "Transfer id, like tr_1001"}}),
            &["transfer_id"],
        ),
        "list_recent_transfers" => (
            "The customer's most recent transfers, newest first.",
            json!({"limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "How many (default 5)"}}),
            &[],
        ),
        "get_deposit_status" => (
            "Status of a crypto deposit by its transaction hash.",
            json!({"tx_hash": {"type": "string", "description": "0x followed by 64 hex characters"}}),
            &["tx_hash"],
        ),
        "create_ticket" => (
            "Open a support ticket for the customer.",
            json!({
                "category": {"type": "string"},
                "summary": {"type": "string"},
                "priority": {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
            }),
            &["category", "summary"],
        ),
        _ => return None,
    };
    Some(switchboard_providers::ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters: json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_refs_in_both_spellings() {
        assert_eq!(parse_model_ref("anthropic:claude-haiku-4-5"), Some(("anthropic", "claude-haiku-4-5")));
        assert_eq!(parse_model_ref("openai/gpt-4o-mini"), Some(("openai", "gpt-4o-mini")));
        assert_eq!(parse_model_ref("local:org/model:q4"), Some(("local", "org/model:q4")));
        assert_eq!(parse_model_ref("nomodel"), None);
        assert_eq!(parse_model_ref("x:"), None);
        let mut providers = BTreeMap::new();
        assert!(check_chain(&["openai:gpt".into()], &providers).is_ok());
        assert!(check_chain(&["vllm:llama".into()], &providers).unwrap_err().contains("unknown provider `vllm`"));
        providers.insert("vllm".into(), ProviderEntry::of_kind("openai"));
        assert!(check_chain(&["vllm:llama".into()], &providers).is_ok());
        assert!(check_chain(&["bad".into()], &providers).is_err());
    }

    #[test]
    fn every_backend_tool_has_a_definition() {
        for t in crate::backend::TOOL_NAMES {
            let d = tool_definition(t).unwrap();
            assert_eq!(d.parameters["type"], "object");
        }
        assert!(tool_definition("rm_rf").is_none());
    }
}
