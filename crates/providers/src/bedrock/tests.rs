//! The Bedrock adapter against the Bedrock fake over real loopback HTTP: SigV4
//! checked by the fake's independent verifier, binary frames, tool round trips,
//! and every fault the fake injects.

use std::time::Duration;

use switchboard_testkit::bedrock::{TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use switchboard_testkit::{FakeServer, Fault, Reply, Scenario, ScriptedToolCall, Vendor};

use super::*;
use crate::event::collect;
use crate::{
    CancellationToken, ChatModel, ChatRequest, FinishReason, Message, Part, ProviderError, Secret, ToolDefinition,
    ToolResult,
};

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

fn config(fake: &FakeServer, auth: BedrockAuth) -> BedrockConfig {
    BedrockConfig {
        region: "us-east-1".into(),
        auth,
        endpoint: Some(fake.base_url()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

fn sigv4(secret: &str, token: Option<&str>) -> BedrockAuth {
    BedrockAuth::SigV4(AwsCredentials::new(TEST_ACCESS_KEY_ID, secret, token.map(str::to_owned)))
}

async fn setup() -> (FakeServer, Bedrock) {
    let fake = FakeServer::start(Vendor::Bedrock).await.unwrap();
    let model = Bedrock::new(MODEL, config(&fake, sigv4(TEST_SECRET_ACCESS_KEY, None))).unwrap();
    (fake, model)
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Current weather".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

#[tokio::test]
async fn signed_chat_round_trip() {
    let (fake, model) = setup().await;
    fake.push(Scenario::reply(Reply::text("Bonjour, Paris!")));
    let mut req = ChatRequest::user("Hello");
    req.system = Some("You are terse.".into());
    req.max_tokens = Some(64);
    req.temperature = Some(0.2);
    req.stop = vec!["###".into()];
    let resp = model.chat(req, CancellationToken::new()).await.unwrap();
    assert_eq!(resp.text, "Bonjour, Paris!");
    assert_eq!(resp.finish_reason, FinishReason::Stop);
    assert!(resp.usage.input_tokens > 0 && resp.usage.output_tokens > 0);
    assert!(resp.id.is_some(), "x-amzn-RequestId is kept");
    let recorded = &fake.requests()[0];
    // The model id is one percent-encoded path label; the fake verified the signature
    // over its double-encoded canonical form.
    assert_eq!(recorded.path, "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse");
    assert!(recorded.headers["authorization"].starts_with("AWS4-HMAC-SHA256 Credential=AKIDSWITCHBOARDFAKE/"));
    assert_eq!(recorded.body["system"][0]["text"], "You are terse.");
    assert_eq!(recorded.body["inferenceConfig"]["maxTokens"], 64);
    assert_eq!(recorded.body["inferenceConfig"]["stopSequences"][0], "###");
    assert_eq!(recorded.body["messages"][0]["content"][0]["text"], "Hello");
}

#[tokio::test]
async fn wrong_secret_is_a_typed_403_without_the_secret() {
    let fake = FakeServer::start(Vendor::Bedrock).await.unwrap();
    let model = Bedrock::new(MODEL, config(&fake, sigv4("not-the-secret", None))).unwrap();
    let err = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    match &err {
        ProviderError::Api { vendor, status, kind, retryable, .. } => {
            assert_eq!(
                (*vendor, *status, kind.as_str(), *retryable),
                ("bedrock", 403, "InvalidSignatureException", false)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("not-the-secret"), "{shown}");
}

#[tokio::test]
async fn session_token_and_bearer_key_are_accepted() {
    let fake = FakeServer::start(Vendor::Bedrock).await.unwrap();
    let model = Bedrock::new(MODEL, config(&fake, sigv4(TEST_SECRET_ACCESS_KEY, Some("sess-token")))).unwrap();
    model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    let h = &fake.requests()[0].headers;
    assert_eq!(h["x-amz-security-token"], "sess-token");
    assert!(h["authorization"].contains("x-amz-security-token"));

    let model = Bedrock::new(MODEL, config(&fake, BedrockAuth::ApiKey(Secret::new("bedrock-api-key")))).unwrap();
    let resp = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    assert!(!resp.text.is_empty());
    assert_eq!(fake.requests()[1].headers["authorization"], "Bearer bedrock-api-key");
}

#[tokio::test]
async fn streamed_text_survives_split_frames_and_padding() {
    let (fake, model) = setup().await;
    fake.push(Scenario {
        split_writes: true,
        ..Scenario::reply(Reply::text("Streaming über Bedrock works, naïvely."))
    });
    let stream = model.stream(ChatRequest::user("go"), CancellationToken::new()).await.unwrap();
    let resp = collect(stream, VENDOR).await.unwrap();
    assert_eq!(resp.text, "Streaming über Bedrock works, naïvely.");
    assert_eq!(resp.finish_reason, FinishReason::Stop);
    assert!(resp.usage.output_tokens > 0);
    assert_eq!(fake.requests()[0].path, "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream");
}

#[tokio::test]
async fn tool_call_round_trip_streamed_and_plain() {
    let (fake, model) = setup().await;
    let args = serde_json::json!({"city": "Paris", "units": "metric"});
    fake.push(Scenario::reply(Reply {
        text: "Checking.".into(),
        tool_calls: vec![ScriptedToolCall { id: None, name: "get_weather".into(), arguments: args.clone() }],
        finish_reason: None,
        usage: None,
    }));
    let mut req = ChatRequest::user("Weather in Paris?");
    req.tools = vec![weather_tool()];
    let stream = model.stream(req.clone(), CancellationToken::new()).await.unwrap();
    let first = collect(stream, VENDOR).await.unwrap();
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(first.text, "Checking.");
    assert_eq!(first.tool_calls.len(), 1);
    assert_eq!(first.tool_calls[0].arguments, args);
    assert_eq!(fake.requests()[0].body["toolConfig"]["tools"][0]["toolSpec"]["name"], "get_weather");
    assert_eq!(fake.requests()[0].body["toolConfig"]["toolChoice"], serde_json::json!({"auto": {}}));

    // Send the result back; the fake refuses results that answer no tool use.
    let call = first.tool_calls[0].clone();
    req.messages.push(first.to_message());
    req.messages.push(Message::tool_results([ToolResult {
        call_id: call.id.clone(),
        content: r#"{"temp_c": 18}"#.into(),
        is_error: false,
    }]));
    fake.push(Scenario::reply(Reply::text("18 °C in Paris.")));
    let second = model.chat(req, CancellationToken::new()).await.unwrap();
    assert_eq!(second.text, "18 °C in Paris.");
    let body = &fake.requests()[1].body;
    assert_eq!(body["messages"][1]["content"][1]["toolUse"]["toolUseId"], call.id.as_str());
    assert_eq!(body["messages"][2]["content"][0]["toolResult"]["toolUseId"], call.id.as_str());
    assert_eq!(body["messages"][2]["content"][0]["toolResult"]["status"], "success");
}

#[tokio::test]
async fn http_errors_are_typed() {
    let (fake, model) = setup().await;
    fake.push(Scenario::fault(Fault::Status { status: 429, retry_after: Some(3), message: None }));
    let err = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(matches!(&err, ProviderError::Api { kind, request_id: Some(_), .. } if kind == "ThrottlingException"));

    fake.push(Scenario::fault(Fault::ContextOverflow));
    let err = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, ProviderError::ContextOverflow { vendor: "bedrock", .. }));

    fake.push(Scenario::fault(Fault::Status { status: 400, retry_after: None, message: None }));
    let err = model.stream(ChatRequest::user("hi"), CancellationToken::new()).await.err().unwrap();
    assert!(!err.is_retryable());
    assert_eq!(err.status(), Some(400));

    // A request the service would refuse: a tool result with no tool config.
    let mut req = ChatRequest::user("x");
    req.messages.push(Message {
        role: crate::Role::Assistant,
        parts: vec![Part::ToolCall(crate::ToolCall {
            id: "t1".into(),
            name: "f".into(),
            arguments: serde_json::json!({}),
        })],
    });
    req.messages.push(Message::tool_results([ToolResult {
        call_id: "t1".into(),
        content: "ok".into(),
        is_error: false,
    }]));
    let err = model.chat(req, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, ProviderError::Api { status: 400, kind, .. } if kind == "ValidationException"), "{err:?}");
}

async fn stream_fault(fault: Fault, reply: Reply) -> (Vec<crate::StreamEvent>, ProviderError) {
    use futures::StreamExt;
    let (fake, model) = setup().await;
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
    assert!(stream.next().await.is_none(), "nothing after an error");
    (events, err)
}

fn tool_reply() -> Reply {
    Reply::tool_call("get_weather", serde_json::json!({"city": "Paris, the capital of France"}))
}

#[tokio::test]
async fn exception_frame_mid_stream_is_a_retryable_vendor_error() {
    let (events, err) = stream_fault(Fault::StreamError { after_events: 2 }, Reply::text("one two three four")).await;
    assert!(events.iter().any(|e| matches!(e, crate::StreamEvent::TextDelta { .. })));
    assert!(
        matches!(&err, ProviderError::Api { status: 503, kind, .. } if kind == "ServiceUnavailableException"),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[test]
fn exception_frames_are_typed() {
    use switchboard_testkit::bedrock::frames;
    let cases = [
        ("throttlingException", 429, true),
        ("modelStreamErrorException", 424, false),
        ("validationException", 400, false),
        ("internalServerException", 500, true),
    ];
    for (kind, status, retryable) in cases {
        let mut frames_in = eventstream::FrameDecoder::default();
        frames_in.push(&frames::exception_frame(kind, "boom"));
        let frame = frames_in.next_frame().unwrap().unwrap();
        let mut out = Vec::new();
        let err = stream::Decoder::default().on_frame(frame, &mut out).unwrap_err();
        assert_eq!(err.status(), Some(status), "{kind}");
        assert_eq!(err.is_retryable(), retryable, "{kind}");
        assert!(err.to_string().contains("boom"));
    }
}

#[test]
fn tool_input_for_an_unknown_block_is_a_protocol_error() {
    use switchboard_testkit::bedrock::frames;
    let mut d = eventstream::FrameDecoder::default();
    d.push(&frames::event_frame(
        "contentBlockDelta",
        serde_json::json!({"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{"}}}),
        5,
    ));
    let frame = d.next_frame().unwrap().unwrap();
    let err = stream::Decoder::default().on_frame(frame, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ProviderError::Protocol { .. }));
}

#[tokio::test]
async fn bad_crc_is_a_protocol_error() {
    let (_, err) = stream_fault(Fault::Malformed { after_events: 1 }, Reply::text("one two three")).await;
    assert!(matches!(err, ProviderError::Protocol { vendor: "bedrock", .. }), "{err:?}");
}

#[tokio::test]
async fn broken_stream_never_completes_a_tool_call() {
    for fault in [Fault::Truncate { after_events: 3 }, Fault::Disconnect { after_events: 3 }] {
        let (events, err) = stream_fault(fault, tool_reply()).await;
        let mut acc = crate::Accumulator::new(VENDOR);
        for e in events {
            acc.push(e).unwrap();
        }
        assert!(acc.completed_tool_calls().is_empty());
        assert!(acc.finish().is_err());
        assert!(matches!(err, ProviderError::Protocol { .. } | ProviderError::Transport { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn cancellation_aborts_a_stalled_stream() {
    use futures::StreamExt;
    let (fake, model) = setup().await;
    fake.push(Scenario::fault(Fault::Stall { after_events: 1 }));
    let cancel = CancellationToken::new();
    let mut stream = model.stream(ChatRequest::user("go"), cancel.clone()).await.unwrap();
    assert!(matches!(stream.next().await, Some(Ok(crate::StreamEvent::Start { .. }))));
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.cancel();
    });
    let mut saw_cancel = false;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("no hang") {
        if let Err(e) = item {
            saw_cancel = matches!(e, ProviderError::Cancelled);
            break;
        }
    }
    assert!(saw_cancel);
}

#[test]
fn conversion_merges_roles_and_maps_choices() {
    let mut req = ChatRequest::user("a");
    req.messages.push(Message::user("b"));
    req.tools = vec![weather_tool()];
    req.tool_choice = crate::ToolChoice::Tool("get_weather".into());
    let wire = serde_json::to_value(convert::request(&req)).unwrap();
    assert_eq!(wire["messages"].as_array().unwrap().len(), 1);
    assert_eq!(wire["messages"][0]["content"].as_array().unwrap().len(), 2);
    assert_eq!(wire["toolConfig"]["toolChoice"]["tool"]["name"], "get_weather");
    // Converse has no "none": the tools are left out, unless history needs them.
    req.tool_choice = crate::ToolChoice::None;
    let wire = serde_json::to_value(convert::request(&req)).unwrap();
    assert!(wire.get("toolConfig").is_none());
    req.messages.push(Message {
        role: crate::Role::Assistant,
        parts: vec![Part::ToolCall(crate::ToolCall {
            id: "t1".into(),
            name: "get_weather".into(),
            arguments: serde_json::json!({}),
        })],
    });
    let wire = serde_json::to_value(convert::request(&req)).unwrap();
    assert!(wire["toolConfig"]["tools"].is_array());
    assert!(wire["toolConfig"].get("toolChoice").is_none());
    assert_eq!(convert::finish_reason("guardrail_intervened"), FinishReason::ContentFilter);
    assert_eq!(convert::finish_reason("brand_new"), FinishReason::Other("brand_new".into()));
}

mod split {
    use proptest::prelude::*;
    use switchboard_testkit::bedrock::frames;

    use super::super::eventstream::{FrameDecoder, FrameKind};

    fn message_bytes() -> (Vec<u8>, Vec<String>) {
        let texts: Vec<String> = ["Hé", "llo ", "wörld", "!", "漢字"].iter().map(|s| (*s).to_owned()).collect();
        let mut bytes = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            bytes.extend_from_slice(&frames::event_frame(
                "contentBlockDelta",
                serde_json::json!({"contentBlockIndex": 0, "delta": {"text": t}}),
                i * 3,
            ));
        }
        (bytes, texts)
    }

    proptest! {
        /// Any split of the byte stream into reads decodes to the same frames.
        #[test]
        fn any_split_decodes_the_same(cuts in proptest::collection::vec(any::<u16>(), 0..12)) {
            let (bytes, texts) = message_bytes();
            let mut points: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            let mut prev = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                d.push(&bytes[prev..p]);
                prev = p;
                while let Some(f) = d.next_frame().unwrap() {
                    prop_assert_eq!(&f.kind, &FrameKind::Event("contentBlockDelta".into()));
                    let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
                    got.push(v["delta"]["text"].as_str().unwrap().to_owned());
                }
            }
            prop_assert!(!d.has_partial());
            prop_assert_eq!(got, texts);
        }
    }
}

#[tokio::test]
async fn profile_credentials_sign_requests_the_fake_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        format!(
            "[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\
             [fake]\naws_access_key_id = {TEST_ACCESS_KEY_ID}\naws_secret_access_key = {TEST_SECRET_ACCESS_KEY}\n"
        ),
    )
    .unwrap();
    let file = path.to_string_lossy().into_owned();
    let env = move |k: &str| match k {
        "AWS_SHARED_CREDENTIALS_FILE" => Some(file.clone()),
        "AWS_PROFILE" => Some("fake".to_owned()),
        "AWS_REGION" => Some("eu-central-1".to_owned()),
        _ => None,
    };
    let fake = FakeServer::start(Vendor::Bedrock).await.unwrap();
    let mut cfg = BedrockConfig::from_lookup(&env).unwrap();
    assert_eq!(cfg.region, "eu-central-1");
    cfg.endpoint = Some(fake.base_url());
    let model = Bedrock::new(MODEL, cfg).unwrap();
    model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    assert!(fake.requests()[0].headers["authorization"].contains("/eu-central-1/bedrock/aws4_request"));
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Figures for the report (run in release):
/// `cargo test --release -p switchboard-providers --lib bedrock::tests::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test; run by hand in release"]
async fn measure() {
    use futures::StreamExt;
    // SigV4 signing cost.
    let creds = AwsCredentials::new(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, None);
    let body = vec![b'x'; 2048];
    let n = 20_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let h = sign::sign_request(
            &creds,
            "us-east-1",
            sign::SIGNING_NAME,
            std::time::SystemTime::now(),
            sign::Outgoing {
                method: "POST",
                url: "https://bedrock-runtime.us-east-1.amazonaws.com/model/a.b-v1%3A0/converse",
                headers: &[("content-type", "application/json")],
                body: &body,
            },
        )
        .unwrap();
        assert_eq!(h.len(), 2);
    }
    println!("sigv4 sign (2 KiB body): {:.1} us/request", t.elapsed().as_secs_f64() * 1e6 / f64::from(n));

    // Frame decoding throughput.
    let frames: Vec<u8> = (0..50_000)
        .flat_map(|i| {
            switchboard_testkit::bedrock::frames::event_frame(
                "contentBlockDelta",
                serde_json::json!({"contentBlockIndex": 0, "delta": {"text": "tok "}}),
                i % 20,
            )
            .to_vec()
        })
        .collect();
    let t = std::time::Instant::now();
    let mut d = eventstream::FrameDecoder::default();
    let mut events = Vec::new();
    let mut dec = stream::Decoder::default();
    for chunk in frames.chunks(16 * 1024) {
        d.push(chunk);
        while let Some(f) = d.next_frame().unwrap() {
            dec.on_frame(f, &mut events).unwrap();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "event-stream decode: {:.0} events/s ({:.0} MB/s, {} events)",
        events.len() as f64 / secs,
        frames.len() as f64 / secs / 1e6,
        events.len()
    );

    // Per-call overhead against the fake: adapter vs raw HTTP, same body, bearer auth.
    let fake = FakeServer::start(Vendor::Bedrock).await.unwrap();
    let model = Bedrock::new(MODEL, config(&fake, BedrockAuth::ApiKey(Secret::new("k")))).unwrap();
    let raw = reqwest::Client::new();
    let url = format!("{}/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse", fake.base_url());
    let raw_body = serde_json::json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).to_string();
    let (mut a, mut r) = (Vec::new(), Vec::new());
    for i in 0..2200 {
        let t = std::time::Instant::now();
        model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
        let ta = t.elapsed().as_secs_f64() * 1e6;
        let t = std::time::Instant::now();
        let resp = raw
            .post(&url)
            .header("authorization", "Bearer k")
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
        "converse per call: adapter p50 {:.0} us p99 {:.0} us; raw reqwest p50 {:.0} us p99 {:.0} us; overhead p50 {:.0} us",
        percentile(&a, 0.5),
        percentile(&a, 0.99),
        percentile(&r, 0.5),
        percentile(&r, 0.99),
        percentile(&a, 0.5) - percentile(&r, 0.5)
    );

    // Streaming throughput through the adapter.
    let text: String = (0..20_000).map(|i| format!("w{i} ")).collect();
    fake.push(Scenario::reply(Reply::text(text)));
    let t = std::time::Instant::now();
    let mut s = model.stream(ChatRequest::user("go"), CancellationToken::new()).await.unwrap();
    let mut n = 0u64;
    while let Some(ev) = s.next().await {
        if matches!(ev.unwrap(), crate::StreamEvent::TextDelta { .. }) {
            n += 1;
        }
    }
    println!("converse-stream: {:.0} tokens/s ({n} tokens, fake included)", n as f64 / t.elapsed().as_secs_f64());
}

#[tokio::test]
async fn request_timeout_does_not_cut_a_long_stream() {
    let fake = FakeServer::start(Vendor::Bedrock).await.unwrap();
    let mut cfg = config(&fake, sigv4(TEST_SECRET_ACCESS_KEY, None));
    cfg.request_timeout = Duration::from_millis(300);
    let model = Bedrock::new(MODEL, cfg).unwrap();
    let text = "one two three four five six seven eight nine ten eleven twelve";
    fake.push(Scenario { token_delay_ms: 60, ..Scenario::reply(Reply::text(text)) });
    let started = std::time::Instant::now();
    let stream = model.stream(ChatRequest::user("go"), CancellationToken::new()).await.unwrap();
    assert_eq!(collect(stream, VENDOR).await.unwrap().text, text);
    assert!(started.elapsed() > Duration::from_millis(300));
}

#[test]
fn replies_ignore_unknown_blocks_and_normalise_usage() {
    let reply: wire::ConverseResponse = serde_json::from_value(serde_json::json!({
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
            {"text": "Answer."},
            {"futureBlock": {"x": 1}},
            {"toolUse": {"toolUseId": "tu1", "name": "f", "input": {"a": 1}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 44,
                  "cacheReadInputTokens": 20, "cacheWriteInputTokens": 10},
        "metrics": {"latencyMs": 5}
    }))
    .unwrap();
    let r = convert::response(reply, Some("req-1".into()), MODEL).unwrap();
    assert_eq!(r.text, "Answer.");
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens, r.usage.cache_read_tokens, r.usage.cache_write_tokens),
        (40, 4, 20, 10)
    );
}
