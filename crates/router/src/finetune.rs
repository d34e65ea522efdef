//! Light fine-tuning of the sentence encoder: the top transformer layers are trained on the
//! labelled examples so that sentences of one intent move together and sentences of different
//! intents apart, then written out as a new sentence-transformers folder.
//!
//! The recipe (a normalised-softmax classifier on the pooled, L2-normalised embedding):
//!
//! 1. Run the frozen lower layers (embeddings and layers `0..L-k`) once over every example
//!    and keep each sentence's hidden states; only the top `k` layers are ever run again.
//! 2. Initialise a class matrix `W` with each intent's mean embedding.
//! 3. For a few epochs of shuffled mini-batches: top layers (with dropout) → mean pooling →
//!    L2 normalisation → logits `s · e · normalise(W)ᵀ` → cross-entropy; AdamW on the top
//!    layers (linear warm-up then linear decay; weight decay on their matrices, not on biases
//!    or layer norms) and on `W` (a larger rate, no decay).
//! 4. Write `model.safetensors` with the trained layers in place of the originals, next to a
//!    copy of the folder's tokenizer and configuration files.
//!
//! The head is then trained on the new encoder's embeddings exactly as on the original one:
//! `W` is thrown away. Everything is seeded (shuffles and dropout masks come from a ChaCha
//! generator), so a run is reproducible for a seed and thread count.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use candle_transformers::models::bert::Config;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::encoder::{BertEncoder, EncoderInfo};
use crate::error::{Result, RouterError};
use crate::fetch::sha256_file;

/// Settings of a fine-tuning run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FineTuneOptions {
    /// Top transformer layers trained (the others stay frozen).
    pub layers: usize,
    /// Passes over the examples.
    pub epochs: usize,
    /// Peak learning rate of the encoder layers.
    pub learning_rate: f64,
    /// Learning rate of the class matrix.
    pub class_learning_rate: f64,
    /// Examples per step.
    pub batch: usize,
    /// Scale `s` of the cosine logits.
    pub scale: f64,
    /// Dropout on the trained layers' outputs and attention weights.
    pub dropout: f32,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of shuffles and dropout masks.
    pub seed: u64,
}

impl Default for FineTuneOptions {
    fn default() -> Self {
        Self {
            layers: 2,
            epochs: 2,
            learning_rate: 1e-4,
            class_learning_rate: 1e-2,
            batch: 32,
            scale: 20.0,
            dropout: 0.1,
            weight_decay: 0.01,
            seed: 13,
        }
    }
}

/// What a fine-tuning run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FineTuneReport {
    /// The settings.
    pub options: Option<FineTuneOptions>,
    /// Examples trained on.
    pub examples: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Mean training loss of each epoch.
    pub epoch_loss: Vec<f64>,
    /// Smallest cosine between the training forward pass (before any step) and the encoder
    /// on a sample of the examples: the two must compute the same function.
    pub initial_agreement: f64,
    /// Seconds spent running the frozen layers once.
    pub frozen_seconds: f64,
    /// Seconds spent training.
    pub train_seconds: f64,
}

/// Examples on which the training forward pass is checked against the encoder.
const AGREEMENT_SAMPLE: usize = 64;

fn bad(dir: &Path, reason: impl Into<String>) -> RouterError {
    RouterError::BadModelDir { dir: dir.to_path_buf(), reason: reason.into() }
}

/// One transformer layer's weights (trainable or not).
struct Layer {
    q: (Tensor, Tensor),
    k: (Tensor, Tensor),
    v: (Tensor, Tensor),
    attn_out: (Tensor, Tensor),
    attn_ln: (Tensor, Tensor),
    inter: (Tensor, Tensor),
    out: (Tensor, Tensor),
    out_ln: (Tensor, Tensor),
}

