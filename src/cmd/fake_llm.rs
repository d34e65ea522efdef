//! `switchboard fake-llm`: a fake LLM vendor server on a local port.
//!
//! Prints `listening on http://ADDR` on stdout once bound (so scripts can start it on port 0
//! and read the address), then serves until Ctrl-C. Script it with `--script FILE` (a JSON array
//! of scenarios) or at runtime with `POST /_fake/script`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_testkit::{FakeState, Scenario, Vendor};

/// Arguments of `switchboard fake-llm`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which vendor's wire format to speak: openai, anthropic, bedrock or vertex.
    #[arg(long, value_parser = parse_vendor)]
    vendor: Vendor,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8089")]
    addr: String,
    /// A JSON file holding an array of scenarios to answer with, in order.
    #[arg(long)]
    script: Option<std::path::PathBuf>,
    /// Do not keep a log of requests (for long benchmark runs).
    #[arg(long)]
    no_record: bool,
}

fn parse_vendor(s: &str) -> Result<Vendor, String> {
    s.parse().map_err(|e: switchboard_testkit::vendor::UnknownVendor| e.to_string())
}

/// How long shutdown waits for open streams (a stalled one never ends by itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async move {
        let state = Arc::new(if args.no_record {
            FakeState::without_recording(args.vendor)
        } else {
            FakeState::new(args.vendor)
        });
        if let Some(path) = &args.script {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading script {}", path.display()))?;
            let scenarios: Vec<Scenario> =
                serde_json::from_str(&text).context("script must be a JSON array of scenarios")?;
            state.push(scenarios);
        }
        switchboard_testkit::server::run_until_ctrl_c(state, &args.addr, SHUTDOWN_GRACE, |addr| {
            println!("listening on http://{addr}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        })
        .await
        .with_context(|| format!("fake {} server on {}", args.vendor, args.addr))?;
        Ok(())
    })
}
