//! The fake server: shared state (script queue, request log), the per-vendor router, and a
//! handle that runs it on a loopback port.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::script::{RecordedRequest, Scenario};
use crate::vendor::Vendor;

/// Errors starting a fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// This vendor's fake is not part of this build yet.
    #[error("the {0} fake is not built yet")]
    NotBuilt(Vendor),
    /// Binding or serving failed.
    #[error("fake server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// State shared by a fake's handlers.
#[derive(Debug)]
pub struct FakeState {
    vendor: Vendor,
    script: Mutex<VecDeque<Scenario>>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// When false the log keeps nothing (benchmarks with thousands of requests).
    record: bool,
}

impl FakeState {
    /// Fresh state for a vendor, recording requests.
    pub fn new(vendor: Vendor) -> Self {
        Self { vendor, script: Mutex::new(VecDeque::new()), requests: Mutex::new(Vec::new()), record: true }
    }

    /// Fresh state that does not keep a request log.
    pub fn without_recording(vendor: Vendor) -> Self {
        Self { record: false, ..Self::new(vendor) }
    }

    /// Which vendor this fake speaks.
    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// Appends scenarios to the script.
    pub fn push(&self, scenarios: impl IntoIterator<Item = Scenario>) {
        self.script.lock().expect("fake script lock poisoned").extend(scenarios);
    }

    /// The next scripted scenario, or the default reply.
    pub fn next_scenario(&self) -> Scenario {
        self.script.lock().expect("fake script lock poisoned").pop_front().unwrap_or_default()
    }

    /// Records a request and returns its parsed body.
    pub fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> serde_json::Value {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if self.record {
            let headers: BTreeMap<String, String> = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            self.requests.lock().expect("fake request log poisoned").push(RecordedRequest {
                method: method.to_string(),
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
                headers,
                body: json.clone(),
            });
        }
        json
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().expect("fake request log poisoned").clone()
    }

    /// Forgets the script and the request log.
    pub fn reset(&self) {
        self.script.lock().expect("fake script lock poisoned").clear();
        self.requests.lock().expect("fake request log poisoned").clear();
    }
}

/// Request bodies up to this size are accepted (Anthropic's limit is 32 MB; axum's default
/// 2 MB would refuse long prompts and large scripts).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// The router for a vendor's fake, control endpoints included.
///
/// # Errors
/// [`FakeError::NotBuilt`] for a vendor whose fake is not in this build.
pub fn router(vendor: Vendor, state: Arc<FakeState>) -> Result<Router, FakeError> {
    let vendor_routes = match vendor {
        Vendor::OpenAi => crate::openai::routes(),
        Vendor::Anthropic => crate::anthropic::routes(),
        Vendor::Bedrock => crate::bedrock::routes(),
        Vendor::Vertex => crate::vertex::routes(),
    };
    Ok(vendor_routes
        .route("/_fake/script", post(push_script))
        .route("/_fake/requests", get(list_requests))
        .route("/_fake/reset", post(reset))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state))
}

async fn push_script(
    State(state): State<Arc<FakeState>>,
    axum::Json(scenarios): axum::Json<Vec<Scenario>>,
) -> axum::Json<serde_json::Value> {
    let n = scenarios.len();
    state.push(scenarios);
    axum::Json(serde_json::json!({ "queued": n }))
}

async fn list_requests(State(state): State<Arc<FakeState>>) -> axum::Json<Vec<RecordedRequest>> {
    axum::Json(state.requests())
}

async fn reset(State(state): State<Arc<FakeState>>) -> axum::Json<serde_json::Value> {
    state.reset();
    axum::Json(serde_json::json!({ "reset": true }))
}

/// Serves a fake on a bound listener until `shutdown` resolves.
///
/// # Errors
/// [`FakeError::NotBuilt`] or an I/O error from the listener.
pub async fn serve(
    vendor: Vendor,
    state: Arc<FakeState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), FakeError> {
    let app = router(vendor, state)?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// A fake running in the background on a loopback port; stops when dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<FakeState>,
    shutdown: CancellationToken,
}

impl FakeServer {
    /// Starts a fake for `vendor` on `127.0.0.1` with a free port.
    ///
    /// # Errors
    /// [`FakeError`] when the vendor is not built or the port cannot be bound.
    pub async fn start(vendor: Vendor) -> Result<Self, FakeError> {
        Self::start_with(Arc::new(FakeState::new(vendor)), "127.0.0.1:0").await
    }

    /// Starts a fake with the given state on `addr`.
    ///
    /// # Errors
    /// [`FakeError`] when the vendor is not built or the address cannot be bound.
    pub async fn start_with(state: Arc<FakeState>, addr: &str) -> Result<Self, FakeError> {
        let app = router(state.vendor(), state.clone())?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let r = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "fake server stopped with an error");
            }
        });
        Ok(Self { addr, state, shutdown })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<FakeState> {
        &self.state
    }

    /// Appends one scenario to the script.
    pub fn push(&self, scenario: Scenario) {
        self.state.push([scenario]);
    }

    /// Recorded requests.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Binds `addr`, reports the bound address through `on_ready`, and serves until Ctrl-C; open
/// streams then get `grace` to finish (a stalled one never would).
///
/// # Errors
/// [`FakeError::NotBuilt`] (before binding) or an I/O error.
pub async fn run_until_ctrl_c(
    state: Arc<FakeState>,
    addr: &str,
    grace: std::time::Duration,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), FakeError> {
    let app = router(state.vendor(), state)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    on_ready(listener.local_addr()?);
    let stop = CancellationToken::new();
    let stop_serving = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { stop_serving.cancelled().await }).await
    });
    tokio::signal::ctrl_c().await?;
    stop.cancel();
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(r)) => r?,
        Ok(Err(join)) => return Err(FakeError::Io(std::io::Error::other(join))),
        Err(_) => tracing::warn!("open streams did not finish within the shutdown grace"),
    }
    Ok(())
}
