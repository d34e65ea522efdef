//! The LLM agent and the generated FAQ against wire-faithful fake vendor servers
//! (`switchboard-testkit`): tool calls on the fake exchange, context per policy (redacted),
//! budgets, fallbacks to the offline handlers, approvals.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{ANA, all_replies, config_path};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use switchboard_assistant::config::ContextPolicy;
use switchboard_assistant::{AssistantOptions, AssistantSpec, ExchangeAssistant, FakeExchange, Runtime, TurnView};
use switchboard_engine::MemoryStore;
use switchboard_providers::config::{ProviderEntry, ProvidersConfig};
use switchboard_testkit::{FakeServer, Fault, Reply, Scenario, Vendor};

/// The withdrawal question the config routes to `help_agent`.
const WITHDRAWAL: &str = "My crypto withdrawal to my external wallet has not arrived yet";

static BUILD: Mutex<()> = Mutex::new(());

/// An environment variable that is set in every test process: the fakes want some key.
fn key_var() -> String {
    ["CARGO_MANIFEST_DIR", "PATH", "HOME"].iter().find(|v| std::env::var(v).is_ok()).unwrap().to_string()
}

fn provider(kind: &str, base_url: &str) -> ProviderEntry {
    ProviderEntry {
        kind: kind.into(),
        base_url: Some(base_url.into()),
        api_key_env: Some(key_var()),
        request_timeout_ms: Some(5_000),
        ..ProviderEntry::default()
    }
}

/// The reference assistant with `help_agent` on `models`, through the server-style overrides.
fn build(edit: impl FnOnce(&mut AssistantSpec), providers: &[(&str, ProviderEntry)]) -> (Runtime, FakeExchange) {
    let mut spec = AssistantSpec::load(&config_path()).unwrap();
    edit(&mut spec);
    let _g = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let exchange = FakeExchange::seeded();
    let mut opts = AssistantOptions::new(common::cache_dir());
    opts.backend = Some(Arc::new(exchange.clone()));
    opts.sentence_encoder = false;
    let cfg = ProvidersConfig {
        providers: providers.iter().map(|(n, e)| (n.to_string(), e.clone())).collect::<BTreeMap<_, _>>(),
        ..ProvidersConfig::default()
    };
    opts.llm = Some(cfg);
    let a = ExchangeAssistant::from_spec(spec, opts).unwrap();
    let engine = a.engine(Arc::new(MemoryStore::new()));
    (Runtime::new(a, engine), exchange)
}

fn agent_on(models: &[&str], context: ContextPolicy) -> impl FnOnce(&mut AssistantSpec) {
    let models: Vec<String> = models.iter().map(|m| m.to_string()).collect();
    move |spec: &mut AssistantSpec| {
        let a = spec.agents.get_mut("help_agent").unwrap();
        a.models = models;
        a.context = context;
        spec.faq.models.clear();
    }
}

async fn openai_fake() -> (FakeServer, ProviderEntry) {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    let entry = provider("openai", &format!("{}/v1", fake.base_url()));
    (fake, entry)
}

fn executed(ex: &FakeExchange, name: &str) -> usize {
    ex.executed().iter().filter(|c| c.name == name).count()
}

fn fallbacks(t: &TurnView) -> Vec<Value> {
    t.state.get_array("routing_trace").iter().filter(|r| r["outcome"] == "fallback").cloned().collect()
}

