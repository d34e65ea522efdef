//! The `tracing` layer that builds OpenTelemetry spans.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::semconv::{CONTENT_ATTRIBUTES, OTEL_KIND, OTEL_NAME, OTEL_STATUS_CODE, OTEL_STATUS_DESCRIPTION};
use crate::span::{AttrValue, SpanData, SpanEvent, SpanKind, SpanSink, SpanStatus};

/// Redacts message content before it is put in a span (the guard's redaction in the binary).
pub type Redactor = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// What the layer keeps.
#[derive(Clone, Default)]
pub struct SpanLayerConfig {
    /// Keep the content attributes ([`crate::semconv::CONTENT_ATTRIBUTES`]); off by default.
    pub capture_content: bool,
    /// Applied to every content attribute kept. Content capture without a redactor keeps
    /// nothing: the layer never exports raw customer text.
    pub redactor: Option<Redactor>,
    /// Only spans whose `tracing` target starts with one of these become OpenTelemetry spans
    /// (empty: every span). A skipped span's children hang from its nearest kept ancestor.
    pub targets: Vec<String>,
}

impl fmt::Debug for SpanLayerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanLayerConfig")
            .field("capture_content", &self.capture_content)
            .field("redactor", &self.redactor.is_some())
            .field("targets", &self.targets)
            .finish()
    }
}

/// Turns `tracing` spans into OpenTelemetry spans and hands each finished one to the sinks.
pub struct SpanLayer {
    sinks: Vec<Arc<dyn SpanSink>>,
    cfg: SpanLayerConfig,
}

impl SpanLayer {
    /// A layer exporting to `sinks`.
    pub fn new(cfg: SpanLayerConfig, sinks: Vec<Arc<dyn SpanSink>>) -> Self {
        Self { sinks, cfg }
    }

    fn wanted(&self, target: &str) -> bool {
        self.cfg.targets.is_empty() || self.cfg.targets.iter().any(|t| target.starts_with(t.as_str()))
    }
}

/// A span being built, kept in the registry's extensions.
struct Building(SpanData);

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Span ids: a process-random seed mixed with a counter (splitmix64), so they are unique within
/// the process and unpredictable across processes, without a system call per span.
fn next_span_id() -> [u8; 8] {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            return now_ns();
        }
        u64::from_le_bytes(b)
    });
    let mut z = seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 { [1, 0, 0, 0, 0, 0, 0, 0] } else { z.to_le_bytes() }
}

fn new_trace_id() -> [u8; 16] {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() || b == [0; 16] {
        b[..8].copy_from_slice(&next_span_id());
        b[8..].copy_from_slice(&next_span_id());
    }
    b
}

/// Collects fields into attributes, applying the `otel.*` conventions and the content policy.
struct Fields<'a> {
    cfg: &'a SpanLayerConfig,
    attrs: &'a mut Vec<(String, AttrValue)>,
    name: Option<&'a mut String>,
    kind: Option<&'a mut SpanKind>,
    status: Option<&'a mut SpanStatus>,
    /// For events: the `message` field.
    message: Option<&'a mut String>,
}

