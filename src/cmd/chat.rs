//! `switchboard chat`: a terminal conversation with an assistant, in process, on the embedded
//! SQLite store. Replies are streamed as the graph produces them; with `--show-routing` each
//! turn's routing decision and confidence is shown dimmed. When standard input is not a
//! terminal, it is read as a script (one message or command per line) and echoed.

use anyhow::Context as _;
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use switchboard_assistant::{AssistantOptions, ExchangeAssistant, Runtime, TurnView};
use switchboard_store::{SqliteConfig, SqliteStore};

/// Options of `switchboard chat`.
#[derive(Debug, clap::Args)]
pub(crate) struct ChatArgs {
    /// The assistant (a folder of the assistants directory with an `assistant.toml`).
    #[arg(long, default_value = "exchange-support")]
    assistant: String,
    /// Where assistants live.
    #[arg(long, env = "SWITCHBOARD_ASSISTANTS_DIR", default_value = "assistants")]
    assistants_dir: PathBuf,
    /// Data directory (SQLite file `chat.sqlite`, router cache).
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Show each turn's routing decision and confidence (dimmed).
    #[arg(long)]
    show_routing: bool,
    /// The customer of the reference back end (`cust_001`, `cust_002`).
    #[arg(long, default_value = "cust_001")]
    customer: String,
    /// Conversation id (default: a new one).
    #[arg(long)]
    conversation: Option<String>,
    /// Do not use the sentence encoder even if installed.
    #[arg(long)]
    lexical: bool,
    /// Record every turn (LLM and tool calls, outcome) as a cassette in `chat.sqlite`, for
    /// `switchboard eval export --store DATA_DIR/chat.sqlite`.
    #[arg(
        long,
        env = "SWITCHBOARD_RECORDING",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false"
    )]
    record: bool,
}

/// The tenant of conversations recorded by `switchboard chat`.
const CHAT_TENANT: &str = "local";

const HELP: &str =
    "commands: /state /history /handoff /reset /approve [ID] /deny [ID] /claim AGENT /agent TEXT /handback /help /quit";

fn dim(t: &str) -> String {
    format!("\x1b[2m{t}\x1b[0m")
}

fn routing_line(t: &TurnView) -> Option<String> {
    let r = t.routing.as_ref()?;
    let handler = r["handler"].as_str().or(t.handler.as_deref()).unwrap_or("-");
    let line = match (r["intent"].as_str(), r["confidence"].as_f64()) {
        (Some(i), Some(c)) => format!(
            "[{} {i} {c:.2} via {} → {handler}]",
            r["outcome"].as_str().unwrap_or("intent"),
            r["rung"].as_str().unwrap_or("?")
        ),
        _ => format!(
            "[{} → {handler}: {}]",
            r["outcome"].as_str().unwrap_or("?"),
            r["reasons"][0].as_str().unwrap_or("")
        ),
    };
    Some(line)
}

fn new_conversation_id() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("chat_{n:x}")
}

struct Repl {
    rt: Runtime,
    conv: String,
    customer: String,
    show_routing: bool,
    /// Where recorded turns go (`--record`).
    records: Option<switchboard_store::Records>,
}

impl Repl {
    /// The conversation's state before a turn, when recording.
    async fn state_before(&self) -> Value {
        match &self.records {
            Some(_) => self.rt.engine.state(&self.conv).await.map(|s| s.to_json()).unwrap_or(Value::Null),
            None => Value::Null,
        }
    }