#[tokio::test]
async fn the_agent_calls_a_tool_on_the_exchange_then_answers_from_the_model() {
    let (fake, entry) = openai_fake().await;
    fake.push(Scenario::reply(Reply::tool_call("list_recent_transfers", json!({"limit": 3}))));
    fake.push(Scenario::reply(Reply::text("Your latest transfer tr_1001 of 250.00 EUR is still pending.")));
    let (rt, ex) = build(agent_on(&["openai:gpt-test"], ContextPolicy::Summary), &[("openai", entry)]);
    assert_eq!(rt.assistant.llm().unwrap(), vec!["help_agent: openai/gpt-test".to_string()]);
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("help_agent"), "{t:?}");
    assert_eq!(all_replies(&t), "Your latest transfer tr_1001 of 250.00 EUR is still pending.");
    // The tool really ran on the exchange, for the conversation's customer.
    let calls: Vec<_> = ex.executed().into_iter().filter(|c| c.name == "list_recent_transfers").collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].customer_id, "cust_001");
    assert_eq!(calls[0].args, json!({"limit": 3}));
    assert_eq!(t.tool_calls[0]["by"], "agent");
    // Two vendor requests: the second carries the tool result back.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0].body;
    assert_eq!(first["tools"][0]["function"]["name"], "list_recent_transfers");
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("crypto withdrawals"), "{system}");
    assert!(system.contains("Conversation summary:"), "{system}");
    let second = reqs[1].body["messages"].as_array().unwrap();
    let tool_msg = second.iter().find(|m| m["role"] == "tool").unwrap();
    assert!(tool_msg["content"].as_str().unwrap().contains("tr_1001"), "{tool_msg}");
    // Usage is recorded per call and per conversation.
    let llm = t.state.get_array("llm_calls");
    assert_eq!(llm.len(), 2);
    assert_eq!(llm[0]["model"], "openai/gpt-test");
    assert!(llm[0]["input_tokens"].as_u64().unwrap() > 0);
    let usage = t.state.get("llm_usage").unwrap();
    assert_eq!(usage["calls"], 2);
    assert!(usage["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn context_reaches_the_model_redacted_and_as_the_policy_says() {
    let card = "4111 1111 1111 1111";
    let first =
        format!("My crypto withdrawal has not arrived, I also used my card {card} and my email ana@example.com");
    for policy in [ContextPolicy::FullHistory, ContextPolicy::Summary, ContextPolicy::SlotsOnly] {
        let (fake, entry) = openai_fake().await;
        fake.push(Scenario::reply(Reply::text("First answer.")));
        fake.push(Scenario::reply(Reply::text("Second answer.")));
        let (rt, _) = build(agent_on(&["openai:gpt-test"], policy), &[("openai", entry)]);
        let t = rt.say("c1", ANA, &first).await.unwrap();
        assert_eq!(t.handler.as_deref(), Some("help_agent"), "{policy:?}: {t:?}");
        let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
        assert_eq!(all_replies(&t), "Second answer.", "{policy:?}");
        let body = fake.requests()[1].body.clone();
        let text = body.to_string();
        assert!(!text.contains("4111") && !text.contains("ana@example.com"), "{policy:?} leaked PII: {text}");
        let msgs = body["messages"].as_array().unwrap();
        let system = msgs[0]["content"].as_str().unwrap();
        match policy {
            ContextPolicy::FullHistory => {
                // system, the first question, the first answer, the second question.
                assert_eq!(msgs.len(), 4, "{text}");
                assert!(msgs[1]["content"].as_str().unwrap().contains("[CARD_"), "{text}");
                assert_eq!(msgs[2]["content"], "First answer.");
            }
            ContextPolicy::Summary => {
                assert_eq!(msgs.len(), 2, "{text}");
                assert!(system.contains("Conversation summary:") && system.contains("[CARD_"), "{system}");
            }
            ContextPolicy::SlotsOnly => {
                assert_eq!(msgs.len(), 2, "{text}");
                assert!(system.contains("Known details:") && !system.contains("Conversation summary"), "{system}");
                assert!(!system.contains("[CARD_"), "{system}");
            }
        }
    }
}

#[tokio::test]
async fn the_tool_call_budget_stops_a_looping_model() {
    let (fake, entry) = openai_fake().await;
    for _ in 0..10 {
        fake.push(Scenario::reply(Reply::tool_call("list_recent_transfers", json!({}))));
    }
    let (rt, ex) = build(agent_on(&["openai:gpt-test"], ContextPolicy::Summary), &[("openai", entry)]);
    let budget = rt.assistant.spec().policies.budgets.max_tool_calls_per_turn as usize;
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(executed(&ex, "list_recent_transfers"), budget);
    // `budget` rounds that ran a tool, one refused, one without tools: then the offline handler.
    assert_eq!(fake.requests().len(), budget + 2);
    assert_eq!(fake.requests()[budget + 1].body["tool_choice"], "none");
    let notes = fallbacks(&t);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0]["reasons"][0].as_str().unwrap().contains("budget"), "{notes:?}");
    assert_eq!(t.handler.as_deref(), Some("faq"));
    assert!(!t.replies.is_empty());
}

