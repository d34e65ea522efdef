//! The on-disk form of a trained router: a directory.
//!
//! ```text
//! router.json        labels, thresholds, temperature, encoder id and hash, data hash, metrics
//! head.safetensors   logistic-regression weights `w` (dim × classes) and `b` (classes)
//! lexical.json       the lexical encoder's IDF table (when the features use it)
//! prototypes.json    centroids of the trained intents and of few-shot intents added later
//! neighbours.safetensors  the training sentences' embeddings (f16) and classes (when the
//!                    thresholds use neighbours)
//! rules.json         compliance rules (optional)
//! encoder/           the fine-tuned sentence encoder (optional; see [`crate::finetune`])
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::decision::Thresholds;
use crate::encoder::{EncoderInfo, LexicalEncoder};
use crate::error::{Result, RouterError};
use crate::head::{LogReg, LogRegConfig, Neighbours, PrototypeHead};
use crate::rules::RuleSpec;

/// Sub-folder of an artifact holding its own (fine-tuned) sentence encoder, when it has one.
pub const ENCODER_DIR: &str = "encoder";

/// The artifact's own sentence encoder folder, if it has one.
pub fn own_encoder_dir(dir: &Path) -> Option<std::path::PathBuf> {
    let d = dir.join(ENCODER_DIR);
    d.join("config.json").is_file().then_some(d)
}

/// File of the neighbour memory inside an artifact.
pub const NEIGHBOURS_FILE: &str = "neighbours.safetensors";

/// Format version of `router.json`.
pub const ARTIFACT_VERSION: u32 = 1;

/// Metrics measured while training, kept with the artifact.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainMetrics {
    /// Training examples used by the final head.
    pub n_train: usize,
    /// Held-out examples used for calibration and thresholds.
    pub n_calibration: usize,
    /// Accuracy of the pre-refit head on the held-out part.
    pub calibration_accuracy: f32,
    /// Expected calibration error on the held-out part before temperature scaling.
    pub ece_before: f64,
    /// ... and after.
    pub ece_after: f64,
    /// L-BFGS iterations of the final fit.
    pub lbfgs_iterations: usize,
    /// Wall time of training, seconds (embedding included).
    pub train_seconds: f64,
    /// Wall time spent embedding, seconds.
    pub embed_seconds: f64,
    /// Wall time of the head fits (the fit on the fit part, and the refit on everything),
    /// seconds.
    #[serde(default)]
    pub head_seconds: f64,
    /// Wall time of calibration and thresholds (temperature, OOS and prototype thresholds),
    /// seconds.
    #[serde(default)]
    pub calibration_seconds: f64,
    /// L-BFGS iterations of the first fit (on the fit part, before calibration).
    #[serde(default)]
    pub lbfgs_iterations_first: usize,
    /// Why L-BFGS stopped, first fit then final fit (`gradient`, `loss`, `line-search`,
    /// `max-iter`).
    #[serde(default)]
    pub lbfgs_stop: Vec<String>,
    /// Wall time of fine-tuning the encoder (included in `train_seconds`), seconds; 0 when the
    /// encoder was not fine-tuned.
    #[serde(default)]
    pub fine_tune_seconds: f64,
    /// The vote weights tried on the held-out part with their log-loss and accuracy there (the
    /// lowest log-loss was chosen); empty without the neighbour memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vote_weights: Vec<VoteWeightScore>,
}

/// One vote weight tried at training time and how the mixed probabilities did on the held-out
/// part.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct VoteWeightScore {
    /// Weight of the neighbours' vote.
    pub weight: f32,
    /// Mean −ln of the true class's probability.
    pub log_loss: f64,
    /// Top-1 accuracy.
    pub accuracy: f32,
}

/// `router.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// [`ARTIFACT_VERSION`].
    pub version: u32,
    /// Class labels, in head order.
    pub labels: Vec<String>,
    /// The label that means "out of scope" in the training data, if any.
    pub oos_label: Option<String>,
    /// The sentence encoder the head was trained on (`None`: lexical features only).
    pub encoder: Option<EncoderInfo>,
    /// The folder the sentence encoder was loaded from at training time, when it was given
    /// explicitly (`--model-dir`) rather than found in the models cache: where loading looks
    /// when no folder is given. A hint only: the encoder found there must still match
    /// [`Manifest::encoder`], else loading falls back to the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_dir: Option<std::path::PathBuf>,
    /// Identity of the lexical block (`None`: not used).
    pub lexical: Option<EncoderInfo>,
    /// Weight of the lexical block in the features.
    pub lexical_weight: f32,
    /// Thresholds and temperature.
    pub thresholds: Thresholds,
    /// Head settings.
    pub head: LogRegConfig,
    /// sha256 of the training examples.
    pub train_data_hash: String,
    /// Seed of the run.
    pub seed: u64,
    /// Training metrics.
    pub metrics: TrainMetrics,
}

