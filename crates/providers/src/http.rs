//! HTTP plumbing shared by the adapters: client construction with timeouts, sending under a
//! cancellation token, error-body reading, `retry-after` parsing, and the SSE-to-event driver.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::error::{ProviderError, TimeoutPhase};
use crate::event::{EventStream, StreamEvent};
use crate::sse::{SseEvent, SseParser};

/// Default connect timeout.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for a whole non-streamed call, and for a stream's response headers.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Error bodies are cut to this many bytes before they go into an error.
const MAX_ERROR_BODY: usize = 8 * 1024;

/// Builds a client with a connect timeout and connection pooling.
pub(crate) fn client(connect_timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ProviderError::InvalidRequest(format!("HTTP client: {}", e.without_url())))
}

/// Maps a reqwest error without ever including the URL (it may carry a key).
pub(crate) fn transport(vendor: &'static str, e: reqwest::Error, timeout: Duration) -> ProviderError {
    let connect = e.is_connect();
    if e.is_timeout() {
        return ProviderError::Timeout {
            vendor,
            phase: if connect { TimeoutPhase::Connect } else { TimeoutPhase::FirstByte },
            after: timeout,
        };
    }
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::Transport { vendor, message, connect }
}

/// Sends a request, honouring the cancellation token.
///
/// For a non-streamed call `timeout` bounds the whole exchange, body included. For a stream
/// it bounds only the wait for the response headers: reqwest's own timeout would also cut a
/// long stream, whose pacing is the [`crate::resilience::Timeout`] layer's business.
pub(crate) async fn send(
    vendor: &'static str,
    req: reqwest::RequestBuilder,
    timeout: Duration,
    stream: bool,
    cancel: &CancellationToken,
) -> Result<reqwest::Response, ProviderError> {
    let req = if stream { req } else { req.timeout(timeout) };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(ProviderError::Cancelled),
        r = tokio::time::timeout(timeout, req.send()) => match r {
            Ok(r) => r.map_err(|e| transport(vendor, e, timeout)),
            Err(_) => Err(ProviderError::Timeout {
                vendor,
                phase: TimeoutPhase::FirstByte,
                after: timeout,
            }),
        },
    }
}

/// Reads a body as JSON under the cancellation token.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    vendor: &'static str,
    resp: reqwest::Response,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<T, ProviderError> {
    let bytes = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(ProviderError::Cancelled),
        b = resp.bytes() => b.map_err(|e| transport(vendor, e, timeout))?,
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ProviderError::protocol(vendor, format!("response body is not the expected JSON: {e}")))
}

/// What an error response said, before vendor-specific classification.
#[derive(Debug)]
pub(crate) struct ErrorResponse {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) request_id: Option<String>,
    pub(crate) should_retry_header: Option<bool>,
    pub(crate) body: String,
}

/// Reads a failed response (bounded, never hangs past the request timeout).
pub(crate) async fn error_response(
    resp: reqwest::Response,
    request_id_header: &str,
    cancel: &CancellationToken,
) -> ErrorResponse {
    let status = resp.status().as_u16();
    let headers = resp.headers();
    let retry_after = retry_after(headers).or_else(|| rate_limit_reset(headers));
    let request_id = headers.get(request_id_header).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let should_retry_header = headers.get("x-should-retry").and_then(|v| v.to_str().ok()).map(|v| v == "true");
    let body = tokio::select! {
        biased;
        _ = cancel.cancelled() => Bytes::new(),
        b = resp.bytes() => b.unwrap_or_default(),
    };
    let cut = body.len().min(MAX_ERROR_BODY);
    ErrorResponse {
        status,
        retry_after,
        request_id,
        should_retry_header,
        body: String::from_utf8_lossy(&body[..cut]).into_owned(),
    }
}

/// `retry-after-ms` (milliseconds) or `retry-after` (seconds, possibly fractional).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64)
}

/// When a 429 carries no `retry-after`: the reset time of an exhausted limit, from OpenAI's
/// `x-ratelimit-{remaining,reset}-{requests,tokens}` (reset like `6m0s`, `250ms`) or
/// Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*`
/// (reset as an RFC 3339 time).
pub(crate) fn rate_limit_reset(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut wait: Option<Duration> = None;
    for kind in ["requests", "tokens"] {
        if get(&format!("x-ratelimit-remaining-{kind}")).map(str::trim) == Some("0")
            && let Some(d) = get(&format!("x-ratelimit-reset-{kind}")).and_then(go_duration)
        {
            wait = Some(wait.map_or(d, |w| w.max(d)));
        }
    }
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        if get(&format!("anthropic-ratelimit-{kind}-remaining")).map(str::trim) == Some("0") {
            let reset = get(&format!("anthropic-ratelimit-{kind}-reset")).and_then(rfc3339_unix);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            if let Some(at) = reset {
                let d = Duration::from_secs_f64((at - now).clamp(0.0, 86_400.0));
                wait = Some(wait.map_or(d, |w| w.max(d)));
            }
        }
    }
    wait
}