/// The tensor names of layer `i`'s parameters, in the order of [`Layer`]'s fields, as
/// (weight, bias) pairs.
fn layer_names(i: usize) -> [(String, String); 8] {
    let p = format!("encoder.layer.{i}.");
    let pair = |s: &str, w: &str, b: &str| (format!("{p}{s}.{w}"), format!("{p}{s}.{b}"));
    [
        pair("attention.self.query", "weight", "bias"),
        pair("attention.self.key", "weight", "bias"),
        pair("attention.self.value", "weight", "bias"),
        pair("attention.output.dense", "weight", "bias"),
        pair("attention.output.LayerNorm", "weight", "bias"),
        pair("intermediate.dense", "weight", "bias"),
        pair("output.dense", "weight", "bias"),
        pair("output.LayerNorm", "weight", "bias"),
    ]
}

/// Whether AdamW's weight decay applies to a trained tensor: the dense layers' matrices, not
/// their biases nor the layer norms' scales and shifts.
fn decays(name: &str) -> bool {
    name.ends_with(".weight") && !name.contains("LayerNorm")
}

/// Strip an optional `bert.` prefix so both naming styles of BERT checkpoints are read.
fn canonical(name: &str) -> &str {
    name.strip_prefix("bert.").unwrap_or(name)
}

struct Weights {
    tensors: HashMap<String, Tensor>,
    /// The stored name of each canonical name (to write back under the same names).
    stored: HashMap<String, String>,
}

impl Weights {
    fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| bad(dir, format!("model.safetensors: {e}")))?;
        let stored = tensors.keys().map(|k| (canonical(k).to_owned(), k.clone())).collect();
        Ok(Self { tensors, stored })
    }

    fn get(&self, name: &str) -> Result<Tensor> {
        let key = self
            .stored
            .get(name)
            .ok_or_else(|| RouterError::Inference(format!("model.safetensors has no tensor {name}")))?;
        let t = &self.tensors[key];
        Ok(if t.dtype() == DType::F32 { t.clone() } else { t.to_dtype(DType::F32)? })
    }

    fn layer(&self, i: usize) -> Result<Layer> {
        let n = layer_names(i);
        let g = |j: usize| -> Result<(Tensor, Tensor)> { Ok((self.get(&n[j].0)?, self.get(&n[j].1)?)) };
        Ok(Layer {
            q: g(0)?,
            k: g(1)?,
            v: g(2)?,
            attn_out: g(3)?,
            attn_ln: g(4)?,
            inter: g(5)?,
            out: g(6)?,
            out_ln: g(7)?,
        })
    }
}

/// Dropout masks drawn from a seeded generator (candle's CPU random source cannot be seeded).
struct Dropout {
    p: f32,
    rng: ChaCha8Rng,
}

impl Dropout {
    fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let n = x.elem_count();
        let mask: Vec<f32> = (0..n).map(|_| if self.rng.r#gen::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
        Ok(x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)?)
    }
}

fn linear(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Result<Tensor> {
    let (bsz, len, d) = x.dims3()?;
    let y = x.reshape((bsz * len, d))?.matmul(&w.t()?)?.broadcast_add(b)?;
    Ok(y.reshape((bsz, len, ()))?)
}

fn layer_norm(x: &Tensor, (w, b): &(Tensor, Tensor), eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(w)?.broadcast_add(b)?)
}

/// One BERT layer: `x` is `(b, len, d)`, `bias` the additive attention mask `(b, 1, 1, len)`.
fn layer_forward(
    x: &Tensor,
    l: &Layer,
    bias: &Tensor,
    heads: usize,
    eps: f64,
    mut dropout: Option<&mut Dropout>,
) -> Result<Tensor> {
    let (b, len, d) = x.dims3()?;
    let dh = d / heads;
    let split = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, len, heads, dh))?.transpose(1, 2)?.contiguous()?) };
    let q = split(linear(x, &l.q)?)?;
    let k = split(linear(x, &l.k)?)?;
    let v = split(linear(x, &l.v)?)?;
    let scores = (q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?.broadcast_add(bias)?;
    let mut probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
    if let Some(dr) = dropout.as_deref_mut() {
        probs = dr.apply(&probs)?;
    }
    let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, len, d))?;
    let mut attn = linear(&ctx, &l.attn_out)?;
    if let Some(dr) = dropout.as_deref_mut() {
        attn = dr.apply(&attn)?;
    }
    let h = layer_norm(&(attn + x)?, &l.attn_ln, eps)?;
    let inter = linear(&h, &l.inter)?.gelu_erf()?;
    let mut out = linear(&inter, &l.out)?;
    if let Some(dr) = dropout {
        out = dr.apply(&out)?;
    }
    layer_norm(&(out + h)?, &l.out_ln, eps)
}

