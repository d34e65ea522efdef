//! Anthropic streaming: every SSE event type to [`StreamEvent`]s. `ping` and unknown events
//! are skipped; `error` mid-stream becomes a typed error; `message_delta.usage` is cumulative
//! and merged with the input counts from `message_start`; the stream must end with
//! `message_stop`.

use std::collections::HashMap;

use super::VENDOR;
use super::convert::{finish_reason, merge_usage, status_of, usage};
use super::wire::{BlockDelta, RespBlock, StreamEventWire, WireUsage};
use crate::error::ProviderError;
use crate::event::StreamEvent;
use crate::http::{ErrorResponse, Flow, SseDecoder};
use crate::sse::SseEvent;
use crate::types::FinishReason;

#[derive(Debug, Default)]
pub(super) struct Decoder {
    /// Tool-use blocks by content index: call id.
    tool_blocks: HashMap<u32, String>,
    usage: WireUsage,
    finished: bool,
}

impl SseDecoder for Decoder {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<Flow, ProviderError> {
        let parsed: StreamEventWire = serde_json::from_str(&ev.data)
            .map_err(|e| ProviderError::protocol(VENDOR, format!("bad {} event: {e}", ev.event)))?;
        match parsed {
            StreamEventWire::MessageStart { message } => {
                out.push(StreamEvent::Start { id: message.id, model: message.model });
                merge_usage(&mut self.usage, &message.usage);
                out.push(StreamEvent::Usage(usage(&self.usage)));
            }
            StreamEventWire::ContentBlockStart { index, content_block } => match content_block {
                RespBlock::Text { text } => {
                    if !text.is_empty() {
                        out.push(StreamEvent::TextDelta { text });
                    }
                }
                RespBlock::ToolUse { id, name, input } => {
                    // `input` is `{}` here; the arguments arrive as `input_json_delta`s.
                    let initial = match input {
                        serde_json::Value::Object(m) if !m.is_empty() => serde_json::Value::Object(m).to_string(),
                        _ => String::new(),
                    };
                    self.tool_blocks.insert(index, id.clone());
                    out.push(StreamEvent::ToolCallDelta { id, name: Some(name), arguments: initial });
                }
                RespBlock::Other => {}
            },
            StreamEventWire::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => out.push(StreamEvent::TextDelta { text }),
                BlockDelta::InputJsonDelta { partial_json } => {
                    let Some(id) = self.tool_blocks.get(&index) else {
                        return Err(ProviderError::protocol(
                            VENDOR,
                            "input_json_delta for a block that is not a tool_use",
                        ));
                    };
                    out.push(StreamEvent::ToolCallDelta { id: id.clone(), name: None, arguments: partial_json });
                }
                BlockDelta::Other => {}
            },
            StreamEventWire::ContentBlockStop { index } => {
                if let Some(id) = self.tool_blocks.remove(&index) {
                    out.push(StreamEvent::ToolCallEnd { id });
                }
            }
            StreamEventWire::MessageDelta { delta, usage: u } => {
                merge_usage(&mut self.usage, &u);
                if let Some(reason) = delta.stop_reason
                    && !self.finished
                {
                    self.finished = true;
                    out.push(StreamEvent::Finish { reason: finish_reason(&reason) });
                }
                out.push(StreamEvent::Usage(usage(&self.usage)));
            }
            StreamEventWire::MessageStop => {
                if !self.finished {
                    self.finished = true;
                    out.push(StreamEvent::Finish { reason: FinishReason::Stop });
                }
                return Ok(Flow::Done);
            }
            StreamEventWire::Ping | StreamEventWire::Other => {}
            StreamEventWire::Error { error } => {
                let status = status_of(&error.kind);
                let body =
                    serde_json::json!({"type": "error", "error": {"type": error.kind, "message": error.message}});
                return Err(super::convert::error(ErrorResponse {
                    status,
                    retry_after: None,
                    request_id: None,
                    should_retry_header: None,
                    body: body.to_string(),
                }));
            }
        }
        Ok(Flow::Continue)
    }

    fn on_eof(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        Err(ProviderError::protocol(VENDOR, "stream ended before message_stop"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Accumulator;
    use crate::sse::SseParser;

    fn run(text: &str) -> Result<crate::ChatResponse, ProviderError> {
        let mut p = SseParser::new();
        let mut evs = Vec::new();
        p.feed(text.as_bytes(), &mut evs).unwrap();
        let mut d = Decoder::default();
        let mut acc = Accumulator::new(VENDOR);
        for e in evs {
            let mut out = Vec::new();
            let flow = d.on_event(e, &mut out)?;
            for o in out {
                acc.push(o)?;
            }
            if flow == Flow::Done {
                return acc.finish();
            }
        }
        d.on_eof(&mut Vec::new())?;
        acc.finish()
    }

    const EXAMPLE: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01X","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":402,"output_tokens":1,"cache_read_input_tokens":100}}}

event: ping
data: {"type": "ping"}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":38}}

event: message_stop
data: {"type":"message_stop"}

"#;

    #[test]
    fn fact_sheet_example_assembles() {
        let r = run(EXAMPLE).unwrap();
        assert_eq!(r.text, "Checking.");
        assert_eq!(r.tool_calls[0].arguments, serde_json::json!({"city": "Paris"}));
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage.input_tokens, 502);
        assert_eq!(r.usage.cache_read_tokens, 100);
        assert_eq!(r.usage.output_tokens, 38);
        assert_eq!(r.id.as_deref(), Some("msg_01X"));
    }

    #[test]
    fn cut_before_block_stop_never_yields_the_call() {
        let cut = EXAMPLE
            .split("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}")
            .next()
            .unwrap();
        assert!(run(cut).is_err());
    }

    #[test]
    fn mid_stream_overloaded_is_retryable_529() {
        let s = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let e = run(s).unwrap_err();
        assert_eq!(e.status(), Some(529));
        assert!(e.is_retryable());
    }
}
