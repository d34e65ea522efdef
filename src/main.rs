//! `switchboard`: parse the command line, initialise tracing, dispatch to a subcommand.

mod cmd;
mod support;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cmd::Cli::parse();
    cmd::init_tracing();
    cmd::run(cli)
}
