//! Prometheus metrics derived from the spans: one instrumentation, two outputs.
//!
//! [`MetricsSink`] is a [`SpanSink`] that turns every finished span into counter, gauge and
//! histogram updates in a [`Registry`], which renders the Prometheus text exposition format
//! (version 0.0.4). The spans are the single source of truth: the `/metrics` numbers and an
//! exported trace can never disagree, because both are made from the same span.
//!
//! | span (`otel.name`) | attributes read | metrics |
//! |---|---|---|
//! | `turn` (engine run) | `switchboard.run.status`, `switchboard.handler`, `switchboard.ttft_ms`, `switchboard.checkpoint.*`, `switchboard.conversation.new` | turn latency and time to first token, turns by handler and outcome, conversations, checkpoint writes and bytes |
//! | `route` | `switchboard.route.outcome`, `.rung`, `.confidence` | decisions by outcome and rung (out-of-scope and clarify rates), confidence |
//! | `chat {model}` | `gen_ai.*`, `switchboard.cost.usd`, `switchboard.ttft_ms`, `error.type` | LLM calls, tokens, cost, latency, time to first token |
//! | `execute_tool {name}` | `gen_ai.tool.name`, status | tool calls by tool and outcome |
//! | `handoff` | `switchboard.handoff.reason`, `switchboard.handoff.escalation` | handoffs by reason, escalated conversations |
//! | any, events with `switchboard.llm.event` | `retry`, `fallback`, `breaker` (+ `model`, `switchboard.breaker.state`) | retries, fallbacks, breaker state |
//!
//! **Containment** is the share of conversations resolved without a human:
//! `1 - escalated / started`, where *started* ([`names::CONVERSATIONS`]) counts conversations at
//! their first turn and *escalated* ([`names::ESCALATIONS`]) counts conversations at the first
//! time they are handed to a human for any reason other than a tool-call approval (an approval
//! keeps the assistant in charge; a colleague only signs off one action). Each conversation is
//! counted at most once in each, so the ratio over a window is
//! `1 - increase(switchboard_conversations_escalated_total[1d]) / increase(switchboard_conversations_total[1d])`.
//!
//! Gauges that no span can carry (queue depth, lease age, breaker state between calls) are set
//! directly with [`Registry::set`] by whoever owns the value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::span::{AttrValue, SpanData, SpanSink, SpanStatus};

/// Latency buckets, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Probability buckets.
pub const CONFIDENCE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

/// Byte-size buckets (checkpoint bytes written per turn).
pub const BYTES_BUCKETS: &[f64] = &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0];

#[derive(Debug, Clone)]
enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

#[derive(Debug)]
enum Series {
    Scalar(f64),
    Histogram { buckets: Vec<u64>, sum: f64, count: u64 },
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<Vec<(String, String)>, Series>,
}

/// Counters and histograms with labels.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
}

