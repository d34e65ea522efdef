//! A BERT-family sentence encoder: the sentence-transformers recipe in Rust.
//!
//! Loads a sentence-transformers folder (`config.json`, `tokenizer.json`, `model.safetensors`,
//! and `model.onnx` for the ONNX Runtime engine), tokenises without fixed-length padding,
//! truncates to the model's `max_seq_length`, runs the transformer on length-sorted
//! micro-batches padded only to the longest item, mean-pools the last hidden states under the
//! attention mask and L2-normalises. The encoder's identity is the sha256 of its weights and
//! tokenizer, so a head trained on one model is never run on another; both engines compute the
//! same function of the same weights, so a head trained with one runs with the other.
//!
//! Two engines run the transformer ([`EncoderBackend`]): ONNX Runtime through the `ort` crate
//! (the default: faster here, see the crate README for the figures) and candle. When ONNX
//! Runtime is asked for but its library or `model.onnx` is missing, the encoder warns and
//! uses candle.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::onnx::OrtEngine;
use super::{Encoded, EncoderInfo};
use crate::error::{Result, RouterError};
use crate::fetch::{PINNED_MODEL_HASHES, sha256_file};

/// Items per candle forward pass; the batch is sorted by length first so padding stays small.
/// Small passes measured faster than 32 on candle CPU here (batch 4–8 best).
const CANDLE_FORWARD_BATCH: usize = 8;
/// Items per ONNX Runtime forward pass.
const ORT_FORWARD_BATCH: usize = 32;
/// Environment variable choosing the engine (`ort` or `candle`) where no option says.
pub const BACKEND_ENV: &str = "SWITCHBOARD_ENCODER_BACKEND";
/// Environment variable giving the engine's thread count where no option says.
pub const THREADS_ENV: &str = "SWITCHBOARD_ENCODER_THREADS";

/// Which engine runs the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderBackend {
    /// ONNX Runtime (`model.onnx`, library loaded at run time). The default.
    #[default]
    Ort,
    /// candle (`model.safetensors`), pure Rust.
    Candle,
}

impl EncoderBackend {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ort => "ort",
            Self::Candle => "candle",
        }
    }
}

impl std::fmt::Display for EncoderBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EncoderBackend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ort" | "onnx" | "onnxruntime" => Ok(Self::Ort),
            "candle" => Ok(Self::Candle),
            other => Err(format!("unknown encoder backend {other:?} (expected ort or candle)")),
        }
    }
}

/// How to run the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderOptions {
    /// The engine wanted.
    pub backend: EncoderBackend,
    /// When the wanted engine cannot be loaded for want of its files (not for a failed hash),
    /// use candle with a warning instead of failing.
    pub fallback: bool,
    /// Intra-op threads of ONNX Runtime (candle follows `RAYON_NUM_THREADS`).
    pub threads: usize,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self { backend: EncoderBackend::default(), fallback: true, threads: default_threads() }
    }
}

impl EncoderOptions {
    /// The defaults, overridden by `SWITCHBOARD_ENCODER_BACKEND` and
    /// `SWITCHBOARD_ENCODER_THREADS` when set. A bad value is ignored with a warning.
    pub fn from_env() -> Self {
        let mut o = Self::default();
        if let Some(v) = std::env::var(BACKEND_ENV).ok().filter(|v| !v.trim().is_empty()) {
            match v.parse() {
                Ok(b) => o.backend = b,
                Err(e) => tracing::warn!(%e, "ignoring {BACKEND_ENV}"),
            }
        }
        o
    }

    /// These options with another engine.
    pub fn with_backend(mut self, backend: EncoderBackend) -> Self {
        self.backend = backend;
        self
    }
}

/// Threads for the engine: `SWITCHBOARD_ENCODER_THREADS`, else `RAYON_NUM_THREADS`, else the
/// cores available.
pub fn default_threads() -> usize {
    [THREADS_ENV, "RAYON_NUM_THREADS"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|s| s.trim().parse::<usize>().ok()).filter(|&n| n > 0))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The engine that runs the transformer.
