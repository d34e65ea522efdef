//! Resilience layers and structured output over real HTTP against the fake vendors.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchboard_providers::anthropic::{AnthropicConfig, AnthropicModel};
use switchboard_providers::error::TimeoutPhase;
use switchboard_providers::event::collect;
use switchboard_providers::openai::{OpenAiConfig, OpenAiModel};
use switchboard_providers::resilience::{
    BreakerConfig, BreakerRegistry, BreakerState, ChatModelExt, Fallback, RetryPolicy, TimeoutPolicy,
};
use switchboard_providers::structured::chat_structured;
use switchboard_providers::{CancellationToken, ChatModel, ChatRequest, ProviderError, ResponseFormat};
use switchboard_testkit::{FakeServer, Fault, Reply, Scenario, Vendor};

fn openai(fake: &FakeServer) -> OpenAiModel {
    OpenAiModel::new(OpenAiConfig::new("gpt-test").base_url(format!("{}/v1", fake.base_url())).api_key("sk-test"))
        .unwrap()
}

fn anthropic(fake: &FakeServer) -> AnthropicModel {
    AnthropicModel::new(AnthropicConfig::new("claude-test").base_url(fake.base_url()).api_key("sk-ant-test")).unwrap()
}

fn status(status: u16, retry_after: Option<u64>) -> Scenario {
    Scenario::fault(Fault::Status { status, retry_after, message: None })
}

