//! `[remote_agents]`: the staking intent delegated to a scripted A2A agent on a real socket
//! (JSON-RPC over HTTP, streamed with SSE): redacted context, streamed reply, an input-required
//! exchange over two customer messages, other intents staying local, and the fallback handler when
//! the agent is down, hangs or answers garbage.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{ANA, all_replies, config_path};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_assistant::{AssistantSpec, Runtime, TurnView};

const STAKING: &str = "when do I get my staking rewards?";

#[derive(Clone, Copy)]
enum Mode {
    Normal,
    Hang,
    Garbage,
    /// Answers with a full card number, as a careless remote agent might.
    Leaky,
}

#[derive(Clone)]
struct Agent {
    mode: Mode,
    url: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<Value>>>,
}

fn sse(events: &[Value]) -> Response {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn result(id: &Value, r: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": r})
}

async fn card(AxState(a): AxState<Agent>) -> Response {
    let url = format!("{}/rpc", a.url.lock().unwrap());
    axum::Json(json!({
        "name": "earn", "description": "Scripted staking specialist", "version": "1.0.0",
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": true}, "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "staking", "name": "Staking", "description": "Staking", "tags": ["earn"]}],
    }))
    .into_response()
}

/// The script: a continued task completes with what it was told; "stake my" asks how much;
/// anything else streams an answer in two chunks that quotes the context it received.
async fn rpc(AxState(a): AxState<Agent>, body: String) -> Response {
    let req: Value = serde_json::from_str(&body).unwrap_or_default();
    a.seen.lock().unwrap().push(req.clone());
    match a.mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return ().into_response();
        }
        Mode::Garbage => return sse(&[json!("<html>oops</html>")]),
        Mode::Leaky => {
            let update = json!({"taskId": "t1", "contextId": "c1", "status": {"state": "TASK_STATE_COMPLETED"},
                "artifact": {"artifactId": "a1", "parts": [{"text": "Staked with the card 4111 1111 1111 1111, thanks."}]}});
            let mut parts = update.clone();
            parts.as_object_mut().unwrap().remove("status");
            let mut done = update;
            done.as_object_mut().unwrap().remove("artifact");
            return sse(&[
                result(&req["id"], json!({"artifactUpdate": parts})),
                result(&req["id"], json!({"statusUpdate": done})),
            ]);
        }
        Mode::Normal => {}
    }
    let id = &req["id"];
    let msg = &req["params"]["message"];
    let text: String = msg["parts"].as_array().unwrap().iter().filter_map(|p| p["text"].as_str()).collect();
    let ids = json!({"taskId": "t1", "contextId": "c1"});
    if msg["taskId"] == "t1" {
        let task = json!({"id": "t1", "contextId": "c1", "status": {"state": "TASK_STATE_COMPLETED"},
                          "artifacts": [{"artifactId": "a9", "parts": [{"text": format!("Staked {text}.")}]}]});
        return axum::Json(result(id, json!({"task": task}))).into_response();
    }
    if text.contains("stake my") {
        let status = json!({"state": "TASK_STATE_INPUT_REQUIRED", "message": {"role": "ROLE_AGENT", "messageId": "q1", "parts": [{"text": "How much would you like to stake?"}]}});
        return sse(&[result(id, json!({"statusUpdate": {"taskId": "t1", "contextId": "c1", "status": status}}))]);
    }
    let data: Vec<&Value> = msg["parts"].as_array().unwrap().iter().filter_map(|p| p.get("data")).collect();
    let mut first = ids.clone();
    first["artifact"] = json!({"artifactId": "a1", "parts": [{"text": "Rewards are paid every Monday. "}]});
    let mut second = ids.clone();
    second["artifact"] = json!({"artifactId": "a1", "parts": [{"text": format!("(context: {})", json!(data))}]});
    second["append"] = json!(true);
    let mut done = ids;
    done["status"] = json!({"state": "TASK_STATE_COMPLETED"});
    sse(&[
        result(id, json!({"artifactUpdate": first})),
        result(id, json!({"artifactUpdate": second})),
        result(id, json!({"statusUpdate": done})),
    ])
}

