//! Record and replay of whole conversations in process: one with the LLM agent against the
//! testkit's fake OpenAI server (a tool call, then an answer), one with a flow that calls tools
//! after an approval, one that ends in a handoff. Replayed against the same assistant after the
//! fake server is gone, nothing changes and nothing misses (every answer came from the
//! cassette); against modified copies, exactly the affected turns are reported.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use switchboard_assistant::cassette::{Cassette, Source, Tape, TurnInput};
use switchboard_assistant::{AssistantOptions, AssistantSpec, ExchangeAssistant};
use switchboard_eval::InProcess;
use switchboard_eval::replay::{self, ReplaySummary};
use switchboard_providers::config::{ProviderEntry, ProvidersConfig};
use switchboard_testkit::{FakeServer, Reply, Scenario, Vendor};

const NAME: &str = "exchange-support";
/// The withdrawal question the config routes to `help_agent`.
const WITHDRAWAL: &str = "My crypto withdrawal to my external wallet has not arrived yet";
const AGENT_ANSWER: &str = "Your latest transfer tr_1001 of 250.00 EUR is still pending.";

static BUILD: Mutex<()> = Mutex::new(());

fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assistants/exchange-support/assistant.toml")
}

/// The reference assistant with `help_agent` on the fake's model only, then `edit`.
fn spec(edit: impl FnOnce(&mut AssistantSpec)) -> AssistantSpec {
    let mut spec = AssistantSpec::load(&config_path()).unwrap();
    spec.agents.get_mut("help_agent").unwrap().models = vec!["openai:gpt-test".into()];
    spec.faq.models.clear();
    edit(&mut spec);
    spec
}

/// An environment variable set in every test process (the provider wants a key to exist).
fn key_var() -> String {
    ["CARGO_MANIFEST_DIR", "PATH", "HOME"].iter().find(|v| std::env::var(v).is_ok()).unwrap().to_string()
}

fn driver(spec: AssistantSpec, base_url: &str, tape: &Arc<Tape>) -> InProcess {
    let _g = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut driver = InProcess::new();
    let mut opts = AssistantOptions::new(std::env::temp_dir().join("switchboard-eval-replay-tests"));
    opts.backend = Some(driver.backend());
    opts.sentence_encoder = false;
    let entry = ProviderEntry {
        kind: "openai".into(),
        base_url: Some(format!("{base_url}/v1")),
        api_key_env: Some(key_var()),
        request_timeout_ms: Some(2_000),
        ..ProviderEntry::default()
    };
    opts.llm =
        Some(ProvidersConfig { providers: [("openai".to_string(), entry)].into(), ..ProvidersConfig::default() });
    opts.tape = Some(tape.clone());
    driver.add(NAME, ExchangeAssistant::from_spec(spec, opts).unwrap());
    driver
}

fn user(t: &str) -> TurnInput {
    TurnInput::User(t.into())
}

/// Records the three conversations; returns them and the (stopped) fake's base URL.
async fn record_three() -> (Vec<Cassette>, String) {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    fake.push(Scenario::reply(Reply::tool_call("list_recent_transfers", serde_json::json!({"limit": 3}))));
    fake.push(Scenario::reply(Reply::text(AGENT_ANSWER)));
    let url = fake.base_url();
    let tape = Tape::recorder();
    let d = driver(spec(|_| {}), &url, &tape);
    let agent = replay::record(&d, &tape, NAME, Some("cust_001"), &[user(WITHDRAWAL)]).await.unwrap();
    let freeze = [user("I lost my card, block it please"), user("the one ending 4242"), TurnInput::Approve(true)];
    let flow = replay::record(&d, &tape, NAME, Some("cust_001"), &freeze).await.unwrap();
    let human = [user("hello"), user("can I talk to a person?")];
    let handoff = replay::record(&d, &tape, NAME, Some("cust_001"), &human).await.unwrap();
    assert_eq!(fake.requests().len(), 2, "the agent's turn made two model calls");
    drop(fake);
    (vec![agent, flow, handoff], url)
}

fn changed_turns(r: &replay::ReplayReport) -> Vec<(usize, usize, Vec<String>)> {
    r.conversations
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.turns.iter().filter(|t| t.changed() || !t.misses.is_empty()).map(move |t| {
                let mut what: Vec<String> = t.changes.iter().map(|ch| ch.field.clone()).collect();
                what.extend(t.misses.iter().map(|m| format!("{} miss {}", m.kind, m.name)));
                (i, t.turn, what)
            })
        })
        .collect()
}