/// Pad per-sentence hidden states `(len_i, d)` into `(b, len, d)` with the additive attention
/// bias `(b, 1, 1, len)` and the pooling mask `(b, len, 1)`.
fn pad(items: &[&Tensor], d: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let len = items.iter().map(|t| t.dim(0).unwrap_or(0)).max().unwrap_or(1).max(1);
    let mut rows = Vec::with_capacity(items.len());
    let mut mask = Vec::with_capacity(items.len() * len);
    for t in items {
        let n = t.dim(0)?;
        rows.push(if n < len {
            Tensor::cat(&[*t, &Tensor::zeros((len - n, d), DType::F32, &Device::Cpu)?], 0)?
        } else {
            (*t).clone()
        });
        mask.extend(std::iter::repeat_n(1f32, n));
        mask.extend(std::iter::repeat_n(0f32, len - n));
    }
    let b = items.len();
    let x = Tensor::stack(&rows, 0)?;
    let m = Tensor::from_vec(mask, (b, len), &Device::Cpu)?;
    let bias = ((m.clone() - 1.0)? * 10_000.0)?.reshape((b, 1, 1, len))?;
    Ok((x, bias, m.reshape((b, len, 1))?))
}

#[derive(Clone, Copy)]
struct Shape {
    d: usize,
    heads: usize,
    eps: f64,
}

/// The trained layers over padded lower hidden states, pooled and normalised: `(b, d)`.
fn top(trained: &[Layer], items: &[&Tensor], s: Shape, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
    let (mut h, bias, mask) = pad(items, s.d)?;
    for l in trained {
        h = layer_forward(&h, l, &bias, s.heads, s.eps, dropout.as_deref_mut())?;
    }
    pooled_normalized(&h, &mask)
}

fn pooled_normalized(h: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let sum = h.broadcast_mul(mask)?.sum(1)?;
    let count = mask.sum(1)?;
    let mean = sum.broadcast_div(&count)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(mean.broadcast_div(&norm)?)
}

