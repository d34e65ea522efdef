//! Subcommands of the `switchboard` binary, one module each.

mod bench_providers;
mod fake_llm;
mod llm;

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
    /// Run a fake LLM vendor server for offline development and tests.
    FakeLlm(fake_llm::Args),
    /// Talk to an LLM through the provider layer (manual checks).
    Llm(llm::Args),
    /// Benchmark the provider layer against a fake vendor.
    #[command(name = "bench-providers")]
    BenchProviders(bench_providers::Args),
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
        Command::FakeLlm(args) => fake_llm::run(args),
        Command::Llm(args) => llm::run(args),
        Command::BenchProviders(args) => bench_providers::run(args),
    }
}
