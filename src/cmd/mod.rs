//! Subcommands of the `switchboard` binary, one module each.

mod bench_engine;
mod demo;
mod keys;
mod serve;

use clap::{Parser, Subcommand};

/// Switchboard: the orchestration layer of a customer-support AI assistant.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a support conversation on the embedded store: routing, guard flags, a human handoff
    /// (interrupt and resume) and time travel.
    Demo(demo::DemoArgs),
    /// Benchmarks that print figures (JSON lines with --json), to compare side by side with peers.
    #[command(subcommand)]
    Bench(Bench),
    /// Serve the HTTP API (SQLite in the data directory; an admin key is printed at first start).
    Serve(serve::ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The peer harness's support graph on our engine (compare with shared/bench/peers).
    Engine(bench_engine::EngineBenchArgs),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `warn`); one JSON object per line with
/// `SWITCHBOARD_LOG_FORMAT=json`.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Bench(Bench::Engine(a)) => bench_engine::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Keys(a) => keys::run(a),
    }
}
