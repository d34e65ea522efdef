//! `switchboard guard`: scan text for PII, secrets and prompt injection; train the lexical
//! injection model.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::io::{BufRead, Write};
use std::path::PathBuf;

use switchboard_guard::eval::{InjectionScore, Labels, PiiScore};
use switchboard_guard::injection::train::{self, TrainOptions};
use switchboard_guard::injection::{InjectionScorer, Source};
use switchboard_guard::{Detector, redact};

/// Guardrail tools.
#[derive(Debug, Args)]
pub(crate) struct GuardArgs {
    #[command(subcommand)]
    command: GuardCommand,
}

#[derive(Debug, Subcommand)]
enum GuardCommand {
    /// Detect PII / secrets and score prompt injection, one result per input line.
    Scan(ScanArgs),
    /// Train the lexical injection model and choose its threshold on a dev split.
    TrainInjection(TrainArgs),
}

#[derive(Debug, Args)]
struct ScanArgs {
    /// JSONL file (objects with a `text` field, or plain text lines); `-` for stdin.
    #[arg(long, conflicts_with = "text")]
    jsonl: Option<PathBuf>,
    /// Score inputs as tool / document output (indirect injection) rather than a user turn.
    #[arg(long)]
    tool_output: bool,
    /// Print JSON lines (the default prints a readable summary per input).
    #[arg(long)]
    json: bool,
    /// The text to scan (without it and without --jsonl, lines are read from stdin).
    text: Option<String>,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// Labelled corpus (JSONL with `text` and `label`).
    #[arg(long, default_value = "../shared/data/attacks/prompt_attacks_visible.jsonl")]
    data: PathBuf,
    /// Where to write the model.
    #[arg(long, default_value = "crates/guard/data/injection/lexical.bin")]
    out: PathBuf,
    /// Percent of rows held out as the dev split.
    #[arg(long, default_value_t = 20)]
    dev_percent: u64,
    /// Target false-positive rate on the dev split's benign rows.
    #[arg(long, default_value_t = 0.03)]
    target_fpr: f64,
    /// Train without the shipped augmentation rows (data/injection/augment.jsonl).
    #[arg(long)]
    no_augment: bool,
    /// Also report K-fold out-of-fold rates at the chosen threshold (0 = skip).
    #[arg(long, default_value_t = 0)]
    cv: u64,
}

pub(crate) fn run(args: GuardArgs) -> anyhow::Result<()> {
    match args.command {
        GuardCommand::Scan(a) => scan(a),
        GuardCommand::TrainInjection(a) => train_injection(a),
    }
}

#[derive(serde::Deserialize)]
struct Input {
    text: String,
    #[serde(flatten)]
    labels: Labels,
}

fn parse_line(line: &str) -> Input {
    if line.trim_start().starts_with('{')
        && let Ok(i) = serde_json::from_str::<Input>(line)
    {
        return i;
    }
    Input { text: line.to_owned(), labels: Labels::default() }
}

fn scan(a: ScanArgs) -> anyhow::Result<()> {
    let inputs: Box<dyn Iterator<Item = anyhow::Result<Input>>> = match (&a.jsonl, &a.text) {
        (_, Some(t)) => Box::new(std::iter::once(Ok(Input { text: t.clone(), labels: Labels::default() }))),
        (Some(p), None) if p.as_os_str() != "-" => {
            let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
            Box::new(lines(std::io::BufReader::new(f)))
        }
        _ => Box::new(lines(std::io::stdin().lock())),
    };
    let detector = Detector::default();
    let scorer = InjectionScorer::default();
    let mut pii = PiiScore::default();
    let mut pii_labelled = false;
    let mut inj = InjectionScore::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for input in inputs {
        let input = input?;
        let entities = detector.detect(&input.text);
        let redacted = redact::redact_numbered(&input.text, &entities);
        // Labelled indirect-injection rows (BIPIA e-mails) are document output by definition.
        let indirect = input.labels.category.as_deref().is_some_and(|c| c.starts_with("indirect"));
        let source = if a.tool_output || indirect { Source::ToolOutput } else { Source::User };
        let verdict = scorer.score(&input.text, source);
        if let Some(gold) = &input.labels.entities {
            pii_labelled = true;
            pii.add(gold, &input.labels.near_miss, &entities);
        }
        inj.add(&input.labels, verdict.flagged);
        if a.json {
            let line = serde_json::json!({
                "entities": entities.iter().map(|d| serde_json::json!({
                    "type": d.kind.name(),
                    "start": d.start,
                    "end": d.end,
                    "valid": d.valid,
                    "tier": d.tier,
                    "confidence": d.confidence,
                })).collect::<Vec<_>>(),
                "redacted": redacted,
                "injection": verdict,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{redacted}")?;
            for d in &entities {
                writeln!(
                    out,
                    "  {} [{}..{}] {} confidence {:.2}",
                    d.kind,
                    d.start,
                    d.end,
                    if d.valid { "valid" } else { "fail-safe" },
                    d.confidence
                )?;
            }
            writeln!(
                out,
                "  injection score {:.3}{} {}",
                verdict.score,
                if verdict.flagged { " FLAGGED" } else { "" },
                verdict.reasons.join(", ")
            )?;
        }
    }
    if pii_labelled || !inj.is_empty() {
        let mut summary = serde_json::Map::new();
        if pii_labelled {
            summary.insert("pii".into(), pii.summary());
        }
        if !inj.is_empty() {
            let mut j = inj.summary();
            j["threshold"] = serde_json::json!(scorer.threshold());
            summary.insert("injection".into(), j);
        }
        let s = serde_json::json!({ "summary": summary });
        if a.json {
            writeln!(out, "{s}")?;
        } else {
            writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn lines(r: impl BufRead) -> impl Iterator<Item = anyhow::Result<Input>> {
    r.lines().filter_map(|l| match l {
        Ok(l) if l.trim().is_empty() => None,
        Ok(l) => Some(Ok(parse_line(&l))),
        Err(e) => Some(Err(e.into())),
    })
}

fn train_injection(a: TrainArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.data).with_context(|| format!("read {}", a.data.display()))?;
    let rows = train::parse_rows(&text)?;
    let mut opts = TrainOptions { dev_percent: a.dev_percent, target_fpr: a.target_fpr, ..TrainOptions::default() };
    if a.no_augment {
        opts.extra.clear();
    }
    let (model, report) = train::train_injection(&rows, &opts);
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, model.to_bytes()).with_context(|| format!("write {}", a.out.display()))?;
    let mut summary = serde_json::json!({
        "model": a.out.display().to_string(),
        "n_train": report.n_train,
        "n_dev": report.n_dev,
        "threshold": report.threshold,
        "dev": report.dev.summary(),
        "all_visible": report.all.summary(),
    });
    if a.cv > 0 {
        let cv = train::cross_validate(&rows, a.cv, report.threshold, &opts);
        summary["cross_validated"] = cv.summary();
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
