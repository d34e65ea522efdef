//! Scoring against labelled data: the PII corpus (`entities`, `near_miss`) and the injection
//! corpus (`label`). Used by `switchboard guard scan` for its summary line and by the tests.
//!
//! PII matching is by type and overlapping span. Recall counts every gold entity (redactor view:
//! strict and fail-safe tiers both count); the validator is scored separately by comparing the
//! detection's `valid` with the gold `valid`. A near miss in a line without entities must not be
//! flagged at all.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::entity::Detection;

/// One gold entity of the PII corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct GoldEntity {
    /// Type name (`CREDIT_CARD`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Start in chars.
    pub start: usize,
    /// End in chars (exclusive).
    pub end: usize,
    /// Whether it passes the strict validator.
    #[serde(default = "yes")]
    pub valid: bool,
}

fn yes() -> bool {
    true
}

/// A string that looks like PII but must not be flagged (when the line has no entity).
#[derive(Debug, Clone, Deserialize)]
pub struct NearMiss {
    /// Why it is a near miss.
    pub kind: String,
    /// Start in chars.
    pub start: usize,
    /// End in chars.
    pub end: usize,
}

/// Labels a JSONL input line may carry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Labels {
    /// Gold PII entities.
    pub entities: Option<Vec<GoldEntity>>,
    /// Near misses.
    #[serde(default)]
    pub near_miss: Vec<NearMiss>,
    /// Injection label: `injection` or `benign`.
    pub label: Option<String>,
    /// Data source.
    pub source: Option<String>,
    /// Language.
    pub lang: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// BIPIA pair id.
    pub pair: Option<String>,
}

/// Counts for one entity type.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TypeCounts {
    /// Gold entities of this type.
    pub gold: usize,
    /// Gold entities found (overlapping detection of the same type).
    pub found: usize,
    /// Detections of this type.
    pub predicted: usize,
    /// Detections of this type that match a gold entity.
    pub predicted_correct: usize,
    /// Found entities whose `valid` agrees with the gold `valid`.
    pub valid_agree: usize,
}

