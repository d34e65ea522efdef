//! `switchboard router train|eval|predict|split`: the router's life cycle from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use switchboard_router::artifact::ENCODER_DIR;
use switchboard_router::data::{self, DataFormat};
use switchboard_router::encoder::{BertEncoder, EmbeddingCache, EncoderBackend, EncoderOptions};
use switchboard_router::fetch::{self, resolve_model_dir};
use switchboard_router::finetune::{FineTuneOptions, fine_tune};
use switchboard_router::head::LogRegConfig;
use switchboard_router::rules::{RuleSpec, Rules};
use switchboard_router::train::{TrainOptions, fit_part, train};
use switchboard_router::{Router, eval};

/// Router subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RouterCmd {
    /// Train a router and write its artifact directory.
    Train(TrainArgs),
    /// Evaluate a trained router on labelled data.
    Eval(EvalArgs),
    /// Route one text and print the decision with its reasons.
    Predict(PredictArgs),
    /// Write a seeded stratified split of labelled data (for dev sets).
    Split(SplitArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Training data.
    #[arg(long)]
    data: PathBuf,
    /// `banking77` (CSV text,category) or `jsonl` ({"text","intent"}); guessed from the extension.
    #[arg(long)]
    format: Option<DataFormat>,
    /// Validation data for calibration and thresholds (default: a held-out part of --data).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Label of out-of-scope examples.
    #[arg(long, default_value = "oos")]
    oos_label: String,
    /// Output artifact directory.
    #[arg(long)]
    out: PathBuf,
    /// Sentence-transformers model folder (default: SWITCHBOARD_MODEL_DIR, then the cache). A
    /// folder given here is recorded in the artifact, where `eval` and `predict` look for it.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Use the lexical encoder only.
    #[arg(long)]
    lexical_only: bool,
    /// Engine of the sentence encoder: `ort` (ONNX Runtime, the default) or `candle`
    /// (default: SWITCHBOARD_ENCODER_BACKEND, else ort).
    #[arg(long)]
    backend: Option<EncoderBackend>,
    /// Seed for splits and subsampling.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Keep at most N examples per intent (few-shot experiments).
    #[arg(long)]
    max_per_intent: Option<usize>,
    /// L2 penalty of the logistic regression.
    #[arg(long, default_value_t = 1e-5)]
    l2: f32,
    /// L-BFGS iteration cap.
    #[arg(long, default_value_t = 300)]
    max_iter: usize,
    /// Fraction of in-scope held-out items the out-of-scope threshold may reject.
    #[arg(long, default_value_t = 0.02)]
    target_rejection: f32,
    /// Clarify when the top two probabilities are closer than this.
    #[arg(long, default_value_t = 0.0)]
    clarify_margin: f32,
    /// Do not keep the training sentences' embeddings: no neighbour vote, and the
    /// out-of-scope test is on the top probability alone.
    #[arg(long)]
    no_neighbours: bool,
    /// Weight of the similarity to the nearest in-scope examples in the out-of-scope score.
    #[arg(long, default_value_t = switchboard_router::train::NEIGHBOUR_OOS_WEIGHT)]
    neighbour_oos_weight: f32,
    /// Lexical block width (0 disables it next to the sentence encoder).
    #[arg(long, default_value_t = 4096)]
    lexical_dim: usize,
    /// Weight of the lexical block.
    #[arg(long, default_value_t = 1.0)]
    lexical_weight: f32,
    /// Ship the built-in compliance rules (fraud, stolen card, account takeover, recovery phrase).
    #[arg(long)]
    compliance_rules: bool,
    /// Keep sentence embeddings in this file between training runs (experiments).
    #[arg(long)]
    embed_cache: Option<PathBuf>,
    /// Ship rules from a JSON file: `[{"intent": "...", "patterns": ["regex", ...]}]`.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Fine-tune the sentence encoder's top layers on the training data first (the part the
    /// head is fitted on; the calibration part stays unseen). The new encoder is written to
    /// OUT/encoder, exported for ONNX Runtime when it is installed, and used by the artifact.
    #[arg(long)]
    fine_tune: bool,
    /// Top transformer layers trained by --fine-tune.
    #[arg(long, default_value_t = 2)]
    fine_tune_layers: usize,
    /// Passes over the data of --fine-tune.
    #[arg(long, default_value_t = 2)]
    fine_tune_epochs: usize,
    /// Peak learning rate of --fine-tune.
    #[arg(long, default_value_t = 1e-4)]
    fine_tune_lr: f64,
    /// Python interpreter that runs the ONNX exporter for a fine-tuned encoder.
    #[arg(long, default_value = "python3")]
    python: String,
}

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Artifact directory.
    #[arg(long)]
    model: PathBuf,
    /// Labelled data.
    #[arg(long)]
    data: PathBuf,
    /// Data format (guessed from the extension).
    #[arg(long)]
    format: Option<DataFormat>,
    /// Gold label of out-of-scope items.
    #[arg(long, default_value = "oos")]
    oos_label: String,
    /// Sentence-transformers model folder (default: the artifact's own encoder, else the folder
    /// recorded at training, else SWITCHBOARD_MODEL_DIR, else the models cache).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report (per-intent F1, confusions, reliability diagram,
    /// out-of-scope trade-off, latency) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct PredictArgs {
    /// Artifact directory.
    #[arg(long)]
    model: PathBuf,
    /// Sentence-transformers model folder (default: the artifact's own encoder, else the folder
    /// recorded at training, else SWITCHBOARD_MODEL_DIR, else the models cache).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// The text to route.
    text: std::ffi::OsString,
}

