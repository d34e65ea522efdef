//! Running a turn and recording it: the run's record, its events (persisted in order, then fanned
//! out live), its result, and the conversation's status.
//!
//! Key design decision: a turn runs in a task of its own, not in the request. A client that
//! disconnects or times out does not stop it, and its events are persisted before they are sent,
//! so a client that reconnects with `Last-Event-ID` replays the stored ones, then follows the live
//! ones, without a gap or a duplicate (it subscribes to the live fan-out *before* it reads the
//! store, and skips what it has already sent).

use crate::error::ApiError;
use crate::state::{AppState, lock, now_ms};
use axum::response::sse;
use futures::Stream;
use serde::Serialize;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use switchboard_engine::{Input, InterruptInfo, RunOptions, RunOutcome};
use switchboard_store::records::{ConversationRecord, EventRecord, RunRecord};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Names of the events that end a run's stream.
const TERMINAL: [&str; 2] = ["result", "error"];

/// The live fan-out of a run in flight.
#[derive(Clone)]
pub(crate) struct Live {
    tx: broadcast::Sender<Arc<EventRecord>>,
}

/// The result of a turn, as returned by the messages and resume endpoints.
#[derive(Debug, Clone, Serialize)]
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
}

impl TurnResult {
    fn from_outcome(o: &RunOutcome) -> Self {
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

fn conversation_status(status: &str) -> &'static str {
    match status {
        "interrupted" => "interrupted",
        "failed" => "failed",
        _ => "idle",
    }
}

/// Starts a turn of a conversation (already checked to belong to the caller's tenant), recorded
/// like the messages endpoint records it: run record, persisted events, result.
///
/// # Errors
/// Engine refusals (busy, shutting down) and store failures.
pub async fn start(state: &AppState, conv: &ConversationRecord, input: Input, kind: &str) -> Result<Started, ApiError> {
    let inner = &state.inner;
    let assistant = inner
        .assistants
        .get(&conv.assistant)
        .ok_or_else(|| ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)))?
        .clone();
    let opts = RunOptions { customer_id: conv.customer_id.clone(), ..RunOptions::default() };
    let handle = assistant.engine.start(&conv.id, input, opts).await?;
    let events = handle.subscribe();
    let run_id = handle.run_id().to_string();
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
    if let Err(e) = inner.records.insert_run(&rec).await {
        // Unrecorded runs must not go on: nobody could follow or cancel them.
        let _ = assistant.engine.cancel(&run_id);
        return Err(e.into());
    }
    inner.records.set_conversation_status(&conv.id, "running", now).await?;
    let (live_tx, _) = broadcast::channel(1024);
    lock(&inner.live).insert(run_id.clone(), Live { tx: live_tx.clone() });
    let (done_tx, done_rx) = oneshot::channel();
    let st = state.clone();
    let rid = run_id.clone();
    let conv_id = conv.id.clone();
    inner.tasks.spawn(async move {
        let records = &st.inner.records;
        let wait = tokio::spawn(handle.wait());
        let mut seq = 0u64;
        let mut emit = async |event: String, data: String| {
            seq += 1;
            let rec = EventRecord { seq, event, data };
            if let Err(e) = records.append_event(&rid, &rec).await {
                tracing::warn!(error = %e, run_id = %rid, "could not persist a run event");
            }
            let _ = live_tx.send(Arc::new(rec));
        };
        if let Some(mut rx) = events {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let mut v = serde_json::to_value(&ev).unwrap_or(Value::Null);
                        let name = v.get("event").and_then(Value::as_str).unwrap_or("event").to_string();
                        if let Some(o) = v.as_object_mut() {
                            o.remove("seq");
                        }
                        emit(name, v.to_string()).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(run_id = %rid, skipped = n, "run events lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        let outcome = match wait.await {
            Ok(r) => r.map_err(ApiError::from),
            Err(_) => Err(ApiError::Internal("run task failed".into())),
        };
        let result = outcome.map(|o| TurnResult::from_outcome(&o));
        let (status, result_json, error) = match &result {
            Ok(r) => (r.status.clone(), serde_json::to_value(r).ok(), None),
            Err(e) => ("failed".to_string(), None, Some(e.body())),
        };
        match (&result_json, &error) {
            (Some(r), _) => emit("result".into(), r.to_string()).await,
            (None, Some(e)) => emit("error".into(), e.to_string()).await,
            _ => emit("error".into(), ApiError::Internal(String::new()).body().to_string()).await,
        }
        let now = now_ms();
        let err_text = error.as_ref().map(|e| e["error"]["message"].as_str().unwrap_or("").to_string());
        if let Err(e) = records.finish_run(&rid, &status, result_json.as_ref(), err_text.as_deref(), now).await {
            tracing::warn!(error = %e, run_id = %rid, "could not record a run's end");
        }
        // A failed turn leaves the conversation where it was: still waiting for a human if it was.
        let conv_status = match status.as_str() {
            "failed" if assistant.engine.pending_interrupts(&conv_id).await.is_ok_and(|i| !i.is_empty()) => {
                "interrupted"
            }
            s => conversation_status(s),
        };
        let _ = records.set_conversation_status(&conv_id, conv_status, now).await;
        lock(&st.inner.live).remove(&rid);
        *lock(&st.inner.metrics.turns).entry(status.clone()).or_insert(0) += 1;
        let _ = done_tx.send(result);
    });
    Ok(Started { run_id, result: done_rx })
}

