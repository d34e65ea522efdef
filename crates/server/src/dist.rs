//! Replicas on one PostgreSQL database: turns go through the runs queue instead of running in
//! the request's process.
//!
//! Accepting a message writes its run record and enqueues it in one transaction (a message is
//! never acknowledged and then lost). Workers in every replica claim runs (`FOR UPDATE SKIP
//! LOCKED`), take the conversation's lease, run the assistant's engine on a
//! [`FencedStore`](switchboard_store::FencedStore) (a worker that lost the lease cannot write a
//! checkpoint, an event or the end), write the run's events to the database as they come (batched
//! every [`FLUSH_EVERY`]), and record the end with the queue entry in one fenced transaction.
//!
//! A stream on any replica reads the events from the database: it waits for a wake-up (from this
//! replica's workers, or over Redis from the others) and polls anyway, fast when Redis is down,
//! so nothing is lost without Redis. Cancels are recorded in the database and signalled over
//! Redis; the worker also polls the request with its lease heartbeat.

use crate::bus::{Bus, Signal};
use crate::error::ApiError;
use crate::state::{AppState, lock, now_ms};
use crate::turns::{Started, TurnResult, conversation_status, event_parts};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use switchboard_engine::{Engine, EngineError, Input, RunOptions, StoreError, Update};
use switchboard_runtime::{ClaimedRun, Queue, QueueConfig, RuntimeError};
use switchboard_store::postgres::records::{Enqueue, PgRecords};
use switchboard_store::records::{ConversationRecord, EventRecord, RunEnd, RunRecord};
use switchboard_store::{Fence, FencedStore, PgStore};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a running run's new events are written (and announced).
pub const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// How often a stream reads the database when Redis is down (or not configured).
const POLL_FAST: Duration = Duration::from_millis(100);
/// How often a stream reads the database anyway when Redis is up (a lost wake-up costs this).
const POLL_SLOW: Duration = Duration::from_secs(1);

/// Settings of a replica's workers.
#[derive(Debug, Clone)]
pub struct DistConfig {
    /// This replica's name in leases (unique per process).
    pub owner: String,
    /// Runs executed at once by this replica.
    pub concurrency: usize,
    /// Wait between claims when the queue looks empty (a wake-up cuts it short).
    pub idle_poll: Duration,
    /// Period of the sweeper (expired leases, dead-lettered runs).
    pub sweep_every: Duration,
    /// The queue's settings (lease TTL, attempts before the dead-letter state).
    pub queue: QueueConfig,
    /// Redis URL (`None`: no Redis; streams poll the database).
    pub redis_url: Option<String>,
    /// Prefix of Redis keys and channels (replicas of one service share it).
    pub redis_prefix: String,
    /// How often a stream reads the database while Redis is up (a lost wake-up costs this).
    pub poll_with_redis: Duration,
}

impl Default for DistConfig {
    fn default() -> Self {
        Self {
            owner: format!("replica-{}-{}", std::process::id(), crate::state::random_hex(4)),
            concurrency: 16,
            idle_poll: Duration::from_millis(250),
            sweep_every: Duration::from_millis(500),
            queue: QueueConfig::default(),
            redis_url: None,
            redis_prefix: "switchboard".into(),
            poll_with_redis: POLL_SLOW,
        }
    }
}

/// Wake-ups of this process's streams, by run id.
#[derive(Default)]
struct Hub {
    runs: Mutex<HashMap<String, Weak<watch::Sender<u64>>>>,
}

impl Hub {
    fn subscribe(&self, run: &str) -> (Arc<watch::Sender<u64>>, watch::Receiver<u64>) {
        let mut runs = lock(&self.runs);
        if let Some(tx) = runs.get(run).and_then(Weak::upgrade) {
            let rx = tx.subscribe();
            return (tx, rx);
        }
        if runs.len() > 1024 {
            runs.retain(|_, w| w.strong_count() > 0);
        }
        let tx = Arc::new(watch::Sender::new(0));
        runs.insert(run.to_string(), Arc::downgrade(&tx));
        let rx = tx.subscribe();
        (tx, rx)
    }

