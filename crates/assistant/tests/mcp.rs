//! `[[mcp_servers]]`: the reference assistant's LLM agent (`help_agent`, on the testkit's fake
//! OpenAI server scripting its tool calls) calls tools of a real MCP server,
//! `tests/python/interop/mcp_server.py` on the official Python `mcp` SDK over stdio, under the tool
//! policy: the server's allow-list, argument validation, an approval-required tool that waits for a
//! human, and a server that dies or never starts (an error result for the model, not a stuck turn).
//!
//! The server needs the Python test environment: set `SWITCHBOARD_VENV` to a venv with the pinned
//! `tests/python/*/requirements.txt` (`scripts/test` runs this file again once it has built it).
//! Without it every test here says SKIPPED on stderr and passes.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{ANA, all_replies, config_path};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_assistant::{AssistantOptions, AssistantSpec, ExchangeAssistant, Runtime, TurnView};
use switchboard_engine::{MemoryStore, RunStatus};
use switchboard_providers::config::{ProviderEntry, ProvidersConfig};
use switchboard_testkit::{FakeServer, Reply, Scenario, Vendor};
use switchboard_tools::config::RawMcpServer;

/// The withdrawal question the config routes to `help_agent`.
const WITHDRAWAL: &str = "My crypto withdrawal to my external wallet has not arrived yet";

/// The venv's Python, when it can import the `mcp` SDK.
fn python() -> Option<String> {
    switchboard_testkit::python::venv_python("mcp.server.mcpserver").map(|p| p.display().to_string())
}

fn script() -> String {
    switchboard_testkit::python::mcp_server_script()
}

/// The `bank` server: `get_balance`, `freeze_account` (approval required) and `crash` offered.
fn bank(command: Vec<String>) -> RawMcpServer {
    RawMcpServer {
        name: "bank".into(),
        command: Some(command),
        url: None,
        token_env: None,
        env: BTreeMap::new(),
        allow: Some(vec!["get_balance".into(), "freeze_account".into(), "crash".into()]),
        approval_required: BTreeMap::from([("freeze_account".into(), "freezing blocks all payments".into())]),
        call_timeout_ms: Some(5_000),
        connect_timeout_ms: Some(20_000),
        refresh_interval_ms: Some(0),
    }
}

/// `help_agent` on the fake OpenAI server, with every tool of `server`.
async fn build(server: RawMcpServer, replies: Vec<Reply>) -> (FakeServer, Runtime) {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    for r in replies {
        fake.push(Scenario::reply(r));
    }
    let key_var = ["CARGO_MANIFEST_DIR", "PATH", "HOME"].iter().find(|v| std::env::var(v).is_ok()).unwrap();
    let entry = ProviderEntry {
        kind: "openai".into(),
        base_url: Some(format!("{}/v1", fake.base_url())),
        api_key_env: Some(key_var.to_string()),
        request_timeout_ms: Some(5_000),
        ..ProviderEntry::default()
    };
    let mut spec = AssistantSpec::load(&config_path()).unwrap();
    let a = spec.agents.get_mut("help_agent").unwrap();
    a.models = vec!["openai:gpt-test".into()];
    a.tools.push(toml::Spanned::new(0..0, "bank__*".to_string()));
    spec.faq.models.clear();
    spec.mcp_servers = vec![server];
    let mut opts = AssistantOptions::new(common::cache_dir());
    opts.sentence_encoder = false;
    opts.llm = Some(ProvidersConfig { providers: BTreeMap::from([("openai".into(), entry)]), ..Default::default() });
    let a = {
        let _g = common::BUILD_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ExchangeAssistant::from_spec(spec, opts).unwrap()
    };
    let engine = a.engine(Arc::new(MemoryStore::new()));
    (fake, Runtime::new(a, engine))
}

async fn say(rt: &Runtime, text: &str) -> TurnView {
    tokio::time::timeout(Duration::from_secs(60), rt.say("c1", ANA, text)).await.expect("the turn finished").unwrap()
}

