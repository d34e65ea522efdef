//! The Gemini adapter against the Vertex fake over real loopback HTTP: the
//! service-account JWT grant and token cache against the fake's token endpoint,
//! the API-key variant, SSE chunks, thought-signature echo, and faults.

use std::time::Duration;

use switchboard_testkit::{FakeServer, Fault, Reply, Scenario, ScriptedToolCall, Vendor};

use super::*;
use crate::event::collect;
use crate::{
    CancellationToken, ChatModel, ChatRequest, FinishReason, Message, ProviderError, Secret, StreamEvent,
    ToolDefinition, ToolResult,
};

async fn service_account_json(fake: &FakeServer) -> String {
    reqwest::get(format!("{}/_fake/vertex/service-account.json", fake.base_url())).await.unwrap().text().await.unwrap()
}

async fn vertex(fake: &FakeServer, model: &str) -> Gemini {
    let json = service_account_json(fake).await;
    let mut cfg = GeminiConfig::vertex_service_account(&json, None, "europe-west4").unwrap();
    cfg.endpoint = Some(fake.base_url());
    cfg.request_timeout = Duration::from_secs(5);
    Gemini::new(model, cfg).unwrap()
}

async fn tokens_issued(fake: &FakeServer) -> u64 {
    let v: serde_json::Value =
        reqwest::get(format!("{}/_fake/vertex/tokens", fake.base_url())).await.unwrap().json().await.unwrap();
    v["issued"].as_u64().unwrap()
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Current weather".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

#[tokio::test]
async fn vertex_chat_with_cached_service_account_token() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let model = vertex(&fake, "gemini-2.5-flash").await;
    assert_eq!(model.id().provider, "vertex");
    fake.push(Scenario::reply(Reply::text("Hello from Vertex.")));
    let mut req = ChatRequest::user("Hi");
    req.system = Some("You are terse.".into());
    req.max_tokens = Some(32);
    let resp = model.chat(req.clone(), CancellationToken::new()).await.unwrap();
    assert_eq!(resp.text, "Hello from Vertex.");
    assert_eq!(resp.finish_reason, FinishReason::Stop);
    assert!(resp.usage.input_tokens > 0);
    model.chat(req, CancellationToken::new()).await.unwrap();
    assert_eq!(tokens_issued(&fake).await, 1, "the token is cached");
    let r = &fake.requests()[0];
    assert_eq!(
        r.path,
        "/v1/projects/fake-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert!(r.headers["authorization"].starts_with("Bearer ya29."));
    assert_eq!(r.body["systemInstruction"]["parts"][0]["text"], "You are terse.");
    assert_eq!(r.body["generationConfig"]["maxOutputTokens"], 32);
    assert_eq!(r.body["contents"][0]["role"], "user");
}

#[tokio::test]
async fn token_is_refreshed_before_expiry() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    // Tokens living 10 s are inside the 5-minute refresh margin at once.
    reqwest::Client::new()
        .post(format!("{}/_fake/vertex/token-lifetime", fake.base_url()))
        .json(&serde_json::json!({"seconds": 10}))
        .send()
        .await
        .unwrap();
    let model = vertex(&fake, "gemini-2.5-flash").await;
    for _ in 0..3 {
        model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    }
    assert_eq!(tokens_issued(&fake).await, 3);
}

#[tokio::test]
async fn token_endpoint_refusal_is_typed() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    // A key of an account the token endpoint does not know (same PEM, other e-mail):
    // its signature cannot be verified, so the grant is refused.
    let json = service_account_json(&fake).await.replace("switchboard-test@", "someone-else@");
    let mut cfg = GeminiConfig::vertex_service_account(&json, Some("p".into()), "us-central1").unwrap();
    cfg.endpoint = Some(fake.base_url());
    let model = Gemini::new("gemini-2.5-flash", cfg).unwrap();
    let err = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(fake.requests().is_empty(), "no API call without a token");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("PRIVATE KEY") && !shown.contains("eyJ"), "{shown}");
    assert!(
        matches!(&err, ProviderError::Api { vendor: "vertex", status: 400, kind, retryable: false, .. } if kind == "invalid_grant"),
        "{err:?}"
    );
}

#[tokio::test]
async fn vertex_stream_with_crlf_chunks() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let model = vertex(&fake, "gemini-2.5-flash").await;
    fake.push(Scenario {
        split_writes: true,
        keepalive: true,
        ..Scenario::reply(Reply::text("Gemini streams, über alles."))
    });
    let stream = model.stream(ChatRequest::user("go"), CancellationToken::new()).await.unwrap();
    let resp = collect(stream, VENDOR_VERTEX).await.unwrap();
    assert_eq!(resp.text, "Gemini streams, über alles.");
    assert_eq!(resp.finish_reason, FinishReason::Stop);
    assert!(resp.usage.output_tokens > 0);
    assert_eq!(fake.requests()[0].query.as_deref(), Some("alt=sse"));
}

