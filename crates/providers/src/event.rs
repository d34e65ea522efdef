//! Stream events and the one shared [`Accumulator`] that assembles a streamed turn.
//!
//! Adapters translate their vendor's stream into [`StreamEvent`]s and nothing more; whether a
//! turn is complete, and which tool calls are whole, is decided here once for every vendor.
//! The rule that matters: a tool call is complete only after its [`StreamEvent::ToolCallEnd`]
//! and only if its arguments parse as JSON; a stream that breaks earlier never yields it.

use std::collections::HashMap;
use std::pin::Pin;

/// Re-exported so callers can consume an [`EventStream`] without depending on `futures`.
pub use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::ProviderError;
use crate::types::{ChatResponse, FinishReason, ToolCall, Usage};

/// One event of a streamed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamEvent {
    /// The vendor's response id and model, when known (sent first, at most once).
    Start {
        /// Response id.
        id: Option<String>,
        /// Model as reported by the vendor.
        model: Option<String>,
    },
    /// A piece of reply text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// A piece of a tool call, identified by the vendor's call id. The first delta for an id
    /// carries the tool name; later ones carry argument fragments (a JSON text in pieces).
    ToolCallDelta {
        /// Call id.
        id: String,
        /// Tool name (first delta only; later ones may repeat it or leave it out).
        name: Option<String>,
        /// The next fragment of the JSON-encoded arguments.
        arguments: String,
    },
    /// The tool call with this id is complete.
    ToolCallEnd {
        /// Call id.
        id: String,
    },
    /// Usage so far; a later `Usage` event replaces an earlier one.
    Usage(Usage),
    /// The model stopped; the last content event of a well-formed stream.
    Finish {
        /// Why.
        reason: FinishReason,
    },
}

impl StreamEvent {
    /// Shorthand for a text delta.
    pub fn text(text: impl Into<String>) -> Self {
        Self::TextDelta { text: text.into() }
    }

    /// Whether this event delivers model output to the caller (text, tool calls, finish).
    /// Retries and fallbacks are allowed only before the first such event.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            Self::TextDelta { .. } | Self::ToolCallDelta { .. } | Self::ToolCallEnd { .. } | Self::Finish { .. }
        )
    }
}

/// A stream of events; an `Err` item ends the stream (nothing follows it).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

#[derive(Debug)]
struct PendingCall {
    id: String,
    name: Option<String>,
    arguments: String,
    done: Option<ToolCall>,
}

/// Assembles a turn from [`StreamEvent`]s.
#[derive(Debug)]
pub struct Accumulator {
    vendor: &'static str,
    id: Option<String>,
    model: Option<String>,
    text: String,
    calls: Vec<PendingCall>,
    by_id: HashMap<String, usize>,
    usage: Usage,
    finish: Option<FinishReason>,
}

impl Default for Accumulator {
    fn default() -> Self {
        Self::new("model")
    }
}

impl Accumulator {
    /// An empty accumulator; `vendor` names the source in errors.
    pub fn new(vendor: &'static str) -> Self {
        Self {
            vendor,
            id: None,
            model: None,
            text: String::new(),
            calls: Vec::new(),
            by_id: HashMap::new(),
            usage: Usage::default(),
            finish: None,
        }
    }

