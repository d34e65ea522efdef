//! The routing ladder over a trained artifact: rules → classifier (with the neighbour vote) →
//! out of scope (confidence and neighbour similarity) → clarify,
//! with run-time prototype intents; training lives in [`crate::train`].

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::artifact::Artifact;
use crate::decision::{Candidate, Decision, Outcome, Rung, Thresholds};
use crate::encoder::{BertEncoder, Features, Featurizer};
use crate::error::{Result, RouterError};
use crate::fetch::resolve_model_dir;
use crate::head::calibrate::softmax;
use crate::head::neighbours::mix_votes;
use crate::rules::Rules;

/// How many candidates a decision records.
pub const TOP_K: usize = 5;

/// A loaded router. Cheap to share behind an `Arc`; [`Router::route`] is synchronous and
/// CPU-bound (use [`crate::AsyncRouter`] from async code).
#[derive(Debug)]
pub struct Router {
    artifact: Artifact,
    featurizer: Featurizer,
    rules: Rules,
    runtime_prototypes: RwLock<crate::head::PrototypeHead>,
    /// Head index of the out-of-scope class, if the artifact has one.
    oos_index: Option<usize>,
}

/// Reject empty text before any work is done.
fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(RouterError::EmptyText);
    }
    Ok(())
}

/// Load the sentence encoder in `dir` and check that it is `expected`.
fn load_matching(dir: &Path, pinned: bool, expected: &crate::encoder::EncoderInfo) -> Result<BertEncoder> {
    let enc = BertEncoder::load(dir, pinned)?;
    if enc.info().hash != expected.hash || enc.info().dim != expected.dim {
        return Err(RouterError::EncoderMismatch { expected: expected.to_string(), found: enc.info().to_string() });
    }
    Ok(enc)
}

/// Load `expected` from where [`resolve_model_dir`] finds a model (environment, then cache).
fn load_resolved(expected: &crate::encoder::EncoderInfo) -> Result<BertEncoder> {
    let loc = resolve_model_dir(None).ok_or_else(|| RouterError::BadModelDir {
        dir: std::path::PathBuf::new(),
        reason: format!(
            "this router needs the sentence encoder {expected}; run `switchboard models fetch` or pass --model-dir"
        ),
    })?;
    load_matching(&loc.dir, loc.pinned, expected)
}

impl Router {
    /// Load an artifact directory. The sentence encoder is the artifact's own (fine-tuned) one
    /// when it has one; else the folder `model_dir` names; else the folder the head was trained
    /// with (`encoder_dir` in `router.json`, recorded when training was given `--model-dir`),
    /// when it still exists and holds the same encoder; else the one [`resolve_model_dir`]
    /// finds (environment, then the models cache). It must be the one the head was trained on.
    ///
    /// # Errors
    /// [`RouterError::BadArtifact`], [`RouterError::BadModelDir`] (model needed but absent),
    /// [`RouterError::EncoderMismatch`], [`RouterError::HashMismatch`].
    pub fn load(dir: &Path, model_dir: Option<&Path>) -> Result<Self> {
        let artifact = Artifact::load(dir)?;
        let bert = match &artifact.manifest.encoder {
            None => None,
            Some(expected) => {
                let own = crate::artifact::own_encoder_dir(dir);
                let recorded = artifact.manifest.encoder_dir.as_deref().filter(|d| d.is_dir());
                let enc = match (own, model_dir, recorded) {
                    (Some(own), _, _) => load_matching(&own, false, expected)?,
                    (None, Some(given), _) => load_matching(given, false, expected)?,
                    (None, None, Some(recorded)) => match load_matching(recorded, false, expected) {
                        Ok(enc) => enc,
                        Err(e) => {
                            tracing::warn!(
                                "the encoder folder recorded at training ({}) is unusable ({e}); looking elsewhere",
                                recorded.display()
                            );
                            load_resolved(expected)?
                        }
                    },
                    (None, None, None) => load_resolved(expected)?,
                };
                Some(Arc::new(enc))
            }
        };
        Self::from_parts(artifact, bert)
    }

