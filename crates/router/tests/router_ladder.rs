//! Training on a slice of BANKING77, the decision ladder, artifacts, bad input, async batching.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use switchboard_router::artifact::Artifact;
use switchboard_router::data::Example;
use switchboard_router::decision::{Outcome, Rung};
use switchboard_router::eval::evaluate;
use switchboard_router::llm::{LlmAnswer, LlmFallback, LlmFuture, LlmQuestion};
use switchboard_router::rules::Rules;
use switchboard_router::train::{TrainOptions, train};
use switchboard_router::{AsyncRouter, BatchConfig, Router, RouterError};

fn lexical_router(train_set: &[Example], opts: &TrainOptions) -> Router {
    let art = train(train_set, None, None, opts).unwrap();
    Router::from_parts(art, None).unwrap()
}

#[test]
fn lexical_router_trained_on_a_slice_beats_chance_by_far() {
    let (tr, te) = common::banking_slice(10, 80, 30);
    let opts = TrainOptions { target_rejection: 0.0, ..TrainOptions::default() };
    let router = lexical_router(&tr, &opts);
    let report = evaluate(&router, &te, "oos").unwrap();
    // Chance is 10%.
    assert!(report.accuracy > 0.7, "{report:?}");
    assert_eq!(report.n, te.len());
    assert!(te.len() > 200);
    assert!(report.oos_recall.is_none() && report.oos_precision.is_none());
    let m = &router.artifact().manifest.metrics;
    assert!(m.ece_after <= m.ece_before + 1e-9, "{m:?}");
}

#[test]
fn sentence_encoder_router_trained_on_a_slice_beats_chance_by_far() {
    let Some(enc) = common::encoder("sentence_encoder_router_trained_on_a_slice") else {
        return;
    };
    let (tr, te) = common::banking_slice(10, 40, 20);
    let opts = TrainOptions { target_rejection: 0.0, ..TrainOptions::default() };
    let art = train(&tr, None, Some(Arc::clone(&enc)), &opts).unwrap();
    let router = Router::from_parts(art, Some(enc)).unwrap();
    let report = evaluate(&router, &te, "oos").unwrap();
    assert!(report.accuracy > 0.8, "{report:?}");
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let (tr, _) = common::banking_slice(5, 30, 0);
    let opts = TrainOptions::default();
    let a = train(&tr, None, None, &opts).unwrap();
    let b = train(&tr, None, None, &opts).unwrap();
    assert_eq!(a.head, b.head);
    assert_eq!(a.manifest.thresholds, b.manifest.thresholds);
}