    fn notify(&self, run: &str) {
        let tx = lock(&self.runs).get(run).and_then(Weak::upgrade);
        if let Some(tx) = tx {
            tx.send_modify(|n| *n += 1);
        }
    }
}

/// A replica's share of the distributed runtime.
pub struct Distributed {
    pg: PgRecords,
    queue: Queue,
    fenced: Arc<FencedStore>,
    engines: HashMap<String, Engine>,
    bus: Option<Arc<Bus>>,
    hub: Hub,
    wake: Notify,
    /// Runs executing here: server run id → (engine, engine run id).
    running: Mutex<HashMap<String, (Engine, String)>>,
    config: DistConfig,
    /// Stops the workers and the sweeper.
    stop: CancellationToken,
    /// Stops the Redis listener (streams keep working without it, polling).
    listen: CancellationToken,
    tasks: TaskTracker,
}

/// What the queue carries for a turn.
#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    run: String,
    tenant: String,
    assistant: String,
    customer_id: Option<String>,
    /// `[field, value]` writes of a message, or absent for a resume.
    message: Option<Vec<(String, Value)>>,
    resume: Option<Value>,
}

impl Job {
    fn input(&self) -> Input {
        match (&self.message, &self.resume) {
            (Some(w), _) => {
                let mut u = Update::new();
                for (k, v) in w {
                    u.push(k.clone(), v.clone());
                }
                Input::Message(u)
            }
            (None, Some(v)) => Input::Resume(v.clone()),
            (None, None) => Input::Continue,
        }
    }
}

impl Distributed {
    /// A replica's runtime over `store` (migrated), running the assistants' worker `engines`
    /// (by assistant name), each built over `fenced` (a [`FencedStore`] on the same store).
    pub fn new(
        store: &PgStore,
        fenced: Arc<FencedStore>,
        engines: HashMap<String, Engine>,
        config: DistConfig,
    ) -> Result<Self, String> {
        let bus = match &config.redis_url {
            Some(url) => Some(Bus::new(url, &config.redis_prefix)?),
            None => None,
        };
        Ok(Self {
            pg: PgRecords::new(store.pool().clone()),
            queue: Queue::new(store.pool().clone(), config.queue.clone()),
            fenced,
            engines,
            bus,
            hub: Hub::default(),
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            config,
            stop: CancellationToken::new(),
            listen: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    /// Whether this replica's Redis subscriber is connected.
    pub fn redis_up(&self) -> bool {
        self.bus.as_ref().is_some_and(|b| b.is_up())
    }

    /// Stops claiming runs and waits up to `deadline` for the runs executing here; runs still
    /// going then are abandoned (their lease expires and another replica resumes them from their
    /// last checkpoint). Returns how many were abandoned.
    pub async fn stop_workers(&self, deadline: Duration) -> usize {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(deadline, self.tasks.wait()).await;
        lock(&self.running).len()
    }

    /// [`Self::stop_workers`], then stops listening to Redis.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        let n = self.stop_workers(deadline).await;
        self.listen.cancel();
        n
    }

    async fn announce(&self, run: &str) {
        self.hub.notify(run);
        if let Some(b) = &self.bus {
            b.publish(&Signal::Events(run.to_string())).await;
        }
    }

    fn cancel_local(&self, run: &str) -> bool {
        match lock(&self.running).get(run) {
            Some((engine, engine_run)) => engine.cancel(engine_run).is_ok(),
            None => false,
        }
    }

    pub(crate) async fn take_token(&self, key: &str, per_second: f64, burst: u32) -> Option<Result<(), ApiError>> {
        let bus = self.bus.as_ref()?;
        match bus.take_token(key, per_second, burst).await {
            Ok(None) => Some(Ok(())),
            Ok(Some(wait)) => {
                Some(Err(ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }))
            }
            Err(e) => {
                tracing::debug!(error = %e, "shared rate limit unavailable; using this replica's bucket");
                None
            }
        }
    }
}

/// Starts the workers, the sweeper and the Redis listener of a replica.
pub fn start(state: &AppState) {
    let Some(d) = state.inner.dist.clone() else { return };
    if let Some(bus) = d.bus.clone() {
        let d2 = d.clone();
        tokio::spawn(bus.listen(d.listen.clone(), move |s| match s {
            Signal::Events(run) => d2.hub.notify(&run),
            Signal::Cancel(run) => {
                d2.cancel_local(&run);
            }
            Signal::Wake => d2.wake.notify_waiters(),
        }));
    }
    for _ in 0..d.config.concurrency.max(1) {
        let (st, d) = (state.clone(), d.clone());
        d.tasks.clone().spawn(async move {
            while !d.stop.is_cancelled() {
                let wait = match claim_and_run(&st, &d).await {
                    Ok(true) => continue,
                    Ok(false) => d.config.idle_poll,
                    Err(e) => {
                        tracing::warn!(error = %e, "worker");
                        d.config.idle_poll * 4
                    }
                };
                tokio::select! {
                    () = d.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    () = d.stop.cancelled() => {}
                }
            }
        });
    }
    let d2 = d.clone();
    d.tasks.clone().spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(d2.config.sweep_every) => {}
                () = d2.stop.cancelled() => return,
            }
            match d2.queue.sweep().await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!(runs = ?ids, "re-queued runs whose lease expired");
                    d2.wake.notify_waiters();
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "sweep"),
            }
            match d2.pg.end_dead_runs(now_ms()).await {
                Ok(ids) => {
                    for id in ids {
                        d2.announce(&id).await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "dead-letter sweep"),
            }
        }
    });
}

