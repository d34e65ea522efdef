//! Shared setup of the server tests: a real SQLite store in a temporary directory, a small graph
//! (two nodes; "slow" in a message makes each node take a while, "human" makes the second node wait
//! for a human), and two tenants with keys.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_engine::{END, Engine, EngineConfig, Field, GraphBuilder, NodeInput, Reducer, START, Schema, Update};
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::{AppState, Assistant, Assistants, Limits, app};
use switchboard_store::{AuditLog, Records, SqliteConfig, SqliteStore};
use tower::ServiceExt;

pub struct Env {
    pub state: AppState,
    pub app: Router,
    pub dir: tempfile::TempDir,
    /// Tenant `acme`, all scopes.
    pub a: String,
    /// Tenant `globex`, all scopes.
    pub b: String,
    /// Tenant `acme`, chat only.
    pub a_chat: String,
    /// The audit log the state writes to.
    pub audit: AuditLog,
}

fn last_text(i: &NodeInput) -> String {
    i.state
        .get_array("messages")
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["text"].as_str())
        .unwrap_or("")
        .to_string()
}

pub fn engine(store: Arc<SqliteStore>, step: Duration) -> Engine {
    let schema = Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("turns").reducer(Reducer::Counter))
            .field(Field::new("seen"))
            .build()
            .unwrap(),
    );
    let graph = GraphBuilder::new(schema)
        .node("first", move |i: NodeInput| async move {
            let text = last_text(&i);
            if text.contains("slow") {
                tokio::time::sleep(step).await;
            }
            Ok(Update::new().set("seen", text).into())
        })
        .node("second", move |i: NodeInput| async move {
            let text = last_text(&i);
            if text.contains("slow") {
                tokio::time::sleep(step).await;
            }
            let mut reply = format!("echo: {text}");
            if text.contains("human") {
                let v: Value = i.ctx.interrupt(json!({"reason": "handoff"}))?;
                reply = format!("human says: {}", v.as_str().unwrap_or(""));
            }
            Ok(Update::new().set("messages", json!({"role": "assistant", "text": reply})).set("turns", 1).into())
        })
        .edge(START, "first")
        .edge("first", "second")
        .edge("second", END)
        .build()
        .unwrap();
    let config = EngineConfig { assistant_id: "echo".into(), ..EngineConfig::default() };
    Engine::with_context(graph, store.clone(), store, config)
}

pub async fn setup_with(limits: Limits, step: Duration) -> Env {
    setup_full(limits, step, None, None).await
}

/// With JWT bearer tokens accepted too.
pub async fn setup_jwt(jwt: switchboard_server::auth::jwt::JwtVerifier) -> Env {
    setup_full(Limits::default(), Duration::from_millis(200), Some(jwt), None).await
}

/// With the echo assistant's turns recorded by `recorder`.
pub async fn setup_recorded(recorder: Arc<dyn switchboard_server::TurnRecorder>) -> Env {
    setup_full(Limits::default(), Duration::from_millis(200), None, Some(recorder)).await
}

pub async fn setup_full(
    limits: Limits,
    step: Duration,
    jwt: Option<switchboard_server::auth::jwt::JwtVerifier>,
    recorder: Option<Arc<dyn switchboard_server::TurnRecorder>>,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.sqlite");
    let store = Arc::new(SqliteStore::open(&path, SqliteConfig { fsync: false, ..Default::default() }).await.unwrap());
    let records = Records::on_store(&store);
    let audit = AuditLog::on_store(&store);
    let input: switchboard_server::InputFn =
        Arc::new(|text: &str, _meta: &Value| Update::new().set("messages", json!({"role": "user", "text": text})));
    let assistants = Assistants::new(
        "echo",
        Assistant { description: "echoes".into(), version: "1".into(), engine: engine(store, step), input },
    );
    let assistants = match recorder {
        Some(r) => assistants.with_recorder("echo", r),
        None => assistants,
    };
    let a = create_key(&records, "acme", &[Scope::Admin]).await.unwrap().0;
    let b = create_key(&records, "globex", &[Scope::Admin]).await.unwrap().0;
    let a_chat = create_key(&records, "acme", &[Scope::Chat]).await.unwrap().0;
    let state = match jwt {
        Some(j) => AppState::with_jwt(assistants, records, limits, j),
        None => AppState::new(assistants, records, limits),
    };
    let state = state.with_audit(audit.clone());
    Env { app: app(state.clone()), state, dir, a, b, a_chat, audit }
}

pub async fn setup() -> Env {
    setup_with(Limits::default(), Duration::from_millis(200)).await
}

pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    raw(app, req).await
}

pub async fn raw(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        // Non-JSON bodies (the metrics text) come back as a string.
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, v)
}

/// Asserts the uniform error shape and returns the code.
pub fn error_code(status: StatusCode, v: &Value) -> String {
    assert!(status.is_client_error() || status.is_server_error(), "{status} {v}");
    let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {v}"));
    assert!(v["error"]["message"].is_string(), "{v}");
    code.to_string()
}
