//! OTLP/HTTP export with the JSON encoding (`POST {endpoint}/v1/traces`,
//! `Content-Type: application/json`), batched off the request path.
//!
//! Telemetry must never slow or fail a turn: spans go through a bounded queue (a full queue drops
//! the span and counts it), a background task posts batches with a timeout, and a failed batch is
//! counted and dropped after one retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::span::{AttrValue, SpanData, SpanSink, SpanStatus, hex};

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's base address, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended
    /// unless the address already ends with it).
    pub endpoint: String,
    /// Extra headers (e.g. an authorization header of a hosted collector).
    pub headers: Vec<(String, String)>,
    /// Timeout of one export request.
    pub timeout: Duration,
    /// Spans per request at most.
    pub max_batch: usize,
    /// How long a partial batch waits before it is sent.
    pub flush_interval: Duration,
    /// Spans queued at most; more are dropped.
    pub queue_capacity: usize,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Other resource attributes (`service.version`, `deployment.environment`, …).
    pub resource: Vec<(String, String)>,
}

impl OtlpConfig {
    /// Defaults for a collector at `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
            max_batch: 512,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 8192,
            service_name: "switchboard".into(),
            resource: Vec::new(),
        }
    }

    fn url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") }
    }
}

/// Export counters.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans lost with a batch the collector refused or never answered.
    pub failed: AtomicU64,
}

enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// A [`SpanSink`] that exports to an OTLP/HTTP collector.
#[derive(Clone)]
pub struct OtlpExporter {
    tx: mpsc::Sender<Msg>,
    stats: Arc<OtlpStats>,
}

