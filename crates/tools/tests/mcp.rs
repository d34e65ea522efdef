//! MCP client tools against a real MCP server: `tests/python/interop/mcp_server.py` on the official
//! Python `mcp` SDK, over stdio (spawned by the client) and Streamable HTTP.
//!
//! The server needs the Python test environment: set `SWITCHBOARD_VENV` to a venv with the pinned
//! `tests/python/*/requirements.txt` (`scripts/test` runs this file again once it has built it).
//! Without it every test here says SKIPPED on stderr and passes.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_engine::{
    END, Engine, EngineConfig, Field, GraphBuilder, MemoryStore, NodeInput, Reducer, RunStatus, START, Schema, Update,
};
use switchboard_tools::mcp::{McpServer, McpServerConfig};
use switchboard_tools::{ProviderRules, ToolError, ToolProvider, Toolbox};

/// The venv's Python, when it can import the `mcp` SDK.
fn python() -> Option<PathBuf> {
    switchboard_testkit::python::venv_python("mcp.server.mcpserver")
}

fn script() -> String {
    switchboard_testkit::python::mcp_server_script()
}

fn stdio_config(py: &std::path::Path) -> McpServerConfig {
    let mut c = McpServerConfig::stdio("bank", py.display().to_string(), &[&script(), "stdio"]);
    c.call_timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(30);
    c.reconnect_backoff = Duration::ZERO;
    c
}

fn rules() -> ProviderRules {
    ProviderRules {
        allow: Some(
            ["get_balance", "freeze_account", "slow", "crash", "add_tool", "late_tool"].map(String::from).to_vec(),
        ),
        approval_required: BTreeMap::from([("freeze_account".to_string(), "freezing blocks all payments".to_string())]),
    }
}

fn toolbox(server: Arc<McpServer>) -> Toolbox {
    Toolbox::new().with_provider(server, rules()).allow("support", ["bank__*"]).allow("faq", ["bank__get_balance"])
}

#[tokio::test]
async fn stdio_tools_are_listed_at_start_and_called() {
    let Some(py) = python() else { return };
    let server = McpServer::start(stdio_config(&py)).await;
    let names: Vec<String> = server.tools().into_iter().map(|t| t.name).collect();
    for t in ["get_balance", "freeze_account", "slow", "crash", "add_tool"] {
        assert!(names.contains(&t.to_string()), "{t} missing from {names:?}");
    }
    let bal = server.tools().into_iter().find(|t| t.name == "get_balance").unwrap();
    assert_eq!(bal.input_schema["required"], json!(["account"]));

    let out = server.call("get_balance", json!({"account": "acc_1"})).await.unwrap();
    assert!(out.text.contains("120.50 EUR"), "{out:?}");
    assert!(!out.is_error);
    // A tool that fails is a result the caller reads, not a protocol error.
    let out = server.call("get_balance", json!({"account": "acc_9"})).await.unwrap();
    assert!(out.is_error && out.text.contains("acc_9"), "{out:?}");
    assert!(matches!(server.call("drop_tables", json!({})).await, Err(ToolError::UnknownTool(_))));
    assert!(matches!(server.call("get_balance", json!(["acc_1"])).await, Err(ToolError::Policy(_))));
}

#[tokio::test]
async fn the_policy_applies_allow_lists_and_schemas() {
    let Some(py) = python() else { return };
    let server = Arc::new(McpServer::start(stdio_config(&py)).await);
    let tb = Toolbox::new()
        .with_provider(server, ProviderRules { allow: Some(vec!["get_balance".into()]), ..rules() })
        .allow("support", ["bank__*"])
        .allow("faq", ["bank__get_balance"]);
    let offered: Vec<String> = tb.tools_for("support").into_iter().map(|t| t.name).collect();
    assert_eq!(offered, ["bank__get_balance"]);
    // Outside the server's allow-list: not offered, unknown.
    let r = tb.call("c1", "support", "bank__crash", json!({})).await;
    assert!(matches!(r, Err(ToolError::UnknownTool(_))), "{r:?}");
    // Outside the agent's allow-list.
    let tb = toolbox(Arc::new(McpServer::start(stdio_config(&py)).await));
    let r = tb.call("c1", "faq", "bank__freeze_account", json!({"account": "acc_1", "reason": "x"})).await;
    assert!(matches!(&r, Err(ToolError::Policy(m)) if m.contains("may not call")), "{r:?}");
    // Arguments checked against the tool's own inputSchema, before the server sees them.
    let r = tb.call("c1", "faq", "bank__get_balance", json!({"account": 12})).await;
    assert!(matches!(&r, Err(ToolError::Policy(m)) if m.contains("invalid")), "{r:?}");
    let r = tb.call("c1", "faq", "bank__get_balance", json!({})).await;
    assert!(matches!(&r, Err(ToolError::Policy(_))), "{r:?}");
    // Approval-required tools do not run outside a graph run.
    let r = tb.call("c1", "support", "bank__freeze_account", json!({"account": "acc_1", "reason": "x"})).await;
    assert!(matches!(&r, Err(ToolError::Policy(m)) if m.contains("approval")), "{r:?}");
    let ok = tb.call("c1", "faq", "bank__get_balance", json!({"account": "acc_1"})).await.unwrap();
    assert!(ok.text.contains("120.50"));
}

