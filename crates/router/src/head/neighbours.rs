//! Nearest-neighbour memory of the training sentences.
//!
//! The router keeps the sentence embedding of every training example (rounded to half
//! precision, which is how they are stored) with its intent. For a text it finds the most
//! similar examples and gives two signals:
//!
//! * a **vote**: a distribution over the intents of the `vote_k` nearest examples, each
//!   weighted by `exp((cos − cos_max) / τ)`, which the router mixes with the classifier's
//!   calibrated probabilities (weight fitted on held-out data, 0 when it does not help);
//! * the **in-scope similarity**: the mean cosine of the `sim_k` nearest in-scope examples
//!   (the out-of-scope class excluded). Out-of-scope texts that the classifier assigns
//!   confidently to some intent are still far from every example of it, so this is the second
//!   half of the out-of-scope score ([`NeighbourThresholds::score`]).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RouterError};

/// How the neighbour signals are computed and combined, fitted at training time and recorded
/// with every decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NeighbourThresholds {
    /// Nearest examples that vote.
    pub vote_k: usize,
    /// Temperature of the vote weights.
    pub vote_temperature: f32,
    /// Weight of the vote in the routed probabilities (`(1 − w)·classifier + w·vote`).
    pub vote_weight: f32,
    /// Nearest in-scope examples averaged into the in-scope similarity.
    pub sim_k: usize,
    /// Weight of the similarity term in the out-of-scope score.
    pub sim_weight: f32,
    /// Mean and standard deviation of `ln p₁` on held-out in-scope items.
    pub confidence_mean: f32,
    /// See `confidence_mean`.
    pub confidence_std: f32,
    /// Mean and standard deviation of the in-scope similarity on held-out in-scope items.
    pub sim_mean: f32,
    /// See `sim_mean`.
    pub sim_std: f32,
    /// Below this out-of-scope score the text is out of scope.
    pub oos_score: f32,
}

impl NeighbourThresholds {
    /// The out-of-scope score of a text whose top probability is `p1` and in-scope similarity
    /// `sim`: `(ln p₁ − μ₁)/σ₁ + sim_weight · (sim − μ₂)/σ₂`, both terms standardised on
    /// held-out in-scope items. Low means out of scope.
    pub fn score(&self, p1: f32, sim: f32) -> f32 {
        let conf = (p1.max(1e-12).ln() - self.confidence_mean) / self.confidence_std.max(1e-6);
        let near = (sim - self.sim_mean) / self.sim_std.max(1e-6);
        conf + self.sim_weight * near
    }
}

/// Mix a vote into calibrated probabilities: `(1 − w)·p + w·vote` (nothing when `w` ≤ 0 or
/// the vote is empty).
pub fn mix_votes(probs: &mut [f32], votes: &[f32], w: f32) {
    if w <= 0.0 || votes.iter().all(|&v| v == 0.0) {
        return;
    }
    for (p, v) in probs.iter_mut().zip(votes) {
        *p = (1.0 - w) * *p + w * v;
    }
}

/// What the neighbours say about one text.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    /// Vote over the classes (sums to 1; all zero when there is no example).
    pub votes: Vec<f32>,
    /// Mean cosine of the nearest in-scope examples.
    pub in_scope_sim: f32,
}

/// The stored training embeddings and their class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    dim: usize,
    vectors: Vec<f32>,
    labels: Vec<u32>,
}

fn bad(path: &Path, reason: impl Into<String>) -> RouterError {
    RouterError::BadArtifact { dir: path.to_path_buf(), reason: reason.into() }
}

/// Dot product with eight independent sums, which the compiler turns into SIMD (a plain
/// sequential sum cannot be reordered); both training and routing use it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The `k` best `(score, row)` pairs seen so far, best first: higher score first, and for equal
/// scores the earlier row. Rows are offered in order, so an equal score never displaces.
struct Best {
    k: usize,
    items: Vec<(f32, usize)>,
}

impl Best {
    fn new(k: usize) -> Self {
        Self { k, items: Vec::with_capacity(k + 1) }
    }

    fn offer(&mut self, score: f32, row: usize) {
        use std::cmp::Ordering::{Greater, Less};
        if self.k == 0
            || (self.items.len() == self.k && self.items.last().is_some_and(|l| score.total_cmp(&l.0) != Greater))
        {
            return;
        }
        let at = self.items.partition_point(|e| e.0.total_cmp(&score) != Less);
        self.items.insert(at, (score, row));
        self.items.truncate(self.k);
    }
}

