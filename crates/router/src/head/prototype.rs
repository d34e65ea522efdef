//! Prototype (nearest-centroid) head: intents defined by a few examples, added at run time.
//!
//! Each intent keeps the normalised mean of its example vectors. A text's score for an intent
//! is the cosine between its vector and that centroid. No training: adding an intent is
//! averaging its examples, so few-shot intents can be added while the router serves.

use serde::{Deserialize, Serialize};

/// One prototype.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prototype {
    /// The intent.
    pub intent: String,
    /// Unit-length centroid.
    pub centroid: Vec<f32>,
    /// How many examples it was built from.
    pub examples: usize,
}

/// A set of prototypes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PrototypeHead {
    prototypes: Vec<Prototype>,
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl PrototypeHead {
    /// Add (or replace) an intent from example vectors of one width. Returns false (and adds
    /// nothing) when there are no examples or they have different widths.
    pub fn add(&mut self, intent: &str, examples: &[Vec<f32>]) -> bool {
        let Some(first) = examples.first() else {
            return false;
        };
        let dim = first.len();
        if dim == 0 || examples.iter().any(|e| e.len() != dim) {
            return false;
        }
        let mut c = vec![0f32; dim];
        for e in examples {
            c.iter_mut().zip(e).for_each(|(a, b)| *a += b);
        }
        normalize(&mut c);
        self.prototypes.retain(|p| p.intent != intent);
        self.prototypes.push(Prototype { intent: intent.to_owned(), centroid: c, examples: examples.len() });
        true
    }

    /// Number of intents.
    pub fn len(&self) -> usize {
        self.prototypes.len()
    }

    /// True when there is no prototype.
    pub fn is_empty(&self) -> bool {
        self.prototypes.is_empty()
    }

    /// Intent names in insertion order.
    pub fn intents(&self) -> impl Iterator<Item = &str> {
        self.prototypes.iter().map(|p| p.intent.as_str())
    }

    /// Cosine to every prototype, best first (vectors of another width score nothing).
    pub fn scores(&self, v: &[f32]) -> Vec<(String, f32)> {
        let mut out: Vec<(String, f32)> = self
            .prototypes
            .iter()
            .filter(|p| p.centroid.len() == v.len())
            .map(|p| {
                let cos = p.centroid.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
                (p.intent.clone(), cos)
            })
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_prototype_wins_and_bad_input_is_refused() {
        let mut h = PrototypeHead::default();
        assert!(h.add("a", &[vec![1.0, 0.0], vec![0.9, 0.1]]));
        assert!(h.add("b", &[vec![0.0, 1.0]]));
        assert!(!h.add("c", &[]));
        assert!(!h.add("d", &[vec![1.0], vec![1.0, 2.0]]));
        assert_eq!(h.len(), 2);
        let s = h.scores(&[0.8, 0.2]);
        assert_eq!(s[0].0, "a");
        assert!(s[0].1 > s[1].1);
        assert!(h.scores(&[1.0, 0.0, 0.0]).is_empty());
    }
}