async fn spawn_agent(mode: Mode) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let agent = Agent { mode, url: Arc::new(Mutex::new(url.clone())), seen: Arc::default() };
    let seen = agent.seen.clone();
    let app =
        axum::Router::new().route("/.well-known/agent-card.json", get(card)).route("/rpc", post(rpc)).with_state(agent);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// The reference assistant with its staking specialist at `url`.
fn with_remote(url: Option<&str>, timeout_ms: u64) -> Runtime {
    let mut spec = AssistantSpec::load(&config_path()).unwrap();
    let r = spec.remote_agents.get_mut("earn_specialist").unwrap();
    r.url_env = None;
    r.url = url.map(|u| toml::Spanned::new(0..0, u.to_string()));
    r.context = switchboard_interop::a2a::client::ContextPolicy::Full;
    r.timeout_ms = timeout_ms;
    r.idle_timeout_ms = timeout_ms;
    common::build(spec).0
}

async fn say(rt: &Runtime, conv: &str, text: &str) -> (TurnView, String) {
    let mut tokens = String::new();
    let mut on = |t: &str| tokens.push_str(t);
    let f = rt.say_streaming(conv, ANA, text, Some(&mut on));
    let t = tokio::time::timeout(Duration::from_secs(20), f).await.expect("the turn finished").unwrap();
    (t, tokens)
}

