//! `switchboard`: parse the command line, initialise tracing, dispatch to a subcommand.

mod cmd;
mod support;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cmd::Cli::parse();
    let otlp = cmd::init_tracing()?;
    let result = cmd::run(cli);
    if let Some(exporter) = otlp {
        exporter.flush_blocking(std::time::Duration::from_secs(5));
    }
    result
}
