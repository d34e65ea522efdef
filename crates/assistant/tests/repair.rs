//! Conversation repair (cancel, correct, digress, restart, talk to a human), the handoff
//! lifecycle with the bot resuming its flow, the guard, and idempotent re-execution.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;
use switchboard_assistant::{HandoffStatus, ToolBackend, ToolCall};
use switchboard_engine::RunStatus;

#[tokio::test]
async fn cancel_a_flow_and_cancel_while_an_approval_waits() {
    let (rt, x) = setup();
    rt.say("c", ANA, "I lost my card").await.unwrap();
    let t = rt.say("c", ANA, "cancel").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("repair"));
    assert!(all_replies(&t).contains("stopped freezing a card"), "{}", all_replies(&t));
    assert_eq!(t.state.get("flows").unwrap(), &json!([]));
    rt.say("c", ANA, "I lost my card").await.unwrap();
    let t = rt.say("c", ANA, "4242").await.unwrap();
    assert_eq!(t.status, RunStatus::Interrupted);
    let t = rt.say("c", ANA, "never mind, don't freeze it").await.unwrap();
    assert_eq!(t.status, RunStatus::Completed, "{t:?}");
    assert!(t.interrupts.is_empty());
    assert!(rt.pending_approvals("c").await.unwrap().is_empty());
    assert_eq!(x.card("cust_001", "4242").unwrap().status, "active");
    assert!(rt.assistant.desk().queue().is_empty());
}

#[tokio::test]
async fn correct_a_slot_while_the_approval_waits() {
    let (rt, x) = setup();
    rt.say("c", ANA, "I lost my card").await.unwrap();
    let t = rt.say("c", ANA, "4242").await.unwrap();
    let first = pending_id(&t);
    let t = rt.say("c", ANA, "actually it's the card ending 1881").await.unwrap();
    assert_eq!(t.status, RunStatus::Interrupted);
    assert!(all_replies(&t).contains("changed the last4 to 1881"), "{}", all_replies(&t));
    let second = pending_id(&t);
    assert_ne!(first, second);
    assert_eq!(t.interrupts[0].payload["args"]["last4"], "1881");
    assert!(rt.approve("c", ANA, &first, true, "bea").await.is_err(), "the old approval is gone");
    let t = rt.approve("c", ANA, &second, true, "bea").await.unwrap();
    assert_eq!(t.tool_calls[0]["args"]["last4"], "1881");
    assert_eq!(x.card("cust_001", "1881").unwrap().status, "frozen");
    assert_eq!(x.card("cust_001", "4242").unwrap().status, "active");
}

#[tokio::test]
async fn correct_a_slot_during_slot_filling() {
    let (rt, _) = setup();
    rt.say("c", ANA, "my USDC deposit is missing").await.unwrap();
    let t = rt.say("c", ANA, "I sent it on arbitrum").await.unwrap();
    assert_eq!(t.slots["network"], "arbitrum");
    let t = rt.say("c", ANA, "actually it was on polygon").await.unwrap();
    assert_eq!(t.slots["network"], "polygon", "{t:?}");
    assert!(all_replies(&t).contains("changed the network to polygon"), "{}", all_replies(&t));
    assert!(all_replies(&t).contains("transaction hash"), "{}", all_replies(&t));
}

#[tokio::test]
async fn digress_to_the_faq_and_return_to_the_flow() {
    let (rt, _) = setup();
    rt.say("c", ANA, "I lost my card").await.unwrap();
    let t = rt.say("c", ANA, "how long does card delivery take?").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("faq"), "{t:?}");
    let r = all_replies(&t);
    assert!(r.contains("(Source: ") && r.contains("Back to freezing a card"), "{r}");
    let t = rt.say("c", ANA, "4242").await.unwrap();
    assert_eq!(t.status, RunStatus::Interrupted, "the flow goes on after the digression");
}

