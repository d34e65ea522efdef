//! Shared set-up: the real `assistants/exchange-support` config and data, a fresh seeded back
//! end per test, an in-memory engine store.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use switchboard_assistant::{AssistantOptions, AssistantSpec, ExchangeAssistant, FakeExchange, Runtime, TurnView};
use switchboard_engine::MemoryStore;

pub fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assistants/exchange-support/assistant.toml")
}

pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("switchboard-assistant-tests")
}

/// Training happens once per cache key; building is serialised so two tests never write the
/// same artifact directory at once.
pub static BUILD_LOCK: Mutex<()> = Mutex::new(());

pub fn build(spec: AssistantSpec) -> (Runtime, FakeExchange) {
    let _g = BUILD_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let exchange = FakeExchange::seeded();
    let mut opts = AssistantOptions::new(cache_dir());
    opts.backend = Some(Arc::new(exchange.clone()));
    // The tests pin the lexical router so they behave the same with or without the model.
    opts.sentence_encoder = false;
    let a = ExchangeAssistant::from_spec(spec, opts).unwrap();
    let engine = a.engine(Arc::new(MemoryStore::new()));
    (Runtime::new(a, engine), exchange)
}

pub fn setup() -> (Runtime, FakeExchange) {
    build(AssistantSpec::load(&config_path()).unwrap())
}

pub const ANA: Option<&str> = Some("cust_001");

pub fn all_replies(t: &TurnView) -> String {
    t.replies.join("\n")
}

pub fn tool_names(t: &TurnView) -> Vec<String> {
    t.tool_calls.iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
}

pub fn pending_id(t: &TurnView) -> String {
    t.interrupts.iter().find(|i| i.payload["type"] == "approval").expect("an approval is pending").payload["id"]
        .as_str()
        .unwrap()
        .to_string()
}