impl TypeCounts {
    /// Recall over all gold entities.
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.gold)
    }
    /// Precision over detections.
    pub fn precision(&self) -> f64 {
        ratio(self.predicted_correct, self.predicted)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// PII scores over a labelled set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PiiScore {
    /// Per type name.
    pub per_type: BTreeMap<String, TypeCounts>,
    /// Near misses (in lines without entities) seen.
    pub near_miss_total: usize,
    /// Near misses flagged (false positives).
    pub near_miss_flagged: usize,
    /// Near misses that are labelled entities with `valid: false` but were called valid.
    pub invalid_called_valid: usize,
    /// Labelled invalid entities seen.
    pub invalid_total: usize,
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

impl PiiScore {
    /// Add one labelled line.
    pub fn add(&mut self, gold: &[GoldEntity], near_miss: &[NearMiss], got: &[Detection]) {
        for g in gold {
            let c = self.per_type.entry(g.kind.clone()).or_default();
            c.gold += 1;
            let hit = got.iter().find(|d| d.kind.name() == g.kind && overlaps((d.start, d.end), (g.start, g.end)));
            if let Some(d) = hit {
                c.found += 1;
                if d.valid == g.valid {
                    c.valid_agree += 1;
                }
                if !g.valid && d.valid {
                    self.invalid_called_valid += 1;
                }
            }
            if !g.valid {
                self.invalid_total += 1;
            }
        }
        for d in got {
            let c = self.per_type.entry(d.kind.name().to_owned()).or_default();
            c.predicted += 1;
            if gold.iter().any(|g| d.kind.name() == g.kind && overlaps((d.start, d.end), (g.start, g.end))) {
                c.predicted_correct += 1;
            }
        }
        if gold.is_empty() {
            for n in near_miss {
                self.near_miss_total += 1;
                if got.iter().any(|d| overlaps((d.start, d.end), (n.start, n.end))) {
                    self.near_miss_flagged += 1;
                }
            }
        }
    }

    /// Share of near misses flagged.
    pub fn near_miss_fpr(&self) -> f64 {
        if self.near_miss_total == 0 { 0.0 } else { self.near_miss_flagged as f64 / self.near_miss_total as f64 }
    }

    /// Compact JSON summary.
    pub fn summary(&self) -> serde_json::Value {
        let per_type: serde_json::Map<String, serde_json::Value> = self
            .per_type
            .iter()
            .map(|(k, c)| {
                (
                    k.clone(),
                    serde_json::json!({
                        "gold": c.gold,
                        "recall": round3(c.recall()),
                        "precision": round3(c.precision()),
                        "validator_agreement": round3(ratio(c.valid_agree, c.found)),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "per_type": per_type,
            "near_miss_fpr": round3(self.near_miss_fpr()),
            "near_miss": {"total": self.near_miss_total, "flagged": self.near_miss_flagged},
            "invalid_called_valid": self.invalid_called_valid,
            "invalid_total": self.invalid_total,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Confusion counts for a binary detector.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Confusion {
    /// Injections flagged.
    pub tp: usize,
    /// Injections missed.
    pub fn_: usize,
    /// Benign flagged.
    pub fp: usize,
    /// Benign passed.
    pub tn: usize,
}

impl Confusion {
    /// Add one outcome.
    pub fn add(&mut self, is_injection: bool, flagged: bool) {
        match (is_injection, flagged) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }
    /// True-positive rate with its Wilson 95% interval.
    pub fn tpr(&self) -> (f64, f64, f64) {
        wilson(self.tp, self.tp + self.fn_)
    }
    /// False-positive rate with its Wilson 95% interval.
    pub fn fpr(&self) -> (f64, f64, f64) {
        wilson(self.fp, self.fp + self.tn)
    }
    /// JSON with rates and intervals (null where a class is absent).
    pub fn to_json(&self) -> serde_json::Value {
        let f = |(p, lo, hi): (f64, f64, f64), n: usize| {
            if n == 0 { serde_json::Value::Null } else { serde_json::json!([round3(p), round3(lo), round3(hi)]) }
        };
        serde_json::json!({
            "n_injection": self.tp + self.fn_,
            "n_benign": self.fp + self.tn,
            "tpr": f(self.tpr(), self.tp + self.fn_),
            "fpr": f(self.fpr(), self.fp + self.tn),
        })
    }
}

/// Wilson score interval at 95%: (rate, low, high).
pub fn wilson(k: usize, n: usize) -> (f64, f64, f64) {
    if n == 0 {
        return (0.0, 0.0, 1.0);
    }
    let z = 1.959_964_f64;
    let n_f = n as f64;
    let p = k as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n_f)) / n_f).sqrt() / denom;
    (p, (centre - half).max(0.0), (centre + half).min(1.0))
}

/// Injection scores, overall and by group.
#[derive(Debug, Clone, Default)]
pub struct InjectionScore {
    /// All rows.
    pub overall: Confusion,
    /// By `lang`.
    pub by_lang: BTreeMap<String, Confusion>,
    /// By `category`.
    pub by_category: BTreeMap<String, Confusion>,
    /// By `source` (shortened to the part before the first space or `@`).
    pub by_source: BTreeMap<String, Confusion>,
}

impl InjectionScore {
    /// Add one labelled row.
    pub fn add(&mut self, labels: &Labels, flagged: bool) {
        let Some(label) = labels.label.as_deref() else {
            return;
        };
        let inj = label == "injection";
        self.overall.add(inj, flagged);
        if let Some(l) = &labels.lang {
            self.by_lang.entry(l.clone()).or_default().add(inj, flagged);
        }
        if let Some(c) = &labels.category {
            let c = c.split(':').next().unwrap_or(c);
            self.by_category.entry(c.to_owned()).or_default().add(inj, flagged);
        }
        if let Some(s) = &labels.source {
            let s = s.split([' ', '@', '[']).next().unwrap_or(s);
            self.by_source.entry(s.to_owned()).or_default().add(inj, flagged);
        }
    }

    /// Whether any row was labelled.
    pub fn is_empty(&self) -> bool {
        self.overall.tp + self.overall.fn_ + self.overall.fp + self.overall.tn == 0
    }

    /// JSON summary.
    pub fn summary(&self) -> serde_json::Value {
        let m = |b: &BTreeMap<String, Confusion>| {
            b.iter().map(|(k, c)| (k.clone(), c.to_json())).collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "overall": self.overall.to_json(),
            "by_lang": m(&self.by_lang),
            "by_category": m(&self.by_category),
            "by_source": m(&self.by_source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_is_sane() {
        let (p, lo, hi) = wilson(5, 100);
        assert!((p - 0.05).abs() < 1e-9);
        assert!(lo > 0.01 && lo < 0.05 && hi > 0.05 && hi < 0.12);
        assert_eq!(wilson(0, 0), (0.0, 0.0, 1.0));
    }
}