    /// Stores a turn's cassette entry, when recording.
    async fn record(
        &self,
        input: switchboard_assistant::cassette::TurnInput,
        before: &Value,
        t: &TurnView,
        took: std::time::Duration,
    ) {
        let (Some(records), Some(tape)) = (&self.records, self.rt.assistant.tape()) else { return };
        let interrupts: Vec<Value> = t.interrupts.iter().map(|i| i.payload.clone()).collect();
        let turn = tape.finish_turn(&self.conv, input, before, &t.state.to_json(), &interrupts, took);
        let rec = switchboard_store::records::CassetteRecord {
            tenant: CHAT_TENANT.into(),
            conversation_id: self.conv.clone(),
            seq: 0,
            assistant: self.rt.assistant.spec().assistant.name.clone(),
            customer_id: Some(self.customer.clone()),
            turn: serde_json::to_value(turn).unwrap_or(Value::Null),
            created_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        if let Err(e) = records.append_cassette_turn(&rec).await {
            println!("{}", dim(&format!("[could not record the turn: {e}]")));
        }
    }

    fn print_turn(&self, t: &TurnView, streamed: bool) {
        if !streamed {
            for r in &t.replies {
                println!("bot> {r}");
            }
        }
        if self.show_routing
            && let Some(line) = routing_line(t)
        {
            println!("{}", dim(&line));
        }
        for tc in &t.tool_calls {
            let status = if tc.get("error").is_some() { "error" } else { "ok" };
            println!("{}", dim(&format!("[tool {} {} {status}]", tc["name"].as_str().unwrap_or("?"), tc["args"])));
        }
        for i in &t.interrupts {
            if i.payload["type"] == "approval" {
                println!(
                    "{}",
                    dim(&format!(
                        "[approval {} pending: {} — /approve or /deny as the human approver]",
                        i.payload["id"].as_str().unwrap_or("?"),
                        i.payload["summary"].as_str().unwrap_or("")
                    ))
                );
            }
        }
        if t.handoff.status.with_human() && self.show_routing {
            println!(
                "{}",
                dim(&format!(
                    "[handoff {} priority {}]",
                    t.handoff.status.as_str(),
                    t.handoff.priority.as_deref().unwrap_or("-")
                ))
            );
        }
    }

    async fn say(&self, text: &str) -> anyhow::Result<()> {
        let mut started = false;
        let mut out = std::io::stdout();
        let mut cb = |delta: &str| {
            if !started {
                let _ = write!(out, "bot> ");
                started = true;
            }
            let _ = write!(out, "{delta}");
            let _ = out.flush();
        };
        let before = self.state_before().await;
        let t0 = std::time::Instant::now();
        let t = self.rt.say_streaming(&self.conv, Some(&self.customer), text, Some(&mut cb)).await?;
        let input = t
            .state
            .get_array("messages")
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str());
        let input = switchboard_assistant::cassette::TurnInput::User(input.unwrap_or(text).to_string());
        self.record(input, &before, &t, t0.elapsed()).await;
        if started {
            println!();
        }
        // Streamed tokens cover the first reply of a turn; a turn that ends in an approval wait
        // may carry more than one message.
        let streamed = started && t.replies.len() <= 1;
        if started && !streamed {
            for r in t.replies.iter().skip(1) {
                println!("bot> {r}");
            }
        }
        self.print_turn(&t, started);
        Ok(())
    }

    async fn approval_id(&self, arg: &str) -> anyhow::Result<String> {
        if !arg.is_empty() {
            return Ok(arg.to_string());
        }
        let p = self.rt.pending_approvals(&self.conv).await?;
        p.first().and_then(|v| v["id"].as_str()).map(str::to_string).context("no approval is pending")
    }

