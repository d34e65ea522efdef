//! Evaluating a router on labelled data: accuracy, macro-F1, out-of-scope precision and recall,
//! calibration error, and per-utterance latency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;

use crate::data::Example;
use crate::decision::Outcome;
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

/// Route every example one at a time and score the decisions. `oos_label` names the gold label
/// of out-of-scope items.
///
/// # Errors
/// Routing failures.
pub fn evaluate(router: &Router, data: &[Example], oos_label: &str) -> Result<EvalReport> {
    let mut gold = Vec::with_capacity(data.len());
    let mut pred = Vec::with_capacity(data.len());
    let mut conf = Vec::new();
    let mut conf_ok = Vec::new();
    let mut lat = Vec::with_capacity(data.len());
    let mut clarify = 0usize;
    for e in data {
        let t = Instant::now();
        let d = router.route(&e.text)?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if d.outcome == Outcome::Clarify {
            clarify += 1;
        }
        let p = match d.outcome {
            Outcome::OutOfScope => oos_label.to_owned(),
            _ => d.intent.clone().unwrap_or_else(|| oos_label.to_owned()),
        };
        if e.intent != oos_label
            && let Some(top) = d.candidates.first()
        {
            conf.push(top.score);
            conf_ok.push(top.intent == e.intent);
        }
        gold.push(e.intent.clone());
        pred.push(p);
    }
    lat.sort_by(f64::total_cmp);
    let n = data.len();
    let correct = gold.iter().zip(&pred).filter(|(g, p)| g == p).count();
    let in_scope: Vec<usize> = (0..n).filter(|&i| gold[i] != oos_label).collect();
    let in_correct = in_scope.iter().filter(|&&i| gold[i] == pred[i]).count();
    let in_rejected = in_scope.iter().filter(|&&i| pred[i] == oos_label).count();
    let oos_items = n - in_scope.len();
    let rejected = pred.iter().filter(|p| *p == oos_label).count();
    let oos_hits = (0..n).filter(|&i| gold[i] == oos_label && pred[i] == oos_label).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (oos_recall, oos_precision) =
        if oos_items == 0 { (None, None) } else { (Some(ratio(oos_hits, oos_items)), Some(ratio(oos_hits, rejected))) };
    Ok(EvalReport {
        n,
        accuracy: ratio(correct, n),
        macro_f1: macro_f1(&gold, &pred),
        in_scope_accuracy: ratio(in_correct, in_scope.len()),
        oos_recall,
        oos_precision,
        ece: expected_calibration_error(&conf, &conf_ok, 15),
        clarify_rate: ratio(clarify, n),
        in_scope_rejection_rate: ratio(in_rejected, in_scope.len()),
        latency_ms: Latency { p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99) },
    })
}

/// Macro-F1 over the union of gold and predicted labels.
pub fn macro_f1(gold: &[String], pred: &[String]) -> f64 {
    let labels: BTreeSet<&str> = gold.iter().chain(pred).map(String::as_str).collect();
    let mut tp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut fp: BTreeMap<&str, usize> = BTreeMap::new();
    let mut fneg: BTreeMap<&str, usize> = BTreeMap::new();
    for (g, p) in gold.iter().zip(pred) {
        if g == p {
            *tp.entry(g).or_default() += 1;
        } else {
            *fp.entry(p).or_default() += 1;
            *fneg.entry(g).or_default() += 1;
        }
    }
    if labels.is_empty() {
        return 0.0;
    }
    let sum: f64 = labels
        .iter()
        .map(|l| {
            let t = *tp.get(l).unwrap_or(&0) as f64;
            let denom = 2.0 * t + *fp.get(l).unwrap_or(&0) as f64 + *fneg.get(l).unwrap_or(&0) as f64;
            if denom == 0.0 { 0.0 } else { 2.0 * t / denom }
        })
        .sum();
    sum / labels.len() as f64
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
}
