//! Subcommands of the `switchboard` binary, one module each.

use clap::{Parser, Subcommand};

mod bench_router;
mod models;
mod router;

/// Switchboard: the orchestration layer of a customer-support AI assistant.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Obtain and check model files.
    #[command(subcommand)]
    Models(models::ModelsCmd),
    /// Train, evaluate and run the intent router.
    #[command(subcommand)]
    Router(router::RouterCmd),
    /// Benchmark the sentence encoder (single utterance latency, batch throughput).
    #[command(name = "bench-router")]
    BenchRouter(bench_router::BenchRouterArgs),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `warn`).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Models(c) => models::run(c),
        Command::Router(c) => router::run(c),
        Command::BenchRouter(a) => bench_router::run(a),
    }
}