#[test]
fn artifact_round_trips_and_a_mismatched_encoder_is_refused() {
    let (tr, te) = common::banking_slice(5, 30, 5);
    let art = train(&tr, None, None, &TrainOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    art.save(dir.path()).unwrap();
    let loaded = Router::load(dir.path(), None).unwrap();
    let original = Router::from_parts(art.clone(), None).unwrap();
    for e in &te {
        assert_eq!(loaded.route(&e.text).unwrap(), original.route(&e.text).unwrap());
    }
    // A head whose manifest names a sentence encoder cannot run without that encoder.
    let mut bad = art.clone();
    bad.manifest.encoder = Some(switchboard_router::encoder::EncoderInfo {
        kind: "bert".into(),
        id: "other".into(),
        hash: "0000".into(),
        dim: 384,
    });
    let err = Router::from_parts(bad, None).unwrap_err();
    assert!(matches!(err, RouterError::EncoderMismatch { .. }), "{err}");
    // A head whose width disagrees with its encoders is refused at load time.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("router.json")).unwrap()).unwrap();
    json["labels"].as_array_mut().unwrap().pop();
    std::fs::write(dir.path().join("router.json"), json.to_string()).unwrap();
    let err = Router::load(dir.path(), None).unwrap_err();
    assert!(matches!(err, RouterError::BadArtifact { .. }), "{err}");
    let err = Router::load(&dir.path().join("missing"), None).unwrap_err();
    assert!(matches!(err, RouterError::BadArtifact { .. }), "{err}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let (tr, _) = common::banking_slice(3, 20, 0);
    let router = lexical_router(&tr, &TrainOptions::default());
    assert!(matches!(router.route(""), Err(RouterError::EmptyText)));
    assert!(matches!(router.route("   \n\t"), Err(RouterError::EmptyText)));
    assert!(matches!(router.route_bytes(b"ok \xff\xfe"), Err(RouterError::InvalidUtf8 { offset: 3 })));
    let huge = "why was my card declined ".repeat(5000);
    let d = router.route(&huge).unwrap();
    assert!(d.intent.is_some() || d.outcome == Outcome::OutOfScope);
}

#[test]
fn rules_override_the_classifier() {
    let (tr, _) = common::banking_slice(5, 30, 0);
    let opts = TrainOptions { rules: Rules::compliance_defaults(), ..TrainOptions::default() };
    let router = lexical_router(&tr, &opts);
    let d = router.route("I think someone stole my card").unwrap();
    assert_eq!(d.rung, Rung::Rule);
    assert_eq!(d.intent.as_deref(), Some("lost_or_stolen_card"));
    assert!(d.reasons[0].contains("rule for lost_or_stolen_card"));
    let d = router.route("how do I activate my new card").unwrap();
    assert_ne!(d.rung, Rung::Rule);
}

#[test]
fn thresholds_send_low_confidence_out_of_scope_and_close_calls_to_clarify() {
    let (tr, _) = common::banking_slice(10, 60, 0);
    let mut art = train(&tr, None, None, &TrainOptions::default()).unwrap();
    art.manifest.thresholds.oos = 1.01;
    let router = Router::from_parts(art.clone(), None).unwrap();
    let d = router.route("what is the weather like on mars").unwrap();
    assert_eq!(d.outcome, Outcome::OutOfScope);
    assert_eq!(d.rung, Rung::OutOfScope);
    assert!(d.intent.is_none());
    assert_eq!(d.candidates.len(), 5);
    art.manifest.thresholds.oos = 0.0;
    art.manifest.thresholds.clarify_margin = 1.0;
    let router = Router::from_parts(art, None).unwrap();
    let d = router.route("my card has not arrived yet").unwrap();
    assert_eq!(d.outcome, Outcome::Clarify);
    assert_eq!(d.clarify.len(), 2);
    assert_eq!(d.clarify[0], d.candidates[0].intent);
}

#[test]
fn oos_class_and_threshold_reject_out_of_scope_text() {
    let (mut tr, _) = common::banking_slice(6, 50, 0);
    for t in [
        "what is the capital of france",
        "play some jazz music",
        "how tall is mount everest",
        "book a table for two tonight",
        "tell me a joke",
        "what's the weather tomorrow",
        "translate hello into german",
        "who won the football game",
        "set an alarm for 7am",
        "recommend a good movie",
        "how do i bake sourdough bread",
        "what time is it in tokyo",
    ] {
        for k in 0..4 {
            tr.push(Example { text: format!("{t}{}", "?".repeat(k)), intent: "oos".into() });
        }
    }
    let opts = TrainOptions { oos_label: Some("oos".into()), ..TrainOptions::default() };
    let router = lexical_router(&tr, &opts);
    assert_eq!(router.artifact().manifest.oos_label.as_deref(), Some("oos"));
    let d = router.route("tell me a joke about cats").unwrap();
    assert_eq!(d.outcome, Outcome::OutOfScope, "{d:?}");
}

#[test]
fn few_shot_intents_are_added_at_run_time() {
    let (tr, _) = common::banking_slice(5, 30, 0);
    let router = lexical_router(&tr, &TrainOptions::default());
    router
        .add_intent(
            "crypto_staking",
            &["how do I stake my ETH", "staking rewards for solana", "unstake my coins", "what APY does staking give"],
        )
        .unwrap();
    let d = router.route("how do I stake ETH and get rewards").unwrap();
    assert_eq!(d.rung, Rung::Prototype, "{d:?}");
    assert_eq!(d.intent.as_deref(), Some("crypto_staking"));
    assert!(matches!(router.add_intent("x", &["", " "]), Err(RouterError::EmptyText)));
}

/// An LLM stand-in that answers from the candidates by a fixed keyword table, as a real
/// provider would answer with a structured choice.
struct KeywordLlm;

impl LlmFallback for KeywordLlm {
    fn choose<'a>(&'a self, q: &'a LlmQuestion) -> LlmFuture<'a> {
        Box::pin(async move {
            if q.text.contains("banana") {
                return Ok(LlmAnswer::None);
            }
            Ok(LlmAnswer::Intent(q.candidates[1].intent.clone()))
        })
    }
}

struct SlowLlm;

impl LlmFallback for SlowLlm {
    fn choose<'a>(&'a self, _q: &'a LlmQuestion) -> LlmFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok(LlmAnswer::None)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_router_batches_caches_and_matches_sync_routing() {
    let (tr, te) = common::banking_slice(8, 40, 8);
    let router = Arc::new(lexical_router(&tr, &TrainOptions::default()));
    let ar = Arc::new(AsyncRouter::new(Arc::clone(&router), BatchConfig::default()));
    let mut handles = Vec::new();
    for e in te.iter().cycle().take(200) {
        let ar = Arc::clone(&ar);
        let text = e.text.clone();
        handles.push(tokio::spawn(async move { (text.clone(), ar.route(&text).await) }));
    }
    for h in handles {
        let (text, d) = h.await.unwrap();
        assert_eq!(d.unwrap(), router.route(&text).unwrap());
    }
    assert!(matches!(ar.route(" ").await, Err(RouterError::EmptyText)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_fallback_decides_low_confidence_cases_within_its_timeout() {
    let (tr, _) = common::banking_slice(8, 40, 0);
    let mut art = train(&tr, None, None, &TrainOptions::default()).unwrap();
    art.manifest.thresholds.oos = 1.01; // everything is low confidence
    let router = Arc::new(Router::from_parts(art, None).unwrap());
    let ar = AsyncRouter::new(Arc::clone(&router), BatchConfig::default()).with_llm_fallback(Arc::new(KeywordLlm));
    let d = ar.route("my card still has not arrived").await.unwrap();
    assert_eq!(d.rung, Rung::LlmFallback);
    assert_eq!(d.outcome, Outcome::Intent);
    assert_eq!(d.intent.as_deref(), Some(d.candidates[1].intent.as_str()));
    let d = ar.route("a banana for my card").await.unwrap();
    assert_eq!((d.rung, d.outcome), (Rung::LlmFallback, Outcome::OutOfScope));

    let cfg = BatchConfig { llm_timeout: std::time::Duration::from_millis(50), ..BatchConfig::default() };
    let ar = AsyncRouter::new(router, cfg).with_llm_fallback(Arc::new(SlowLlm));
    let d = ar.route("my card still has not arrived").await.unwrap();
    assert_eq!(d.rung, Rung::OutOfScope);
    assert!(d.reasons.iter().any(|r| r.contains("timed out")), "{:?}", d.reasons);
}

#[test]
fn artifact_load_of_a_non_artifact_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Artifact::load(dir.path()), Err(RouterError::BadArtifact { .. })));
}

#[test]
fn neighbours_vote_and_catch_out_of_scope_text_the_classifier_is_sure_of() {
    let Some(enc) = common::encoder("neighbours_vote_and_catch_out_of_scope_text") else {
        return;
    };
    // 25 CLINC150 intents + its `oos` items; thresholds on half of val, measured on the other
    // half plus validation items of the other intents (out of scope here, and often close to
    // the slice's intents, which is what confident mistakes are made of).
    let (tr, val, others) = common::clinc_slice(25);
    let (fit_val, test): (Vec<_>, Vec<_>) = val.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let fit_val: Vec<Example> = fit_val.into_iter().map(|p| p.1).collect();
    let mut test: Vec<Example> = test.into_iter().map(|p| p.1).collect();
    test.extend(others);
    assert!(test.iter().filter(|e| e.intent == "oos").count() >= 300);
    let opts = TrainOptions { oos_label: Some("oos".into()), target_rejection: 0.02, ..TrainOptions::default() };
    let with = train(&tr, Some(&fit_val), Some(Arc::clone(&enc)), &opts).unwrap();
    let without =
        train(&tr, Some(&fit_val), Some(Arc::clone(&enc)), &TrainOptions { neighbours: false, ..opts.clone() })
            .unwrap();
    let nt = with.manifest.thresholds.neighbours.expect("a sentence-encoder router keeps its neighbours");
    assert_eq!(with.neighbours.as_ref().map(|n| n.len()), Some(tr.len()));
    assert!(without.neighbours.is_none() && without.manifest.thresholds.neighbours.is_none());
    assert!(nt.oos_score > f32::MIN && nt.sim_std > 0.0 && nt.confidence_std > 0.0, "{nt:?}");
    // Every vote weight of the grid was scored on the held-out part, and the one with the
    // lowest log-loss was kept; without the memory nothing is scored.
    let scores = &with.manifest.metrics.vote_weights;
    assert_eq!(scores.iter().map(|s| s.weight).collect::<Vec<_>>(), switchboard_router::train::VOTE_WEIGHTS);
    let lowest = scores.iter().min_by(|a, b| a.log_loss.total_cmp(&b.log_loss)).unwrap();
    assert_eq!(nt.vote_weight, lowest.weight, "{scores:?}");
    assert!(scores.iter().all(|s| s.log_loss.is_finite() && (0.0..=1.0).contains(&s.accuracy)), "{scores:?}");
    assert!(without.manifest.metrics.vote_weights.is_empty());

    // Saved and loaded, the router decides exactly as before; without its memory file the
    // artifact is refused.
    let dir = tempfile::tempdir().unwrap();
    with.save(dir.path()).unwrap();
    let loaded = Router::from_parts(Artifact::load(dir.path()).unwrap(), Some(Arc::clone(&enc))).unwrap();
    let router = Router::from_parts(with, Some(Arc::clone(&enc))).unwrap();
    let texts: Vec<&str> = test.iter().take(40).map(|e| e.text.as_str()).collect();
    assert_eq!(router.route_batch(&texts).unwrap(), loaded.route_batch(&texts).unwrap());
    // Every decision not made by the `oos` class names the combined score.
    for d in router.route_batch(&texts).unwrap() {
        let why = d.reasons.join("; ");
        assert!(why.contains("out-of-scope score") || why.contains("out-of-scope class"), "{d:?}");
    }
    std::fs::remove_file(dir.path().join(switchboard_router::artifact::NEIGHBOURS_FILE)).unwrap();
    assert!(matches!(Artifact::load(dir.path()), Err(RouterError::BadArtifact { .. })));

    // On held-out items the combined score catches more out-of-scope text than the
    // confidence alone at the same target rejection, and keeps in-scope accuracy.
    let a = evaluate(&router, &test, "oos").unwrap();
    let b = evaluate(&Router::from_parts(without, Some(enc)).unwrap(), &test, "oos").unwrap();
    eprintln!("with neighbours {a:?}\nwithout {b:?}");
    assert!(a.oos_recall.unwrap() > b.oos_recall.unwrap(), "with {a:?}\nwithout {b:?}");
    assert!(a.in_scope_accuracy >= b.in_scope_accuracy - 0.02, "with {a:?}\nwithout {b:?}");
}

#[test]
fn a_bad_neighbour_weight_is_a_training_error() {
    let (tr, _) = common::banking_slice(3, 10, 0);
    for w in [-1.0, f32::NAN, f32::INFINITY] {
        let opts = TrainOptions { neighbour_oos_weight: w, ..TrainOptions::default() };
        assert!(matches!(train(&tr, None, None, &opts), Err(RouterError::Training(_))), "{w}");
    }
}