/// A one-node flow: calls the tool named in the input, replies with the result or a fallback.
fn tool_flow(tb: Arc<Toolbox>) -> Engine {
    let schema = Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("call"))
            .build()
            .unwrap(),
    );
    let graph = GraphBuilder::new(schema)
        .node("act", move |i: NodeInput| {
            let tb = tb.clone();
            async move {
                let call = i.state.get("call").cloned().unwrap_or_default();
                let tool = call["tool"].as_str().unwrap_or_default().to_string();
                let reply = match tb.call_in_node(&i.ctx, "support", &tool, call["args"].clone()).await? {
                    Ok(out) if !out.is_error => out.text,
                    Ok(out) => format!("the tool failed: {}", out.text),
                    Err(ToolError::Denied(_)) => "OK, I did not do it.".to_string(),
                    Err(e) if e.is_retryable() => format!("Sorry, that system is unavailable right now ({e})."),
                    Err(e) => format!("I cannot do that: {e}"),
                };
                Ok(Update::new().set("messages", json!({"role": "assistant", "content": reply})).into())
            }
        })
        .edge(START, "act")
        .edge("act", END)
        .build()
        .unwrap();
    Engine::new(graph, Arc::new(MemoryStore::new()), EngineConfig::default())
}

fn last_reply(out: &switchboard_engine::RunOutcome) -> String {
    out.state.get_array("messages").last().unwrap()["content"].as_str().unwrap().to_string()
}

fn ask(tool: &str, args: Value) -> Update {
    Update::new()
        .set("call", json!({"tool": tool, "args": args}))
        .set("messages", json!({"role": "user", "content": format!("please run {tool}")}))
}

#[tokio::test]
async fn an_approval_required_tool_waits_for_a_human() {
    let Some(py) = python() else { return };
    let tb = Arc::new(toolbox(Arc::new(McpServer::start(stdio_config(&py)).await)));
    let engine = tool_flow(tb.clone());
    let args = json!({"account": "acc_1", "reason": "card 4111 1111 1111 1111 stolen"});
    let out = engine.invoke("conv-1", ask("bank__freeze_account", args.clone())).await.unwrap();
    assert_eq!(out.status, RunStatus::Interrupted);
    let p = &out.interrupts[0].payload;
    assert_eq!(p["type"], "approval");
    assert_eq!(p["tool"], "bank__freeze_account");
    // The approver sees the arguments masked.
    assert_eq!(p["args"]["reason"], "card [CARD] stolen", "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    // Denied: the tool never runs.
    let out = engine.resume("conv-1", json!({"approve": false, "by": "agent-7"})).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    assert_eq!(last_reply(&out), "OK, I did not do it.");

    let out = engine.invoke("conv-2", ask("bank__freeze_account", args)).await.unwrap();
    assert_eq!(out.status, RunStatus::Interrupted);
    assert_ne!(out.interrupts[0].payload["id"], id, "another conversation, another approval");
    let id2 = out.interrupts[0].payload["id"].as_str().unwrap().to_string();
    let out = engine.resume("conv-2", json!({"approve": true, "id": id2, "by": "agent-7"})).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    // The first freeze the server ever ran: the denied one did not reach it.
    assert!(last_reply(&out).contains("freezes so far: 1"), "{}", last_reply(&out));
    // A tool without approval runs straight away.
    let out = engine.invoke("conv-3", ask("bank__get_balance", json!({"account": "acc_1"}))).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    assert!(last_reply(&out).contains("120.50 EUR"));
}

#[tokio::test]
async fn a_slow_tool_times_out_and_the_server_stays_usable() {
    let Some(py) = python() else { return };
    let mut cfg = stdio_config(&py);
    cfg.call_timeout = Duration::from_millis(700);
    let tb = Arc::new(toolbox(Arc::new(McpServer::start(cfg).await)));
    let engine = tool_flow(tb);
    let t = Instant::now();
    let out = engine.invoke("slow-1", ask("bank__slow", json!({"seconds": 30}))).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.status, RunStatus::Completed);
    assert!(last_reply(&out).contains("unavailable right now") && last_reply(&out).contains("did not answer"));
    let out = engine.invoke("slow-1", ask("bank__get_balance", json!({"account": "acc_1"}))).await.unwrap();
    assert!(last_reply(&out).contains("120.50 EUR"), "{}", last_reply(&out));
}