fn labels_of(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    v.sort();
    v
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a counter (needed once before use; later declarations are ignored).
    pub fn counter(&self, name: &'static str, help: &'static str) -> &Self {
        self.declare(name, help, Kind::Counter)
    }

    /// Declares a gauge.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> &Self {
        self.declare(name, help, Kind::Gauge)
    }

    /// Declares a histogram with these upper bounds (ascending; `+Inf` is implied).
    pub fn histogram(&self, name: &'static str, help: &'static str, buckets: &'static [f64]) -> &Self {
        self.declare(name, help, Kind::Histogram(buckets))
    }

    fn declare(&self, name: &'static str, help: &'static str, kind: Kind) -> &Self {
        if let Ok(mut f) = self.families.lock() {
            f.entry(name).or_insert_with(|| Family { help, kind, series: BTreeMap::new() });
        }
        self
    }

    /// Adds `v` to a counter's series (negative values and NaN are ignored: counters only go
    /// up) or to a gauge's. Unknown names are ignored.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        let Ok(mut f) = self.families.lock() else { return };
        let Some(fam) = f.get_mut(name) else { return };
        let v = match fam.kind {
            Kind::Counter if v.is_nan() || v < 0.0 => return,
            Kind::Counter | Kind::Gauge => v,
            Kind::Histogram(_) => return,
        };
        if let Series::Scalar(c) = fam.series.entry(labels_of(labels)).or_insert(Series::Scalar(0.0)) {
            *c += v;
        }
    }

    /// Sets a gauge's series. Unknown names and non-gauges are ignored.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        let Ok(mut f) = self.families.lock() else { return };
        let Some(fam) = f.get_mut(name) else { return };
        if matches!(fam.kind, Kind::Gauge) {
            fam.series.insert(labels_of(labels), Series::Scalar(v));
        }
    }

    /// Records one observation in a histogram's series. Unknown names are ignored.
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        let Ok(mut f) = self.families.lock() else { return };
        let Some(fam) = f.get_mut(name) else { return };
        let Kind::Histogram(bounds) = fam.kind else { return };
        let s = fam.series.entry(labels_of(labels)).or_insert_with(|| Series::Histogram {
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        });
        if let Series::Histogram { buckets, sum, count } = s {
            for (b, &le) in buckets.iter_mut().zip(bounds) {
                if v <= le {
                    *b += 1;
                }
            }
            *sum += v;
            *count += 1;
        }
    }

    /// The value of a counter's series (tests, reports).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Ok(f) = self.families.lock() else { return 0.0 };
        match f.get(name).and_then(|fam| fam.series.get(&labels_of(labels))) {
            Some(Series::Scalar(c)) => *c,
            Some(Series::Histogram { count, .. }) => *count as f64,
            None => 0.0,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(f) = self.families.lock() else { return out };
        for (name, fam) in f.iter() {
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram(_) => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help.replace('\\', "\\\\").replace('\n', "\\n"));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, s) in &fam.series {
                match (s, &fam.kind) {
                    (Series::Scalar(c), _) => {
                        let _ = writeln!(out, "{name}{} {}", fmt_labels(labels, None), num(*c));
                    }
                    (Series::Histogram { buckets, sum, count }, Kind::Histogram(bounds)) => {
                        for (n, le) in buckets.iter().zip(bounds.iter()) {
                            let _ = writeln!(out, "{name}_bucket{} {n}", fmt_labels(labels, Some(&num(*le))));
                        }
                        let _ = writeln!(out, "{name}_bucket{} {count}", fmt_labels(labels, Some("+Inf")));
                        let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), num(*sum));
                        let _ = writeln!(out, "{name}_count{} {count}", fmt_labels(labels, None));
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_labels(labels: &[(String, String)], le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

/// Feeds a [`Registry`] from finished spans.
#[derive(Debug, Clone)]
pub struct MetricsSink {
    registry: Registry,
}

/// Metric names.
pub mod names {
    /// Turn latency histogram, by outcome.
    pub const TURN_SECONDS: &str = "switchboard_turn_duration_seconds";
    /// Time from the start of a turn to its first streamed token.
    pub const TURN_TTFT_SECONDS: &str = "switchboard_turn_time_to_first_token_seconds";
    /// Turns by handler and outcome.
    pub const TURNS: &str = "switchboard_turns_total";
    /// Conversations, counted at their first turn.
    pub const CONVERSATIONS: &str = "switchboard_conversations_total";
    /// Conversations handed to a human (other than for an approval), counted once each.
    pub const ESCALATIONS: &str = "switchboard_conversations_escalated_total";
    /// Node runs by node and outcome.
    pub const NODE_RUNS: &str = "switchboard_node_runs_total";
    /// Routing decisions by outcome and rung.
    pub const ROUTE_DECISIONS: &str = "switchboard_route_decisions_total";
    /// Routing confidence histogram.
    pub const ROUTE_CONFIDENCE: &str = "switchboard_route_confidence";
    /// Guard checks by check and verdict.
    pub const GUARD_CHECKS: &str = "switchboard_guard_checks_total";
    /// LLM calls by provider, model and outcome.
    pub const LLM_CALLS: &str = "switchboard_llm_calls_total";
    /// LLM tokens by provider, model and direction.
    pub const LLM_TOKENS: &str = "switchboard_llm_tokens_total";
    /// LLM cost in dollars by provider and model.
    pub const LLM_COST: &str = "switchboard_llm_cost_usd_total";
    /// LLM call latency.
    pub const LLM_SECONDS: &str = "switchboard_llm_duration_seconds";
    /// Time to the first streamed token of an LLM call.
    pub const TTFT_SECONDS: &str = "switchboard_llm_time_to_first_token_seconds";
    /// LLM call retries by model.
    pub const LLM_RETRIES: &str = "switchboard_llm_retries_total";
    /// Falls back from one model to the next.
    pub const LLM_FALLBACKS: &str = "switchboard_llm_fallbacks_total";
    /// Circuit breaker state by model (0 closed, 1 half-open, 2 open).
    pub const BREAKER_STATE: &str = "switchboard_llm_breaker_state";
    /// Breaker transitions by model and new state.
    pub const BREAKER_TRANSITIONS: &str = "switchboard_llm_breaker_transitions_total";
    /// Tool calls by tool and outcome.
    pub const TOOL_CALLS: &str = "switchboard_tool_calls_total";
    /// Handoffs to a human by reason.
    pub const HANDOFFS: &str = "switchboard_handoffs_total";
    /// Checkpoints written.
    pub const CHECKPOINTS: &str = "switchboard_checkpoints_total";
    /// Checkpoint bytes written.
    pub const CHECKPOINT_BYTES: &str = "switchboard_checkpoint_bytes_total";
    /// Checkpoint bytes written per turn.
    pub const TURN_CHECKPOINT_BYTES: &str = "switchboard_turn_checkpoint_bytes";
    /// Runs waiting in the runs queue (set by the queue's owner).
    pub const QUEUE_DEPTH: &str = "switchboard_queue_depth";
    /// Age of the oldest live run lease, seconds (set by the queue's owner).
    pub const LEASE_AGE: &str = "switchboard_lease_age_seconds";
    /// Feedback ratings received, by rating.
    pub const FEEDBACK: &str = "switchboard_feedback_total";
}

impl MetricsSink {
    /// A sink feeding `registry`, declaring its metrics there.
    pub fn new(registry: Registry) -> Self {
        Self::declare(&registry);
        Self { registry }
    }

    /// Declares every metric of [`names`] in `registry`, so that `/metrics` lists each family
    /// (with its `HELP` and `TYPE`) before the first sample.
    pub fn declare(registry: &Registry) {
        use names::*;
        registry
            .histogram(TURN_SECONDS, "Duration of a turn (one engine run), by outcome.", LATENCY_BUCKETS)
            .histogram(
                TURN_TTFT_SECONDS,
                "Time from the start of a turn to its first streamed token.",
                LATENCY_BUCKETS,
            )
            .counter(TURNS, "Turns by handler (flow, agent or handler node that answered) and outcome (run status).")
            .counter(CONVERSATIONS, "Conversations, counted at their first turn.")
            .counter(
                ESCALATIONS,
                "Conversations handed to a human for a reason other than an approval, counted once each; containment = 1 - escalated / conversations.",
            )
            .counter(NODE_RUNS, "Node executions, by node (flow, agent, handler) and outcome.")
            .counter(ROUTE_DECISIONS, "Routing decisions by outcome (intent, clarify, out_of_scope) and rung.")
            .histogram(ROUTE_CONFIDENCE, "Confidence of the routed intent.", CONFIDENCE_BUCKETS)
            .counter(GUARD_CHECKS, "Guard checks by check (input, output, tool) and verdict.")
            .counter(LLM_CALLS, "LLM calls by provider, model and outcome (ok or the error type).")
            .counter(LLM_TOKENS, "LLM tokens by provider, model and direction (input, output).")
            .counter(LLM_COST, "LLM cost in US dollars by provider and model.")
            .histogram(LLM_SECONDS, "Duration of an LLM call, by provider.", LATENCY_BUCKETS)
            .histogram(TTFT_SECONDS, "Time to the first streamed token of an LLM call, by provider.", LATENCY_BUCKETS)
            .counter(LLM_RETRIES, "LLM call retries, by model.")
            .counter(LLM_FALLBACKS, "Falls back from one model to the next, by the model that failed.")
            .gauge(BREAKER_STATE, "Circuit breaker state by model: 0 closed, 1 half-open, 2 open.")
            .counter(BREAKER_TRANSITIONS, "Circuit breaker transitions, by model and the state entered.")
            .counter(TOOL_CALLS, "Tool calls by tool and outcome.")
            .counter(HANDOFFS, "Handoff requests to a human, by reason (approval: a tool call waits for sign-off).")
            .counter(CHECKPOINTS, "Checkpoints written.")
            .counter(CHECKPOINT_BYTES, "Checkpoint bytes written (encoded payloads).")
            .histogram(TURN_CHECKPOINT_BYTES, "Checkpoint bytes written per turn.", BYTES_BUCKETS)
            .gauge(QUEUE_DEPTH, "Runs waiting in the runs queue.")
            .gauge(LEASE_AGE, "Age of the oldest live run lease, in seconds.")
            .counter(FEEDBACK, "Feedback ratings received, by rating.");
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The registry of the process: the one the binary's span layer feeds and `/metrics` renders.
pub fn global() -> &'static Registry {
    static GLOBAL: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(|| {
        let r = Registry::new();
        MetricsSink::declare(&r);
        r
    })
}

fn s<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> &'a str {
    attrs.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_str()).unwrap_or("")
}

fn f(span: &SpanData, key: &str) -> Option<f64> {
    match span.attr(key)? {
        AttrValue::Double(d) => Some(*d),
        AttrValue::Int(i) => Some(*i as f64),
        AttrValue::Str(s) => s.parse().ok(),
        AttrValue::Bool(_) => None,
    }
}

fn breaker_level(state: &str) -> Option<f64> {
    match state {
        "closed" => Some(0.0),
        "half_open" => Some(1.0),
        "open" => Some(2.0),
        _ => None,
    }
}

impl MetricsSink {
    fn turn(&self, span: &SpanData, secs: f64, failed: bool) {
        use names::*;
        let r = &self.registry;
        let a = &span.attributes;
        let status = match s(a, "switchboard.run.status") {
            "" if failed => "failed",
            "" => "unknown",
            st => st,
        };
        let handler = match s(a, "switchboard.handler") {
            "" => "none",
            h => h,
        };
        r.observe(TURN_SECONDS, &[("outcome", status)], secs);
        r.add(TURNS, &[("handler", handler), ("outcome", status)], 1.0);
        if let Some(ms) = f(span, "switchboard.ttft_ms") {
            r.observe(TURN_TTFT_SECONDS, &[], ms / 1000.0);
        }
        if span.attr("switchboard.conversation.new") == Some(&AttrValue::Bool(true)) {
            r.add(CONVERSATIONS, &[], 1.0);
        }
        if let Some(n) = f(span, "switchboard.checkpoint.count") {
            r.add(CHECKPOINTS, &[], n);
        }
        if let Some(b) = f(span, "switchboard.checkpoint.bytes") {
            r.add(CHECKPOINT_BYTES, &[], b);
            r.observe(TURN_CHECKPOINT_BYTES, &[], b);
        }
    }

    fn llm_call(&self, span: &SpanData, secs: f64, failed: bool) {
        use names::*;
        let r = &self.registry;
        let a = &span.attributes;
        let (p, m) = (s(a, "gen_ai.provider.name"), s(a, "gen_ai.request.model"));
        let result = match s(a, "error.type") {
            _ if !failed => "ok",
            "" => "error",
            kind => kind,
        };
        r.add(LLM_CALLS, &[("provider", p), ("model", m), ("outcome", result)], 1.0);
        for (dir, key) in [("input", "gen_ai.usage.input_tokens"), ("output", "gen_ai.usage.output_tokens")] {
            if let Some(t) = f(span, key) {
                r.add(LLM_TOKENS, &[("provider", p), ("model", m), ("direction", dir)], t);
            }
        }
        if let Some(c) = f(span, "switchboard.cost.usd") {
            r.add(LLM_COST, &[("provider", p), ("model", m)], c);
        }
        r.observe(LLM_SECONDS, &[("provider", p)], secs);
        if let Some(ms) = f(span, "switchboard.ttft_ms") {
            r.observe(TTFT_SECONDS, &[("provider", p)], ms / 1000.0);
        }
    }

    /// Resilience events (retries, fallbacks, breaker transitions) recorded inside the span.
    fn llm_events(&self, span: &SpanData) {
        use names::*;
        let r = &self.registry;
        for e in &span.events {
            let a = &e.attributes;
            match s(a, "switchboard.llm.event") {
                "retry" => r.add(LLM_RETRIES, &[("model", s(a, "model"))], 1.0),
                "fallback" => r.add(LLM_FALLBACKS, &[("model", s(a, "from"))], 1.0),
                "breaker" => {
                    let (model, state) = (s(a, "model"), s(a, "switchboard.breaker.state"));
                    if let Some(level) = breaker_level(state) {
                        r.set(BREAKER_STATE, &[("model", model)], level);
                        r.add(BREAKER_TRANSITIONS, &[("model", model), ("state", state)], 1.0);
                    }
                }
                _ => {}
            }
        }
    }
}

impl SpanSink for MetricsSink {
    fn export(&self, span: SpanData) {
        use names::*;
        let r = &self.registry;
        let secs = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e9;
        let failed = matches!(span.status, SpanStatus::Error(_));
        let outcome = if failed { "error" } else { "ok" };
        let a = &span.attributes;
        match span.name.as_str() {
            "turn" => self.turn(&span, secs, failed),
            "route" => {
                r.add(
                    ROUTE_DECISIONS,
                    &[("outcome", s(a, "switchboard.route.outcome")), ("rung", s(a, "switchboard.route.rung"))],
                    1.0,
                );
                if let Some(c) = f(&span, "switchboard.route.confidence") {
                    r.observe(ROUTE_CONFIDENCE, &[], c);
                }
            }
            _ => {}
        }
        match s(a, "gen_ai.operation.name") {
            "chat" => self.llm_call(&span, secs, failed),
            "execute_tool" => r.add(TOOL_CALLS, &[("tool", s(a, "gen_ai.tool.name")), ("outcome", outcome)], 1.0),
            _ => {}
        }
        if let Some(node) = span.attr("switchboard.node").and_then(AttrValue::as_str) {
            r.add(NODE_RUNS, &[("node", node), ("outcome", outcome)], 1.0);
        }
        if let Some(check) = span.attr("switchboard.guard.check").and_then(AttrValue::as_str) {
            r.add(GUARD_CHECKS, &[("check", check), ("verdict", s(a, "switchboard.guard.verdict"))], 1.0);
        }
        if let Some(reason) = span.attr("switchboard.handoff.reason").and_then(AttrValue::as_str) {
            r.add(HANDOFFS, &[("reason", reason)], 1.0);
            if span.attr("switchboard.handoff.escalation") == Some(&AttrValue::Bool(true)) {
                r.add(ESCALATIONS, &[], 1.0);
            }
        }
        self.llm_events(&span);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exposition_has_help_type_buckets_and_escaped_labels() {
        let r = Registry::new();
        r.counter("x_total", "Things.").histogram("lat_seconds", "Latency.", &[0.1, 1.0]);
        r.add("x_total", &[("k", "a\"b\\c\nd")], 2.0);
        r.observe("lat_seconds", &[("p", "openai")], 0.05);
        r.observe("lat_seconds", &[("p", "openai")], 0.5);
        r.observe("lat_seconds", &[("p", "openai")], 5.0);
        r.add("unknown_total", &[], 1.0);
        let text = r.render();
        assert!(text.contains("# TYPE x_total counter\n"));
        assert!(text.contains("x_total{k=\"a\\\"b\\\\c\\nd\"} 2\n"), "{text}");
        assert!(text.contains("lat_seconds_bucket{p=\"openai\",le=\"0.1\"} 1\n"));
        assert!(text.contains("lat_seconds_bucket{p=\"openai\",le=\"1\"} 2\n"));
        assert!(text.contains("lat_seconds_bucket{p=\"openai\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("lat_seconds_sum{p=\"openai\"} 5.55\n"), "{text}");
        assert!(text.contains("lat_seconds_count{p=\"openai\"} 3\n"));
        assert!(!text.contains("unknown_total"));
        assert_eq!(r.value("x_total", &[("k", "a\"b\\c\nd")]), 2.0);
    }

    #[test]
    fn gauges_set_counters_only_rise_and_help_is_escaped() {
        let r = Registry::new();
        r.gauge("depth", "Queue\\depth\nnow.").counter("c_total", "C.");
        r.set("depth", &[], 3.0);
        r.set("depth", &[], 2.0);
        r.add("depth", &[], 0.5);
        r.add("c_total", &[], -4.0);
        r.add("c_total", &[], f64::NAN);
        r.add("c_total", &[], 1.0);
        r.set("c_total", &[], 100.0);
        let text = r.render();
        assert!(text.contains("# HELP depth Queue\\\\depth\\nnow.\n"), "{text}");
        assert!(text.contains("# TYPE depth gauge\ndepth 2.5\n"), "{text}");
        assert!(text.contains("c_total 1\n"), "{text}");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(f64::NAN), "NaN");
    }

    fn span(name: &str, attrs: &[(&str, AttrValue)], status: SpanStatus) -> SpanData {
        SpanData {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            name: name.into(),
            kind: crate::span::SpanKind::Internal,
            start_unix_nano: 1_000_000_000,
            end_unix_nano: 1_300_000_000,
            attributes: attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            events: Vec::new(),
            status,
            target: "switchboard_engine::engine".into(),
        }
    }

    fn text(v: &str) -> AttrValue {
        AttrValue::Str(v.into())
    }

    #[test]
    fn spans_of_a_turn_become_metrics() {
        use names::*;
        let sink = MetricsSink::new(Registry::new());
        let r = sink.registry().clone();
        sink.export(span(
            "turn",
            &[
                ("switchboard.run.status", text("completed")),
                ("switchboard.handler", text("card_freeze")),
                ("switchboard.ttft_ms", AttrValue::Double(40.0)),
                ("switchboard.checkpoint.count", AttrValue::Int(3)),
                ("switchboard.checkpoint.bytes", AttrValue::Int(2048)),
                ("switchboard.conversation.new", AttrValue::Bool(true)),
            ],
            SpanStatus::Unset,
        ));
        sink.export(span("turn", &[], SpanStatus::Error("store down".into())));
        sink.export(span(
            "route",
            &[
                ("switchboard.route.outcome", text("out_of_scope")),
                ("switchboard.route.rung", text("classifier")),
                ("switchboard.route.confidence", AttrValue::Double(0.31)),
            ],
            SpanStatus::Unset,
        ));
        let tool = |outcome| {
            span(
                "execute_tool freeze_card",
                &[("gen_ai.operation.name", text("execute_tool")), ("gen_ai.tool.name", text("freeze_card"))],
                outcome,
            )
        };
        sink.export(tool(SpanStatus::Unset));
        sink.export(tool(SpanStatus::Error("not found".into())));
        for (reason, escalation) in [("approval", false), ("customer_request", true), ("fraud_report", false)] {
            sink.export(span(
                "handoff",
                &[
                    ("switchboard.handoff.reason", text(reason)),
                    ("switchboard.handoff.escalation", AttrValue::Bool(escalation)),
                ],
                SpanStatus::Unset,
            ));
        }
        let mut chat = span(
            "chat gpt-x",
            &[
                ("gen_ai.operation.name", text("chat")),
                ("gen_ai.provider.name", text("openai")),
                ("gen_ai.request.model", text("gpt-x")),
                ("gen_ai.usage.input_tokens", AttrValue::Int(120)),
                ("gen_ai.usage.output_tokens", AttrValue::Int(30)),
                ("switchboard.cost.usd", AttrValue::Double(0.0015)),
                ("switchboard.ttft_ms", AttrValue::Double(250.0)),
            ],
            SpanStatus::Unset,
        );
        let event = |attrs: &[(&str, &str)]| crate::span::SpanEvent {
            name: "e".into(),
            time_unix_nano: 0,
            attributes: attrs.iter().map(|(k, v)| ((*k).to_owned(), text(v))).collect(),
        };
        chat.events = vec![
            event(&[("switchboard.llm.event", "retry"), ("model", "openai/gpt-x")]),
            event(&[("switchboard.llm.event", "fallback"), ("from", "openai/gpt-x"), ("to", "anthropic/c")]),
            event(&[
                ("switchboard.llm.event", "breaker"),
                ("switchboard.breaker.state", "open"),
                ("model", "openai/gpt-x"),
            ]),
            event(&[("switchboard.llm.event", "breaker"), ("switchboard.breaker.state", "bogus"), ("model", "m")]),
        ];
        sink.export(chat);

        assert_eq!(r.value(TURNS, &[("handler", "card_freeze"), ("outcome", "completed")]), 1.0);
        assert_eq!(r.value(TURNS, &[("handler", "none"), ("outcome", "failed")]), 1.0);
        assert_eq!(r.value(TURN_SECONDS, &[("outcome", "completed")]), 1.0);
        assert_eq!(r.value(TURN_TTFT_SECONDS, &[]), 1.0);
        assert_eq!(r.value(CONVERSATIONS, &[]), 1.0);
        assert_eq!(r.value(CHECKPOINTS, &[]), 3.0);
        assert_eq!(r.value(CHECKPOINT_BYTES, &[]), 2048.0);
        assert_eq!(r.value(ROUTE_DECISIONS, &[("outcome", "out_of_scope"), ("rung", "classifier")]), 1.0);
        assert_eq!(r.value(TOOL_CALLS, &[("tool", "freeze_card"), ("outcome", "ok")]), 1.0);
        assert_eq!(r.value(TOOL_CALLS, &[("tool", "freeze_card"), ("outcome", "error")]), 1.0);
        assert_eq!(r.value(HANDOFFS, &[("reason", "approval")]), 1.0);
        assert_eq!(r.value(ESCALATIONS, &[]), 1.0);
        assert_eq!(r.value(LLM_TOKENS, &[("provider", "openai"), ("model", "gpt-x"), ("direction", "input")]), 120.0);
        assert_eq!(r.value(LLM_COST, &[("provider", "openai"), ("model", "gpt-x")]), 0.0015);
        assert_eq!(r.value(LLM_RETRIES, &[("model", "openai/gpt-x")]), 1.0);
        assert_eq!(r.value(LLM_FALLBACKS, &[("model", "openai/gpt-x")]), 1.0);
        assert_eq!(r.value(BREAKER_STATE, &[("model", "openai/gpt-x")]), 2.0);
        assert_eq!(r.value(BREAKER_STATE, &[("model", "m")]), 0.0, "unknown states are ignored");
        let text = r.render();
        assert!(
            text.contains("switchboard_turn_duration_seconds_bucket{outcome=\"completed\",le=\"0.25\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_turn_duration_seconds_bucket{outcome=\"completed\",le=\"0.5\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("switchboard_route_confidence_bucket{le=\"0.4\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE switchboard_llm_breaker_state gauge\n"), "{text}");
        assert!(text.contains("# TYPE switchboard_queue_depth gauge\n"), "declared before any sample: {text}");
    }
}
