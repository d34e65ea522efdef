//! `switchboard eval`: evaluation of assistants. `eval scenarios` runs scenario files (multi-turn
//! conversations with expectations per turn) in process or against a running server and reports
//! the results as text, JSON lines, JUnit XML and a self-contained HTML page. `eval export` writes
//! the cassettes recorded by `serve` / `chat` as JSON lines; `eval replay` re-runs them against
//! another version of the assistant and reports what changed (the regression gate).

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use switchboard_assistant::cassette::{Cassette, CassetteTurn, FORMAT_VERSION, Tape};
use switchboard_assistant::{AssistantOptions, ExchangeAssistant};
use switchboard_eval::{InProcess, Remote, RunReport, Scenario, html, replay, report, run_all};
use switchboard_store::Records;

/// `switchboard eval ...`
#[derive(Debug, Subcommand)]
pub(crate) enum EvalCmd {
    /// Run scenario files (each PATH a `.yaml` file or a directory of them) against the reference
    /// assistant in process, or against a running server with --url. Exits non-zero when any
    /// scenario fails.
    Scenarios(ScenariosArgs),
    /// Write recorded conversations (cassettes) from a store as JSON lines, one conversation a line.
    Export(ExportArgs),
    /// Re-run recorded conversations against an assistant (a new version) with LLM and tool
    /// answers served from the cassettes, and report what changed per turn. With
    /// --fail-on-change, exits 1 when anything changed or a call missed the cassette.
    Replay(ReplayArgs),
}

/// Options of `switchboard eval export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Data directory of `switchboard serve` (its SQLite store).
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", conflicts_with_all = ["store", "database_url"])]
    data_dir: Option<PathBuf>,
    /// A SQLite store file (e.g. `DATA_DIR/chat.sqlite` of `switchboard chat --record`).
    #[arg(long, conflicts_with = "database_url")]
    store: Option<PathBuf>,
    /// PostgreSQL URL of the store.
    #[arg(long, env = "SWITCHBOARD_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Only these conversations (repeatable; default: all).
    #[arg(long = "conversation")]
    conversations: Vec<String>,
    /// Output file (`.jsonl`).
    #[arg(long)]
    out: PathBuf,
}

/// Options of `switchboard eval replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Cassettes: a `.jsonl` file, a directory of them, or a postgres:// URL of a store.
    #[arg(long)]
    from: String,
    /// The assistant to replay against: its directory or its `assistant.toml`.
    #[arg(long)]
    assistant: PathBuf,
    /// LLM requests missing from the cassette go to the configured providers (keys from the
    /// environment) instead of failing.
    #[arg(long)]
    live: bool,
    /// Print one JSON object per conversation, then
    /// `{"conversations":N,"turns":T,"changed_turns":C,"cassette_misses":M}` last.
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML report to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Exit 1 when a turn changed or a call missed the cassette.
    #[arg(long)]
    fail_on_change: bool,
    /// Data directory (router cache when no user cache directory is known).
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Do not use the sentence encoder even if installed.
    #[arg(long)]
    lexical: bool,
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
        EvalCmd::Export(a) => run_export(a),
        EvalCmd::Replay(a) => run_replay(a),
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

