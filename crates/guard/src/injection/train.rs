//! Training and evaluating the lexical injection model on a labelled JSONL corpus
//! (`{"text", "label": "injection"|"benign", "source", "lang", "category", "pair"}`).
//!
//! The dev split is carved deterministically: a row is dev when a hash of its `pair` (so both
//! halves of a BIPIA e-mail pair fall on the same side) or else its text falls in the first
//! `dev_percent` of 100 buckets. The model is trained on the rest only, its weights quantised,
//! and then the decision threshold of the *combined* scorer (rules + model) is chosen on the dev
//! split: the lowest threshold whose dev false-positive rate is at most `target_fpr`.

use serde::Deserialize;
use std::sync::Arc;

use super::lexical::{DEFAULT_BITS, LexicalModel, LogRegConfig};
use super::normalize::normalize;
use super::{InjectionScorer, Source};
use crate::eval::{InjectionScore, Labels};

/// One labelled row.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    /// The text.
    pub text: String,
    /// Labels and metadata.
    #[serde(flatten)]
    pub labels: Labels,
}

impl Row {
    /// Whether the row is labelled `injection`.
    pub fn is_injection(&self) -> bool {
        self.labels.label.as_deref() == Some("injection")
    }
}

/// Reading the corpus failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Line `line` is not a JSON object with `text` and `label`.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Parse JSONL text into rows (blank lines skipped; rows without `label` dropped).
///
/// # Errors
/// [`TrainError::Json`] on the first malformed line.
pub fn parse_rows(jsonl: &str) -> Result<Vec<Row>, TrainError> {
    let mut rows = Vec::new();
    for (i, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|source| TrainError::Json { line: i + 1, source })?;
        if row.labels.label.is_some() {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Extra training rows written for this project (CC0): support messages that use words attacks
/// use ("ignore my previous message", "I'm the admin", "instruções do app") and attacks in the
/// domain's own wording, English and Portuguese. Always trained on, never evaluated.
pub const AUGMENT_JSONL: &str = include_str!("../../data/injection/augment.jsonl");

/// Options of [`train_injection`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Rows added to every training set (see [`AUGMENT_JSONL`]).
    pub extra: Vec<Row>,
    /// Share of rows (in percent) held out as the dev split.
    pub dev_percent: u64,
    /// Target false-positive rate on dev benign rows.
    pub target_fpr: f64,
    /// Hash space bits.
    pub bits: u32,
    /// Optimiser settings.
    pub logreg: LogRegConfig,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            extra: parse_rows(AUGMENT_JSONL).expect("the shipped augmentation file parses"),
            dev_percent: 20,
            target_fpr: 0.03,
            bits: DEFAULT_BITS,
            logreg: LogRegConfig::default(),
        }
    }
}

/// The row's bucket in 0..100: a hash of its `pair` (both halves of a BIPIA pair together) or
/// else its text.
fn bucket(row: &Row) -> u64 {
    let key = row.labels.pair.as_deref().unwrap_or(&row.text);
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    h % 100
}

/// Whether a row belongs to the dev split.
pub fn is_dev(row: &Row, dev_percent: u64) -> bool {
    bucket(row) < dev_percent
}

/// Out-of-fold scores: the rows are cut into `folds` parts by the same hash (part 0 of 5 is the
/// dev split), each part is scored by a model trained on the others, all at `threshold`. Gives a
/// held-out figure for every row, e.g. all 70 Portuguese ones, not only the dev split's few.
pub fn cross_validate(rows: &[Row], folds: u64, threshold: f32, opts: &TrainOptions) -> InjectionScore {
    let folds = folds.clamp(2, 100);
    let fold_of = |r: &Row| bucket(r) * folds / 100;
    let mut score = InjectionScore::default();
    for f in 0..folds {
        let examples = examples_of(rows.iter().filter(|r| fold_of(r) != f).chain(&opts.extra));
        let model = LexicalModel::train(&examples, opts.bits, &opts.logreg);
        let scorer = InjectionScorer::new(Some(Arc::new(model)), threshold);
        for r in rows.iter().filter(|r| fold_of(r) == f) {
            score.add(&r.labels, scorer.score(&r.text, source_of(r)).flagged);
        }
    }
    score
}

