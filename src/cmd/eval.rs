//! `switchboard eval`: evaluation of assistants. `eval scenarios` runs scenario files (multi-turn
//! conversations with expectations per turn) in process or against a running server and reports
//! the results as text, JSON lines, JUnit XML and a self-contained HTML page.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use switchboard_assistant::{AssistantOptions, ExchangeAssistant};
use switchboard_eval::{InProcess, Remote, RunReport, Scenario, html, report, run_all};

/// `switchboard eval ...`
#[derive(Debug, Subcommand)]
pub(crate) enum EvalCmd {
    /// Run scenario files (each PATH a `.yaml` file or a directory of them) against the reference
    /// assistant in process, or against a running server with --url. Exits non-zero when any
    /// scenario fails.
    Scenarios(ScenariosArgs),
}

/// Options of `switchboard eval scenarios`.
#[derive(Debug, Args)]
pub(crate) struct ScenariosArgs {
    /// Scenario files or directories of `.yaml` files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Base URL of a running `switchboard serve` (default: run the assistant in this process).
    #[arg(long)]
    url: Option<String>,
    /// API key for --url (needs the chat and desk scopes; the admin key has both).
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print one JSON object per scenario, then `{"scenarios":N,"passed":P,"failed":F}` last.
    #[arg(long)]
    json: bool,
    /// Write JUnit XML to this file.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML report to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Where assistants live (in-process mode).
    #[arg(long, env = "SWITCHBOARD_ASSISTANTS_DIR", default_value = "assistants")]
    assistants_dir: PathBuf,
    /// Data directory (router cache when no user cache directory is known).
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Router of the in-process assistant: `auto` uses the sentence encoder when its model is
    /// installed (as `serve` and `chat` do) and the lexical router otherwise; `sentence-encoder`
    /// fails when the model is missing (`switchboard models fetch`); `lexical` never uses it.
    #[arg(long, value_enum, default_value_t = RouterChoice::Auto)]
    router: RouterChoice,
    /// Same as `--router lexical`.
    #[arg(long, conflicts_with = "router")]
    lexical: bool,
}

/// Which router the in-process assistant uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RouterChoice {
    Auto,
    SentenceEncoder,
    Lexical,
}

pub(crate) fn run(cmd: EvalCmd) -> anyhow::Result<()> {
    match cmd {
        EvalCmd::Scenarios(a) => scenarios(a),
    }
}

fn scenarios(a: ScenariosArgs) -> anyhow::Result<()> {
    let scenarios = switchboard_eval::load_paths(&a.paths)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let json = a.json;
    let progress = |s: &switchboard_eval::ScenarioOutcome| {
        if !json {
            println!("{}", report::scenario_line(s));
            let _ = std::io::stdout().flush();
        }
    };
    let report = match &a.url {
        Some(url) => {
            let driver = Remote::new(url, a.api_key.clone())?;
            rt.block_on(run_all(&driver, &scenarios, url, progress))
        }
        None => {
            let (driver, target) = in_process(&a, &scenarios)?;
            rt.block_on(run_all(&driver, &scenarios, &target, progress))
        }
    };
    write_reports(&a, &report)?;
    let sum = report.summary();
    if sum.failed > 0 {
        // A failed scenario is a result, not an error of the command: no error chain or backtrace.
        eprintln!("{} of {} scenarios failed", sum.failed, sum.scenarios);
        std::process::exit(1);
    }
    Ok(())
}

/// Builds every assistant the scenarios name, on a back end reseeded for each scenario.
fn in_process(a: &ScenariosArgs, scenarios: &[Scenario]) -> anyhow::Result<(InProcess, String)> {
    let mut driver = InProcess::new();
    let names: BTreeSet<&str> = scenarios.iter().map(|s| s.assistant.as_str()).collect();
    let mut routers = Vec::new();
    for name in names {
        let config = a.assistants_dir.join(name).join("assistant.toml");
        if !config.is_file() {
            bail!("assistant `{name}`: {} not found (see --assistants-dir)", config.display());
        }
        let lexical = a.lexical || a.router == RouterChoice::Lexical;
        let mut opts = AssistantOptions::new(super::serve::router_cache_dir(&a.data_dir));
        opts.sentence_encoder = !lexical;
        opts.backend = Some(driver.backend());
        let assistant =
            ExchangeAssistant::load(&config, opts).with_context(|| format!("loading assistant `{name}`"))?;
        let r = assistant.router();
        routers.push(format!(
            "{name}: {} router",
            if r.sentence_encoder { "sentence encoder + lexical" } else { "lexical" }
        ));
        if a.router == RouterChoice::SentenceEncoder && !r.sentence_encoder {
            bail!(
                "assistant `{name}`: --router sentence-encoder, but its model is not installed (run `switchboard models fetch`)"
            );
        }
        if !lexical && !r.sentence_encoder {
            eprintln!(
                "warning: {name}: no sentence encoder installed (run `switchboard models fetch`); routing lexically"
            );
        }
        driver.add(name, assistant);
    }
    Ok((driver, format!("in process ({})", routers.join("; "))))
}

fn write_reports(a: &ScenariosArgs, r: &RunReport) -> anyhow::Result<()> {
    if let Some(p) = &a.junit {
        std::fs::write(p, report::junit(r, "switchboard scenarios"))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &a.html {
        let title = format!("Scenario tests: {}", r.target);
        std::fs::write(p, html::html(r, &title)).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    let mut stdout = std::io::stdout().lock();
    if a.json {
        stdout.write_all(report::json_lines(r).as_bytes())?;
    } else {
        // The per-scenario lines were printed as each finished; now the failures and the counts.
        stdout.write_all(report::failures(r).as_bytes())?;
        writeln!(stdout, "\n{}", report::summary_line(r))?;
    }
    stdout.flush()?;
    Ok(())
}