#[tokio::test]
async fn tool_round_trip_echoes_thought_signatures() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    // gemini-3 models refuse a replayed function call without its signature.
    let model = vertex(&fake, "gemini-3-pro-preview").await;
    let args = serde_json::json!({"city": "Paris"});
    fake.push(Scenario::reply(Reply {
        text: String::new(),
        tool_calls: vec![
            ScriptedToolCall { id: None, name: "get_weather".into(), arguments: args.clone() },
            ScriptedToolCall { id: None, name: "get_weather".into(), arguments: serde_json::json!({"city": "Lyon"}) },
        ],
        finish_reason: None,
        usage: None,
    }));
    let mut req = ChatRequest::user("Weather in Paris and Lyon?");
    req.tools = vec![weather_tool()];
    let stream = model.stream(req.clone(), CancellationToken::new()).await.unwrap();
    let first = collect(stream, VENDOR_VERTEX).await.unwrap();
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(first.tool_calls.len(), 2);
    assert_ne!(first.tool_calls[0].id, first.tool_calls[1].id);
    assert_eq!(first.tool_calls[0].arguments, args);
    let body = &fake.requests()[0].body;
    assert_eq!(body["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
    assert_eq!(body["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");

    req.messages.push(first.to_message());
    req.messages.push(Message::tool_results(first.tool_calls.iter().map(|c| ToolResult {
        call_id: c.id.clone(),
        content: r#"{"temp_c": 18}"#.into(),
        is_error: false,
    })));
    fake.push(Scenario::reply(Reply::text("18 °C in both.")));
    let second = model.chat(req, CancellationToken::new()).await.unwrap();
    assert_eq!(second.text, "18 °C in both.");
    let body = &fake.requests()[1].body;
    let model_turn = &body["contents"][1];
    assert_eq!(model_turn["role"], "model");
    assert!(model_turn["parts"][0]["thoughtSignature"].as_str().unwrap().starts_with("ZmFrZS10aG91Z2h0LXNpZ25hdHVyZT"));
    assert!(model_turn["parts"][0]["functionCall"].get("id").is_none(), "synthetic ids stay local");
    let fr = &body["contents"][2]["parts"][1]["functionResponse"];
    assert_eq!(fr["name"], "get_weather");
    assert_eq!(fr["response"]["temp_c"], 18);
}

#[tokio::test]
async fn api_key_variant_and_missing_key() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let mut cfg = GeminiConfig::api_key(Secret::new("AIza-test-key"));
    cfg.endpoint = Some(fake.base_url());
    let model = Gemini::new("gemini-2.5-flash", cfg.clone()).unwrap();
    assert_eq!(model.id().provider, "gemini");
    let resp = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    assert!(!resp.text.is_empty());
    let stream = model.stream(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    assert!(!collect(stream, VENDOR_GEMINI).await.unwrap().text.is_empty());
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(r.headers["x-goog-api-key"], "AIza-test-key");

    cfg.auth = GoogleAuth::ApiKey(Secret::new(""));
    let model = Gemini::new("gemini-2.5-flash", cfg).unwrap();
    let err = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Api { vendor: "gemini", status: 403, kind, retryable: false, .. } if kind == "PERMISSION_DENIED")
    );
}

#[tokio::test]
async fn errors_are_typed() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let model = vertex(&fake, "gemini-2.5-flash").await;
    fake.push(Scenario::fault(Fault::Status { status: 429, retry_after: Some(7), message: None }));
    let err = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "from google.rpc.RetryInfo");
    assert!(matches!(&err, ProviderError::Api { kind, .. } if kind == "RESOURCE_EXHAUSTED"));

    fake.push(Scenario::fault(Fault::ContextOverflow));
    let err = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, ProviderError::ContextOverflow { vendor: "vertex", .. }), "{err:?}");

    fake.push(Scenario::fault(Fault::Status { status: 503, retry_after: None, message: None }));
    let err = model.stream(ChatRequest::user("hi"), CancellationToken::new()).await.err().unwrap();
    assert!(err.is_retryable());

    let mut bad = ChatRequest::user("hi");
    bad.temperature = Some(5.0);
    let err = model.chat(bad, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, ProviderError::Api { status: 400, retryable: false, .. }), "{err:?}");
}

