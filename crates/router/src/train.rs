//! Training a router: featurize, fit the head, calibrate, fit thresholds, refit, package.
//!
//! Without a validation file, a seeded stratified part of the training data is held out for
//! temperature scaling and thresholds, then the head is refitted on everything with the same
//! settings (the temperature and thresholds carry over). With a validation file the head is
//! fitted on the training data and calibrated on the validation data.
//!
//! With a sentence encoder the router also keeps the training sentences' embeddings
//! ([`crate::head::Neighbours`]): on the held-out part it picks the weight of their vote
//! among [`VOTE_WEIGHTS`] by log-loss, and fits the out-of-scope score (top probability and
//! similarity to the nearest in-scope examples) for the target rejection rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::artifact::{ARTIFACT_VERSION, Artifact, Manifest, TrainMetrics, VoteWeightScore};
use crate::data::{Example, hash_examples, stratified_split};
use crate::decision::Thresholds;
use crate::encoder::{BertEncoder, EncoderInfo, Features, Featurizer, LexicalEncoder};
use crate::error::{Result, RouterError};
use crate::head::calibrate::{expected_calibration_error, fit_temperature, softmax, threshold_for_rejection_rate};
use crate::head::neighbours::{Look, mix_votes};
use crate::head::{LogReg, LogRegConfig, NeighbourThresholds, Neighbours, PrototypeHead};
use crate::rules::RuleSpec;

/// Settings of a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Label of out-of-scope examples in the data.
    pub oos_label: Option<String>,
    /// Seed for splits.
    pub seed: u64,
    /// Fraction held out for calibration when no validation data is given.
    pub calibration_fraction: f32,
    /// Fraction of in-scope held-out items the OOS threshold may reject.
    pub target_rejection: f32,
    /// Clarify when the top two calibrated probabilities are closer than this.
    pub clarify_margin: f32,
    /// Minimum cosine for run-time prototype intents (`None`: fitted on held-out data).
    pub prototype_threshold: Option<f32>,
    /// Head settings.
    pub head: LogRegConfig,
    /// Lexical block width (0: no lexical block; forced on when there is no sentence encoder).
    pub lexical_dim: usize,
    /// Weight of the lexical block next to the sentence embedding.
    pub lexical_weight: f32,
    /// Rules to ship with the router.
    pub rules: Vec<RuleSpec>,
    /// Persistent embedding cache for repeated runs (training only).
    pub embedding_cache: Option<Arc<crate::encoder::EmbeddingCache>>,
    /// Keep the training sentences' embeddings for the neighbour vote and the out-of-scope
    /// score (routers with a sentence encoder only).
    pub neighbours: bool,
    /// Weight of the neighbour similarity in the out-of-scope score.
    pub neighbour_oos_weight: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            oos_label: None,
            seed: 13,
            calibration_fraction: 0.1,
            target_rejection: 0.02,
            clarify_margin: 0.0,
            prototype_threshold: None,
            head: LogRegConfig::default(),
            lexical_dim: crate::encoder::lexical::DEFAULT_LEXICAL_DIM,
            lexical_weight: 1.0,
            rules: Vec::new(),
            embedding_cache: None,
            neighbours: true,
            neighbour_oos_weight: NEIGHBOUR_OOS_WEIGHT,
        }
    }
}

/// Names what [`train`] builds; caches of trained routers key on it so that a new recipe
/// retrains instead of serving an artifact the old one made.
pub const RECIPE: &str = "logreg+temperature+neighbours/2";

/// Nearest examples that vote on the intent.
pub const VOTE_K: usize = 10;
/// Temperature of the vote weights (cosine units).
pub const VOTE_TEMPERATURE: f32 = 0.02;
/// Vote weights tried on the held-out part: the one with the lowest log-loss (mean −ln of the
/// true class's probability) wins, ties to the smaller. The log-loss of a mixture is convex in
/// its weight, so the grid finds one well-defined minimum; accuracy, which the first version
/// used on a coarser grid, moves by whole items and flipped between two weights on machines
/// whose embeddings differed in the last bits.
pub const VOTE_WEIGHTS: [f32; 17] =
    [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8];
/// Nearest in-scope examples averaged into the in-scope similarity.
pub const SIM_K: usize = 5;
/// Default weight of the in-scope similarity in the out-of-scope score.
pub const NEIGHBOUR_OOS_WEIGHT: f32 = 2.0;

/// Fraction of held-out in-scope items allowed under the fitted prototype threshold.
pub const PROTOTYPE_REJECTION: f32 = 0.1;

fn texts(ex: &[Example]) -> Vec<&str> {
    ex.iter().map(|e| e.text.as_str()).collect()
}