/// Enqueues a turn (see the module docs) and returns at once; its result arrives through its events.
pub(crate) async fn enqueue(
    state: &AppState,
    d: &Arc<Distributed>,
    conv: &ConversationRecord,
    input: Input,
    kind: &str,
    idempotency_key: Option<&str>,
) -> Result<Started, ApiError> {
    if state.inner.closing.is_cancelled() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    let run_id = switchboard_engine::new_run_id();
    let (message, resume) = match input {
        Input::Message(u) => (Some(u.writes().map(|(k, v)| (k.to_string(), v.clone())).collect()), None),
        Input::Resume(v) => (None, Some(v)),
        Input::Continue => (None, None),
    };
    let job = Job {
        run: run_id.clone(),
        tenant: conv.tenant.clone(),
        assistant: conv.assistant.clone(),
        customer_id: conv.customer_id.clone(),
        message,
        resume,
    };
    let run = RunRecord {
        id: run_id.clone(),
        tenant: conv.tenant.clone(),
        conversation_id: conv.id.clone(),
        kind: kind.to_string(),
        status: "queued".into(),
        result: None,
        error: None,
        created_at_ms: now_ms(),
        finished_at_ms: None,
    };
    let job = serde_json::to_string(&job).map_err(|e| ApiError::Internal(e.to_string()))?;
    d.pg.enqueue(&Enqueue { run, job, idempotency_key: idempotency_key.map(str::to_string) }).await?;
    d.wake.notify_waiters();
    if let Some(b) = &d.bus {
        b.publish(&Signal::Wake).await;
    }
    // The result, whatever replica runs the turn: read from its events.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (st, rid) = (state.clone(), run_id.clone());
    tokio::spawn(async move {
        use futures::StreamExt as _;
        let mut events = std::pin::pin!(events(st, rid, 0));
        let mut last = None;
        while let Some(e) = events.next().await {
            last = Some(e);
        }
        let _ = tx.send(match last {
            Some(e) => terminal_result(&e),
            None => Err(ApiError::Unavailable("shutting down".into())),
        });
    });
    Ok(Started { run_id, result: rx })
}

/// The turn result (or error) a terminal event carries.
fn terminal_result(e: &EventRecord) -> Result<TurnResult, ApiError> {
    let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    if e.event == "result"
        && let Ok(r) = serde_json::from_value::<TurnResult>(v.clone())
    {
        return Ok(r);
    }
    let code = v["error"]["code"].as_str().unwrap_or("internal");
    let message = v["error"]["message"].as_str().unwrap_or("the turn failed").to_string();
    Err(match code {
        "unavailable" | "shutting_down" => ApiError::Unavailable(message),
        "not_found" => ApiError::NotFound(message),
        "invalid_request" => ApiError::Invalid(message),
        "busy" | "conflict" | "interrupt_pending" | "nothing_to_resume" | "run_not_active" => {
            ApiError::Conflict(message)
        }
        _ => ApiError::Internal(message),
    })
}

