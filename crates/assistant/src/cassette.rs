//! Cassettes: what each turn of a conversation sent to and got from the LLMs and the back-end
//! tools, with what the turn did ([`Observed`]), so the conversation can be re-run later against
//! another version of the assistant with the same outside world.
//!
//! A [`Tape`] is the one piece that sits between the assistant and the outside: it wraps every
//! model of the assistant's chains ([`Tape::wrap_model`]) and its back end
//! ([`Tape::wrap_backend`]). When recording, calls go through and are logged per conversation;
//! at the end of a turn the caller takes the log ([`Tape::finish_turn`]) and stores it. When
//! replaying, the calls of a recorded conversation are loaded first ([`Tape::load`]) and a call
//! that matches one of them is answered from it without leaving the process; a call that does
//! not is a *miss*: an LLM miss fails (or goes to the real model when replaying `live`), a tool
//! miss runs against the back end. Either way it is logged with its [`Source`], so the replay
//! report can say exactly what was served and what was not.
//!
//! It must not know where cassettes are stored or how a replay is reported. Key design decision:
//! requests are matched after normalisation ([`Tape::normalise_request`]: vendor metadata
//! dropped, whitespace collapsed, personal data replaced by the guard's typed placeholders), and
//! the same normalisation redacts what is stored, so a stored cassette holds no more personal
//! data than the conversation's own stored messages and a replayed request still matches it.

use crate::backend::{ToolBackend, ToolCall, ToolError};
use crate::observed::Observed;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use switchboard_guard::Detector;
use switchboard_providers::{
    BoxChatModel, CancellationToken, Capabilities, ChatModel, ChatRequest, ChatResponse, EventStream, ModelId,
    ProviderError, StreamEvent,
};

/// Version of the cassette format written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Where the answer to a call came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The real model or back end, while recording.
    Recorded,
    /// Served from the cassette (replay, the request matched).
    Cassette,
    /// Replay, no recorded call matched; the real model or back end answered.
    Live,
    /// Replay, no recorded call matched and the call failed (an LLM call outside `live` mode).
    Miss,
}

impl Source {
    /// A replayed call that did not match the cassette.
    pub fn is_miss(self) -> bool {
        matches!(self, Self::Live | Self::Miss)
    }
}

/// One LLM call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// `provider/model`.
    pub model: String,
    /// The request, normalised ([`Tape::normalise_request`]).
    pub request: Value,
    /// The reply, when the call succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ChatResponse>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the answer came from.
    pub source: Source,
}

/// One back-end tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolUse {
    /// Tool name.
    pub name: String,
    /// Arguments (normalised like requests).
    pub args: Value,
    /// The result, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolError>,
    /// Where the answer came from.
    pub source: Source,
}

/// What started a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnInput {
    /// A customer's message (as stored: redacted by the input guard).
    User(String),
    /// A human's decision on the pending approval.
    Approve(bool),
}

impl TurnInput {
    /// `user: ...` or `approve: true|false`, as reports show it.
    pub fn label(&self) -> String {
        match self {
            Self::User(t) => format!("user: {t}"),
            Self::Approve(a) => format!("approve: {a}"),
        }
    }
}

/// One turn of a cassette.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CassetteTurn {
    /// What started it.
    pub input: TurnInput,
    /// The LLM calls, in order.
    #[serde(default)]
    pub llm: Vec<LlmCall>,
    /// The tool calls, in order.
    #[serde(default)]
    pub tools: Vec<ToolUse>,
    /// What the turn did.
    pub observed: Observed,
}

/// A recorded conversation: one line of an exported `.jsonl` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// The recorded conversation's id.
    pub conversation_id: String,
    /// The assistant it talked to.
    pub assistant: String,
    /// Its customer, when known.
    #[serde(default)]
    pub customer: Option<String>,
    /// Its turns, in order.
    pub turns: Vec<CassetteTurn>,
}

/// The calls of one turn so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnLog {
    /// LLM calls.
    pub llm: Vec<LlmCall>,
    /// Tool calls.
    pub tools: Vec<ToolUse>,
}

/// Recording or replaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Calls go through and are logged.
    Record,
    /// Calls are served from loaded cassettes; `live`: an LLM miss goes to the real model.
    Replay {
        /// Let LLM misses through.
        live: bool,
    },
}

/// The calls of a loaded cassette, each usable once before it is reused.
#[derive(Debug, Default)]
struct Reel {
    llm: Vec<(LlmCall, bool)>,
    tools: Vec<(ToolUse, bool)>,
    log: TurnLog,
}