impl OtlpExporter {
    /// Starts the export task on the current Tokio runtime.
    ///
    /// # Errors
    /// The HTTP client cannot be built, or the endpoint is not an `http(s)://` address.
    pub fn start(cfg: OtlpConfig) -> Result<Self, String> {
        let url = cfg.url();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("OTLP endpoint must be an http:// or https:// address, got {:?}", cfg.endpoint));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("building the OTLP HTTP client: {e}"))?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let stats = Arc::new(OtlpStats::default());
        let task = run(cfg, url, client, rx, stats.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(task);
            }
            // Outside a runtime (a command's start-up): a thread of its own.
            Err(_) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("starting the OTLP export thread: {e}"))?;
                std::thread::Builder::new()
                    .name("otlp-export".into())
                    .spawn(move || rt.block_on(task))
                    .map_err(|e| format!("starting the OTLP export thread: {e}"))?;
            }
        }
        Ok(Self { tx, stats })
    }

    /// The configuration from the standard OpenTelemetry environment variables:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (none: `None`),
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k=v`), `OTEL_EXPORTER_OTLP_TIMEOUT` (ms),
    /// `OTEL_SERVICE_NAME`; `OTEL_EXPORTER_OTLP_PROTOCOL` must be `http/json` when set.
    ///
    /// # Errors
    /// An unsupported protocol or a malformed value, naming the variable.
    pub fn config_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, String> {
        let Some(endpoint) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(p) = get(var)
                && p != "http/json"
            {
                return Err(format!(
                    "{var}={p}: this build exports OTLP over HTTP with the JSON encoding only (http/json)"
                ));
            }
        }
        let mut cfg = OtlpConfig::new(endpoint);
        if let Some(h) = get("OTEL_EXPORTER_OTLP_HEADERS") {
            for pair in h.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("OTEL_EXPORTER_OTLP_HEADERS: {pair:?} is not key=value"))?;
                cfg.headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        if let Some(t) = get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            let ms: u64 = t.parse().map_err(|_| format!("OTEL_EXPORTER_OTLP_TIMEOUT={t:?} is not milliseconds"))?;
            cfg.timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(s) = get("OTEL_SERVICE_NAME") {
            cfg.service_name = s;
        }
        Ok(Some(cfg))
    }

    /// [`OtlpExporter::flush`] for synchronous code outside the runtime (a command's end),
    /// waiting at most `timeout`.
    pub fn flush_blocking(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.try_send(Msg::Flush(done)).is_ok() {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(wait.blocking_recv());
            });
            let _ = rx.recv_timeout(timeout);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &OtlpStats {
        &self.stats
    }

    /// Sends everything queued so far and waits until the collector answered (or the attempt
    /// failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

impl SpanSink for OtlpExporter {
    fn export(&self, span: SpanData) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(
    cfg: OtlpConfig,
    url: String,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Msg>,
    stats: Arc<OtlpStats>,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(cfg.max_batch);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let msg = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(cfg.flush_interval, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    send(&cfg, &url, &client, &mut batch, &stats).await;
                    continue;
                }
            }
        };
        match msg {
            Some(Msg::Span(s)) => {
                batch.push(*s);
                if batch.len() >= cfg.max_batch {
                    send(&cfg, &url, &client, &mut batch, &stats).await;
                }
            }
            Some(Msg::Flush(done)) => {
                waiting.push(done);
                send(&cfg, &url, &client, &mut batch, &stats).await;
                for w in waiting.drain(..) {
                    let _ = w.send(());
                }
            }
            None => {
                send(&cfg, &url, &client, &mut batch, &stats).await;
                return;
            }
        }
    }
}

async fn send(cfg: &OtlpConfig, url: &str, client: &reqwest::Client, batch: &mut Vec<SpanData>, stats: &OtlpStats) {
    if batch.is_empty() {
        return;
    }
    let body = match serde_json::to_vec(&encode(cfg, batch)) {
        Ok(b) => b,
        Err(_) => {
            stats.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            return;
        }
    };
    let n = batch.len() as u64;
    batch.clear();
    for attempt in 0..2 {
        let mut rb = client.post(url).header("content-type", "application/json").body(body.clone());
        for (k, v) in &cfg.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        match rb.send().await {
            Ok(r) if r.status().is_success() => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
                return;
            }
            // A client error will not get better on retry.
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => break,
            _ if attempt == 0 => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => {}
        }
    }
    stats.failed.fetch_add(n, Ordering::Relaxed);
}

fn value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({"stringValue": s}),
        // OTLP/JSON carries 64-bit integers as decimal strings.
        AttrValue::Int(i) => json!({"intValue": i.to_string()}),
        AttrValue::Double(d) if d.is_finite() => json!({"doubleValue": d}),
        AttrValue::Double(d) => json!({"stringValue": d.to_string()}),
        AttrValue::Bool(b) => json!({"boolValue": b}),
    }
}

fn attributes(attrs: &[(String, AttrValue)]) -> Value {
    Value::Array(attrs.iter().map(|(k, v)| json!({"key": k, "value": value(v)})).collect())
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans`.
pub fn encode(cfg: &OtlpConfig, spans: &[SpanData]) -> Value {
    let mut resource = vec![("service.name".to_owned(), AttrValue::Str(cfg.service_name.clone()))];
    resource.extend(cfg.resource.iter().map(|(k, v)| (k.clone(), AttrValue::Str(v.clone()))));
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut o = json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "name": s.name,
                "kind": s.kind.otlp(),
                "startTimeUnixNano": s.start_unix_nano.to_string(),
                "endTimeUnixNano": s.end_unix_nano.to_string(),
                "attributes": attributes(&s.attributes),
                "events": s.events.iter().map(|e| json!({
                    "timeUnixNano": e.time_unix_nano.to_string(),
                    "name": e.name,
                    "attributes": attributes(&e.attributes),
                })).collect::<Vec<_>>(),
                "status": match &s.status {
                    SpanStatus::Unset => json!({"code": 0}),
                    SpanStatus::Ok => json!({"code": 1}),
                    SpanStatus::Error(m) => json!({"code": 2, "message": m}),
                },
            });
            if let (Some(p), Some(obj)) = (s.parent_span_id, o.as_object_mut()) {
                obj.insert("parentSpanId".into(), Value::String(hex(&p)));
            }
            o
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": attributes(&resource)},
        "scopeSpans": [{
            "scope": {"name": "switchboard", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans,
        }],
    }]})
}
