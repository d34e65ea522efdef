//! Running a turn and recording it: the run's record, its events (kept in memory while the run
//! is in flight, fanned out live, and written with its result in one transaction at its end), its
//! result, and the conversation's status.
//!
//! Key design decisions: a turn runs in a task of its own, not in the request, so a client that
//! disconnects or times out does not stop it. Its events are numbered from 1 and appended to an
//! in-memory log ([`Live`]) that every stream of the run reads from its own position, so a client
//! that reconnects with `Last-Event-ID` gets the rest without a gap or a duplicate. The log is
//! written to the store once, with the run's result, in one transaction (not one commit per event);
//! the terminal event (`result` or `error`) is published, and the JSON response sent, only after
//! that commit, and the run leaves the live table only after it, so a stream that does not find
//! the run live finds all of its events stored.

use crate::error::ApiError;
use crate::state::{AppState, TurnRecorder, lock, now_ms};
use axum::response::sse;
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Borrow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchboard_engine::{Input, InterruptInfo, RunOptions, RunOutcome};
use switchboard_store::records::{ConversationRecord, EventRecord, RunEnd, RunRecord};
use tokio::sync::{broadcast, oneshot, watch};

/// Names of the events that end a run's stream.
pub(crate) const TERMINAL: [&str; 2] = ["result", "error"];

/// The event log of a run in flight: every event so far (seq 1, 2, ...) and a signal that moves
/// with the last seq. Readers keep their own position, so a slow reader never loses events.
pub(crate) struct Live {
    events: Mutex<Vec<Arc<EventRecord>>>,
    last: watch::Sender<u64>,
}

impl Live {
    fn new() -> Self {
        Self { events: Mutex::new(Vec::new()), last: watch::Sender::new(0) }
    }

    /// Appends the next event.
    fn push(&self, event: String, data: String) -> Arc<EventRecord> {
        let mut events = lock(&self.events);
        let e = Arc::new(EventRecord { seq: events.len() as u64 + 1, event, data });
        events.push(e.clone());
        drop(events);
        self.last.send_replace(e.seq);
        e
    }

    /// The events after `seq`.
    fn after(&self, seq: u64) -> Vec<Arc<EventRecord>> {
        let events = lock(&self.events);
        events.get(seq.min(events.len() as u64) as usize..).map(<[_]>::to_vec).unwrap_or_default()
    }
}

/// The result of a turn, as returned by the messages and resume endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnResult {
    /// The run.
    pub run_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// `completed`, `interrupted`, `cancelled`, `superseded` or `rolled_back`.
    pub status: String,
    /// The conversation's latest checkpoint.
    pub checkpoint_id: Option<u64>,
    /// The last message of the conversation when the assistant wrote it.
    pub reply: Option<Value>,
    /// Pending interrupts (when interrupted).
    pub interrupts: Vec<InterruptInfo>,
    /// Supersteps taken.
    pub steps: u32,
    /// How long the engine took, from the start call to the run's outcome (server-side).
    #[serde(skip)]
    pub engine_time: Duration,
}

impl TurnResult {
    pub(crate) fn from_outcome(o: &RunOutcome) -> Self {
        let reply = o
            .state
            .get_array("messages")
            .last()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
            .cloned();
        Self {
            run_id: o.run_id.clone(),
            conversation_id: o.conversation_id.clone(),
            status: o.status.as_str().to_string(),
            checkpoint_id: o.checkpoint_id,
            reply,
            interrupts: o.interrupts.clone(),
            steps: o.steps,
            engine_time: Duration::ZERO,
        }
    }
}

/// A turn that started.
pub struct Started {
    /// Its run id.
    pub run_id: String,
    /// Its result, once recorded.
    pub result: oneshot::Receiver<Result<TurnResult, ApiError>>,
}

pub(crate) fn conversation_status(status: &str) -> &'static str {
    match status {
        "interrupted" => "interrupted",
        "failed" => "failed",
        _ => "idle",
    }
}

/// An engine event as a stored event's name and JSON data (without the engine's own seq).
pub(crate) fn event_parts(ev: &switchboard_engine::Event) -> (String, String) {
    let mut v = serde_json::to_value(ev).unwrap_or(Value::Null);
    let name = v.get("event").and_then(Value::as_str).unwrap_or("event").to_string();
    if let Some(o) = v.as_object_mut() {
        o.remove("seq");
    }
    (name, v.to_string())
}

/// Starts a turn of a conversation (already checked to belong to the caller's tenant), recorded
/// like the messages endpoint records it: run record, persisted events, result.
///
/// # Errors
/// Engine refusals (busy, shutting down) and store failures.
pub async fn start(state: &AppState, conv: &ConversationRecord, input: Input, kind: &str) -> Result<Started, ApiError> {
    start_keyed(state, conv, input, kind, None).await
}

