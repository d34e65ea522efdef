//! [`ProviderError`]: one typed error for every way a model call can fail.
//!
//! Each variant is a case a caller acts on. Vendor errors keep the vendor, the HTTP status, the
//! vendor's error type and whether a retry can help, so resilience layers decide from data, not
//! from strings. No variant ever carries an API key: adapters build messages from response
//! bodies and strip URLs from transport errors.

use std::time::Duration;

/// Which phase of a call a timeout hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Establishing the TCP/TLS connection.
    Connect,
    /// Waiting for the first response byte or stream event.
    FirstByte,
    /// Waiting between two stream events (a stalled stream).
    Idle,
    /// The whole call, start to end.
    Total,
}

/// An error from a model call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The vendor answered with an error status (or an error event mid-stream).
    #[error("{vendor} returned {status} {kind}: {message}")]
    Api {
        /// Vendor name, e.g. `openai`.
        vendor: &'static str,
        /// HTTP status (for mid-stream errors, the status the error type maps to).
        status: u16,
        /// The vendor's error type or code, e.g. `rate_limit_error`.
        kind: String,
        /// The vendor's message.
        message: String,
        /// Whether retrying the same request can succeed.
        retryable: bool,
        /// How long the vendor asked us to wait.
        retry_after: Option<Duration>,
        /// The vendor's request id, for support tickets.
        request_id: Option<String>,
    },
    /// The prompt does not fit the model's context window; never retried, a fallback to a
    /// larger model may help.
    #[error("{vendor}: context window exceeded: {message}")]
    ContextOverflow {
        /// Vendor name.
        vendor: &'static str,
        /// The vendor's message.
        message: String,
    },
    /// A timeout.
    #[error("request to {vendor} timed out ({phase:?}) after {after:?}")]
    Timeout {
        /// Vendor or layer name.
        vendor: &'static str,
        /// Which phase.
        phase: TimeoutPhase,
        /// The configured limit.
        after: Duration,
    },
    /// The connection failed or broke (refused, reset, closed mid-body).
    #[error("transport error talking to {vendor}: {message}")]
    Transport {
        /// Vendor name.
        vendor: &'static str,
        /// What happened (never includes the URL).
        message: String,
        /// Whether the failure happened before any byte was sent back (connect errors).
        connect: bool,
    },
    /// The vendor sent something we cannot decode (bad JSON, broken SSE, a stream that ended
    /// without its terminator).
    #[error("{vendor} sent a malformed response: {message}")]
    Protocol {
        /// Vendor name.
        vendor: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The circuit breaker for this (provider, model) is open.
    #[error("circuit open for {provider}/{model}; retry in {retry_in:?}")]
    CircuitOpen {
        /// Provider name.
        provider: String,
        /// Model id.
        model: String,
        /// Time until the next half-open probe.
        retry_in: Duration,
    },
    /// A local limit refused the call (tenant token bucket, concurrency limit).
    #[error("rate limited locally ({scope}); retry in {retry_in:?}")]
    RateLimited {
        /// What limited it, e.g. `tenant acme`.
        scope: String,
        /// When a retry may pass.
        retry_in: Duration,
    },
    /// A budget is spent.
    #[error("budget exceeded for {scope}: spent {spent_micros} of {limit_micros} micro-USD")]
    BudgetExceeded {
        /// Which budget, e.g. `tenant acme`.
        scope: String,
        /// The limit.
        limit_micros: u64,
        /// Already spent.
        spent_micros: u64,
    },
    /// The request cannot be sent as built (invalid for this vendor, bad configuration).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The reply did not satisfy the requested JSON Schema, even after the repair retry.
    #[error("structured output invalid after repair: {0}")]
    StructuredOutput(String),
    /// The caller cancelled the call.
    #[error("cancelled")]
    Cancelled,
}

impl ProviderError {
    /// A short, stable name of the error's kind (the `error.type` of a span, metric labels).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Api { .. } => "api",
            Self::ContextOverflow { .. } => "context_overflow",
            Self::Timeout { .. } => "timeout",
            Self::Transport { .. } => "transport",
            Self::Protocol { .. } => "protocol",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::RateLimited { .. } => "rate_limited",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::InvalidRequest(_) => "invalid_request",
            Self::StructuredOutput(_) => "structured_output",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether retrying the same request against the same model can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { retryable, .. } => *retryable,
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::Protocol { .. } => false,
            _ => false,
        }
    }

    /// Whether a fallback chain should try the next model: anything that is about this model
    /// or vendor being unavailable, not about the request itself.
    pub fn should_fall_back(&self) -> bool {
        match self {
            Self::Api { status, .. } => self.is_retryable() || matches!(status, 401 | 403 | 404 | 429 | 500..=599),
            Self::ContextOverflow { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::Protocol { .. }
            | Self::CircuitOpen { .. }
            | Self::RateLimited { .. } => true,
            _ => false,
        }
    }

    /// Whether this failure says the model is unhealthy (counts against a circuit breaker).
    pub fn is_health_failure(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::Timeout { .. } | Self::Transport { .. } | Self::Protocol { .. } => true,
            _ => false,
        }
    }

    /// The wait the vendor asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            Self::CircuitOpen { retry_in, .. } | Self::RateLimited { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }

    /// The HTTP status, for vendor errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::ContextOverflow { .. } => Some(400),
            _ => None,
        }
    }

    /// The vendor the error came from, when it came from one.
    pub fn vendor(&self) -> Option<&'static str> {
        match self {
            Self::Api { vendor, .. }
            | Self::ContextOverflow { vendor, .. }
            | Self::Timeout { vendor, .. }
            | Self::Transport { vendor, .. }
            | Self::Protocol { vendor, .. } => Some(vendor),
            _ => None,
        }
    }

    /// Shorthand for a protocol error.
    pub fn protocol(vendor: &'static str, message: impl Into<String>) -> Self {
        Self::Protocol { vendor, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, retryable: bool) -> ProviderError {
        ProviderError::Api {
            vendor: "openai",
            status,
            kind: "x".into(),
            message: "m".into(),
            retryable,
            retry_after: None,
            request_id: None,
        }
    }

    #[test]
    fn classification() {
        assert!(api(429, true).is_retryable());
        assert!(!api(400, false).is_retryable());
        assert!(!api(400, false).should_fall_back());
        assert!(api(401, false).should_fall_back());
        assert!(api(503, true).is_health_failure());
        assert!(!api(400, false).is_health_failure());
        assert!(!ProviderError::Cancelled.should_fall_back());
        let msg = api(503, true).to_string();
        assert!(msg.contains("openai") && msg.contains("503"), "{msg}");
    }
}
