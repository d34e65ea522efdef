//! Helpers shared by the integration tests: finding the model and the benchmark data.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;

use switchboard_router::RouterError;
use switchboard_router::data::{self, DataFormat, Example};
use switchboard_router::encoder::{BertEncoder, EncoderBackend, EncoderOptions};
use switchboard_router::fetch::{ModelLocation, resolve_model_dir};

/// The sentence encoder, found the documented way (`SWITCHBOARD_MODEL_DIR`, then the models
/// cache that `switchboard models fetch` fills). Absent: `None` with a loud message, unless
/// `CI` or `SWITCHBOARD_REQUIRE_MODEL` is set, in which case the test fails.
pub fn encoder(test: &str) -> Option<Arc<BertEncoder>> {
    match resolve_model_dir(None) {
        Some(loc) => Some(Arc::new(BertEncoder::load(&loc.dir, loc.pinned).expect("the model found must load"))),
        None => {
            let required = std::env::var_os("CI").is_some() || std::env::var_os("SWITCHBOARD_REQUIRE_MODEL").is_some();
            assert!(!required, "{test}: no sentence encoder; run `switchboard models fetch` first");
            eprintln!(
                "\n*** SKIPPING {test}: no sentence encoder found. Run `switchboard models fetch` \
                 (or set SWITCHBOARD_MODEL_DIR) to run it. ***\n"
            );
            None
        }
    }
}

/// True when a missing model or runtime must fail the test rather than skip it.
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("SWITCHBOARD_REQUIRE_MODEL").is_some()
}

fn skip(test: &str, what: &str) {
    assert!(!required(), "{test}: {what}; run `switchboard models fetch` first");
    eprintln!("\n*** SKIPPING {test}: {what}. Run `switchboard models fetch` to run it. ***\n");
}

/// The model folder, found the documented way; `None` (loudly, or a failure in CI) without one.
pub fn model_location(test: &str) -> Option<ModelLocation> {
    let loc = resolve_model_dir(None);
    if loc.is_none() {
        skip(test, "no sentence encoder found");
    }
    loc
}

/// The sentence encoder on one engine, without fallback. A missing model, ONNX Runtime library
/// or `model.onnx` skips loudly outside CI and fails in CI.
pub fn encoder_on(test: &str, backend: EncoderBackend) -> Option<Arc<BertEncoder>> {
    let loc = model_location(test)?;
    let options = EncoderOptions { fallback: false, ..EncoderOptions::default() }.with_backend(backend);
    match BertEncoder::load_with(&loc.dir, loc.pinned, &options) {
        Ok(e) => {
            assert_eq!(e.backend(), backend);
            Some(Arc::new(e))
        }
        Err(RouterError::OrtUnavailable(why)) => {
            skip(test, &format!("ONNX Runtime unavailable ({why})"));
            None
        }
        Err(e) => panic!("the model found must load on {backend}: {e}"),
    }
}

/// The shared benchmark data folder (`SWITCHBOARD_DATA_DIR`, else `shared/data` beside the repo).
pub fn data_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_DATA_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"), PathBuf::from)
}

/// A deterministic slice of BANKING77: `intents` intents, `train_n` + `test_n` examples each.
pub fn banking_slice(intents: usize, train_n: usize, test_n: usize) -> (Vec<Example>, Vec<Example>) {
    let path = data_dir().join("banking77/train.csv");
    let all = data::load(&path, DataFormat::Banking77)
        .unwrap_or_else(|e| panic!("BANKING77 must be at {}: {e}", path.display()));
    let mut names: Vec<&str> = all.iter().map(|e| e.intent.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let keep: Vec<String> = names.iter().take(intents).map(|s| (*s).to_owned()).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for k in &keep {
        let items: Vec<&Example> = all.iter().filter(|e| &e.intent == k).collect();
        train.extend(items.iter().take(train_n).map(|e| (*e).clone()));
        test.extend(items.iter().skip(train_n).take(test_n).map(|e| (*e).clone()));
    }
    (train, test)
}

/// A deterministic slice of CLINC150: the first `intents` in-scope intents (by name) and the
/// `oos` items, from `train.jsonl` and `val.jsonl`; then every 8th validation item of the other
/// intents, relabelled `oos` (out of scope for a router that knows only the slice).
pub fn clinc_slice(intents: usize) -> (Vec<Example>, Vec<Example>, Vec<Example>) {
    let load = |f: &str| {
        let path = data_dir().join("clinc150").join(f);
        data::load(&path, DataFormat::Jsonl).unwrap_or_else(|e| panic!("CLINC150 must be at {}: {e}", path.display()))
    };
    let (train, val) = (load("train.jsonl"), load("val.jsonl"));
    let mut names: Vec<&str> = train.iter().map(|e| e.intent.as_str()).filter(|i| *i != "oos").collect();
    names.sort_unstable();
    names.dedup();
    let keep: Vec<String> = names.iter().take(intents).map(|s| (*s).to_owned()).chain(["oos".to_owned()]).collect();
    let others: Vec<Example> = val
        .iter()
        .filter(|e| !keep.contains(&e.intent))
        .step_by(8)
        .map(|e| Example { text: e.text.clone(), intent: "oos".into() })
        .collect();
    let pick = |v: Vec<Example>| -> Vec<Example> { v.into_iter().filter(|e| keep.contains(&e.intent)).collect() };
    (pick(train), pick(val), others)
}
