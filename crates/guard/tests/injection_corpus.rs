//! The shipped injection model on the visible attack corpus (`../shared/data/attacks`): it is
//! reproduced byte for byte by training, and its dev-split rates meet the targets.
#![allow(clippy::unwrap_used)]

mod common;

use switchboard_guard::detect;
use switchboard_guard::injection::InjectionScorer;
use switchboard_guard::injection::lexical::LexicalModel;
use switchboard_guard::injection::train::{self, TrainOptions};

fn rows() -> Option<Vec<train::Row>> {
    let path = common::shared_data("attacks/prompt_attacks_visible.jsonl")?;
    Some(train::parse_rows(&std::fs::read_to_string(path).unwrap()).unwrap())
}

#[test]
fn shipped_model_is_reproducible_and_meets_targets_on_dev() {
    let Some(rows) = rows() else { return };
    let (model, report) = train::train_injection(&rows, &TrainOptions::default());
    assert_eq!(
        model.to_bytes(),
        LexicalModel::embedded().to_bytes(),
        "data/injection/lexical.bin is stale: run `switchboard guard train-injection`"
    );
    let dev = InjectionScorer::default();
    let dev_rows: Vec<&train::Row> = rows.iter().filter(|r| train::is_dev(r, 20)).collect();
    let score = train::evaluate(&dev, dev_rows.iter().copied());
    let (tpr, _, _) = score.overall.tpr();
    let (fpr, _, _) = score.overall.fpr();
    println!("dev TPR {tpr:.3} FPR {fpr:.3}; training report threshold {}", report.threshold);
    assert!(tpr >= 0.90, "dev TPR {tpr}");
    assert!(fpr <= 0.05, "dev FPR {fpr}");
    let support = score.by_category.get("support").unwrap();
    assert!(support.fpr().0 <= 0.05);
}

#[test]
fn no_recovery_phrase_false_positive_in_the_attack_corpus() {
    let Some(rows) = rows() else { return };
    for r in &rows {
        let found = detect(&r.text);
        assert!(!found.iter().any(|d| d.kind == switchboard_guard::EntityType::Bip39Mnemonic), "{}", r.text);
    }
}
