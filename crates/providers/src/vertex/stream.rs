//! `streamGenerateContent?alt=sse`: each `data:` event is a whole
//! `GenerateContentResponse` chunk; the stream ends at EOF with no terminator.
//!
//! Text parts become text deltas; function calls arrive whole, so each becomes a
//! delta plus its end at once. `finishReason` and the final usage are on the last
//! chunk. A body that ends before any `finishReason` is a broken stream.

use super::{convert, wire};
use crate::error::ProviderError;
use crate::event::StreamEvent;
use crate::http::{Flow, SseDecoder};
use crate::sse::SseEvent;

/// Per-stream state.
#[derive(Debug)]
pub(crate) struct Decoder {
    vendor: &'static str,
    started: bool,
    key: Option<String>,
    calls: usize,
    finished: bool,
}

impl Decoder {
    pub(crate) fn new(vendor: &'static str) -> Self {
        Self { vendor, started: false, key: None, calls: 0, finished: false }
    }
}

impl SseDecoder for Decoder {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<Flow, ProviderError> {
        if ev.data.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        let chunk: wire::GenerateContentResponse = serde_json::from_str(&ev.data).map_err(|e| {
            ProviderError::protocol(self.vendor, format!("stream chunk is not a GenerateContentResponse: {e}"))
        })?;
        if let Some(err) = &chunk.error {
            return Err(convert::status_error(self.vendor, err.code, err, None, None));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id: chunk.response_id.clone(), model: None });
        }
        let key = self.key.get_or_insert_with(|| convert::response_key(chunk.response_id.as_deref())).clone();
        let mut finish = None;
        if let Some(cand) = chunk.candidates.into_iter().next() {
            let parts = cand.content.map(|c| c.parts).unwrap_or_default();
            let (text, calls) = convert::parts_output(&parts, &key, self.calls);
            if !text.is_empty() {
                out.push(StreamEvent::TextDelta { text });
            }
            for c in calls {
                self.calls += 1;
                out.push(StreamEvent::ToolCallDelta {
                    id: c.id.clone(),
                    name: Some(c.name),
                    arguments: c.arguments.to_string(),
                });
                out.push(StreamEvent::ToolCallEnd { id: c.id });
            }
            finish = cand.finish_reason;
        } else if chunk.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            finish = Some("SAFETY".to_owned());
        }
        if let Some(reason) = finish
            && !self.finished
        {
            self.finished = true;
            out.push(StreamEvent::Finish { reason: convert::finish_reason(&reason, self.calls > 0) });
        }
        if let Some(u) = &chunk.usage_metadata {
            out.push(StreamEvent::Usage(convert::usage(u)));
        }
        Ok(Flow::Continue)
    }

    fn on_eof(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        if self.finished {
            Ok(())
        } else {
            Err(ProviderError::protocol(self.vendor, "stream ended before a finishReason"))
        }
    }
}