#[tokio::test]
async fn restart_drops_every_flow() {
    let (rt, _) = setup();
    rt.say("c", ANA, "I lost my card").await.unwrap();
    rt.say("c", ANA, "my ETH deposit is missing").await.unwrap();
    assert_eq!(rt.engine.state("c").await.unwrap().get("flows").unwrap().as_array().unwrap().len(), 2);
    let t = rt.say("c", ANA, "start over").await.unwrap();
    assert!(all_replies(&t).contains("start over"), "{}", all_replies(&t));
    assert_eq!(t.state.get("flows").unwrap(), &json!([]));
}

#[tokio::test]
async fn human_handoff_lifecycle_and_the_bot_resumes_its_flow() {
    let (rt, _) = setup();
    rt.say("c", ANA, "my ETH deposit is missing").await.unwrap();
    let t = rt.say("c", ANA, "can I talk to a person?").await.unwrap();
    assert_eq!(t.handoff.status, HandoffStatus::Queued);
    assert_eq!(t.handoff.resume_flow.as_deref(), Some("crypto_deposit_missing"));
    let summary = t.handoff.summary.clone().unwrap();
    assert!(summary.contains("tracking a crypto deposit") && summary.contains("asset=ETH"), "{summary}");
    let q = rt.assistant.desk().queue();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].sla_due_ms - q[0].queued_at_ms, 900_000);
    // While queued, the bot does not take over again.
    let t = rt.say("c", ANA, "hello?").await.unwrap();
    assert!(all_replies(&t).contains("shortly"), "{}", all_replies(&t));
    assert!(rt.hand_back("c", ANA, "bea").await.is_err(), "nobody claimed it yet");
    let t = rt.claim("c", ANA, "bea").await.unwrap();
    assert_eq!(t.handoff.status, HandoffStatus::AgentAssigned);
    assert!(all_replies(&t).contains("bea"));
    assert!(rt.claim("c", ANA, "other").await.is_err());
    let t =
        rt.agent_message("c", ANA, "bea", "Hi Ana, my email is bea.agent@example.com, looking into it").await.unwrap();
    assert_eq!(t.handoff.status, HandoffStatus::AgentActive);
    let stored = t.state.get_array("messages").last().unwrap().clone();
    assert_eq!(stored["role"], "agent");
    assert!(!stored["content"].as_str().unwrap().contains("bea.agent@example.com"), "{stored}");
    let t = rt.say("c", ANA, "thanks").await.unwrap();
    assert!(t.replies.is_empty(), "the bot stays silent while the agent is active");
    let t = rt.hand_back("c", ANA, "bea").await.unwrap();
    assert_eq!(t.handoff.status, HandoffStatus::ReturnedToBot);
    assert!(all_replies(&t).contains("Back to tracking a crypto deposit"), "{}", all_replies(&t));
    assert!(rt.assistant.desk().queue().is_empty());
    let t = rt.say("c", ANA, "ethereum").await.unwrap();
    assert!(all_replies(&t).contains("transaction hash"), "{}", all_replies(&t));
    let statuses: Vec<&str> = t.handoff.history.iter().map(|h| h.status.as_str()).collect();
    assert_eq!(statuses, ["handoff-requested", "queued", "agent-assigned", "agent-active", "returned-to-bot"]);
}

#[tokio::test]
async fn approval_granted_by_the_agent_after_a_handoff() {
    let (rt, x) = setup();
    rt.say("c", ANA, "I lost my card").await.unwrap();
    let t = rt.say("c", ANA, "4242").await.unwrap();
    let id = pending_id(&t);
    // The customer asks for a human while the approval waits; an agent claims and approves.
    let t = rt.say("c", ANA, "I want to talk to a human").await.unwrap();
    assert_eq!(t.status, RunStatus::Interrupted);
    assert_eq!(t.handoff.reason.as_deref(), Some("customer_request"));
    rt.claim("c", ANA, "bea").await.unwrap();
    let t = rt.approve("c", ANA, &id, true, "bea").await.unwrap();
    assert_eq!(x.card("cust_001", "4242").unwrap().status, "frozen");
    assert_eq!(t.handoff.status, HandoffStatus::AgentAssigned, "the agent keeps the conversation");
    let t = rt.hand_back("c", ANA, "bea").await.unwrap();
    assert!(all_replies(&t).contains("replacement"), "{}", all_replies(&t));
    let t = rt.say("c", ANA, "no thanks").await.unwrap();
    assert!(all_replies(&t).contains("no replacement"), "{}", all_replies(&t));
}

