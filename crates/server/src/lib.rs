//! The HTTP API of Switchboard: tenants and API keys, assistants, conversations, turns (JSON or
//! SSE with resumable event ids), state, history and fork, interrupts, runs, feedback, health.
//!
//! It must not know how an assistant works inside: it gets a registry of [`Assistants`] (name →
//! description, version, [`switchboard_engine::Engine`], input function) and records its own rows
//! (keys, conversation metadata, runs, events, feedback) through [`switchboard_store::Records`].
//!
//! Key design decisions: [`app`] builds the whole router from an [`AppState`] (tests drive it
//! with `oneshot`); every error, including the rejections of extractors, unknown routes and
//! timeouts, becomes one JSON shape in [`error`]; every row is looked up with the caller's tenant,
//! so other tenants' ids answer 404 like unknown ones.

mod api;
pub mod auth;
mod bus;
pub mod dist;
pub mod erasure;
pub mod error;
pub mod extract;
mod openapi;
mod pages;
mod state;
pub mod turns;

pub use dist::{DistConfig, Distributed};
pub use error::ApiError;
pub use state::{
    AppState, Assistant, Assistants, DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_DEADLINE,
    InputFn, Limits, RateLimit, ResumeFn, TurnRecorder,
};
pub use switchboard_store::{AuditEvent, AuditLog};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::future::Future;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.records().ping().await?;
    if state.inner.closing.is_cancelled() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    Ok(axum::Json(json!({"status": "ready"})).into_response())
}

async fn openapi_json(State(state): State<AppState>) -> Response {
    axum::Json(openapi::document(&state)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let in_flight = state::lock(&state.inner.live).len();
    state.inner.metrics.set(state::RUNS_IN_FLIGHT, &[], in_flight as f64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.inner.metrics.render())
        .into_response()
}

/// Counts responses by status class.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    const CLASSES: [&str; 6] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx"];
    let class = CLASSES[usize::from(resp.status().as_u16() / 100).min(5)];
    state.inner.metrics.add(state::HTTP_RESPONSES, &[("class", class)], 1.0);
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::Rejected { status: StatusCode::METHOD_NOT_ALLOWED, message: "method not allowed on this route".into() }
}

/// Gives every request an id (the client's `X-Request-Id` when it is short and printable),
/// returns it in `X-Request-Id`, and logs one line per request: method, path (never the query
/// string or the body, which may carry customer data), status and latency, with the id.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("req_{}", state::random_hex(8)), str::to_string);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let start = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(status = resp.status().as_u16(), ms = start.elapsed().as_millis() as u64, "request");
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Answers 408 when a handler has not produced a response within the configured timeout (a
/// stream, once started, is not cut).
async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.inner.limits.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")]),
    )
}

/// The whole HTTP API over a state.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The whole HTTP API with `extra` routes (e.g. protocol adapters) merged in, under the same
/// middleware: request ids, metrics, body limit, timeout, CORS, JSON errors for unknown routes.
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let v1 = Router::new()
        .route("/assistants", get(api::list_assistants))
        .route("/assistants/{id}", get(api::get_assistant))
        .route("/conversations", post(api::create_conversation).get(api::list_conversations))
        .route("/conversations/{id}", get(api::get_conversation).delete(api::delete_conversation))
        .route("/conversations/{id}/messages", post(api::post_message))
        .route("/conversations/{id}/state", get(api::get_state))
        .route("/conversations/{id}/history", get(api::get_history))
        .route("/conversations/{id}/fork", post(api::fork))
        .route("/conversations/{id}/interrupts", get(api::list_interrupts))
        .route("/conversations/{id}/interrupts/resume", post(api::resume))
        .route("/conversations/{id}/feedback", post(api::feedback))
        .route("/customers/{customer_id}", axum::routing::delete(api::erase_customer))
        .route("/runs/{id}", get(api::get_run))
        .route("/runs/{id}/cancel", post(api::cancel_run))
        .route("/runs/{id}/events", get(api::run_events));
    let max_body = state.inner.limits.max_body_bytes;
    let cors = cors(&state.inner.limits.cors_origins);
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics))
        .merge(pages::routes())
        .nest("/v1", v1)
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(middleware::from_fn(request_id))
        .with_state(state);
    match cors {
        Some(c) => router.layer(c),
        None => router,
    }
}

/// Serves the API on `listener` until `shutdown` completes; then stops accepting connections,
/// lets runs in flight finish (cancelling them, with their progress checkpointed, at the
/// configured deadline), ends open streams, and returns once every connection is closed.
///
/// # Errors
/// I/O errors of the listener.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_router(listener, state.clone(), app(state), shutdown).await
}

/// [`run`] with extra routes (see [`app_with`]).
///
/// # Errors
/// I/O errors of the listener.
pub async fn run_with(
    listener: TcpListener,
    state: AppState,
    extra: Router<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_router(listener, state.clone(), app_with(state, extra), shutdown).await
}

/// [`run`] with a router built by the caller (e.g. [`app_with`]) over the same state.
///
/// # Errors
/// I/O errors of the listener.
pub async fn run_router(
    listener: TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop_accepting = CancellationToken::new();
    let st = state.clone();
    let stop = stop_accepting.clone();
    let drained = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining runs in flight");
        stop.cancel();
        let cancelled = st.drain().await;
        tracing::info!(cancelled, "runs drained");
    });
    let signal = stop_accepting.clone();
    // No Nagle delay: SSE events and small responses go out when written.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).with_graceful_shutdown(async move { signal.cancelled().await }).await?;
    if stop_accepting.is_cancelled() {
        let _ = drained.await;
    } else {
        drained.abort();
    }
    Ok(())
}