async fn replay_with(cassettes: &[Cassette], url: &str, edit: impl FnOnce(&mut AssistantSpec)) -> replay::ReplayReport {
    let tape = Tape::player(false, cassettes);
    let d = driver(spec(edit), url, &tape);
    replay::replay(&d, &tape, NAME, cassettes, |_| {}).await
}

#[tokio::test]
async fn recorded_conversations_replay_unchanged_from_the_cassette_then_changes_are_reported() {
    let (cassettes, url) = record_three().await;

    // What was recorded: the agent's two model calls and its tool call; the flow's tools.
    let agent = &cassettes[0].turns[0];
    assert_eq!(agent.observed.handler.as_deref(), Some("help_agent"), "{agent:?}");
    assert_eq!(agent.observed.replies, vec![AGENT_ANSWER.to_string()]);
    assert_eq!(agent.llm.len(), 2);
    assert!(agent.llm.iter().all(|l| l.source == Source::Recorded && l.model == "openai/gpt-test"));
    assert_eq!(agent.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["list_recent_transfers"]);
    let approved = &cassettes[1].turns[2];
    assert_eq!(approved.input, TurnInput::Approve(true));
    assert!(approved.tools.iter().any(|t| t.name == "freeze_card"), "{approved:?}");
    assert!(cassettes[1].turns[1].observed.interrupts.contains(&"approval".to_string()));
    assert!(cassettes[2].turns[1].observed.handoff, "{:?}", cassettes[2].turns[1]);

    // Portable: JSON lines round-trip.
    let text = replay::to_jsonl(&cassettes);
    assert_eq!(text.lines().count(), 3);
    let back = replay::parse_jsonl(&text, Path::new("mem.jsonl")).unwrap();
    assert_eq!(back, cassettes);

    // (a) The same assistant, the fake LLM server gone: no change, no miss, answers served.
    let same = replay_with(&back, &url, |_| {}).await;
    assert_eq!(changed_turns(&same), vec![]);
    assert_eq!(same.summary(), ReplaySummary { conversations: 3, turns: 6, changed_turns: 0, cassette_misses: 0 });
    assert_eq!(same.conversations[0].turns[0].served, 3, "two model calls and one tool call from the cassette");
    let lines = replay::json_lines(&same);
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last, serde_json::json!({"conversations": 3, "turns": 6, "changed_turns": 0, "cassette_misses": 0}));

    // (b) A flow's reply text changed: exactly the turn that says it.
    let reworded = replay_with(&back, &url, |s| {
        s.flows.get_mut("card_freeze").unwrap().messages.insert("frozen".into(), "Card {last4} is blocked now.".into());
    })
    .await;
    assert_eq!(changed_turns(&reworded), vec![(1, 3, vec!["reply".to_string()])]);
    let diff = reworded.conversations[1].turns[2].changes[0].diff.clone().unwrap();
    assert!(diff.contains("+ Card 4242 is blocked now."), "{diff}");
    assert!(diff.lines().any(|l| l.starts_with("- Done: the card ending 4242 is now frozen")), "{diff}");

    // An intent routed elsewhere: the greeting now goes to the FAQ.
    let rerouted = replay_with(&back, &url, |s| {
        *s.routes.get_mut("greeting").unwrap().get_mut() = "faq".to_string();
    })
    .await;
    let changed = changed_turns(&rerouted);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!((changed[0].0, changed[0].1), (2, 1), "{changed:?}");
    assert!(
        changed[0].2.contains(&"handler".to_string()) && changed[0].2.contains(&"reply".to_string()),
        "{changed:?}"
    );

    // New agent instructions: the model request no longer matches; without --live the call
    // fails, the miss is reported and the turn falls back.
    let reprompted = replay_with(&back, &url, |s| {
        s.agents.get_mut("help_agent").unwrap().instructions.push_str(" Be terse.");
    })
    .await;
    let changed = changed_turns(&reprompted);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!((changed[0].0, changed[0].1), (0, 1));
    assert!(changed[0].2.contains(&"llm miss openai/gpt-test".to_string()), "{changed:?}");
    assert_eq!(reprompted.summary().cassette_misses, 1);
    assert!(replay::text(&reprompted).contains("cassette miss"), "{}", replay::text(&reprompted));
}
