//! What the router decided, and why.

use serde::{Deserialize, Serialize};

/// The rung of the ladder that made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    /// A compliance rule matched.
    Rule,
    /// The classifier was confident enough.
    Classifier,
    /// A run-time prototype intent was the best match.
    Prototype,
    /// Confidence below the out-of-scope threshold, or the classifier's own `oos` class.
    OutOfScope,
    /// The top two intents were too close: ask the customer.
    Clarify,
    /// The LLM fallback chose.
    LlmFallback,
}

/// The kind of outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Route to `intent`.
    Intent,
    /// Ask the customer to choose between the candidates.
    Clarify,
    /// Nothing in scope fits.
    OutOfScope,
}

/// One candidate intent with its calibrated probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Intent name.
    pub intent: String,
    /// Calibrated probability (classifier) or cosine similarity (prototype).
    pub score: f32,
}

/// The thresholds in force for this decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Below this top probability the text is out of scope (without `neighbours`; with them
    /// the combined score decides and this is 0).
    pub oos: f32,
    /// Below this top-two margin the router asks to clarify.
    pub clarify_margin: f32,
    /// Minimum cosine for a run-time prototype intent.
    pub prototype: f32,
    /// Softmax temperature from calibration.
    pub temperature: f32,
    /// The nearest-neighbour vote and out-of-scope score, when the router keeps its training
    /// examples (routers with a sentence encoder, unless trained without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbours: Option<crate::head::NeighbourThresholds>,
}

impl Thresholds {
    /// The out-of-scope threshold in force: on the combined score with neighbours, else on the
    /// top probability.
    pub fn oos_threshold(&self) -> f32 {
        self.neighbours.map_or(self.oos, |n| n.oos_score)
    }
}

impl Outcome {
    /// Stable snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intent => "intent",
            Self::Clarify => "clarify",
            Self::OutOfScope => "out_of_scope",
        }
    }
}

impl Rung {
    /// Stable snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Classifier => "classifier",
            Self::Prototype => "prototype",
            Self::OutOfScope => "out_of_scope",
            Self::Clarify => "clarify",
            Self::LlmFallback => "llm_fallback",
        }
    }
}

/// A routing decision with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Intent / clarify / out of scope.
    pub outcome: Outcome,
    /// The chosen intent (`None` when out of scope). For clarify, the top candidate.
    pub intent: Option<String>,
    /// Confidence of the chosen intent.
    pub confidence: f32,
    /// The rung that decided.
    pub rung: Rung,
    /// Top candidates, best first.
    pub candidates: Vec<Candidate>,
    /// For clarify: the two intents to offer.
    pub clarify: Vec<String>,
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// The input was cut to the encoder's limit before encoding.
    pub truncated: bool,
    /// Human-readable reasons, in ladder order.
    pub reasons: Vec<String>,
}

/// A span for one routing decision (`switchboard.route`), to be filled by
/// [`Decision::record_on`]. Its attributes follow `switchboard_telemetry::semconv`.
pub fn route_span() -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "switchboard.route",
        otel.name = "route",
        switchboard.route.outcome = Empty,
        switchboard.route.intent = Empty,
        switchboard.route.confidence = Empty,
        switchboard.route.rung = Empty,
        switchboard.route.candidates = Empty,
        switchboard.route.threshold = Empty,
        switchboard.route.reason = Empty,
    )
}

impl Decision {
    /// Records the decision's outcome, candidates with scores, threshold and reasons on a span
    /// made by [`route_span`].
    pub fn record_on(&self, span: &tracing::Span) {
        span.record("switchboard.route.outcome", self.outcome.as_str());
        if let Some(i) = &self.intent {
            span.record("switchboard.route.intent", i.as_str());
        }
        span.record("switchboard.route.confidence", f64::from(self.confidence));
        span.record("switchboard.route.rung", self.rung.as_str());
        let candidates: Vec<String> =
            self.candidates.iter().take(5).map(|c| format!("{}={:.3}", c.intent, c.score)).collect();
        span.record("switchboard.route.candidates", candidates.join(",").as_str());
        span.record("switchboard.route.threshold", f64::from(self.thresholds.oos_threshold()));
        span.record("switchboard.route.reason", self.reasons.join("; ").as_str());
    }

    /// The intent a benchmark should score: the chosen intent, or the top one for clarify.
    pub fn predicted(&self) -> Option<&str> {
        self.intent.as_deref()
    }
}