async fn stream_fault(fault: Fault, reply: Reply) -> (Vec<StreamEvent>, ProviderError) {
    use futures::StreamExt;
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let model = vertex(&fake, "gemini-2.5-flash").await;
    fake.push(Scenario { fault: Some(fault), ..Scenario::reply(reply) });
    let mut stream = model.stream(ChatRequest::user("go"), CancellationToken::new()).await.unwrap();
    let mut events = Vec::new();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("no hang") {
            Some(Ok(ev)) => events.push(ev),
            Some(Err(e)) => break e,
            None => panic!("stream ended cleanly despite the fault: {events:?}"),
        }
    };
    (events, err)
}

#[tokio::test]
async fn mid_stream_faults() {
    let (events, err) = stream_fault(Fault::StreamError { after_events: 2 }, Reply::text("a b c d e")).await;
    assert!(events.iter().any(|e| matches!(e, StreamEvent::TextDelta { .. })));
    assert!(matches!(&err, ProviderError::Api { status: 503, kind, .. } if kind == "UNAVAILABLE"));
    assert!(err.is_retryable());

    let (_, err) = stream_fault(Fault::Malformed { after_events: 1 }, Reply::text("a b c")).await;
    assert!(matches!(err, ProviderError::Protocol { vendor: "vertex", .. }), "{err:?}");

    let (_, err) = stream_fault(Fault::Truncate { after_events: 2 }, Reply::text("a b c d e")).await;
    assert!(matches!(err, ProviderError::Protocol { .. }), "{err:?}");

    let tool = Reply::tool_call("get_weather", serde_json::json!({"city": "Paris"}));
    let (events, _) = stream_fault(Fault::Disconnect { after_events: 0 }, tool).await;
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::ToolCallEnd { .. })));
}

