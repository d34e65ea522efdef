//! Labelled utterances: reading the benchmark formats, splitting, hashing.
//!
//! `banking77` is the CSV `text,category` with a header; `jsonl` is one `{"text","intent"}`
//! object per line. Splits are stratified and seeded, so a dev split is reproducible.

use std::collections::BTreeMap;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RouterError};

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The utterance.
    pub text: String,
    /// Its intent.
    pub intent: String,
}

/// File formats of labelled data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// CSV `text,category`.
    Banking77,
    /// JSON lines `{"text","intent"}`.
    Jsonl,
}

impl DataFormat {
    /// Guess from the file extension (`.csv` → banking77, anything else → jsonl).
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Self::Banking77,
            _ => Self::Jsonl,
        }
    }
}

impl std::str::FromStr for DataFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "banking77" | "csv" => Ok(Self::Banking77),
            "jsonl" => Ok(Self::Jsonl),
            other => Err(format!("unknown format {other:?} (banking77 or jsonl)")),
        }
    }
}

fn bad(path: &Path, line: usize, reason: impl Into<String>) -> RouterError {
    RouterError::BadData { path: path.to_path_buf(), line, reason: reason.into() }
}

/// Read labelled data.
///
/// # Errors
/// [`RouterError::Io`] when the file cannot be read, [`RouterError::BadData`] for malformed
/// rows, empty text or labels, or a file with no rows.
pub fn load(path: &Path, format: DataFormat) -> Result<Vec<Example>> {
    let bytes = std::fs::read(path).map_err(|e| RouterError::io(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| bad(path, 0, format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to())))?;
    let mut out = Vec::new();
    match format {
        DataFormat::Banking77 => {
            let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
            let headers = rdr.headers().map_err(|e| bad(path, 1, e.to_string()))?.clone();
            let ti = headers.iter().position(|h| h == "text");
            let ci = headers.iter().position(|h| h == "category" || h == "intent" || h == "label");
            let (Some(ti), Some(ci)) = (ti, ci) else {
                return Err(bad(path, 1, "header must have `text` and `category` columns"));
            };
            for (i, rec) in rdr.records().enumerate() {
                let line = i + 2;
                let rec = rec.map_err(|e| bad(path, line, e.to_string()))?;
                let (Some(t), Some(c)) = (rec.get(ti), rec.get(ci)) else {
                    return Err(bad(path, line, "missing column"));
                };
                push(&mut out, path, line, t, c)?;
            }
        }
        DataFormat::Jsonl => {
            #[derive(Deserialize)]
            struct Row {
                text: String,
                #[serde(alias = "label", alias = "category")]
                intent: String,
            }
            for (i, l) in text.lines().enumerate() {
                if l.trim().is_empty() {
                    continue;
                }
                let row: Row = serde_json::from_str(l).map_err(|e| bad(path, i + 1, e.to_string()))?;
                push(&mut out, path, i + 1, &row.text, &row.intent)?;
            }
        }
    }
    if out.is_empty() {
        return Err(bad(path, 0, "no examples"));
    }
    Ok(out)
}

fn push(out: &mut Vec<Example>, path: &Path, line: usize, text: &str, intent: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(bad(path, line, "empty text"));
    }
    if intent.trim().is_empty() {
        return Err(bad(path, line, "empty intent"));
    }
    out.push(Example { text: text.to_owned(), intent: intent.trim().to_owned() });
    Ok(())
}

/// Write examples in a format.
///
/// # Errors
/// [`RouterError::Io`] on write failure.
pub fn save(path: &Path, format: DataFormat, examples: &[Example]) -> Result<()> {
    let mut s = String::new();
    match format {
        DataFormat::Banking77 => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let err = |e: csv::Error| bad(path, 0, e.to_string());
            w.write_record(["text", "category"]).map_err(err)?;
            for e in examples {
                w.write_record([&e.text, &e.intent]).map_err(err)?;
            }
            let bytes = w.into_inner().map_err(|e| bad(path, 0, e.to_string()))?;
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        DataFormat::Jsonl => {
            for e in examples {
                let line = serde_json::json!({"text": e.text, "intent": e.intent});
                s.push_str(&line.to_string());
                s.push('\n');
            }
        }
    }
    std::fs::write(path, s).map_err(|e| RouterError::io(path, e))
}

/// Stratified, seeded split: about `fraction` of each intent goes to the second part (at
/// least one item of any intent with two or more examples).
pub fn stratified_split(examples: &[Example], fraction: f32, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let mut by_intent: BTreeMap<&str, Vec<&Example>> = BTreeMap::new();
    for e in examples {
        by_intent.entry(&e.intent).or_default().push(e);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (_, mut items) in by_intent {
        items.shuffle(&mut rng);
        let k = if items.len() < 2 {
            0
        } else {
            ((items.len() as f32 * fraction).round() as usize).clamp(1, items.len() - 1)
        };
        b.extend(items[..k].iter().map(|e| (*e).clone()));
        a.extend(items[k..].iter().map(|e| (*e).clone()));
    }
    (a, b)
}

/// Keep at most `n` examples per intent (seeded choice), for few-shot experiments.
pub fn cap_per_intent(examples: &[Example], n: usize, seed: u64) -> Vec<Example> {
    let mut by_intent: BTreeMap<&str, Vec<&Example>> = BTreeMap::new();
    for e in examples {
        by_intent.entry(&e.intent).or_default().push(e);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (_, mut items) in by_intent {
        items.shuffle(&mut rng);
        out.extend(items.into_iter().take(n).cloned());
    }
    out
}

/// sha256 over the examples in order (text and intent, length-prefixed).
pub fn hash_examples(examples: &[Example]) -> String {
    let mut h = Sha256::new();
    for e in examples {
        for s in [&e.text, &e.intent] {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
    crate::fetch::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_and_rejects_bad_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "text,category\n\"hello, there\",greet\nbye,leave\n").expect("write");
        let ex = load(&csv, DataFormat::Banking77).expect("csv");
        assert_eq!(ex[0].text, "hello, there");
        assert_eq!(ex[1].intent, "leave");
        let jl = dir.path().join("d.jsonl");
        std::fs::write(&jl, "{\"text\":\"hi\",\"intent\":\"greet\"}\n\n{\"text\":\"x\",\"intent\":\"oos\"}\n")
            .expect("write");
        assert_eq!(load(&jl, DataFormat::Jsonl).expect("jsonl").len(), 2);
        std::fs::write(&jl, "{\"text\":\"hi\"}\n").expect("write");
        assert!(matches!(load(&jl, DataFormat::Jsonl), Err(RouterError::BadData { line: 1, .. })));
        std::fs::write(&jl, b"\xff\xfe").expect("write");
        assert!(matches!(load(&jl, DataFormat::Jsonl), Err(RouterError::BadData { .. })));
    }

    #[test]
    fn split_is_stratified_and_seeded() {
        let ex: Vec<Example> =
            (0..100).map(|i| Example { text: format!("t{i}"), intent: format!("i{}", i % 4) }).collect();
        let (a, b) = stratified_split(&ex, 0.2, 7);
        assert_eq!(a.len() + b.len(), 100);
        assert_eq!(b.len(), 20);
        for k in 0..4 {
            assert_eq!(b.iter().filter(|e| e.intent == format!("i{k}")).count(), 5);
        }
        let (_, b2) = stratified_split(&ex, 0.2, 7);
        assert_eq!(b, b2);
        assert_ne!(hash_examples(&a), hash_examples(&b));
        assert_eq!(cap_per_intent(&ex, 3, 1).len(), 12);
    }
}