    async fn command(&mut self, line: &str) -> anyhow::Result<bool> {
        let (cmd, arg) = line.split_once(' ').map_or((line, ""), |(c, a)| (c, a.trim()));
        match cmd {
            "/quit" | "/exit" => return Ok(false),
            "/help" => println!("{HELP}"),
            "/reset" => {
                self.conv = new_conversation_id();
                println!("{}", dim(&format!("[new conversation {}]", self.conv)));
            }
            "/state" => match self.rt.engine.state(&self.conv).await {
                Ok(s) => {
                    let pick = |k: &str| s.get(k).cloned().unwrap_or(Value::Null);
                    let v = serde_json::json!({
                        "conversation": self.conv, "customer": self.customer, "intent": pick("intent"),
                        "flows": pick("flows"), "slots": pick("slots"), "handoff": pick("handoff"),
                        "pending_approval": pick("pending_approval"), "turn": pick("turn"),
                    });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Err(_) => println!("{}", dim("[no state yet]")),
            },
            "/history" => match self.rt.engine.state(&self.conv).await {
                Ok(s) => {
                    for m in s.get_array("messages") {
                        let who = m["author"].as_str().or(m["role"].as_str()).unwrap_or("?");
                        println!("{who}: {}", m["content"].as_str().unwrap_or(""));
                    }
                    let cps = self.rt.engine.history(&self.conv, None, 200).await?;
                    println!("{}", dim(&format!("[{} checkpoints]", cps.len())));
                }
                Err(_) => println!("{}", dim("[no messages yet]")),
            },
            "/handoff" => {
                let t = self.rt.request_handoff(&self.conv, Some(&self.customer)).await?;
                self.print_turn(&t, false);
            }
            "/approve" | "/deny" => {
                let id = self.approval_id(arg).await?;
                let before = self.state_before().await;
                let t0 = std::time::Instant::now();
                let t = self.rt.approve(&self.conv, Some(&self.customer), &id, cmd == "/approve", "terminal").await?;
                let input = switchboard_assistant::cassette::TurnInput::Approve(cmd == "/approve");
                self.record(input, &before, &t, t0.elapsed()).await;
                self.print_turn(&t, false);
            }
            "/claim" => {
                let agent = if arg.is_empty() { "agent" } else { arg };
                let t = self.rt.claim(&self.conv, Some(&self.customer), agent).await?;
                self.print_turn(&t, false);
            }
            "/agent" => {
                let s = self.rt.engine.state(&self.conv).await?;
                let agent = switchboard_assistant::Handoff::from_value(s.get("handoff"))
                    .assigned_to
                    .unwrap_or_else(|| "agent".into());
                let t = self.rt.agent_message(&self.conv, Some(&self.customer), &agent, arg).await?;
                println!("{agent}> {arg}");
                self.print_turn(&t, false);
            }
            "/handback" => {
                let t = self.rt.hand_back(&self.conv, Some(&self.customer), "agent").await?;
                self.print_turn(&t, false);
            }
            other => println!("unknown command {other}; {HELP}"),
        }
        Ok(true)
    }
}

pub(crate) fn run(args: ChatArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(chat(args))
}

async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let config = args.assistants_dir.join(&args.assistant).join("assistant.toml");
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut opts = AssistantOptions::new(super::serve::router_cache_dir(&args.data_dir));
    opts.sentence_encoder = !args.lexical;
    // Vendor LLMs as in `serve` without a config file: every provider whose key is set.
    let llm_off = std::env::var("SWITCHBOARD_LLM").is_ok_and(|v| ["off", "false", "0"].contains(&v.trim()));
    opts.llm = (!llm_off).then(switchboard_providers::config::ProvidersConfig::default);
    if args.record {
        opts.tape = Some(switchboard_assistant::cassette::Tape::recorder());
    }
    let assistant = tokio::task::spawn_blocking(move || ExchangeAssistant::load(&config, opts)).await??;
    let r = assistant.router();
    eprintln!(
        "{}",
        dim(&format!(
            "[router {} in {:.1} s: {} examples, {} intents, {}]",
            if r.cached { "loaded from cache" } else { "trained" },
            r.seconds,
            r.examples,
            r.intents,
            if r.sentence_encoder {
                "sentence encoder + lexical"
            } else {
                "lexical only (run `switchboard models fetch` for the sentence encoder)"
            }
        ))
    );
    let path = args.data_dir.join("chat.sqlite");
    let store = Arc::new(
        SqliteStore::open(&path, SqliteConfig::default())
            .await
            .with_context(|| format!("opening {}", path.display()))?,
    );
    let records = args.record.then(|| switchboard_store::Records::on_store(&store));
    let engine = assistant.engine(store);
    let mut repl = Repl {
        rt: Runtime::new(assistant, engine),
        conv: args.conversation.unwrap_or_else(new_conversation_id),
        customer: args.customer,
        show_routing: args.show_routing,
        records,
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!("{}", dim(&format!("[conversation {} as {}; {HELP}]", repl.conv, repl.customer)));
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            print!("you> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !interactive {
            println!("you> {line}");
        }
        let result = if line.starts_with('/') { repl.command(line).await } else { repl.say(line).await.map(|()| true) };
        match result {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => println!("{}", dim(&format!("[error: {e:#}]"))),
        }
    }
    Ok(())
}