impl Fields<'_> {
    fn put(&mut self, key: &str, value: AttrValue) {
        match key {
            OTEL_NAME => {
                if let (Some(n), AttrValue::Str(s)) = (self.name.as_deref_mut(), &value) {
                    s.clone_into(n);
                }
                return;
            }
            OTEL_KIND => {
                if let (Some(k), Some(parsed)) = (self.kind.as_deref_mut(), value.as_str().and_then(SpanKind::parse)) {
                    *k = parsed;
                }
                return;
            }
            OTEL_STATUS_CODE => {
                if let (Some(st), Some(s)) = (self.status.as_deref_mut(), value.as_str()) {
                    if s.eq_ignore_ascii_case("error") {
                        if !matches!(st, SpanStatus::Error(_)) {
                            *st = SpanStatus::Error(String::new());
                        }
                    } else if s.eq_ignore_ascii_case("ok") {
                        *st = SpanStatus::Ok;
                    }
                }
                return;
            }
            OTEL_STATUS_DESCRIPTION => {
                if let (Some(st), Some(s)) = (self.status.as_deref_mut(), value.as_str()) {
                    *st = SpanStatus::Error(s.to_owned());
                }
                return;
            }
            "message" => {
                if let Some(m) = self.message.as_deref_mut() {
                    if let AttrValue::Str(s) = &value {
                        s.clone_into(m);
                    }
                    return;
                }
            }
            _ => {}
        }
        let value = if CONTENT_ATTRIBUTES.contains(&key) {
            match (&self.cfg.redactor, self.cfg.capture_content, value) {
                (Some(r), true, AttrValue::Str(s)) => AttrValue::Str(r(&s)),
                (Some(_), true, other) => other,
                _ => return,
            }
        } else {
            value
        };
        if let Some(slot) = self.attrs.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            self.attrs.push((key.to_owned(), value));
        }
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name(), AttrValue::Double(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), AttrValue::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.put(field.name(), AttrValue::Int(v)),
            Err(_) => self.put(field.name(), AttrValue::Str(value.to_string())),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), AttrValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), AttrValue::Str(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field.name(), AttrValue::Str(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), AttrValue::Str(format!("{value:?}")));
    }
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if !self.wanted(span.metadata().target()) {
            return;
        }
        // The nearest kept ancestor gives the trace and the parent.
        let parent =
            span.scope().skip(1).find_map(|a| a.extensions().get::<Building>().map(|b| (b.0.trace_id, b.0.span_id)));
        let mut data = SpanData {
            trace_id: parent.map_or_else(new_trace_id, |p| p.0),
            span_id: next_span_id(),
            parent_span_id: parent.map(|p| p.1),
            name: span.metadata().name().to_owned(),
            kind: SpanKind::Internal,
            start_unix_nano: now_ns(),
            end_unix_nano: 0,
            attributes: Vec::new(),
            events: Vec::new(),
            status: SpanStatus::Unset,
            target: span.metadata().target().to_owned(),
        };
        attrs.record(&mut Fields {
            cfg: &self.cfg,
            attrs: &mut data.attributes,
            name: Some(&mut data.name),
            kind: Some(&mut data.kind),
            status: Some(&mut data.status),
            message: None,
        });
        span.extensions_mut().insert(Building(data));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(Building(data)) = ext.get_mut::<Building>() {
            values.record(&mut Fields {
                cfg: &self.cfg,
                attrs: &mut data.attributes,
                name: Some(&mut data.name),
                kind: Some(&mut data.kind),
                status: Some(&mut data.status),
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let Some(owner) = span.scope().find(|s| s.extensions().get::<Building>().is_some()) else { return };
        let mut ext = owner.extensions_mut();
        let Some(Building(data)) = ext.get_mut::<Building>() else { return };
        let mut name = String::new();
        let mut attributes = Vec::new();
        event.record(&mut Fields {
            cfg: &self.cfg,
            attrs: &mut attributes,
            name: None,
            kind: None,
            status: None,
            message: Some(&mut name),
        });
        if *event.metadata().level() == tracing::Level::ERROR && !matches!(data.status, SpanStatus::Error(_)) {
            data.status = SpanStatus::Error(name.clone());
        }
        if name.is_empty() {
            event.metadata().name().clone_into(&mut name);
        }
        data.events.push(SpanEvent { name, time_unix_nano: now_ns(), attributes });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(Building(mut data)) = span.extensions_mut().remove::<Building>() else { return };
        data.end_unix_nano = now_ns().max(data.start_unix_nano);
        let Some((last, rest)) = self.sinks.split_last() else { return };
        for sink in rest {
            sink.export(data.clone());
        }
        last.export(data);
    }
}