#[tokio::test]
async fn a_server_that_dies_mid_conversation_is_handled_and_respawned() {
    let Some(py) = python() else { return };
    let server = Arc::new(McpServer::start(stdio_config(&py)).await);
    let tb = Arc::new(toolbox(server.clone()));
    let engine = tool_flow(tb);
    let out = engine.invoke("dies", ask("bank__get_balance", json!({"account": "acc_1"}))).await.unwrap();
    assert!(last_reply(&out).contains("120.50 EUR"));
    let t = Instant::now();
    let out = engine.invoke("dies", ask("bank__crash", json!({}))).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed, "the conversation is not stuck");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(last_reply(&out).contains("unavailable"), "{}", last_reply(&out));
    // The next turn respawns the server and works.
    let out = engine.invoke("dies", ask("bank__get_balance", json!({"account": "acc_1"}))).await.unwrap();
    assert!(last_reply(&out).contains("120.50 EUR"), "{}", last_reply(&out));
    assert!(server.is_connected().await);
}

#[tokio::test]
async fn the_tool_list_is_refreshed_on_list_changed() {
    let Some(py) = python() else { return };
    let mut cfg = stdio_config(&py);
    cfg.refresh_interval = None; // only the notification can refresh it
    let server = Arc::new(McpServer::start(cfg).await);
    let tb = toolbox(server.clone());
    assert!(!tb.tools().iter().any(|t| t.name == "bank__late_tool"));
    let out = tb.call("c", "support", "bank__add_tool", json!({"name": "late_tool"})).await.unwrap();
    assert_eq!(out.text, "added late_tool");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tb.tools().iter().any(|t| t.name == "bank__late_tool") {
        assert!(Instant::now() < deadline, "list_changed did not refresh the list: {:?}", server.tools());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = tb.call("c", "support", "bank__late_tool", json!({})).await.unwrap();
    assert_eq!(out.text, "late_tool ran");
}

#[tokio::test]
async fn a_server_that_cannot_start_or_speaks_garbage_is_unavailable_not_stuck() {
    let Some(py) = python() else { return };
    let mut cfg = McpServerConfig::stdio("ghost", "/nonexistent/mcp-server", &[]);
    cfg.connect_timeout = Duration::from_secs(3);
    let t = Instant::now();
    let server = McpServer::start(cfg).await;
    assert!(server.tools().is_empty());
    assert!(server.last_error().await.unwrap().contains("cannot start"));
    let err = server.refresh().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    // Prints garbage on stdout and never answers.
    let mut cfg = McpServerConfig::stdio(
        "garbage",
        py.display().to_string(),
        &["-c", "import time; print('<html>not mcp</html>', flush=True); time.sleep(60)"],
    );
    cfg.connect_timeout = Duration::from_secs(3);
    let server = McpServer::start(cfg).await;
    assert!(server.tools().is_empty());
    assert!(server.refresh().await.unwrap_err().is_retryable());
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

/// A Streamable HTTP server in its own process on a free port.
struct HttpServer {
    child: std::process::Child,
    url: String,
}

impl HttpServer {
    fn start(py: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(py)
            .args([&script(), "http", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the MCP HTTP server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, url: format!("http://127.0.0.1:{port}/mcp") }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn streamable_http_tools_work_and_a_dead_server_fails_fast() {
    let Some(py) = python() else { return };
    let mut http = HttpServer::start(&py);
    let mut cfg = McpServerConfig::http("bank", http.url.clone());
    cfg.call_timeout = Duration::from_secs(5);
    cfg.reconnect_backoff = Duration::ZERO;
    let server = Arc::new(McpServer::start(cfg).await);
    assert!(server.tools().iter().any(|t| t.name == "get_balance"), "{:?}", server.last_error().await);
    let tb = Arc::new(toolbox(server));
    let engine = tool_flow(tb);
    let out = engine.invoke("h1", ask("bank__get_balance", json!({"account": "acc_1"}))).await.unwrap();
    assert!(last_reply(&out).contains("120.50 EUR"), "{}", last_reply(&out));
    // The server dies between two turns.
    http.child.kill().unwrap();
    http.child.wait().unwrap();
    let t = Instant::now();
    let out = engine.invoke("h1", ask("bank__get_balance", json!({"account": "acc_1"}))).await.unwrap();
    assert_eq!(out.status, RunStatus::Completed);
    assert!(last_reply(&out).contains("unavailable"), "{}", last_reply(&out));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}
