//! `switchboard bench router --json`: sentence-encoder speed, to set beside PyTorch's.
//!
//! Threads: candle follows `RAYON_NUM_THREADS`; run with `RAYON_NUM_THREADS=1` for the
//! one-thread figures. The report says how many threads it ran with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use switchboard_router::data::{self, DataFormat};
use switchboard_router::encoder::BertEncoder;
use switchboard_router::eval::percentile;
use switchboard_router::fetch::resolve_model_dir;

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
    /// Batch size of the throughput run.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Sentence-transformers model folder.
    #[arg(long)]
    model_dir: Option<PathBuf>,
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
    let enc = Arc::new(BertEncoder::load(&loc.dir, loc.pinned)?);
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
    let s = Instant::now();
    for chunk in refs.chunks(a.batch.max(1)) {
        enc.encode(chunk)?;
    }
    let batch_secs = s.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "engine": "candle",
        "model": enc.info().id,
        "threads": candle_core_threads(),
        "n": refs.len(),
        "single_ms": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99)},
        "batch_size": a.batch,
        "batch_sentences_per_s": refs.len() as f64 / batch_secs,
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn candle_core_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}
