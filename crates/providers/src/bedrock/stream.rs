//! ConverseStream: binary frames in, neutral [`StreamEvent`]s out.
//!
//! Text blocks usually arrive without a `contentBlockStart`, so blocks are keyed by
//! `contentBlockIndex`; a tool block is announced by its start (id and name) and its
//! input arrives as string fragments. A tool call is ended only by its
//! `contentBlockStop`, so a broken stream never completes one. `messageStop` gives
//! the finish reason, the `metadata` event after it the usage.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::VENDOR;
use super::convert;
use super::eventstream::{Frame, FrameDecoder, FrameKind};
use super::wire;
use crate::error::ProviderError;
use crate::event::{EventStream, StreamEvent};

/// Per-stream state: which block index is which tool call.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    tools: HashMap<u32, String>,
    stopped: bool,
    done: bool,
}

fn parse<T: DeserializeOwned>(event: &str, payload: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(payload).map_err(|e| ProviderError::protocol(VENDOR, format!("bad {event} payload: {e}")))
}

impl Decoder {
    /// Translates one frame; returns `true` when the stream is complete.
    pub(crate) fn on_frame(&mut self, frame: Frame, out: &mut Vec<StreamEvent>) -> Result<bool, ProviderError> {
        let name = match frame.kind {
            FrameKind::Event(name) => name,
            FrameKind::Exception(kind) => {
                return Err(convert::stream_exception(&kind, &frame.payload));
            }
            FrameKind::Error { code, message } => {
                return Err(ProviderError::Api {
                    vendor: VENDOR,
                    status: 500,
                    kind: code,
                    message,
                    retryable: false,
                    retry_after: None,
                    request_id: None,
                });
            }
        };
        let p = &frame.payload[..];
        match name.as_str() {
            "messageStart" => {}
            "contentBlockStart" => {
                let s: wire::BlockStart = parse(&name, p)?;
                if let Some(tu) = s.start.and_then(|s| s.tool_use) {
                    self.tools.insert(s.content_block_index, tu.tool_use_id.clone());
                    out.push(StreamEvent::ToolCallDelta {
                        id: tu.tool_use_id,
                        name: Some(tu.name),
                        arguments: String::new(),
                    });
                }
            }
            "contentBlockDelta" => {
                let d: wire::BlockDelta = parse(&name, p)?;
                if let Some(text) = d.delta.text {
                    if !text.is_empty() {
                        out.push(StreamEvent::TextDelta { text });
                    }
                } else if let Some(tu) = d.delta.tool_use {
                    let id = self
                        .tools
                        .get(&d.content_block_index)
                        .ok_or_else(|| ProviderError::protocol(VENDOR, "tool input delta for a block never started"))?;
                    out.push(StreamEvent::ToolCallDelta { id: id.clone(), name: None, arguments: tu.input });
                }
                // Reasoning deltas (`reasoningContent`) are not part of the reply text.
            }
            "contentBlockStop" => {
                let s: wire::BlockStop = parse(&name, p)?;
                if let Some(id) = self.tools.remove(&s.content_block_index) {
                    out.push(StreamEvent::ToolCallEnd { id });
                }
            }
            "messageStop" => {
                let s: wire::MessageStop = parse(&name, p)?;
                self.stopped = true;
                out.push(StreamEvent::Finish { reason: convert::finish_reason(&s.stop_reason) });
            }
            "metadata" => {
                let m: wire::Metadata = parse(&name, p)?;
                if let Some(u) = m.usage {
                    out.push(StreamEvent::Usage(convert::usage(&u)));
                }
                if self.stopped {
                    self.done = true;
                    return Ok(true);
                }
            }
            // Unknown events are future additions: ignore them.
            _ => {}
        }
        Ok(false)
    }

    /// Called at end of body.
    pub(crate) fn on_eof(&self, partial: bool) -> Result<(), ProviderError> {
        if partial {
            return Err(ProviderError::protocol(VENDOR, "stream ended inside a frame"));
        }
        if !self.stopped {
            return Err(ProviderError::protocol(VENDOR, "stream ended before messageStop"));
        }
        Ok(())
    }
}

struct Driver<S> {
    body: S,
    frames: FrameDecoder,
    decoder: Decoder,
    queue: VecDeque<Result<StreamEvent, ProviderError>>,
    scratch: Vec<StreamEvent>,
    finished: bool,
    cancel: CancellationToken,
    timeout: Duration,
}

impl<S> Driver<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    fn fail(&mut self, e: ProviderError) {
        self.finished = true;
        self.queue.push_back(Err(e));
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
        loop {
            match self.frames.next_frame() {
                Ok(None) => return,
                Ok(Some(frame)) => {
                    let r = self.decoder.on_frame(frame, &mut self.scratch);
                    self.queue.extend(self.scratch.drain(..).map(Ok));
                    match r {
                        Ok(false) => {}
                        Ok(true) => {
                            self.finished = true;
                            return;
                        }
                        Err(e) => return self.fail(e),
                    }
                }
                Err(e) => return self.fail(ProviderError::protocol(VENDOR, e.to_string())),
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
                    let e = crate::http::transport(VENDOR, e, self.timeout);
                    self.fail(e);
                }
                None => {
                    self.finished = true;
                    if let Err(e) = self.decoder.on_eof(self.frames.has_partial()) {
                        self.queue.push_back(Err(e));
                    }
                }
            }
        }
    }
}

/// Wraps a 200 ConverseStream response body as an [`EventStream`].
pub(crate) fn event_stream(
    resp: reqwest::Response,
    start: StreamEvent,
    cancel: CancellationToken,
    timeout: Duration,
) -> EventStream {
    let mut queue = VecDeque::new();
    queue.push_back(Ok(start));
    let driver = Driver {
        body: Box::pin(resp.bytes_stream()),
        frames: FrameDecoder::default(),
        decoder: Decoder::default(),
        queue,
        scratch: Vec::new(),
        finished: false,
        cancel,
        timeout,
    };
    Box::pin(futures::stream::unfold(driver, |mut d| async move { d.next().await.map(|item| (item, d)) }))
}