#[tokio::test]
async fn retry_honours_retry_after_from_a_real_429() {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    fake.push(status(429, Some(1)));
    let m = openai(&fake).with_retry(RetryPolicy::default());
    let t = Instant::now();
    let r = m.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    assert_eq!(r.text, switchboard_testkit::script::DEFAULT_REPLY);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn anthropic_529_and_mid_stream_overload_are_retried_before_the_first_token() {
    let fake = FakeServer::start(Vendor::Anthropic).await.unwrap();
    fake.push(status(529, None));
    fake.push(Scenario::fault(Fault::StreamError { after_events: 1 }));
    fake.push(Scenario::reply(Reply::text("third time lucky")));
    let m = anthropic(&fake).with_retry(RetryPolicy { max_retries: 3, ..RetryPolicy::default() });
    let s = m.stream(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    assert_eq!(collect(s, "test").await.unwrap().text, "third time lucky");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn stalled_stream_is_cut_by_the_idle_timeout() {
    let fake = FakeServer::start(Vendor::Anthropic).await.unwrap();
    fake.push(Scenario::fault(Fault::Stall { after_events: 3 }));
    let m = anthropic(&fake).with_timeout(TimeoutPolicy {
        total: None,
        first_event: Some(Duration::from_secs(5)),
        idle: Some(Duration::from_millis(300)),
    });
    let mut s = m.stream(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    let mut last = None;
    while let Some(ev) = s.next().await {
        if let Err(e) = ev {
            last = Some(e);
        }
    }
    assert!(matches!(last, Some(ProviderError::Timeout { phase: TimeoutPhase::Idle, .. })), "{last:?}");
}

#[tokio::test]
async fn slow_first_byte_hits_the_first_event_timeout() {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    fake.push(Scenario { latency_ms: 2_000, ..Scenario::default() });
    let m = openai(&fake).with_timeout(TimeoutPolicy {
        total: None,
        first_event: Some(Duration::from_millis(200)),
        idle: None,
    });
    let e = m.stream(ChatRequest::user("hi"), CancellationToken::new()).await.err().unwrap();
    assert!(matches!(e, ProviderError::Timeout { phase: TimeoutPhase::FirstByte, .. }), "{e:?}");
}

#[tokio::test]
async fn fallback_switches_vendor_only_before_the_first_token() {
    let primary = FakeServer::start(Vendor::OpenAi).await.unwrap();
    let secondary = FakeServer::start(Vendor::Anthropic).await.unwrap();
    let chain = Fallback::new(vec![
        openai(&primary).with_retry(RetryPolicy { max_retries: 1, ..RetryPolicy::default() }).boxed(),
        anthropic(&secondary).boxed(),
    ])
    .unwrap();

    // Primary down (503 twice, retried once): the secondary answers.
    primary.push(status(503, None));
    primary.push(status(503, None));
    secondary.push(Scenario::reply(Reply::text("from anthropic")));
    let s = chain.stream(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    assert_eq!(collect(s, "test").await.unwrap().text, "from anthropic");
    assert_eq!(primary.requests().len(), 2);
    assert_eq!(secondary.requests().len(), 1);

    // Primary fails after tokens reached the caller: no switch, the caller sees the error.
    primary.push(Scenario {
        fault: Some(Fault::StreamError { after_events: 4 }),
        ..Scenario::reply(Reply::text("partial answer that breaks"))
    });
    let mut s = chain.stream(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    let mut saw_text = false;
    let mut err = None;
    while let Some(ev) = s.next().await {
        match ev {
            Ok(switchboard_providers::StreamEvent::TextDelta { .. }) => saw_text = true,
            Ok(_) => {}
            Err(e) => err = Some(e),
        }
    }
    assert!(saw_text);
    assert_eq!(err.unwrap().status(), Some(500));
    assert_eq!(secondary.requests().len(), 1, "fallback must not switch after the first token");
}

#[tokio::test]
async fn breaker_opens_after_five_real_failures_and_closes_after_a_probe() {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    for _ in 0..5 {
        fake.push(status(500, None));
    }
    let reg = BreakerRegistry::new(BreakerConfig { open_for: Duration::from_millis(300), ..BreakerConfig::default() });
    let m = openai(&fake).with_breaker(reg.clone());
    for _ in 0..5 {
        assert_eq!(m.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err().status(), Some(500));
    }
    let e = m.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(e, ProviderError::CircuitOpen { .. }));
    assert_eq!(fake.requests().len(), 5, "an open circuit sends nothing");
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(m.chat(ChatRequest::user("hi"), CancellationToken::new()).await.is_ok());
    assert_eq!(reg.state(m.id()), BreakerState::Closed { failures: 0 });
}

#[tokio::test]
async fn structured_output_is_validated_and_repaired_once() {
    let format = ResponseFormat {
        name: "intent".into(),
        schema: json!({"type": "object", "required": ["intent", "confidence"], "additionalProperties": false,
            "properties": {"intent": {"type": "string", "enum": ["fraud", "fees"]},
                           "confidence": {"type": "number", "minimum": 0, "maximum": 1}}}),
    };
    for vendor in [Vendor::OpenAi, Vendor::Anthropic] {
        let fake = FakeServer::start(vendor).await.unwrap();
        fake.push(Scenario::reply(Reply::text("{\"intent\": \"cards\", \"confidence\": 2}")));
        fake.push(Scenario::reply(Reply::text("```json\n{\"intent\": \"fraud\", \"confidence\": 0.92}\n```")));
        let req = ChatRequest::user("My card was stolen");
        let r = match vendor {
            Vendor::OpenAi => chat_structured(&openai(&fake), req, format.clone(), CancellationToken::new()).await,
            _ => chat_structured(&anthropic(&fake), req, format.clone(), CancellationToken::new()).await,
        }
        .unwrap();
        assert!(r.repaired);
        assert_eq!(r.value, json!({"intent": "fraud", "confidence": 0.92}));
        let sent = fake.requests();
        let repair = sent[1].body.to_string();
        assert!(repair.contains("does not satisfy"), "{repair}");
        if vendor == Vendor::OpenAi {
            assert_eq!(sent[0].body["response_format"]["type"], "json_schema");
        } else {
            assert!(sent[0].body["system"].as_str().unwrap().contains("JSON Schema"));
        }

        // Still invalid after the repair: a typed error.
        fake.push(Scenario::reply(Reply::text("nope")));
        fake.push(Scenario::reply(Reply::text("{\"intent\": \"fees\"}")));
        let e = match vendor {
            Vendor::OpenAi => {
                chat_structured(&openai(&fake), ChatRequest::user("x"), format.clone(), CancellationToken::new()).await
            }
            _ => {
                chat_structured(&anthropic(&fake), ChatRequest::user("x"), format.clone(), CancellationToken::new())
                    .await
            }
        }
        .unwrap_err();
        assert!(matches!(e, ProviderError::StructuredOutput(ref m) if m.contains("confidence")), "{e:?}");
    }
}

#[tokio::test]
async fn adapter_request_timeout_bounds_calls_but_not_a_long_stream() {
    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    let mut cfg = OpenAiConfig::new("gpt-test").base_url(format!("{}/v1", fake.base_url())).api_key("sk-test");
    cfg.request_timeout = Duration::from_millis(500);
    let m = OpenAiModel::new(cfg).unwrap();
    // A slow non-streamed answer is cut at the request timeout.
    fake.push(Scenario { latency_ms: 1_000, ..Scenario::default() });
    let e = m.chat(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Timeout { .. }) && e.is_retryable(), "{e:?}");
    // A stream that lasts longer than the request timeout, with steady tokens, is not.
    fake.push(Scenario {
        token_delay_ms: 150,
        ..Scenario::reply(Reply::text("one two three four five six seven eight"))
    });
    let s = m.stream(ChatRequest::user("hi"), CancellationToken::new()).await.unwrap();
    let t = Instant::now();
    let r = collect(s, "test").await.unwrap();
    assert!(t.elapsed() > Duration::from_millis(500));
    assert_eq!(r.text, "one two three four five six seven eight");
}