fn tool_message(fake: &FakeServer, request: usize) -> Value {
    let body = fake.requests()[request].body.clone();
    body["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_calls_an_mcp_tool_under_the_tool_policy() {
    let Some(py) = python() else { return };
    let (fake, rt) = build(
        bank(vec![py, script(), "stdio".into()]),
        vec![
            Reply::tool_call("bank__get_balance", json!({"account": "acc_1"})),
            Reply::tool_call("bank__get_balance", json!({"acct": 7})),
            Reply::text("Your balance is 120.50 EUR."),
        ],
    )
    .await;
    let t = say(&rt, WITHDRAWAL).await;
    assert_eq!(t.handler.as_deref(), Some("help_agent"), "{t:?}");
    assert_eq!(all_replies(&t), "Your balance is 120.50 EUR.");
    // Offered: the server's allow-list, under qualified names, with the server's schemas.
    let first = &fake.requests()[0].body;
    let names: Vec<&str> =
        first["tools"].as_array().unwrap().iter().filter_map(|t| t["function"]["name"].as_str()).collect();
    for n in ["list_recent_transfers", "bank__get_balance", "bank__freeze_account", "bank__crash"] {
        assert!(names.contains(&n), "{n} not offered: {names:?}");
    }
    assert!(!names.contains(&"bank__slow") && !names.contains(&"bank__add_tool"), "{names:?}");
    // The call ran on the MCP server; the one with bad arguments was refused by the policy.
    assert!(tool_message(&fake, 1)["content"].as_str().unwrap().contains("acc_1: 120.50 EUR"));
    let refused = fake.requests()[2].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .cloned()
        .unwrap();
    assert!(refused["content"].as_str().unwrap().contains("tool policy"), "{refused}");
    assert_eq!(t.tool_calls[0]["via"], "mcp");
    assert_eq!(t.tool_calls[0]["name"], "bank__get_balance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_required_mcp_tool_waits_for_a_human() {
    let Some(py) = python() else { return };
    let (fake, rt) = build(
        bank(vec![py, script(), "stdio".into()]),
        vec![
            Reply::tool_call("bank__freeze_account", json!({"account": "acc_1", "reason": "stolen phone"})),
            Reply::text("Done: the account is frozen."),
        ],
    )
    .await;
    let t = say(&rt, WITHDRAWAL).await;
    assert_eq!(t.status, RunStatus::Interrupted, "{t:?}");
    assert!(t.tool_calls.is_empty(), "nothing ran before the approval: {:?}", t.tool_calls);
    let pending = rt.pending_approvals("c1").await.unwrap();
    assert_eq!(pending[0]["tool"], "bank__freeze_account");
    let id = common::pending_id(&t);
    let t = tokio::time::timeout(Duration::from_secs(60), rt.approve("c1", ANA, &id, true, "maria"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status, RunStatus::Completed, "{t:?}");
    assert_eq!(all_replies(&t), "Done: the account is frozen.");
    let content = tool_message(&fake, 1)["content"].as_str().unwrap().to_string();
    assert!(content.contains("frozen acc_1 (stolen phone); freezes so far: 1"), "{content}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_or_missing_mcp_server_is_an_error_for_the_model_not_a_stuck_turn() {
    let Some(py) = python() else { return };
    // The server dies mid-call.
    let (fake, rt) = build(
        bank(vec![py, script(), "stdio".into()]),
        vec![Reply::tool_call("bank__crash", json!({})), Reply::text("Sorry, I cannot reach that system right now.")],
    )
    .await;
    let t = say(&rt, WITHDRAWAL).await;
    assert_eq!(all_replies(&t), "Sorry, I cannot reach that system right now.");
    let m = tool_message(&fake, 1);
    assert!(m["content"].as_str().unwrap().contains("unavailable"), "{m}");
    assert!(t.tool_calls[0]["error"].is_string(), "{:?}", t.tool_calls);

    // The server never starts: it offers nothing, and a call to its tool is refused.
    let (fake, rt) = build(
        bank(vec!["/nonexistent/mcp-server".into()]),
        vec![
            Reply::tool_call("bank__get_balance", json!({"account": "acc_1"})),
            Reply::text("Let me connect you with a colleague."),
        ],
    )
    .await;
    let t = say(&rt, WITHDRAWAL).await;
    assert_eq!(all_replies(&t), "Let me connect you with a colleague.");
    let names = fake.requests()[0].body["tools"].to_string();
    assert!(!names.contains("bank__"), "{names}");
    assert!(tool_message(&fake, 1)["content"].as_str().unwrap().contains("unknown tool"));
}

#[test]
fn an_agent_tool_must_name_a_declared_mcp_server() {
    let text = std::fs::read_to_string(config_path()).unwrap();
    let bad =
        text.replace("tools = [\"list_recent_transfers\"]", "tools = [\"list_recent_transfers\", \"kb__search\"]");
    assert_ne!(bad, text);
    let e = AssistantSpec::parse(&bad, &config_path()).unwrap_err();
    assert!(e.message.contains("unknown tool `kb__search`"), "{e}");
    assert!(bad.lines().nth(e.line - 1).unwrap().contains("kb__search"), "{e}");
    let good = format!("{bad}\n[[mcp_servers]]\nname = \"kb\"\nurl = \"http://127.0.0.1:9/mcp\"\n");
    let spec = AssistantSpec::parse(&good, &config_path()).unwrap();
    assert_eq!(spec.tools_config().unwrap().access["help_agent"], vec!["kb__search".to_string()]);
}
