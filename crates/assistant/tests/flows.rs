//! Every flow of the reference assistant, end to end through the engine, with the back end's
//! state checked after each tool call.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use switchboard_assistant::HandoffStatus;
use switchboard_assistant::backend::{SEED_ETH_TX, SEED_WRONG_NETWORK_TX};
use switchboard_engine::RunStatus;

#[tokio::test]
async fn card_freeze_approved_then_replacement() {
    let (rt, x) = setup();
    let t = rt.say("c1", ANA, "I lost my card, block it please").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("card_freeze"), "{t:?}");
    assert!(all_replies(&t).contains("last 4 digits"), "{}", all_replies(&t));
    let t = rt.say("c1", ANA, "the one ending 4242").await.unwrap();
    assert_eq!(t.status, RunStatus::Interrupted);
    let id = pending_id(&t);
    assert_eq!(x.card("cust_001", "4242").unwrap().status, "active", "nothing runs before the approval");
    assert!(all_replies(&t).contains("approve"), "{}", all_replies(&t));
    assert_eq!(t.handoff.status, HandoffStatus::Queued, "approvals go to the desk");
    let t = rt.approve("c1", ANA, &id, true, "bea").await.unwrap();
    assert_eq!(t.status, RunStatus::Completed);
    assert_eq!(tool_names(&t), ["freeze_card"]);
    assert_eq!(t.tool_calls[0]["args"]["last4"], "4242");
    assert_eq!(x.card("cust_001", "4242").unwrap().status, "frozen");
    assert_eq!(x.card("cust_001", "1881").unwrap().status, "active");
    assert!(all_replies(&t).contains("replacement"), "{}", all_replies(&t));
    assert_eq!(t.handoff.status, HandoffStatus::BotActive, "an approval-only entry leaves the queue");
    let t = rt.say("c1", ANA, "yes please").await.unwrap();
    assert_eq!(tool_names(&t), ["order_replacement_card"]);
    assert_eq!(x.orders("cust_001").len(), 1);
    assert!(all_replies(&t).contains("ord_7001"), "{}", all_replies(&t));
    assert_eq!(rt.engine.state("c1").await.unwrap().get("flows").unwrap(), &serde_json::json!([]));
}

#[tokio::test]
async fn card_freeze_denied_changes_nothing() {
    let (rt, x) = setup();
    rt.say("c", ANA, "my card was stolen").await.unwrap();
    let t = rt.say("c", ANA, "4242").await.unwrap();
    let id = pending_id(&t);
    let t = rt.approve("c", ANA, &id, false, "bea").await.unwrap();
    assert!(t.tool_calls.is_empty());
    assert!(all_replies(&t).contains("not approved"), "{}", all_replies(&t));
    assert_eq!(x.card("cust_001", "4242").unwrap().status, "active");
    assert!(x.executed().iter().all(|c| c.name != "freeze_card"));
    assert!(rt.approve("c", ANA, &id, true, "bea").await.is_err(), "a resolved approval cannot be approved again");
}

#[tokio::test]
async fn card_freeze_last4_up_front_unknown_and_already_frozen() {
    let (rt, x) = setup();
    let t = rt.say("c", ANA, "I lost my card ending 9999").await.unwrap();
    assert!(all_replies(&t).contains("4242") && all_replies(&t).contains("1881"), "{}", all_replies(&t));
    assert_eq!(t.status, RunStatus::Completed);
    let t = rt.say("c", ANA, "sorry, 1881").await.unwrap();
    assert_eq!(t.status, RunStatus::Interrupted);
    assert_eq!(t.interrupts[0].payload["args"]["last4"], "1881");
    let (rt2, _) = setup();
    let t = rt2.say("d", Some("cust_002"), "my card ending 7777 was stolen").await.unwrap();
    assert!(all_replies(&t).contains("already frozen"), "{}", all_replies(&t));
    assert_eq!(x.card("cust_001", "1881").unwrap().status, "active");
}

#[tokio::test]
async fn transfer_status_by_id_and_from_the_recent_list() {
    let (rt, _) = setup();
    let t = rt.say("c", ANA, "what is the status of my transfer tr_1001?").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("transfer_status"), "{t:?}");
    let r = all_replies(&t);
    assert!(r.contains("250.00 EUR") && r.contains("pending") && r.contains("yesterday"), "{r}");
    assert_eq!(tool_names(&t), ["get_transfer_status"]);
    let t = rt.say("c", ANA, "my transfer is still pending, where is it?").await.unwrap();
    assert_eq!(tool_names(&t), ["list_recent_transfers"], "{t:?}");
    assert!(all_replies(&t).contains("tr_1002"));
    let t = rt.say("c", ANA, "tr_1002").await.unwrap();
    assert!(all_replies(&t).contains("completed"), "{}", all_replies(&t));
    let t = rt.say("c", ANA, "and tr_9999?").await.unwrap();
    assert!(all_replies(&t).contains("couldn't find"), "{}", all_replies(&t));
}

#[tokio::test]
async fn crypto_deposit_confirmations() {
    let (rt, _) = setup();
    let t = rt.say("c", ANA, "my ETH deposit hasn't arrived").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("crypto_deposit_missing"), "{t:?}");
    assert!(all_replies(&t).contains("network"), "{}", all_replies(&t));
    let t = rt.say("c", ANA, "ethereum network").await.unwrap();
    assert!(all_replies(&t).contains("transaction hash"), "{}", all_replies(&t));
    let t = rt.say("c", ANA, SEED_ETH_TX).await.unwrap();
    let r = all_replies(&t);
    assert!(r.contains("5 of 12"), "{r}");
    assert_eq!(tool_names(&t), ["get_deposit_status"]);
    assert_eq!(t.slots["tx_hash"], SEED_ETH_TX);
}

