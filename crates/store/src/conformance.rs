//! The conformance suite every [`CheckpointStore`] and [`ContextStore`] must pass.
//!
//! Call [`checkpoint_store`] and [`context_store`] from a test with a fresh, empty store. They panic
//! with a message naming the broken property.

use serde_json::{Map, Value, json};
use switchboard_engine::{CheckpointRecord, CheckpointStore, ContextStore, PendingWrite, Scope, StoreError};

fn rec(conv: &str, id: u64, parent: Option<u64>, snapshot: bool) -> CheckpointRecord {
    CheckpointRecord {
        conversation_id: conv.to_string(),
        id,
        parent,
        run_id: format!("run_{id}"),
        step: id as i64 - 1,
        created_at_ms: 1_700_000_000_000 + id as i64,
        schema_version: 1,
        snapshot,
        payload: format!("{{\"p\":[{id}]}}").into_bytes(),
    }
}

/// Checks every property of [`CheckpointStore`].
///
/// # Panics
/// When the store breaks a property.
pub async fn checkpoint_store(store: &dyn CheckpointStore) {
    let c = "conformance-a";
    assert!(store.latest(c).await.expect("latest").is_none(), "a new conversation has no checkpoint");
    assert!(store.history(c, None, 10).await.expect("history").is_empty());

    // A root snapshot and a line of deltas, written pipelined: ordered at call time.
    let mut acks = vec![store.put(rec(c, 1, None, true))];
    for id in 2..=20 {
        acks.push(store.put(rec(c, id, Some(id - 1), id == 11)));
    }
    for a in acks {
        a.await.expect("pipelined puts all succeed");
    }
    let latest = store.latest(c).await.expect("latest").expect("latest exists");
    assert_eq!(latest, rec(c, 20, Some(19), false), "latest is the highest id, every field round-trips");
    assert_eq!(store.get(c, 7).await.expect("get"), Some(rec(c, 7, Some(6), false)));
    assert_eq!(store.get(c, 99).await.expect("get"), None, "unknown id is None");
    assert_eq!(store.get("conformance-nobody", 1).await.expect("get"), None);

    // The chain starts at the nearest snapshot.
    let chain: Vec<u64> = store.chain(c, 15).await.expect("chain").iter().map(|r| r.id).collect();
    assert_eq!(chain, vec![11, 12, 13, 14, 15]);
    let chain: Vec<u64> = store.chain(c, 10).await.expect("chain").iter().map(|r| r.id).collect();
    assert_eq!(chain, (1..=10).collect::<Vec<_>>());

    // History is newest first and pages with `before`.
    let page: Vec<u64> = store.history(c, None, 5).await.expect("history").iter().map(|r| r.id).collect();
    assert_eq!(page, vec![20, 19, 18, 17, 16]);
    let page: Vec<u64> = store.history(c, Some(16), 3).await.expect("history").iter().map(|r| r.id).collect();
    assert_eq!(page, vec![15, 14, 13]);

    // Conflicts and dangling deltas are refused; nothing is half-written.
    let e = store.put(rec(c, 20, Some(19), false)).await.expect_err("duplicate id is refused");
    assert!(matches!(e, StoreError::Conflict { id: 20, .. }), "duplicate id is a Conflict, got {e:?}");
    assert!(store.put(rec(c, 21, Some(500), false)).await.is_err(), "a delta on a missing parent is refused");
    assert_eq!(store.get(c, 21).await.expect("get"), None);
    assert_eq!(store.latest(c).await.expect("latest").map(|r| r.id), Some(20));

    // A fork from an earlier checkpoint is a separate branch.
    store.put(rec(c, 21, Some(12), false)).await.expect("fork");
    let chain: Vec<u64> = store.chain(c, 21).await.expect("chain").iter().map(|r| r.id).collect();
    assert_eq!(chain, vec![11, 12, 21], "a branch's chain does not include the other branch");
    assert_eq!(store.chain(c, 20).await.expect("old branch").len(), 10, "the old branch is intact");

    // Pending writes: keyed by checkpoint and task; a task written again replaces its outcome.
    let w = |t: &str, p: &str| PendingWrite { task_id: t.into(), payload: p.as_bytes().to_vec() };
    store.put_writes(c, 21, vec![w("21:0:a", "one"), w("21:1:b", "two")]).await.expect("writes");
    store.put_writes(c, 21, vec![w("21:1:b", "three")]).await.expect("rewrite");
    let mut got = store.pending_writes(c, 21).await.expect("pending");
    got.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    assert_eq!(got, vec![w("21:0:a", "one"), w("21:1:b", "three")]);
    assert!(store.pending_writes(c, 20).await.expect("pending").is_empty());

    // Conversations are isolated, even with the same ids.
    let d = "conformance-b";
    store.put(rec(d, 1, None, true)).await.expect("other conversation");
    assert_eq!(store.latest(d).await.expect("latest").map(|r| r.id), Some(1));
    assert_eq!(store.chain(d, 1).await.expect("chain").len(), 1);

    // A binary payload survives as is.
    let e = "conformance-bin";
    let mut r = rec(e, 1, None, true);
    r.payload = (0u8..=255).collect();
    store.put(r.clone()).await.expect("binary payload");
    assert_eq!(store.get(e, 1).await.expect("get"), Some(r));

    // Deleting a conversation removes its checkpoints and pending writes, and only those.
    let n = store.delete_conversation(c).await.expect("delete");
    assert_eq!(n, 21 + 2, "delete reports what it removed");
    assert!(store.latest(c).await.expect("latest").is_none());
    assert!(store.pending_writes(c, 21).await.expect("pending").is_empty());
    assert_eq!(store.latest(d).await.expect("latest").map(|r| r.id), Some(1), "other conversations stay");
    assert_eq!(store.delete_conversation(c).await.expect("delete again"), 0);
    // The id can be reused after deletion.
    store.put(rec(c, 1, None, true)).await.expect("reuse after delete");
}