/// Records or replays the LLM and tool calls of conversations (see the module docs).
#[derive(Debug)]
pub struct Tape {
    mode: Mode,
    /// Replay: the models the cassettes have calls to (`provider/model`).
    models: BTreeSet<String>,
    detector: Detector,
    reels: Mutex<HashMap<String, Reel>>,
}

/// The first unused entry that matches, else the first that matches at all (a request asked
/// again within the conversation gets the same answer); marks it used.
fn pick<T: Clone>(entries: &mut [(T, bool)], matches: impl Fn(&T) -> bool) -> Option<T> {
    let i = entries
        .iter()
        .position(|(e, used)| !used && matches(e))
        .or_else(|| entries.iter().position(|(e, _)| matches(e)))?;
    entries[i].1 = true;
    Some(entries[i].0.clone())
}

impl Tape {
    /// A tape that records.
    pub fn recorder() -> Arc<Self> {
        Arc::new(Self::new(Mode::Record, BTreeSet::new()))
    }

    /// A tape that replays `cassettes` (each is [`Self::load`]ed when its conversation starts).
    /// The models they called are available to the replayed assistant whether or not their
    /// key is set; other models only with `live` and their key (a recording made offline
    /// replays offline).
    pub fn player(live: bool, cassettes: &[Cassette]) -> Arc<Self> {
        let models = cassettes.iter().flat_map(|c| &c.turns).flat_map(|t| &t.llm).map(|l| l.model.clone()).collect();
        Arc::new(Self::new(Mode::Replay { live }, models))
    }

    fn new(mode: Mode, models: BTreeSet<String>) -> Self {
        Self { mode, models, detector: Detector::default(), reels: Mutex::new(HashMap::new()) }
    }

    /// Recording or replaying.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the model `name` (`provider/model`) is to be built even when its API key is
    /// missing: a replay answers for the models its cassettes called.
    pub fn serves_model(&self, name: &str) -> bool {
        matches!(self.mode, Mode::Replay { .. }) && self.models.contains(name)
    }

    fn with_reel<R>(&self, conversation: &str, f: impl FnOnce(&mut Reel) -> R) -> R {
        let mut reels = self.reels.lock().unwrap_or_else(PoisonError::into_inner);
        f(reels.entry(conversation.to_string()).or_default())
    }

    /// Loads the calls of `cassette` to serve the conversation `conversation` (replay).
    pub fn load(&self, conversation: &str, cassette: &Cassette) {
        let mut reel = Reel::default();
        for t in &cassette.turns {
            reel.llm.extend(t.llm.iter().filter(|c| c.source != Source::Miss).map(|c| (c.clone(), false)));
            reel.tools.extend(t.tools.iter().map(|c| (c.clone(), false)));
        }
        self.reels.lock().unwrap_or_else(PoisonError::into_inner).insert(conversation.to_string(), reel);
    }

    /// Takes the calls logged for `conversation` since the last take.
    pub fn take(&self, conversation: &str) -> TurnLog {
        let mut reels = self.reels.lock().unwrap_or_else(PoisonError::into_inner);
        if self.mode == Mode::Record {
            // Recording keeps nothing between turns: the conversation's entry leaves with its log
            // (or every conversation ever recorded would stay in memory).
            return reels.remove(conversation).map(|r| r.log).unwrap_or_default();
        }
        reels.get_mut(conversation).map(|r| std::mem::take(&mut r.log)).unwrap_or_default()
    }

    /// Drops everything kept for `conversation`.
    pub fn forget(&self, conversation: &str) {
        self.reels.lock().unwrap_or_else(PoisonError::into_inner).remove(conversation);
    }

    /// Ends a turn: its logged calls and what it did (redacted like the calls).
    pub fn finish_turn(
        &self,
        conversation: &str,
        input: TurnInput,
        before: &Value,
        after: &Value,
        interrupts: &[Value],
        latency: Duration,
    ) -> CassetteTurn {
        let log = self.take(conversation);
        let observed = self.redact_observed(Observed::from_states(before, after, interrupts, latency));
        CassetteTurn { input, llm: log.llm, tools: log.tools, observed }
    }

    /// `observed` with personal data replaced by typed placeholders, as cassettes store it.
    pub fn redact_observed(&self, observed: Observed) -> Observed {
        self.scrubbed(&observed)
    }