#[tokio::test]
async fn guard_redacts_card_numbers_and_recovery_phrases() {
    let (rt, _) = setup();
    let t = rt.say("c", ANA, "my card 4111 1111 1111 1111 was stolen").await.unwrap();
    let all = t.state.to_json().to_string();
    assert!(!all.contains("4111 1111 1111 1111") && !all.contains("4111111111111111"), "the PAN is stored nowhere");
    assert!(all_replies(&t).contains("ending 1111"), "{}", all_replies(&t));
    let phrase = "abandon ability able about above absent absorb abstract absurd abuse access accident";
    let t = rt.say("d", ANA, &format!("support asked for my recovery phrase, here it is: {phrase}")).await.unwrap();
    let r = all_replies(&t);
    assert!(r.contains("never ask for your recovery phrase"), "{r}");
    assert!(!t.state.to_json().to_string().contains("absurd abuse"), "the phrase is not stored");
    assert_eq!(t.handoff.priority.as_deref(), Some("urgent"));
}

#[tokio::test]
async fn idempotent_re_execution() {
    let (rt, x) = setup();
    rt.say("c", ANA, "I lost my card").await.unwrap();
    let t = rt.say("c", ANA, "4242").await.unwrap();
    let t = rt.approve("c", ANA, &pending_id(&t), true, "bea").await.unwrap();
    let call = &t.tool_calls[0];
    let before = x.executed().len();
    // A retried or resumed run presents the same key: the stored result comes back, nothing runs.
    let again = x
        .call(&ToolCall {
            name: "freeze_card".into(),
            customer_id: "cust_001".into(),
            args: call["args"].clone(),
            idempotency_key: Some(call["idempotency_key"].as_str().unwrap().into()),
            conversation_id: None,
        })
        .unwrap();
    assert_eq!(again, call["result"]);
    assert_eq!(x.executed().len(), before);
    // The same key with other arguments is refused.
    let other = x.call(&ToolCall {
        name: "freeze_card".into(),
        customer_id: "cust_001".into(),
        args: json!({"last4": "1881"}),
        idempotency_key: Some(call["idempotency_key"].as_str().unwrap().into()),
        conversation_id: None,
    });
    assert!(other.is_err());
    assert_eq!(x.card("cust_001", "1881").unwrap().status, "active");
}

#[test]
fn config_errors_name_the_file_and_line() {
    let text = std::fs::read_to_string(config_path()).unwrap();
    let bad = text.replace("pending_transfer = \"transfer_status\"", "pending_transfer = \"transfer_stats\"");
    let line = bad.lines().position(|l| l.contains("transfer_stats")).unwrap() + 1;
    let e = switchboard_assistant::AssistantSpec::parse(&bad, std::path::Path::new("assistant.toml")).unwrap_err();
    assert_eq!(e.line, line, "{e}");
    assert!(e.to_string().starts_with(&format!("assistant.toml:{line}:")), "{e}");
    assert!(e.message.contains("transfer_stats"), "{e}");
    let bad = text.replace(
        "tools = [\"create_ticket\"]\n\n[flows.fraud_report.messages]",
        "tools = [\"create_tiket\"]\n\n[flows.fraud_report.messages]",
    );
    let e = switchboard_assistant::AssistantSpec::parse(&bad, std::path::Path::new("a.toml")).unwrap_err();
    assert!(e.message.contains("create_tiket") && e.line > 0, "{e}");
    let e = switchboard_assistant::AssistantSpec::parse("[assistant]\nname = 1\n", std::path::Path::new("b.toml"))
        .unwrap_err();
    assert_eq!((e.line, e.path.to_str().unwrap()), (2, "b.toml"), "{e}");
}