    /// Applies one event.
    ///
    /// # Errors
    /// [`ProviderError::Protocol`] when the event contradicts the stream so far: a delta for a
    /// tool call that already ended, an end for an unknown call, arguments that are not JSON,
    /// a tool call without a name, or content after `Finish`.
    pub fn push(&mut self, event: StreamEvent) -> Result<(), ProviderError> {
        if self.finish.is_some() && event.is_content() {
            return Err(self.err("content after finish"));
        }
        match event {
            StreamEvent::Start { id, model } => {
                self.id = self.id.take().or(id);
                self.model = self.model.take().or(model);
            }
            StreamEvent::TextDelta { text } => self.text.push_str(&text),
            StreamEvent::ToolCallDelta { id, name, arguments } => {
                let idx = match self.by_id.get(&id) {
                    Some(&i) => i,
                    None => {
                        self.calls.push(PendingCall {
                            id: id.clone(),
                            name: None,
                            arguments: String::new(),
                            done: None,
                        });
                        self.by_id.insert(id, self.calls.len() - 1);
                        self.calls.len() - 1
                    }
                };
                let call = &mut self.calls[idx];
                if call.done.is_some() {
                    return Err(Self::err_v(self.vendor, "tool call delta after its end"));
                }
                if call.name.is_none() {
                    call.name = name.filter(|n| !n.is_empty());
                }
                call.arguments.push_str(&arguments);
            }
            StreamEvent::ToolCallEnd { id } => {
                let vendor = self.vendor;
                let Some(&idx) = self.by_id.get(&id) else {
                    return Err(Self::err_v(vendor, "end of an unknown tool call"));
                };
                let call = &mut self.calls[idx];
                if call.done.is_some() {
                    return Ok(());
                }
                let Some(name) = call.name.clone() else {
                    return Err(Self::err_v(vendor, "tool call without a name"));
                };
                let raw = call.arguments.trim();
                let arguments = if raw.is_empty() {
                    serde_json::Value::Object(Default::default())
                } else {
                    serde_json::from_str(raw)
                        .map_err(|e| Self::err_v(vendor, format!("tool call arguments are not JSON: {e}")))?
                };
                call.done = Some(ToolCall { id: call.id.clone(), name, arguments });
            }
            StreamEvent::Usage(u) => self.usage = u,
            StreamEvent::Finish { reason } => self.finish = Some(reason),
        }
        Ok(())
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Tool calls that are complete so far (ended, arguments parsed), in call order.
    pub fn completed_tool_calls(&self) -> Vec<ToolCall> {
        self.calls.iter().filter_map(|c| c.done.clone()).collect()
    }

    /// Whether a `Finish` event arrived.
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// The assembled reply.
    ///
    /// # Errors
    /// [`ProviderError::Protocol`] when the stream was incomplete: no `Finish`, or a tool
    /// call that started but never ended.
    pub fn finish(self) -> Result<ChatResponse, ProviderError> {
        let Some(finish_reason) = self.finish else {
            return Err(Self::err_v(self.vendor, "stream ended before the model finished"));
        };
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for c in self.calls {
            match c.done {
                Some(tc) => tool_calls.push(tc),
                None => {
                    return Err(Self::err_v(self.vendor, format!("tool call {} never completed", c.id)));
                }
            }
        }
        Ok(ChatResponse {
            id: self.id,
            model: self.model,
            text: self.text,
            tool_calls,
            finish_reason,
            usage: self.usage,
        })
    }

    fn err(&self, msg: &str) -> ProviderError {
        Self::err_v(self.vendor, msg)
    }

    fn err_v(vendor: &'static str, msg: impl Into<String>) -> ProviderError {
        ProviderError::protocol(vendor, msg)
    }
}

/// Drains a stream into a [`ChatResponse`].
///
/// # Errors
/// The first error the stream yields, or an accumulator error if the stream is incomplete.
pub async fn collect(mut stream: EventStream, vendor: &'static str) -> Result<ChatResponse, ProviderError> {
    let mut acc = Accumulator::new(vendor);
    while let Some(ev) = stream.next().await {
        acc.push(ev?)?;
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splits `s` at the given fractions (char boundaries), possibly producing empty pieces.
    fn split(s: &str, cuts: &[u8]) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let mut idx: Vec<usize> = cuts.iter().map(|c| (*c as usize * chars.len()) / 255).collect();
        idx.sort_unstable();
        let mut out = Vec::new();
        let mut prev = 0;
        for i in idx.into_iter().chain([chars.len()]) {
            out.push(chars[prev..i].iter().collect());
            prev = i;
        }
        out
    }

    fn events(text: &str, calls: &[(String, serde_json::Value)], cuts: &[u8]) -> Vec<StreamEvent> {
        let mut ev = vec![StreamEvent::Start { id: Some("r1".into()), model: Some("m".into()) }];
        ev.extend(split(text, cuts).into_iter().map(StreamEvent::text));
        for (i, (name, args)) in calls.iter().enumerate() {
            let id = format!("call_{i}");
            let json = args.to_string();
            for (j, piece) in split(&json, cuts).into_iter().enumerate() {
                ev.push(StreamEvent::ToolCallDelta {
                    id: id.clone(),
                    name: (j == 0).then(|| name.clone()),
                    arguments: piece,
                });
            }
            ev.push(StreamEvent::ToolCallEnd { id });
        }
        ev.push(StreamEvent::Usage(Usage { input_tokens: 3, output_tokens: 5, ..Usage::default() }));
        ev.push(StreamEvent::Finish {
            reason: if calls.is_empty() { FinishReason::Stop } else { FinishReason::ToolCalls },
        });
        ev
    }

    fn arb_args() -> impl Strategy<Value = serde_json::Value> {
        proptest::collection::btree_map("[a-z]{1,6}", "[ -~é漢]{0,12}", 0..4).prop_map(|m| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect())
        })
    }

    proptest! {
        #[test]
        fn any_split_reassembles_the_same(
            text in "[ -~é漢\n]{0,40}",
            calls in proptest::collection::vec(("[a-z_]{1,8}", arb_args()), 0..3),
            cuts_a in proptest::collection::vec(any::<u8>(), 0..8),
            cuts_b in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let assemble = |cuts: &[u8]| {
                let mut acc = Accumulator::default();
                for e in events(&text, &calls, cuts) { acc.push(e).unwrap(); }
                acc.finish().unwrap()
            };
            let a = assemble(&cuts_a);
            let b = assemble(&cuts_b);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a.text, &text);
            prop_assert_eq!(a.tool_calls.len(), calls.len());
            for (tc, (name, args)) in a.tool_calls.iter().zip(&calls) {
                prop_assert_eq!(&tc.name, name);
                prop_assert_eq!(&tc.arguments, args);
            }
        }

        #[test]
        fn a_broken_stream_never_yields_a_half_tool_call(
            text in "[ -~]{0,20}",
            calls in proptest::collection::vec(("[a-z_]{1,8}", arb_args()), 1..3),
            cuts in proptest::collection::vec(any::<u8>(), 0..8),
            keep in any::<prop::sample::Index>(),
        ) {
            let all = events(&text, &calls, &cuts);
            // Cut strictly before the Finish event.
            let n = keep.index(all.len() - 1);
            let mut acc = Accumulator::default();
            for e in all[..n].iter().cloned() { acc.push(e).unwrap(); }
            for tc in acc.completed_tool_calls() {
                let idx: usize = tc.id.trim_start_matches("call_").parse().unwrap();
                prop_assert_eq!(&tc.arguments, &calls[idx].1);
                // Its end event must be among the delivered events.
                let ended = all[..n].iter().any(|e| matches!(e, StreamEvent::ToolCallEnd { id } if *id == tc.id));
                prop_assert!(ended);
            }
            prop_assert!(acc.finish().is_err());
        }
    }

    #[test]
    fn bad_arguments_are_an_error_not_a_call() {
        let mut acc = Accumulator::default();
        acc.push(StreamEvent::ToolCallDelta { id: "c".into(), name: Some("f".into()), arguments: "{\"a\":".into() })
            .unwrap();
        assert!(acc.push(StreamEvent::ToolCallEnd { id: "c".into() }).is_err());
        assert!(acc.completed_tool_calls().is_empty());
    }

    #[test]
    fn empty_arguments_mean_empty_object() {
        let mut acc = Accumulator::default();
        acc.push(StreamEvent::ToolCallDelta { id: "c".into(), name: Some("f".into()), arguments: String::new() })
            .unwrap();
        acc.push(StreamEvent::ToolCallEnd { id: "c".into() }).unwrap();
        assert_eq!(acc.completed_tool_calls()[0].arguments, serde_json::json!({}));
    }
}