#[tokio::test]
async fn crypto_deposit_wrong_network_opens_a_recovery_ticket() {
    let (rt, x) = setup();
    let t = rt
        .say("c", ANA, &format!("I sent USDC on Polygon and it never arrived, tx {SEED_WRONG_NETWORK_TX}"))
        .await
        .unwrap();
    let r = all_replies(&t);
    assert!(r.contains("polygon") && r.contains("ethereum") && r.contains("recover"), "{r}");
    assert!(x.tickets("cust_001").is_empty());
    let t = rt.say("c", ANA, "yes").await.unwrap();
    assert_eq!(tool_names(&t), ["create_ticket"]);
    let tickets = x.tickets("cust_001");
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].category, "deposit_recovery");
    assert!(all_replies(&t).contains(&tickets[0].id));
}

#[tokio::test]
async fn account_access_opens_a_ticket_and_never_asks_for_secrets() {
    let (rt, x) = setup();
    let t = rt.say("c", Some("cust_002"), "I need to reset my 2FA, my authenticator app was deleted").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("account_access"), "{t:?}");
    let r = all_replies(&t);
    assert!(regex_lite(&r, &["send us", "tell me your", "give me your", "what is your"]), "{r}");
    let tickets = x.tickets("cust_002");
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].category, "account_access");
    let t = rt.say("d", Some("cust_002"), "my account is locked, I can't log in").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("account_access"), "{t:?}");
    assert_eq!(x.tickets("cust_002").len(), 2);
}

fn regex_lite(text: &str, forbidden: &[&str]) -> bool {
    let l = text.to_lowercase();
    forbidden.iter().all(|f| !l.contains(f))
}

#[tokio::test]
async fn fraud_report_always_ends_with_an_urgent_human_handoff() {
    let (rt, x) = setup();
    let t = rt.say("c", ANA, "there is a card payment I didn't make, I think it's fraud").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("fraud_report"), "{t:?}");
    assert_eq!(t.handoff.status, HandoffStatus::Queued);
    assert_eq!(t.handoff.priority.as_deref(), Some("urgent"));
    let ticket = &x.tickets("cust_001")[0];
    assert_eq!((ticket.category.as_str(), ticket.priority.as_str()), ("fraud", "urgent"));
    let q = rt.assistant.desk().queue();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].priority, "urgent");
    assert!(q[0].sla_due_ms - q[0].queued_at_ms == 120_000);
}

#[tokio::test]
async fn faq_answers_with_a_passage_and_its_title() {
    let (rt, _) = setup();
    let t = rt.say("c", ANA, "how long does delivery of a new card take?").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("faq"), "{t:?}");
    let r = all_replies(&t);
    assert!(r.contains("(Source: "), "{r}");
    let article = &t.state.get("faq").unwrap()["article"];
    assert!(rt.assistant.help().articles().iter().any(|a| a.id == *article), "{article}");
}

// Known defect: the lexical router has no out-of-scope training data and classifies this as
// `goodbye` (0.74), so the smalltalk handler answers. Kept to track the fix (OOS examples).
#[ignore = "known defect: lexical router routes an off-topic question to goodbye"]
#[tokio::test]
async fn out_of_scope_lists_capabilities() {
    let (rt, _) = setup();
    let t = rt.say("c", ANA, "what's a good recipe for lasagna with spinach?").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("out_of_scope"), "{t:?}");
    assert!(all_replies(&t).contains("freeze a lost or stolen card"), "{}", all_replies(&t));
}

#[tokio::test]
async fn clarify_names_the_top_two_candidates() {
    let mut spec = switchboard_assistant::AssistantSpec::load(&config_path()).unwrap();
    // From Rust: a wide clarify margin makes any classifier decision a clarifying question.
    spec.router.clarify_margin = 1.0;
    let (rt, _) = build(spec);
    let t = rt.say("c", ANA, "how much does it cost to top up with a card").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("clarify"), "{t:?}");
    let routing = t.routing.clone().unwrap();
    let names: Vec<String> =
        routing["clarify"].as_array().unwrap().iter().map(|v| rt.assistant.spec().label(v.as_str().unwrap())).collect();
    assert_eq!(names.len(), 2);
    let r = all_replies(&t);
    assert!(r.contains(&names[0]) && r.contains(&names[1]), "{r} / {names:?}");
}

#[tokio::test]
async fn smalltalk_greets() {
    let (rt, _) = setup();
    let t = rt.say("c", ANA, "hello there").await.unwrap();
    assert_eq!(t.handler.as_deref(), Some("smalltalk"), "{t:?}");
}

/// Prints the first-start training figures (run with `--nocapture`); checks the cap and the cache.
#[test]
fn router_training_figures() {
    let spec = switchboard_assistant::AssistantSpec::load(&config_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = switchboard_assistant::routing::load_or_train(&spec, dir.path(), None).unwrap();
    assert!(!first.cached);
    assert!(first.examples <= spec.router.max_examples_per_intent * first.intents);
    let second = switchboard_assistant::routing::load_or_train(&spec, dir.path(), None).unwrap();
    assert!(second.cached, "the second start loads the artifact trained by the first");
    assert_eq!(first.dir, second.dir);
    eprintln!(
        "router (lexical): trained in {:.2} s on {} examples / {} intents; loaded from cache in {:.2} s",
        first.seconds, first.examples, first.intents, second.seconds
    );
}