#[derive(Debug, Args)]
pub(crate) struct SplitArgs {
    /// Labelled data.
    #[arg(long)]
    data: PathBuf,
    /// Data format (guessed from the extension).
    #[arg(long)]
    format: Option<DataFormat>,
    /// Fraction of each intent that goes to the dev part.
    #[arg(long, default_value_t = 0.1)]
    fraction: f32,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the remaining training part goes.
    #[arg(long)]
    train_out: PathBuf,
    /// Where the dev part goes.
    #[arg(long)]
    dev_out: PathBuf,
}

pub(crate) fn run(cmd: RouterCmd) -> anyhow::Result<()> {
    match cmd {
        RouterCmd::Train(a) => train_cmd(a),
        RouterCmd::Eval(a) => eval_cmd(a),
        RouterCmd::Predict(a) => predict_cmd(a),
        RouterCmd::Split(a) => split_cmd(a),
    }
}

fn fmt_of(format: Option<DataFormat>, path: &Path) -> DataFormat {
    format.unwrap_or_else(|| DataFormat::from_path(path))
}

/// The sentence encoder, or `None` with a warning when there is none to be had.
fn load_encoder(
    model_dir: Option<&Path>,
    lexical_only: bool,
    backend: Option<EncoderBackend>,
) -> anyhow::Result<Option<Arc<BertEncoder>>> {
    if lexical_only {
        return Ok(None);
    }
    match resolve_model_dir(model_dir) {
        Some(loc) => {
            let mut options = EncoderOptions::from_env();
            if let Some(b) = backend {
                options.backend = b;
            }
            let enc = BertEncoder::load_with(&loc.dir, loc.pinned, &options)
                .with_context(|| format!("loading the sentence encoder from {}", loc.dir.display()))?;
            Ok(Some(Arc::new(enc)))
        }
        None => {
            tracing::warn!(
                "no sentence encoder found (run `switchboard models fetch`); using the lexical encoder only"
            );
            eprintln!(
                "warning: no sentence encoder found (run `switchboard models fetch`); training on lexical features only"
            );
            Ok(None)
        }
    }
}

