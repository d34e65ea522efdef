//! The HTTP API driven with `oneshot`: lifecycle, auth and scopes, tenant isolation on every
//! route, bad input.

#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_server::Limits;
use tower::ServiceExt;

async fn new_conv(env: &Env, key: &str, customer: &str) -> String {
    let (s, v) = call(&env.app, "POST", "/v1/conversations", Some(key), Some(json!({"customer_id": customer}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn say(env: &Env, key: &str, conv: &str, text: &str) -> (StatusCode, Value) {
    call(&env.app, "POST", &format!("/v1/conversations/{conv}/messages"), Some(key), Some(json!({"text": text}))).await
}

#[tokio::test]
async fn health_and_readiness() {
    let env = setup().await;
    let (s, v) = call(&env.app, "GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = call(&env.app, "GET", "/readyz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
}

#[tokio::test]
async fn assistants_are_listed_with_their_graph() {
    let env = setup().await;
    let (s, v) = call(&env.app, "GET", "/v1/assistants", Some(&env.a_chat), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["default"], "echo");
    assert_eq!(v["items"][0]["id"], "echo");
    let (s, v) = call(&env.app, "GET", "/v1/assistants/echo", Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["version"], "1");
    assert!(v["graph"].to_string().contains("second"), "{v}");
    let (s, v) = call(&env.app, "GET", "/v1/assistants/nope", Some(&env.a), None).await;
    assert_eq!(error_code(s, &v), "not_found");
}

#[tokio::test]
async fn a_conversation_from_creation_to_deletion() {
    let env = setup().await;
    let (s, v) =
        call(&env.app, "POST", "/v1/conversations", Some(&env.a_chat), Some(json!({"metadata": {"channel": "web"}})))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["assistant"].as_str(), v["status"].as_str()), (Some("echo"), Some("idle")));
    let id = v["id"].as_str().unwrap().to_string();

    let (s, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["checkpoint_id"], Value::Null);

    let (s, v) = say(&env, &env.a_chat, &id, "hello").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["reply"]["text"], "echo: hello");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    // By the time the result is returned, the run's events are stored, all of them, in order.
    let stored = env.state.records().events_after(&run_id, 0).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=stored.len() as u64).collect::<Vec<_>>());
    assert_eq!(stored.last().unwrap().event, "result");
    assert_eq!(serde_json::from_str::<Value>(&stored.last().unwrap().data).unwrap()["reply"]["text"], "echo: hello");
    assert!(stored.iter().any(|e| e.event == "update"), "{stored:?}");
    let (s, v) = say(&env, &env.a_chat, &id, "again").await;
    assert_eq!((s, v["reply"]["text"].as_str()), (StatusCode::OK, Some("echo: again")));

    let (s, v) = call(&env.app, "GET", &format!("/v1/runs/{run_id}"), Some(&env.a_chat), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["status"].as_str(), v["conversation_id"].as_str()), (Some("completed"), Some(id.as_str())));
    assert_eq!(v["result"]["reply"]["text"], "echo: hello");

    let (s, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["values"]["turns"], 2);
    assert_eq!(v["values"]["messages"].as_array().unwrap().len(), 4);

    // History, paged.
    let (s, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/history?limit=2"), Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = v["items"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    let before = v["next_before"].as_u64().unwrap();
    let (_, v) =
        call(&env.app, "GET", &format!("/v1/conversations/{id}/history?limit=100&before={before}"), Some(&env.a), None)
            .await;
    let rest = v["items"].as_array().unwrap();
    assert!(!rest.is_empty());
    assert!(rest.iter().all(|c| c["id"].as_u64().unwrap() < before));
    assert_eq!(v["next_before"], Value::Null);
    // The input checkpoint of the second turn: fork from there, then run it again.
    let second_input = first.iter().chain(rest).find(|c| c["step"] == -1 && c["run_id"] != run_id.as_str()).unwrap();
    let (s, v) = call(
        &env.app,
        "POST",
        &format!("/v1/conversations/{id}/fork"),
        Some(&env.a),
        Some(json!({"checkpoint_id": second_input["parent"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(v["values"]["turns"], 1, "the fork is back at the end of the first turn: {v}");
    let (s, v) = call(
        &env.app,
        "POST",
        &format!("/v1/conversations/{id}/fork"),
        Some(&env.a),
        Some(json!({"checkpoint_id": 9999})),
    )
    .await;
    assert_eq!(error_code(s, &v), "not_found");

    let (s, v) = call(
        &env.app,
        "POST",
        &format!("/v1/conversations/{id}/feedback"),
        Some(&env.a_chat),
        Some(json!({"rating": 5, "comment": "great"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(
        &env.app,
        "POST",
        &format!("/v1/conversations/{id}/feedback"),
        Some(&env.a_chat),
        Some(json!({"rating": 50})),
    )
    .await;
    assert_eq!(error_code(s, &v), "invalid_request");

    let (s, v) = call(&env.app, "DELETE", &format!("/v1/conversations/{id}"), Some(&env.a_chat), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"]["runs"], 2);
    assert_eq!(v["deleted"]["feedback"], 1);
    assert_eq!(v["deleted"]["idempotency_keys"], 0);
    // The fork left the state at the end of the first turn: its two messages.
    assert_eq!(v["deleted"]["messages"], 2, "{v}");
    assert!(v["deleted"]["checkpoints"].as_u64().unwrap() >= 6, "{v}");
    assert!(v["deleted"]["events"].as_u64().unwrap() >= 2, "{v}");
    let (s, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}"), Some(&env.a), None).await;
    assert_eq!(error_code(s, &v), "not_found");
    let (s, v) = call(&env.app, "GET", &format!("/v1/runs/{run_id}"), Some(&env.a), None).await;
    assert_eq!(error_code(s, &v), "not_found");
}

#[tokio::test]
async fn listing_is_paged_and_filtered() {
    let env = setup().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(new_conv(&env, &env.a, &format!("cust-{}", i % 2)).await);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    new_conv(&env, &env.b, "cust-0").await;
    let mut seen = Vec::new();
    let mut uri = "/v1/conversations?limit=2".to_string();
    loop {
        let (s, v) = call(&env.app, "GET", &uri, Some(&env.a), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        seen.extend(v["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/conversations?limit=2&cursor={c}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every conversation once, none of the other tenant");
    let (_, v) = call(&env.app, "GET", "/v1/conversations?customer_id=cust-1", Some(&env.a), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    say(&env, &env.a, &ids[0], "hi").await;
    let (_, v) = call(&env.app, "GET", "/v1/conversations?status=idle", Some(&env.a), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 5);
    let (_, v) = call(&env.app, "GET", "/v1/conversations?created_after_ms=99999999999999", Some(&env.a), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    for bad in ["limit=0", "limit=1000", "cursor=xyz", "limit=abc", "bogus=1"] {
        let (s, v) = call(&env.app, "GET", &format!("/v1/conversations?{bad}"), Some(&env.a), None).await;
        assert!(s.is_client_error(), "{bad}: {s}");
        error_code(s, &v);
    }
}

#[tokio::test]
async fn interrupts_are_listed_and_resumed() {
    let env = setup().await;
    let id = new_conv(&env, &env.a, "c").await;
    let (s, v) = say(&env, &env.a_chat, &id, "get me a human").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "interrupted");
    assert_eq!(v["interrupts"][0]["payload"]["reason"], "handoff");
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}"), Some(&env.a), None).await;
    assert_eq!(v["status"], "interrupted");
    let (s, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/interrupts"), Some(&env.a), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    // A new message while a human is awaited is refused, and the conversation still waits.
    let (s, v) = say(&env, &env.a_chat, &id, "hello?").await;
    assert_eq!(error_code(s, &v), "interrupt_pending");
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}"), Some(&env.a), None).await;
    assert_eq!(v["status"], "interrupted");
    // A chat-only key cannot act as the desk.
    let resume = format!("/v1/conversations/{id}/interrupts/resume");
    let (s, v) = call(&env.app, "POST", &resume, Some(&env.a_chat), Some(json!({"value": "hi"}))).await;
    assert_eq!(error_code(s, &v), "forbidden");
    let (s, v) = call(&env.app, "POST", &resume, Some(&env.a), Some(json!({"value": "on my way"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["reply"]["text"], "human says: on my way");
    let (s, v) = call(&env.app, "POST", &resume, Some(&env.a), Some(json!({"value": "again"}))).await;
    assert_eq!(error_code(s, &v), "nothing_to_resume");
}

#[tokio::test]
async fn auth_is_required_and_scoped() {
    let env = setup().await;
    let (s, v) = call(&env.app, "GET", "/v1/conversations", None, None).await;
    assert_eq!((s, error_code(s, &v).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, v) = call(&env.app, "GET", "/v1/conversations", Some("sb_0000"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    for header in ["Basic abc", "Bearer", "Bearer  ", "token"] {
        let req =
            Request::builder().uri("/v1/conversations").header("authorization", header).body(Body::empty()).unwrap();
        let (s, v) = raw(&env.app, req).await;
        assert_eq!(error_code(s, &v), "unauthorized", "{header}");
    }
    let req =
        Request::builder().uri("/v1/conversations").header("x-api-key", env.a.as_str()).body(Body::empty()).unwrap();
    assert_eq!(raw(&env.app, req).await.0, StatusCode::OK);
    let id = new_conv(&env, &env.a, "c").await;
    for uri in [format!("/v1/conversations/{id}/history"), format!("/v1/conversations/{id}/interrupts")] {
        let (s, v) = call(&env.app, "GET", &uri, Some(&env.a_chat), None).await;
        assert_eq!(error_code(s, &v), "forbidden", "{uri}");
    }
}

#[tokio::test]
async fn no_route_reaches_another_tenants_rows() {
    let env = setup().await;
    let id = new_conv(&env, &env.a, "c").await;
    let (_, v) = say(&env, &env.a, &id, "get me a human").await;
    let run = v["run_id"].as_str().unwrap().to_string();
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/conversations/{id}"), None),
        ("DELETE", format!("/v1/conversations/{id}"), None),
        ("POST", format!("/v1/conversations/{id}/messages"), Some(json!({"text": "hi"}))),
        ("GET", format!("/v1/conversations/{id}/state"), None),
        ("GET", format!("/v1/conversations/{id}/history"), None),
        ("POST", format!("/v1/conversations/{id}/fork"), Some(json!({"checkpoint_id": 1}))),
        ("GET", format!("/v1/conversations/{id}/interrupts"), None),
        ("POST", format!("/v1/conversations/{id}/interrupts/resume"), Some(json!({"value": "x"}))),
        ("POST", format!("/v1/conversations/{id}/feedback"), Some(json!({"rating": 1}))),
        ("GET", format!("/v1/runs/{run}"), None),
        ("POST", format!("/v1/runs/{run}/cancel"), None),
        ("GET", format!("/v1/runs/{run}/events"), None),
    ];
    for (m, uri, body) in &routes {
        let (s, v) = call(&env.app, m, uri, Some(&env.b), body.clone()).await;
        assert_eq!((s, error_code(s, &v)), (StatusCode::NOT_FOUND, "not_found".to_string()), "{m} {uri}: {v}");
    }
    let (_, v) = call(&env.app, "GET", "/v1/conversations", Some(&env.b), None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    // Nothing was changed by the other tenant's attempts.
    let (s, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/interrupts"), Some(&env.a), None).await;
    assert_eq!((s, v["items"].as_array().unwrap().len()), (StatusCode::OK, 1));
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(v["values"]["messages"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn bad_input_is_a_json_4xx() {
    let env = setup_with(Limits { max_body_bytes: 1024, ..Limits::default() }, std::time::Duration::ZERO).await;
    let id = new_conv(&env, &env.a, "c").await;
    let uri = format!("/v1/conversations/{id}/messages");
    let post = |body: Body, ct: Option<&str>| {
        let mut r = Request::builder().method("POST").uri(&uri).header("authorization", format!("Bearer {}", env.a));
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.body(body).unwrap()
    };
    let cases: Vec<(Request<Body>, StatusCode)> = vec![
        (post(Body::from("{\"text\": "), Some("application/json")), StatusCode::BAD_REQUEST),
        (post(Body::from("{\"text\": \"hi\"}"), Some("text/plain")), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (post(Body::from("{\"text\": \"hi\"}"), None), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            post(
                Body::from(vec![b'{', b'"', b't', b'e', b'x', b't', b'"', b':', b'"', 0xff, 0xfe, b'"', b'}']),
                Some("application/json"),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            post(Body::from(json!({"text": "x".repeat(4096)}).to_string()), Some("application/json")),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (post(Body::from("{\"txt\": \"hi\"}"), Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
        (post(Body::from("{\"text\": 5}"), Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
        (post(Body::from("{\"text\": \"  \"}"), Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
        (
            post(Body::from("{\"text\": \"hi\", \"metadata\": 3}"), Some("application/json")),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (post(Body::from("[]"), Some("application/json")), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let (s, v) = raw(&env.app, req).await;
        assert_eq!(s, want, "case {i}: {v}");
        error_code(s, &v);
    }
    for (m, uri) in
        [("GET", "/nope"), ("GET", "/v1/conversations/none"), ("PUT", "/v1/conversations"), ("GET", "/v1/runs/none")]
    {
        let (s, v) = call(&env.app, m, uri, Some(&env.a), None).await;
        assert!(s == StatusCode::NOT_FOUND || s == StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}: {s}");
        error_code(s, &v);
    }
    // Nothing half-written: the conversation has no state after the rejected messages.
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(v["checkpoint_id"], Value::Null);
}

#[tokio::test]
async fn a_slow_request_times_out_with_a_json_408() {
    let env = setup_with(
        Limits { request_timeout: std::time::Duration::from_millis(100), ..Limits::default() },
        std::time::Duration::from_millis(300),
    )
    .await;
    let id = new_conv(&env, &env.a, "c").await;
    let (s, v) = say(&env, &env.a, &id, "slow please").await;
    assert_eq!(error_code(s, &v), "timeout");
    // The turn itself was not cut: it completes in the background.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(v["values"]["turns"], 1, "{v}");
}

#[tokio::test]
async fn a_run_can_be_cancelled() {
    let env = setup_with(Limits::default(), std::time::Duration::from_millis(400)).await;
    let id = new_conv(&env, &env.a, "c").await;
    let req = Request::builder()
        .method("POST")
        .uri(format!("/v1/conversations/{id}/messages"))
        .header("authorization", format!("Bearer {}", env.a))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Body::from(json!({"text": "slow"}).to_string()))
        .unwrap();
    let resp = env.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let text = String::from_utf8(frame.to_vec()).unwrap();
    let id_line = text.lines().find_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:"))).unwrap();
    let run = id_line.rsplit_once(':').unwrap().0.to_string();
    let (s, v) = call(&env.app, "POST", &format!("/v1/runs/{run}/cancel"), Some(&env.a_chat), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let mut rest = String::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            rest.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(rest.contains("event: result"), "{rest}");
    assert!(rest.contains("\"status\":\"cancelled\""), "{rest}");
    let (_, v) = call(&env.app, "GET", &format!("/v1/runs/{run}"), Some(&env.a), None).await;
    assert_eq!(v["status"], "cancelled");
    let (s, v) = call(&env.app, "POST", &format!("/v1/runs/{run}/cancel"), Some(&env.a), None).await;
    assert_eq!(error_code(s, &v), "run_not_active");
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let env = setup().await;
    let (s, doc) = call(&env.app, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["schemas"]["CreateConversation"]["properties"]["assistant"]["enum"][0], "echo");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 18);
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let uri = path.replace("{id}", "x").replace("{customer_id}", "x");
            let (s, v) = call(&env.app, &method.to_uppercase(), &uri, None, None).await;
            let secured = op["security"].as_array().is_some_and(|a| !a.is_empty());
            if secured {
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
            } else {
                assert_eq!(s, StatusCode::OK, "{method} {path}: {v}");
            }
            assert!(op["responses"][s.as_u16().to_string()].is_object(), "{method} {path} does not document {s}");
        }
    }
}

fn with_key(env: &Env, uri: &str, key: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", format!("Bearer {}", env.a))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn an_idempotency_key_never_runs_a_turn_twice() {
    let env = setup_with(Limits::default(), std::time::Duration::from_millis(300)).await;
    let id = new_conv(&env, &env.a, "c").await;
    let uri = format!("/v1/conversations/{id}/messages");
    let (s, first) = raw(&env.app, with_key(&env, &uri, "k1", &json!({"text": "hello"}))).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let resp = env.app.clone().oneshot(with_key(&env, &uri, "k1", &json!({"text": "hello"}))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    let replay: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(replay, first);
    let (s, v) = raw(&env.app, with_key(&env, &uri, "k1", &json!({"text": "something else"}))).await;
    assert_eq!((s, error_code(s, &v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"));
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(v["values"]["turns"], 1, "one turn ran: {v}");

    // Two concurrent requests with one key: one runs, the other is a 409.
    let body = json!({"text": "slow"});
    let (a, b) = tokio::join!(
        raw(&env.app, with_key(&env, &uri, "k2", &body)),
        raw(&env.app, with_key(&env, &uri, "k2", &body))
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{a:?} {b:?}");
    let (_, v) = call(&env.app, "GET", &format!("/v1/conversations/{id}/state"), Some(&env.a), None).await;
    assert_eq!(v["values"]["turns"], 2, "{v}");
    // The same key in another tenant is another key.
    let other = new_conv(&env, &env.b, "c").await;
    let req = Request::builder()
        .method("POST")
        .uri(format!("/v1/conversations/{other}/messages"))
        .header("authorization", format!("Bearer {}", env.b))
        .header("content-type", "application/json")
        .header("idempotency-key", "k1")
        .body(Body::from(json!({"text": "hello"}).to_string()))
        .unwrap();
    let (s, v) = raw(&env.app, req).await;
    assert_eq!((s, v["conversation_id"].as_str()), (StatusCode::OK, Some(other.as_str())));
}

#[tokio::test]
async fn each_key_has_its_own_rate_limit() {
    use switchboard_server::RateLimit;
    let limits = Limits { rate_limit: Some(RateLimit { per_second: 0.5, burst: 3 }), ..Limits::default() };
    let env = setup_with(limits, std::time::Duration::ZERO).await;
    for _ in 0..3 {
        assert_eq!(call(&env.app, "GET", "/v1/conversations", Some(&env.a), None).await.0, StatusCode::OK);
    }
    let resp = env
        .app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/v1/conversations")
                .header("authorization", format!("Bearer {}", env.a))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    // Another key of the same tenant is not affected.
    assert_eq!(call(&env.app, "GET", "/v1/conversations", Some(&env.a_chat), None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let env = setup().await;
    let resp = env.app.clone().oneshot(Request::builder().uri("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(id.starts_with("req_") && id.len() == 20, "{id}");
    let resp = env
        .app
        .clone()
        .oneshot(Request::builder().uri("/nope").header("x-request-id", "abc-123").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn metrics_count_responses_and_turns() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let env = setup().await;
    // Turns are counted from their spans, as in the binary: a span layer feeding the state's registry
    // (this thread's subscriber; the test's runtime runs every task on this thread).
    let sink = switchboard_telemetry::MetricsSink::new(env.state.metrics().clone());
    let layer = switchboard_telemetry::SpanLayer::new(Default::default(), vec![std::sync::Arc::new(sink)]);
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let id = new_conv(&env, &env.a, "c").await;
    say(&env, &env.a, &id, "hello").await;
    call(&env.app, "GET", "/nope", None, None).await;
    let resp = env.app.clone().oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("switchboard_turns_total{handler=\"none\",outcome=\"completed\"} 1"), "{text}");
    assert!(text.contains("switchboard_conversations_total 1\n"), "{text}");
    assert!(text.contains("switchboard_turn_duration_seconds_count{outcome=\"completed\"} 1\n"), "{text}");
    assert!(text.contains("# TYPE switchboard_queue_depth gauge\n"), "{text}");
    assert!(text.contains("switchboard_http_responses_total{class=\"4xx\"} 1"), "{text}");
    assert!(text.contains("switchboard_http_responses_total{class=\"2xx\"} 2"), "{text}");
    assert!(text.contains("switchboard_runs_in_flight 0"), "{text}");
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_only() {
    let limits = Limits { cors_origins: vec!["https://chat.example".into()], ..Limits::default() };
    let env = setup_with(limits, std::time::Duration::ZERO).await;
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/conversations")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .body(Body::empty())
            .unwrap()
    };
    let resp = env.app.clone().oneshot(preflight("https://chat.example")).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://chat.example");
    let resp = env.app.clone().oneshot(preflight("https://evil.example")).await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Without CORS config no CORS headers at all.
    let env = setup().await;
    let resp = env.app.clone().oneshot(preflight("https://chat.example")).await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}
