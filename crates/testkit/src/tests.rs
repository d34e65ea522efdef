//! Tests of the fakes themselves: control endpoints, recording, script order, default reply,
//! and the wire details a client must be able to rely on.

use serde_json::json;

use crate::script::{DEFAULT_REPLY, tokens};
use crate::{FakeServer, Fault, Reply, Scenario, Vendor};

async fn post(url: &str, headers: &[(&str, &str)], body: serde_json::Value) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut rb = client.post(url).json(&body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[test]
fn tokens_reassemble_the_text() {
    for text in ["Hello, world!", "  héllo 漢字  wörld ", "", "a-b's c"] {
        assert_eq!(tokens(text).concat(), text);
    }
    assert_eq!(tokens("Hello, world!"), vec!["Hello", ",", " world", "!"]);
}

#[test]
fn vendor_names_round_trip() {
    for v in Vendor::ALL {
        assert_eq!(v.as_str().parse::<Vendor>().unwrap(), v);
    }
    assert!("azure".parse::<Vendor>().is_err());
}

#[test]
fn scenarios_parse_from_the_documented_json() {
    let s: Vec<Scenario> = serde_json::from_value(json!([
        {"reply": {"text": "hi", "tool_calls": [{"name": "f", "arguments": {"a": 1}}]}, "token_delay_ms": 5},
        {"fault": {"kind": "status", "status": 429, "retry_after": 2}},
        {"fault": {"kind": "disconnect", "after_events": 3}}
    ]))
    .unwrap();
    assert_eq!(s[0].reply.tool_calls[0].name, "f");
    assert_eq!(s[1].fault, Some(Fault::Status { status: 429, retry_after: Some(2), message: None }));
}

#[tokio::test]
async fn script_is_consumed_in_order_then_default_reply() {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    let url = format!("{}/v1/chat/completions", fake.base_url());
    let (s, _) = post(
        &format!("{}/_fake/script", fake.base_url()),
        &[],
        json!([
            {"reply": {"text": "first"}}, {"fault": {"kind": "status", "status": 503}}
        ]),
    )
    .await;
    assert_eq!(s, 200);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let auth = [("authorization", "Bearer k")];
    let (s1, b1) = post(&url, &auth, body.clone()).await;
    let (s2, _) = post(&url, &auth, body.clone()).await;
    let (s3, b3) = post(&url, &auth, body.clone()).await;
    assert_eq!((s1, s2, s3), (200, 503, 200));
    assert!(b1.contains("\"first\""));
    assert!(b3.contains(DEFAULT_REPLY));
    let recorded = fake.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].headers["authorization"], "Bearer k");
    assert_eq!(recorded[0].body["messages"][0]["content"], "hi");
}

#[tokio::test]
async fn fakes_reject_what_the_real_apis_reject() {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    let url = format!("{}/v1/chat/completions", fake.base_url());
    let (s, _) = post(&url, &[], json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(s, 401);
    // A tool message that answers no tool call.
    let (s, b) = post(
        &url,
        &[("authorization", "Bearer k")],
        json!({"model": "m", "messages": [
        {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");

    let fake = FakeServer::start(Vendor::Anthropic).await.unwrap();
    let url = format!("{}/v1/messages", fake.base_url());
    let h = [("x-api-key", "k"), ("anthropic-version", "2023-06-01")];
    let (s, _) = post(&url, &h, json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(s, 400, "max_tokens is required");
    let (s, _) = post(
        &url,
        &[("x-api-key", "k")],
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, 400, "anthropic-version is required");
    let (s, b) = post(
        &url,
        &h,
        json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}]}]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
}

#[tokio::test]
async fn openai_stream_ends_with_usage_chunk_and_done() {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    fake.push(Scenario::reply(Reply::text("a b")));
    let (s, body) = post(
        &format!("{}/v1/chat/completions", fake.base_url()),
        &[("authorization", "Bearer k")],
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(s, 200);
    let datas: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(*datas.last().unwrap(), "[DONE]");
    let usage: serde_json::Value = serde_json::from_str(datas[datas.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn anthropic_stream_has_every_event_type_and_ping() {
    let fake = FakeServer::start(Vendor::Anthropic).await.unwrap();
    fake.push(Scenario {
        keepalive: true,
        ..Scenario::reply(Reply { text: "Checking.".into(), ..Reply::tool_call("f", json!({"a": 1})) })
    });
    let (_, body) = post(
        &format!("{}/v1/messages", fake.base_url()),
        &[("x-api-key", "k"), ("anthropic-version", "2023-06-01")],
        json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    for ev in [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
    ] {
        assert!(body.contains(&format!("event: {ev}\n")), "missing {ev}");
    }
    assert!(body.contains("input_json_delta"));
    assert!(body.trim_end().ends_with("data: {\"type\":\"message_stop\"}"));
}