/// Cancels a run wherever it is: a queued one ends at once; a running one is signalled.
pub(crate) async fn cancel(d: &Distributed, run: &RunRecord) -> Result<(), ApiError> {
    if !matches!(run.status.as_str(), "queued" | "running") {
        return Err(EngineError::UnknownRun(run.id.clone()).into());
    }
    let result = TurnResult {
        run_id: run.id.clone(),
        conversation_id: run.conversation_id.clone(),
        status: "cancelled".into(),
        checkpoint_id: None,
        reply: None,
        interrupts: Vec::new(),
        steps: 0,
        engine_time: Duration::ZERO,
    };
    let data = serde_json::to_value(&result).map_err(|e| ApiError::Internal(e.to_string()))?;
    let end = RunEnd {
        run_id: run.id.clone(),
        status: "cancelled".into(),
        result: Some(data.clone()),
        error: None,
        finished_at_ms: now_ms(),
        events: vec![Arc::new(EventRecord { seq: 1, event: "result".into(), data: data.to_string() })],
        conversation_id: run.conversation_id.clone(),
        conversation_status: "idle".into(),
    };
    if d.pg.cancel(&end).await? {
        d.announce(&run.id).await;
        return Ok(());
    }
    if !d.cancel_local(&run.id)
        && let Some(b) = &d.bus
    {
        b.publish(&Signal::Cancel(run.id.clone())).await;
    }
    Ok(())
}