impl Neighbours {
    /// A memory of `rows` (unit vectors of one width) labelled with class indices. The
    /// vectors are rounded to half precision here, as they are stored, so a loaded memory
    /// gives exactly the scores the training run saw.
    ///
    /// # Errors
    /// [`RouterError::Training`] for rows of different widths or a label count that differs.
    pub fn new(rows: &[&[f32]], labels: &[usize]) -> Result<Self> {
        if rows.len() != labels.len() {
            return Err(RouterError::Training(format!("{} vectors but {} labels", rows.len(), labels.len())));
        }
        let dim = rows.first().map_or(0, |r| r.len());
        if rows.iter().any(|r| r.len() != dim) {
            return Err(RouterError::Training("neighbour vectors of different widths".into()));
        }
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let n = flat.len();
        let vectors = Tensor::from_vec(flat, n, &Device::Cpu)?.to_dtype(DType::F16)?.to_dtype(DType::F32)?.to_vec1()?;
        let labels = labels
            .iter()
            .map(|&l| u32::try_from(l).map_err(|_| RouterError::Training("class index out of range".into())))
            .collect::<Result<Vec<u32>>>()?;
        Ok(Self { dim, vectors, labels })
    }

    /// Number of stored examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Width of the stored vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The largest class index stored, if any.
    pub fn max_label(&self) -> Option<usize> {
        self.labels.iter().max().map(|&l| l as usize)
    }

    /// Both signals for the vector `q` over `classes` classes; `oos` is the out-of-scope
    /// class, left out of the in-scope similarity. A vector of another width sees nothing.
    pub fn look(
        &self,
        q: &[f32],
        vote_k: usize,
        vote_temperature: f32,
        sim_k: usize,
        classes: usize,
        oos: Option<usize>,
    ) -> Look {
        let mut votes = vec![0f32; classes];
        if q.len() != self.dim || self.is_empty() {
            return Look { votes, in_scope_sim: 0.0 };
        }
        // One pass over the stored rows keeps the few best of each kind; nothing of the
        // memory's size is allocated per text.
        let oos = oos.and_then(|o| u32::try_from(o).ok());
        let (mut voters, mut near) = (Best::new(vote_k), Best::new(sim_k));
        for (i, v) in self.vectors.chunks_exact(self.dim).enumerate() {
            let s = dot(v, q);
            voters.offer(s, i);
            if Some(self.labels[i]) != oos {
                near.offer(s, i);
            }
        }
        let (voters, near) = (voters.items, near.items);
        let in_scope_sim =
            if near.is_empty() { 0.0 } else { near.iter().map(|p| p.0).sum::<f32>() / near.len() as f32 };
        if let Some(&(best, _)) = voters.first() {
            let t = vote_temperature.max(1e-4);
            let mut total = 0f32;
            for &(s, i) in &voters {
                let w = ((s - best) / t).exp();
                if let Some(v) = votes.get_mut(self.labels[i] as usize) {
                    *v += w;
                    total += w;
                }
            }
            if total > 0.0 {
                votes.iter_mut().for_each(|v| *v /= total);
            }
        }
        Look { votes, in_scope_sim }
    }

