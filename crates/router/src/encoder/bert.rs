//! A BERT-family sentence encoder on candle: the sentence-transformers recipe in Rust.
//!
//! Loads a sentence-transformers folder (`config.json`, `tokenizer.json`, `model.safetensors`),
//! tokenises without fixed-length padding, truncates to the model's `max_seq_length`, runs the
//! transformer on length-sorted micro-batches padded only to the longest item, mean-pools the
//! last hidden states under the attention mask and L2-normalises. The encoder's identity is the
//! sha256 of its weights and tokenizer, so a head trained on one model is never run on another.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::{Encoded, EncoderInfo};
use crate::error::{Result, RouterError};
use crate::fetch::{PINNED_MODEL_HASHES, sha256_file};

/// Items per forward pass; the batch is sorted by length first so padding stays small. Small
/// passes measured faster than 32 on candle CPU here (batch 4–8 best).
const FORWARD_BATCH: usize = 8;
/// Used when the folder has no `sentence_bert_config.json`.
const DEFAULT_MAX_SEQ_LEN: usize = 256;

/// A loaded sentence encoder (weights in memory, tokenizer configured).
pub struct BertEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    info: EncoderInfo,
    max_seq_len: usize,
}

impl std::fmt::Debug for BertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEncoder")
            .field("info", &self.info)
            .field("max_seq_len", &self.max_seq_len)
            .finish_non_exhaustive()
    }
}

fn bad(dir: &Path, reason: impl Into<String>) -> RouterError {
    RouterError::BadModelDir { dir: dir.to_path_buf(), reason: reason.into() }
}

impl BertEncoder {
    /// Load a sentence-transformers model folder.
    ///
    /// With `expect_pinned` (the default model from the cache) every pinned file must have its
    /// pinned sha256. Any folder whose weights have the pinned name and size but another hash
    /// is refused too.
    ///
    /// # Errors
    /// [`RouterError::BadModelDir`] for missing or unreadable files, [`RouterError::HashMismatch`]
    /// when a file fails its pinned hash.
    pub fn load(dir: &Path, expect_pinned: bool) -> Result<Self> {
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
        check_pinned(&weights_path, &weights_hash)?;
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

        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&weights_path, &device)
            .map_err(|e| bad(dir, format!("model.safetensors: {e}")))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model =
            BertModel::load(vb, &config).map_err(|e| bad(dir, format!("weights do not fit config.json: {e}")))?;

        let id = model_id(dir);
        let info = EncoderInfo {
            kind: "bert".into(),
            id,
            hash: format!("{}+{}", &weights_hash[..16], &tokenizer_hash[..16]),
            dim: config.hidden_size,
        };
        Ok(Self { model, tokenizer, device, info, max_seq_len })
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
        let mut tokenized = Vec::with_capacity(texts.len());
        for t in texts {
            tokenized.push(self.tokenize(t)?);
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokenized[i].0.len());
        let dim = self.info.dim;
        let mut vectors = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(FORWARD_BATCH) {
            let max_len = chunk.iter().map(|&i| tokenized[i].0.len()).max().unwrap_or(0).max(1);
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
            let ids = Tensor::from_vec(ids, (b, max_len), &self.device)?;
            let mask = Tensor::from_vec(mask, (b, max_len), &self.device)?;
            let type_ids = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
            let pooled = mean_pool(&hidden, &mask)?;
            let normed = l2_normalize(&pooled)?;
            let rows: Vec<Vec<f32>> = normed.to_vec2()?;
            for (&i, row) in chunk.iter().zip(rows) {
                debug_assert_eq!(row.len(), dim);
                vectors[i] = row;
            }
        }
        Ok(Encoded { vectors, truncated: tokenized.iter().map(|t| t.1).collect() })
    }
}

/// Mean of the hidden states over the positions the mask keeps: `(b, l, h), (b, l) -> (b, h)`.
pub(crate) fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    Ok(summed.broadcast_div(&counts)?)
}

/// Row-wise L2 normalisation of a `(b, h)` matrix.
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

fn file_name(p: &Path) -> String {
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
        let hidden =
            Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6., 10., 0., 20., 0., 999., 999.], (2, 3, 2), &Device::Cpu)
                .expect("hidden");
        let mask = Tensor::from_vec(vec![1u32, 1, 1, 1, 1, 0], (2, 3), &Device::Cpu).expect("mask");
        let pooled: Vec<Vec<f32>> = mean_pool(&hidden, &mask).expect("pool").to_vec2().expect("vec");
        assert_eq!(pooled, vec![vec![3.0, 4.0], vec![15.0, 0.0]]);
        let normed: Vec<Vec<f32>> =
            l2_normalize(&mean_pool(&hidden, &mask).expect("pool")).expect("norm").to_vec2().expect("vec");
        assert!((normed[0][0] - 0.6).abs() < 1e-6 && (normed[0][1] - 0.8).abs() < 1e-6);
        assert!((normed[1][0] - 1.0).abs() < 1e-6);
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