#[tokio::test]
async fn the_token_budget_is_per_conversation() {
    let (fake, entry) = openai_fake().await;
    fake.push(Scenario::reply(Reply::text("A long answer that uses the budget.")));
    let (rt, _) = build(
        |s: &mut AssistantSpec| {
            agent_on(&["openai:gpt-test"], ContextPolicy::Summary)(s);
            s.policies.budgets.max_llm_tokens_per_conversation = 20;
        },
        &[("openai", entry)],
    );
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(all_replies(&t), "A long answer that uses the budget.");
    assert!(t.state.get("llm_usage").unwrap()["total_tokens"].as_u64().unwrap() >= 20);
    // The next turn finds the budget spent: no vendor call, the offline handler answers.
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(fake.requests().len(), 1);
    assert!(fallbacks(&t)[0]["reasons"][0].as_str().unwrap().contains("token budget"));
    assert_eq!(t.handler.as_deref(), Some("faq"));
}

#[tokio::test]
async fn a_down_vendor_falls_back_to_the_next_model_then_to_the_offline_handler() {
    // A closed port: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    let anthropic = FakeServer::start(Vendor::Anthropic).await.unwrap();
    anthropic.push(Scenario::reply(Reply::text("Answered by the second model.")));
    let (rt, _) = build(
        |s: &mut AssistantSpec| {
            agent_on(&["openai:gpt-down", "claude:claude-test"], ContextPolicy::Summary)(s);
            // Declared by the assistant, pointed at the fake by the server-style overrides.
            s.providers.insert("claude".into(), ProviderEntry::of_kind("anthropic"));
        },
        &[("openai", provider("openai", &closed)), ("claude", provider("anthropic", &anthropic.base_url()))],
    );
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(all_replies(&t), "Answered by the second model.");
    let call = &t.state.get_array("llm_calls")[0];
    assert_eq!(call["model"], "claude/claude-test");
    assert!(call["failures"][0].as_str().unwrap().starts_with("openai/gpt-down"), "{call}");

    // Both down (the fake answers 500 to the call and its retry): the offline FAQ answers.
    anthropic.push(Scenario::fault(Fault::Status { status: 500, retry_after: None, message: None }));
    anthropic.push(Scenario::fault(Fault::Status { status: 500, retry_after: None, message: None }));
    let t = rt.say("c2", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(t.status, switchboard_engine::RunStatus::Completed);
    assert_eq!(t.handler.as_deref(), Some("faq"));
    assert!(all_replies(&t).contains("(Source: "), "{t:?}");
    let notes = fallbacks(&t);
    assert!(notes[0]["reasons"][0].as_str().unwrap().contains("no model answered"), "{notes:?}");
}

/// `help_agent` with `freeze_card` (approval required, as in the card flow); the model asks to
/// freeze the card ending `last4`, then says `then`.
async fn agent_that_freezes(last4: &str, then: &str) -> (FakeServer, Runtime, FakeExchange) {
    let (fake, entry) = openai_fake().await;
    fake.push(Scenario::reply(Reply::tool_call("freeze_card", json!({"last4": last4}))));
    fake.push(Scenario::reply(Reply::text(then)));
    let (rt, ex) = build(
        |s: &mut AssistantSpec| {
            agent_on(&["openai:gpt-test"], ContextPolicy::Summary)(s);
            let a = s.agents.get_mut("help_agent").unwrap();
            a.tools.push(toml::Spanned::new(0..0, "freeze_card".to_string()));
        },
        &[("openai", entry)],
    );
    (fake, rt, ex)
}

#[tokio::test]
async fn an_approval_required_tool_waits_for_a_human_then_the_model_confirms() {
    let (fake, rt, ex) = agent_that_freezes("4242", "Done: your card ending 4242 is frozen.").await;
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(t.status, switchboard_engine::RunStatus::Interrupted, "{t:?}");
    assert!(all_replies(&t).contains("asked a colleague to approve"), "{t:?}");
    assert_eq!(executed(&ex, "freeze_card"), 0);
    assert_eq!(ex.card("cust_001", "4242").unwrap().status, "active");
    let id = common::pending_id(&t);
    let pending = rt.pending_approvals("c1").await.unwrap();
    assert_eq!(pending[0]["tool"], "freeze_card");
    assert_eq!(pending[0]["flow"], "help_agent");

    let t = rt.approve("c1", ANA, &id, true, "maria").await.unwrap();
    assert_eq!(t.status, switchboard_engine::RunStatus::Completed, "{t:?}");
    assert_eq!(all_replies(&t), "Done: your card ending 4242 is frozen.");
    assert_eq!(ex.card("cust_001", "4242").unwrap().status, "frozen");
    assert_eq!(executed(&ex, "freeze_card"), 1);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let tool_msg = reqs[1].body["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").cloned().unwrap();
    assert!(tool_msg["content"].as_str().unwrap().contains("frozen"), "{tool_msg}");
}

#[tokio::test]
async fn a_denied_approval_is_reported_to_the_model_and_nothing_runs() {
    let (fake, rt, ex) = agent_that_freezes("1881", "A colleague did not approve freezing the card.").await;
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    let id = common::pending_id(&t);
    let t = rt.approve("c1", ANA, &id, false, "maria").await.unwrap();
    assert_eq!(all_replies(&t), "A colleague did not approve freezing the card.");
    assert_eq!(executed(&ex, "freeze_card"), 0);
    let body = fake.requests()[1].body.to_string();
    assert!(body.contains("did not approve"), "{body}");
}

#[tokio::test]
async fn the_faq_answer_is_generated_from_the_retrieved_passages_only() {
    let (fake, entry) = openai_fake().await;
    fake.push(Scenario::reply(Reply::text("Network fees go to the blockchain's validators, not to us [1].")));
    let (rt, _) = build(|s: &mut AssistantSpec| s.faq.models = vec!["openai:gpt-test".into()], &[("openai", entry)]);
    let t = rt.say("c1", ANA, "Why do I pay a network fee when I withdraw ETH?").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("faq"), "{t:?}");
    let reply = all_replies(&t);
    assert!(reply.starts_with("Network fees go to the blockchain's validators, not to us."), "{reply}");
    assert!(reply.contains("(Source: "), "{reply}");
    let faq = t.state.get("faq").unwrap();
    assert_eq!(faq["generated"], true);
    let req = &fake.requests()[0].body;
    let system = req["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("ONLY the numbered help-centre passages"), "{system}");
    assert!(system.contains("[1] "), "{system}");
    // The cited title is the first passage's.
    let title = system.split("[1] ").nth(1).unwrap().split(':').next().unwrap();
    assert!(reply.contains(&format!("(Source: {title})")), "{reply} / {title}");

    // The vendor fails: the extractive answer, as without a model.
    fake.push(Scenario::fault(Fault::Status { status: 503, retry_after: None, message: None }));
    fake.push(Scenario::fault(Fault::Status { status: 503, retry_after: None, message: None }));
    let t = rt.say("c2", ANA, "Why do I pay a network fee when I withdraw ETH?").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("faq"));
    assert!(t.state.get("faq").unwrap().get("generated").is_none());
    assert!(all_replies(&t).contains("(Source: "));
}

#[tokio::test]
async fn without_a_key_the_assistant_stays_offline() {
    let (fake, mut entry) = openai_fake().await;
    entry.api_key_env = Some("SWITCHBOARD_TEST_SURELY_UNSET_KEY".into());
    let (rt, _) = build(agent_on(&["openai:gpt-test"], ContextPolicy::Summary), &[("openai", entry)]);
    assert!(rt.assistant.llm().is_none());
    let t = rt.say("c1", ANA, WITHDRAWAL).await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("faq"));
    assert!(fallbacks(&t).is_empty());
    assert!(fake.requests().is_empty());
}
