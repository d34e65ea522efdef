//! The candle encoder against Python sentence-transformers (fixture made by
//! `bench/router/make_parity_fixture.py`), tokenizer behaviour and truncation.
#![allow(clippy::unwrap_used)]

mod common;

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<String>,
    vectors: Vec<Vec<f32>>,
    max_seq_length: usize,
}

#[test]
fn vectors_match_sentence_transformers() {
    let Some(enc) = common::encoder("vectors_match_sentence_transformers") else {
        return;
    };
    let fx: Fixture = serde_json::from_str(include_str!("fixtures/parity.json")).unwrap();
    assert_eq!(enc.max_seq_len(), fx.max_seq_length);
    let refs: Vec<&str> = fx.sentences.iter().map(String::as_str).collect();
    // Batched (mixed lengths, padded per batch) and one by one must both match.
    let batched = enc.encode(&refs).unwrap();
    for (i, (got, want)) in batched.vectors.iter().zip(&fx.vectors).enumerate() {
        let cos: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(cos >= 0.999, "sentence {i} ({:?}): cosine {cos}", fx.sentences[i]);
        let single = enc.encode(&[refs[i]]).unwrap();
        let cos1: f32 = single.vectors[0].iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(cos1 >= 0.999, "sentence {i} alone: cosine {cos1}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn tokenizer_matches_bert_uncased_and_does_not_pad() {
    let Some(enc) = common::encoder("tokenizer_matches_bert_uncased_and_does_not_pad") else {
        return;
    };
    // [CLS] hello world [SEP] in the bert-base-uncased vocabulary.
    let (ids, truncated) = enc.tokenize("Hello WORLD").unwrap();
    assert_eq!(ids, vec![101, 7592, 2088, 102]);
    assert!(!truncated);
}

#[test]
fn long_text_is_truncated_to_the_model_limit_and_reported() {
    let Some(enc) = common::encoder("long_text_is_truncated_to_the_model_limit_and_reported") else {
        return;
    };
    let long = "my card payment was declined again. ".repeat(3000); // ~100 KB
    assert!(long.len() > 100_000);
    let (ids, truncated) = enc.tokenize(&long).unwrap();
    assert!(truncated);
    assert_eq!(ids.len(), enc.max_seq_len());
    let out = enc.encode(&[&long, "short one"]).unwrap();
    assert_eq!(out.truncated, vec![true, false]);
}
