//! Traces of every turn as OpenTelemetry spans.
//!
//! The rest of Switchboard instruments itself with plain `tracing` spans whose field names follow
//! the OpenTelemetry semantic conventions ([`semconv`]); this crate turns the spans into
//! OpenTelemetry spans and ships them:
//!
//! * [`SpanLayer`] is a `tracing_subscriber` layer that gives each span a trace id (inherited
//!   from its parent, fresh for a root), a span id, its attributes, events and status, and hands
//!   the finished span to a [`SpanSink`];
//! * [`OtlpExporter`] is a sink that batches spans and posts them to an OTLP/HTTP collector
//!   (`/v1/traces`, JSON encoding) with a timeout, dropping (and counting) spans rather than
//!   blocking a turn when the collector is slow or down;
//! * [`MemorySink`] keeps them in memory (tests, the inspector of a single process);
//! * [`MetricsSink`] derives the Prometheus metrics from them ([`metrics`]).
//!
//! Message content is sensitive: attributes listed in [`semconv::CONTENT_ATTRIBUTES`] are dropped
//! unless content capture is enabled, and when it is, they pass through a redaction function the
//! caller supplies (the guard's).

mod layer;
pub mod metrics;
pub mod otlp;
pub mod semconv;
mod span;
pub mod spans;

pub use layer::{Redactor, SpanLayer, SpanLayerConfig};
pub use metrics::{MetricsSink, Registry};
pub use otlp::{OtlpConfig, OtlpExporter, OtlpStats};
pub use span::{AttrValue, MemorySink, SpanData, SpanEvent, SpanKind, SpanSink, SpanStatus};
