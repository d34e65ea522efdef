//! Per-type recall / precision on the visible PII corpus (`../shared/data/pii`).
#![allow(clippy::unwrap_used)]

mod common;

use switchboard_guard::eval::{Labels, PiiScore};

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    #[serde(flatten)]
    labels: Labels,
}

#[test]
fn pii_corpus_meets_targets() {
    let Some(path) = common::shared_data("pii/pii_samples_visible.jsonl") else {
        return;
    };
    let mut score = PiiScore::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let row: Row = serde_json::from_str(line).unwrap();
        let got = switchboard_guard::detect(&row.text);
        score.add(row.labels.entities.as_deref().unwrap_or_default(), &row.labels.near_miss, &got);
    }
    println!("{}", serde_json::to_string_pretty(&score.summary()).unwrap());
    let target = |t: &str| match t {
        "BIP39_MNEMONIC" | "WIF_PRIVATE_KEY" | "BIP32_XPRV" | "HEX_PRIVATE_KEY" | "OTP_CODE" | "API_SECRET" => 1.0,
        "CREDIT_CARD" | "BR_CPF" | "BR_CNPJ" | "US_SSN" => 0.99,
        _ => 0.95,
    };
    for (t, c) in &score.per_type {
        if c.gold > 0 {
            assert!(c.recall() >= target(t), "{t} recall {}", c.recall());
            assert!(c.precision() >= 0.95, "{t} precision {}", c.precision());
        }
    }
    assert!(score.near_miss_fpr() <= 0.02, "near-miss FPR {}", score.near_miss_fpr());
    assert_eq!(score.invalid_called_valid, 0);
}