    /// Normalises a value for matching and storage: whitespace runs collapsed, null fields
    /// dropped, personal data replaced by the guard's typed placeholders.
    pub fn scrub(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
                let found = self.detector.detect(&collapsed);
                *s = if found.is_empty() {
                    collapsed
                } else {
                    switchboard_guard::redact::redact_numbered(&collapsed, &found)
                };
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.scrub(i)),
            Value::Object(map) => {
                map.retain(|_, x| !x.is_null());
                map.values_mut().for_each(|x| self.scrub(x));
            }
            _ => {}
        }
    }

    /// The request as matched and stored: everything the model sees (system prompt, messages,
    /// tools, tool choice, output format, sampling), without the vendor metadata, normalised by
    /// [`Self::scrub`].
    pub fn normalise_request(&self, req: &ChatRequest) -> Value {
        let mut v = serde_json::to_value(req).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("extra");
        }
        self.scrub(&mut v);
        v
    }

    fn scrubbed<T: Serialize + serde::de::DeserializeOwned + Clone>(&self, t: &T) -> T {
        let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
        self.scrub(&mut v);
        serde_json::from_value(v).unwrap_or_else(|_| t.clone())
    }

    /// `model` (named `provider/model`) behind this tape.
    pub fn wrap_model(self: &Arc<Self>, name: &str, model: BoxChatModel) -> BoxChatModel {
        Arc::new(TapedModel { inner: model, name: name.to_string(), tape: self.clone() })
    }

    /// `backend` behind this tape.
    pub fn wrap_backend(self: &Arc<Self>, backend: Arc<dyn ToolBackend>) -> Arc<dyn ToolBackend> {
        Arc::new(TapedBackend { inner: backend, tape: self.clone() })
    }

    async fn chat(
        &self,
        model: &TapedModel,
        req: ChatRequest,
        cancel: CancellationToken,
    ) -> Result<ChatResponse, ProviderError> {
        let conversation = req.metadata.conversation.clone().unwrap_or_default();
        let request = self.normalise_request(&req);
        let served = match self.mode {
            Mode::Record => None,
            Mode::Replay { .. } => {
                self.with_reel(&conversation, |r| pick(&mut r.llm, |c| c.model == model.name && c.request == request))
            }
        };
        if let Some(hit) = served {
            let result = match (&hit.response, &hit.error) {
                (Some(resp), _) => Ok(resp.clone()),
                (None, e) => Err(recorded_error(e.as_deref().unwrap_or("failed"))),
            };
            let call = LlmCall { source: Source::Cassette, ..hit };
            self.with_reel(&conversation, |r| r.log.llm.push(call));
            return result;
        }
        let (source, result) = match self.mode {
            Mode::Record => (Source::Recorded, model.inner.chat(req, cancel).await),
            Mode::Replay { live: true } => (Source::Live, model.inner.chat(req, cancel).await),
            Mode::Replay { live: false } => (
                Source::Miss,
                Err(ProviderError::Api {
                    vendor: "cassette",
                    status: 404,
                    kind: "cassette_miss".into(),
                    message: format!("no recorded call to {} matches this request (replay without --live)", model.name),
                    retryable: false,
                    retry_after: None,
                    request_id: None,
                }),
            ),
        };
        let call = LlmCall {
            model: model.name.clone(),
            request,
            response: result.as_ref().ok().map(|r| self.scrubbed(r)),
            error: result.as_ref().err().map(ToString::to_string),
            source,
        };
        self.with_reel(&conversation, |r| r.log.llm.push(call));
        result
    }

    fn tool(&self, inner: &dyn ToolBackend, call: &ToolCall) -> Result<Value, ToolError> {
        let conversation = call.conversation_id.clone().unwrap_or_default();
        let mut args = call.args.clone();
        self.scrub(&mut args);
        let served = match self.mode {
            Mode::Record => None,
            Mode::Replay { .. } => {
                self.with_reel(&conversation, |r| pick(&mut r.tools, |t| t.name == call.name && t.args == args))
            }
        };
        if let Some(hit) = served {
            let result = match (&hit.result, &hit.error) {
                (_, Some(e)) => Err(e.clone()),
                (Some(v), None) => Ok(v.clone()),
                (None, None) => Ok(Value::Null),
            };
            self.with_reel(&conversation, |r| r.log.tools.push(ToolUse { source: Source::Cassette, ..hit }));
            return result;
        }
        let result = inner.call(call);
        let source = if self.mode == Mode::Record { Source::Recorded } else { Source::Live };
        let used = ToolUse {
            name: call.name.clone(),
            args,
            result: result.as_ref().ok().map(|v| self.scrubbed(v)),
            error: result.as_ref().err().cloned(),
            source,
        };
        self.with_reel(&conversation, |r| r.log.tools.push(used));
        result
    }
}

