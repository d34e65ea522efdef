//! Redis for what replicas may lose: wake-ups when a run has new events, cancellation signals,
//! and shared rate-limit buckets. Nothing here is the truth: events and cancel requests are in
//! PostgreSQL, so when Redis is down streams poll the database and cancels are picked up by the
//! worker's heartbeat; rate limits fall back to each replica's own buckets.
//!
//! Every call has a short timeout, and a failed connection is dropped and made again on next use.

use futures::StreamExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest wait for a connection or a reply.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Wait before the subscriber connects again after a failure.
const RECONNECT: Duration = Duration::from_millis(500);

/// Token bucket in one round trip: returns -1 when a token was taken, else the milliseconds until one is due.
const BUCKET: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(v[1]) or burst
local ts = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = -1
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
";

/// What a message on the bus means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A run has new events in the database.
    Events(String),
    /// A run must be cancelled wherever it executes.
    Cancel(String),
    /// New runs are queued.
    Wake,
}

/// The Redis side of a replica.
pub(crate) struct Bus {
    client: redis::Client,
    prefix: String,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    up: AtomicBool,
    bucket: redis::Script,
    /// After a failed connection, calls skip Redis until then (no connect per request while it is down).
    down_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Bus {
    /// A bus on `url` whose keys and channels start with `prefix` (nothing is connected yet).
    pub(crate) fn new(url: &str, prefix: &str) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        Ok(Arc::new(Self {
            client,
            prefix: prefix.to_string(),
            conn: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(false),
            bucket: redis::Script::new(BUCKET),
            down_until: std::sync::Mutex::new(None),
        }))
    }

    /// Whether the subscriber is connected (streams then wait for wake-ups instead of polling fast).
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn channel(&self) -> String {
        format!("{}:signals", self.prefix)
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let now = std::time::Instant::now();
        if crate::state::lock(&self.down_until).is_some_and(|t| now < t) {
            return Err("redis is down (backing off)".into());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let c = tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection_with_config(&config))
            .await
            .map_err(|_| "redis connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
        *crate::state::lock(&self.down_until) = Some(std::time::Instant::now() + RECONNECT);
    }

    /// Publishes a signal; best effort (a lost one only delays a stream until its next poll).
    pub(crate) async fn publish(&self, signal: &Signal) {
        let payload = match signal {
            Signal::Events(run) => format!("e {run}"),
            Signal::Cancel(run) => format!("c {run}"),
            Signal::Wake => "w".to_string(),
        };
        let r = async {
            let mut c = self.connection().await?;
            let cmd = redis::cmd("PUBLISH").arg(self.channel()).arg(payload).clone();
            tokio::time::timeout(TIMEOUT, cmd.query_async::<i64>(&mut c))
                .await
                .map_err(|_| "redis publish timed out".to_string())?
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "redis publish failed");
            self.forget_connection().await;
        }
    }

    /// Takes a token from the shared bucket `key`: `Ok(None)` when taken, `Ok(Some(wait))` when
    /// empty, `Err` when Redis cannot answer (the caller falls back to its own bucket).
    pub(crate) async fn take_token(&self, key: &str, per_second: f64, burst: u32) -> Result<Option<Duration>, String> {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let r = async {
            let mut c = self.connection().await?;
            let mut inv = self.bucket.key(format!("{}:rl:{key}", self.prefix));
            inv.arg(per_second).arg(burst).arg(now_ms);
            tokio::time::timeout(TIMEOUT, inv.invoke_async::<i64>(&mut c))
                .await
                .map_err(|_| "redis timed out".to_string())?
                .map_err(|e| e.to_string())
        }
        .await;
        match r {
            Ok(w) if w < 0 => Ok(None),
            Ok(w) => Ok(Some(Duration::from_millis(w as u64))),
            Err(e) => {
                self.forget_connection().await;
                Err(e)
            }
        }
    }

    /// Listens to the bus until `stop`, passing each signal to `on_signal`; reconnects after failures.
    pub(crate) async fn listen(self: Arc<Self>, stop: CancellationToken, on_signal: impl Fn(Signal) + Send + 'static) {
        while !stop.is_cancelled() {
            let sub = async {
                let mut ps = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub())
                    .await
                    .map_err(|_| "redis connect timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                tokio::time::timeout(TIMEOUT, ps.subscribe(self.channel()))
                    .await
                    .map_err(|_| "redis subscribe timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(ps)
            }
            .await;
            let ps = match sub {
                Ok(ps) => ps,
                Err(e) => {
                    self.up.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, "redis subscriber");
                    tokio::select! {
                        () = tokio::time::sleep(RECONNECT) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            };
            self.up.store(true, Ordering::Relaxed);
            let mut messages = ps.into_on_message();
            loop {
                tokio::select! {
                    m = messages.next() => {
                        let Some(m) = m else { break };
                        let Ok(payload) = m.get_payload::<String>() else { continue };
                        let signal = match payload.split_once(' ') {
                            Some(("e", run)) => Signal::Events(run.to_string()),
                            Some(("c", run)) => Signal::Cancel(run.to_string()),
                            _ if payload == "w" => Signal::Wake,
                            _ => continue,
                        };
                        on_signal(signal);
                    }
                    () = stop.cancelled() => return,
                }
            }
            self.up.store(false, Ordering::Relaxed);
            tracing::warn!("redis subscription ended; streams poll the database until it is back");
        }
    }
}
