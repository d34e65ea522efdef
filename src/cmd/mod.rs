//! Subcommands of the `switchboard` binary, one module each.

mod audit;
mod bench_engine;
mod bench_providers;
mod bench_router;
mod bench_server;
mod chaos;
mod chaos_http;
mod chat;
mod demo;
mod eval;
mod fake_llm;
mod guard;
mod keys;
mod llm;
mod models;
mod report;
mod router;
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
    /// Guardrails: PII / secret detection, injection scoring, model training.
    Guard(guard::GuardArgs),
    /// Obtain and check model files.
    #[command(subcommand)]
    Models(models::ModelsCmd),
    /// Train, evaluate and run the intent router.
    #[command(subcommand)]
    Router(router::RouterCmd),
    /// Talk to an LLM through the provider layer (manual checks).
    Llm(llm::Args),
    /// Run a fake LLM vendor server for offline development and tests.
    FakeLlm(fake_llm::Args),
    /// Talk to an assistant in the terminal (streamed replies, routing shown with --show-routing;
    /// reads a script from standard input when it is not a terminal).
    Chat(chat::ChatArgs),
    /// Serve the HTTP API (SQLite in the data directory; an admin key is printed at first start).
    Serve(serve::ServeArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The hash-chained audit log: verify it, list it.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Fault harness of the distributed runtime: replicas on PostgreSQL, SIGKILLs, invariant checks.
    Chaos(chaos::ChaosArgs),
    /// One replica process of `chaos` (internal).
    #[command(hide = true)]
    ChaosReplica(chaos::ReplicaArgs),
    /// Evaluate assistants: scenario tests (in process or against a server) with JSON, JUnit and
    /// HTML reports.
    #[command(subcommand)]
    Eval(eval::EvalCmd),
    /// Benchmarks that print figures (JSON lines with --json), to compare side by side with peers.
    #[command(subcommand)]
    Bench(Bench),
    /// Daily containment, handoff, out-of-scope, cost and feedback summaries from the store.
    Report(report::ReportArgs),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The peer harness's support graph on our engine (compare with shared/bench/peers).
    Engine(bench_engine::EngineBenchArgs),
    /// The provider layer against a fake vendor: overhead per call, streaming, memory per stream.
    Providers(bench_providers::Args),
    /// The sentence encoder: single-utterance latency and batch throughput.
    Router(bench_router::BenchRouterArgs),
    /// The HTTP API: turns/s, latency and API overhead (closed and open loop), memory per SSE stream.
    Server(bench_server::Args),
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `warn`), with PII and secrets masked; one
/// JSON object per line with `SWITCHBOARD_LOG_FORMAT=json`.
///
/// Metrics: every turn's spans feed the process's metrics registry, which `serve` renders at
/// `/metrics`.
///
/// Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, every turn's
/// spans (run, nodes, guard, routing, LLM calls) are exported over OTLP/HTTP (JSON); message
/// content only with `SWITCHBOARD_TRACE_CONTENT=true`, and then redacted by the guard. Returns
/// the exporter so the command can flush it before the process exits.
pub(crate) fn init_tracing() -> anyhow::Result<Option<switchboard_telemetry::OtlpExporter>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let writer = switchboard_guard::logging::RedactingMakeWriter::new(std::io::stderr);
    let logs = if std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(writer).with_filter(filter).boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .fmt_fields(switchboard_guard::logging::RedactingFields)
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    };
    let otlp = switchboard_telemetry::OtlpExporter::config_from_env(|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)?
        .map(switchboard_telemetry::OtlpExporter::start)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    // The same spans feed the process's metrics registry (rendered at `/metrics` by `serve`) and,
    // when configured, the OTLP exporter.
    let metrics = switchboard_telemetry::MetricsSink::new(switchboard_telemetry::metrics::global().clone());
    let mut sinks: Vec<std::sync::Arc<dyn switchboard_telemetry::SpanSink>> = vec![std::sync::Arc::new(metrics)];
    if let Some(exporter) = otlp.clone() {
        sinks.push(std::sync::Arc::new(exporter));
    }
    let cfg = switchboard_telemetry::SpanLayerConfig {
        capture_content: otlp.is_some()
            && std::env::var("SWITCHBOARD_TRACE_CONTENT").is_ok_and(|v| v == "true" || v == "1"),
        redactor: Some(std::sync::Arc::new(|t: &str| switchboard_guard::logging::redact_for_log(t).into_owned())),
        targets: vec!["switchboard".into()],
    };
    let spans = switchboard_telemetry::SpanLayer::new(cfg, sinks)
        .with_filter(tracing_subscriber::filter::Targets::new().with_target("switchboard", tracing::Level::INFO));
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(otlp)
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Guard(a) => guard::run(a),
        Command::Models(c) => models::run(c),
        Command::Router(c) => router::run(c),
        Command::Llm(a) => llm::run(a),
        Command::FakeLlm(a) => fake_llm::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Keys(a) => keys::run(a),
        Command::Audit(c) => audit::run(c),
        Command::Chaos(a) => chaos::run(a),
        Command::ChaosReplica(a) => chaos::replica(a),
        Command::Eval(c) => eval::run(c),
        Command::Bench(Bench::Engine(a)) => bench_engine::run(a),
        Command::Bench(Bench::Providers(a)) => bench_providers::run(a),
        Command::Bench(Bench::Router(a)) => bench_router::run(a),
        Command::Bench(Bench::Server(a)) => bench_server::run(a),
        Command::Report(a) => report::run(a),
    }
}