/// Claims one run and executes it; `false` when nothing was runnable.
async fn claim_and_run(state: &AppState, d: &Arc<Distributed>) -> Result<bool, RuntimeError> {
    let Some(claim) = d.queue.claim(&d.config.owner).await? else { return Ok(false) };
    let out = execute(state, d, &claim).await;
    d.fenced.unfence(&claim.conversation);
    match out {
        Ok(()) | Err(RuntimeError::Fenced(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

/// A run's events as they come: numbered after those of earlier attempts, flushed in batches.
struct Pump {
    seq: u64,
    unflushed: Vec<EventRecord>,
}

impl Pump {
    fn push(&mut self, event: String, data: String) {
        self.seq += 1;
        self.unflushed.push(EventRecord { seq: self.seq, event, data });
    }
}

async fn execute(state: &AppState, d: &Arc<Distributed>, claim: &ClaimedRun) -> Result<(), RuntimeError> {
    let conv = claim.conversation.as_str();
    let job: Job = match serde_json::from_str(&claim.body) {
        Ok(j) => j,
        Err(e) => {
            // Not a server turn: nothing can run it, ever.
            let mut tx = d.queue.pool().begin().await?;
            d.queue.fail_in(&mut tx, claim, &format!("unreadable job: {e}")).await?;
            tx.commit().await?;
            return Ok(());
        }
    };
    d.fenced.fence(conv, Fence { token: claim.lease.token, input_of_run: Some(claim.id) });
    let Some(engine) = d.engines.get(&job.assistant).cloned() else {
        return fail(d, claim, &job, conv, &format!("assistant `{}` is not served by this replica", job.assistant))
            .await;
    };
    engine.forget(conv);
    let input = match claim.input_checkpoint {
        Some(_) => Input::Continue,
        None => job.input(),
    };
    let mut pump = Pump { seq: d.pg.last_seq(&job.run).await?, unflushed: Vec::new() };
    d.pg.mark_running(&job.run).await?;
    let opts = RunOptions { customer_id: job.customer_id.clone(), ..RunOptions::default() };
    // Recording: the state before the turn, for the cassette entry written at its end.
    let recorder = state.inner.assistants.recorder(&job.assistant).cloned();
    let before = match &recorder {
        Some(_) => engine.state(conv).await.map(|s| s.to_json()).unwrap_or(Value::Null),
        None => Value::Null,
    };
    let recorded_input = input.clone();
    let started = std::time::Instant::now();
    let handle = match engine.start(conv, input, opts).await {
        Ok(h) => h,
        Err(e) => return fail(d, claim, &job, conv, &e.to_string()).await,
    };
    let engine_run = handle.run_id().to_string();
    lock(&d.running).insert(job.run.clone(), (engine.clone(), engine_run.clone()));
    let lost = CancellationToken::new();
    let heartbeat = {
        let (d, lease, engine, engine_run, run, lost) =
            (d.clone(), claim.lease.clone(), engine.clone(), engine_run.clone(), job.run.clone(), lost.clone());
        tokio::spawn(async move {
            let ttl = d.config.queue.lease_ttl;
            let mut checked = false;
            loop {
                // The cancel request is checked at once, then with each heartbeat.
                if d.pg.cancel_requested(&run).await.unwrap_or(false) {
                    let _ = engine.cancel(&engine_run);
                }
                if checked {
                    match lease.renew(d.fenced.inner(), ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.cancel();
                            let _ = engine.cancel(&engine_run);
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "lease heartbeat"),
                    }
                }
                checked = true;
                tokio::time::sleep(ttl / 3).await;
            }
        })
    };
    let events = handle.subscribe();
    // Waited for in a task of its own: the handle holds the events' sender until it is consumed.
    let waiter = tokio::spawn(handle.wait());
    if let Some(mut rx) = events {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        let (name, data) = event_parts(&ev);
                        pump.push(name, data);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(run_id = %job.run, skipped = n, "run events lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    if pump.unflushed.is_empty() {
                        continue;
                    }
                    match d.pg.append_events_fenced(&job.run, conv, claim.lease.token, &pump.unflushed).await {
                        Ok(true) => {
                            pump.unflushed.clear();
                            d.announce(&job.run).await;
                        }
                        Ok(false) => {
                            lost.cancel();
                            let _ = engine.cancel(&engine_run);
                        }
                        // Kept for the next flush or the end.
                        Err(e) => tracing::warn!(error = %e, "writing run events"),
                    }
                }
            }
        }
    }
    let outcome = match waiter.await {
        Ok(o) => o,
        Err(e) => Err(EngineError::Store(StoreError::Unavailable(format!("run task failed: {e}")))),
    };
    heartbeat.abort();
    lock(&d.running).remove(&job.run);
    if lost.is_cancelled() {
        return Err(RuntimeError::Fenced(conv.to_string()));
    }
    if let Some(r) = &recorder {
        let outcome = outcome.as_ref().map_err(|e| ApiError::Internal(e.to_string()));
        let of = (job.tenant.clone(), job.assistant.clone(), job.customer_id.clone());
        crate::turns::record_turn(state, r.as_ref(), of, conv, (&recorded_input, &before), &outcome, started.elapsed())
            .await;
    }
    let result = match outcome {
        Ok(o) => TurnResult::from_outcome(&o),
        // An earlier attempt applied the message and finished the engine's run, then died before
        // it could record the end: the result is the state it left.
        Err(EngineError::NothingToResume(_)) if claim.input_checkpoint.is_some() => {
            let s = engine.state(conv).await?;
            let latest = engine.history(conv, None, 1).await?;
            let reply = s
                .get_array("messages")
                .last()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
                .cloned();
            TurnResult {
                run_id: engine_run.clone(),
                conversation_id: conv.to_string(),
                status: "completed".into(),
                checkpoint_id: latest.first().map(|c| c.id),
                reply,
                interrupts: engine.pending_interrupts(conv).await?,
                steps: 0,
                engine_time: Duration::ZERO,
            }
        }
        Err(EngineError::Store(StoreError::Fenced { .. })) => return Err(RuntimeError::Fenced(conv.to_string())),
        Err(e) => return fail_with(d, claim, &job, conv, &e.to_string(), pump).await,
    };
    // The server's run id, not the engine's (they differ: the run was accepted before it ran).
    let result = TurnResult { run_id: job.run.clone(), ..result };
    let data = serde_json::to_value(&result).map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
    pump.push("result".into(), data.to_string());
    let end = RunEnd {
        run_id: job.run.clone(),
        status: result.status.clone(),
        result: Some(data),
        error: None,
        finished_at_ms: now_ms(),
        events: pump.unflushed.into_iter().map(Arc::new).collect(),
        conversation_id: conv.to_string(),
        conversation_status: conversation_status(&result.status).to_string(),
    };
    // The reply also goes to the outbox: at most one per accepted message, whatever happens.
    let reply = result.reply.as_ref().map(Value::to_string);
    let mut tx = d.queue.pool().begin().await?;
    d.queue.complete_in(&mut tx, claim, reply.as_deref()).await?;
    PgRecords::finish_run_in(&mut tx, &end).await?;
    tx.commit().await?;
    state.inner.metrics.add(crate::state::WORKER_RUNS, &[("status", result.status.as_str())], 1.0);
    d.announce(&job.run).await;
    Ok(())
}

