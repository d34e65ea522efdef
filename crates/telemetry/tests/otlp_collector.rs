//! A turn through real components (guard, router, engine, the OpenAI adapter against the fake
//! vendor) exports its spans to a local OTLP/HTTP collector stand-in; the test reads what the
//! collector received, as a real collector would, and checks names, attributes and nesting.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State as AxState;
use axum::routing::post;
use serde_json::{Value, json};
use switchboard_engine::{
    END, Engine, EngineConfig, Field, GraphBuilder, MemoryStore, NodeInput, Reducer, START, Schema, Update,
};
use switchboard_guard::Guard;
use switchboard_guard::injection::Source;
use switchboard_providers::model::boxed;
use switchboard_providers::openai::{OpenAiConfig, OpenAiModel};
use switchboard_providers::trace::Traced;
use switchboard_providers::{BoxChatModel, CancellationToken, ChatModel, ChatRequest};
use switchboard_router::Router;
use switchboard_router::data::Example;
use switchboard_router::train::{TrainOptions, train};
use switchboard_telemetry::{MemorySink, OtlpConfig, OtlpExporter, SpanLayer, SpanLayerConfig, SpanSink};
use switchboard_testkit::conformance::CONFORMANCE_KEY;
use switchboard_testkit::{FakeServer, Reply, Scenario, Vendor};
use tracing_subscriber::layer::SubscriberExt as _;

/// Accepts `POST /v1/traces` with a JSON body and keeps the bodies.
struct Collector {
    addr: std::net::SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                post(|AxState(b): AxState<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>| async move {
                    b.lock().unwrap().push(v);
                    Json(json!({}))
                }),
            )
            .with_state(bodies.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Self { addr, bodies }
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Every span received, with the resource attributes of its batch.
    fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            for rs in body["resourceSpans"].as_array().unwrap() {
                assert_eq!(attr(&rs["resource"], "service.name"), Some(json!({"stringValue": "switchboard"})));
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    out.extend(ss["spans"].as_array().unwrap().iter().cloned());
                }
            }
        }
        out
    }
}

fn attr(obj: &Value, key: &str) -> Option<Value> {
    obj["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| a["value"].clone())
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| {
        panic!("no span {name:?} in {:?}", spans.iter().map(|s| s["name"].clone()).collect::<Vec<_>>())
    })
}

fn router() -> Router {
    let mut ex = Vec::new();
    for (intent, texts) in [
        ("card_lost", ["I lost my card", "my card is gone", "card missing since yesterday", "can't find my card"]),
        ("fees", ["what are your fees", "how much does a transfer cost", "fee for withdrawals", "is there a charge"]),
    ] {
        for t in texts {
            ex.push(Example { text: t.into(), intent: intent.into() });
        }
    }
    let opts = TrainOptions { target_rejection: 0.0, ..TrainOptions::default() };
    Router::from_parts(train(&ex, None, None, &opts).unwrap(), None).unwrap()
}

fn graph(router: Arc<Router>, model: BoxChatModel) -> switchboard_engine::Graph {
    let schema = Arc::new(
        Schema::builder()
            .field(Field::new("messages").reducer(Reducer::Messages))
            .field(Field::new("intent"))
            .build()
            .unwrap(),
    );
    let text = |i: &NodeInput| {
        i.state.get_array("messages").last().and_then(|m| m["text"].as_str()).unwrap_or_default().to_owned()
    };
    GraphBuilder::new(schema)
        .node("guard", move |i: NodeInput| async move {
            let report = Guard::default().inspect(&text(&i), Source::User);
            assert!(!report.entities.is_empty(), "the card number is found");
            Ok(Update::new().into())
        })
        .node("route", move |i: NodeInput| {
            let router = router.clone();
            async move {
                let d = router.route(&text(&i)).unwrap();
                Ok(Update::new().set("intent", d.intent.unwrap_or_default()).into())
            }
        })
        .node("agent", move |i: NodeInput| {
            let model = model.clone();
            async move {
                let mut req = ChatRequest::user(text(&i));
                req.metadata.conversation = Some(i.ctx.conversation_id().to_owned());
                let r = model.chat(req, CancellationToken::new()).await.unwrap();
                Ok(Update::new().set("messages", json!({"role": "assistant", "text": r.text})).into())
            }
        })
        .edge(START, "guard")
        .edge("guard", "route")
        .edge("route", "agent")
        .edge("agent", END)
        .build()
        .unwrap()
}

async fn run_turn(capture_content: bool) -> (Vec<Value>, Vec<switchboard_telemetry::SpanData>) {
    let collector = Collector::start().await;
    let exporter = OtlpExporter::start(OtlpConfig::new(collector.url())).unwrap();
    let memory = MemorySink::new(1000);
    let cfg = SpanLayerConfig {
        capture_content,
        redactor: Some(Arc::new(|t: &str| switchboard_guard::logging::redact_for_log(t).into_owned())),
        targets: vec!["switchboard".into()],
    };
    let sinks: Vec<Arc<dyn SpanSink>> = vec![Arc::new(exporter.clone()), Arc::new(memory.clone())];
    let subscriber = tracing_subscriber::registry().with(SpanLayer::new(cfg, sinks));
    let _default = tracing::subscriber::set_default(subscriber);

    let fake = FakeServer::start(Vendor::OpenAi).await.unwrap();
    fake.push(Scenario::reply(Reply::text("I have frozen the card.")));
    let model = OpenAiModel::new(
        OpenAiConfig::new("gpt-test").base_url(format!("{}/v1", fake.base_url())).api_key(CONFORMANCE_KEY),
    )
    .unwrap();
    let model = boxed(Traced::new(model, "openai").with_content(capture_content));
    let engine = Engine::new(graph(Arc::new(router()), model), Arc::new(MemoryStore::new()), EngineConfig::default());
    let msg = json!({"role": "user", "text": "I lost my card 4111 1111 1111 1111"});
    engine.invoke("conv-7", Update::new().set("messages", msg)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), exporter.flush()).await.unwrap();
    assert_eq!(exporter.stats().dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    (collector.spans(), memory.spans())
}

