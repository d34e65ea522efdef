//! Prometheus metrics derived from the spans: one instrumentation, two outputs.
//!
//! [`MetricsSink`] is a [`SpanSink`] that turns every finished span into counter and histogram
//! updates (turn latency, routing confidence and outcomes, guard verdicts, LLM calls, tokens and
//! cost, time to first token, tool calls, handoffs, node runs) in a [`Registry`], which renders
//! the Prometheus text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::span::{AttrValue, SpanData, SpanSink, SpanStatus};

/// Latency buckets, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Probability buckets.
pub const CONFIDENCE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

#[derive(Debug, Clone)]
enum Kind {
    Counter,
    Histogram(&'static [f64]),
}

#[derive(Debug)]
enum Series {
    Counter(f64),
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

    /// Adds `v` to a counter's series. Unknown names are ignored.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], v: f64) {
        let Ok(mut f) = self.families.lock() else { return };
        let Some(fam) = f.get_mut(name) else { return };
        if let Series::Counter(c) = fam.series.entry(labels_of(labels)).or_insert(Series::Counter(0.0)) {
            *c += v.max(0.0);
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
            Some(Series::Counter(c)) => *c,
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
                Kind::Histogram(_) => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, s) in &fam.series {
                match (s, &fam.kind) {
                    (Series::Counter(c), _) => {
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
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v}") }
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
    /// Turn latency histogram.
    pub const TURN_SECONDS: &str = "switchboard_turn_duration_seconds";
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
    /// Time to the first streamed token.
    pub const TTFT_SECONDS: &str = "switchboard_llm_time_to_first_token_seconds";
    /// Tool calls by tool and outcome.
    pub const TOOL_CALLS: &str = "switchboard_tool_calls_total";
    /// Handoffs to a human by reason.
    pub const HANDOFFS: &str = "switchboard_handoffs_total";
}

impl MetricsSink {
    /// A sink feeding `registry`, declaring its metrics there.
    pub fn new(registry: Registry) -> Self {
        use names::*;
        registry
            .histogram(TURN_SECONDS, "Duration of a turn (one engine run), by outcome.", LATENCY_BUCKETS)
            .counter(NODE_RUNS, "Node executions, by node (flow, agent, handler) and outcome.")
            .counter(ROUTE_DECISIONS, "Routing decisions by outcome (intent, clarify, out_of_scope) and rung.")
            .histogram(ROUTE_CONFIDENCE, "Confidence of the routed intent.", CONFIDENCE_BUCKETS)
            .counter(GUARD_CHECKS, "Guard checks by check (input, output, tool) and verdict.")
            .counter(LLM_CALLS, "LLM calls by provider, model and outcome (ok or the error type).")
            .counter(LLM_TOKENS, "LLM tokens by provider, model and direction (input, output).")
            .counter(LLM_COST, "LLM cost in US dollars by provider and model.")
            .histogram(LLM_SECONDS, "Duration of an LLM call, by provider.", LATENCY_BUCKETS)
            .histogram(TTFT_SECONDS, "Time to the first streamed token, by provider.", LATENCY_BUCKETS)
            .counter(TOOL_CALLS, "Tool calls by tool and outcome.")
            .counter(HANDOFFS, "Handoffs to a human, by reason.");
        Self { registry }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

fn s<'a>(span: &'a SpanData, key: &str) -> &'a str {
    span.attr(key).and_then(AttrValue::as_str).unwrap_or("")
}

fn f(span: &SpanData, key: &str) -> Option<f64> {
    match span.attr(key)? {
        AttrValue::Double(d) => Some(*d),
        AttrValue::Int(i) => Some(*i as f64),
        _ => None,
    }
}

impl SpanSink for MetricsSink {
    fn export(&self, span: SpanData) {
        use names::*;
        let r = &self.registry;
        let secs = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e9;
        let outcome = match &span.status {
            SpanStatus::Error(_) => "error",
            _ => "ok",
        };
        match span.name.as_str() {
            "turn" => r.observe(TURN_SECONDS, &[("outcome", outcome)], secs),
            "route" => {
                r.add(
                    ROUTE_DECISIONS,
                    &[("outcome", s(&span, "switchboard.route.outcome")), ("rung", s(&span, "switchboard.route.rung"))],
                    1.0,
                );
                if let Some(c) = f(&span, "switchboard.route.confidence") {
                    r.observe(ROUTE_CONFIDENCE, &[], c);
                }
            }
            _ if span.target.starts_with("switchboard") => {}
            _ => return,
        }
        match span.attr("gen_ai.operation.name").and_then(AttrValue::as_str) {
            Some("chat") => {
                let (p, m) = (s(&span, "gen_ai.provider.name"), s(&span, "gen_ai.request.model"));
                let result = if outcome == "ok" {
                    "ok"
                } else {
                    span.attr("error.type").and_then(AttrValue::as_str).unwrap_or("error")
                };
                r.add(LLM_CALLS, &[("provider", p), ("model", m), ("outcome", result)], 1.0);
                for (dir, key) in [("input", "gen_ai.usage.input_tokens"), ("output", "gen_ai.usage.output_tokens")] {
                    if let Some(t) = f(&span, key) {
                        r.add(LLM_TOKENS, &[("provider", p), ("model", m), ("direction", dir)], t);
                    }
                }
                if let Some(c) = f(&span, "switchboard.cost.usd") {
                    r.add(LLM_COST, &[("provider", p), ("model", m)], c);
                }
                r.observe(LLM_SECONDS, &[("provider", p)], secs);
                if let Some(ms) = f(&span, "switchboard.ttft_ms") {
                    r.observe(TTFT_SECONDS, &[("provider", p)], ms / 1000.0);
                }
            }
            Some("execute_tool") => {
                r.add(TOOL_CALLS, &[("tool", s(&span, "gen_ai.tool.name")), ("outcome", outcome)], 1.0);
            }
            _ => {}
        }
        if let Some(node) = span.attr("switchboard.node").and_then(AttrValue::as_str) {
            r.add(NODE_RUNS, &[("node", node), ("outcome", outcome)], 1.0);
        }
        if let Some(check) = span.attr("switchboard.guard.check").and_then(AttrValue::as_str) {
            r.add(GUARD_CHECKS, &[("check", check), ("verdict", s(&span, "switchboard.guard.verdict"))], 1.0);
        }
        if let Some(reason) = span.attr("switchboard.handoff.reason").and_then(AttrValue::as_str) {
            r.add(HANDOFFS, &[("reason", reason)], 1.0);
        }
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
}
