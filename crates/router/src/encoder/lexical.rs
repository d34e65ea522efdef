//! A lexical sentence encoder that needs no model: hashed word and character n-grams, TF-IDF.
//!
//! Words (unigrams and bigrams) and character 2–5-grams of each word (with boundary marks) are
//! hashed into a fixed number of buckets with a sign bit, weighted by sublinear term frequency
//! times an IDF fitted on the training texts, and L2-normalised. It is the fallback when the
//! sentence-transformer is unavailable and a second view of the text next to it.

use serde::{Deserialize, Serialize};

/// Default number of hash buckets.
pub const DEFAULT_LEXICAL_DIM: usize = 4096;

/// A fitted lexical encoder (its IDF table is part of the router artifact).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LexicalEncoder {
    dim: usize,
    idf: Vec<f32>,
}

/// FNV-1a, 64 bit: stable across platforms and releases, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Lower-cased word tokens (letters and digits; everything else separates).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

impl LexicalEncoder {
    /// Fit the IDF table on training texts.
    pub fn fit(texts: &[&str], dim: usize) -> Self {
        let dim = dim.max(16);
        let mut df = vec![0u32; dim];
        let mut seen = vec![false; dim];
        for t in texts {
            seen.iter_mut().for_each(|s| *s = false);
            Self::for_each_feature(t, dim, |bucket, _| seen[bucket] = true);
            for (d, s) in df.iter_mut().zip(&seen) {
                *d += u32::from(*s);
            }
        }
        let n = texts.len() as f32;
        let idf = df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0).collect();
        Self { dim, idf }
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    fn for_each_feature(text: &str, dim: usize, mut f: impl FnMut(usize, f32)) {
        let ws = words(text);
        let mut emit = |key: &[u8], seed: u64| {
            let h = fnv1a(key, seed);
            let bucket = (h % dim as u64) as usize;
            let sign = if (h >> 63) == 1 { -1.0 } else { 1.0 };
            f(bucket, sign);
        };
        for (i, w) in ws.iter().enumerate() {
            emit(w.as_bytes(), 1);
            if let Some(next) = ws.get(i + 1) {
                emit(format!("{w} {next}").as_bytes(), 2);
            }
            let chars: Vec<char> = format!("<{w}>").chars().collect();
            for n in 2..=5 {
                if chars.len() < n {
                    break;
                }
                for win in chars.windows(n) {
                    let g: String = win.iter().collect();
                    emit(g.as_bytes(), 10 + n as u64);
                }
            }
        }
    }

    /// Encode one text to an L2-normalised vector (all zeros for a text with no word).
    pub fn encode_one(&self, text: &str) -> Vec<f32> {
        let mut tf = vec![0f32; self.dim];
        Self::for_each_feature(text, self.dim, |b, s| tf[b] += s);
        let mut v: Vec<f32> = tf
            .iter()
            .zip(&self.idf)
            .map(|(&t, &idf)| if t == 0.0 { 0.0 } else { t.signum() * (1.0 + t.abs().ln()) * idf })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let corpus =
            ["my card was stolen", "card stolen yesterday", "what is the exchange rate", "exchange rate for euros"];
        let enc = LexicalEncoder::fit(&corpus, 1024);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let a = enc.encode_one("someone stole my card");
        let b = enc.encode_one("my card was stolen");
        let c = enc.encode_one("exchange rate please");
        assert!(dot(&a, &b) > dot(&a, &c) + 0.1);
        let norm = dot(&b, &b);
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn empty_and_symbol_only_text_encode_to_zero() {
        let enc = LexicalEncoder::fit(&["hello"], 64);
        assert!(enc.encode_one("").iter().all(|&x| x == 0.0));
        assert!(enc.encode_one("?!  ...").iter().all(|&x| x == 0.0));
    }

    #[test]
    fn encoding_is_deterministic() {
        let enc = LexicalEncoder::fit(&["one two", "three"], 256);
        assert_eq!(enc.encode_one("one two three"), enc.encode_one("one two three"));
    }
}
