//! Deleting customer data through the API and the retention pass: what is erased, what is kept
//! (other customers, other tenants, running conversations), and the audit log's record of each.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchboard_server::erasure::{Retention, purge_expired};

async fn conv_with_turn(env: &Env, key: &str, customer: &str) -> String {
    let (s, v) = call(&env.app, "POST", "/v1/conversations", Some(key), Some(json!({"customer_id": customer}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) =
        call(&env.app, "POST", &format!("/v1/conversations/{id}/messages"), Some(key), Some(json!({"text": "hello"})))
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    id
}

async fn exists(env: &Env, key: &str, id: &str) -> bool {
    call(&env.app, "GET", &format!("/v1/conversations/{id}"), Some(key), None).await.0 == StatusCode::OK
}

async fn audit_actions(env: &Env) -> Vec<(String, String, String, Value)> {
    env.audit
        .page(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event.tenant, r.event.action, r.event.subject, r.event.details))
        .collect()
}

#[tokio::test]
async fn deleting_a_conversation_reports_counts_and_is_audited() {
    let env = setup().await;
    let id = conv_with_turn(&env, &env.a, "cust_1").await;
    let (s, v) = call(&env.app, "DELETE", &format!("/v1/conversations/{id}"), Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["messages"], 2, "{v}");
    assert_eq!(v["deleted"]["runs"], 1, "{v}");
    assert!(v["deleted"]["checkpoints"].as_u64().unwrap() >= 1, "{v}");
    let log = audit_actions(&env).await;
    let (tenant, action, subject, details) = log.last().unwrap();
    assert_eq!((tenant.as_str(), action.as_str(), subject.as_str()), ("acme", "conversation.delete", id.as_str()));
    assert_eq!(details["deleted"]["runs"], 1);
    assert_eq!(details["customer_id"], "cust_1");
    assert!(env.audit.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn erasing_a_customer_removes_only_that_customers_conversations() {
    let env = setup().await;
    let mine: Vec<String> = conversations_of(&env, "cust_erase", 3).await;
    let other_customer = conv_with_turn(&env, &env.a, "cust_keep").await;
    // Another tenant's customer with the same id is not the same person.
    let other_tenant = conv_with_turn(&env, &env.b, "cust_erase").await;

    // Chat keys cannot erase customers.
    let (s, v) = call(&env.app, "DELETE", "/v1/customers/cust_erase", Some(&env.a_chat), None).await;
    assert_eq!((s, error_code(s, &v)), (StatusCode::FORBIDDEN, "forbidden".to_string()));

    let (s, v) = call(&env.app, "DELETE", "/v1/customers/cust_erase", Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["customer_id"], "cust_erase");
    assert_eq!(v["conversations"], 3, "{v}");
    assert_eq!(v["deleted"]["messages"], 6, "{v}");
    assert_eq!(v["deleted"]["runs"], 3, "{v}");
    for id in &mine {
        assert!(!exists(&env, &env.a, id).await, "{id} survived the erasure");
    }
    assert!(exists(&env, &env.a, &other_customer).await);
    assert!(exists(&env, &env.b, &other_tenant).await);

    // Erasing again finds nothing and says so.
    let (s, v) = call(&env.app, "DELETE", "/v1/customers/cust_erase", Some(&env.a), None).await;
    assert_eq!((s, v["conversations"].as_u64()), (StatusCode::OK, Some(0)));

    let log = audit_actions(&env).await;
    let erasures: Vec<_> = log.iter().filter(|e| e.1 == "customer.erase").collect();
    assert_eq!(erasures.len(), 2);
    assert_eq!((erasures[0].0.as_str(), erasures[0].2.as_str()), ("acme", "cust_erase"));
    assert_eq!(erasures[0].3["conversations"], 3);
    assert!(env.audit.verify().await.unwrap().is_ok());
}

/// Records every turn as `{"user": <the new message's text>}`.
struct Recorder;

impl switchboard_server::TurnRecorder for Recorder {
    fn record(
        &self,
        _conversation: &str,
        _input: &switchboard_engine::Input,
        before: &Value,
        after: &Value,
        _interrupts: &[Value],
        _latency: Duration,
    ) -> Option<Value> {
        let seen = before["messages"].as_array().map_or(0, Vec::len);
        Some(json!({"user": after["messages"][seen]["text"]}))
    }
    fn discard(&self, _conversation: &str) {}
}

#[tokio::test]
async fn recorded_turns_are_erased_with_their_conversation_and_customer() {
    let env = setup_recorded(std::sync::Arc::new(Recorder)).await;
    let records = env.state.records();
    let one = conv_with_turn(&env, &env.a, "cust_rec").await;
    let (s, v) = call(
        &env.app,
        "POST",
        &format!("/v1/conversations/{one}/messages"),
        Some(&env.a),
        Some(json!({"text": "again"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let two = conv_with_turn(&env, &env.a, "cust_rec").await;
    let kept = conv_with_turn(&env, &env.a, "cust_other").await;
    let turns = records.cassette_turns(std::slice::from_ref(&one)).await.unwrap();
    assert_eq!(
        turns.iter().map(|t| (t.seq, t.turn.clone())).collect::<Vec<_>>(),
        vec![(1, json!({"user": "hello"})), (2, json!({"user": "again"}))]
    );
    assert_eq!(turns[0].customer_id.as_deref(), Some("cust_rec"));

    let (s, v) = call(&env.app, "DELETE", &format!("/v1/conversations/{one}"), Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["cassette_turns"], 2, "{v}");
    assert!(records.cassette_turns(&[one]).await.unwrap().is_empty());

    let (s, v) = call(&env.app, "DELETE", "/v1/customers/cust_rec", Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["cassette_turns"], 1, "{v}");
    let left: Vec<String> = records.cassette_turns(&[]).await.unwrap().into_iter().map(|t| t.conversation_id).collect();
    assert_eq!(left, vec![kept]);
    assert!(!left.contains(&two));
}

async fn conversations_of(env: &Env, customer: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(conv_with_turn(env, &env.a, customer).await);
    }
    out
}

#[tokio::test]
async fn retention_erases_idle_conversations_per_tenant_policy() {
    let env = setup().await;
    let acme = conv_with_turn(&env, &env.a, "c1").await;
    let globex = conv_with_turn(&env, &env.b, "c2").await;
    let day = Duration::from_secs(86_400);
    let policy = Retention {
        default_ttl: Some(30 * day),
        tenants: [("globex".to_string(), None)].into_iter().collect(), // globex keeps everything
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;

    // Nothing is old enough yet.
    let p = purge_expired(&env.state, &policy, now).await.unwrap();
    assert_eq!(p.total(), 0);
    assert!(exists(&env, &env.a, &acme).await);

    // 31 days later acme's conversation has expired; globex is exempt.
    let later = now + 31 * 86_400_000;
    let p = purge_expired(&env.state, &policy, later).await.unwrap();
    assert_eq!(p.total(), 1, "{p:?}");
    assert_eq!(p.conversations.get("acme"), Some(&1));
    assert_eq!(p.deleted["acme"].messages, 2);
    assert!(!exists(&env, &env.a, &acme).await);
    assert!(exists(&env, &env.b, &globex).await);

    // A shorter per-tenant TTL applies to that tenant only.
    let strict = Retention { default_ttl: None, tenants: [("globex".to_string(), Some(day))].into_iter().collect() };
    let p = purge_expired(&env.state, &strict, now + 2 * 86_400_000).await.unwrap();
    assert_eq!(p.conversations.get("globex"), Some(&1));
    assert!(!exists(&env, &env.b, &globex).await);

    let log = audit_actions(&env).await;
    let purges: Vec<_> = log.iter().filter(|e| e.1 == "retention.purge").collect();
    assert_eq!(purges.len(), 2);
    assert_eq!(purges[0].0, "acme");
    assert_eq!(purges[0].3["conversations"], 1);
    assert!(env.audit.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn resolving_an_interrupt_is_audited_without_its_content() {
    let env = setup().await;
    let (_, v) = call(&env.app, "POST", "/v1/conversations", Some(&env.a), Some(json!({"customer_id": "c"}))).await;
    let id = v["id"].as_str().unwrap().to_string();
    let (s, _) = call(
        &env.app,
        "POST",
        &format!("/v1/conversations/{id}/messages"),
        Some(&env.a),
        Some(json!({"text": "human"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(
        &env.app,
        "POST",
        &format!("/v1/conversations/{id}/interrupts/resume"),
        Some(&env.a),
        Some(json!({"value": "my card is 4111 1111 1111 1111"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let log = env.audit.page(0, 100).await.unwrap();
    let r = log.iter().find(|r| r.event.action == "interrupt.resume").expect("the resume is audited");
    assert_eq!(r.event.subject, id);
    assert!(r.event.actor.starts_with("key:"));
    assert!(!r.details_text.contains("4111"), "{}", r.details_text);
}
