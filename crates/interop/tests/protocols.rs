//! The protocol endpoints over a real SQLite store, driven with `oneshot`; a delegating
//! assistant whose remote agent is another Switchboard served over A2A on a real socket; and JWT
//! bearer tokens on both protocol endpoints.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_engine::{END, Engine, EngineConfig, Field, GraphBuilder, NodeInput, Reducer, START, Schema, Update};
use switchboard_interop::a2a::client::{ContextPolicy, RemoteAgent, RemoteAgentConfig, delegating_graph};
use switchboard_providers::resilience::{BreakerConfig, BreakerRegistry};
use switchboard_server::auth::{Scope, create_key};
use switchboard_server::{AppState, Assistant, Assistants, InputFn, Limits, app_with};
use switchboard_store::{Records, SqliteConfig, SqliteStore};
use tower::ServiceExt;

struct Env {
    app: Router,
    key: String,
    other_tenant: String,
    _dir: tempfile::TempDir,
}

fn echo_engine(store: Arc<SqliteStore>) -> Engine {
    let schema = Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("intent"))
            .build()
            .unwrap(),
    );
    let graph = GraphBuilder::new(schema)
        .node("echo", |i: NodeInput| async move {
            let text =
                i.state.get_array("messages").last().and_then(|m| m["content"].as_str()).unwrap_or("").to_string();
            let mut reply = format!("echo: {text}");
            if text.contains("human") {
                let v: Value = i.ctx.interrupt(json!({"question": "Who is speaking?"}))?;
                reply = format!("hello {}", v.as_str().unwrap_or(""));
            }
            i.ctx.emit_token("echo: ");
            Ok(Update::new()
                .set("messages", json!({"role": "assistant", "content": reply}))
                .set("intent", "echo")
                .into())
        })
        .edge(START, "echo")
        .edge("echo", END)
        .build()
        .unwrap();
    Engine::with_context(
        graph,
        store.clone(),
        store,
        EngineConfig { assistant_id: "echo".into(), ..Default::default() },
    )
}

fn input() -> InputFn {
    Arc::new(|text: &str, _: &Value| Update::new().set("messages", json!({"role": "user", "content": text})))
}

async fn setup(remote: Option<RemoteAgentConfig>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.sqlite");
    let store = Arc::new(SqliteStore::open(&path, SqliteConfig { fsync: false, ..Default::default() }).await.unwrap());
    let records = Records::open(&path, Duration::from_secs(5)).await.unwrap();
    let echo = Assistant {
        description: "echoes".into(),
        version: "1".into(),
        engine: echo_engine(store.clone()),
        input: input(),
    };
    let mut assistants = Assistants::new("echo", echo);
    if let Some(cfg) = remote {
        let breakers = BreakerRegistry::new(BreakerConfig { failure_threshold: 2, ..BreakerConfig::default() });
        let graph = delegating_graph(RemoteAgent::new(cfg, breakers).unwrap()).unwrap();
        let engine = Engine::with_context(graph, store.clone(), store, EngineConfig::default());
        assistants = assistants
            .with("remote", Assistant { description: "delegates".into(), version: "1".into(), engine, input: input() });
    }
    let key = create_key(&records, "acme", &[Scope::Chat]).await.unwrap().0;
    let other_tenant = create_key(&records, "globex", &[Scope::Chat]).await.unwrap().0;
    let state = AppState::new(assistants, records, Limits::default());
    let app = app_with(state.clone(), switchboard_interop::routes(state));
    Env { app, key, other_tenant, _dir: dir }
}

async fn call(
    app: &Router,
    uri: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(if body.is_some() { "POST" } else { "GET" }).uri(uri);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).to_string())
}