/// The examples the head is first fitted on (and a fine-tuned encoder is trained on): all of
/// `train` when validation data is given, else the part left after holding out the
/// calibration part — the same split [`train`] makes.
pub fn fit_part(train: &[Example], val: Option<&[Example]>, opts: &TrainOptions) -> Vec<Example> {
    match val {
        Some(_) => train.to_vec(),
        None => stratified_split(train, opts.calibration_fraction, opts.seed).0,
    }
}

/// Train a router on `train` (and `val` when given) with an optional sentence encoder.
///
/// # Errors
/// [`RouterError::Training`] for unusable data; encoder failures.
pub fn train(
    train: &[Example],
    val: Option<&[Example]>,
    bert: Option<Arc<BertEncoder>>,
    opts: &TrainOptions,
) -> Result<Artifact> {
    let started = Instant::now();
    if !(opts.neighbour_oos_weight.is_finite() && opts.neighbour_oos_weight >= 0.0) {
        return Err(RouterError::Training(format!(
            "the neighbour weight in the out-of-scope score must be a number ≥ 0, not {}",
            opts.neighbour_oos_weight
        )));
    }
    let (fit_part, calib_part, refit) = match val {
        Some(v) => (train.to_vec(), v.to_vec(), false),
        None => {
            let (a, b) = stratified_split(train, opts.calibration_fraction, opts.seed);
            (a, b, true)
        }
    };
    let mut labels: Vec<String> =
        fit_part.iter().map(|e| e.intent.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    labels.sort();
    if labels.len() < 2 {
        return Err(RouterError::Training(format!("need at least 2 intents, found {}", labels.len())));
    }
    let index: BTreeMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();

    let lexical_dim = if bert.is_none() && opts.lexical_dim == 0 {
        crate::encoder::lexical::DEFAULT_LEXICAL_DIM
    } else {
        opts.lexical_dim
    };
    let lexical = (lexical_dim > 0).then(|| LexicalEncoder::fit(&texts(&fit_part), lexical_dim));
    let mut featurizer = Featurizer::new(bert.clone(), lexical.clone(), opts.lexical_weight);
    if let Some(c) = &opts.embedding_cache {
        featurizer = featurizer.with_cache(Arc::clone(c));
    }

    let embed_started = Instant::now();
    let fit_feats = featurizer.featurize(&texts(&fit_part))?;
    let calib_feats = featurizer.featurize(&texts(&calib_part))?;
    let embed_seconds = embed_started.elapsed().as_secs_f64();

    let fit_y: Vec<usize> = fit_part.iter().map(|e| index[e.intent.as_str()]).collect();
    let rows: Vec<&[f32]> = fit_feats.iter().map(|f| f.dense.as_slice()).collect();
    let head_started = Instant::now();
    let (head, report) = LogReg::fit(&rows, &fit_y, labels.len(), opts.head)?;
    let mut head_seconds = head_started.elapsed().as_secs_f64();
    let calibration_started = Instant::now();

    // Calibration on the held-out items whose label the head knows.
    let known: Vec<(usize, &Features)> = calib_part
        .iter()
        .zip(&calib_feats)
        .filter_map(|(e, f)| index.get(e.intent.as_str()).map(|&i| (i, f)))
        .collect();
    let calib_rows: Vec<&[f32]> = known.iter().map(|(_, f)| f.dense.as_slice()).collect();
    let calib_logits = head.logits_batch(&calib_rows)?;
    let calib_y: Vec<usize> = known.iter().map(|(i, _)| *i).collect();
    let temperature = fit_temperature(&calib_logits, &calib_y);
    // Calibration error of the raw head (temperature 1), for the record.
    let (c1, ok1): (Vec<f32>, Vec<bool>) = calib_logits
        .iter()
        .zip(&calib_y)
        .map(|(l, &y)| {
            let p = softmax(l, 1.0);
            let best = argmax(&p);
            (p[best], best == y)
        })
        .unzip();
    let ece_before = expected_calibration_error(&c1, &ok1, 15);
    let oos_idx = opts.oos_label.as_deref().and_then(|l| index.get(l).copied());

    // Neighbours: the fit part's embeddings vote on each held-out item, and give its
    // similarity to the nearest in-scope examples.
    let fit_memory = if opts.neighbours && bert.is_some() {
        let rows: Vec<&[f32]> = fit_feats.iter().map(|f| f.proto.as_slice()).collect();
        Some(Neighbours::new(&rows, &fit_y)?)
    } else {
        None
    };
    let mut probs: Vec<Vec<f32>> = calib_logits.iter().map(|l| softmax(l, temperature)).collect();
    let looks: Vec<Look> = fit_memory.as_ref().map_or_else(Vec::new, |m| {
        known.iter().map(|(_, f)| m.look(&f.proto, VOTE_K, VOTE_TEMPERATURE, SIM_K, labels.len(), oos_idx)).collect()
    });
    let accuracy_of = |probs: &[Vec<f32>]| -> f32 {
        let ok = probs.iter().zip(&calib_y).filter(|(p, y)| argmax(p) == **y).count();
        if probs.is_empty() { 0.0 } else { ok as f32 / probs.len() as f32 }
    };
    let mut vote_weight = 0.0;
    let mut vote_weight_scores = Vec::new();
    if !looks.is_empty() {
        let mut best = f64::INFINITY;
        for &w in &VOTE_WEIGHTS {
            let score = score_vote_weight(&probs, &looks, &calib_y, w);
            if score.log_loss < best {
                (best, vote_weight) = (score.log_loss, w);
            }
            vote_weight_scores.push(score);
        }
        for (p, l) in probs.iter_mut().zip(&looks) {
            mix_votes(p, &l.votes, vote_weight);
        }
    }
    let (c2, ok2): (Vec<f32>, Vec<bool>) = probs
        .iter()
        .zip(&calib_y)
        .map(|(p, &y)| {
            let b = argmax(p);
            (p[b], b == y)
        })
        .unzip();
    let ece_after = expected_calibration_error(&c2, &ok2, 15);
    let calibration_accuracy = accuracy_of(&probs);

    // OOS threshold: in-scope held-out items whose top class is not the oos class.
    let in_scope: Vec<(f32, f32)> = probs
        .iter()
        .zip(&calib_y)
        .enumerate()
        .filter(|(_, (_, y))| Some(**y) != oos_idx)
        .filter_map(|(i, (p, _))| {
            let best = argmax(p);
            (Some(best) != oos_idx).then(|| (p[best], looks.get(i).map_or(0.0, |l| l.in_scope_sim)))
        })
        .collect();
    let (oos_threshold, neighbour_thresholds) = if fit_memory.is_some() {
        let nt = fit_oos_score(&in_scope, vote_weight, opts);
        (0.0, Some(nt))
    } else {
        let conf: Vec<f32> = in_scope.iter().map(|p| p.0).collect();
        (threshold_for_rejection_rate(&conf, opts.target_rejection), None)
    };

    // Prototype threshold: the cosine to their own intent's centroid (built from the fit part)
    // that all but `PROTOTYPE_REJECTION` of held-out in-scope items reach.
    let mut fit_protos = PrototypeHead::default();
    for l in &labels {
        let vecs: Vec<Vec<f32>> =
            fit_part.iter().zip(&fit_feats).filter(|(e, _)| &e.intent == l).map(|(_, f)| f.proto.clone()).collect();
        fit_protos.add(l, &vecs);
    }
    let own_sims: Vec<f32> = calib_part
        .iter()
        .zip(&calib_feats)
        .filter(|(e, _)| Some(e.intent.as_str()) != opts.oos_label.as_deref())
        .filter_map(|(e, f)| fit_protos.scores(&f.proto).into_iter().find(|(i, _)| i == &e.intent).map(|(_, s)| s))
        .collect();
    let prototype_threshold =
        opts.prototype_threshold.unwrap_or_else(|| threshold_for_rejection_rate(&own_sims, PROTOTYPE_REJECTION));

    let calibration_seconds = calibration_started.elapsed().as_secs_f64();

    // Refit on everything when the calibration part came out of the training data, starting
    // from the first fit (nine tenths of the same data): same optimum, fewer iterations.
    let refit_started = Instant::now();
    let (head, all, all_feats, all_y, final_report) = if refit {
        let mut all = fit_part.clone();
        all.extend(calib_part.iter().cloned());
        let mut feats = fit_feats;
        feats.extend(calib_feats);
        let y: Vec<usize> = all.iter().map(|e| index[e.intent.as_str()]).collect();
        let rows: Vec<&[f32]> = feats.iter().map(|f| f.dense.as_slice()).collect();
        let (h, r) = LogReg::fit_from(&rows, &y, labels.len(), opts.head, Some(&head))?;
        (h, all, feats, y, r)
    } else {
        (head, fit_part.clone(), fit_feats, fit_y, report)
    };
    head_seconds += refit_started.elapsed().as_secs_f64();

    // After a refit the memory holds every example, as the head does.
    let neighbours = if refit && fit_memory.is_some() {
        let rows: Vec<&[f32]> = all_feats.iter().map(|f| f.proto.as_slice()).collect();
        Some(Neighbours::new(&rows, &all_y)?)
    } else {
        fit_memory
    };

    let mut prototypes = PrototypeHead::default();
    for l in &labels {
        let vecs: Vec<Vec<f32>> =
            all.iter().zip(&all_feats).filter(|(e, _)| &e.intent == l).map(|(_, f)| f.proto.clone()).collect();
        prototypes.add(l, &vecs);
    }

    let lexical_info = lexical.as_ref().map(|lex| EncoderInfo {
        kind: "lexical".into(),
        id: format!("hashed-ngrams-{}", lex.dim()),
        hash: {
            use sha2::Digest;
            let bytes = serde_json::to_vec(lex).unwrap_or_default();
            crate::fetch::hex(&sha2::Sha256::digest(&bytes))[..16].to_owned()
        },
        dim: lex.dim(),
    });
    let manifest = Manifest {
        version: ARTIFACT_VERSION,
        labels,
        oos_label: opts.oos_label.clone().filter(|_| oos_idx.is_some()),
        encoder: bert.as_ref().map(|b| b.info().clone()),
        encoder_dir: None,
        lexical: lexical_info,
        lexical_weight: opts.lexical_weight,
        thresholds: Thresholds {
            oos: oos_threshold,
            clarify_margin: opts.clarify_margin,
            prototype: prototype_threshold,
            temperature,
            neighbours: neighbour_thresholds,
        },
        head: opts.head,
        train_data_hash: hash_examples(train),
        seed: opts.seed,
        metrics: TrainMetrics {
            n_train: all.len(),
            n_calibration: calib_part.len(),
            calibration_accuracy,
            ece_before,
            ece_after,
            lbfgs_iterations: final_report.iterations,
            train_seconds: started.elapsed().as_secs_f64(),
            embed_seconds,
            head_seconds,
            calibration_seconds,
            lbfgs_iterations_first: report.iterations,
            lbfgs_stop: vec![report.stop.as_str().to_owned(), final_report.stop.as_str().to_owned()],
            fine_tune_seconds: 0.0,
            vote_weights: vote_weight_scores,
        },
    };
    Ok(Artifact { manifest, head, lexical, prototypes, neighbours, rules: opts.rules.clone() })
}

/// Log-loss (mean −ln of the true class's probability, floored at 1e-12) and accuracy of the
/// held-out probabilities with the vote mixed in at weight `w`, one item at a time in one
/// reused buffer.
fn score_vote_weight(probs: &[Vec<f32>], looks: &[Look], y: &[usize], w: f32) -> VoteWeightScore {
    let (mut total, mut correct) = (0f64, 0usize);
    let mut mixed = Vec::new();
    for ((p, l), &y) in probs.iter().zip(looks).zip(y) {
        mixed.clone_from(p);
        mix_votes(&mut mixed, &l.votes, w);
        total -= f64::from(mixed[y].max(1e-12)).ln();
        correct += usize::from(argmax(&mixed) == y);
    }
    let n = probs.len().max(1);
    VoteWeightScore { weight: w, log_loss: total / n as f64, accuracy: correct as f32 / n as f32 }
}

/// The out-of-scope score's standardisation and threshold from held-out in-scope items
/// (`(top probability, in-scope similarity)` pairs): the threshold rejects
/// `opts.target_rejection` of them.
fn fit_oos_score(in_scope: &[(f32, f32)], vote_weight: f32, opts: &TrainOptions) -> NeighbourThresholds {
    let mean_std = |v: &[f32]| -> (f32, f32) {
        if v.is_empty() {
            return (0.0, 1.0);
        }
        let n = v.len() as f32;
        let m = v.iter().sum::<f32>() / n;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n;
        (m, var.sqrt().max(1e-6))
    };
    let conf: Vec<f32> = in_scope.iter().map(|p| p.0.max(1e-12).ln()).collect();
    let sims: Vec<f32> = in_scope.iter().map(|p| p.1).collect();
    let (confidence_mean, confidence_std) = mean_std(&conf);
    let (sim_mean, sim_std) = mean_std(&sims);
    let mut nt = NeighbourThresholds {
        vote_k: VOTE_K,
        vote_temperature: VOTE_TEMPERATURE,
        vote_weight,
        sim_k: SIM_K,
        sim_weight: opts.neighbour_oos_weight,
        confidence_mean,
        confidence_std,
        sim_mean,
        sim_std,
        oos_score: f32::MIN,
    };
    if opts.target_rejection > 0.0 && !in_scope.is_empty() {
        let scores: Vec<f32> = in_scope.iter().map(|&(p, s)| nt.score(p, s)).collect();
        nt.oos_score = threshold_for_rejection_rate(&scores, opts.target_rejection);
    }
    nt
}

pub(crate) fn argmax(p: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}
