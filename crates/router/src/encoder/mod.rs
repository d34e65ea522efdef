//! Text → vectors: the neural sentence encoder, the lexical encoder, and the featurizer that
//! combines them into the input of the heads.
//!
//! The featurizer is the only thing the heads see. Its layout (which encoders, their order and
//! weights) is recorded in the artifact so that a head is never fed features of another shape.

pub mod bert;
pub mod lexical;
mod onnx;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use bert::{BatchPlan, BertEncoder, EncoderBackend, EncoderOptions};
pub use lexical::LexicalEncoder;

use crate::error::{Result, RouterError};

/// A persistent cache of sentence embeddings for one encoder, for repeated training runs on
/// the same data. Keyed by text; refuses a file written for another encoder.
#[derive(Debug, Default)]
pub struct EmbeddingCache {
    map: Mutex<HashMap<String, Vec<f32>>>,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    encoder_hash: String,
    items: HashMap<String, Vec<f32>>,
}

impl EmbeddingCache {
    /// Load from `path` if it exists and was written for `encoder_hash`; empty otherwise.
    pub fn open(path: &Path, encoder_hash: &str) -> Self {
        let items = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.encoder_hash == encoder_hash)
            .map(|c| c.items)
            .unwrap_or_default();
        Self { map: Mutex::new(items) }
    }

    /// Write the cache.
    ///
    /// # Errors
    /// I/O failures.
    pub fn save(&self, path: &Path, encoder_hash: &str) -> Result<()> {
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let file = CacheFile { encoder_hash: encoder_hash.to_owned(), items: map.clone() };
        let bytes = serde_json::to_vec(&file).map_err(|e| RouterError::json(path, e))?;
        std::fs::write(path, bytes).map_err(|e| RouterError::io(path, e))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Identity of an encoder: what it is, which weights, how wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderInfo {
    /// `bert` or `lexical`.
    pub kind: String,
    /// Human-readable model id.
    pub id: String,
    /// Hash of the weights and tokenizer (bert) or of the IDF table (lexical).
    pub hash: String,
    /// Output dimension.
    pub dim: usize,
}

impl std::fmt::Display for EncoderInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} ({})", self.kind, self.id, self.hash)
    }
}

/// Output of an encoder for a batch of texts.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    /// One vector per input text, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Whether each text was cut to the model's length limit.
    pub truncated: Vec<bool>,
}

/// Features of one text, as the heads consume them.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Input of the classifier head.
    pub dense: Vec<f32>,
    /// Unit vector used by the prototype head (the sentence embedding, or the lexical vector).
    pub proto: Vec<f32>,
    /// The text was truncated to the model's limit.
    pub truncated: bool,
}

/// Combines a sentence encoder and a lexical encoder into one feature vector per text.
#[derive(Debug, Clone)]
pub struct Featurizer {
    bert: Option<Arc<BertEncoder>>,
    lexical: Option<LexicalEncoder>,
    lexical_weight: f32,
    cache: Option<Arc<EmbeddingCache>>,
}

impl Featurizer {
    /// A featurizer from its parts; at least one must be present (the caller guarantees it).
    pub fn new(bert: Option<Arc<BertEncoder>>, lexical: Option<LexicalEncoder>, lexical_weight: f32) -> Self {
        Self { bert, lexical, lexical_weight, cache: None }
    }

    /// Look sentence embeddings up in (and add them to) a persistent cache. Cached texts are
    /// reported as not truncated only if they were not; the flag is recomputed by tokenizing.
    pub fn with_cache(mut self, cache: Arc<EmbeddingCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    fn encode_bert(&self, bert: &BertEncoder, texts: &[&str]) -> Result<Encoded> {
        let Some(cache) = &self.cache else {
            return bert.encode(texts);
        };
        let missing: Vec<&str> = {
            let map = cache.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            texts.iter().copied().filter(|t| !map.contains_key(*t)).collect()
        };
        if !missing.is_empty() {
            let enc = bert.encode(&missing)?;
            let mut map = cache.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (t, v) in missing.iter().zip(enc.vectors) {
                map.insert((*t).to_owned(), v);
            }
        }
        let map = cache.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Encoded::default();
        for t in texts {
            out.vectors.push(map.get(*t).cloned().unwrap_or_default());
            out.truncated.push(bert.tokenize(t)?.1);
        }
        Ok(out)
    }

    /// The neural encoder, if any.
    pub fn bert(&self) -> Option<&Arc<BertEncoder>> {
        self.bert.as_ref()
    }

    /// The lexical encoder, if any.
    pub fn lexical(&self) -> Option<&LexicalEncoder> {
        self.lexical.as_ref()
    }

    /// Weight of the lexical block inside the dense features.
    pub fn lexical_weight(&self) -> f32 {
        self.lexical_weight
    }

    /// Width of [`Features::dense`].
    pub fn dim(&self) -> usize {
        self.bert.as_ref().map_or(0, |b| b.info().dim) + self.lexical.as_ref().map_or(0, LexicalEncoder::dim)
    }

    /// Featurize a batch of texts.
    ///
    /// # Errors
    /// Encoder failures (tokenizer, tensor).
    pub fn featurize(&self, texts: &[&str]) -> Result<Vec<Features>> {
        let bert = match &self.bert {
            Some(b) => Some(self.encode_bert(b, texts)?),
            None => None,
        };
        let mut out = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let mut dense = Vec::with_capacity(self.dim());
            let mut proto = Vec::new();
            let mut truncated = false;
            if let Some(b) = &bert {
                dense.extend_from_slice(&b.vectors[i]);
                proto = b.vectors[i].clone();
                truncated = b.truncated[i];
            }
            if let Some(lex) = &self.lexical {
                let v = lex.encode_one(t);
                if proto.is_empty() {
                    proto = v.clone();
                }
                dense.extend(v.iter().map(|x| x * self.lexical_weight));
            }
            out.push(Features { dense, proto, truncated });
        }
        Ok(out)
    }
}