/// Everything an artifact directory holds.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// `router.json`.
    pub manifest: Manifest,
    /// The classifier.
    pub head: LogReg,
    /// The lexical encoder, when used.
    pub lexical: Option<LexicalEncoder>,
    /// Prototypes.
    pub prototypes: PrototypeHead,
    /// The training examples' embeddings, when the thresholds use neighbours.
    pub neighbours: Option<Neighbours>,
    /// Rules.
    pub rules: Vec<RuleSpec>,
}

fn bad(dir: &Path, reason: impl Into<String>) -> RouterError {
    RouterError::BadArtifact { dir: dir.to_path_buf(), reason: reason.into() }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| RouterError::json(path, e))?;
    std::fs::write(path, s).map_err(|e| RouterError::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|e| RouterError::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| RouterError::json(path, e))
}

impl Artifact {
    /// Write to `dir` (created if needed).
    ///
    /// # Errors
    /// I/O and serialisation failures.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| RouterError::io(dir, e))?;
        write_json(&dir.join("router.json"), &self.manifest)?;
        let w = Tensor::from_slice(&self.head.weights, (self.head.dim, self.head.classes), &Device::Cpu)?;
        let b = Tensor::from_slice(&self.head.bias, self.head.classes, &Device::Cpu)?;
        let map: HashMap<String, Tensor> = [("w".to_owned(), w), ("b".to_owned(), b)].into_iter().collect();
        candle_core::safetensors::save(&map, dir.join("head.safetensors"))?;
        if let Some(lex) = &self.lexical {
            write_json(&dir.join("lexical.json"), lex)?;
        }
        write_json(&dir.join("prototypes.json"), &self.prototypes)?;
        if let Some(n) = &self.neighbours {
            n.save(&dir.join(NEIGHBOURS_FILE))?;
        }
        write_json(&dir.join("rules.json"), &self.rules)?;
        Ok(())
    }

    /// Read from `dir`, checking that the parts agree with each other.
    ///
    /// # Errors
    /// [`RouterError::BadArtifact`] for missing or inconsistent parts.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.join("router.json").is_file() {
            return Err(bad(dir, "no router.json (not a router artifact)"));
        }
        let manifest: Manifest = read_json(&dir.join("router.json"))?;
        if manifest.version != ARTIFACT_VERSION {
            return Err(bad(dir, format!("artifact version {} (expected {ARTIFACT_VERSION})", manifest.version)));
        }
        let head_path = dir.join("head.safetensors");
        if !head_path.is_file() {
            return Err(bad(dir, "missing head.safetensors"));
        }
        let tensors = candle_core::safetensors::load(&head_path, &Device::Cpu)
            .map_err(|e| bad(dir, format!("head.safetensors: {e}")))?;
        let (Some(w), Some(b)) = (tensors.get("w"), tensors.get("b")) else {
            return Err(bad(dir, "head.safetensors lacks `w` or `b`"));
        };
        let (dim, classes) = w.dims2().map_err(|e| bad(dir, format!("w: {e}")))?;
        if classes != manifest.labels.len() || b.dims() != [classes] {
            return Err(bad(dir, format!("head has {classes} classes but {} labels", manifest.labels.len())));
        }
        let head = LogReg { weights: w.flatten_all()?.to_vec1()?, bias: b.to_vec1()?, dim, classes };
        let lexical = if manifest.lexical.is_some() {
            Some(read_json::<LexicalEncoder>(&dir.join("lexical.json"))?)
        } else {
            None
        };
        let expected_dim =
            manifest.encoder.as_ref().map_or(0, |e| e.dim) + lexical.as_ref().map_or(0, LexicalEncoder::dim);
        if expected_dim != dim {
            return Err(bad(dir, format!("head expects {dim} features, encoders give {expected_dim}")));
        }
        let p = dir.join("prototypes.json");
        let prototypes = if p.is_file() { read_json(&p)? } else { PrototypeHead::default() };
        let neighbours = match manifest.thresholds.neighbours {
            None => None,
            Some(_) => {
                let p = dir.join(NEIGHBOURS_FILE);
                if !p.is_file() {
                    return Err(bad(dir, format!("the thresholds use neighbours but {NEIGHBOURS_FILE} is missing")));
                }
                let n = Neighbours::load(&p)?;
                let want = manifest.encoder.as_ref().map_or(0, |e| e.dim);
                if n.dim() != want || n.max_label().is_some_and(|l| l >= classes) {
                    return Err(bad(
                        dir,
                        format!(
                            "{NEIGHBOURS_FILE} holds {}-d vectors with classes up to {:?}; expected {want}-d and fewer than {classes}",
                            n.dim(),
                            n.max_label()
                        ),
                    ));
                }
                Some(n)
            }
        };
        let r = dir.join("rules.json");
        let rules = if r.is_file() { read_json(&r)? } else { Vec::new() };
        Ok(Self { manifest, head, lexical, prototypes, neighbours, rules })
    }
}