/// Fine-tune the top layers of the encoder in `base` on `examples` and write the result as a
/// sentence-transformers folder `out` (created; an existing `model.onnx` there is removed, as
/// it would not match the new weights).
///
/// # Errors
/// [`RouterError::Training`] for fewer than two intents or a bad layer count;
/// [`RouterError::BadModelDir`] for an unreadable folder; tensor and I/O failures.
pub fn fine_tune(
    base: &Path,
    encoder: &BertEncoder,
    examples: &[Example],
    opts: &FineTuneOptions,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<FineTuneReport> {
    let config_path = base.join("config.json");
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| RouterError::io(&config_path, e))?;
    let config: Config =
        serde_json::from_str(&config_text).map_err(|e| bad(base, format!("config.json is not a BERT config: {e}")))?;
    let layers = config.num_hidden_layers;
    if opts.layers == 0 || opts.layers > layers {
        return Err(RouterError::Training(format!("fine-tune layers must be 1..={layers}, got {}", opts.layers)));
    }
    if opts.epochs == 0 || opts.batch == 0 {
        return Err(RouterError::Training("fine-tuning needs at least one epoch and a batch of at least one".into()));
    }
    let mut labels: Vec<&str> = examples.iter().map(|e| e.intent.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    if labels.len() < 2 {
        return Err(RouterError::Training(format!("fine-tuning needs at least 2 intents, found {}", labels.len())));
    }
    let index: HashMap<&str, u32> = labels.iter().enumerate().map(|(i, l)| (*l, i as u32)).collect();
    let y: Vec<u32> = examples.iter().map(|e| index[e.intent.as_str()]).collect();
    let d = config.hidden_size;
    let heads = config.num_attention_heads;
    let eps = config.layer_norm_eps;
    let first_trained = layers - opts.layers;
    let weights = Weights::load(base)?;

    // 1. The frozen part, once per sentence.
    let started = Instant::now();
    let word = weights.get("embeddings.word_embeddings.weight")?;
    let position = weights.get("embeddings.position_embeddings.weight")?;
    let token_type = weights.get("embeddings.token_type_embeddings.weight")?;
    let emb_ln = (weights.get("embeddings.LayerNorm.weight")?, weights.get("embeddings.LayerNorm.bias")?);
    let frozen: Vec<Layer> = (0..first_trained).map(|i| weights.layer(i)).collect::<Result<_>>()?;
    let mut tokens = Vec::with_capacity(examples.len());
    for e in examples {
        tokens.push(encoder.tokenize(&e.text)?.0);
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| tokens[i].len());
    let mut lower: Vec<Option<Tensor>> = vec![None; examples.len()];
    let type0 = token_type.get(0)?;
    for (n, chunk) in order.chunks(16).enumerate() {
        let len = chunk.iter().map(|&i| tokens[i].len()).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(chunk.len() * len);
        let mut mask = Vec::with_capacity(chunk.len() * len);
        for &i in chunk {
            let t = &tokens[i];
            ids.extend_from_slice(t);
            ids.extend(std::iter::repeat_n(0u32, len - t.len()));
            mask.extend(std::iter::repeat_n(1f32, t.len()));
            mask.extend(std::iter::repeat_n(0f32, len - t.len()));
        }
        let b = chunk.len();
        let ids = Tensor::from_vec(ids, b * len, &Device::Cpu)?;
        let x = word.index_select(&ids, 0)?.reshape((b, len, d))?;
        let x = x.broadcast_add(&position.narrow(0, 0, len)?)?.broadcast_add(&type0)?;
        let mut h = layer_norm(&x, &emb_ln, eps)?;
        let m = Tensor::from_vec(mask, (b, len), &Device::Cpu)?;
        let bias = ((m - 1.0)? * 10_000.0)?.reshape((b, 1, 1, len))?;
        for l in &frozen {
            h = layer_forward(&h, l, &bias, heads, eps, None)?;
        }
        for (j, &i) in chunk.iter().enumerate() {
            lower[i] = Some(h.get(j)?.narrow(0, 0, tokens[i].len())?.contiguous()?);
        }
        if n % 100 == 99 {
            progress(&format!("frozen layers: {} of {} sentences", (n + 1) * 16, examples.len()));
        }
    }
    let lower: Vec<Tensor> = lower.into_iter().map(|t| t.expect("every sentence ran")).collect();
    let frozen_seconds = started.elapsed().as_secs_f64();

    // 2. Trainable copies of the top layers; class matrix from the current class means.
    let mut vars: Vec<(String, Var)> = Vec::new();
    let mut trained: Vec<Layer> = Vec::new();
    for i in first_trained..layers {
        let names = layer_names(i);
        let mut pairs = Vec::new();
        for (w, b) in &names {
            let wv = Var::from_tensor(&weights.get(w)?)?;
            let bv = Var::from_tensor(&weights.get(b)?)?;
            pairs.push((wv.as_tensor().clone(), bv.as_tensor().clone()));
            vars.push((w.clone(), wv));
            vars.push((b.clone(), bv));
        }
        let mut it = pairs.into_iter();
        let mut next = || it.next().expect("eight pairs");
        trained.push(Layer {
            q: next(),
            k: next(),
            v: next(),
            attn_out: next(),
            attn_ln: next(),
            inter: next(),
            out: next(),
            out_ln: next(),
        });
    }
    let shape = Shape { d, heads, eps };
    let mut sums = vec![vec![0f32; d]; labels.len()];
    let checked = examples.len().min(AGREEMENT_SAMPLE);
    let mut initial = vec![Vec::new(); checked];
    for chunk in order.chunks(64) {
        let items: Vec<&Tensor> = chunk.iter().map(|&i| &lower[i]).collect();
        let e = top(&trained, &items, shape, None)?.to_vec2::<f32>()?;
        for (row, &i) in e.iter().zip(chunk) {
            for (s, v) in sums[y[i] as usize].iter_mut().zip(row) {
                *s += v;
            }
            if i < checked {
                initial[i].clone_from(row);
            }
        }
    }
    // This forward pass must be the encoder's function before training changes it.
    let sample: Vec<&str> = examples[..checked].iter().map(|e| e.text.as_str()).collect();
    let reference = encoder.encode(&sample)?.vectors;
    let initial_agreement = initial
        .iter()
        .zip(&reference)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>())
        .fold(1.0f64, f64::min);
    if initial_agreement < 0.999 {
        return Err(RouterError::Inference(format!(
            "the fine-tuning forward pass disagrees with the encoder (cosine {initial_agreement:.5})"
        )));
    }
    let init: Vec<f32> = sums.into_iter().flatten().collect();
    let class_var = Var::from_tensor(&Tensor::from_vec(init, (labels.len(), d), &Device::Cpu)?)?;

    // 3. Training.
    let steps_per_epoch = examples.len().div_ceil(opts.batch);
    let total = steps_per_epoch * opts.epochs;
    let warmup = (total / 10).max(1);
    // Weight decay on the projection matrices only, as in BERT's own recipe: biases and layer
    // norm parameters are not pulled towards zero.
    let (decayed, kept): (Vec<_>, Vec<_>) = vars.iter().partition(|(name, _)| decays(name));
    let mut enc_opt = AdamW::new(
        decayed.into_iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW { lr: opts.learning_rate, weight_decay: opts.weight_decay, ..ParamsAdamW::default() },
    )?;
    let mut enc_kept_opt = AdamW::new(
        kept.into_iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW { lr: opts.learning_rate, weight_decay: 0.0, ..ParamsAdamW::default() },
    )?;
    let mut class_opt = AdamW::new(
        vec![class_var.clone()],
        ParamsAdamW { lr: opts.class_learning_rate, weight_decay: 0.0, ..ParamsAdamW::default() },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut dropout = Dropout { p: opts.dropout, rng: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed) };
    let train_started = Instant::now();
    let mut idx: Vec<usize> = (0..examples.len()).collect();
    let mut step = 0usize;
    let mut epoch_loss = Vec::new();
    for epoch in 0..opts.epochs {
        idx.shuffle(&mut rng);
        let mut loss_sum = 0f64;
        for batch in idx.chunks(opts.batch) {
            let lr_factor = if step < warmup {
                (step + 1) as f64 / warmup as f64
            } else {
                ((total - step) as f64 / (total - warmup).max(1) as f64).max(0.0)
            };
            enc_opt.set_learning_rate(opts.learning_rate * lr_factor);
            enc_kept_opt.set_learning_rate(opts.learning_rate * lr_factor);
            class_opt.set_learning_rate(opts.class_learning_rate * lr_factor);
            let items: Vec<&Tensor> = batch.iter().map(|&i| &lower[i]).collect();
            let e = top(&trained, &items, shape, Some(&mut dropout))?;
            let w = class_var.as_tensor();
            let wn = w.broadcast_div(&w.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?)?;
            let logits = (e.matmul(&wn.t()?)? * opts.scale)?;
            let target =
                Tensor::from_vec(batch.iter().map(|&i| y[i]).collect::<Vec<u32>>(), batch.len(), &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
            let grads = loss.backward()?;
            enc_opt.step(&grads)?;
            enc_kept_opt.step(&grads)?;
            class_opt.step(&grads)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * batch.len() as f64;
            step += 1;
        }
        let mean = loss_sum / examples.len() as f64;
        progress(&format!(
            "fine-tuning epoch {} of {}: loss {mean:.4} ({:.0}s)",
            epoch + 1,
            opts.epochs,
            train_started.elapsed().as_secs_f64()
        ));
        epoch_loss.push(mean);
    }
    let train_seconds = train_started.elapsed().as_secs_f64();

    // 4. The new folder, and its record.
    write_folder(base, out, &weights, &vars)?;
    let report = FineTuneReport {
        options: Some(*opts),
        examples: examples.len(),
        steps: step,
        epoch_loss,
        initial_agreement,
        frozen_seconds,
        train_seconds,
    };
    let record = FineTuneRecord {
        base: encoder.info().clone(),
        weights_sha256: sha256_file(&out.join("model.safetensors"))?,
        report: report.clone(),
    };
    let path = out.join(FINE_TUNE_FILE);
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| RouterError::json(&path, e))?;
    std::fs::write(&path, bytes).map_err(|e| RouterError::io(&path, e))?;
    Ok(report)
}