/// Reads recorded turns from a store and groups them into cassettes (one per conversation).
async fn read_store(
    sqlite: Option<&std::path::Path>,
    database_url: Option<&str>,
    conversations: &[String],
) -> anyhow::Result<Vec<Cassette>> {
    let records = match (sqlite, database_url) {
        (_, Some(url)) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            Records::on_postgres(pool)
        }
        (Some(path), None) => {
            if !path.is_file() {
                bail!("no store at {} (record with `switchboard serve` or `chat --record` first)", path.display());
            }
            Records::open(path, std::time::Duration::from_secs(5))
                .await
                .with_context(|| format!("opening {}", path.display()))?
        }
        (None, None) => bail!("give --data-dir, --store or --database-url"),
    };
    let rows = records.cassette_turns(conversations).await.context("reading recorded turns")?;
    let mut out: Vec<Cassette> = Vec::new();
    for r in rows {
        let turn: CassetteTurn = serde_json::from_value(r.turn)
            .with_context(|| format!("conversation {} turn {}: not a recorded turn", r.conversation_id, r.seq))?;
        match out.last_mut() {
            Some(c) if c.conversation_id == r.conversation_id => c.turns.push(turn),
            _ => out.push(Cassette {
                version: FORMAT_VERSION,
                conversation_id: r.conversation_id,
                assistant: r.assistant,
                customer: r.customer_id,
                turns: vec![turn],
            }),
        }
    }
    for id in conversations {
        if !out.iter().any(|c| &c.conversation_id == id) {
            bail!("conversation `{id}` has no recorded turns");
        }
    }
    Ok(out)
}

fn run_export(a: ExportArgs) -> anyhow::Result<()> {
    let sqlite = match (&a.store, &a.data_dir) {
        (Some(f), _) => Some(f.clone()),
        (None, Some(d)) => Some(super::serve::load(None, None, Some(d.clone()))?.db_path()),
        (None, None) => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cassettes = rt.block_on(read_store(sqlite.as_deref(), a.database_url.as_deref(), &a.conversations))?;
    std::fs::write(&a.out, replay::to_jsonl(&cassettes)).with_context(|| format!("writing {}", a.out.display()))?;
    let turns: usize = cassettes.iter().map(|c| c.turns.len()).sum();
    eprintln!("wrote {} conversations ({turns} turns) to {}", cassettes.len(), a.out.display());
    Ok(())
}

fn run_replay(a: ReplayArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cassettes = if a.from.starts_with("postgres://") || a.from.starts_with("postgresql://") {
        rt.block_on(read_store(None, Some(&a.from), &[]))?
    } else {
        replay::load(std::path::Path::new(&a.from))?
    };
    let config = if a.assistant.is_dir() { a.assistant.join("assistant.toml") } else { a.assistant.clone() };
    if !config.is_file() {
        bail!("--assistant: {} not found", config.display());
    }
    let tape = Tape::player(a.live, &cassettes);
    let mut driver = InProcess::new();
    let mut opts = AssistantOptions::new(super::serve::router_cache_dir(&a.data_dir));
    opts.sentence_encoder = !a.lexical;
    opts.backend = Some(driver.backend());
    // The models of the recording answer from the cassette; with --live, misses reach them.
    opts.llm = Some(switchboard_providers::config::ProvidersConfig::default());
    opts.tape = Some(tape.clone());
    let assistant = ExchangeAssistant::load(&config, opts).with_context(|| format!("loading {}", config.display()))?;
    let name = assistant.spec().assistant.name.clone();
    driver.add(&name, assistant);
    let json = a.json;
    let report = rt.block_on(replay::replay(&driver, &tape, &name, &cassettes, |c| {
        if !json {
            let changed = c.changed_turns();
            println!("replayed {}: {} turns, {changed} changed", c.conversation_id, c.recorded_turns);
        }
    }));
    if let Some(p) = &a.html {
        std::fs::write(p, html::replay_html(&report, &format!("Replay against {}", config.display())))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    let mut stdout = std::io::stdout().lock();
    if a.json {
        stdout.write_all(replay::json_lines(&report).as_bytes())?;
    } else {
        writeln!(stdout)?;
        stdout.write_all(replay::text(&report).as_bytes())?;
    }
    stdout.flush()?;
    let s = report.summary();
    if a.fail_on_change && (s.changed_turns > 0 || s.cassette_misses > 0) {
        // A change is a result, not an error of the command: no error chain or backtrace.
        eprintln!("{} of {} turns changed, {} cassette misses", s.changed_turns, s.turns, s.cassette_misses);
        std::process::exit(1);
    }
    Ok(())
}
