//! Workers: claim runs, hold the lease, run the engine fenced, finish through the outbox.

use crate::RuntimeError;
use crate::queue::{ClaimedRun, Queue};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchboard_engine::{Engine, EngineError, Input, RunOptions, RunStatus, State, StoreError, Update};
use switchboard_store::{Fence, FencedStore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What the worker needs to know about the assistant it runs.
pub trait Assistant: Send + Sync + 'static {
    /// The engine input for a run's message.
    fn input(&self, run: &ClaimedRun) -> Update;
    /// The reply to send the customer for a run, read from the state after it.
    fn reply(&self, run: &ClaimedRun, state: &State) -> Option<String>;
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The owner name in leases and runs (unique per process).
    pub owner: String,
    /// Runs executed at once.
    pub concurrency: usize,
    /// Wait between claims when the queue is empty.
    pub idle_poll: Duration,
    /// Period of the sweeper.
    pub sweep_every: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            owner: format!("worker-{}", std::process::id()),
            concurrency: 8,
            idle_poll: Duration::from_millis(20),
            sweep_every: Duration::from_millis(500),
        }
    }
}

/// Counters of a worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Runs completed.
    pub completed: AtomicU64,
    /// Runs whose execution failed.
    pub failed: AtomicU64,
    /// Runs abandoned because the lease was lost.
    pub fenced: AtomicU64,
    /// Runs re-queued by this worker's sweeper.
    pub swept: AtomicU64,
}

/// Executes queued runs of one replica.
pub struct Worker {
    queue: Queue,
    store: Arc<FencedStore>,
    engine: Engine,
    assistant: Arc<dyn Assistant>,
    config: WorkerConfig,
    stats: WorkerStats,
}

/// How one claimed run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    /// Completed: reply in the outbox, run done.
    Completed,
    /// Failed and re-queued (`false`) or dead-lettered (`true`).
    Failed(bool),
    /// The lease was lost; another worker owns the conversation now.
    Fenced,
}

impl Worker {
    /// A worker. `engine` must write through `store` (the same [`FencedStore`]).
    pub fn new(
        queue: Queue,
        store: Arc<FencedStore>,
        engine: Engine,
        assistant: Arc<dyn Assistant>,
        config: WorkerConfig,
    ) -> Self {
        Self { queue, store, engine, assistant, config, stats: WorkerStats::default() }
    }

    /// The counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Claims and executes runs with [`WorkerConfig::concurrency`] loops, and sweeps, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = Vec::new();
        for _ in 0..self.config.concurrency.max(1) {
            let w = self.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    match w.run_one().await {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            tokio::select! {
                                () = tokio::time::sleep(w.config.idle_poll) => {}
                                () = stop.cancelled() => {}
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "worker loop");
                            tokio::time::sleep(w.config.idle_poll * 10).await;
                        }
                    }
                }
            }));
        }
        let w = self.clone();
        let sweep_stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(w.config.sweep_every) => {}
                    () = sweep_stop.cancelled() => break,
                }
                match w.queue.sweep().await {
                    Ok(ids) if !ids.is_empty() => {
                        w.stats.swept.fetch_add(ids.len() as u64, Ordering::Relaxed);
                        debug!(runs = ?ids, "re-queued runs whose lease expired");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "sweep"),
                }
            }
        }));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Claims one run and executes it; `None` when nothing was runnable.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`] when the queue cannot be reached.
    pub async fn run_one(&self) -> Result<Option<(i64, Executed)>, RuntimeError> {
        let Some(run) = self.queue.claim(&self.config.owner).await? else { return Ok(None) };
        let out = self.execute(&run).await;
        self.store.unfence(&run.conversation);
        let out = match out {
            Ok(o) => o,
            Err(RuntimeError::Fenced(_)) => Executed::Fenced,
            Err(e) => return Err(e),
        };
        match out {
            Executed::Completed => self.stats.completed.fetch_add(1, Ordering::Relaxed),
            Executed::Failed(_) => self.stats.failed.fetch_add(1, Ordering::Relaxed),
            Executed::Fenced => self.stats.fenced.fetch_add(1, Ordering::Relaxed),
        };
        Ok(Some((run.id, out)))
    }

    async fn execute(&self, run: &ClaimedRun) -> Result<Executed, RuntimeError> {
        let conv = run.conversation.as_str();
        self.store.fence(conv, Fence { token: run.lease.token, input_of_run: Some(run.id) });
        // Another replica may have run this conversation since this one last did.
        self.engine.forget(conv);
        let input = match run.input_checkpoint {
            Some(_) => Input::Continue,
            None => Input::Message(self.assistant.input(run)),
        };
        let lost = CancellationToken::new();
        let handle = match self.engine.start(conv, input, RunOptions::default()).await {
            Ok(h) => h,
            Err(e) => return self.failed(run, &e).await,
        };
        let heartbeat = {
            let (store, lease, engine, run_id) =
                (self.store.inner().clone(), run.lease.clone(), self.engine.clone(), handle.run_id().to_string());
            let ttl = self.queue.config().lease_ttl;
            let lost = lost.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match lease.renew(&store, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.cancel();
                            let _ = engine.cancel(&run_id);
                            return;
                        }
                        Err(e) => warn!(error = %e, "lease heartbeat"),
                    }
                }
            })
        };
        let result = handle.wait().await;
        heartbeat.abort();
        if lost.is_cancelled() {
            return Ok(Executed::Fenced);
        }
        let state = match result {
            Ok(out) if matches!(out.status, RunStatus::Completed | RunStatus::Interrupted) => out.state,
            Ok(out) => {
                return Err(RuntimeError::Unavailable(format!("run ended {}", out.status.as_str())));
            }
            // The message was applied and its run finished by an earlier attempt that died before
            // it could complete the queue entry.
            Err(EngineError::NothingToResume(_)) if run.input_checkpoint.is_some() => self.engine.state(conv).await?,
            Err(EngineError::Store(StoreError::Fenced { .. })) => return Ok(Executed::Fenced),
            Err(e) => return self.failed(run, &e).await,
        };
        let reply = self.assistant.reply(run, &state);
        self.queue.complete(run, reply.as_deref()).await?;
        Ok(Executed::Completed)
    }

    async fn failed(&self, run: &ClaimedRun, e: &EngineError) -> Result<Executed, RuntimeError> {
        warn!(run = run.id, conversation = %run.conversation, error = %e, "run failed");
        let dead = self.queue.fail(run, &e.to_string()).await?;
        Ok(Executed::Failed(dead))
    }
}