/// [`start`] for a request that claimed an idempotency key: with replicas, the key is linked to
/// the run in the transaction that enqueues it (in-process, the caller records the link).
///
/// # Errors
/// As [`start`].
pub async fn start_keyed(
    state: &AppState,
    conv: &ConversationRecord,
    input: Input,
    kind: &str,
    idempotency_key: Option<&str>,
) -> Result<Started, ApiError> {
    let inner = &state.inner;
    if let Some(d) = &inner.dist {
        // Replicas: the turn goes through the shared queue; any replica's worker runs it.
        if inner.assistants.get(&conv.assistant).is_none() {
            return Err(ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)));
        }
        return crate::dist::enqueue(state, d, conv, input, kind, idempotency_key).await;
    }
    let assistant = inner
        .assistants
        .get(&conv.assistant)
        .ok_or_else(|| ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)))?
        .clone();
    let opts = RunOptions { customer_id: conv.customer_id.clone(), ..RunOptions::default() };
    // Recording: the state before the turn and its input, for the cassette written at its end.
    let recording = match inner.assistants.recorder(&conv.assistant) {
        Some(r) => {
            let before = assistant.engine.state(&conv.id).await.map(|s| s.to_json()).unwrap_or(Value::Null);
            Some((r.clone(), before, input.clone()))
        }
        None => None,
    };
    let t0 = Instant::now();
    let handle = assistant.engine.start(&conv.id, input, opts).await?;
    let events = handle.subscribe();
    let run_id = handle.run_id().to_string();
    // The run's outcome and the engine's own time, measured where the run ends.
    let wait = tokio::spawn(async move {
        let r = handle.wait().await;
        (r, t0.elapsed())
    });
    let live = Arc::new(Live::new());
    // Live before it is recorded: whoever finds the run's record finds its events.
    lock(&inner.live).insert(run_id.clone(), live.clone());
    let now = now_ms();
    let rec = RunRecord {
        id: run_id.clone(),
        tenant: conv.tenant.clone(),
        conversation_id: conv.id.clone(),
        kind: kind.to_string(),
        status: "running".into(),
        result: None,
        error: None,
        created_at_ms: now,
        finished_at_ms: None,
    };
    if let Err(e) = inner.records.start_run(&rec).await {
        // Unrecorded runs must not go on: nobody could follow or cancel them.
        let _ = assistant.engine.cancel(&run_id);
        lock(&inner.live).remove(&run_id);
        return Err(e.into());
    }
    let (done_tx, done_rx) = oneshot::channel();
    let st = state.clone();
    let rid = run_id.clone();
    let conv_id = conv.id.clone();
    let cassette_of = (conv.tenant.clone(), conv.assistant.clone(), conv.customer_id.clone());
    inner.tasks.spawn(async move {
        if let Some(mut rx) = events {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let (name, data) = event_parts(&ev);
                        live.push(name, data);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(run_id = %rid, skipped = n, "run events lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        let (outcome, engine_time) = match wait.await {
            Ok((r, t)) => (r.map_err(ApiError::from), t),
            Err(_) => (Err(ApiError::Internal("run task failed".into())), t0.elapsed()),
        };
        if let Some((recorder, before, input)) = recording {
            record_turn(&st, recorder.as_ref(), cassette_of, &conv_id, (&input, &before), &outcome, engine_time).await;
        }
        let result = outcome.map(|o| TurnResult { engine_time, ..TurnResult::from_outcome(&o) });
        let (status, result_json, error) = match &result {
            Ok(r) => (r.status.clone(), serde_json::to_value(r).ok(), None),
            Err(e) => ("failed".to_string(), None, Some(e.body())),
        };
        let (terminal, data) = match (&result_json, &error) {
            (Some(r), _) => ("result", r.to_string()),
            (None, Some(e)) => ("error", e.to_string()),
            _ => ("error", ApiError::Internal(String::new()).body().to_string()),
        };
        // A failed turn leaves the conversation where it was: still waiting for a human if it was.
        let conv_status = match status.as_str() {
            "failed" if assistant.engine.pending_interrupts(&conv_id).await.is_ok_and(|i| !i.is_empty()) => {
                "interrupted"
            }
            s => conversation_status(s),
        };
        let mut events = live.after(0);
        let last = Arc::new(EventRecord { seq: events.len() as u64 + 1, event: terminal.into(), data: data.clone() });
        events.push(last);
        let end = RunEnd {
            run_id: rid.clone(),
            status: status.clone(),
            result: result_json,
            error: error.as_ref().map(|e| e["error"]["message"].as_str().unwrap_or("").to_string()),
            finished_at_ms: now_ms(),
            events,
            conversation_id: conv_id,
            conversation_status: conv_status.to_string(),
        };
        if let Err(e) = st.inner.records.finish_run(end).await {
            tracing::warn!(error = %e, run_id = %rid, "could not record a run's end and events");
        }
        // Published only now that it is stored: a client that saw the end can replay everything.
        live.push(terminal.into(), data);
        lock(&st.inner.live).remove(&rid);
        let _ = done_tx.send(result);
    });
    Ok(Started { run_id, result: done_rx })
}