/// Parses a `Last-Event-ID` (`<run_id>:<seq>`, or a bare `<seq>`).
pub(crate) fn parse_event_id(s: &str) -> Option<(Option<&str>, u64)> {
    match s.rsplit_once(':') {
        Some((run, seq)) => seq.trim().parse().ok().map(|n| (Some(run.trim()), n)),
        None => s.trim().parse().ok().map(|n| (None, n)),
    }
}

/// The events of a run after `after` as SSE: stored ones first, then live ones, ending with the
/// run's `result` or `error` event (or when the client goes away, or at the end of shutdown).
pub(crate) fn stream(
    state: AppState,
    run_id: String,
    after: u64,
) -> impl Stream<Item = Result<sse::Event, Infallible>> + Send + 'static {
    events(state, run_id.clone(), after).map(move |e| {
        Ok(sse::Event::default().id(format!("{run_id}:{}", e.seq)).event(e.event.clone()).data(e.data.clone()))
    })
}

/// The recorded events of a run after `after`: stored ones first, then live ones, ending with the
/// run's `result` or `error` event (or when the receiver is dropped, or at the end of shutdown).
/// Each event's `data` is the engine event as JSON (for `result`, the [`TurnResult`]).
pub fn events(state: AppState, run_id: String, after: u64) -> impl Stream<Item = Arc<EventRecord>> + Send + 'static {
    let (tx, mut rx) = mpsc::channel::<Arc<EventRecord>>(64);
    let rid = run_id;
    tokio::spawn(async move {
        // Subscribe before reading the store: whatever is persisted after the read is still sent live.
        let mut live = lock(&state.inner.live).get(&rid).map(|l| l.tx.subscribe());
        let mut last = after;
        let closing = state.inner.closing.clone();
        let replay = async |last: &mut u64| -> Result<bool, ()> {
            let stored = state.inner.records.events_after(&rid, *last).await.map_err(|_| ())?;
            for e in stored {
                *last = e.seq;
                let end = TERMINAL.contains(&e.event.as_str());
                tx.send(Arc::new(e)).await.map_err(|_| ())?;
                if end {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        if replay(&mut last).await != Ok(false) {
            return;
        }
        let Some(live) = live.as_mut() else { return };
        loop {
            let r = tokio::select! {
                _ = closing.cancelled() => return,
                _ = tx.closed() => return,
                r = live.recv() => r,
            };
            match r {
                Ok(e) if e.seq <= last => {}
                Ok(e) if e.seq == last + 1 => {
                    last = e.seq;
                    let end = TERMINAL.contains(&e.event.as_str());
                    if tx.send(e).await.is_err() || end {
                        return;
                    }
                }
                // A gap (lagged, or the channel closed): fill it from the store.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if replay(&mut last).await != Ok(false) {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = replay(&mut last).await;
                    return;
                }
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

use futures::StreamExt as _;
