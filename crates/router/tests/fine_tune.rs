//! Fine-tuning the encoder's top layers on a slice of BANKING77: the loss falls, held-out
//! sentences of one intent end up closer to their own intent than before, the new folder
//! loads with its recorded hash (and is refused when tampered with), the run is reproducible
//! for a seed, and a router artifact carrying the fine-tuned encoder loads it by itself.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use switchboard_router::artifact::ENCODER_DIR;
use switchboard_router::data::Example;
use switchboard_router::encoder::{BertEncoder, EncoderBackend, EncoderOptions};
use switchboard_router::eval::evaluate;
use switchboard_router::fetch::sha256_file;
use switchboard_router::finetune::{FineTuneOptions, FineTuneRecord, fine_tune};
use switchboard_router::train::{TrainOptions, train};
use switchboard_router::{Router, RouterError};

/// Mean over `items` of (cosine to the centroid of its own intent) − (highest cosine to another
/// intent's centroid), centroids taken from `reference`: how well the embedding separates
/// intents.
fn separation(enc: &BertEncoder, reference: &[Example], items: &[Example]) -> f32 {
    let embed = |ex: &[Example]| enc.encode(&ex.iter().map(|e| e.text.as_str()).collect::<Vec<_>>()).unwrap().vectors;
    let mut centroids: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for (e, v) in reference.iter().zip(embed(reference)) {
        let c = centroids.entry(e.intent.as_str()).or_insert_with(|| vec![0.0; v.len()]);
        c.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
    }
    for c in centroids.values_mut() {
        let n = c.iter().map(|x| x * x).sum::<f32>().sqrt();
        c.iter_mut().for_each(|x| *x /= n);
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut total = 0.0;
    for (e, v) in items.iter().zip(embed(items)) {
        let own = dot(&v, &centroids[e.intent.as_str()]);
        let other = centroids.iter().filter(|(k, _)| **k != e.intent).map(|(_, c)| dot(&v, c)).fold(f32::MIN, f32::max);
        total += own - other;
    }
    total / items.len() as f32
}

#[test]
fn fine_tuning_separates_intents_and_the_artifact_carries_its_encoder() {
    let Some(loc) = common::model_location("fine_tuning_separates_intents") else {
        return;
    };
    let options = EncoderOptions { fallback: false, ..EncoderOptions::default() }.with_backend(EncoderBackend::Candle);
    let base = Arc::new(BertEncoder::load_with(&loc.dir, loc.pinned, &options).unwrap());
    let (tr, te) = common::banking_slice(8, 30, 15);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("tuned");
    let opts = FineTuneOptions { layers: 1, epochs: 4, ..FineTuneOptions::default() };
    let report = fine_tune(&loc.dir, &base, &tr, &opts, &out, &mut |_| {}).unwrap();
    assert!(report.initial_agreement >= 0.999, "{report:?}");
    assert_eq!(report.steps, tr.len().div_ceil(opts.batch) * opts.epochs);
    assert!(report.epoch_loss.last().unwrap() < &(report.epoch_loss[0] * 0.8), "the loss must fall: {report:?}");

    let tuned = Arc::new(BertEncoder::load_with(&out, false, &options).unwrap());
    assert_ne!(tuned.info().hash, base.info().hash);
    assert!(tuned.info().id.contains("fine-tuned"), "{}", tuned.info().id);
    let record = FineTuneRecord::read(&out).unwrap().unwrap();
    assert_eq!(record.base, *base.info());
    let before = separation(&base, &tr, &te);
    let after = separation(&tuned, &tr, &te);
    assert!(after > before + 0.02, "held-out separation must grow: {before} -> {after}");

    // Same seed, same weights.
    let again = work.path().join("again");
    fine_tune(&loc.dir, &base, &tr, &opts, &again, &mut |_| {}).unwrap();
    assert_eq!(
        sha256_file(&again.join("model.safetensors")).unwrap(),
        sha256_file(&out.join("model.safetensors")).unwrap()
    );

    // A router trained on the fine-tuned encoder, saved with it, loads it by itself.
    let art =
        train(&tr, None, Some(Arc::clone(&tuned)), &TrainOptions { target_rejection: 0.0, ..TrainOptions::default() })
            .unwrap();
    let dir = work.path().join("router");
    art.save(&dir).unwrap();
    std::fs::rename(&again, dir.join(ENCODER_DIR)).unwrap();
    let router = Router::load(&dir, None).unwrap();
    assert_eq!(router.featurizer().bert().unwrap().info().hash, tuned.info().hash);
    let eval = evaluate(&router, &te, "oos").unwrap();
    assert!(eval.accuracy > 0.85, "{eval:?}");

    // A router that records the folder it was trained with (`router train --model-dir`) loads
    // the encoder from there; a recorded folder holding another encoder is passed over for the
    // model found the usual way.
    let recorded_load = |enc: &Arc<BertEncoder>, name: &str| {
        let opts = TrainOptions { target_rejection: 0.0, ..TrainOptions::default() };
        let mut art = train(&tr, None, Some(Arc::clone(enc)), &opts).unwrap();
        art.manifest.encoder_dir = Some(out.clone());
        let dir = work.path().join(name);
        art.save(&dir).unwrap();
        Router::load(&dir, None).unwrap().featurizer().bert().unwrap().info().hash.clone()
    };
    assert_eq!(recorded_load(&tuned, "on_tuned"), tuned.info().hash);
    assert_eq!(recorded_load(&base, "on_base"), base.info().hash);

    // Tampered weights are refused.
    let weights = out.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let err = BertEncoder::load_with(&out, false, &options).unwrap_err();
    assert!(matches!(err, RouterError::HashMismatch { .. }), "{err}");
}

#[test]
fn bad_fine_tuning_settings_are_typed_errors() {
    let Some(loc) = common::model_location("bad_fine_tuning_settings") else {
        return;
    };
    let options = EncoderOptions { fallback: false, ..EncoderOptions::default() }.with_backend(EncoderBackend::Candle);
    let base = BertEncoder::load_with(&loc.dir, loc.pinned, &options).unwrap();
    let (tr, _) = common::banking_slice(2, 4, 0);
    let out = tempfile::tempdir().unwrap();
    for opts in [
        FineTuneOptions { layers: 0, ..FineTuneOptions::default() },
        FineTuneOptions { layers: 7, ..FineTuneOptions::default() },
        FineTuneOptions { epochs: 0, ..FineTuneOptions::default() },
    ] {
        let err = fine_tune(&loc.dir, &base, &tr, &opts, out.path(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, RouterError::Training(_)), "{err}");
    }
    let one_intent: Vec<Example> = tr.iter().filter(|e| e.intent == tr[0].intent).cloned().collect();
    let err =
        fine_tune(&loc.dir, &base, &one_intent, &FineTuneOptions::default(), out.path(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, RouterError::Training(_)), "{err}");
}
