//! The conformance suite every [`ChatModel`] adapter must pass against its vendor's fake.
//!
//! Each check starts a fresh fake, scripts it, builds the adapter through the caller's factory
//! (pointed at the fake's base URL) and asserts vendor-neutral behaviour: replies, streams
//! (also split mid UTF-8 and with keep-alives), tool calls and tool-result round trips, typed
//! errors (429 with `retry-after`, 5xx, context overflow, connect refusal), broken streams
//! (mid-stream error, malformed chunk, disconnect, missing terminator) that never yield a
//! half tool call, cancellation, and no API key in any error.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use switchboard_providers::event::collect;
use switchboard_providers::{
    Accumulator, CancellationToken, ChatModel, ChatRequest, FinishReason, Message, ProviderError, Secret,
    ToolDefinition, ToolResult,
};

use crate::script::{Fault, Reply, Scenario};
use crate::server::FakeServer;
use crate::vendor::Vendor;

/// The API key the suite gives the factory; it must never appear in an error.
pub const CONFORMANCE_KEY: &str = "sk-conformance-DO-NOT-LEAK-4242";

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct ConformanceReport {
    /// Names of the checks that passed.
    pub passed: Vec<&'static str>,
    /// Checks that failed, with the reason.
    pub failed: Vec<(&'static str, String)>,
}

impl ConformanceReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

type CheckResult = Result<(), String>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> CheckResult {
    if cond { Ok(()) } else { Err(msg()) }
}

fn no_leak(e: &ProviderError) -> CheckResult {
    let shown = format!("{e} {e:?}");
    ensure(!shown.contains(CONFORMANCE_KEY), || format!("error leaks the API key: {shown}"))
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Current weather for a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

async fn stream_all<M: ChatModel>(
    model: &M,
    req: ChatRequest,
) -> Result<(switchboard_providers::ChatResponse, usize), ProviderError> {
    let mut s = model.stream(req, CancellationToken::new()).await?;
    let mut acc = Accumulator::default();
    let mut n = 0;
    while let Some(ev) = s.next().await {
        acc.push(ev?)?;
        n += 1;
    }
    Ok((acc.finish()?, n))
}

/// Streams until the stream fails; returns the error and the tool calls that were complete.
async fn stream_until_error<M: ChatModel>(model: &M, req: ChatRequest) -> Result<(ProviderError, usize), String> {
    let mut s = model
        .stream(req, CancellationToken::new())
        .await
        .map_err(|e| format!("stream refused before the fault: {e}"))?;
    let mut acc = Accumulator::default();
    while let Some(ev) = s.next().await {
        match ev {
            Ok(ev) => {
                if let Err(e) = acc.push(ev) {
                    return Ok((e, acc.completed_tool_calls().len()));
                }
            }
            Err(e) => return Ok((e, acc.completed_tool_calls().len())),
        }
    }
    match acc.finish() {
        Ok(r) => Err(format!("broken stream assembled a complete reply: {r:?}")),
        Err(e) => Ok((e, 0)),
    }
}

/// Runs every check for `vendor`. `make` builds the adapter for a base URL and API key.
pub async fn run<M, F>(vendor: Vendor, make: F) -> ConformanceReport
where
    M: ChatModel,
    F: Fn(&str, Secret) -> M,
{
    let mut report = ConformanceReport::default();
    macro_rules! check {
        ($name:literal, $body:expr) => {{
            let r: CheckResult = $body.await;
            match r {
                Ok(()) => report.passed.push($name),
                Err(e) => report.failed.push(($name, e)),
            }
        }};
    }
    let fresh = || async { FakeServer::start(vendor).await.map_err(|e| format!("fake did not start: {e}")) };
    let key = || Secret::new(CONFORMANCE_KEY);

    check!("plain_reply", async {
        let fake = fresh().await?;
        fake.push(Scenario::reply(Reply::text("Paris is sunny today.")));
        let model = make(&fake.base_url(), key());
        let req = ChatRequest {
            system: Some("You are terse.".into()),
            temperature: Some(0.2),
            max_tokens: Some(64),
            stop: vec!["###".into()],
            ..ChatRequest::user("Weather in Paris?")
        };
        let r = model.chat(req, CancellationToken::new()).await.map_err(|e| e.to_string())?;
        ensure(r.text == "Paris is sunny today.", || format!("text {:?}", r.text))?;
        ensure(r.finish_reason == FinishReason::Stop, || format!("finish {:?}", r.finish_reason))?;
        ensure(r.usage.input_tokens > 0 && r.usage.output_tokens > 0, || format!("usage {:?}", r.usage))?;
        let sent = fake.requests();
        let body = sent.first().map(|r| r.body.to_string()).unwrap_or_default();
        ensure(body.contains("You are terse.") && body.contains("###") && body.contains("Weather in Paris?"), || {
            format!("system prompt, stop sequence or message missing from the request: {body}")
        })
    });

    check!("default_reply_without_script", async {
        let fake = fresh().await?;
        let model = make(&fake.base_url(), key());
        let r = model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.map_err(|e| e.to_string())?;
        ensure(r.text == crate::script::DEFAULT_REPLY, || format!("text {:?}", r.text))
    });

    check!("streamed_reply", async {
        let fake = fresh().await?;
        let text = "Streaming works, token by token: héllo 漢字 wörld!";
        fake.push(Scenario {
            split_writes: true,
            keepalive: true,
            token_delay_ms: 1,
            ..Scenario::reply(Reply::text(text))
        });
        let model = make(&fake.base_url(), key());
        let (r, events) = stream_all(&model, ChatRequest::user("stream please")).await.map_err(|e| e.to_string())?;
        ensure(r.text == text, || format!("text {:?}", r.text))?;
        ensure(events > 5, || format!("only {events} events: not streamed"))?;
        ensure(r.finish_reason == FinishReason::Stop, || format!("finish {:?}", r.finish_reason))?;
        ensure(r.usage.output_tokens > 0, || format!("no usage in stream: {:?}", r.usage))
    });

    check!("tool_call_round_trip", async {
        let fake = fresh().await?;
        fake.push(Scenario::reply(Reply::tool_call("get_weather", json!({"city": "Paris"}))));
        fake.push(Scenario::reply(Reply::text("It is 18C in Paris.")));
        let model = make(&fake.base_url(), key());
        let mut req = ChatRequest { tools: vec![weather_tool()], ..ChatRequest::user("Weather in Paris?") };
        let r = model.chat(req.clone(), CancellationToken::new()).await.map_err(|e| e.to_string())?;
        ensure(r.finish_reason == FinishReason::ToolCalls, || format!("finish {:?}", r.finish_reason))?;
        let call = r.tool_calls.first().ok_or("no tool call")?;
        ensure(call.name == "get_weather" && call.arguments == json!({"city": "Paris"}), || format!("call {call:?}"))?;
        req.messages.push(r.to_message());
        req.messages.push(Message::tool_results([ToolResult {
            call_id: call.id.clone(),
            content: "{\"temp_c\":18}".into(),
            is_error: false,
        }]));
        let r2 = model
            .chat(req, CancellationToken::new())
            .await
            .map_err(|e| format!("fake rejected the tool result round trip: {e}"))?;
        ensure(r2.text == "It is 18C in Paris.", || format!("text {:?}", r2.text))?;
        let sent = fake.requests();
        let second = sent.get(1).map(|r| r.body.to_string()).unwrap_or_default();
        ensure(second.contains(&call.id) && second.contains("temp_c"), || {
            format!("tool result not sent back: {second}")
        })
    });

    check!("streamed_parallel_tool_calls", async {
        let fake = fresh().await?;
        let mut reply = Reply::tool_call("get_weather", json!({"city": "Paris"}));
        reply.text = "Checking both.".into();
        reply.tool_calls.push(crate::script::ScriptedToolCall {
            id: None,
            name: "get_weather".into(),
            arguments: json!({"city": "Zürich", "unit": "C"}),
        });
        fake.push(Scenario { split_writes: true, ..Scenario::reply(reply) });
        let model = make(&fake.base_url(), key());
        let req = ChatRequest { tools: vec![weather_tool()], ..ChatRequest::user("Paris and Zürich?") };
        let (r, _) = stream_all(&model, req).await.map_err(|e| e.to_string())?;
        ensure(r.tool_calls.len() == 2, || format!("calls {:?}", r.tool_calls))?;
        ensure(r.tool_calls[1].arguments == json!({"city": "Zürich", "unit": "C"}), || {
            format!("second call {:?}", r.tool_calls[1])
        })?;
        ensure(r.tool_calls[0].id != r.tool_calls[1].id, || "duplicate call ids".into())?;
        ensure(r.text == "Checking both.", || format!("text {:?}", r.text))
    });

    check!("rate_limited_429_with_retry_after", async {
        let fake = fresh().await?;
        fake.push(Scenario::fault(Fault::Status { status: 429, retry_after: Some(2), message: None }));
        let model = make(&fake.base_url(), key());
        let e =
            model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.err().ok_or("429 was not an error")?;
        no_leak(&e)?;
        ensure(e.status() == Some(429) && e.is_retryable(), || format!("{e:?}"))?;
        ensure(e.retry_after() == Some(Duration::from_secs(2)), || format!("retry_after {:?}", e.retry_after()))?;
        ensure(e.vendor().is_some(), || "no vendor in error".into())
    });

    for status in [500u16, 503] {
        let name: &'static str = if status == 500 { "server_error_500" } else { "unavailable_503" };
        let r: CheckResult = async {
            let fake = fresh().await?;
            fake.push(Scenario::fault(Fault::Status { status, retry_after: None, message: None }));
            let model = make(&fake.base_url(), key());
            let e = model
                .chat(ChatRequest::user("hi"), CancellationToken::new())
                .await
                .err()
                .ok_or("5xx was not an error")?;
            no_leak(&e)?;
            ensure(e.status() == Some(status) && e.is_retryable(), || format!("{e:?}"))
        }
        .await;
        match r {
            Ok(()) => report.passed.push(name),
            Err(e) => report.failed.push((name, e)),
        }
    }

    if vendor == Vendor::Anthropic {
        check!("overloaded_529", async {
            let fake = fresh().await?;
            fake.push(Scenario::fault(Fault::Status { status: 529, retry_after: None, message: None }));
            let model = make(&fake.base_url(), key());
            let e = model
                .chat(ChatRequest::user("hi"), CancellationToken::new())
                .await
                .err()
                .ok_or("529 was not an error")?;
            ensure(e.status() == Some(529) && e.is_retryable(), || format!("{e:?}"))
        });
    }

    check!("unauthorized_is_not_retryable", async {
        let fake = fresh().await?;
        fake.push(Scenario::fault(Fault::Status { status: 401, retry_after: None, message: None }));
        let model = make(&fake.base_url(), key());
        let e =
            model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.err().ok_or("401 was not an error")?;
        no_leak(&e)?;
        ensure(e.status() == Some(401) && !e.is_retryable(), || format!("{e:?}"))
    });

    check!("context_overflow", async {
        let fake = fresh().await?;
        fake.push(Scenario::fault(Fault::ContextOverflow));
        let model = make(&fake.base_url(), key());
        let e = model
            .chat(ChatRequest::user("very long"), CancellationToken::new())
            .await
            .err()
            .ok_or("overflow was not an error")?;
        ensure(matches!(e, ProviderError::ContextOverflow { .. }) && !e.is_retryable(), || format!("{e:?}"))
    });

    check!("connect_refused", async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        drop(listener);
        let model = make(&format!("http://{addr}"), key());
        let e =
            model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.err().ok_or("closed port answered")?;
        no_leak(&e)?;
        ensure(matches!(e, ProviderError::Transport { connect: true, .. }) && e.is_retryable(), || format!("{e:?}"))
    });

    // Broken streams: each must end in an error and never complete the tool call it cut.
    let faults: [(&'static str, Fault); 4] = [
        ("mid_stream_error", Fault::StreamError { after_events: 3 }),
        ("malformed_chunk", Fault::Malformed { after_events: 3 }),
        ("disconnect_mid_stream", Fault::Disconnect { after_events: 3 }),
        ("eof_without_terminator", Fault::Truncate { after_events: 3 }),
    ];
    for (name, fault) in faults {
        let r: CheckResult = async {
            let fake = fresh().await?;
            let mut reply =
                Reply::tool_call("get_weather", json!({"city": "Paris", "note": "a long enough argument string"}));
            reply.text = "One moment.".into();
            fake.push(Scenario { fault: Some(fault.clone()), ..Scenario::reply(reply) });
            let model = make(&fake.base_url(), key());
            let req = ChatRequest { tools: vec![weather_tool()], ..ChatRequest::user("hi") };
            let (e, complete_calls) = stream_until_error(&model, req).await?;
            no_leak(&e)?;
            ensure(complete_calls == 0, || format!("{complete_calls} tool call(s) completed from a broken stream"))?;
            if name == "mid_stream_error" {
                ensure(e.status().is_some_and(|s| s >= 500) && e.is_retryable(), || {
                    format!("mid-stream error not typed as a retryable vendor error: {e:?}")
                })?;
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => report.passed.push(name),
            Err(e) => report.failed.push((name, e)),
        }
    }

    check!("malformed_body", async {
        let fake = fresh().await?;
        fake.push(Scenario::fault(Fault::Malformed { after_events: 0 }));
        let model = make(&fake.base_url(), key());
        let e =
            model.chat(ChatRequest::user("hi"), CancellationToken::new()).await.err().ok_or("malformed body parsed")?;
        ensure(matches!(e, ProviderError::Protocol { .. }), || format!("{e:?}"))
    });

    check!("cancel_aborts_a_stalled_call", async {
        let fake = fresh().await?;
        fake.push(Scenario::fault(Fault::Stall { after_events: 0 }));
        fake.push(Scenario::fault(Fault::Stall { after_events: 2 }));
        let model = make(&fake.base_url(), key());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), model.chat(ChatRequest::user("hi"), cancel)).await;
        ensure(matches!(r, Ok(Err(ProviderError::Cancelled))), || format!("chat: {r:?}"))?;
        ensure(started.elapsed() < Duration::from_secs(2), || "cancel took too long".into())?;
        let cancel = CancellationToken::new();
        let mut s = model.stream(ChatRequest::user("hi"), cancel.clone()).await.map_err(|e| e.to_string())?;
        let mut got = 0;
        let deadline = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(_) => {
                        got += 1;
                        if got == 1 {
                            cancel.cancel();
                        }
                    }
                    Err(e) => return Some(e),
                }
            }
            None
        })
        .await;
        ensure(matches!(deadline, Ok(Some(ProviderError::Cancelled))), || format!("stream after cancel: {deadline:?}"))
    });

    check!("collect_matches_chat", async {
        let fake = fresh().await?;
        let reply = Reply::tool_call("get_weather", json!({"city": "Oslo"}));
        fake.push(Scenario::reply(reply.clone()));
        fake.push(Scenario::reply(reply));
        let model = make(&fake.base_url(), key());
        let req = ChatRequest { tools: vec![weather_tool()], ..ChatRequest::user("Oslo?") };
        let a = model.chat(req.clone(), CancellationToken::new()).await.map_err(|e| e.to_string())?;
        let s = model.stream(req, CancellationToken::new()).await.map_err(|e| e.to_string())?;
        let b = collect(s, "conformance").await.map_err(|e| e.to_string())?;
        ensure(
            a.text == b.text
                && names_and_args(&a) == names_and_args(&b)
                && a.finish_reason == b.finish_reason
                && a.usage == b.usage,
            || format!("chat {a:?} != stream {b:?}"),
        )
    });

    report
}

/// Runs the suite and panics with every failure listed; for `#[tokio::test]`s.
///
/// # Panics
/// When any check fails.
pub async fn assert_conformance<M, F>(vendor: Vendor, make: F)
where
    M: ChatModel,
    F: Fn(&str, Secret) -> M,
{
    let report = run(vendor, make).await;
    assert!(
        report.ok(),
        "{vendor} adapter failed conformance checks:\n{}",
        report.failed.iter().map(|(n, e)| format!("  {n}: {e}")).collect::<Vec<_>>().join("\n")
    );
}

fn names_and_args(r: &switchboard_providers::ChatResponse) -> Vec<(String, serde_json::Value)> {
    r.tool_calls.iter().map(|c| (c.name.clone(), c.arguments.clone())).collect()
}
