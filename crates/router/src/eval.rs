//! Evaluating a router on labelled data: accuracy, macro-F1, out-of-scope precision and recall,
//! calibration error, and per-utterance latency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use crate::data::Example;
use crate::decision::{Outcome, Thresholds};
use crate::error::Result;
use crate::head::calibrate::expected_calibration_error;
use crate::router::Router;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The evaluation report (`switchboard router eval --json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    /// Items evaluated.
    pub n: usize,
    /// Fraction predicted exactly (out-of-scope predicted for an `oos` item counts as right).
    pub accuracy: f64,
    /// Macro-averaged F1 over gold and predicted labels (`oos` included when present).
    pub macro_f1: f64,
    /// Accuracy on the in-scope items (rejecting one counts as wrong).
    pub in_scope_accuracy: f64,
    /// Of the `oos` items, the fraction rejected; `null` when the data has none.
    pub oos_recall: Option<f64>,
    /// Of the rejections, the fraction that were `oos` items; `null` when the data has none.
    pub oos_precision: Option<f64>,
    /// Expected calibration error of the top-1 confidence on in-scope items (15 bins).
    pub ece: f64,
    /// Fraction of decisions that asked to clarify.
    pub clarify_rate: f64,
    /// Fraction of in-scope items rejected as out of scope.
    pub in_scope_rejection_rate: f64,
    /// Of the in-scope items, the fraction whose top candidate is the gold intent, whatever
    /// the decision (no rejection, no clarify): the closed-set accuracy that benchmarks
    /// without out-of-scope items, such as BANKING77, report.
    pub top1_accuracy: f64,
    /// Per-utterance latency of `route`, one utterance at a time.
    pub latency_ms: Latency,
}

/// Percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One evaluated utterance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    /// Gold label.
    pub gold: String,
    /// Predicted label (`oos_label` for a rejection).
    pub pred: String,
    /// The classifier's best intent, whatever the decision.
    pub top_intent: Option<String>,
    /// Its calibrated probability (0 when there is no candidate).
    pub top_score: f32,
    /// The router asked to clarify.
    pub clarify: bool,
    /// Time to route this utterance alone, in milliseconds.
    pub latency_ms: f64,
}

/// Every item of an evaluation with the summary and the router's thresholds: what the HTML
/// report plots.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evaluation {
    /// The summary figures.
    pub report: EvalReport,
    /// One entry per utterance, in data order.
    pub items: Vec<Item>,
    /// Gold label of out-of-scope items.
    pub oos_label: String,
    /// The thresholds the router decided with.
    pub thresholds: Thresholds,
}

/// Route every example one at a time and score the decisions. `oos_label` names the gold label
/// of out-of-scope items.
///
/// # Errors
/// Routing failures.
pub fn evaluate(router: &Router, data: &[Example], oos_label: &str) -> Result<EvalReport> {
    Ok(evaluate_items(router, data, oos_label)?.report)
}

/// Like [`evaluate`], keeping every item for plots.
///
/// # Errors
/// Routing failures.
pub fn evaluate_items(router: &Router, data: &[Example], oos_label: &str) -> Result<Evaluation> {
    let mut items = Vec::with_capacity(data.len());
    for e in data {
        let t = Instant::now();
        let d = router.route(&e.text)?;
        let latency_ms = t.elapsed().as_secs_f64() * 1000.0;
        let pred = match d.outcome {
            Outcome::OutOfScope => oos_label.to_owned(),
            _ => d.intent.clone().unwrap_or_else(|| oos_label.to_owned()),
        };
        let top = d.candidates.first();
        items.push(Item {
            gold: e.intent.clone(),
            pred,
            top_intent: top.map(|c| c.intent.clone()),
            top_score: top.map_or(0.0, |c| c.score),
            clarify: d.outcome == Outcome::Clarify,
            latency_ms,
        });
    }
    let report = summarize(&items, oos_label);
    Ok(Evaluation { report, items, oos_label: oos_label.to_owned(), thresholds: router.thresholds() })
}

/// The summary figures of evaluated items.
pub fn summarize(items: &[Item], oos_label: &str) -> EvalReport {
    let n = items.len();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let is_oos = |i: &Item| i.gold == oos_label;
    let (mut conf, mut conf_ok) = (Vec::new(), Vec::new());
    for i in items.iter().filter(|i| !is_oos(i) && i.top_intent.is_some()) {
        conf.push(i.top_score);
        conf_ok.push(i.top_intent.as_deref() == Some(i.gold.as_str()));
    }
    let mut lat: Vec<f64> = items.iter().map(|i| i.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let correct = items.iter().filter(|i| i.gold == i.pred).count();
    let in_scope = items.iter().filter(|i| !is_oos(i)).count();
    let in_correct = items.iter().filter(|i| !is_oos(i) && i.gold == i.pred).count();
    let in_rejected = items.iter().filter(|i| !is_oos(i) && i.pred == oos_label).count();
    let rejected = items.iter().filter(|i| i.pred == oos_label).count();
    let oos_hits = items.iter().filter(|i| is_oos(i) && i.pred == oos_label).count();
    let oos_items = n - in_scope;
    let (oos_recall, oos_precision) =
        if oos_items == 0 { (None, None) } else { (Some(ratio(oos_hits, oos_items)), Some(ratio(oos_hits, rejected))) };
    let gold: Vec<String> = items.iter().map(|i| i.gold.clone()).collect();
    let pred: Vec<String> = items.iter().map(|i| i.pred.clone()).collect();
    EvalReport {
        n,
        accuracy: ratio(correct, n),
        macro_f1: macro_f1(&gold, &pred),
        in_scope_accuracy: ratio(in_correct, in_scope),
        oos_recall,
        oos_precision,
        ece: expected_calibration_error(&conf, &conf_ok, 15),
        clarify_rate: ratio(items.iter().filter(|i| i.clarify).count(), n),
        in_scope_rejection_rate: ratio(in_rejected, in_scope),
        top1_accuracy: ratio(
            items.iter().filter(|i| !is_oos(i) && i.top_intent.as_deref() == Some(i.gold.as_str())).count(),
            in_scope,
        ),
        latency_ms: Latency { p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99) },
    }
}

/// Precision, recall, F1 and support of one label.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelScore {
    /// The label.
    pub label: String,
    /// Gold items with this label.
    pub support: usize,
    /// Of the predictions of this label, the fraction right.
    pub precision: f64,
    /// Of the gold items of this label, the fraction predicted.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
}

/// Per-label scores over the union of gold and predicted labels, by label name.
pub fn per_label(gold: &[String], pred: &[String]) -> Vec<LabelScore> {
    let mut tp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut fp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut fneg: BTreeMap<&str, usize> = BTreeMap::new();
    let mut support: BTreeMap<&str, usize> = BTreeMap::new();
    let labels: BTreeSet<&str> = gold.iter().chain(pred).map(String::as_str).collect();
    for (g, p) in gold.iter().zip(pred) {
        *support.entry(g).or_default() += 1;
        if g == p {
            *tp.entry(g).or_default() += 1;
        } else {
            *fp.entry(p).or_default() += 1;
            *fneg.entry(g).or_default() += 1;
        }
    }
    let get = |m: &BTreeMap<&str, usize>, l: &str| *m.get(l).unwrap_or(&0) as f64;
    labels
        .into_iter()
        .map(|l| {
            let (t, f_p, f_n) = (get(&tp, l), get(&fp, l), get(&fneg, l));
            let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
            LabelScore {
                label: l.to_owned(),
                support: *support.get(l).unwrap_or(&0),
                precision: div(t, t + f_p),
                recall: div(t, t + f_n),
                f1: div(2.0 * t, 2.0 * t + f_p + f_n),
            }
        })
        .collect()
}

/// Macro-F1 over the union of gold and predicted labels.
pub fn macro_f1(gold: &[String], pred: &[String]) -> f64 {
    let scores = per_label(gold, pred);
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().map(|s| s.f1).sum::<f64>() / scores.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_and_percentiles() {
        let g: Vec<String> = ["a", "a", "b", "b"].iter().map(|s| (*s).to_owned()).collect();
        assert!((macro_f1(&g, &g) - 1.0).abs() < 1e-12);
        let p: Vec<String> = ["a", "b", "b", "b"].iter().map(|s| (*s).to_owned()).collect();
        // a: tp1 fp0 fn1 -> 2/3; b: tp2 fp1 fn0 -> 4/5
        assert!((macro_f1(&g, &p) - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert_eq!(percentile(&v, 0.99), 4.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn top1_accuracy_ignores_rejection_and_out_of_scope_items() {
        let item = |gold: &str, pred: &str, top: &str| Item {
            gold: gold.into(),
            pred: pred.into(),
            top_intent: Some(top.into()),
            top_score: 0.5,
            clarify: false,
            latency_ms: 1.0,
        };
        // a rejected-but-right item, a wrong one, a right one, and an oos item.
        let items = [item("a", "oos", "a"), item("a", "b", "b"), item("b", "b", "b"), item("oos", "oos", "a")];
        let r = summarize(&items, "oos");
        assert!((r.top1_accuracy - 2.0 / 3.0).abs() < 1e-12, "{r:?}");
        assert!((r.in_scope_accuracy - 1.0 / 3.0).abs() < 1e-12, "{r:?}");
    }
}