fn recorded_error(message: &str) -> ProviderError {
    ProviderError::Api {
        vendor: "cassette",
        status: 502,
        kind: "recorded_error".into(),
        message: message.to_string(),
        retryable: false,
        retry_after: None,
        request_id: None,
    }
}

/// A model behind a [`Tape`].
struct TapedModel {
    inner: BoxChatModel,
    name: String,
    tape: Arc<Tape>,
}

impl ChatModel for TapedModel {
    fn id(&self) -> &ModelId {
        self.inner.id()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn chat(&self, req: ChatRequest, cancel: CancellationToken) -> Result<ChatResponse, ProviderError> {
        self.tape.chat(self, req, cancel).await
    }

    /// A taped stream is the complete reply replayed as events: what is recorded and served is
    /// the whole reply, so the stream has it in one piece per part.
    async fn stream(&self, req: ChatRequest, cancel: CancellationToken) -> Result<EventStream, ProviderError> {
        let r = self.tape.chat(self, req, cancel).await?;
        Ok(Box::pin(futures::stream::iter(response_events(r).into_iter().map(Ok))))
    }
}

/// A complete reply as the events of a stream that assembles to it.
fn response_events(r: ChatResponse) -> Vec<StreamEvent> {
    let mut events = vec![StreamEvent::Start { id: r.id, model: r.model }];
    if !r.text.is_empty() {
        events.push(StreamEvent::TextDelta { text: r.text });
    }
    for c in r.tool_calls {
        events.push(StreamEvent::ToolCallDelta {
            id: c.id.clone(),
            name: Some(c.name),
            arguments: c.arguments.to_string(),
        });
        events.push(StreamEvent::ToolCallEnd { id: c.id });
    }
    events.push(StreamEvent::Usage(r.usage));
    events.push(StreamEvent::Finish { reason: r.finish_reason });
    events
}

/// A back end behind a [`Tape`].
struct TapedBackend {
    inner: Arc<dyn ToolBackend>,
    tape: Arc<Tape>,
}

impl ToolBackend for TapedBackend {
    fn call(&self, call: &ToolCall) -> Result<Value, ToolError> {
        self.tape.tool(self.inner.as_ref(), call)
    }
    fn tool_names(&self) -> Vec<String> {
        self.inner.tool_names()
    }
}

/// The customer's newest message among those the turn added (its content as stored: redacted).
fn new_user_text(before: &Value, after: &Value) -> Option<String> {
    let len = |s: &Value| s["messages"].as_array().map_or(0, Vec::len);
    let messages = after["messages"].as_array()?;
    messages.get(len(before)..)?.iter().rev().find(|m| m["role"] == "user")?["content"].as_str().map(str::to_string)
}

impl TurnInput {
    /// What started a turn, from the engine input it processed and the state around it: a
    /// customer's message, or a decision on an approval; `None` for other turns (desk actions).
    pub fn of_run(input: &switchboard_engine::Input, before: &Value, after: &Value) -> Option<Self> {
        match input {
            switchboard_engine::Input::Resume(v) if v["approve"].is_boolean() => {
                v["approve"].as_bool().map(Self::Approve)
            }
            switchboard_engine::Input::Message(_) | switchboard_engine::Input::Resume(_) => {
                new_user_text(before, after).map(Self::User)
            }
            switchboard_engine::Input::Continue => None,
        }
    }
}

impl switchboard_server::TurnRecorder for Tape {
    fn record(
        &self,
        conversation: &str,
        input: &switchboard_engine::Input,
        before: &Value,
        after: &Value,
        interrupts: &[Value],
        latency: Duration,
    ) -> Option<Value> {
        let Some(input) = TurnInput::of_run(input, before, after) else {
            self.take(conversation);
            return None;
        };
        serde_json::to_value(self.finish_turn(conversation, input, before, after, interrupts, latency)).ok()
    }