fn trace(t: &TurnView) -> Vec<Value> {
    t.state.get_array("routing_trace").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staking_intent_is_delegated_with_redacted_context_and_a_streamed_reply() {
    let (url, seen) = spawn_agent(Mode::Normal).await;
    let rt = with_remote(Some(&url), 5_000);
    say(&rt, "r1", "hello, my email is ana@example.com").await;
    assert!(seen.lock().unwrap().is_empty(), "a greeting stays local");
    let (t, tokens) = say(&rt, "r1", STAKING).await;
    let reply = all_replies(&t);
    assert!(reply.starts_with("Rewards are paid every Monday. (context: "), "{reply}");
    assert_eq!(t.handler.as_deref(), Some("earn_specialist"));
    assert_eq!(t.routing.as_ref().unwrap()["handler"], "earn_specialist");
    assert_eq!(t.routing.as_ref().unwrap()["intent"], "staking");
    // Streamed once, by `respond` after the output guard, never as the remote's raw chunks.
    // (`say_streaming` subscribes after the run has started, so a fast run may deliver no token to
    // it at all; the Python test checks the streaming through the server.)
    assert!(tokens.is_empty() || tokens == reply, "{tokens:?}");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req["method"], "SendStreamingMessage");
    let shared = req["params"]["message"]["parts"][1]["data"].to_string();
    assert!(shared.contains("history") && shared.contains("[EMAIL"), "{shared}");
    assert!(!shared.contains("ana@example.com") && !reply.contains("ana@example.com"), "{shared}");

    // Another intent goes to the local flow.
    let (t, _) = say(&rt, "r1", "I lost my card, please freeze it").await;
    assert_eq!(t.handler.as_deref(), Some("card_freeze"));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_reply_reaches_the_customer_only_through_the_output_guard() {
    let (url, _) = spawn_agent(Mode::Leaky).await;
    let rt = with_remote(Some(&url), 5_000);
    let (t, tokens) = say(&rt, "r9", STAKING).await;
    assert_eq!(t.handler.as_deref(), Some("earn_specialist"));
    let reply = all_replies(&t);
    assert!(reply.starts_with("Staked with the card"), "{reply}");
    for text in [&reply, &tokens] {
        assert!(!text.contains("4111 1111 1111 1111") && !text.contains("4111111111111111"), "{text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_required_keeps_the_conversation_with_the_remote_until_it_completes() {
    let (url, seen) = spawn_agent(Mode::Normal).await;
    let rt = with_remote(Some(&url), 5_000);
    let (t, tokens) = say(&rt, "r2", "I want to stake my SOL").await;
    assert_eq!(all_replies(&t), "How much would you like to stake?");
    assert!(tokens.is_empty() || tokens == "How much would you like to stake?", "{tokens:?}");
    assert_eq!(t.state.get("remote").unwrap()["task"]["task_id"], "t1");
    // The answer alone would route elsewhere; it goes to the remote task that asked for it.
    let (t, _) = say(&rt, "r2", "12.5").await;
    assert_eq!(all_replies(&t), "Staked 12.5.");
    assert_eq!(t.handler.as_deref(), Some("earn_specialist"));
    assert!(t.state.get("remote").is_none_or(Value::is_null));
    let second = seen.lock().unwrap()[1].clone();
    assert_eq!(second["params"]["message"]["taskId"], "t1");
    assert_eq!(second["params"]["message"]["parts"].as_array().unwrap().len(), 1, "no context on a continuation");
    // Completed: the next message is routed again.
    let (t, _) = say(&rt, "r2", "I lost my card, please freeze it").await;
    assert_eq!(t.handler.as_deref(), Some("card_freeze"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_pattern_leaves_a_waiting_remote() {
    let (url, _) = spawn_agent(Mode::Normal).await;
    let rt = with_remote(Some(&url), 5_000);
    say(&rt, "r3", "I want to stake my SOL").await;
    let (t, _) = say(&rt, "r3", "I want to talk to a human").await;
    assert_eq!(t.handler.as_deref(), Some("handoff"));
    assert!(t.state.get("remote").is_none_or(Value::is_null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_is_down_hangs_or_sends_garbage_gets_the_fallback() {
    let (hang, _) = spawn_agent(Mode::Hang).await;
    let (garbage, _) = spawn_agent(Mode::Garbage).await;
    for url in ["http://127.0.0.1:9", hang.as_str(), garbage.as_str()] {
        let rt = with_remote(Some(url), 700);
        let started = std::time::Instant::now();
        let (t, _) = say(&rt, "r4", STAKING).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{url}: {:?}", started.elapsed());
        assert_eq!(t.handler.as_deref(), Some("faq"), "{url}");
        assert!(all_replies(&t).contains("(Source: Staking"), "{url}: {}", all_replies(&t));
        let note = trace(&t).into_iter().find(|n| n["outcome"] == "fallback").expect("a fallback note");
        assert_eq!(note["remote_agent"], "earn_specialist");
        assert_eq!(note["handler"], "faq");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_url_the_intent_keeps_its_route() {
    let rt = with_remote(None, 5_000);
    let (t, _) = say(&rt, "r5", STAKING).await;
    assert_eq!(t.handler.as_deref(), Some("faq"));
    assert_eq!(t.routing.as_ref().unwrap()["handler"], "faq");
}

#[test]
fn remote_agent_config_errors_name_the_line() {
    let text = std::fs::read_to_string(config_path()).unwrap();
    let bad = text.replace("fallback = \"faq\"\n\n[faq]", "fallback = \"nowhere\"\n\n[faq]");
    assert_ne!(bad, text);
    let e = AssistantSpec::parse(&bad, &config_path()).unwrap_err();
    assert!(e.message.contains("fallback `nowhere`"), "{e}");
    assert!(e.line > 0 && bad.lines().nth(e.line - 1).unwrap().contains("nowhere"), "{e}");
    let twice = text.replace("intents = [\"staking\"]", "intents = [\"staking\", \"staking\"]");
    let e = AssistantSpec::parse(&twice, &config_path()).unwrap_err();
    assert!(e.message.contains("delegated to both"), "{e}");
    let url = text.replace("url_env = \"SWITCHBOARD_EARN_AGENT_URL\"", "url = \"ftp://x\"");
    let e = AssistantSpec::parse(&url, &config_path()).unwrap_err();
    assert!(e.message.contains("not an http(s) URL"), "{e}");
}
