//! `switchboard bench router --json`: sentence-encoder speed, to set beside PyTorch's.
//!
//! `--backend ort|candle` picks the engine (default: `SWITCHBOARD_ENCODER_BACKEND`, else ort).
//! Threads: ONNX Runtime uses `--threads` intra-op threads; candle follows `RAYON_NUM_THREADS`,
//! so run with `RAYON_NUM_THREADS=1` for its one-thread figures (the run refuses an explicit
//! `--threads` that candle would not honour). The report says which engine ran and with how many threads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use switchboard_router::data::{self, DataFormat};
use switchboard_router::encoder::bert::default_threads;
use switchboard_router::encoder::{BertEncoder, EncoderBackend, EncoderOptions};
use switchboard_router::eval::percentile;
use switchboard_router::fetch::{ONNXRUNTIME_VERSION, resolve_model_dir};

/// Benchmark settings.
#[derive(Debug, Args)]
pub(crate) struct BenchRouterArgs {
    /// Sentences to encode: labelled data (texts are used); default: a built-in list.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Data format (guessed from the extension).
    #[arg(long)]
    format: Option<DataFormat>,
    /// Number of sentences to use.
    #[arg(long, default_value_t = 256)]
    n: usize,
    /// Sentences per forward pass in the throughput run (all sentences are handed over in one
    /// call and sorted by length, as sentence-transformers does).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Throughput passes over all the sentences; the report gives their median (and the best),
    /// so that one pass slowed by another job on a shared machine does not decide the figure.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Sentence-transformers model folder.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Engine: `ort` (ONNX Runtime) or `candle` (default: SWITCHBOARD_ENCODER_BACKEND, else ort).
    /// No fallback here: a missing ONNX Runtime is an error.
    #[arg(long)]
    backend: Option<EncoderBackend>,
    /// Threads of the engine (default: SWITCHBOARD_ENCODER_THREADS, else RAYON_NUM_THREADS,
    /// else the cores available).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

const BUILT_IN: &[&str] = &[
    "My card was stolen yesterday, please block it",
    "How do I top up my account with Apple Pay?",
    "why is my transfer still pending",
    "What is the exchange rate for EUR to GBP?",
    "Can I get a refund for a card payment that I didn't make?",
    "The ATM swallowed my card, what now?",
    "How long does a SEPA transfer take to arrive?",
    "I need to verify my identity but the app keeps rejecting my passport photo",
];

pub(crate) fn run(a: BenchRouterArgs) -> anyhow::Result<()> {
    let loc = resolve_model_dir(a.model_dir.as_deref())
        .context("no sentence encoder found: run `switchboard models fetch` or pass --model-dir")?;
    let mut options = EncoderOptions::from_env();
    if let Some(b) = a.backend {
        options.backend = b;
    }
    options.threads = a.threads.unwrap_or_else(default_threads).max(1);
    options.fallback = false;
    let enc = Arc::new(BertEncoder::load_with(&loc.dir, loc.pinned, &options)?);
    if a.threads.is_some() && enc.threads() != options.threads {
        bail!(
            "the {} engine would run on {} threads, not {}: set RAYON_NUM_THREADS={}",
            enc.backend(),
            enc.threads(),
            options.threads,
            options.threads
        );
    }
    let texts: Vec<String> = match &a.data {
        Some(p) => data::load(p, a.format.unwrap_or_else(|| DataFormat::from_path(p)))?
            .into_iter()
            .map(|e| e.text)
            .take(a.n)
            .collect(),
        None => BUILT_IN.iter().cycle().take(a.n).map(|s| (*s).to_owned()).collect(),
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // Warm-up.
    enc.encode(&refs[..refs.len().min(8)])?;
    let mut lat = Vec::with_capacity(refs.len());
    for t in &refs {
        let s = Instant::now();
        enc.encode(&[t])?;
        lat.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    // All sentences in one call, `--batch` per forward pass: what the Python side's
    // `model.encode(texts, batch_size=…)` does.
    let mut rates = Vec::with_capacity(a.repeat.max(1));
    for _ in 0..a.repeat.max(1) {
        let s = Instant::now();
        enc.encode_batched(&refs, a.batch)?;
        rates.push(refs.len() as f64 / s.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let work = BatchWork::of(&enc, &refs, a.batch, &loc.dir)?;
    let median_rate = percentile(&rates, 0.5);
    let pass_seconds = refs.len() as f64 / median_rate;
    let report = serde_json::json!({
        "engine": match enc.backend() {
            EncoderBackend::Candle => "candle".to_owned(),
            EncoderBackend::Ort => format!("onnxruntime {ONNXRUNTIME_VERSION} (ort)"),
        },
        "backend": enc.backend(),
        "model": enc.info().id,
        "onnx_sha256": enc.onnx_sha256(),
        "threads": enc.threads(),
        "n": refs.len(),
        "single_ms": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99)},
        "batch_size": a.batch,
        "batch_repeat": rates.len(),
        "batch_sentences_per_s": median_rate,
        "batch_sentences_per_s_best": rates.last(),
        "batch_tokens": work.tokens,
        "batch_padded_tokens": work.padded_tokens,
        "batch_gflop": work.flop / 1e9,
        "batch_gflop_per_s": work.flop / 1e9 / pass_seconds,
        "cpu": cpu_name(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// The arithmetic of one throughput pass: the batches [`BertEncoder::encode_batched`] runs
/// ([`BertEncoder::plan_batches`]), and the floating-point operations of the transformer's
/// matrix products over their padded shapes.
struct BatchWork {
    tokens: usize,
    padded_tokens: usize,
    flop: f64,
}

impl BatchWork {
    fn of(enc: &BertEncoder, texts: &[&str], batch: usize, model_dir: &std::path::Path) -> anyhow::Result<Self> {
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(model_dir.join("config.json")).context("reading the model's config.json")?,
        )?;
        let dim = |k: &str| config[k].as_u64().map(|v| v as f64).with_context(|| format!("config.json has no {k}"));
        let (hidden, inter, layers) = (dim("hidden_size")?, dim("intermediate_size")?, dim("num_hidden_layers")?);
        let plan = enc.plan_batches(texts, batch)?;
        let mut work = Self { tokens: plan.tokenized.iter().map(|t| t.0.len()).sum(), padded_tokens: 0, flop: 0.0 };
        for chunk in &plan.batches {
            let len = plan.padded_len(chunk);
            work.padded_tokens += chunk.len() * len;
            work.flop += chunk.len() as f64 * forward_flop(len as f64, hidden, inter, layers);
        }
        Ok(work)
    }
}

/// Multiply-adds (×2) of one sequence of `len` tokens through a BERT encoder: per layer the
/// Q, K, V and output projections (4·len·h²), the feed-forward pair (2·len·h·i) and the
/// attention scores and weighted sum (2·len²·h). Embeddings, layer norms, softmax and GELU are
/// left out (under 1% here).
fn forward_flop(len: f64, hidden: f64, inter: f64, layers: f64) -> f64 {
    2.0 * layers * (4.0 * len * hidden * hidden + 2.0 * len * hidden * inter + 2.0 * len * len * hidden)
}

/// The CPU's model name (Linux), so that figures from different machines are told apart.
fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let field = |key: &str| {
        info.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned())
    };
    let name = field("model name")?;
    Some(match (field("cpu family"), field("model\t")) {
        (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
        _ => name,
    })
}

#[cfg(test)]
mod tests {
    use super::forward_flop;

    #[test]
    fn forward_flop_counts_the_matrix_products() {
        // One layer, hidden 2, intermediate 4, three tokens: projections 4·3·4 = 48, feed-forward
        // 2·3·2·4 = 48, attention 2·9·2 = 36 multiply-adds; twice that in operations.
        assert_eq!(forward_flop(3.0, 2.0, 4.0, 1.0), 264.0);
        // MiniLM-L6 (h 384, i 1536, 6 layers) at 16 tokens: about 0.34 GFLOP.
        let f = forward_flop(16.0, 384.0, 1536.0, 6.0);
        assert!((f / 1e9 - 0.3421).abs() < 1e-3, "{f}");
    }
}