    fn discard(&self, conversation: &str) {
        self.take(conversation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tape_with(calls: Vec<ToolUse>) -> Arc<Tape> {
        let tape = Tape::player(false, &[]);
        let turn = CassetteTurn {
            input: TurnInput::User("hi".into()),
            llm: vec![],
            tools: calls,
            observed: Observed::default(),
        };
        let c = Cassette {
            version: FORMAT_VERSION,
            conversation_id: "c".into(),
            assistant: "a".into(),
            customer: None,
            turns: vec![turn],
        };
        tape.load("c", &c);
        tape
    }

    fn use_of(name: &str, args: Value, result: Value) -> ToolUse {
        ToolUse { name: name.into(), args, result: Some(result), error: None, source: Source::Recorded }
    }

    #[test]
    fn normalisation_drops_metadata_and_whitespace_and_redacts() {
        let tape = Tape::recorder();
        let mut a = ChatRequest::user("my  email is jane.doe@example.com\n please");
        a.metadata.conversation = Some("c1".into());
        let mut b = ChatRequest::user("my email is jane.doe@example.com please");
        b.metadata.conversation = Some("c2".into());
        let (na, nb) = (tape.normalise_request(&a), tape.normalise_request(&b));
        assert_eq!(na, nb);
        assert!(!na.to_string().contains("jane.doe"), "{na}");
        assert!(na.get("metadata").is_none());
        let c = ChatRequest::user("my email is someone.else@example.com, please");
        assert_ne!(tape.normalise_request(&c), na);
    }

    #[test]
    fn matching_tool_calls_are_served_once_each_in_order_then_reused() {
        let tape = tape_with(vec![
            use_of("get_card_status", json!({"last4": "4242"}), json!({"status": "active"})),
            use_of("get_card_status", json!({"last4": "4242"}), json!({"status": "frozen"})),
        ]);
        let live = crate::FakeExchange::seeded();
        let call = |args: Value| ToolCall {
            name: "get_card_status".into(),
            customer_id: "cust_001".into(),
            args,
            idempotency_key: None,
            conversation_id: Some("c".into()),
        };
        let backend = tape.wrap_backend(Arc::new(live));
        assert_eq!(backend.call(&call(json!({"last4": "4242"}))).unwrap(), json!({"status": "active"}));
        assert_eq!(backend.call(&call(json!({"last4": "4242"}))).unwrap(), json!({"status": "frozen"}));
        assert_eq!(backend.call(&call(json!({"last4": "4242"}))).unwrap(), json!({"status": "active"}));
        // Other arguments: a miss, run against the back end.
        let other = backend.call(&call(json!({"last4": "0000"})));
        let log = tape.take("c");
        assert_eq!(
            log.tools.iter().map(|t| t.source).collect::<Vec<_>>(),
            [Source::Cassette, Source::Cassette, Source::Cassette, Source::Live]
        );
        assert_eq!(log.tools[3].error.as_ref(), other.as_ref().err());
    }

    #[tokio::test]
    async fn an_llm_miss_fails_without_live_and_is_logged() {
        struct Never(ModelId);
        impl ChatModel for Never {
            fn id(&self) -> &ModelId {
                &self.0
            }
            async fn chat(&self, _: ChatRequest, _: CancellationToken) -> Result<ChatResponse, ProviderError> {
                panic!("a replay without --live must not call the model")
            }
            async fn stream(&self, _: ChatRequest, _: CancellationToken) -> Result<EventStream, ProviderError> {
                panic!("a replay without --live must not call the model")
            }
        }
        let tape = Tape::player(false, &[]);
        let model = tape.wrap_model("p/m", Arc::new(Never(ModelId::new("p", "m"))));
        let mut req = ChatRequest::user("hello");
        req.metadata.conversation = Some("c".into());
        let e = model.chat(req, CancellationToken::new()).await.unwrap_err();
        assert!(e.to_string().contains("cassette_miss"), "{e}");
        let log = tape.take("c");
        assert_eq!(log.llm.len(), 1);
        assert_eq!(log.llm[0].source, Source::Miss);
    }

    #[test]
    fn turn_inputs_of_runs() {
        let before = json!({"messages": [{"role": "user", "content": "a"}]});
        let after = json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "ok"}]});
        let msg = switchboard_engine::Input::Message(Default::default());
        assert_eq!(TurnInput::of_run(&msg, &before, &after), Some(TurnInput::User("b".into())));
        let ap = switchboard_engine::Input::Resume(json!({"approve": false, "by": "x"}));
        assert_eq!(TurnInput::of_run(&ap, &before, &after), Some(TurnInput::Approve(false)));
        assert_eq!(TurnInput::of_run(&msg, &after, &after), None);
    }
}
