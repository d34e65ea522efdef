//! The assistant's intent router: trained at first start from the data the config names
//! (BANKING77 plus the domain's own intents), cached on disk by the hash of what went in.
//!
//! Key design decision: the cache key covers the selected examples, the router settings, the
//! compliance rules and the sentence encoder's identity, so any change retrains and nothing
//! stale is ever loaded. Training time is bounded by `max_examples_per_intent` (a seeded
//! sample per intent): on a 2-core machine, embedding every BANKING77 row with the sentence
//! encoder takes minutes; the cap keeps first start under a minute.

use crate::config::{AssistantSpec, IntentSelection};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use switchboard_router::artifact::Artifact;
use switchboard_router::data::{DataFormat, Example, cap_per_intent, hash_examples, load};
use switchboard_router::encoder::{BertEncoder, EncoderOptions};
use switchboard_router::rules::Rules;
use switchboard_router::train::{TrainOptions, train};
use switchboard_router::{Router, RouterError};

/// A router ready to use, and how it was obtained.
#[derive(Debug, Clone)]
pub struct RouterBuild {
    /// The router.
    pub router: Arc<Router>,
    /// Loaded from the cache (no training).
    pub cached: bool,
    /// Seconds spent (training, or loading).
    pub seconds: f64,
    /// Training examples.
    pub examples: usize,
    /// Intents learnt.
    pub intents: usize,
    /// The sentence encoder was used.
    pub sentence_encoder: bool,
    /// The artifact directory.
    pub dir: PathBuf,
}

/// Loads the sentence encoder when the config wants it and its model is installed.
pub fn sentence_encoder(spec: &AssistantSpec) -> Option<Arc<BertEncoder>> {
    if !spec.router.use_sentence_encoder {
        return None;
    }
    let loc = switchboard_router::fetch::resolve_model_dir(None)?;
    let mut options = EncoderOptions::from_env();
    if let Some(b) = spec.router.encoder_backend {
        options.backend = b;
    }
    match BertEncoder::load_with(&loc.dir, loc.pinned, &options) {
        Ok(e) => Some(Arc::new(e)),
        Err(e) => {
            tracing::warn!(error = %e, "sentence encoder unavailable; using the lexical router");
            None
        }
    }
}

/// The training examples the config selects, capped per intent.
///
/// # Errors
/// Unreadable or malformed data files.
pub fn training_data(spec: &AssistantSpec) -> Result<Vec<Example>, RouterError> {
    let mut all = Vec::new();
    for f in &spec.data.router_data {
        all.extend(load(&spec.resolve(f), DataFormat::Banking77)?);
    }
    if spec.router.intents == IntentSelection::Routed {
        all.retain(|e| spec.routes.contains_key(&e.intent));
    }
    Ok(cap_per_intent(&all, spec.router.max_examples_per_intent, 13))
}

fn cache_key(spec: &AssistantSpec, examples: &[Example], rules: &Rules, bert: Option<&BertEncoder>) -> String {
    let r = &spec.router;
    let mut h = sha2::Sha256::new();
    h.update(hash_examples(examples));
    h.update(switchboard_router::train::RECIPE);
    h.update(format!(
        "|{}|{}|{}|{}|{}|{}",
        r.max_examples_per_intent,
        r.lexical_dim,
        r.clarify_margin,
        r.target_rejection,
        r.compliance_rules,
        r.neighbours
    ));
    h.update(serde_json::to_string(rules.specs()).unwrap_or_default());
    h.update(bert.map_or("lexical".to_string(), |b| b.info().to_string()));
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Loads the cached router for this config and data, or trains and caches it.
///
/// # Errors
/// Data, training or artifact I/O failures.
pub fn load_or_train(
    spec: &AssistantSpec,
    cache_dir: &Path,
    bert: Option<Arc<BertEncoder>>,
) -> Result<RouterBuild, RouterError> {
    let started = Instant::now();
    let examples = training_data(spec)?;
    let rules = Rules::new(if spec.router.compliance_rules { Rules::compliance_defaults() } else { Vec::new() })?;
    let key = cache_key(spec, &examples, &rules, bert.as_deref());
    let dir = cache_dir.join(format!("router-{}-{key}", spec.assistant.name));
    let intents = examples.iter().map(|e| e.intent.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    if dir.join("router.json").is_file() {
        match Artifact::load(&dir).and_then(|a| Router::from_parts(a, bert.clone())) {
            Ok(router) => {
                return Ok(RouterBuild {
                    router: Arc::new(router),
                    cached: true,
                    seconds: started.elapsed().as_secs_f64(),
                    examples: examples.len(),
                    intents,
                    sentence_encoder: bert.is_some(),
                    dir,
                });
            }
            Err(e) => tracing::warn!(error = %e, dir = %dir.display(), "cached router unusable; retraining"),
        }
    }
    let opts = TrainOptions {
        clarify_margin: spec.router.clarify_margin,
        target_rejection: spec.router.target_rejection,
        lexical_dim: spec.router.lexical_dim,
        rules: rules.specs().to_vec(),
        neighbours: spec.router.neighbours,
        ..TrainOptions::default()
    };
    let artifact = train(&examples, None, bert.clone(), &opts)?;
    artifact.save(&dir)?;
    let router = Router::from_parts(artifact, bert.clone())?;
    Ok(RouterBuild {
        router: Arc::new(router),
        cached: false,
        seconds: started.elapsed().as_secs_f64(),
        examples: examples.len(),
        intents,
        sentence_encoder: bert.is_some(),
        dir,
    })
}
