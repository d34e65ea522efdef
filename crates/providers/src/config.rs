//! Provider configuration: named providers (kind, base URL, where the key comes from), default
//! resilience settings, and fallback chains built from `provider/model` lists, as an
//! assistant's config names them.
//!
//! Two stages as everywhere in Switchboard: [`ProvidersConfig`] is what serde reads; the
//! `build_*` functions validate it into models. Keys are read from the environment variables
//! the config names, into [`Secret`]s, and never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cost::PriceTable;
use crate::error::ProviderError;
use crate::model::BoxChatModel;
use crate::resilience::{BreakerConfig, BreakerRegistry, ChatModelExt, Fallback, RetryPolicy, TimeoutPolicy};
use crate::secret::Secret;
use crate::trace::{Traced, provider_name};
use std::sync::Arc;

/// One configured provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Wire format: `openai` (any compatible server) or `anthropic`; cloud kinds are added by
    /// their modules.
    pub kind: String,
    /// Base URL; the vendor's public endpoint when absent.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the key; the vendor's usual one when absent.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// OpenAI kind only: send `max_tokens` instead of `max_completion_tokens` (compat servers).
    #[serde(default)]
    pub legacy_max_tokens: bool,
    /// Connect timeout in milliseconds.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Whole-call timeout in milliseconds.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
}

impl ProviderEntry {
    /// An entry of this kind with every default.
    pub fn of_kind(kind: impl Into<String>) -> Self {
        Self { kind: kind.into(), ..Self::default() }
    }
}

/// The `providers` section of the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProvidersConfig {
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderEntry>,
    /// Prices by `provider/model`.
    #[serde(default)]
    pub prices: PriceTable,
}

fn key_from(entry: &ProviderEntry, default_var: &str) -> Option<Secret> {
    Secret::from_env(entry.api_key_env.as_deref().unwrap_or(default_var))
}

/// Builds the adapter for `model` on provider `name`, wrapped in its GenAI span
/// ([`Traced`]).
///
/// # Errors
/// [`ProviderError::InvalidRequest`] for an unknown kind or an HTTP client that cannot be
/// built.
pub fn build_model(name: &str, entry: &ProviderEntry, model: &str) -> Result<BoxChatModel, ProviderError> {
    Ok(Traced::new(build_adapter(name, entry, model)?, provider_name(&entry.kind)).boxed())
}

/// Builds the bare adapter (no span) for `model` on provider `name`.
///
/// # Errors
/// As [`build_model`].
pub fn build_adapter(name: &str, entry: &ProviderEntry, model: &str) -> Result<BoxChatModel, ProviderError> {
    let connect = entry.connect_timeout_ms.map(Duration::from_millis);
    let request = entry.request_timeout_ms.map(Duration::from_millis);
    match entry.kind.as_str() {
        #[cfg(feature = "openai")]
        "openai" => {
            use crate::openai::{MaxTokensField, OpenAiConfig, OpenAiModel};
            let mut cfg = OpenAiConfig::new(model).provider(name);
            if let Some(url) = &entry.base_url {
                cfg.base_url = url.clone();
            }
            cfg.api_key = key_from(entry, "OPENAI_API_KEY");
            if entry.legacy_max_tokens {
                cfg.max_tokens_field = MaxTokensField::MaxTokens;
            }
            if let Some(c) = connect {
                cfg.connect_timeout = c;
            }
            if let Some(r) = request {
                cfg.request_timeout = r;
            }
            Ok(OpenAiModel::new(cfg)?.boxed())
        }
        #[cfg(feature = "anthropic")]
        "anthropic" => {
            use crate::anthropic::{AnthropicConfig, AnthropicModel};
            let mut cfg = AnthropicConfig::new(model).provider(name);
            if let Some(url) = &entry.base_url {
                cfg.base_url = url.clone();
            }
            cfg.api_key = key_from(entry, "ANTHROPIC_API_KEY");
            if let Some(c) = connect {
                cfg.connect_timeout = c;
            }
            if let Some(r) = request {
                cfg.request_timeout = r;
            }
            Ok(AnthropicModel::new(cfg)?.boxed())
        }
        #[cfg(feature = "bedrock")]
        "bedrock" => Ok(crate::bedrock::from_entry(name, entry, model)?.boxed()),
        #[cfg(feature = "vertex")]
        "vertex" | "gemini" => Ok(crate::vertex::from_entry(name, entry, model)?.boxed()),
        other => Err(ProviderError::InvalidRequest(format!("provider {name}: kind {other:?} is not built in"))),
    }
}

/// Resilience applied to every model of a chain.
#[derive(Debug, Clone, Default)]
pub struct ChainPolicy {
    /// Timeouts per model.
    pub timeout: TimeoutPolicy,
    /// Retries per model (before falling back).
    pub retry: RetryPolicy,
    /// Breaker state, shared by every chain built with it.
    pub breakers: Option<BreakerRegistry>,
}

/// Builds a fallback chain from `provider/model` names, each model wrapped as
/// `Retry(CircuitBreaker(Timeout(adapter)))`.
///
/// # Errors
/// [`ProviderError::InvalidRequest`] for a malformed name, an unknown provider, or an empty
/// chain.
pub fn build_chain(
    cfg: &ProvidersConfig,
    chain: &[String],
    policy: &ChainPolicy,
) -> Result<BoxChatModel, ProviderError> {
    let breakers = policy.breakers.clone().unwrap_or_else(|| BreakerRegistry::new(BreakerConfig::default()));
    let mut models = Vec::with_capacity(chain.len());
    let prices = Arc::new(cfg.prices.clone());
    for item in chain {
        let (provider, model) = item
            .split_once('/')
            .ok_or_else(|| ProviderError::InvalidRequest(format!("{item:?} is not provider/model")))?;
        let entry = cfg
            .providers
            .get(provider)
            .ok_or_else(|| ProviderError::InvalidRequest(format!("unknown provider {provider:?} in chain")))?;
        let m = Traced::new(build_adapter(provider, entry, model)?, provider_name(&entry.kind))
            .with_prices(prices.clone())
            .with_timeout(policy.timeout)
            .with_breaker(breakers.clone())
            .with_retry(policy.retry);
        models.push(m.boxed());
    }
    if models.len() == 1 {
        return Ok(models.remove(0));
    }
    Ok(Fallback::new(models)?.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChatModel;

    #[test]
    fn chain_from_json_config() {
        let cfg: ProvidersConfig = serde_json::from_value(serde_json::json!({
            "providers": {
                "internal": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "legacy_max_tokens": true},
                "anthropic": {"kind": "anthropic"}
            },
            "prices": {"anthropic/*": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
        }))
        .unwrap();
        let m = build_chain(&cfg, &["anthropic/claude-x".into(), "internal/llama".into()], &ChainPolicy::default())
            .unwrap();
        assert_eq!(m.id().provider, "fallback");
        assert!(build_chain(&cfg, &["nope/x".into()], &ChainPolicy::default()).is_err());
        assert!(build_chain(&cfg, &["bad".into()], &ChainPolicy::default()).is_err());
        assert!(build_chain(&cfg, &[], &ChainPolicy::default()).is_err());
    }
}
