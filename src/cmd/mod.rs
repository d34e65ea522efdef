//! Subcommands of the `switchboard` binary, one module each.

mod guard;

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
    /// Guardrails: PII / secret detection, injection scoring, model training.
    Guard(guard::GuardArgs),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `warn`), with PII and secrets masked.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(switchboard_guard::logging::RedactingFields)
        .with_writer(switchboard_guard::logging::RedactingMakeWriter::new(
            std::io::stderr,
        ))
        .init();
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Guard(a) => guard::run(a),
    }
}