enum Engine {
    Candle { model: BertModel, device: Device },
    Ort(OrtEngine),
}
/// Used when the folder has no `sentence_bert_config.json`.
const DEFAULT_MAX_SEQ_LEN: usize = 256;

/// Tokenised texts and the forward batches they run in (see [`BertEncoder::plan_batches`]).
#[derive(Debug, Clone)]
pub struct BatchPlan {
    /// Per input text: token ids after truncation, and whether the text was cut.
    pub tokenized: Vec<(Vec<u32>, bool)>,
    /// Indices into `tokenized`, one list per forward pass.
    pub batches: Vec<Vec<usize>>,
}

impl BatchPlan {
    /// The length a forward pass pads `batch` to: its longest text (at least 1).
    pub fn padded_len(&self, batch: &[usize]) -> usize {
        batch.iter().map(|&i| self.tokenized[i].0.len()).max().unwrap_or(0).max(1)
    }
}

/// A loaded sentence encoder (weights in memory, tokenizer configured).
pub struct BertEncoder {
    engine: Engine,
    tokenizer: Tokenizer,
    info: EncoderInfo,
    max_seq_len: usize,
}

impl std::fmt::Debug for BertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEncoder")
            .field("info", &self.info)
            .field("backend", &self.backend())
            .field("max_seq_len", &self.max_seq_len)
            .finish_non_exhaustive()
    }
}

fn bad(dir: &Path, reason: impl Into<String>) -> RouterError {
    RouterError::BadModelDir { dir: dir.to_path_buf(), reason: reason.into() }
}

impl BertEncoder {
    /// Load a sentence-transformers model folder with [`EncoderOptions::from_env`]: ONNX
    /// Runtime unless `SWITCHBOARD_ENCODER_BACKEND=candle`, candle (with a warning) when ONNX
    /// Runtime is not installed.
    ///
    /// # Errors
    /// As [`BertEncoder::load_with`].
    pub fn load(dir: &Path, expect_pinned: bool) -> Result<Self> {
        Self::load_with(dir, expect_pinned, &EncoderOptions::from_env())
    }