/// Lowest threshold with at most `target_fpr` of `benign_scores` at or above it.
pub fn choose_threshold(benign_scores: &[f32], target_fpr: f64) -> f32 {
    let mut s = benign_scores.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let allowed = (target_fpr * s.len() as f64).floor() as usize;
    match s.get(allowed) {
        Some(&x) => (x + 1e-4).min(1.0),
        None => 0.0,
    }
}

/// Outcome of training.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Rows trained on.
    pub n_train: usize,
    /// Rows in the dev split.
    pub n_dev: usize,
    /// Chosen threshold.
    pub threshold: f32,
    /// Scores on the dev split.
    pub dev: InjectionScore,
    /// Scores on every row (train rows included: optimistic).
    pub all: InjectionScore,
}

/// How a labelled row is scored: rows of the `indirect*` categories (BIPIA e-mails) are tool /
/// document output, everything else a user turn.
pub fn source_of(row: &Row) -> Source {
    match row.labels.category.as_deref() {
        Some(c) if c.starts_with("indirect") => Source::ToolOutput,
        _ => Source::User,
    }
}

/// Score `rows` with `scorer`.
pub fn evaluate<'a>(scorer: &InjectionScorer, rows: impl IntoIterator<Item = &'a Row>) -> InjectionScore {
    let mut score = InjectionScore::default();
    for r in rows {
        let v = scorer.score(&r.text, source_of(r));
        score.add(&r.labels, v.flagged);
    }
    score
}

fn examples_of<'a>(rows: impl Iterator<Item = &'a Row>) -> Vec<(String, bool)> {
    rows.map(|r| (normalize(&r.text).combined(), r.is_injection())).collect()
}

/// Train the lexical model on the non-dev rows (plus `extra`) and pick the threshold on the dev rows.
pub fn train_injection(rows: &[Row], opts: &TrainOptions) -> (LexicalModel, TrainReport) {
    let (dev, train): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| is_dev(r, opts.dev_percent));
    let examples = examples_of(train.iter().copied().chain(&opts.extra));
    // the model holds quantised weights: the threshold is chosen on exactly what ships
    let mut model = LexicalModel::train(&examples, opts.bits, &opts.logreg);
    let probe = InjectionScorer::new(Some(Arc::new(model.clone())), 0.5);
    let benign: Vec<f32> =
        dev.iter().filter(|r| !r.is_injection()).map(|r| probe.score(&r.text, source_of(r)).score).collect();
    model.threshold = choose_threshold(&benign, opts.target_fpr);
    let scorer = InjectionScorer::new(Some(Arc::new(model.clone())), model.threshold);
    let report = TrainReport {
        n_train: train.len(),
        n_dev: dev.len(),
        threshold: model.threshold,
        dev: evaluate(&scorer, dev.iter().copied()),
        all: evaluate(&scorer, rows),
    };
    (model, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_meets_target() {
        let benign: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = choose_threshold(&benign, 0.05);
        let flagged = benign.iter().filter(|&&s| s >= t).count();
        assert!(flagged <= 5, "{flagged}");
        assert!(flagged >= 4);
    }

    #[test]
    fn dev_split_keeps_pairs_together() {
        let row = |text: &str, pair: Option<&str>| Row {
            text: text.into(),
            labels: Labels { pair: pair.map(Into::into), label: Some("benign".into()), ..Labels::default() },
        };
        for i in 0..50 {
            let p = format!("p{i}");
            assert_eq!(is_dev(&row("clean e-mail", Some(&p)), 20), is_dev(&row("attacked e-mail", Some(&p)), 20));
        }
        let rows = parse_rows("{\"text\":\"a\",\"label\":\"benign\"}\n\n{\"text\":\"b\"}\n").unwrap();
        assert_eq!(rows.len(), 1);
    }
}