fn train_cmd(a: TrainArgs) -> anyhow::Result<()> {
    let mut examples = data::load(&a.data, fmt_of(a.format, &a.data))?;
    if let Some(n) = a.max_per_intent {
        examples = data::cap_per_intent(&examples, n, a.seed);
    }
    let val = match &a.val {
        Some(p) => Some(data::load(p, fmt_of(a.format, p))?),
        None => None,
    };
    let mut rules: Vec<RuleSpec> = Vec::new();
    if a.compliance_rules {
        rules.extend(Rules::compliance_defaults());
    }
    if let Some(p) = &a.rules {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let more: Vec<RuleSpec> = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        rules.extend(more);
    }
    Rules::new(rules.clone())?;
    let mut bert = load_encoder(a.model_dir.as_deref(), a.lexical_only, a.backend)?;
    let mut opts = TrainOptions {
        oos_label: Some(a.oos_label.clone()),
        seed: a.seed,
        target_rejection: a.target_rejection,
        clarify_margin: a.clarify_margin,
        head: LogRegConfig { l2: a.l2, max_iter: a.max_iter },
        lexical_dim: a.lexical_dim,
        lexical_weight: a.lexical_weight,
        rules,
        neighbours: !a.no_neighbours,
        neighbour_oos_weight: a.neighbour_oos_weight,
        ..TrainOptions::default()
    };
    let mut fine_tune_report = None;
    if a.fine_tune {
        let (Some(base), Some(loc)) = (&bert, resolve_model_dir(a.model_dir.as_deref())) else {
            bail!("--fine-tune needs the sentence encoder (run `switchboard models fetch` or pass --model-dir)");
        };
        let ft = FineTuneOptions {
            layers: a.fine_tune_layers,
            epochs: a.fine_tune_epochs,
            learning_rate: a.fine_tune_lr,
            seed: a.seed,
            ..FineTuneOptions::default()
        };
        let fit = fit_part(&examples, val.as_deref(), &opts);
        let out = a.out.join(ENCODER_DIR);
        let mut progress = |m: &str| eprintln!("router train: {m}");
        let report = fine_tune(&loc.dir, base, &fit, &ft, &out, &mut progress)?;
        export_fine_tuned(&out, &a.python, &mut progress);
        let mut options = EncoderOptions::from_env();
        if let Some(b) = a.backend {
            options.backend = b;
        }
        bert = Some(Arc::new(
            BertEncoder::load_with(&out, false, &options)
                .with_context(|| format!("loading the fine-tuned encoder from {}", out.display()))?,
        ));
        fine_tune_report = Some(report);
    }
    let cache = match (&a.embed_cache, &bert) {
        (Some(p), Some(b)) => Some(Arc::new(EmbeddingCache::open(p, &b.info().hash))),
        _ => None,
    };
    opts.embedding_cache = cache.clone();
    let mut artifact = train(&examples, val.as_deref(), bert.clone(), &opts)?;
    if !a.fine_tune
        && let (Some(_), Some(given)) = (&bert, &a.model_dir)
    {
        // Recorded so that `router eval` and `router predict` find this encoder without
        // `--model-dir` (absolute, so the artifact can be used from another directory).
        artifact.manifest.encoder_dir = Some(std::path::absolute(given).unwrap_or_else(|_| given.clone()));
    }
    if let Some(r) = fine_tune_report {
        artifact.manifest.metrics.fine_tune_seconds = r.frozen_seconds + r.train_seconds;
        artifact.manifest.metrics.train_seconds += artifact.manifest.metrics.fine_tune_seconds;
    }
    artifact.save(&a.out)?;
    if let (Some(p), Some(c), Some(b)) = (&a.embed_cache, &cache, &bert) {
        c.save(p, &b.info().hash)?;
    }
    println!("{}", serde_json::to_string_pretty(&artifact.manifest.metrics)?);
    eprintln!(
        "trained {} intents on {} examples in {:.1}s (encoder engine: {}); artifact: {}",
        artifact.manifest.labels.len(),
        artifact.manifest.metrics.n_train,
        artifact.manifest.metrics.train_seconds,
        bert.as_ref().map_or("none", |b| b.backend().as_str()),
        a.out.display()
    );
    Ok(())
}

/// Export a fine-tuned encoder for ONNX Runtime when the runtime is installed; without it (or
/// when the export fails) the encoder runs on candle, with a warning.
fn export_fine_tuned(dir: &Path, python: &str, progress: &mut dyn FnMut(&str)) {
    let Some(cache) = fetch::models_cache_dir() else {
        eprintln!("warning: no models cache; the fine-tuned encoder will run on candle");
        return;
    };
    let Some(lib) = fetch::resolve_ort_library() else {
        eprintln!(
            "warning: ONNX Runtime is not installed (`switchboard models fetch`); the fine-tuned encoder will run on candle"
        );
        return;
    };
    if let Err(e) = fetch::export_onnx(&cache, python, dir, Some(&lib.path), progress) {
        eprintln!("warning: exporting the fine-tuned encoder failed ({e}); it will run on candle");
    }
}

fn eval_cmd(a: EvalArgs) -> anyhow::Result<()> {
    let router = Router::load(&a.model, a.model_dir.as_deref())?;
    let examples = data::load(&a.data, fmt_of(a.format, &a.data))?;
    let evaluation = eval::evaluate_items(&router, &examples, &a.oos_label)?;
    if let Some(path) = &a.html {
        let title = format!("Intent evaluation: {} on {}", a.model.display(), a.data.display());
        std::fs::write(path, switchboard_router::report::html(&evaluation, &title))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let report = evaluation.report;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn predict_cmd(a: PredictArgs) -> anyhow::Result<()> {
    let router = Router::load(&a.model, a.model_dir.as_deref())?;
    let decision = match a.text.to_str() {
        Some(t) => router.route(t)?,
        None => router.route_bytes(a.text.as_encoded_bytes())?,
    };
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(())
}

fn split_cmd(a: SplitArgs) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&a.fraction) {
        bail!("--fraction must be in [0, 1)");
    }
    let format = fmt_of(a.format, &a.data);
    let examples = data::load(&a.data, format)?;
    let (train, dev) = data::stratified_split(&examples, a.fraction, a.seed);
    data::save(&a.train_out, format, &train)?;
    data::save(&a.dev_out, format, &dev)?;
    eprintln!("split {} examples: {} train, {} dev", examples.len(), train.len(), dev.len());
    Ok(())
}