    /// Load a sentence-transformers model folder.
    ///
    /// With `expect_pinned` (the default model from the cache) every pinned file must have its
    /// pinned sha256. Any folder whose weights have the pinned name and size but another hash
    /// is refused too.
    ///
    /// # Errors
    /// [`RouterError::BadModelDir`] for missing or unreadable files, [`RouterError::HashMismatch`]
    /// when a file fails its pinned (or, for `model.onnx`, recorded) hash,
    /// [`RouterError::OrtUnavailable`] when ONNX Runtime is wanted without fallback and cannot
    /// be loaded.
    pub fn load_with(dir: &Path, expect_pinned: bool, options: &EncoderOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(bad(dir, "not a directory"));
        }
        let config_path = dir.join("config.json");
        let tokenizer_path = dir.join("tokenizer.json");
        let weights_path = dir.join("model.safetensors");
        for p in [&config_path, &tokenizer_path, &weights_path] {
            if !p.is_file() {
                return Err(bad(dir, format!("missing {}", file_name(p))));
            }
        }
        let config_text = std::fs::read_to_string(&config_path).map_err(|e| RouterError::io(&config_path, e))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| bad(dir, format!("config.json is not a BERT config: {e}")))?;

        if expect_pinned {
            crate::fetch::verify_model_dir(dir)?;
        }
        let weights_hash = sha256_file(&weights_path)?;
        let tokenizer_hash = sha256_file(&tokenizer_path)?;
        // A fine-tuned folder records the hash of its own weights (which may have the default
        // model's name and size): they must have that hash.
        let fine_tuned = crate::finetune::FineTuneRecord::read(dir)?;
        match &fine_tuned {
            Some(record) if record.weights_sha256 != weights_hash => {
                return Err(RouterError::HashMismatch {
                    file: weights_path,
                    expected: record.weights_sha256.clone(),
                    found: weights_hash,
                });
            }
            Some(_) => {}
            None => check_pinned(&weights_path, &weights_hash)?,
        }
        check_pinned(&tokenizer_path, &tokenizer_hash)?;

        let max_seq_len = read_max_seq_len(dir)?.min(config.max_position_embeddings);
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| bad(dir, format!("tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every input to 128 tokens; we pad per batch instead.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| RouterError::Tokenizer(e.to_string()))?;

        let engine = match options.backend {
            EncoderBackend::Ort => match OrtEngine::load(dir, options.threads, &weights_hash) {
                Ok(e) => Engine::Ort(e),
                Err(RouterError::OrtUnavailable(why)) if options.fallback => {
                    tracing::warn!(reason = %why, "ONNX Runtime encoder unavailable; using the candle encoder");
                    load_candle(dir, &weights_path, &config)?
                }
                Err(e) => return Err(e),
            },
            EncoderBackend::Candle => load_candle(dir, &weights_path, &config)?,
        };

        let id = fine_tuned.map_or_else(|| model_id(dir), |r| format!("{}, fine-tuned", r.base.id));
        let info = EncoderInfo {
            kind: "bert".into(),
            id,
            hash: format!("{}+{}", &weights_hash[..16], &tokenizer_hash[..16]),
            dim: config.hidden_size,
        };
        Ok(Self { engine, tokenizer, info, max_seq_len })
    }

    /// The engine that runs the transformer (after any fallback).
    pub fn backend(&self) -> EncoderBackend {
        match self.engine {
            Engine::Candle { .. } => EncoderBackend::Candle,
            Engine::Ort(_) => EncoderBackend::Ort,
        }
    }

    /// Threads of the engine: ONNX Runtime's intra-op threads, or candle's (rayon) pool size.
    pub fn threads(&self) -> usize {
        match &self.engine {
            Engine::Candle { .. } => candle_core::utils::get_num_threads(),
            Engine::Ort(e) => e.threads(),
        }
    }

    /// sha256 of `model.onnx` when ONNX Runtime runs the model.
    pub fn onnx_sha256(&self) -> Option<&str> {
        match &self.engine {
            Engine::Candle { .. } => None,
            Engine::Ort(e) => Some(e.onnx_sha256()),
        }
    }

    /// Identity and output size of this encoder.
    pub fn info(&self) -> &EncoderInfo {
        &self.info
    }

    /// Maximum number of tokens (special tokens included) fed to the model.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Token ids of one text after truncation (as the model sees them), and whether it was cut.
    ///
    /// # Errors
    /// [`RouterError::Tokenizer`] when the tokenizer fails.
    pub fn tokenize(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| RouterError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), !enc.get_overflowing().is_empty()))
    }

    /// Embed texts: one L2-normalised vector per text, in input order.
    ///
    /// # Errors
    /// [`RouterError::Tokenizer`] or [`RouterError::Tensor`] on internal failures.
    pub fn encode(&self, texts: &[&str]) -> Result<Encoded> {
        let forward_batch = match self.engine {
            Engine::Candle { .. } => CANDLE_FORWARD_BATCH,
            Engine::Ort(_) => ORT_FORWARD_BATCH,
        };
        self.encode_batched(texts, forward_batch)
    }

    /// Tokenise `texts` and group them as [`BertEncoder::encode_batched`] runs them: sorted by
    /// token count, `batch` per forward pass (benchmarks count the work of a pass with it).
    ///
    /// # Errors
    /// [`RouterError::Tokenizer`] when the tokenizer fails.
    pub fn plan_batches(&self, texts: &[&str], batch: usize) -> Result<BatchPlan> {
        let mut tokenized = Vec::with_capacity(texts.len());
        for t in texts {
            tokenized.push(self.tokenize(t)?);
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokenized[i].0.len());
        let batches = order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect();
        Ok(BatchPlan { tokenized, batches })
    }

    /// [`BertEncoder::encode`] with `batch` items per forward pass (texts sorted by length
    /// first, as sentence-transformers' `encode(texts, batch_size=…)` does).
    ///
    /// # Errors
    /// As [`BertEncoder::encode`].
    pub fn encode_batched(&self, texts: &[&str], batch: usize) -> Result<Encoded> {
        let plan = self.plan_batches(texts, batch)?;
        let tokenized = &plan.tokenized;
        let dim = self.info.dim;
        let mut vectors = vec![Vec::new(); texts.len()];
        for chunk in &plan.batches {
            let max_len = plan.padded_len(chunk);
            let mut ids = Vec::with_capacity(chunk.len() * max_len);
            let mut mask = Vec::with_capacity(chunk.len() * max_len);
            for &i in chunk {
                let t = &tokenized[i].0;
                ids.extend_from_slice(t);
                ids.extend(std::iter::repeat_n(0u32, max_len - t.len()));
                mask.extend(std::iter::repeat_n(1u32, t.len()));
                mask.extend(std::iter::repeat_n(0u32, max_len - t.len()));
            }
            let b = chunk.len();
            let hidden = self.forward(ids, &mask, b, max_len)?;
            let rows = mean_pool_normalize(&hidden, &mask, b, max_len, dim)?;
            for (&i, row) in chunk.iter().zip(rows) {
                vectors[i] = row;
            }
        }
        Ok(Encoded { vectors, truncated: tokenized.iter().map(|t| t.1).collect() })
    }

    /// Last hidden states of a padded batch, `(b, len, dim)` flattened.
    fn forward(&self, ids: Vec<u32>, mask: &[u32], b: usize, len: usize) -> Result<Vec<f32>> {
        match &self.engine {
            Engine::Candle { model, device } => {
                let ids = Tensor::from_vec(ids, (b, len), device)?;
                let mask = Tensor::from_vec(mask.to_vec(), (b, len), device)?;
                let type_ids = ids.zeros_like()?;
                let hidden = model.forward(&ids, &type_ids, Some(&mask))?;
                Ok(hidden.flatten_all()?.to_vec1()?)
            }
            Engine::Ort(e) => e.forward(&ids, mask, b, len),
        }
    }
}