    /// Write to a safetensors file: `vectors` (n × dim, f16) and `labels` (n, u32).
    ///
    /// # Errors
    /// Tensor and I/O failures.
    pub fn save(&self, path: &Path) -> Result<()> {
        let v = Tensor::from_slice(&self.vectors, (self.len(), self.dim), &Device::Cpu)?.to_dtype(DType::F16)?;
        let l = Tensor::from_slice(&self.labels, self.len(), &Device::Cpu)?;
        let map: HashMap<String, Tensor> = [("vectors".to_owned(), v), ("labels".to_owned(), l)].into_iter().collect();
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Read what [`Neighbours::save`] wrote.
    ///
    /// # Errors
    /// [`RouterError::BadArtifact`] for a missing, unreadable or inconsistent file.
    pub fn load(path: &Path) -> Result<Self> {
        let t = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(path, e.to_string()))?;
        let (Some(v), Some(l)) = (t.get("vectors"), t.get("labels")) else {
            return Err(bad(path, "lacks `vectors` or `labels`"));
        };
        let (n, dim) = v.dims2().map_err(|e| bad(path, format!("vectors: {e}")))?;
        if l.dims() != [n] || l.dtype() != DType::U32 {
            return Err(bad(path, format!("{n} vectors but labels of shape {:?} ({:?})", l.dims(), l.dtype())));
        }
        let vectors = v.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok(Self { dim, vectors, labels: l.to_vec1()? })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn memory() -> Neighbours {
        let rows = [unit(&[1.0, 0.0, 0.0]), unit(&[0.9, 0.1, 0.0]), unit(&[0.0, 1.0, 0.0]), unit(&[0.0, 0.0, 1.0])];
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        Neighbours::new(&refs, &[0, 0, 1, 2]).unwrap()
    }

    #[test]
    fn the_vote_goes_to_the_nearest_examples_and_the_oos_class_is_left_out_of_the_similarity() {
        let m = memory();
        let q = unit(&[1.0, 0.05, 0.0]);
        let look = m.look(&q, 3, 0.05, 1, 3, None);
        assert!((look.votes.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(look.votes[0] > 0.99, "{:?}", look.votes);
        assert!(look.in_scope_sim > 0.99);
        // A text next to class 2's only example: with class 2 as the oos class its similarity
        // is to the nearest in-scope example instead.
        let q = unit(&[0.0, 0.1, 1.0]);
        let with = m.look(&q, 1, 0.05, 1, 3, None).in_scope_sim;
        let without = m.look(&q, 1, 0.05, 1, 3, Some(2)).in_scope_sim;
        assert!(with > 0.99 && without < 0.2, "{with} {without}");
        // A higher temperature spreads the vote.
        let hot = m.look(&unit(&[1.0, 1.0, 0.0]), 4, 10.0, 1, 3, None);
        assert!(hot.votes.iter().filter(|&&v| v > 0.1).count() >= 2, "{:?}", hot.votes);
        // Wrong width: nothing.
        assert_eq!(m.look(&[1.0, 0.0], 3, 0.05, 1, 3, None).votes, vec![0.0; 3]);
    }

    /// All scores sorted: what the one-pass selection must agree with.
    fn brute_force(scores: &[f32], k: usize) -> Vec<(f32, usize)> {
        let mut all: Vec<(f32, usize)> = scores.iter().copied().enumerate().map(|(i, s)| (s, i)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.truncate(k);
        all
    }

    #[test]
    fn the_one_pass_selection_equals_a_full_sort_ties_included() {
        // Scores with many exact ties (a few distinct values), in a scrambled order.
        let scores: Vec<f32> = (0..500u32).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.5).collect();
        for k in [0, 1, 5, 10, 13, 499, 500, 600] {
            let mut best = Best::new(k);
            for (i, &s) in scores.iter().enumerate() {
                best.offer(s, i);
            }
            assert_eq!(best.items, brute_force(&scores, k), "k = {k}");
        }
    }

    #[test]
    fn save_and_load_give_the_same_memory_and_bad_files_are_refused() {
        let m = memory();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.safetensors");
        m.save(&p).unwrap();
        let back = Neighbours::load(&p).unwrap();
        assert_eq!(back, m);
        assert_eq!((back.len(), back.dim(), back.max_label()), (4, 3, Some(2)));
        std::fs::write(&p, b"not safetensors").unwrap();
        assert!(matches!(Neighbours::load(&p), Err(RouterError::BadArtifact { .. })));
        let rows = [vec![1.0f32, 0.0], vec![1.0f32]];
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        assert!(Neighbours::new(&refs, &[0, 1]).is_err());
        assert!(Neighbours::new(&refs[..1], &[0, 1]).is_err());
    }

    #[test]
    fn the_score_rises_with_confidence_and_similarity() {
        let t = NeighbourThresholds {
            vote_k: 10,
            vote_temperature: 0.02,
            vote_weight: 0.0,
            sim_k: 5,
            sim_weight: 2.0,
            confidence_mean: -0.2,
            confidence_std: 0.3,
            sim_mean: 0.7,
            sim_std: 0.1,
            oos_score: -2.0,
        };
        assert!(t.score(0.9, 0.7) > t.score(0.5, 0.7));
        assert!(t.score(0.9, 0.8) > t.score(0.9, 0.6));
        assert!(t.score(0.0, 0.0).is_finite());
    }
}
