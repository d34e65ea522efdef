//! `switchboard bench providers`: overhead per call, streaming throughput and memory per
//! concurrent stream of the provider layer, against a zero-latency fake run as a child process.

use anyhow::Context;
use switchboard_testkit::bench::{BenchOptions, run as run_bench};

/// Arguments of `switchboard bench providers`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Measured calls per variant for the overhead figures.
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
    /// Tokens in the streamed reply for the throughput figure.
    #[arg(long, default_value_t = 50_000)]
    stream_tokens: usize,
    /// Concurrent stream counts to try, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    concurrency: Vec<usize>,
    /// Run the fake inside this process instead of a child process.
    #[arg(long)]
    in_process_fake: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let opts = BenchOptions {
        fake_binary: if args.in_process_fake {
            None
        } else {
            Some(std::env::current_exe().context("locating the switchboard binary")?)
        },
        calls: args.calls,
        stream_tokens: args.stream_tokens,
        concurrency: args.concurrency,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let report = rt.block_on(run_bench(&opts))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let o = &report.overhead;
        println!(
            "overhead per call (adapter - raw HTTP): p50 {:.0} us, p99 {:.0} us; full stack: p50 {:.0} us, p99 {:.0} us",
            o.adapter_overhead.p50_us,
            o.adapter_overhead.p99_us,
            o.full_stack_overhead.p50_us,
            o.full_stack_overhead.p99_us
        );
        println!("layers alone (no network): p50 {:.1} us, p99 {:.1} us", o.layers_only.p50_us, o.layers_only.p99_us);
        println!("streaming: {:.0} tokens/s ({} tokens)", report.streaming.tokens_per_second, report.streaming.tokens);
        for c in &report.concurrency {
            println!(
                "{} concurrent streams: {} open in {:.1} s, {:.0} KiB per 1,000 streams{}",
                c.streams,
                c.opened,
                c.open_seconds,
                c.kib_per_1000_streams,
                c.first_error.as_ref().map(|e| format!(" (first error: {e})")).unwrap_or_default()
            );
        }
    }
    Ok(())
}
