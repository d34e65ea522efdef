//! Spans for the parts of a turn that live outside the crates that open their own (tools,
//! handoffs), with the attribute names the exporters and [`crate::metrics::MetricsSink`] expect.
//! Record the outcome with [`fail`] when the work failed.

use tracing::Span;
use tracing::field::Empty;

/// An `execute_tool {name}` span (GenAI conventions) for one tool call.
pub fn tool(name: &str, call_id: &str) -> Span {
    tracing::info_span!(
        "switchboard.tool",
        otel.name = %format_args!("execute_tool {name}"),
        otel.status_code = Empty,
        otel.status_description = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %name,
        gen_ai.tool.call.id = %call_id,
        gen_ai.tool.call.arguments = Empty,
        gen_ai.tool.call.result = Empty,
    )
}

/// A `handoff` span: the conversation goes to a human for `reason`. `escalation` marks the first
/// time this conversation is handed to a human for a reason other than a tool-call approval (what
/// containment counts, see [`crate::metrics`]).
pub fn handoff(reason: &str, priority: &str, escalation: bool) -> Span {
    tracing::info_span!(
        "switchboard.handoff",
        otel.name = "handoff",
        switchboard.handoff.reason = %reason,
        switchboard.handoff.priority = %priority,
        switchboard.handoff.escalation = escalation,
    )
}

/// Marks a span as failed with a description.
pub fn fail(span: &Span, description: &str) {
    span.record("otel.status_code", "error");
    span.record("otel.status_description", description);
}
