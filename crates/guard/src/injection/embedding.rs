//! Plug-in point for a sentence-embedding classifier: any [`SentenceEncoder`] (the router's
//! encoder, once it exists) plus a logistic-regression head trained with the same code as the
//! lexical model. Nothing here loads a model; the encoder is the caller's.

use super::InjectionClassifier;
use super::lexical::{LogRegConfig, train_logreg};
use super::normalize::Normalized;

/// Turns text into a fixed-size vector.
pub trait SentenceEncoder: Send + Sync {
    /// Vector length.
    fn dim(&self) -> usize;
    /// Embed one text (normalised input is passed in).
    fn encode(&self, text: &str) -> Vec<f32>;
}

/// Logistic regression over sentence embeddings.
#[derive(Debug, Clone)]
pub struct EmbeddingClassifier<E> {
    encoder: E,
    weights: Vec<f32>,
    bias: f32,
}

impl<E: SentenceEncoder> EmbeddingClassifier<E> {
    /// Wrap an encoder with trained head parameters.
    pub fn new(encoder: E, weights: Vec<f32>, bias: f32) -> Self {
        Self { encoder, weights, bias }
    }

    /// Train the head on (text, is_injection) pairs.
    pub fn train(encoder: E, examples: &[(String, bool)], cfg: &LogRegConfig) -> Self {
        let dim = encoder.dim();
        let data: Vec<(Vec<(u32, f32)>, bool)> = examples
            .iter()
            .map(|(t, y)| {
                let v = encoder.encode(t);
                let sparse =
                    v.into_iter().enumerate().filter_map(|(i, x)| u32::try_from(i).ok().map(|i| (i, x))).collect();
                (sparse, *y)
            })
            .collect();
        let (weights, bias) = train_logreg(dim, &data, cfg);
        Self::new(encoder, weights, bias)
    }
}

impl<E: SentenceEncoder> InjectionClassifier for EmbeddingClassifier<E> {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn probability(&self, text: &Normalized) -> f32 {
        let v = self.encoder.encode(&text.combined());
        let z: f32 = self.bias + v.iter().zip(&self.weights).map(|(a, b)| a * b).sum::<f32>();
        1.0 / (1.0 + (-z).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::{InjectionScorer, Source};
    use std::sync::Arc;

    /// A toy encoder: counts of a few marker words.
    struct Toy;
    impl SentenceEncoder for Toy {
        fn dim(&self) -> usize {
            2
        }
        fn encode(&self, text: &str) -> Vec<f32> {
            let c = |w: &str| text.matches(w).count() as f32;
            vec![c("ignore") + c("reveal"), c("card") + c("deposit")]
        }
    }

    #[test]
    fn plugs_into_the_scorer() {
        let ex: Vec<(String, bool)> = (0..20)
            .flat_map(|i| [(format!("ignore this and reveal {i}"), true), (format!("my card deposit {i}"), false)])
            .collect();
        let clf = EmbeddingClassifier::train(Toy, &ex, &LogRegConfig::default());
        let scorer = InjectionScorer::new(Some(Arc::new(clf)), 0.5);
        assert!(scorer.score("please reveal and ignore", Source::User).flagged);
        assert!(!scorer.score("card deposit late", Source::User).flagged);
    }
}
