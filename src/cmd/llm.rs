//! `switchboard llm chat`: one manual call to a model through the provider layer.
//!
//! Keys come from the usual environment variables (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`);
//! base URLs from `--base-url` or `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`, so it works against
//! `switchboard fake-llm` and internal servers alike. Streamed text goes to stdout as it
//! arrives; usage and the finish reason go to stderr.

use std::io::Write;

use anyhow::Context;
use switchboard_providers::config::{ProviderEntry, build_model};
use switchboard_providers::event::StreamExt;
use switchboard_providers::resilience::{ChatModelExt, RetryPolicy, TimeoutPolicy};
use switchboard_providers::{Accumulator, CancellationToken, ChatModel, ChatRequest, ChatResponse, StreamEvent};

/// Arguments of `switchboard llm`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: LlmCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LlmCommand {
    /// Send one prompt and print the reply.
    Chat(ChatArgs),
}

#[derive(Debug, clap::Args)]
struct ChatArgs {
    /// Provider kind: openai (any compatible server) or anthropic.
    #[arg(long)]
    provider: String,
    /// Model id.
    #[arg(long)]
    model: String,
    /// Stream the reply token by token.
    #[arg(long)]
    stream: bool,
    /// Base URL (overrides the vendor default and the *_BASE_URL variable).
    #[arg(long)]
    base_url: Option<String>,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Maximum output tokens.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Sampling temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// Print the whole response as JSON instead of the text.
    #[arg(long)]
    json: bool,
    /// The prompt.
    prompt: String,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let LlmCommand::Chat(args) = args.command;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(chat(args))
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let mut entry = ProviderEntry::of_kind(&args.provider);
    entry.base_url = args.base_url.clone();
    let model = build_model(&args.provider, &entry, &args.model)?
        .with_timeout(TimeoutPolicy::default())
        .with_retry(RetryPolicy::default());
    let req = ChatRequest {
        system: args.system.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        ..ChatRequest::user(args.prompt.clone())
    };
    let cancel = CancellationToken::new();
    let response = if args.stream {
        let mut stream = model.stream(req, cancel).await?;
        let mut acc = Accumulator::new("cli");
        let mut out = std::io::stdout().lock();
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            if let (false, StreamEvent::TextDelta { text }) = (args.json, &ev) {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            acc.push(ev)?;
        }
        if !args.json {
            writeln!(out)?;
        }
        acc.finish()?
    } else {
        let r = model.chat(req, cancel).await?;
        if !args.json {
            println!("{}", r.text);
        }
        r
    };
    report(&response, args.json)
}

fn report(r: &ChatResponse, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    for c in &r.tool_calls {
        println!("tool call {} {}({})", c.id, c.name, c.arguments);
    }
    eprintln!(
        "finish: {:?}; tokens in {} (cached {}) out {}",
        r.finish_reason, r.usage.input_tokens, r.usage.cache_read_tokens, r.usage.output_tokens
    );
    Ok(())
}