/// Checks every property of [`ContextStore`].
///
/// # Panics
/// When the store breaks a property.
pub async fn context_store(store: &dyn ContextStore) {
    let map = |v: Value| -> Map<String, Value> { v.as_object().cloned().unwrap_or_default() };
    assert!(store.load(Scope::Customer, "cust_1").await.expect("load").is_empty());
    store.save(Scope::Customer, "cust_1", map(json!({"lang": "pt-BR", "tier": 2}))).await.expect("save");
    store.save(Scope::Customer, "cust_1", map(json!({"tier": 3}))).await.expect("upsert");
    store.save(Scope::Assistant, "cust_1", map(json!({"lang": "en"}))).await.expect("other scope");
    assert_eq!(
        Value::Object(store.load(Scope::Customer, "cust_1").await.expect("load")),
        json!({"lang": "pt-BR", "tier": 3})
    );
    assert_eq!(Value::Object(store.load(Scope::Assistant, "cust_1").await.expect("load")), json!({"lang": "en"}));
    assert_eq!(store.delete_owner(Scope::Customer, "cust_1").await.expect("delete"), 2);
    assert!(store.load(Scope::Customer, "cust_1").await.expect("load").is_empty());
    assert_eq!(store.load(Scope::Assistant, "cust_1").await.expect("load").len(), 1, "scopes are separate");
}

/// Checks the recorded turns (cassettes) of [`crate::Records`]: appended in order with their
/// position assigned, listed per conversation or all, deleted with their conversation (and only
/// with the tenant's own).
///
/// # Panics
/// When the records break a property.
pub async fn cassette_records(r: &crate::Records) {
    use crate::records::{CassetteRecord, ConversationRecord};
    for (tenant, id) in [("t1", "cas-a"), ("t1", "cas-b"), ("t2", "cas-c")] {
        let conv = ConversationRecord {
            id: id.into(),
            tenant: tenant.into(),
            assistant: "a".into(),
            customer_id: Some("cust".into()),
            metadata: json!({}),
            status: "idle".into(),
            created_at_ms: 1,
            updated_at_ms: 1,
        };
        r.insert_conversation(&conv).await.expect("insert conversation");
    }
    let turn = |tenant: &str, conv: &str, n: u32| CassetteRecord {
        tenant: tenant.into(),
        conversation_id: conv.into(),
        seq: 0,
        assistant: "a".into(),
        customer_id: Some("cust".into()),
        turn: json!({"input": {"user": format!("message {n}")}}),
        created_at_ms: 1_700_000_000_000,
    };
    for t in [turn("t1", "cas-a", 1), turn("t1", "cas-b", 1), turn("t1", "cas-a", 2), turn("t2", "cas-c", 1)] {
        r.append_cassette_turn(&t).await.expect("append a recorded turn");
    }
    let a = r.cassette_turns(&["cas-a".to_string()]).await.expect("list");
    let got: Vec<(i64, Value)> = a.iter().map(|t| (t.seq, t.turn["input"]["user"].clone())).collect();
    assert_eq!(got, vec![(1, json!("message 1")), (2, json!("message 2"))], "turns in order, numbered from 1");
    assert_eq!(a[0].customer_id.as_deref(), Some("cust"));
    let all: Vec<String> =
        r.cassette_turns(&[]).await.expect("list all").into_iter().map(|t| t.conversation_id).collect();
    assert_eq!(all, ["cas-a", "cas-a", "cas-b", "cas-c"], "every conversation, grouped and in order");
    assert!(r.delete_conversation("t2", "cas-a").await.expect("delete").is_none(), "another tenant's is not deleted");
    let d = r.delete_conversation("t1", "cas-a").await.expect("delete").expect("it existed");
    assert_eq!(d.cassette_turns, 2, "a conversation's recorded turns are deleted with it");
    let left: Vec<String> = r.cassette_turns(&[]).await.expect("list").into_iter().map(|t| t.conversation_id).collect();
    assert_eq!(left, ["cas-b", "cas-c"]);
}