async fn fail(d: &Distributed, claim: &ClaimedRun, job: &Job, conv: &str, error: &str) -> Result<(), RuntimeError> {
    let seq = d.pg.last_seq(&job.run).await?;
    fail_with(d, claim, job, conv, error, Pump { seq, unflushed: Vec::new() }).await
}

/// Records a failed attempt; the third one sends the run to the dead-letter state and ends it
/// with an `error` event (in the same transaction).
async fn fail_with(
    d: &Distributed,
    claim: &ClaimedRun,
    job: &Job,
    conv: &str,
    error: &str,
    mut pump: Pump,
) -> Result<(), RuntimeError> {
    tracing::warn!(run = %job.run, conversation = %conv, attempt = claim.attempts, error, "turn failed");
    let mut tx = d.queue.pool().begin().await?;
    let dead = d.queue.fail_in(&mut tx, claim, error).await?;
    if dead {
        let body = ApiError::Internal(error.to_string()).body();
        pump.push("error".into(), body.to_string());
        let end = RunEnd {
            run_id: job.run.clone(),
            status: "failed".into(),
            result: None,
            error: Some(format!("dead letter after {} attempts: {error}", claim.attempts)),
            finished_at_ms: now_ms(),
            events: pump.unflushed.into_iter().map(Arc::new).collect(),
            conversation_id: conv.to_string(),
            conversation_status: "failed".into(),
        };
        PgRecords::finish_run_in(&mut tx, &end).await?;
    }
    tx.commit().await?;
    if dead {
        d.announce(&job.run).await;
    } else {
        d.wake.notify_waiters();
    }
    Ok(())
}

/// The events of a run after `after`, read from the database (see the module docs), ending with
/// its `result` or `error` event, or at the end of shutdown.
pub(crate) fn events(
    state: AppState,
    run_id: String,
    after: u64,
) -> impl futures::Stream<Item = Arc<EventRecord>> + Send + 'static {
    struct Cursor {
        state: AppState,
        run_id: String,
        last: u64,
        pending: VecDeque<Arc<EventRecord>>,
        wake: Option<(Arc<watch::Sender<u64>>, watch::Receiver<u64>)>,
        ended: bool,
    }
    let cursor = Cursor { state, run_id, last: after, pending: VecDeque::new(), wake: None, ended: false };
    futures::stream::unfold(cursor, |mut c| async move {
        let d = c.state.inner.dist.clone()?;
        loop {
            if let Some(e) = c.pending.pop_front() {
                c.last = e.seq;
                if crate::turns::TERMINAL.contains(&e.event.as_str()) {
                    c.ended = true;
                    c.pending.clear();
                }
                return Some((e, c));
            }
            if c.ended {
                return None;
            }
            let (_, rx) = c.wake.get_or_insert_with(|| d.hub.subscribe(&c.run_id));
            rx.mark_unchanged();
            match d.pg.events_after(&c.run_id, c.last).await {
                Ok(new) if !new.is_empty() => {
                    c.pending.extend(new.into_iter().map(Arc::new));
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "stream: reading events"),
            }
            let poll = if d.redis_up() { d.config.poll_with_redis } else { POLL_FAST };
            let closing = c.state.inner.closing.clone();
            let (_, rx) = c.wake.as_mut()?;
            tokio::select! {
                _ = rx.changed() => {}
                () = tokio::time::sleep(poll) => {}
                () = closing.cancelled() => return None,
            }
        }
    })
}
