//! The desk's HTTP endpoints through the server's router (auth, tenants, errors), with a
//! conversation whose customer side goes through the server's own messages endpoint.
#![allow(clippy::unwrap_used)]

mod common;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::sync::Arc;
use switchboard_assistant::desk;
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::{AppState, Assistants, Limits};
use switchboard_store::{Records, SqliteConfig, SqliteStore};
use tower::ServiceExt as _;

struct Api {
    app: axum::Router,
}

impl Api {
    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {key}"));
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn desk_claims_approves_and_hands_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let store = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).await.unwrap());
    let records = Records::open(&path, SqliteConfig::default().busy_timeout).await.unwrap();
    let (rt, exchange) = common::setup();
    let name = rt.assistant.spec().assistant.name.clone();
    // The runtime's engine must be the server's, so both see the same conversations.
    let engine = rt.assistant.engine(store.clone());
    let rt = switchboard_assistant::Runtime::new(rt.assistant.clone(), engine.clone());
    let assistants = Assistants::new(name, rt.assistant.server_assistant(engine));
    let (chat, _) = create_key(&records, "acme", &[Scope::Chat]).await.unwrap();
    let (agent, _) = create_key(&records, "acme", &[Scope::Desk]).await.unwrap();
    let (other, _) = create_key(&records, "other", &[Scope::Desk, Scope::Chat]).await.unwrap();
    let audit =
        switchboard_server::AuditLog::on_store(&SqliteStore::open(&path, SqliteConfig::default()).await.unwrap());
    let state = AppState::new(assistants, records, Limits::default()).with_audit(audit.clone());
    let api = Api { app: switchboard_server::app_with(state, desk::routes(rt.clone())) };

    let (s, conv) = api.call("POST", "/v1/conversations", &chat, Some(json!({"customer_id": "cust_001"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{conv}");
    let id = conv["id"].as_str().unwrap().to_string();
    let msg = |t: &str| Some(json!({"text": t}));
    let (s, r) = api
        .call("POST", &format!("/v1/conversations/{id}/messages"), &chat, msg("I lost my card, block it please"))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["reply"]["content"].as_str().unwrap().contains("last 4 digits"), "{r}");
    let (_, r) = api.call("POST", &format!("/v1/conversations/{id}/messages"), &chat, msg("the one ending 4242")).await;
    assert_eq!(r["status"], "interrupted", "{r}");

    // The chat key cannot use the desk; another tenant sees nothing.
    let (s, e) = api.call("GET", "/v1/desk/queue", &chat, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(e["error"]["code"].is_string());
    let (_, q) = api.call("GET", "/v1/desk/queue", &other, None).await;
    assert_eq!(q["items"], json!([]));
    let (s, _) = api.call("GET", &format!("/v1/desk/conversations/{id}"), &other, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, q) = api.call("GET", "/v1/desk/queue", &agent, None).await;
    assert_eq!(s, StatusCode::OK);
    let item = &q["items"][0];
    for k in [
        "conversation_id",
        "customer_id",
        "priority",
        "reason",
        "summary",
        "status",
        "queued_at_ms",
        "sla_due_ms",
        "assigned_to",
    ] {
        assert!(item.get(k).is_some(), "queue item lacks {k}: {item}");
    }
    assert_eq!(
        (item["conversation_id"].as_str().unwrap(), item["reason"].as_str().unwrap()),
        (id.as_str(), "approval")
    );
    assert_eq!(item["status"], "queued");

    // A restarted server (a new assistant, so an empty in-memory desk, over the same store) finds
    // the queued conversation again, from its checkpointed handoff state.
    {
        let (fresh, _) = common::setup();
        let engine2 = fresh.assistant.engine(store.clone());
        let rt2 = switchboard_assistant::Runtime::new(fresh.assistant.clone(), engine2.clone());
        assert!(rt2.assistant.desk().queue().is_empty());
        let records2 = Records::open(&path, SqliteConfig::default().busy_timeout).await.unwrap();
        let name2 = rt2.assistant.spec().assistant.name.clone();
        let state2 =
            AppState::new(Assistants::new(name2, rt2.assistant.server_assistant(engine2)), records2, Limits::default());
        let api2 = Api { app: switchboard_server::app_with(state2, desk::routes(rt2.clone())) };
        let (s, q2) = api2.call("GET", "/v1/desk/queue", &agent, None).await;
        assert_eq!(s, StatusCode::OK, "{q2}");
        assert_eq!(q2["items"].as_array().unwrap().len(), 1, "{q2}");
        for k in ["conversation_id", "priority", "reason", "status", "sla_due_ms"] {
            assert_eq!(q2["items"][0][k], item[k], "{k} after restart");
        }
        let (_, q2) = api2.call("GET", "/v1/desk/queue", &other, None).await;
        assert_eq!(q2["items"], json!([]), "another tenant still sees nothing");
    }

    let (s, e) = api.call("POST", &format!("/v1/desk/conversations/{id}/handback"), &agent, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, e) =
        api.call("POST", &format!("/v1/desk/conversations/{id}/claim"), &agent, Some(json!({"agnt": "x"}))).await;
    assert!(s.is_client_error() && e["error"]["code"].is_string(), "{s} {e}");
    let (s, r) =
        api.call("POST", &format!("/v1/desk/conversations/{id}/claim"), &agent, Some(json!({"agent": "bea"}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["handoff"]["status"], "agent-assigned");

    let (_, d) = api.call("GET", &format!("/v1/desk/conversations/{id}"), &agent, None).await;
    let approval = d["pending_approvals"][0]["id"].as_str().unwrap().to_string();
    assert!(d["summary"].as_str().unwrap().contains("Pending approval"), "{d}");
    assert!(d["routing_trace"].as_array().unwrap().len() >= 2);
    assert!(d["transcript"].as_array().unwrap().iter().any(|m| m["role"] == "user"));

    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/desk/conversations/{id}/approvals/apr_nope"),
            &agent,
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, r) = api
        .call(
            "POST",
            &format!("/v1/desk/conversations/{id}/approvals/{approval}"),
            &agent,
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["tool_calls"][0]["name"], "freeze_card");
    assert_eq!(exchange.card("cust_001", "4242").unwrap().status, "frozen");

    let (s, r) = api
        .call("POST", &format!("/v1/desk/conversations/{id}/messages"), &agent, msg("Your card is frozen now."))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["handoff"]["status"], "agent-active");
    let (s, r) = api.call("POST", &format!("/v1/desk/conversations/{id}/handback"), &agent, None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["replies"][0].as_str().unwrap().contains("replacement"), "{r}");
    let (_, q) = api.call("GET", "/v1/desk/queue", &agent, None).await;
    assert_eq!(q["items"], json!([]));
    let (_, r) = api.call("POST", &format!("/v1/conversations/{id}/messages"), &chat, msg("no thanks")).await;
    assert!(r["reply"]["content"].as_str().unwrap().contains("no replacement"), "{r}");

    // Every desk action is in the audit log, with who did it and to which conversation.
    let log = audit.page(0, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = log.iter().map(|r| (r.event.action.as_str(), r.event.subject.as_str())).collect();
    assert_eq!(
        actions,
        [("handoff.claim", id.as_str()), ("approval.resolve", id.as_str()), ("handoff.hand_back", id.as_str())]
    );
    assert_eq!(log[1].event.details["approved"], true);
    assert!(log.iter().all(|r| r.event.tenant == "acme" && r.event.actor.starts_with("key:")));
    assert!(audit.verify().await.unwrap().is_ok());
}