    /// Build from an in-memory artifact and the encoder it was trained with.
    ///
    /// # Errors
    /// [`RouterError::EncoderMismatch`] when `bert` is not the artifact's encoder;
    /// [`RouterError::BadRule`] for a bad rule.
    pub fn from_parts(artifact: Artifact, bert: Option<Arc<BertEncoder>>) -> Result<Self> {
        match (&artifact.manifest.encoder, &bert) {
            (Some(e), Some(b)) if e.hash == b.info().hash => {}
            (None, None) => {}
            (e, b) => {
                return Err(RouterError::EncoderMismatch {
                    expected: e.as_ref().map_or("no sentence encoder".into(), ToString::to_string),
                    found: b.as_ref().map_or("no sentence encoder".into(), |b| b.info().to_string()),
                });
            }
        }
        let featurizer = Featurizer::new(bert, artifact.lexical.clone(), artifact.manifest.lexical_weight);
        let rules = Rules::new(artifact.rules.clone())?;
        let m = &artifact.manifest;
        let oos_index = m.oos_label.as_deref().and_then(|l| m.labels.iter().position(|x| x == l));
        Ok(Self {
            runtime_prototypes: RwLock::new(crate::head::PrototypeHead::default()),
            artifact,
            featurizer,
            rules,
            oos_index,
        })
    }

    /// The artifact this router runs.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// The featurizer (encoders) this router runs.
    pub fn featurizer(&self) -> &Featurizer {
        &self.featurizer
    }

