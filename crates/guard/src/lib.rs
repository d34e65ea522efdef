//! Guardrails for the support assistant: PII and secret detection with real validators,
//! redaction into typed placeholders backed by an encrypted per-conversation vault,
//! prompt-injection scoring, and output / tool policy.
//!
//! It must not know about storage engines, HTTP or vendors: the vault talks to a [`vault::VaultStore`]
//! trait, the injection scorer to an [`injection::InjectionClassifier`] trait.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod detect;
pub mod entity;
pub mod eval;
pub mod injection;
pub mod logging;
pub mod output;
pub mod redact;
pub mod secret;
pub mod tool;
pub mod vault;

pub use detect::{Detector, DetectorConfig, detect};
pub use entity::{Detection, EntityType, Tier};
pub use secret::Secret;

use injection::{InjectionScorer, InjectionVerdict, Source};
use serde::Serialize;

/// Sent to the customer when a secret (recovery phrase, private key, OTP, CVV, password, API
/// secret) is detected in their message: the fixed message the rules ask for.
pub const CUSTOMER_WARNING: &str = "For your safety we removed a secret from your message. We will never ask for your recovery phrase, private keys, passwords, one-time codes or CVV. If you shared it anywhere else, move your funds to a new wallet now; we can connect you with an agent. / Por segurança removemos um dado secreto da sua mensagem. Nunca pedimos frase de recuperação, chaves privadas, senhas, códigos ou CVV. Se você compartilhou em outro lugar, transfira seus fundos para uma nova carteira; podemos chamar um atendente.";

/// Everything the input guard says about one text.
#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    /// PII and secrets found.
    pub entities: Vec<Detection>,
    /// Injection verdict.
    pub injection: InjectionVerdict,
}

impl InputReport {
    /// A secret was found: block storage and forwarding, send [`CUSTOMER_WARNING`], flag the
    /// account for takeover risk.
    pub fn has_secret(&self) -> bool {
        self.entities.iter().any(|d| d.kind.is_secret())
    }
}

/// The input guard: detectors plus injection scorer, shared by reference.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    detector: Detector,
    injection: InjectionScorer,
}

impl Guard {
    /// A guard from its parts.
    pub fn new(detector: Detector, injection: InjectionScorer) -> Self {
        Self { detector, injection }
    }

    /// The detector.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Scan a text: all detectors and the injection scorer.
    pub fn inspect(&self, text: &str, source: Source) -> InputReport {
        let span = tracing::info_span!(
            "switchboard.guard",
            otel.name = "guard input",
            switchboard.guard.check = "input",
            switchboard.guard.verdict = tracing::field::Empty,
            switchboard.guard.entities = tracing::field::Empty,
            switchboard.guard.injection_score = tracing::field::Empty,
        );
        let _entered = span.enter();
        let report =
            InputReport { entities: self.detector.detect(text), injection: self.injection.score(text, source) };
        let kinds: Vec<&str> = report.entities.iter().map(|d| d.kind.name()).collect();
        span.record("switchboard.guard.entities", kinds.join(",").as_str());
        let verdict = if report.has_secret() {
            "secret"
        } else if report.injection.flagged {
            "injection"
        } else if !report.entities.is_empty() {
            "pii"
        } else {
            "clean"
        };
        span.record("switchboard.guard.verdict", verdict);
        span.record("switchboard.guard.injection_score", f64::from(report.injection.score));
        report
    }
}