#[test]
fn conversion_details() {
    let mut req = ChatRequest::user("x");
    req.response_format =
        Some(crate::ResponseFormat { name: "answer".into(), schema: serde_json::json!({"type": "object"}) });
    req.tools = vec![weather_tool()];
    req.tool_choice = crate::ToolChoice::Tool("get_weather".into());
    req.metadata.tenant = Some("Acme Corp".into());
    let v = serde_json::to_value(convert::request(&req, true).unwrap()).unwrap();
    assert_eq!(v["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(v["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"][0], "get_weather");
    assert_eq!(v["labels"]["tenant"], "acme_corp");
    let v = serde_json::to_value(convert::request(&req, false).unwrap()).unwrap();
    assert!(v.get("labels").is_none(), "the Developer API has no labels");

    // A tool result for an unknown call is refused before sending.
    let mut req = ChatRequest::user("x");
    req.messages.push(Message::tool_results([ToolResult {
        call_id: "nope".into(),
        content: "1".into(),
        is_error: false,
    }]));
    assert!(matches!(convert::request(&req, true), Err(ProviderError::InvalidRequest(_))));
    assert_eq!(convert::finish_reason("STOP", true), FinishReason::ToolCalls);
    assert_eq!(convert::finish_reason("NEW_REASON", false), FinishReason::Other("NEW_REASON".into()));
}

#[test]
fn call_ids_carry_vendor_ids_and_signatures() {
    let call = |id: Option<&str>| wire::FunctionCall {
        id: id.map(str::to_owned),
        name: "f".into(),
        args: serde_json::json!({}),
    };
    let cases = [
        (Some("fc1"), Some("U2ln+/="), "fc1#U2ln+/="),
        (Some("fc1"), None, "fc1#"),
        (None, Some("U2ln+/="), "U2ln+/="),
        (None, None, "call_k_2"),
    ];
    for (id, sig, expected) in cases {
        let neutral = convert::call_id(&call(id), sig, "k", 2);
        assert_eq!(neutral, expected);
        // Back on the wire: the same vendor id and signature, never the local id.
        let mut req = ChatRequest::user("q");
        req.messages.push(Message {
            role: crate::Role::Assistant,
            parts: vec![crate::Part::ToolCall(crate::ToolCall {
                id: neutral.clone(),
                name: "f".into(),
                arguments: serde_json::json!({}),
            })],
        });
        req.messages.push(Message::tool_results([ToolResult {
            call_id: neutral,
            content: "done".into(),
            is_error: false,
        }]));
        let v = serde_json::to_value(convert::request(&req, true).unwrap()).unwrap();
        let part = &v["contents"][1]["parts"][0];
        assert_eq!(part["functionCall"].get("id").and_then(|x| x.as_str()), id);
        assert_eq!(part.get("thoughtSignature").and_then(|x| x.as_str()), sig);
        let fr = &v["contents"][2]["parts"][0]["functionResponse"];
        assert_eq!(fr.get("id").and_then(|x| x.as_str()), id);
        assert_eq!(fr["response"]["output"], "done");
    }
}

#[tokio::test]
async fn concurrent_calls_share_one_token_fetch() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let model = std::sync::Arc::new(vertex(&fake, "gemini-2.5-flash").await);
    let calls = (0..16).map(|_| {
        let m = model.clone();
        tokio::spawn(async move { m.chat(ChatRequest::user("hi"), CancellationToken::new()).await })
    });
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(tokens_issued(&fake).await, 1);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Figures for the report (run in release):
/// `cargo test --release -p switchboard-providers --lib vertex::tests::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test; run by hand in release"]
async fn measure() {
    use futures::StreamExt;
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let model = vertex(&fake, "gemini-2.5-flash").await;
    let raw = reqwest::Client::new();
    // The raw client reuses a token the adapter fetched, so both pay the same auth.
    model.chat(ChatRequest::user("warm"), CancellationToken::new()).await.unwrap();
    let token = fake.requests()[0].headers["authorization"].clone();
    let url = format!(
        "{}/v1/projects/fake-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent",
        fake.base_url()
    );
    let raw_body = serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string();
    let (mut a, mut r) = (Vec::new(), Vec::new());
    for i in 0..2200 {
        let t = std::time::Instant::now();
        model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
        let ta = t.elapsed().as_secs_f64() * 1e6;
        let t = std::time::Instant::now();
        let resp = raw
            .post(&url)
            .header("authorization", &token)
            .header("content-type", "application/json")
            .body(raw_body.clone())
            .send()
            .await
            .unwrap();
        let _: serde_json::Value = resp.json().await.unwrap();
        let tr = t.elapsed().as_secs_f64() * 1e6;
        if i >= 200 {
            a.push(ta);
            r.push(tr);
        }
    }
    a.sort_by(f64::total_cmp);
    r.sort_by(f64::total_cmp);
    println!(
        "generateContent per call (cached token): adapter p50 {:.0} us p99 {:.0} us; raw reqwest p50 {:.0} us p99 {:.0} us; overhead p50 {:.0} us",
        percentile(&a, 0.5),
        percentile(&a, 0.99),
        percentile(&r, 0.5),
        percentile(&r, 0.99),
        percentile(&a, 0.5) - percentile(&r, 0.5)
    );
    let text: String = (0..20_000).map(|i| format!("w{i} ")).collect();
    fake.push(Scenario::reply(Reply::text(text)));
    let t = std::time::Instant::now();
    let mut s = model.stream(ChatRequest::user("go"), CancellationToken::new()).await.unwrap();
    let mut n = 0u64;
    while let Some(ev) = s.next().await {
        if matches!(ev.unwrap(), StreamEvent::TextDelta { .. }) {
            n += 1;
        }
    }
    println!("streamGenerateContent: {:.0} tokens/s ({n} tokens, fake included)", n as f64 / t.elapsed().as_secs_f64());
}

#[tokio::test]
async fn request_timeout_does_not_cut_a_long_stream() {
    let fake = FakeServer::start(Vendor::Vertex).await.unwrap();
    let mut cfg = GeminiConfig::api_key(Secret::new("k"));
    cfg.endpoint = Some(fake.base_url());
    cfg.request_timeout = Duration::from_millis(300);
    let model = Gemini::new("gemini-2.5-flash", cfg).unwrap();
    let text = "one two three four five six seven eight nine ten eleven twelve";
    fake.push(Scenario { token_delay_ms: 60, ..Scenario::reply(Reply::text(text)) });
    let started = std::time::Instant::now();
    let stream = model.stream(ChatRequest::user("go"), CancellationToken::new()).await.unwrap();
    assert_eq!(collect(stream, VENDOR_GEMINI).await.unwrap().text, text);
    assert!(started.elapsed() > Duration::from_millis(300));
}

#[test]
fn replies_skip_thoughts_and_map_blocked_prompts() {
    let reply: wire::GenerateContentResponse = serde_json::from_value(serde_json::json!({
        "candidates": [{"finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": "thinking…", "thought": true},
            {"text": "Answer."},
            {"inlineData": {"mimeType": "image/png", "data": "AA=="}}
        ]}}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 7,
                          "cachedContentTokenCount": 3, "futureField": 1},
        "responseId": "r1"
    }))
    .unwrap();
    let r = convert::response(VENDOR_VERTEX, reply, "m").unwrap();
    assert_eq!(r.text, "Answer.");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens, r.usage.reasoning_tokens, r.usage.cache_read_tokens),
        (5, 9, 7, 3)
    );
    let blocked: wire::GenerateContentResponse = serde_json::from_value(serde_json::json!({
        "promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}
    }))
    .unwrap();
    let r = convert::response(VENDOR_VERTEX, blocked, "m").unwrap();
    assert_eq!(r.finish_reason, FinishReason::ContentFilter);
    assert!(convert::response(VENDOR_VERTEX, wire::GenerateContentResponse::default(), "m").is_err());
}