    /// Thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.artifact.manifest.thresholds
    }

    /// Add a few-shot intent at run time from example texts (no retraining). Replaces an
    /// intent of the same name added earlier.
    ///
    /// # Errors
    /// [`RouterError::EmptyText`] when there is no usable example; encoder failures.
    pub fn add_intent(&self, intent: &str, examples: &[&str]) -> Result<()> {
        let examples: Vec<&str> = examples.iter().copied().filter(|t| !t.trim().is_empty()).collect();
        if examples.is_empty() {
            return Err(RouterError::EmptyText);
        }
        let feats = self.featurizer.featurize(&examples)?;
        let vecs: Vec<Vec<f32>> = feats.into_iter().map(|f| f.proto).collect();
        let mut guard = self.runtime_prototypes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.add(intent, &vecs);
        Ok(())
    }

    /// Route one text.
    ///
    /// # Errors
    /// [`RouterError::EmptyText`]; encoder failures.
    pub fn route(&self, text: &str) -> Result<Decision> {
        check_text(text)?;
        let span = crate::decision::route_span();
        let _entered = span.enter();
        let d = match self.rule_decision(text) {
            Some(d) => d,
            None => {
                let feats = self.featurizer.featurize(&[text])?;
                let f = feats.into_iter().next().ok_or(RouterError::EmptyText)?;
                self.decide(&f)
            }
        };
        d.record_on(&span);
        Ok(d)
    }

    /// Route raw bytes from an API boundary.
    ///
    /// # Errors
    /// [`RouterError::InvalidUtf8`], then as [`Router::route`].
    pub fn route_bytes(&self, bytes: &[u8]) -> Result<Decision> {
        let text = std::str::from_utf8(bytes).map_err(|e| RouterError::InvalidUtf8 { offset: e.valid_up_to() })?;
        self.route(text)
    }

    /// Route many texts with one batched encoder pass (rules still first).
    ///
    /// # Errors
    /// [`RouterError::EmptyText`] if any text is empty; encoder failures.
    pub fn route_batch(&self, texts: &[&str]) -> Result<Vec<Decision>> {
        for t in texts {
            check_text(t)?;
        }
        let feats = self.featurizer.featurize(texts)?;
        Ok(texts.iter().zip(&feats).map(|(t, f)| self.rule_decision(t).unwrap_or_else(|| self.decide(f))).collect())
    }

    /// The rules rung alone.
    pub fn rule_decision(&self, text: &str) -> Option<Decision> {
        let m = self.rules.check(text)?;
        Some(Decision {
            outcome: Outcome::Intent,
            intent: Some(m.intent.clone()),
            confidence: 1.0,
            rung: Rung::Rule,
            candidates: vec![Candidate { intent: m.intent.clone(), score: 1.0 }],
            clarify: Vec::new(),
            thresholds: self.thresholds(),
            truncated: false,
            reasons: vec![format!("rule for {} matched /{}/ on {:?}", m.intent, m.pattern, m.matched)],
        })
    }

    /// The classifier, prototype, out-of-scope and clarify rungs on precomputed features.
    pub fn decide(&self, f: &Features) -> Decision {
        let th = self.thresholds();
        let labels = &self.artifact.manifest.labels;
        let oos_label = self.artifact.manifest.oos_label.as_deref();
        let logits = self.artifact.head.logits(&f.dense);
        let mut probs = softmax(&logits, th.temperature);
        let near = match (th.neighbours, &self.artifact.neighbours) {
            (Some(nt), Some(memory)) => {
                let look =
                    memory.look(&f.proto, nt.vote_k, nt.vote_temperature, nt.sim_k, labels.len(), self.oos_index);
                mix_votes(&mut probs, &look.votes, nt.vote_weight);
                Some((nt, look.in_scope_sim))
            }
            _ => None,
        };
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let candidates: Vec<Candidate> =
            order.iter().take(TOP_K).map(|&i| Candidate { intent: labels[i].clone(), score: probs[i] }).collect();
        let mut reasons = Vec::new();
        if f.truncated {
            reasons.push("input truncated to the encoder's token limit".to_owned());
        }
        let mk = |outcome, intent: Option<String>, confidence, rung, clarify, reasons| Decision {
            outcome,
            intent,
            confidence,
            rung,
            candidates: candidates.clone(),
            clarify,
            thresholds: th,
            truncated: f.truncated,
            reasons,
        };
        let (top, p1) = (order[0], probs[order[0]]);
        let p2 = order.get(1).map_or(0.0, |&i| probs[i]);

        // Run-time few-shot intents: win when close enough and closer than the classifier's pick.
        let rt = self.runtime_prototypes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((intent, sim)) = rt.scores(&f.proto).into_iter().next() {
            let top_sim = self
                .artifact
                .prototypes
                .scores(&f.proto)
                .into_iter()
                .find(|(i, _)| i == &labels[top])
                .map_or(f32::NEG_INFINITY, |(_, s)| s);
            if sim >= th.prototype && sim > top_sim {
                reasons.push(format!(
                    "run-time intent {intent} at cosine {sim:.3} ≥ {:.3} and above {}'s {top_sim:.3}",
                    th.prototype, labels[top]
                ));
                let mut d = mk(Outcome::Intent, Some(intent.clone()), sim, Rung::Prototype, Vec::new(), reasons);
                d.candidates.insert(0, Candidate { intent, score: sim });
                d.candidates.truncate(TOP_K);
                return d;
            }
        }
        drop(rt);

        if Some(labels[top].as_str()) == oos_label {
            reasons.push(format!("classifier's top class is the out-of-scope class ({p1:.3})"));
            return mk(Outcome::OutOfScope, None, p1, Rung::OutOfScope, Vec::new(), reasons);
        }
        match near {
            Some((nt, sim)) => {
                let score = nt.score(p1, sim);
                if score < nt.oos_score {
                    reasons.push(format!(
                        "out-of-scope score {score:.3} below {:.3} (top confidence {p1:.3}, mean cosine {sim:.3} to the {} nearest in-scope examples)",
                        nt.oos_score, nt.sim_k
                    ));
                    return mk(Outcome::OutOfScope, None, p1, Rung::OutOfScope, Vec::new(), reasons);
                }
            }
            None if p1 < th.oos => {
                reasons.push(format!("top confidence {p1:.3} below out-of-scope threshold {:.3}", th.oos));
                return mk(Outcome::OutOfScope, None, p1, Rung::OutOfScope, Vec::new(), reasons);
            }
            None => {}
        }
        if let Some(&second) = order.get(1)
            && p1 - p2 < th.clarify_margin
            && Some(labels[second].as_str()) != oos_label
        {
            reasons.push(format!(
                "top two within margin {:.3} < {:.3}: {} ({p1:.3}) vs {} ({p2:.3})",
                p1 - p2,
                th.clarify_margin,
                labels[top],
                labels[second]
            ));
            let clarify = vec![labels[top].clone(), labels[second].clone()];
            return mk(Outcome::Clarify, Some(labels[top].clone()), p1, Rung::Clarify, clarify, reasons);
        }
        match near {
            Some((nt, sim)) => reasons.push(format!(
                "classifier{}: {} at {p1:.3} (out-of-scope score {:.3} ≥ {:.3}, margin {:.3})",
                if nt.vote_weight > 0.0 {
                    format!(" with a {:.2} neighbour vote", nt.vote_weight)
                } else {
                    String::new()
                },
                labels[top],
                nt.score(p1, sim),
                nt.oos_score,
                p1 - p2
            )),
            None => reasons.push(format!(
                "classifier: {} at {p1:.3} (threshold {:.3}, margin {:.3})",
                labels[top],
                th.oos,
                p1 - p2
            )),
        }
        mk(Outcome::Intent, Some(labels[top].clone()), p1, Rung::Classifier, Vec::new(), reasons)
    }
}