async fn call_json(
    app: &Router,
    uri: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, text) = call(app, uri, key, headers, body).await;
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn chat(text: &str) -> Value {
    json!({"model": "echo", "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn openai_completions_json_and_stream() {
    let env = setup(None).await;
    let (s, v) = call_json(&env.app, "/v1/models", Some(&env.key), &[], None).await;
    assert_eq!((s, v["data"][0]["id"].as_str()), (StatusCode::OK, Some("echo")));

    let h = [("x-switchboard-conversation", "c-1")];
    let (s, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &h, Some(chat("hi"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi");
    assert_eq!(v["switchboard"]["routing"]["intent"], "echo");
    let conv = v["switchboard"]["conversation_id"].clone();

    // An interrupt is answered by the next message of the same conversation.
    let (_, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &h, Some(chat("a human please"))).await;
    assert_eq!(
        (v["switchboard"]["status"].as_str(), v["choices"][0]["message"]["content"].as_str()),
        (Some("interrupted"), Some("Who is speaking?"))
    );
    let (_, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &h, Some(chat("Ana"))).await;
    assert_eq!(v["choices"][0]["message"]["content"], "hello Ana");
    assert_eq!(v["switchboard"]["conversation_id"], conv);

    // Another tenant's identical key is another conversation.
    let (_, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.other_tenant), &h, Some(chat("hi"))).await;
    assert_ne!(v["switchboard"]["conversation_id"], conv);

    let mut body = chat("streamed");
    body["stream"] = json!(true);
    let (s, text) = call(&env.app, "/v1/chat/completions", Some(&env.key), &[], Some(body)).await;
    assert_eq!(s, StatusCode::OK);
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    // The node streamed a token, then the rest of its reply follows once.
    assert_eq!(content, "echo: streamed");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks.last().unwrap()["switchboard"]["status"], "completed");
}

#[tokio::test]
async fn openai_errors() {
    let env = setup(None).await;
    let (s, v) = call_json(
        &env.app,
        "/v1/chat/completions",
        Some(&env.key),
        &[],
        Some(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), v["error"]["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_found"), Some("not_found_error"))
    );
    let (s, v) = call_json(&env.app, "/v1/chat/completions", Some("sb_bad"), &[], Some(chat("x"))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_api_key")));
    let (s, v) = call_json(&env.app, "/v1/chat/completions", None, &[], Some(chat("x"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &[], Some(json!({"model": "echo"}))).await;
    assert_eq!((s, v["error"]["param"].as_str()), (StatusCode::BAD_REQUEST, Some("messages")));
    let big = "x".repeat(300 << 10);
    let (s, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &[], Some(chat(&big))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "payload_too_large");
}

fn rpc(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
}

fn user(text: &str) -> Value {
    json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"text": text}]})
}

#[tokio::test]
async fn a2a_tasks_and_errors() {
    let env = setup(None).await;
    let (s, card) = call_json(&env.app, "/.well-known/agent-card.json", None, &[("host", "agents.test")], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(card["supportedInterfaces"][0]["url"], "http://agents.test/a2a/echo");
    assert_eq!(card["skills"][0]["id"], "echo");

    let k = Some(env.key.as_str());
    let (s, v) =
        call_json(&env.app, "/a2a/echo", k, &[], Some(rpc("SendMessage", json!({"message": user("hello")})))).await;
    assert_eq!(s, StatusCode::OK);
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    assert_eq!(task["artifacts"][0]["parts"][0]["text"], "echo: hello");
    let id = task["id"].as_str().unwrap().to_string();
    let (_, v) = call_json(&env.app, "/a2a/echo", k, &[], Some(rpc("tasks/get", json!({"id": id})))).await;
    assert_eq!(
        (v["result"]["kind"].as_str(), v["result"]["status"]["state"].as_str()),
        (Some("task"), Some("completed"))
    );
    // Another tenant does not see it.
    let (_, v) =
        call_json(&env.app, "/a2a/echo", Some(&env.other_tenant), &[], Some(rpc("GetTask", json!({"id": id})))).await;
    assert_eq!(v["error"]["code"], -32001);

    // input-required, answered in the same task.
    let (_, v) =
        call_json(&env.app, "/a2a/echo", k, &[], Some(rpc("SendMessage", json!({"message": user("human!")})))).await;
    let t = &v["result"]["task"];
    assert_eq!(t["status"]["state"], "TASK_STATE_INPUT_REQUIRED", "{v}");
    assert_eq!(t["status"]["message"]["parts"][0]["text"], "Who is speaking?");
    let mut answer = user("Bo");
    answer["taskId"] = t["id"].clone();
    let (_, v) = call_json(&env.app, "/a2a/echo", k, &[], Some(rpc("SendMessage", json!({"message": answer})))).await;
    assert_eq!(v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    assert_eq!(v["result"]["task"]["id"], t["id"]);
    let (_, v) = call_json(&env.app, "/a2a/echo", k, &[], Some(rpc("SendMessage", json!({"message": answer})))).await;
    assert_eq!(v["error"]["code"], -32004, "a finished task takes no more messages");

    let (_, v) =
        call_json(&env.app, "/a2a/echo", k, &[("a2a-version", "9.9")], Some(rpc("GetTask", json!({"id": id})))).await;
    assert_eq!(v["error"]["code"], -32009);
    let (s, text) = call(&env.app, "/a2a/echo", k, &[], Some(json!("nope"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("-32600"), "{text}");
}

#[tokio::test]
async fn a_turn_is_delegated_to_a_remote_agent_over_a2a() {
    // The remote: a Switchboard serving its echo assistant over A2A on a socket.
    let remote = setup(None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let remote_app = remote.app.clone();
    tokio::spawn(async move { axum::serve(listener, remote_app).await });

    let mut cfg = RemoteAgentConfig::new("echo-remote", format!("http://{addr}/a2a/echo"));
    cfg.token = Some(switchboard_guard::Secret::new(remote.key.clone()));
    // The remote echoes what it gets; the data part of a context policy would be echoed too.
    cfg.context = ContextPolicy::None;
    let env = setup(Some(cfg)).await;
    let h = [("x-switchboard-conversation", "d-1")];
    let mut body = chat("my card is 4111 1111 1111 1111");
    body["model"] = json!("remote");
    let (s, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &h, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: my card is [CARD]", "the remote saw the redacted text");

    // The remote's input-required is an interrupt here; the answer goes back to the same remote task.
    let mut body = chat("a human please");
    body["model"] = json!("remote");
    let (_, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &h, Some(body)).await;
    assert_eq!(v["switchboard"]["status"], "interrupted", "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Who is speaking?");
    let mut body = chat("Cy");
    body["model"] = json!("remote");
    let (_, v) = call_json(&env.app, "/v1/chat/completions", Some(&env.key), &h, Some(body)).await;
    assert_eq!(v["choices"][0]["message"]["content"], "hello Cy", "{v}");
}

/// JWT bearer tokens on the protocol endpoints: a valid token (ES256, key set from a file) chats
/// through `/v1/chat/completions` and the A2A JSON-RPC endpoint; a missing, expired, wrongly
/// signed or scope-less token is refused in each protocol's own error shape (OpenAI error JSON;
/// A2A: HTTP 401 with a JSON-RPC error body).
mod jwt {
    use super::{echo_engine, input};
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use http_body_util::BodyExt;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};
    use std::sync::Arc;
    use std::time::Duration;
    use switchboard_server::auth::jwt::{JwksSource, JwtConfig, JwtVerifier};
    use switchboard_server::{AppState, Assistant, Assistants, Limits, app_with};
    use switchboard_store::{Records, SqliteConfig, SqliteStore};
    use tower::ServiceExt;

    const ISS: &str = "https://idp.test";
    const AUD: &str = "switchboard";

    struct Signer {
        key: EncodingKey,
        jwk: Value,
    }

    fn signer(kid: &str) -> Signer {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let point = secret.public_key().to_encoded_point(false);
        let jwk = json!({"kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
        "x": B64.encode(point.x().unwrap()), "y": B64.encode(point.y().unwrap())});
        Signer { key: EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes()), jwk }
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn token(s: &Signer, kid: &str, scope: &str, exp: u64) -> String {
        let claims =
            json!({"iss": ISS, "aud": AUD, "sub": "u1", "iat": now(), "exp": exp, "tenant": "acme", "scope": scope});
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &claims, &s.key).unwrap()
    }

    async fn app(jwks: &[&Value], dir: &tempfile::TempDir) -> Router {
        let path = dir.path().join("sb.sqlite");
        let store =
            Arc::new(SqliteStore::open(&path, SqliteConfig { fsync: false, ..Default::default() }).await.unwrap());
        let records = Records::open(&path, Duration::from_secs(5)).await.unwrap();
        let assistants = Assistants::new(
            "echo",
            Assistant { description: "echoes".into(), version: "1".into(), engine: echo_engine(store), input: input() },
        );
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, json!({"keys": jwks}).to_string()).unwrap();
        let verifier = JwtVerifier::new(JwtConfig::new(ISS, AUD, JwksSource::File(file))).await.unwrap();
        let state = AppState::with_jwt(assistants, records, Limits::default(), verifier);
        app_with(state.clone(), switchboard_interop::routes(state))
    }

    async fn post(app: &Router, uri: &str, bearer: Option<&str>, body: Value) -> (StatusCode, Option<String>, Value) {
        let mut req = Request::builder().method("POST").uri(uri).header("content-type", "application/json");
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let status = resp.status();
        let www = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, www, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn send() -> Value {
        json!({"jsonrpc": "2.0", "id": 7, "method": "SendMessage",
           "params": {"message": {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "hello"}]}}})
    }

    #[tokio::test]
    async fn protocol_endpoints_accept_a_valid_jwt_and_refuse_bad_ones_in_their_own_shape() {
        let dir = tempfile::tempdir().unwrap();
        let good = signer("k1");
        let stranger = signer("k1");
        let app = app(&[&good.jwk], &dir).await;
        let valid = token(&good, "k1", "chat", now() + 600);

        let (s, _, v) = post(&app, "/v1/chat/completions", Some(&valid), super::chat("hello")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], "echo: hello");
        let (s, _, v) = post(&app, "/a2a/echo", Some(&valid), send()).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["id"], 7);
        assert!(v["error"].is_null(), "{v}");
        assert!(v["result"].to_string().contains("echo: hello"), "{v}");

        let expired = token(&good, "k1", "chat", now() - 3600);
        let forged = token(&stranger, "k1", "chat", now() + 600);
        let unknown_kid = token(&good, "k9", "chat", now() + 600);
        let cases: [(Option<&str>, &str); 5] = [
            (None, "missing"),
            (Some("not-a-jwt"), "malformed"),
            (Some(&expired), "expired"),
            (Some(&forged), "signed by another key"),
            (Some(&unknown_kid), "unknown key id"),
        ];
        for (bearer, why) in cases {
            let (s, _, v) = post(&app, "/v1/chat/completions", bearer, super::chat("hello")).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "openai, {why}: {v}");
            assert_eq!(v["error"]["type"], "authentication_error", "openai, {why}: {v}");
            assert_eq!(v["error"]["code"], "invalid_api_key", "openai, {why}: {v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "openai, {why}: {v}");
            let (s, www, v) = post(&app, "/a2a/echo", bearer, send()).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "a2a, {why}: {v}");
            assert_eq!(www.as_deref(), Some("Bearer"), "a2a, {why}");
            assert_eq!(v["jsonrpc"], "2.0", "a2a, {why}: {v}");
            assert!(v["error"]["code"].is_i64() && v["error"]["message"].is_string(), "a2a, {why}: {v}");
        }

        // A valid token without the `chat` scope: 403, still in each protocol's shape.
        let desk_only = token(&good, "k1", "desk", now() + 600);
        let (s, _, v) = post(&app, "/v1/chat/completions", Some(&desk_only), super::chat("hello")).await;
        assert_eq!((s, v["error"]["type"].as_str()), (StatusCode::FORBIDDEN, Some("permission_error")), "{v}");
        let (s, _, v) = post(&app, "/a2a/echo", Some(&desk_only), send()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
}