#[tokio::test]
async fn a_turn_exports_nested_spans_with_genai_attribute_names() {
    let (spans, local) = run_turn(false).await;
    assert_eq!(spans.len(), local.len(), "the collector got every span the local sink kept");
    let turn = by_name(&spans, "turn");
    let trace = turn["traceId"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert!(turn.get("parentSpanId").is_none(), "the turn is the root");
    assert_eq!(attr(turn, "gen_ai.conversation.id"), Some(json!({"stringValue": "conv-7"})));
    assert!(attr(turn, "switchboard.run.id").is_some());
    for s in &spans {
        assert_eq!(s["traceId"], trace, "one trace per turn: {s}");
        assert_eq!(s["spanId"].as_str().unwrap().len(), 16);
        let (start, end): (u64, u64) = (
            s["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            s["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
        );
        assert!(start > 0 && end >= start);
    }
    for node in ["guard", "route", "agent"] {
        let n = by_name(&spans, &format!("node {node}"));
        assert_eq!(n["parentSpanId"], turn["spanId"], "nodes hang from the turn");
        assert_eq!(attr(n, "switchboard.node"), Some(json!({"stringValue": node})));
    }
    let guard = by_name(&spans, "guard input");
    assert_eq!(guard["parentSpanId"], by_name(&spans, "node guard")["spanId"]);
    assert_eq!(attr(guard, "switchboard.guard.verdict"), Some(json!({"stringValue": "pii"})));

    let route = by_name(&spans, "route");
    assert_eq!(route["parentSpanId"], by_name(&spans, "node route")["spanId"]);
    assert_eq!(attr(route, "switchboard.route.intent"), Some(json!({"stringValue": "card_lost"})));
    for key in [
        "switchboard.route.outcome",
        "switchboard.route.confidence",
        "switchboard.route.rung",
        "switchboard.route.candidates",
        "switchboard.route.threshold",
        "switchboard.route.reason",
    ] {
        assert!(attr(route, key).is_some(), "route span lacks {key}: {route}");
    }
    assert!(
        attr(route, "switchboard.route.candidates").unwrap()["stringValue"].as_str().unwrap().contains("card_lost=")
    );

    let chat = by_name(&spans, "chat gpt-test");
    assert_eq!(chat["kind"], 3, "an LLM call is a client span");
    assert_eq!(chat["parentSpanId"], by_name(&spans, "node agent")["spanId"]);
    assert_eq!(attr(chat, "gen_ai.operation.name"), Some(json!({"stringValue": "chat"})));
    assert_eq!(attr(chat, "gen_ai.provider.name"), Some(json!({"stringValue": "openai"})));
    assert_eq!(attr(chat, "gen_ai.request.model"), Some(json!({"stringValue": "gpt-test"})));
    assert_eq!(attr(chat, "gen_ai.conversation.id"), Some(json!({"stringValue": "conv-7"})));
    assert!(attr(chat, "gen_ai.response.model").is_some());
    assert_eq!(attr(chat, "gen_ai.response.finish_reasons"), Some(json!({"stringValue": "stop"})));
    let tokens = |k| attr(chat, k).unwrap()["intValue"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(tokens("gen_ai.usage.input_tokens") > 0 && tokens("gen_ai.usage.output_tokens") > 0);
    // Content capture is off: no message text anywhere in the export.
    let all = serde_json::to_string(&spans).unwrap();
    assert!(attr(chat, "gen_ai.input.messages").is_none() && attr(chat, "gen_ai.output.messages").is_none());
    assert!(!all.contains("4111") && !all.contains("frozen the card"), "{all}");
}

#[tokio::test]
async fn captured_content_is_redacted_by_the_guard() {
    let (spans, _) = run_turn(true).await;
    let chat = by_name(&spans, "chat gpt-test");
    let input = attr(chat, "gen_ai.input.messages").unwrap()["stringValue"].as_str().unwrap().to_owned();
    assert!(input.contains("I lost my card"), "{input}");
    assert!(!input.contains("4111 1111 1111 1111"), "the card number is redacted: {input}");
    let output = attr(chat, "gen_ai.output.messages").unwrap()["stringValue"].as_str().unwrap().to_owned();
    assert!(output.contains("frozen the card"), "{output}");
}

#[tokio::test]
async fn a_dead_collector_costs_nothing_but_counted_spans() {
    // Nothing listens on this port: the export fails, is retried once, and is counted.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let mut cfg = OtlpConfig::new(format!("http://{addr}"));
    cfg.timeout = Duration::from_millis(500);
    let exporter = OtlpExporter::start(cfg).unwrap();
    let sinks: Vec<Arc<dyn SpanSink>> = vec![Arc::new(exporter.clone())];
    let subscriber = tracing_subscriber::registry().with(SpanLayer::new(SpanLayerConfig::default(), sinks));
    let _default = tracing::subscriber::set_default(subscriber);
    for i in 0..3 {
        let _s = tracing::info_span!("work", i).entered();
    }
    tokio::time::timeout(Duration::from_secs(10), exporter.flush()).await.unwrap();
    let s = exporter.stats();
    assert_eq!(s.failed.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(s.exported.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(OtlpExporter::start(OtlpConfig::new("collector:4318")).is_err(), "not an http address");
}