/// Stores the cassette turn of a finished run, when the recorder makes one (in process, and by
/// the queue workers of replicas).
pub(crate) async fn record_turn<O: Borrow<RunOutcome>>(
    st: &AppState,
    recorder: &dyn TurnRecorder,
    (tenant, assistant, customer_id): (String, String, Option<String>),
    conversation: &str,
    (input, before): (&Input, &Value),
    outcome: &Result<O, ApiError>,
    latency: Duration,
) {
    let Ok(o): Result<&RunOutcome, _> = outcome.as_ref().map(|o| o.borrow()) else {
        recorder.discard(conversation);
        return;
    };
    let interrupts: Vec<Value> = o.interrupts.iter().map(|i| i.payload.clone()).collect();
    if let Some(turn) = recorder.record(conversation, input, before, &o.state.to_json(), &interrupts, latency) {
        st.store_cassette_turn((tenant.as_str(), conversation), &assistant, customer_id.as_deref(), turn).await;
    }
}

/// Parses a `Last-Event-ID` (`<run_id>:<seq>`, or a bare `<seq>`).
pub(crate) fn parse_event_id(s: &str) -> Option<(Option<&str>, u64)> {
    match s.rsplit_once(':') {
        Some((run, seq)) => seq.trim().parse().ok().map(|n| (Some(run.trim()), n)),
        None => s.trim().parse().ok().map(|n| (None, n)),
    }
}

/// Where a stream reads: the run's live log, or (once the run has ended) the store.
struct Cursor {
    state: AppState,
    run_id: String,
    last: u64,
    pending: VecDeque<Arc<EventRecord>>,
    live: Option<(Arc<Live>, watch::Receiver<u64>)>,
    started: bool,
    ended: bool,
}

impl Cursor {
    /// The next event, or `None` at the end of the run (or of the server).
    async fn next(&mut self) -> Option<Arc<EventRecord>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.last = e.seq;
                if TERMINAL.contains(&e.event.as_str()) {
                    self.ended = true;
                    self.pending.clear();
                }
                return Some(e);
            }
            if self.ended {
                return None;
            }
            if !self.started {
                self.started = true;
                let live = lock(&self.state.inner.live).get(&self.run_id).cloned();
                match live {
                    Some(l) => {
                        let rx = l.last.subscribe();
                        self.live = Some((l, rx));
                    }
                    None => {
                        // Not in flight here: everything it will ever have is stored.
                        self.ended = true;
                        let stored = self.state.inner.records.events_after(&self.run_id, self.last).await;
                        self.pending.extend(stored.unwrap_or_default().into_iter().map(Arc::new));
                        continue;
                    }
                }
            }
            let (live, rx) = self.live.as_mut()?;
            // Marked seen before reading, so an event appended after the read wakes the wait.
            rx.mark_unchanged();
            let new = live.after(self.last);
            if !new.is_empty() {
                self.pending.extend(new);
                continue;
            }
            tokio::select! {
                _ = self.state.inner.closing.cancelled() => return None,
                r = rx.changed() => if r.is_err() { return None },
            }
        }
    }
}

/// The events of a run after `after` as SSE: from its live log while it is in flight (whatever
/// was already emitted first), from the store once it has ended; the stream ends with the run's
/// `result` or `error` event (or when the client goes away, or at the end of shutdown).
pub(crate) fn stream(
    state: AppState,
    run_id: String,
    after: u64,
) -> impl Stream<Item = Result<sse::Event, Infallible>> + Send + 'static {
    events(state, run_id.clone(), after).map(move |e| {
        Ok(sse::Event::default().id(format!("{run_id}:{}", e.seq)).event(e.event.as_str()).data(e.data.as_str()))
    })
}

/// The recorded events of a run after `after`: stored ones first, then live ones, ending with the
/// run's `result` or `error` event (or at the end of shutdown). Each event's `data` is the engine
/// event as JSON (for `result`, the [`TurnResult`]).
pub fn events(state: AppState, run_id: String, after: u64) -> impl Stream<Item = Arc<EventRecord>> + Send + 'static {
    if state.inner.dist.is_some() {
        return crate::dist::events(state, run_id, after).boxed();
    }
    let cursor =
        Cursor { state, run_id, last: after, pending: VecDeque::new(), live: None, started: false, ended: false };
    futures::stream::unfold(cursor, |mut c| async move {
        let e = c.next().await?;
        Some((e, c))
    })
    .boxed()
}
