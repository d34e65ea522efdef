//! Training a router: featurize, fit the head, calibrate, fit thresholds, refit, package.
//!
//! Without a validation file, a seeded stratified part of the training data is held out for
//! temperature scaling and thresholds, then the head is refitted on everything with the same
//! settings (the temperature and thresholds carry over). With a validation file the head is
//! fitted on the training data and calibrated on the validation data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::artifact::{ARTIFACT_VERSION, Artifact, Manifest, TrainMetrics};
use crate::data::{Example, hash_examples, stratified_split};
use crate::decision::Thresholds;
use crate::encoder::{BertEncoder, EncoderInfo, Features, Featurizer, LexicalEncoder};
use crate::error::{Result, RouterError};
use crate::head::calibrate::{expected_calibration_error, fit_temperature, softmax, threshold_for_rejection_rate};
use crate::head::{LogReg, LogRegConfig, PrototypeHead};
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
        }
    }
}

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
    let conf_correct = |t: f32| -> (Vec<f32>, Vec<bool>) {
        calib_logits
            .iter()
            .zip(&calib_y)
            .map(|(l, &y)| {
                let p = softmax(l, t);
                let best = argmax(&p);
                (p[best], best == y)
            })
            .unzip()
    };
    let (c1, ok1) = conf_correct(1.0);
    let (c2, ok2) = conf_correct(temperature);
    let ece_before = expected_calibration_error(&c1, &ok1, 15);
    let ece_after = expected_calibration_error(&c2, &ok2, 15);
    let calibration_accuracy =
        if ok2.is_empty() { 0.0 } else { ok2.iter().filter(|&&b| b).count() as f32 / ok2.len() as f32 };

    // OOS threshold: in-scope held-out items whose top class is not the oos class.
    let oos_idx = opts.oos_label.as_deref().and_then(|l| index.get(l).copied());
    let in_scope_conf: Vec<f32> = calib_logits
        .iter()
        .zip(&calib_y)
        .filter(|(_, y)| Some(**y) != oos_idx)
        .filter_map(|(l, _)| {
            let p = softmax(l, temperature);
            let best = argmax(&p);
            (Some(best) != oos_idx).then_some(p[best])
        })
        .collect();
    let oos_threshold = threshold_for_rejection_rate(&in_scope_conf, opts.target_rejection);

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
    let (head, all, all_feats, final_report) = if refit {
        let mut all = fit_part.clone();
        all.extend(calib_part.iter().cloned());
        let mut feats = fit_feats;
        feats.extend(calib_feats);
        let y: Vec<usize> = all.iter().map(|e| index[e.intent.as_str()]).collect();
        let rows: Vec<&[f32]> = feats.iter().map(|f| f.dense.as_slice()).collect();
        let (h, r) = LogReg::fit_from(&rows, &y, labels.len(), opts.head, Some(&head))?;
        (h, all, feats, r)
    } else {
        (head, fit_part.clone(), fit_feats, report)
    };
    head_seconds += refit_started.elapsed().as_secs_f64();

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
        lexical: lexical_info,
        lexical_weight: opts.lexical_weight,
        thresholds: Thresholds {
            oos: oos_threshold,
            clarify_margin: opts.clarify_margin,
            prototype: prototype_threshold,
            temperature,
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
        },
    };
    Ok(Artifact { manifest, head, lexical, prototypes, rules: opts.rules.clone() })
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
