//! Both encoder engines (candle, ONNX Runtime) against Python sentence-transformers (fixture
//! made by `bench/router/make_parity_fixture.py`), tokenizer behaviour, truncation, and the
//! fallback from a missing ONNX Runtime to candle.
#![allow(clippy::unwrap_used)]

mod common;

use switchboard_router::RouterError;
use switchboard_router::encoder::{BertEncoder, EncoderBackend, EncoderOptions};
use switchboard_router::fetch;

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<String>,
    vectors: Vec<Vec<f32>>,
    max_seq_length: usize,
}

fn assert_matches_fixture(enc: &switchboard_router::encoder::BertEncoder) {
    let fx: Fixture = serde_json::from_str(include_str!("fixtures/parity.json")).unwrap();
    assert_eq!(enc.max_seq_len(), fx.max_seq_length);
    let refs: Vec<&str> = fx.sentences.iter().map(String::as_str).collect();
    // Batched (mixed lengths, padded per batch) and one by one must both match.
    let batched = enc.encode(&refs).unwrap();
    for (i, (got, want)) in batched.vectors.iter().zip(&fx.vectors).enumerate() {
        let cos: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(cos >= 0.999, "{}: sentence {i} ({:?}): cosine {cos}", enc.backend(), fx.sentences[i]);
        let single = enc.encode(&[refs[i]]).unwrap();
        let cos1: f32 = single.vectors[0].iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(cos1 >= 0.999, "{}: sentence {i} alone: cosine {cos1}", enc.backend());
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn candle_vectors_match_sentence_transformers() {
    let Some(enc) = common::encoder_on("candle_vectors_match_sentence_transformers", EncoderBackend::Candle) else {
        return;
    };
    assert_matches_fixture(&enc);
}

#[test]
fn ort_vectors_match_sentence_transformers() {
    let Some(enc) = common::encoder_on("ort_vectors_match_sentence_transformers", EncoderBackend::Ort) else {
        return;
    };
    assert!(enc.onnx_sha256().is_some_and(|h| h.len() == 64));
    assert_matches_fixture(&enc);
}

#[test]
fn both_engines_give_the_same_encoder_identity() {
    let test = "both_engines_give_the_same_encoder_identity";
    let (Some(c), Some(o)) =
        (common::encoder_on(test, EncoderBackend::Candle), common::encoder_on(test, EncoderBackend::Ort))
    else {
        return;
    };
    // A head trained on one engine runs on the other: same identity, same vectors.
    assert_eq!(c.info(), o.info());
    let text = ["my card has not arrived yet", "Hello WORLD"];
    let (a, b) = (c.encode(&text).unwrap(), o.encode(&text).unwrap());
    for (x, y) in a.vectors.iter().zip(&b.vectors) {
        let cos: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        assert!(cos >= 0.9999, "cosine {cos}");
    }
}

/// A model folder without `model.onnx` (links to the real files): ONNX Runtime is unavailable,
/// a typed error without fallback, candle with it.
#[test]
fn a_folder_without_onnx_falls_back_to_candle() {
    let Some(loc) = common::model_location("a_folder_without_onnx_falls_back_to_candle") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors", "sentence_bert_config.json"] {
        std::os::unix::fs::symlink(loc.dir.join(f), dir.path().join(f)).unwrap();
    }
    let strict = EncoderOptions { fallback: false, ..EncoderOptions::default() }.with_backend(EncoderBackend::Ort);
    let err = BertEncoder::load_with(dir.path(), false, &strict).expect_err("no model.onnx");
    assert!(matches!(err, RouterError::OrtUnavailable(_)), "{err}");
    let lenient = EncoderOptions { fallback: true, ..strict };
    let enc = BertEncoder::load_with(dir.path(), false, &lenient).unwrap();
    assert_eq!(enc.backend(), EncoderBackend::Candle);
    assert_eq!(enc.encode(&["still works"]).unwrap().vectors[0].len(), enc.info().dim);
}

/// A `model.onnx` that is not the one `models fetch` recorded is refused, not run.
#[test]
fn a_tampered_onnx_file_is_refused() {
    let Some(loc) = common::model_location("a_tampered_onnx_file_is_refused") else {
        return;
    };
    if !loc.dir.join(fetch::ONNX_INFO_FILE).is_file() {
        assert!(!common::required(), "models fetch must have exported model.onnx");
        eprintln!("\n*** SKIPPING a_tampered_onnx_file_is_refused: no exported model.onnx ***\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors", fetch::ONNX_INFO_FILE] {
        std::os::unix::fs::symlink(loc.dir.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join(fetch::ONNX_FILE), b"not a graph").unwrap();
    let options = EncoderOptions { fallback: true, ..EncoderOptions::default() }.with_backend(EncoderBackend::Ort);
    let err = BertEncoder::load_with(dir.path(), false, &options).expect_err("tampered");
    assert!(matches!(err, RouterError::HashMismatch { .. }), "{err}");
}

/// A missing ONNX Runtime library: a typed error, and candle with fallback — never a panic.
/// The library is loaded once per process, so this runs in a child process of this test
/// binary with `ORT_DYLIB_PATH` pointing nowhere.
#[test]
fn a_missing_runtime_library_is_a_typed_error() {
    if std::env::var_os("SWITCHBOARD_TEST_CHILD").is_some() {
        return missing_library_child();
    }
    if common::model_location("a_missing_runtime_library_is_a_typed_error").is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_missing_runtime_library_is_a_typed_error", "--nocapture", "--test-threads=1"])
        .env("SWITCHBOARD_TEST_CHILD", "1")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("child checked the missing library"), "{stdout}");
}

fn missing_library_child() {
    let loc = switchboard_router::fetch::resolve_model_dir(None).unwrap();
    let strict = EncoderOptions { fallback: false, ..EncoderOptions::default() }.with_backend(EncoderBackend::Ort);
    match BertEncoder::load_with(&loc.dir, loc.pinned, &strict) {
        Err(RouterError::OrtUnavailable(why)) => {
            assert!(!loc.dir.join(fetch::ONNX_FILE).is_file() || why.contains("/nonexistent"), "{why}");
        }
        other => panic!("expected OrtUnavailable, got {other:?}"),
    }
    let enc = BertEncoder::load_with(&loc.dir, loc.pinned, &EncoderOptions { fallback: true, ..strict }).unwrap();
    assert_eq!(enc.backend(), EncoderBackend::Candle);
    println!("child checked the missing library");
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