/// Parses a Go-style duration (`1s`, `6m0s`, `250ms`, `1h2m3.5s`).
pub(crate) fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total < 86_400.0).then(|| Duration::from_secs_f64(total))
}

/// Parses an RFC 3339 UTC time (`2026-11-25T22:15:00Z`, fractional seconds and offsets
/// allowed) to Unix seconds.
pub(crate) fn rfc3339_unix(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let i = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (c, sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60))
    };
    let mut c = clock.splitn(3, ':');
    let (hh, mm): (i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    let ss: f64 = c.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 - offset) as f64 + ss)
}

/// What a vendor stream decoder says after an SSE event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// The stream's terminator arrived; stop reading.
    Done,
}

/// Turns a vendor's SSE events into [`StreamEvent`]s.
pub(crate) trait SseDecoder: Send + 'static {
    /// Handles one SSE event, pushing zero or more stream events.
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<Flow, ProviderError>;
    /// The body ended before [`Flow::Done`]: usually an error.
    fn on_eof(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
}

struct Driver<S, D> {
    vendor: &'static str,
    body: S,
    parser: SseParser,
    decoder: D,
    queue: VecDeque<Result<StreamEvent, ProviderError>>,
    scratch_sse: Vec<SseEvent>,
    scratch_ev: Vec<StreamEvent>,
    finished: bool,
    cancel: CancellationToken,
}

impl<S, D> Driver<S, D>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
    D: SseDecoder,
{
    fn fail(&mut self, e: ProviderError) {
        self.finished = true;
        self.queue.push_back(Err(e));
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        if let Err(e) = self.parser.feed(bytes, &mut self.scratch_sse) {
            self.fail(ProviderError::protocol(self.vendor, e.to_string()));
            return;
        }
        let events = std::mem::take(&mut self.scratch_sse);
        for ev in events {
            let r = self.decoder.on_event(ev, &mut self.scratch_ev);
            self.queue.extend(self.scratch_ev.drain(..).map(Ok));
            match r {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => {
                    self.finished = true;
                    break;
                }
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
        }
    }

    async fn next(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                if item.is_err() {
                    self.queue.clear();
                }
                return Some(item);
            }
            if self.finished {
                return None;
            }
            let chunk = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    self.fail(ProviderError::Cancelled);
                    continue;
                }
                c = self.body.next() => c,
            };
            match chunk {
                Some(Ok(bytes)) => self.on_bytes(&bytes),
                Some(Err(e)) => {
                    let e = transport(self.vendor, e, Duration::ZERO);
                    self.fail(e);
                }
                None => {
                    self.finished = true;
                    let r = self.decoder.on_eof(&mut self.scratch_ev);
                    self.queue.extend(self.scratch_ev.drain(..).map(Ok));
                    if let Err(e) = r {
                        self.queue.push_back(Err(e));
                    }
                }
            }
        }
    }
}

/// Drives an SSE response body through a vendor decoder. Dropping the stream drops the body,
/// which aborts the HTTP request.
pub(crate) fn sse_stream<D: SseDecoder>(
    vendor: &'static str,
    resp: reqwest::Response,
    decoder: D,
    cancel: CancellationToken,
) -> EventStream {
    let driver = Driver {
        vendor,
        body: Box::pin(resp.bytes_stream()),
        parser: SseParser::new(),
        decoder,
        queue: VecDeque::new(),
        scratch_sse: Vec::new(),
        scratch_ev: Vec::new(),
        finished: false,
        cancel,
    };
    Box::pin(futures::stream::unfold(driver, |mut d| async move { d.next().await.map(|item| (item, d)) }))
}

/// Merges the `extra` escape hatch into a serialised request body.
pub(crate) fn merge_extra(body: &mut serde_json::Value, extra: &serde_json::Map<String, serde_json::Value>) {
    if let serde_json::Value::Object(map) = body {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
}

/// Joins a base URL and a path without doubling or dropping slashes.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn rate_limit_headers() {
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
        assert_eq!(go_duration("soon"), None);
        assert_eq!(rfc3339_unix("1970-01-02T00:00:00Z"), Some(86_400.0));
        assert_eq!(rfc3339_unix("2026-11-25T22:15:00Z"), Some(1_795_644_900.0));
        assert_eq!(rfc3339_unix("2026-11-25T23:15:00+01:00"), Some(1_795_644_900.0));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1.5s"));
        h.insert("x-ratelimit-remaining-tokens", HeaderValue::from_static("900"));
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("9m"));
        assert_eq!(rate_limit_reset(&h), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn join() {
        assert_eq!(join_url("http://a/v1/", "/chat"), "http://a/v1/chat");
        assert_eq!(join_url("http://a", "v1/messages"), "http://a/v1/messages");
    }
}