/// The record a fine-tuned folder carries: which encoder it came from, the sha256 of its
/// weights (checked when it is loaded) and how it was trained.
pub const FINE_TUNE_FILE: &str = "fine_tune.json";

/// Contents of [`FINE_TUNE_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneRecord {
    /// The encoder that was fine-tuned.
    pub base: EncoderInfo,
    /// sha256 of the folder's `model.safetensors`.
    pub weights_sha256: String,
    /// The run.
    pub report: FineTuneReport,
}

impl FineTuneRecord {
    /// Read the record of a folder; `Ok(None)` when it has none.
    ///
    /// # Errors
    /// I/O failures and a malformed record.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        crate::fetch::read_json_if_present(&dir.join(FINE_TUNE_FILE))
    }
}

/// Files of a model folder that are not copied into a fine-tuned one (they describe the
/// original weights).
const NOT_COPIED: [&str; 5] = ["model.safetensors", "model.onnx", "onnx.json", "pytorch_model.bin", FINE_TUNE_FILE];

fn write_folder(base: &Path, out: &Path, weights: &Weights, trained: &[(String, Var)]) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| RouterError::io(out, e))?;
    for name in ["model.onnx", "onnx.json"] {
        let p = out.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| RouterError::io(&p, e))?;
        }
    }
    copy_small_files(base, out)?;
    let mut tensors = weights.tensors.clone();
    for (name, var) in trained {
        let key = weights.stored.get(name).cloned().unwrap_or_else(|| name.clone());
        tensors.insert(key, var.as_tensor().detach());
    }
    let path = out.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    Ok(())
}

/// Copy the configuration and tokenizer files (and sub-folders such as `1_Pooling`).
fn copy_small_files(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| RouterError::io(from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| RouterError::io(from, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let src = entry.path();
        if NOT_COPIED.contains(&name.as_str()) || name.starts_with('.') || name.ends_with(".partial") {
            continue;
        }
        let dst = to.join(&name);
        if src.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| RouterError::io(&dst, e))?;
            copy_small_files(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| RouterError::io(&dst, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{decays, layer_names};

    #[test]
    fn weight_decay_spares_biases_and_layer_norms() {
        let decayed: Vec<String> = layer_names(5).into_iter().flat_map(|(w, b)| [w, b]).filter(|n| decays(n)).collect();
        assert_eq!(
            decayed,
            [
                "encoder.layer.5.attention.self.query.weight",
                "encoder.layer.5.attention.self.key.weight",
                "encoder.layer.5.attention.self.value.weight",
                "encoder.layer.5.attention.output.dense.weight",
                "encoder.layer.5.intermediate.dense.weight",
                "encoder.layer.5.output.dense.weight",
            ]
        );
    }
}
