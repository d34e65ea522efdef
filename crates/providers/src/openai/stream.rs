//! OpenAI streaming: `data:` chunks to [`StreamEvent`]s. Tool calls are accumulated by
//! `index` (ids are synthesised when a compat server omits them) and ended when the choice's
//! `finish_reason` arrives; the stream must end with `data: [DONE]` or at least a finish.

use std::collections::BTreeMap;

use super::VENDOR;
use super::convert::{finish_reason, usage};
use super::wire::Chunk;
use crate::error::ProviderError;
use crate::event::StreamEvent;
use crate::http::{ErrorResponse, Flow, SseDecoder};
use crate::sse::SseEvent;
use crate::types::FinishReason;

#[derive(Debug, Default)]
pub(super) struct Decoder {
    started: bool,
    /// Tool call slots by `index`: (id, ended).
    calls: BTreeMap<u32, (String, bool)>,
    finished: bool,
}

impl Decoder {
    fn slot(&mut self, index: Option<u32>, id: Option<&str>) -> u32 {
        if let Some(i) = index {
            return i;
        }
        // No index (some compat servers): find by id, else a new slot; no id either: the last.
        if let Some(id) = id {
            if let Some((i, _)) = self.calls.iter().find(|(_, (cid, _))| cid == id) {
                return *i;
            }
            return self.calls.keys().next_back().map_or(0, |k| k + 1);
        }
        self.calls.keys().next_back().copied().unwrap_or(0)
    }

    fn end_calls(&mut self, out: &mut Vec<StreamEvent>) {
        for (id, ended) in self.calls.values_mut() {
            if !*ended {
                *ended = true;
                out.push(StreamEvent::ToolCallEnd { id: id.clone() });
            }
        }
    }
}

impl SseDecoder for Decoder {
    fn on_event(&mut self, ev: SseEvent, out: &mut Vec<StreamEvent>) -> Result<Flow, ProviderError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            if !self.finished {
                return Err(ProviderError::protocol(VENDOR, "[DONE] before any finish_reason"));
            }
            return Ok(Flow::Done);
        }
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| ProviderError::protocol(VENDOR, format!("bad stream chunk: {e}")))?;
        if let Some(err) = chunk.error {
            let body = serde_json::json!({"error": {"message": err.message, "type": err.kind, "code": err.code}});
            let status = match err.kind.as_deref() {
                Some("invalid_request_error") => 400,
                Some("rate_limit_exceeded" | "requests" | "tokens") => 429,
                _ => 500,
            };
            return Err(super::convert::error(ErrorResponse {
                status,
                retry_after: None,
                request_id: None,
                should_retry_header: None,
                body: body.to_string(),
            }));
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start { id: chunk.id.clone(), model: chunk.model.clone() });
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta { text });
            }
            for tc in choice.delta.tool_calls.unwrap_or_default() {
                let slot = self.slot(tc.index, tc.id.as_deref());
                let entry = self
                    .calls
                    .entry(slot)
                    .or_insert_with(|| (tc.id.clone().unwrap_or_else(|| format!("call_{slot}")), false));
                if entry.1 {
                    return Err(ProviderError::protocol(VENDOR, "delta for a finished tool call"));
                }
                let id = entry.0.clone();
                let (name, arguments) = match tc.function {
                    Some(f) => (
                        f.name,
                        match f.arguments {
                            Some(serde_json::Value::String(s)) => s,
                            Some(serde_json::Value::Null) | None => String::new(),
                            Some(v) => v.to_string(),
                        },
                    ),
                    None => (None, String::new()),
                };
                out.push(StreamEvent::ToolCallDelta { id, name, arguments });
            }
            if let Some(raw) = choice.finish_reason {
                self.end_calls(out);
                let mut reason = finish_reason(&raw);
                if reason == FinishReason::Stop && !self.calls.is_empty() {
                    reason = FinishReason::ToolCalls;
                }
                if !self.finished {
                    self.finished = true;
                    out.push(StreamEvent::Finish { reason });
                }
            }
            if let Some(refusal) = choice.delta.refusal.filter(|r| !r.is_empty()) {
                tracing::debug!(len = refusal.len(), "model refusal in stream");
            }
        }
        if let Some(u) = chunk.usage {
            out.push(StreamEvent::Usage(usage(&u)));
        }
        Ok(Flow::Continue)
    }

    fn on_eof(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        if self.finished {
            // Tolerated: some compat servers omit `[DONE]` after the finish chunk.
            Ok(())
        } else {
            Err(ProviderError::protocol(VENDOR, "stream ended before the model finished"))
        }
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
        let mut done = false;
        for e in evs {
            let mut out = Vec::new();
            let flow = d.on_event(e, &mut out)?;
            for o in out {
                acc.push(o)?;
            }
            if flow == Flow::Done {
                done = true;
                break;
            }
        }
        if !done {
            d.on_eof(&mut Vec::new())?;
        }
        acc.finish()
    }

    #[test]
    fn fact_sheet_example_assembles() {
        let s = r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_7","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}

data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":null}],"usage":null}

data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}

data: {"choices":[],"usage":{"prompt_tokens":81,"completion_tokens":17,"total_tokens":98}}

data: [DONE]

"#;
        let r = run(s).unwrap();
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].id, "call_7");
        assert_eq!(r.tool_calls[0].arguments, serde_json::json!({"city": "Paris"}));
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage.input_tokens, 81);
    }

    #[test]
    fn compat_quirks_whole_call_no_index_no_id_stop() {
        let s = r#"data: {"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":"{\"a\":1}"}}]}}]}

data: {"choices":[{"delta":{},"finish_reason":"stop"}]}

"#;
        let r = run(s).unwrap();
        assert_eq!(r.tool_calls[0].id, "call_0");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    }

    #[test]
    fn cut_stream_is_an_error() {
        let s = r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{\"a\""}}]}}]}

"#;
        assert!(run(s).is_err());
    }

    #[test]
    fn mid_stream_error_is_typed() {
        let s = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
        let e = run(s).unwrap_err();
        assert_eq!(e.status(), Some(500));
        assert!(e.is_retryable());
    }
}
