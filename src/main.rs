//! `switchboard`: parse the command line, initialise tracing, dispatch to a subcommand.

mod cmd;
mod support;

use clap::Parser;

/// mimalloc instead of the system allocator: a turn allocates many small JSON values and strings
/// across threads, where glibc's malloc spent a fifth of the server's CPU (`perf` of
/// `switchboard bench server`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cmd::Cli::parse();
    let otlp = cmd::init_tracing()?;
    let result = cmd::run(cli);
    if let Some(exporter) = otlp {
        exporter.flush_blocking(std::time::Duration::from_secs(5));
    }
    result
}