fn load_candle(dir: &Path, weights_path: &Path, config: &Config) -> Result<Engine> {
    let device = Device::Cpu;
    let tensors = candle_core::safetensors::load(weights_path, &device)
        .map_err(|e| bad(dir, format!("model.safetensors: {e}")))?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let model = BertModel::load(vb, config).map_err(|e| bad(dir, format!("weights do not fit config.json: {e}")))?;
    Ok(Engine::Candle { model, device })
}

/// Mean of each item's hidden states over the positions its mask keeps, L2-normalised:
/// `hidden` is `(b, len, dim)` and `mask` `(b, len)`, both flattened; one row per item.
pub(crate) fn mean_pool_normalize(
    hidden: &[f32],
    mask: &[u32],
    b: usize,
    len: usize,
    dim: usize,
) -> Result<Vec<Vec<f32>>> {
    if hidden.len() != b * len * dim || mask.len() != b * len {
        return Err(RouterError::Inference(format!(
            "hidden states of {} values and a mask of {} for a ({b}, {len}, {dim}) batch",
            hidden.len(),
            mask.len()
        )));
    }
    let mut rows = Vec::with_capacity(b);
    for item in 0..b {
        let mut sum = vec![0f32; dim];
        let mut kept = 0f32;
        for pos in 0..len {
            if mask[item * len + pos] == 0 {
                continue;
            }
            kept += 1.0;
            let h = &hidden[(item * len + pos) * dim..(item * len + pos + 1) * dim];
            for (s, x) in sum.iter_mut().zip(h) {
                *s += x;
            }
        }
        let kept = kept.max(1e-9);
        for s in &mut sum {
            *s /= kept;
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        for s in &mut sum {
            *s /= norm;
        }
        rows.push(sum);
    }
    Ok(rows)
}

/// The last component of a path, as text (empty when there is none).
pub(crate) fn file_name(p: &Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn model_id(dir: &Path) -> String {
    // The sentence-transformers folder of the default package is called `model`; name it by
    // its hub id then, otherwise by the folder name.
    let name = file_name(dir);
    if name == "model" { "all-MiniLM-L6-v2".to_owned() } else { name }
}

fn read_max_seq_len(dir: &Path) -> Result<usize> {
    let p: PathBuf = dir.join("sentence_bert_config.json");
    if !p.is_file() {
        return Ok(DEFAULT_MAX_SEQ_LEN);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| RouterError::io(&p, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| RouterError::json(&p, e))?;
    Ok(v.get("max_seq_length").and_then(serde_json::Value::as_u64).map_or(DEFAULT_MAX_SEQ_LEN, |n| n as usize))
}

/// Refuse a file that claims to be a pinned default-model file (same name and size) but has
/// another hash: it is corrupt or tampered with.
fn check_pinned(path: &Path, found: &str) -> Result<()> {
    let name = file_name(path);
    let size = std::fs::metadata(path).map_err(|e| RouterError::io(path, e))?.len();
    for pin in PINNED_MODEL_HASHES {
        if pin.file == name && pin.size == size && pin.sha256 != found {
            return Err(RouterError::HashMismatch {
                file: path.to_path_buf(),
                expected: pin.sha256.to_owned(),
                found: found.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_ignores_padding_and_normalises() {
        // Two items, three positions, two features; the second item has one padded position.
        let hidden = [1f32, 2., 3., 4., 5., 6., 10., 0., 20., 0., 999., 999.];
        let mask = [1u32, 1, 1, 1, 1, 0];
        let rows = mean_pool_normalize(&hidden, &mask, 2, 3, 2).expect("pool");
        // Means (3, 4) and (15, 0), normalised.
        assert!((rows[0][0] - 0.6).abs() < 1e-6 && (rows[0][1] - 0.8).abs() < 1e-6, "{rows:?}");
        assert!((rows[1][0] - 1.0).abs() < 1e-6 && rows[1][1].abs() < 1e-6, "{rows:?}");
        let err = mean_pool_normalize(&hidden, &mask, 2, 2, 2).expect_err("shape mismatch");
        assert!(matches!(err, RouterError::Inference(_)), "{err}");
    }

    #[test]
    fn backend_names_parse() {
        assert_eq!("ort".parse::<EncoderBackend>(), Ok(EncoderBackend::Ort));
        assert_eq!("ONNXRuntime".parse::<EncoderBackend>(), Ok(EncoderBackend::Ort));
        assert_eq!(" candle ".parse::<EncoderBackend>(), Ok(EncoderBackend::Candle));
        assert!("tensorflow".parse::<EncoderBackend>().is_err());
        assert_eq!(EncoderBackend::Candle.to_string(), "candle");
    }

    #[test]
    fn a_folder_without_model_files_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = BertEncoder::load(dir.path(), false).expect_err("must fail");
        assert!(matches!(err, RouterError::BadModelDir { .. }), "{err}");
        let err = BertEncoder::load(&dir.path().join("nope"), false).expect_err("must fail");
        assert!(matches!(err, RouterError::BadModelDir { .. }), "{err}");
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::write(dir.path().join(f), b"{}").expect("write");
        }
        let err = BertEncoder::load(dir.path(), false).expect_err("must fail");
        assert!(matches!(err, RouterError::BadModelDir { .. }), "{err}");
    }
}
