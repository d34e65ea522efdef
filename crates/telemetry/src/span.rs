//! A finished span and where finished spans go.

use std::sync::{Arc, Mutex};

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// Integer.
    Int(i64),
    /// Floating point.
    Double(f64),
    /// Boolean.
    Bool(bool),
}

impl AttrValue {
    /// The value as text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// What a span is, in OpenTelemetry's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanKind {
    /// In-process work.
    #[default]
    Internal,
    /// Handling a request.
    Server,
    /// A call to another service (LLM vendors, tools, remote agents).
    Client,
    /// Sending a message.
    Producer,
    /// Receiving a message.
    Consumer,
}

impl SpanKind {
    /// The OTLP enum value.
    pub fn otlp(self) -> u8 {
        match self {
            Self::Internal => 1,
            Self::Server => 2,
            Self::Client => 3,
            Self::Producer => 4,
            Self::Consumer => 5,
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "internal" => Self::Internal,
            "server" => Self::Server,
            "client" => Self::Client,
            "producer" => Self::Producer,
            "consumer" => Self::Consumer,
            _ => return None,
        })
    }
}

/// The outcome of a span.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpanStatus {
    /// Not set.
    #[default]
    Unset,
    /// Explicitly fine.
    Ok,
    /// Failed, with a description.
    Error(String),
}

/// An event inside a span (a `tracing` event emitted while the span was entered).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// The event's message.
    pub name: String,
    /// Unix time, ns.
    pub time_unix_nano: u64,
    /// Its other fields.
    pub attributes: Vec<(String, AttrValue)>,
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    /// 16 bytes, shared by every span of the trace.
    pub trace_id: [u8; 16],
    /// 8 bytes.
    pub span_id: [u8; 8],
    /// The parent's span id; `None` for a root.
    pub parent_span_id: Option<[u8; 8]>,
    /// Span name.
    pub name: String,
    /// Kind.
    pub kind: SpanKind,
    /// Unix time, ns.
    pub start_unix_nano: u64,
    /// Unix time, ns.
    pub end_unix_nano: u64,
    /// Attributes in the order they were recorded (a later value of the same key replaces it).
    pub attributes: Vec<(String, AttrValue)>,
    /// Events.
    pub events: Vec<SpanEvent>,
    /// Status.
    pub status: SpanStatus,
    /// The `tracing` target (module path) that opened it.
    pub target: String,
}

impl SpanData {
    /// An attribute by key.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
    /// The span id as 16 hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Where finished spans go. `export` is called on the thread that closed the span: it must not
/// block (queue and return).
pub trait SpanSink: Send + Sync + 'static {
    /// Takes one finished span.
    fn export(&self, span: SpanData);
}

/// Keeps finished spans in memory, oldest first, up to a capacity (then the oldest are dropped).
#[derive(Clone)]
pub struct MemorySink {
    spans: Arc<Mutex<std::collections::VecDeque<SpanData>>>,
    capacity: usize,
}

impl MemorySink {
    /// A sink that holds up to `capacity` spans.
    pub fn new(capacity: usize) -> Self {
        Self { spans: Arc::default(), capacity: capacity.max(1) }
    }
    /// A copy of the spans held.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
    /// The spans of one trace.
    pub fn trace(&self, trace_id: &[u8; 16]) -> Vec<SpanData> {
        self.spans().into_iter().filter(|s| &s.trace_id == trace_id).collect()
    }
}

impl SpanSink for MemorySink {
    fn export(&self, span: SpanData) {
        if let Ok(mut s) = self.spans.lock() {
            if s.len() == self.capacity {
                s.pop_front();
            }
            s.push_back(span);
        }
    }
}
