//! The one place where errors become HTTP responses: a status and a JSON body
//! `{"error":{"code","message"}}`. Internal errors show the client a generic message and are
//! logged here, where they are handled.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchboard_engine::{EngineError, StoreError};

/// `Retry-After` of a 503 (store unreachable, shutting down).
pub const UNAVAILABLE_RETRY_SECS: u64 = 2;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials lack a scope.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// An extractor rejected the request (status and message kept).
    #[error("{message}")]
    Rejected {
        /// Its status.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// The key sent more requests than its rate limit allows.
    #[error("rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after_secs: u64,
    },
    /// The request took longer than the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// The server is shutting down or the store is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// An engine error.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an unexpected failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Status, machine-readable code, and the message the client may see.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use StatusCode as S;
        match self {
            Self::Unauthorized(m) => (S::UNAUTHORIZED, "unauthorized", m.clone()),
            Self::Forbidden(m) => (S::FORBIDDEN, "forbidden", m.clone()),
            Self::NotFound(m) => (S::NOT_FOUND, "not_found", m.clone()),
            Self::BadRequest(m) => (S::BAD_REQUEST, "bad_request", m.clone()),
            Self::Invalid(m) => (S::UNPROCESSABLE_ENTITY, "invalid_request", m.clone()),
            Self::Conflict(m) => (S::CONFLICT, "conflict", m.clone()),
            Self::Rejected { status, message } => (*status, rejection_code(*status), message.clone()),
            Self::Timeout => (S::REQUEST_TIMEOUT, "timeout", self.to_string()),
            Self::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited", self.to_string()),
            Self::Unavailable(m) => (S::SERVICE_UNAVAILABLE, "unavailable", m.clone()),
            Self::Engine(e) => match e {
                EngineError::UnknownConversation(_) | EngineError::UnknownCheckpoint { .. } => {
                    (S::NOT_FOUND, "not_found", e.to_string())
                }
                EngineError::UnknownRun(_) => (S::CONFLICT, "run_not_active", e.to_string()),
                EngineError::Busy { .. } => (S::CONFLICT, "busy", e.to_string()),
                EngineError::InterruptPending(_) => (S::CONFLICT, "interrupt_pending", e.to_string()),
                EngineError::NothingToResume(_) => (S::CONFLICT, "nothing_to_resume", e.to_string()),
                EngineError::Reducer(_) | EngineError::UnknownField { .. } | EngineError::StateTooLarge { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "invalid_request", e.to_string())
                }
                EngineError::ShuttingDown => (S::SERVICE_UNAVAILABLE, "shutting_down", e.to_string()),
                EngineError::Store(StoreError::Unavailable(_)) => {
                    (S::SERVICE_UNAVAILABLE, "unavailable", "store unavailable".into())
                }
                _ => (S::INTERNAL_SERVER_ERROR, "internal", "internal error".into()),
            },
            Self::Store(StoreError::Unavailable(_)) => {
                (S::SERVICE_UNAVAILABLE, "unavailable", "store unavailable".into())
            }
            Self::Store(_) | Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "internal error".into()),
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The error as the JSON body a client sees (also used for failed runs in SSE streams).
    pub fn body(&self) -> serde_json::Value {
        let (_, code, message) = self.parts();
        json!({"error": {"code": code, "message": message}})
    }
}

fn rejection_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        _ => "bad_request",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, _) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        }
        let body = self.body().to_string();
        let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Self::RateLimited { retry_after_secs } = self {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            // The store or the server comes back by itself: nothing was accepted, try again soon.
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(UNAVAILABLE_RETRY_SECS));
        }
        resp
    }
}
