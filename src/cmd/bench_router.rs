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
        "batch_sentences_per_s": percentile(&rates, 0.5),
        "batch_sentences_per_s_best": rates.last(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
