//! Text → vectors: the neural sentence encoder, the lexical encoder, and the featurizer that
//! combines them into the input of the heads.
//!
//! The featurizer is the only thing the heads see. Its layout (which encoders, their order and
//! weights) is recorded in the artifact so that a head is never fed features of another shape.

pub mod bert;
pub mod lexical;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use bert::BertEncoder;
pub use lexical::LexicalEncoder;

use crate::error::Result;

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
}

impl Featurizer {
    /// A featurizer from its parts; at least one must be present (the caller guarantees it).
    pub fn new(
        bert: Option<Arc<BertEncoder>>,
        lexical: Option<LexicalEncoder>,
        lexical_weight: f32,
    ) -> Self {
        Self {
            bert,
            lexical,
            lexical_weight,
        }
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
        self.bert.as_ref().map_or(0, |b| b.info().dim)
            + self.lexical.as_ref().map_or(0, LexicalEncoder::dim)
    }

    /// Featurize a batch of texts.
    ///
    /// # Errors
    /// Encoder failures (tokenizer, tensor).
    pub fn featurize(&self, texts: &[&str]) -> Result<Vec<Features>> {
        let bert = match &self.bert {
            Some(b) => Some(b.encode(texts)?),
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
            out.push(Features {
                dense,
                proto,
                truncated,
            });
        }
        Ok(out)
    }
}
